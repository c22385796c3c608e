# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The action plugin of netstate.tcp.health_report: its refusals and the reading of earlier reports.

The reports themselves are tested with their renderers (tests/unit/plugins/plugin_utils/test_health_report.py);
whole runs in tests/integration/test_report_dir.py and test_health_merge_slices.py.
"""

from __future__ import annotations

from ansible_collections.netstate.tcp.plugins.action import health_report as health_report_action


def test_a_host_missing_from_the_inventory_is_named_bounded(tmp_path):
    """The action's `hosts` refusal quotes the name bounded and on one line, whatever its size."""
    huge = "h\n" * 300000
    message = health_report_action.hosts_error(huge)
    assert message.startswith("hosts: ") and "\n" not in message and len(message) < 600, message[:700]
