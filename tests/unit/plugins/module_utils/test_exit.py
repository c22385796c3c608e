# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_exit: how the modules end - facts or a change, warnings and errors on one line, the diff under --diff.

_exit needs of a module only fail_json, warn, exit_json and _diff; Module below is that, ending the
call as AnsibleModule does (the modules themselves run in tests/unit/plugins/modules).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import sys

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils import _exit
from ansible_collections.netstate.tcp.plugins.module_utils._engine.engine import GatherError


class Ended(Exception):
    """fail_json and exit_json end the module (AnsibleModule exits); this ends the call with the result."""

    def __init__(self, result):
        super().__init__(result)
        self.result = result


class Module:
    def __init__(self, diff=False):
        self._diff = diff
        self.warnings = []
        self.pending = None  # the exception being handled when fail_json was called

    def warn(self, warning):
        self.warnings.append(warning)

    def fail_json(self, **result):
        self.pending = sys.exc_info()[1]
        raise Ended(dict(result, failed=True))

    def exit_json(self, **result):
        raise Ended(result)


def ended(call, *args):
    with pytest.raises(Ended) as caught:
        call(*args)
    return caught.value.result


def test_facts_and_warnings_on_one_line():
    module = Module()

    def gather(warnings):
        warnings.append("/proc/1/fd: permission denied\nretry as root\x1b[31m")
        return {"netstate": {"tcp": {"total": 3}}}

    assert ended(_exit.exit_facts, module, gather, GatherError, "connection facts") == {
        "ansible_facts": {"netstate": {"tcp": {"total": 3}}}}
    assert module.warnings == ["/proc/1/fd: permission denied\\x0aretry as root\\x1b[31m"]


def test_a_gather_error_fails_with_its_message_on_one_line():
    def gather(_warnings):
        raise GatherError("namespace /run/netns/blue\n: cannot enter")

    assert ended(_exit.exit_facts, Module(), gather, GatherError, "connection facts") == {
        "failed": True, "msg": "namespace /run/netns/blue\\x0a: cannot enter"}


def test_any_other_error_fails_naming_what_was_gathered_with_the_traceback():
    def gather(_warnings):
        return {}["tcp"]

    result = ended(_exit.exit_facts, Module(), gather, GatherError, "listeners")
    assert result["failed"] and result["msg"] == "unexpected error gathering listeners: 'tcp'"
    assert "KeyError: 'tcp'" in result["exception"] and "in gather" in result["exception"]


@pytest.mark.parametrize("diff", [False, True])
def test_a_change_returns_its_result_with_the_diff_only_under_diff(diff):
    module = Module(diff=diff)
    change = {"changed": True, "live_changed": ["net.ipv4.tcp_tw_reuse"],
              "warnings": ["tcp_tw_reuse without timestamps"], "diff": [{"before": "0\n", "after": "1\n"}]}
    result = ended(_exit.exit_change, module, lambda: dict(change), GatherError)
    expected = {"changed": True, "live_changed": ["net.ipv4.tcp_tw_reuse"]}
    if diff:
        expected["diff"] = [{"before": "0\n", "after": "1\n"}]
    assert result == expected
    assert module.warnings == ["tcp_tw_reuse without timestamps"]


def test_a_change_refused_fails_with_its_message_and_no_traceback():
    """The message names the option, key or command; the backend's traceback would be noise."""
    module = Module()

    def run():
        raise GatherError("max_connections: -1 is out of range (1 or more)")

    assert ended(_exit.exit_change, module, run, GatherError) == {
        "failed": True, "msg": "max_connections: -1 is out of range (1 or more)"}
    assert module.pending is None  # failed outside the except block: AnsibleModule attaches no traceback
