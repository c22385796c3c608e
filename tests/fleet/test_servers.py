# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""From agent to alert, with real servers of two generations, each from Debian's own packages on a systemd
monitoring host (tests/fleet/monitoring_server.py): Zabbix server on PostgreSQL with its frontend's JSON-RPC
API, Prometheus and Alertmanager.

    generation   monitoring host (h01)                                   agents (h02-h04)
    debian12     Zabbix 6.0.14, Prometheus 2.42.0, Alertmanager 0.25.0    zabbix 6.0.14, node_exporter 1.5
    debian13     Zabbix 7.0.22, Prometheus 2.53.3, Alertmanager 0.28.1    zabbix 7.0.22, node_exporter 1.9

The module's fixture is parametrized by generation, one fleet of four systemd hosts of that release each
(fleet_factory "srv12" and "srv13"): h01 the monitoring host, h02 Zabbix agent 1 with a CLOSE_WAIT leak, h03
Zabbix agent 2 with a full accept queue, h04 agent 1, healthy. Every test runs on both. The markers
servers_debian12 and servers_debian13 select one (make test runs them in two lanes side by side,
scripts/test.sh). playbooks/monitor.yml installs agents and node_exporter, registers the hosts
(netstate.tcp.zabbix_register, which picks the API's names by the server's version) and installs the alert
rules and file_sd targets. Intervals are shortened for the test only: per-host macros {$NETSTATE.INTERVAL}
10s and {$NETSTATE.DISCOVERY.INTERVAL} 20s, the textfile timer every minute, Prometheus scraping and
evaluating every 5 s. `ss` on each host is the oracle; Zabbix's problem.get, Prometheus's /api/v1/alerts and
Alertmanager's /api/v2/alerts are what a user sees. The server's own promtool checks and unit-tests the
shipped rules. Latencies are printed (run with -s) and kept in LATENCIES per generation.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from zabbix_utils import ZabbixAPI

from monitoring_server import setup_monitoring_host

from tests.support.waiting import wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles" / "zabbix_agent" / "files" / "netstate_tcp_zabbix_template.yaml"
ALERTS = ROOT / "roles" / "node_exporter" / "files" / "netstate_tcp_alerts.yml"
ALERTS_TEST = ROOT / "tests" / "integration" / "prometheus" / "netstate_tcp_alerts_test.yml"
MONITOR = ROOT / "playbooks" / "monitor.yml"
AGENTS = {"h02": "agentd", "h03": "agent2", "h04": "agentd"}
LEAK_HOST, FULL_HOST, HEALTHY_HOST = "h02", "h03", "h04"
LEAK_PORT, FULL_PORT = 18082, 18083
# What each generation's packages must be (major.minor): a mirror that moves on is seen here first.
GENERATIONS = {
    "debian12": {"zabbix": "6.0", "prometheus": "2.42", "alertmanager": "0.25"},
    "debian13": {"zabbix": "7.0", "prometheus": "2.53", "alertmanager": "0.28"},
}
LATENCIES = {}


def note(setup, name, seconds):
    LATENCIES.setdefault(setup["generation"], {})[name] = round(seconds, 1)
    print("latency %s %s: %.1f s" % (setup["generation"], name, seconds))


@pytest.fixture(scope="module", params=[pytest.param(generation, marks=getattr(pytest.mark, "servers_" + generation))
                                        for generation in GENERATIONS])
def setup(request, fleet_factory, tmp_path_factory, ansible_env):
    generation = request.param
    started = time.monotonic()
    fleet = fleet_factory("srv" + generation[-2:], 4, systems=(generation,), init="systemd")
    fleet_s = time.monotonic() - started
    server = setup_monitoring_host(fleet, "h01")
    print("monitoring host (%s): Zabbix %s, %s, %s, packages %s, fleet up in %.1f s, set up in %s"
          % (generation, server["zabbix_version"], server["prometheus_version"], server["alertmanager_version"],
             server["packages"], fleet_s, server["timings"]))
    tmp = tmp_path_factory.mktemp("servers-" + generation)
    extra = {"all": {"children": {
        "agents": {
            "hosts": {
                "h02": {"netstate_zabbix_agent_flavor": "agentd"},
                "h03": {"netstate_zabbix_agent_flavor": "agent2"},
                # a threshold override of the health role becomes a host macro
                "h04": {"netstate_zabbix_agent_flavor": "agentd",
                        "netstate_health_thresholds": {"close_wait_per_port": 500}},
            },
            "vars": {
                "netstate_zabbix_agent_server": [server["address"]],
                "netstate_zabbix_register_url": server["zabbix_url"],
                "netstate_zabbix_register_user": server["zabbix_user"],
                "netstate_zabbix_register_password": server["zabbix_password"],
                "netstate_zabbix_register_macros": {"{$NETSTATE.INTERVAL}": "10s",
                                                    "{$NETSTATE.DISCOVERY.INTERVAL}": "20s"},
                "netstate_zabbix_agent_process_names_minutes": 1,
            }},
        "prometheus": {"hosts": {"h01": {}}}}}}
    inventory = tmp / "monitor.yml"
    inventory.write_text(yaml.safe_dump(extra))
    monitor_started = time.monotonic()
    done = run(ansible_env, [str(MONITOR), "-i", str(fleet.inventory), "-i", str(inventory),
                             "-e", "netstate_monitor_hosts=agents"])
    assert done.returncode == 0, done.stdout[-6000:]
    api = ZabbixAPI(url=server["zabbix_url"], user=server["zabbix_user"], password=server["zabbix_password"])
    the_setup = {"generation": generation, "fleet": fleet, "server": server, "api": api,
                 "inventory": [fleet.inventory, inventory], "started": monitor_started, "env": ansible_env}
    note(the_setup, "fleet_up_s", fleet_s)
    note(the_setup, "monitoring_host_setup_s", server["timings"]["setup_s"])
    note(the_setup, "monitor_playbook_s", time.monotonic() - monitor_started)
    yield the_setup
    note(the_setup, "generation_s", time.monotonic() - started)
    print("latencies %s: %s" % (generation, json.dumps(LATENCIES[generation], sort_keys=True)))


def run(env, args, timeout=1500):
    return subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)


def host_ids(api):
    hosts = api.host.get(output=["hostid", "host"], filter={"host": list(AGENTS)})
    return {host["host"]: host["hostid"] for host in hosts}


def item_values(api, hostid, keys):
    items = api.item.get(hostids=hostid, output=["key_", "lastvalue", "lastclock"], filter={"key_": list(keys)})
    return {item["key_"]: item["lastvalue"] for item in items if int(item["lastclock"]) > 0}


def problems(api, hostid):
    return api.problem.get(hostids=hostid, output=["name", "severity", "clock"])


def ss_listen(fleet, host):
    rows = [line.split() for line in fleet.exec(host, "ss -H -n -t -l").stdout.splitlines() if line.strip()]
    ports = {}
    for row in rows:
        port = row[3].rsplit(":", 1)[1]
        ports[port] = ports.get(port, 0) + 1
    return len(rows), ports


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (fleet address)
        return json.loads(response.read().decode())


def prometheus(setup, path):
    return get_json(setup["server"]["prometheus_url"] + path)["data"]


def alertmanager_alerts(setup, alertname):
    """The alerts Alertmanager holds (active, not silenced), of one name or (None) all."""
    return [alert for alert in get_json(setup["server"]["alertmanager_url"] + "/api/v2/alerts?active=true")
            if alertname is None or alert["labels"].get("alertname") == alertname]


def put(fleet, host, path, text):
    data = base64.b64encode(text.encode("utf-8")).decode("ascii")
    fleet.exec(host, "mkdir -p \"$(dirname {0})\" && echo {1} | base64 -d > {0}".format(path, data))


def alerts_for(setup, host):
    address = setup["fleet"].address(host)
    return [alert for alert in prometheus(setup, "/api/v1/alerts")["alerts"]
            if alert["labels"].get("instance", "").startswith(address + ":") and alert["state"] == "firing"]


# ------------------------------------------------------------------------------ the generation

def test_each_generation_runs_its_releases_packages(setup):
    wanted, server, fleet = GENERATIONS[setup["generation"]], setup["server"], setup["fleet"]
    assert server["system"] == setup["generation"]
    assert server["zabbix_version"].startswith(wanted["zabbix"] + "."), server["zabbix_version"]
    assert server["packages"]["zabbix-server-pgsql"].startswith(wanted["zabbix"] + "."), server["packages"]
    assert server["packages"]["prometheus"].startswith(wanted["prometheus"] + "."), server["packages"]
    assert server["packages"]["prometheus-alertmanager"].startswith(wanted["alertmanager"] + "."), server["packages"]
    for host, flavor in AGENTS.items():
        package = "zabbix-agent2" if flavor == "agent2" else "zabbix-agent"
        version = fleet.exec(host, "dpkg-query -W -f '${Version}' %s" % package).stdout
        assert re.match(r"(\d+:)?%s\." % re.escape(wanted["zabbix"]), version), (host, package, version)


# ------------------------------------------------------------------------------ registration

def test_template_imported_into_the_real_server(setup):
    api = setup["api"]
    source = yaml.safe_load(TEMPLATE.read_text())["zabbix_export"]["templates"][0]
    (template,) = api.template.get(filter={"host": [source["template"]]}, output=["templateid"],
                                   selectItems="count", selectDiscoveries="count", selectMacros=["macro", "value"])
    assert int(template["items"]) == len(source["items"])
    assert int(template["discoveries"]) == len(source["discovery_rules"])
    assert {m["macro"]: m["value"] for m in template["macros"]} == {m["macro"]: m["value"] for m in source["macros"]}


def test_docs_import_snippet_works_on_this_server(setup):
    text = (ROOT / "docs" / "monitoring.md").read_text()
    block = re.search(r"### Importing the template.*?```bash\n(.*?)```", text, re.S).group(1)
    code = re.search(r"<<'PY'\n(.*?)\nPY\n", block, re.S).group(1)
    server = setup["server"]
    code = code.replace('url="https://zabbix.example/"', 'url=%r' % server["zabbix_url"]).replace(
        'password="..."', 'password=%r' % server["zabbix_password"])
    assert server["zabbix_url"] in code
    done = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_each_agent_host_registered(setup):
    api, fleet = setup["api"], setup["fleet"]
    hosts = api.host.get(filter={"host": list(AGENTS)}, output=["host"], selectInterfaces=["ip", "port", "type"],
                         selectParentTemplates=["host"], selectMacros=["macro", "value"])
    assert sorted(host["host"] for host in hosts) == sorted(AGENTS)
    for host in hosts:
        assert [(i["ip"], i["port"], i["type"]) for i in host["interfaces"]] == [
            (fleet.address(host["host"]), "10050", "1")]
        assert [t["host"] for t in host["parentTemplates"]] == ["netstate TCP by Zabbix agent"]
        macros = {m["macro"]: m["value"] for m in host["macros"]}
        assert macros["{$NETSTATE.INTERVAL}"] == "10s"
        assert macros.get("{$NETSTATE.CLOSE_WAIT.MAX}") == ("500" if host["host"] == HEALTHY_HOST else None)


def test_registration_is_idempotent_and_check_mode_writes_nothing(setup, tmp_path):
    playbook = tmp_path / "register.yml"
    playbook.write_text(yaml.safe_dump([{"name": "register", "hosts": "agents", "gather_facts": False,
                                         "roles": ["netstate.tcp.zabbix_register"]}]))
    args = [str(playbook)] + [arg for path in setup["inventory"] for arg in ("-i", str(path))]
    again = run(setup["env"], args)
    assert again.returncode == 0, again.stdout[-4000:]
    assert re.findall(r"changed=(\d+)", again.stdout) == ["0"] * len(AGENTS), again.stdout[-3000:]
    moved = '{"netstate_zabbix_register_macros": {"{$NETSTATE.INTERVAL}": "11s"}}'
    checked = run(setup["env"], args + ["--check", "-e", moved])
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert "Check mode: would call usermacro.update" in checked.stdout
    for host in host_ids(setup["api"]).values():
        macros = {m["macro"]: m["value"] for m in setup["api"].usermacro.get(hostids=host, output=["macro", "value"])}
        assert macros["{$NETSTATE.INTERVAL}"] == "10s"


# ------------------------------------------------------------------------------ values

def _values_agree_with_ss(setup, host, hostid):
    api, fleet = setup["api"], setup["fleet"]
    keys = ["netstate.tcp.state[LISTEN]", "netstate.tcp.port.state[22,LISTEN]"]
    wait_for("%s: values of %s" % (host, keys), lambda: len(item_values(api, hostid, keys)) == 2, 240)
    note(setup, "first_value_after_monitor_start_%s" % host, time.monotonic() - setup["started"])

    def agrees():
        listen, ports = ss_listen(fleet, host)
        values = item_values(api, hostid, keys)
        return (int(values["netstate.tcp.state[LISTEN]"]) == listen
                and int(values["netstate.tcp.port.state[22,LISTEN]"]) == ports.get("22"))
    wait_for("%s: LISTEN items equal ss" % host, agrees, 60)


def test_master_and_dependent_items_match_ss(setup):
    for host, hostid in host_ids(setup["api"]).items():
        _values_agree_with_ss(setup, host, hostid)


def _discovered(setup, host, hostid):
    api = setup["api"]
    _rows, ports = ss_listen(setup["fleet"], host)
    wanted = {"netstate.tcp.port.total[%s]" % port for port in ports}

    def keys():
        return {item["key_"] for item in api.item.get(hostids=hostid, output=["key_"],
                                                      search={"key_": "netstate.tcp.port.total"})}
    wait_for("%s: per-port items for %s" % (host, sorted(wanted)), lambda: wanted <= keys(), 120)

    # {#PROCESS} from the root job's discovery file, through the agent's discovery key
    def names_sshd():
        triggers = api.trigger.get(hostids=hostid, output=["description"], search={"description": "port 22"})
        return any("port 22 (sshd)" in trigger["description"] for trigger in triggers)
    wait_for("%s: port 22's trigger names sshd" % host, names_sshd, 150)


def test_discovery_creates_per_port_items_with_process_names(setup):
    for host, hostid in host_ids(setup["api"]).items():
        _discovered(setup, host, hostid)


# ------------------------------------------------------------------------------ problems and alerts

def _fire_and_resolve(setup, host, scenario, port, zabbix_pattern, alertname, **params):
    api, fleet = setup["api"], setup["fleet"]
    hostid = host_ids(api)[host]
    load = fleet.loadgen(host, scenario, port=port, **params)
    started = time.monotonic()
    try:
        wait_for("%s: Zabbix problem %r" % (host, zabbix_pattern), lambda: [
            p for p in problems(api, hostid) if re.search(zabbix_pattern, p["name"])], 300, interval=1)
        note(setup, "zabbix_%s_fire" % scenario, time.monotonic() - started)
        wait_for("%s: Prometheus alert %s" % (host, alertname), lambda: [
            a for a in alerts_for(setup, host) if a["labels"]["alertname"] == alertname
            and a["labels"].get("port") == str(port)], 240, interval=1)
        note(setup, "prometheus_%s_fire" % scenario, time.monotonic() - started)
        wait_for("%s: Alertmanager holds %s" % (host, alertname), lambda: held(setup, host, alertname, port), 120,
                 interval=1)
        note(setup, "alertmanager_%s_fire" % scenario, time.monotonic() - started)
    finally:
        load.stop()
    stopped = time.monotonic()
    wait_for("%s: Zabbix problem %r resolves" % (host, zabbix_pattern), lambda: not [
        p for p in problems(api, hostid) if re.search(zabbix_pattern, p["name"])], 240, interval=1)
    note(setup, "zabbix_%s_resolve" % scenario, time.monotonic() - stopped)
    wait_for("%s: Prometheus alert %s resolves" % (host, alertname), lambda: not [
        a for a in alerts_for(setup, host) if a["labels"]["alertname"] == alertname], 240, interval=1)
    note(setup, "prometheus_%s_resolve" % scenario, time.monotonic() - stopped)
    wait_for("%s: Alertmanager lets %s go" % (host, alertname), lambda: not held(setup, host, alertname, port), 120,
             interval=1)
    note(setup, "alertmanager_%s_resolve" % scenario, time.monotonic() - stopped)


def held(setup, host, alertname, port):
    """Alertmanager's alerts of one name for a host's port (resolved ones are not returned)."""
    address = setup["fleet"].address(host)
    return [alert for alert in alertmanager_alerts(setup, alertname)
            if alert["labels"].get("instance", "").startswith(address + ":")
            and alert["labels"].get("port") == str(port)]


def test_prometheus_scrapes_every_exporter(setup):
    fleet = setup["fleet"]
    wanted = {"%s:9100" % fleet.address(host) for host in AGENTS}

    def up():
        targets = prometheus(setup, "/api/v1/targets")["activeTargets"]
        return {t["labels"]["instance"] for t in targets if t["health"] == "up"} >= wanted
    wait_for("every node_exporter scraped", up, 120)
    names = prometheus(setup, "/api/v1/label/__name__/values")
    assert "netstate_tcp_port_connections" in names and "netstate_netstat_tcpext_listen_overflows_total" in names


def test_alert_rules_loaded_and_evaluated(setup):
    """monitor.yml's rules file is what Prometheus of this release evaluates: every alert of the shipped file,
    healthy, with the shipped expression."""
    shipped = {rule["alert"]: rule["expr"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
               for rule in group["rules"]}

    def loaded():
        rules = {rule["name"]: rule for group in prometheus(setup, "/api/v1/rules?type=alert")["groups"]
                 for rule in group["rules"]}
        return rules if set(rules) == set(shipped) and all(r["health"] == "ok" for r in rules.values()) else None
    rules = wait_for("Prometheus evaluates every shipped alert", loaded, 60)
    for name, expr in shipped.items():
        assert rules[name]["query"].replace(" ", "") == expr.replace(" ", ""), name
        assert rules[name].get("lastError", "") == "", (name, rules[name]["lastError"])


def test_promtool_of_the_server_release_passes_the_rules(setup):
    """The server host's own promtool (this generation's Prometheus) checks the shipped rules and runs their
    unit tests, and the unit tests fail there when a threshold moves."""
    fleet, host = setup["fleet"], setup["server"]["host"]
    version = fleet.exec(host, "promtool --version 2>&1 | head -1").stdout
    assert re.search(r"version %s\." % re.escape(GENERATIONS[setup["generation"]]["prometheus"]), version), version
    base = "/tmp/netstate-promtool"
    rules_path = base + "/roles/node_exporter/files/" + ALERTS.name
    test_dir = base + "/tests/integration/prometheus"
    put(fleet, host, rules_path, ALERTS.read_text())
    put(fleet, host, test_dir + "/" + ALERTS_TEST.name, ALERTS_TEST.read_text())
    count = sum(len(group["rules"]) for group in yaml.safe_load(ALERTS.read_text())["groups"])
    checked = fleet.exec(host, "promtool check rules %s" % rules_path, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: %d rules found" % count in checked.stdout + checked.stderr
    tested = fleet.exec(host, "cd %s && promtool test rules %s" % (test_dir, ALERTS_TEST.name), check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    moved = re.sub(r'(state="CLOSE_WAIT"\} > )\d+', r"\g<1>200", ALERTS.read_text())
    assert moved != ALERTS.read_text()
    put(fleet, host, rules_path, moved)
    failed = fleet.exec(host, "cd %s && promtool test rules %s" % (test_dir, ALERTS_TEST.name), check=False)
    assert failed.returncode != 0 and "NetstateCloseWaitPerPort" in failed.stdout + failed.stderr, failed.stdout
    fleet.exec(host, "rm -rf %s" % base)
    print("%s: %s passes the rules and their tests" % (setup["generation"], version.strip()))


def test_close_wait_leak_fires_and_resolves(setup):
    _fire_and_resolve(setup, LEAK_HOST, "close_wait", LEAK_PORT, r"CLOSE_WAIT on port %d\b" % LEAK_PORT,
                      "NetstateCloseWaitPerPort", count=150)


def test_full_accept_queue_fires_and_resolves(setup):
    _fire_and_resolve(setup, FULL_HOST, "accept_full", FULL_PORT, r"accept queue of port %d is full" % FULL_PORT,
                      "NetstateAcceptQueueFull")


def test_healthy_host_raises_nothing(setup):
    api = setup["api"]
    assert problems(api, host_ids(api)[HEALTHY_HOST]) == []
    assert alerts_for(setup, HEALTHY_HOST) == []
    address = setup["fleet"].address(HEALTHY_HOST)
    assert [alert for alert in alertmanager_alerts(setup, None) if alert["labels"].get(
        "instance", "").startswith(address + ":")] == []
