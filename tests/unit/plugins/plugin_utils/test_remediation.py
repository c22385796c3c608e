# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_remediation: the inputs, the evidence per subject, every guard, the ledger (lock, state, audit lines).

Real files in a temporary directory (a FIFO, a link and a device refused for real); real processes for the
lock (two writers at once never lose a line, never both act past the blast radius)."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat

import pytest

from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health
from ansible_collections.netstate.tcp.plugins.plugin_utils import _remediation as remediation

from tests.unit.plugins.plugin_utils import _helpers

facts = _helpers.facts  # a healthy host: 1 CLOSE_WAIT on port 8080
RULES = {rule.name: rule for rule in health.load_builtin_rules()}
NAMES = list(RULES)
NOW = 1_800_000_000.0


def inputs(tmp_path, **changes):
    values = {"rule": "close_wait_per_port", "port": 8080, "source": "alert", "mode": "act",
              "allow_units": ["leaky-app.service"], "audit_file": str(tmp_path / "audit.jsonl"), "cooldown": 600,
              "max_hosts": 2, "window": 600, "settle": 0}
    values.update(changes)
    return remediation.check_inputs(values, NAMES)


def leaking(facts, port="8080", count=500):
    ports = dict(facts["tcp"]["local_ports"])
    ports[port] = {"total": count, "states": _helpers.states(CLOSE_WAIT=count, LISTEN=1)}
    return dict(facts, tcp=dict(facts["tcp"], local_ports=ports))


def judged(facts, unit="leaky-app.service", port=8080, rule="close_wait_per_port"):
    items = remediation.evidence(RULES[rule], facts, port)
    for item in items:
        item.units = [unit] if unit else []
        item.unit = unit
    return items


# ---------------------------------------------------------------------------------------------- inputs

@pytest.mark.parametrize("changes, variable, problem", [
    ({"rule": "close_wait"}, "netstate_remediate_rule", "must be a built-in rule (time_wait_ephemeral_share, "),
    ({"port": 70000}, "netstate_remediate_port", "must be a port from 1 to 65535, or empty, got 70000"),
    ({"port": "80; reboot"}, "netstate_remediate_port", "must be a port"),
    ({"port": True}, "netstate_remediate_port", "must be a port"),
    ({"mode": "yes"}, "netstate_remediate_mode", "must be one of plan, act, got 'yes'"),
    ({"allow_units": "leaky.service"}, "netstate_remediate_allow_units", "must be a list"),
    ({"allow_units": ["ok.service", "-x.service"]}, "netstate_remediate_allow_units", "item 1: not a systemd"),
    ({"allow_units": ["leaky.socket"]}, "netstate_remediate_allow_units", "item 0: not a systemd service unit"),
    ({"allow_units": ["a b.service"]}, "netstate_remediate_allow_units", "item 0: not a systemd"),
    ({"allow_units": ["x" * 250 + ".service"]}, "netstate_remediate_allow_units", "at most 255 characters"),
    ({"audit_file": ""}, "netstate_remediate_audit_file", "must be a non-empty path"),
    ({"audit_file": "relative.jsonl"}, "netstate_remediate_audit_file", "must be an absolute path"),
    ({"audit_file": "/tmp/a\nb"}, "netstate_remediate_audit_file", "contains a newline"),
    ({"cooldown": -1}, "netstate_remediate_cooldown", "must be from 0 to 2592000, got -1"),
    ({"cooldown": "1h"}, "netstate_remediate_cooldown", "must be a whole number, got '1h'"),
    ({"max_hosts": 0}, "netstate_remediate_max_hosts", "must be from 1 to 100000, got 0"),
    ({"window": 0}, "netstate_remediate_window", "must be from 1"),
    ({"settle": 3601}, "netstate_remediate_settle", "must be from 0 to 3600"),
    ({"hosts": "web {{ x }}"}, "netstate_remediate_hosts", "must be a host pattern"),
])
def test_a_bad_input_names_the_variable_and_the_value(tmp_path, changes, variable, problem):
    with pytest.raises(remediation.RemediationError) as raised:
        inputs(tmp_path, **changes)
    assert raised.value.variable == variable
    assert str(raised.value).startswith(variable + ": ") and problem in str(raised.value), str(raised.value)


def test_good_inputs_are_normalized(tmp_path):
    checked = inputs(tmp_path, port="8080", cooldown="60", hosts="web:&prod:!web3", allow_units=["a@b-1.service"])
    assert (checked.port, checked.cooldown, checked.hosts, checked.allow_units) == (
        8080, 60, "web:&prod:!web3", ("a@b-1.service",))
    assert inputs(tmp_path, port="").port is None and inputs(tmp_path, port=None).port is None


def test_the_source_is_one_bounded_escaped_line_and_never_a_template(tmp_path):
    text = "{{ lookup('pipe', 'id') }}\nsecond line\x1b[31m" + "x" * 1000
    source = inputs(tmp_path, source=text).source
    assert source.startswith("{{ lookup('pipe', 'id') }}\\x0asecond line\\x1b[31m")
    assert "\n" not in source and "\x1b" not in source and len(source) < remediation.SOURCE_LIMIT + 30


@pytest.mark.parametrize("unit, problem", [
    ("nginx.service", None), ("getty@tty1.service", None), ("a-b_c:d.e.service", None),
    ("-x.service", "not a systemd"), ("x.socket", "not a systemd"), ("x\\x2d.service", "not a systemd"),
    ("x.service\n", "not a systemd"), ("{{x}}.service", "not a systemd"), ("", "non-empty"), (None, "non-empty"),
    ("/system.slice/x.service", "not a systemd"), ("a@b@c.service", "not a systemd"),
])
def test_unit_names_follow_systemds_grammar_strictly(unit, problem):
    found = remediation.check_unit_name(unit)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize("unit", ["ssh.service", "sshd.service", "sshd@1-2.service", "zabbix-agent2.service",
                                  "prometheus-node-exporter.service", "netstate-tcp-textfile.service"])
def test_the_deny_list_covers_access_agents_and_our_jobs(unit):
    assert remediation.denied(unit)


# --------------------------------------------------------------------------------------------- evidence

def test_each_port_is_judged_alone_and_knows_its_port(facts):
    two = leaking(leaking(facts, "8080", 500), "9090", 300)
    items = remediation.evidence(RULES["close_wait_per_port"], two)
    assert [(item.port, item.value, item.limit, item.status) for item in items] == [
        (8080, 500, 100, "critical"), (9090, 300, 100, "critical")]
    only = remediation.evidence(RULES["close_wait_per_port"], two, 9090)
    assert [(item.port, item.subject) for item in only] == [(9090, "port 9090")]
    healthy = remediation.evidence(RULES["close_wait_per_port"], facts)
    assert [(item.port, item.value, item.violated) for item in healthy] == [(8080, 1, False)]
    gone = remediation.evidence(RULES["close_wait_per_port"], facts, 4444)
    assert [(item.port, item.violated, item.status) for item in gone] == [(4444, False, "ok")]


def test_host_wide_and_listener_rules(facts):
    flood = dict(facts, tcp=dict(facts["tcp"], states=_helpers.states(SYN_RECV=1000)))
    [item] = remediation.evidence(RULES["syn_recv_total"], flood)
    assert (item.value, item.limit, item.violated, item.port) == (1000, 256, True, None)
    full = dict(facts, listeners=[_helpers.listener(22, 200, 128), _helpers.listener(8080, 2, 511)])
    assert [item.violated for item in remediation.evidence(RULES["accept_queue_full"], full)] == [True]
    assert [item.violated for item in remediation.evidence(RULES["accept_queue_full"], full, 8080)] == [False]


def test_units_of_a_port_come_from_the_listeners_as_given():
    listeners = [{"port": 8080, "unit": "leaky-app.service"}, {"port": 8080, "unit": "leaky-app.service"},
                 {"port": 22, "unit": "ssh.service"}, {"port": 9090, "unit": None}, "junk"]
    assert remediation.units_of_port(listeners, 8080) == ["leaky-app.service"]
    assert remediation.units_of_port(listeners, 9090) == []


# ----------------------------------------------------------------------------------------------- guards

def decide(tmp_path, item, host="web1", check_mode=False, rule="close_wait_per_port", now=NOW, **changes):
    with remediation.Ledger(str(tmp_path / "audit.jsonl"), now) as ledger:
        return remediation.decide(inputs(tmp_path, **changes), RULES[rule], item, host, check_mode, ledger)


def test_a_symptom_already_gone_is_resolved(tmp_path, facts):
    [item] = judged(facts)
    assert decide(tmp_path, item)[:2] == ("resolved", None)


@pytest.mark.parametrize("unit, changes, guard, reason", [
    ("leaky-app.service", {}, None, "every guard passed"),
    (None, {}, "no_unit", "no systemd unit owns port 8080"),
    ("/system.slice/docker-1.scope", {}, "no_unit", "is not restarted: not a systemd service unit name"),
    ("leaky.socket", {"allow_units": []}, "no_unit", "not a systemd service unit name"),
    ("sshd.service", {"allow_units": ["sshd.service"]}, "deny_list", "matches sshd.service of the deny list"),
    ("netstate-tcp-textfile.service", {"allow_units": ["netstate-tcp-textfile.service"]}, "deny_list", "netstate-*"),
    ("other.service", {}, "allow_list", "other.service is not in netstate_remediate_allow_units"),
    ("leaky-app.service", {"mode": "plan"}, "mode", "netstate_remediate_mode is plan"),
])
def test_each_guard_holds_with_a_reason(tmp_path, facts, unit, changes, guard, reason):
    [item] = judged(leaking(facts), unit=unit)
    decision, held_by, why = decide(tmp_path, item, **changes)
    assert (decision, held_by) == ("act" if guard is None else "plan", guard)
    assert reason in why


def test_check_mode_holds_what_would_act(tmp_path, facts):
    [item] = judged(leaking(facts))
    assert decide(tmp_path, item, check_mode=True)[:2] == ("plan", "check_mode")


def test_several_units_on_one_port_are_not_guessed(tmp_path, facts):
    [item] = judged(leaking(facts))
    item.units, item.unit = ["a.service", "b.service"], None
    assert decide(tmp_path, item)[:2] == ("plan", "no_unit")


def test_plan_only_rules_never_act(tmp_path, facts):
    full = dict(facts, listeners=[_helpers.listener(8080, 900, 511)])
    [item] = remediation.evidence(RULES["accept_queue_full"], full)
    decision, guard, reason = decide(tmp_path, item, rule="accept_queue_full")
    assert (decision, guard) == ("plan", None) and "plan entry only" in reason


def test_cooldown_holds_the_same_host_and_rule_only(tmp_path, facts):
    [item] = judged(leaking(facts))
    with remediation.Ledger(str(tmp_path / "audit.jsonl"), NOW - 100) as ledger:
        ledger.acted("web1", "close_wait_per_port", 600)
    decision, guard, reason = decide(tmp_path, item)
    assert (decision, guard) == ("plan", "cooldown") and "100 s ago; cooldown 600 s (500 s left)" in reason
    assert decide(tmp_path, item, host="web2")[:2] == ("act", None)
    assert decide(tmp_path, item, cooldown=60)[:2] == ("act", None)
    flood = dict(facts, tcp=dict(facts["tcp"], states=_helpers.states(SYN_RECV=1000)))
    [syn] = remediation.evidence(RULES["syn_recv_total"], flood)
    assert decide(tmp_path, syn, rule="syn_recv_total")[:2] == ("act", None)


def test_the_blast_radius_counts_distinct_hosts_in_the_window(tmp_path, facts):
    [item] = judged(leaking(facts))
    with remediation.Ledger(str(tmp_path / "audit.jsonl"), NOW - 100) as ledger:
        ledger.acted("web1", "syn_recv_total", 600)
        ledger.acted("web1", "time_wait_ephemeral_share", 600)
        ledger.acted("web2", "syn_recv_total", 600)
    decision, guard, reason = decide(tmp_path, item, host="web3", max_hosts=2)
    assert (decision, guard) == ("plan", "blast_radius") and "2 other host(s)" in reason
    assert decide(tmp_path, item, host="web3", max_hosts=3)[:2] == ("act", None)
    assert decide(tmp_path, item, host="web3", max_hosts=2, window=50)[:2] == ("act", None)
    # a host already counted in the window does not count again
    assert decide(tmp_path, item, host="web2", max_hosts=2)[:2] == ("act", None)


# ------------------------------------------------------------------------------------- ledger and audit

def test_records_have_the_contracts_fields_and_prove_says_fixed_or_not(tmp_path, facts):
    checked = inputs(tmp_path)
    [item] = judged(leaking(facts))
    record = remediation.audit_record(checked, RULES["close_wait_per_port"], item, "web1", False, NOW, "act", None,
                                      "every guard passed")
    assert set(record) == {"time", "host", "rule", "subject", "port", "source", "mode", "check_mode",
                           "evidence_before", "decision", "guard", "action", "result", "evidence_after", "reason"}
    assert record["evidence_before"] == {"value": 500, "limit": 100, "unit": "leaky-app.service", "status": "critical"}
    assert record["action"] == {"kind": "restart_unit", "target": "leaky-app.service"}
    assert record["time"] == "2027-01-15T08:00:00.000+00:00"
    fixed = remediation.prove(record, remediation.evidence(RULES["close_wait_per_port"], facts, 8080), None)
    assert fixed["result"] == "fixed" and fixed["evidence_after"]["value"] == 1
    still = remediation.prove(record, remediation.evidence(RULES["close_wait_per_port"], leaking(facts), 8080), None)
    assert still["result"] == "not_fixed" and "still critical" in still["reason"]
    failed = remediation.prove(record, [], "Unit leaky-app.service not found.\n")
    assert failed["result"] == "failed" and failed["reason"].endswith("not found.\\x0a")


def test_the_summary_line_escapes_what_a_host_chose(tmp_path, facts):
    checked = inputs(tmp_path)
    [item] = judged(leaking(facts))
    item.unit = "evil\n{{ x }}\x1b.service"
    decision, guard, reason = decide(tmp_path, item)
    record = remediation.audit_record(checked, RULES["close_wait_per_port"], item, "web\n1", False, NOW, decision,
                                      guard, reason)
    line = remediation.summary_line(record)
    assert "\n" not in line and "\x1b" not in line and "evil\\x0a{{ x }}\\x1b.service" in line


def test_audit_lines_are_appended_to_a_regular_file_only(tmp_path):
    audit = tmp_path / "audit.jsonl"
    with remediation.Ledger(str(audit), NOW) as ledger:
        ledger.append({"decision": "plan", "reason": "a\nb"})
        ledger.acted("web1", "close_wait_per_port", 600)
    with remediation.Ledger(str(audit), NOW) as ledger:
        ledger.append({"decision": "act"})
        assert ledger.cooling("web1", "close_wait_per_port", 600)["time"] == NOW
    assert [json.loads(line)["decision"] for line in audit.read_text().splitlines()] == ["plan", "act"]
    assert stat.S_IMODE(os.stat(tmp_path / "audit.jsonl.state.json").st_mode) == 0o600
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    link = tmp_path / "link.jsonl"
    link.symlink_to(audit)
    for path, what in ((fifo, "a FIFO"), (link, "a symbolic link"), ("/dev/null", "a character device")):
        with pytest.raises(OSError, match=what), remediation.Ledger(str(path), NOW) as ledger:
            ledger.append({"decision": "plan"})
    state = tmp_path / "audit.jsonl.state.json"
    state.write_text("[not json")
    with pytest.raises(ValueError, match="not a remediation state file"), remediation.Ledger(str(audit), NOW):
        pass


def _race(path, host, barrier, out):
    barrier.wait()
    with remediation.Ledger(path, NOW) as ledger:
        others = [name for name in ledger.hosts_in_window(600) if name != host]
        if len(others) < 1:
            ledger.acted(host, "close_wait_per_port", 600)
            out.put(host)
        ledger.append({"host": host})


def test_parallel_hosts_share_the_blast_radius_under_the_lock(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(6), context.Queue()
    workers = [context.Process(target=_race, args=(path, "web%d" % index, barrier, out)) for index in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    acted = []
    while not out.empty():
        acted.append(out.get())
    assert len(acted) == 1  # max_hosts 1: exactly one of six racing hosts acted
    with open(path, encoding="utf-8") as handle:
        assert len(handle.read().splitlines()) == 6
