# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Engine parsers and aggregation on recorded and synthetic input; property tests on malformed input.

These complement (never replace) the namespace tests that compare the engine with ss on real sockets.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _netlink as netlink
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine

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

NETSTAT = """\
TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeWaitOverflow TW
TcpExt: 0 12 12 0 340
IpExt: InNoRoutes InOctets
IpExt: 0 123456
"""

SNMP = """\
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens CurrEstab
Tcp: 1 200 120000 -1 100 50 7
"""

SOCKSTAT = """\
sockets: used 180
TCP: inuse 5 orphan 1 tw 340 alloc 9 mem 3
UDP: inuse 2 mem 1
"""


def test_proc_net_tcp_recorded():
    rows = list(procfs.parse_proc_net(PROC_NET_TCP, socket.AF_INET))
    assert rows[0] == (10, "127.0.0.1", 8080, "0.0.0.0", 0, 0, 2, 0, 21630, 0, 0)
    assert rows[2][:5] == (1, "127.0.0.2", 45992, "127.0.0.1", 8080) and rows[2][5] == 4 and rows[2][7] == 1000
    assert rows[3][:5] == (6, "10.0.0.15", 54321, "10.0.0.5", 5432) and rows[3][9:] == (3, 0)


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
    tcp = engine.TcpAggregate((32768, 60999))
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


def test_proc_net_tcp6_maps_ipv4():
    rows = list(procfs.parse_proc_net(PROC_NET_TCP6, socket.AF_INET6))
    assert rows[0][1:3] == ("::", 8081)
    assert rows[1][1] == "::ffff:127.0.0.1" and rows[1][3] == "::ffff:127.0.0.3"


def test_proc_aggregate_from_recorded_tables():
    tcp = engine.TcpAggregate((32768, 60999))
    entries = {socket.AF_INET: list(procfs.parse_proc_net(PROC_NET_TCP, socket.AF_INET)),
               socket.AF_INET6: list(procfs.parse_proc_net(PROC_NET_TCP6, socket.AF_INET6))}
    tcp.listen_ports = frozenset(e[2] for rows in entries.values() for e in rows if e[0] == engine.LISTEN)
    for family, rows in entries.items():
        for row in rows:
            tcp.add_proc(family, row)
    states = tcp.states()
    assert states["total"] == 6
    assert states["states"]["ESTABLISHED"] == 3 and states["states"]["LISTEN"] == 2
    assert states["states"]["TIME_WAIT"] == 1 and set(states["states"]) == set(engine.STATES)
    assert tcp.local_ports_bounded(None)[0]["8080"]["total"] == 2  # the listener and the server side of the connection
    assert tcp.remote_ports(10) == {
        "8080": {"total": 1, "states": dict(engine._zero_states(), ESTABLISHED=1)},
        "5432": {"total": 1, "states": dict(engine._zero_states(), TIME_WAIT=1)},
    }
    peers = {p["address"]: p["total"] for p in tcp.peers(10)}
    assert peers == {"127.0.0.1": 1, "127.0.0.2": 1, "10.0.0.5": 1, "127.0.0.3": 1}
    busiest = tcp.ephemeral()["busiest"]
    assert busiest["connections"] == 1 and busiest["share"] == round(1 / 28232, 6)


def test_counters_recorded():
    assert procfs.parse_header_pairs(NETSTAT)["TcpExt"] == {
        "SyncookiesSent": 0, "ListenOverflows": 12, "ListenDrops": 12, "TCPTimeWaitOverflow": 0, "TW": 340}
    tcp = procfs.parse_header_pairs(SNMP)["Tcp"]
    assert tcp["MaxConn"] == -1 and tcp["CurrEstab"] == 7
    assert procfs.parse_sockstat(SOCKSTAT) == {
        "sockets_used": 180, "TCP_inuse": 5, "TCP_orphan": 1, "TCP_tw": 340, "TCP_alloc": 9, "TCP_mem": 3,
        "UDP_inuse": 2, "UDP_mem": 1}


def test_rates_skip_gauges():
    before = {"TcpExt": {"ListenOverflows": 10}, "Tcp": {"ActiveOpens": 100, "CurrEstab": 5}}
    after = {"TcpExt": {"ListenOverflows": 30}, "Tcp": {"ActiveOpens": 150, "CurrEstab": 9}}
    assert procfs.rates(before, after, 2.0) == {"TcpExt": {"ListenOverflows": 10.0}, "Tcp": {"ActiveOpens": 25.0}}


@pytest.mark.parametrize("text, message", [
    ("sl local\n 0: 0100007F:1F90\n", "line 2 has 2 fields"),
    ("  sl x\n   0: 0100007G:1F90 00000000:0000 0A 00000000:00000000 00:0 0 0 0 1\n", "line 2"),
    ("no header\n", "missing header"),
    ("  sl x\n   0: 01007F:1F90 00000000:0000 0A 00000000:00000000 00:0 0 0 0 1\n", "bad IPv4 address"),
])
def test_proc_net_malformed_names_the_problem(text, message):
    with pytest.raises(procfs.ProcFormatError, match=message):
        list(procfs.parse_proc_net(text, socket.AF_INET))


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_proc_net_parser_never_crashes(text):
    lines = text.splitlines()
    try:
        rows = list(procfs.parse_proc_net(text, socket.AF_INET))
    except procfs.ProcFormatError:
        return
    # a table is read line by line: its rows are those of each line under the same header
    assert rows == [row for line in lines[1:] for row in procfs.parse_proc_net(lines[0] + "\n" + line, socket.AF_INET)]


PROC_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
# each line with the row it stands for, or None where the line is malformed
PROC_LINES = {
    PROC_HEADER: None,  # a header anywhere but first is a malformed row
    "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 21630 1":
        (10, "127.0.0.1", 8080, "0.0.0.0", 0, 0, 2, 0, 21630, 0, 0),
    "   1: 0100007F:1F90 0200007F:B3A8 01 00000000:00000000 00:00000000 00000000     0        0 21641 1":
        (1, "127.0.0.1", 8080, "127.0.0.2", 0xB3A8, 0, 0, 0, 21641, 0, 0),
    "   2: ZZ:1F90 0200007F:B3A8 01": None,
    "   3: 0100007F:1F90 0200007F:B3A8 01 00000000 00:00000000 00000000     0        0 21641 1": None,
    "": None,
}


@given(st.lists(st.sampled_from(sorted(PROC_LINES)), max_size=8))
@settings(max_examples=300, deadline=None)
def test_proc_net_parser_on_shuffled_lines(lines):
    text = "\n".join(lines)
    lines = text.splitlines()  # as the parser reads the file: no empty last line
    if not lines:
        expected = []
    elif lines[0] != PROC_HEADER or any(PROC_LINES[line] is None for line in lines[1:]):
        expected = procfs.ProcFormatError
    else:
        expected = [PROC_LINES[line] for line in lines[1:]]
    try:
        rows = list(procfs.parse_proc_net(text, socket.AF_INET))
    except procfs.ProcFormatError:
        rows = procfs.ProcFormatError
    assert rows == expected


def kernel_hex(address, family):
    """An address as /proc/net/tcp(6) prints it: each 32-bit word in host byte order, %08X."""
    raw = socket.inet_pton(family, address)
    words = [raw[i:i + 4] for i in range(0, len(raw), 4)]
    return "".join((word[::-1] if sys.byteorder == "little" else word).hex().upper() for word in words)


PROC_ROW = st.tuples(
    st.integers(1, 12),  # TCP_ESTABLISHED .. TCP_NEW_SYN_RECV
    st.ip_addresses(v=4), st.integers(0, 65535), st.ip_addresses(v=4), st.integers(0, 65535),
    st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 31), st.integers(0, 2 ** 31),
    st.integers(0, 4), st.integers(0, 255), st.integers(0, 255))


@given(st.lists(PROC_ROW, max_size=6), st.sampled_from([socket.AF_INET, socket.AF_INET6]))
@settings(max_examples=300, deadline=None)
def test_proc_net_rows_read_back(entries, family):
    """Rows printed as the kernel prints them (get_tcp4_sock, get_tcp6_sock) read back as the same values."""
    lines, expected = [PROC_HEADER], []
    for index, (state, local, lport, remote, rport, tx, rx, uid, inode, timer, retrnsmt, probes) in enumerate(entries):
        local, remote = str(local), str(remote)
        if family == socket.AF_INET6:
            local, remote = "::ffff:" + local, "::ffff:" + remote
        lines.append("%4d: %s:%04X %s:%04X %02X %08X:%08X %02X:%08X %08X %5d %8d %d 1 0000000000000000 20 4 30 10 -1" % (
            index, kernel_hex(local, family), lport, kernel_hex(remote, family), rport, state, tx, rx, timer, 100,
            retrnsmt, uid, probes, inode))
        # retransmissions: the retrnsmt column, but unanswered probes for keepalive (2) and zero window probes (4)
        expected.append((state, local, lport, remote, rport, tx, rx, uid, inode, timer,
                         probes if timer in (2, 4) else retrnsmt))
    assert list(procfs.parse_proc_net("\n".join(lines), family)) == expected


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_counter_parsers_never_crash(text):
    try:
        pairs = procfs.parse_header_pairs(text)
    except procfs.ProcFormatError:
        pass
    else:
        # what was read prints back, as the kernel prints it, to a text that reads the same
        assert procfs.parse_header_pairs(header_pairs_text(pairs)) == pairs
    try:
        sockstat = procfs.parse_sockstat(text)
    except procfs.ProcFormatError:
        return
    # sockstat is read line by line: its counters are those of each line, a later line winning
    merged = {}
    for line in text.splitlines():
        merged.update(procfs.parse_sockstat(line))
    assert sockstat == merged


def header_pairs_text(pairs):
    """/proc/net/snmp and netstat as the kernel prints them: a names line, then a values line per prefix."""
    lines = []
    for prefix, counters in pairs.items():
        lines.append("%s:%s" % (prefix, "".join(" " + name for name in counters)))
        lines.append("%s:%s" % (prefix, "".join(" %d" % value for value in counters.values())))
    return "\n".join(lines) + "\n"


COUNTER_NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,15}", fullmatch=True)
COUNTERS = st.dictionaries(COUNTER_NAME, st.integers(-1, 2 ** 63), max_size=6)


@given(st.dictionaries(COUNTER_NAME, COUNTERS, max_size=4))
@settings(max_examples=300, deadline=None)
def test_counters_read_back(pairs):
    assert procfs.parse_header_pairs(header_pairs_text(pairs)) == pairs
    sockstat = "".join("%s:%s\n" % (prefix, "".join(" %s %d" % item for item in counters.items()))
                       for prefix, counters in pairs.items())
    assert procfs.parse_sockstat(sockstat) == {"%s_%s" % (prefix, name): value
                                               for prefix, counters in pairs.items() for name, value in counters.items()}


# ---------------------------------------------------------------- synthetic netlink messages

def diag_message(family, state, sport, dport, src, dst, rqueue=0, wqueue=0, uid=0, inode=0, attrs=b"",
                 timer=0, retrans=0):
    width = 4 if family == socket.AF_INET else 16
    src_raw = socket.inet_pton(family, src).ljust(16, b"\0")[:16]
    dst_raw = socket.inet_pton(family, dst).ljust(16, b"\0")[:16]
    assert len(src_raw) == 16 and width
    body = struct.pack("=BBBB", family, state, timer, retrans) + struct.pack("!HH", sport, dport) + src_raw + dst_raw
    body += struct.pack("=I", 0) + struct.pack("=II", 0, 0)
    body += struct.pack("=IIIII", 0, rqueue, wqueue, uid, inode) + attrs
    return netlink.NLMSG_HDR.pack(16 + len(body), netlink.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def done_message():
    return netlink.NLMSG_HDR.pack(20, netlink.NLMSG_DONE, 2, 1, 0) + struct.pack("=i", 0)


def test_netlink_aggregation_on_synthetic_dump():
    listeners = (diag_message(socket.AF_INET, 10, 80, 0, "0.0.0.0", "0.0.0.0", rqueue=3, wqueue=128, inode=7)
                 + diag_message(socket.AF_INET6, 10, 8080, 0, "::", "::", rqueue=0, wqueue=4096, inode=8)
                 + done_message())
    tcp = engine.TcpAggregate((32768, 60999))
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
    assert tcp.remote_ports(1) == {"5432": {"total": 4, "states": dict(engine._zero_states(), TIME_WAIT=4)}}
    peers = tcp.peers(2)
    # 10.0.0.3: 3 + the IPv4-mapped one; 10.0.0.9: 4 TIME_WAIT; ties go by address; 10.0.0.2 (3) is cut
    assert [(p["address"], p["total"]) for p in peers] == [("10.0.0.3", 4), ("10.0.0.9", 4)]
    busiest = tcp.ephemeral()["busiest"]
    assert busiest == {"address": "10.0.0.9", "port": 5432, "connections": 4, "time_wait": 4,
                       "share": round(4 / 28232, 6)}
    assert [(item["port"], item["queue"], item["backlog"]) for item in tcp.listeners] == [(80, 3, 128), (8080, 0, 4096)]


def test_data_before_done_in_one_buffer_is_all_counted():
    tcp = engine.TcpAggregate((1024, 65535))
    buf = diag_message(socket.AF_INET, 1, 1, 2, "1.1.1.1", "2.2.2.2") + done_message()
    assert tcp.consume_netlink(buf, len(buf)) == len(buf) - 20
    assert tcp.states()["total"] == 1


@pytest.mark.parametrize("gather_subset, expected", [
    (None, ["counters", "listeners", "peers", "ports", "states", "timers"]),
    (["all"], sorted(engine.SUBSETS)),
    (["all", "!sockets"], sorted(set(engine.SUBSETS) - {"sockets"})),
    (["!peers"], ["counters", "listeners", "ports", "states", "timers"]),
    (["default", "routes"], ["counters", "listeners", "peers", "ports", "routes", "states", "timers"]),
    (["min"], ["states"]),
    (["!all"], ["states"]),
    ("ports,listeners", ["listeners", "ports", "states"]),
])
def test_gather_subset_like_setup(gather_subset, expected):
    assert engine.resolve_subset(gather_subset) == expected


@pytest.mark.parametrize("kwargs, message", [
    ({"gather_subset": ["bogus"]}, "gather_subset: unknown subset 'bogus'"),
    ({"top": "5"}, "top: '5' is not an integer"),
    ({"top": True}, "top: True is not an integer"),
    ({"sample_interval": -1}, "sample_interval: -1 must be"),
    ({"backend": "bpf"}, "backend: 'bpf' is not one of auto, netlink, proc"),
    ({"namespace": "pid:abc"}, "namespace: 'pid:abc': expected pid:<number>"),
    ({"namespace": "a/b"}, "namespace: 'a/b' is not a namespace name"),
])
def test_gather_rejects_bad_options_before_reading_anything(kwargs, message):
    with pytest.raises(engine.GatherError, match=message):
        engine.gather(proc="/nonexistent", **kwargs)


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
    tcp = engine.TcpAggregate((32768, 60999))
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
