# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.netstate.tcp.plugins.module_utils._argspec import (
    BACKENDS,
    DEFAULTS,
    RANGES,
    SUBSET_GROUPS,
    SUBSETS,
)

# What each subset adds, in the order of _argspec.SUBSETS (tests/unit/plugins/module_utils/test_argspec.py checks
# that every subset is here).
SUBSET_DESCRIPTIONS = {
    "states": "V(states) (always gathered) counts sockets by state and family, and UDP sockets by family.",
    "ports": "V(ports) adds RV(ansible_facts.netstate.tcp.local_ports), RV(ansible_facts.netstate.tcp.remote_ports) "
             "and RV(ansible_facts.netstate.tcp.ephemeral).",
    "peers": "V(peers) adds RV(ansible_facts.netstate.tcp.peers).",
    "listeners": "V(listeners) adds RV(ansible_facts.netstate.listeners) with process, user and accept queue.",
    "counters": "V(counters) adds RV(ansible_facts.netstate.counters) (sockstat, TcpExt, Tcp, TCP sysctls).",
    "timers": "V(timers) adds RV(ansible_facts.netstate.tcp.timers), RV(ansible_facts.netstate.tcp.queues) and "
              "RV(ansible_facts.netstate.tcp.retransmitting), from the same pass over the socket table.",
    "processes": "V(processes) adds RV(ansible_facts.netstate.processes); it reads every process's file "
                 "descriptors.",
    "sockets": "V(sockets) adds the raw socket list RV(ansible_facts.netstate.sockets), at most O(max_sockets) "
               "entries.",
    "routes": "V(routes) adds RV(ansible_facts.netstate.routes), every route of every routing table (rtnetlink).",
    "multicast": "V(multicast) adds RV(ansible_facts.netstate.multicast), the multicast groups joined per interface.",
}


def _values(names):
    """V(a), V(b) and V(c)."""
    marked = ["V(%s)" % name for name in names]
    return marked[0] if len(marked) == 1 else "%s and %s" % (", ".join(marked[:-1]), marked[-1])


def _groups():
    parts = []
    for group, members in SUBSET_GROUPS.items():
        parts.append("V(%s) is %s" % (group, "every subset" if members == SUBSETS else _values(members)))
    return "; ".join(parts) + ". Prefix a name with V(!) to leave it out; a list of exclusions only starts from " \
        "V(default)."


def _range(name, unit=""):
    low, high = RANGES[name]
    if high is None:
        return "V(%s) or more%s." % (low, unit)
    return "From V(%s) to V(%s)%s." % (low, high, unit)


def _yaml(value):
    # JSON is YAML: every value below is quoted exactly as Python holds it.
    return json.dumps(value)


class ModuleDocFragment(object):
    """Options of the fact modules, with choices, ranges and defaults from plugins/module_utils/_argspec.py."""

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
        C(ansible_facts.netstate.namespaces).
      - Entering another namespace needs root (C(CAP_SYS_ADMIN)).
    type: str
  backend:
    description:
      - V(auto) uses netlink and falls back to C(/proc/net) when netlink is refused (with a warning).
      - V(netlink) fails instead of falling back; V(proc) reads C(/proc/net) only (which has no listener
        backlog, so C(backlog) is null).
    type: str
    choices: %(backends)s
    default: %(backend)s
""" % {"backends": _yaml(list(BACKENDS)), "backend": _yaml(DEFAULTS["backend"])}

    # gather_subset, top, sample_interval and max_sockets: connection_facts (_argspec.COUNTS)
    COUNTS = r"""
options:
  gather_subset:
    description: %(subset)s
    type: list
    elements: str
    default: %(subset_default)s
  top:
    description:
      - How many entries RV(ansible_facts.netstate.tcp.peers), RV(ansible_facts.netstate.tcp.remote_ports),
        RV(ansible_facts.netstate.tcp.retransmitting) and C(send_ports) of RV(ansible_facts.netstate.tcp.queues)
        hold at most, busiest first.
      - %(top_range)s
    type: int
    default: %(top)s
  sample_interval:
    description:
      - When above V(0), the kernel counters are read twice this many seconds apart and C(rates) in
        RV(ansible_facts.netstate.counters) holds the per-second rates of the cumulative ones.
      - %(sample_range)s
    type: float
    default: %(sample_interval)s
  max_sockets:
    description:
      - With the V(sockets) subset, the most raw sockets returned.
        RV(ansible_facts.netstate.sockets_truncated) says when there were more.
      - %(max_sockets_range)s
    type: int
    default: %(max_sockets)s
""" % {
        "subset": _yaml(["What to gather, like M(ansible.builtin.setup)'s "
                         "O(ansible.builtin.setup#module:gather_subset)."]
                        + [SUBSET_DESCRIPTIONS[name] for name in SUBSETS] + [_groups()]),
        "subset_default": _yaml(list(DEFAULTS["gather_subset"])),
        "top_range": _yaml(_range("top")),
        "top": _yaml(DEFAULTS["top"]),
        "sample_range": _yaml(_range("sample_interval", " seconds")),
        "sample_interval": _yaml(DEFAULTS["sample_interval"]),
        "max_sockets_range": _yaml(_range("max_sockets")),
        "max_sockets": _yaml(DEFAULTS["max_sockets"]),
    }
