# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of netstate.tcp.health_check: evaluates health rules on the controller.

Documentation lives in plugins/modules/health_check.py; the rule engine in
plugins/plugin_utils/_health_rules.py. The target only runs netstate.tcp.connection_facts, and
only when the host has no ansible_facts.netstate yet (or gather=always).
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape
from ansible_collections.netstate.tcp.plugins.module_utils._engine._argspec import CONNECTION_FACTS
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_report as report
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

FACTS_MODULE = "netstate.tcp.connection_facts"

ARGUMENT_SPEC = {
    # rules, extra_rules and thresholds are raw: the rule engine validates them and names rule and field
    "rules": {"type": "raw"},
    "extra_rules": {"type": "raw", "default": []},
    "thresholds": {"type": "raw", "default": {}},
    "fail_on": {"type": "str", "default": "critical", "choices": list(health.SEVERITIES)},
    "facts": {"type": "dict"},
    "gather": {"type": "str", "default": "auto", "choices": ["auto", "always", "never"]},
    "gather_args": {"type": "dict", "default": {}},
    "sample_interval": {"type": "float", "default": 1.0},
    "validate_only": {"type": "bool", "default": False},
    "thresholds_by_host": {"type": "raw"},
    # checked by the rule engine (check_budget): keys, ranges, defaults
    "budget": {"type": "raw"},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True  # rules only read facts: check mode behaves the same
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        if args["thresholds_by_host"] is not None and not args["validate_only"]:
            raise AnsibleActionFail("thresholds_by_host: only valid with validate_only=true")
        if args["sample_interval"] < 0:
            raise AnsibleActionFail(f"sample_interval: must be 0 or more seconds, got {args['sample_interval']}")
        unknown = sorted(set(args["gather_args"]) - set(CONNECTION_FACTS), key=str)
        if unknown:
            raise AnsibleActionFail("gather_args: unknown option(s) %s; %s takes %s" % (
                ", ".join(escape.bounded_repr(key) for key in unknown), FACTS_MODULE,
                ", ".join(sorted(CONNECTION_FACTS))))
        try:
            rules = health.build_rules(args["rules"], args["extra_rules"], args["thresholds"])
            budget = health.check_budget(args["budget"])
            if args["validate_only"]:
                return self._validated(result, args, rules)
        except health.HealthRuleError as exc:
            raise AnsibleActionFail(to_text(exc)) from None

        facts, source = self._facts(args, rules, task_vars)
        if facts is None:
            return source  # the failed connection_facts result, as the module returned it
        result.update(changed=False, facts_source=source, **report.host_result(rules, facts, args["fail_on"], budget))
        return result

    def _validated(self, result, args, rules):
        by_host = args["thresholds_by_host"]
        if by_host is not None:
            if not isinstance(by_host, dict):
                raise AnsibleActionFail("thresholds_by_host: must be a mapping of host to thresholds, got "
                                        f"{escape.bounded_repr(by_host)}")
            for host in sorted(by_host, key=str):
                health.build_rules(args["rules"], args["extra_rules"], by_host[host],
                                   threshold_source="thresholds of host "  # the engine clips it
                                   + (host if isinstance(host, str) else escape.bounded_repr(host)))
        result.update(changed=False, rules=[rule.name for rule in rules],
                      rule_definitions=[rule.as_dict() for rule in rules],
                      msg=f"{len(rules)} health rules valid")
        return result

    def _facts(self, args, rules, task_vars):
        """(facts, source) or (None, failed module result)."""
        if args["facts"] is not None:
            return args["facts"], "argument"
        known = (task_vars.get("ansible_facts") or {}).get("netstate")
        if known is not None and args["gather"] != "always":
            return known, "host_facts"
        if args["gather"] == "never":
            raise AnsibleActionFail("ansible_facts.netstate is not set and gather=never: run "
                                    f"{FACTS_MODULE} first or pass facts")
        module_args = dict(args["gather_args"])
        if health.needs_rates(rules):
            module_args.setdefault("sample_interval", args["sample_interval"])
        gathered = self._execute_module(module_name=FACTS_MODULE, module_args=module_args, task_vars=task_vars)
        if gathered.get("failed") or gathered.get("unreachable"):
            gathered["msg"] = f"{FACTS_MODULE} failed: {gathered.get('msg', 'no message')}"
            return None, gathered
        facts = (gathered.get("ansible_facts") or {}).get("netstate")
        if facts is None:
            raise AnsibleActionFail(f"{FACTS_MODULE} returned no ansible_facts.netstate")
        return facts, "gathered"
