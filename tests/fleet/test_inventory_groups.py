# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Facts in inventories: docs/inventory/netstate.constructed.yml on real SSH hosts.

netstate.tcp.gather fills a jsonfile fact cache while three hosts hold a CLOSE_WAIT leak, a
listener on 443 and ephemeral-port pressure, and a fourth a small CLOSE_WAIT leak that only its
own netstate_health_thresholds calls one; the loads are stopped; then a later play, with the
fleet inventory plus the shipped constructed inventory, targets each group and runs on the
matching hosts only, from the cache alone.
"""

import json
import os
import re
import subprocess

import pytest
from fleetcheck import GATHER, ROOT, ansible_binary, playbook_env, read_fact_cache, run_playbook

from tests.conftest import require

pytestmark = pytest.mark.fleet

EXAMPLE = os.path.join(ROOT, "docs", "inventory", "netstate.constructed.yml")
RULES = os.path.join(ROOT, "plugins", "plugin_utils", "health_builtin_rules.yml")
# The fourth host holds itself to 20 CLOSE_WAIT per port, as netstate.tcp.health_check would.
OVERRIDES = """\
all:
  hosts:
    %s:
      netstate_health_thresholds:
        close_wait_per_port: 20
"""
PORT_RANGE = (40000, 42047)  # 2048 ports: 700 TIME_WAIT towards one destination is a share of 0.34

LATER_PLAY = """\
- name: Hosts leaking CLOSE_WAIT
  hosts: close_wait_leak
  gather_facts: false
  tasks:
    - name: in close_wait_leak
      ansible.builtin.ping:

- name: Hosts listening on 443
  hosts: listens_443
  gather_facts: false
  tasks:
    - name: in listens_443
      ansible.builtin.ping:

- name: Hosts near ephemeral-port exhaustion
  hosts: ephemeral_pressure
  gather_facts: false
  tasks:
    - name: in ephemeral_pressure
      ansible.builtin.ping:
"""


def ran_on(output):
    """{task name: [hosts it ran on]} from the default callback."""
    result = {}
    task = None
    for line in output.splitlines():
        header = re.match(r"TASK \[(.*)\] \*+$", line)
        if header:
            task = header.group(1)
            result.setdefault(task, [])
            continue
        host = re.match(r"ok: \[([^\]]+)\]", line)
        if task and host:
            result[task].append(host.group(1))
    return result


@pytest.fixture(scope="module")
def cached(fleet, tmp_path_factory):
    """Gather with three loaded hosts into a jsonfile cache; the loads are gone afterwards."""
    require(len(fleet.hosts) >= 5, "needs 5 fleet hosts (NETSTATE_FLEET_HOSTS)")
    leak, https, pressure, strict = fleet.hosts[:4]
    tmp = tmp_path_factory.mktemp("inventory")
    overrides = tmp / "overrides.yml"
    overrides.write_text(OVERRIDES % strict)
    cache = {"ANSIBLE_CACHE_PLUGIN": "jsonfile", "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp / "facts")}
    original_range = fleet.exec(pressure, "sysctl -n net.ipv4.ip_local_port_range").stdout.split()
    handles = []
    try:
        fleet.exec(pressure, "sysctl -q -w net.ipv4.ip_local_port_range='%d %d'" % PORT_RANGE)
        handles.append(fleet.loadgen(leak, "close_wait", port=8082, count=150))
        handles.append(fleet.loadgen(https, "sink", port=443))
        handles.append(fleet.loadgen(pressure, "time_wait", port=8081, count=700))
        handles.append(fleet.loadgen(strict, "close_wait", port=8089, count=30))
        run = run_playbook(fleet, GATHER, "-e", "netstate_gather_report_dir=%s" % (tmp / "report"), env=cache)
        info = {handle.host: handle.info for handle in handles}
    finally:
        for handle in handles:
            handle.stop()
        fleet.exec(pressure, "sysctl -q -w net.ipv4.ip_local_port_range='%s'" % " ".join(original_range))
    assert run.returncode == 0, run.stdout[-4000:]
    return {"tmp": tmp, "env": cache, "leak": leak, "https": https, "pressure": pressure, "strict": strict,
            "overrides": overrides, "info": info}


def test_later_play_targets_the_groups_from_the_cache(fleet, cached):
    playbook = cached["tmp"] / "later.yml"
    playbook.write_text(LATER_PLAY)
    # The loads are stopped: only the cached facts can put these hosts in these groups.
    assert "CLOSE-WAIT" not in fleet.exec(cached["leak"], "ss -H -t -n state close-wait").stdout.upper()
    run = run_playbook(fleet, playbook, "-i", cached["overrides"], "-i", EXAMPLE, env=cached["env"])
    assert run.returncode == 0, run.stdout[-4000:]
    ran = ran_on(run.stdout)
    assert sorted(ran["in close_wait_leak"]) == sorted([cached["leak"], cached["strict"]]), run.stdout
    assert ran["in listens_443"] == [cached["https"]], run.stdout
    assert ran["in ephemeral_pressure"] == [cached["pressure"]], run.stdout


def test_groups_and_the_facts_behind_them(fleet, cached):
    out = subprocess.run([ansible_binary("ansible-inventory"), "-i", str(fleet.inventory),
                          "-i", str(cached["overrides"]), "-i", EXAMPLE, "--list"],
                         capture_output=True, text=True, env=playbook_env(cached["env"]), cwd=ROOT, check=True)
    inventory = json.loads(out.stdout)

    def members(group):
        return sorted(inventory.get(group, {}).get("hosts", []))

    assert members("netstate_gathered") == sorted(fleet.hosts)
    assert members("has_listeners") == sorted(fleet.hosts)  # sshd on every host
    assert members("backend_netlink") == sorted(fleet.hosts)
    assert members("listens_22") == sorted(fleet.hosts)
    assert members("close_wait_leak") == sorted([cached["leak"], cached["strict"]])
    assert members("https_listeners") == members("listens_443") == [cached["https"]]
    assert members("ephemeral_pressure") == [cached["pressure"]]

    hostvars = inventory["_meta"]["hostvars"]
    leak = read_fact_cache(cached["tmp"] / "facts", cached["leak"])["netstate"]
    assert hostvars[cached["leak"]]["netstate_close_wait_worst"] == leak["tcp"]["local_ports"]["8082"]["states"][
        "CLOSE_WAIT"] >= cached["info"][cached["leak"]]["expect"]["CLOSE_WAIT"]
    busiest = read_fact_cache(cached["tmp"] / "facts", cached["pressure"])["netstate"]["tcp"]["ephemeral"]
    assert busiest["size"] == PORT_RANGE[1] - PORT_RANGE[0] + 1
    assert hostvars[cached["pressure"]]["netstate_ephemeral_share"] == busiest["busiest"]["share"] > 0.25
    assert hostvars[cached["strict"]]["netstate_close_wait_max"] == 20
    assert 20 < hostvars[cached["strict"]]["netstate_close_wait_worst"] <= 100
    for host in fleet.hosts:
        assert hostvars[host]["netstate_ephemeral_share_max"] == 0.25
        if host != cached["strict"]:
            assert hostvars[host]["netstate_close_wait_max"] == 100
        if host not in (cached["leak"], cached["pressure"], cached["strict"]):
            assert hostvars[host]["netstate_close_wait_worst"] <= 100
            assert hostvars[host]["netstate_ephemeral_share"] <= 0.25
