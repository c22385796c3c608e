# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.netstate.tcp.plugins.plugin_utils import _fleet_html as html_page
from ansible_collections.netstate.tcp.plugins.plugin_utils import _gather_report as gather_report

DOCUMENTATION = r"""
name: fleet_report
short_description: One row per host from netstate.tcp connection facts, worst host first
version_added: 0.1.0
description:
  - Turns the M(netstate.tcp.connection_facts) results of every host of a play into a fleet report, as data
    (for C(to_nice_json)), as Markdown or as an HTML page.
  - A row per host holds the TCP states, the busiest local port, the top peer, the fullest accept queue, the
    TIME_WAIT share of the ephemeral port range, the backend, and the host's C(pressure).
  - C(pressure) is the largest of four ratios, each the value of a built-in health rule (docs/health.md) over
    that rule's C(max), as M(netstate.tcp.health_check) evaluates it - C(accept_queue) (rule
    C(accept_queue_full), the fullest listener's queue over its backlog), C(time_wait_share) (rule
    C(time_wait_ephemeral_share), TIME_WAIT sockets towards the busiest destination over the ephemeral port
    range), C(close_wait) (rule C(close_wait_per_port), CLOSE_WAIT sockets on the worst listening port) and
    C(syn_recv) (rule C(syn_recv_total), half-open connections). No threshold is kept here; the rules file is
    the one place they live.
  - Each host's C(netstate_health_thresholds) (its host and group variables, as the health role reads them)
    overrides the rules for that host, over O(limits). A ratio whose rule is disabled, or has no C(max) above 0,
    is 0.
  - Every built-in rule is evaluated; a row also holds its C(verdict) (the worst status - V(error),
    V(critical), V(warning) or V(ok); for a host without facts its status) and C(violations) (rule name to
    C({count, status})).
  - Rows are sorted worst first - hosts that were unreachable, then hosts whose gathering failed, then by
    pressure, then by number of TCP sockets, then by name.
  - A host whose result says C(unreachable) (registered with C(ignore_unreachable)), or that has neither a
    result nor C(ansible_facts.netstate), is listed as unreachable.
  - The output has no time stamps, so the same facts give the same report.
author:
  - netstate.tcp contributors
positional: hostvars, result_var, limits, format
options:
  _input:
    description: Inventory names of the hosts to report, usually C(ansible_play_hosts_all).
    type: list
    elements: str
    required: true
  hostvars:
    description: The C(hostvars) of the play.
    type: dict
    required: true
  result_var:
    description:
      - Variable in which each host registered its M(netstate.tcp.connection_facts) result.
      - Hosts without it are read from their C(ansible_facts.netstate) (facts gathered by C(gather_facts) with
        C(FACTS_MODULES), or from a fact cache).
    type: str
    default: netstate_gather_result
  limits:
    description:
      - Where each pressure ratio reaches 1.0, by column (C(accept_queue), C(time_wait_share), C(close_wait),
        C(syn_recv)); a number above 0. Each is an override of the C(max) of the column's rule for every host;
        columns not given keep the rule's own C(max).
    type: dict
    default: {}
  format:
    description:
      - V(data) returns the report as a dictionary, V(markdown) as Markdown text, V(html) as the HTML fleet page
        (one self-contained file with inline SVG, worst host first, docs/fleet.md).
    type: str
    choices: [data, markdown, html]
    default: data
"""

EXAMPLES = r"""
- name: Gather connection facts, keep going when a host is unreachable
  netstate.tcp.connection_facts:
  register: netstate_gather_result
  ignore_unreachable: true
  ignore_errors: true

- name: Create the report directory where the user ran ansible-playbook
  ansible.builtin.file:
    path: "{{ 'reports' | netstate.tcp.controller_path }}"
    state: directory
    mode: "0755"
  run_once: true
  delegate_to: localhost

- name: Write the fleet report as JSON on the controller
  ansible.builtin.copy:
    content: "{{ ansible_play_hosts_all | netstate.tcp.fleet_report(hostvars) | to_nice_json }}\n"
    dest: "{{ 'reports' | netstate.tcp.controller_path }}/fleet-report.json"
    mode: "0644"
  run_once: true
  delegate_to: localhost

- name: Write the HTML fleet page
  ansible.builtin.copy:
    content: "{{ ansible_play_hosts_all | netstate.tcp.fleet_report(hostvars, format='html') }}"
    dest: "{{ 'reports' | netstate.tcp.controller_path }}/fleet-report.html"
    mode: "0644"
  run_once: true
  delegate_to: localhost

- name: Write it as Markdown, counting CLOSE_WAIT as pressure from 20 sockets on
  ansible.builtin.copy:
    content: "{{ ansible_play_hosts_all | netstate.tcp.fleet_report(hostvars, limits={'close_wait': 20},
      format='markdown') }}"
    dest: "{{ 'reports' | netstate.tcp.controller_path }}/fleet-report.md"
    mode: "0644"
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
_value:
  description: The report (O(format=data)), its Markdown text (O(format=markdown)) or its HTML page (O(format=html)).
  type: raw
  contains:
    title:
      description: Report title.
      type: str
    hosts:
      description: Number of hosts in the report.
      type: int
    gathered:
      description: Hosts with facts.
      type: int
    unreachable:
      description: Names of the hosts that could not be reached.
      type: list
      elements: str
    failed:
      description: Names of the hosts that were reached but whose gathering failed.
      type: list
      elements: str
    limits:
      description: The limits the pressure was computed with (the rules' maxima after O(limits)); a host's own
        thresholds are in its row's C(limits).
      type: dict
    rows:
      description:
        - One per host, worst first. C(status) is V(ok), V(failed) or V(unreachable); C(message) says why for
          the last two, whose other fields are null.
        - C(rank), C(host), C(status), C(message), C(pressure), C(worst) (which ratio gives the pressure),
          C(ratios), C(limits), C(backend), C(kernel), C(total), C(states) (all eleven), C(udp_total),
          C(busiest_port) (C({port, total, states})), C(top_peer) (C({address, total})),
          C(fullest_accept_queue) (C({address, port, queue, backlog, saturation, process})),
          C(time_wait_share), C(busiest_destination) (the fact C(tcp.ephemeral.busiest)), C(ephemeral_size),
          C(listen_overflows), C(listen_drops), C(verdict), C(violations).
      type: list
      elements: dict
"""

FORMATS = ("data", "markdown", "html")


def fleet_report(hosts: Any, hostvars: Any, result_var: str = "netstate_gather_result", limits: Any = None,
                 format: str = "data") -> Any:  # noqa: A002 - the documented option name
    if not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError("fleet_report: the input must be a list of host names, got %s"
                                 % type(hosts).__name__)
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("fleet_report: hostvars must be the play's hostvars, got %s"
                                 % type(hostvars).__name__)
    if format not in FORMATS:
        raise AnsibleFilterError("fleet_report: format must be %s, got %r" % (", ".join(FORMATS), format))
    try:
        report = gather_report.build_report(list(hosts), hostvars, result_var, limits)
    except gather_report.FleetReportError as error:
        raise AnsibleFilterError("fleet_report: %s" % error) from None
    if format == "markdown":
        return gather_report.render_markdown(report)
    if format == "html":
        return html_page.render(html_page.from_fleet_report(report))
    return report


class FilterModule:
    """netstate.tcp.fleet_report"""

    def filters(self):
        return {"fleet_report": fleet_report}
