# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for fleet tests: ss on a fleet host as the oracle, fact caches, bracketing checks."""

import json
import os
import shutil
import subprocess
import sys

from tests.support.ss_oracle import ALL_STATES, Snapshot, rows

GATHER = "netstate.tcp.gather"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def playbook_env(extra=None):
    """Environment for ansible-playbook: this checkout's collection and ansible.cfg."""
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", os.path.join(ROOT, ".build", "collections"))
    env.setdefault("ANSIBLE_CONFIG", os.path.join(ROOT, "ansible.cfg"))
    # Fleet hosts set their interpreter in the inventory; localhost uses the controller's own.
    env.pop("ANSIBLE_PYTHON_INTERPRETER", None)
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.update(extra or {})
    return env


def ansible_binary(name="ansible-playbook"):
    binary = os.path.join(os.path.dirname(sys.executable), name)
    return binary if os.path.exists(binary) else (shutil.which(name) or name)


def run_playbook(fleet, playbook, *args, env=None, timeout=600, inventory=None):
    """ansible-playbook -i <fleet inventory> PLAYBOOK ARGS as a plain subprocess (stderr into stdout)."""
    command = [ansible_binary(), "-i", str(inventory or fleet.inventory), str(playbook)] + [str(a) for a in args]
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=playbook_env(env), timeout=timeout, cwd=ROOT, check=False)


class HostSnapshot(Snapshot):
    """tests/support/ss_oracle.Snapshot of a fleet host, from ss run through podman exec."""

    def __init__(self, fleet, host, top=10):  # pylint: disable=super-init-not-called
        out = fleet.exec(host, "ss -H -n -t -a; echo '@@'; ss -H -n -u -a; echo '@@'; ss -H -n -t -l -p").stdout
        tcp, udp, listen = out.split("@@\n")
        self.tcp = rows(tcp)
        self.udp = rows(udp)
        self.listen = rows(listen, with_process=True)
        self.top = top


def read_fact_cache(directory, host):
    """The facts a jsonfile fact cache holds for host (ansible-core 2.19 wraps them in __payload__)."""
    for name in ("s1_" + host, host):
        path = os.path.join(str(directory), name)
        if os.path.exists(path):
            with open(path) as handle:
                data = json.load(handle)
            if isinstance(data, dict) and "__payload__" in data:
                data = json.loads(data["__payload__"])
            return data
    raise AssertionError("no fact cache entry for %s in %s (%s)" % (host, directory, os.listdir(str(directory))))


def between(value, first, second, what):
    low, high = min(first, second), max(first, second)
    assert low <= value <= high, "%s: gathered %r, ss said %r before and %r after" % (what, value, first, second)


def check_against_ss(facts, before, after, host):
    """Every aggregate of ansible_facts.netstate lies between ss just before and just after."""
    tcp = facts["tcp"]
    assert set(tcp["states"]) == set(ALL_STATES)
    before_states, after_states = before.states(), after.states()
    for state in ALL_STATES:
        between(tcp["states"][state], before_states[state], after_states[state], "%s %s" % (host, state))
    between(tcp["total"], len(before.tcp), len(after.tcp), host + " tcp total")
    before_families, after_families = before.families(), after.families()
    for family in ("ipv4", "ipv6"):
        between(tcp["families"][family]["total"], before_families[family]["total"],
                after_families[family]["total"], "%s %s total" % (host, family))
    before_ports, after_ports = before.local_ports(), after.local_ports()
    assert set(tcp["local_ports"]) == set(before_ports) == set(after_ports), host
    for port, entry in tcp["local_ports"].items():
        between(entry["total"], before_ports[port]["total"], after_ports[port]["total"], "%s port %s" % (host, port))
        for state in ALL_STATES:
            between(entry["states"][state], before_ports[port]["states"][state], after_ports[port]["states"][state],
                    "%s port %s %s" % (host, port, state))
    before_peers, after_peers = before.peers(), after.peers()
    for peer in tcp["peers"]:
        between(peer["total"], before_peers.get(peer["address"], {"total": 0})["total"],
                after_peers.get(peer["address"], {"total": 0})["total"], "%s peer %s" % (host, peer["address"]))
    between(facts["udp"]["total"], before.udp_totals()["total"], after.udp_totals()["total"], host + " udp")
    before_listeners, after_listeners = before.listeners(), after.listeners()
    tcp_listeners = [item for item in facts["listeners"] if item["protocol"] == "tcp"]
    assert {(i["address"], i["port"]) for i in tcp_listeners} == set(before_listeners) == set(after_listeners), host
    for item in tcp_listeners:
        key = (item["address"], item["port"])
        assert item["backlog"] == before_listeners[key]["backlog"] == after_listeners[key]["backlog"], (host, key)
        between(item["queue"], before_listeners[key]["queue"], after_listeners[key]["queue"],
                "%s %s:%s accept queue" % ((host,) + key))
    busiest = tcp["ephemeral"]["busiest"]
    if busiest is not None:
        destination = (busiest["address"], busiest["port"])
        between(busiest["connections"], before.busiest_destination()[destination],
                after.busiest_destination()[destination], "%s busiest destination" % host)
