# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.health_report is documentation only: plugins/action/health_report.py does the work. Its options,
as documented, are those the action takes (ansible-test's validate-modules cannot compare them: there is
no main()), and so is what it says of the host loop and async.

The action itself is tested in tests/unit/plugins/action/test_health_report.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import yaml

from ansible_collections.netstate.tcp.plugins.action.health_report import ARGUMENT_SPEC, ActionModule
from ansible_collections.netstate.tcp.plugins.modules import health_report

from tests.unit.plugins.modules._helpers import documented_against_spec


def test_the_documented_options_are_the_actions():
    assert documented_against_spec(health_report.DOCUMENTATION, ARGUMENT_SPEC) == {}


def test_the_documented_attributes_are_the_actions():
    attributes = yaml.safe_load(health_report.DOCUMENTATION)["attributes"]
    assert attributes["bypass_host_loop"]["support"] == ("full" if ActionModule.BYPASS_HOST_LOOP else "none")
    assert attributes["async"]["support"] == ("full" if ActionModule._supports_async else "none")
    assert attributes["action"]["support"] == "full"


def test_every_example_is_a_named_task():
    assert all(task.get("name") for task in yaml.safe_load(health_report.EXAMPLES))
