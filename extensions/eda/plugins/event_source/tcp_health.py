# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Event source netstate.tcp.tcp_health: the health rules of netstate.tcp.health_check, polled on the machine
ansible-rulebook runs on, as events when a verdict changes.

ansible-rulebook loads this file with runpy.run_path and awaits main(queue, args). The gathering is the
engine's gather() and the verdicts are the rule engine's (plugins/plugin_utils/_health_rules.py), the ones
health_check gives; this file only checks its arguments, polls, and turns changes of verdict into events.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import os
import re
import socket
import sys
from collections.abc import Mapping
from typing import Any

DOCUMENTATION = r"""
---
short_description: Send an event when a TCP health rule starts or stops being violated on this host.
description:
  - An ansible-rulebook event source plugin that gathers the TCP facts of the machine it runs on (or of one of
    its network namespaces) every O(interval) seconds, evaluates the health rules of M(netstate.tcp.health_check)
    on them (the built-in rules, O(rules), with the overrides of O(thresholds)), and puts an event on the queue
    only when a rule's verdict for a subject changes - V(firing) when a violation starts, V(resolved) when it ends.
  - "Each event is C({netstate: {host, rule, severity, status, subject, value, limit, port, address, process, pid,
    unit, at}}): C(status) is V(firing) or V(resolved); C(subject) names what is violated as health_check does
    (V(port 8080), a listener, a peer); C(value) is the rule's value now (null when the subject is gone) and
    C(limit) its threshold; C(port), C(address), C(process), C(pid) and C(unit) say where (for a per-port rule,
    the process listening on that port), null where unknown; C(at) is the poll's UTC time (ISO 8601)."
  - Process and unit names are the host's choice; they are passed as data, escaped as in the facts, and never
    templated by this plugin.
  - Every argument is checked before the first poll; a bad one stops the source with a message naming the
    argument and the value.
  - Needs the privileges of M(netstate.tcp.connection_facts) (root, for namespaces and the listeners' processes)
    and the jmespath Python library beside ansible-rulebook.
options:
  host:
    description:
      - The inventory name put in every event (C(event.netstate.host)), for a rule's action to target.
      - Letters, digits, V(.), V(-), V(_) and V(:), at most 253 characters.
      - Defaults to this machine's host name.
    type: str
  interval:
    description:
      - Seconds between two polls, from V(1) to V(86400).
    type: float
    default: 30
  namespace:
    description:
      - The network namespace to watch, as M(netstate.tcp.connection_facts) names it (a name under C(/run/netns),
        V(pid:N) or an absolute path); V(all) is refused. The namespace must exist when the source starts.
      - Defaults to the namespace ansible-rulebook runs in.
    type: str
  rules:
    description:
      - Rules evaluated after the built-in ones, in the format of O(netstate.tcp.health_check#module:rules).
    type: list
    elements: dict
    default: []
  thresholds:
    description:
      - Rule name to new threshold, as O(netstate.tcp.health_check#module:thresholds) (a number, or a mapping of
        C(max), C(min), C(severity), C(enabled)).
    type: dict
    default: {}
  gather_args:
    description:
      - Options of M(netstate.tcp.connection_facts) for each poll (C(namespace) excepted), as
        O(netstate.tcp.health_check#module:gather_args).
      - When a rule reads C(counters.rates) and C(sample_interval) is not given, each poll samples the counters
        for 1 second, as health_check does.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Watch this machine's TCP health every 30 seconds
  netstate.tcp.tcp_health:
    interval: 30

- name: Watch the namespace blue every 5 seconds, with a lower CLOSE_WAIT limit and a rule of our own
  netstate.tcp.tcp_health:
    host: web1
    interval: 5
    namespace: blue
    thresholds:
      close_wait_per_port: 20
      syn_recv_total: {enabled: false}
    rules:
      - name: postgres_connections
        query: tcp.remote_ports."5432".total
        max: 400
        severity: warning
"""

NAME = "netstate.tcp.tcp_health"
#: The arguments a rulebook may give; ansible-rulebook itself adds eda_feedback_queue when it has one.
ARGUMENTS = ("host", "interval", "namespace", "rules", "thresholds", "gather_args")
SUPPLIED_BY_RULEBOOK = ("eda_feedback_queue",)
DEFAULT_INTERVAL = 30
INTERVAL_RANGE = (1, 86400)
#: An inventory host name as events carry it; applied with fullmatch ("$" would accept a final newline).
HOST_PATTERN = re.compile(r"(?!-)[A-Za-z0-9_.:-]{1,253}")
#: Seconds a poll samples the counters for when a rule reads counters.rates (health_check's default).
SAMPLE_INTERVAL = 1.0
#: Where an event says a violation is; null where unknown.
WHERE = ("port", "address", "process", "pid", "unit")

log = logging.getLogger(NAME)


def _collections_on_path() -> None:
    """ansible-rulebook runs this file by its path, outside the collection loader: put the collections
    directory this copy was installed in (DIR/ansible_collections/netstate/tcp/extensions/eda/plugins/
    event_source/tcp_health.py) first on sys.path, so the engine and the rules come from the same copy."""
    parts = os.path.abspath(__file__).split(os.sep)
    if parts[-8:-5] == ["ansible_collections", "netstate", "tcp"]:
        root = os.sep.join(parts[:-8]) or os.sep
        if root not in sys.path:
            sys.path.insert(0, root)


_collections_on_path()

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape  # noqa: E402
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine  # noqa: E402
from ansible_collections.netstate.tcp.plugins.module_utils._engine._argspec import CONNECTION_FACTS  # noqa: E402
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health  # noqa: E402


class SourceArgumentError(ValueError):
    """An argument of the source is bad; the message names the argument and the value."""

    def __init__(self, message: str):
        super().__init__(f"{NAME}: {message}")


class Settings:
    """The checked arguments: what every poll uses."""

    def __init__(self, host: str, interval: float, namespace: str | None, rules: list, gather_args: dict):
        self.host = host
        self.interval = interval
        self.namespace = namespace
        self.rules = rules
        self.gather_args = gather_args


def _shown(value: Any) -> str:
    return escape.bounded_repr(value)


def check_args(args: Mapping) -> Settings:
    """The arguments checked, in the order a reader finds them; SourceArgumentError naming the first bad one."""
    if not isinstance(args, Mapping):
        raise SourceArgumentError(f"the arguments must be a mapping, got {_shown(args)}")
    unknown = sorted((key for key in args if key not in ARGUMENTS + SUPPLIED_BY_RULEBOOK), key=str)
    if unknown:
        raise SourceArgumentError("unknown argument(s) %s (allowed: %s)" % (
            ", ".join(_shown(key) for key in unknown), ", ".join(ARGUMENTS)))
    host = args.get("host")
    if host is None:
        host = socket.gethostname()
    if not isinstance(host, str) or not HOST_PATTERN.fullmatch(host):
        raise SourceArgumentError(f"host: {_shown(host)} is not a host name (letters, digits, '.', '-', '_' "
                                  "and ':', at most 253 characters)")
    interval = args.get("interval", DEFAULT_INTERVAL)
    low, high = INTERVAL_RANGE
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval) \
            or not low <= interval <= high:
        raise SourceArgumentError(f"interval: {_shown(interval)} must be a number of seconds from {low} to {high}")
    namespace = args.get("namespace")
    if namespace == "all":
        raise SourceArgumentError("namespace: 'all' is not watched (one namespace per source: a name under "
                                  "/run/netns, pid:N or a path)")
    try:
        engine.check_namespace(namespace)
        engine.resolve_namespace(namespace)  # it must exist now; one that goes away later is a failed poll
    except engine.GatherError as exc:
        raise SourceArgumentError(str(exc)) from None
    try:
        rules = health.build_rules(None, args.get("rules") or [], args.get("thresholds") or {},
                                   extra_source="rules")
    except health.HealthRuleError as exc:
        raise SourceArgumentError(str(exc)) from None
    gather_args = _check_gather_args(args.get("gather_args"), namespace, rules)
    return Settings(host, float(interval), namespace or None, rules, gather_args)


def _check_gather_args(value: Any, namespace: str | None, rules: list) -> dict:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise SourceArgumentError(f"gather_args: must be a mapping of connection_facts options, got {_shown(value)}")
    allowed = sorted(key for key in CONNECTION_FACTS if key != "namespace")
    unknown = sorted((key for key in value if key not in allowed), key=str)
    if unknown:
        hint = " (the source's own argument namespace says where)" if "namespace" in unknown else ""
        raise SourceArgumentError("gather_args: unknown option(s) %s%s; allowed: %s" % (
            ", ".join(_shown(key) for key in unknown), hint, ", ".join(allowed)))
    gather_args = dict(value)
    if health.needs_rates(rules):
        gather_args.setdefault("sample_interval", SAMPLE_INTERVAL)
    try:
        engine.check_options(namespace=namespace, **gather_args)
    except engine.GatherError as exc:
        raise SourceArgumentError(f"gather_args: {exc}") from None
    return gather_args


# ------------------------------------------------------------------------------------------- verdicts

def _port(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit() and len(value) <= 5:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _pid(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def locate(result: Mapping, facts: Mapping) -> dict:
    """Where a result's violation is: port, address, process, pid and unit (None where unknown).

    A listener entry names all of them; a port of tcp.local_ports, or a (port, side local) of the send
    queues, names the port and the process listening on it when one process does; any other element
    its own port and address."""
    where = dict.fromkeys(WHERE)
    element = result.get("element")
    if not element:
        return where
    value, key, collection = element["value"], element["key"], element["collection"]
    listeners = [entry for entry in facts.get("listeners") or [] if isinstance(entry, Mapping)]
    if isinstance(value, Mapping) and value in listeners:
        where.update(port=_port(value.get("port")), address=_text(value.get("address")),
                     process=_text(value.get("process")), pid=_pid(value.get("pid")), unit=_text(value.get("unit")))
        return where
    tcp = facts.get("tcp") if isinstance(facts.get("tcp"), Mapping) else {}
    local_port = None
    if isinstance(collection, Mapping) and collection == tcp.get("local_ports"):
        local_port = _port(key)
    elif isinstance(value, Mapping) and value.get("side") == "local":
        local_port = _port(value.get("port"))
    if local_port is not None:
        where["port"] = local_port
        owners = [entry for entry in listeners if entry.get("protocol") == "tcp" and entry.get("port") == local_port]
        holders = {(entry.get("pid"), entry.get("process"), entry.get("unit")) for entry in owners}
        if len(holders) == 1:
            pid, process, unit = holders.pop()
            where.update(pid=_pid(pid), process=_text(process), unit=_text(unit))
        if len(owners) == 1:
            where["address"] = _text(owners[0].get("address"))
        return where
    if isinstance(value, Mapping):
        where.update(port=_port(value.get("port")), address=_text(value.get("address")))
    return where


class Verdicts:
    """The violations firing after the last poll, by (rule, subject); update() gives the events of a poll."""

    def __init__(self, host: str):
        self.host = host
        self.firing: dict[tuple, dict] = {}
        self.errors: dict[str, str] = {}

    def update(self, results: list, facts: Mapping, at: str) -> list[dict]:
        """The events of one poll's per-element results (health.evaluate(..., per_element=True)):
        firing for each (rule, subject) violated now and not before, resolved for each violated before and
        not now. A rule with an error result this poll (a query that failed, a spent budget) keeps the
        violations it had: an error says nothing of whether they ended."""
        now: dict[tuple, dict] = {}
        values: dict[tuple, Any] = {}
        erring = set()
        for result in results:
            key = (result["name"], result["subject"])
            values.setdefault(key, result["value"])
            if result["status"] in health.SEVERITIES:
                now.setdefault(key, result)
            elif result["status"] == "error":
                erring.add(result["name"])
        self._log_errors(results)
        events = []
        for key, result in now.items():
            if key not in self.firing:
                event = dict(host=self.host, rule=result["name"], severity=result["severity"], status="firing",
                             subject=result["subject"], value=result["value"], limit=result["threshold"],
                             **locate(result, facts), at=at)
                self.firing[key] = event
                events.append({"netstate": dict(event)})
        for key in [key for key in self.firing if key not in now and key[0] not in erring]:
            event = dict(self.firing.pop(key), status="resolved", value=values.get(key), at=at)
            events.append({"netstate": event})
        return events

    def _log_errors(self, results: list) -> None:
        """One warning per rule when its error starts or changes, one line when it ends."""
        seen = {}
        for result in results:
            if result["status"] == "error":
                seen.setdefault(result["name"], result["message"])
        for name, message in seen.items():
            if self.errors.get(name) != message:
                log.warning("%s: %s", NAME, message)
        for name in set(self.errors) - set(seen):
            log.warning("%s: rule %s evaluates again", NAME, name)
        self.errors = seen


def poll(settings: Settings) -> tuple[dict, list]:
    """One gathering and evaluation (blocking: run in a worker thread): (facts, per-element results)."""
    facts = engine.gather(namespace=settings.namespace, **settings.gather_args)
    data = health.plain(facts)
    return data, health.evaluate(settings.rules, data, per_element=True)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    """Check the arguments, then poll every interval and put an event on the queue per change of verdict."""
    settings = check_args(args)
    verdicts = Verdicts(settings.host)
    log.info("%s: watching %s (namespace %s) every %g s with %d rules", NAME, settings.host,
             settings.namespace or "of ansible-rulebook", settings.interval, len(settings.rules))
    loop = asyncio.get_running_loop()
    next_poll = loop.time()
    failure = None
    while True:
        at = _now()
        try:
            facts, results = await asyncio.to_thread(poll, settings)
        except engine.GatherError as exc:
            # a namespace gone for a while, a table unreadable: no verdict changes; said once per cause
            if str(exc) != failure:
                log.warning("%s: poll failed, verdicts kept: %s", NAME, exc)
            failure = str(exc)
        else:
            if failure is not None:
                log.warning("%s: polling again", NAME)
            failure = None
            for event in verdicts.update(results, facts, at):
                await queue.put(event)
        next_poll += settings.interval
        delay = next_poll - loop.time()
        if delay < 0:  # the poll took longer than the interval: the next one starts now, none are queued up
            next_poll, delay = loop.time(), 0
        await asyncio.sleep(delay)


if __name__ == "__main__":
    class _PrintQueue:
        async def put(self, event: dict) -> None:
            print(event)  # noqa: T201

    asyncio.run(main(_PrintQueue(), {"interval": 5}))
