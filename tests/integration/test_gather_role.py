# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""roles/gather: every connection_facts option in netstate_gather_args is declared, checked and passed on.

A key the module does not have (a typo such as `topp`) or a value of the wrong type fails the role's
argument validation, naming the key, before any host is gathered; a valid option (walk_budget,
walk_all_namespaces) reaches the module. One localhost host gathers from a private network
namespace holding one real listener; a second host points at a closed port and must never be tried
when the arguments are wrong.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest
import yaml

BIN = os.path.dirname(sys.executable)
PLAYBOOK = os.path.join(BIN, "ansible-playbook")
GATHER_TASK = "TASK [netstate.tcp.gather : Gather TCP connection facts]"


@pytest.fixture
def listening_netns(netns, tmp_path):
    netns.hold_mix({"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 16}]}, tmp_path)
    return netns


def run_gather(tmp_path, namespace, args, second_host=False):
    hosts = {"lone": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
    if second_host:  # nothing listens on port 1: trying this host would show as UNREACHABLE
        hosts["closed"] = {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_connection": "ssh"}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    result = tmp_path / "result.json"
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "roles": [{"role": "netstate.tcp.gather"}],
        "post_tasks": [{"name": "Keep the module result", "ansible.builtin.copy": {
            "content": "{{ netstate_gather_result | to_json }}", "dest": str(result), "mode": "0644"},
            "delegate_to": "localhost"}]}]))
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({
        "netstate_gather_args": dict(args, namespace=namespace), "netstate_gather_show_report": False,
        "netstate_gather_report_dir": str(tmp_path / "report"), "netstate_gather_fail_unreachable": False}))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default")
    done = subprocess.run([PLAYBOOK, "-i", str(inventory), str(playbook), "-e", "@" + str(variables)],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300, env=env, check=False)
    return done, (json.loads(result.read_text()) if result.exists() else None)


@pytest.mark.netns
@pytest.mark.parametrize("args,named", [
    ({"topp": 5}, "topp"),
    ({"gather_subset": ["all"]}, "gather_subset"),  # the role's own variable, not a key of the args
    ({"max_sockets": "many"}, "max_sockets"),
    ({"backend": "ss"}, "backend"),
    ({"walk_all_namespaces": "sometimes"}, "walk_all_namespaces"),
])
def test_a_wrong_key_or_type_fails_before_any_host_is_gathered(listening_netns, tmp_path, args, named):
    done, result = run_gather(tmp_path, listening_netns.name, args, second_host=True)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert GATHER_TASK not in output, output[-3000:]
    assert "UNREACHABLE" not in output and result is None, output[-3000:]
    assert "netstate_gather_args" in output and named in output, output[-3000:]


@pytest.mark.netns
def test_every_declared_option_reaches_the_module(listening_netns, tmp_path):
    # walk_budget 0: no descriptor may be read, so the one listener stays unattributed - which only
    # happens if the option reached the module (its default is a time budget that finds it)
    done, result = run_gather(tmp_path, listening_netns.name, {
        "walk_budget": 0, "walk_all_namespaces": False, "backend": "netlink", "sample_interval": 0,
        "max_sockets": 10, "local_ports_limit": 5, "listeners_limit": 5})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    facts = result["ansible_facts"]["netstate"]
    assert facts["backend"] == "netlink" and facts["namespace"] == listening_netns.name
    assert facts["listener_walk"]["budget"] == 0, facts["listener_walk"]
    assert facts["listener_walk"]["unattributed"] == 1, facts["listener_walk"]
    [listener] = facts["listeners"]
    assert listener["port"] == 8080 and listener["pid"] is None

    done, result = run_gather(tmp_path, listening_netns.name, {})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    walk = result["ansible_facts"]["netstate"]["listener_walk"]
    assert walk["unattributed"] == 0, walk  # the control: without the option the listener is attributed
