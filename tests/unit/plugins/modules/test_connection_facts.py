# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.connection_facts as Ansible runs it: a bad option fails naming it, on one line, without facts.

The engine checks every option before it reads anything (test_engine.py); facts from real sockets are
tested in private namespaces (tests/integration/test_modules.py).
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import pytest

from ansible_collections.netstate.tcp.plugins.modules import connection_facts

from tests.unit.plugins.modules._helpers import run_module


@pytest.mark.parametrize("args, message", [
    ({"top": -1}, "top: -1 is out of range (1..100000)"),
    ({"gather_subset": ["states", "bogus"]}, "gather_subset: unknown subset 'bogus' (choose from all, "),
    ({"namespace": "../x"}, "namespace: '../x' is not a namespace name"),
    ({"sample_interval": 61}, "sample_interval: 61.0 must be a number of seconds from 0 to 60"),
    ({"walk_budget": -1}, "walk_budget: -1 is out of range (0 or more)"),
    ({"listeners_limit": 0}, "listeners_limit: 0 is out of range (1 or more)"),
    ({"backend": "bpf"}, "value of backend must be one of: auto, netlink, proc, got: bpf"),  # the argument spec's
])
def test_a_bad_option_fails_naming_it(capsys, args, message):
    status, result = run_module(capsys, connection_facts, **args)
    assert status == 1 and result["failed"]
    assert result["msg"].startswith(message) and "\n" not in result["msg"]
    assert "ansible_facts" not in result
