# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp._agent's install and prune entry points, run for real against localhost in a directory of
their own: the engine package copied whole into a release named after the collection's version and the
package's content, compiled by root, switched in through the `current` link; older releases and the layout
of earlier versions removed, the previous release kept; check mode and a second run change nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, require

BIN = os.path.dirname(sys.executable)
PLAYBOOK = os.path.join(BIN, "ansible-playbook")
ENGINE = os.path.join(ROOT, "plugins", "module_utils", "_engine")
PACKAGE_PATH = os.path.join("ansible_collections", "netstate", "tcp", "plugins", "module_utils", "_engine")
PLAY = """- hosts: localhost
  gather_facts: false
  tasks:
    - name: Install the collector
      ansible.builtin.include_role:
        name: netstate.tcp._agent
        tasks_from: install
      vars:
        _netstate_agent_collector_dir: "{directory}"
        _netstate_agent_python: "{python}"
    - name: Remove the collector's earlier releases
      ansible.builtin.include_role:
        name: netstate.tcp._agent
        tasks_from: prune
      vars:
        _netstate_agent_collector_dir: "{directory}"
"""


def run(tmp_path, directory, *args):
    playbook = tmp_path / "install.yml"
    playbook.write_text(PLAY.format(directory=directory, python=sys.executable))
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_NOCOLOR="1")
    done = subprocess.run([PLAYBOOK, "-c", "local", "-i", "localhost,", str(playbook),
                           "-e", "ansible_python_interpreter=" + sys.executable] + list(args),
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "[WARNING]" not in done.stdout + done.stderr, done.stdout[-4000:] + done.stderr[-2000:]
    return int(re.search(r"^localhost\s+:.*\bchanged=(\d+)", done.stdout, re.M).group(1))


def tree(directory):
    found = set()
    for top, dirs, files in os.walk(str(directory)):
        for name in dirs + files:
            path = os.path.join(top, name)
            found.add((os.path.relpath(path, str(directory)), os.lstat(path).st_mode))
    return found


@pytest.fixture()
def earlier(tmp_path):
    """A collector directory as earlier versions left it: the files straight under ansible_collections/,
    and two releases, the newer one current."""
    require(os.geteuid() == 0, "needs root (the role installs root's files)")
    directory = tmp_path / "collector"
    old_layout = directory / "ansible_collections" / "netstate" / "tcp" / "plugins" / "module_utils"
    old_layout.mkdir(parents=True)
    (old_layout / "collect.py").write_text("raise ImportError\n")
    for name in ("0.0.1-aaaaaaaaaaaa", "0.0.2-bbbbbbbbbbbb"):
        (directory / "releases" / name / PACKAGE_PATH).mkdir(parents=True)
        time.sleep(0.05)  # the newer release is the newer by mtime
    os.symlink("releases/0.0.2-bbbbbbbbbbbb", str(directory / "current"))
    return directory


def test_a_release_replaces_the_old_layout_and_keeps_the_previous_one(tmp_path, earlier):
    before = tree(earlier)
    assert run(tmp_path, earlier, "--check") > 0
    assert tree(earlier) == before  # check mode changed nothing
    assert run(tmp_path, earlier) > 0
    releases = sorted(os.listdir(str(earlier / "releases")))
    current = os.readlink(str(earlier / "current"))
    assert len(releases) == 2 and "0.0.2-bbbbbbbbbbbb" in releases, releases  # the previous kept, the older gone
    new = next(name for name in releases if name != "0.0.2-bbbbbbbbbbbb")
    assert current == "releases/" + new and re.match(r"^\d+\.\d+\.\d+-[0-9a-f]{12}$", new), current
    assert sorted(os.listdir(str(earlier))) == ["current", "releases"]  # the old layout is gone
    package = earlier / "current" / PACKAGE_PATH
    sources = sorted(name for name in os.listdir(ENGINE) if name.endswith(".py"))
    assert sorted(os.listdir(str(package))) == sorted(sources + ["__pycache__"])
    for name in sources:
        with open(os.path.join(ENGINE, name), "rb") as handle:
            assert (package / name).read_bytes() == handle.read(), name
        status = os.stat(str(package / name))
        assert (status.st_mode & 0o7777, status.st_uid, status.st_gid) == (0o644, 0, 0), name
    compiled = sorted(name.split(".")[0] + ".py" for name in os.listdir(str(package / "__pycache__")))
    assert compiled == sources
    path = str(earlier / "releases" / new)
    for part in PACKAGE_PATH.split(os.sep):
        path = os.path.join(path, part)
        status = os.stat(path)
        assert (status.st_mode & 0o7777, status.st_uid) == (0o755, 0), path
    # the collector runs from the link as the jobs run it
    done = subprocess.run("cd %s/current && exec %s -E -s -m %s --format json --quiet"
                          % (earlier, sys.executable, PACKAGE_PATH.replace(os.sep, ".") + ".collect"),
                          shell=True, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and '"states"' in done.stdout, done.stderr
    # idempotent, in check mode and for real
    after = tree(earlier)
    assert run(tmp_path, earlier, "--check") == 0
    assert run(tmp_path, earlier) == 0
    assert tree(earlier) == after


def test_check_mode_on_a_host_without_the_collector_changes_nothing(tmp_path):
    require(os.geteuid() == 0, "needs root (the role installs root's files)")
    directory = tmp_path / "collector"
    assert run(tmp_path, directory, "--check") > 0
    assert not directory.exists()
