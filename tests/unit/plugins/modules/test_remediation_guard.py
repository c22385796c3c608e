# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.remediation_guard is documentation only: plugins/action/remediation_guard.py does the work.

That its documented options are the action's is tested with the action
(tests/unit/plugins/action/test_remediation_guard.py)."""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import yaml

from ansible_collections.netstate.tcp.plugins.modules import remediation_guard


def test_the_module_is_documentation_only():
    assert not hasattr(remediation_guard, "main")
    documentation = yaml.safe_load(remediation_guard.DOCUMENTATION)
    assert documentation["module"] == "remediation_guard"
    assert documentation["attributes"]["action"]["support"] == "full"
    assert set(yaml.safe_load(remediation_guard.RETURN)) == {"records", "actions", "summary", "msg", "remediation"}


def test_every_example_is_a_named_task_of_a_module_named_in_full():
    for task in yaml.safe_load(remediation_guard.EXAMPLES):
        modules = [key for key in task if "." in key]
        assert task.get("name") and len(modules) == 1, task
        assert modules[0].startswith(("netstate.tcp.", "ansible.builtin.")), task
