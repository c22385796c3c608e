# -*- coding: utf-8 -*-
# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Documentation only: the work is done on the controller by plugins/action/health_check.py.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: health_check
short_description: Gate on TCP health thresholds written as data
version_added: 0.1.0
description:
  - Evaluates health rules against C(ansible_facts.netstate) (the document set by M(netstate.tcp.connection_facts))
    on the controller and fails the host when a rule at or above O(fail_on) is violated, with one line per
    violation naming the rule, the subject (port, listener, destination) and the value.
  - A rule is C({name, query, max and/or min, severity, description, each, label}). O(rules[].query) is a
    JMESPath expression over C(ansible_facts.netstate); with O(rules[].each) it runs once per element of an
    object or list and the violation names that element.
  - JMESPath has no arithmetic; these functions are added for rules - V(div(a, b)), V(sub(a, b)),
    V(add(a, b)), V(mul(a, b)) (a null argument gives null, division by zero gives null) and
    V(format(template, value)) for labels (Python C(str.format) fields, for example V(format('{address}:{port}', @))).
  - Every rule, threshold override and O(fail_on) is validated before facts are used or gathered; an invalid rule
    fails with one error naming the rule and the field. A V(format) template is a literal string with plain field
    names (V({address}), V({}), V({0}); no attribute or index access) and widths and precisions of at most 1000.
  - Each rule is evaluated within a budget of time and of result size (O(budget)); a rule that runs out of it is
    an V(error) result naming the rule and the budget, and the host's other rules are still evaluated.
  - Uses C(ansible_facts.netstate) when the host already has it; otherwise runs M(netstate.tcp.connection_facts)
    on the host, sampled for O(sample_interval) seconds when a rule reads C(counters.rates).
  - The built-in rules and their thresholds are documented in C(docs/health.md) and
    C(plugins/plugin_utils/health_builtin_rules.yml).
author:
  - netstate.tcp developers (@netstate-tcp)
options:
  rules:
    description:
      - The rules to evaluate. When omitted, the built-in rules.
      - Give V([]) to evaluate only O(extra_rules).
    type: list
    elements: dict
    suboptions:
      name:
        description: Unique name, letters, digits, V(_), V(.), V(-); used in messages, reports and O(thresholds).
        type: str
        required: true
      query:
        description: JMESPath expression giving a number (or null, reported as no data).
        type: str
        required: true
      max:
        description: Violated when the value is above it. At least one of O(rules[].max) and O(rules[].min).
        type: float
      min:
        description: Violated when the value is below it.
        type: float
      severity:
        description: Severity of a violation.
        type: str
        choices: [warning, critical]
        default: critical
      description:
        description: What the rule means; shown in reports.
        type: str
      each:
        description:
          - JMESPath expression giving an object or a list; O(rules[].query) runs on each element.
          - For an object the key names the element; for a list O(rules[].label) does (default V(#index)).
        type: str
      label:
        description:
          - JMESPath expression naming the subject of a result. It runs on the list element, on the object key
            for an object O(rules[].each), or on the whole facts for a rule without O(rules[].each).
        type: str
      doc:
        description:
          - Not evaluated. What the docs say of the rule; the built-in rules' C(per) and C(text) are their rows of
            the table in C(docs/health.md).
        type: dict
      prometheus:
        description:
          - Not evaluated. The built-in rules' C(expr) and C(summary), from which C(scripts/generate_thresholds.py)
            writes the Prometheus alerts.
        type: dict
      zabbix:
        description:
          - Not evaluated. The built-in rules' C(macro), C(doc) and C(trigger), from which
            C(scripts/generate_thresholds.py) writes the Zabbix template's threshold macros and triggers.
        type: dict
      remediation:
        description:
          - Not evaluated here. What the P(netstate.tcp.remediate#role) role does about a violation - C(kind)
            (V(restart_unit), V(sysctl) with C(settings), V(tuning_profile) with C(profile), or V(plan)) and C(doc),
            its row of the table in C(docs/remediation.md). Validated with the rule.
        type: dict
  extra_rules:
    description: Rules appended to O(rules) (or to the built-ins). Same format as O(rules).
    type: list
    elements: dict
    default: []
  thresholds:
    description:
      - Rule name to new threshold. A number replaces O(rules[].max) (O(rules[].min) when the rule has only a
        minimum); a mapping sets any of C(max), C(min) (null removes that bound), C(severity), and C(enabled)
        (V(false) drops the rule).
      - An unknown rule name is an error.
    type: dict
    default: {}
  fail_on:
    description:
      - Lowest severity that fails the host. Results whose query cannot be evaluated (not a number, a type
        error) always fail the host.
    type: str
    choices: [warning, critical]
    default: critical
  facts:
    description: Evaluate this C(netstate) document instead of the host's facts (no connection to the host).
    type: dict
  gather:
    description:
      - V(auto) uses C(ansible_facts.netstate) when set and gathers otherwise; V(always) gathers fresh facts;
        V(never) fails when the host has no C(ansible_facts.netstate).
    type: str
    choices: [auto, always, never]
    default: auto
  gather_args:
    description: Extra options for M(netstate.tcp.connection_facts) when this action gathers (for example C(namespace)).
    type: dict
    default: {}
  sample_interval:
    description:
      - Seconds M(netstate.tcp.connection_facts) samples counters for when this action gathers and a rule reads
        C(counters.rates). Ignored when facts are already known.
    type: float
    default: 1.0
  validate_only:
    description:
      - Only validate O(rules), O(extra_rules), O(thresholds) and O(thresholds_by_host); never contacts the host.
      - Used by the P(netstate.tcp.health#role) role on localhost before any host is contacted.
    type: bool
    default: false
  thresholds_by_host:
    description:
      - With O(validate_only), host name to that host's O(thresholds), each validated against the rules.
    type: dict
  budget:
    description:
      - The evaluation budget of each rule and of the host; keys left out keep their default.
      - C(rule_seconds) (default V(0.5), from V(0.001) to V(60)) and C(host_seconds) (default V(5), from V(0.001) to
        V(3600)) bound the CPU time one rule and all rules of the host take on the controller.
      - C(rule_size) (default V(1000000), from V(1000) to V(100000000)) and C(host_size) (default V(10000000), from
        V(1000) to V(1000000000)) bound what the queries make, in characters of strings (V(to_string), V(join),
        V(format)) and elements of lists and objects, counted as if shared elements were copies.
      - A rule that runs out of its budget, or of what is left of the host's, is an V(error) result naming the rule
        and the budget (C(rule_seconds), C(host_seconds), C(rule_size) or C(host_size)); the next rules still run.
      - An unknown key or a value out of range fails before facts are used or gathered.
    type: dict
    version_added: 0.1.0
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
    details: Only used when the action runs M(netstate.tcp.connection_facts) on the host.
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: Only reads facts; check mode behaves the same as a normal run.
  connection:
    support: full
  delegation:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: linux
seealso:
  - module: netstate.tcp.connection_facts
  - module: netstate.tcp.health_report
  - name: JMESPath specification
    description: The query language of rules.
    link: https://jmespath.org/specification.html
"""

EXAMPLES = r"""
- name: Gate on the built-in rules
  netstate.tcp.health_check:

- name: Gate on warnings too, with a lower CLOSE_WAIT limit on this host
  netstate.tcp.health_check:
    fail_on: warning
    thresholds:
      close_wait_per_port: 20
      syn_recv_total: {max: 1000, severity: critical}
      orphans_share: {enabled: false}

- name: Add a rule per remote port and collect results without failing
  netstate.tcp.health_check:
    extra_rules:
      - name: postgres_connections
        description: Client connections to PostgreSQL servers.
        query: tcp.remote_ports."5432".total
        max: 400
        severity: warning
      - name: listener_connections
        each: listeners[?protocol=='tcp']
        label: format('{address}:{port} ({process})', @)
        query: connections
        max: 10000
  register: health
  failed_when: false

- name: Validate rules on the controller only
  netstate.tcp.health_check:
    extra_rules: "{{ my_rules }}"
    validate_only: true
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
healthy:
  description: No rule violated at or above O(fail_on) and no rule failed to evaluate.
  returned: unless O(validate_only)
  type: bool
  sample: false
msg:
  description: One line per violation at or above O(fail_on) after a heading line, or a one-line summary.
  returned: always
  type: str
  sample: |-
    1 health rule violation(s) at or above critical:
    critical: close_wait_per_port [port 8080]: 5000 > max 20
rules:
  description: Names of the effective rules, in evaluation order.
  returned: always
  type: list
  elements: str
  sample: [time_wait_ephemeral_share, close_wait_per_port]
rule_definitions:
  description: The effective rules after O(thresholds), as mappings.
  returned: when O(validate_only)
  type: list
  elements: dict
results:
  description:
    - Every rule's result. A rule without O(rules[].each) gives one; a rule with O(rules[].each) gives one per
      violating element, or one for its worst element when none violates.
  returned: unless O(validate_only)
  type: list
  elements: dict
  contains:
    name:
      description: Rule name.
      type: str
      sample: close_wait_per_port
    value:
      description: The query's value; null when the facts did not hold it.
      type: raw
      sample: 5000
    threshold:
      description: The bound compared against (the violated one, or C(max) when both hold).
      type: float
      sample: 100
    bound:
      description: Which bound RV(results[].threshold) is.
      type: str
      sample: max
    severity:
      description: The rule's severity.
      type: str
      sample: critical
    ok:
      description: True for C(ok) and C(no_data).
      type: bool
      sample: false
    status:
      description: V(ok), V(no_data) (null value), V(warning), V(critical) (violated, by severity) or V(error).
      type: str
      sample: critical
    subject:
      description: The element named by O(rules[].label) or the object key; null for a rule without a subject.
      type: str
      sample: port 8080
    message:
      description: One line naming status, rule, subject and value.
      type: str
      sample: "critical: close_wait_per_port [port 8080]: 5000 > max 20"
violations:
  description: The results that are not ok (any severity, and errors).
  returned: unless O(validate_only)
  type: list
  elements: dict
summary:
  description: Number of results per status.
  returned: unless O(validate_only)
  type: dict
  sample: {ok: 6, no_data: 0, warning: 1, critical: 1, error: 0}
snapshot:
  description:
    - What the fleet reports show of the host (M(netstate.tcp.health_report) puts it into C(health.json) and
      draws the HTML page from it) - C(total), C(states), C(busiest_port), C(top_peer), C(fullest_accept_queue),
      C(time_wait_share), C(busiest_destination), C(ephemeral_size), C(backend), C(kernel), C(udp_total),
      C(listen_overflows), C(listen_drops), and the pressure - C(ratios) (per column, the value of the rules
      C(accept_queue_full), C(time_wait_ephemeral_share), C(close_wait_per_port) and C(syn_recv_total) over
      their max, as evaluated here), C(limits) (those maxima), C(pressure) (the largest ratio) and C(worst).
  returned: unless O(validate_only)
  type: dict
facts_source:
  description: V(host_facts), V(gathered) or V(argument).
  returned: unless O(validate_only)
  type: str
  sample: gathered
fail_on:
  description: The O(fail_on) used.
  returned: unless O(validate_only)
  type: str
  sample: critical
"""
