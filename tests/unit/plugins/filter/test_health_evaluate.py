# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.health_evaluate: the built-in rules' results on facts, with overrides as health_check applies them."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netstate.tcp.plugins.filter.health_evaluate import FilterModule, health_evaluate
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

BUSIEST = {"address": "198.18.0.5", "port": 80, "connections": 9000, "time_wait": 8950}
FACTS = {"tcp": {"ephemeral": {"range": [32768, 60999], "size": 28232, "busiest": BUSIEST}, "states": {"SYN_RECV": 3}}}


def test_the_results_are_health_checks():
    rules = health.build_rules()
    assert health_evaluate(FACTS) == health.evaluate(rules, FACTS)
    (share,) = health_evaluate(FACTS, ["time_wait_ephemeral_share"])
    assert share == health.evaluate([rule for rule in rules if rule.name == "time_wait_ephemeral_share"], FACTS)[0]
    assert share["value"] == 8950 / 28232 and share["subject"] == "198.18.0.5:80" and share["status"] == "warning"


def test_overrides_apply_as_in_health_check():
    (share,) = health_evaluate(FACTS, "time_wait_ephemeral_share", {"time_wait_ephemeral_share": 0.5})
    assert share["status"] == "ok" and share["threshold"] == 0.5
    assert share["message"] == "ok: time_wait_ephemeral_share [198.18.0.5:80]: 0.317 (max 0.5)"
    assert health_evaluate(FACTS, ["time_wait_ephemeral_share", "syn_recv_total"],
                           {"time_wait_ephemeral_share": {"enabled": False}})[0]["name"] == "syn_recv_total"


@pytest.mark.parametrize("args, message", [
    ((FACTS, ["nope"]), "rules: no built-in rule 'nope'"),
    ((FACTS, [1]), "rules must be a list of rule names"),
    ((FACTS, None, {"close_wait_per_port": "many"}), "rule 'close_wait_per_port': field 'max': must be a number"),
    ((FACTS, None, {"nope": 1}), "no such rule"),
    (([],), "the input must be a host's ansible_facts.netstate, got list"),
])
def test_bad_input_is_named(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        health_evaluate(*args)


def test_filter_is_registered():
    assert FilterModule().filters() == {"health_evaluate": health_evaluate}
