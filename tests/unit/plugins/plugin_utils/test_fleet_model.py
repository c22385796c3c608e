# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_fleet_model: what the fleet reports show of a host, from real rule results on fact documents built by hand."""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import json

import pytest

from ansible_collections.netstate.tcp.plugins.plugin_utils import _fleet_model as model
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

from tests.unit.plugins.plugin_utils import _helpers

facts = _helpers.facts


def test_pressure_columns_are_the_rules(facts):
    """Each ratio is the rule's value over its max; an override moves it, a disabled rule zeroes it."""
    leaking = json.loads(json.dumps(facts))
    leaking["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = 40
    rules = model.host_rules()
    close_wait = next(rule for rule in rules if rule.name == "close_wait_per_port")
    assert model.snapshot(leaking, rules)["ratios"]["close_wait"] == round(40 / close_wait.max, 4)
    assert model.snapshot(leaking, model.host_rules({"close_wait_per_port": 20}))["ratios"]["close_wait"] == 2.0
    disabled = model.snapshot(leaking, model.host_rules({"close_wait_per_port": {"enabled": False}}))
    assert disabled["ratios"]["close_wait"] == 0.0 and disabled["limits"]["close_wait"] is None
    with pytest.raises(health.HealthRuleError, match="rule 'nope'"):
        model.host_rules({"nope": 1})


def test_a_registered_result_that_did_not_run_through_is_named_on_one_line():
    assert model.registered_outcome({"unreachable": True, "msg": "ssh: connect to host\n  web1: refused\x1b"}) == (
        "unreachable", "ssh: connect to host web1: refused\\x1b")
    assert model.registered_outcome({"skipped": True, "failed": True}) == ("skipped", "skipped")
    assert model.registered_outcome({"failed": True}) == ("failed", "failed")
    assert model.registered_outcome({"changed": False, "ansible_facts": {}}) is None
    assert model.registered_outcome(None) is None  # no result: the caller decides what that means


def test_verdicts_and_violations_per_rule_take_the_worst(facts):
    # the healthy host's one CLOSE_WAIT (port 8080) and one SYN_RECV, over limits made low for them
    rules = model.host_rules({"close_wait_per_port": 0, "syn_recv_total": {"max": 0, "severity": "warning"}})
    results = health.evaluate(rules, facts)
    assert model.verdict(results) == "critical"
    assert model.violations_per_rule(results) == {"close_wait_per_port": {"count": 1, "status": "critical"},
                                                  "syn_recv_total": {"count": 1, "status": "warning"}}
    no_data = [dict(result, status="no_data", ok=True) for result in results]
    assert model.verdict(no_data) == "ok" and model.violations_per_rule(no_data) == {}
    assert model.verdict(results + [dict(results[0], status="error", ok=False)]) == "error"


@pytest.mark.parametrize("value, cell", [
    (None, "-"), (0.123456, "0.1235"), (2.0, "2"), (12345678.9, "1.235e+07"), (7, "7"), ("a|b", "a\\|b"),
])
def test_markdown_cells(value, cell):
    assert model.markdown_cell(value) == cell
