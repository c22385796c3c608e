# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Guards and audit trail behind netstate.tcp.remediation_guard (private: not a public API).

Plain Python on the controller, no ``ansible`` import. The remediate role asks, per host: with fresh facts,
is the rule's symptom still there (else the decision is ``resolved``)? If so, what does the rule's
``remediation`` part (plugins/plugin_utils/health_builtin_rules.yml) say to do, and does a guard hold it
(the unit's name, the deny list, the allow list, the cooldown of this host and rule, the fleet's blast
radius, the mode, check mode)? The decision is ``act`` only when nothing holds it; otherwise ``plan``,
naming the guard. After the action, fresh facts again say whether the symptom fell below its limit.

Every decision is one JSON line of the audit file on the controller (:func:`audit_record`); what was acted on
is kept in a state file beside it (``<audit file>.state.json``), both under one lock (``<audit file>.lock``),
so parallel hosts (forks) and parallel runs see each other's actions: the cooldown and the blast radius hold
across the fleet. Every input is checked first (:func:`check_inputs`), and an error names the user's
variable and the value. docs/remediation.md describes it for users.
"""

from __future__ import annotations

import datetime
import fcntl
import fnmatch
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _atomic, _files
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

MODES = ("plan", "act")
DECISIONS = ("resolved", "act", "plan")
GUARDS = ("allow_list", "deny_list", "cooldown", "blast_radius", "check_mode", "mode", "no_unit")
RESULTS = ("fixed", "not_fixed", "failed")
#: Units never restarted, whatever the allow list says (fnmatch patterns): remote access, the monitoring
#: agents, and this collection's own jobs.
DENY_UNITS = ("ssh.service", "sshd.service", "ssh@*.service", "sshd@*.service", "zabbix-agent*",
              "prometheus-node-exporter*", "netstate-*")
#: A systemd service unit name (systemd.unit(5): letters, digits, ':', '-', '_', '.', and '@' between a template
#: and its instance; at most 255 characters). Stricter than systemd on purpose: no leading '-' (an option to
#: systemctl), no '\\' escapes, and only ``.service`` (a socket, a scope or a slice is never restarted here).
UNIT_PATTERN = re.compile(r"[A-Za-z0-9_.:][A-Za-z0-9_.:-]*(?:@[A-Za-z0-9_.:-]*)?\.service")
UNIT_LIMIT = 255
#: An Ansible host pattern: names, groups, wildcards, unions, intersections, exclusions, ranges; no spaces,
#: no braces (never a template), no quotes.
HOSTS_PATTERN = re.compile(r"[A-Za-z0-9_.:*?!&,~^\[\]\-]{1,1024}")
SOURCE_LIMIT = 300
#: Bounds of the numeric inputs (seconds, hosts).
RANGES = {"cooldown": (0, 30 * 86400), "max_hosts": (1, 100000), "window": (1, 30 * 86400),
          "settle": (0, 3600)}
#: The variable each input comes from (messages name it).
VARIABLES = {name: "netstate_remediate_" + name for name in (
    "hosts", "rule", "port", "source", "mode", "allow_units", "audit_file", "cooldown", "max_hosts", "window",
    "settle")}
#: The most acted-on entries the state file keeps (older ones beyond the cooldown and window are dropped).
STATE_LIMIT = 100000


class RemediationError(ValueError):
    """An input is invalid; names the variable and the value."""

    def __init__(self, name: str, value: Any, problem: str):
        self.variable = VARIABLES.get(name, name)
        super().__init__(f"{self.variable}: {problem}, got {escape.bounded_repr(value)}")


@dataclass(frozen=True)
class Inputs:
    rule: str
    port: int | None
    source: str
    mode: str
    allow_units: tuple
    audit_file: str
    cooldown: int
    max_hosts: int
    window: int
    settle: float
    hosts: str = ""


@dataclass
class Evidence:
    """What fresh facts say of one subject of the rule."""

    subject: str | None
    port: int | None
    value: Any
    limit: Any
    status: str
    message: str
    unit: str | None = None
    units: list = field(default_factory=list)

    @property
    def violated(self) -> bool:
        return self.status in health.SEVERITIES

    def as_dict(self) -> dict:
        return {"value": self.value, "limit": self.limit, "unit": self.unit, "status": self.status}


# --- inputs ------------------------------------------------------------------------------------

def _integer(name: str, value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise RemediationError(name, value, "must be a whole number")
    low, high = RANGES[name]
    if not low <= value <= high:
        raise RemediationError(name, value, f"must be from {low} to {high}")
    return value


def check_unit_name(value: Any) -> str | None:
    """Why ``value`` is not a service unit this role may restart, or None."""
    if not isinstance(value, str) or not value:
        return "a unit name must be a non-empty string"
    if len(value) > UNIT_LIMIT:
        return f"a unit name has at most {UNIT_LIMIT} characters"
    if not UNIT_PATTERN.fullmatch(value):
        return ("not a systemd service unit name (letters, digits, ':', '-', '_', '.', one '@', ending in "
                "'.service', not starting with '-')")
    return None


def denied(unit: str) -> str | None:
    """The deny-list pattern ``unit`` matches, or None."""
    for pattern in DENY_UNITS:
        if fnmatch.fnmatchcase(unit, pattern):
            return pattern
    return None


def check_inputs(values: Mapping, rule_names: list[str]) -> Inputs:
    """Every input checked, in the order of the docs; RemediationError names the variable and the value."""
    hosts = values.get("hosts", "")
    if hosts not in (None, "") and (not isinstance(hosts, str) or not HOSTS_PATTERN.fullmatch(hosts)):
        raise RemediationError("hosts", hosts, "must be a host pattern (names, groups, '*', ':', '&', '!', "
                                               "',', ranges; no spaces or braces)")
    rule = values.get("rule")
    if rule not in rule_names:
        raise RemediationError("rule", rule, f"must be a built-in rule ({', '.join(rule_names)})")
    port = values.get("port")
    if port in (None, ""):
        port = None
    else:
        if isinstance(port, str) and re.fullmatch(r"[0-9]{1,5}", port.strip()):
            port = int(port.strip())
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise RemediationError("port", values.get("port"), "must be a port from 1 to 65535, or empty")
    mode = values.get("mode", "plan")
    if mode not in MODES:
        raise RemediationError("mode", mode, f"must be one of {', '.join(MODES)}")
    allow = values.get("allow_units") or []
    if not isinstance(allow, (list, tuple)):
        raise RemediationError("allow_units", allow, "must be a list of service unit names")
    for index, unit in enumerate(allow):
        problem = check_unit_name(unit)
        if problem:
            raise RemediationError("allow_units", unit, f"item {index}: {problem}")
    audit_file = values.get("audit_file")
    try:
        _files.check_path(audit_file, absolute=True, name="the audit file")
    except _files.FileRefused as exc:
        raise RemediationError("audit_file", audit_file, exc.reason) from None
    numbers = {name: _integer(name, values.get(name)) for name in ("cooldown", "max_hosts", "window", "settle")}
    return Inputs(rule=rule, port=port, source=clip_source(values.get("source")), mode=mode,
                  allow_units=tuple(allow), audit_file=os.path.normpath(audit_file), hosts=hosts or "", **numbers)


def clip_source(value: Any) -> str:
    """The free text naming what asked for the run (an alert, a person): one line, every control character
    escaped, at most SOURCE_LIMIT characters. Only ever shown, never templated."""
    if value is None:
        return ""
    text = escape.log_line(value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True))
    return text if len(text) <= SOURCE_LIMIT else text[:SOURCE_LIMIT] + f"...({len(text)} characters)"


# --- evidence ---------------------------------------------------------------------------------

def _evidence(rule: health.Rule, facts: dict, port: int | None) -> Evidence:
    result = health.evaluate_rule(rule, facts)[0]
    return Evidence(subject=result["subject"], port=port, value=result["value"], limit=result["threshold"],
                    status=result["status"], message=result["message"])


def evidence(rule: health.Rule, facts: Any, port: int | None = None) -> list[Evidence]:
    """What the facts say of the rule: every violating subject, or one not violating (the worst).

    For a rule over ports (``each: tcp.local_ports``) each port is judged alone, so every result knows its
    port; with ``port`` only that port is judged (missing from the facts: no data, so the symptom is gone).
    Over listeners, ``port`` keeps the listeners of that port. Other rules are about the whole host."""
    data = health.plain(facts)
    if rule.each in health.PORT_COLLECTIONS:
        tcp = dict(data.get("tcp") or {})
        ports = tcp.get("local_ports") or {}
        keys = [str(port)] if port is not None else sorted(ports, key=lambda key: (len(key), key))
        judged = []
        for key in keys:
            narrowed = dict(data, tcp=dict(tcp, local_ports={key: ports[key]} if key in ports else {}))
            judged.append(_evidence(rule, narrowed, int(key) if key.isdigit() else None))
        if not judged:
            return [_evidence(rule, data, port)]
        bad = [item for item in judged if item.violated or item.status == "error"]
        if bad:
            return bad
        measured = [item for item in judged if isinstance(item.value, (int, float))]
        return [max(measured, key=lambda item: item.value)] if measured else judged[:1]
    if port is not None and isinstance(data.get("listeners"), list) and (rule.each or "").startswith("listeners"):
        data = dict(data, listeners=[item for item in data["listeners"]
                                     if isinstance(item, Mapping) and item.get("port") == port])
    results = health.evaluate_rule(rule, data)
    return [Evidence(subject=result["subject"], port=port, value=result["value"], limit=result["threshold"],
                     status=result["status"], message=result["message"]) for result in results]


def units_of_port(listeners: Any, port: int | None) -> list:
    """The distinct ``unit`` values of the TCP listeners on ``port`` (listener_facts' tcp_listen), as given."""
    found = []
    for item in listeners or []:
        if (isinstance(item, Mapping) and item.get("port") == port and item.get("unit") not in (None, "")
                and item["unit"] not in found):
            found.append(item["unit"])
    return found


# --- state and audit ----------------------------------------------------------------------------

class Ledger:
    """The audit file and the state beside it, held under one lock while a decision is made and written.

    ``with Ledger(path) as ledger:`` locks ``<path>.lock`` (a regular file; flock, exclusive), reads
    ``<path>.state.json``; ``ledger.append(record)`` adds an audit line, ``ledger.acted(...)`` an action;
    leaving writes the state back atomically when it changed."""

    def __init__(self, audit_file: str, now: float):
        self.audit_file = audit_file
        self.state_file = audit_file + ".state.json"
        self.lock_file = audit_file + ".lock"
        self.now = now
        self.entries: list = []
        self.changed = False
        self._descriptor = None

    def __enter__(self) -> Ledger:
        _files.check_replaceable(self.audit_file)  # its directory exists; no link, FIFO or device there
        _files.check_replaceable(self.lock_file)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        descriptor = os.open(self.lock_file, flags, 0o600)
        try:
            mode = os.fstat(descriptor).st_mode
            if not stat.S_ISREG(mode):  # replaced between the check and the open
                raise _files.FileRefused(self.lock_file, f"is {_files.kind(mode)}; only a regular file is a lock")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            text, _mode = _files.read_text_and_mode(self.state_file)
        except BaseException:
            os.close(descriptor)
            raise
        self._descriptor = descriptor
        self.entries = _parse_state(text, self.state_file)
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self.changed and exc_info[0] is None:
                document = {"acted": self.entries[-STATE_LIMIT:]}
                _atomic.write_atomically(self.state_file, json.dumps(document, sort_keys=True) + "\n", 0o600)
        finally:
            os.close(self._descriptor)
            self._descriptor = None

    def cooling(self, host: str, rule: str, cooldown: int) -> dict | None:
        """The last action on this host for this rule within ``cooldown`` seconds, or None."""
        recent = [entry for entry in self.entries if entry["host"] == host and entry["rule"] == rule
                  and self.now - entry["time"] < cooldown]
        return recent[-1] if recent else None

    def hosts_in_window(self, window: int) -> list:
        hosts = []
        for entry in self.entries:
            if self.now - entry["time"] < window and entry["host"] not in hosts:
                hosts.append(entry["host"])
        return hosts

    def acted(self, host: str, rule: str, horizon: int) -> None:
        """Remember an action now; entries older than ``horizon`` seconds (the longer of cooldown and window)
        are no longer needed by anyone asking with the same settings, and are dropped."""
        self.entries = [entry for entry in self.entries if self.now - entry["time"] < horizon]
        self.entries.append({"time": self.now, "host": host, "rule": rule})
        self.changed = True

    def append(self, record: Mapping) -> None:
        _files.append_line(self.audit_file, json.dumps(record, sort_keys=True, ensure_ascii=True))


def _parse_state(text: str | None, path: str) -> list:
    if text is None:
        return []
    try:
        document = json.loads(text)
        entries = document["acted"]
        checked = [{"time": float(entry["time"]), "host": str(entry["host"]), "rule": str(entry["rule"])}
                   for entry in entries]
    except (ValueError, KeyError, TypeError) as exc:
        # a damaged state must not silently lift the cooldown and the blast radius
        raise ValueError(f"{_files._shown(path)}: not a remediation state file ({escape.log_line(exc)}); "
                         "remove it to start afresh") from None
    return checked


# --- decisions --------------------------------------------------------------------------------

def action_of(rule: health.Rule, item: Evidence) -> dict:
    """{kind, target} the rule's remediation would take for this subject (target None for a plan entry)."""
    remediation = rule.remediation or {"kind": "plan"}
    kind = remediation["kind"]
    if kind == "restart_unit":
        return {"kind": kind, "target": item.unit}
    if kind == "sysctl":
        settings = dict(remediation["settings"])
        return {"kind": kind, "target": ", ".join(f"{key}={value}" for key, value in sorted(settings.items())),
                "settings": settings}
    if kind == "tuning_profile":
        return {"kind": kind, "target": remediation["profile"]}
    return {"kind": "plan", "target": None}


def decide(inputs: Inputs, rule: health.Rule, item: Evidence, host: str, check_mode: bool,
           ledger: Ledger) -> tuple:
    """(decision, guard, reason) for one subject; the ledger is read, not written."""
    if not item.violated:
        if item.status == "error":
            return "plan", None, f"the rule could not be evaluated ({item.message}); nothing is done"
        return "resolved", None, f"fresh facts show no violation ({item.message}); nothing is done"
    kind = (rule.remediation or {}).get("kind", "plan")
    if kind == "plan":
        return "plan", None, f"{rule.name} has a plan entry only: {(rule.remediation or {}).get('doc', '')}"
    if kind == "restart_unit":
        if len(item.units) > 1:
            shown = ", ".join(escape.log_line(unit) for unit in item.units)
            return "plan", "no_unit", f"port {item.port} is held by several units ({shown}); none is restarted"
        if item.unit is None:
            return "plan", "no_unit", f"no systemd unit owns port {item.port} (listener_facts gave none)"
        problem = check_unit_name(item.unit)
        if problem:
            return "plan", "no_unit", f"{escape.log_line(item.unit)} is not restarted: {problem}"
        pattern = denied(item.unit)
        if pattern:
            return "plan", "deny_list", f"{item.unit} matches {pattern} of the deny list, which always wins"
        if item.unit not in inputs.allow_units:
            return "plan", "allow_list", f"{item.unit} is not in netstate_remediate_allow_units"
    last = ledger.cooling(host, rule.name, inputs.cooldown)
    if last is not None:
        left = inputs.cooldown - (ledger.now - last["time"])
        return "plan", "cooldown", (f"{rule.name} was acted on for this host {ledger.now - last['time']:.0f} s ago; "
                                    f"cooldown {inputs.cooldown} s ({left:.0f} s left)")
    others = [name for name in ledger.hosts_in_window(inputs.window) if name != host]
    if len(others) >= inputs.max_hosts:
        return "plan", "blast_radius", (f"{len(others)} other host(s) were acted on in the last {inputs.window} s; "
                                        f"netstate_remediate_max_hosts is {inputs.max_hosts}")
    if inputs.mode != "act":
        return "plan", "mode", "netstate_remediate_mode is plan: recorded what would be done, nothing changed"
    if check_mode:
        return "plan", "check_mode", "check mode: recorded what would be done, nothing changed"
    return "act", None, "every guard passed"


def now_text(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(timespec="milliseconds")


def audit_record(inputs: Inputs, rule: health.Rule, item: Evidence, host: str, check_mode: bool, now: float,
                 decision: str, guard: str | None, reason: str) -> dict:
    """One audit line (docs/remediation.md "Audit trail"); result and evidence_after are filled after the proof."""
    # a resolved symptom has nothing done about it; any other record names what the remediation is (or would be)
    action = {"kind": "none", "target": None} if decision == "resolved" else action_of(rule, item)
    return {
        "time": now_text(now), "host": host, "rule": rule.name, "subject": item.subject, "port": item.port,
        "source": inputs.source, "mode": inputs.mode, "check_mode": bool(check_mode),
        "evidence_before": item.as_dict(), "decision": decision, "guard": guard,
        "action": {"kind": action["kind"], "target": action["target"]},
        "result": None, "evidence_after": None, "reason": reason,
    }


def prove(record: dict, after: list[Evidence], failed: str | None) -> dict:
    """The record of an action with its proof: result ``failed`` when the action failed, else ``fixed`` when the
    subject is no longer above its limit in the fresh facts, ``not_fixed`` otherwise."""
    proven = dict(record)
    match = next((item for item in after if item.subject == record["subject"]), None)
    still = match is not None and match.violated
    shown = match or (after[0] if after else None)
    proven["evidence_after"] = None if shown is None else shown.as_dict()
    if failed:
        proven["result"] = "failed"
        proven["reason"] = f"{record['reason']}; the action failed: {escape.log_line(failed)[:500]}"
    elif still:
        proven["result"] = "not_fixed"
        proven["reason"] = f"{record['reason']}; after the action still {shown.message}"
    else:
        proven["result"] = "fixed"
        proven["reason"] = f"{record['reason']}; after the action {shown.message if shown else 'no data'}"
    return proven


def summary_line(record: Mapping) -> str:
    """One line of the job output for a record: every host-chosen part escaped."""
    parts = [escape.log_line(record["host"]), record["rule"]]
    if record.get("subject"):
        parts.append(f"[{escape.log_line(record['subject'])}]")
    action = record.get("action") or {}
    what = record["decision"]
    if record.get("guard"):
        what += f" (held by {record['guard']})"
    if action.get("target"):
        what += f": {action['kind']} {escape.log_line(action['target'])}"
    if record.get("result"):
        what += f" -> {record['result']}"
    before = record.get("evidence_before") or {}
    value, limit = health.format_value(before.get("value")), health.format_value(before.get("limit"))
    return f"{' '.join(parts)}: {what}; value {value} (limit {limit}). {escape.log_line(record['reason'])}"
