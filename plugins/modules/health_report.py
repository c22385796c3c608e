# -*- coding: utf-8 -*-
# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Documentation only: the work is done on the controller by plugins/action/health_report.py.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: health_report
short_description: Write one JUnit, JSON, Markdown and HTML report of netstate.tcp health results for a fleet
version_added: 0.1.0
description:
  - Collects the registered results of M(netstate.tcp.health_check) of every host in O(hosts) and writes, on the
    controller, into O(dest) - C(health.junit.xml), C(health.json), C(health.md) and C(health.html) (O(formats)).
  - With O(merge) instead of O(hosts), reads the C(health.json) of runs over parts of a fleet (the job slices of a
    sliced AWX job template, or C(--limit) runs) and writes the report of the whole fleet - the same files, to
    the byte, as one run over all their hosts.
  - "HTML: one self-contained page (no script, no external font or style sheet) with inline SVG, worst host first -
    per host its verdict, pressure, a stacked bar of its TCP states, the TIME_WAIT share of the ephemeral port
    range against the rule's limit, the fullest accept queue and its violations per rule."
  - "JUnit: a C(testsuite) per host and a C(testcase) per host and rule (C(classname) is the host, C(name) the
    rule). A violation at or above O(fail_on) is a C(failure) (C(type) is the severity); a lower violation passes
    with its message in C(system-out); a rule whose value was null is C(skipped); a rule that could not be
    evaluated, and every rule of a host that was unreachable or failed before the check, is an C(error)."
  - Runs once per play whatever host it is given to (it bypasses the host loop) and never connects to a host.
  - Output has no timestamps, so an unchanged fleet leaves the files unchanged (C(changed) is false).
  - C(changed) says that a verdict changed - a host's status, a rule's status or limit, the subject of a violation -
    as compared with the C(health.json) the previous run left in O(dest); a rule within its limit and one with no
    data to measure both pass, and a move between the two is no change. Measured values, messages and the hosts'
    snapshots are refreshed on every run without counting as a change (the check's own SSH sessions leave TIME_WAIT
    sockets behind). Without the V(json) format any change to a written file counts.
  - Names and messages a host chose (process and user names, rule subjects) are escaped for each format - no HTML,
    links or cell breaks from data in Markdown, only characters XML 1.0 allows in JUnit, control and
    bidirectional-override characters written as C(\xNN)/C(\uNNNN) (docs/reliability.md).
author:
  - netstate.tcp developers (@netstate-tcp)
options:
  hosts:
    description:
      - Hosts to report, usually V({{ ansible_play_hosts_all }}). A host without a registered result (skipped by
        an earlier failure or unreachable) is reported as unreachable.
      - One of O(hosts) and O(merge) is required.
    type: list
    elements: str
  merge:
    description:
      - C(health.json) reports of earlier runs over disjoint sets of hosts (a file, or a directory holding
        C(health.json)), to merge into one report. Relative paths are relative to the directory
        C(ansible-playbook) runs in.
      - The reports must have the same title and C(fail_on), which the merged report keeps (O(fail_on) and
        O(title) are not used); a host in two reports is an error naming both. O(result_var) is not used.
      - Mutually exclusive with O(hosts).
    type: list
    elements: path
  result_var:
    description: Name of the variable each host registered the M(netstate.tcp.health_check) result in.
    type: str
    default: netstate_health_result
  dest:
    description: Controller directory for the reports; created when missing. A relative path is relative to the
      directory C(ansible-playbook) runs in.
    type: path
    required: true
  formats:
    description: Which files to write.
    type: list
    elements: str
    choices: [html, json, junit, markdown]
    default: [junit, json, markdown]
  fail_on:
    description: Severity that fails a host when its result does not say (results of M(netstate.tcp.health_check)
      carry their own C(fail_on)).
    type: str
    choices: [warning, critical]
    default: critical
  rule_names:
    description: Rule names for hosts without results (unreachable hosts get one error testcase per rule). By default
      the names seen in the other hosts' results.
    type: list
    elements: str
    default: []
  title:
    description: Name of the JUnit C(testsuites) element and heading of the Markdown summary.
    type: str
    default: netstate.tcp health
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: full
  check_mode:
    support: full
    details: Reports whether the files would change and writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: netstate.tcp.health_check
"""

EXAMPLES = r"""
- name: Check every host, without failing yet
  netstate.tcp.health_check:
  register: netstate_health_result
  failed_when: false
  ignore_unreachable: true

- name: Write the fleet report once
  netstate.tcp.health_report:
    hosts: "{{ ansible_play_hosts_all }}"
    dest: reports/health
  register: health_report

- name: Show the summary table
  ansible.builtin.debug:
    msg: "{{ health_report.summary_lines }}"
  run_once: true

- name: Merge the reports of three job slices into the fleet's report
  netstate.tcp.health_report:
    merge: [slices/1, slices/2, slices/3]
    dest: reports/health
    formats: [junit, json, markdown, html]
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
paths:
  description: Format name to the file written.
  returned: always
  type: dict
  sample: {junit: /ci/reports/health/health.junit.xml, json: /ci/reports/health/health.json,
           markdown: /ci/reports/health/health.md, html: /ci/reports/health/health.html}
healthy:
  description: Every host passed.
  returned: always
  type: bool
  sample: false
totals:
  description: Number of hosts per outcome.
  returned: always
  type: dict
  sample: {passed: 2, failed: 1, error: 0, unreachable: 0}
hosts:
  description: Host name to its outcome (V(passed), V(failed), V(error), V(unreachable)).
  returned: always
  type: dict
  sample: {web1: failed, web2: passed}
markdown:
  description: The Markdown summary (the content of C(health.md)).
  returned: always
  type: str
summary_lines:
  description: RV(markdown) as a list of lines, for printing with M(ansible.builtin.debug).
  returned: always
  type: list
  elements: str
"""
