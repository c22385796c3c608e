# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health rule engine under hostile rules: the evaluation budget, format() templates, rule names
and the size of every message.

Real JMESPath and the real engine: the runaway queries really run (their cost before the budget is
in each test's failure message) and are stopped by the budgeted interpreter, not by a mock.
"""

from __future__ import annotations

import time

import jmespath
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

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


# ------------------------------------------------------------------------------- format()

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


# ------------------------------------------------------------------------------- names and messages

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


# ------------------------------------------------------------------------------- any rule at all

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
