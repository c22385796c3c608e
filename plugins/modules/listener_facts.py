#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: listener_facts
short_description: Listening TCP and UDP sockets with their process and accept queue
version_added: 0.1.0
description:
  - Sets RV(ansible_facts.tcp_listen) and RV(ansible_facts.udp_listen) with the keys of
    M(community.general.listen_ports_facts), so a play switches by changing one module name, plus C(family),
    C(backlog), C(queue) and C(connections).
  - Reads the socket table through netlink sock_diag (C(/proc/net) as fallback) and finds each listener's process
    through C(/proc/PID/fd); it runs no command and forks no C(ps).
  - Run as an unprivileged user, listeners whose process is unreadable have null C(pid), C(name) and C(stime)
    and the module warns once; C(user) is then the socket's owner.
author:
  - netstate.tcp developers (@netstate-tcp)
extends_documentation_fragment:
  - netstate.tcp.attributes
  - netstate.tcp.attributes.INFO_MODULE
  - netstate.tcp.attributes.FACTS
  - netstate.tcp.attributes.LINUX
  - netstate.tcp.listener_walk
options:
  namespace:
    description:
      - The network namespace to read, as for M(netstate.tcp.connection_facts)'s
        O(netstate.tcp.connection_facts#module:namespace) (a name under C(/run/netns), V(pid:N) or a path).
        V(all) is not accepted here.
    type: str
  backend:
    description:
      - V(auto) uses netlink and falls back to C(/proc/net) when netlink is refused.
      - V(netlink) fails instead; V(proc) reads C(/proc/net) only (C(backlog) is then null).
    type: str
    choices: [auto, netlink, proc]
    default: auto
  include_non_listening:
    description:
      - Kept for compatibility with M(community.general.listen_ports_facts); ignored, connected sockets are the
        business of M(netstate.tcp.connection_facts).
    type: bool
    default: false
seealso:
  - module: netstate.tcp.connection_facts
  - module: community.general.listen_ports_facts
"""

EXAMPLES = r"""
- name: Gather listening ports
  netstate.tcp.listener_facts:

- name: List the TCP ports something listens on
  ansible.builtin.debug:
    msg: "{{ ansible_facts.tcp_listen | map(attribute='port') | sort | unique | list }}"

- name: Fail when a listener's accept queue is full
  ansible.builtin.assert:
    that: item.queue < item.backlog
    fail_msg: "{{ item.name }} on {{ item.address }}:{{ item.port }} has a full accept queue"
  loop: "{{ ansible_facts.tcp_listen }}"
  loop_control:
    label: "{{ item.address }}:{{ item.port }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    tcp_listen:
      description: TCP sockets in LISTEN, sorted by port.
      returned: always
      type: list
      elements: dict
      contains:
        address:
          description: The address listened on.
          returned: always
          type: str
          sample: 0.0.0.0
        port:
          description: The port listened on.
          returned: always
          type: int
          sample: 22
        protocol:
          description: V(tcp).
          returned: always
          type: str
          sample: tcp
        family:
          description: V(ipv4) or V(ipv6).
          returned: always
          type: str
          sample: ipv4
        pid:
          description: The lowest pid holding the socket; null when unreadable.
          returned: always
          type: int
          sample: 812
        name:
          description: The process name (C(/proc/PID/comm)); null when unreadable.
          returned: always
          type: str
          sample: sshd
        user:
          description: The user running the process, or owning the socket when the process is unreadable.
          returned: always
          type: str
          sample: root
        stime:
          description: The process's start time as C(ps -o lstart) prints it; null when unreadable.
          returned: always
          type: str
          sample: Thu Nov 26 03:58:31 2026
        backlog:
          description: The accept queue's maximum (ss's Send-Q of a listener); null with the proc backend.
          returned: always
          type: int
          sample: 128
        queue:
          description: Connections waiting in the accept queue now (ss's Recv-Q of a listener).
          returned: always
          type: int
          sample: 0
        connections:
          description: ESTABLISHED sockets on the listener's port.
          returned: always
          type: int
          sample: 3
    udp_listen:
      description:
        - Bound, unconnected UDP sockets, with the same keys; C(backlog), C(queue) and C(connections) are null.
      returned: always
      type: list
      elements: dict
      sample: [{address: 0.0.0.0, port: 53, protocol: udp, family: ipv4, pid: 500, name: dnsmasq,
                user: dnsmasq, stime: "Thu Nov 26 03:58:31 2026", backlog: null, queue: null, connections: null}]
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netstate.tcp.plugins.module_utils import _escape as escape
from ansible_collections.netstate.tcp.plugins.module_utils._argspec import LISTENER_WALK
from ansible_collections.netstate.tcp.plugins.module_utils.engine import GatherError, gather, listen_facts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            namespace=dict(type="str"),
            backend=dict(type="str", default="auto", choices=["auto", "netlink", "proc"]),
            include_non_listening=dict(type="bool", default=False),
            **LISTENER_WALK
        ),
        supports_check_mode=True,
    )
    if module.params["namespace"] == "all":
        module.fail_json(msg="namespace: 'all' is not accepted by listener_facts; name one namespace")
    warnings = []
    try:
        facts = gather(subset=["listeners"], namespace=module.params["namespace"],
                       backend=module.params["backend"], walk_budget=module.params["walk_budget"],
                       walk_all_namespaces=module.params["walk_all_namespaces"], warnings=warnings)
    except GatherError as exc:
        module.fail_json(msg=escape.log_line(exc))
    except Exception as exc:  # a facts module must never end in a traceback
        module.fail_json(msg="unexpected error gathering listeners: %s" % escape.log_line(exc),
                         exception=traceback.format_exc())
    for warning in warnings:
        module.warn(escape.log_line(warning))
    module.exit_json(ansible_facts=listen_facts(facts))


if __name__ == "__main__":
    main()
