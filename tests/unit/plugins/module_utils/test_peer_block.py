# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of peer_block's option checks, address handling, SSH client search (a temporary /proc tree)
and the nft transaction text. The firewall itself is tested for real in tests/integration and tests/fleet."""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import ipaddress
import os

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._peer_block import (
    NftablesFirewall,
    PeerBlockError,
    protected_reason,
    ssh_client,
    validate,
)


def test_defaults_count_every_state_but_listen():
    options = validate({"max_connections": 5})
    assert "LISTEN" not in options["states"] and "TIME_WAIT" in options["states"]
    assert options["duration"] == 3600 and options["max_blocks"] == 10 and options["allow"] == []


@pytest.mark.parametrize("params, message", [
    ({"max_connections": True}, "max_connections: True is not an integer"),
    ({"max_connections": "5"}, "max_connections: '5' is not an integer"),
    ({"max_connections": 5, "states": "ESTABLISHED"}, "states: 'ESTABLISHED' must be a non-empty list"),
    ({"max_connections": 5, "states": ["ESTAB"]}, "states: 'ESTAB' is not a TCP state"),
    ({"max_connections": 5, "allow": "10.0.0.1"}, "allow: '10.0.0.1' must be a list"),
    ({"max_connections": 5, "allow": ["300.1.1.1"]}, "allow: '300.1.1.1' is not an IPv4/IPv6 address or CIDR"),
    ({"max_connections": 5, "duration": 2147484}, "duration: 2147484 is out of range (0..2147483)"),
    ({"max_connections": 5, "state": "gone"}, "state: 'gone' is not one of present, absent"),
    ({}, "max_connections: required with state=present"),
])
def test_bad_options_name_the_option_and_value(params, message):
    with pytest.raises(PeerBlockError) as error:
        validate(params)
    assert message in str(error.value)


def test_absent_needs_no_threshold():
    assert validate({"state": "absent"})["max_connections"] is None


def test_reasons_in_order():
    own = {ipaddress.ip_address("192.0.2.1")}
    client = ipaddress.ip_address("192.0.2.50")
    allow = [ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8::/32")]
    assert protected_reason(ipaddress.ip_address("127.0.0.9"), own, client, allow) == "loopback"
    assert protected_reason(ipaddress.ip_address("::1"), own, client, allow) == "loopback"
    assert protected_reason(ipaddress.ip_address("192.0.2.1"), own, client, allow) == "own_address"
    assert protected_reason(client, own, client, allow) == "ssh_client"
    assert protected_reason(ipaddress.ip_address("198.51.100.77"), own, client, allow) == "allow"
    assert protected_reason(ipaddress.ip_address("2001:db8::5"), own, client, allow) == "allow"
    assert protected_reason(ipaddress.ip_address("203.0.113.5"), own, client, allow) is None


def _process(proc, pid, ppid, environ):
    os.makedirs(os.path.join(proc, str(pid)))
    with open(os.path.join(proc, str(pid), "status"), "w") as handle:
        handle.write("Name:\tx\nPPid:\t%d\n" % ppid)
    with open(os.path.join(proc, str(pid), "environ"), "wb") as handle:
        handle.write(b"\0".join(b"%s=%s" % (k.encode(), v.encode()) for k, v in environ.items()))


def test_ssh_client_from_own_environment_first(tmp_path):
    address, source = ssh_client({"SSH_CLIENT": "2001:db8::9 40000 22"}, proc=str(tmp_path), pid=1)
    assert (str(address), source) == ("2001:db8::9", "SSH_CLIENT")


def test_ssh_client_from_an_ancestor_when_become_cleared_it(tmp_path):
    proc = str(tmp_path)
    _process(proc, 100, 1, {"SSH_CONNECTION": "192.0.2.50 51000 192.0.2.1 22"})  # the session's shell
    _process(proc, 200, 100, {"SUDO_USER": "admin"})                          # sudo
    _process(proc, 300, 200, {})                                               # the module
    address, source = ssh_client({}, proc=proc, pid=300)
    assert (str(address), source) == ("192.0.2.50", "SSH_CONNECTION of process 100")
    assert ssh_client({}, proc=proc, pid=100) == (None, None)  # pid 1 is never read


def test_nft_transaction_is_one_table_of_our_own():
    script = NftablesFirewall(None, "nft").script(
        [ipaddress.ip_address("198.51.100.7"), ipaddress.ip_address("2001:db8::7")], 600)
    lines = script.splitlines()
    assert all(" inet netstate_tcp" in line for line in lines)
    assert "add element inet netstate_tcp blocked_ipv4 { 198.51.100.7 timeout 600s }" in lines
    assert "add element inet netstate_tcp blocked_ipv6 { 2001:db8::7 timeout 600s }" in lines
    assert "timeout" not in NftablesFirewall(None, "nft").script([ipaddress.ip_address("192.0.2.9")], 0) \
        .splitlines()[-1]
