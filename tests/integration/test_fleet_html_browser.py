# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTML fleet pages in a real browser: headless Chromium renders each to a PNG.

Pages come from the real rule engine (health role) and the fleet_report filter (gather role), with
host and process names a host can choose (tests/support/hostile.py) and names that would run a
script if they reached the page as markup. For each page: Chromium renders it without a console
message (a script that ran would log one: the control test shows the check sees it), the
screenshot holds the colours of the state bars and gauges, and the DOM Chromium built lists every
host with its verdict. A synthetic 100-host page renders too.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.netstate.tcp.plugins.filter.fleet_report import FilterModule
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape
from ansible_collections.netstate.tcp.plugins.plugin_utils import _fleet_html as page
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_report as report

from tests.conftest import require
from tests.support import browser
from tests.support.hostile import HOSTILE_NAMES
from tests.unit.plugins.plugin_utils import test_health_report
from tests.unit.plugins.plugin_utils.test_health_report import listener, registered

# the fixtures of test_health_report.py: facts of a healthy host, and the unit fleet made from them
facts = test_health_report.facts
fleet = test_health_report.fleet
fleet_report = FilterModule().filters()["fleet_report"]
# names that would log to the console if the page let them become markup
SCRIPTED = ['<script>console.error("host")</script>', '<img src=x onerror="console.error(1)">',
            '"><svg onload=console.error(2)>', "</td></tr></table><script>console.error(3)</script>"]


@pytest.fixture(autouse=True)
def chromium():
    require(browser.chromium() is not None, "needs headless Chromium (Debian package chromium, scripts/setup.sh)")


def render(tmp_path, text, name="page", height=1200):
    """(DOM rows, screenshot path) of a page; fails on any console message."""
    path = tmp_path / (name + ".html")
    path.write_text(text, encoding="utf-8")
    png = tmp_path / (name + ".png")
    assert browser.screenshot(path, png, height=height) == []
    dom, console = browser.dump_dom(path)
    assert console == []
    parsed = browser.parse_dom(dom)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert not {"onerror", "onload", "src", "href"} & set(parsed.attributes)
    return parsed.rows, png


def test_the_console_check_sees_a_script(tmp_path):
    """Control: a page that runs a script is caught by the console check render() makes."""
    path = tmp_path / "scripted.html"
    path.write_text("<!DOCTYPE html><p>x</p><script>console.error('seen')</script>", encoding="utf-8")
    assert any("seen" in line for line in browser.screenshot(path, tmp_path / "scripted.png"))
    _dom, console = browser.dump_dom(path)
    assert any("seen" in line for line in console)


def hostile_health_fleet(facts):
    hosts = {}
    for index, name in enumerate(HOSTILE_NAMES + SCRIPTED):
        host_facts = json.loads(json.dumps(facts))
        host_facts["listeners"].append(listener(9000 + index, 9, 8, process=name, pid=77))
        hosts[name] = registered(host_facts)
        hosts["down " + name] = {"unreachable": True, "msg": name}
    hosts["healthy"] = registered(facts)
    return hosts


def test_health_page_with_hostile_names_in_chromium(tmp_path, facts):
    built = report.build_report(hostile_health_fleet(facts))
    rows, png = render(tmp_path, report.render_html(built), height=1600)
    expected = {escape.visible(entry["host"], keep="\n"): entry["status"] for entry in built["hosts"]}
    assert len(rows) == len(expected) == 2 * len(HOSTILE_NAMES + SCRIPTED) + 1
    assert {row["host"]: row["verdict"] for row in rows} == expected
    assert [row["verdict"] for row in rows] == sorted(
        (row["verdict"] for row in rows), key=["unreachable", "error", "failed", "passed"].index)
    counts = browser.colour_counts(png, [page.STATE_COLOURS["ESTABLISHED"], "#d62728"])
    assert counts[page.STATE_COLOURS["ESTABLISHED"]] > 1000  # the state bars were drawn
    assert counts["#d62728"] > 1000  # full accept queues and failed verdicts in red


def test_health_page_of_the_unit_fleet_in_chromium(tmp_path, fleet):
    built = report.build_report(fleet)
    rows, _png = render(tmp_path, report.render_html(built))
    assert rows == [{"host": host, "verdict": verdict} for host, verdict in [
        ("down", "unreachable"), ("never_ran", "unreachable"), ("broken", "error"), ("leak", "failed"),
        ("full", "failed"), ("flood", "passed"), ("healthy", "passed"), ("sampled_not", "passed")]]


def test_gather_page_with_hostile_names_in_chromium(tmp_path, facts):
    hostvars = {}
    for index, name in enumerate(HOSTILE_NAMES + SCRIPTED):
        host_facts = json.loads(json.dumps(facts))
        host_facts["listeners"].append(listener(9000 + index, 9, 8, process=name, pid=77))
        hostvars[name] = {"netstate_gather_result": {"ansible_facts": {"netstate": host_facts}}}
        hostvars["down " + name] = {"netstate_gather_result": {"unreachable": True, "msg": name}}
    data = fleet_report(list(hostvars), hostvars)
    rows, png = render(tmp_path, fleet_report(list(hostvars), hostvars, format="html"), height=1600)
    assert rows == [{"host": escape.visible(row["host"], keep="\n"), "verdict": row["verdict"]}
                    for row in data["rows"]]
    assert {row["verdict"] for row in rows} == {"unreachable", "critical"}
    assert browser.colour_counts(png, [page.STATE_COLOURS["ESTABLISHED"]])[page.STATE_COLOURS["ESTABLISHED"]] > 1000


def test_one_hundred_hosts_in_chromium(tmp_path, facts):
    hosts = {}
    for index in range(100):
        host_facts = json.loads(json.dumps(facts))
        host_facts["tcp"]["states"].update(ESTABLISHED=index * 7, TIME_WAIT=(100 - index) * 5, CLOSE_WAIT=index)
        host_facts["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = index * 3
        host_facts["tcp"]["ephemeral"]["busiest"]["time_wait"] = index * 90
        host_facts["listeners"][1].update(queue=index * 6, saturation=round(index * 6 / 511, 4))
        hosts["node-%03d.example" % index] = registered(host_facts)
    for index in range(5):
        hosts["gone-%d.example" % index] = {"unreachable": True, "msg": "ssh: timed out"}
    built = report.build_report(hosts)
    text = report.render_html(built)
    rows, png = render(tmp_path, text, height=4000)
    assert len(rows) == 105
    assert [row["host"] for row in rows[:6]] == ["gone-%d.example" % index for index in range(5)] + ["node-099.example"]
    assert {row["host"]: row["verdict"] for row in rows} == {entry["host"]: entry["status"] for entry in built["hosts"]}
    assert browser.png_size(png) == (1400, 4000)
    # the top of the page, decoded: bars of the hosts under the five unreachable ones
    counts = browser.colour_counts(png, [page.STATE_COLOURS["ESTABLISHED"], page.STATE_COLOURS["TIME_WAIT"]],
                                   max_rows=900)
    assert counts[page.STATE_COLOURS["ESTABLISHED"]] > 10000 and counts[page.STATE_COLOURS["TIME_WAIT"]] > 100
    assert len(text) < 400_000  # a page one opens, not a dump: about 3 kB per host
