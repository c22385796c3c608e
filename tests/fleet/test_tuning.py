# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The tuning role and netstate.tcp.sysctl on real SSH hosts (playbook netstate.tcp.tune).

Each fleet host is a container with its own network namespace: applying a profile there must change
the host's values and never the machine's. `podman exec` (fleet.exec) is the oracle. The hosts used
here get their drop-ins removed and are restarted at the end (fresh namespace, default sysctls).
"""

import json
import re

import pytest
from fleetcheck import run_playbook

pytestmark = pytest.mark.fleet

TUNE = "netstate.tcp.tune"
DROP_IN = "/etc/sysctl.d/60-netstate-tcp.conf"
OVERRIDE = "/etc/sysctl.d/99-local.conf"
CLIENT_HEAVY = {
    "net.ipv4.tcp_tw_reuse": "1",
    "net.ipv4.tcp_timestamps": "1",
    "net.ipv4.ip_local_port_range": "16384 65535",
}
WATCHED = ("net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_timestamps", "net.ipv4.ip_local_port_range",
           "net.core.somaxconn", "net.ipv4.tcp_fin_timeout")
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def machine_values():
    values = {}
    for key in WATCHED:
        with open("/proc/sys/" + key.replace(".", "/")) as handle:
            values[key] = " ".join(handle.read().split())
    return values


def host_values(fleet, host):
    command = "; ".join("cat /proc/sys/%s" % key.replace(".", "/") for key in WATCHED)
    lines = fleet.exec(host, command).stdout.splitlines()
    return {key: " ".join(line.split()) for key, line in zip(WATCHED, lines)}


def drop_in(fleet, host):
    result = fleet.exec(host, "cat %s" % DROP_IN, check=False)
    return result.stdout if result.returncode == 0 else None


def recap(run):
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                         "failed": int(m.group(5))} for m in RECAP.finditer(run.stdout)}


@pytest.fixture(scope="module")
def hosts(fleet):
    """Two fleet hosts with default sysctls and no drop-in; cleaned and restarted afterwards."""
    chosen = fleet.hosts[-2:]
    for host in chosen:
        fleet.exec(host, "rm -f %s %s" % (DROP_IN, OVERRIDE))
    defaults = {host: host_values(fleet, host) for host in chosen}
    for host in chosen:
        assert defaults[host]["net.ipv4.tcp_tw_reuse"] == "2", "host %s does not start from defaults" % host
    try:
        yield chosen
    finally:
        for host in chosen:
            if fleet.is_running(host):
                fleet.exec(host, "rm -f %s %s" % (DROP_IN, OVERRIDE), check=False)
            # a restarted host gets a fresh network namespace: default net.* sysctls again
            fleet.restart_host(host)


def tune(fleet, hosts, *args, variables=None):
    extra = ["-e", json.dumps(variables)] if variables else []
    return run_playbook(fleet, TUNE, "-l", ",".join(hosts), *extra, *args)


def test_check_mode_changes_nothing_and_diff_shows_each_key(fleet, hosts):
    machine = machine_values()
    before = {host: host_values(fleet, host) for host in hosts}
    run = tune(fleet, hosts, "--check", "--diff", variables={"netstate_tuning_profile": "client_heavy"})
    assert run.returncode == 0, run.stdout[-4000:]
    for host in hosts:
        assert recap(run)[host]["changed"] == 1
        assert host_values(fleet, host) == before[host], "check mode changed %s" % host
        assert drop_in(fleet, host) is None, "check mode wrote the drop-in on %s" % host
    for key, value in CLIENT_HEAVY.items():
        assert "+%s = %s" % (key, value) in run.stdout, key  # the drop-in and the live values
    assert "-net.ipv4.tcp_tw_reuse = 2" in run.stdout and "-net.ipv4.ip_local_port_range = 32768 60999" in run.stdout
    assert machine_values() == machine


def test_profile_changes_the_hosts_not_the_machine(fleet, hosts):
    machine = machine_values()
    run = tune(fleet, hosts, variables={"netstate_tuning_profile": "client_heavy"})
    assert run.returncode == 0, run.stdout[-4000:]
    for host in hosts:
        assert recap(run)[host]["changed"] == 1
        values = host_values(fleet, host)
        for key, value in CLIENT_HEAVY.items():
            assert values[key] == value, (host, key)
        content = drop_in(fleet, host)
        assert content is not None and content.startswith("# Managed by netstate.tcp.sysctl")
        for key, value in CLIENT_HEAVY.items():
            assert "%s = %s\n" % (key, value) in content
        assert fleet.exec(host, "stat -c %a " + DROP_IN).stdout.strip() == "644"
    # the report: before and after, and why
    assert "net.ipv4.tcp_tw_reuse: 2 -> 1; at boot: 1 from %s" % DROP_IN in run.stdout
    assert "before: ephemeral range 32768-60999 (28232 ports)" in run.stdout
    assert "after: ephemeral range 16384-65535 (49152 ports)" in run.stdout
    assert machine_values() == machine, "the machine's own sysctls changed"


def test_second_run_reports_no_change(fleet, hosts):
    run = tune(fleet, hosts, variables={"netstate_tuning_profile": "client_heavy"})
    assert run.returncode == 0, run.stdout[-4000:]
    for host in hosts:
        assert recap(run)[host]["changed"] == 0, run.stdout[-3000:]


def test_invalid_value_among_valid_changes_nothing(fleet, hosts):
    before = {host: (host_values(fleet, host), drop_in(fleet, host)) for host in hosts}
    run = tune(fleet, hosts, variables={"netstate_tuning_settings": {
        "tcp_fin_timeout": 30, "net.core.somaxconn": "lots", "tcp_tw_reuse": 0}})
    assert run.returncode != 0
    assert "net.core.somaxconn=lots: invalid value for net.core.somaxconn: not an integer" in run.stdout
    assert "nothing was changed" in run.stdout
    for host in hosts:
        assert recap(run)[host]["failed"] == 1
        assert (host_values(fleet, host), drop_in(fleet, host)) == before[host], host


def test_tw_recycle_is_refused_with_the_reason(fleet, hosts):
    before = {host: (host_values(fleet, host), drop_in(fleet, host)) for host in hosts}
    run = tune(fleet, hosts, variables={"netstate_tuning_settings": {"tcp_tw_recycle": 1}})
    assert run.returncode != 0
    assert "tcp_tw_recycle=1: refused: tcp_tw_recycle was removed in Linux 4.12" in run.stdout
    assert "behind NAT" in run.stdout
    for host in hosts:
        assert (host_values(fleet, host), drop_in(fleet, host)) == before[host], host


def test_overriding_file_is_named_in_a_warning(fleet, hosts):
    host = hosts[0]
    fleet.exec(host, "printf 'net.ipv4.tcp_tw_reuse = 0\\n' > %s" % OVERRIDE)
    try:
        run = tune(fleet, [host], variables={"netstate_tuning_profile": "client_heavy"})
        assert run.returncode == 0, run.stdout[-4000:]
        flat = " ".join(run.stdout.split())
        assert ("net.ipv4.tcp_tw_reuse: %s sets 0 and is read after %s, so 0 wins at boot instead of 1"
                % (OVERRIDE, DROP_IN)) in flat
        assert "net.ipv4.tcp_tw_reuse: 1 -> 1 (unchanged); at boot: 0 from %s" % OVERRIDE in run.stdout
    finally:
        fleet.exec(host, "rm -f %s" % OVERRIDE)


def test_values_come_back_after_restart_and_sysctl_system(fleet, hosts):
    host = hosts[1]
    assert host_values(fleet, host)["net.ipv4.tcp_tw_reuse"] == "1"
    fleet.restart_host(host)
    # a fresh network namespace: the kernel defaults, until something applies /etc/sysctl.d
    assert host_values(fleet, host)["net.ipv4.tcp_tw_reuse"] == "2"
    boot = fleet.exec(host, "sysctl --system", check=False)
    # kernel-wide keys (fs.*, from the distribution's files) are out of reach in a container; ours are not
    denied = [line for line in boot.stderr.splitlines() if line.strip()]
    assert all("fs." in line or "kernel." in line or "vm." in line for line in denied), boot.stderr
    assert "Applying %s" % DROP_IN in boot.stdout
    values = host_values(fleet, host)
    for key, value in CLIENT_HEAVY.items():
        assert values[key] == value, key
