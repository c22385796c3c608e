# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.peer_block as Ansible runs it (in check mode): options refused by the argument spec or by
the backend, each named.

That a refused option runs nothing, and every option at random, are tested on the backend in
tests/unit/plugins/module_utils/test_peer_block.py; the firewall itself in
tests/integration/test_peer_block_netns.py and tests/fleet/test_fleet_peer_block.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import pytest

from ansible_collections.netstate.tcp.plugins.modules import peer_block

from tests.unit.plugins.modules._helpers import run_module


@pytest.mark.parametrize("args, message", [
    ({}, "state is present but all of the following are missing: max_connections"),
    ({"max_connections": -1}, "max_connections: -1 is out of range (1..1000000000)"),
    ({"max_connections": 5, "local_port": 70000}, "local_port: 70000 is out of range (1..65535)"),
    ({"max_connections": 5, "allow": ["10.0.0.0/33"]}, "allow: '10.0.0.0/33' is not an IPv4/IPv6 address or CIDR"),
    # a listener is not a peer: LISTEN is not among the states
    ({"max_connections": 5, "states": ["LISTEN"]}, "value of states must be one or more of: ESTABLISHED, "),
    ({"max_connections": 5, "direction": "sideways"}, "value of direction must be one of: "),
])
def test_a_bad_option_fails_naming_it(capsys, args, message):
    status, result = run_module(capsys, peer_block, _ansible_check_mode=True, **args)
    assert status == 1 and result["failed"]
    assert result["msg"].startswith(message) and "\n" not in result["msg"]
    assert not result.get("changed")
