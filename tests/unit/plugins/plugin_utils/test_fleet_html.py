# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_fleet_html: the HTML fleet page, from real rule results, read back by html.parser.

The same pages are rendered by a real browser in tests/integration/test_fleet_html_browser.py.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from ansible_collections.netstate.tcp.plugins.filter.fleet_report import FilterModule
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_report as report
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

from tests.support.browser import parse_dom
from tests.support.hostile import HOSTILE_NAMES
from tests.unit.plugins.plugin_utils import _helpers
from tests.unit.plugins.plugin_utils._helpers import listener, registered, self_contained


# facts of a healthy host, and the unit fleet made from them
facts = _helpers.facts
fleet = _helpers.fleet
fleet_report = FilterModule().filters()["fleet_report"]


def test_the_self_contained_check_sees_external_content():
    assert not self_contained('<p><img src="x.png"></p>')
    assert not self_contained('<p><a href="http://x">x</a></p>')
    assert not self_contained('<style>body{background:url(x.png)}</style>')
    assert not self_contained('<p style="background:url(x.png)">x</p>')
    assert not self_contained("<script>x()</script>")


def test_health_page_is_self_contained_and_worst_first(fleet):
    built = report.build_report(fleet)
    text = report.render_html(built)
    assert self_contained(text)
    dom = parse_dom(text)
    assert [(row["host"], row["verdict"]) for row in dom.rows] == [
        ("down", "unreachable"), ("never_ran", "unreachable"), ("broken", "error"), ("leak", "failed"),
        ("full", "failed"), ("flood", "passed"), ("healthy", "passed"), ("sampled_not", "passed")]
    assert report.render_html(report.build_report(fleet)) == text  # no time stamps
    # per host: a state bar, the TIME_WAIT gauge and the accept queue gauge; violations per rule
    assert text.count('<svg class="states"') == 5 and text.count('<svg class="gauge"') == 10
    assert '<span class="rule critical">close_wait_per_port</span>' in text
    # the flood host's share, as the rule measured it, towards its busiest destination
    assert "<title>TIME_WAIT to 198.18.0.9:80: 70.8&#8201;% of the ephemeral port range, limit " in text
    assert '<span class="label">70.8&#8201;%</span>' in text


def test_health_json_holds_the_snapshot_the_page_is_drawn_from(fleet):
    built = json.loads(report.render_json(report.build_report(fleet)))
    flood = next(entry for entry in built["hosts"] if entry["host"] == "flood")
    rules = health.build_rules()
    share = next(result["value"] for result in health.evaluate(rules, {"tcp": {"ephemeral": {
        "size": 28232, "busiest": {"address": "198.18.0.9", "port": 80, "time_wait": 20000}}}})
        if result["name"] == "time_wait_ephemeral_share")
    assert flood["snapshot"]["time_wait_share"] == round(share, 4)
    assert flood["snapshot"]["worst"] == "time_wait_share"
    limit = next(rule.max for rule in rules if rule.name == "time_wait_ephemeral_share")
    assert flood["snapshot"]["pressure"] == round(share / limit, 4)
    down = next(entry for entry in built["hosts"] if entry["host"] == "down")
    assert down["snapshot"] is None


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[ascii(name) for name in HOSTILE_NAMES])
def test_hostile_names_stay_text(facts, name):
    full = dict(facts, listeners=facts["listeners"] + [listener(9000, 9, 8, process=name, pid=77)])
    hosts = {name: registered(full), "down": {"unreachable": True, "msg": name}, "x" + name: None}
    text = report.render_html(report.build_report(hosts))
    dom = parse_dom(text)
    assert self_contained(text)
    assert {row["host"] for row in dom.rows} == {escape.visible(name, keep="\n"), "down",
                                                 escape.visible("x" + name, keep="\n")}
    assert escape.html_text(name) in text


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.data = []

    def handle_data(self, data):
        self.data.append(data)


def test_fleet_report_page_follows_its_rows():
    gathered = {"backend": "netlink",
                "tcp": {"total": 5, "states": {"ESTABLISHED": 4, "LISTEN": 1},
                        "local_ports": {"80": {"total": 5, "states": {"CLOSE_WAIT": 150}}},
                        "ephemeral": {"size": 1000, "busiest": None}},
                "listeners": [{"protocol": "tcp", "address": "<b>", "port": 80, "queue": 1, "backlog": 2,
                               "saturation": 0.5, "process": "<script>x</script>"}]}
    hostvars = {"leaky": {"netstate_gather_result": {"ansible_facts": {"netstate": gathered}}},
                "down": {"netstate_gather_result": {"unreachable": True, "msg": "no route"}},
                "calm": {"netstate_gather_result": {"ansible_facts": {"netstate": dict(gathered, tcp=dict(
                    gathered["tcp"], local_ports={}))}}}}
    data = fleet_report(list(hostvars), hostvars)
    text = fleet_report(list(hostvars), hostvars, format="html")
    dom = parse_dom(text)
    assert self_contained(text)
    assert [(row["host"], row["verdict"]) for row in dom.rows] == [
        (row["host"], row["verdict"]) for row in data["rows"]] == [
        ("down", "unreachable"), ("leaky", "critical"), ("calm", "ok")]
    assert data["rows"][1]["violations"] == {"close_wait_per_port": {"count": 1, "status": "critical"}}
    collected = _Collect()
    collected.feed(text)
    assert "<b>:80 1/2 <script>x</script>" in "".join(collected.data)


def test_one_hundred_hosts(facts):
    hosts = {}
    for index in range(100):
        host_facts = json.loads(json.dumps(facts))
        host_facts["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = index * 3
        hosts["host%03d" % index] = registered(host_facts)
    text = report.render_html(report.build_report(hosts))
    dom = parse_dom(text)
    assert len(dom.rows) == 100
    assert [row["host"] for row in dom.rows[:3]] == ["host099", "host098", "host097"]  # most CLOSE_WAIT first
    assert [row["verdict"] for row in dom.rows].count("failed") == 66  # more than 100 CLOSE_WAIT from host034 on
