# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action plugin of netstate.tcp.remediation_guard: fresh evidence, the guards and the audit trail.

Documentation lives in plugins/modules/remediation_guard.py; the logic in
plugins/plugin_utils/_remediation.py. The target only runs netstate.tcp.connection_facts (and
netstate.tcp.listener_facts for a rule whose remediation restarts a unit).
"""

from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health
from ansible_collections.netstate.tcp.plugins.plugin_utils import _paths
from ansible_collections.netstate.tcp.plugins.plugin_utils import _remediation as remediation

FACTS_MODULE = "netstate.tcp.connection_facts"
LISTENER_MODULE = "netstate.tcp.listener_facts"
#: The variable the source text is read from, as it is: never templated (it may hold an alert's text).
SOURCE_VARIABLE = "netstate_remediate_source"

ARGUMENT_SPEC = {
    "phase": {"type": "str", "required": True, "choices": ["validate", "decide", "prove"]},
    # raw: checked by _remediation.check_inputs, whose messages name the netstate_remediate_* variable
    "hosts": {"type": "raw"},
    "rule": {"type": "raw", "required": True},
    "port": {"type": "raw"},
    "mode": {"type": "raw", "default": "plan"},
    "allow_units": {"type": "raw", "default": []},
    "audit_file": {"type": "raw", "required": True},
    "cooldown": {"type": "raw", "default": 3600},
    "max_hosts": {"type": "raw", "default": 1},
    "window": {"type": "raw", "default": 3600},
    "settle": {"type": "raw", "default": 10},
    "thresholds": {"type": "raw", "default": {}},
    "facts": {"type": "dict"},
    "listeners": {"type": "list", "elements": "dict"},
    "decided": {"type": "dict"},
    "failed_action": {"type": "str", "default": ""},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True  # in check mode every decision is a plan entry (guard check_mode)
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        values = dict(args)
        source = task_vars.get(SOURCE_VARIABLE)
        values["source"] = None if source is None else str(source)
        if isinstance(values["audit_file"], str) and values["audit_file"]:
            values["audit_file"] = _paths.controller_path(values["audit_file"])
        try:
            rules = health.build_rules(None, [], args["thresholds"], threshold_source="netstate_health_thresholds")
            inputs = remediation.check_inputs(values, [rule.name for rule in rules])
        except (remediation.RemediationError, health.HealthRuleError) as exc:
            raise AnsibleActionFail(to_text(exc)) from None
        rule = next(rule for rule in rules if rule.name == inputs.rule)
        host = task_vars.get("inventory_hostname", "localhost")
        if args["phase"] == "validate":
            result.update(changed=False, msg=f"remediation inputs valid: rule {rule.name}, mode {inputs.mode}",
                          remediation=(rule.remediation or {}).get("kind", "plan"))
            return result
        if args["phase"] == "decide":
            return self._decide(result, args, inputs, rule, host, task_vars)
        return self._prove(result, args, inputs, rule, task_vars)

    # --- phases -----------------------------------------------------------------------------

    def _decide(self, result, args, inputs, rule, host, task_vars):
        facts, listeners = self._evidence(args, rule, inputs, task_vars)
        if facts is None:
            return listeners  # the failed module result
        items = remediation.evidence(rule, facts, inputs.port)
        kind = (rule.remediation or {}).get("kind")
        for item in items:
            port = item.port if item.port is not None else inputs.port
            if kind == "restart_unit" and port is not None:
                item.units = remediation.units_of_port(listeners, port)
                item.unit = item.units[0] if len(item.units) == 1 else None
        records, actions = [], []
        now = time.time()
        try:
            with remediation.Ledger(inputs.audit_file, now) as ledger:
                for item in items:
                    decision, guard, reason = remediation.decide(inputs, rule, item, host, self._task.check_mode,
                                                                 ledger)
                    record = remediation.audit_record(inputs, rule, item, host, self._task.check_mode, now,
                                                      decision, guard, reason)
                    if decision == "act":
                        ledger.acted(host, rule.name, max(inputs.cooldown, inputs.window))
                        actions.append(dict(remediation.action_of(rule, item), record=record))
                    else:
                        ledger.append(record)
                    records.append(record)
        except (OSError, ValueError) as exc:
            raise AnsibleActionFail(f"netstate_remediate_audit_file: {escape.log_line(exc)}") from None
        result.update(changed=False, records=records, actions=actions,
                      summary=[remediation.summary_line(record) for record in records if record["decision"] != "act"],
                      msg="; ".join(remediation.summary_line(record) for record in records))
        return result

    def _prove(self, result, args, inputs, rule, task_vars):
        decided = args["decided"] or {}
        actions = decided.get("actions") or []
        proven = []
        if actions:
            time.sleep(inputs.settle)
            # the proof reads the facts only: which unit owns the port was settled by the decision
            facts, listeners = self._evidence(args, rule, inputs, task_vars, owners=False)
            if facts is None:
                failed = listeners.get("msg", "facts could not be gathered again")
                after = []
            else:
                failed = args["failed_action"]
                after = remediation.evidence(rule, facts, inputs.port)
            try:
                with remediation.Ledger(inputs.audit_file, time.time()) as ledger:
                    for action in actions:
                        record = remediation.prove(action["record"], after, failed or None)
                        ledger.append(record)
                        proven.append(record)
            except (OSError, ValueError) as exc:
                raise AnsibleActionFail(f"netstate_remediate_audit_file: {escape.log_line(exc)}") from None
        records = [record for record in decided.get("records") or [] if record.get("decision") != "act"] + proven
        result.update(changed=False, records=records,
                      summary=[remediation.summary_line(record) for record in records],
                      failed=any(record["result"] == "failed" for record in proven),
                      msg="; ".join(remediation.summary_line(record) for record in records) or "nothing decided")
        return result

    # --- facts ------------------------------------------------------------------------------

    def _evidence(self, args, rule, inputs, task_vars, owners=True):
        """(netstate facts, tcp listeners) gathered fresh on the host, or the ones given; (None, failed result).
        Without owners, the listeners are not looked for beyond the facts' own."""
        facts, listeners = args.get("facts"), args.get("listeners")
        if facts is None:
            module_args = {"sample_interval": 1.0} if rule.uses_rates else {}
            gathered = self._module(FACTS_MODULE, module_args, task_vars)
            if gathered.get("failed") or gathered.get("unreachable"):
                return None, gathered
            facts = (gathered.get("ansible_facts") or {}).get("netstate")
        if facts is None:
            raise AnsibleActionFail(f"{FACTS_MODULE} returned no ansible_facts.netstate")
        if owners and listeners is None and (rule.remediation or {}).get("kind") == "restart_unit":
            # the facts' listeners carry their unit; listener_facts lists every one (listeners_limit keeps the
            # fullest accept queues only), so it is asked when the port's listener is not among them
            listeners = [item for item in facts.get("listeners") or []
                         if isinstance(item, dict) and item.get("protocol") == "tcp" and "unit" in item]
            if inputs.port is None or not any(item.get("port") == inputs.port for item in listeners):
                gathered = self._module(LISTENER_MODULE, {}, task_vars)
                if gathered.get("failed") or gathered.get("unreachable"):
                    return None, gathered
                listeners = listeners + ((gathered.get("ansible_facts") or {}).get("tcp_listen") or [])
        return facts, listeners or []

    def _module(self, name, module_args, task_vars):
        gathered = self._execute_module(module_name=name, module_args=module_args, task_vars=task_vars)
        if gathered.get("failed") or gathered.get("unreachable"):
            gathered["msg"] = f"{name} failed: {gathered.get('msg', 'no message')}"
        return gathered
