# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tuning role's report template on real connection facts: the TIME_WAIT share is the health rule's.

A namespace holds 300 TIME_WAIT sockets towards one destination in an ephemeral range of 1000 ports.
A play on localhost gathers its facts with netstate.tcp.connection_facts before and after (no sysctl
is changed), renders roles/tuning/templates/report.j2 as the role does, and writes the facts it
rendered from and the report; the share printed is rule time_wait_ephemeral_share's value, verdict and threshold
on those facts (evaluated here by the rule engine), with the host's netstate_health_thresholds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from ansible_collections.netstate.tcp.plugins.plugin_utils import _fleet_model as model
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
TEMPLATE = os.path.join(ROOT, "roles", "tuning", "templates", "report.j2")


def play(namespace, facts_file, report_file, thresholds):
    gather = {"namespace": namespace, "gather_subset": ["ports", "counters"]}  # as the role gathers
    return [{
        "name": "Render the tuning report", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"ansible_python_interpreter": "/usr/bin/python3", "netstate_tuning_profile": "none",
                 "netstate_tuning_persist": True, "netstate_health_thresholds": thresholds},
        "tasks": [
            {"name": "Before", "netstate.tcp.connection_facts": gather},
            {"name": "Remember",
             "ansible.builtin.set_fact": {"__netstate_tuning_before": "{{ ansible_facts.netstate }}"}},
            {"name": "After", "netstate.tcp.connection_facts": gather},
            {"name": "Keep the facts", "ansible.builtin.copy": {
                "content": "{{ {'before': __netstate_tuning_before, 'after': ansible_facts.netstate} | to_json }}",
                "dest": facts_file, "mode": "0644"}},
            {"name": "Report", "ansible.builtin.copy": {
                "content": "{{ lookup('ansible.builtin.template', '%s') | trim }}" % TEMPLATE,
                "dest": report_file, "mode": "0644"}},
        ]}]


@pytest.mark.netns
@pytest.mark.parametrize("thresholds", [{}, {"time_wait_ephemeral_share": 0.5}])
def test_the_share_is_the_rule_s(netns, tmp_path, thresholds):
    netns.sysctl("net.ipv4.ip_local_port_range", "40000 40999")
    netns.hold_mix({"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 512}],
                    "time_wait": [{"to": ["127.0.0.1", 8080], "count": 300}]}, tmp_path)
    playbook = tmp_path / "report.yml"
    facts_file = tmp_path / "facts.json"
    report_file = tmp_path / "report.txt"
    playbook.write_text(yaml.safe_dump(play(netns.name, str(facts_file), str(report_file), thresholds)))
    done = subprocess.run([PLAYBOOK, str(playbook), "-i", "localhost,"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    facts = json.loads(facts_file.read_text())
    rules = [rule for rule in model.host_rules(thresholds) if rule.name == "time_wait_ephemeral_share"]
    for label in ("before", "after"):
        (result,) = health.evaluate(rules, facts[label])
        busiest = facts[label]["tcp"]["ephemeral"]["busiest"]
        line = next(line for line in report_file.read_text().splitlines() if line.startswith(label + ": "))
        assert "ephemeral range 40000-40999 (1000 ports)" in line
        assert "busiest destination 127.0.0.1:8080 holds %d port(s), %d in TIME_WAIT" % (
            busiest["connections"], busiest["time_wait"]) in line
        assert "(%.1f%% of the range; %s)" % (100.0 * result["value"], result["message"]) in line, line
        assert result["status"] == ("warning" if not thresholds else "ok")  # 300 of 1000 ports
