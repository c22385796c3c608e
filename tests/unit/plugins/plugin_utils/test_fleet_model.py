# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_fleet_model: what the fleet reports show of a host, from real rule results on fact documents built by hand."""

from __future__ import annotations

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
