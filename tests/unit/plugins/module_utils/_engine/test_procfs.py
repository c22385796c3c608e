# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_procfs: the /proc parsers and readers, on tables recorded on real hosts, on malformed text and on
text hypothesis makes; the /proc backend of gather() on mutated tables.

These complement (never replace) the namespace tests that compare the engine with ss on real sockets.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd
import socket
import sys
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine

from tests.support.hostile import HOSTILE_COMM
from tests.unit.plugins.module_utils._engine._helpers import PROC_NET_TCP, PROC_NET_TCP6, no_hang

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


def test_proc_net_tcp6_maps_ipv4():
    rows = list(procfs.parse_proc_net(PROC_NET_TCP6, socket.AF_INET6))
    assert rows[0][1:3] == ("::", 8081)
    assert rows[1][1] == "::ffff:127.0.0.1" and rows[1][3] == "::ffff:127.0.0.3"


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


# ---------------------------------------------------------------- processes

def test_process_info_reads_a_name_that_is_not_utf8(tmp_path):
    """/proc/PID/comm and stat as a process that named itself with 15 arbitrary bytes leaves them."""
    base = tmp_path / "4242"
    base.mkdir()
    (base / "comm").write_bytes(HOSTILE_COMM + b"\n")
    fields = " ".join(["S"] + ["0"] * 18 + ["100"] + ["0"] * 10)
    (base / "stat").write_bytes(b"4242 (" + HOSTILE_COMM + b") " + fields.encode())
    (tmp_path / "stat").write_text("btime 1700000000\n")
    procfs._BOOT_TIME.clear()
    try:
        info = procfs.process_info(4242, proc=str(tmp_path))
    finally:
        procfs._BOOT_TIME.clear()
    assert info["process"] == "<img src=x>|a\\xe2\\x80"
    assert info["stime"] is not None
    assert info["user"] == procfs.user_name(os.getuid())


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


# ---------------------------------------------------------------- the /proc backend through gather(), on mutated tables

RECORDED_LINES = PROC_NET_TCP.splitlines() + PROC_NET_TCP6.splitlines()


@st.composite
def proc_table(draw):
    lines = draw(st.lists(st.sampled_from(RECORDED_LINES), min_size=0, max_size=6))
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


# ---------------------------------------------------------------- readers on a temporary /proc tree

def _write(root, relative, text):
    path = os.path.join(str(root), relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def test_counters_are_read_from_their_files(tmp_path):
    _write(tmp_path, "net/netstat", NETSTAT)
    _write(tmp_path, "net/snmp", SNMP)
    _write(tmp_path, "net/sockstat", SOCKSTAT)
    _write(tmp_path, "net/sockstat6", "TCP6: inuse 2\nUDP6: inuse 1\n")
    counters = procfs.read_counters(str(tmp_path))
    assert counters["TcpExt"]["ListenOverflows"] == 12 and counters["Tcp"]["CurrEstab"] == 7
    assert counters["sockstat"]["TCP_tw"] == 340 and counters["sockstat"]["TCP6_inuse"] == 2
    os.remove(str(tmp_path / "net" / "sockstat6"))  # a kernel without IPv6
    assert "TCP6_inuse" not in procfs.read_counters(str(tmp_path))["sockstat"]
    os.remove(str(tmp_path / "net" / "netstat"))  # the engine makes this a GatherError naming the counters
    with pytest.raises(OSError):
        procfs.read_counters(str(tmp_path))


def test_sysctls_are_numbers_or_none(tmp_path):
    _write(tmp_path, "sys/net/ipv4/tcp_max_orphans", "65536\n")
    _write(tmp_path, "sys/net/core/somaxconn", "4096\n")
    _write(tmp_path, "sys/net/ipv4/tcp_fin_timeout", "soon\n")
    _write(tmp_path, "sys/net/ipv4/tcp_syncookies", "")
    sysctls = procfs.read_sysctls(str(tmp_path))
    assert set(sysctls) == {name for name, _path in procfs.SYSCTL_KEYS}
    assert sysctls["tcp_max_orphans"] == 65536 and sysctls["somaxconn"] == 4096
    # not a number, empty, and absent (a global key /proc/sys does not show inside a namespace)
    assert sysctls["tcp_fin_timeout"] is None and sysctls["tcp_syncookies"] is None
    assert sysctls["tcp_max_tw_buckets"] is None


@pytest.mark.parametrize("text, expected", [
    ("20000\t30000\n", (20000, 30000)),  # as the kernel prints it
    ("1024 65535", (1024, 65535)),
    (None, (32768, 60999)),  # unreadable: the kernel's default
    ("32768\n", (32768, 60999)),
    ("low high\n", (32768, 60999)),
])
def test_port_range(tmp_path, text, expected):
    if text is not None:
        _write(tmp_path, "sys/net/ipv4/ip_local_port_range", text)
    assert procfs.read_port_range(str(tmp_path)) == expected


def test_processes_are_the_numeric_entries_and_a_process_gone_is_none(tmp_path):
    for name in ("1", "42", "self", "net", "7x"):
        os.makedirs(str(tmp_path / name))
    assert procfs.pids(str(tmp_path)) == [1, 42]
    assert procfs.process_info(42, proc=str(tmp_path)) is None  # no comm: it exited while being read


def test_own_namespace_file_is_the_calling_thread_s(tmp_path):
    """/proc/thread-self where it exists (a worker thread that entered a namespace is told apart; the real
    test: tests/integration/test_listener_walk.py), self in a copy of /proc without it."""
    assert procfs.own_namespace_file() == "/proc/thread-self/ns/net"
    (tmp_path / "self").mkdir()
    assert procfs.own_namespace_file(str(tmp_path)) == str(tmp_path / "self" / "ns/net")
    (tmp_path / "thread-self").mkdir()
    assert procfs.own_namespace_file(str(tmp_path)) == str(tmp_path / "thread-self" / "ns/net")
