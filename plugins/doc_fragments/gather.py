# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Options of the fact modules. Their choices, ranges and defaults are those of the options contract,
    plugins/module_utils/_engine/_argspec.py, written out: ansible-test's documentation checks read string literals
    only. tests/unit/plugins/module_utils/_engine/test_argspec.py keeps the two in agreement."""

    # namespace and backend: connection_facts and listener_facts (_argspec.SOCKET_SOURCE)
    DOCUMENTATION = r"""
options:
  namespace:
    description:
      - The network namespace to read. Unset or V(host) means the module's own namespace.
      - A name under C(/run/netns) (as made by C(ip netns add)), V(pid:N) for the namespace of process N, or an
        absolute path to a namespace file such as C(/proc/1234/ns/net).
      - V(all) (M(netstate.tcp.connection_facts) only) gathers the module's own namespace and then every other
        namespace found in C(/run/netns) and through C(/proc/*/ns/net); each one is a full document in
        C(ansible_facts.netstate.namespaces). Files of C(/run/netns) that are not namespaces (one being set up,
        or left behind by a stopped container runtime) are left out, and a namespace that goes away before it is
        read is left out with a warning.
      - Entering another namespace needs root (C(CAP_SYS_ADMIN)).
    type: str
  backend:
    description:
      - V(auto) uses netlink and falls back to C(/proc/net) when netlink is refused (with a warning).
      - V(netlink) fails instead of falling back; V(proc) reads C(/proc/net) only (which has no listener
        backlog, so C(backlog) is null).
    type: str
    choices: ["auto", "netlink", "proc"]
    default: "auto"
"""

    # gather_subset, top, sample_interval, max_sockets, local_ports_limit, listeners_limit: connection_facts
    # (_argspec.GATHER_SCOPE)
    COUNTS = r"""
options:
  gather_subset:
    description:
      - What to gather, like M(ansible.builtin.setup)'s O(ansible.builtin.setup#module:gather_subset).
      - V(states) (always gathered) counts sockets by state and family, and UDP sockets by family.
      - V(ports) adds RV(ansible_facts.netstate.tcp.local_ports), RV(ansible_facts.netstate.tcp.remote_ports) and
        RV(ansible_facts.netstate.tcp.ephemeral).
      - V(peers) adds RV(ansible_facts.netstate.tcp.peers).
      - V(listeners) adds RV(ansible_facts.netstate.listeners) with process, user and accept queue.
      - V(counters) adds RV(ansible_facts.netstate.counters) (sockstat, TcpExt, Tcp, TCP sysctls).
      - V(timers) adds RV(ansible_facts.netstate.tcp.timers), RV(ansible_facts.netstate.tcp.queues) and
        RV(ansible_facts.netstate.tcp.retransmitting), from the same pass over the socket table.
      - V(processes) adds RV(ansible_facts.netstate.processes); it reads every process's file descriptors.
      - V(sockets) adds the raw socket list RV(ansible_facts.netstate.sockets), at most O(max_sockets) entries.
      - V(routes) adds RV(ansible_facts.netstate.routes), every route of every routing table (rtnetlink).
      - V(multicast) adds RV(ansible_facts.netstate.multicast), the multicast groups joined per interface.
      - V(units) adds RV(ansible_facts.netstate.units), the TCP sockets of each systemd unit by state, from the
        kernel's cgroup id of each socket (or the process walk where the kernel gives none).
      - V(all) is every subset; V(default) is V(states), V(ports), V(peers), V(listeners), V(counters) and V(timers);
        V(min) is V(states). Prefix a name with V(!) to leave it out; a list of exclusions only starts from V(default).
    type: list
    elements: str
    default: ["default"]
  top:
    description:
      - How many entries RV(ansible_facts.netstate.tcp.peers), RV(ansible_facts.netstate.tcp.remote_ports),
        RV(ansible_facts.netstate.tcp.retransmitting) and C(send_ports) of RV(ansible_facts.netstate.tcp.queues)
        hold at most, busiest first.
      - "From V(1) to V(100000)."
    type: int
    default: 10
  sample_interval:
    description:
      - When above V(0), the kernel counters are read twice this many seconds apart and C(rates) in
        RV(ansible_facts.netstate.counters) holds the per-second rates of the cumulative ones.
      - "From V(0) to V(60) seconds."
    type: float
    default: 0
  max_sockets:
    description:
      - With the V(sockets) subset, the most raw sockets returned.
        RV(ansible_facts.netstate.sockets_truncated) says when there were more.
      - "V(0) or more."
    type: int
    default: 1000
  local_ports_limit:
    description:
      - How many listening ports RV(ansible_facts.netstate.tcp.local_ports) lists one by one. With more, it lists
        the O(local_ports_limit) ports with the most sockets and, for each state, the O(top) ports with the most
        sockets in that state (so per-port rules such as C(close_wait_per_port) see the worst port of every state);
        RV(ansible_facts.netstate.tcp.local_ports_rest) sums the other ports.
      - "V(1) or more."
    type: int
    default: 100
  listeners_limit:
    description:
      - How many listeners RV(ansible_facts.netstate.listeners) lists at most. With more, it lists the
        O(listeners_limit) with the fullest accept queues (C(queue / backlog), then C(queue), then the connections
        on their port), so the accept queue rules see the worst listeners; RV(ansible_facts.netstate.listeners_rest)
        sums the others. Only the listeners listed have their process looked up.
      - M(netstate.tcp.listener_facts) always lists every listener.
      - "V(1) or more."
    type: int
    default: 200
"""
