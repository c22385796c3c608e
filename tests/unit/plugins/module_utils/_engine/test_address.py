# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one address rule (_address.py): every form of an address comes out the same.

The expected texts are what `ip` and `ss` print; sock_diag's raw bytes are built with the
standard library's inet_pton, independently of the module.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import ipaddress
import socket

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _address as address

# printed by a kernel tool -> the plain form
CASES = [
    ("198.51.100.7", "198.51.100.7"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("::FFFF:198.51.100.7", "198.51.100.7"),
    ("0:0:0:0:0:ffff:c633:6407", "198.51.100.7"),
    ("::1", "::1"),
    ("::", "::"),
    ("0.0.0.0", "0.0.0.0"),
    ("2001:db8::ffff:198.51.100.7", "2001:db8::ffff:c633:6407"),  # only ::ffff:0:0/96 is IPv4-mapped
    ("::198.51.100.7", "::198.51.100.7"),  # IPv4-compatible, not mapped: stays IPv6
]


def raw_of(text):
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


@pytest.mark.parametrize("printed, plain", CASES)
def test_every_form_gives_the_same_plain_address(printed, plain):
    assert address.address_text(raw_of(printed)) == plain
    assert address.address_text(memoryview(bytearray(raw_of(printed)))) == plain  # a slice of a receive buffer
    assert address.plain_text(printed) == plain
    assert address.plain_address(printed) == ipaddress.ip_address(plain)
    assert address.plain_network(printed) == ipaddress.ip_network(plain)
    assert address.plain_raw(raw_of(printed)) == raw_of(plain)


def test_plain_raw_is_one_key_for_both_forms():
    assert address.plain_raw(raw_of("::ffff:10.0.0.1")) == address.plain_raw(raw_of("10.0.0.1")) == b"\n\0\0\1"


def test_zones_and_spaces_are_dropped_and_junk_is_none():
    assert address.plain_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert address.plain_address(" 192.0.2.1 ") == ipaddress.ip_address("192.0.2.1")
    assert address.plain_address("not-an-address") is None
    assert address.plain_address("") is None
    assert address.plain_network("10.0.0.0/33") is None


def test_networks():
    assert address.plain_network("::ffff:10.0.0.0/104") == ipaddress.ip_network("10.0.0.0/8")
    assert address.plain_network("::ffff:10.0.0.5/128") == ipaddress.ip_network("10.0.0.5/32")
    assert address.plain_network("198.51.100.9/24") == ipaddress.ip_network("198.51.100.0/24")
    assert address.plain_network("2001:db8::/32") == ipaddress.ip_network("2001:db8::/32")
    # wider than ::ffff:0:0/96: not all IPv4-mapped, stays IPv6
    assert address.plain_network("::ffff:0:0/95").version == 6
