# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Health and fleet reports of hosts whose listeners, users and messages carry hostile names.

Results come from the real rule engine on facts holding the names; Markdown is read back by a
CommonMark/GFM parser, JUnit by an XML parser (tests/support/hostile.py).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.action import health_report as health_report_action
from ansible_collections.netstate.tcp.plugins.filter.fleet_report import FilterModule
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_report as report

from tests.support.browser import parse_dom
from tests.support.hostile import HOSTILE_NAMES, markdown_problems, markdown_tables, parse_junit
from tests.unit.plugins.plugin_utils.test_health_report import facts as _facts_fixture  # noqa: F401
from tests.unit.plugins.plugin_utils.test_fleet_html import self_contained
from tests.unit.plugins.plugin_utils.test_health_report import listener, registered

fleet_report = FilterModule().filters()["fleet_report"]


@pytest.fixture(params=HOSTILE_NAMES, ids=[ascii(name) for name in HOSTILE_NAMES])
def name(request):
    return request.param


@pytest.fixture
def hostile_fleet(_facts_fixture, name):  # noqa: F811
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


def fleet_facts(name):
    return {"netstate": {
        "backend": name, "kernel": name,
        "tcp": {"total": 2, "states": {"LISTEN": 1}, "local_ports": {"9000": {"total": 2, "states": {"LISTEN": 1}}},
                "peers": [{"address": name, "total": 1}], "ephemeral": {}},
        "listeners": [{"protocol": "tcp", "address": name, "port": 9000, "queue": 3, "backlog": 2,
                       "saturation": 1.5, "process": name}],
    }}


def test_fleet_markdown_has_no_html_and_intact_rows(name):
    hostvars = {"h1": {"netstate_gather_result": {"ansible_facts": fleet_facts(name)}},
                "h2": {"netstate_gather_result": {"unreachable": True, "msg": name}},
                name: {"netstate_gather_result": {"failed": True, "msg": name}}}
    text = fleet_report(["h1", "h2", name], hostvars, format="markdown")
    assert markdown_problems(text) == []
    rows = markdown_tables(text)[0]
    assert len({len(row) for row in rows}) == 1 and len(rows) == 4
    by_host = {row[1]: row for row in rows[1:]}
    shown = escape.visible(name, keep="\n")
    assert set(by_host) == {"h1", "h2", shown}
    assert by_host["h1"][-1] == shown  # the backend column
    assert by_host["h1"][-3].startswith(shown + ":9000 3/2")  # the fullest accept queue


# ---------------------------------------------------------------- health_report's options (property)

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


def test_a_host_missing_from_the_inventory_is_named_bounded(tmp_path):
    """The action's `hosts` refusal quotes the name bounded and on one line, whatever its size."""
    huge = "h\n" * 300000
    message = health_report_action.hosts_error(huge)
    assert message.startswith("hosts: ") and "\n" not in message and len(message) < 600, message[:700]
