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
    C(backlog), C(queue), C(connections) and C(unit), the systemd unit the process runs in.
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
  - netstate.tcp.gather
options:
  include_non_listening:
    description:
      - Also list the sockets that do not listen, as M(community.general.listen_ports_facts) does. Every TCP socket
        in any state goes into RV(ansible_facts.tcp_listen), every UDP socket into RV(ansible_facts.udp_listen), and
        each entry gains RV(ansible_facts.tcp_listen[].state) and RV(ansible_facts.tcp_listen[].foreign_address).
      - Sockets no process holds (TIME_WAIT, orphans) have null C(pid), C(name), C(user) and C(stime).
    type: bool
    default: false
  command:
    description:
      - Accepted for compatibility with M(community.general.listen_ports_facts), and ignored. This module reads the
        kernel's socket tables directly, so neither C(netstat) nor C(ss) needs to be installed, and the results are
        spelt the same whichever value is given (see RV(ansible_facts.tcp_listen[].state)).
    type: str
    choices: [netstat, ss]
notes:
  - Differences from M(community.general.listen_ports_facts), all on purpose. A process that cannot be read gives
    null C(pid), C(name) and C(stime) where community.general gives V(0) and empty strings. One entry per socket,
    with the lowest pid holding it, where C(ss) lists every process. Addresses are never cut short (C(netstat)
    truncates long IPv6 ones). A connected UDP socket keeps its state and process (community.general misreads
    C(netstat)'s line for it and gives no pid, name or state). The lists are sorted by port.
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

- name: Fail when a listener's accept queue is full (the kernel's test, queue beyond backlog)
  ansible.builtin.assert:
    that: item.queue <= item.backlog
    fail_msg: "{{ item.name }} on {{ item.address }}:{{ item.port }} has a full accept queue"
  loop: "{{ ansible_facts.tcp_listen }}"
  loop_control:
    label: "{{ item.address }}:{{ item.port }}"

- name: Gather every socket, as community.general.listen_ports_facts does with include_non_listening
  netstate.tcp.listener_facts:
    command: netstat          # accepted and ignored: nothing is run
    include_non_listening: true

- name: The systemd unit behind each listening port
  ansible.builtin.debug:
    msg: "{{ item.port }}: {{ item.unit }}"
  loop: "{{ ansible_facts.tcp_listen }}"
  loop_control:
    label: "{{ item.port }}"

- name: Connections stuck in CLOSE_WAIT, by process
  ansible.builtin.debug:
    msg: "{{ ansible_facts.tcp_listen | selectattr('state', 'equalto', 'CLOSE_WAIT') | map(attribute='name') | list }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    tcp_listen:
      description:
        - TCP sockets in LISTEN, sorted by port.
        - With O(include_non_listening=true), every TCP socket, sorted by port, a port's listeners first.
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
          description:
            - The process's start time as C(ps -o lstart) prints it (C(Sat Dec  5 12:04:54 2026), local time), the
              form community.general.listen_ports_facts gives, so plays written for it keep working; null when
              unreadable.
            - Deliberately not the ISO 8601 form netstate.tcp.connection_facts gives its listeners
              (C(2026-12-05T12:04:54)).
          returned: always
          type: str
          sample: Thu Nov 26 03:58:31 2026
        backlog:
          description:
            - The accept queue's maximum (ss's Send-Q of a listener); null with the proc backend.
            - Null for a socket that does not listen.
          returned: always
          type: int
          sample: 128
        queue:
          description:
            - Connections waiting in the accept queue now (ss's Recv-Q of a listener).
            - Null for a socket that does not listen.
          returned: always
          type: int
          sample: 0
        connections:
          description:
            - ESTABLISHED sockets on the listener's port.
            - Null for a socket that does not listen.
          returned: always
          type: int
          sample: 3
        unit:
          description:
            - "The systemd unit the process runs in, as C(systemctl status PID) and C(ps -o unit= PID) name it, read
              from C(/proc/PID/cgroup) (its C(name=systemd) line where cgroup v1 is mounted, else its cgroup v2
              C(0::) line): the first component after the slices when it is a unit name (C(nginx.service),
              C(session-4.scope), C(docker-3f2a.scope))."
            - Where the path names no unit, the cgroup path itself (V(/) at the root or inside a container with its
              own cgroup namespace, C(/docker/ID) under cgroupfs); null where the process is unknown.
            - Named by whoever can create a cgroup; bytes that are not UTF-8 are written as C(\xNN) and a
              backslash as C(\\), as in C(name).
          returned: always
          type: str
          sample: sshd.service
        state:
          description:
            - The socket's state, as C(netstat) and M(community.general.listen_ports_facts) spell it.
            - V(LISTEN), V(ESTABLISHED), V(SYN_SENT), V(SYN_RECV), V(FIN_WAIT1), V(FIN_WAIT2), V(TIME_WAIT),
              V(CLOSE), V(CLOSE_WAIT), V(LAST_ACK) or V(CLOSING).
          returned: if O(include_non_listening=true)
          type: str
          sample: ESTABLISHED
        foreign_address:
          description:
            - The remote end as C(netstat -n) prints it, C(ADDRESS:PORT), V(*) for no port; IPv6 without brackets,
              an IPv4-mapped IPv6 address as IPv4.
            - A listener's is the wildcard of its family, V(0.0.0.0:*) or V(:::*).
          returned: if O(include_non_listening=true)
          type: str
          sample: "198.18.0.5:43210"
    udp_listen:
      description:
        - Bound, unconnected UDP sockets, with the same keys; C(backlog), C(queue) and C(connections) are null.
        - With O(include_non_listening=true), every UDP socket; C(state) is V(UNCONN) (bound, unconnected) or
          V(ESTAB) (connected), the values M(community.general.listen_ports_facts) documents for UDP, and
          C(foreign_address) is as for RV(ansible_facts.tcp_listen[].foreign_address) (V(0.0.0.0:*) when unconnected).
      returned: always
      type: list
      elements: dict
      sample: [{address: 0.0.0.0, port: 53, protocol: udp, family: ipv4, pid: 500, name: dnsmasq,
                user: dnsmasq, stime: "Thu Nov 26 03:58:31 2026", backlog: null, queue: null, connections: null,
                unit: dnsmasq.service}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netstate.tcp.plugins.module_utils._engine._argspec import LISTENER_WALK, SOCKET_SOURCE
from ansible_collections.netstate.tcp.plugins.module_utils._exit import exit_facts
from ansible_collections.netstate.tcp.plugins.module_utils._listen_ports import gather_args, listen_ports_facts
from ansible_collections.netstate.tcp.plugins.module_utils._engine.engine import GatherError, gather


def main():
    module = AnsibleModule(
        argument_spec=dict(
            include_non_listening=dict(type="bool", default=False),
            # Accepted for compatibility with community.general.listen_ports_facts; nothing is run.
            command=dict(type="str", choices=["netstat", "ss"]),
            **SOCKET_SOURCE,
            **LISTENER_WALK
        ),
        supports_check_mode=True,
    )
    if module.params["namespace"] == "all":
        module.fail_json(msg="namespace: 'all' is not accepted by listener_facts; name one namespace")
    include_non_listening = module.params["include_non_listening"]
    namespace = module.params["namespace"]
    walk = dict(walk_budget=module.params["walk_budget"], walk_all_namespaces=module.params["walk_all_namespaces"])

    def gather_facts(warnings):
        facts = gather(namespace=namespace, backend=module.params["backend"], warnings=warnings,
                       **dict(gather_args(include_non_listening), **walk))
        return listen_ports_facts(facts, include_non_listening, warnings=warnings, namespace=namespace, **walk)

    exit_facts(module, gather_facts, GatherError, "listeners")


if __name__ == "__main__":
    main()
