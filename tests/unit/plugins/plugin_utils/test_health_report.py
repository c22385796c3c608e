# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_health_report: the fleet health report (JUnit, JSON, Markdown, HTML) from real engine results, its
hostile inputs (names, titles, messages) and the merge of the reports of job slices.

Host results are made by the real rule engine (built-in rules) on fact documents built by hand,
exactly as netstate.tcp.health_check registers them; the XML is parsed back with ElementTree, Markdown
by a CommonMark/GFM parser (tests/support/hostile.py). A merged report must give the same files, to the
byte, as one run: each slice's report goes through its JSON text, as a slice job writes it.
"""

from __future__ import annotations

import json
import os
from xml.etree import ElementTree

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_report as report
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

from tests.support.browser import parse_dom
from tests.support.hostile import HOSTILE_NAMES, markdown_problems, markdown_tables, parse_junit
from tests.unit.plugins.plugin_utils import _helpers
from tests.unit.plugins.plugin_utils._helpers import listener, registered, self_contained


# facts of a healthy host, and the unit fleet made from them; the hostile-input tests take the facts as
# _facts_fixture
facts = _helpers.facts
fleet = _helpers.fleet
_facts_fixture = _helpers.facts


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


# ---------------------------------------------------------------- hostile names, titles and messages

@pytest.fixture(params=HOSTILE_NAMES, ids=[ascii(name) for name in HOSTILE_NAMES])
def name(request):
    return request.param


@pytest.fixture
def hostile_fleet(_facts_fixture, name):
    full = dict(_facts_fixture, listeners=_facts_fixture["listeners"] + [listener(9000, 9, 8, process=name, pid=77)])
    return {
        "full": registered(full),
        "down": {"unreachable": True, "msg": "ssh: %s" % name},
        "broken": {"failed": True, "msg": name},
    }


def test_rule_message_is_one_line_and_names_the_process(hostile_fleet, name):
    failing = [result for result in hostile_fleet["full"]["results"] if result["status"] == "critical"]
    assert [result["name"] for result in failing] == ["accept_queue_full"]
    message = failing[0]["message"]
    assert message == "critical: accept_queue_full [0.0.0.0:9000 77/%s]: 1.125 > max 1" % escape.log_line(name)
    assert failing[0]["subject"] == "0.0.0.0:9000 77/%s" % name  # the data keeps the name as it is


def test_health_markdown_has_no_html_and_intact_rows(hostile_fleet, name):
    text = report.render_markdown(report.build_report(hostile_fleet))
    assert markdown_problems(text) == []
    rows = markdown_tables(text)[0]
    assert all(len(row) == 8 for row in rows), rows
    cells = {row[0]: row for row in rows[1:]}
    assert set(cells) == {"broken", "down", "full"}
    assert escape.log_line(name) in cells["full"][7]
    # a failed host's message is made one line (runs of white space as one space), then escaped
    assert cells["broken"][7] == escape.log_line(" ".join(name.split()))


def test_health_junit_is_well_formed_and_keeps_the_message(hostile_fleet, name):
    root = parse_junit(report.render_junit(report.build_report(hostile_fleet)))
    failure = next(case.find("failure") for case in root.iter("testcase")
                   if case.get("classname") == "full" and case.get("name") == "accept_queue_full")
    assert escape.log_line(name) in failure.get("message")
    errors = [case.find("error").get("message") for case in root.iter("testcase") if case.get("classname") == "down"]
    assert errors and all(message.startswith("ssh: ") for message in errors)


def test_health_junit_host_and_rule_names_are_escaped_too():
    text = report.render_junit(report.build_report({"h\x01<|": {"unreachable": True, "msg": "x\x00"}},
                                                   rule_names=["r\x1b"], title="t\x02"))
    root = parse_junit(text)
    case = next(root.iter("testcase"))
    assert (root.get("name"), case.get("classname"), case.get("name")) == ("t\\x02", "h\\x01<|", "r\\x1b")
    assert case.find("error").get("message") == "x\\x00"


TEXT = st.text(max_size=120)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(title=TEXT, rule_names=st.lists(st.text(min_size=1, max_size=40), max_size=3, unique=True),
       host=st.text(min_size=1, max_size=60), message=TEXT)
def test_any_title_rule_name_and_host_keeps_every_format_intact(_facts_fixture, title, rule_names, host,  # noqa: F811
                                                                 message):
    """health_report's `title` and `rule_names`, the inventory's host names and a host's failure message: whatever
    they hold, JUnit parses with them as attribute text, the Markdown keeps its table and has no HTML, the JSON
    reads back, and the HTML page is self-contained with the host as one row."""
    built = report.build_report({host: {"unreachable": True, "msg": message},
                                 "\x00" + host: registered(_facts_fixture)}, rule_names=rule_names, title=title)
    root = parse_junit(report.render_junit(built))
    assert root.get("name") == escape.xml_text(title)
    hosts = {escape.xml_text(host), escape.xml_text("\x00" + host)}
    assert {case.get("classname") for case in root.iter("testcase")} == hosts
    markdown = report.render_markdown(built)
    assert markdown_problems(markdown) == []
    assert markdown.splitlines()[0].startswith("## ") and markdown.splitlines()[1] == ""
    rows = markdown_tables(markdown)[0]
    assert len(rows) == 3 and all(len(row) == 8 for row in rows), rows
    assert json.loads(report.render_json(built)) == json.loads(json.dumps(built))
    page = report.render_html(built)
    assert self_contained(page)
    assert len(parse_dom(page).rows) == 2


# ---------------------------------------------------------------- merging the reports of job slices

@pytest.fixture
def nine(fleet, facts):
    """Nine hosts: the unit fleet (passed, failed, error, unreachable) and one with its own threshold."""
    hosts = dict(fleet)
    leaking = json.loads(json.dumps(facts))
    leaking["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = 5000
    hosts["tolerant"] = registered(leaking, thresholds={"close_wait_per_port": 9000})
    assert len(hosts) == 9
    return hosts


RULE_NAMES = [rule.name for rule in health.build_rules()]


def slices(hosts, count):
    """The hosts in count slices, as AWX slices an inventory (every count-th host)."""
    names = list(hosts)
    return [{name: hosts[name] for name in names[index::count]} for index in range(count)]


def outputs(built):
    return {name: render(built) for name, render in report.RENDERERS.items()}


def test_three_slices_merge_to_the_unsliced_report(nine):
    whole = outputs(report.build_report(nine, RULE_NAMES))
    partials = [("slice-%d/health.json" % index, json.loads(report.render_json(report.build_report(part, RULE_NAMES))))
                for index, part in enumerate(slices(nine, 3), 1)]
    assert [len(partial["hosts"]) for _source, partial in partials] == [3, 3, 3]
    assert all(report.render_json(partial) != whole["json"] for _source, partial in partials)
    merged = outputs(report.merge_reports(partials))
    assert sorted(merged) == ["html", "json", "junit", "markdown"]
    for name in merged:
        assert merged[name] == whole[name], name
    # in any order of the slices
    assert outputs(report.merge_reports(list(reversed(partials)))) == whole


def test_a_slice_of_only_unreachable_hosts_still_merges(nine):
    unreachable = {name: result for name, result in nine.items() if not isinstance(result, dict)
                   or result.get("unreachable")}
    reached = {name: result for name, result in nine.items() if name not in unreachable}
    whole = outputs(report.build_report(nine, RULE_NAMES))
    partials = [(str(index), json.loads(report.render_json(report.build_report(part, RULE_NAMES))))
                for index, part in enumerate([unreachable, reached])]
    assert outputs(report.merge_reports(partials)) == whole


@pytest.mark.parametrize("change,message", [
    (lambda second: second.update(fail_on="warning"), "merge: b: fail_on 'warning' differs from 'critical' in a"),
    (lambda second: second.update(title="x"), "merge: b: title 'x' differs from 'netstate.tcp health' in a"),
    (lambda second: second["hosts"].append(dict(second["hosts"][0], host="healthy")),
     "merge: host 'healthy' is in both a and b"),
    (lambda second: second["hosts"][0].pop("snapshot"), r"merge: b: hosts\[0\] is not a host entry of this version"),
    (lambda second: second["hosts"][0].update(status="green"), r"merge: b: hosts\[0\]: status 'green' is not one of"),
    (lambda second: second.pop("hosts"), "merge: b: not a netstate.tcp health report"),
    (lambda second: second.update(rules="all"), "merge: b: rules must be a list of rule names, got 'all'"),
])
def test_bad_partials_are_named(nine, change, message):
    first, second = (json.loads(report.render_json(report.build_report(part, RULE_NAMES)))
                     for part in slices(nine, 2))
    change(second)
    with pytest.raises(report.ReportMergeError, match=message):
        report.merge_reports([("a", first), ("b", second)])


def test_nothing_to_merge_is_an_error():
    with pytest.raises(report.ReportMergeError, match="merge: no partial report given"):
        report.merge_reports([])
