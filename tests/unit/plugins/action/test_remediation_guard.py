# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The action plugin of netstate.tcp.remediation_guard, run in this process on given facts: the three phases,
the audit file they write, check mode, and the source read from its variable without being templated.

The guards themselves are tested in tests/unit/plugins/plugin_utils/test_remediation.py; on real systemd hosts
in tests/fleet/test_remediate.py."""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import json

import pytest
import yaml
from ansible.errors import AnsibleActionFail

from ansible_collections.netstate.tcp.plugins.action import remediation_guard
from ansible_collections.netstate.tcp.plugins.modules import remediation_guard as remediation_guard_module

from tests.unit.plugins.action._helpers import action, documented_against_spec
from tests.unit.plugins.plugin_utils import _helpers

facts = _helpers.facts
LISTENERS = [{"port": 8080, "protocol": "tcp", "pid": 10, "name": "python3", "unit": "leaky-app.service"}]


def leaking(facts, count=500):
    ports = dict(facts["tcp"]["local_ports"], **{"8080": {"total": count, "states": _helpers.states(CLOSE_WAIT=count)}})
    return dict(facts, tcp=dict(facts["tcp"], local_ports=ports))


def run(tmp_path, phase, task_vars=None, check_mode=False, **args):
    values = {"phase": phase, "rule": "close_wait_per_port", "port": 8080, "mode": "act",
              "allow_units": ["leaky-app.service"], "audit_file": str(tmp_path / "audit.jsonl"), "settle": 0}
    values.update(args)
    variables = dict({"inventory_hostname": "web1"}, **(task_vars or {}))
    return action(remediation_guard, values, check_mode).run(task_vars=variables)


def audit(tmp_path):
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("args, message", [
    ({"rule": "nope"}, "netstate_remediate_rule: must be a built-in rule"),
    ({"mode": "force"}, "netstate_remediate_mode: must be one of plan, act, got 'force'"),
    ({"allow_units": ["ssh"]}, "netstate_remediate_allow_units: item 0: not a systemd service unit name"),
    ({"thresholds": {"nope": 1}}, "netstate_health_thresholds: rule 'nope': no such rule"),
    ({"audit_file": "/no/such/dir/audit.jsonl"}, "netstate_remediate_audit_file: /no/such/dir/audit.jsonl: its "
                                                 "directory /no/such/dir does not exist"),
])
def test_a_bad_input_fails_naming_the_variable(tmp_path, facts, args, message):
    with pytest.raises(AnsibleActionFail) as caught:
        run(tmp_path, "decide", facts=facts, listeners=LISTENERS, **args)
    assert str(caught.value).startswith(message), str(caught.value)
    assert audit(tmp_path) == []


def test_validate_contacts_nothing_and_writes_nothing(tmp_path):
    result = run(tmp_path, "validate", hosts="web:!web3")
    assert result["remediation"] == "restart_unit" and not result["changed"]
    assert audit(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_decide_then_prove_writes_one_line_per_decision(tmp_path, facts):
    decided = run(tmp_path, "decide", facts=leaking(facts), listeners=LISTENERS,
                  task_vars={"netstate_remediate_source": "alertmanager: NetstateCloseWaitPerPort"})
    assert [action["target"] for action in decided["actions"]] == ["leaky-app.service"]
    assert audit(tmp_path) == []  # an action's record waits for its proof
    proven = run(tmp_path, "prove", facts=facts, decided=decided)
    [record] = audit(tmp_path)
    assert record == proven["records"][0]
    assert (record["decision"], record["guard"], record["result"]) == ("act", None, "fixed")
    assert record["source"] == "alertmanager: NetstateCloseWaitPerPort"
    assert record["evidence_before"]["value"] == 500 and record["evidence_after"]["value"] == 1
    assert "leaky-app.service -> fixed" in proven["summary"][0]
    # the second run is inside the cooldown
    again = run(tmp_path, "decide", facts=leaking(facts), listeners=LISTENERS)
    assert again["actions"] == [] and audit(tmp_path)[-1]["guard"] == "cooldown"


def test_a_failed_action_is_recorded_and_fails_the_task(tmp_path, facts):
    decided = run(tmp_path, "decide", facts=leaking(facts), listeners=LISTENERS)
    proven = run(tmp_path, "prove", facts=leaking(facts), decided=decided, failed_action="Unit not found")
    assert proven["failed"] and audit(tmp_path)[-1]["result"] == "failed"


def test_check_mode_and_plan_mode_record_what_would_be_done(tmp_path, facts):
    checked = run(tmp_path, "decide", check_mode=True, facts=leaking(facts), listeners=LISTENERS)
    planned = run(tmp_path, "decide", mode="plan", facts=leaking(facts), listeners=LISTENERS)
    assert checked["actions"] == [] and planned["actions"] == []
    assert [(line["guard"], line["check_mode"]) for line in audit(tmp_path)] == [("check_mode", True), ("mode", False)]
    assert not (tmp_path / "audit.jsonl.state.json").exists()  # neither started a cooldown


def test_the_source_variable_is_never_templated(tmp_path, facts):
    template = "{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % (tmp_path / "templated")
    run(tmp_path, "decide", facts=facts, listeners=LISTENERS, task_vars={"netstate_remediate_source": template})
    assert audit(tmp_path)[0]["source"] == template and audit(tmp_path)[0]["decision"] == "resolved"
    assert not (tmp_path / "templated").exists()


def test_the_documented_options_and_attributes_are_the_actions():
    assert documented_against_spec(remediation_guard_module.DOCUMENTATION, remediation_guard.ARGUMENT_SPEC) == {}
    attributes = yaml.safe_load(remediation_guard_module.DOCUMENTATION)["attributes"]
    assert attributes["bypass_host_loop"]["support"] == "none"


def test_one_action_per_host_and_rule_even_with_several_ports_violating(tmp_path, facts):
    two = leaking(facts)
    two["tcp"]["local_ports"]["9090"] = {"total": 300, "states": _helpers.states(CLOSE_WAIT=300)}
    listeners = LISTENERS + [dict(LISTENERS[0], port=9090, pid=11)]
    decided = run(tmp_path, "decide", port="", facts=two, listeners=listeners)
    assert [(record["port"], record["decision"], record["guard"]) for record in decided["records"]] == [
        (8080, "act", None), (9090, "plan", "cooldown")]
    assert len(decided["actions"]) == 1
