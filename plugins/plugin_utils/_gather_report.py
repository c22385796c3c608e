# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gather role's fleet report (private: not a public API of the collection).

Plain Python on the controller, no ``ansible`` import; netstate.tcp.fleet_report is its filter.
Rows come from the fleet model (plugins/plugin_utils/_fleet_model.py): each host's connection facts,
its pressure from the built-in health rules after the report's limits and the host's
``netstate_health_thresholds``, and the results of every built-in rule. Renders the report as
Markdown here, as HTML in plugins/plugin_utils/_fleet_html.py. No time stamps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _fleet_model as model
from . import _health_rules as rules_engine


class FleetReportError(ValueError):
    """Bad input of the fleet report; the message names the option and the value."""


TITLE = "netstate.tcp fleet report"
STATUS_ORDER = {"unreachable": 0, "failed": 1, "ok": 2}
TABLE_STATES = (("ESTABLISHED", "ESTAB"), ("TIME_WAIT", "TIME_WAIT"), ("CLOSE_WAIT", "CLOSE_WAIT"),
                ("SYN_SENT", "SYN_SENT"), ("SYN_RECV", "SYN_RECV"), ("LISTEN", "LISTEN"))
_cell = model.markdown_cell


def limit_overrides(limits: Any) -> dict:
    """The report's limits (column -> max) as threshold overrides of the rules behind the pressure columns."""
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise FleetReportError("limits must be a dictionary, got %r" % (limits,))
    overrides = {}
    for key, value in limits.items():
        if key not in model.PRESSURE_RULES:
            raise FleetReportError("limits: unknown key %r (known: %s)"
                                   % (key, ", ".join(sorted(model.PRESSURE_RULES))))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise FleetReportError("limits.%s must be a number above 0, got %r" % (key, value))
        overrides[model.PRESSURE_RULES[key]] = {"max": value}
    return overrides


def _host_facts(host: str, variables: Mapping, result_var: str) -> tuple[str, str, Mapping | None]:
    """(status, message, netstate facts) of one host."""
    result = variables.get(result_var)
    if isinstance(result, Mapping):
        outcome = model.registered_outcome(result)
        if outcome is not None:
            kind, message = outcome
            return ("unreachable", message, None) if kind == "unreachable" else ("failed", message, None)
        facts = (result.get("ansible_facts") or {}).get("netstate")
        if isinstance(facts, Mapping):
            return "ok", "", facts
        return "failed", "the result holds no ansible_facts.netstate", None
    facts = (variables.get("ansible_facts") or {}).get("netstate")
    if isinstance(facts, Mapping):
        return "ok", "", facts
    return "unreachable", "no connection facts: the host was not reached", None


def _row(host: str, status: str, message: str, facts: Mapping | None, rules: list) -> dict:
    row: dict[str, Any] = {
        "host": host, "status": status, "message": message, "pressure": None, "worst": None, "ratios": None,
        "limits": None, "backend": None, "kernel": None, "total": None, "states": None, "udp_total": None,
        "busiest_port": None, "top_peer": None, "fullest_accept_queue": None, "time_wait_share": None,
        "busiest_destination": None, "ephemeral_size": None, "listen_overflows": None, "listen_drops": None,
        "verdict": status, "violations": None,
    }
    if facts is None:
        return row
    results = rules_engine.evaluate(rules, facts)
    row.update(model.snapshot(facts, rules, results))
    row.update(verdict=model.verdict(results), violations=model.violations_per_rule(results))
    return row


def build_report(hosts: list, hostvars: Mapping, result_var: str = "netstate_gather_result",
                 limits: Any = None) -> dict:
    """The report of ``hosts``, rows worst first; ``hostvars`` maps each host to its variables."""
    overrides = limit_overrides(limits)
    fleet_rules = model.host_rules(overrides, "limits")  # every value was checked above
    rows = []
    for host in hosts:
        host = str(host)
        try:
            variables = hostvars[host]
        except KeyError:
            raise FleetReportError("host %r is not in hostvars" % host) from None
        try:
            # the host's own overrides, as the health role applies them, over the limits of the report
            rules = rules_engine.apply_thresholds(fleet_rules, variables.get(model.THRESHOLDS_VAR) or None,
                                                  "%s of host %s" % (model.THRESHOLDS_VAR, host))
        except rules_engine.HealthRuleError as error:
            raise FleetReportError(str(error)) from None
        status, message, facts = _host_facts(host, variables, result_var)
        rows.append(_row(host, status, message, facts, rules))
    rows.sort(key=lambda row: (STATUS_ORDER[row["status"]], -(row["pressure"] or 0), -(row["total"] or 0),
                               row["host"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {
        "title": TITLE,
        "hosts": len(rows),
        "gathered": sum(1 for row in rows if row["status"] == "ok"),
        "unreachable": sorted(row["host"] for row in rows if row["status"] == "unreachable"),
        "failed": sorted(row["host"] for row in rows if row["status"] == "failed"),
        "limits": model.pressure(fleet_rules, [])["limits"],
        "rows": rows,
    }


def render_markdown(report: Mapping) -> str:
    """The report as a Markdown table, worst host first, and the hosts without facts."""
    lines = ["# " + _cell(report["title"]), ""]
    summary = "{} hosts, {} gathered".format(report["hosts"], report["gathered"])
    if report["unreachable"]:
        summary += ", unreachable: " + ", ".join(_cell(host) for host in report["unreachable"])
    if report["failed"]:
        summary += ", failed: " + ", ".join(_cell(host) for host in report["failed"])
    lines += [summary + ".", "", "Worst host first. Pressure is the largest ratio to its limit ({}).".format(
        ", ".join("{} {}".format(key, _cell(value)) for key, value in sorted(report["limits"].items()))), ""]
    header = (["#", "Host", "Verdict", "Pressure", "Worst", "TCP"] + [short for _state, short in TABLE_STATES]
              + ["Busiest port", "Top peer", "Fullest accept queue", "TIME_WAIT port share", "Backend"])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _column in header) + "|")
    for row in report["rows"]:
        states = row["states"] or {}
        port = row["busiest_port"]
        peer = row["top_peer"]
        queue = row["fullest_accept_queue"]
        cells = [row["rank"], row["host"], model.shown_verdict(row), row["pressure"], row["worst"], row["total"]]
        cells += [states.get(state) if row["states"] is not None else None for state, _short in TABLE_STATES]
        cells += [
            "{} ({})".format(port["port"], port["total"]) if port else None,
            "{} ({})".format(peer["address"], peer["total"]) if peer else None,
            "{}:{} {}/{}".format(queue["address"], queue["port"], queue["queue"], queue["backlog"]) if queue else None,
            row["time_wait_share"],
            row["backend"],
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    troubled = [row for row in report["rows"] if row["status"] != "ok"]
    if troubled:
        lines += ["", "## Hosts without facts", ""]
        lines += ["- {} ({}): {}".format(_cell(row["host"]), row["status"], _cell(row["message"] or "-"))
                  for row in troubled]
    return "\n".join(lines) + "\n"
