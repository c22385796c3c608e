# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health playbook and role on localhost, against real sockets in private namespaces.

Each inventory host is localhost (ansible_connection=local) gathering from its own network
namespace (netstate_health_gather_args.namespace), which holds a real socket mix built by
tests/support/sockmix.py: a healthy host, a CLOSE_WAIT leak on one port (twice: once with a
per-host threshold override from the inventory), a full accept queue and a TIME_WAIT flood
towards one destination. The JUnit report is parsed with ElementTree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from xml.etree import ElementTree

import pytest
import yaml

BIN = os.path.dirname(sys.executable)
PLAYBOOK = os.path.join(BIN, "ansible-playbook")
ANSIBLE = os.path.join(BIN, "ansible")
TARGET_PYTHON = "/usr/bin/python3"
RULE_NAMES = ["time_wait_ephemeral_share", "close_wait_per_port", "syn_recv_total", "accept_queue_saturation",
              "accept_queue_full", "listen_overflows_rate", "listen_drops_rate", "orphans_share",
              "time_wait_overflow_rate", "retransmitting_peer", "send_queue_stalled_port"]

MIXES = {
    "healthy": {"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 128}],
                "established": [{"to": ["127.0.0.1", 8080], "count": 5}]},
    "leak": {"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 128},
                           {"address": "127.0.0.1", "port": 9090, "backlog": 128}],
             "established": [{"to": ["127.0.0.1", 9090], "count": 3}],
             "close_wait": [{"to": ["127.0.0.1", 8080], "count": 150}]},
    "full": {"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 128}],
             "accept_full": [{"address": "127.0.0.1", "port": 9000, "backlog": 2, "clients": 6}]},
    # 300 TIME_WAIT towards 127.0.0.1:8080 in an ephemeral range of 1000 ports: share 0.3 > 0.25
    "flood": {"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 512}],
              "time_wait": [{"to": ["127.0.0.1", 8080], "count": 300}]},
}


# TIME_WAIT sockets leave after 60 s, and a slow machine saw a leak short of one CLOSE_WAIT: a mix built
# longer ago than this is built again before a test, so that the test's playbook reads it whole
FRESH_SECONDS = 20


def _namespace_with(name, mix, tmp_path):
    from tests.conftest import Namespace

    namespace = Namespace(prefix="nsh")
    if name == "flood":
        namespace.sysctl("net.ipv4.ip_local_port_range", "40000 40999")
    namespace.built = namespace.hold_mix(mix, tmp_path)
    namespace.built_at = time.monotonic()
    return namespace


@pytest.fixture(scope="module")
def held_namespaces(tmp_path_factory):
    from tests.conftest import netns_prerequisites

    netns_prerequisites()
    made = {}
    try:
        for name, mix in MIXES.items():
            made[name] = _namespace_with(name, mix, tmp_path_factory.mktemp(name))
        yield made
    finally:
        for namespace in made.values():
            namespace.close()


def renewed(held, tmp_path):
    """The module's namespaces, each mix built again when it is old enough to have thinned out."""
    for name, namespace in list(held.items()):
        if time.monotonic() - namespace.built_at > FRESH_SECONDS:
            namespace.close()
            (tmp_path / name).mkdir(exist_ok=True)
            held[name] = _namespace_with(name, MIXES[name], tmp_path / name)
    return held


@pytest.fixture
def namespaces(held_namespaces, tmp_path):
    return renewed(held_namespaces, tmp_path)


def inventory(path, hosts):
    """hosts: name -> host variables; every host is localhost over the local connection."""
    data = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": TARGET_PYTHON},
                    "hosts": hosts}}
    path.write_text(yaml.safe_dump(data))
    return str(path)


def run_playbook(inventory_path, *extra, check=False, playbook="netstate.tcp.health"):
    command = [PLAYBOOK, playbook, "-i", inventory_path, *extra]
    if check:
        command.append("--check")
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    done.elapsed = time.monotonic() - started
    return done


def holder(namespace):
    """PID/PROCESS of the process holding a namespace's socket mix, as netstat -p names it."""
    pid = namespace.built["pid"]
    with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
        return f"{pid}/{handle.read().strip()}"


def junit(report_dir):
    root = ElementTree.parse(os.path.join(report_dir, "health.junit.xml")).getroot()
    cases = {}
    for case in root.iter("testcase"):
        kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        cases[(case.get("classname"), case.get("name"))] = (kind, case)
    return root, cases


@pytest.fixture(scope="module")
def fleet_run(held_namespaces, tmp_path_factory):
    """One run of the playbook over the mixed fleet of namespaces."""
    tmp = tmp_path_factory.mktemp("health")
    namespaces = renewed(held_namespaces, tmp)
    hosts = {name: {"netstate_health_gather_args": {"namespace": namespaces[name].name}} for name in MIXES}
    hosts["leak_tolerated"] = {"netstate_health_gather_args": {"namespace": namespaces["leak"].name},
                               "netstate_health_thresholds": {"close_wait_per_port": 500}}
    path = inventory(tmp / "inventory.yml", hosts)
    report_dir = str(tmp / "report")
    done = run_playbook(path, "-e", f"netstate_health_report_dir={report_dir}")
    return done, report_dir, path, namespaces


@pytest.mark.netns
def test_mixed_fleet_exit_code_and_one_line_per_violation(fleet_run):
    done, _report_dir, _path, namespaces = fleet_run
    assert done.returncode == 2, done.stdout + done.stderr
    assert "critical: close_wait_per_port [port 8080]: 150 > max 100" in done.stdout
    assert f"critical: accept_queue_full [127.0.0.1:9000 {holder(namespaces['full'])}]: 1.5 > max 1" in done.stdout
    failed = sorted(line.split("[")[1].split("]")[0] for line in done.stdout.splitlines()
                    if line.startswith("fatal: [") and "FAILED!" in line)
    assert failed == ["full", "leak"]
    recap = {line.split()[0]: line for line in done.stdout.split("PLAY RECAP")[1].strip().splitlines()}
    assert "failed=0" in recap["healthy"] and "failed=0" in recap["flood"] and "failed=0" in recap["leak_tolerated"]


@pytest.mark.netns
def test_mixed_fleet_junit_has_exactly_the_expected_failures(fleet_run):
    _done, report_dir, _path, namespaces = fleet_run
    root, cases = junit(report_dir)
    assert len(cases) == 5 * len(RULE_NAMES)
    assert {name for _host, name in cases} == set(RULE_NAMES)
    failures = sorted(key for key, (kind, _case) in cases.items() if kind == "failure")
    assert failures == [("full", "accept_queue_full"), ("leak", "close_wait_per_port")]
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == (str(5 * len(RULE_NAMES)), "2", "0")
    leak = cases[("leak", "close_wait_per_port")][1].find("failure")
    assert leak.get("message") == "critical: close_wait_per_port [port 8080]: 150 > max 100"
    assert leak.get("type") == "critical"
    full = cases[("full", "accept_queue_full")][1].find("failure")
    listener = f"127.0.0.1:9000 {holder(namespaces['full'])}"
    assert full.get("message") == f"critical: accept_queue_full [{listener}]: 1.5 > max 1"
    # the TIME_WAIT flood warns (below fail_on: passes, with the warning in system-out)
    kind, case = cases[("flood", "time_wait_ephemeral_share")]
    assert kind == "passed"
    assert case.find("system-out").text == "warning: time_wait_ephemeral_share [127.0.0.1:8080]: 0.3 > max 0.25"
    # the per-host override from the inventory: same namespace as leak, passes
    kind, case = cases[("leak_tolerated", "close_wait_per_port")]
    assert kind == "passed"
    assert case.find("system-out").text == "ok: close_wait_per_port [port 8080]: 150 (max 500)"
    # rates were sampled: the rate rules have data on every host; only tcp_max_orphans, a global
    # sysctl, is not visible inside a namespace (null in the facts), so orphans_share is skipped
    skipped = sorted(key for key, (kind, _case) in cases.items() if kind == "skipped")
    assert skipped == [(host, "orphans_share") for host in sorted(namespaces) + ["leak_tolerated"]]


@pytest.mark.netns
def test_mixed_fleet_json_and_markdown(fleet_run):
    done, report_dir, _path, _namespaces = fleet_run
    with open(os.path.join(report_dir, "health.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    assert data["totals"] == {"passed": 3, "failed": 2, "error": 0, "unreachable": 0}
    statuses = {entry["host"]: entry["status"] for entry in data["hosts"]}
    assert statuses == {"flood": "passed", "full": "failed", "healthy": "passed", "leak": "failed",
                        "leak_tolerated": "passed"}
    healthy = next(entry for entry in data["hosts"] if entry["host"] == "healthy")
    assert healthy["counts"] == {"ok": len(RULE_NAMES) - 1, "no_data": 1, "warning": 0, "critical": 0, "error": 0}
    with open(os.path.join(report_dir, "health.md"), encoding="utf-8") as handle:
        markdown = handle.read()
    assert markdown.startswith("## netstate.tcp health: 3 of 5 hosts passed, 2 not (fail_on: critical)\n")
    assert "| leak | FAILED | 1 |" in markdown
    # the summary is printed by the playbook too
    assert "## netstate.tcp health: 3 of 5 hosts passed, 2 not (fail_on: critical)" in done.stdout


@pytest.mark.netns
def test_second_run_changes_no_report_and_check_mode_writes_nothing(namespaces, tmp_path):
    path = inventory(tmp_path / "inventory.yml",
                     {"healthy": {"netstate_health_gather_args": {"namespace": namespaces["healthy"].name}}})
    report_dir = str(tmp_path / "report")
    checked = run_playbook(path, "-e", f"netstate_health_report_dir={report_dir}", check=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not os.path.exists(report_dir)
    first = run_playbook(path, "-e", f"netstate_health_report_dir={report_dir}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed: [healthy" in first.stdout.split("Write the fleet health report")[1].split("TASK")[0]
    second = run_playbook(path, "-e", f"netstate_health_report_dir={report_dir}")
    assert second.returncode == 0
    assert "ok: [healthy" in second.stdout.split("Write the fleet health report")[1].split("TASK")[0]
    assert "changed=0" in second.stdout.split("PLAY RECAP")[1]


@pytest.mark.netns
def test_changed_follows_verdicts_not_measured_values(tmp_path):
    """New sockets that move measured values (a TIME_WAIT share) but no verdict rewrite the report with
    changed false; a violation that appears is changed true."""
    from tests.conftest import Namespace

    namespace = Namespace(prefix="nsv")
    try:
        namespace.built = namespace.hold_mix(MIXES["healthy"], tmp_path)
        path = inventory(tmp_path / "inventory.yml",
                         {"moving": {"netstate_health_gather_args": {"namespace": namespace.name}}})
        report_dir = str(tmp_path / "report")
        report_json = os.path.join(report_dir, "health.json")

        def task_line(done):
            return done.stdout.split("Write the fleet health report")[1].split("TASK")[0]

        first = run_playbook(path, "-e", f"netstate_health_report_dir={report_dir}")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "changed: [moving" in task_line(first)
        with open(report_json, encoding="utf-8") as handle:
            before = json.load(handle)

        namespace.hold_mix({"listeners": [{"address": "127.0.0.1", "port": 8081, "backlog": 128}],
                            "time_wait": [{"to": ["127.0.0.1", 8081], "count": 40}]}, tmp_path)
        moved = run_playbook(path, "-e", f"netstate_health_report_dir={report_dir}")
        assert moved.returncode == 0, moved.stdout + moved.stderr
        with open(report_json, encoding="utf-8") as handle:
            after = json.load(handle)
        values = {json.dumps(result, sort_keys=True) for result in before["hosts"][0]["results"]}
        assert values != {json.dumps(result, sort_keys=True) for result in after["hosts"][0]["results"]}, \
            "the TIME_WAIT sockets moved no measured value: the test proves nothing"
        assert after["hosts"][0]["status"] == "passed"
        assert "ok: [moving" in task_line(moved), task_line(moved)
        assert "changed=0" in moved.stdout.split("PLAY RECAP")[1]

        namespace.hold_mix({"listeners": [{"address": "127.0.0.1", "port": 8082, "backlog": 128}],
                            "close_wait": [{"to": ["127.0.0.1", 8082], "count": 150}]}, tmp_path)
        failing = run_playbook(path, "-e", f"netstate_health_report_dir={report_dir}")
        assert failing.returncode == 2, failing.stdout + failing.stderr
        assert "changed: [moving" in task_line(failing), task_line(failing)
        with open(report_json, encoding="utf-8") as handle:
            assert json.load(handle)["hosts"][0]["status"] == "failed"
    finally:
        namespace.close()


@pytest.mark.netns
def test_fail_on_warning_fails_the_flood(namespaces, tmp_path):
    path = inventory(tmp_path / "inventory.yml",
                     {"flood": {"netstate_health_gather_args": {"namespace": namespaces["flood"].name}}})
    report_dir = str(tmp_path / "report")
    done = run_playbook(path, "-e", f"netstate_health_report_dir={report_dir}", "-e", "netstate_health_fail_on=warning")
    assert done.returncode == 2
    assert "warning: time_wait_ephemeral_share [127.0.0.1:8080]: 0.3 > max 0.25" in done.stdout
    _root, cases = junit(report_dir)
    kind, case = cases[("flood", "time_wait_ephemeral_share")]
    assert kind == "failure" and case.find("failure").get("type") == "warning"


@pytest.mark.netns
def test_facts_already_gathered_are_used(namespaces, tmp_path):
    """health_check uses ansible_facts.netstate when present (the rate rules then have no data)."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Facts first, then the check", "hosts": "all", "gather_facts": False,
        "tasks": [
            {"name": "Gather", "netstate.tcp.connection_facts": {"namespace": namespaces["leak"].name}},
            {"name": "Check", "netstate.tcp.health_check": {}, "register": "health", "ignore_errors": True},
            {"name": "Check a given document", "netstate.tcp.health_check": {
                "facts": "{{ ansible_facts.netstate | combine({'tcp': ansible_facts.netstate.tcp"
                         " | combine({'local_ports': {}})}) }}"},
             "register": "given"},
            {"name": "Keep", "ansible.builtin.copy": {"content": "{{ [health, given] | to_json }}",
                                                      "dest": str(tmp_path / "out.json")}},
        ]}]))
    path = inventory(tmp_path / "inventory.yml", {"leak": {}})
    done = subprocess.run([PLAYBOOK, "-i", path, str(playbook)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    health, given = json.loads((tmp_path / "out.json").read_text())
    assert health["facts_source"] == "host_facts"
    assert health["failed"] and not health["healthy"]
    assert health["msg"] == ("1 health rule violation(s) at or above critical:\n"
                             "critical: close_wait_per_port [port 8080]: 150 > max 100")
    assert [r["status"] for r in health["results"] if r["name"].endswith("_rate")] == ["no_data"] * 3
    assert given["facts_source"] == "argument" and given["healthy"]


@pytest.mark.parametrize("argument, message", [
    ({"extra_rules": [{"name": "x", "query": "tcp.states[", "max": 1}]},
     "extra_rules[0]: rule 'x': field 'query': invalid JMESPath 'tcp.states['"),
    ({"thresholds": {"syn_recv_total": "many"}}, "thresholds: rule 'syn_recv_total': field 'max': must be a number"),
    ({"gather": "never"}, "ansible_facts.netstate is not set and gather=never"),
    ({"fail_on": "sometimes"}, "value of fail_on must be one of: warning, critical, got: sometimes"),
    ({"budget": {"rule_seconds": 0}}, "budget: field 'rule_seconds': must be from 0.001 to 60, got 0"),
    ({"budget": {"rule_secs": 1}}, "budget: field 'rule_secs': unknown key (allowed: rule_seconds, host_seconds,"),
    ({"extra_rules": [{"name": "x", "query": "tcp.total", "max": 1, "label": "format('{x.__class__}', @)"}]},
     "extra_rules[0]: rule 'x': field 'label': format(): field '{x.__class__}': only a plain name"),
])
def test_action_errors_are_one_clear_line(argument, message, tmp_path):
    path = inventory(tmp_path / "inventory.yml", {"h1": {}})
    done = subprocess.run([ANSIBLE, "all", "-i", path, "-m", "netstate.tcp.health_check", "-a", json.dumps(argument)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert message in done.stdout + done.stderr


def test_a_runaway_rule_is_one_error_within_the_budget_option(tmp_path):
    """Nested filters over a 30-element list (30**4 steps, seconds unbudgeted) stop at rule_seconds."""
    values = "`" + json.dumps(list(range(30))) + "`"
    runaway = f"length({values}[?!({values}[?!({values}[?!({values}[?@ == `-1`])])])])"
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "A runaway rule", "hosts": "all", "gather_facts": False,
        "tasks": [
            {"name": "Check", "register": "health", "ignore_errors": True, "netstate.tcp.health_check": {
                "facts": {"tcp": {"total": 3}}, "rules": [], "budget": {"rule_seconds": 0.2},
                "extra_rules": [{"name": "runaway", "query": runaway, "max": 1},
                                {"name": "fine", "query": "tcp.total", "max": 5}]}},
            {"name": "Keep", "ansible.builtin.copy": {"content": "{{ health | to_json }}",
                                                      "dest": str(tmp_path / "out.json")}},
        ]}]))
    path = inventory(tmp_path / "inventory.yml", {"h1": {}})
    done = subprocess.run([PLAYBOOK, "-i", path, str(playbook)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    health = json.loads((tmp_path / "out.json").read_text())
    assert health["failed"] and [(r["name"], r["status"]) for r in health["results"]] == [
        ("runaway", "error"), ("fine", "ok")]
    assert health["results"][0]["message"].startswith("error: runaway: evaluation stopped after 0.2")
    assert "(rule_seconds)" in health["results"][0]["message"]


UNREACHABLE = {f"down{index}": {"ansible_host": f"198.18.0.{250 + index}", "ansible_connection": "ssh",
                                "ansible_ssh_common_args": "-o ConnectTimeout=1"} for index in range(5)}


@pytest.mark.parametrize("extra, message", [
    ({"netstate_health_extra_rules": [{"name": "x", "query": "tcp.states[", "max": 1}]},
     "extra_rules[0]: rule 'x': field 'query': invalid JMESPath 'tcp.states['"),
    ({"netstate_health_extra_rules": [{"name": "x", "query": "tcp.total", "max": "lots"}]},
     "extra_rules[0]: rule 'x': field 'max': must be a number, got 'lots'"),
    ({"netstate_health_rules": [{"name": "x", "query": "tcp.total", "max": 1, "treshold": 2}]},
     "rules[0]: rule 'x': field 'treshold': unknown field"),
    ({"netstate_health_extra_rules": [{"name": "syn_recv_total", "query": "tcp.total", "max": 1}]},
     "extra_rules[0]: rule 'syn_recv_total': field 'name': duplicate name, already used by built-in rules"),
])
def test_bad_rules_fail_before_any_host_is_contacted(extra, message, tmp_path):
    """Nothing answers on 198.18.0.250-254: any connection attempt would show as UNREACHABLE."""
    path = inventory(tmp_path / "inventory.yml", UNREACHABLE)
    done = run_playbook(path, "-e", json.dumps(extra), "-e", f"netstate_health_report_dir={tmp_path / 'report'}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stdout
    assert "UNREACHABLE" not in done.stdout and "unreachable=1" not in done.stdout
    assert done.stdout.count("FAILED!") == 1  # one error, not one per host
    assert not (tmp_path / "report").exists()
    assert done.elapsed < 30


def test_bad_threshold_of_one_host_fails_before_any_host_is_contacted(tmp_path):
    hosts = dict(UNREACHABLE)
    hosts["down3"] = dict(hosts["down3"], netstate_health_thresholds={"close_wait_per_port": {"max": "many"}})
    path = inventory(tmp_path / "inventory.yml", hosts)
    done = run_playbook(path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert ("thresholds of host down3: rule 'close_wait_per_port': field 'max': must be a number, got 'many'"
            in done.stdout)
    assert "UNREACHABLE" not in done.stdout


def test_unknown_gather_args_key_fails_before_any_host_is_contacted(tmp_path):
    """A typo among netstate_health_gather_args (`topp`) is refused by the role's argument validation, naming
    the variable and the key; nothing answers on the hosts, so any contact would show as UNREACHABLE."""
    path = inventory(tmp_path / "inventory.yml", UNREACHABLE)
    done = run_playbook(path, "-e", json.dumps({"netstate_health_gather_args": {"topp": 5}}),
                        "-e", f"netstate_health_report_dir={tmp_path / 'report'}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "netstate_health_gather_args" in done.stdout and "topp" in done.stdout, done.stdout[-3000:]
    assert "UNREACHABLE" not in done.stdout and "unreachable=1" not in done.stdout
    assert not (tmp_path / "report").exists()


def test_health_check_refuses_an_unknown_gather_args_key_without_running_connection_facts(tmp_path):
    """The module itself (outside the role): gather_args' keys are connection_facts' options, checked on the
    controller, so the host is never asked to run connection_facts with a key it does not take."""
    path = inventory(tmp_path / "inventory.yml", UNREACHABLE)
    playbook = tmp_path / "check.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "Check with a typo", "netstate.tcp.health_check": {"gather_args": {"topp": 5, "namespace": "x"}}}]}]))
    done = run_playbook(path, playbook=str(playbook))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "gather_args: unknown option(s) 'topp'; netstate.tcp.connection_facts takes backend, gather_subset" \
        in done.stdout, done.stdout[-3000:]
    assert "UNREACHABLE" not in done.stdout and "unreachable=1" not in done.stdout
