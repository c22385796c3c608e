# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_aggregate: the counting of sock_diag dumps (synthetic messages) and /proc tables (recorded on real
hosts), the spilling of many distinct keys into records, and the uniform loop against the general one.

These complement (never replace) the namespace tests that compare the engine with ss on real sockets
(tests/integration/test_engine_spill_netns.py spills on real dumps).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _aggregate as aggregate
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _netlink as netlink
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs

from tests.unit.plugins.module_utils._engine._helpers import PROC_NET_TCP, PROC_NET_TCP6, diag_message, done_message

# One socket per timer, as the kernel prints them (get_tcp4_sock): retransmitting (tr 1,
# retrnsmt 5), keepalive with 2 unanswered probes (tr 2, timeout column 2), zero window
# probes (tr 4, timeout column 7, retrnsmt 0).
PROC_NET_TCP_TIMERS = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0000000000000000 100 0 0 10 0
   1: 020012C6:C350 010012C6:0050 01 00000400:00000000 01:000000C8 00000005     0        0 101 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C351 0100007F:1F90 01 00000000:00000000 02:00000100 00000000     0        2 102 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C352 0100007F:1F90 01 00010000:00000000 04:00000064 00000000     0        7 103 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:1F90 0100007F:C352 01 00000000:00020000 00:00000000 00000000     0        0 104 1 0000000000000000 20 4 30 10 -1
"""


def test_proc_net_timers_and_queues():
    rows = list(procfs.parse_proc_net(PROC_NET_TCP_TIMERS, socket.AF_INET))
    assert [row[9:] for row in rows] == [(0, 0), (1, 5), (2, 2), (4, 7), (0, 0)]
    tcp = aggregate.TcpAggregate((32768, 60999))
    tcp.listen_ports = frozenset([8080])
    for row in rows:
        tcp.add_proc(socket.AF_INET, row)
    assert tcp.timer_counts() == {"none": 1, "retransmit": 1, "keepalive": 1, "time_wait": 0,
                                  "zero_window_probe": 1}
    queues = tcp.queues(10)
    assert queues["recv_bytes"] == 0x20000 and queues["recv_sockets"] == 1
    assert queues["send_bytes"] == 0x400 + 0x10000 and queues["send_sockets"] == 2
    assert queues["send_ports"] == [
        {"port": 8080, "side": "remote", "sockets": 1, "bytes": 0x10000, "stalled": 1},
        {"port": 80, "side": "remote", "sockets": 1, "bytes": 0x400, "stalled": 1},
    ]
    assert tcp.retransmitting(10) == [{"address": "198.18.0.1", "sockets": 1, "retransmits": 5}]


def test_proc_aggregate_from_recorded_tables():
    tcp = aggregate.TcpAggregate((32768, 60999))
    entries = {socket.AF_INET: list(procfs.parse_proc_net(PROC_NET_TCP, socket.AF_INET)),
               socket.AF_INET6: list(procfs.parse_proc_net(PROC_NET_TCP6, socket.AF_INET6))}
    tcp.listen_ports = frozenset(e[2] for rows in entries.values() for e in rows if e[0] == aggregate.LISTEN)
    for family, rows in entries.items():
        for row in rows:
            tcp.add_proc(family, row)
    states = tcp.states()
    assert states["total"] == 6
    assert states["states"]["ESTABLISHED"] == 3 and states["states"]["LISTEN"] == 2
    assert states["states"]["TIME_WAIT"] == 1 and set(states["states"]) == set(aggregate.STATES)
    assert tcp.local_ports_bounded(None)[0]["8080"]["total"] == 2  # the listener and the server side of the connection
    assert tcp.remote_ports(10) == {
        "8080": {"total": 1, "states": dict(aggregate.zero_states(), ESTABLISHED=1)},
        "5432": {"total": 1, "states": dict(aggregate.zero_states(), TIME_WAIT=1)},
    }
    peers = {p["address"]: p["total"] for p in tcp.peers(10)}
    assert peers == {"127.0.0.1": 1, "127.0.0.2": 1, "10.0.0.5": 1, "127.0.0.3": 1}
    busiest = tcp.ephemeral()["busiest"]
    assert busiest["connections"] == 1 and busiest["share"] == round(1 / 28232, 6)


# ---------------------------------------------------------------- synthetic netlink messages

def test_netlink_aggregation_on_synthetic_dump():
    listeners = (diag_message(socket.AF_INET, 10, 80, 0, "0.0.0.0", "0.0.0.0", rqueue=3, wqueue=128, inode=7)
                 + diag_message(socket.AF_INET6, 10, 8080, 0, "::", "::", rqueue=0, wqueue=4096, inode=8)
                 + done_message())
    tcp = aggregate.TcpAggregate((32768, 60999))
    assert tcp.consume_listeners(listeners, len(listeners)) == len(listeners) - 20
    tcp.listen_ports = frozenset(item["port"] for item in tcp.listeners)
    attrs = struct.pack("=HHB3x", 5, 8, 0)  # an INET_DIAG_SHUTDOWN attribute, as full sockets carry
    conns = b"".join([
        diag_message(socket.AF_INET, 1, 80, 40000 + i, "10.0.0.1", "10.0.0.%d" % (2 + i % 2), attrs=attrs)
        for i in range(6)
    ] + [
        diag_message(socket.AF_INET, 6, 50000 + i, 5432, "10.0.0.1", "10.0.0.9") for i in range(4)
    ] + [
        diag_message(socket.AF_INET6, 8, 8080, 1234, "::ffff:10.0.0.1", "::ffff:10.0.0.3", attrs=attrs),
        diag_message(socket.AF_INET6, 12, 8080, 1235, "::1", "::1"),
    ]) + done_message()
    stop = tcp.consume_netlink(conns, len(conns))
    assert stop == len(conns) - 20
    states = tcp.states()
    assert states["total"] == 14 and states["states"]["SYN_RECV"] == 1  # NEW_SYN_RECV counted as SYN_RECV
    assert states["families"]["ipv6"]["total"] == 3
    assert tcp.local_ports_bounded(None)[0]["80"]["states"]["ESTABLISHED"] == 6
    assert tcp.local_ports_bounded(None)[0]["8080"]["states"]["CLOSE_WAIT"] == 1
    assert tcp.remote_ports(1) == {"5432": {"total": 4, "states": dict(aggregate.zero_states(), TIME_WAIT=4)}}
    peers = tcp.peers(2)
    # 10.0.0.3: 3 + the IPv4-mapped one; 10.0.0.9: 4 TIME_WAIT; ties go by address; 10.0.0.2 (3) is cut
    assert [(p["address"], p["total"]) for p in peers] == [("10.0.0.3", 4), ("10.0.0.9", 4)]
    busiest = tcp.ephemeral()["busiest"]
    assert busiest == {"address": "10.0.0.9", "port": 5432, "connections": 4, "time_wait": 4,
                       "share": round(4 / 28232, 6)}
    assert [(item["port"], item["queue"], item["backlog"]) for item in tcp.listeners] == [(80, 3, 128), (8080, 0, 4096)]


def test_data_before_done_in_one_buffer_is_all_counted():
    tcp = aggregate.TcpAggregate((1024, 65535))
    buf = diag_message(socket.AF_INET, 1, 1, 2, "1.1.1.1", "2.2.2.2") + done_message()
    assert tcp.consume_netlink(buf, len(buf)) == len(buf) - 20
    assert tcp.states()["total"] == 1


def test_netlink_timers_queues_retransmitting_on_synthetic_dump():
    messages = [
        diag_message(socket.AF_INET, 1, 8080, 40000, "10.0.0.1", "10.0.0.2", timer=2),
        diag_message(socket.AF_INET, 1, 8080, 40001, "10.0.0.1", "10.0.0.2", wqueue=500, timer=1, retrans=4),
        diag_message(socket.AF_INET6, 1, 41000, 443, "::ffff:10.0.0.1", "::ffff:10.0.0.2", wqueue=100, timer=1,
                     retrans=2),
        diag_message(socket.AF_INET, 1, 42000, 5432, "10.0.0.1", "10.0.0.9", wqueue=70000, timer=4, retrans=3),
        diag_message(socket.AF_INET, 1, 8080, 40002, "10.0.0.1", "10.0.0.3", rqueue=300),
        diag_message(socket.AF_INET, 6, 43000, 80, "10.0.0.1", "10.0.0.4", timer=3),
        diag_message(socket.AF_INET, 1, 8080, 40003, "10.0.0.1", "10.0.0.3", wqueue=10, timer=1),  # in flight
    ]
    buf = b"".join(messages) + done_message()
    tcp = aggregate.TcpAggregate((32768, 60999))
    tcp.listen_ports = frozenset([8080])
    assert tcp.consume_netlink(buf, len(buf)) == len(buf) - 20
    assert tcp.timer_counts() == {"none": 1, "retransmit": 3, "keepalive": 1, "time_wait": 1, "zero_window_probe": 1}
    queues = tcp.queues(10)
    assert (queues["recv_bytes"], queues["recv_sockets"], queues["send_bytes"], queues["send_sockets"]) == (
        300, 1, 70610, 4)
    assert queues["send_ports"] == [
        {"port": 5432, "side": "remote", "sockets": 1, "bytes": 70000, "stalled": 1},
        {"port": 8080, "side": "local", "sockets": 2, "bytes": 510, "stalled": 1},
        {"port": 443, "side": "remote", "sockets": 1, "bytes": 100, "stalled": 1},
    ]
    assert tcp.queues(1)["send_ports"] == queues["send_ports"][:1]
    # the IPv4-mapped peer counts with the IPv4 one; the in-flight socket (no retransmission) does not count
    assert tcp.retransmitting(10) == [{"address": "10.0.0.2", "sockets": 2, "retransmits": 6}]


# ---------------------------------------------------------------- the uniform loop against the general one
# TcpAggregate's two hot loops agree: a receive buffer whose messages all have one length (read by
# _consume_uniform, one Struct.iter_unpack) counts exactly as the general loop (_consume_netlink) counts it,
# and a buffer that is not uniform (a message of another length or family in it, a header that lies at a
# stride position, a trailer that is not NLMSG_DONE) is left to the general loop. Hypothesis builds the
# buffers from every field the loops read; the recorded-dump and fuzz tests are in test_netlink.py.

LISTEN_PORTS = frozenset([80, 443, 8080, 0x5000, 0x0050])   # 0x5000 is 80 byte-swapped
ATTRS = struct.pack("=HHB3x", 5, 8, 0) + struct.pack("=HHI", 8, 16, 0) + struct.pack("=HHQ", 12, 21, 7) + b"\0" * 4
ADDRESSES = {socket.AF_INET: ["10.0.0.1", "10.0.0.2", "192.0.2.7", "127.0.0.1"],
             socket.AF_INET6: ["::1", "2001:db8::1", "::ffff:10.0.0.1", "fe80::2"]}


@st.composite
def messages(draw, family, attrs=ATTRS):
    state = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]))
    return diag_message(family, state, draw(st.sampled_from(sorted(LISTEN_PORTS) + [1024, 33000, 60999, 65535])),
                        draw(st.sampled_from([0, 80, 443, 5432, 33001])),
                        draw(st.sampled_from(ADDRESSES[family])), draw(st.sampled_from(ADDRESSES[family])),
                        rqueue=draw(st.sampled_from([0, 0, 1, 4096])), wqueue=draw(st.sampled_from([0, 0, 7])),
                        timer=draw(st.integers(0, 4)), retrans=draw(st.sampled_from([0, 0, 1, 3])), attrs=attrs)


def results(tcp):
    return (tcp.states(), tcp.local_ports_bounded(None), tcp.remote_ports(10), tcp.peers(10), tcp.ephemeral(),
            tcp.timer_counts(), tcp.queues(10), tcp.retransmitting(10), dict(tcp.local))


def both(buffers):
    """(results, stops) of consume_netlink (uniform where it can) and of the general loop alone."""
    fast, general = aggregate.TcpAggregate((32768, 60999)), aggregate.TcpAggregate((32768, 60999))
    fast.listen_ports = general.listen_ports = LISTEN_PORTS
    stops = ([fast.consume_netlink(buf, len(buf)) for buf in buffers],
             [general._consume_netlink(buf, len(buf)) for buf in buffers])
    return results(fast), results(general), stops


@given(st.sampled_from([socket.AF_INET, socket.AF_INET6]).flatmap(
    lambda family: st.lists(st.lists(messages(family), min_size=1, max_size=40), min_size=1, max_size=4)),
    st.booleans())
@settings(max_examples=150, deadline=None)
def test_a_uniform_buffer_counts_as_the_general_loop_counts_it(groups, done):
    buffers = [b"".join(group) for group in groups]
    if done:
        buffers[-1] += done_message()
    assert all(aggregate.TcpAggregate((1, 2))._consume_uniform(buf, len(buf)) is not aggregate.NOT_UNIFORM
               for buf in buffers)
    fast, general, (fast_stops, general_stops) = both(buffers)
    assert fast == general
    assert fast_stops == general_stops


@given(st.lists(messages(socket.AF_INET), min_size=2, max_size=30), st.data())
@settings(max_examples=150, deadline=None)
def test_a_buffer_of_mixed_lengths_or_families_is_left_to_the_general_loop(group, data):
    """A TIME_WAIT-like message (no attributes, either family) among them: not uniform; an IPv6 message of
    the same length: uniform only when the runs of one family are UNIFORM_RUN messages long on average (one
    message in a group of 2 to 30 makes 2 or 3 runs); counted right either way."""
    odd = data.draw(st.sampled_from([messages(socket.AF_INET, attrs=b""), messages(socket.AF_INET6, attrs=b""),
                                     messages(socket.AF_INET6)]))
    at = data.draw(st.integers(1, len(group)))
    group.insert(at, data.draw(odd))
    buf = b"".join(group) + done_message()
    runs = 2 if at == len(group) - 1 else 3
    uniform = len(set(map(len, group))) == 1 and runs <= len(group) // aggregate.UNIFORM_RUN
    assert (aggregate.TcpAggregate((1, 2))._consume_uniform(buf, len(buf)) is not aggregate.NOT_UNIFORM) == uniform
    fast, general, stops = both([buf])
    assert fast == general and stops[0] == stops[1]


def family_runs(runs):
    return st.tuples(*[st.lists(messages(family), min_size=size, max_size=size) for family, size in runs])


@given(st.lists(st.tuples(st.sampled_from([socket.AF_INET, socket.AF_INET6]), st.integers(1, 40)), min_size=2,
                max_size=6).flatmap(family_runs), st.booleans())
@settings(max_examples=100, deadline=None)
def test_runs_of_both_families_of_one_length_count_as_the_general_loop_counts_them(runs, done):
    """A dump of both families interleaves them: a buffer of one message length is read as runs of one family
    (uniform when they are UNIFORM_RUN messages long on average), and counts as the general loop counts it."""
    group = [message for run in runs for message in run]
    buf = b"".join(group) + (done_message() if done else b"")
    families = bytes(message[netlink.OFF_FAMILY] for message in group)
    changes = sum(1 for left, right in zip(families, families[1:]) if left != right)
    uniform = changes == 0 or (changes + 1) * aggregate.UNIFORM_RUN <= len(group)
    assert (aggregate.TcpAggregate((1, 2))._consume_uniform(buf, len(buf)) is not aggregate.NOT_UNIFORM) == uniform
    fast, general, stops = both([buf])
    assert fast == general and stops[0] == stops[1]


def retyped(buf, msg_type):
    """buf's messages (as diag_message and done_message make them) with every data message of msg_type."""
    out, off = bytearray(buf), 0
    while off < len(out):
        msg_len, old = struct.unpack_from("=IH", out, off)
        if old in netlink.DATA_TYPES:
            struct.pack_into("=H", out, off + 4, msg_type)
        off += msg_len
    return bytes(out)


@given(st.sampled_from([socket.AF_INET, socket.AF_INET6]).flatmap(
    lambda family: st.lists(st.lists(messages(family), min_size=1, max_size=40), min_size=1, max_size=4)),
    st.lists(messages(socket.AF_INET6, attrs=b""), max_size=3), st.booleans())
@settings(max_examples=100, deadline=None)
def test_a_dump_of_both_families_counts_as_the_dumps_of_each(groups, odd, done):
    """The replies to the older request (TCPDIAG_GETSOCK, both families in one dump) count exactly as the same
    messages in SOCK_DIAG_BY_FAMILY replies, in the uniform loop and in the general one, and each_message
    visits them all."""
    buffers = [b"".join(group) for group in groups]
    buffers[0] += b"".join(odd)
    if done:
        buffers[-1] += done_message()
    older = [retyped(buf, netlink.TCPDIAG_GETSOCK) for buf in buffers]
    assert both(older) == both(buffers)
    for new, old in zip(buffers, older):
        assert (aggregate.TcpAggregate((1, 2))._consume_uniform(old, len(old)) is aggregate.NOT_UNIFORM) == bool(
            odd and new is buffers[0])
        offsets = [[], []]
        stops = [aggregate.each_message(buf, len(buf), lambda _buf, off, seen=seen: seen.append(off))
                 for buf, seen in zip((new, old), offsets)]
        assert offsets[0] == offsets[1] and stops[0] == stops[1]


def test_a_buffer_of_both_types_ends_at_the_first_message_of_the_other():
    """One dump answers one request: a message of the other data type is not counted, and take() calls it an
    unexpected message, in both loops and in each_message."""
    one = diag_message(socket.AF_INET, 1, 80, 33000, "10.0.0.1", "10.0.0.2", attrs=ATTRS)
    other = retyped(one, netlink.TCPDIAG_GETSOCK)
    for first, second in ((one, other), (other, one)):
        buf = first * 3 + second + first + done_message()
        tcp = aggregate.TcpAggregate((1, 2))
        assert tcp._consume_uniform(buf, len(buf)) is aggregate.NOT_UNIFORM
        assert tcp._consume_netlink(buf, len(buf)) == 3 * len(one)
        assert sum(tcp.family_states[socket.AF_INET]) == 3
        assert aggregate.each_message(buf, len(buf), lambda _buf, _off: None) == 3 * len(one)
        with pytest.raises(netlink.NetlinkError, match="unexpected netlink message type %d" % struct.unpack_from("=H", second, 4)[0]):
            netlink.take(buf, aggregate.TcpAggregate((1, 2)).consume_netlink)


def test_a_header_that_lies_at_a_stride_or_a_tail_that_is_not_done_is_not_uniform():
    one = diag_message(socket.AF_INET, 1, 80, 33000, "10.0.0.1", "10.0.0.2", attrs=ATTRS)
    buf = bytearray(one * 4 + done_message())
    tcp = aggregate.TcpAggregate((1, 2))
    assert tcp._consume_uniform(bytes(buf), len(buf)) == 4 * len(one)
    for at, value in ((len(one) * 2 + 4, 3), (len(one) * 3 + 16, socket.AF_INET6), (len(one) + 1, 1)):
        broken = bytearray(buf)
        broken[at] = value
        assert tcp._consume_uniform(bytes(broken), len(broken)) is aggregate.NOT_UNIFORM, at
    tail = bytearray(buf)
    tail[-16] = 2   # NLMSG_ERROR where NLMSG_DONE was
    assert tcp._consume_uniform(bytes(tail), len(tail)) is aggregate.NOT_UNIFORM
    detail = aggregate.TcpAggregate((1, 2), want_sockets=1)
    assert detail._consume_uniform(bytes(buf), len(buf)) is aggregate.NOT_UNIFORM


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
                min_size=2, max_size=50))
def test_ipv4_addresses_translated_compare_as_their_texts(octets):
    raws = [bytes(address) for address in octets]
    by_text = sorted(raws, key=socket.inet_ntoa)
    by_key = sorted(raws, key=lambda raw: raw.translate(aggregate._TEXT_ORDER_V4))
    assert [socket.inet_ntoa(raw) for raw in by_key] == [socket.inet_ntoa(raw) for raw in by_text]


def peer_totals():
    """One partition's peers: plain raw IPv4 (mostly) and IPv6 addresses, totals from a few values (ties)."""
    v4 = st.binary(min_size=4, max_size=4)
    v6 = st.binary(min_size=16, max_size=16).filter(lambda raw: raw[:12] != b"\x00" * 10 + b"\xff\xff")
    return st.dictionaries(st.one_of(v4, v4, v4, v6), st.integers(1, 4), max_size=40)


@given(st.lists(peer_totals(), min_size=1, max_size=6), st.integers(1, 12))
@settings(max_examples=300, deadline=None)
def test_the_peers_picked_before_their_text_are_the_top_of_all(partitions, top):
    """_best_peers folds partitions to what _merge_best of every row makes, and to the top by (-total, text)
    of all peers at once (an address is in one partition only, as KeyRecords partitions by address)."""
    every, quick, plain = {}, [], []
    for totals in partitions:
        totals = {raw: total for raw, total in totals.items() if raw not in every}
        every.update(totals)
        quick = aggregate._best_peers(quick, top, totals)
        plain = aggregate._merge_best(plain, top, [(-total, raw, None) for raw, total in totals.items()])
    assert quick == plain
    texts = sorted((-total, socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw))
                   for raw, total in every.items())
    assert [(rank, text) for rank, text, _none in quick] == texts[:top]
