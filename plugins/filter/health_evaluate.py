# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.netstate.tcp.plugins.plugin_utils import _fleet_model as model
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as rules_engine

DOCUMENTATION = r"""
name: health_evaluate
short_description: Results of built-in netstate.tcp health rules on a host's connection facts
version_added: 0.1.0
description:
  - Evaluates the built-in health rules named by O(rules) (docs/health.md) on the input, after O(thresholds) is
    applied the way M(netstate.tcp.health_check) applies C(netstate_health_thresholds), and returns their
    results - the same dictionaries as the RV(netstate.tcp.health_check#module:results) of M(netstate.tcp.health_check).
  - A template then shows a value exactly as the health rule measures it, against the threshold the host has,
    without computing it a second way (the tuning role's before/after report does so).
  - A rule that O(thresholds) disables gives no result. An unknown rule name, or an override that
    M(netstate.tcp.health_check) would refuse, fails with the rule and the field named.
author:
  - netstate.tcp contributors
positional: rules, thresholds
options:
  _input:
    description: A host's C(ansible_facts.netstate) (docs/facts-contract.md).
    type: dict
    required: true
  rules:
    description: Names of the built-in rules to evaluate, in this order; all of them when empty.
    type: list
    elements: str
    default: []
  thresholds:
    description: Overrides by rule name, as C(netstate_health_thresholds).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Show the TIME_WAIT share of the ephemeral range towards the busiest destination, as the health rule says
  ansible.builtin.debug:
    msg: "{{ (ansible_facts.netstate | netstate.tcp.health_evaluate(['time_wait_ephemeral_share'],
      netstate_health_thresholds | default({})) | first).message }}"

- name: List the rules this host violates
  ansible.builtin.debug:
    msg: "{{ ansible_facts.netstate | netstate.tcp.health_evaluate | rejectattr('ok') | map(attribute='message') }}"
"""

RETURN = r"""
_value:
  description:
    - One result per rule (per violating element for rules with C(each)) - C(name), C(value), C(threshold),
      C(bound), C(severity), C(ok), C(status) (V(ok), V(no_data), V(warning), V(critical), V(error)),
      C(subject), C(message).
  type: list
  elements: dict
"""


def health_evaluate(facts: Any, rules: Any = None, thresholds: Any = None) -> list:
    if not isinstance(facts, Mapping):
        raise AnsibleFilterError("health_evaluate: the input must be a host's ansible_facts.netstate, got %s"
                                 % type(facts).__name__)
    if isinstance(rules, str):
        rules = [rules]
    if rules is not None and (not isinstance(rules, (list, tuple)) or not all(isinstance(n, str) for n in rules)):
        raise AnsibleFilterError("health_evaluate: rules must be a list of rule names, got %r" % (rules,))
    try:
        builtin = model.host_rules()
        known = {rule.name for rule in builtin}
        unknown = [name for name in rules or [] if name not in known]
        if unknown:
            raise AnsibleFilterError("health_evaluate: rules: no built-in rule %r (known: %s)"
                                     % (unknown[0], ", ".join(sorted(known))))
        effective = {rule.name: rule for rule in model.host_rules(thresholds, "thresholds")}
    except rules_engine.HealthRuleError as error:
        raise AnsibleFilterError("health_evaluate: %s" % error) from None
    names = list(rules) if rules else [rule.name for rule in builtin]
    return rules_engine.evaluate([effective[name] for name in names if name in effective], facts)


class FilterModule:
    """netstate.tcp.health_evaluate"""

    def filters(self):
        return {"health_evaluate": health_evaluate}
