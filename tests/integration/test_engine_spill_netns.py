# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Many distinct peers and many listening ports, on real sockets in a private network namespace.

Past engine.SPILL_KEYS distinct keys the engine's counting dicts spill into fixed-width records
(_aggregate.KeyRecords); spill_keys, gather()'s internal parameter, makes a few thousand keys spill
after every receive buffer. Both ways must give the same facts, and `ss` the same counts. With more
listening ports than local_ports_limit, tcp.local_ports keeps the busiest and each state's worst
ports, and tcp.local_ports_rest sums the others.
"""

import socket
from collections import Counter

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
from ansible_collections.netstate.tcp.plugins.module_utils._peer_connections import peer_connections
from tests.support.ss_oracle import Snapshot, zero_states

pytestmark = pytest.mark.netns

DESTINATIONS = 1200  # listeners of their own address: as many client-side destinations


def _spread(prefix, count, start=0):
    """count distinct loopback addresses prefix.X.Y."""
    return ["%s.%d.%d" % (prefix, (start + index) // 250, (start + index) % 250 + 1) for index in range(count)]


MIX = {
    "listeners": [
        {"address": "127.0.0.1", "port": 80, "backlog": 4096},
        {"address": "::", "port": 7070, "backlog": 1024},
        {"address": "::1", "port": 9090, "backlog": 64},
    ] + [{"address": address, "port": 8443, "backlog": 8} for address in _spread("127.5", DESTINATIONS)],
    # 1500 peers with one connection each, a few with more (ties among them), the same peers
    # again through a dual-stack listener (IPv4-mapped: one peer for both families), IPv6 peers
    "established": [{"to": ["127.0.0.1", 80], "from": address, "count": 1} for address in _spread("127.1", 1500)]
    + [{"to": ["127.0.0.1", 80], "from": address, "count": 2 + index % 4}
       for index, address in enumerate(_spread("127.3", 24))]
    + [{"to": ["::", 7070], "from": address, "count": 1} for address in _spread("127.1", 300)]
    + [{"to": ["::1", 9090], "count": 5}]
    # client side: one connection to each of the DESTINATIONS, three to one of them
    + [{"to": [address, 8443], "count": 1} for address in _spread("127.5", DESTINATIONS)]
    + [{"to": ["127.5.2.9", 8443], "count": 2}],
    "time_wait": [{"to": ["127.0.0.1", 80], "from": address, "count": 1} for address in _spread("127.6", 150)],
    "close_wait": [{"to": ["127.0.0.1", 80], "from": address, "count": 1} for address in _spread("127.7", 80)],
}


@pytest.fixture
def peers_ns(netns, tmp_path):
    netns.sysctl("net.ipv4.tcp_tw_reuse", 0)
    netns.built = netns.hold_mix(MIX, tmp_path)
    return netns


def _packed(address):
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


def _without_clock(facts):
    return {key: value for key, value in facts.items() if key not in ("duration_ms", "listener_walk")}


def gather_both(ns, **options):
    """(ss before, facts from dicts, facts spilled after every receive buffer, ss after).

    The listener walk gets a budget of descriptors, not of time: on a loaded machine the default
    100 ms could end one of the two walks early and leave its listeners unattributed (CI saw it)."""
    before = Snapshot(ns.name)
    in_dicts = engine.gather(namespace=ns.name, walk_budget=1000000, **options)
    spilled = engine.gather(namespace=ns.name, spill_keys=0, walk_budget=1000000, **options)
    after = Snapshot(ns.name)
    assert before.tcp == after.tcp, "the socket mix moved while gathering"
    return before, in_dicts, spilled


@pytest.mark.parametrize("backend", ["netlink", "proc"])
def test_spilled_records_give_the_facts_of_the_dicts(peers_ns, backend):
    before, in_dicts, spilled = gather_both(peers_ns, backend=backend,
                                            gather_subset=["ports", "peers", "timers", "listeners"])
    assert in_dicts["backend"] == spilled["backend"] == backend
    assert _without_clock(spilled) == _without_clock(in_dicts)
    assert in_dicts["listener_walk"]["unattributed"] == spilled["listener_walk"]["unattributed"] == 0
    tcp = spilled["tcp"]
    # more distinct keys than spill_keys=0 holds: the records were used, and the mix is what it was built for
    assert len(before.peers()) > 2500 and tcp["states"]["CLOSE_WAIT"] == 80
    oracle = before.peers()
    expected = sorted(oracle.items(), key=lambda item: (-item[1]["total"], item[0]))[:10]
    assert [(row["address"], {"total": row["total"], "states": row["states"]}) for row in tcp["peers"]] == expected
    # the dual-stack listener's IPv4-mapped peers count with the same address's IPv4 connections
    assert oracle["127.1.0.1"]["states"]["ESTABLISHED"] == oracle["127.1.0.1"]["total"] == 2  # to 80 and 7070
    busiest = Counter((row["peer"], row["pport"]) for row in before._client_side())
    (address, port), count = max(busiest.items(), key=lambda item: (item[1], _packed(item[0][0]), item[0][1]))
    assert tcp["ephemeral"]["busiest"]["connections"] == count
    assert (tcp["ephemeral"]["busiest"]["address"], tcp["ephemeral"]["busiest"]["port"]) == (address, port)
    assert tcp["ephemeral"]["busiest"]["time_wait"] == 150


def test_every_peer_and_remote_port_against_ss(peers_ns):
    before, in_dicts, spilled = gather_both(peers_ns, top=100000, gather_subset=["ports", "peers"])
    assert spilled["tcp"]["peers"] == in_dicts["tcp"]["peers"]
    oracle = before.peers()
    assert {row["address"]: {"total": row["total"], "states": row["states"]} for row in spilled["tcp"]["peers"]} \
        == oracle
    assert [row["address"] for row in spilled["tcp"]["peers"]] == \
        sorted(oracle, key=lambda address: (-oracle[address]["total"], address))
    assert spilled["tcp"]["remote_ports"] == in_dicts["tcp"]["remote_ports"] == before.remote_ports()
    assert spilled["tcp"]["remote_ports"]["8443"]["states"]["ESTABLISHED"] == DESTINATIONS + 2


@pytest.mark.parametrize("backend", ["netlink", "proc"])
def test_peer_connections_spilled_against_ss(peers_ns, backend):
    before = Snapshot(peers_ns.name)
    counted = {}
    with procfs.NetNamespace(peers_ns.path):
        for spill_keys in (engine.SPILL_KEYS, 0):
            counted[spill_keys] = peer_connections(backend=backend, spill_keys=spill_keys)
            counted[spill_keys, 2] = peer_connections(backend=backend, spill_keys=spill_keys, more_than=2)
    oracle = Counter(row["peer"] for row in before.tcp if row["state"] != "LISTEN")
    assert counted[0] == counted[engine.SPILL_KEYS]
    assert counted[0]["peers"] == dict(oracle)
    assert list(counted[0]["peers"]) == sorted(oracle, key=lambda address: (-oracle[address], address))
    assert counted[0]["total"] == sum(oracle.values()) and counted[0]["peer_count"] == len(oracle) > 2500
    assert counted[0, 2] == counted[engine.SPILL_KEYS, 2]
    assert counted[0, 2]["peers"] == {address: count for address, count in oracle.items() if count > 2}
    assert counted[0, 2]["total"] == counted[0]["total"] and counted[0, 2]["peer_count"] == len(oracle)


# ---------------------------------------------------------------- local_ports_limit

PORTS = list(range(20000, 20300))
LEAKING = 20250     # CLOSE_WAIT, too few sockets to be among the busiest
BUSY = PORTS[:60]   # three connections each: the busiest, beyond a limit of 50

PORTS_MIX = {
    "listeners": [{"address": "127.0.0.1", "port": port, "backlog": 16} for port in PORTS],
    "established": [{"to": ["127.0.0.1", port], "count": 3} for port in BUSY]
    + [{"to": ["127.0.0.1", 20290], "count": 1}],
    "close_wait": [{"to": ["127.0.0.1", LEAKING], "count": 2}],
}


def test_local_ports_beyond_the_limit(netns, tmp_path):
    netns.hold_mix(PORTS_MIX, tmp_path)
    before = Snapshot(netns.name)
    facts = engine.gather(namespace=netns.name, gather_subset=["ports"], local_ports_limit=50, top=10)
    every = engine.gather(namespace=netns.name, gather_subset=["ports"], local_ports_limit=len(PORTS), top=10)
    after = Snapshot(netns.name)
    assert before.tcp == after.tcp
    oracle = before.local_ports()
    assert every["tcp"]["local_ports"] == oracle
    assert every["tcp"]["local_ports_rest"] == {"ports": 0, "total": 0, "states": zero_states()}

    listed, rest = facts["tcp"]["local_ports"], facts["tcp"]["local_ports_rest"]
    # the 50 busiest, and for each state the 10 ports with the most sockets in it (ties: lower port)
    kept = set(sorted(oracle, key=lambda port: (-oracle[port]["total"], int(port)))[:50])
    for state in zero_states():
        busy = [port for port in oracle if oracle[port]["states"][state]]
        kept.update(sorted(busy, key=lambda port: (-oracle[port]["states"][state], int(port)))[:10])
    assert set(listed) == kept and list(listed) == sorted(listed, key=int)
    assert str(LEAKING) in listed and str(BUSY[-1]) not in listed  # the worst CLOSE_WAIT port stays
    assert all(listed[port] == oracle[port] for port in listed)
    others = [port for port in oracle if port not in listed]
    summed = zero_states()
    for port in others:
        for state, count in oracle[port]["states"].items():
            summed[state] += count
    assert rest == {"ports": len(others), "total": sum(oracle[port]["total"] for port in others), "states": summed}
    assert rest["ports"] == len(PORTS) - len(kept) > 200 and rest["states"]["ESTABLISHED"] > 0


# ---------------------------------------------------------------- listeners_limit

QUEUED = {20271: 4, 20283: 1, 20299: 9}   # port -> connections left in its accept queue (backlog 16)
LISTENERS_MIX = dict(PORTS_MIX, established=PORTS_MIX["established"] + [
    {"to": ["127.0.0.1", port], "count": count, "accepted": False} for port, count in QUEUED.items()])


def _rank(oracle, key):
    entry = oracle[key]
    share = entry["queue"] / entry["backlog"]
    return (-share, -entry["queue"], -entry["connections"], key[1], key[0])


def test_listeners_beyond_the_limit(netns, tmp_path):
    """The fullest accept queues first, then the busiest ports; the rest summed; every one without a limit."""
    netns.hold_mix(LISTENERS_MIX, tmp_path)
    oracle = Snapshot(netns.name).listeners()
    assert {port: oracle[("127.0.0.1", port)]["queue"] for port in QUEUED} == QUEUED
    warnings = []
    facts = engine.gather(namespace=netns.name, gather_subset=["listeners"], listeners_limit=50, warnings=warnings)
    every = engine.gather(namespace=netns.name, gather_subset=["listeners"], listeners_limit=None)
    default = engine.gather(namespace=netns.name, gather_subset=["listeners"])
    assert Snapshot(netns.name).listeners() == oracle

    def keys(listing):
        return [(item["address"], item["port"]) for item in listing]

    assert sorted(keys(every["listeners"])) == sorted(oracle) and len(oracle) == len(PORTS)
    assert every["listeners_rest"] == {"tcp": 0, "udp": 0, "queue": 0, "max_saturation": None}
    assert len(default["listeners"]) == engine.DEFAULTS["listeners_limit"] == 200
    assert default["listeners_rest"]["tcp"] == len(PORTS) - 200

    kept = sorted(oracle, key=lambda key: _rank(oracle, key))[:50]
    assert keys(facts["listeners"]) == sorted(kept, key=lambda key: (key[1], key[0]))  # listed by port
    assert set(QUEUED) <= {port for _address, port in kept}
    assert facts["listeners"] == [item for item in every["listeners"] if (item["address"], item["port"]) in kept]
    assert all(item["pid"] == oracle[(item["address"], item["port"])]["pid"] for item in facts["listeners"])
    assert facts["listener_walk"]["unattributed"] == 0 and not warnings
    others = [key for key in oracle if key not in kept]
    assert facts["listeners_rest"] == {
        "tcp": len(others), "udp": 0, "queue": sum(oracle[key]["queue"] for key in others),
        "max_saturation": max(round(oracle[key]["queue"] / oracle[key]["backlog"], 4) for key in others)}
    with pytest.raises(engine.GatherError, match=r"listeners_limit: 0 is out of range"):
        engine.gather(namespace=netns.name, gather_subset=["listeners"], listeners_limit=0)
