# -*- coding: utf-8 -*-
# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Documentation only: the work is done on the controller by plugins/action/remediation_guard.py.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: remediation_guard
short_description: Decide behind guards whether to remediate a health rule's violation, and keep the audit trail
version_added: 0.1.0
description:
  - The decisions of the P(netstate.tcp.remediate#role) role, made on the controller. See C(docs/remediation.md).
  - O(phase=validate) checks every input and never contacts a host. Errors name the role's variable
    (C(netstate_remediate_rule), C(netstate_remediate_port), ...) and the value.
  - O(phase=decide) gathers fresh facts on the host (M(netstate.tcp.connection_facts), and
    M(netstate.tcp.listener_facts) for the unit owning a port) and evaluates the built-in rule O(rule). A symptom
    already gone is decision V(resolved) and nothing is done. Otherwise the rule's C(remediation) part
    (C(plugins/plugin_utils/health_builtin_rules.yml)) says what to do, and the guards may hold it, in this order
    - the unit's name (V(no_unit) - none, several, or not a C(.service) name of systemd's grammar), the deny list
    (V(deny_list) - C(ssh)/C(sshd), C(zabbix-agent*), C(prometheus-node-exporter*), C(netstate-*); it always
    wins), O(allow_units) (V(allow_list)), O(cooldown) for this host and rule (V(cooldown)), O(max_hosts) per
    O(window) across the fleet (V(blast_radius)), O(mode) (V(mode)) and check mode (V(check_mode)). A held
    action is decision V(plan). RV(actions) lists what the role is to do.
  - O(phase=prove) waits O(settle) seconds after the actions, gathers fresh facts again, and records for each
    action whether the symptom fell below its limit (V(fixed)), did not (V(not_fixed)), or the action failed
    (V(failed), which fails the task).
  - Every decision is one JSON line appended to O(audit_file) on the controller (a regular file only; a symbolic
    link, FIFO or device there is refused). What was acted on is kept in C(<audit_file>.state.json) beside it,
    and both are changed under the lock C(<audit_file>.lock), so parallel hosts and runs share the cooldown and
    the blast radius.
  - The free text of the record's C(source) is read from the variable C(netstate_remediate_source) as it is, never
    templated (it may hold an alert's text); one line, escaped, at most 300 characters.
author:
  - netstate.tcp developers (@netstate-tcp)
options:
  phase:
    description: V(validate) (inputs only), V(decide) (evidence and guards) or V(prove) (evidence after the actions).
    type: str
    required: true
    choices: [validate, decide, prove]
  hosts:
    description: The host pattern the run targets (C(netstate_remediate_hosts)); checked by O(phase=validate).
    type: raw
  rule:
    description: The built-in health rule whose violation to remediate (C(docs/remediation.md) lists them).
    type: raw
    required: true
  port:
    description:
      - Only this local port (1 to 65535; V('') or null for every port). For a rule over ports it picks the port
        judged; over listeners, the listeners of that port; other rules are about the whole host.
    type: raw
  mode:
    description: V(plan) records what would be done and changes nothing; V(act) lets the guards decide.
    type: raw
    default: plan
  allow_units:
    description: The C(.service) units that may be restarted (exact names, checked against systemd's grammar).
    type: raw
    default: []
  audit_file:
    description:
      - The audit trail on the controller, one JSON line per decision. A relative path is taken against the
        directory C(ansible-playbook) runs in. Its directory must exist.
    type: raw
    required: true
  cooldown:
    description: Seconds after an action on a host for a rule during which that host and rule are not acted on again.
    type: raw
    default: 3600
  max_hosts:
    description: The most hosts acted on within O(window) seconds across the fleet (every rule, every run).
    type: raw
    default: 1
  window:
    description: Seconds of the blast-radius window.
    type: raw
    default: 3600
  settle:
    description: Seconds O(phase=prove) waits after the actions before gathering the proof.
    type: raw
    default: 10
  thresholds:
    description:
      - Threshold overrides by rule name, as M(netstate.tcp.health_check)'s
        O(netstate.tcp.health_check#module:thresholds).
    type: raw
    default: {}
  facts:
    description: Judge this C(netstate) document instead of gathering facts on the host.
    type: dict
  listeners:
    description: Judge these C(tcp_listen) entries (with C(unit)) instead of running M(netstate.tcp.listener_facts).
    type: list
    elements: dict
  decided:
    description: With O(phase=prove), the result O(phase=decide) registered.
    type: dict
  failed_action:
    description: With O(phase=prove), why the action failed (empty when it did not); its records get V(failed).
    type: str
    default: ""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.conn
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  become:
    support: full
    details: Only used for the fact modules it runs on the host.
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details:
      - In check mode every decision that would act is a plan entry held by V(check_mode); the audit line is written.
  connection:
    support: full
  delegation:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: linux
seealso:
  - module: netstate.tcp.health_check
  - module: netstate.tcp.listener_facts
"""

EXAMPLES = r"""
- name: Check the remediation inputs on the controller before any host is contacted
  netstate.tcp.remediation_guard:
    phase: validate
    rule: close_wait_per_port
    mode: act
    allow_units: [leaky-app.service]
    audit_file: remediation-audit.jsonl
  run_once: true
  delegate_to: localhost

- name: Decide with fresh facts what to do about CLOSE_WAIT on port 8080 (plan mode changes nothing)
  netstate.tcp.remediation_guard:
    phase: decide
    rule: close_wait_per_port
    port: 8080
    audit_file: remediation-audit.jsonl
  register: decided

- name: Show the decisions
  ansible.builtin.debug:
    msg: "{{ decided.summary }}"

- name: After the actions, gather again and record whether the symptom fell below its limit
  netstate.tcp.remediation_guard:
    phase: prove
    rule: close_wait_per_port
    port: 8080
    audit_file: remediation-audit.jsonl
    decided: "{{ decided }}"
"""

RETURN = r"""
records:
  description:
    - The audit records of this host (one per subject), as written to O(audit_file) - C(time), C(host), C(rule),
      C(subject), C(port), C(source), C(mode), C(check_mode), C(evidence_before) (C(value), C(limit), C(unit),
      C(status)), C(decision) (V(resolved), V(act), V(plan)), C(guard) (null or the guard that held the action),
      C(action) (C(kind), C(target)), C(result) (V(fixed), V(not_fixed), V(failed) or null), C(evidence_after)
      and C(reason).
    - With O(phase=decide) the records that act have no C(result) yet; O(phase=prove) returns them proven.
  returned: unless O(phase=validate)
  type: list
  elements: dict
actions:
  description: What the guards let through (C(kind), C(target), C(settings) for V(sysctl), C(record)).
  returned: when O(phase=decide)
  type: list
  elements: dict
  sample: [{kind: restart_unit, target: leaky-app.service}]
summary:
  description: One line per record for the job output, every host-chosen part escaped.
  returned: unless O(phase=validate)
  type: list
  elements: str
msg:
  description: The summary lines joined, or what was validated.
  returned: always
  type: str
remediation:
  description: The rule's remediation kind (V(restart_unit), V(sysctl), V(tuning_profile) or V(plan)).
  returned: when O(phase=validate)
  type: str
  sample: restart_unit
"""
