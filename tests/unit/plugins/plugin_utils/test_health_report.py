# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet health report: JUnit, JSON and Markdown from real engine results.

Host results are made by the real rule engine (built-in rules) on fact documents built by hand,
exactly as netstate.tcp.health_check registers them; the XML is parsed back with ElementTree.
"""

from __future__ import annotations

import json
import os
from xml.etree import ElementTree

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine._argspec import TCP_STATES as STATES
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_report as report
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health


def states(**counts):
    result = dict.fromkeys(STATES, 0)
    result.update(counts)
    return result


def listener(port, queue, backlog, process="nginx", pid=1234):
    return {"protocol": "tcp", "family": "ipv4", "address": "0.0.0.0", "port": port, "backlog": backlog,
            "queue": queue, "saturation": round(queue / backlog, 4), "pid": pid, "process": process,
            "user": "www-data", "stime": "2026-11-26T03:58:31", "connections": 3}


@pytest.fixture
def facts():
    """A healthy host (the same shape as in test_health_rules.py): web server on 8080, sshd, sampled."""
    return {
        "backend": "netlink", "namespace": "host", "kernel": "6.1.0",
        "tcp": {
            "total": 12, "states": states(ESTABLISHED=8, TIME_WAIT=2, LISTEN=2, SYN_RECV=1),
            "local_ports": {"22": {"total": 2, "states": states(ESTABLISHED=1, LISTEN=1)},
                            "8080": {"total": 8, "states": states(ESTABLISHED=6, LISTEN=1, CLOSE_WAIT=1)}},
            "ephemeral": {"range": [32768, 60999], "size": 28232,
                          "busiest": {"address": "198.18.0.5", "port": 5432, "connections": 2, "time_wait": 1,
                                      "share": 0.0001}},
            "queues": {"send_ports": [{"port": 8080, "side": "local", "sockets": 1, "bytes": 1200, "stalled": 0}]},
            "retransmitting": [],
        },
        "listeners": [listener(22, 0, 128, process="sshd", pid=700), listener(8080, 2, 511)],
        "counters": {
            "sockstat": {"TCP_orphan": 3},
            "TcpExt": {"ListenOverflows": 7, "ListenDrops": 7, "TCPTimeWaitOverflow": 0},
            "sysctl": {"tcp_max_orphans": 65536},
            "interval": 1.0,
            "rates": {"TcpExt": {"ListenOverflows": 0.0, "ListenDrops": 0.0, "TCPTimeWaitOverflow": 0.0}},
        },
    }


def registered(facts, fail_on="critical", thresholds=None):
    """What the role registers from netstate.tcp.health_check for one host."""
    result = report.host_result(health.build_rules(None, [], thresholds), facts, fail_on)
    # the role registers it with failed_when: false
    return dict(result, changed=False, failed=False, facts_source="gathered")


@pytest.fixture
def fleet(facts):
    leaking = json.loads(json.dumps(facts))
    leaking["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = 5000
    full = json.loads(json.dumps(facts))
    full["listeners"].append(listener(9000, 9, 8, process="java", pid=77))
    flood = json.loads(json.dumps(facts))
    flood["tcp"]["ephemeral"]["busiest"].update(time_wait=20000, connections=20000, address="198.18.0.9", port=80)
    no_rates = json.loads(json.dumps(facts))
    del no_rates["counters"]["rates"]
    return {
        "healthy": registered(facts),
        "leak": registered(leaking),
        "full": registered(full),
        "flood": registered(flood),
        "sampled_not": registered(no_rates),
        "down": {"unreachable": True, "changed": False,
                 "msg": "Failed to connect to the host via ssh: Connection timed out"},
        "broken": {"failed": True, "msg": "netstate.tcp.connection_facts failed: boom"},
        "never_ran": None,
    }


def parse(text):
    root = ElementTree.fromstring(text)
    cases = {(case.get("classname"), case.get("name")): case for case in root.iter("testcase")}
    return root, cases


def outcome(case):
    for kind in ("failure", "error", "skipped"):
        if case.find(kind) is not None:
            return kind
    return "passed"


def test_host_statuses(fleet):
    built = report.build_report(fleet)
    statuses = {entry["host"]: entry["status"] for entry in built["hosts"]}
    assert statuses == {"broken": "error", "down": "unreachable", "flood": "passed", "full": "failed",
                        "healthy": "passed", "leak": "failed", "never_ran": "unreachable", "sampled_not": "passed"}
    assert built["totals"] == {"passed": 3, "failed": 2, "error": 1, "unreachable": 2}
    assert not built["healthy"]
    assert [entry["host"] for entry in built["hosts"]] == sorted(fleet)


def test_junit_one_testcase_per_host_and_rule(fleet):
    root, cases = parse(report.render_junit(report.build_report(fleet)))
    names = [rule.name for rule in health.build_rules()]
    assert len(cases) == len(fleet) * len(names) == 88
    assert {case_name for _host, case_name in cases} == set(names)
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "88", "2", "33", "3")
    failures = sorted(key for key, case in cases.items() if outcome(case) == "failure")
    assert failures == [("full", "accept_queue_full"), ("leak", "close_wait_per_port")]
    leak = cases[("leak", "close_wait_per_port")].find("failure")
    assert leak.get("type") == "critical"
    assert leak.get("message") == "critical: close_wait_per_port [port 8080]: 5000 > max 100"
    full = cases[("full", "accept_queue_full")].find("failure")
    assert "0.0.0.0:9000 77/java" in full.get("message")
    # unreachable and failed hosts: every rule an error carrying the reason
    for host in ("down", "broken", "never_ran"):
        assert {outcome(cases[(host, name)]) for name in names} == {"error"}
    assert "Connection timed out" in cases[("down", "syn_recv_total")].find("error").get("message")
    assert cases[("down", "syn_recv_total")].find("error").get("type") == "unreachable"
    assert "connection_facts failed: boom" in cases[("broken", "orphans_share")].find("error").text
    # no data is skipped; a warning below fail_on passes with its message in system-out
    assert {name for (host, name), case in cases.items() if host == "sampled_not" and outcome(case) == "skipped"} == {
        "listen_overflows_rate", "listen_drops_rate", "time_wait_overflow_rate"}
    flood = cases[("flood", "time_wait_ephemeral_share")]
    assert outcome(flood) == "passed"
    assert flood.find("system-out").text.startswith("warning: time_wait_ephemeral_share [198.18.0.9:80]")
    suites = {suite.get("name"): suite for suite in root.iter("testsuite")}
    assert (suites["leak"].get("tests"), suites["leak"].get("failures")) == ("11", "1")


def test_fail_on_warning_turns_warnings_into_failures(fleet, facts):
    flood = json.loads(json.dumps(facts))
    flood["tcp"]["ephemeral"]["busiest"]["time_wait"] = 20000
    _root, cases = parse(report.render_junit(report.build_report({"flood": registered(flood, "warning")})))
    case = cases[("flood", "time_wait_ephemeral_share")]
    assert outcome(case) == "failure" and case.find("failure").get("type") == "warning"


def test_rule_errors_are_junit_errors(facts):
    rules = health.validate_rules([{"name": "kernel_number", "query": "kernel", "max": 1}])
    results = health.evaluate(rules, facts)
    summary = health.summarize(results, "critical")
    built = report.build_report({"h": {"healthy": summary["healthy"], "results": results, "rules": ["kernel_number"],
                                       "fail_on": "critical"}})
    assert built["hosts"][0]["status"] == "failed"
    _root, cases = parse(report.render_junit(built))
    assert outcome(cases[("h", "kernel_number")]) == "error"


def test_unreachable_host_uses_given_rule_names_when_no_host_ran():
    built = report.build_report({"h1": None}, rule_names=["a", "b"])
    _root, cases = parse(report.render_junit(built))
    assert sorted(cases) == [("h1", "a"), ("h1", "b")]
    assert report.render_junit(report.build_report({"h1": None})).count("<testcase") == 1  # "health_check"


def test_markdown_summary(fleet):
    text = report.render_markdown(report.build_report(fleet))
    lines = text.splitlines()
    assert lines[0] == "## netstate.tcp health: 3 of 8 hosts passed, 5 not (fail_on: critical)"
    assert lines[2] == "| Host | Result | Critical | Warning | Error | No data | OK | Violations |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[4:]}
    assert len(rows) == 8
    assert rows["leak"].startswith("| leak | FAILED | 1 | 0 | 0 | 0 | 10 | critical: close_wait_per_port [port 8080]")
    assert "| full | FAILED | 1 | 1 |" in rows["full"]
    assert "<br>" in rows["full"]  # both listener violations in one cell
    assert rows["healthy"] == "| healthy | passed | 0 | 0 | 0 | 0 | 11 | - |"
    assert rows["down"].startswith("| down | UNREACHABLE | - |")
    assert rows["sampled_not"] == "| sampled_not | passed | 0 | 0 | 0 | 3 | 8 | - |"


def test_markdown_escapes_pipes():
    text = report.render_markdown(report.build_report({"h": {"unreachable": True, "msg": "a | b\nc"}}))
    assert "a \\| b c" in text


def test_json_report_round_trips(fleet):
    built = report.build_report(fleet)
    loaded = json.loads(report.render_json(built))
    assert loaded == json.loads(json.dumps(built))
    leak = next(entry for entry in loaded["hosts"] if entry["host"] == "leak")
    assert leak["counts"]["critical"] == 1
    assert leak["message"] == "critical: close_wait_per_port [port 8080]: 5000 > max 100"


def test_output_is_deterministic(fleet):
    first = {name: render(report.build_report(fleet)) for name, render in report.RENDERERS.items()}
    again = {name: render(report.build_report(dict(reversed(list(fleet.items())))))
             for name, render in report.RENDERERS.items()}
    assert first == again


def test_verdicts_ignore_measured_values_and_see_every_verdict(fleet, facts):
    def verdicts_of(hosts):
        return report.verdicts(json.loads(report.render_json(report.build_report(hosts))))

    base = verdicts_of(fleet)
    assert base is not None and base == report.verdicts(report.build_report(fleet))
    # more sockets, the same verdicts: CLOSE_WAIT 5000 -> 6000 on the leaking port, TIME_WAIT 2 -> 30
    moved = json.loads(json.dumps(facts))
    moved["tcp"]["states"]["TIME_WAIT"] = 30
    moved["tcp"]["ephemeral"]["busiest"].update(time_wait=30, connections=31, share=0.0011)
    leaking = json.loads(json.dumps(facts))
    leaking["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = 6000
    same = dict(fleet, healthy=registered(moved), leak=registered(leaking))
    assert report.render_json(report.build_report(same)) != report.render_json(report.build_report(fleet))
    assert verdicts_of(same) == base
    # within its limit or nothing to measure (no outgoing connection): both pass, no verdict moved
    quiet = json.loads(json.dumps(facts))
    quiet["tcp"]["ephemeral"]["busiest"] = None
    assert verdicts_of(dict(fleet, healthy=registered(quiet))) == base
    assert "no_data" in {result["status"] for result in registered(quiet)["results"]}
    # a verdict that moves: a host that fails, a violation on another port, a stricter limit, a host gone
    failing = json.loads(json.dumps(facts))
    failing["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = 500
    other_port = json.loads(json.dumps(leaking))
    other_port["tcp"]["local_ports"]["22"]["states"]["CLOSE_WAIT"] = 6000
    other_port["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = 1
    for changed in (dict(fleet, healthy=registered(failing)), dict(fleet, leak=registered(other_port)),
                    dict(fleet, leak=registered(leaking, thresholds={"close_wait_per_port": 50})),
                    dict(fleet, healthy=None)):
        assert verdicts_of(changed) != base
    # what is not a report has no verdicts: the first run (or a foreign file) counts as changed
    for foreign in (None, [], {"hosts": "x"}, {"hosts": [1]}, {"hosts": [{"results": ["x"]}]}):
        assert report.verdicts(foreign) is None


def test_write_if_changed_is_idempotent_and_check_mode_writes_nothing(tmp_path):
    path = str(tmp_path / "health.md")
    assert report.write_if_changed(path, "one\n", check_mode=True)
    assert not os.path.exists(path)
    assert report.write_if_changed(path, "one\n")
    assert not report.write_if_changed(path, "one\n")
    assert report.write_if_changed(path, "two\n", check_mode=True)
    assert (tmp_path / "health.md").read_text(encoding="utf-8") == "one\n"
    assert report.write_if_changed(path, "two\n")
    assert (tmp_path / "health.md").read_text(encoding="utf-8") == "two\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert os.listdir(tmp_path) == ["health.md"]  # no temporary file left


def test_bad_fail_on_is_refused():
    with pytest.raises(health.HealthRuleError, match="fail_on"):
        report.build_report({}, fail_on="sometimes")
