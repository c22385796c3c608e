# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""engine: the aggregation of sock_diag dumps (synthetic messages) and /proc tables (recorded on real
hosts), gather_subset, and gather()'s options, refused by name before anything is read (hypothesis on
hostile values, docs/security.md).

These complement (never replace) the namespace tests that compare the engine with ss on real sockets.
The route and multicast wrappers are tested with their decoders (test_rtnetlink.py, test_procfs.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _argspec as contract
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine

from tests.unit.plugins.module_utils._engine._helpers import HOSTILE_TEXT, PROC_NET_TCP, PROC_NET_TCP6, \
    diag_message, done_message

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


# ---------------------------------------------------------------- synthetic netlink messages

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


# ---------------------------------------------------------------- options

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


HOSTILE_VALUE = st.one_of(
    HOSTILE_TEXT, st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=20),
    st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


GATHER_OPTIONS = ["gather_subset", "top", "sample_interval", "namespace", "backend", "max_sockets", "walk_budget",
                  "local_ports_limit", "listeners_limit"]


MESSAGE_LIMIT = 600


def _valid(option, value):
    """Whether gather() may accept the value (then it gathers for real; the test skips those)."""
    if option in ("top", "max_sockets", "walk_budget", "local_ports_limit", "listeners_limit"):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0 or value is None
    if option == "sample_interval":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 60
    if option == "backend":
        return value in contract.BACKENDS
    return value is None or value == "" or isinstance(value, (list, str)) and not isinstance(value, bytes)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GATHER_OPTIONS), HOSTILE_VALUE)
def test_gather_refuses_hostile_options_by_name_before_reading_anything(option, value):
    assume(not _valid(option, value) or option in ("namespace", "gather_subset"))
    assume(value != "all")  # a real value: every namespace of the machine would be gathered
    try:
        # /nonexistent as /proc: an option that got through would fail on reading, which the test tells apart
        engine.gather(**{option: value, "proc": "/nonexistent/proc", "run_netns": "/nonexistent/netns"})
    except engine.GatherError as error:
        message = str(error)
        assert len(message) < MESSAGE_LIMIT, message[:300]
        assert "\n" not in message and "\0" not in message
        if "/nonexistent/" in message and option not in ("namespace",):
            # went through validation: only a value inside the option's grammar may get here
            assert _valid(option, value), (option, value, message)
            return
        # a namespace that cannot be entered is named by its label: "namespace /dev/zero: cannot enter ..."
        # the message starts with the option's name, the name the modules' users know too
        assert message.startswith((option + ":", option + " ") if option == "namespace" else option + ":"), \
            (option, message)
        return
    except (OSError, ValueError) as error:
        # past validation, reading /nonexistent/proc fails: only values inside the grammar may get here
        assert _valid(option, value) or option == "gather_subset", (option, value, error)
        return
    assert _valid(option, value), (option, value)


@settings(max_examples=300, deadline=None)
@given(HOSTILE_TEXT)
def test_namespace_grammar_admits_nothing_that_escapes(namespace):
    try:
        engine.check_namespace(namespace)
    except engine.GatherError as error:
        assert str(error).startswith("namespace: ") and len(str(error)) < MESSAGE_LIMIT
        return
    if namespace in ("", "host", "self", "all"):
        return
    assert not set(namespace) & {"\0", "\n", "\r", "\\", " "}
    if namespace.startswith("/"):
        assert not {"", ".", ".."} & set(namespace.split("/")[1:]), namespace
    elif namespace.startswith("pid:"):
        assert namespace[4:].isdigit() and namespace[4] != "0"
    else:
        assert "/" not in namespace and namespace[0] not in ".-" and len(namespace) <= 64
