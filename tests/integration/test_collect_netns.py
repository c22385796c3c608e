# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collector command on the real engine, on real sockets in a private network namespace.

Every number is compared with `ss` run in the same namespace just before and just after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.netstate.tcp.plugins.module_utils import collect
from tests.support.ss_oracle import SS_STATES, endpoint

pytestmark = pytest.mark.netns

MODULE = "ansible_collections.netstate.tcp.plugins.module_utils.collect"
# the directory holding ansible_collections/: a checked-out or installed collection
COLLECTIONS_ROOT = Path(os.path.abspath(collect.__file__)).parents[5]

# Holds a known socket mix until stdin closes. Ports are fixed: the namespace is ours alone.
SOCKET_MIX = r'''
import socket, sys, time
held = []
def listen(family, address, port, backlog):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port)); s.listen(backlog); held.append(s); return s
def connect(family, address, port, source=None):
    c = socket.socket(family, socket.SOCK_STREAM)
    if source: c.bind((source, 0))
    c.setblocking(False)
    try: c.connect((address, port))
    except BlockingIOError: pass
    held.append(c); return c
# 8080: 4 clients from three source addresses, 2 accepted, 2 waiting in the accept queue
web = listen(socket.AF_INET, "127.0.0.1", 8080, 16)
for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.4"):
    connect(socket.AF_INET, "127.0.0.1", 8080, source)
time.sleep(0.3)
for _ in range(2):
    held.append(web.accept()[0])
# 8443 on ::1: clients half-close -> CLOSE_WAIT on the server, FIN_WAIT2 on the clients
tls = listen(socket.AF_INET6, "::1", 8443, 16)
for _ in range(3):
    c = connect(socket.AF_INET6, "::1", 8443)
    time.sleep(0.05); c.shutdown(socket.SHUT_WR)
time.sleep(0.2)
for _ in range(3):
    held.append(tls.accept()[0])
# 9090 on the wildcard: the server closes first -> TIME_WAIT on the server side
api = listen(socket.AF_INET, "0.0.0.0", 9090, 16)
clients = [connect(socket.AF_INET, "127.0.0.1", 9090, "127.0.0.5") for _ in range(5)]
time.sleep(0.2)
for _ in range(5):
    api.accept()[0].close()
time.sleep(0.2)
for c in clients:
    c.close()
# 7000, backlog 1: the accept queue overflows (listen overflows, a client left in SYN_SENT)
full = listen(socket.AF_INET, "127.0.0.1", 7000, 1)
for _ in range(3):
    connect(socket.AF_INET, "127.0.0.1", 7000, "127.0.0.6"); time.sleep(0.05)
# UDP listeners
for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    u = socket.socket(family, socket.SOCK_DGRAM); u.bind((address, 5353)); held.append(u)
time.sleep(0.5)
print("ready", flush=True)
sys.stdin.read()
'''


def _require(condition: bool, reason: str) -> None:
    if not condition:
        if os.environ.get("CI") == "true":
            pytest.fail("netns prerequisite missing under CI=true: " + reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def netns():
    _require(os.geteuid() == 0, "needs root for ip netns")
    _require(shutil.which("ip") is not None and shutil.which("ss") is not None, "needs iproute2 (ip, ss)")
    name = "netstate-collect-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        holder = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", SOCKET_MIX],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "ready"
            yield name
        finally:
            holder.stdin.close()
            holder.wait(timeout=10)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def run_collector(netns_name, *args, check=True, inside=True):
    prefix = ["ip", "netns", "exec", netns_name] if inside else []
    result = subprocess.run(prefix + [sys.executable, "-m", MODULE, *args], cwd=str(COLLECTIONS_ROOT),
                            capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def ss(netns_name, *args):
    return subprocess.run(["ip", "netns", "exec", netns_name, "ss", "-H", "-n", *args],
                          capture_output=True, text=True, check=True).stdout.splitlines()


def ss_view(netns_name):
    """What ss says: states, per listening port, listeners, udp listeners."""
    rows = [line.split() for line in ss(netns_name, "-t", "-a")]
    states = Counter(SS_STATES[row[0]] for row in rows)
    listeners = []
    for row in rows:
        if row[0] == "LISTEN":
            address, port = endpoint(row[3])
            listeners.append({"address": address, "port": port, "queue": int(row[1]), "backlog": int(row[2])})
    ports = {listener["port"] for listener in listeners}
    per_port = {str(port): Counter() for port in ports}
    peers = Counter()
    for row in rows:
        _address, local_port = endpoint(row[3])
        if local_port in ports:
            per_port[str(local_port)][SS_STATES[row[0]]] += 1
        if row[0] != "LISTEN":
            peers[endpoint(row[4])[0]] += 1
    udp = [endpoint(line.split()[3]) for line in ss(netns_name, "-u", "-l")]
    return {"states": states, "listeners": listeners, "per_port": per_port, "peers": peers, "udp": udp}


def stable(netns_name, produce):
    """Run produce() between two identical ss views (retry a few times if sockets moved)."""
    for _attempt in range(5):
        before = ss_view(netns_name)
        value = produce()
        after = ss_view(netns_name)
        if before == after:
            return before, value
    pytest.fail("ss kept changing around the collector run")


def nonzero(states):
    return {state: count for state, count in states.items() if count}


def test_the_mix_is_what_we_built(netns):
    view = ss_view(netns)
    # guards the oracle itself: these are the states the mix is made to hold
    for state in ("ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT2", "TIME_WAIT", "LISTEN", "SYN_SENT"):
        assert view["states"][state] > 0, (state, view["states"])
    assert {listener["port"] for listener in view["listeners"]} == {7000, 8080, 8443, 9090}


def test_json_matches_ss(netns):
    view, result = stable(netns, lambda: run_collector(netns, "--format", "json", "--quiet"))
    facts = json.loads(result.stdout)
    assert result.stderr == ""
    assert set(facts["tcp"]["states"]) == set(collect.TCP_STATES)
    assert nonzero(facts["tcp"]["states"]) == dict(view["states"])
    assert facts["tcp"]["total"] == sum(view["states"].values())
    assert {port: nonzero(entry["states"]) for port, entry in facts["tcp"]["local_ports"].items()} == \
        {port: dict(counts) for port, counts in view["per_port"].items()}
    tcp_listeners = sorted((item["address"], item["port"], item["queue"], item["backlog"])
                           for item in facts["listeners"] if item["protocol"] == "tcp")
    assert tcp_listeners == sorted((item["address"], item["port"], item["queue"], item["backlog"])
                                   for item in view["listeners"])
    assert sorted((item["address"], item["port"]) for item in facts["listeners"] if item["protocol"] == "udp") \
        == sorted(view["udp"])
    assert {peer["address"]: peer["total"] for peer in facts["tcp"]["peers"]} == dict(view["peers"].most_common(10))
    assert facts["counters"]["TcpExt"]["ListenOverflows"] > 0
    assert "processes" not in facts and "sockets" not in facts


def parse_prometheus(text):
    families = {family.name: family for family in text_string_to_metric_families(text)}
    values = {}
    for name, family in families.items():
        values[name] = {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}
    return families, values


def check_prometheus_against(view, text):
    families, values = parse_prometheus(text)
    assert values["netstate_tcp_connections"] == {
        (("state", state),): float(view["states"].get(state, 0)) for state in collect.TCP_STATES}
    expected_ports = {}
    for port, counts in view["per_port"].items():
        for state in collect.TCP_STATES:
            expected_ports[(("port", port), ("state", state))] = float(counts.get(state, 0))
    assert values["netstate_tcp_port_connections"] == expected_ports
    assert values["netstate_tcp_listen_queue"] == {
        (("address", item["address"]), ("port", str(item["port"]))): float(item["queue"]) for item in view["listeners"]}
    assert values["netstate_tcp_listen_backlog"] == {
        (("address", item["address"]), ("port", str(item["port"]))): float(item["backlog"])
        for item in view["listeners"]}
    assert values["netstate_tcp_peer_connections"] == {
        (("address", address),): float(count) for address, count in view["peers"].most_common(10)}
    # a counter family: the parser names it without _total, its samples keep the suffix
    assert families["netstate_netstat_tcpext_listen_overflows"].samples[0].name.endswith("_total")
    assert values["netstate_netstat_tcpext_listen_overflows"][()] > 0
    assert values["netstate_collector_success"] == {(): 1.0}
    for family in families.values():
        assert family.documentation, family.name
    return values


def test_prometheus_matches_ss(netns):
    view, result = stable(netns, lambda: run_collector(netns, "--format", "prometheus"))
    check_prometheus_against(view, result.stdout)
    # the 7000 listener is full: queue = backlog + 1 as the kernel counts it
    assert ("127.0.0.1", 7000) in {(item["address"], item["port"]) for item in view["listeners"]
                                   if item["queue"] > item["backlog"]}


def test_zabbix_discovery_lists_each_listening_port(netns):
    view, result = stable(netns, lambda: run_collector(netns, "--format", "zabbix-discovery"))
    rows = json.loads(result.stdout)
    assert sorted(int(row["{#PORT}"]) for row in rows) == sorted({item["port"] for item in view["listeners"]})
    by_port = {row["{#PORT}"]: row for row in rows}
    assert by_port["8443"]["{#ADDRESS}"] == "::1" and by_port["8443"]["{#FAMILY}"] == "ipv6"
    assert by_port["9090"]["{#ADDRESS}"] == "0.0.0.0"
    assert all(row["{#PROTOCOL}"] == "tcp" for row in rows)
    udp = json.loads(run_collector(netns, "--format", "zabbix-discovery", "--protocol", "udp").stdout)
    assert [(row["{#PROTOCOL}"], row["{#PORT}"], row["{#ADDRESSES}"]) for row in udp] == \
        [("udp", "5353", ",".join(sorted({address for address, _port in view["udp"]}, key=lambda a: ":" in a)))]


def test_output_file_from_outside_the_namespace(netns, tmp_path):
    """--namespace enters the namespace itself; --output replaces the file atomically for the textfile collector."""
    target = tmp_path / "netstate.prom"
    target.write_text("stale\n")
    view, result = stable(netns, lambda: run_collector(
        netns, "--format", "prometheus", "--namespace", netns, "--output", str(target), inside=False))
    assert result.stdout == ""
    check_prometheus_against(view, target.read_text())
    # no temporary file left behind; beside the textfile only the spare failure file the collector keeps
    # ready for a full disk (a dot file, which node_exporter's textfile collector does not read)
    assert sorted(os.listdir(tmp_path)) == [".netstate.prom.failed", "netstate.prom"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_failure_is_reported_and_marks_the_textfile(netns, tmp_path):
    target = tmp_path / "netstate.prom"
    result = run_collector(netns, "--format", "prometheus", "--namespace", "no-such-namespace-here",
                           "--output", str(target), check=False, inside=False)
    assert result.returncode == 1
    assert "no-such-namespace-here" in result.stderr
    _types, values = parse_prometheus(target.read_text())
    assert values == {"netstate_collector_success": {(): 0.0}}


@pytest.mark.parametrize("argv", [
    ["--format", "json;touch {marker}"],
    ["--top", "$(touch {marker})"],
    ["--protocol", "tcp --output {marker}"],
    ["--namespace", "`touch {marker}`"],
    ["--output", "{marker}", "--format", "prometheus", "--sample-interval", "99"],
])
def test_hostile_arguments_run_nothing(netns, tmp_path, argv):
    marker = tmp_path / "marker"
    result = run_collector(netns, *[arg.format(marker=marker) for arg in argv], check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "error:" in result.stderr
    assert not marker.exists()
    assert os.listdir(tmp_path) == []
