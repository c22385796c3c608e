# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health playbook on the fleet of real SSH hosts, with the load generator making the trouble.

Each test limits the playbook to the hosts it loads (other fleet tests share the hosts) and reads
the JUnit report back with ElementTree. Per-host threshold overrides come from a second inventory
file that only adds host variables to the fleet inventory.
"""

from __future__ import annotations

import json
import os
import re
from xml.etree import ElementTree

import pytest

pytestmark = pytest.mark.fleet

PLAYBOOK = "netstate.tcp.health"
RULES = 11


def run_health(ansible_playbook, tmp_path, hosts, *extra, host_vars=None, inventory=None):
    """The health playbook limited to hosts; returns (result, {(host, rule): (kind, element)}, root)."""
    report = tmp_path / "report"
    args = ["-l", ",".join(hosts), "-e", f"netstate_health_report_dir={report}", *extra]
    if host_vars:
        overrides = tmp_path / "overrides.yml"
        overrides.write_text(json.dumps({"all": {"hosts": host_vars}}))
        args += ["-i", str(overrides)]
    result = ansible_playbook(PLAYBOOK, *args, inventory=inventory)
    junit = report / "health.junit.xml"
    if not junit.exists():
        return result, {}, None
    root = ElementTree.parse(junit).getroot()
    cases = {}
    for case in root.iter("testcase"):
        kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        element = case.find(kind) if kind != "passed" else case.find("system-out")
        cases[(case.get("classname"), case.get("name"))] = (kind, element)
    return result, cases, root


def failures(cases):
    return sorted(key for key, (kind, _element) in cases.items() if kind == "failure")


def test_healthy_host_passes(fleet, loads, ansible_playbook, tmp_path):
    host = fleet.hosts[0]
    loads.start(host, "healthy")
    result, cases, root = run_health(ansible_playbook, tmp_path, [host])
    assert result.returncode == 0, result.stdout
    assert len(cases) == RULES
    assert failures(cases) == []
    assert root.get("errors") == "0"
    assert f"| {host} | passed | 0 |" in result.stdout


def test_close_wait_leak_fails_naming_the_port(fleet, loads, ansible_playbook, tmp_path):
    host = fleet.hosts[1]
    load = loads.start(host, "close_wait", count=150, port=8082)
    assert load.info["expect"]["CLOSE_WAIT"] == 150
    result, cases, _root = run_health(ansible_playbook, tmp_path, [host])
    assert result.returncode == 2, result.stdout
    line = "critical: close_wait_per_port [port 8082]: 150 > max 100"
    assert line in result.stdout
    assert failures(cases) == [(host, "close_wait_per_port")]
    assert cases[(host, "close_wait_per_port")][1].get("message") == line


def listener_holder(fleet, host, pid_text, main_pid):
    """The PID/PROCESS named in a message is the load generator or one of its forked workers."""
    pid = int(pid_text)
    if pid == main_pid:
        return True
    status = fleet.exec(host, f"cat /proc/{pid}/status").stdout
    return re.search(rf"^PPid:\s+{main_pid}$", status, re.MULTILINE) is not None


def test_full_accept_queue_fails_naming_the_listener_and_its_process(fleet, loads, ansible_playbook, tmp_path):
    host = fleet.hosts[2]
    load = loads.start(host, "accept_full", port=8083, backlog=4, clients=20)
    assert load.info["queued"] == 5
    result, cases, _root = run_health(ansible_playbook, tmp_path, [host])
    assert result.returncode == 2, result.stdout
    assert failures(cases) == [(host, "accept_queue_full")]
    message = cases[(host, "accept_queue_full")][1].get("message")
    match = re.fullmatch(r"critical: accept_queue_full \[127\.0\.0\.1:8083 (\d+)/python3\]: 1\.25 > max 1", message)
    assert match, message
    assert listener_holder(fleet, host, match.group(1), load.info["pid"])
    assert message in result.stdout


def test_time_wait_flood_towards_one_destination_warns(fleet, loads, ansible_playbook, tmp_path):
    host = fleet.hosts[3]
    load = loads.start(host, "time_wait", count=8000, port=8081)
    destination = load.info["destination"]
    assert load.info["share"] > 0.25
    result, cases, _root = run_health(ansible_playbook, tmp_path, [host])
    assert result.returncode == 0, result.stdout  # a warning does not fail at fail_on critical
    kind, out = cases[(host, "time_wait_ephemeral_share")]
    assert kind == "passed"
    assert re.fullmatch(rf"warning: time_wait_ephemeral_share \[{re.escape(destination)}\]: 0\.2\d+ > max 0\.25",
                        out.text), out.text
    warned, _cases, _root = run_health(ansible_playbook, tmp_path, [host], "-e", "netstate_health_fail_on=warning")
    assert warned.returncode == 2
    assert f"warning: time_wait_ephemeral_share [{destination}]" in warned.stdout


def test_mixed_fleet_gives_exactly_the_expected_junit_and_overrides_take_effect(
        fleet, loads, ansible_playbook, tmp_path):
    # the flood goes to the host no earlier test flooded (TIME_WAIT outlives a load generator by 60 s)
    healthy, leak, full, tolerant, flood = fleet.hosts[:5]
    loads.start(healthy, "healthy")
    loads.start(leak, "close_wait", count=150, port=8082)
    loads.start(full, "accept_full", port=8083, backlog=4, clients=20)
    loads.start(flood, "time_wait", count=8000, port=8091)
    loads.start(tolerant, "close_wait", count=150, port=8092)
    host_vars = {
        tolerant: {"netstate_health_thresholds": {"close_wait_per_port": 500}},           # leak tolerated here
        flood: {"netstate_health_thresholds": {"time_wait_ephemeral_share": {"severity": "critical"}}},
    }
    result, cases, root = run_health(ansible_playbook, tmp_path, fleet.hosts[:5], host_vars=host_vars)
    assert result.returncode == 2, result.stdout
    assert len(cases) == 5 * RULES
    assert failures(cases) == sorted([(leak, "close_wait_per_port"), (full, "accept_queue_full"),
                                      (flood, "time_wait_ephemeral_share")])
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == (str(5 * RULES), "3", "0")
    assert cases[(flood, "time_wait_ephemeral_share")][1].get("type") == "critical"
    kind, out = cases[(tolerant, "close_wait_per_port")]
    assert kind == "passed" and out.text == "ok: close_wait_per_port [port 8092]: 150 (max 500)"
    recap = result.stdout.split("PLAY RECAP")[1]
    for host in (healthy, tolerant):
        assert re.search(rf"^{host}\s.*failed=0", recap, re.MULTILINE), recap
    for host in (leak, full, flood):
        assert re.search(rf"^{host}\s.*failed=1", recap, re.MULTILINE), recap
    summary = (tmp_path / "report" / "health.md").read_text()
    assert summary.startswith("## netstate.tcp health: 2 of 5 hosts passed, 3 not (fail_on: critical)")
    print(summary)  # the real run's table quoted in docs/health.md


UNREACHABLE = "\n".join([
    "[unreachable]",
    *(f"down{index} ansible_host=198.18.0.{250 + index}" for index in range(5)),
    "[unreachable:vars]",
    "ansible_user=root",
    "ansible_ssh_common_args='-o ConnectTimeout=2 -o StrictHostKeyChecking=no'",
]) + "\n"


@pytest.mark.parametrize("extra, host_vars, message", [
    ({"netstate_health_extra_rules": [{"name": "leak", "query": "tcp.local_ports.*.states.CLOSE_WAIT | max(@",
                                       "max": 10}]}, "",
     "extra_rules[0]: rule 'leak': field 'query': invalid JMESPath"),
    ({}, "down3 netstate_health_thresholds='{\"close_wait_per_port\": \"a lot\"}'",
     "thresholds of host down3: rule 'close_wait_per_port': field 'max': must be a number, got 'a lot'"),
])
def test_bad_rules_fail_before_any_host_is_contacted(fleet, ansible_playbook, tmp_path, extra, host_vars, message):
    """Fleet hosts and unreachable ones in one play: a bad rule, or a bad threshold in one host's
    inventory variables, stops the play before any connection."""
    unreachable = tmp_path / "unreachable.ini"
    unreachable.write_text(UNREACHABLE.replace("[unreachable:vars]", host_vars + "\n[unreachable:vars]"))
    report = tmp_path / "report"
    result = ansible_playbook(PLAYBOOK, "-i", str(unreachable), "-e", json.dumps(extra),
                              "-e", f"netstate_health_report_dir={report}")
    assert result.returncode == 2, result.stdout
    assert message in result.stdout
    assert result.stdout.count("FAILED!") == 1
    assert "UNREACHABLE" not in result.stdout
    assert "Check the TCP health thresholds" not in result.stdout
    assert not os.path.exists(report)
