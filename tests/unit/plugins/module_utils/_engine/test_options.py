# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_options: gather_subset resolved like setup's, and the namespace grammar on hostile text.

gather() refusing every option by name before it reads anything is in test_engine.py; the collector's
argparse types sharing these checks in test_collect.py and test_argspec.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
from hypothesis import given, settings

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _options as options

from tests.unit.plugins.module_utils._engine._helpers import HOSTILE_TEXT, MESSAGE_LIMIT


@pytest.mark.parametrize("gather_subset, expected", [
    (None, ["counters", "listeners", "peers", "ports", "states", "timers"]),
    (["all"], sorted(options.SUBSETS)),
    (["all", "!sockets"], sorted(set(options.SUBSETS) - {"sockets"})),
    (["!peers"], ["counters", "listeners", "ports", "states", "timers"]),
    (["default", "routes"], ["counters", "listeners", "peers", "ports", "routes", "states", "timers"]),
    (["min"], ["states"]),
    (["!all"], ["states"]),
    ("ports,listeners", ["listeners", "ports", "states"]),
])
def test_gather_subset_like_setup(gather_subset, expected):
    assert options.resolve_subset(gather_subset) == expected


@settings(max_examples=300, deadline=None)
@given(HOSTILE_TEXT)
def test_namespace_grammar_admits_nothing_that_escapes(namespace):
    try:
        options.check_namespace(namespace)
    except options.GatherError as error:
        assert str(error).startswith("namespace: ") and len(str(error)) < MESSAGE_LIMIT
        return
    if namespace in ("", "host", "self", "all"):
        return
    assert not set(namespace) & {"\0", "\n", "\r", "\\", " "}
    if namespace.startswith("/"):
        assert not {"", ".", ".."} & set(namespace.split("/")[1:]), namespace
    elif namespace.startswith("pid:"):
        assert namespace[4:].isdigit() and namespace[4] != "0"
    else:
        assert "/" not in namespace and namespace[0] not in ".-" and len(namespace) <= 64
