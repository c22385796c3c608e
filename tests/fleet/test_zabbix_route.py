# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Zabbix problems into the rulebook, every component real: a leaking service run as a systemd unit, the Zabbix
agent with the netstate template, the Zabbix server (tests/fleet/monitoring_server.py) running the webhook media
type that netstate.tcp.zabbix_register installed (roles/zabbix_register/files/netstate_eda_webhook.js) through
the action it created, ansible-rulebook running the shipped rulebook (netstate.tcp.alerts) on the controller,
and the guarded remediation playbook (netstate.tcp.remediate) it starts, in plan mode.

One fleet of two systemd hosts per Zabbix server generation (SERVERS: 6.0 on Debian 12, 7.0 on Debian 13):
h01 the Zabbix server, h02 a Zabbix agent with `leaky-app.service` listening on PORT, registered by
playbooks/monitor.yml with the route to ansible-rulebook (netstate_zabbix_register_eda_url and _eda_token).
Zabbix's problem.get and alert.get are what a user sees; `ss` and `systemctl` on h02 are the oracles of the
host; the audit trail (one JSON line per decision) is what the remediation says it decided, naming the Zabbix
event it came from.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
import urllib.error
import urllib.request

import pytest
import yaml
from zabbix_utils import ZabbixAPI

from monitoring_server import setup_monitoring_host
from test_closed_loop import (LEAK, LEAKY, MONITOR, REMOTE_LEAKY, ROOT, UNIT_FILE, audit, close_wait, free_port,
                              leak, main_pid, policy_inventory, rulebook_running, write)
from test_servers import run

from tests.support.waiting import wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

# Zabbix server generation -> the fleet system of its hosts and the function that sets the server up on h01
SERVERS = {"debian12": ("debian12", setup_monitoring_host), "debian13": ("debian13", setup_monitoring_host)}
SERVER, AGENT = "h01", "h02"
UNIT, PORT = "leaky-app.service", 18093
RULE = "close_wait_per_port"
MEDIA_TYPE = "netstate.tcp to ansible-rulebook"
ACTION = "netstate.tcp problems to ansible-rulebook"
WEBHOOK_SCRIPT = ROOT / "roles" / "zabbix_register" / "files" / "netstate_eda_webhook.js"
ZABBIX_RUN = "rule: Remediate a Zabbix problem of the netstate template"   # ansible-rulebook -vv, per run


@pytest.fixture(scope="module", params=sorted(SERVERS))
def route(request, fleet_factory, tmp_path_factory, ansible_env):
    for tool in ("ansible-rulebook", "java"):
        if shutil.which(tool, path=ansible_env["PATH"]) is None:
            pytest.fail("%s is not installed: scripts/setup.sh installs it (make test runs it)" % tool)
    system, setup_server = SERVERS[request.param]
    fleet = fleet_factory("zr" + request.param[-2:], 2, systems=(system,), init="systemd")
    server = setup_server(fleet, SERVER)
    print("Zabbix %s on %s, set up in %s" % (server["zabbix_version"], request.param, server["timings"]))
    write(fleet, AGENT, REMOTE_LEAKY, LEAKY.read_text())
    write(fleet, AGENT, "/etc/systemd/system/" + UNIT, UNIT_FILE.format(script=REMOTE_LEAKY, port=PORT))
    fleet.exec(AGENT, "systemctl daemon-reload && systemctl enable -q --now %s" % UNIT)

    def listening():
        return fleet.exec(AGENT, "ss -H -ltn '( sport = :%d )'" % PORT).stdout.strip()
    wait_for("%s listens on %d" % (UNIT, PORT), listening, 30)

    tmp = tmp_path_factory.mktemp("zabbix-route")
    gateway = fleet.gateway
    port = free_port(gateway)
    token = secrets.token_urlsafe(24)
    eda_url = "http://%s:%d/zabbix" % (gateway, port)
    inventory, audit_file = policy_inventory(fleet, tmp, {"netstate_remediate_mode": "plan",
                                                          "netstate_remediate_allow_units": [UNIT]})
    with rulebook_running(ansible_env, tmp, inventory, gateway, port, token, "-vv") as (_rulebook, log_path):
        monitor_vars = tmp / "monitor.yml"
        monitor_vars.write_text(yaml.safe_dump({"all": {"children": {"agents": {
            "hosts": {AGENT: {"netstate_zabbix_agent_flavor": "agentd"}},
            "vars": {
                "netstate_monitor_agents": ["zabbix_agent"],
                "netstate_zabbix_agent_server": [server["address"]],
                "netstate_zabbix_agent_process_names_minutes": 1,
                "netstate_zabbix_register_url": server["zabbix_url"],
                "netstate_zabbix_register_user": server["zabbix_user"],
                "netstate_zabbix_register_password": server["zabbix_password"],
                "netstate_zabbix_register_macros": {"{$NETSTATE.INTERVAL}": "10s",
                                                    "{$NETSTATE.DISCOVERY.INTERVAL}": "20s"},
                "netstate_zabbix_register_eda_url": eda_url,
                "netstate_zabbix_register_eda_token": token,
            }}}}}))
        started = time.monotonic()
        done = run(ansible_env, [str(MONITOR), "-i", str(fleet.inventory), "-i", str(monitor_vars),
                                 "-e", "netstate_monitor_hosts=agents"])
        assert done.returncode == 0, done.stdout[-6000:]
        assert token not in done.stdout, "monitor.yml showed the token"
        print("monitor.yml with the route: %.1f s" % (time.monotonic() - started))
        api = ZabbixAPI(url=server["zabbix_url"], user=server["zabbix_user"], password=server["zabbix_password"])
        yield {"fleet": fleet, "server": server, "api": api, "token": token, "eda_url": eda_url, "port": port,
               "audit": audit_file, "log": log_path, "env": ansible_env, "inventory": [fleet.inventory, monitor_vars]}
    fleet.exec(AGENT, "systemctl stop 'leak-clients-*' 2>/dev/null; true", check=False)


def rulebook_log(route):
    return route["log"].read_text(errors="replace")


def media_type(api):
    (found,) = api.mediatype.get(filter={"name": [MEDIA_TYPE]}, output=["mediatypeid", "type", "status", "script",
                                                                        "parameters"])
    return found


def post(route, body, token):
    """POST body to the rulebook's webhook as Zabbix does; the HTTP status."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    request = urllib.request.Request(route["eda_url"], data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (the fleet's gateway)
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_route_is_written_once_and_check_mode_writes_nothing(route, tmp_path):
    """monitor.yml made the media type with the shipped script and the URL and token, the user's media and the
    action on the template's trigger events; a second run changes nothing, and check mode with another token
    says what it would update and writes nothing. The token is never in the output, even at -vvv."""
    api, server = route["api"], route["server"]
    media = media_type(api)
    parameters = {parameter["name"]: parameter["value"] for parameter in media["parameters"]}
    assert (media["type"], media["status"]) == ("4", "0"), media
    assert parameters["url"] == route["eda_url"] and parameters["token"] == route["token"]
    assert parameters["host"] == "{HOST.HOST}" and parameters["event_tags"] == "{EVENT.TAGSJSON}"
    assert media["script"].rstrip() == WEBHOOK_SCRIPT.read_text().rstrip()
    (user,) = api.user.get(filter={"username": [server["zabbix_user"]]}, output=["userid"],
                           selectMedias=["mediatypeid", "sendto", "active"])
    assert [(m["sendto"], m["active"]) for m in user["medias"] if m["mediatypeid"] == media["mediatypeid"]] == [
        ("ansible-rulebook", "0")], user
    (template,) = api.template.get(filter={"host": ["netstate TCP by Zabbix agent"]}, output=["templateid"])
    (action,) = api.action.get(filter={"name": [ACTION]}, output=["actionid", "status", "eventsource"],
                               selectFilter="extend", selectOperations="extend", selectRecoveryOperations="extend")
    assert (action["status"], action["eventsource"]) == ("0", "0"), action
    assert [(c["conditiontype"], c["operator"], c["value"]) for c in action["filter"]["conditions"]] == [
        ("13", "0", template["templateid"])], action["filter"]
    for operations in (action["operations"], action.get("recovery_operations", action.get("recoveryOperations"))):
        assert [(o["operationtype"], o["opmessage"]["mediatypeid"], [u["userid"] for u in o["opmessage_usr"]])
                for o in operations] == [("0", media["mediatypeid"], [user["userid"]])], operations

    playbook = tmp_path / "register.yml"
    playbook.write_text(yaml.safe_dump([{"name": "register", "hosts": "agents", "gather_facts": False,
                                         "roles": ["netstate.tcp.zabbix_register"]}]))
    args = [str(playbook)] + [arg for path in route["inventory"] for arg in ("-i", str(path))]
    again = run(route["env"], args + ["-vvv"])
    assert again.returncode == 0, again.stdout[-4000:]
    assert re.findall(r"changed=(\d+)", again.stdout) == ["0"], again.stdout[-3000:]
    assert route["token"] not in again.stdout, "the token was shown at -vvv"
    other = "another-token-" + secrets.token_hex(8)
    checked = run(route["env"], args + ["--check", "-vvv", "-e",
                                        json.dumps({"netstate_zabbix_register_eda_token": other})])
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert "Check mode: would call mediatype.update" in checked.stdout, checked.stdout[-4000:]
    assert other not in checked.stdout, "check mode showed the token"
    assert {p["name"]: p["value"] for p in media_type(api)["parameters"]}["token"] == route["token"]


def test_a_zabbix_problem_is_planned_by_the_rulebook_and_its_recovery_logged(route):
    """CLOSE_WAIT on h02's port crosses the limit -> the discovered trigger (tags rule and port) fires -> the
    action runs the media type -> the rulebook runs netstate.tcp.remediate in plan mode -> the audit entry names
    the Zabbix event; nothing is restarted. The service restarted by hand -> the recovery is posted and logged."""
    api, fleet = route["api"], route["fleet"]
    (host,) = api.host.get(filter={"host": [AGENT]}, output=["hostid"])

    def discovered():
        triggers = api.trigger.get(hostids=host["hostid"], output=["triggerid"], selectTags=["tag", "value"])
        return [trigger for trigger in triggers if {"tag": "port", "value": str(PORT)} in trigger["tags"]
                and {"tag": "rule", "value": RULE} in trigger["tags"]]
    (trigger,) = wait_for("h02's discovered %s trigger on port %d, tagged" % (RULE, PORT), discovered, 300, interval=2)
    assert sorted((tag["tag"], tag["value"]) for tag in trigger["tags"]) == [("port", str(PORT)), ("rule", RULE)]

    pid = main_pid(fleet, AGENT, UNIT)
    crossed = leak(fleet, AGENT, PORT, "leak-clients-zabbix")

    def problem():
        return api.problem.get(hostids=host["hostid"], objectids=[trigger["triggerid"]], output=["eventid", "name"])
    (event,) = wait_for("Zabbix's problem for %s on port %d" % (RULE, PORT), problem, 300, interval=1)
    print("leak to Zabbix problem: %.1f s" % (time.monotonic() - crossed))
    source = "zabbix event %s" % event["eventid"]

    def decided():
        return [entry for entry in audit(route) if entry["source"] == source]
    try:
        (entry,) = wait_for("the audit entry of %s" % source, decided, 240, interval=1)
    except AssertionError as error:
        alerts = api.alert.get(eventids=[event["eventid"]], output=["status", "error", "retries"])
        raise AssertionError("%s\nZabbix's alerts: %s\naudit: %s\nrulebook:\n%s" % (
            error, alerts, audit(route), rulebook_log(route)[-6000:])) from None
    print("Zabbix problem to the audit entry: %.1f s" % (time.monotonic() - crossed))
    assert (entry["host"], entry["rule"], entry["port"]) == (AGENT, RULE, PORT), entry
    assert (entry["mode"], entry["decision"], entry["result"]) == ("plan", "plan", None), entry
    assert entry["action"] == {"kind": "restart_unit", "target": UNIT}, entry
    assert entry["evidence_before"]["value"] >= LEAK, entry
    assert main_pid(fleet, AGENT, UNIT) == pid, "plan mode restarted the unit"
    assert close_wait(fleet, AGENT, PORT) >= LEAK
    (alert,) = [alert for alert in api.alert.get(eventids=[event["eventid"]], output=["status", "mediatypeid"])
                if alert["mediatypeid"] == media_type(api)["mediatypeid"]]
    assert alert["status"] == "1", alert   # sent

    fleet.exec(AGENT, "systemctl stop leak-clients-zabbix && systemctl restart %s" % UNIT)
    wait_for("Zabbix resolves the problem", lambda: not problem(), 300, interval=1)
    wait_for("the rulebook logs the recovery of event %s" % event["eventid"], lambda: re.search(
        r"zabbix recovery: event %s, %s on %s\b" % (event["eventid"], RULE, AGENT), rulebook_log(route)), 120,
        interval=1)
    assert [entry for entry in audit(route) if entry["source"] == source] == [entry], "the recovery ran a remediation"
    assert ZABBIX_RUN in rulebook_log(route)


BAD_POSTS = [
    ("host", "h01;reboot"), ("host", "-h01"), ("host", ""), ("rule", "listen_drops_rate x"), ("rule", "Rule"),
    ("port", "80;1"), ("port", "123456"), ("event_id", "1 or 1"), ("event_id", ""),
]


def test_the_rulebook_runs_nothing_for_a_post_off_the_grammar_or_without_the_token(route):
    """Posts shaped like the media type's, each with one field off the grammar, start no remediation; a post
    with a wrong token or none is refused (401). A good recovery post after them is logged: they were read."""
    # a host and rule no earlier post named, so the rulebook's throttle cannot be what holds a run back
    good = {"source": "zabbix", "status": "problem", "event_id": "900001", "host": SERVER, "rule": "listen_drops_rate",
            "port": "", "severity": "2"}
    runs = rulebook_log(route).count(ZABBIX_RUN)
    assert post(route, good, None) == 401
    assert post(route, good, "not-the-token") == 401
    for number, (field, value) in enumerate(BAD_POSTS):
        body = dict(good, event_id="9%05d" % number)
        body[field] = value
        assert post(route, body, route["token"]) == 200
    marker = dict(good, status="recovery", event_id="900999")
    assert post(route, marker, route["token"]) == 200
    wait_for("the rulebook logs the marker's recovery", lambda: "zabbix recovery: event 900999" in rulebook_log(route),
             60, interval=0.5)
    time.sleep(2)
    assert rulebook_log(route).count(ZABBIX_RUN) == runs, rulebook_log(route)[-6000:]
    # the same post on the grammar starts one run: the oracle sees runs
    assert post(route, good, route["token"]) == 200
    wait_for("the rulebook starts a run for the good post", lambda: rulebook_log(route).count(ZABBIX_RUN) > runs, 60,
             interval=0.5)
