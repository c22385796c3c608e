# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: the one rule for addresses. An IPv4-mapped IPv6 address is its IPv4 address.

A dual-stack listener sees its IPv4 clients as ::ffff:192.0.2.1; the facts print and count them,
and peer_block blocks them, as 192.0.2.1. Every form an address takes here (bytes from sock_diag,
text from /proc/net or a command, an ipaddress object) goes through plain_raw. Plain Python
(standard library only, no ansible import, Python 3.8+).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import socket

V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


def plain_raw(raw):
    """4 or 16 address bytes; an IPv4-mapped IPv6 address as its 4 IPv4 bytes, so both forms are one key."""
    if len(raw) == 16 and raw[:12] == V4_MAPPED_PREFIX:
        return raw[12:]
    return raw


def address_text(raw):
    """4 or 16 address bytes (any bytes-like) as text, an IPv4-mapped IPv6 address as IPv4."""
    raw = plain_raw(bytes(raw))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def plain_text(text):
    """A printed IPv4 or IPv6 address, an IPv4-mapped one as IPv4: '::ffff:10.0.0.1' -> '10.0.0.1'."""
    return address_text(socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text))


def plain_address(text):
    """An ipaddress object, IPv4-mapped IPv6 as IPv4, a zone (%eth0) dropped; None if not an address."""
    try:
        address = ipaddress.ip_address(str(text).split("%", 1)[0].strip())
    except ValueError:
        return None
    return ipaddress.ip_address(plain_raw(address.packed))


def plain_network(text):
    """An address or CIDR as an ipaddress network, IPv4-mapped IPv6 (within ::ffff:0:0/96) as IPv4;
    None if not one."""
    text = str(text).strip()
    address = plain_address(text)
    if address is not None:
        return ipaddress.ip_network(address)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if network.version == 6 and network.prefixlen >= 96:
        mapped = plain_raw(network.network_address.packed)
        if len(mapped) == 4:
            return ipaddress.ip_network("%s/%d" % (ipaddress.ip_address(mapped), network.prefixlen - 96))
    return network
