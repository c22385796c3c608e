# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collector command on the real engine, on real sockets in a private network namespace.

Every number is compared with `ss` run in the same namespace just before and just after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.netstate.tcp.plugins.module_utils._engine import collect
from tests.conftest import Namespace, netns_prerequisites
from tests.support.ss_oracle import run_ss, ss_view
from tests.support.ss_oracle import stable as ss_stable

pytestmark = pytest.mark.netns

MODULE = "ansible_collections.netstate.tcp.plugins.module_utils._engine.collect"
# the directory holding ansible_collections/: a checked-out or installed collection
COLLECTIONS_ROOT = Path(os.path.abspath(collect.__file__)).parents[6]

# The mix the collector is checked on (tests/support/sockmix.py). Ports are fixed: the namespace is ours alone.
MIX = {
    "listeners": [
        {"address": "127.0.0.1", "port": 8080, "backlog": 16},
        {"address": "::1", "port": 8443, "backlog": 16},
        {"address": "0.0.0.0", "port": 9090, "backlog": 16},
    ],
    # 8080: 4 clients from three source addresses, 2 accepted, 2 waiting in the accept queue
    "established": [
        {"to": ["127.0.0.1", 8080], "from": "127.0.0.2", "count": 2},
        {"to": ["127.0.0.1", 8080], "from": "127.0.0.3", "count": 1, "accepted": False},
        {"to": ["127.0.0.1", 8080], "from": "127.0.0.4", "count": 1, "accepted": False},
    ],
    # 8443 on ::1: clients close first -> CLOSE_WAIT on the server, FIN_WAIT2 on the clients
    "close_wait": [{"to": ["::1", 8443], "count": 3}],
    # 9090 on the wildcard: the server closes first -> TIME_WAIT on the server side
    "server_time_wait": [{"to": ["0.0.0.0", 9090], "from": "127.0.0.5", "count": 5}],
    # 7000, backlog 1: the accept queue overflows (listen overflows, a client left in SYN_SENT)
    "accept_full": [{"address": "127.0.0.1", "port": 7000, "backlog": 1, "clients": 3, "from": "127.0.0.6"}],
    "udp": [{"address": "127.0.0.1", "port": 5353}, {"address": "::1", "port": 5353}],
}


@pytest.fixture(scope="module")
def mix_ns(tmp_path_factory):
    """One namespace holding MIX for the module (every test reads it, none changes it): its name."""
    netns_prerequisites()
    namespace = Namespace(prefix="nsc")
    try:
        namespace.hold_mix(MIX, tmp_path_factory.mktemp("mix"))
        yield namespace.name
    finally:
        namespace.close()


def run_collector(netns_name, *args, check=True, inside=True):
    prefix = ["ip", "netns", "exec", netns_name] if inside else []
    result = subprocess.run(prefix + [sys.executable, "-m", MODULE, *args], cwd=str(COLLECTIONS_ROOT),
                            capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def ss(netns_name, *args):
    return run_ss(list(args), netns_name)


def view_of(netns_name):
    return ss_view(ss(netns_name, "-t", "-a"), ss(netns_name, "-u", "-l"))


def stable(netns_name, produce):
    """Run produce() between two identical ss views."""
    return ss_stable(lambda: view_of(netns_name), produce)


def nonzero(states):
    return {state: count for state, count in states.items() if count}


def test_the_mix_is_what_we_built(mix_ns):
    view = view_of(mix_ns)
    # guards the oracle itself: these are the states the mix is made to hold
    for state in ("ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT2", "TIME_WAIT", "LISTEN", "SYN_SENT"):
        assert view["states"][state] > 0, (state, view["states"])
    assert {listener["port"] for listener in view["listeners"]} == {7000, 8080, 8443, 9090}
    # two connections wait to be accepted on 8080; 7000's queue is full, as the kernel counts it (backlog + 1)
    assert {listener["port"]: listener["queue"] for listener in view["listeners"]} == {
        8080: 2, 8443: 0, 9090: 0, 7000: 2}
    assert sorted(view["udp"]) == [("127.0.0.1", 5353), ("::1", 5353)]


def test_json_matches_ss(mix_ns):
    view, result = stable(mix_ns, lambda: run_collector(mix_ns, "--format", "json", "--quiet"))
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
    for name in ("netstate_tcp_listen_queue", "netstate_tcp_listen_backlog"):
        # every listener series names its unit (test_units_netns.py checks which): compared without it here
        assert all(dict(key).keys() == {"address", "port", "unit"} for key in values[name]), name
        values[name] = {key[:2]: value for key, value in values[name].items()}
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


def test_prometheus_matches_ss(mix_ns):
    view, result = stable(mix_ns, lambda: run_collector(mix_ns, "--format", "prometheus"))
    check_prometheus_against(view, result.stdout)
    # the 7000 listener is full: queue = backlog + 1 as the kernel counts it
    assert ("127.0.0.1", 7000) in {(item["address"], item["port"]) for item in view["listeners"]
                                   if item["queue"] > item["backlog"]}


def test_zabbix_discovery_lists_each_listening_port(mix_ns):
    view, result = stable(mix_ns, lambda: run_collector(mix_ns, "--format", "zabbix-discovery"))
    rows = json.loads(result.stdout)
    assert sorted(int(row["{#PORT}"]) for row in rows) == sorted({item["port"] for item in view["listeners"]})
    by_port = {row["{#PORT}"]: row for row in rows}
    assert by_port["8443"]["{#ADDRESS}"] == "::1" and by_port["8443"]["{#FAMILY}"] == "ipv6"
    assert by_port["9090"]["{#ADDRESS}"] == "0.0.0.0"
    assert all(row["{#PROTOCOL}"] == "tcp" for row in rows)
    udp = json.loads(run_collector(mix_ns, "--format", "zabbix-discovery", "--protocol", "udp").stdout)
    assert [(row["{#PROTOCOL}"], row["{#PORT}"], row["{#ADDRESSES}"]) for row in udp] == \
        [("udp", "5353", ",".join(sorted({address for address, _port in view["udp"]}, key=lambda a: ":" in a)))]


def test_output_file_from_outside_the_namespace(mix_ns, tmp_path):
    """--namespace enters the namespace itself; --output replaces the file atomically for the textfile collector."""
    target = tmp_path / "netstate.prom"
    target.write_text("stale\n")
    view, result = stable(mix_ns, lambda: run_collector(
        mix_ns, "--format", "prometheus", "--namespace", mix_ns, "--output", str(target), inside=False))
    assert result.stdout == ""
    check_prometheus_against(view, target.read_text())
    # no temporary file left behind; beside the textfile only the spare failure file the collector keeps
    # ready for a full disk (a dot file, which node_exporter's textfile collector does not read)
    assert sorted(os.listdir(tmp_path)) == [".netstate.prom.failed", "netstate.prom"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_failure_is_reported_and_marks_the_textfile(mix_ns, tmp_path):
    target = tmp_path / "netstate.prom"
    result = run_collector(mix_ns, "--format", "prometheus", "--namespace", "no-such-namespace-here",
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
def test_hostile_arguments_run_nothing(mix_ns, tmp_path, argv):
    marker = tmp_path / "marker"
    result = run_collector(mix_ns, *[arg.format(marker=marker) for arg in argv], check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "error:" in result.stderr
    assert not marker.exists()
    assert os.listdir(tmp_path) == []
