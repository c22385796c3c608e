# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""From a TCP symptom to a fix without a human, every component real: a leaking service run as a systemd unit,
the collector's textfile metrics read by node_exporter, Prometheus with the shipped alert rules, Alertmanager
configured by playbooks/monitor.yml, ansible-rulebook running the shipped rulebook (netstate.tcp.alerts) on
the controller, and the guarded remediation playbook (netstate.tcp.remediate) it starts.

One fleet of four systemd Debian 12 hosts: h01 Prometheus and Alertmanager (tests/fleet/monitoring_server.py);
h02 `leaky-app.service`, allow-listed, leaking CLOSE_WAIT on port 18090; h03 healthy; h04 `other-app.service`,
the same leak on port 18091, not allow-listed. The inventory's policy: mode act, allow-list leaky-app.service.
`ss` and `systemctl` on each host are the oracles; Prometheus's /api/v1/alerts is what a user sees; the audit
trail (one JSON line per decision) is what the remediation says it did. Each stage's latency is printed and
written to .build/closed-loop-latencies.json (docs/remediation.md quotes a run).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import calendar
import contextlib
import datetime
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from importlib import metadata

import pytest
import yaml

from ee import build_collection
from monitoring_server import setup_alerting_host
from test_quickstart_hosts import PYPI, local_certificate_authorities

from tests.support.waiting import wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MONITOR = ROOT / "playbooks" / "monitor.yml"
LEAKY = Path(__file__).with_name("leaky_service.py")
REMOTE_LEAKY = "/usr/local/lib/leaky-app/leaky_service.py"
LEAK_HOST, HEALTHY_HOST, HELD_HOST = "h02", "h03", "h04"
UNITS = {LEAK_HOST: ("leaky-app.service", 18090), HELD_HOST: ("other-app.service", 18091)}
LEAK = 150          # above close_wait_per_port's limit of 100
LATENCIES = {}
NATIVE_HOST, NATIVE_PORT, NATIVE_INTERVAL = "h03", 18092, 5   # after the loop's tests, h03 watches itself
NATIVE_VENV = "/opt/netstate-eda"
RULEBOOK_VERSION = "1.3.2"        # tests/requirements.txt's
LATENCY_FILE = ROOT / ".build" / "closed-loop-latencies.json"

UNIT_FILE = """[Unit]
Description=A service that never closes connections its clients closed (netstate.tcp fleet test)

[Service]
ExecStart=/usr/bin/python3 {script} serve {port}
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def note(name, seconds):
    LATENCIES[name] = round(seconds, 1)
    print("latency %s: %.1f s" % (name, seconds))
    LATENCY_FILE.parent.mkdir(parents=True, exist_ok=True)
    LATENCY_FILE.write_text(json.dumps(LATENCIES, indent=2, sort_keys=True) + "\n")


def write(fleet, host, path, text, mode="0644"):
    data = base64.b64encode(text.encode("utf-8")).decode("ascii")
    fleet.exec(host, "mkdir -p \"$(dirname {0})\" && echo {1} | base64 -d > {0} && chmod {2} {0}".format(
        path, data, mode))


def free_port(address):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def main_pid(fleet, host, unit):
    return int(fleet.exec(host, "systemctl show -p MainPID --value %s" % unit).stdout.strip() or 0)


def close_wait(fleet, host, port):
    """CLOSE_WAIT sockets on host's local port, counted by ss."""
    out = fleet.exec(host, "ss -H -n -t state close-wait '( sport = :%d )'" % port).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def firing(loop, host, rule):
    with urllib.request.urlopen(loop["server"]["prometheus_url"] + "/api/v1/alerts", timeout=10) as response:  # noqa: S310
        alerts = json.loads(response.read().decode())["data"]["alerts"]
    return [alert for alert in alerts if alert["state"] == "firing" and alert["labels"].get("rule") == rule
            and alert["labels"].get("netstate_host") == host]


def audit(loop):
    path = loop["audit"]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def leak(fleet, host, port, name):
    """Half-close LEAK connections to host:port from a transient unit of their own (stopped at the end)."""
    fleet.exec(host, "systemd-run --quiet --unit=%s --property=KillMode=control-group "
                     "/usr/bin/python3 %s clients %s %d %d" % (name, REMOTE_LEAKY, fleet.address(host), port, LEAK))
    return wait_for("%d CLOSE_WAIT on %s:%d" % (LEAK, host, port),
                    lambda: close_wait(fleet, host, port) >= LEAK and time.monotonic(), 60, interval=0.5)


@pytest.fixture(scope="module")
def loop(fleet_factory, tmp_path_factory, ansible_env):
    for tool in ("ansible-rulebook", "java"):
        if shutil.which(tool, path=ansible_env["PATH"]) is None:
            pytest.fail("%s is not installed: scripts/setup.sh installs it (make test runs it)" % tool)
    with pytest.MonkeyPatch.context() as patch:
        # NATIVE_HOST's ansible-rulebook comes from PyPI through the fleet's proxy (test_quickstart_hosts.py)
        patch.setenv("NETSTATE_FLEET_PROXY_ALLOW", PYPI)
        if not os.environ.get("NETSTATE_FLEET_HOST_CA"):
            patch.setenv("NETSTATE_FLEET_HOST_CA", ",".join(local_certificate_authorities()))
        fleet = fleet_factory("loop", 4, systems=("debian12",), init="systemd")
    server = setup_alerting_host(fleet, "h01")
    print("alerting host: %s, %s, set up in %s s"
          % (server["prometheus_version"], server["alertmanager_version"], server["setup_s"]))
    for host, (unit, port) in UNITS.items():
        write(fleet, host, REMOTE_LEAKY, LEAKY.read_text())
        write(fleet, host, "/etc/systemd/system/" + unit, UNIT_FILE.format(script=REMOTE_LEAKY, port=port))
        fleet.exec(host, "systemctl daemon-reload && systemctl enable -q --now %s" % unit)
        wait_for("%s listens on %s" % (unit, port), lambda h=host, p=port: fleet.exec(
            h, "ss -H -ltn '( sport = :%d )'" % p).stdout.strip(), 30)

    tmp = tmp_path_factory.mktemp("loop")
    gateway = fleet.gateway
    port = free_port(gateway)
    token = secrets.token_urlsafe(24)
    inventory, audit_file = policy_inventory(fleet, tmp, {
        "netstate_remediate_mode": "act",
        "netstate_remediate_allow_units": ["leaky-app.service"],
        "netstate_remediate_max_hosts": 2,
    })
    monitor_vars = tmp / "monitor.yml"
    monitor_vars.write_text(yaml.safe_dump({"all": {"children": {
        "agents": {"hosts": {LEAK_HOST: {}, HEALTHY_HOST: {}, HELD_HOST: {}},
                   "vars": {"netstate_monitor_agents": ["node_exporter"]}},
        "prometheus": {"hosts": {"h01": {}}},
        "alertmanager": {"hosts": {"h01": {}}}}}}))
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), str(MONITOR), "-i", str(fleet.inventory),
         "-i", str(monitor_vars), "-e", "netstate_monitor_hosts=agents",
         "-e", json.dumps({"netstate_monitor_eda_url": "http://%s:%d/alerts" % (gateway, port),
                           "netstate_monitor_eda_token": token,
                           "netstate_monitor_alertmanager_group_wait": "1s",
                           "netstate_monitor_alertmanager_group_interval": "10s"})],
        env=ansible_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stdout[-6000:]
    # NATIVE_HOST gets Java and ansible-rulebook while the loop runs (after monitor.yml: one apt at a time)
    native = ThreadPoolExecutor(1)
    native_ready = native.submit(install_rulebook, fleet, NATIVE_HOST,
                                 build_collection(tmp_path_factory.mktemp("collection")))

    with rulebook_running(ansible_env, tmp, inventory, gateway, port, token) as (rulebook, log_path):
        yield {"fleet": fleet, "server": server, "audit": audit_file, "log": log_path, "rulebook": rulebook,
               "inventory": inventory, "env": ansible_env, "native_ready": native_ready}
        native.shutdown(wait=True)
    for host in UNITS:
        fleet.exec(host, "systemctl stop 'leak-clients-*' 2>/dev/null; true", check=False)


def policy_inventory(fleet, directory, policy):
    """The inventory as an operator keeps it: the fleet's hosts, then the remediation policy as group variables,
    the audit trail in a directory of its own; (inventory directory, audit file)."""
    audit_file = directory / "audit" / "remediation.jsonl"
    audit_file.parent.mkdir()
    inventory = directory / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    shutil.copy(str(fleet.inventory), str(inventory / "hosts.ini"))
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(
        dict(policy, netstate_remediate_audit_file=str(audit_file))))
    return inventory, audit_file


@contextlib.contextmanager
def rulebook_running(ansible_env, directory, inventory, address, port, token, verbosity="-v"):
    """The real ansible-rulebook with the shipped netstate.tcp.alerts, its webhook on address:port with token, the
    remediation policy in inventory; (process, its log file) once the webhook listens; stopped at the end."""
    rulebook_vars = directory / "rulebook-vars.yml"
    rulebook_vars.write_text(yaml.safe_dump({"netstate_eda_host": address, "netstate_eda_port": port}))
    log_path = directory / "rulebook.log"
    with open(log_path, "w") as log:
        rulebook = subprocess.Popen(
            [shutil.which("ansible-rulebook", path=ansible_env["PATH"]), "--rulebook", "netstate.tcp.alerts",
             "-i", str(inventory), "--vars", str(rulebook_vars), "--env-vars", "NETSTATE_EDA_TOKEN", verbosity],
            env=dict(ansible_env, NETSTATE_EDA_TOKEN=token, TZ="UTC"), cwd=str(directory), stdout=log,
            stderr=subprocess.STDOUT)
        try:
            try:
                wait_for("ansible-rulebook's webhook listens on %s:%d" % (address, port),
                         lambda: rulebook.poll() is None and _connects(address, port), 180, interval=0.5)
            except AssertionError:
                raise AssertionError("ansible-rulebook did not start:\n" + log_path.read_text()[-6000:]) from None
            yield rulebook, log_path
        finally:
            rulebook.terminate()
            try:
                rulebook.wait(30)
            except subprocess.TimeoutExpired:
                rulebook.kill()


def _connects(address, port):
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


ACCESS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) - aiohttp\.access - .*\"POST /alerts ", re.M)


def webhook_posts(log):
    """When ansible-rulebook's webhook took each POST /alerts (epoch seconds; its log's clock is UTC here)."""
    return [calendar.timegm(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")) + int(match.group(2)) / 1000.0
            for match in ACCESS.finditer(log)]


def iso_seconds(text):
    """An audit line's ISO 8601 time as epoch seconds."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def rulebook_log(loop):
    return loop["log"].read_text(errors="replace")


def test_leak_restarted_through_alertmanager_and_the_rulebook(loop):
    """The leak crosses the limit -> the alert fires -> Alertmanager posts it -> the rulebook runs the remediation
    in act mode -> the allow-listed unit restarts -> CLOSE_WAIT falls -> the alert resolves. The healthy host is
    never touched; the same leak in a unit off the allow-list is planned, not restarted."""
    fleet = loop["fleet"]
    unit, port = UNITS[LEAK_HOST]
    held_unit, held_port = UNITS[HELD_HOST]
    pid_before = main_pid(fleet, LEAK_HOST, unit)
    held_pid = main_pid(fleet, HELD_HOST, held_unit)
    healthy_units = fleet.exec(HEALTHY_HOST, "systemctl list-units --type=service --state=running --no-legend "
                                             "--plain | awk '{print $1}' | sort").stdout
    started = time.monotonic()
    crossed = leak(fleet, LEAK_HOST, port, "leak-clients-1")
    leak(fleet, HELD_HOST, held_port, "leak-clients-held")
    note("threshold_crossed_s", crossed - started)

    alerted = wait_for("close_wait_per_port fires for %s" % LEAK_HOST,
                       lambda: firing(loop, LEAK_HOST, "close_wait_per_port") and time.monotonic(), 240, interval=1)
    alerted_wall = time.time()
    note("crossed_to_alert_firing_s", alerted - crossed)

    def restarted():
        pid = main_pid(fleet, LEAK_HOST, unit)
        return pid not in (0, pid_before) and time.monotonic()
    restart = wait_for("the rulebook's remediation restarts %s" % unit, restarted, 240, interval=0.5)
    note("alert_firing_to_restart_s", restart - alerted)

    below = wait_for("CLOSE_WAIT on %s:%d falls below 100" % (LEAK_HOST, port),
                     lambda: close_wait(fleet, LEAK_HOST, port) < 100 and time.monotonic(), 60, interval=0.5)
    note("restart_to_below_threshold_s", below - restart)
    resolved = wait_for("close_wait_per_port resolves for %s" % LEAK_HOST,
                        lambda: not firing(loop, LEAK_HOST, "close_wait_per_port") and time.monotonic(),
                        240, interval=1)
    note("below_threshold_to_alert_resolved_s", resolved - below)
    note("crossed_to_resolved_s", resolved - crossed)

    def both_decided():
        found = audit(loop)
        return found if {LEAK_HOST, HELD_HOST} <= {entry["host"] for entry in found} else None
    entries = wait_for("the audit trail holds the decisions of %s and %s" % (LEAK_HOST, HELD_HOST), both_decided,
                       240, interval=1)
    by_host = {}
    for entry in entries:
        by_host.setdefault(entry["host"], []).append(entry)
    acted = by_host[LEAK_HOST]
    assert len(acted) == 1, acted
    assert acted[0]["rule"] == "close_wait_per_port" and acted[0]["mode"] == "act", acted
    assert acted[0]["decision"] == "act" and acted[0]["guard"] is None, acted
    assert acted[0]["action"] == {"kind": "restart_unit", "target": unit}, acted
    assert acted[0]["port"] == port and acted[0]["result"] == "fixed", acted
    assert acted[0]["evidence_before"]["value"] >= LEAK > acted[0]["evidence_after"]["value"], acted
    assert acted[0]["source"].startswith("alertmanager"), acted
    decided = iso_seconds(acted[0]["time"])
    posted = webhook_posts(rulebook_log(loop))
    assert posted, rulebook_log(loop)[-4000:]
    note("alert_firing_to_webhook_s", posted[0] - alerted_wall)
    note("webhook_to_remediation_decision_s", decided - posted[0])
    planned = by_host[HELD_HOST]
    assert len(planned) == 1, planned
    assert planned[0]["decision"] == "plan" and planned[0]["guard"] == "allow_list", planned
    assert planned[0]["action"] == {"kind": "restart_unit", "target": held_unit}, planned
    assert planned[0]["result"] is None, planned
    assert main_pid(fleet, HELD_HOST, held_unit) == held_pid, "a unit off the allow-list was restarted"
    assert close_wait(fleet, HELD_HOST, held_port) >= LEAK
    assert HEALTHY_HOST not in by_host, by_host[HEALTHY_HOST]
    assert fleet.exec(HEALTHY_HOST, "systemctl list-units --type=service --state=running --no-legend "
                                    "--plain | awk '{print $1}' | sort").stdout == healthy_units
    # Alertmanager tells resolved alerts at its next group_interval (10 s here) after Prometheus resolved it
    wait_for("the rulebook logs the resolved alert", lambda: re.search(
        r"resolved: close_wait_per_port on %s" % LEAK_HOST, rulebook_log(loop)), 60, interval=1)


def test_a_second_alert_inside_the_cooldown_restarts_nothing(loop):
    """The same leak again right after the fix: the alert fires again, and nothing is restarted a second time."""
    fleet = loop["fleet"]
    unit, port = UNITS[LEAK_HOST]
    fleet.exec(LEAK_HOST, "systemctl stop 'leak-clients-*' 2>/dev/null; true", check=False)
    pid = main_pid(fleet, LEAK_HOST, unit)
    before = len([e for e in audit(loop) if e["host"] == LEAK_HOST])
    leak(fleet, LEAK_HOST, port, "leak-clients-2")
    alerted = wait_for("close_wait_per_port fires again for %s" % LEAK_HOST,
                       lambda: firing(loop, LEAK_HOST, "close_wait_per_port") and time.monotonic(), 240, interval=1)
    # Alertmanager's group_wait (1 s) and the rulebook's reaction took seconds in the first test: give it 45 s.
    time.sleep(max(0.0, alerted + 45 - time.monotonic()))
    assert main_pid(fleet, LEAK_HOST, unit) == pid, "restarted again inside the cooldown"
    assert close_wait(fleet, LEAK_HOST, port) >= LEAK
    after = [e for e in audit(loop) if e["host"] == LEAK_HOST][before:]
    # the rulebook's throttle holds the run back, or the playbook's cooldown records why it did nothing
    assert all(e["result"] is None and e["decision"] != "act" for e in after), after


def install_rulebook(fleet, host, tarball):
    """Java from Debian, ansible-core (the controller's release) and ansible-rulebook from PyPI in a venv,
    and this tree's collection from its tarball, on host; seconds taken."""
    started = time.monotonic()
    core = metadata.version("ansible-core")
    fleet.exec(host, "set -e\nexport DEBIAN_FRONTEND=noninteractive\napt-get update -q >/dev/null\n"
                     "apt-get install -y -q --no-install-recommends openjdk-17-jre-headless python3-venv >/dev/null",
               timeout=1500)
    fleet.exec(host, "python3 -m venv {venv} && https_proxy={proxy} {venv}/bin/pip install -q "
                     "--disable-pip-version-check ansible-core=={core} jmespath ansible-rulebook=={rulebook}".format(
                         venv=NATIVE_VENV, proxy=fleet.proxy_url, core=core, rulebook=RULEBOOK_VERSION), timeout=1500)
    fleet.podman.run("cp", str(tarball), "%s:/srv/netstate-tcp.tar.gz" % fleet.container(host))
    fleet.exec(host, "{venv}/bin/ansible-galaxy collection install -p /usr/share/ansible/collections "
                     "/srv/netstate-tcp.tar.gz >/dev/null".format(venv=NATIVE_VENV), timeout=300)
    write(fleet, host, REMOTE_LEAKY, LEAKY.read_text())
    return round(time.monotonic() - started, 1)


def documented_unit():
    """docs/remediation.md's systemd unit for ansible-rulebook with netstate.tcp.local, as the page shows it."""
    page = (ROOT / "docs" / "remediation.md").read_text()
    units = [block for block in re.findall(r"^```ini\n(.*?)^```", page, re.M | re.S)
             if "ExecStart=" in block and "netstate.tcp.local" in block]
    assert len(units) == 1, "docs/remediation.md shows %d ansible-rulebook units" % len(units)
    return units[0]


def received_events(journal):
    """The netstate events in ansible-rulebook's --print-events output: (received_at, status, rule, port)."""
    found = []
    for block in journal.split("[received event]")[1:]:
        body = block.split("*" * 40)[0]
        if "'netstate':" not in body:
            continue
        fields = {key: re.search(r"'%s': '?([^',}]*)'?" % key, body) for key in ("status", "rule", "port")}
        at = re.search(r"'received_at': '([^']+)'", body)
        found.append((iso_seconds(at.group(1)) if at else None,) + tuple(
            match.group(1) if match else None for match in fields.values()))
    return found


def test_the_native_source_on_a_fleet_host_fires_and_resolves(loop):
    """ansible-rulebook on a fleet host, run by docs/remediation.md's systemd unit with the shipped
    netstate.tcp.local rulebook and netstate.tcp.tcp_health (no Prometheus): a leak there gives one firing event
    and a remediation run in plan mode (an audit line, nothing restarted); its end one resolved event; each
    within two intervals."""
    fleet = loop["fleet"]
    print("ansible-rulebook on %s installed in %s s" % (NATIVE_HOST, loop["native_ready"].result(timeout=1800)))
    audit_file = "/var/log/netstate-tcp/remediation.jsonl"
    write(fleet, NATIVE_HOST, "/etc/netstate-eda/inventory.yml", yaml.safe_dump({"all": {
        "hosts": {NATIVE_HOST: {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}},
        "vars": {"netstate_remediate_audit_file": audit_file}}}))
    write(fleet, NATIVE_HOST, "/etc/netstate-eda/vars.yml", yaml.safe_dump({
        "netstate_eda_host_name": NATIVE_HOST, "netstate_eda_interval": NATIVE_INTERVAL}))
    write(fleet, NATIVE_HOST, "/etc/systemd/system/netstate-eda.service", documented_unit())
    fleet.exec(NATIVE_HOST, "mkdir -p /var/log/netstate-tcp")
    fleet.exec(NATIVE_HOST, "systemd-run --quiet --unit=native-app /usr/bin/python3 %s serve %d"
               % (REMOTE_LEAKY, NATIVE_PORT))
    fleet.exec(NATIVE_HOST, "systemctl daemon-reload && systemctl start netstate-eda")

    def journal():
        return fleet.exec(NATIVE_HOST, "journalctl -q -o cat -u netstate-eda", check=False).stdout

    def changes():
        return [event for event in received_events(journal())
                if event[2] == "close_wait_per_port" and event[3] == str(NATIVE_PORT)]
    try:
        wait_for("the rulebook's source polls", lambda: "Waiting for events" in journal(), 180, interval=1)
        time.sleep(NATIVE_INTERVAL + 1)   # a first poll without the leak: its verdicts are the baseline
        assert changes() == [], journal()[-4000:]
        pid = main_pid(fleet, NATIVE_HOST, "native-app.service")
        crossed = leak(fleet, NATIVE_HOST, NATIVE_PORT, "leak-clients-native")
        crossed_wall = time.time() - (time.monotonic() - crossed)
        # waited for longer than the bound, so that a late event fails the assertion below with its time
        fired = wait_for("one firing event", changes, 2 * NATIVE_INTERVAL + 55, interval=0.5)
        note("native_crossed_to_firing_event_s", fired[0][0] - crossed_wall)
        assert fired[0][0] - crossed_wall <= 2 * NATIVE_INTERVAL, fired
        planned = wait_for("the remediation's plan entry", lambda: [json.loads(line) for line in fleet.exec(
            NATIVE_HOST, "cat %s 2>/dev/null" % audit_file, check=False).stdout.splitlines() if line.strip()], 120,
            interval=1)
        note("native_firing_event_to_decision_s", iso_seconds(planned[0]["time"]) - fired[0][0])
        assert [(entry["decision"], entry["mode"], entry["source"].split()[0]) for entry in planned] == [
            ("plan", "plan", "tcp_health")], planned
        assert main_pid(fleet, NATIVE_HOST, "native-app.service") == pid, "plan mode restarted the unit"
        fleet.exec(NATIVE_HOST, "systemctl stop leak-clients-native native-app")
        ended_wall = time.time()
        resolved = wait_for("one resolved event", lambda: len(changes()) == 2 and changes(),
                            2 * NATIVE_INTERVAL + 55, interval=0.5)
        note("native_ended_to_resolved_event_s", resolved[1][0] - ended_wall)
        assert resolved[1][0] - ended_wall <= 2 * NATIVE_INTERVAL, resolved
        time.sleep(NATIVE_INTERVAL + 1)
        assert [event[1] for event in changes()] == ["firing", "resolved"], changes()
        assert re.search(r"resolved: close_wait_per_port on %s" % NATIVE_HOST, journal()), journal()[-4000:]
    finally:
        fleet.exec(NATIVE_HOST, "systemctl stop netstate-eda native-app leak-clients-native 2>/dev/null; true",
                   check=False)
