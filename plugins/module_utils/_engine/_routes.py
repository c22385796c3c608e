# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The routes and multicast groups subsets: rtnetlink route dumps and /proc/net/igmp{,6} as facts."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from . import _procfs as procfs
from . import _rtnetlink as rtnetlink
from ._aggregate import FAMILIES
from ._netlink import DUMP_ATTEMPTS
from ._options import GatherError


def parse_route_messages(messages, tables=None, protocols=None, interface_name=None):
    """RTM_NEWROUTE payloads -> route dicts (docs/facts-contract.md); GatherError names the bad message."""
    routes = []
    for number, data in enumerate(messages, 1):
        try:
            route = rtnetlink.parse_route(data, tables, protocols, interface_name)
        except rtnetlink.RouteFormatError as exc:
            raise GatherError("routes: rtnetlink RTM_NEWROUTE message %d: %s" % (number, exc))
        if route is not None:
            routes.append(route)
    return routes


def read_routes(etc="/etc/iproute2"):
    tables = rtnetlink.read_names(os.path.join(etc, "rt_tables"), rtnetlink.TABLES)
    protocols = rtnetlink.read_names(os.path.join(etc, "rt_protos"), rtnetlink.PROTOCOLS)
    last = None
    for _attempt in range(DUMP_ATTEMPTS):
        try:
            messages = [data for family, _label in FAMILIES for data in rtnetlink.dump_routes(family)]
        except rtnetlink.RouteDumpInterrupted as exc:
            last = exc
            continue
        except rtnetlink.RouteDumpError as exc:
            raise GatherError("routes: %s" % exc)
        return parse_route_messages(messages, tables, protocols)
    raise GatherError("routes: rtnetlink dump interrupted %d times in a row (%s)" % (DUMP_ATTEMPTS, last))


def parse_multicast(text, source, family):
    """/proc/net/igmp (family ipv4) or igmp6 (ipv6) text -> [{interface, family, group, users}]."""
    try:
        rows = procfs.parse_igmp(text) if family == "ipv4" else procfs.parse_igmp6(text)
    except procfs.ProcFormatError as exc:
        raise GatherError("%s: %s" % (source, exc))
    return [{"interface": interface, "family": family, "group": group, "users": users}
            for interface, group, users in rows]


def read_multicast(proc):
    groups = []
    for name, family in (("igmp", "ipv4"), ("igmp6", "ipv6")):
        path = os.path.join(proc, "net", name)
        try:
            text = procfs.read_text(path)
        except (IOError, OSError):
            continue  # a kernel without that family
        groups += parse_multicast(text, path, family)
    return groups
