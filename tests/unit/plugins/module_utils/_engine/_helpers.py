# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the engine's tests share (not a test file): /proc/net/tcp tables recorded on a real host,
sock_diag messages laid out as the kernel lays them out, hostile option values, a guard against loops."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import signal
import socket
import struct

from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _netlink as netlink

# Recorded from a Debian 12 host (kernel 6.1), trimmed: a listener on 127.0.0.1:8080, one
# ESTABLISHED connection to it and a TIME_WAIT towards 10.0.0.5:5432.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 21630 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0200007F:B3A8 01 00000000:00000000 00:00000000 00000000     0        0 21641 1 0000000000000000 20 4 30 10 -1
   2: 0200007F:B3A8 0100007F:1F90 01 00000004:00000000 00:00000000 00000000  1000        0 21640 1 0000000000000000 20 4 30 10 -1
   3: 0F00000A:D431 0500000A:1538 06 00000000:00000000 03:000016A7 00000000     0        0 0 3 0000000000000000
"""


PROC_NET_TCP6 = "\n".join([
    "  sl  local_address                         remote_address                        st tx_queue rx_queue tr"
    " tm->when retrnsmt   uid  timeout inode",
    "   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000"
    " 00:00000000 00000000     0        0 30001 1 0000000000000000 100 0 0 10 0",
    "   1: 0000000000000000FFFF00000100007F:1F91 0000000000000000FFFF00000300007F:C350 01 00000000:00000000"
    " 00:00000000 00000000     0        0 30002 1 0000000000000000 20 4 30 10 -1",
]) + "\n"


def diag_message(family, state, sport, dport, src, dst, rqueue=0, wqueue=0, uid=0, inode=0, attrs=b"",
                 timer=0, retrans=0, msg_type=netlink.SOCK_DIAG_BY_FAMILY):
    width = 4 if family == socket.AF_INET else 16
    src_raw = socket.inet_pton(family, src).ljust(16, b"\0")[:16]
    dst_raw = socket.inet_pton(family, dst).ljust(16, b"\0")[:16]
    assert len(src_raw) == 16 and width
    body = struct.pack("=BBBB", family, state, timer, retrans) + struct.pack("!HH", sport, dport) + src_raw + dst_raw
    body += struct.pack("=I", 0) + struct.pack("=II", 0, 0)
    body += struct.pack("=IIIII", 0, rqueue, wqueue, uid, inode) + attrs
    return netlink.NLMSG_HDR.pack(16 + len(body), msg_type, 2, 1, 0) + body


def done_message():
    return netlink.NLMSG_HDR.pack(20, netlink.NLMSG_DONE, 2, 1, 0) + struct.pack("=i", 0)


@contextlib.contextmanager
def no_hang(seconds=5):
    """A walk that loops (a length of 0 once did) becomes a failure instead of a stuck test run."""
    def expired(_signum, _frame):
        raise AssertionError("no result after %d s: the walker loops" % seconds)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# Strings a caller can pass: control characters, separators, path tricks, long and non-ASCII text.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.sampled_from("/.\\:-!,\0\n\r\t %$'\"ab1"), max_size=40),
    st.sampled_from(["..", "../etc", "/run/netns/../../etc/shadow", "/proc/self/ns/../../etc", "pid:-1",
                     "pid:1/../2", "pid:00", "a" * 70, "/" + "a/" * 40, "host\n", "all\0", "\u202eall",
                     "x" * 100000, "/dev/zero", "/run/netns/", "./blue", "blue/"]),
)

# The longest message an option refused may have: the value in it is bounded (escape.bounded_repr).
MESSAGE_LIMIT = 600
