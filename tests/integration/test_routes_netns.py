# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Subsets routes and multicast against `ip -j route show table all` and `ip -j maddr show`.

A private namespace gets a veth pair (both ends inside), addresses of both families, routes
in several tables (gateways, metrics, a multipath route, blackhole, unreachable, prohibit,
throw, IPv6), and multicast groups joined by real sockets (IP_ADD_MEMBERSHIP,
IPV6_JOIN_GROUP), one of them twice so its user count is 2.
"""

import json
import socket
import struct

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
from tests.support.waiting import wait_for

pytestmark = pytest.mark.netns

ROUTES = [
    ["-4", "route", "add", "default", "via", "198.18.0.1", "dev", "rt0", "metric", "100"],
    ["-4", "route", "add", "203.0.113.0/24", "via", "198.18.0.2", "table", "100", "proto", "static"],
    ["-4", "route", "add", "203.0.113.7", "dev", "rt0", "table", "100"],
    ["-4", "route", "add", "blackhole", "192.0.2.0/24", "table", "100"],
    ["-4", "route", "add", "unreachable", "198.51.100.0/24", "metric", "7"],
    ["-4", "route", "add", "prohibit", "198.51.100.128/25", "table", "200"],
    ["-4", "route", "add", "throw", "198.51.100.64/26", "table", "200"],
    ["-4", "route", "add", "198.18.0.64/26", "dev", "rt0", "src", "198.18.0.9", "scope", "link", "proto", "42"],
    ["-4", "route", "add", "203.0.114.0/24", "nexthop", "via", "198.18.0.2", "weight", "1",
     "nexthop", "via", "198.18.0.3", "weight", "3"],
    ["-6", "route", "add", "2001:db8:2::/48", "via", "2001:db8:1::1", "metric", "300"],
    ["-6", "route", "add", "default", "via", "2001:db8:1::1", "dev", "rt0"],
    ["-6", "route", "add", "blackhole", "2001:db8:3::/48", "table", "100"],
    ["-6", "route", "add", "unreachable", "2001:db8:4::/48", "table", "200", "metric", "5"],
]
V4_GROUPS = ["239.1.2.3", "239.1.2.4"]
V6_GROUPS = ["ff15::1:2", "ff15::1:3"]


@pytest.fixture
def routed_ns(netns):
    # No duplicate address detection: link-local addresses (and their local routes and groups) are
    # there at once, not a second later in the middle of a comparison.
    for scope in ("all", "default"):
        netns.sysctl("net.ipv6.conf.%s.accept_dad" % scope, 0)
    netns.run(["ip", "link", "add", "rt0", "type", "veth", "peer", "name", "rt1"])
    for name in ("rt0", "rt1"):
        netns.run(["ip", "link", "set", name, "up"])
    netns.run(["ip", "addr", "add", "198.18.0.9/28", "dev", "rt0"])
    netns.run(["ip", "-6", "addr", "add", "2001:db8:1::9/64", "dev", "rt0", "nodad"])
    for command in ROUTES:
        netns.run(["ip"] + command)
    held = []
    with procfs.NetNamespace(netns.path):
        index = socket.if_nametoindex("rt0")
        for group, times in ((V4_GROUPS[0], 2), (V4_GROUPS[1], 1)):
            for _time in range(times):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("=i", index))
                held.append(sock)
        for group, times in ((V6_GROUPS[0], 1), (V6_GROUPS[1], 2)):
            for _time in range(times):
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                                socket.inet_pton(socket.AF_INET6, group) + struct.pack("=I", index))
                held.append(sock)
    wait_for("IPv6 duplicate address detection ends in %s" % netns.name,
             lambda: not netns.run(["ip", "-6", "addr", "show", "tentative"]).stdout.strip(), 10, interval=0.1)
    try:
        yield netns
    finally:
        for sock in held:
            sock.close()


def ip_routes(ns):
    """The oracle: ip's JSON, with what ip leaves out at its default spelled out."""
    result = []
    for flag, family, everything in (("-4", "ipv4", "0.0.0.0/0"), ("-6", "ipv6", "::/0")):
        for row in json.loads(ns.run(["ip", "-j", flag, "route", "show", "table", "all"]).stdout):
            destination = row["dst"]
            if destination == "default":
                destination = everything
            elif "/" not in destination:
                destination += "/32" if family == "ipv4" else "/128"
            gateway = row.get("gateway") or (row.get("via") or {}).get("host")
            result.append({
                "family": family, "table": row.get("table", "main"), "destination": destination,
                "gateway": gateway, "interface": row.get("dev"), "source": row.get("prefsrc"),
                "metric": row.get("metric", 0), "protocol": row.get("protocol", "boot"),
                "scope": row.get("scope", "global"), "type": row.get("type", "unicast"),
                "nexthops": [{"gateway": hop.get("gateway"), "interface": hop.get("dev"), "weight": hop["weight"]}
                             for hop in row.get("nexthops", [])],
            })
    return result


def canonical(rows):
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


def test_routes_match_ip(routed_ns):
    before = ip_routes(routed_ns)
    facts = engine.gather(namespace=routed_ns.name, gather_subset=["min", "routes"])
    assert "routes" in facts["gather_subset"] and "multicast" not in facts
    assert canonical(facts["routes"]) == canonical(before) == canonical(ip_routes(routed_ns))
    routes = {(r["family"], r["table"], r["destination"]): r for r in facts["routes"]}
    # what the namespace was populated with is there, in its table
    assert routes[("ipv4", "main", "0.0.0.0/0")]["gateway"] == "198.18.0.1"
    assert routes[("ipv4", "main", "0.0.0.0/0")]["metric"] == 100
    assert routes[("ipv4", "100", "203.0.113.0/24")]["protocol"] == "static"
    assert routes[("ipv4", "100", "192.0.2.0/24")]["type"] == "blackhole"
    assert routes[("ipv4", "200", "198.51.100.128/25")]["type"] == "prohibit"
    assert routes[("ipv4", "main", "198.51.100.0/24")]["type"] == "unreachable"
    assert routes[("ipv4", "main", "198.18.0.64/26")]["source"] == "198.18.0.9"
    assert [hop["weight"] for hop in routes[("ipv4", "main", "203.0.114.0/24")]["nexthops"]] == [1, 3]
    assert routes[("ipv6", "main", "2001:db8:2::/48")]["metric"] == 300
    assert routes[("ipv6", "200", "2001:db8:4::/48")]["type"] == "unreachable"
    assert routes[("ipv4", "local", "198.18.0.9/32")]["type"] == "local"
    assert {r["table"] for r in facts["routes"]} >= {"main", "local", "100", "200"}


def test_routes_not_in_default(routed_ns):
    facts = engine.gather(namespace=routed_ns.name)
    assert "routes" not in facts and "multicast" not in facts
    facts = engine.gather(namespace=routed_ns.name, gather_subset=["all"], max_sockets=0)
    assert facts["routes"] and facts["multicast"]


def ip_maddr(ns):
    result = []
    for device in json.loads(ns.run(["ip", "-j", "maddr", "show"]).stdout):
        for entry in device.get("maddr", []):
            if entry.get("family") in ("inet", "inet6"):
                result.append({"interface": device["ifname"],
                               "family": "ipv4" if entry["family"] == "inet" else "ipv6",
                               "group": entry["address"], "users": entry.get("users", 1)})
    return result


def test_multicast_matches_ip(routed_ns):
    before = ip_maddr(routed_ns)
    facts = engine.gather(namespace=routed_ns.name, gather_subset=["min", "multicast"])
    assert canonical(facts["multicast"]) == canonical(before) == canonical(ip_maddr(routed_ns))
    groups = {(g["interface"], g["group"]): g for g in facts["multicast"]}
    assert groups[("rt0", V4_GROUPS[0])]["users"] == 2 and groups[("rt0", V4_GROUPS[1])]["users"] == 1
    assert groups[("rt0", V6_GROUPS[0])]["users"] == 1 and groups[("rt0", V6_GROUPS[1])]["users"] == 2
    assert groups[("rt0", V6_GROUPS[0])]["family"] == "ipv6"
    assert ("rt1", V4_GROUPS[0]) not in groups
