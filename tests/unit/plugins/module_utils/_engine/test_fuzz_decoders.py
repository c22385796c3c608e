# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuzzing of the netlink message walker and decoders and of the /proc parsers (hypothesis).

Seeds are real: the receive buffers of a sock_diag dump of this machine's own sockets (listeners
and connections made here), recorded at the start, plus synthetic messages of every family and
state. Hypothesis then truncates them, makes their length fields lie (0, short, past the end),
misaligns them, changes their type, family and state bytes and splices them. Whatever it makes,
netlink.dump() and the consumers the engine hands it must end in the engine's own error type
(NetlinkError, DumpInterrupted, NetlinkUnavailable) with a message naming sock_diag, never in
another exception and never in a loop: every example runs under an alarm.

The /proc side does the same on the engine's /proc backend, through gather() on a temporary
/proc tree: only GatherError, naming the file, may come out.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import pwd
import signal
import socket
import struct
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _netlink as netlink
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs
from ansible_collections.netstate.tcp.plugins.module_utils import _sysctl as sysctl
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine

from tests.unit.plugins.module_utils._engine.test_engine_parsers import PROC_NET_TCP, PROC_NET_TCP6, diag_message, \
    done_message

NETLINK_ERRORS = (netlink.NetlinkError, netlink.DumpInterrupted, netlink.NetlinkUnavailable)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


def _record_real_buffers():
    """Receive buffers of real dumps of this machine's sockets, with a listener and a connection of ours."""
    buffers = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    client = socket.create_connection(server.getsockname())
    try:
        def keep(buf, length):
            buffers.append(bytes(buf[:length]))
            return engine.each_message(buf, length, lambda _buf, _off: None)

        for family in (socket.AF_INET, socket.AF_INET6):
            netlink.dump(family, netlink.IPPROTO_TCP, engine.LISTEN_MASK, keep)
            netlink.dump(family, netlink.IPPROTO_TCP, engine.CONNECTION_MASK, keep)
            netlink.dump(family, netlink.IPPROTO_UDP, engine.UDP_ALL_MASK, keep)
    except netlink.NetlinkUnavailable:
        pass  # a sandbox without sock_diag: the synthetic seeds below still run
    finally:
        client.close()
        server.close()
    return [buf for buf in buffers if len(buf) > 20]


REAL = _record_real_buffers()
SYNTHETIC = [
    diag_message(socket.AF_INET, 10, 8080, 0, "0.0.0.0", "0.0.0.0", rqueue=3, wqueue=128, inode=7) + done_message(),
    diag_message(socket.AF_INET6, 1, 8080, 1234, "::ffff:10.0.0.1", "::ffff:10.0.0.3",
                 attrs=struct.pack("=HHB3x", 5, 8, 0)) + done_message(),
    diag_message(socket.AF_INET, 6, 50000, 5432, "10.0.0.1", "10.0.0.9") * 3 + done_message(),
    diag_message(socket.AF_INET, 7, 5353, 0, "0.0.0.0", "0.0.0.0") + done_message(),
    netlink.NLMSG_HDR.pack(36, netlink.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -95) + b"\0" * 16,
]


def test_the_real_kernel_gave_seeds():
    assert REAL, "no sock_diag reply recorded from this kernel"
    assert all(struct.unpack_from("=H", buf, 4)[0] in (netlink.SOCK_DIAG_BY_FAMILY, netlink.NLMSG_DONE)
               for buf in REAL)


class ReplaySocket:
    """Hands recorded (then mutated) receive buffers to netlink.dump() as a netlink socket would."""

    def __init__(self, buffers):
        self.buffers = list(buffers)
        self.closed = False

    def sendto(self, _request, _address):
        return 0

    def settimeout(self, _seconds):
        pass

    def recv_into(self, buffer):
        data = self.buffers.pop(0) if self.buffers else b""
        buffer[:len(data)] = data
        return len(data)

    def close(self):
        self.closed = True


@st.composite
def mutated(draw):
    """A receive buffer: a seed cut, spliced and patched where the kernel's numbers sit."""
    buf = bytearray(draw(st.sampled_from(REAL + SYNTHETIC)))
    for _step in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["cut", "length", "type", "family", "state", "misalign", "splice", "bytes"]))
        # patch the first message or one at a random offset, aligned or not
        off = draw(st.sampled_from([0, max(len(buf) - 20, 0), draw(st.integers(0, max(len(buf) - 1, 0)))]))
        if kind == "cut":
            del buf[draw(st.integers(0, len(buf))):]
        elif kind == "length" and off + 4 <= len(buf):
            value = draw(st.sampled_from([0, 1, 4, 15, 16, 20, 87, 88, len(buf) - off, len(buf) - off + 4, 0xFFFFFFFF])
                         | st.integers(0, 0xFFFFFFFF))
            struct.pack_into("=I", buf, off, value & 0xFFFFFFFF)
        elif kind == "type" and off + 6 <= len(buf):
            struct.pack_into("=H", buf, off + 4, draw(st.sampled_from([0, 1, 2, 3, 19, 20, 21, 0xFFFF])))
        elif kind in ("family", "state") and off + 18 <= len(buf):
            buf[off + (16 if kind == "family" else 17)] = draw(st.integers(0, 255))
        elif kind == "misalign":
            buf[off:off] = b"\0" * draw(st.integers(1, 3))
        elif kind == "splice":
            other = draw(st.sampled_from(REAL + SYNTHETIC))
            buf[off:off] = other[:draw(st.integers(0, len(other)))]
        elif kind == "bytes":
            buf[off:off + 8] = draw(st.binary(min_size=0, max_size=8))
    return bytes(buf)


def _consumers():
    """Every consumer the engine hands a dump: listeners, connections (with and without detail), UDP, peers."""
    tcp = engine.TcpAggregate((32768, 60999), want_sockets=5, want_inodes=True)
    tcp.listen_ports = frozenset([8080, 22])
    udp = engine.UdpAggregate(want_sockets=5)
    plain = engine.TcpAggregate((32768, 60999))
    peers = engine.PeerCounter(engine.CONNECTION_MASK)
    on_port = engine.PeerCounter(engine.state_mask(["ESTABLISHED", "TIME_WAIT"]), local_port=8080)
    return tcp, udp, [tcp.consume_listeners, tcp.consume_netlink, plain.consume_netlink, udp.consume_netlink,
                      peers.consume_netlink, on_port.consume_netlink]


def _finish(tcp, udp):
    """What gather() computes from a dump that went through: must not fail either."""
    tcp.listen_ports = frozenset(item["port"] for item in tcp.listeners) | tcp.listen_ports
    tcp.states()
    tcp.local_ports_bounded(None)
    tcp.remote_ports(10)
    tcp.peers(10)
    tcp.ephemeral()
    assert all(len(item) > 0 for item in tcp.sockets + udp.sockets)


@given(st.lists(mutated(), min_size=1, max_size=3))
@FUZZ
def test_dump_of_mutated_replies_ends_in_the_engines_own_error(buffers):
    tcp, udp, consumers = _consumers()
    for consume in consumers:
        with no_hang():
            try:
                netlink.dump(socket.AF_INET, netlink.IPPROTO_TCP, engine.CONNECTION_MASK, consume,
                             sock=ReplaySocket(buffers))
            except NETLINK_ERRORS as exc:
                assert any(word in str(exc) for word in ("sock_diag", "netlink", "socket table")), exc
    with no_hang():
        _finish(tcp, udp)


@given(mutated())
@FUZZ
def test_walkers_on_a_mutated_buffer_raise_only_netlink_errors(buf):
    """The walkers called directly, as the engine's consumers are: a length that lies is a NetlinkError."""
    for consume in _consumers()[2]:
        with no_hang():
            try:
                stop = consume(buf, len(buf))
            except netlink.NetlinkError as exc:
                assert str(exc).startswith("malformed sock_diag reply: the message at offset "), exc
            except (KeyError, IndexError, AttributeError, struct.error):
                pass  # a field out of range, a tail under 6 bytes: dump() makes these NetlinkError (above)
            else:
                assert stop is None or 0 <= stop < len(buf)


@pytest.mark.parametrize("length", [0, 1, 15, 16, 87])
def test_a_length_that_lies_is_named(length):
    buf = bytearray(SYNTHETIC[0])
    struct.pack_into("=I", buf, 0, length)
    for consume in _consumers()[2]:
        with no_hang(), pytest.raises(netlink.NetlinkError) as caught:
            netlink.dump(socket.AF_INET, netlink.IPPROTO_TCP, engine.LISTEN_MASK, consume,
                         sock=ReplaySocket([bytes(buf)]))
        assert str(caught.value) == ("malformed sock_diag reply: the message at offset 0 says it is %d bytes long "
                                     "(at least 88, and %d bytes are left in the buffer)" % (length, len(buf)))


def test_a_message_running_past_the_buffer_is_named():
    buf = bytearray(SYNTHETIC[0][:100])  # the data message (88 bytes) and the start of NLMSG_DONE
    struct.pack_into("=I", buf, 0, 96)
    with pytest.raises(netlink.NetlinkError, match="at offset 0 says it is 96 bytes long"):
        engine.each_message(bytes(buf[:90]), 90, lambda _buf, _off: None)
    listeners = engine.TcpAggregate((1, 2)).consume_listeners
    with pytest.raises(netlink.NetlinkError, match="^malformed sock_diag reply: 12 bytes at offset 88, too short"):
        netlink.dump(socket.AF_INET, netlink.IPPROTO_TCP, engine.LISTEN_MASK, listeners,
                     sock=ReplaySocket([SYNTHETIC[0][:100]]))


def test_an_unknown_family_is_named():
    buf = bytearray(SYNTHETIC[0])
    buf[16] = 44
    expected = r"^malformed sock_diag reply: a field out of range \(KeyError: 44\)$"
    with pytest.raises(netlink.NetlinkError, match=expected):
        netlink.dump(socket.AF_INET, netlink.IPPROTO_TCP, engine.LISTEN_MASK,
                     engine.TcpAggregate((1, 2)).consume_listeners, sock=ReplaySocket([bytes(buf)]))


# ---------------------------------------------------------------- /proc through the engine

PROC_LINES = PROC_NET_TCP.splitlines() + PROC_NET_TCP6.splitlines()


@st.composite
def proc_table(draw):
    lines = draw(st.lists(st.sampled_from(PROC_LINES), min_size=0, max_size=6))
    out = []
    for line in lines:
        if draw(st.booleans()):
            fields = line.split(" ")
            index = draw(st.integers(0, max(len(fields) - 1, 0)))
            fields[index] = draw(st.sampled_from(["", "-1", "FFFFFFFFFFFF", "0A", "ZZ", ":", "1:2:3", "\udcff",
                                                  "0100007F:1F90", "00000000:0000", "+1", "1_0", "\u0661"])
                                 | st.text(max_size=6))
            line = " ".join(fields)
        out.append(line)
    return "\n".join(out) + draw(st.sampled_from(["", "\n", "\r\n", "\0"]))


def _proc_tree(root, tcp, tcp6, udp, sockstat, netstat):
    os.makedirs(os.path.join(root, "net"))
    os.makedirs(os.path.join(root, "sys/net/ipv4"))
    for name, text in (("tcp", tcp), ("tcp6", tcp6), ("udp", udp), ("sockstat", sockstat), ("netstat", netstat),
                       ("snmp", "Tcp: ActiveOpens\nTcp: 1\n")):
        with open(os.path.join(root, "net", name), "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
    with open(os.path.join(root, "stat"), "w") as handle:
        handle.write("btime 1700000000\n")


@given(proc_table(), proc_table(), proc_table(), st.text(max_size=60), st.text(max_size=60))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_proc_backend_on_mutated_tables_ends_in_gather_error(tcp, tcp6, udp, sockstat, netstat):
    with tempfile.TemporaryDirectory() as root:
        _proc_tree(root, tcp, tcp6, udp, sockstat, netstat)
        with no_hang():
            try:
                facts = engine.gather(gather_subset=["all"], backend="proc", proc=root,
                                      run_netns=os.path.join(root, "none"))
            except engine.GatherError as exc:
                assert root in str(exc) or "kernel counters" in str(exc), exc
            else:
                # every row of the TCP tables is counted once, in exactly one state
                rows = [row for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6))
                        for row in procfs.parse_proc_net(procfs.read_text(os.path.join(root, "net", name)), family)]
                assert facts["backend"] == "proc"
                assert facts["tcp"]["total"] == len(rows) == sum(facts["tcp"]["states"].values())


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_sysctl_file_parser_never_raises(text):
    assignments = sysctl.parse_sysctl_text(text)
    # lines are read one by one: the file's assignments are its lines' assignments, in order
    assert assignments == [pair for line in text.splitlines() for pair in sysctl.parse_sysctl_text(line)]
    for key, value in assignments:
        assert key == key.strip() and value == value.strip()
        sysctl.normalize_live(sysctl.KNOWLEDGE.get(key), value)


SYSCTL_NAME = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,9}", fullmatch=True)  # as the kernel names its entries
# anything on one line: printable ASCII without the line breaks str.splitlines() knows
SYSCTL_VALUE = st.text(alphabet=[chr(c) for c in range(32, 127)] + ["\t"], max_size=20)
SYSCTL_LINE = st.one_of(
    st.tuples(st.just("assign"), st.lists(SYSCTL_NAME, min_size=1, max_size=4), SYSCTL_VALUE,
              st.sampled_from(["", " ", "\t "]), st.sampled_from(["", " ", "\t"]), st.booleans(), st.booleans()),
    st.tuples(st.just("other"), st.sampled_from(["", "   ", "# net.ipv4.tcp_tw_reuse = 1", "; a = b",
                                                 "  # indented = comment", "no assignment here"])),
)


@given(st.lists(SYSCTL_LINE, max_size=8))
@settings(max_examples=300, deadline=None)
def test_sysctl_file_parser_reads_back_what_was_written(lines):
    """A sysctl.d file written from known assignments (dotted or slashed keys, '-' prefixes, blanks
    around '=', comments and blank lines between) reads back as exactly those assignments."""
    text, expected = [], []
    for line in lines:
        if line[0] == "other":
            text.append(line[1])
            continue
        _kind, parts, value, lead, around, slashed, ignore_errors = line
        key = "/".join(parts) if slashed else ".".join(parts)
        text.append("%s%s%s%s=%s%s" % (lead, "-" if ignore_errors else "", key, around, around, value))
        expected.append((".".join(parts), value.strip()))
    assert sysctl.parse_sysctl_text("\n".join(text)) == expected


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_comm_and_stat_of_any_bytes_never_raise(raw):
    with tempfile.TemporaryDirectory() as root:
        base = os.path.join(root, "7")
        os.makedirs(base)
        with open(os.path.join(base, "comm"), "wb") as handle:
            handle.write(raw)
        with open(os.path.join(base, "stat"), "wb") as handle:
            handle.write(b"7 (" + raw + b") S" + b" 0" * 30)
        with open(os.path.join(root, "stat"), "w") as handle:
            handle.write("btime 1700000000\n")
        procfs._BOOT_TIME.clear()
        try:
            info = procfs.process_info(7, proc=root)
        finally:
            procfs._BOOT_TIME.clear()
        info["process"].encode("utf-8")  # raises on a lone surrogate
    # the name as the kernel keeps it (comm without its newline), bytes that are not UTF-8 as \xNN and a
    # backslash as \\ (so no two byte strings read alike); the start time from the field after the name's
    # last ')', whatever the name holds
    name = raw[:-1] if raw.endswith(b"\n") else raw
    assert info == {"pid": 7, "process": name.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace"),
                    "user": pwd.getpwuid(os.getuid()).pw_name,
                    "stime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1700000000))}
