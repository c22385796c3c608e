# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the gather and health playbooks write their reports when the report directory is relative.

Both playbooks are run by FQCN, so their directory is the collection's playbooks/; a relative
report directory must land under the directory ansible-playbook runs in, never next to the
playbook. One localhost host gathers from a private network namespace holding one real listener.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

BIN = os.path.dirname(sys.executable)
PLAYBOOK = os.path.join(BIN, "ansible-playbook")
PLAYBOOKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "playbooks")
CASES = {
    # playbook: (namespace variable, report directory variable, a file the report must hold)
    "netstate.tcp.gather": ("netstate_gather_args", "netstate_gather_report_dir", "fleet-report.json"),
    "netstate.tcp.health": ("netstate_health_gather_args", "netstate_health_report_dir", "health.json"),
}


@pytest.fixture
def listening_netns(netns, tmp_path):
    netns.hold_mix({"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 16}]}, tmp_path)
    return netns


def inventory(path, namespace_var, namespace):
    data = {"all": {"hosts": {"lone": {"ansible_connection": "local",
                                       "ansible_python_interpreter": "/usr/bin/python3",
                                       namespace_var: {"namespace": namespace}}}}}
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.netns
@pytest.mark.parametrize("playbook", sorted(CASES))
def test_relative_report_dir_is_taken_against_the_current_directory(playbook, listening_netns, tmp_path):
    namespace_var, report_var, report_file = CASES[playbook]
    cwd = tmp_path / "work"
    cwd.mkdir()
    relative = "reports-%s" % os.getpid()
    done = subprocess.run(
        [PLAYBOOK, playbook, "-i", inventory(tmp_path / "inventory.yml", namespace_var, listening_netns.name),
         "-e", "%s=%s" % (report_var, relative)],
        cwd=str(cwd), capture_output=True, text=True, timeout=300, check=False)
    beside_playbook = os.path.join(PLAYBOOKS_DIR, relative)
    if os.path.exists(beside_playbook):
        shutil.rmtree(beside_playbook)
        pytest.fail("the report was written next to the playbook, in %s" % beside_playbook)
    assert done.returncode == 0, done.stdout + done.stderr
    written = cwd / relative / report_file
    assert written.is_file(), "no %s in %s: %s" % (report_file, cwd / relative, sorted(os.listdir(cwd)))
    report = json.loads(written.read_text())
    assert "lone" in json.dumps(report)


@pytest.mark.netns
def test_gather_report_dir_expands_the_home_directory(listening_netns, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = dict(os.environ, HOME=str(home))
    done = subprocess.run(
        [PLAYBOOK, "netstate.tcp.gather",
         "-i", inventory(tmp_path / "inventory.yml", "netstate_gather_args", listening_netns.name),
         "-e", "netstate_gather_report_dir=~/fleet"],
        cwd=str(cwd), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (home / "fleet" / "fleet-report.md").is_file()
    assert not (cwd / "~").exists()


FIRST_HOST_TASK = {
    "netstate.tcp.gather": "TASK [netstate.tcp.gather : Gather TCP connection facts]",
    "netstate.tcp.health": "TASK [netstate.tcp.health : Check the TCP health thresholds]",
}


def read_only_run(directory, argv, cwd):
    """argv in a private mount namespace where `directory` is a read-only bind mount of itself."""
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(directory),
                           *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(cwd),
                          timeout=300, check=False)


@pytest.mark.netns
@pytest.mark.parametrize("playbook", sorted(CASES))
def test_unwritable_report_dir_fails_before_any_host_is_contacted(playbook, listening_netns, tmp_path):
    """A read-only report directory, and a regular file where the directory goes: the play ends in its first
    task, naming the role's variable, the directory and the reason; no host task ever starts."""
    namespace_var, report_var, _report_file = CASES[playbook]
    hosts = inventory(tmp_path / "inventory.yml", namespace_var, listening_netns.name)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    done = read_only_run(read_only, [PLAYBOOK, playbook, "-i", hosts, "-e", "%s=%s" % (report_var, read_only)],
                         tmp_path)
    assert done.returncode == 2, done.stdout[-4000:]
    assert '%s "%s": the report directory %s cannot be written ([Errno 30] Read-only file system' % (
        report_var, read_only, read_only) in done.stdout, done.stdout[-4000:]
    assert "no host was contacted" in done.stdout
    assert FIRST_HOST_TASK[playbook] not in done.stdout, done.stdout[-4000:]
    assert list(read_only.iterdir()) == []
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    done = subprocess.run([PLAYBOOK, playbook, "-i", hosts, "-e", "%s=%s" % (report_var, a_file)],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stdout[-4000:]
    assert '%s "%s": the report directory %s cannot be written (' % (report_var, a_file, a_file) in done.stdout, \
        done.stdout[-4000:]
    assert FIRST_HOST_TASK[playbook] not in done.stdout
    assert a_file.read_text() == "not a directory\n"
