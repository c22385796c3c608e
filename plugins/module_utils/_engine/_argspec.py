# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: the options contract, the one place the gathering options are defined.

The TCP states, the gather subsets, the socket backends and the range and default of every
numeric option live here. The engine checks its arguments against them, the modules build their
argument specs from them, the collector (collect.py) its argparse, and the doc fragment
plugins/doc_fragments/gather.py its choices and ranges; tests/unit/roles/test_role_options.py
keeps the roles' argument specs and asserts in agreement. Plain Python, no ansible import,
Python 3.8: the collector runs it on monitored hosts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Every `states` dictionary of the facts holds these, zeros included, in the kernel's numbering
# (include/net/tcp_states.h: TCP_ESTABLISHED is 1 ... TCP_CLOSING is 11). NEW_SYN_RECV (12), a
# request socket, counts as SYN_RECV.
TCP_STATES = ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
              "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING")
# The states a connection to a peer can be in (a listener has no peer).
CONNECTION_STATES = tuple(state for state in TCP_STATES if state != "LISTEN")

# gather_subset: the subsets, and the names that stand for several of them (like setup's).
SUBSETS = ("states", "ports", "peers", "listeners", "counters", "timers", "processes", "sockets", "routes",
           "multicast", "units")
DEFAULT_SUBSET = ("states", "ports", "peers", "listeners", "counters", "timers")
SUBSET_GROUPS = {"all": SUBSETS, "default": DEFAULT_SUBSET, "min": ("states",)}

# Where the socket table is read: netlink sock_diag, falling back to /proc/net (auto), or only one.
BACKENDS = ("auto", "netlink", "proc")

# Inclusive ranges of the numeric options. None: no upper bound (a limit above what the host has
# changes nothing).
RANGES = {
    "top": (1, 100000),
    "sample_interval": (0, 60),
    "max_sockets": (0, None),
    "walk_budget": (0, None),
    "local_port": (1, 65535),
    "discovery_max_age": (1, 86400),
    "local_ports_limit": (1, None),
    "listeners_limit": (1, None),
}

DEFAULTS = {
    "gather_subset": ("default",),
    "top": 10,
    "sample_interval": 0,
    "backend": "auto",
    "max_sockets": 1000,
    "discovery_max_age": 900,
    "local_ports_limit": 100,
    # a port often has an IPv4 and an IPv6 listener, or one per SO_REUSEPORT worker
    "listeners_limit": 200,
}


def range_text(low, high=None):
    """An inclusive range as text: '1..100000', '0 or more' (high None)."""
    return "%s or more" % low if high is None else "%s..%s" % (low, high)


def describe_range(name):
    """RANGES[name] as text: '1..100000', '0 or more'."""
    return range_text(*RANGES[name])


# Argument specs (AnsibleModule's format) built from the tables above.

# plugins/doc_fragments/gather.py documents these (connection_facts, listener_facts).
SOCKET_SOURCE = dict(
    namespace=dict(type="str"),
    backend=dict(type="str", default=DEFAULTS["backend"], choices=list(BACKENDS)),
)

# What to gather and how much of it (connection_facts only); plugins/doc_fragments/gather.py (COUNTS) documents these.
GATHER_SCOPE = dict(
    gather_subset=dict(type="list", elements="str", default=list(DEFAULTS["gather_subset"])),
    top=dict(type="int", default=DEFAULTS["top"]),
    sample_interval=dict(type="float", default=DEFAULTS["sample_interval"]),
    max_sockets=dict(type="int", default=DEFAULTS["max_sockets"]),
    local_ports_limit=dict(type="int", default=DEFAULTS["local_ports_limit"]),
    listeners_limit=dict(type="int", default=DEFAULTS["listeners_limit"]),
)

# plugins/doc_fragments/listener_walk.py documents these.
LISTENER_WALK = dict(
    walk_budget=dict(type="int"),
    walk_all_namespaces=dict(type="bool", default=False),
)

# netstate.tcp.connection_facts's options: its argument spec, and the keys health_check's gather_args and
# the roles' netstate_gather_args / netstate_health_gather_args may hold.
CONNECTION_FACTS = dict(**GATHER_SCOPE, **SOCKET_SOURCE, **LISTENER_WALK)
