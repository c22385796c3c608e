# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Merging the health reports of job slices: the same files, to the byte, as one run.

Host results come from the real rule engine (tests/unit/plugins/plugin_utils/test_health_report.py);
each slice's report goes through its JSON text, as a slice job writes it and the merge reads it.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_report as report
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

from tests.unit.plugins.plugin_utils import test_health_report
from tests.unit.plugins.plugin_utils.test_health_report import registered

# the fixtures of test_health_report.py: facts of a healthy host, and the unit fleet made from them
facts = test_health_report.facts
fleet = test_health_report.fleet


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
