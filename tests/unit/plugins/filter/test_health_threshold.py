# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.health_threshold: the built-in rules' bounds, with overrides as health_check applies them."""

from __future__ import annotations

import os

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.netstate.tcp.plugins.filter.health_threshold import FilterModule, health_threshold
from ansible_collections.netstate.tcp.plugins.plugin_utils._health_rules import BUILTIN_RULES_PATH
from tests.conftest import ROOT

EXAMPLE = os.path.join(ROOT, "docs", "inventory", "netstate.constructed.yml")
# group of the example inventory -> (composed threshold variable, the built-in health rule it comes from)
MIRRORS = {"close_wait_leak": ("netstate_close_wait_max", "close_wait_per_port"),
           "ephemeral_pressure": ("netstate_ephemeral_share_max", "time_wait_ephemeral_share")}


def builtin():
    with open(BUILTIN_RULES_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize("rule", builtin(), ids=lambda rule: rule["name"])
def test_every_builtin_rule_bound_is_returned(rule):
    assert health_threshold(rule["name"]) == rule.get("max")
    assert health_threshold(rule["name"], {}, "min") == rule.get("min")


def test_overrides_apply_as_in_health_check():
    assert health_threshold("close_wait_per_port", {"close_wait_per_port": 20}) == 20
    assert health_threshold("close_wait_per_port", {"close_wait_per_port": {"max": 7, "severity": "warning"}}) == 7
    assert health_threshold("close_wait_per_port", {"syn_recv_total": 1}) == 100
    assert health_threshold("time_wait_ephemeral_share", {"time_wait_ephemeral_share": {"enabled": False}}) is None


@pytest.mark.parametrize("args, message", [
    (("no_such_rule",), "no built-in rule 'no_such_rule'"),
    (("close_wait_per_port", {"close_wait_per_port": "many"}), "close_wait_per_port"),
    (("close_wait_per_port", {"no_such_rule": 1}), "no such rule"),
    (("close_wait_per_port", {}, "middle"), "bound must be max or min"),
    ((42,), "must be a rule name"),
])
def test_bad_input_names_the_field(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        health_threshold(*args)


def test_filter_is_registered():
    assert FilterModule().filters() == {"health_threshold": health_threshold}


def test_example_inventory_thresholds_are_the_health_rules():
    """docs/inventory/netstate.constructed.yml: each group compares with its rule's threshold, taken by
    health_threshold with the host's overrides (tests/fleet/test_inventory_groups.py runs it on hosts)."""
    with open(EXAMPLE) as handle:
        example = yaml.safe_load(handle)
    for group, (variable, rule) in MIRRORS.items():
        assert example["groups"][group].endswith("> %s" % variable), example["groups"][group]
        assert example["compose"][variable].strip() == (
            "'%s' | netstate.tcp.health_threshold(netstate_health_thresholds | default({}))" % rule)
