# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet itself: inventory reaches every host, idempotent up, a second fleet side by side,
least privilege (own net.* sysctls only), stop/start, and every load generator scenario against ss."""

import hashlib
import http.client
import ipaddress
import json
import os
import socket
import subprocess
import sys
import urllib.parse

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
    fleet.up(len(fleet.hosts), systems=[fleet.os(host) for host in fleet.hosts],
             init=[fleet.init(host) for host in fleet.hosts])
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


# ------------------------------------------------------------------------------ host kinds

KINDS = [(system, init) for system in fleet_module.SYSTEMS for init in fleet_module.INITS]
VERSION_ID = {"debian11": "11", "debian12": "12", "debian13": "13"}


@pytest.fixture(scope="module")
def mixed(fleet_factory):
    """Six hosts, every kind once: the systems and the inits are taken in turn (3 x 2, coprime)."""
    return fleet_factory("k", 6, systems=tuple(fleet_module.SYSTEMS), init=fleet_module.INITS)


def test_bad_kinds_are_refused_before_anything_changes(tmp_path):
    other = fleet_module.Fleet(name="nokinds", root=tmp_path / "state")
    with pytest.raises(fleet_module.FleetError, match=r"^os: unknown system 'debian10'"):
        other.up(1, systems=("debian12", "debian10"))
    with pytest.raises(fleet_module.FleetError, match=r"^init: unknown init 'openrc'"):
        other.up(1, init="openrc")
    with pytest.raises(fleet_module.FleetError, match=r"^os: expected a non-empty"):
        other.up(1, systems=())
    assert not (tmp_path / "state").exists()
    cli = subprocess.run([sys.executable, fleet_module.__file__, "--name", "nokinds", "up", "--os", "debian9"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                         env=dict(os.environ, NETSTATE_FLEET_STATE_DIR=str(tmp_path / "state")))
    assert cli.returncode == 1 and "os: unknown system 'debian9'" in cli.stdout, cli.stdout
    assert not (tmp_path / "state").exists()


def test_every_kind_has_its_own_image():
    names = {fleet_module.image_name(system, init) for system, init in KINDS}
    assert len(names) == len(KINDS)
    assert fleet_module.image_name("debian13", "systemd").startswith("localhost/netstate-fleet-debian13-systemd:")


def test_kinds_run_their_system_and_init(mixed):
    assert sorted((mixed.os(host), mixed.init(host)) for host in mixed.hosts) == sorted(KINDS)
    assert [mixed.os(host) for host in mixed.hosts[:3]] == list(fleet_module.SYSTEMS)  # in turn
    for host in mixed.hosts:
        release = dict(line.split("=", 1) for line in mixed.exec(host, "cat /etc/os-release").stdout.splitlines()
                       if "=" in line)
        assert release["ID"] == "debian" and release["VERSION_ID"].strip('"') == VERSION_ID[mixed.os(host)], release
        pid1 = mixed.exec(host, "cat /proc/1/comm").stdout.strip()
        if mixed.init(host) == "systemd":
            assert pid1 == "systemd", host
            assert mixed.exec(host, "systemctl is-system-running", check=False).stdout.strip() == "running", (
                host, mixed.exec(host, "systemctl --failed --no-legend", check=False).stdout)
            main_pid = mixed.exec(host, "systemctl show -p MainPID --value ssh.service").stdout.strip()
            assert mixed.exec(host, "cat /proc/%s/comm" % main_pid).stdout.strip() == "sshd", host
            assert mixed.exec(host, "systemctl is-active ssh.service").stdout.strip() == "active"
        else:
            assert pid1 == "sshd", host
            assert mixed.exec(host, "test -d /run/systemd/system", check=False).returncode != 0
        assert mixed.ssh(host, "hostname").stdout.strip() == host


def test_kinds_inventory_host_variables_match_the_hosts(mixed):
    listed = subprocess.run([ansible_binary("ansible-inventory"), "-i", str(mixed.inventory), "--list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=playbook_env(),
                            timeout=120, check=True)
    hostvars = json.loads(listed.stdout)["_meta"]["hostvars"]
    for host in mixed.hosts:
        assert hostvars[host]["fleet_os"] == mixed.os(host)
        assert hostvars[host]["fleet_init"] == mixed.init(host)
        assert hostvars[host]["ansible_python_interpreter"] == "/usr/bin/python3"
    # Ansible itself reaches every release with that interpreter, and its facts agree with fleet_os.
    run = subprocess.run([ansible_binary("ansible"), "fleet", "-i", str(mixed.inventory), "-m", "ansible.builtin.setup",
                          "-a", "filter=ansible_distribution_major_version", "-o"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=playbook_env(), timeout=300,
                         check=False)
    assert run.returncode == 0, run.stdout
    for host in mixed.hosts:
        line = next(line for line in run.stdout.splitlines() if line.startswith(host + " | SUCCESS"))
        facts = json.loads(line.split("=>", 1)[1])["ansible_facts"]
        assert facts["ansible_distribution_major_version"] == VERSION_ID[mixed.os(host)], line


def _through_proxy(the_fleet, method, url):
    connection = http.client.HTTPConnection(the_fleet.gateway, fleet_module.APT_PROXY_PORT, timeout=120)
    try:
        connection.request(method, url)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_apt_goes_through_the_fleet_proxy_which_caches_pool_files(mixed):
    host = next(h for h in mixed.hosts if (mixed.os(h), mixed.init(h)) == ("debian13", "systemd"))
    assert mixed.exec(host, "cat " + fleet_module.APT_PROXY_CONF).stdout.strip().splitlines() == [
        'Acquire::http::Proxy "%s";' % mixed.proxy_url, 'Acquire::Retries "5";', 'Acquire::Languages "none";']
    before = mixed.proxy_stats()
    update = mixed.exec(host, "apt-get update -q", check=False, timeout=300)
    assert update.returncode == 0, update.stdout + update.stderr
    # apt-get update exits 0 when index files failed ("Err:", "W: Some index files failed"): the lists
    # must be whole, or the next install finds nothing
    assert "Err:" not in update.stdout + update.stderr and "W: " not in update.stdout + update.stderr, (
        update.stdout + update.stderr)
    assert mixed.proxy_stats()["passed"] > before["passed"]
    # One pool file, by the URL and checksum apt itself would use: fetched once, then from the cache.
    uri = mixed.exec(host, "apt-get download --print-uris -q libpopt0").stdout.split()
    url, sha256 = uri[0].strip("'"), uri[-1].split(":", 1)[1]
    assert url.startswith("http://deb.debian.org/debian/pool/"), uri
    cached = mixed.root / "apt-cache" / "deb.debian.org" / urllib.parse.urlsplit(url).path.lstrip("/")
    if cached.exists():  # another fleet's run (the cache is shared) fetched it already
        cached.unlink()
    status, body = _through_proxy(mixed, "GET", url)
    assert status == 200 and hashlib.sha256(body).hexdigest() == sha256
    middle = mixed.proxy_stats()
    assert cached.read_bytes() == body
    cached.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # served from disk, not fetched again
    status, again = _through_proxy(mixed, "GET", url)
    assert status == 200 and again == cached.read_bytes() != body
    after = mixed.proxy_stats()
    assert (after["hits"], after["misses"]) == (middle["hits"] + 1, middle["misses"])
    cached.unlink()
    download = mixed.exec(host, "cd /tmp && apt-get download -q libpopt0 && dpkg-deb -I /tmp/libpopt0_*.deb "
                          "&& rm -f /tmp/libpopt0_*.deb", check=False, timeout=300)
    assert download.returncode == 0, download.stdout + download.stderr
    # Nothing but the Debian mirror, and CONNECT only to the allow-list (empty here).
    assert _through_proxy(mixed, "GET", "http://example.org/")[0] == 403
    assert _through_proxy(mixed, "GET", "http://deb.debian.org:8080/debian/")[0] == 403
    assert _through_proxy(mixed, "CONNECT", "pypi.org:443")[0] == 403


def test_restarting_a_systemd_host_boots_it_again(mixed):
    host = next(h for h in mixed.hosts if mixed.init(h) == "systemd")
    conf = "/etc/sysctl.d/90-netstate-fleet-test.conf"

    def boot():
        return (mixed.exec(host, "systemctl show -p InvocationID --value systemd-sysctl.service").stdout.strip(),
                mixed.exec(host, "stat -c %Z /proc/1").stdout.strip(),
                mixed.exec(host, "cat /proc/sys/net/ipv4/tcp_fin_timeout").stdout.strip())

    mixed.exec(host, "echo net.ipv4.tcp_fin_timeout=23 > " + conf)
    try:
        first = boot()
        assert first[2] != "23"
        mixed.restart_host(host)
        second = boot()
        assert second[0] and second[0] != first[0]   # systemd-sysctl ran again, in a new boot
        assert second[1] != first[1]
        assert second[2] == "23"                      # and applied /etc/sysctl.d in the fresh namespace
        assert mixed.exec(host, "systemctl is-system-running").stdout.strip() == "running"
        assert mixed.ssh(host, "hostname").stdout.strip() == host
    finally:
        mixed.exec(host, "rm -f %s; sysctl -q -w net.ipv4.tcp_fin_timeout=60" % conf, check=False)
