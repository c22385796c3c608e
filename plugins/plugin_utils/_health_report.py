# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet report of netstate.tcp health results (private: not a public API of the collection).

Plain Python on the controller, no ``ansible`` import. Turns the registered results of
netstate.tcp.health_check for every host of a play into one report (JSON), a JUnit XML (one
testcase per host x rule: failures for violations at or above fail_on, errors for hosts that
could not be checked and rules that could not be evaluated), a Markdown summary table and the
HTML fleet page (plugins/plugin_utils/_fleet_html.py). Hosts are described by the fleet model
(plugins/plugin_utils/_fleet_model.py), as in the gather role's fleet report.
Output is deterministic (no timestamps), so an unchanged fleet gives unchanged files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from xml.etree import ElementTree
from collections.abc import Mapping
from typing import Any

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _files as files
from ansible_collections.netstate.tcp.plugins.module_utils._engine._atomic import write_atomically

from . import _fleet_html as html_page
from . import _fleet_model as model
from . import _health_rules as rules_engine

HOST_STATUSES = ("passed", "failed", "error", "unreachable")
FORMATS = {"junit": "health.junit.xml", "json": "health.json", "markdown": "health.md", "html": "health.html"}


def host_result(rules: list, facts: Any, fail_on: str, budget: Any = None) -> dict:
    """What netstate.tcp.health_check returns for one host (besides changed and facts_source):
    the results of ``rules`` on ``facts`` within ``budget``, their summary and the host's snapshot."""
    data = rules_engine.plain(facts)
    results = rules_engine.evaluate(rules, data, budget)
    summary = rules_engine.summarize(results, fail_on)
    return {"healthy": summary["healthy"], "failed": not summary["healthy"], "msg": summary["msg"],
            "fail_on": fail_on, "rules": [rule.name for rule in rules], "results": results,
            "violations": summary["violations"], "summary": summary["counts"],
            "snapshot": model.snapshot(data, rules, results)}


def _host_entry(host: str, registered: Any, default_fail_on: str) -> dict:
    """Classify one host's registered health_check result."""
    entry = {"host": host, "status": "error", "fail_on": default_fail_on, "rules": [], "results": [],
             "counts": dict.fromkeys(rules_engine.STATUSES, 0), "message": "", "snapshot": None}
    # the fields are ENTRY_FIELDS: merge_reports reads them back from health.json
    if not isinstance(registered, Mapping):
        entry.update(status="unreachable", message="no health result: the host was unreachable or failed "
                                                   "before the check")
        return entry
    outcome = model.registered_outcome(registered)
    if outcome is not None and outcome[0] == "unreachable":
        entry.update(status="unreachable", message=outcome[1])
        return entry
    if outcome is not None and outcome[0] == "skipped":
        entry.update(status="error", message="the health check was skipped on this host")
        return entry
    if "results" not in registered or "healthy" not in registered:
        entry.update(status="error", message=model.one_line(registered.get("msg", "no health results")))
        return entry
    fail_on = registered.get("fail_on") or default_fail_on
    results = [dict(result) for result in registered["results"]]
    for result in results:
        entry["counts"][result["status"]] += 1
    failing = [result for result in results if rules_engine.is_failing(result, fail_on)]
    entry.update(
        status="passed" if not failing else "failed",
        fail_on=fail_on,
        rules=list(registered.get("rules") or dict.fromkeys(result["name"] for result in results)),
        results=results,
        message="\n".join(result["message"] for result in failing),
        snapshot=registered.get("snapshot"),
    )
    return entry


def build_report(registered_by_host: Mapping, rule_names: list | None = None, fail_on: str = "critical",
                 title: str = "netstate.tcp health") -> dict:
    """The JSON report: one entry per host (sorted by name) and fleet totals."""
    rules_engine.check_fail_on(fail_on)
    hosts = [_host_entry(str(host), registered_by_host[host], fail_on) for host in registered_by_host]
    return _assemble(hosts, rule_names, fail_on, title)


def _assemble(hosts: list, rule_names: list | None, fail_on: str, title: str) -> dict:
    """The report of host entries: sorted by name, every rule name, totals."""
    hosts = sorted(hosts, key=lambda entry: entry["host"])
    names = list(rule_names or [])
    for entry in hosts:
        for name in entry["rules"]:
            if name not in names:
                names.append(name)
    for entry in hosts:
        if entry["status"] in ("error", "unreachable") and not entry["rules"]:
            entry["rules"] = list(names)
    totals = {status: sum(1 for entry in hosts if entry["status"] == status) for status in HOST_STATUSES}
    return {"title": title, "fail_on": fail_on, "rules": names, "totals": totals,
            "healthy": totals["passed"] == len(hosts), "hosts": hosts}


def verdicts(report: Any) -> Any:
    """What a report says of the hosts, without what is only measured: per host its status, fail_on,
    rules and per result the rule, verdict, severity and limit (with the subject of a violation).

    A result's verdict is its status, except that ok and no_data are one verdict: both pass, and a
    rule with nothing to measure now (no outgoing connection for time_wait_ephemeral_share) may have
    something within its limit the next run. Two runs whose verdicts are equal count as unchanged even
    when values, messages or the hosts' snapshots moved (a host's own SSH sessions and package
    downloads leave sockets between two runs). None when ``report`` is not a report (a missing or
    foreign health.json).
    """
    if not isinstance(report, Mapping) or not isinstance(report.get("hosts"), list):
        return None
    hosts = []
    for entry in report["hosts"]:
        if not isinstance(entry, Mapping):
            return None
        results = []
        for result in entry.get("results") or []:
            if not isinstance(result, Mapping):
                return None
            status = result.get("status")
            failing = status in rules_engine.SEVERITIES
            results.append((result.get("name"), "ok" if status == "no_data" else status, result.get("severity"),
                            result.get("bound"), result.get("threshold"),
                            result.get("subject") if failing else None))
        hosts.append((entry.get("host"), entry.get("status"), entry.get("fail_on"), list(entry.get("rules") or []),
                      sorted(results, key=repr)))
    return {"title": report.get("title"), "fail_on": report.get("fail_on"), "rules": report.get("rules"),
            "hosts": hosts}


class ReportMergeError(ValueError):
    """A partial report cannot be merged; names the report and what is wrong."""


ENTRY_FIELDS = ("host", "status", "fail_on", "rules", "results", "counts", "message", "snapshot")


def merge_reports(partials: list, rule_names: list | None = None) -> dict:
    """One report from the JSON reports (``health.json``) of runs over disjoint parts of a fleet (job
    slices): the same report, to the byte in every format, as one run over all their hosts.

    ``partials`` is a list of (source, parsed JSON) pairs; ``source`` names the report in errors.
    The reports must agree on title and fail_on and hold each host once.
    """
    if not partials:
        raise ReportMergeError("merge: no partial report given")
    hosts: list = []
    seen: dict = {}
    first_source, first = partials[0]
    for source, partial in partials:
        if not isinstance(partial, Mapping) or not isinstance(partial.get("hosts"), list):
            raise ReportMergeError(f"merge: {source}: not a netstate.tcp health report (no list of hosts)")
        for key in ("title", "fail_on"):
            if partial.get(key) != first.get(key):
                raise ReportMergeError(f"merge: {source}: {key} {partial.get(key)!r} differs from "
                                       f"{first.get(key)!r} in {first_source}")
        names = partial.get("rules")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ReportMergeError(f"merge: {source}: rules must be a list of rule names, got {names!r}")
        for index, entry in enumerate(partial["hosts"]):
            if not isinstance(entry, Mapping) or sorted(entry) != sorted(ENTRY_FIELDS):
                raise ReportMergeError(f"merge: {source}: hosts[{index}] is not a host entry of this version "
                                       f"(fields: {', '.join(ENTRY_FIELDS)})")
            if entry["status"] not in HOST_STATUSES:
                raise ReportMergeError(f"merge: {source}: hosts[{index}]: status {entry['status']!r} is not one "
                                       f"of {', '.join(HOST_STATUSES)}")
            host = entry["host"]
            if host in seen:
                raise ReportMergeError(f"merge: host {host!r} is in both {seen[host]} and {source}")
            seen[host] = source
            hosts.append({key: entry[key] for key in ENTRY_FIELDS})
    names = list(rule_names or [])
    for _source, partial in partials:
        names += [name for name in partial["rules"] if name not in names]
    fail_on = rules_engine.check_fail_on(first.get("fail_on"))
    return _assemble(hosts, names, fail_on, str(first.get("title")))


def _testcase_outcome(entry: dict, name: str) -> tuple:
    """(kind, message, text) for one host x rule: kind is passed, failure, error or skipped."""
    if entry["status"] in ("error", "unreachable"):
        return "error", entry["message"], entry["message"]
    mine = [result for result in entry["results"] if result["name"] == name]
    text = "\n".join(result["message"] for result in mine)
    errors = [result for result in mine if result["status"] == "error"]
    if errors:
        return "error", errors[0]["message"], text
    failing = [result for result in mine if rules_engine.is_failing(result, entry["fail_on"])]
    if failing:
        return "failure", failing[0]["message"], text
    if mine and all(result["status"] == "no_data" for result in mine):
        return "skipped", mine[0]["message"], text
    return "passed", "", text


def _xml(text: Any) -> str:
    return escape.xml_text(text)


def render_junit(report: dict) -> str:
    """JUnit XML: a testsuite per host, a testcase per rule (classname = host, name = rule).

    Every name and message goes through escape.xml_text: characters XML 1.0 forbids (a process
    named with control bytes) would make the whole file unreadable to a CI server.
    """
    root = ElementTree.Element("testsuites", name=_xml(report["title"]))
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for entry in report["hosts"]:
        host = _xml(entry["host"])
        suite = ElementTree.SubElement(root, "testsuite", name=host, hostname=host)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for name in entry["rules"] or ["health_check"]:
            kind, message, text = _testcase_outcome(entry, name)
            message, text = _xml(message), _xml(text)
            case = ElementTree.SubElement(suite, "testcase", classname=host, name=_xml(name), time="0")
            counts["tests"] += 1
            if kind == "failure":
                counts["failures"] += 1
                severity = next(result["severity"] for result in entry["results"]
                                if result["name"] == name and rules_engine.is_failing(result, entry["fail_on"]))
                ElementTree.SubElement(case, "failure", message=message, type=_xml(severity)).text = text
            elif kind == "error":
                counts["errors"] += 1
                ElementTree.SubElement(case, "error", message=message, type=_xml(entry["status"])).text = text
            elif kind == "skipped":
                counts["skipped"] += 1
                ElementTree.SubElement(case, "skipped", message=message)
            if text and kind != "error":
                ElementTree.SubElement(case, "system-out").text = text
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", "0")
    for key, value in totals.items():
        root.set(key, str(value))
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


_cell = escape.markdown


def render_markdown(report: dict) -> str:
    """A summary table: one row per host, its violations (all severities) in the last column."""
    totals = report["totals"]
    hosts = report["hosts"]
    bad = len(hosts) - totals["passed"]
    headline = (f"## {_cell(report['title'])}: {totals['passed']} of {len(hosts)} hosts passed"
                f"{f', {bad} not' if bad else ''} (fail_on: {_cell(report['fail_on'])})")
    lines = [headline, "",
             "| Host | Result | Critical | Warning | Error | No data | OK | Violations |",
             "|------|--------|---------:|--------:|------:|--------:|---:|------------|"]
    for entry in hosts:
        if entry["status"] in ("error", "unreachable"):
            lines.append(f"| {_cell(entry['host'])} | {entry['status'].upper()} | - | - | - | - | - | "
                         f"{_cell(entry['message'])} |")
            continue
        counts = entry["counts"]
        violations = [result["message"] for result in model.violations(entry["results"])]
        lines.append(f"| {_cell(entry['host'])} | {'FAILED' if entry['status'] == 'failed' else 'passed'} "
                     f"| {counts['critical']} | {counts['warning']} | {counts['error']} | {counts['no_data']} "
                     f"| {counts['ok']} | {_cell(chr(10).join(violations)) or '-'} |")
    return "\n".join(lines) + "\n"


def render_html(report: dict) -> str:
    """The HTML fleet page, worst host first."""
    return html_page.render(html_page.from_health_report(report))


RENDERERS = {"junit": render_junit, "json": render_json, "markdown": render_markdown, "html": render_html}


@contextlib.contextmanager
def locked_directory(directory: str | None):
    """Hold an exclusive flock on the report directory itself (no lock file is left behind), so
    two runs writing into one directory at once leave the set of files of one run, not a mix."""
    if directory is None:
        yield
        return
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


#: The largest report file read back to compare with a new one (reports of 10,000 hosts are some MiB).
REPORT_READ_LIMIT = 64 * 1024 * 1024


def write_if_changed(path: str, text: str, check_mode: bool = False) -> bool:
    """Atomically replace ``path`` when its content differs; returns whether it (would have) changed."""
    # only a regular file is compared and replaced: a FIFO, a device or a link there is refused
    # (FileRefused, an OSError naming the path), not waited on or written through
    files.check_replaceable(path)
    try:
        if files.read_text(path, REPORT_READ_LIMIT, follow_links=False) == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    except files.FileRefused as exc:
        if exc.errno != errno.EFBIG:  # a larger file than any report is simply not ours: replace it
            raise
    if check_mode:
        return True
    write_atomically(path, text)
    return True
