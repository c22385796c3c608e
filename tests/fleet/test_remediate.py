# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.remediate on three systemd Debian 12 hosts with a real socket leak.

Every host runs tests/fleet/leaky_service.py `serve` as the systemd unit leaky-app.service (it never closes a
connection its client half-closed). On the LEAKING hosts a second unit holds half-closed clients, so the
service's port holds CLOSE_WAIT sockets above close_wait_per_port's limit; the HEALTHY host has none. `ss` on the
host counts CLOSE_WAIT, `systemctl show -p MainPID,ActiveEnterTimestamp` tells whether the unit restarted, and
the audit file on the controller is read line by line. The tests share one fleet and run in order: the runs
that must change nothing first, then the one that acts, then the cooldown and a symptom gone.
"""

import json
import os
import time

import pytest
from fleetcheck import run_playbook
from test_agents import recap

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

HERE = os.path.dirname(os.path.abspath(__file__))
PORT = 8080
LEAKED = 150  # close_wait_per_port's limit is 100
UNIT = "leaky-app.service"
SERVICE = """[Unit]
Description=netstate.tcp test service that leaks CLOSE_WAIT sockets

[Service]
ExecStart=/usr/bin/python3 /usr/local/bin/leaky_service.py serve %d
""" % PORT
STARTED = {}  # the module's start time, for the duration printed at its end


def close_wait(fleet, host):
    out = fleet.exec(host, "ss -H -t -n state close-wait '( sport = :%d )'" % PORT).stdout
    return len(out.splitlines())


def unit_state(fleet, host):
    out = fleet.exec(host, "systemctl show -p MainPID -p ActiveEnterTimestamp %s" % UNIT).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def leak(fleet, host):
    """Half-closed clients held by a unit of their own, and CLOSE_WAIT sockets on the service's port."""
    fleet.exec(host, "systemctl stop leaky-clients.service 2>/dev/null; systemctl reset-failed leaky-clients.service "
                     "2>/dev/null; systemd-run --quiet --unit=leaky-clients /usr/bin/python3 "
                     "/usr/local/bin/leaky_service.py clients 127.0.0.1 %d %d" % (PORT, LEAKED), check=False)
    deadline = time.monotonic() + 60
    while close_wait(fleet, host) < LEAKED:
        assert time.monotonic() < deadline, "the leak did not reach %d CLOSE_WAIT on %s" % (LEAKED, host)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def hosts(fleet_factory):
    """{"fleet", "leaking": [two hosts], "healthy": host}: leaky-app.service on every host, leaking on two."""
    STARTED["at"] = time.monotonic()
    fleet = fleet_factory("remed", 3, systems=("debian12",), init="systemd")
    with open(os.path.join(HERE, "leaky_service.py"), encoding="utf-8") as handle:
        code = handle.read()
    for host in fleet.hosts:
        fleet.exec(host, "cat > /usr/local/bin/leaky_service.py <<'NETSTATE_EOF'\n%sNETSTATE_EOF\n"
                         "cat > /etc/systemd/system/%s <<'NETSTATE_EOF'\n%sNETSTATE_EOF\n"
                         "systemctl daemon-reload && systemctl restart %s" % (code, UNIT, SERVICE, UNIT))
    deadline = time.monotonic() + 60
    for host in fleet.hosts:
        while "LISTEN" not in fleet.exec(host, "ss -H -t -l -n '( sport = :%d )' | sed 's/^/LISTEN /'" % PORT).stdout:
            assert time.monotonic() < deadline, "leaky-app.service does not listen on %s" % host
            time.sleep(0.3)
    leaking, healthy = fleet.hosts[:2], fleet.hosts[2]
    for host in leaking:
        leak(fleet, host)
    yield {"fleet": fleet, "leaking": leaking, "healthy": healthy}
    print("\ntest_remediate: %.0f s with the fleet's start" % (time.monotonic() - STARTED["at"]))


def remediate(hosts, audit, *args, **variables):
    values = {"netstate_remediate_hosts": "all", "netstate_remediate_rule": "close_wait_per_port",
              "netstate_remediate_port": PORT, "netstate_remediate_audit_file": str(audit),
              "netstate_remediate_settle": 2}
    values.update(variables)
    return run_playbook(hosts["fleet"], "netstate.tcp.remediate", "-e", json.dumps(values), *args, timeout=600)


def records(audit):
    return {record["host"]: record for record in map(json.loads, audit.read_text().splitlines())} \
        if audit.exists() else {}


def snapshot(hosts):
    fleet = hosts["fleet"]
    return {host: (unit_state(fleet, host), close_wait(fleet, host)) for host in fleet.hosts}


def assert_ok(run, hosts):
    counts = recap(run.stdout)
    for host in hosts["fleet"].hosts:
        assert counts[host]["failed"] == 0 and counts[host]["unreachable"] == 0, run.stdout[-5000:]
    assert run.returncode == 0, run.stdout[-5000:]


# ------------------------------------------------------------------------------ nothing changes


@pytest.mark.parametrize("variables, message", [
    ({"netstate_remediate_mode": "force"}, "netstate_remediate_mode must be one of: plan, act, got: force"),
    ({"netstate_remediate_rule": "close_waits"}, "netstate_remediate_rule: must be a built-in rule"),
    ({"netstate_remediate_allow_units": ["sshd"]}, "netstate_remediate_allow_units: item 0: not a systemd service"),
    ({"netstate_remediate_port": 70000}, "netstate_remediate_port: must be a port from 1 to 65535"),
    ({"netstate_remediate_hosts": "all; web"}, "netstate_remediate_hosts: must be a host pattern"),
])
def test_a_bad_input_fails_naming_the_variable_before_any_host_task(hosts, tmp_path, variables, message):
    run = remediate(hosts, tmp_path / "audit.jsonl", **variables)
    assert run.returncode != 0
    assert message in run.stdout, run.stdout[-3000:]
    assert set(recap(run.stdout)) == {"localhost"}, run.stdout[-3000:]  # no fleet host ran a task
    assert not (tmp_path / "audit.jsonl").exists()


def test_plan_mode_records_and_changes_nothing(hosts, tmp_path):
    before = snapshot(hosts)
    source = "{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % (tmp_path / "templated")
    run = remediate(hosts, tmp_path / "audit.jsonl", netstate_remediate_allow_units=[UNIT],
                    netstate_remediate_source=source)
    assert_ok(run, hosts)
    assert snapshot(hosts) == before
    found = records(tmp_path / "audit.jsonl")
    for host in hosts["leaking"]:
        record = found[host]
        assert (record["decision"], record["guard"], record["result"]) == ("plan", "mode", None)
        assert record["action"] == {"kind": "restart_unit", "target": UNIT}
        assert record["evidence_before"]["unit"] == UNIT and record["evidence_before"]["value"] >= LEAKED
        assert record["source"] == source  # kept as text, never templated
        assert "%s close_wait_per_port [port %d]: plan (held by mode)" % (host, PORT) in run.stdout
    assert found[hosts["healthy"]]["decision"] == "resolved"
    assert not (tmp_path / "templated").exists()


def test_check_mode_changes_nothing(hosts, tmp_path):
    before = snapshot(hosts)
    run = remediate(hosts, tmp_path / "audit.jsonl", "--check", netstate_remediate_mode="act",
                    netstate_remediate_allow_units=[UNIT])
    assert_ok(run, hosts)
    assert snapshot(hosts) == before
    found = records(tmp_path / "audit.jsonl")
    assert {found[host]["guard"] for host in hosts["leaking"]} == {"check_mode"}
    assert all(found[host]["check_mode"] for host in hosts["leaking"])


def test_a_unit_not_allow_listed_is_a_plan_entry(hosts, tmp_path):
    before = snapshot(hosts)
    run = remediate(hosts, tmp_path / "audit.jsonl", netstate_remediate_mode="act",
                    netstate_remediate_allow_units=["other-app.service"])
    assert_ok(run, hosts)
    assert snapshot(hosts) == before
    found = records(tmp_path / "audit.jsonl")
    assert {(found[host]["decision"], found[host]["guard"]) for host in hosts["leaking"]} == {("plan", "allow_list")}


# ------------------------------------------------------------------------------ acting


@pytest.fixture(scope="module")
def acted(hosts, tmp_path_factory):
    """One run in mode act with max_hosts 1: one leaking host restarted, the other held by the blast radius.
    Every port is judged (no netstate_remediate_port): the violating port is found and its unit named."""
    audit = tmp_path_factory.mktemp("remediate") / "audit.jsonl"
    before = snapshot(hosts)
    run = remediate(hosts, audit, netstate_remediate_port="", netstate_remediate_mode="act",
                    netstate_remediate_allow_units=[UNIT],
                    netstate_remediate_max_hosts=1, netstate_remediate_window=600, netstate_remediate_cooldown=600)
    found = records(audit)
    restarted = [host for host in hosts["leaking"] if found.get(host, {}).get("decision") == "act"]
    return {"run": run, "audit": audit, "before": before, "after": snapshot(hosts), "records": found,
            "restarted": restarted, "held": [host for host in hosts["leaking"] if host not in restarted]}


def test_act_restarts_the_allow_listed_unit_and_close_wait_falls(hosts, acted):
    assert_ok(acted["run"], hosts)
    [host] = acted["restarted"]
    record = acted["records"][host]
    (unit_before, leaked), (unit_after, left) = acted["before"][host], acted["after"][host]
    assert leaked >= LEAKED and left == 0
    assert unit_after["MainPID"] != unit_before["MainPID"] and unit_after["MainPID"] != "0"
    assert unit_after["ActiveEnterTimestamp"] != unit_before["ActiveEnterTimestamp"]
    assert (record["guard"], record["action"], record["result"]) == (None, {"kind": "restart_unit", "target": UNIT},
                                                                     "fixed")
    assert (record["port"], record["subject"]) == (PORT, "port %d" % PORT)
    assert record["evidence_before"]["value"] >= LEAKED and record["evidence_after"]["value"] < 100
    assert "-> fixed" in acted["run"].stdout


def test_the_healthy_host_is_untouched(hosts, acted):
    healthy = hosts["healthy"]
    assert acted["after"][healthy] == acted["before"][healthy]
    assert acted["records"][healthy]["decision"] == "resolved" and acted["records"][healthy]["action"]["kind"] == "none"


def test_the_blast_radius_holds(hosts, acted):
    [host] = acted["held"]
    assert (acted["records"][host]["decision"], acted["records"][host]["guard"]) == ("plan", "blast_radius")
    assert acted["after"][host] == acted["before"][host]
    assert len(acted["audit"].read_text().splitlines()) == 3  # one line per decision


def test_a_second_run_inside_the_cooldown_restarts_nothing(hosts, acted):
    [host] = acted["restarted"]
    leak(hosts["fleet"], host)
    before = snapshot(hosts)
    run = remediate(hosts, acted["audit"], netstate_remediate_hosts=host, netstate_remediate_mode="act",
                    netstate_remediate_allow_units=[UNIT], netstate_remediate_max_hosts=3,
                    netstate_remediate_window=600, netstate_remediate_cooldown=600)
    assert run.returncode == 0, run.stdout[-5000:]
    assert snapshot(hosts) == before
    last = json.loads(acted["audit"].read_text().splitlines()[-1])
    assert (last["host"], last["decision"], last["guard"]) == (host, "plan", "cooldown")


def test_a_symptom_already_gone_is_resolved_and_nothing_is_done(hosts, acted, tmp_path):
    fleet = hosts["fleet"]
    [host] = acted["restarted"]
    fleet.exec(host, "systemctl restart %s" % UNIT)  # the leak is gone before the run looks
    before = snapshot(hosts)
    assert before[host][1] == 0
    run = remediate(hosts, tmp_path / "audit.jsonl", netstate_remediate_hosts=host, netstate_remediate_mode="act",
                    netstate_remediate_allow_units=[UNIT])
    assert run.returncode == 0, run.stdout[-5000:]
    assert snapshot(hosts) == before
    [record] = records(tmp_path / "audit.jsonl").values()
    assert (record["decision"], record["guard"], record["result"]) == ("resolved", None, None)


# ------------------------------------------------------------------------------ the other kinds of remediation
# A threshold below any value (netstate_health_thresholds, as the health role reads it) makes the rule violated
# on the healthy host, so that the sysctl and tuning remediations run for real; /proc/sys is the oracle.


def test_syn_recv_sets_syncookies_with_the_sysctl_module(hosts, tmp_path):
    fleet, host = hosts["fleet"], hosts["healthy"]
    fleet.exec(host, "sysctl -qw net.ipv4.tcp_syncookies=0")
    run = remediate(hosts, tmp_path / "audit.jsonl", netstate_remediate_hosts=host, netstate_remediate_mode="act",
                    netstate_remediate_rule="syn_recv_total", netstate_remediate_port="",
                    netstate_health_thresholds={"syn_recv_total": -1})
    assert run.returncode == 0, run.stdout[-5000:]
    assert fleet.exec(host, "cat /proc/sys/net/ipv4/tcp_syncookies").stdout.strip() == "1"
    assert "net.ipv4.tcp_syncookies" in fleet.exec(host, "cat /etc/sysctl.d/60-netstate-tcp.conf").stdout
    [record] = records(tmp_path / "audit.jsonl").values()
    assert (record["decision"], record["action"]["kind"], record["action"]["target"]) == (
        "act", "sysctl", "net.ipv4.tcp_syncookies=1")
    assert record["result"] == "not_fixed"  # nothing is below a limit of -1: the proof says so


def test_time_wait_share_applies_the_tuning_client_profile(hosts, tmp_path):
    fleet, host = hosts["fleet"], hosts["healthy"]
    fleet.exec(host, "sysctl -qw net.ipv4.tcp_tw_reuse=2")
    # connections this host closes first (the server's banner read: no RST): TIME_WAIT towards a busiest
    # destination, so the rule has a value
    closer = "import socket\nfor _ in range(5): s = socket.create_connection(('127.0.0.1', 22)); s.recv(200); s.close()"
    fleet.exec(host, ["python3", "-c", closer])
    assert fleet.exec(host, "ss -H -t -n state time-wait '( dport = :22 )'").stdout.strip()
    run = remediate(hosts, tmp_path / "audit.jsonl", netstate_remediate_hosts=host, netstate_remediate_mode="act",
                    netstate_remediate_rule="time_wait_ephemeral_share", netstate_remediate_port="",
                    netstate_health_thresholds={"time_wait_ephemeral_share": -1})
    assert run.returncode == 0, run.stdout[-5000:]
    assert fleet.exec(host, "cat /proc/sys/net/ipv4/tcp_tw_reuse").stdout.strip() == "1", run.stdout[-5000:]
    assert fleet.exec(host, "cat /proc/sys/net/ipv4/ip_local_port_range").stdout.split() == ["16384", "65535"]
    [record] = records(tmp_path / "audit.jsonl").values()
    assert (record["decision"], record["action"]) == ("act", {"kind": "tuning_profile", "target": "client_heavy"})


def test_accept_queue_rules_are_a_plan_entry_only(hosts, tmp_path):
    host = hosts["healthy"]
    before = snapshot(hosts)
    run = remediate(hosts, tmp_path / "audit.jsonl", netstate_remediate_hosts=host, netstate_remediate_mode="act",
                    netstate_remediate_rule="accept_queue_full", netstate_remediate_port="",
                    netstate_health_thresholds={"accept_queue_full": -1})
    assert run.returncode == 0, run.stdout[-5000:]
    assert snapshot(hosts) == before
    found = list(map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines()))
    assert found and {(record["decision"], record["guard"], record["action"]["kind"]) for record in found} == {
        ("plan", None, "plan")}
