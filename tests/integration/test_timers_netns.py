# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tcp.timers, tcp.queues and tcp.retransmitting against `ss -tano` on real sockets.

In a private namespace: idle keepalive connections (SO_KEEPALIVE, TCP_KEEPIDLE 2 s), a peer
behind a veth pair whose end is brought down after the handshakes (its sockets retransmit),
receivers that never read (Recv-Q and Send-Q fill, the senders send zero window probes) and
a few TIME_WAIT sockets. Every figure is compared with ss run just before and just after
gathering, with both backends.
"""

import json
import socket
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
from tests import conftest
from tests.support.ss_oracle import TimerSnapshot
from tests.support.waiting import wait_for

pytestmark = pytest.mark.netns

LOCAL, PEER = "198.18.0.201", "198.18.0.202"
RETRANSMITTING = 5
KEEPALIVE = 3
UNREAD = 2
TIME_WAIT = 2


def _ip(*args):
    subprocess.run(["ip"] + list(args), check=True, capture_output=True, text=True)


class TimerMix:
    """The sockets, held by this process; the peer's end lives in a second namespace."""

    def __init__(self, netns):
        self.ns = netns
        self.peer_ns = conftest.Namespace(prefix="nstp")
        self.peer = self.peer_ns.name
        self.held = []
        veth_a, veth_b = "nsa%s" % self.peer[-6:], "nsb%s" % self.peer[-6:]
        _ip("link", "add", veth_a, "netns", netns.name, "type", "veth", "peer", "name", veth_b, "netns", self.peer)
        _ip("-n", netns.name, "addr", "add", LOCAL + "/30", "dev", veth_a)
        _ip("-n", self.peer, "addr", "add", PEER + "/30", "dev", veth_b)
        _ip("-n", netns.name, "link", "set", veth_a, "up")
        _ip("-n", self.peer, "link", "set", veth_b, "up")
        self.veth_b = veth_b

    def _keep(self, *socks):
        self.held.extend(socks)
        return socks

    def build(self):
        with procfs.NetNamespace(self.peer_ns.path):
            far = self._keep(socket.socket())[0]
            far.bind((PEER, 80))
            far.listen(64)
        with procfs.NetNamespace(self.ns.path):
            lost = []
            for _index in range(RETRANSMITTING):
                client = socket.create_connection((PEER, 80), timeout=5)
                lost.append(client)
                self._keep(client, far.accept()[0])
            keepalive = self._keep(socket.socket())[0]
            keepalive.bind(("127.0.0.1", 7000))
            keepalive.listen(16)
            for _index in range(KEEPALIVE):
                client = self._keep(socket.socket())[0]
                client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2)
                client.connect(("127.0.0.1", 7000))
                self._keep(keepalive.accept()[0])
            for address in ("127.0.0.1", "::1"):
                unread = self._keep(socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET))[0]
                unread.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                unread.bind((address, 7001))
                unread.listen(16)
                for _index in range(UNREAD):
                    client = self._keep(socket.socket(unread.family))[0]
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                    client.connect((address, 7001))
                    self._keep(unread.accept()[0])  # never read
                    client.setblocking(False)
                    try:
                        while True:
                            client.send(b"x" * 1024)
                    except BlockingIOError:
                        pass
            closing = socket.socket()
            closing.bind(("127.0.0.1", 7002))
            closing.listen(16)
            for _index in range(TIME_WAIT):
                client = socket.create_connection(("127.0.0.1", 7002))
                server = closing.accept()[0]
                client.close()
                server.recv(1)
                server.close()
            closing.close()
        # The peer goes away after the handshakes: what is sent now is never acknowledged.
        _ip("-n", self.peer, "link", "set", self.veth_b, "down")
        for client in lost:
            client.send(b"y" * 100)

        def settled():
            snapshot = TimerSnapshot(self.ns.name)
            peer = snapshot.retransmitting().get(PEER, {})
            return peer.get("sockets") == RETRANSMITTING and snapshot.timers()["zero_window_probe"] == 2 * UNREAD

        wait_for("the timer mix settles (%d sockets retransmitting to %s, %d probing a zero window)" % (
            RETRANSMITTING, PEER, 2 * UNREAD), settled, 10, interval=0.2)
        return self

    def close(self):
        for sock in self.held:
            sock.close()
        self.peer_ns.close()


@pytest.fixture
def timer_ns(netns):
    netns.sysctl("net.ipv4.tcp_tw_reuse", 0)
    mix = TimerMix(netns)
    try:
        mix.build()
        yield netns
    finally:
        mix.close()


def gather_between(ns, **options):
    before = TimerSnapshot(ns.name)
    facts = engine.gather(namespace=ns.name, **options)
    after = TimerSnapshot(ns.name)
    return before, facts, after


@pytest.mark.parametrize("backend", ["netlink", "proc"])
def test_timers_match_ss(timer_ns, backend):
    before, facts, after = gather_between(timer_ns, backend=backend)
    assert facts["backend"] == backend and "timers" in facts["gather_subset"]
    timers = facts["tcp"]["timers"]
    assert timers == before.timers() == after.timers(), (timers, before.timers(), after.timers())
    # the mix holds what it was built for
    assert timers["keepalive"] == KEEPALIVE and timers["time_wait"] == TIME_WAIT
    assert timers["zero_window_probe"] == 2 * UNREAD and timers["retransmit"] == RETRANSMITTING
    assert sum(timers.values()) == facts["tcp"]["total"] - facts["tcp"]["states"]["LISTEN"]


@pytest.mark.parametrize("backend", ["netlink", "proc"])
def test_queues_match_ss(timer_ns, backend):
    before, facts, after = gather_between(timer_ns, backend=backend)
    queues = dict(facts["tcp"]["queues"])
    ports = queues.pop("send_ports")
    assert queues == before.queue_totals() == after.queue_totals(), (queues, before.queue_totals())
    # both unread receivers' queues and both senders' queues are full, and the lost data is queued
    assert queues["recv_sockets"] == 2 * UNREAD and queues["recv_bytes"] > 0
    assert queues["send_sockets"] == 2 * UNREAD + RETRANSMITTING
    expected = before.send_ports()
    assert expected == after.send_ports()
    assert {(p["port"], p["side"]): {"sockets": p["sockets"], "bytes": p["bytes"], "stalled": p["stalled"]}
            for p in ports} == expected
    assert [p["bytes"] for p in ports] == sorted((p["bytes"] for p in ports), reverse=True)
    assert {(p["port"], p["side"]) for p in ports} == {(7001, "remote"), (80, "remote")}
    assert all(p["stalled"] == p["sockets"] for p in ports)


@pytest.mark.parametrize("backend", ["netlink", "proc"])
@pytest.mark.parametrize("spill_keys", [engine.SPILL_KEYS, 0], ids=["dicts", "spilled"])
def test_retransmitting_peers_match_ss(timer_ns, backend, spill_keys):
    # spill_keys=0: every key goes to the engine's records after each receive buffer
    before, facts, after = gather_between(timer_ns, backend=backend, spill_keys=spill_keys)
    rows = facts["tcp"]["retransmitting"]
    assert [row["address"] for row in rows] == [PEER]
    row = rows[0]
    low, high = before.retransmitting()[PEER], after.retransmitting()[PEER]
    assert row["sockets"] == low["sockets"] == high["sockets"] == RETRANSMITTING
    # retransmissions only grow while the peer stays away
    assert low["retransmits"] <= row["retransmits"] <= high["retransmits"], (low, row, high)
    assert row["retransmits"] >= RETRANSMITTING


def test_min_subset_leaves_timers_out(timer_ns):
    facts = engine.gather(namespace=timer_ns.name, gather_subset=["min"])
    assert "timers" not in facts["tcp"] and "queues" not in facts["tcp"] and "retransmitting" not in facts["tcp"]
    facts = engine.gather(namespace=timer_ns.name, gather_subset=["min", "timers"], top=1)
    assert len(facts["tcp"]["queues"]["send_ports"]) == 1 and facts["tcp"]["queues"]["send_ports"][0]["port"] == 7001


def test_builtin_rules_catch_the_lost_peer_and_the_stalled_port(timer_ns):
    from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as rules

    checked = {rule.name: rule for rule in rules.build_rules(thresholds={"send_queue_stalled_port": 3})}

    def once_the_peer_is_lost():
        facts = engine.gather(namespace=timer_ns.name)
        results = {name: rules.evaluate_rule(checked[name], facts)
                   for name in ("retransmitting_peer", "send_queue_stalled_port")}
        return None if results["retransmitting_peer"][0]["ok"] else (facts, results)

    # three retransmissions in a row take 0.2 + 0.4 + 0.8 s at the minimum RTO
    facts, results = wait_for("retransmitting_peer fails for %s" % PEER, once_the_peer_is_lost, 15, interval=0.3)
    lost = results["retransmitting_peer"][0]
    assert not lost["ok"] and lost["subject"] == PEER and lost["value"] == RETRANSMITTING, lost
    stalled = results["send_queue_stalled_port"]
    # the never-read receivers' port (zero window probes) and the lost peer's (retransmissions)
    assert sorted((r["ok"], r["subject"], r["value"]) for r in stalled) == [
        (False, "remote port 7001", 2 * UNREAD), (False, "remote port 80", RETRANSMITTING)]
    # at the built-in threshold (10 sockets) four and five stalled sockets are fine
    default = [rule for rule in rules.build_rules() if rule.name == "send_queue_stalled_port"][0]
    assert all(r["ok"] for r in rules.evaluate_rule(default, facts))


def test_collector_series_match_ss(timer_ns):
    def collect(output_format):
        result = subprocess.run(
            [sys.executable, "-m", "ansible_collections.netstate.tcp.plugins.module_utils._engine.collect", "--format",
             output_format, "--namespace", timer_ns.name, "--quiet"],
            cwd=conftest.COLLECTIONS, capture_output=True, text=True, timeout=60, check=True)
        return result.stdout

    before = TimerSnapshot(timer_ns.name)
    text = collect("prometheus")
    after = TimerSnapshot(timer_ns.name)
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    assert values["netstate_tcp_timer_sockets"] == {
        (("timer", name),): float(count) for name, count in before.timers().items()} == {
        (("timer", name),): float(count) for name, count in after.timers().items()}
    totals = before.queue_totals()
    assert totals == after.queue_totals()
    assert values["netstate_tcp_queue_bytes"] == {(("queue", "recv"),): totals["recv_bytes"],
                                                  (("queue", "send"),): totals["send_bytes"]}
    assert values["netstate_tcp_queue_sockets"] == {(("queue", "recv"),): totals["recv_sockets"],
                                                    (("queue", "send"),): totals["send_sockets"]}
    ports = before.send_ports()
    assert values["netstate_tcp_send_queue_port_stalled_sockets"] == {
        (("port", str(port)), ("side", side)): float(entry["stalled"]) for (port, side), entry in ports.items()}
    assert values["netstate_tcp_send_queue_port_bytes"] == {
        (("port", str(port)), ("side", side)): float(entry["bytes"]) for (port, side), entry in ports.items()}
    assert values["netstate_tcp_retransmitting_sockets"] == {(("address", PEER),): float(RETRANSMITTING)}
    retransmits = values["netstate_tcp_retransmitting_retransmits"][(("address", PEER),)]
    assert before.retransmitting()[PEER]["retransmits"] <= retransmits <= after.retransmitting()[PEER]["retransmits"]
    document = json.loads(collect("json"))
    assert document["tcp"]["timers"] == after.timers() and "routes" not in document


def test_zabbix_items_read_the_collector_document(timer_ns):
    from tests.fleet.test_agents import preprocess, template

    facts = engine.gather(namespace=timer_ns.name)
    snapshot = TimerSnapshot(timer_ns.name)
    items = {item["key"]: item for item in template()["items"] if item.get("type") == "DEPENDENT"}
    for name, count in snapshot.timers().items():
        assert preprocess(items["netstate.tcp.timer[%s]" % name], facts) == count, name
    for name, value in snapshot.queue_totals().items():
        assert preprocess(items["netstate.tcp.queue[%s]" % name], facts) == value, name
    assert preprocess(items["netstate.tcp.retransmitting.top.sockets"], facts) == RETRANSMITTING
    assert preprocess(items["netstate.tcp.retransmitting.top.retransmits"], facts) >= RETRANSMITTING
    assert preprocess(items["netstate.tcp.send_queue.stalled.max"], facts) == max(
        entry["stalled"] for entry in snapshot.send_ports().values())
    quiet = engine.gather(namespace=timer_ns.name, gather_subset=["min"])  # nothing to read: the error handlers' 0
    assert preprocess(items["netstate.tcp.send_queue.stalled.max"], quiet) == 0
    assert preprocess(items["netstate.tcp.retransmitting.top.sockets"], quiet) == 0
