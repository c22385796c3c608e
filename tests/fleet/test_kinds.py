# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every role on every host kind: Debian 11, 12 and 13, with systemd as PID 1 and without an init.

Two fleets of this module's own: six systemd hosts (two per release) and the init-less kinds of Debian 11
and 13 (the session fleet is Debian 12 without an init; test_agents, test_tuning and test_health cover it).
Each host gets one Zabbix agent: the first host of a kind agent 1, the second agent 2 where the release
ships it (Debian 11 does not: the role must refuse before changing anything). All hosts of a fleet run in
one playbook run, both fleets at once.

On every kind the playbooks monitor, tune and health: check mode on the fresh host changes nothing, the
first run passes, the second changes nothing. The agents are real packages queried for real (Zabbix
protocol through zabbix_utils.Getter, node_exporter over HTTP through prometheus_client's parser), `ss`
on the host is the oracle. On systemd hosts: units enabled and active, the textfile timer fires, handlers
restart through systemd (a new MainPID), and after a reboot the tuned sysctls are back through
systemd-sysctl at boot, with the agents running again.
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fleetcheck import run_playbook
from test_agents import facts_without, recap, scrape, stable
from zabbix_utils import Getter

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

RELEASES = ("debian11", "debian12", "debian13")
# What each release ships (Debian's own packages).
AGENT_VERSION = {"debian11": "5.0.", "debian12": "6.0.", "debian13": "7.0."}
NODE_EXPORTER_VERSION = {"debian11": "1.1.2", "debian12": "1.5.0", "debian13": "1.9.0"}
HAS_AGENT2 = {"debian11": False, "debian12": True, "debian13": True}
SERVICE = {"agentd": "zabbix-agent", "agent2": "zabbix-agent2"}
PACKAGE = SERVICE
TEXTFILE = "/var/lib/prometheus/node-exporter/netstate_tcp.prom"
TIMER = "netstate-tcp-textfile.timer"
DROP_IN = "/etc/sysctl.d/60-netstate-tcp.conf"
# The tuning under test: the client_heavy profile plus one key of server_heavy, none of them a default.
TUNING = {"netstate_tuning_profile": "client_heavy", "netstate_tuning_settings": {"somaxconn": 8192}}
TUNED = {"net/ipv4/tcp_tw_reuse": "1", "net/ipv4/ip_local_port_range": "16384 65535", "net/core/somaxconn": "8192"}
# What a check-mode run must leave as it was: packages, the files the roles write, the live sysctls.
SNAPSHOT = ("dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n' | md5sum; "
            "find /etc /usr/local/lib /var/lib/prometheus \\( -type f -o -type l \\) -printf '%p %s\\n' "
            "2>/dev/null | sort | md5sum; "
            "cat " + " ".join("/proc/sys/" + key for key in TUNED))


# ------------------------------------------------------------------------------ the fleets


def kind(fleet, host):
    return fleet.os(host), fleet.init(host)


def flavors(fleet):
    """host -> flavor: per kind, agent 1 on the first host, agent 2 on the second where the release has it."""
    chosen, seen = {}, {}
    for host in fleet.hosts:
        system = fleet.os(host)
        index = seen.setdefault(kind(fleet, host), [])
        index.append(host)
        chosen[host] = "agent2" if len(index) % 2 == 0 and HAS_AGENT2[system] else "agentd"
    return chosen


def monitor_vars(fleet, chosen, **more):
    variables = {
        "netstate_test_flavors": chosen,
        "netstate_zabbix_agent_flavor": "{{ netstate_test_flavors[inventory_hostname] }}",
        "netstate_zabbix_agent_server": ["127.0.0.1", fleet.gateway],
    }
    variables.update(more)
    return variables


def playbook(fleet, name, variables, *args, hosts=None):
    extra = ["-e", json.dumps(variables)] if variables else []
    limit = ["-l", ",".join(hosts)] if hosts else []
    return run_playbook(fleet, name, "-f", "10", *limit, *extra, *args, timeout=900)


def both(function, fleets):
    """function(fleet) for every fleet at once; results in the same order."""
    with ThreadPoolExecutor(len(fleets)) as pool:
        return list(pool.map(function, fleets))


def on_hosts(fleet, command, hosts=None, check=True):
    hosts = hosts or fleet.hosts
    with ThreadPoolExecutor(len(hosts)) as pool:
        results = pool.map(lambda host: fleet.exec(host, command, check=check), hosts)
    return {host: result.stdout for host, result in zip(hosts, results)}


def assert_ran(run, hosts, changed_zero=False):
    counts = recap(run.stdout)
    for host in hosts:
        assert host in counts, run.stdout[-4000:]
        assert counts[host]["failed"] == 0 and counts[host]["unreachable"] == 0, run.stdout[-6000:]
        if changed_zero:
            assert counts[host]["changed"] == 0, (host, run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-6000:]


@pytest.fixture(scope="module")
def kinds(fleet_factory, tmp_path_factory):
    """Both fleets after: the Debian 11 agent 2 refusal, check mode on fresh hosts, first and second runs."""
    systemd = fleet_factory("kinds", 6, systems=RELEASES, init="systemd")
    plain = fleet_factory("kindsn", 3, systems=("debian11", "debian13", "debian13"), init="none")
    fleets = [systemd, plain]
    seen = {kind(fleet, host) for fleet in fleets for host in fleet.hosts}
    assert seen == {(system, "systemd") for system in RELEASES} | {("debian11", "none"), ("debian13", "none")}, seen
    chosen = {id(fleet): flavors(fleet) for fleet in fleets}
    result = {"fleets": fleets, "flavors": chosen}
    reports = tmp_path_factory.mktemp("kinds-health")

    # Debian 11 and agent 2: refused before anything changes (these hosts are still fresh afterwards).
    def refuse(fleet):
        hosts = [host for host in fleet.hosts if fleet.os(host) == "debian11"]
        before = on_hosts(fleet, SNAPSHOT, hosts)
        variables = monitor_vars(fleet, dict.fromkeys(hosts, "agent2"))
        run = playbook(fleet, "netstate.tcp.monitor", variables, hosts=hosts)
        return hosts, run, before, on_hosts(fleet, SNAPSHOT, hosts)

    result["refused"] = both(refuse, fleets)

    # check mode on fresh hosts, all three playbooks
    def check(fleet):
        before = on_hosts(fleet, SNAPSHOT)
        runs = {
            "monitor": playbook(fleet, "netstate.tcp.monitor", monitor_vars(fleet, chosen[id(fleet)]),
                                "--check", "--diff"),
            "tune": playbook(fleet, "netstate.tcp.tune", TUNING, "--check", "--diff"),
            "health": playbook(fleet, "netstate.tcp.health", {"netstate_health_report_dir": str(reports / fleet.name)},
                               "--check", "--diff"),
        }
        return runs, before, on_hosts(fleet, SNAPSHOT)

    result["check"] = both(check, fleets)

    def apply(fleet):
        started = time.monotonic()
        runs = {
            "monitor": playbook(fleet, "netstate.tcp.monitor", monitor_vars(fleet, chosen[id(fleet)])),
            "tune": playbook(fleet, "netstate.tcp.tune", TUNING),
            "health": playbook(fleet, "netstate.tcp.health", {"netstate_health_report_dir": str(reports / fleet.name)}),
        }
        runs["seconds"] = time.monotonic() - started
        runs["report"] = json.loads((reports / fleet.name / "health.json").read_text())
        return runs

    result["first"] = both(apply, fleets)
    result["second"] = both(apply, fleets)
    result["gather"] = both(lambda fleet: playbook(fleet, "netstate.tcp.gather", {
        "netstate_gather_report_dir": str(reports / fleet.name / "gather")}), fleets)
    result["reports"] = reports
    # the textfile service's last run, to see the timer fire again
    result["textfile"] = {
        id(systemd): on_hosts(systemd, "systemctl show -p InvocationID --value netstate-tcp-textfile.service; "
                                       "stat -c %Y " + TEXTFILE)}
    return result


def all_hosts(kinds):
    return [(fleet, host) for fleet in kinds["fleets"] for host in fleet.hosts]


def systemd_hosts(kinds):
    return [(fleet, host) for fleet, host in all_hosts(kinds) if fleet.init(host) == "systemd"]


# ------------------------------------------------------------------------------ runs


def test_agent2_on_debian11_fails_first_and_names_release_and_package(kinds):
    for hosts, run, before, after in kinds["refused"]:
        assert run.returncode != 0
        for host in hosts:
            assert recap(run.stdout)[host]["failed"] == 1
            assert recap(run.stdout)[host]["changed"] == 0
        assert "needs the package zabbix-agent2, which Debian 11" in run.stdout, run.stdout[-3000:]
        assert "(bullseye) does not ship" in run.stdout
        assert after == before, "the refused run changed a Debian 11 host"


def test_check_mode_on_fresh_hosts_changes_nothing(kinds):
    for runs, before, after in kinds["check"]:
        for name, run in runs.items():
            assert run.returncode == 0, (name, run.stdout[-6000:])
            for host, counts in recap(run.stdout).items():
                assert counts["failed"] == 0 and counts["unreachable"] == 0, (name, host, run.stdout[-6000:])
        assert "would install zabbix-agent" in runs["monitor"].stdout
        assert after == before, "check mode changed a host"


def test_first_run_passes_on_every_kind(kinds):
    for fleet, runs in zip(kinds["fleets"], kinds["first"]):
        for name in ("monitor", "tune", "health"):
            assert_ran(runs[name], fleet.hosts)
        for host in fleet.hosts:
            assert recap(runs["monitor"].stdout)[host]["changed"] > 0
            assert recap(runs["tune"].stdout)[host]["changed"] > 0


def report_moves(first, second):
    """What moved between two health.json reports, per host: status, and results but for their values
    (a move from ok to no_data is no verdict change: health_report's changed does not count it)."""
    def described(report):
        return {entry["host"]: (entry["status"], sorted(
            json.dumps({key: value for key, value in result.items() if key not in ("value", "message")},
                       sort_keys=True) for result in entry["results"])) for entry in report["hosts"]}

    before, after = described(first), described(second)
    return {host: {"first": before.get(host), "second": after.get(host)}
            for host in sorted(set(before) | set(after)) if before.get(host) != after.get(host)}


def test_second_run_changes_nothing_on_every_kind(kinds):
    for fleet, first, runs in zip(kinds["fleets"], kinds["first"], kinds["second"]):
        for name in ("monitor", "tune"):
            assert_ran(runs[name], fleet.hosts, changed_zero=True)
        # the health report is changed only by a verdict that moved; when it is, say what moved
        try:
            assert_ran(runs["health"], fleet.hosts, changed_zero=True)
        except AssertionError as error:
            moves = report_moves(first["report"], runs["report"])
            raise AssertionError("%s\nwhat moved between the two reports (status and results but for values):\n%s"
                                 % (error, json.dumps(moves, indent=1))) from None


def test_gather_reports_every_host_of_every_kind(kinds):
    for fleet, run in zip(kinds["fleets"], kinds["gather"]):
        assert_ran(run, fleet.hosts)
        report = json.loads((kinds["reports"] / fleet.name / "gather" / "fleet-report.json").read_text())
        assert sorted(row["host"] for row in report["rows"]) == sorted(fleet.hosts)
        assert report["unreachable"] == [] and report["failed"] == [] and report["gathered"] == len(fleet.hosts)


def test_packages_are_the_releases_own(kinds):
    for fleet, host in all_hosts(kinds):
        system, flavor = fleet.os(host), kinds["flavors"][id(fleet)][host]
        out = fleet.exec(host, "dpkg-query -W -f '${Package} ${Version}\\n' %s prometheus-node-exporter"
                         % PACKAGE[flavor]).stdout
        versions = dict(line.split() for line in out.splitlines())
        assert versions[PACKAGE[flavor]].split(":", 1)[-1].startswith(AGENT_VERSION[system]), (host, system, out)
        assert versions["prometheus-node-exporter"].startswith(NODE_EXPORTER_VERSION[system]), (host, system, out)


# ------------------------------------------------------------------------------ init systems


def test_systemd_hosts_run_the_agents_as_enabled_active_units(kinds):
    for fleet, host in systemd_hosts(kinds):
        assert fleet.exec(host, "cat /proc/1/comm").stdout.strip() == "systemd"
        units = [SERVICE[kinds["flavors"][id(fleet)][host]], "prometheus-node-exporter", TIMER]
        out = fleet.exec(host, "systemctl is-enabled %s; systemctl is-active %s" % (" ".join(units), " ".join(units)),
                         check=False).stdout.split()
        assert out == ["enabled"] * 3 + ["active"] * 3, (host, units, out)
        # the timer replaces cron here: no cron file, and cron was not installed for it
        assert fleet.exec(host, "test -e /etc/cron.d/netstate-tcp-textfile", check=False).returncode != 0


def test_hosts_without_init_use_init_scripts_and_cron(kinds):
    for fleet, host in all_hosts(kinds):
        if fleet.init(host) != "none":
            continue
        flavor = kinds["flavors"][id(fleet)][host]
        process = {"agentd": "zabbix_agentd", "agent2": "zabbix_agent2"}[flavor]
        assert fleet.exec(host, "pgrep -x -u zabbix %s" % process, check=False).returncode == 0, host
        assert fleet.exec(host, "pgrep -x -u prometheus prometheus-node", check=False).returncode == 0, host
        assert fleet.exec(host, "pgrep -x cron", check=False).returncode == 0, host
        assert "python3" in fleet.exec(host, "cat /etc/cron.d/netstate-tcp-textfile").stdout
        assert fleet.exec(host, "test -e /etc/systemd/system/" + TIMER, check=False).returncode != 0


def test_textfile_timer_fires_and_rewrites_the_textfile(kinds):
    systemd = kinds["fleets"][0]
    before = {host: out.split() for host, out in kinds["textfile"][id(systemd)].items()}
    waiting = set(systemd.hosts)
    deadline = time.monotonic() + 90  # the timer runs every minute
    while waiting and time.monotonic() < deadline:
        now = on_hosts(systemd, "systemctl show -p InvocationID --value netstate-tcp-textfile.service; "
                                "stat -c %Y " + TEXTFILE, sorted(waiting))
        waiting = {host for host, out in now.items()
                   if out.split()[0] == before[host][0] or int(out.split()[1]) <= int(before[host][1])}
        if waiting:
            time.sleep(3)
    assert not waiting, "the timer did not run the collector again on %s" % sorted(waiting)
    for host in systemd.hosts:
        show = systemd.exec(host, "systemctl show -p Result -p ExecMainStatus netstate-tcp-textfile.service").stdout
        assert "Result=success" in show and "ExecMainStatus=0" in show, (host, show)
        assert scrape(systemd, host)["netstate_collector_success"][()] == 1


# ------------------------------------------------------------------------------ the agents, for real


def test_zabbix_agents_answer_with_the_master_item_matching_ss(kinds):
    for fleet, host in all_hosts(kinds):
        system = fleet.os(host)

        def query(key, fleet=fleet, host=host):
            response = Getter(host=fleet.address(host), port=10050, timeout=20).get(key)
            assert response.value is not None, "%s on %s: %s" % (key, host, response.error)
            return response.value

        assert query("agent.version").startswith(AGENT_VERSION[system]), host
        view, value = stable(fleet, host, lambda query=query: query("netstate.tcp.json"), exclude=(10050,))
        facts = json.loads(value)
        assert facts["tcp"]["local_ports"]["10050"]["states"]["ESTABLISHED"] >= 1  # our own query
        assert facts_without(facts, 10050) == view["states"], host
        rows = json.loads(query("netstate.tcp.discovery[tcp]"))
        assert sorted(int(row["{#PORT}"]) for row in rows) == sorted({item["port"] for item in view["listeners"]})
        assert {10050, 9100, 22} <= {int(row["{#PORT}"]) for row in rows}


def test_every_release_with_agent2_runs_it(kinds):
    ran = {(fleet.os(host), fleet.init(host)) for fleet, host in all_hosts(kinds)
           if kinds["flavors"][id(fleet)][host] == "agent2"}
    assert ran == {("debian12", "systemd"), ("debian13", "systemd"), ("debian13", "none")}


def test_node_exporter_scrape_matches_ss(kinds):
    for fleet, host in all_hosts(kinds):
        view, values = stable(fleet, host, lambda fleet=fleet, host=host: scrape(fleet, host), exclude=(9100,))
        version = [dict(key)["version"] for key in values["node_exporter_build_info"]]
        assert len(version) == 1 and version[0].startswith(NODE_EXPORTER_VERSION[fleet.os(host)]), (host, version)
        tcpstat = {dict(key)["state"]: value for key, value in values["node_tcp_connection_states"].items()}
        assert tcpstat["listen"] == view["states"]["LISTEN"], host
        per_port = values["netstate_tcp_port_connections"]
        listening = {str(item["port"]) for item in view["listeners"]}
        assert {dict(key)["port"] for key, count in per_port.items() if dict(key)["state"] == "LISTEN" and count} == \
            listening, host
        assert values["netstate_collector_success"][()] == 1
        assert "node_netstat_TcpExt_TW" in values and "node_netstat_TcpExt_TCPTimeWaitOverflow" in values
        collectors = {dict(key)["collector"] for key in values["node_scrape_collector_success"]}
        assert ("systemd" in collectors) == (fleet.init(host) == "systemd"), (host, sorted(collectors))


# ------------------------------------------------------------------------------ systemd: handlers, boot


def unit_state(fleet, host, units):
    out = fleet.exec(host, "systemctl show -p MainPID -p ActiveEnterTimestampMonotonic -p ActiveState "
                     + " ".join(units)).stdout
    blocks = [dict(line.split("=", 1) for line in block.splitlines()) for block in out.strip().split("\n\n")]
    return dict(zip(units, blocks))


def test_handlers_restart_the_agents_through_systemd(kinds):
    systemd = kinds["fleets"][0]
    chosen = kinds["flavors"][id(systemd)]
    # one host per release, agent 1 and agent 2 both among them
    hosts = []
    for system in RELEASES:
        of_release = [host for host in systemd.hosts if systemd.os(host) == system]
        wanted = "agent2" if system == "debian12" else "agentd"
        hosts.append(next((host for host in of_release if chosen[host] == wanted), of_release[0]))
    assert {chosen[host] for host in hosts} == {"agentd", "agent2"}
    units = {host: [SERVICE[chosen[host]], "prometheus-node-exporter"] for host in hosts}
    before = {host: unit_state(systemd, host, units[host]) for host in hosts}
    # a changed Timeout and one more netstat field: both agents' configuration files change
    fields = ("^(Tcp_CurrEstab|TcpExt_(TW|TCPTimeWaitOverflow|TCPAbortOnData))$")
    run = playbook(systemd, "netstate.tcp.monitor",
                   monitor_vars(systemd, chosen, netstate_zabbix_agent_timeout=11,
                                netstate_node_exporter_netstat_fields=fields), hosts=hosts)
    assert_ran(run, hosts)
    assert "RUNNING HANDLER [netstate.tcp.zabbix_agent : Restart zabbix agent (systemd)]" in run.stdout
    assert "RUNNING HANDLER [netstate.tcp.node_exporter : Restart node_exporter (systemd)]" in run.stdout
    for host in hosts:
        after = unit_state(systemd, host, units[host])
        for unit in units[host]:
            assert after[unit]["ActiveState"] == "active", (host, unit)
            assert after[unit]["MainPID"] != before[host][unit]["MainPID"], (host, unit)
            assert int(after[unit]["ActiveEnterTimestampMonotonic"]) > \
                int(before[host][unit]["ActiveEnterTimestampMonotonic"]), (host, unit)
        values = scrape(systemd, host)  # the restarted exporter has the new fields
        assert "node_netstat_TcpExt_TCPAbortOnData" in values and "node_netstat_Tcp_InSegs" not in values, host
        config = systemd.exec(host, "cat /etc/zabbix/zabbix_agent*.conf").stdout
        assert "Timeout=11" in config


def sysctl_started(fleet, host):
    """When systemd-sysctl last started (monotonic clock, shared with the machine) and how it ended."""
    show = fleet.exec(host, "systemctl show -p ActiveState -p Result -p ExecMainStatus "
                            "-p ExecMainStartTimestampMonotonic systemd-sysctl.service").stdout
    return dict(line.split("=", 1) for line in show.split())


def test_tuned_values_are_back_after_reboot_through_systemd_sysctl(kinds):
    systemd = kinds["fleets"][0]
    chosen = kinds["flavors"][id(systemd)]
    read = "; ".join("cat /proc/sys/" + key for key in TUNED)
    before = {}
    for host in systemd.hosts:
        assert [" ".join(line.split()) for line in systemd.exec(host, read).stdout.splitlines()] == \
            list(TUNED.values()), host
        before[host] = sysctl_started(systemd, host)
    for host in systemd.hosts:
        systemd.restart_host(host)
    for host in systemd.hosts:
        # a restarted host has a fresh network namespace: only the boot can have set these
        values = [" ".join(line.split()) for line in systemd.exec(host, read).stdout.splitlines()]
        assert values == list(TUNED.values()), (host, values)
        state = sysctl_started(systemd, host)
        assert state["ActiveState"] == "active" and state["Result"] == "success", (host, state)
        assert state["ExecMainStatus"] == "0", (host, state)
        assert int(state["ExecMainStartTimestampMonotonic"]) > int(before[host]["ExecMainStartTimestampMonotonic"]), \
            (host, "systemd-sysctl did not run at this boot", before[host], state)
        assert DROP_IN in systemd.exec(host, "/lib/systemd/systemd-sysctl --cat-config").stdout, host
        units = [SERVICE[chosen[host]], "prometheus-node-exporter", TIMER]
        out = systemd.exec(host, "systemctl is-active " + " ".join(units), check=False).stdout.split()
        assert out == ["active"] * 3, (host, out)
