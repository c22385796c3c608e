# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstate.tcp.sysctl as Ansible runs it: arguments in, one JSON result out, never a traceback.

Only validation failures and check mode run here, against the machine's real /proc/sys: nothing is
written. Live changes are tested in private namespaces (tests/integration/test_sysctl_netns.py).
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import json
import os

import pytest
import yaml

from ansible_collections.netstate.tcp.plugins.modules import sysctl
from tests.conftest import require
from tests.unit.plugins.modules._helpers import patch_module_args


def require_proc_sys():
    require(os.path.exists("/proc/sys/net/ipv4/tcp_tw_reuse"), "needs Linux /proc/sys (net.ipv4.tcp_tw_reuse)")


def run(capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit) as caught:
        sysctl.main()
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    # in a process that also imported the controller (pytest-ansible), module warnings go to the display
    result.setdefault("warnings", [])
    result["warnings"] = list(result["warnings"]) + [captured.err]
    return caught.value.code, result


def live(key):
    with open("/proc/sys/" + key.replace(".", "/")) as handle:
        return " ".join(handle.read().split())


def test_documentation_is_complete():
    doc = yaml.safe_load(sysctl.DOCUMENTATION)
    assert set(doc["options"]) == {"settings", "path", "persist", "apply", "force"}
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "full"
    assert "netstate.tcp.attributes.LINUX" in doc["extends_documentation_fragment"]
    examples = yaml.safe_load(sysctl.EXAMPLES)
    assert all(task["name"] and "netstate.tcp.sysctl" in task for task in examples)
    returned = yaml.safe_load(sysctl.RETURN)
    assert {"changed", "per_key", "skipped_keys", "live_changed", "file_changed"} <= set(returned)


def test_invalid_settings_fail_with_one_message(capsys, tmp_path):
    path = tmp_path / "60-netstate-tcp.conf"
    code, result = run(capsys, settings={"tcp_tw_recycle": 1, "tcp_tw_reuse": 5, "somaxconn": 100},
                       path=str(path))
    assert code == 1 and result["failed"] is True
    assert "tcp_tw_recycle=1: refused: tcp_tw_recycle was removed in Linux 4.12" in result["msg"]
    assert "tcp_tw_reuse=5: invalid value for net.ipv4.tcp_tw_reuse: must be one of 0, 1, 2" in result["msg"]
    assert "Traceback" not in json.dumps(result)
    assert not path.exists()


def test_wrong_option_type_is_ansibles_error(capsys):
    code, result = run(capsys, settings={"tcp_tw_reuse": 1}, persist="maybe")
    assert code == 1 and result["failed"] is True and "persist" in result["msg"] and "maybe" in result["msg"]


def test_check_mode_reports_without_writing(capsys, tmp_path):
    require_proc_sys()
    path = tmp_path / "60-netstate-tcp.conf"
    current = live("net.ipv4.tcp_tw_reuse")
    other = "1" if current != "1" else "0"
    code, result = run(capsys, settings={"tcp_tw_reuse": int(other)}, path=str(path),
                       _ansible_check_mode=True, _ansible_diff=True)
    assert code == 0 and result["changed"] is True
    assert result["live_changed"] == ["net.ipv4.tcp_tw_reuse"]
    assert result["per_key"]["net.ipv4.tcp_tw_reuse"] == dict(
        result["per_key"]["net.ipv4.tcp_tw_reuse"], before=current, after=other, value=other)
    file_diff, live_diff = result["diff"]
    assert file_diff["after_header"] == str(path) and "net.ipv4.tcp_tw_reuse = %s" % other in file_diff["after"]
    assert live_diff["before"] == "net.ipv4.tcp_tw_reuse = %s\n" % current
    assert live("net.ipv4.tcp_tw_reuse") == current and not path.exists()
    # a path outside the boot directories is worth a warning
    assert any("is not in a directory read at boot" in str(w) for w in result["warnings"])


def test_current_values_are_no_change(capsys):
    require_proc_sys()
    code, result = run(capsys, settings={"tcp_tw_reuse": live("net.ipv4.tcp_tw_reuse")}, persist=False,
                       _ansible_check_mode=True)
    assert code == 0 and result["changed"] is False and "diff" not in result
