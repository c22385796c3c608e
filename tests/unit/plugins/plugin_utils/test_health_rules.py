# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_health_rules: every validation error, the built-in rules and evaluation; hostile rules - the evaluation
budget, format() templates, rule names and the size of every message.

Real JMESPath and the real built-in rule file; fact documents are built by hand in the shape
of docs/facts-contract.md. The runaway queries really run (their cost before the budget is in each
test's failure message) and are stopped by the budgeted interpreter, not by a mock. Real sockets are
in tests/integration/test_health_role.py.
"""

from __future__ import annotations

import copy
import math
import os
import re
import time

import jmespath
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine._argspec import TCP_STATES as STATES
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
BUILTIN_NAMES = ["time_wait_ephemeral_share", "close_wait_per_port", "syn_recv_total", "accept_queue_saturation",
                 "accept_queue_full", "listen_overflows_rate", "listen_drops_rate", "orphans_share",
                 "time_wait_overflow_rate", "retransmitting_peer", "send_queue_stalled_port"]


def states(**counts):
    result = dict.fromkeys(STATES, 0)
    result.update(counts)
    return result


def listener(port, queue, backlog, process="nginx", pid=1234, protocol="tcp", address="0.0.0.0"):
    return {"protocol": protocol, "family": "ipv4", "address": address, "port": port,
            "backlog": backlog if protocol == "tcp" else None, "queue": queue if protocol == "tcp" else None,
            "saturation": round(queue / backlog, 4) if protocol == "tcp" and backlog else None,
            "pid": pid, "process": process, "user": "www-data", "stime": "2026-11-26T03:58:31", "connections": 3}


@pytest.fixture
def facts():
    """A healthy host: a web server on 8080, sshd on 22, sampled counters."""
    return {
        "backend": "netlink", "namespace": "host", "kernel": "6.1.0", "duration_ms": 3.2,
        "gather_subset": ["counters", "listeners", "peers", "ports", "states", "timers"],
        "tcp": {
            "total": 12, "states": states(ESTABLISHED=8, TIME_WAIT=2, LISTEN=2, SYN_RECV=1),
            "families": {"ipv4": {"total": 12, "states": states(ESTABLISHED=8, TIME_WAIT=2, LISTEN=2)},
                         "ipv6": {"total": 0, "states": states()}},
            "local_ports": {"22": {"total": 2, "states": states(ESTABLISHED=1, LISTEN=1)},
                            "8080": {"total": 8, "states": states(ESTABLISHED=6, LISTEN=1, CLOSE_WAIT=1)}},
            "remote_ports": {"5432": {"total": 2, "states": states(ESTABLISHED=1, TIME_WAIT=1)}},
            "peers": [{"address": "198.18.0.5", "total": 2, "states": states(ESTABLISHED=1, TIME_WAIT=1)}],
            "ephemeral": {"range": [32768, 60999], "size": 28232,
                          "busiest": {"address": "198.18.0.5", "port": 5432, "connections": 2, "time_wait": 1,
                                      "share": 0.0001}},
            "timers": {"none": 2, "retransmit": 1, "keepalive": 5, "time_wait": 2, "zero_window_probe": 0},
            "queues": {"recv_bytes": 0, "send_bytes": 1200, "recv_sockets": 0, "send_sockets": 1,
                       "send_ports": [{"port": 8080, "side": "local", "sockets": 1, "bytes": 1200, "stalled": 0}]},
            "retransmitting": [{"address": "198.18.0.5", "sockets": 1, "retransmits": 1}],
        },
        "udp": {"total": 1, "families": {"ipv4": 1, "ipv6": 0}},
        "listeners": [listener(22, 0, 128, process="sshd", pid=700), listener(8080, 2, 511),
                      listener(5353, None, None, process="avahi", protocol="udp")],
        "counters": {
            "sockstat": {"sockets_used": 20, "TCP_inuse": 10, "TCP_orphan": 3, "TCP_tw": 2},
            "TcpExt": {"ListenOverflows": 7, "ListenDrops": 7, "TCPTimeWaitOverflow": 0},
            "Tcp": {"ActiveOpens": 10, "PassiveOpens": 20, "CurrEstab": 8},
            "sysctl": {"tcp_max_orphans": 65536, "somaxconn": 4096, "tcp_max_tw_buckets": 65536},
            "interval": 1.0,
            "rates": {"TcpExt": {"ListenOverflows": 0.0, "ListenDrops": 0.0, "TCPTimeWaitOverflow": 0.0},
                      "Tcp": {"ActiveOpens": 2.0}},
        },
    }


def rule(**fields):
    base = {"name": "r", "query": "tcp.total", "max": 10}
    base.update(fields)
    return base


def by_name(results, name):
    return [result for result in results if result["name"] == name]


# --- validation: one error naming the rule and the field ---------------------------------------


@pytest.mark.parametrize("rules, where, rule_name, field, problem", [
    ("close_wait", "rules", None, None, "must be a list of rules, got str"),
    ({"name": "x"}, "rules", None, None, "must be a list of rules, got dict"),
    (["not a rule"], "rules[0]", None, None, "must be a mapping, got str"),
    ([{"query": "tcp.total", "max": 1}], "rules[0]", None, "name", "is required"),
    ([rule(name="")], "rules[0]", None, "name", "must match"),
    ([rule(name="two words")], "rules[0]", None, "name", "must match"),
    ([rule(name=5)], "rules[0]", None, "name", "must match"),
    ([rule(), rule(name="r2", maxx=3)], "rules[1]", "r2", "maxx", "unknown field (allowed: name, description"),
    ([{"name": "r", "max": 1}], "rules[0]", "r", "query", "is required"),
    ([rule(query="")], "rules[0]", "r", "query", "must be a non-empty JMESPath string"),
    ([rule(query=["tcp.total"])], "rules[0]", "r", "query", "must be a non-empty JMESPath string"),
    ([rule(query="tcp.states[")], "rules[0]", "r", "query", "invalid JMESPath 'tcp.states['"),
    ([rule(query="tcp..total")], "rules[0]", "r", "query", "invalid JMESPath"),
    ([rule(each="listeners[?protocol=='tcp'")], "rules[0]", "r", "each", "invalid JMESPath"),
    ([rule(each="listeners", label="format('{port}'")], "rules[0]", "r", "label", "invalid JMESPath"),
    ([rule(query="dvi(tcp.total, `2`)")], "rules[0]", "r", "query", "unknown function dvi() (known: abs, add"),
    ([rule(query="div(tcp.total)")], "rules[0]", "r", "query", "function div() takes 2 argument(s), got 1"),
    ([rule(query="max_by(listeners, &port, `1`).port")], "rules[0]", "r", "query", "max_by() takes 2"),
    ([rule(label="format('x')")], "rules[0]", "r", "label", "function format() takes 2 argument(s), got 1"),
    ([rule(max="ten")], "rules[0]", "r", "max", "must be a number, got 'ten'"),
    ([rule(max=True)], "rules[0]", "r", "max", "must be a number, got True"),
    ([rule(max=[10])], "rules[0]", "r", "max", "must be a number, got list [10]"),
    ([rule(max=math.nan)], "rules[0]", "r", "max", "must be a finite number"),
    ([rule(max="inf")], "rules[0]", "r", "max", "must be a finite number"),
    ([rule(max=None, min="low")], "rules[0]", "r", "min", "must be a number, got 'low'"),
    ([rule(max=None)], "rules[0]", "r", "max", "a rule needs max and/or min"),
    ([rule(max=1, min=5)], "rules[0]", "r", "min", "5 is above max 1"),
    ([rule(severity="major")], "rules[0]", "r", "severity", "must be one of warning, critical, got 'major'"),
    ([rule(description=["a"])], "rules[0]", "r", "description", "must be a string"),
    ([rule(doc="a line")], "rules[0]", "r", "doc", "must be a mapping, got 'a line'"),
    ([rule(prometheus=["expr"])], "rules[0]", "r", "prometheus", "must be a mapping"),
    ([rule(zabbix=3)], "rules[0]", "r", "zabbix", "must be a mapping, got 3"),
    ([rule(), rule(query="tcp.states.LISTEN")], "rules[1]", "r", "name", "duplicate name, already used by rules[0]"),
])
def test_validation_error_names_rule_and_field(rules, where, rule_name, field, problem):
    with pytest.raises(health.HealthRuleError) as raised:
        health.validate_rules(rules)
    error = raised.value
    assert (error.where, error.rule, error.field) == (where, rule_name, field)
    assert problem in error.problem
    text = str(error)
    assert text.startswith(where)
    if rule_name:
        assert f"rule '{rule_name}'" in text
    if field:
        assert f"field '{field}'" in text


def test_duplicate_across_rules_and_extra_rules():
    with pytest.raises(health.HealthRuleError) as raised:
        health.build_rules([rule(name="a")], [rule(name="b"), rule(name="a")])
    assert str(raised.value) == "extra_rules[1]: rule 'a': field 'name': duplicate name, already used by rules[0]"


def test_extra_rule_duplicating_a_builtin():
    with pytest.raises(health.HealthRuleError) as raised:
        health.build_rules(None, [rule(name="syn_recv_total")])
    assert str(raised.value) == ("extra_rules[0]: rule 'syn_recv_total': field 'name': duplicate name, "
                                 "already used by built-in rules")


@pytest.mark.parametrize("thresholds, rule_name, field, problem", [
    ([1], None, None, "must be a mapping of rule name to threshold"),
    ({"close_wait": 5}, "close_wait", None, "no such rule (known: accept_queue_full, accept_queue_saturation"),
    ({"syn_recv_total": "many"}, "syn_recv_total", "max", "must be a number, got 'many'"),
    ({"syn_recv_total": None}, "syn_recv_total", "max", "must be a number or a mapping"),
    ({"syn_recv_total": {"maximum": 3}}, "syn_recv_total", "maximum", "unknown field (allowed: max, min"),
    ({"syn_recv_total": {"severity": "page"}}, "syn_recv_total", "severity", "must be one of warning, critical"),
    ({"syn_recv_total": {"enabled": "no"}}, "syn_recv_total", "enabled", "must be true or false, got 'no'"),
    ({"syn_recv_total": {"min": 300}}, "syn_recv_total", "min", "300 is above max 256"),
    ({"syn_recv_total": {"max": None}}, "syn_recv_total", "max", "a rule needs max and/or min"),
    ({"orphans_share": {"max": [1]}}, "orphans_share", "max", "must be a number, got list"),
])
def test_threshold_errors_name_rule_and_field(thresholds, rule_name, field, problem):
    with pytest.raises(health.HealthRuleError) as raised:
        health.build_rules(None, [], thresholds, threshold_source="netstate_health_thresholds")
    error = raised.value
    assert (error.where, error.rule, error.field) == ("netstate_health_thresholds", rule_name, field)
    assert problem in error.problem


@pytest.mark.parametrize("value", ["warn", None, "Critical"])
def test_fail_on_must_be_a_severity(value):
    with pytest.raises(health.HealthRuleError, match=r"^fail_on: must be one of warning, critical"):
        health.check_fail_on(value)


def test_numeric_strings_are_thresholds():
    rules = health.validate_rules([rule(max="10"), rule(name="s", max=" 0.5 ", min="-1")])
    assert (rules[0].max, type(rules[0].max)) == (10, int)
    assert (rules[1].max, rules[1].min) == (0.5, -1)


# --- built-in rules ----------------------------------------------------------------------------


def test_builtin_rules_load_and_validate():
    rules = health.load_builtin_rules()
    assert [item.name for item in rules] == BUILTIN_NAMES
    assert {item.severity for item in rules} == {"warning", "critical"}
    assert all(item.description for item in rules)
    assert health.needs_rates(rules)
    assert [item.name for item in rules if item.uses_rates] == [
        "listen_overflows_rate", "listen_drops_rate", "time_wait_overflow_rate"]


def test_builtin_rules_file_is_plain_rule_data():
    with open(health.BUILTIN_RULES_PATH, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    assert [item["name"] for item in raw] == BUILTIN_NAMES
    assert all(set(item) <= set(health.RULE_FIELDS) for item in raw)


def test_derived_parts_are_accepted_and_not_evaluated(facts):
    """doc, prometheus and zabbix (what the alert rules, template and docs are generated from) change
    nothing in validation or evaluation: the built-in records, loaded as a user's rules, evaluate as the
    same records without those parts."""
    with open(health.BUILTIN_RULES_PATH, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    assert all(set(health.DERIVED_FIELDS) <= set(item) for item in raw)
    stripped = [{key: value for key, value in item.items() if key not in health.DERIVED_FIELDS} for item in raw]
    with_parts = health.validate_rules(raw)
    assert with_parts == health.validate_rules(stripped) == health.load_builtin_rules()
    assert health.evaluate(with_parts, facts) == health.evaluate(health.validate_rules(stripped), facts)
    assert health.build_rules(rules=raw) == health.build_rules()
    assert health.validate_rules([rule(doc=None, prometheus={}, zabbix={"anything": 1})])[0] == \
        health.validate_rules([rule()])[0]


def test_docs_list_every_builtin_rule_with_its_threshold():
    with open(os.path.join(ROOT, "docs", "health.md"), encoding="utf-8") as handle:
        text = handle.read()
    for item in health.load_builtin_rules():
        row = re.search(rf"^\| `{item.name}` \|.*$", text, re.MULTILINE)
        assert row, f"docs/health.md has no table row for {item.name}"
        bound = "max" if item.max is not None else "min"
        assert f"{bound} {health.format_value(getattr(item, bound))}" in row.group(0)
        assert item.severity in row.group(0)


def test_healthy_host_passes_every_builtin(facts):
    results = health.evaluate(health.build_rules(), facts)
    assert [result["name"] for result in results] == BUILTIN_NAMES
    assert all(result["status"] == "ok" for result in results), [r["message"] for r in results if not r["ok"]]
    summary = health.summarize(results, "critical")
    assert summary["healthy"] and summary["counts"]["ok"] == 11
    assert summary["msg"] == "11 health results, none at or above critical"


def test_worst_element_is_reported_when_every_element_passes(facts):
    results = health.evaluate(health.build_rules(), facts)
    close_wait = by_name(results, "close_wait_per_port")
    assert close_wait == [{"name": "close_wait_per_port", "value": 1, "threshold": 100, "bound": "max",
                           "severity": "critical", "ok": True, "status": "ok", "subject": "port 8080",
                           "message": "ok: close_wait_per_port [port 8080]: 1 (max 100)"}]
    saturation = by_name(results, "accept_queue_saturation")[0]
    assert saturation["subject"] == "0.0.0.0:8080 1234/nginx"
    assert saturation["value"] == pytest.approx(2 / 511)


def test_close_wait_leak_fails_naming_the_port(facts):
    facts["tcp"]["local_ports"]["9000"] = {"total": 5001, "states": states(CLOSE_WAIT=5000, LISTEN=1)}
    facts["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = 101
    results = health.evaluate(health.build_rules(), facts)
    violations = by_name(results, "close_wait_per_port")
    assert [(r["subject"], r["value"], r["status"]) for r in violations] == [
        ("port 8080", 101, "critical"), ("port 9000", 5000, "critical")]
    summary = health.summarize(results, "critical")
    assert not summary["healthy"]
    assert summary["msg"].splitlines() == [
        "2 health rule violation(s) at or above critical:",
        "critical: close_wait_per_port [port 8080]: 101 > max 100",
        "critical: close_wait_per_port [port 9000]: 5000 > max 100",
    ]


def test_per_element_gives_every_element_with_the_same_verdicts(facts):
    """per_element (the event source's): one result per element, violating or not, each naming its element;
    the violations are those evaluate() gives, and a rule without each names none."""
    facts["tcp"]["local_ports"]["9000"] = {"total": 5001, "states": states(CLOSE_WAIT=5000, LISTEN=1)}
    rules = health.build_rules()
    data = health.plain(facts)
    every = health.evaluate(rules, data, per_element=True)
    close_wait = by_name(every, "close_wait_per_port")
    assert [(r["subject"], r["value"], r["status"]) for r in close_wait] == [
        ("port 22", 0, "ok"), ("port 8080", 1, "ok"), ("port 9000", 5000, "critical")]
    assert [(r["element"]["key"], r["element"]["value"]) for r in close_wait] == [
        (key, data["tcp"]["local_ports"][key]) for key in ("22", "8080", "9000")]
    assert all(r["element"]["collection"] == data["tcp"]["local_ports"] for r in close_wait)
    assert by_name(every, "syn_recv_total")[0]["element"] is None
    plain = health.evaluate(rules, data)
    assert "element" not in plain[0]
    assert [{key: value for key, value in r.items() if key != "element"} for r in every if not r["ok"]] == [
        r for r in plain if not r["ok"]]


def test_extra_rules_are_named_as_the_caller_calls_them():
    with pytest.raises(health.HealthRuleError) as raised:
        health.build_rules(None, [rule(name="syn_recv_total")], extra_source="rules")
    assert str(raised.value).startswith("rules[0]: rule 'syn_recv_total': field 'name': duplicate name")


def test_full_accept_queue_is_critical_naming_listener_and_process(facts):
    facts["listeners"].append(listener(8443, 129, 128, process="java", pid=4242, address="::"))
    results = health.evaluate(health.build_rules(), facts)
    full = by_name(results, "accept_queue_full")
    assert [(r["status"], r["subject"]) for r in full] == [("critical", ":::8443 4242/java")]
    assert full[0]["message"] == "critical: accept_queue_full [:::8443 4242/java]: 1.008 > max 1"
    assert [r["status"] for r in by_name(results, "accept_queue_saturation")] == ["warning"]


def test_queue_at_backlog_is_saturated_but_not_full(facts):
    # the kernel's queue is full only beyond the backlog (sk_acceptq_is_full: queue > backlog)
    facts["listeners"][1].update(queue=511, backlog=511)
    results = health.evaluate(health.build_rules(), facts)
    assert by_name(results, "accept_queue_full")[0]["status"] == "ok"
    assert by_name(results, "accept_queue_saturation")[0]["status"] == "warning"


def test_time_wait_flood_warns_naming_the_destination(facts):
    facts["tcp"]["ephemeral"]["busiest"].update(connections=9100, time_wait=9000, port=80, address="198.18.0.9")
    results = health.evaluate(health.build_rules(), facts)
    result = by_name(results, "time_wait_ephemeral_share")[0]
    assert (result["status"], result["subject"]) == ("warning", "198.18.0.9:80")
    assert result["value"] == pytest.approx(9000 / 28232)
    assert health.summarize(results, "critical")["healthy"]
    assert not health.summarize(results, "warning")["healthy"]


def test_no_outgoing_connection_gives_no_data(facts):
    facts["tcp"]["ephemeral"]["busiest"] = None
    result = by_name(health.evaluate(health.build_rules(), facts), "time_wait_ephemeral_share")[0]
    assert (result["status"], result["ok"], result["value"], result["subject"]) == ("no_data", True, None, None)


def test_rate_rules_read_sampled_rates_and_have_no_data_without_them(facts):
    facts["counters"]["rates"]["TcpExt"].update(ListenOverflows=12.5, TCPTimeWaitOverflow=3.0)
    results = health.evaluate(health.build_rules(), facts)
    assert [r["status"] for r in results if r["name"].endswith("_rate")] == ["warning", "ok", "warning"]
    del facts["counters"]["rates"], facts["counters"]["interval"]
    results = health.evaluate(health.build_rules(), facts)
    assert [r["status"] for r in results if r["name"].endswith("_rate")] == ["no_data"] * 3


def test_orphans_against_tcp_max_orphans(facts):
    facts["counters"]["sockstat"]["TCP_orphan"] = 40000
    assert by_name(health.evaluate(health.build_rules(), facts), "orphans_share")[0]["status"] == "warning"
    facts["counters"]["sysctl"]["tcp_max_orphans"] = None  # not visible inside a namespace
    assert by_name(health.evaluate(health.build_rules(), facts), "orphans_share")[0]["status"] == "no_data"


def test_syn_recv_total(facts):
    facts["tcp"]["states"]["SYN_RECV"] = 257
    assert by_name(health.evaluate(health.build_rules(), facts), "syn_recv_total")[0]["status"] == "warning"


# --- thresholds --------------------------------------------------------------------------------


def test_thresholds_override_builtins(facts):
    rules = health.build_rules(None, [], {
        "close_wait_per_port": 0,                          # number: replaces max
        "syn_recv_total": {"max": 0, "severity": "critical"},
        "orphans_share": {"enabled": False},
        "accept_queue_saturation": "0.001",
    })
    assert "orphans_share" not in [item.name for item in rules]
    results = health.evaluate(rules, facts)
    statuses = {r["name"]: (r["status"], r["threshold"]) for r in results if not r["ok"]}
    assert statuses == {"close_wait_per_port": ("critical", 0), "syn_recv_total": ("critical", 0),
                        "accept_queue_saturation": ("warning", 0.001)}


def test_number_override_replaces_min_of_a_min_only_rule(facts):
    rules = health.build_rules([rule(name="listeners", query="length(listeners)", max=None, min=1)], [],
                               {"listeners": 5})
    assert (rules[0].min, rules[0].max) == (5, None)
    result = health.evaluate(rules, facts)[0]
    assert result["message"] == "critical: listeners: 3 < min 5"
    assert (result["bound"], result["threshold"]) == ("min", 5)


def test_override_can_drop_a_bound():
    rules = health.build_rules([rule(max=10, min=1)], [], {"r": {"max": None}})
    assert (rules[0].max, rules[0].min) == (None, 1)


def test_overrides_do_not_change_the_original_rules():
    original = health.build_rules()
    health.apply_thresholds(original, {"syn_recv_total": 1})
    assert [item.max for item in original if item.name == "syn_recv_total"] == [256]


# --- evaluation edge cases ---------------------------------------------------------------------


def test_each_over_a_list_names_elements_by_label_or_index(facts):
    rules = health.validate_rules([
        rule(name="labelled", each="listeners[?protocol=='tcp']", label="process", query="queue", max=1),
        rule(name="indexed", each="listeners[?protocol=='tcp']", query="queue", max=1),
        rule(name="numeric_label", each="listeners", label="port", query="port", max=100),
    ])
    results = health.evaluate(rules, facts)
    assert [(r["name"], r["subject"]) for r in results] == [
        ("labelled", "nginx"), ("indexed", "#1"), ("numeric_label", "8080"), ("numeric_label", "5353")]


def test_each_over_nothing_is_ok(facts):
    facts["listeners"] = []
    result = by_name(health.evaluate(health.build_rules(), facts), "accept_queue_full")[0]
    assert (result["status"], result["value"], result["message"]) == (
        "ok", None, "ok: accept_queue_full: nothing to check (max 1)")


def test_min_rule_each_reports_the_lowest(facts):
    rules = health.validate_rules([rule(each="listeners[?protocol=='tcp']", label="process",
                                        query="backlog", max=None, min=100)])
    assert health.evaluate(rules, facts)[0]["subject"] == "sshd"


@pytest.mark.parametrize("fields, detail", [
    ({"query": "kernel"}, "query returned str '6.1.0', expected a number"),
    ({"query": "tcp.states"}, "query returned dict"),
    ({"query": "tcp.total > `3`"}, "query returned bool True, expected a number"),
    ({"each": "tcp.total"}, "each returned int, expected an object or a list"),
    ({"query": "div(kernel, `2`)"}, "invalid type for value: 6.1.0"),
    ({"label": "format('{:d}', @)"}, "format('{:d}')"),  # a template refused at validation: test_format_*
])
def test_unevaluable_rules_are_errors_that_always_fail(facts, fields, detail):
    results = health.evaluate(health.validate_rules([rule(severity="warning", **fields)]), facts)
    assert [r["status"] for r in results] == ["error"]
    assert detail in results[0]["message"]
    assert results[0]["message"].startswith("error: r")
    assert not health.summarize(results, "critical")["healthy"]


def test_functions():
    def value(expression, data=None):
        return health.evaluate(health.validate_rules([rule(query=expression)]), data or {})[0]["value"]

    assert value("div(`7`, `2`)") == 3.5
    assert value("div(`7`, `0`)") is None
    assert value("div(missing, `2`)") is None
    assert value("sub(`7`, `2`)") == 5
    assert value("add(`7`, `2`)") == 9
    assert value("mul(`7`, `2`)") == 14
    assert value("mul(missing, `2`)") is None
    labels = health.validate_rules([
        rule(name="a", label="format('{address}:{port} {pid}/{process}', @)"),
        rule(name="b", label="format('{}', missing)"),
        rule(name="c", label="format('port {}', tcp.total)"),
    ])
    results = health.evaluate(labels, {"address": "::1", "port": 80, "pid": None, "process": None,
                                       "tcp": {"total": 4.0}})
    assert [r["subject"] for r in results] == ["::1:80 -/-", None, "port 4"]


def test_tagged_subclasses_are_plain_for_jmespath(facts):
    class TaggedStr(str):
        pass

    class TaggedDict(dict):
        pass

    tagged = copy.deepcopy(facts)
    tagged["listeners"][1] = TaggedDict(tagged["listeners"][1], process=TaggedStr("nginx"), protocol=TaggedStr("tcp"))
    rules = health.validate_rules([rule(each="listeners[?protocol=='tcp']", label="format('{process}', @)",
                                        query="div(queue, backlog)", max=0.001)])
    results = health.evaluate(rules, tagged)
    assert [(r["subject"], r["status"]) for r in results] == [("nginx", "critical")]


def test_fail_on_warning_and_messages(facts):
    facts["tcp"]["states"]["SYN_RECV"] = 1000
    results = health.evaluate(health.build_rules(), facts)
    assert health.summarize(results, "critical")["msg"] == (
        "11 health results, none at or above critical (1 below it)")
    summary = health.summarize(results, "warning")
    assert summary["msg"].splitlines() == ["1 health rule violation(s) at or above warning:",
                                           "warning: syn_recv_total: 1000 > max 256"]
    assert [r["name"] for r in summary["violations"]] == ["syn_recv_total"]


@pytest.mark.parametrize("value, text", [(5000, "5000"), (1.0, "1"), (0.031914, "0.03191"), (123456.7, "123457"),
                                         (None, "None"), (True, "True")])
def test_format_value(value, text):
    assert health.format_value(value) == text


# ---------------------------------------------------------------- hostile rules: budget, format() templates, names

RULE_SECONDS = 0.5  # the documented default (test_budget_defaults_and_overrides)


# A message quotes at most a bounded picture of a value (escape.REPR_LIMIT) and a clipped problem.
MESSAGE_BOUND = 3000


FACTS = {"kernel": "6.1.0", "tcp": {"total": 3, "states": {"LISTEN": 1}},
         "listeners": [{"address": "0.0.0.0", "port": 8080 + index, "process": "nginx"} for index in range(5)]}


FINE = {"name": "fine", "query": "tcp.total", "max": 5}


# Grows about x4 per stage (doubled, then every quote and backslash escaped again): 12 stages make
# 39 MB and take ~0.7 s unbudgeted; 14 stages 626 MB.
TO_STRING_RUNAWAY = "@" + " | to_string([@, @])" * 12 + " | length(@)"


# Nested filters over a literal list: 30**4 filter steps, ~7 s unbudgeted, and nothing big is made.
_LIST = "`" + str(list(range(30))) + "`"


FILTER_RUNAWAY = f"length({_LIST}[?!({_LIST}[?!({_LIST}[?!({_LIST}[?@ == `-1`])])])])"


# Two lists sharing their elements 2**28 times over, compared element by element: ~3 s, little memory.
_CHAIN = "@" + " | [@, @]" * 28


EQUALITY_RUNAWAY = f"[({_CHAIN}), ({_CHAIN})] | [0] == [1] | to_number(to_string(length(@)))"


def timed(rules, facts=None, budget=None):
    """Results and the CPU seconds they took (the budget's measure: a loaded machine that keeps this
    thread waiting does not make a rule look slow); the wall-clock seconds are in the failure messages."""
    facts = FACTS if facts is None else facts
    start, wall = time.thread_time(), time.monotonic()
    results = health.evaluate(rules, facts) if budget is None else health.evaluate(rules, facts, budget)
    return results, Elapsed(time.thread_time() - start, time.monotonic() - wall)


class Elapsed(float):
    def __new__(cls, cpu, wall):
        value = super().__new__(cls, cpu)
        value.wall = wall
        return value

    def __format__(self, spec):
        return f"{float(self):{spec}} s of CPU time ({self.wall:{spec}} s wall clock)"


@pytest.mark.parametrize("query, budget_key", [
    (TO_STRING_RUNAWAY, "rule_size"),
    (FILTER_RUNAWAY, "rule_seconds"),
    (EQUALITY_RUNAWAY, "rule_size"),
], ids=["to_string", "filters", "equality"])
def test_a_runaway_rule_is_an_error_within_its_budget_and_the_others_still_run(query, budget_key):
    rules = health.validate_rules([{"name": "runaway", "query": query, "max": 1}, FINE])
    results, elapsed = timed(rules)
    statuses = [(result["name"], result["status"]) for result in results]
    assert elapsed < 3 * RULE_SECONDS, f"evaluation took {elapsed:.2f} (budget {RULE_SECONDS} s): {statuses}"
    assert statuses == [("runaway", "error"), ("fine", "ok")], f"after {elapsed:.2f}"
    message = results[0]["message"]
    assert message.startswith("error: runaway: evaluation stopped") and f"({budget_key})" in message, message
    assert len(message) < 300
    assert not health.summarize(results, "critical")["healthy"]


def test_the_host_budget_stops_the_rules_after_it_and_names_itself():
    slow = [{"name": f"slow{index}", "query": FILTER_RUNAWAY, "max": 1} for index in range(4)]
    rules = health.validate_rules(slow + [FINE])
    results, elapsed = timed(rules, budget={"rule_seconds": 0.4, "host_seconds": 1})
    assert elapsed < 3 * 1, f"evaluation took {elapsed:.2f} (host budget 1 s)"
    assert [result["status"] for result in results] == ["error"] * 5
    assert "(rule_seconds)" in results[0]["message"]
    assert "(host_seconds)" in results[-1]["message"] and results[-1]["message"].startswith("error: fine:")


def test_the_host_result_size_budget_is_shared_by_its_rules():
    # each rule makes a 440 000-character string: within rule_size, but two of them exceed host_size
    query = "length(to_string(`" + str([0] * 100) + "` | [@, @, @] | [@, @, @] | [@, @, @] | [@, @, @]" \
            " | [@, @, @] | [@, @, @] | [@, @, @] ))"
    rules = health.validate_rules([{"name": f"big{index}", "query": query, "max": 1} for index in range(3)])
    made = health.evaluate(rules[:1], FACTS)[0]["value"]
    assert 300_000 < made < 600_000, made
    results = health.evaluate(rules, FACTS, {"host_size": 800_000})
    assert [result["status"] for result in results] == ["critical", "error", "error"]
    assert "(host_size)" in results[1]["message"]


def test_the_built_in_rules_fit_the_default_budget_on_a_busy_host():
    """2000 listeners: ten times the default listeners_limit of connection_facts."""
    listeners = [{"protocol": "tcp", "family": "ipv4", "address": "10.0.0.1", "port": port, "backlog": 128,
                  "queue": 1, "saturation": 0.01, "pid": port, "process": f"p{port}", "user": "u", "stime": None,
                  "connections": 3} for port in range(1000, 3000)]
    facts = dict(FACTS, listeners=listeners)
    results = health.evaluate(health.build_rules(), facts)
    assert not [result["message"] for result in results if result["status"] == "error"]


@pytest.mark.parametrize("budget, field, problem", [
    ({"rule_seconds": 0}, "rule_seconds", "must be from 0.001 to 60, got 0"),
    ({"host_size": "lots"}, "host_size", "must be a number, got 'lots'"),
    ({"host_seconds": float("inf")}, "host_seconds", "must be a finite number"),
    ({"rule_sise": 1}, "rule_sise", "unknown key (allowed: rule_seconds, host_seconds, rule_size, host_size)"),
    ("fast", None, "must be a mapping of rule_seconds, host_seconds, rule_size, host_size, got 'fast'"),
])
def test_a_bad_budget_is_named(budget, field, problem):
    with pytest.raises(health.HealthRuleError) as raised:
        health.check_budget(budget)
    assert (raised.value.where, raised.value.field) == ("budget", field)
    assert problem in raised.value.problem


def test_budget_defaults_and_overrides():
    assert health.check_budget(None) == health.DEFAULT_BUDGET == {
        "rule_seconds": 0.5, "host_seconds": 5.0, "rule_size": 1_000_000, "host_size": 10_000_000}
    assert health.check_budget({"rule_seconds": "2", "rule_size": 5000})["rule_size"] == 5000


@pytest.mark.parametrize("template, problem", [
    ("{port.__class__.__mro__}", "field '{port.__class__.__mro__}': only a plain name"),
    ("{port[0]}", "field '{port[0]}': only a plain name"),
    ("{:>999999999}", "field '{}': width 999999999 is above 1000"),
    ("{port:.5000}", "field '{port}': precision 5000 is above 1000"),
    ("{port:{address}}", "field '{port}': format spec '{address}' (no nested fields"),
    ("{port!a}", "conversion !a"),
    ("{", "Single '{' encountered"),
])
def test_format_templates_are_checked_when_rules_are_validated(template, problem):
    with pytest.raises(health.HealthRuleError) as raised:
        health.validate_rules([{"name": "r", "query": "tcp.total", "max": 1, "each": "listeners",
                                "label": f"format('{template}', @)"}])
    error = raised.value
    assert (error.where, error.rule, error.field) == ("rules[0]", "r", "label")
    assert problem in error.problem, error.problem


def test_format_template_must_be_literal():
    with pytest.raises(health.HealthRuleError) as raised:
        health.validate_rules([{"name": "r", "query": "tcp.total", "max": 1, "label": "format(kernel, @)"}])
    assert (raised.value.rule, raised.value.field) == ("r", "label")
    assert "format() takes a literal template" in raised.value.problem


@pytest.mark.parametrize("template, problem", [
    ("{port.__class__.__mro__}", "only a plain name"),
    ("{port:>99999999}", "width 99999999 is above 1000"),
])
def test_format_templates_are_checked_again_when_rules_run(template, problem):
    """A Rule built without validate_rules (as a caller of the engine could) is still refused at run time."""
    compiled = {"query": jmespath.compile("port"), "label": jmespath.compile(f"format('{template}', @)"),
                "each": jmespath.compile("listeners")}
    unchecked = health.Rule(name="r", query="port", severity="critical", max=1, compiled=compiled)
    results, elapsed = timed([unchecked])
    assert [(result["status"], result["subject"]) for result in results] == [("error", None)], results[0]["message"]
    assert problem in results[0]["message"]
    assert elapsed < 1


def test_format_still_labels_subjects():
    rules = health.validate_rules([{"name": "r", "query": "port", "max": 1, "each": "listeners",
                                    "label": "format('{address:>9}:{port!s:<5}|{process!r}', @)"}])
    assert health.evaluate(rules, FACTS)[0]["subject"] == "  0.0.0.0:8080 |'nginx'"


@pytest.mark.parametrize("name", ["r\n", "r\nx", "r ", "-r", "r" * 129, "r\u00e9"])
def test_rule_names_are_matched_whole(name):
    with pytest.raises(health.HealthRuleError) as raised:
        health.validate_rules([{"name": name, "query": "tcp.total", "max": 1}])
    assert (raised.value.rule, raised.value.field) == (None, "name")
    assert "\n" not in str(raised.value)


def billion_laughs(levels):
    """A YAML rules file whose value is nested aliases: a few hundred bytes, ``9 ** levels`` strings loaded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines.append(f"value: *a{levels - 1}")
    return yaml.safe_load("\n".join(lines))["value"]


@pytest.mark.parametrize("place", ["max", "description", "severity", "query", "rule", "rules", "threshold",
                                   "threshold_name", "unknown_field"])
def test_error_messages_are_bounded_whatever_the_value(place):
    huge = billion_laughs(6)  # 531441 strings: its repr is 3.7 MB
    rules, thresholds = [dict(FINE)], None
    if place in ("max", "description", "severity", "query"):
        rules[0][place] = huge
    elif place == "rule":
        rules = [huge]
    elif place == "rules":
        rules = {"x": huge}
    elif place == "threshold":
        thresholds = {"fine": huge}
    elif place == "threshold_name":
        thresholds = {"x" * 5_000_000: 1}
    else:
        rules[0]["y" * 5_000_000] = 1
    with pytest.raises(health.HealthRuleError) as raised:
        health.build_rules(rules, [], thresholds)
    assert len(str(raised.value)) < MESSAGE_BOUND, f"{len(str(raised.value))} characters"


def test_a_query_result_that_is_not_a_number_is_shown_bounded():
    rules = health.validate_rules([{"name": "r", "query": "@ | [@, @] | [@, @] | [@, @] | [@, @]", "max": 1}])
    result = health.evaluate(rules, {"x": "y" * 100_000})[0]
    assert result["status"] == "error" and len(result["message"]) < 400 and len(result["value"]) < 400


NAMES = st.one_of(st.sampled_from(["r", "rule.a-1", "r\n", "", "-x", "r" * 200]),
                  st.text(max_size=12))


PIECES = ["@", "tcp.total", "kernel", "listeners", "listeners[*].port", "[@, @]", "{a: @, b: @}", "to_string(@)",
          "length(@)", "sort(@)", "keys(@)", "join(',', keys(@))", "listeners[?port > `8081`]", "@ == @",
          "to_number(@)", "format('{}', @)", "format('{port}', @)", "format('{port.__class__}', @)",
          "format('{:>999999999}', @)", "format('{:{x}}', @)", "div(tcp.total, `0`)", "unknown(@)", "[", "`1`"]


@st.composite
def expressions(draw):
    stages = draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=25))
    if draw(st.booleans()):
        return " | ".join(stages)
    text = "@"
    for piece in stages:  # nested: to_string(to_string([...]))
        text = piece.replace("@", f"({text})", 1) if "@" in piece else piece
    return text


TEMPLATES = st.builds(lambda text, spec: "{" + text + spec + "}", st.sampled_from(["", "port", "a.b", "x[0]", "0"]),
                      st.sampled_from(["", ":>5", ":>999999", ":.3", ":.9999", "!r", "!a", ":{w}"]))


THRESHOLDS = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.booleans(),
                       st.lists(st.integers(), max_size=3))


@st.composite
def rule_definitions(draw):
    definition = {"name": draw(NAMES), "query": draw(expressions()), "max": draw(THRESHOLDS)}
    if draw(st.booleans()):
        definition["min"] = draw(THRESHOLDS)
    if draw(st.booleans()):
        definition["each"] = draw(st.sampled_from(["listeners", "tcp", "kernel", "[@, @, @]"]))
    if draw(st.booleans()):
        definition["label"] = f"format('{draw(TEMPLATES)}', @)"
    if draw(st.booleans()):
        definition["severity"] = draw(st.sampled_from(["warning", "critical", "fatal", None]))
    return definition


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_definitions())
def test_any_rule_is_refused_with_its_name_and_field_or_evaluated_within_budget(definition):
    budget = {"rule_seconds": 0.1, "host_seconds": 1}
    try:
        rules = health.validate_rules([definition])
    except health.HealthRuleError as error:
        assert len(str(error)) < MESSAGE_BOUND
        assert error.where == "rules[0]"
        if error.field != "name":
            assert error.rule == definition["name"] and error.field in health.RULE_FIELDS, str(error)
        return
    results, elapsed = timed(rules, FACTS, budget)
    assert elapsed < 3 * budget["rule_seconds"], f"{elapsed:.2f} for {definition}"
    for result in results:
        assert result["status"] in health.STATUSES and result["name"] == definition["name"]
        assert len(result["message"]) < MESSAGE_BOUND


def containers(children):
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8), containers,
                    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_to_string_is_measured_exactly_before_it_is_built(value):
    """The size to_string() is refused at is the length json.dumps would give."""
    import json

    meter = health.HostBudget().meter()
    assert health._json_length(value, meter, {}) == len(json.dumps(value, separators=(",", ":"), default=str))


@pytest.mark.parametrize("query", ["div(big, `1`)", "length(to_string(big))"])
def test_a_python_error_inside_a_rule_is_that_rule_s_error(query):
    """An integer too large for a float or for str() (a host's facts are JSON: any size) fails one rule only."""
    rules = health.validate_rules([{"name": "r", "query": query, "max": 1}, FINE])
    results = health.evaluate(rules, dict(FACTS, big=10 ** 5000))
    assert [(result["name"], result["status"]) for result in results] == [("r", "error"), ("fine", "ok")]
    assert results[0]["message"].startswith("error: r: evaluation failed: ")


def test_every_builtin_rule_declares_its_remediation():
    rules = {rule.name: rule for rule in health.load_builtin_rules()}
    assert all(rule.remediation and rule.remediation["doc"] for rule in rules.values())
    assert rules["close_wait_per_port"].remediation["kind"] == "restart_unit"
    assert rules["syn_recv_total"].remediation["settings"] == {"net.ipv4.tcp_syncookies": 1}
    assert rules["time_wait_ephemeral_share"].remediation["profile"] == "client_heavy"
    assert {rule.remediation["kind"] for name, rule in rules.items() if name.startswith("accept_queue")} == {"plan"}
    # a threshold override keeps the remediation
    changed = health.apply_thresholds(list(rules.values()), {"close_wait_per_port": 5})
    assert changed[1].remediation == rules["close_wait_per_port"].remediation


def test_the_tuning_profile_a_remediation_names_exists():
    with open(os.path.join(os.path.dirname(health.BUILTIN_RULES_PATH), "..", "..", "roles", "tuning", "vars",
                           "main.yml"), encoding="utf-8") as handle:
        profiles = yaml.safe_load(handle)["__netstate_tuning_profiles"]
    named = [rule.remediation["profile"] for rule in health.load_builtin_rules()
             if rule.remediation["kind"] == "tuning_profile"]
    assert named and set(named) <= set(profiles) - {"none"}


@pytest.mark.parametrize("remediation, field, problem", [
    ("restart", "remediation", "must be a mapping"),
    ({"kind": "reboot", "doc": "x"}, "remediation.kind", "must be one of restart_unit, sysctl, tuning_profile, plan"),
    ({"kind": "plan"}, "remediation.doc", "is required for kind plan"),
    ({"kind": "plan", "doc": " "}, "remediation.doc", "must be a non-empty string"),
    ({"kind": "plan", "doc": "x", "profile": "client_heavy"}, "remediation.profile", "not a field of kind plan"),
    ({"kind": "restart_unit", "doc": "x"}, "remediation.kind", "restart_unit needs a rule whose each is one of"),
    ({"kind": "sysctl", "doc": "x", "settings": {}}, "remediation.settings", "non-empty mapping"),
    ({"kind": "sysctl", "doc": "x", "settings": {"kernel.panic": 1}}, "remediation.settings", "must match"),
    ({"kind": "sysctl", "doc": "x", "settings": {"net.ipv4.tcp_syncookies": "1; reboot"}}, "remediation.settings",
     "must be an integer"),
    ({"kind": "tuning_profile", "doc": "x", "profile": "../x"}, "remediation.profile", "must match"),
])
def test_a_bad_remediation_names_rule_and_field(remediation, field, problem):
    rule = {"name": "mine", "query": "tcp.total", "max": 1, "remediation": remediation}
    with pytest.raises(health.HealthRuleError) as raised:
        health.validate_rules([rule])
    assert raised.value.rule == "mine" and raised.value.field == field
    assert problem in str(raised.value)
