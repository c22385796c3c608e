# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: the routing tables through rtnetlink (RTM_GETROUTE dumps), standard library only.

Part of the engine: no ansible import, Python 3.8+. dump_routes() returns the raw payloads of
the kernel's RTM_NEWROUTE answers; parse_route() turns one into a plain dict and raises
RouteFormatError (a ValueError) on anything that is not a well-formed message. Names of
tables, protocols, scopes and types are the ones `ip route` prints (include/uapi/linux/
rtnetlink.h and iproute2's defaults), overridden by /etc/iproute2/rt_tables and rt_protos.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import struct

from . import _files as files
from ._netlink import ERROR_CODE, NETLINK_ROUTE, NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDR, \
    netlink_socket, send_dump_request

RTM_NEWROUTE = 24
RTM_GETROUTE = 26
RECV_SIZE = 1 << 16

# struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTMSG = struct.Struct("=BBBBBBBBI")
RTATTR = struct.Struct("=HH")
# struct rtnexthop: len, flags, hops, ifindex
RTNEXTHOP = struct.Struct("=HBBi")
U32 = struct.Struct("=I")

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_PREFSRC = 7
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTA_VIA = 18

FAMILY_NAMES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
ADDRESS_SIZES = {socket.AF_INET: 4, socket.AF_INET6: 16}

TABLES = {0: "unspec", 253: "default", 254: "main", 255: "local"}
PROTOCOLS = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra", 10: "mrt",
    11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp", 18: "keepalived",
    42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp",
}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
TYPES = ("unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable",
         "prohibit", "throw", "nat", "xresolve")


class RouteFormatError(ValueError):
    """An rtnetlink message did not have the layout the kernel documents."""


class RouteDumpError(Exception):
    """The route dump could not be run or was refused; the message says why."""


class RouteDumpInterrupted(RouteDumpError):
    """The kernel flagged the dump NLM_F_DUMP_INTR: a table changed while it ran."""


#: The largest iproute2 names file read (rt_tables holds one short line per table).
NAMES_FILE_LIMIT = 1024 * 1024


def read_names(path, names):
    """Add `number name` lines of an iproute2 file (rt_tables, rt_protos) to a copy of names."""
    result = dict(names)
    paths = [path]
    try:
        paths += sorted(os.path.join(path + ".d", entry) for entry in os.listdir(path + ".d")
                        if entry.endswith(".conf"))
    except (IOError, OSError):
        pass
    for one in paths:
        try:
            # a FIFO or device dropped into rt_tables.d is skipped, never waited on or read without end
            lines = files.read_text(one, NAMES_FILE_LIMIT).splitlines()
        except (IOError, OSError, UnicodeDecodeError):
            continue
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2:
                try:
                    result[int(fields[0], 0)] = fields[1]
                except ValueError:
                    continue
    return result


def dump_routes(family):
    """The payloads (bytes after nlmsghdr) of every RTM_NEWROUTE the kernel sends for one family."""
    try:
        sock = netlink_socket(NETLINK_ROUTE)
    except (OSError, ValueError) as exc:
        raise RouteDumpError("cannot open a NETLINK_ROUTE socket: %s" % exc)
    try:
        send_dump_request(sock, RTM_GETROUTE, RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))
        messages = []
        while True:
            try:
                buf = sock.recv(RECV_SIZE)  # Python retries a recv() a signal interrupts (PEP 475)
            except OSError as exc:
                raise RouteDumpError("RTM_GETROUTE receive failed: %s" % exc)
            if not buf:
                raise RouteDumpError("RTM_GETROUTE dump ended without NLMSG_DONE")
            if _routes_of_buffer(buf, family, messages):
                return messages
    except OSError as exc:
        raise RouteDumpError("RTM_GETROUTE request failed: %s" % exc)
    finally:
        sock.close()


def _routes_of_buffer(buf, family, messages):
    """Append the RTM_NEWROUTE payloads of one receive buffer to messages; True at NLMSG_DONE."""
    off = 0
    while off + NLMSG_HDR.size <= len(buf):
        msg_len, msg_type, flags, _seq, _pid = NLMSG_HDR.unpack_from(buf, off)
        if msg_len < NLMSG_HDR.size or off + msg_len > len(buf):
            raise RouteDumpError("RTM_GETROUTE: truncated netlink message of %d bytes" % msg_len)
        if flags & NLM_F_DUMP_INTR:
            raise RouteDumpInterrupted("a routing table changed during the dump")
        if msg_type == NLMSG_DONE:
            return True
        if msg_type == NLMSG_ERROR:
            if msg_len < NLMSG_HDR.size + ERROR_CODE.size:
                raise RouteDumpError("RTM_GETROUTE: truncated NLMSG_ERROR of %d bytes" % msg_len)
            code = ERROR_CODE.unpack_from(buf, off + NLMSG_HDR.size)[0]
            raise RouteDumpError("RTM_GETROUTE refused: %s" % os.strerror(-code))
        # A kernel without this family answers with every family's routes: keep ours only.
        if msg_type == RTM_NEWROUTE and msg_len > NLMSG_HDR.size and buf[off + NLMSG_HDR.size] == family:
            messages.append(bytes(buf[off + NLMSG_HDR.size:off + msg_len]))
        off += (msg_len + 3) & ~3
    return False


def _attributes(data, start, end):
    """(type, value bytes) of the rtattrs between start and end; RouteFormatError when malformed."""
    off = start
    while off + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, off)
        if length < RTATTR.size or off + length > end:
            raise RouteFormatError("attribute of type %d has a bad length %d at offset %d" % (kind, length, off))
        yield kind & 0x3FFF, data[off + RTATTR.size:off + length]
        off += (length + 3) & ~3


def _address(family, value, what):
    size = ADDRESS_SIZES[family]
    if len(value) != size:
        raise RouteFormatError("%s: %d bytes, expected %d for %s" % (what, len(value), size, FAMILY_NAMES[family]))
    return socket.inet_ntop(family, value)


def _via(value):
    """RTA_VIA: struct rtvia {family, address}."""
    if len(value) < 2:
        raise RouteFormatError("RTA_VIA: %d bytes" % len(value))
    family = struct.unpack_from("=H", value)[0]
    if family not in ADDRESS_SIZES:
        raise RouteFormatError("RTA_VIA: unknown address family %d" % family)
    return _address(family, value[2:], "RTA_VIA")


def _u32(value, what):
    if len(value) != 4:
        raise RouteFormatError("%s: %d bytes, expected 4" % (what, len(value)))
    return U32.unpack(value)[0]


def _nexthops(family, value, interface_name):
    result = []
    off = 0
    while off + RTNEXTHOP.size <= len(value):
        length, _flags, hops, ifindex = RTNEXTHOP.unpack_from(value, off)
        if length < RTNEXTHOP.size or off + length > len(value):
            raise RouteFormatError("RTA_MULTIPATH: next hop with a bad length %d" % length)
        gateway = None
        for kind, attr in _attributes(value, off + RTNEXTHOP.size, off + length):
            if kind == RTA_GATEWAY:
                gateway = _address(family, attr, "RTA_MULTIPATH gateway")
            elif kind == RTA_VIA:
                gateway = _via(attr)
        result.append({"gateway": gateway, "interface": interface_name(ifindex), "weight": hops + 1})
        off += (length + 3) & ~3
    return result


def parse_route(data, tables=None, protocols=None, interface_name=None):
    """One RTM_NEWROUTE payload -> {family, table, destination, gateway, interface, source, metric,
    protocol, scope, type, nexthops}; None for a family other than IPv4 and IPv6."""
    tables = TABLES if tables is None else tables
    protocols = PROTOCOLS if protocols is None else protocols
    interface_name = interface_name or _interface_name
    if len(data) < RTMSG.size:
        raise RouteFormatError("message of %d bytes, shorter than struct rtmsg (%d)" % (len(data), RTMSG.size))
    family, dst_len, _src_len, _tos, table, protocol, scope, kind, _flags = RTMSG.unpack_from(data)
    if family not in FAMILY_NAMES:
        return None
    if dst_len > ADDRESS_SIZES[family] * 8:
        raise RouteFormatError("prefix length %d is too long for %s" % (dst_len, FAMILY_NAMES[family]))
    destination = "0.0.0.0" if family == socket.AF_INET else "::"
    gateway = interface = source = None
    metric = 0
    nexthops = []
    for attr, value in _attributes(data, RTMSG.size, len(data)):
        if attr == RTA_DST:
            destination = _address(family, value, "RTA_DST")
        elif attr == RTA_GATEWAY:
            gateway = _address(family, value, "RTA_GATEWAY")
        elif attr == RTA_VIA:
            gateway = _via(value)
        elif attr == RTA_OIF:
            interface = interface_name(_u32(value, "RTA_OIF"))
        elif attr == RTA_PREFSRC:
            source = _address(family, value, "RTA_PREFSRC")
        elif attr == RTA_PRIORITY:
            metric = _u32(value, "RTA_PRIORITY")
        elif attr == RTA_TABLE:
            table = _u32(value, "RTA_TABLE")
        elif attr == RTA_MULTIPATH:
            nexthops = _nexthops(family, value, interface_name)
    return {
        "family": FAMILY_NAMES[family],
        "table": tables.get(table, str(table)),
        "destination": "%s/%d" % (destination, dst_len),
        "gateway": gateway,
        "interface": interface,
        "source": source,
        "metric": metric,
        "protocol": protocols.get(protocol, str(protocol)),
        "scope": SCOPES.get(scope, str(scope)),
        "type": TYPES[kind] if kind < len(TYPES) else str(kind),
        "nexthops": nexthops,
    }


def _interface_name(index):
    """The interface name of an index in the current network namespace (None when it is gone)."""
    if not index:
        return None
    try:
        return socket.if_indextoname(index)
    except (OSError, OverflowError, ValueError):
        return None
