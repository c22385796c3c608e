# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The action plugin of netstate.tcp.health_check, run in this process: its refusals, validate_only, and
where the facts come from.

The rules are tested in tests/unit/plugins/plugin_utils/test_health_rules.py; gathering the facts on a
host (connection_facts) in tests/integration/test_health_role.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import pytest
import yaml
from ansible.errors import AnsibleActionFail

from ansible_collections.netstate.tcp.plugins.action import health_check
from ansible_collections.netstate.tcp.plugins.modules import health_check as health_check_module
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

from tests.unit.plugins.action._helpers import action, documented_against_spec
from tests.unit.plugins.plugin_utils import _helpers

facts = _helpers.facts  # a healthy host


@pytest.mark.parametrize("args, message", [
    ({"thresholds_by_host": {"web1": {}}}, "thresholds_by_host: only valid with validate_only=true"),
    ({"sample_interval": -1}, "sample_interval: must be 0 or more seconds, got -1.0"),
    ({"thresholds": {"nope": 1}}, "thresholds: rule 'nope': no such rule (known: accept_queue_full, "),
    ({"extra_rules": [{"name": "x", "query": "tcp.total"}]}, "extra_rules[0]: rule 'x': field 'max': a rule needs max"),
    ({"fail_on": "sometimes"}, "value of fail_on must be one of: warning, critical, got: sometimes"),
    ({"gather": "never"}, "ansible_facts.netstate is not set and gather=never: run netstate.tcp.connection_facts"),
    ({"validate_only": True, "thresholds_by_host": ["web1"]},
     "thresholds_by_host: must be a mapping of host to thresholds, got ['web1']"),
    ({"validate_only": True, "thresholds_by_host": {"web1": {"close_wait_per_port": "many"}}},
     "thresholds of host web1: rule 'close_wait_per_port': field 'max': must be a number, got 'many'"),
    ({"rule": []}, "Invalid options for netstate.tcp.health_check: rule"),
])
def test_a_bad_task_fails_naming_the_option(args, message):
    with pytest.raises(AnsibleActionFail) as caught:
        action(health_check, args).run(task_vars={})
    assert str(caught.value).startswith(message), str(caught.value)


def test_validate_only_returns_the_rules_and_evaluates_nothing():
    result = action(health_check, {"validate_only": True, "thresholds": {"syn_recv_total": 50},
                                   "thresholds_by_host": {"web1": {"close_wait_per_port": 20}}}).run(task_vars={})
    rules = health.build_rules(thresholds={"syn_recv_total": 50})
    assert result["msg"] == "%d health rules valid" % len(rules) and not result["changed"]
    assert result["rules"] == [rule.name for rule in rules]
    assert result["rule_definitions"] == [rule.as_dict() for rule in rules]
    assert "results" not in result and "facts_source" not in result


@pytest.mark.parametrize("check_mode", [False, True])
def test_the_facts_given_win_over_the_hosts(facts, check_mode):
    """facts, then the host's ansible_facts.netstate; the rules only read them, so check mode is the same."""
    leaking = dict(facts, tcp=dict(facts["tcp"], local_ports={"8080": {"total": 500, "states": {"CLOSE_WAIT": 500}}}))
    host = {"ansible_facts": {"netstate": facts}}
    given = action(health_check, {"facts": leaking}, check_mode).run(task_vars=host)
    assert given["facts_source"] == "argument" and not given["healthy"] and given["failed"]
    assert [result["name"] for result in given["results"] if result["status"] == "critical"] == [
        "close_wait_per_port"]
    known = action(health_check, {}, check_mode).run(task_vars=host)
    assert known["facts_source"] == "host_facts" and known["healthy"] and not known["failed"]
    assert not given["changed"] and not known["changed"]


# ---------------------------------------------------------------- the module's documentation is the action's

def test_the_documented_options_and_attributes_are_the_actions():
    assert documented_against_spec(health_check_module.DOCUMENTATION, health_check.ARGUMENT_SPEC) == {}
    attributes = yaml.safe_load(health_check_module.DOCUMENTATION)["attributes"]
    assert attributes["bypass_host_loop"]["support"] == (
        "full" if health_check.ActionModule.BYPASS_HOST_LOOP else "none")
    assert attributes["async"]["support"] == ("full" if health_check.ActionModule._supports_async else "none")


def test_the_documented_return_values_are_those_returned(facts):
    validated = action(health_check, {"validate_only": True}).run(task_vars={})
    checked = action(health_check, {"facts": facts}).run(task_vars={})
    returned = set(validated) | set(checked)
    assert returned - {"changed", "failed"} == set(yaml.safe_load(health_check_module.RETURN))
