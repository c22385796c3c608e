# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.health_check is documentation only: plugins/action/health_check.py does the work on the controller.

That its documented options, attributes and return values are the action's is tested with the action
(tests/unit/plugins/action/test_health_check.py): the modules' unit tests run without Ansible's controller code.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import yaml

from ansible_collections.netstate.tcp.plugins.modules import health_check


def test_the_module_is_documentation_only():
    assert not hasattr(health_check, "main")  # nothing of it runs on a host
    documentation = yaml.safe_load(health_check.DOCUMENTATION)
    assert documentation["module"] == "health_check"
    assert documentation["attributes"]["action"]["support"] == "full"
    assert set(yaml.safe_load(health_check.RETURN)) and set(documentation["options"])


def test_every_example_is_a_named_task_of_a_module_named_in_full():
    for task in yaml.safe_load(health_check.EXAMPLES):
        modules = [key for key in task if "." in key]  # task keywords (register, when, ...) have no dot
        assert task.get("name") and len(modules) == 1, task
        assert modules[0].startswith(("netstate.tcp.", "ansible.builtin.")), task
