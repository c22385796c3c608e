# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one model behind the fleet reports of netstate.tcp (private: not a public API of the collection).

Plain Python on the controller, no ``ansible`` import. The gather role's fleet report
(plugins/plugin_utils/_gather_report.py) and the health role's report (_health_report.py) both
describe a host the same way, from here:

* :func:`host_rules` - the built-in health rules after a host's threshold overrides
  (``netstate_health_thresholds``), exactly as netstate.tcp.health_check applies them;
* :func:`snapshot` - what a host's ``ansible_facts.netstate`` shows a reader (TCP states, the
  busiest port and peer, the fullest accept queue, the TIME_WAIT share of the ephemeral range) and
  its pressure: per pressure column the value of its health rule, evaluated by the rule engine,
  over that rule's threshold. No threshold and no metric arithmetic lives here: both come from
  health_builtin_rules.yml through plugins/plugin_utils/_health_rules.py;
* :func:`registered_outcome` - what a registered task result says about reaching the host;
* :func:`violations_per_rule` and :func:`verdict` - a host's rule results that are not ok, per rule;
* :func:`one_line` and :func:`markdown_cell` - the text helpers every renderer uses.

Renderings of the model: plugins/plugin_utils/_health_report.py (JSON, JUnit, Markdown of the
health role), plugins/plugin_utils/_gather_report.py (data and Markdown of the gather role, through
the netstate.tcp.fleet_report filter) and plugins/plugin_utils/_fleet_html.py (the HTML page of both).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape

from . import _health_rules as rules_engine

# pressure column -> the built-in rule whose value over its max gives it
PRESSURE_RULES = {"accept_queue": "accept_queue_full", "time_wait_share": "time_wait_ephemeral_share",
                  "close_wait": "close_wait_per_port", "syn_recv": "syn_recv_total"}
# Variable in which the health role reads a host's threshold overrides.
THRESHOLDS_VAR = "netstate_health_thresholds"
# TCP states in the order the page stacks them (the rest are summed as "other").
BAR_STATES = ("ESTABLISHED", "TIME_WAIT", "CLOSE_WAIT", "SYN_SENT", "SYN_RECV", "LISTEN")


def one_line(text: Any) -> str:
    """A host-chosen message as one log line: runs of white space as one space, controls escaped."""
    return escape.log_line(" ".join(escape.text(text).split()))


def markdown_cell(value: Any) -> str:
    """A Markdown table cell: "-" for nothing, floats to four significant digits, text escaped."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "{:.4g}".format(value)
    return escape.markdown(value)


@functools.lru_cache(maxsize=1)
def _builtin_rules() -> tuple:
    return tuple(rules_engine.load_builtin_rules())


def host_rules(thresholds: Any = None, source: str = "thresholds") -> list:
    """The built-in rules after ``thresholds`` (rule name -> override), as health_check applies them."""
    return rules_engine.apply_thresholds(list(_builtin_rules()), thresholds or None, source)


def rule_limit(rule: Any) -> float | None:
    """Where a pressure ratio reaches 1.0: the rule's max when it has a positive one."""
    if rule is None or rule.max is None or rule.max <= 0:
        return None
    return rule.max


def worst_value(rule: Any, results: list) -> float | None:
    """The rule's worst measured value among its results (the largest for a max rule)."""
    values = [result["value"] for result in results if result["name"] == rule.name
              and isinstance(result["value"], (int, float)) and not isinstance(result["value"], bool)]
    if not values:
        return None
    return max(values) if rule.max is not None else min(values)


def pressure(rules: list, results: list) -> dict:
    """Per pressure column: the rule's worst value over its limit; the largest gives the pressure."""
    by_name = {rule.name: rule for rule in rules}
    limits, ratios = {}, {}
    for column, name in PRESSURE_RULES.items():
        rule = by_name.get(name)
        limit = rule_limit(rule)
        limits[column] = limit
        value = worst_value(rule, results) if rule is not None else None
        ratios[column] = round(float(value) / float(limit), 4) if limit is not None and value is not None else 0.0
    worst = max(ratios, key=lambda key: (ratios[key], key))
    return {"pressure": ratios[worst], "worst": worst if ratios[worst] > 0 else None, "ratios": ratios,
            "limits": limits}


def snapshot(facts: Mapping, rules: list, results: list | None = None) -> dict:
    """What a reader of the fleet sees of one host; ``results`` of ``rules`` are evaluated when not given."""
    if results is None:
        results = rules_engine.evaluate(rules, facts)
    tcp = facts.get("tcp") or {}
    states = dict(tcp.get("states") or {})
    local_ports = tcp.get("local_ports") or {}
    busiest_port = None
    if local_ports:
        port, entry = max(local_ports.items(), key=lambda item: (item[1].get("total", 0), -int(item[0])))
        busiest_port = {"port": int(port), "total": entry.get("total", 0), "states": entry.get("states")}
    peers = tcp.get("peers") or []
    top_peer = {"address": peers[0]["address"], "total": peers[0]["total"]} if peers else None
    queues = [item for item in facts.get("listeners") or []
              if item.get("protocol") == "tcp" and item.get("saturation") is not None]
    fullest = None
    if queues:
        best = max(queues, key=lambda item: (item["saturation"], item.get("queue") or 0))
        fullest = {key: best.get(key) for key in ("address", "port", "queue", "backlog", "saturation", "process")}
    ephemeral = tcp.get("ephemeral") or {}
    by_name = {rule.name: rule for rule in rules}
    share_rule = by_name.get(PRESSURE_RULES["time_wait_share"])
    share = worst_value(share_rule, results) if share_rule is not None else None
    if share is None and share_rule is None:
        # the rule is disabled for this host: the column still shows the share, evaluated by the rule as written
        builtin = {rule.name: rule for rule in _builtin_rules()}[PRESSURE_RULES["time_wait_share"]]
        share = worst_value(builtin, rules_engine.evaluate_rule(builtin, rules_engine.plain(facts)))
    if share is None and ephemeral.get("size") and not ephemeral.get("busiest"):
        share = 0.0  # no outgoing connection at all: nothing waits towards any destination
    tcp_ext = (facts.get("counters") or {}).get("TcpExt") or {}
    data = {
        "backend": facts.get("backend"), "kernel": facts.get("kernel"), "total": tcp.get("total"),
        "states": states, "udp_total": (facts.get("udp") or {}).get("total"), "busiest_port": busiest_port,
        "top_peer": top_peer, "fullest_accept_queue": fullest,
        "time_wait_share": None if share is None else round(share, 4),
        "busiest_destination": ephemeral.get("busiest"), "ephemeral_size": ephemeral.get("size"),
        "listen_overflows": tcp_ext.get("ListenOverflows"), "listen_drops": tcp_ext.get("ListenDrops"),
    }
    data.update(pressure(rules, results))
    return data


def registered_outcome(registered: Any) -> tuple[str, str] | None:
    """(``unreachable``|``skipped``|``failed``, message) when a registered result says the task did not run
    through; None when it did (or when there is no result: the caller decides what that means)."""
    if not isinstance(registered, Mapping):
        return None
    if registered.get("unreachable"):
        return "unreachable", one_line(registered.get("msg", "unreachable"))
    if registered.get("skipped"):
        return "skipped", "skipped"
    if registered.get("failed"):
        return "failed", one_line(registered.get("msg", "failed"))
    return None


def violations(results: list) -> list:
    """The results that are not ok (violations at any severity, errors), in rule order."""
    return [result for result in results if not result["ok"]]


def violations_per_rule(results: list) -> dict:
    """Rule name -> {count, status} of its results that are not ok (status: the worst of them)."""
    counts: dict = {}
    for result in violations(results):
        entry = counts.setdefault(result["name"], {"count": 0, "status": result["status"]})
        entry["count"] += 1
        if VERDICT_ORDER.index(result["status"]) < VERDICT_ORDER.index(entry["status"]):
            entry["status"] = result["status"]
    return counts


# worst first: what a host's results say without a fail_on (the gather role's page)
VERDICT_ORDER = ("error", "critical", "warning", "no_data", "ok")


def shown_verdict(row: Mapping) -> str:
    """What every report shows for a host of the gather role's report: its verdict (ok, warning, critical,
    error: the health rules' words) when its facts were gathered, else why not (unreachable, failed, skipped)."""
    return row["verdict"] if row["status"] == "ok" else row["status"]


def verdict(results: list) -> str:
    """The worst status among the results (no data counts as ok): error, critical, warning or ok."""
    statuses = {result["status"] for result in results} - {"no_data"}
    return next((status for status in VERDICT_ORDER if status in statuses), "ok")
