# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The action plugin of netstate.tcp.health_report, run in this process: its refusals, the report files it
writes (or, in check mode, would write) and the reading of earlier reports to merge.

The reports themselves are tested with their renderers (tests/unit/plugins/plugin_utils/test_health_report.py);
whole runs in tests/integration/test_report_dir.py and test_health_merge_slices.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import json
import os

import pytest
import yaml
from ansible.errors import AnsibleActionFail

from ansible_collections.netstate.tcp.plugins.action import health_report as health_report_action
from ansible_collections.netstate.tcp.plugins.modules import health_report as health_report_module
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_report as report

from tests.unit.plugins.action._helpers import action, documented_against_spec
from tests.unit.plugins.plugin_utils import _helpers
from tests.unit.plugins.plugin_utils._helpers import registered

facts = _helpers.facts  # a healthy host


def test_a_host_missing_from_the_inventory_is_named_bounded(tmp_path):
    """The action's `hosts` refusal quotes the name bounded and on one line, whatever its size."""
    huge = "h\n" * 300000
    message = health_report_action.hosts_error(huge)
    assert message.startswith("hosts: ") and "\n" not in message and len(message) < 600, message[:700]


@pytest.fixture
def hostvars(facts):
    return {"web1": {"netstate_health_result": registered(facts)}, "web2": {}}


def test_the_report_files_are_written_once_and_check_mode_writes_none(tmp_path, hostvars):
    dest = str(tmp_path / "reports")
    args = {"hosts": ["web1", "web2"], "dest": dest, "formats": ["json", "markdown", "html"]}
    predicted = action(health_report_action, args, check_mode=True).run(task_vars={"hostvars": hostvars})
    assert predicted["changed"] and not os.path.exists(dest)
    result = action(health_report_action, args).run(task_vars={"hostvars": hostvars})
    assert result["changed"] and result == dict(predicted, changed=True)
    assert sorted(os.listdir(dest)) == ["health.html", "health.json", "health.md"]
    assert result["hosts"] == {"web1": "passed", "web2": "unreachable"} and not result["healthy"]
    with open(os.path.join(dest, "health.md"), encoding="utf-8") as handle:
        assert handle.read() == result["markdown"]
    assert action(health_report_action, args).run(task_vars={"hostvars": hostvars})["changed"] is False


@pytest.mark.parametrize("args, message", [
    ({"hosts": ["web1", "web9"]}, "hosts: 'web9' is not in the inventory"),
    ({}, "one of the following is required: hosts, merge"),
    ({"hosts": ["web1"], "merge": ["x"]}, "parameters are mutually exclusive: hosts|merge"),
    ({"hosts": ["web1"], "formats": ["pdf"]}, "value of formats must be one or more of: "),
    ({"merge": ["missing/health.json"]}, "merge: cannot read {dest}/missing/health.json: No such file or directory"),
    ({"merge": ["notes.txt"]}, "merge: {dest}/notes.txt is not JSON: "),
    ({"hosts": ["web1"], "dest": "notes.txt"}, "dest: cannot write {dest}/notes.txt: "),
])
def test_a_bad_task_fails_naming_the_option(tmp_path, monkeypatch, hostvars, args, message):
    monkeypatch.chdir(tmp_path)  # relative paths are the controller's, against its current directory
    (tmp_path / "notes.txt").write_text("not a report\n")
    args = dict({"dest": str(tmp_path / "reports")}, **args)
    with pytest.raises(AnsibleActionFail) as caught:
        action(health_report_action, args).run(task_vars={"hostvars": hostvars})
    assert str(caught.value).startswith(message.format(dest=tmp_path)), str(caught.value)


def test_reports_to_merge_are_files_or_directories_holding_health_json(tmp_path, hostvars):
    for host in ("web1", "web2"):
        os.makedirs(str(tmp_path / host))
        partial = report.build_report({host: hostvars[host].get("netstate_health_result")})
        (tmp_path / host / "health.json").write_text(report.render_json(partial))
    args = {"merge": [str(tmp_path / "web1"), str(tmp_path / "web2" / "health.json")], "dest": str(tmp_path / "all"),
            "formats": ["json"]}
    merged = action(health_report_action, args).run(task_vars={})
    assert merged["hosts"] == {"web1": "passed", "web2": "unreachable"}
    whole = report.render_json(report.build_report({host: variables.get("netstate_health_result")
                                                    for host, variables in hostvars.items()}))
    with open(str(tmp_path / "all" / "health.json"), encoding="utf-8") as handle:
        assert json.loads(handle.read()) == json.loads(whole)


# ---------------------------------------------------------------- the module's documentation is the action's

def test_the_documented_options_and_attributes_are_the_actions():
    assert documented_against_spec(health_report_module.DOCUMENTATION, health_report_action.ARGUMENT_SPEC) == {}
    attributes = yaml.safe_load(health_report_module.DOCUMENTATION)["attributes"]
    assert attributes["bypass_host_loop"]["support"] == (
        "full" if health_report_action.ActionModule.BYPASS_HOST_LOOP else "none")
    assert attributes["async"]["support"] == ("full" if health_report_action.ActionModule._supports_async else "none")


def test_the_documented_return_values_are_those_returned(tmp_path, hostvars):
    result = action(health_report_action, {"hosts": ["web1"], "dest": str(tmp_path)}).run(
        task_vars={"hostvars": hostvars})
    assert set(result) - {"changed"} == set(yaml.safe_load(health_report_module.RETURN))
