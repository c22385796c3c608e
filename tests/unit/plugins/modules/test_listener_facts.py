# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.listener_facts as Ansible runs it: the options it refuses, each named.

Its community.general shape is tested in tests/unit/plugins/module_utils/test_listen_ports.py; on real
sockets in tests/integration/test_listen_ports_compat.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import pytest

from ansible_collections.netstate.tcp.plugins.modules import listener_facts

from tests.unit.plugins.modules._helpers import run_module


@pytest.mark.parametrize("args, message", [
    # one namespace's listeners, in community.general's shape: never every namespace's
    ({"namespace": "all"}, "namespace: 'all' is not accepted by listener_facts; name one namespace"),
    ({"namespace": "a/b"}, "namespace: 'a/b' is not a namespace name"),
    ({"walk_budget": -5}, "walk_budget: -5 is out of range (0 or more)"),
    # accepted for community.general's sake, but only its two values
    ({"command": "lsof"}, "value of command must be one of: netstat, ss, got: lsof"),
    ({"include_non_listening": "sometimes"}, "argument 'include_non_listening' is of type"),
])
def test_a_bad_option_fails_naming_it(capsys, args, message):
    status, result = run_module(capsys, listener_facts, **args)
    assert status == 1 and result["failed"]
    assert result["msg"].startswith(message) and "\n" not in result["msg"]
    assert "ansible_facts" not in result
