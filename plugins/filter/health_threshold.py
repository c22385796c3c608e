# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.netstate.tcp.plugins.plugin_utils._health_rules import HealthRuleError, build_rules

DOCUMENTATION = r"""
name: health_threshold
short_description: The threshold of a built-in netstate.tcp health rule, after a host's overrides
version_added: 0.1.0
description:
  - Returns the O(bound) of the built-in health rule named by the input (docs/health.md), after O(thresholds) is
    applied the way M(netstate.tcp.health_check) applies C(netstate_health_thresholds). An inventory or a play
    then compares facts against the very number the health check uses, per host.
  - Null when O(thresholds) disables the rule, or when the rule has no such bound.
  - An unknown rule name, or an override that M(netstate.tcp.health_check) would refuse, fails with the rule and
    the field named.
author:
  - netstate.tcp contributors
positional: thresholds, bound
options:
  _input:
    description: The rule's name, for example V(close_wait_per_port).
    type: str
    required: true
  thresholds:
    description: Overrides by rule name, as C(netstate_health_thresholds) (a number replaces the bound).
    type: dict
    default: {}
  bound:
    description: Which bound to return.
    type: str
    choices: [max, min]
    default: max
"""

EXAMPLES = r"""
# In an ansible.builtin.constructed inventory over a fact cache (docs/inventory/netstate.constructed.yml),
# the hosts with more CLOSE_WAIT on one listening port than rule close_wait_per_port allows them:
#   groups:
#     close_wait_leak: >-
#       netstate_close_wait_worst
#       > ('close_wait_per_port' | netstate.tcp.health_threshold(netstate_health_thresholds | default({})))

- name: Show the TIME_WAIT share of the ephemeral range this host may reach
  ansible.builtin.debug:
    msg: "{{ 'time_wait_ephemeral_share' | netstate.tcp.health_threshold(netstate_health_thresholds | default({})) }}"

- name: Fail when a port holds more CLOSE_WAIT than the health rule allows this host
  ansible.builtin.assert:
    that: item.value.states.CLOSE_WAIT <= limit
  vars:
    limit: "{{ 'close_wait_per_port' | netstate.tcp.health_threshold(netstate_health_thresholds | default({})) }}"
  loop: "{{ ansible_facts.netstate.tcp.local_ports | dict2items }}"
"""

RETURN = r"""
_value:
  description: The bound, or null when the rule is disabled or has no such bound.
  type: float
  sample: 100
"""


def health_threshold(name: Any, thresholds: Any = None, bound: str = "max") -> float | None:
    if bound not in ("max", "min"):
        raise AnsibleFilterError("health_threshold: bound must be max or min, got %r" % (bound,))
    if not isinstance(name, str):
        raise AnsibleFilterError("health_threshold: the input must be a rule name, got %r" % (name,))
    try:
        builtin = {rule.name: rule for rule in build_rules()}
        if name not in builtin:
            raise AnsibleFilterError("health_threshold: no built-in rule %r (known: %s)"
                                     % (name, ", ".join(sorted(builtin))))
        effective = {rule.name: rule for rule in build_rules(thresholds=thresholds or None,
                                                             threshold_source="thresholds")}
    except HealthRuleError as error:
        raise AnsibleFilterError("health_threshold: %s" % error) from error
    rule = effective.get(name)
    return None if rule is None else getattr(rule, bound)


class FilterModule:
    """netstate.tcp.health_threshold"""

    def filters(self):
        return {"health_threshold": health_threshold}
