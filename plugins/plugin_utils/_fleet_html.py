# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTML fleet page of netstate.tcp (private: not a public API of the collection).

Plain Python on the controller, no ``ansible`` import. One self-contained file - no script, no
external font, style sheet or image - with inline SVG: per host, worst first, its verdict, a
stacked bar of its TCP states, the TIME_WAIT share of its ephemeral port range (towards the
busiest destination, as rule time_wait_ephemeral_share measures it) against the rule's limit, its
fullest accept queue against the backlog, and its violations per rule. Every text a host chose
goes through escape.html_text. Output is deterministic (no timestamps).

The page is drawn from a page model, made from either report by :func:`from_fleet_report`
(the gather role's, plugins/plugin_utils/_gather_report.py) or :func:`from_health_report`
(plugins/plugin_utils/_health_report.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape

from . import _fleet_model as model

STATE_COLOURS = {"ESTABLISHED": "#4e79a7", "TIME_WAIT": "#f28e2b", "CLOSE_WAIT": "#e15759",
                 "SYN_SENT": "#76b7b2", "SYN_RECV": "#b07aa1", "LISTEN": "#59a14f", "other": "#bab0ac"}
# verdict -> CSS class; worst first, which is also the order of the page
VERDICT_CLASSES = {"unreachable": "down", "error": "bad", "failed": "bad", "critical": "bad", "warning": "warn",
                   "passed": "ok", "ok": "ok"}
HEALTH_ORDER = {"unreachable": 0, "error": 1, "failed": 2, "passed": 3}
BAR_WIDTH = 160
GAUGE_WIDTH = 90
HEIGHT = 12

STYLE = """
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em;margin:0 0 .2em}
p.summary{margin:.2em 0 1em}
table{border-collapse:collapse;width:100%}
th,td{padding:2px 6px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:middle}
th{background:#f4f4f4;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.host{font-family:ui-monospace,Menlo,Consolas,monospace;overflow-wrap:anywhere;min-width:11em;max-width:20em}
.verdict{font-weight:600;padding:1px 6px;border-radius:3px;white-space:nowrap}
.down{background:#444;color:#fff}.bad{background:#d62728;color:#fff}.warn{background:#f2b701;color:#222}
.ok{background:#2ca02c;color:#fff}
.message{white-space:pre-line;color:#555;font-size:.9em}
.rule{display:inline-block;margin:1px 3px 1px 0;padding:0 4px;border-radius:3px;font-size:.85em;white-space:nowrap}
.rule.critical,.rule.error{background:#fbd5d5}.rule.warning{background:#fdf0c2}
.label{font-size:.85em;color:#444;margin-left:4px;white-space:nowrap}
td.gauge,td.pressure{white-space:nowrap}
td.violations{min-width:18em}
.legend span{display:inline-block;margin-right:1em}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
svg{vertical-align:middle}
"""


def _text(value: Any) -> str:
    return escape.html_text(value)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "{:.4g}".format(value)
    return _text(value)


def _percent(share: float) -> str:
    return "{:.1f}&#8201;%".format(100.0 * share)


def _state_bar(states: Mapping | None) -> str:
    if not states:
        return "-"
    counts = [(state, int(states.get(state) or 0)) for state in model.BAR_STATES]
    counts.append(("other", sum(int(value or 0) for key, value in states.items() if key not in model.BAR_STATES)))
    total = sum(count for _state, count in counts)
    parts = ['<svg class="states" width="%d" height="%d" role="img">' % (BAR_WIDTH, HEIGHT)]
    if total == 0:
        parts.append('<rect width="%d" height="%d" fill="#eee"><title>no TCP sockets</title></rect>'
                     % (BAR_WIDTH, HEIGHT))
    offset = 0.0
    for state, count in counts:
        if not count:
            continue
        width = BAR_WIDTH * count / total
        parts.append('<rect x="%.2f" width="%.2f" height="%d" fill="%s"><title>%s: %d</title></rect>'
                     % (offset, width, HEIGHT, STATE_COLOURS[state], state, count))
        offset += width
    parts.append("</svg>")
    return "".join(parts)


def _gauge(fraction: float, scale: float, marker: float | None, colour: str, title: str) -> str:
    """A bar filled to fraction (of scale), with a line at marker (the limit)."""
    filled = GAUGE_WIDTH * min(max(fraction, 0.0), scale) / scale
    parts = ['<svg class="gauge" width="%d" height="%d" role="img"><title>%s</title>' % (GAUGE_WIDTH, HEIGHT, title),
             '<rect width="%d" height="%d" fill="#eee"/>' % (GAUGE_WIDTH, HEIGHT),
             '<rect width="%.2f" height="%d" fill="%s"/>' % (filled, HEIGHT, colour)]
    if marker is not None and marker <= scale:
        x = GAUGE_WIDTH * marker / scale
        parts.append('<line x1="%.2f" x2="%.2f" y1="0" y2="%d" stroke="#000" stroke-width="1.5"/>' % (x, x, HEIGHT))
    parts.append("</svg>")
    return "".join(parts)


def _time_wait(snapshot: Mapping) -> str:
    share = snapshot.get("time_wait_share")
    if share is None:
        return "-"
    limit = (snapshot.get("limits") or {}).get("time_wait_share")
    scale = max(1.0, share) if limit is None else max(min(1.0, 2 * limit), share, limit)
    colour = "#d62728" if limit is not None and share > limit else "#f28e2b"
    busiest = snapshot.get("busiest_destination") or {}
    towards = ""
    if busiest:
        towards = " to %s:%s" % (_text(busiest.get("address")), _number(busiest.get("port")))
    title = "TIME_WAIT%s: %s of the ephemeral port range%s" % (
        towards, _percent(share), "" if limit is None else ", limit " + _percent(limit))
    return _gauge(share, scale, limit, colour, title) + '<span class="label">%s</span>' % _percent(share)


def _accept_queue(snapshot: Mapping) -> str:
    queue = snapshot.get("fullest_accept_queue")
    if not queue:
        return "-"
    saturation = float(queue.get("saturation") or 0.0)
    limit = (snapshot.get("limits") or {}).get("accept_queue")
    marker = 1.0 if limit is None else limit
    colour = "#d62728" if saturation > marker else "#4e79a7"
    where = "%s:%s" % (_text(queue.get("address")), _number(queue.get("port")))
    label = "%s %s/%s %s" % (where, _number(queue.get("queue")), _number(queue.get("backlog")),
                             _text(queue.get("process") if queue.get("process") is not None else ""))
    title = "accept queue of %s: %s of its backlog" % (where, _percent(saturation))
    return (_gauge(saturation, max(1.25 * marker, saturation), marker, colour, title)
            + '<span class="label">%s</span>' % label.rstrip())


def _pressure(snapshot: Mapping) -> str:
    """The largest ratio of a rule's value to its limit, and which column gives it."""
    value = snapshot.get("pressure")
    if value is None:
        return "-"
    worst = snapshot.get("worst")
    return "%s%s" % (_number(float(value)), ' <span class="label">%s</span>' % _text(worst) if worst else "")


def _violations(violations: Mapping | None) -> str:
    if not violations:
        return "-"
    chips = []
    for name, entry in violations.items():
        count = " &#215;%d" % entry["count"] if entry["count"] > 1 else ""
        chips.append('<span class="rule %s">%s%s</span>' % (_text(entry["status"]), _text(name), count))
    return "".join(chips)


def render(page: Mapping) -> str:
    """The page of a page model: {title, summary, hosts: [{host, verdict, message, snapshot, violations}]}."""
    title = _text(page["title"])
    legend = "".join('<span><i style="background:%s"></i>%s</span>' % (colour, state)
                     for state, colour in STATE_COLOURS.items())
    lines = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>%s</title>" % title, "<style>%s</style>" % STYLE.strip(), "</head>", "<body>",
             "<h1>%s</h1>" % title, '<p class="summary">%s</p>' % _text(page["summary"]),
             '<p class="legend">TCP states: %s</p>' % legend,
             "<table>", "<thead><tr><th>#</th><th>Host</th><th>Verdict</th><th>Pressure</th><th>TCP</th>"
             "<th>TCP states</th><th>TIME_WAIT share of the port range</th><th>Fullest accept queue</th>"
             "<th>Violations per rule</th></tr></thead>", "<tbody>"]
    for rank, host in enumerate(page["hosts"], 1):
        snapshot = host.get("snapshot")
        verdict = host["verdict"]
        cells = ['<td class="num">%d</td>' % rank, '<td class="host">%s</td>' % _text(host["host"]),
                 '<td><span class="verdict %s">%s</span></td>' % (VERDICT_CLASSES.get(verdict, "bad"), _text(verdict))]
        if snapshot is None:
            cells.append('<td colspan="6" class="message">%s</td>' % (_text(host.get("message")) or "-"))
        else:
            cells += ['<td class="num pressure">%s</td>' % _pressure(snapshot),
                      '<td class="num">%s</td>' % _number(snapshot.get("total")),
                      "<td>%s</td>" % _state_bar(snapshot.get("states")),
                      '<td class="gauge">%s</td>' % _time_wait(snapshot),
                      '<td class="gauge">%s</td>' % _accept_queue(snapshot),
                      '<td class="violations">%s</td>' % _violations(host.get("violations"))]
        lines.append('<tr class="host-row" data-verdict="%s">%s</tr>' % (_text(verdict), "".join(cells)))
    lines += ["</tbody>", "</table>", "</body>", "</html>"]
    return "\n".join(lines) + "\n"


def from_fleet_report(report: Mapping) -> dict:
    """The page of netstate.tcp.fleet_report's report: its rows, already worst first."""
    summary = "{} hosts, {} gathered".format(report["hosts"], report["gathered"])
    if report["unreachable"]:
        summary += ", unreachable: " + ", ".join(report["unreachable"])
    if report["failed"]:
        summary += ", failed: " + ", ".join(report["failed"])
    hosts = []
    for row in report["rows"]:
        gathered = row["status"] == "ok"
        hosts.append({"host": row["host"], "verdict": model.shown_verdict(row),
                      "message": row["message"], "snapshot": row if gathered else None,
                      "violations": row.get("violations")})
    return {"title": report["title"], "summary": summary + ". Worst host first.", "hosts": hosts}


def from_health_report(report: Mapping) -> dict:
    """The page of the health report: hosts worst first (outcome, pressure, violations, name)."""
    def order(entry):
        snapshot = entry.get("snapshot") or {}
        bad = sum(1 for result in entry["results"] if not result["ok"])
        return (HEALTH_ORDER[entry["status"]], -(snapshot.get("pressure") or 0), -bad, entry["host"])

    totals = report["totals"]
    summary = "{} of {} hosts passed (fail_on: {}); failed {}, error {}, unreachable {}. Worst host first.".format(
        totals["passed"], len(report["hosts"]), report["fail_on"], totals["failed"], totals["error"],
        totals["unreachable"])
    hosts = [{"host": entry["host"], "verdict": entry["status"], "message": entry["message"],
              "snapshot": entry.get("snapshot") if entry["status"] in ("passed", "failed") else None,
              "violations": model.violations_per_rule(entry["results"])}
             for entry in sorted(report["hosts"], key=order)]
    return {"title": report["title"], "summary": summary, "hosts": hosts}
