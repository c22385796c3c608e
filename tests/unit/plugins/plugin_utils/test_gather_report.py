# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_gather_report: the gather role's fleet report - the report's limits, each host's own thresholds and
the hosts without facts - from real rule results on fact documents built by hand.

Ranking, Markdown and the filter's errors are tested through netstate.tcp.fleet_report
(tests/unit/plugins/filter/test_fleet_report.py), the HTML page in test_fleet_html.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import json

import pytest

from ansible_collections.netstate.tcp.plugins.plugin_utils import _gather_report as gather_report

from tests.unit.plugins.plugin_utils import _helpers

facts = _helpers.facts  # a healthy host


def test_limits_are_overrides_of_the_rules_behind_the_pressure_columns():
    assert gather_report.limit_overrides(None) == {}
    assert gather_report.limit_overrides({"close_wait": 50, "accept_queue": 0.9}) == {
        "close_wait_per_port": {"max": 50}, "accept_queue_full": {"max": 0.9}}


@pytest.mark.parametrize("limits, message", [
    ([("close_wait", 5)], "limits must be a dictionary, got [('close_wait', 5)]"),
    ({"orphans": 1}, "limits: unknown key 'orphans' (known: accept_queue, close_wait, syn_recv, time_wait_share)"),
    ({"close_wait": True}, "limits.close_wait must be a number above 0, got True"),
    ({"close_wait": "5"}, "limits.close_wait must be a number above 0, got '5'"),
    ({"syn_recv": -1}, "limits.syn_recv must be a number above 0, got -1"),
])
def test_a_bad_limit_is_named(limits, message):
    with pytest.raises(gather_report.FleetReportError) as caught:
        gather_report.limit_overrides(limits)
    assert str(caught.value) == message


def test_a_hosts_own_thresholds_win_over_the_reports_limits(facts):
    leaking = json.loads(json.dumps(facts))
    leaking["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = 50
    result = {"netstate_gather_result": {"ansible_facts": {"netstate": leaking}}}
    hostvars = {"strict": result, "tolerant": dict(result, netstate_health_thresholds={"close_wait_per_port": 100})}
    report = gather_report.build_report(["tolerant", "strict"], hostvars, limits={"close_wait": 10})
    ratios = {row["host"]: row["ratios"]["close_wait"] for row in report["rows"]}
    assert ratios == {"strict": 5.0, "tolerant": 0.5}
    assert report["limits"]["close_wait"] == 10
    bad = dict(hostvars, tolerant=dict(result, netstate_health_thresholds={"close_wait_per_port": "many"}))
    with pytest.raises(gather_report.FleetReportError) as caught:
        gather_report.build_report(["tolerant"], bad)
    assert str(caught.value).startswith("netstate_health_thresholds of host tolerant: rule 'close_wait_per_port'")


def test_hosts_without_facts_are_named_with_the_reason(facts):
    hostvars = {"empty": {"netstate_gather_result": {"changed": False}},  # a result without the facts
                "skipped": {"netstate_gather_result": {"skipped": True, "changed": False}},
                "cached": {"ansible_facts": {"netstate": facts}},  # FACTS_MODULES: facts without a result
                "never": {}}
    report = gather_report.build_report(sorted(hostvars), hostvars)
    rows = {row["host"]: (row["status"], row["message"]) for row in report["rows"]}
    assert rows["empty"] == ("failed", "the result holds no ansible_facts.netstate")
    assert rows["never"] == ("unreachable", "no connection facts: the host was not reached")
    assert rows["cached"] == ("ok", "") and rows["skipped"][0] == "failed"
    markdown = gather_report.render_markdown(report).splitlines()
    assert "4 hosts, 1 gathered, unreachable: never, failed: empty, skipped." in markdown
    assert markdown[markdown.index("## Hosts without facts") + 2:] == [
        "- never (unreachable): no connection facts: the host was not reached",
        "- empty (failed): the result holds no ansible_facts.netstate",
        "- skipped (failed): %s" % rows["skipped"][1]]
