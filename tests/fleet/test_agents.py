# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The monitoring agents on real fleet hosts: zabbix_agent and node_exporter from Debian packages.

The hosts' bridge is internal (no route out), so apt on the hosts goes through the fleet's proxy on
the bridge's gateway address (tests/fleet/fleet.py); it forwards http://deb.debian.org only. The agents
are queried from the controller over 198.18.0.0/24: Zabbix with zabbix_utils.Getter (the Zabbix
protocol), node_exporter over HTTP parsed with prometheus_client's parser. `ss` on each host is the
oracle. The template's JSONPath preprocessing is applied by a small evaluator below that covers the
JSONPath forms the template uses (checked: an unknown form fails the test).
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from zabbix_utils import Getter

from tests.support.ss_oracle import ALL_STATES, ss_view
from tests.support.ss_oracle import stable as ss_stable
from tests.conftest import require
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles" / "zabbix_agent" / "files" / "netstate_tcp_zabbix_template.yaml"
COLLECTOR_DIR = "/usr/local/lib/netstate"
PACKAGE_PATH = "ansible_collections/netstate/tcp/plugins/module_utils/_engine"
# The package as the jobs run it, through the link to the current release.
ENGINE = COLLECTOR_DIR + "/current/" + PACKAGE_PATH
# What the roles copy: the engine package's Python files (tests/unit/roles/test_agent_role.py checks that the
# collector imports nothing outside it).
PACKAGE_FILES = sorted(path.name for path in (ROOT / "plugins" / "module_utils" / "_engine").glob("*.py"))
# The last revision whose roles installed the collector's files straight under <dir>/ansible_collections
# (plugins/module_utils/collect.py and the files listed in roles/_agent/vars/main.yml); the fixtures install
# the agents with it first, so the roles' first run here is an upgrade from that layout.
OLD_LAYOUT_REVISION = "661184acb88116a83032ae7df6280136f5829efd"
OLD_LAYOUT = COLLECTOR_DIR + "/ansible_collections/netstate/tcp/plugins/module_utils"
WEB_PORT = 18080
FULL_PORT = 18090


# ------------------------------------------------------------------------------ the agent hosts

@pytest.fixture(scope="module")
def agent_hosts(fleet):
    """Two hosts for the agents (apt goes through the fleet's proxy); restarted afterwards (services stop)."""
    hosts = fleet.hosts[-2:]
    try:
        yield {"hosts": hosts, "gateway": fleet.gateway}
    finally:
        for host in hosts:
            fleet.exec(host, "rm -f /etc/cron.d/netstate-tcp-textfile", check=False)
            fleet.restart_host(host)


@pytest.fixture(scope="module")
def old_collection(tmp_path_factory):
    """ANSIBLE_COLLECTIONS_PATH holding this collection as of OLD_LAYOUT_REVISION (git archive of the checkout)."""
    top = tmp_path_factory.mktemp("old_collection")
    target = top / "ansible_collections" / "netstate" / "tcp"
    target.mkdir(parents=True)
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", OLD_LAYOUT_REVISION + "^{commit}"],
                           capture_output=True, check=False)
    require(known.returncode == 0, "needs the git history holding %s" % OLD_LAYOUT_REVISION)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_LAYOUT_REVISION], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    assert (target / "plugins" / "module_utils" / "collect.py").is_file()
    return {"ANSIBLE_COLLECTIONS_PATH": str(top)}


def install_old_layout(fleet, hosts, playbook, old_collection, *args):
    """The agent role as OLD_LAYOUT_REVISION had it, on hosts; the collector's files are then where it put them."""
    from fleetcheck import run_playbook
    old = run_playbook(fleet, playbook, "-l", ",".join(hosts), *args, env=old_collection)
    assert old.returncode == 0, old.stdout[-5000:]
    for host in hosts:
        listing = fleet.exec(host, "ls -A " + OLD_LAYOUT).stdout.split()
        assert "collect.py" in listing and "engine.py" in listing, (host, listing)
    return old


def collector_dir_entries(fleet, host):
    return sorted(fleet.exec(host, "ls -A " + COLLECTOR_DIR).stdout.split())


# ------------------------------------------------------------------------------ ss, the oracle

def host_view(fleet, host, exclude=()):
    """ss's view of host (ss_oracle.ss_view); sockets (not listeners) on an excluded local port - the agent
    answering us - left out."""
    return ss_view(fleet.exec(host, "ss -H -n -t -a").stdout, exclude=exclude)


def stable(fleet, host, produce, exclude=()):
    """produce() between two identical ss views of host."""
    return ss_stable(lambda: host_view(fleet, host, exclude), produce, attempts=6, pause=0.5)


def facts_without(facts, port):
    """The facts' state counts without the sockets (not listeners) on one local port, as ss_view(exclude)."""
    states = Counter(facts["tcp"]["states"])
    for state, count in facts["tcp"]["local_ports"].get(str(port), {"states": {}})["states"].items():
        if state != "LISTEN":
            states[state] -= count
    return +states


# ------------------------------------------------------------------------------ JSONPath (Zabbix subset)

_FILTER = re.compile(r"^\[\?\((.*)\)\]")
_CONDITION = re.compile(r"^@\.(\w+)\s*==\s*(?:'([^']*)'|(-?\d+))$")


def jsonpath(document, path):
    """Evaluate the JSONPath forms the template uses; raises LookupError where Zabbix fails."""
    assert path.startswith("$"), path
    rest = path[1:]
    values, many = [document], False
    while rest:
        match = re.match(r"^\.(\w+)\(\)$", rest)
        if match:  # functions: sum(), max()
            numbers = values
            if not numbers or not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
                raise LookupError("%s over %r" % (match.group(1), numbers))
            return {"sum": sum, "max": max}[match.group(1)](numbers)
        match = re.match(r"^\.(\w+)", rest) or re.match(r"^\['([^']+)'\]", rest)
        if match:
            key = match.group(1)
            values = [value[key] for value in values if isinstance(value, dict) and key in value]
            rest = rest[match.end():]
            if not values and not many:
                raise LookupError(path)
            continue
        if rest.startswith("[*]"):
            values = [item for value in values if isinstance(value, list) for item in value]
            many = True
            rest = rest[3:]
            continue
        match = re.match(r"^\[(\d+)\]", rest)
        if match:
            index = int(match.group(1))
            values = [value[index] for value in values if isinstance(value, list) and len(value) > index]
            if not values:
                raise LookupError(path)
            rest = rest[match.end():]
            continue
        match = _FILTER.match(rest)
        if match:
            conditions = []
            for part in match.group(1).split("&&"):
                condition = _CONDITION.match(part.strip())
                assert condition, "JSONPath form not covered by the test's evaluator: " + part
                name, text, number = condition.groups()
                conditions.append((name, text if text is not None else int(number)))
            values = [item for value in values if isinstance(value, list) for item in value
                      if all(isinstance(item, dict) and item.get(name) == want for name, want in conditions)]
            many = True
            rest = rest[match.end():]
            continue
        raise AssertionError("JSONPath form not covered by the test's evaluator: " + rest)
    if many:
        return values
    if values[0] is None:
        raise LookupError(path + " is null")
    return values[0]


def preprocess(item, document, macros=None):
    """The item's value from the master document: JSONPath, error handler; rate steps left out."""
    steps = item["preprocessing"]
    assert steps[0]["type"] == "JSONPATH"
    path = steps[0]["parameters"][0]
    for macro, value in (macros or {}).items():
        path = path.replace(macro, value)
    try:
        value = jsonpath(document, path)
    except LookupError:
        handler = steps[0].get("error_handler")
        if handler == "CUSTOM_VALUE":
            return float(steps[0]["error_handler_params"])
        if handler == "DISCARD_VALUE":
            return None
        raise
    for step in steps[1:]:
        if step["type"] == "MULTIPLIER":
            value = value * float(step["parameters"][0])
    return value


def template():
    return yaml.safe_load(TEMPLATE.read_text())["zabbix_export"]["templates"][0]


# ------------------------------------------------------------------------------ zabbix

def write_playbook(tmp_path, role, variables):
    playbook = tmp_path / ("%s.yml" % role)
    playbook.write_text(yaml.safe_dump([{
        "name": "netstate.tcp.%s on the fleet" % role, "hosts": "all", "gather_facts": False,
        "tasks": [{"name": "Apply the role", "ansible.builtin.include_role": {"name": "netstate.tcp.%s" % role},
                   "vars": variables}]}]))
    return playbook


def recap(stdout):
    return {host: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counts)}
            for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", stdout, re.M)}


ZABBIX_VARS = {
    "netstate_zabbix_agent_flavor": "{{ 'agent2' if inventory_hostname == netstate_test_agent2_host else 'agentd' }}",
}


@pytest.fixture(scope="module")
def zabbix(fleet, agent_hosts, tmp_path_factory, old_collection):
    """The agents installed by the old layout's role, then by this one (an upgrade), then once more."""
    hosts = agent_hosts["hosts"]
    variables = dict(ZABBIX_VARS, netstate_zabbix_agent_server=["127.0.0.1", agent_hosts["gateway"]])
    playbook = write_playbook(tmp_path_factory.mktemp("zabbix"), "zabbix_agent", variables)
    from fleetcheck import run_playbook
    agent2 = ("-e", "netstate_test_agent2_host=" + hosts[1])
    install_old_layout(fleet, hosts, playbook, old_collection, *agent2)
    for host in hosts:
        wait_for("the agent on %s answers" % host,
                 lambda host=host: getter(fleet, host).get("agent.ping").value is not None, 30, interval=0.5)
    old_answers = {host: json.loads(agent_value(fleet, host, "netstate.tcp.json")) for host in hosts}
    first = run_playbook(fleet, playbook, "-l", ",".join(hosts), *agent2)
    assert first.returncode == 0, first.stdout[-5000:]
    second = run_playbook(fleet, playbook, "-l", ",".join(hosts), *agent2)
    assert second.returncode == 0, second.stdout[-5000:]
    return {"hosts": hosts, "flavors": {hosts[0]: "zabbix-agent", hosts[1]: "zabbix-agent2"},
            "first": first, "second": second, "old_answers": old_answers}


def getter(fleet, host):
    return Getter(host=fleet.address(host), port=10050, timeout=20)


def agent_value(fleet, host, key):
    response = getter(fleet, host).get(key)
    assert response.value is not None, "%s on %s: %s" % (key, host, response.error)
    return response.value


def test_zabbix_agents_installed_from_packages(fleet, zabbix):
    for host, package in zabbix["flavors"].items():
        status = fleet.exec(host, "dpkg-query -W -f '${Status} ${Version}' " + package).stdout
        assert status.startswith("install ok installed 1:6.0"), status
        assert agent_value(fleet, host, "agent.version").startswith("6.0")
        config = fleet.exec(host, "cat /etc/zabbix/zabbix_agent*.conf").stdout
        assert "UnsafeUserParameters=0" in config


def test_zabbix_upgrade_from_the_old_layout_removes_it_and_the_agent_answers(fleet, zabbix):
    for host in zabbix["hosts"]:
        assert "states" in zabbix["old_answers"][host]["tcp"]  # the old layout answered before the upgrade
        assert collector_dir_entries(fleet, host) == ["current", "releases"], host  # nothing of it is left
        parameters = fleet.exec(host, "cat /etc/zabbix/zabbix_agent*/netstate_tcp.conf").stdout
        assert COLLECTOR_DIR + "/current &&" in parameters and "._engine.collect" in parameters, parameters
        assert "states" in json.loads(agent_value(fleet, host, "netstate.tcp.json"))["tcp"]


def test_zabbix_second_run_changes_nothing(zabbix):
    for host in zabbix["hosts"]:
        assert recap(zabbix["second"].stdout)[host]["changed"] == 0, zabbix["second"].stdout[-3000:]
        assert recap(zabbix["first"].stdout)[host]["changed"] > 0


def test_master_item_matches_ss(fleet, zabbix, loads):
    for host in zabbix["hosts"]:
        loads.start(host, "established", port=WEB_PORT, count=25)
        # our own query is a socket on port 10050 while the agent answers, then TIME_WAIT: left out on both sides
        view, value = stable(fleet, host, lambda host=host: agent_value(fleet, host, "netstate.tcp.json"),
                             exclude=(10050,))
        facts = json.loads(value)
        assert facts["tcp"]["local_ports"]["10050"]["states"]["ESTABLISHED"] >= 1  # it did see our query
        assert facts_without(facts, 10050) == view["states"]
        assert facts["tcp"]["local_ports"][str(WEB_PORT)]["states"]["ESTABLISHED"] == 25
        assert {port: {s: c for s, c in entry["states"].items() if c}
                for port, entry in facts["tcp"]["local_ports"].items() if port != "10050"} == \
            {port: dict(counts) for port, counts in view["per_port"].items() if port != "10050"}
        assert sorted((item["address"], item["port"], item["backlog"]) for item in facts["listeners"]
                      if item["protocol"] == "tcp") == \
            sorted((item["address"], item["port"], item["backlog"]) for item in view["listeners"])


def refresh_discovery(fleet, host):
    """Run the exact command of the root job (cron here) that writes the discovery file the agent reads."""
    line = fleet.exec(host, "grep -v '^#' /etc/cron.d/netstate-tcp-zabbix-discovery | grep python3").stdout.strip()
    fleet.exec(host, line.split(None, 6)[6])


def test_discovery_lists_each_listening_port(fleet, zabbix, loads):
    for host in zabbix["hosts"]:
        loads.start(host, "established", port=WEB_PORT, count=5)
        # a listener that came up after the root job's last run shows at its next run
        refresh_discovery(fleet, host)
        view, value = stable(fleet, host, lambda host=host: agent_value(fleet, host, "netstate.tcp.discovery[tcp]"),
                             exclude=(10050,))
        rows = json.loads(value)
        assert sorted(int(row["{#PORT}"]) for row in rows) == sorted({item["port"] for item in view["listeners"]})
        assert {WEB_PORT, 10050, 22} <= {int(row["{#PORT}"]) for row in rows}
        assert all(row["{#PROTOCOL}"] == "tcp" for row in rows)


HOSTILE = [
    "netstate.tcp.json[;touch /tmp/netstate-pwned]",
    "netstate.tcp.discovery[tcp;touch /tmp/netstate-pwned]",
    "netstate.tcp.discovery[$(touch /tmp/netstate-pwned)]",
    "netstate.tcp.discovery[`touch /tmp/netstate-pwned`]",
    "netstate.tcp.discovery[tcp --output /tmp/netstate-pwned]",
    "netstate.tcp.discovery[tcp\ntouch /tmp/netstate-pwned]",
]


def test_hostile_parameters_are_rejected_and_run_nothing(fleet, zabbix):
    for host in zabbix["hosts"]:
        for key in HOSTILE:
            response = getter(fleet, host).get(key)
            if response.value is not None:  # reached the collector: argparse refused the one argument
                assert "error: argument --protocol" in response.value, (host, key, response.value)
            else:
                assert response.error, (host, key)
        assert fleet.exec(host, "ls /tmp/netstate-pwned", check=False).returncode != 0


def test_template_preprocessing_on_the_real_master_value(fleet, zabbix, loads):
    tpl = template()
    host = zabbix["hosts"][0]
    loads.start(host, "established", port=WEB_PORT, count=12)
    loads.start(host, "accept_full", port=FULL_PORT, backlog=2, clients=6)
    view, value = stable(fleet, host, lambda: agent_value(fleet, host, "netstate.tcp.json"), exclude=(10050,))
    document = json.loads(value)
    dependent = {item["key"]: item for item in tpl["items"] if item.get("type") == "DEPENDENT"}
    assert all(item["master_item"]["key"] == "netstate.tcp.json" for item in dependent.values())
    on_agent_port = document["tcp"]["local_ports"]["10050"]["states"]
    for state in ALL_STATES:
        got = preprocess(dependent["netstate.tcp.state[%s]" % state], document)
        expected = view["states"].get(state, 0) + (on_agent_port[state] if state != "LISTEN" else 0)
        assert got == expected, state
    assert preprocess(dependent["netstate.tcp.total"], document) == document["tcp"]["total"]
    for item in dependent.values():  # every dependent item evaluates on a real document
        preprocess(item, document)
    rule = next(rule for rule in tpl["discovery_rules"] if rule["key"] == "netstate.tcp.discovery[tcp]")
    refresh_discovery(fleet, host)  # the listeners started above show at the root job's next run
    rows = json.loads(agent_value(fleet, host, "netstate.tcp.discovery[tcp]"))
    ports = {row["{#PORT}"] for row in rows}
    assert str(FULL_PORT) in ports and str(WEB_PORT) in ports
    listeners = {}
    for listener in view["listeners"]:
        listeners.setdefault(str(listener["port"]), []).append(listener)
    for port in ports - {"10050"}:
        macros = {"{#PORT}": port}
        for prototype in rule["item_prototypes"]:
            got = preprocess(prototype, document, macros)
            key = prototype["key"]
            if key.startswith("netstate.tcp.port.state["):
                state = key.split(",")[1].rstrip("]")
                assert got == view["per_port"][port].get(state, 0), (port, key)
            elif key.startswith("netstate.tcp.port.total["):
                assert got == sum(view["per_port"][port].values()), (port, key)
            elif key.startswith("netstate.tcp.listen.queue["):
                assert got == sum(item["queue"] for item in listeners[port]), (port, key)
            elif key.startswith("netstate.tcp.listen.backlog["):
                assert got == sum(item["backlog"] for item in listeners[port]), (port, key)
            elif key.startswith("netstate.tcp.listen.saturation["):
                assert got == pytest.approx(max(item["queue"] / item["backlog"] for item in listeners[port]),
                                            abs=1e-3), (port, key)
    full = preprocess(next(p for p in rule["item_prototypes"] if p["key"].startswith("netstate.tcp.listen.saturation")),
                      document, {"{#PORT}": str(FULL_PORT)})
    assert full > 1  # the accept_full scenario's queue is beyond its backlog: the trigger's case


# Counts opens of the compiled collector module: each run of the collector opens it exactly once.
# Writes RUNDIR/ready once its watches are set; counts until RUNDIR/stop appears (or the time limit passes).
WATCH = r'''
import ctypes, os, select, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
for path in (sys.argv[1], sys.argv[1] + "/__pycache__"):
    assert libc.inotify_add_watch(fd, path.encode(), 0x20) >= 0, path  # IN_OPEN
rundir, limit = sys.argv[2], time.monotonic() + float(sys.argv[3])
opens = []
def read_events(wait):
    while select.select([fd], [], [], wait)[0]:
        data, offset, wait = os.read(fd, 65536), 0, 0
        while offset < len(data):
            _, _, _, length = struct.unpack_from("iIII", data, offset)
            opens.append(data[offset + 16:offset + 16 + length].rstrip(b"\0").decode().startswith("collect."))
            offset += 16 + length
open(os.path.join(rundir, "ready"), "w").close()
while not os.path.exists(os.path.join(rundir, "stop")) and time.monotonic() < limit:
    read_events(0.1)
read_events(0)  # what was queued before the stop
print(sum(opens))
'''


def seconds(delay, macros):
    """A Zabbix delay ("3s", "1h" or a macro naming one) in seconds."""
    delay = macros.get(delay, delay)
    return {"s": 1, "m": 60, "h": 3600}[delay[-1]] * int(delay[:-1])


ROOT_JOB_CRON = "/etc/cron.d/netstate-tcp-zabbix-discovery"
DISCOVERY_FILE = "/var/lib/netstate-tcp/zabbix-discovery.json"


def clear_of_the_root_job(fleet, host, seconds_needed):
    """The role's root job (cron, every N minutes at second 0 of the host's clock) runs the collector too,
    for the discovery rows with process names. Return once the next `seconds_needed` seconds hold none of
    its runs: a run that is due soon, or began and has not written its file yet, is waited for."""
    line = fleet.exec(host, ["grep", "-h", "^\\*/", ROOT_JOB_CRON]).stdout.split()
    assert line and line[0].startswith("*/") and line[5:6] == ["root"], (ROOT_JOB_CRON, line)
    period = int(line[0][2:]) * 60

    def written():
        return int(fleet.exec(host, ["stat", "-c", "%Y", DISCOVERY_FILE]).stdout)

    while True:
        now = int(fleet.exec(host, ["date", "+%s"]).stdout)
        last = now - now % period
        running = now < last + 120 and written() < last  # begun at `last`, not done yet
        due = last + period < now + seconds_needed
        if not running and not due:
            return
        run = last if running else last + period
        wait_for("the root job's run at %d on %s has written %s" % (run, host, DISCOVERY_FILE),
                 lambda run=run: written() >= run, max(0, run - now) + 120, interval=1)


def test_one_enumeration_per_interval_with_every_item_polled(fleet, zabbix):
    """Poll every agent item of the template on its schedule (interval shortened to 3 s by its macro)."""
    tpl = template()
    macros = {macro["macro"]: macro["value"] for macro in tpl["macros"]}
    macros["{$NETSTATE.INTERVAL}"] = "3s"
    agent_keys = [(item["key"], item["delay"]) for item in tpl["items"] if item.get("type", "ZABBIX_PASSIVE") ==
                  "ZABBIX_PASSIVE"]
    agent_keys += [(rule["key"], rule["delay"]) for rule in tpl["discovery_rules"]]
    collector_keys = {"netstate.tcp.json", "netstate.tcp.discovery[tcp]"}
    assert {key for key, _delay in agent_keys} >= collector_keys
    assert sum(1 for key, _delay in agent_keys if key.startswith("netstate.")) == 2  # the rest is dependent
    host = zabbix["hosts"][0]
    intervals = 4
    window = intervals * 3
    # the poller's schedule over the window: each key at 0, delay, 2 * delay, ... seconds
    schedule = sorted((at, key) for key, delay in agent_keys for at in range(0, window, seconds(delay, macros)))
    rundir = fleet.exec(host, "mktemp -d").stdout.strip()
    result = {}
    clear_of_the_root_job(fleet, host, window + 40)  # the watcher's setup and the polls, with room

    def watch():
        result["out"] = fleet.exec(host, ["python3", "-c", WATCH, ENGINE, rundir, str(window + 60)],
                                   timeout=window + 90).stdout

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        wait_for("the collector watcher on %s is set up" % host,
                 lambda: fleet.exec(host, ["test", "-e", rundir + "/ready"], check=False).returncode == 0,
                 30, interval=0.1)
        polls = Counter()
        start = time.monotonic()
        for at, key in schedule:
            time.sleep(max(0.0, start + at - time.monotonic()))  # the poller's next slot, not a guess
            getter(fleet, host).get(key)
            polls[key] += 1
    finally:
        fleet.exec(host, ["touch", rundir + "/stop"], check=False)
        watcher.join()
        fleet.exec(host, ["rm", "-rf", rundir], check=False)
    opens = int(result["out"].split()[-1])
    assert polls["netstate.tcp.json"] == intervals
    assert polls["netstate.tcp.discovery[tcp]"] == 1
    # one enumeration per interval, plus the discovery rule's own (hourly) run; dependent items cost nothing
    # (the root job's runs, every few minutes, fall outside the window)
    assert opens == polls["netstate.tcp.json"] + polls["netstate.tcp.discovery[tcp]"], (opens, polls)


# ------------------------------------------------------------------------------ node_exporter

@pytest.fixture(scope="module")
def node_exporter(fleet, agent_hosts, tmp_path_factory, old_collection):
    """node_exporter installed by the old layout's role (beside the Zabbix agents' release), then by this
    one (an upgrade), then once more."""
    hosts = agent_hosts["hosts"]
    playbook = write_playbook(tmp_path_factory.mktemp("node_exporter"), "node_exporter", {})
    from fleetcheck import run_playbook
    install_old_layout(fleet, hosts, playbook, old_collection)
    old_jobs = {host: cron_command(fleet, host) for host in hosts}
    for host in hosts:  # the old layout's job writes the textfile; a file of an even older version beside it
        fleet.exec(host, "rm -f %s && (%s) && test -s %s" % (TEXTFILE, old_jobs[host], TEXTFILE))
        fleet.exec(host, "echo 'raise ImportError' > %s/_sysctl.py" % OLD_LAYOUT)
    first = run_playbook(fleet, playbook, "-l", ",".join(hosts))
    assert first.returncode == 0, first.stdout[-5000:]
    second = run_playbook(fleet, playbook, "-l", ",".join(hosts))
    assert second.returncode == 0, second.stdout[-5000:]
    return {"hosts": hosts, "first": first, "second": second, "old_jobs": old_jobs}


def scrape(fleet, host):
    """GET /metrics over a keep-alive connection that this side closes first: the TIME_WAIT of
    the probe's own connection stays on the controller, never in the host's tcpstat."""
    connection = http.client.HTTPConnection(fleet.address(host), 9100, timeout=20)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200, response.status
        text = response.read().decode()
    finally:
        connection.close()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return values


TEXTFILE = "/var/lib/prometheus/node-exporter/netstate_tcp.prom"


def cron_command(fleet, host):
    """The exact command the role scheduled in cron."""
    line = fleet.exec(host, "grep -v '^#' /etc/cron.d/netstate-tcp-textfile | grep python3").stdout.strip()
    return line.split(None, 6)[6]


def refresh_textfile(fleet, host):
    """Run the exact command the role scheduled in cron."""
    fleet.exec(host, cron_command(fleet, host))


def test_hosts_hold_the_collectors_package_only(fleet, node_exporter):
    assert "collect.py" in PACKAGE_FILES and "_sysctl.py" not in PACKAGE_FILES
    for host in node_exporter["hosts"]:
        # the upgrade left nothing of the old layout, and one release: both roles installed the same package
        assert collector_dir_entries(fleet, host) == ["current", "releases"], host
        releases = fleet.exec(host, "ls -A %s/releases" % COLLECTOR_DIR).stdout.split()
        current = fleet.exec(host, "readlink %s/current" % COLLECTOR_DIR).stdout.strip()
        assert len(releases) == 1 and current == "releases/" + releases[0], (host, releases, current)
        files = fleet.exec(host, "cd %s && stat -c '%%a %%U:%%G %%n' *.py" % ENGINE).stdout.splitlines()
        assert sorted(files) == ["644 root:root " + name for name in PACKAGE_FILES], (host, files)
        compiled = fleet.exec(host, "stat -c '%%U %%n' %s/__pycache__/*" % ENGINE).stdout.split("\n")
        assert sorted(line.split()[1].rsplit("/", 1)[1].split(".")[0] + ".py" for line in compiled if line) == \
            PACKAGE_FILES, (host, compiled)
        assert all(line.startswith("root ") for line in compiled if line), (host, compiled)
        assert sorted(fleet.exec(host, "ls -A " + ENGINE).stdout.split()) == sorted(["__pycache__"] + PACKAGE_FILES)
        # every directory down to the package (the link followed): root's, readable by the agents' users
        directories = [COLLECTOR_DIR, COLLECTOR_DIR + "/releases", COLLECTOR_DIR + "/current"]
        for part in PACKAGE_PATH.split("/"):
            directories.append(directories[-1] + "/" + part)
        modes = fleet.exec(host, ["stat", "-L", "-c", "%a %U:%G"] + directories).stdout.split("\n")
        assert [mode for mode in modes if mode] == ["755 root:root"] * len(directories), (host, modes)


def test_node_exporter_upgrade_from_the_old_layout_switches_the_job(fleet, node_exporter):
    for host in node_exporter["hosts"]:
        assert "plugins.module_utils.collect" in node_exporter["old_jobs"][host]
        job = cron_command(fleet, host)
        assert "cd %s/current &&" % COLLECTOR_DIR in job and "._engine.collect" in job, (host, job)
        fleet.exec(host, "rm -f " + TEXTFILE)
        fleet.exec(host, job)  # the job the upgrade scheduled writes the textfile again
        assert scrape(fleet, host)["netstate_collector_success"][()] == 1


def test_node_exporter_second_run_changes_nothing(node_exporter):
    for host in node_exporter["hosts"]:
        assert recap(node_exporter["second"].stdout)[host]["changed"] == 0, node_exporter["second"].stdout[-3000:]


def test_node_exporter_scrape_matches_ss(fleet, node_exporter, loads):
    for host in node_exporter["hosts"]:
        loads.start(host, "established", port=WEB_PORT, count=20)
        status = fleet.exec(host, "dpkg-query -W -f '${Status} ${Version}' prometheus-node-exporter").stdout
        assert status.startswith("install ok installed 1.5"), status

        def both(host=host):
            refresh_textfile(fleet, host)
            return scrape(fleet, host)

        view, values = stable(fleet, host, both, exclude=(9100,))
        # tcpstat counts the scrape's own connection to 9100: ESTABLISHED while node_exporter answers
        tcpstat = {dict(key)["state"]: value for key, value in values["node_tcp_connection_states"].items()}
        scrape_connections = tcpstat["established"] - view["states"].get("ESTABLISHED", 0)
        assert scrape_connections in (0, 1), tcpstat
        for state in ("listen", "time_wait", "close_wait", "syn_recv"):
            assert tcpstat.get(state, 0) == view["states"].get(state.upper(), 0), state
        per_port = values["netstate_tcp_port_connections"]
        for port, counts in view["per_port"].items():
            if port == "9100":
                continue
            for state in ALL_STATES:
                assert per_port[(("port", port), ("state", state))] == counts.get(state, 0), (host, port, state)
        assert per_port[(("port", str(WEB_PORT)), ("state", "ESTABLISHED"))] == 20
        queue = values["netstate_tcp_listen_queue"]
        assert {(dict(key)["address"], int(dict(key)["port"])) for key in queue} == \
            {(item["address"], item["port"]) for item in view["listeners"]}
        assert values["netstate_collector_success"][()] == 1
        assert "node_netstat_TcpExt_TCPTimeWaitOverflow" in values and "node_netstat_TcpExt_TW" in values


def test_textfile_is_refreshed_by_cron(fleet, node_exporter):
    host = node_exporter["hosts"][0]
    path = "/var/lib/prometheus/node-exporter/netstate_tcp.prom"
    before = float(fleet.exec(host, "stat -c %Y " + path).stdout)
    wait_for("cron rewrites %s" % path, lambda: float(fleet.exec(host, "stat -c %Y " + path).stdout) > before, 75,
             interval=3)
    assert scrape(fleet, host)["netstate_collector_success"][()] == 1
