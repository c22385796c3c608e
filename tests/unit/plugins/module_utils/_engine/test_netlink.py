# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_netlink: sock_diag dumps from the request to NLMSG_DONE, and the fuzzing of them.

Seeds are real: the receive buffers of a sock_diag dump of this machine's own sockets (listeners
and connections made here), recorded at the start, plus synthetic messages of every family and
state. Hypothesis then truncates them, makes their length fields lie (0, short, past the end),
misaligns them, changes their type, family and state bytes and splices them. Whatever it makes,
netlink.dump() and the consumers the engine hands it must end in the engine's own error type
(NetlinkError, DumpInterrupted, NetlinkUnavailable) with a message naming sock_diag, never in
another exception and never in a loop: every example runs under an alarm.

The /proc parsers are fuzzed in test_procfs.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _netlink as netlink
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _aggregate as aggregate
from ansible_collections.netstate.tcp.plugins.module_utils import _peer_connections

from tests.unit.plugins.module_utils._engine._helpers import diag_message, done_message, no_hang

# ---------------------------------------------------------------- the dump fuzzed, from real and synthetic seeds

NETLINK_ERRORS = (netlink.NetlinkError, netlink.DumpInterrupted, netlink.NetlinkUnavailable)


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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
            return aggregate.each_message(buf, length, lambda _buf, _off: None)

        for family in (socket.AF_INET, socket.AF_INET6):
            netlink.dump(family, netlink.IPPROTO_TCP, aggregate.LISTEN_MASK, keep)
            netlink.dump(family, netlink.IPPROTO_TCP, aggregate.CONNECTION_MASK, keep)
            netlink.dump(family, netlink.IPPROTO_UDP, aggregate.UDP_ALL_MASK, keep)
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
    tcp = aggregate.TcpAggregate((32768, 60999), want_sockets=5, want_inodes=True)
    tcp.listen_ports = frozenset([8080, 22])
    udp = aggregate.UdpAggregate(want_sockets=5)
    plain = aggregate.TcpAggregate((32768, 60999))
    peers = _peer_connections.PeerCounter(aggregate.CONNECTION_MASK)
    on_port = _peer_connections.PeerCounter(_peer_connections.state_mask(["ESTABLISHED", "TIME_WAIT"]), local_port=8080)
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
                netlink.dump(socket.AF_INET, netlink.IPPROTO_TCP, aggregate.CONNECTION_MASK, consume,
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
            netlink.dump(socket.AF_INET, netlink.IPPROTO_TCP, aggregate.LISTEN_MASK, consume,
                         sock=ReplaySocket([bytes(buf)]))
        assert str(caught.value) == ("malformed sock_diag reply: the message at offset 0 says it is %d bytes long "
                                     "(at least 88, and %d bytes are left in the buffer)" % (length, len(buf)))


def test_a_message_running_past_the_buffer_is_named():
    buf = bytearray(SYNTHETIC[0][:100])  # the data message (88 bytes) and the start of NLMSG_DONE
    struct.pack_into("=I", buf, 0, 96)
    with pytest.raises(netlink.NetlinkError, match="at offset 0 says it is 96 bytes long"):
        aggregate.each_message(bytes(buf[:90]), 90, lambda _buf, _off: None)
    listeners = aggregate.TcpAggregate((1, 2)).consume_listeners
    with pytest.raises(netlink.NetlinkError, match="^malformed sock_diag reply: 12 bytes at offset 88, too short"):
        netlink.dump(socket.AF_INET, netlink.IPPROTO_TCP, aggregate.LISTEN_MASK, listeners,
                     sock=ReplaySocket([SYNTHETIC[0][:100]]))


def test_an_unknown_family_is_named():
    buf = bytearray(SYNTHETIC[0])
    buf[16] = 44
    expected = r"^malformed sock_diag reply: a field out of range \(KeyError: 44\)$"
    with pytest.raises(netlink.NetlinkError, match=expected):
        netlink.dump(socket.AF_INET, netlink.IPPROTO_TCP, aggregate.LISTEN_MASK,
                     aggregate.TcpAggregate((1, 2)).consume_listeners, sock=ReplaySocket([bytes(buf)]))


# ---------------------------------------------------------------- the request, the receive and the end of a dump

class RecordingSocket:
    """Keeps what request() sends; refuses it with refusal when given one."""

    def __init__(self, refusal=None):
        self.sent = []
        self.refusal = refusal

    def sendto(self, data, address):
        if self.refusal is not None:
            raise self.refusal
        self.sent.append((data, address))
        return len(data)


def test_the_request_is_one_inet_diag_req_v2_dump_of_every_socket():
    sock = RecordingSocket()
    netlink.request(sock, socket.AF_INET6, netlink.IPPROTO_TCP, 1 << 10, seq=7)
    [(message, address)] = sock.sent
    assert address == (0, 0)  # the kernel
    # nlmsghdr: 16 bytes, then struct inet_diag_req_v2 (include/uapi/linux/inet_diag.h): 56 bytes
    assert netlink.NLMSG_HDR.unpack_from(message) == (72, 20, 0x1 | 0x300, 7, 0) and len(message) == 72
    # sdiag_family, sdiag_protocol, idiag_ext, pad, idiag_states (TCP_LISTEN is state 10)
    assert struct.unpack_from("=BBBBI", message, 16) == (socket.AF_INET6, 6, 0, 0, 1 << 10)
    assert message[24:] == b"\0" * 48  # an all-zero inet_diag_sockid: no filter on addresses or ports


def test_a_refused_request_is_netlink_unavailable():
    sock = RecordingSocket(PermissionError(errno.EPERM, "Operation not permitted"))
    with pytest.raises(netlink.NetlinkUnavailable, match=r"^sock_diag request refused: \[Errno 1\] Operation not"):
        netlink.request(sock, socket.AF_INET, netlink.IPPROTO_TCP, 1 << 10)


class FailingSocket:
    def __init__(self, error):
        self.error = error

    def recv_into(self, _buffer):
        raise self.error


@pytest.mark.parametrize("error, raised, message", [
    (OSError(errno.ENOBUFS, "No buffer space available"), netlink.DumpInterrupted, "^netlink receive buffer overrun$"),
    (OSError(errno.EBADF, "Bad file descriptor"), netlink.NetlinkError,
     r"^sock_diag receive failed: \[Errno 9\] Bad file descriptor$"),
    (socket.timeout("timed out"), socket.timeout, "^timed out$"),  # the caller's to handle
])
def test_a_failed_receive_is_named(error, raised, message):
    with pytest.raises(raised, match=message):
        netlink.receive(FailingSocket(error))


def error_message(code, flags=0):
    """NLMSG_ERROR as the kernel sends it: a header, then struct nlmsgerr (the error, the request's header)."""
    return netlink.NLMSG_HDR.pack(36, netlink.NLMSG_ERROR, flags, 1, 0) + struct.pack("=i", code) + b"\0" * 16


LISTENER = diag_message(socket.AF_INET, 10, 8080, 0, "0.0.0.0", "0.0.0.0", rqueue=3, wqueue=128, inode=7)


@pytest.mark.parametrize("code, raised, shown", [
    (-errno.EPERM, netlink.NetlinkUnavailable, "sock_diag refused: "),        # a sandbox
    (-errno.ENOENT, netlink.NetlinkUnavailable, "sock_diag refused: "),       # no inet_diag for the family
    (-errno.EOPNOTSUPP, netlink.NetlinkUnavailable, "sock_diag refused: "),
    (-errno.ENOMEM, netlink.NetlinkError, "sock_diag error: "),
    (-errno.EBUSY, netlink.NetlinkError, "sock_diag error: "),
])
def test_an_error_reply_ends_the_dump_naming_the_error(code, raised, shown):
    with pytest.raises(raised) as caught:
        netlink.take(LISTENER + error_message(code), aggregate.TcpAggregate((1, 2)).consume_listeners)
    assert caught.type is raised and str(caught.value) == shown + os.strerror(-code)


def test_the_end_of_a_dump_is_nlmsg_done_and_nothing_else():
    consume = aggregate.TcpAggregate((1, 2)).consume_listeners
    assert netlink.take(LISTENER, consume) is False  # more buffers to come
    assert netlink.take(LISTENER + done_message(), consume) is True
    assert netlink.take(done_message(), consume) is True
    with pytest.raises(netlink.NetlinkError, match="^sock_diag dump ended without NLMSG_DONE$"):
        netlink.take(b"", consume)
    with pytest.raises(netlink.NetlinkError, match="^unexpected netlink message type 99$"):
        netlink.take(netlink.NLMSG_HDR.pack(20, 99, 0, 1, 0) + b"\0" * 4, consume)
    with pytest.raises(netlink.NetlinkError, match="^malformed sock_diag reply: truncated NLMSG_ERROR at offset 88$"):
        netlink.take(LISTENER + error_message(-errno.ENOMEM)[:18], consume)


def test_a_dump_the_kernel_flags_inconsistent_is_interrupted():
    """After the socket tables changed during a dump, the kernel flags every message NLM_F_DUMP_INTR."""
    consume = aggregate.TcpAggregate((1, 2)).consume_listeners
    first = bytearray(LISTENER)
    struct.pack_into("=H", first, 6, 2 | netlink.NLM_F_DUMP_INTR)  # NLM_F_MULTI | NLM_F_DUMP_INTR
    with pytest.raises(netlink.DumpInterrupted, match="^the socket table changed during the dump$"):
        netlink.take(bytes(first) + done_message(), consume)
    done = bytearray(done_message())
    struct.pack_into("=H", done, 6, 2 | netlink.NLM_F_DUMP_INTR)
    with pytest.raises(netlink.DumpInterrupted, match="^the socket table changed during the dump$"):
        netlink.take(LISTENER + bytes(done), consume)
