# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet itself: inventory reaches every host, idempotent up, a second fleet side by side,
least privilege (own net.* sysctls only), stop/start, and every load generator scenario against ss."""

import ipaddress
import json
import os
import socket
import subprocess

import fleet as fleet_module
import pytest
from fleetcheck import HostSnapshot, ansible_binary, playbook_env

pytestmark = pytest.mark.fleet


def test_inventory_reaches_every_host_over_ssh(fleet):
    run = subprocess.run([ansible_binary("ansible"), "fleet", "-i", str(fleet.inventory),
                          "-m", "ansible.builtin.command", "-a", "hostname"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=playbook_env(), timeout=300,
                         check=False)
    assert run.returncode == 0, run.stdout
    for host in fleet.hosts:
        assert "%s | CHANGED | rc=0 >>\n%s" % (host, host) in run.stdout, run.stdout


def test_up_again_changes_nothing(fleet):
    containers = fleet._containers()
    inventory = fleet.inventory.read_text()
    addresses = [fleet.address(host) for host in fleet.hosts]
    fleet.up(len(fleet.hosts))
    assert fleet._containers() == containers
    assert fleet.inventory.read_text() == inventory
    assert [fleet.address(host) for host in fleet.hosts] == addresses


def test_second_fleet_side_by_side_and_down_removes_it(fleet, tmp_path):
    other = fleet_module.Fleet(name="%s-b" % fleet.name[:13], owner_pid=os.getpid())
    inventory = tmp_path / "other.yml"
    try:
        other.up(1, inventory=inventory)
        assert other.subnet != fleet.subnet
        document = json.loads(inventory.read_text().split("\n", 1)[1])  # YAML inventory, written as JSON
        host_vars = document["all"]["children"]["fleet"]["hosts"]["h01"]
        assert host_vars["ansible_host"] == other.address("h01")
        assert other.ssh("h01", "hostname").stdout.strip() == "h01"
        assert fleet.ssh(fleet.hosts[0], "true").returncode == 0  # ours is untouched
    finally:
        removed = other.down()
    assert any(item.startswith("container ") for item in removed)
    assert not inventory.exists() and not other.dir.exists()
    assert other._containers() == {}
    assert other.podman.run("network", "exists", other.network, check=False).returncode != 0
    assert other.down() == []  # idempotent


def test_hosts_may_write_their_own_net_sysctls_only(fleet):
    host = fleet.hosts[0]
    key = "/proc/sys/net/ipv4/tcp_fin_timeout"
    with open(key) as handle:
        machine_value = handle.read().strip()
    original = fleet.exec(host, "cat " + key).stdout.strip()
    try:
        fleet.exec(host, "sysctl -q -w net.ipv4.tcp_fin_timeout=17")
        assert fleet.exec(host, "cat " + key).stdout.strip() == "17"
        with open(key) as handle:
            assert handle.read().strip() == machine_value  # the machine's own namespace did not change
    finally:
        fleet.exec(host, "sysctl -q -w net.ipv4.tcp_fin_timeout=%s" % original)
    swappiness = fleet.exec(host, "cat /proc/sys/vm/swappiness").stdout.strip()
    denied = fleet.exec(host, "sysctl -w vm.swappiness=%s" % swappiness, check=False)
    assert denied.returncode != 0 and "permission denied" in denied.stderr.lower()
    denied = fleet.exec(host, "sysctl -w kernel.hostname=other", check=False)
    assert denied.returncode != 0


def test_stopped_host_is_unreachable_until_started(fleet):
    host = fleet.hosts[-1]
    fleet.stop_host(host)
    assert not fleet.is_running(host)
    with pytest.raises(OSError):
        socket.create_connection((fleet.address(host), 22), timeout=2).close()
    fleet.start_host(host)
    assert fleet.ssh(host, "hostname").stdout.strip() == host


def test_loadgen_rejects_bad_parameters_before_building(fleet):
    with pytest.raises(fleet_module.FleetError, match="--count must be in 1"):
        fleet.loadgen(fleet.hosts[0], "established", count=0)
    with pytest.raises(fleet_module.FleetError, match="--clients .* must exceed --backlog"):
        fleet.loadgen(fleet.hosts[0], "accept_full", backlog=8, clients=9)
    with pytest.raises(fleet_module.FleetError, match="invalid choice: 'nope'"):
        fleet.loadgen(fleet.hosts[0], "nope")


SCENARIOS = [
    ("established", {"port": 9080, "count": 300}),
    ("close_wait", {"port": 9082, "count": 120}),
    ("accept_full", {"port": 9083, "backlog": 3, "clients": 12}),
    # the second source is not local yet: loadgen puts it on lo (see test body)
    ("peers", {"port": 9084, "count": 200, "sources": ["127.0.1.1", "SLICE"]}),
    ("time_wait", {"port": 9081, "count": 2000}),
    ("udp_ipv6", {"port": 9085, "count": 3, "connections": 7}),
    ("healthy", {"port": 9087, "count": 15}),
]


@pytest.mark.parametrize("scenario,params", SCENARIOS, ids=[name for name, _params in SCENARIOS])
def test_loadgen_builds_what_it_says_and_leaves_nothing(fleet, scenario, params):
    host = fleet.hosts[1 % len(fleet.hosts)]
    ports = {params["port"] + offset for offset in range(3)}

    def ours(snapshot):
        """Socket states on the scenario's ports (either end), so other tests' sockets do not count."""
        counts = {}
        for row in snapshot.tcp:
            if row["lport"] in ports or row["pport"] in ports:
                counts[row["state"]] = counts.get(row["state"], 0) + 1
        return counts

    # an address of our own slice no host uses (the last one); it only ever lives on the host's lo
    extra = str(ipaddress.ip_network(fleet.subnet)[-2])
    if "sources" in params:
        params = dict(params, sources=[extra if s == "SLICE" else s for s in params["sources"]])
    assert ours(HostSnapshot(fleet, host)) == {}
    load = fleet.loadgen(host, scenario, **params)
    try:
        during = HostSnapshot(fleet, host)
        expect = dict(load.info["expect"])
        udp = expect.pop("udp", None)
        assert ours(during) == expect, (scenario, load.info)
        if udp:
            udp_ports = range(params["port"], params["port"] + params["count"])
            mine = [row for row in during.udp if row["lport"] in udp_ports]
            assert {family: sum(1 for row in mine if row["family"] == family) for family in ("ipv4", "ipv6")} == {
                family: udp.get(family, 0) for family in ("ipv4", "ipv6")}
        if scenario == "peers":
            accepted = {}
            for row in during.tcp:
                if row["lport"] == params["port"] and row["state"] == "ESTABLISHED":
                    accepted[row["peer"]] = accepted.get(row["peer"], 0) + 1
            assert accepted == load.info["peers"]
            assert extra + "/32" in fleet.exec(host, "ip -4 addr show dev lo").stdout
    finally:
        assert load.stop() == 0, load.output()
    after = HostSnapshot(fleet, host)
    assert ours(after) == {}, "%s left sockets behind" % scenario
    assert extra + "/32" not in fleet.exec(host, "ip -4 addr show dev lo").stdout
