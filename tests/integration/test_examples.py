# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every EXAMPLES block of every module and filter runs as pasted.

One play per plugin: its EXAMPLES tasks, unchanged, run by ansible-playbook on localhost inside private
namespaces (tests/support/sandbox.py): a network namespace of its own holding the sockets the examples
mention (FIXTURES), a private mount namespace where /etc/sysctl.d and /run/netns are empty tmpfs (the
drop-in a sysctl example writes and the `blue` namespace a connection_facts example names stay there), and
a private PID namespace (the examples' `namespace: all` sees this play's processes only). A plugin without
an entry in FIXTURES runs with none: a new plugin's examples are run as soon as it exists.

Every task must run: the play's recap has no failed, skipped, ignored, rescued or unreachable task.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import Namespace, require
from tests.support import sandbox
from tests.integration.test_sysctl_netns import REPO, _ansible_playbook, _env, _prerequisites

pytestmark = pytest.mark.netns

RUN_TIMEOUT = 300

# What the examples mention, per plugin: sockets (tests/support/sockmix.py's spec), variables they take
# from the inventory, named network namespaces, and tasks that run before them (facts they read).
GATHER = [{"name": "Gather the facts the examples read", "netstate.tcp.connection_facts": None}]
FIXTURES = {
    "connection_facts": {
        "sockets": {"listeners": [{"address": "127.0.0.1", "port": 80, "backlog": 16},
                                  {"address": "127.0.0.1", "port": 8080, "backlog": 16}],
                    "established": [{"to": ["127.0.0.1", 80], "from": "127.0.0.2", "count": 3},
                                    {"to": ["127.0.0.1", 8080], "from": "127.0.0.3", "count": 2}]},
        "namespaces": ["blue"],
    },
    "listener_facts": {
        "sockets": {"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 16}],
                    "close_wait": [{"to": ["127.0.0.1", 8080], "count": 2}],
                    "udp": [{"address": "0.0.0.0", "port": 5353}]},
    },
    "health_check": {
        "sockets": {"listeners": [{"address": "127.0.0.1", "port": 5432, "backlog": 16}],
                    "established": [{"to": ["127.0.0.1", 5432], "from": "127.0.0.2", "count": 3}]},
        "vars": {"my_rules": [{"name": "postgres_connections", "query": 'tcp.remote_ports."5432".total',
                               "max": 400}]},
    },
    "health_report": {
        "hosts": ["localhost", "web2", "web3"],  # three slices of one host each
        "before": [{"name": "Check every host for the slices", "netstate.tcp.health_check": None,
                    "register": "netstate_health_result"},
                   {"name": "Write the three job slices the merge example reads",
                    "netstate.tcp.health_report": {"hosts": ["{{ item }}"], "dest": "slices/{{ index + 1 }}"},
                    "loop": "{{ ansible_play_hosts_all }}", "loop_control": {"index_var": "index"},
                    "run_once": True}],
    },
    "peer_block": {
        "sockets": {"listeners": [{"address": "127.0.0.1", "port": 443, "backlog": 16}],
                    "established": [{"to": ["127.0.0.1", 443], "from": "127.0.0.2", "count": 3}]},
    },
    "health_evaluate": {"before": GATHER},
    "health_threshold": {
        "sockets": {"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 16}],
                    "close_wait": [{"to": ["127.0.0.1", 8080], "count": 2}]},
        "before": GATHER,
    },
}

RECAP = re.compile(r"^(\S+)\s*:\s*(ok=.*)$", re.M)


def plugins():
    found = []
    for kind in ("modules", "filter"):
        for path in sorted((REPO / "plugins" / kind).glob("*.py")):
            if not path.name.startswith("_"):
                found.append(pytest.param(path, id="%s/%s" % (kind, path.stem)))
    return found


def examples_of(path: Path) -> list:
    """The EXAMPLES string of a plugin, read from its source as ansible-doc does, as a task list."""
    import ast
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "EXAMPLES":
            tasks = yaml.safe_load(node.value.value)
            assert isinstance(tasks, list) and tasks, "%s: EXAMPLES is not a list of tasks" % path.name
            for task in tasks:
                assert isinstance(task, dict) and "hosts" not in task and "tasks" not in task, (
                    "%s: EXAMPLES holds a play among its tasks: %r" % (path.name, task.get("name")))
            return tasks
    raise AssertionError("%s has no EXAMPLES" % path.name)


def run_examples(netns: Namespace, work: Path, tasks: list, fixture: dict) -> subprocess.CompletedProcess:
    play = {"name": "EXAMPLES", "hosts": "all", "gather_facts": False, "vars": fixture.get("vars", {}),
            "tasks": fixture.get("before", []) + tasks}
    playbook = work / "examples.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    inventory = work / "inventory.ini"
    inventory.write_text("".join("%s ansible_connection=local ansible_python_interpreter=%s\n" % (host, sys.executable)
                                 for host in fixture.get("hosts", ["localhost"])))
    command = [_ansible_playbook(), "-i", str(inventory), str(playbook)]
    try:
        status, output = sandbox.run(netns.name, work, command, _env(), sockets=fixture.get("sockets", {}),
                                     namespaces=fixture.get("namespaces", []), timeout=RUN_TIMEOUT)
    except sandbox.SandboxTimeout as timeout:
        pytest.fail("the examples did not finish within %d s:\n%s" % (RUN_TIMEOUT, timeout.output[-5000:]))
    return subprocess.CompletedProcess(command, status, output, "")


@pytest.mark.parametrize("path", plugins())
def test_examples_run_as_pasted(netns, tmp_path, path):
    _prerequisites()
    require(os.path.exists("/usr/bin/unshare"), "needs util-linux (unshare)")
    tasks = examples_of(path)
    fixture = FIXTURES.get(path.stem, {})
    result = run_examples(netns, tmp_path, tasks, fixture)
    assert result.returncode == 0, result.stdout[-8000:]
    recap = dict(RECAP.findall(result.stdout))
    assert set(recap) == set(fixture.get("hosts", ["localhost"])), result.stdout[-3000:]
    ran = len(tasks) + len(fixture.get("before", []))
    for host, line in recap.items():
        counts = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}
        for key in ("failed", "skipped", "ignored", "rescued", "unreachable"):
            assert counts.get(key, 0) == 0, (host, key, counts, result.stdout[-8000:])
        if host == "localhost":  # the first host runs the run_once tasks too: every task, once
            assert counts["ok"] == ran, (counts, ran, result.stdout[-8000:])


def test_every_plugin_with_examples_is_run():
    """The fixtures name plugins that exist: a renamed plugin does not leave its fixture behind."""
    names = {param.values[0].stem for param in plugins()}
    assert set(FIXTURES) <= names, set(FIXTURES) - names
    assert {"connection_facts", "listener_facts", "sysctl", "peer_block", "fleet_report"} <= names
