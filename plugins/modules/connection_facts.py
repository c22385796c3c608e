#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: connection_facts
short_description: TCP and UDP connection facts from the kernel's socket tables
version_added: 0.1.0
description:
  - Counts every TCP socket by state, family, local port, remote port and peer address, by pending kernel timer,
    sums receive and send queues and finds the peers being retransmitted to, lists listeners with their process
    and accept queue, and reads the kernel's TCP counters, in one pass over the socket table.
  - On request also reads every routing table through rtnetlink and the multicast groups of every interface.
  - Reads the socket table through netlink C(NETLINK_SOCK_DIAG) (C(inet_diag_req_v2); the TCP connections of both
    families in one C(inet_diag_req)) and falls back to
    C(/proc/net/tcp), C(/proc/net/tcp6), C(/proc/net/udp) and C(/proc/net/udp6) when netlink is refused.
    Routes come from C(RTM_GETROUTE) dumps, multicast groups from C(/proc/net/igmp) and C(/proc/net/igmp6).
  - Needs nothing but Python on the target. Runs as an unprivileged user too; then the process of a listener is
    unknown where its file descriptors are unreadable, and the module warns once.
  - Every C(states) dictionary in the result holds all eleven TCP states, zeros included; C(NEW_SYN_RECV)
    request sockets are counted as C(SYN_RECV).
  - Can be listed in C(FACTS_MODULES) next to M(ansible.builtin.setup); it then takes its options from
    C(module_defaults).
author:
  - netstate.tcp developers (@netstate-tcp)
extends_documentation_fragment:
  - netstate.tcp.attributes
  - netstate.tcp.attributes.INFO_MODULE
  - netstate.tcp.attributes.FACTS
  - netstate.tcp.attributes.LINUX
  - netstate.tcp.listener_walk
  - netstate.tcp.gather
  - netstate.tcp.gather.COUNTS
notes:
  - The fact document is a public contract; M(netstate.tcp.listener_facts), the health rules, the fleet report and
    the collector for monitoring agents all read the same shape.
  - The listeners' processes are found through C(/proc/PID/fd); the walk stops as soon as every listener is
    found or O(walk_budget) is spent, unless O(gather_subset) includes V(processes), which reads every descriptor.
seealso:
  - module: netstate.tcp.listener_facts
  - module: community.general.listen_ports_facts
"""

EXAMPLES = r"""
- name: Gather TCP connection facts
  netstate.tcp.connection_facts:

- name: Show the state counts
  ansible.builtin.debug:
    var: ansible_facts.netstate.tcp.states

- name: Count connections on port 80 exactly (not 8080, not addresses containing 80)
  ansible.builtin.debug:
    msg: "{{ ansible_facts.netstate.tcp.local_ports['80'].total | default(0) }}"

- name: Gather counters with rates over two seconds, and the per-process view
  netstate.tcp.connection_facts:
    gather_subset: [default, processes]
    sample_interval: 2

- name: Gather the routing tables and multicast groups as well
  netstate.tcp.connection_facts:
    gather_subset: [default, routes, multicast]

- name: Count the TCP sockets of each systemd unit by state
  netstate.tcp.connection_facts:
    gather_subset: [default, units]

- name: Show the units with connections in CLOSE_WAIT
  ansible.builtin.debug:
    msg: "{{ ansible_facts.netstate.units | dict2items | selectattr('value.CLOSE_WAIT')
             | map(attribute='key') | list }}"

- name: Peers the host keeps retransmitting to
  ansible.builtin.debug:
    var: ansible_facts.netstate.tcp.retransmitting

- name: Gather from a named network namespace
  netstate.tcp.connection_facts:
    namespace: blue

- name: Gather from every network namespace on the host (containers included)
  netstate.tcp.connection_facts:
    namespace: all

# The play's own fact gathering can run it too: with ansible.cfg's
#   [defaults]
#   facts_modules = ansible.builtin.setup, netstate.tcp.connection_facts
# a play with `gather_facts: true` sets ansible_facts.netstate, with options from module_defaults:
#   - hosts: all
#     gather_facts: true
#     module_defaults:
#       netstate.tcp.connection_facts:
#         top: 5
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    netstate:
      description: The connection facts.
      returned: always
      type: dict
      contains:
        backend:
          description: Where the socket table was read, V(netlink) or V(proc).
          returned: always
          type: str
          sample: netlink
        namespace:
          description:
            - The network namespace gathered. Where the module gathers in its own namespace (no O(namespace), or
              the first document of O(namespace=all)), V(host) when that is the namespace of PID 1, its name when
              C(/run/netns) names it, V(self) otherwise.
          returned: always
          type: str
          sample: host
        kernel:
          description: The kernel release.
          returned: always
          type: str
          sample: 6.1.0-18-amd64
        duration_ms:
          description: How long gathering took, in milliseconds.
          returned: always
          type: float
          sample: 12.5
        gather_subset:
          description: The subsets gathered.
          returned: always
          type: list
          elements: str
          sample: [counters, listeners, peers, ports, states, timers]
        tcp:
          description: TCP sockets.
          returned: always
          type: dict
          contains:
            total:
              description: Number of TCP sockets in any state.
              returned: always
              type: int
              sample: 120
            states:
              description: Sockets per state; all eleven states, zeros included.
              returned: always
              type: dict
              sample: {ESTABLISHED: 100, SYN_SENT: 0, SYN_RECV: 0, FIN_WAIT1: 0, FIN_WAIT2: 2, TIME_WAIT: 10,
                       CLOSE: 0, CLOSE_WAIT: 5, LAST_ACK: 0, LISTEN: 3, CLOSING: 0}
            families:
              description: The same counts per address family, keys V(ipv4) and V(ipv6), each C({total, states}).
              returned: always
              type: dict
            local_ports:
              description:
                - One entry per port that has a TCP listener, keyed by the port number as a string; with more
                  listening ports than O(local_ports_limit), the O(local_ports_limit) busiest and, for each state,
                  the O(top) ports with the most sockets in it (the others are in
                  RV(ansible_facts.netstate.tcp.local_ports_rest)).
                - Each C({total, states}) counts every socket whose local port is that port (the server side,
                  TIME_WAIT and CLOSE_WAIT included, the listeners themselves as LISTEN).
              returned: when O(gather_subset) includes V(ports)
              type: dict
              sample: {"8080": {total: 58, states: {ESTABLISHED: 50, CLOSE_WAIT: 7, LISTEN: 1}}}
            local_ports_rest:
              description:
                - The listening ports RV(ansible_facts.netstate.tcp.local_ports) leaves out (more than
                  O(local_ports_limit)), summed - C(ports) how many, C(total) and C(states) their sockets.
                - C(ports) is V(0) and the counts are zero when RV(ansible_facts.netstate.tcp.local_ports) lists every
                  listening port.
              returned: when O(gather_subset) includes V(ports)
              type: dict
              sample: {ports: 1020, total: 1400, states: {ESTABLISHED: 300, TIME_WAIT: 80, LISTEN: 1020}}
            remote_ports:
              description:
                - The O(top) busiest remote ports of outgoing (client side) sockets, keyed by port as a string,
                  each C({total, states}).
              returned: when O(gather_subset) includes V(ports)
              type: dict
              sample: {"5432": {total: 20, states: {ESTABLISHED: 20}}}
            peers:
              description:
                - The O(top) remote addresses with the most non-LISTEN sockets, busiest first, each
                  C({address, total, states}). IPv4-mapped IPv6 addresses are shown as IPv4.
              returned: when O(gather_subset) includes V(peers)
              type: list
              elements: dict
              sample: [{address: 198.18.0.5, total: 40, states: {ESTABLISHED: 40}}]
            ephemeral:
              description:
                - The ephemeral port range and the destination that uses most of it.
                - C(range) is C(net.ipv4.ip_local_port_range) as two integers, C(size) the number of ports in it.
                - C(busiest) is the remote C({address, port}) with the most outgoing sockets, with C(connections),
                  C(time_wait) (how many of them are in TIME_WAIT) and C(share) (connections / size); null when
                  there is no outgoing socket. A share near 1 means new connections to that destination fail with
                  "cannot assign requested address".
              returned: when O(gather_subset) includes V(ports)
              type: dict
              sample: {range: [32768, 60999], size: 28232, busiest: {address: 198.18.0.5, port: 80,
                       connections: 900, time_wait: 850, share: 0.031879}}
            timers:
              description:
                - Non-LISTEN sockets by the kernel timer pending on them (C(idiag_timer), the C(tr) column of
                  C(/proc/net/tcp)); C(ss -o) prints them as C(on), C(keepalive), C(timewait) and C(persist).
                - C(retransmit) is armed whenever data is in flight, and while a SYN or SYN-ACK waits;
                  C(zero_window_probe) means data is queued and the peer advertises a zero receive window.
                - The five counts add up to C(total) minus the LISTEN sockets.
              returned: when O(gather_subset) includes V(timers)
              type: dict
              sample: {none: 90, retransmit: 3, keepalive: 12, time_wait: 10, zero_window_probe: 2}
            queues:
              description:
                - Over non-LISTEN sockets, C(recv_bytes) is data received and not yet read by the application
                  (the sum of ss Recv-Q) and C(send_bytes) data not yet acknowledged by the peer (Send-Q);
                  C(recv_sockets) and C(send_sockets) count the sockets whose queue is not empty.
                - C(send_ports) lists the O(top) service ports with the most queued bytes, each C({port, side,
                  sockets, bytes, stalled}); C(side) is V(local) for a port with a listener (the server side) and
                  V(remote) for the remote port of outgoing connections; C(stalled) counts the sockets whose peer
                  advertises a zero window (zero window probes) or does not acknowledge (retransmissions).
              returned: when O(gather_subset) includes V(timers)
              type: dict
              sample: {recv_bytes: 5120, send_bytes: 9000, recv_sockets: 2, send_sockets: 7,
                       send_ports: [{port: 7001, side: remote, sockets: 4, bytes: 8192, stalled: 4}]}
            retransmitting:
              description:
                - The O(top) peers with the most sockets whose retransmit timer has fired (retransmit timer pending
                  and at least one retransmission of the oldest unacknowledged segment), each C({address, sockets,
                  retransmits}); C(retransmits) sums the retransmissions in a row of those sockets, which fall back
                  to 0 once the peer acknowledges. IPv4-mapped IPv6 addresses are shown as IPv4.
              returned: when O(gather_subset) includes V(timers)
              type: list
              elements: dict
              sample: [{address: 198.18.0.202, sockets: 5, retransmits: 17}]
        udp:
          description: UDP socket counts, C(total) and C(families) (V(ipv4), V(ipv6)).
          returned: always
          type: dict
          sample: {total: 4, families: {ipv4: 3, ipv6: 1}}
        listeners:
          description:
            - TCP sockets in LISTEN and bound, unconnected UDP sockets, sorted by protocol and port.
            - With more than O(listeners_limit) of them, the O(listeners_limit) with the fullest accept queues
              (C(saturation), then C(queue), then C(connections)); RV(ansible_facts.netstate.listeners_rest) sums the
              others. M(netstate.tcp.listener_facts) always lists every one.
            - C(queue) is the accept queue now and C(backlog) its maximum (ss's Recv-Q and Send-Q of a listener);
              C(saturation) is C(queue / backlog). All three are null for UDP; C(backlog) is null with the proc
              backend.
            - C(pid), C(process) and C(stime) are null where the process is unknown (not root);
              C(user) then is the socket's owner.
            - C(process) is the name the process gave itself (C(/proc/PID/comm), at most 15 bytes, any but NUL);
              bytes that are not UTF-8 are written as C(\xNN) and a backslash as C(\\), so two names that
              differ as bytes never read the same.
            - C(connections) counts ESTABLISHED sockets on the listener's port (null for UDP).
            - C(unit) is the systemd unit the process runs in, as C(systemctl status PID) names it, from
              C(/proc/PID/cgroup) (the C(name=systemd) line where cgroup v1 is mounted, else the cgroup v2 line);
              where the cgroup path names no unit, the path itself (V(/) inside a container with its own cgroup
              namespace); null where the process is unknown. Escaped as C(process) is.
          returned: when O(gather_subset) includes V(listeners)
          type: list
          elements: dict
          sample: [{protocol: tcp, family: ipv4, address: 0.0.0.0, port: 8080, backlog: 128, queue: 0,
                    saturation: 0.0, pid: 1234, process: nginx, user: www-data, stime: "2026-11-26T03:58:31",
                    unit: nginx.service, connections: 57}]
        listeners_rest:
          description:
            - The listeners RV(ansible_facts.netstate.listeners) leaves out (more than O(listeners_limit)), summed -
              C(tcp) and C(udp) how many, C(queue) the sum of their TCP accept queues, C(max_saturation) the highest
              C(queue / backlog) among them (null when none has a backlog).
            - All zero, and C(max_saturation) null, when RV(ansible_facts.netstate.listeners) lists every listener.
          returned: when O(gather_subset) includes V(listeners)
          type: dict
          sample: {tcp: 9800, udp: 0, queue: 0, max_saturation: 0.0}
        listener_walk:
          description:
            - How the walk that finds the listeners' processes went, C({descriptors_read, budget, time_budget_ms,
              walk_ms, unattributed, reason}). C(budget) is O(walk_budget); C(time_budget_ms) the time the walk
              could take when O(walk_budget) is unset; both are null when the V(processes) subset read every
              descriptor.
            - C(reason) is null when every listener was attributed, else V(budget) (O(walk_budget) was spent
              first), V(fd limit) (the walk ran out of file descriptors; the open-files soft limit, C(ulimit -n), is
              too small to read every process, and the warning says its value), V(unreadable) (some processes'
              descriptors could not be read, as when not root) or V(not held) (no process read holds them, as for a
              descriptor in flight over a unix socket, or a process of another namespace; see O(walk_all_namespaces)).
          returned: when O(gather_subset) includes V(listeners)
          type: dict
          sample: {descriptors_read: 412, budget: null, time_budget_ms: 100.0, walk_ms: 1.6, unattributed: 0,
                   reason: null}
        counters:
          description:
            - C(sockstat) from C(/proc/net/sockstat) and C(/proc/net/sockstat6) as C(<LINE>_<field>), for example
              C(TCP_tw) and C(TCP_orphan).
            - C(TcpExt) from C(/proc/net/netstat) and C(Tcp) from C(/proc/net/snmp), named as the kernel names them.
            - C(sysctl) holds the TCP settings rules need (C(tcp_max_orphans), C(somaxconn),
              C(tcp_max_tw_buckets), C(tcp_tw_reuse), C(tcp_timestamps), C(tcp_fin_timeout),
              C(tcp_max_syn_backlog), C(tcp_syncookies), C(tcp_abort_on_overflow)); null where C(/proc/sys) does
              not show the key, as for global keys inside a network namespace.
            - With O(sample_interval) also C(interval) (seconds measured) and C(rates) (per second, C(TcpExt) and
              the cumulative C(Tcp) counters).
          returned: when O(gather_subset) includes V(counters)
          type: dict
          sample: {sockstat: {TCP_inuse: 3, TCP_tw: 10}, TcpExt: {ListenOverflows: 0}, Tcp: {ActiveOpens: 10},
                   sysctl: {tcp_max_orphans: 65536}}
        processes:
          description:
            - Per process name, C(count) (instances), C(pids) and C(connections) (C({total, states}) of the TCP
              sockets its processes hold, each socket once).
          returned: when O(gather_subset) includes V(processes)
          type: dict
          sample: {nginx: {count: 5, pids: [100, 101], connections: {total: 57, states: {ESTABLISHED: 57}}}}
        units:
          description:
            - "TCP sockets (LISTEN included) by the systemd unit that owns them and state, C({UNIT: {STATE: count}}),
              every state zero-filled; units named as in RV(ansible_facts.netstate.listeners), a cgroup path where
              none is named."
            - The owner is the cgroup the socket was created in, which the kernel puts in each sock_diag reply
              (C(INET_DIAG_CGROUP_ID), kernel 5.7 and later; C(ss --cgroup) shows it), named by finding that id among
              the directories of the cgroup v2 mount (at most 20,000 read). An accepted connection belongs to its
              listener's cgroup.
            - Where the kernel gives no cgroup id (an older kernel, the proc backend) or no cgroup v2 file system is
              mounted, the unit of the process holding the socket (the walk of C(/proc/PID/fd)) instead, with a
              warning; sockets neither way names are left out with a warning, and V({}) when none is named.
            - TIME_WAIT and request (SYN_RECV) sockets belong to no process nor cgroup and are not counted.
          returned: when O(gather_subset) includes V(units)
          type: dict
          sample: {nginx.service: {ESTABLISHED: 57, LISTEN: 2, CLOSE_WAIT: 1}, /: {ESTABLISHED: 1}}
        sockets:
          description:
            - Raw sockets, TCP then UDP, each C({protocol, family, state, local_address, local_port,
              remote_address, remote_port, recv_q, send_q, inode, uid}), at most O(max_sockets).
          returned: when O(gather_subset) includes V(sockets)
          type: list
          elements: dict
        sockets_truncated:
          description: Whether there were more sockets than O(max_sockets).
          returned: when O(gather_subset) includes V(sockets)
          type: bool
        routes:
          description:
            - Every route of every routing table, IPv4 then IPv6, as the kernel dumps them (C(ip route show table
              all)), each C({family, table, destination, gateway, interface, source, metric, protocol, scope, type,
              nexthops}).
            - C(destination) is always CIDR (V(0.0.0.0/0) for a default route, V(/32) or V(/128) for a host route).
              C(table), C(protocol), C(scope) and C(type) are named as C(ip route) names them (C(table) from
              C(/etc/iproute2/rt_tables), C(protocol) from C(rt_protos)), or the number as a string.
            - C(source) is the preferred source address; C(metric) is V(0) when the route has none;
              C(nexthops) lists C({gateway, interface, weight}) of a multipath route and is empty otherwise.
            - A host with a full Internet routing table returns every one of its routes.
          returned: when O(gather_subset) includes V(routes)
          type: list
          elements: dict
          sample: [{family: ipv4, table: main, destination: 0.0.0.0/0, gateway: 198.18.0.1, interface: eth0,
                    source: null, metric: 100, protocol: boot, scope: global, type: unicast, nexthops: []}]
        multicast:
          description:
            - The multicast groups joined on each interface, IPv4 (C(/proc/net/igmp)) then IPv6
              (C(/proc/net/igmp6)), each C({interface, family, group, users}); C(users) counts the sockets and
              kernel users that joined the group on that interface.
          returned: when O(gather_subset) includes V(multicast)
          type: list
          elements: dict
          sample: [{interface: eth0, family: ipv4, group: 239.1.2.3, users: 2}]
        namespaces:
          description: With O(namespace=all), one full document like this one per other network namespace, each
            labelled in C(namespace) (its name, or V(pid:N)).
          returned: when O(namespace=all)
          type: list
          elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netstate.tcp.plugins.module_utils._engine._argspec import CONNECTION_FACTS
from ansible_collections.netstate.tcp.plugins.module_utils._exit import exit_facts
from ansible_collections.netstate.tcp.plugins.module_utils._engine.engine import GatherError, gather


def main():
    module = AnsibleModule(
        argument_spec=CONNECTION_FACTS,
        supports_check_mode=True,
    )
    params = module.params

    def gather_facts(warnings):
        facts = gather(gather_subset=params["gather_subset"], top=params["top"],
                       sample_interval=params["sample_interval"], namespace=params["namespace"],
                       backend=params["backend"], max_sockets=params["max_sockets"],
                       walk_budget=params["walk_budget"], walk_all_namespaces=params["walk_all_namespaces"],
                       local_ports_limit=params["local_ports_limit"], listeners_limit=params["listeners_limit"],
                       warnings=warnings)
        return {"netstate": facts}

    exit_facts(module, gather_facts, GatherError, "connection facts")


if __name__ == "__main__":
    main()
