# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rule engine behind netstate.tcp.health_check (private: not a public API of the collection).

Plain Python on the controller, no ``ansible`` import, so it is tested and reused without Ansible.
A rule is data: ``{name, query, max and/or min, severity, description, each, label}`` where the
JMESPath ``query`` runs over ``ansible_facts.netstate`` (docs/facts-contract.md). Rules are
validated completely (names, fields, JMESPath syntax, functions and their arity, thresholds)
before any host is contacted; every problem is a :class:`HealthRuleError` naming the rule and
the field. JMESPath has no arithmetic, so the engine registers ``div``, ``sub``, ``add``, ``mul``
(null in, null out; ``div`` by zero is null) and ``format`` for subject labels.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.netstate.tcp.plugins.module_utils import _escape as escape

try:
    import jmespath
    from jmespath import exceptions as jmespath_exceptions
    from jmespath import functions as jmespath_functions
except ImportError:  # the action plugins say so in one line; the engine needs it for everything else
    jmespath = None

SEVERITIES = ("warning", "critical")  # ascending
STATUSES = ("ok", "no_data", "warning", "critical", "error")
RULE_FIELDS = ("name", "description", "query", "each", "label", "max", "min", "severity")
THRESHOLD_FIELDS = ("max", "min", "severity", "enabled")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
BUILTIN_RULES_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "health_builtin_rules.yml")


class HealthRuleError(ValueError):
    """A rule, a threshold override or a fail_on value is invalid; names where and what."""

    def __init__(self, where: str, problem: str, rule: str | None = None, field_name: str | None = None):
        self.where = where
        self.rule = rule
        self.field = field_name
        self.problem = problem
        parts = [where]
        if rule is not None:
            parts.append(f"rule '{rule}'")
        if field_name is not None:
            parts.append(f"field '{field_name}'")
        super().__init__(": ".join(parts + [problem]))


def _nullable_number(*values: Any) -> bool:
    return any(value is None for value in values)


class _LabelFields(dict):
    def __getitem__(self, key):
        return _label_text(dict.get(self, key))

    def __missing__(self, key):  # pragma: no cover - __getitem__ above never misses
        return "-"


def _label_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


if jmespath is not None:
    class HealthFunctions(jmespath_functions.Functions):
        """JMESPath functions for health rules: arithmetic that propagates null, and labels."""

        @jmespath_functions.signature({"types": ["number", "null"]}, {"types": ["number", "null"]})
        def _func_div(self, dividend, divisor):
            if _nullable_number(dividend, divisor) or divisor == 0:
                return None
            return dividend / divisor

        @jmespath_functions.signature({"types": ["number", "null"]}, {"types": ["number", "null"]})
        def _func_sub(self, minuend, subtrahend):
            return None if _nullable_number(minuend, subtrahend) else minuend - subtrahend

        @jmespath_functions.signature({"types": ["number", "null"]}, {"types": ["number", "null"]})
        def _func_add(self, left, right):
            return None if _nullable_number(left, right) else left + right

        @jmespath_functions.signature({"types": ["number", "null"]}, {"types": ["number", "null"]})
        def _func_mul(self, left, right):
            return None if _nullable_number(left, right) else left * right

        @jmespath_functions.signature({"types": ["string"]}, {"types": []})
        def _func_format(self, template, value):
            """format('{address}:{port}', obj) or format('port {}', scalar); null value gives null."""
            if value is None:
                return None
            try:
                if isinstance(value, dict):
                    return template.format_map(_LabelFields(value))
                return template.format(_label_text(value))
            except (IndexError, KeyError, ValueError) as exc:
                raise jmespath_exceptions.JMESPathError(f"format({template!r}): {exc}") from None

    _FUNCTIONS = HealthFunctions()
    _OPTIONS = jmespath.Options(custom_functions=_FUNCTIONS)
else:  # pragma: no cover - jmespath is a controller requirement
    HealthFunctions = None
    _OPTIONS = None


@dataclass(frozen=True)
class Rule:
    """One validated rule; ``compiled`` holds the parsed JMESPath expressions."""

    name: str
    query: str
    severity: str
    max: float | None = None
    min: float | None = None
    description: str = ""
    each: str | None = None
    label: str | None = None
    compiled: dict = field(default_factory=dict, compare=False, repr=False)

    def as_dict(self) -> dict:
        data = {"name": self.name, "description": self.description, "query": self.query,
                "severity": self.severity}
        for key in ("each", "label", "max", "min"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data

    @property
    def uses_rates(self) -> bool:
        """True when an expression reads counters.rates (facts must be sampled)."""
        return any(_mentions_field(expr.parsed, "rates") for expr in self.compiled.values())


def _mentions_field(node: Any, name: str) -> bool:
    if isinstance(node, dict):
        if node.get("type") == "field" and node.get("value") == name:
            return True
        return any(_mentions_field(child, name) for child in node.get("children", ()))
    if isinstance(node, list):
        return any(_mentions_field(child, name) for child in node)
    return False


def _function_problems(node: Any) -> str | None:
    """Unknown functions and wrong arity are found when validating, not on the first host."""
    if isinstance(node, list):
        for child in node:
            problem = _function_problems(child)
            if problem:
                return problem
        return None
    if not isinstance(node, dict):
        return None
    children = node.get("children", [])
    if node.get("type") == "function_expression":
        name = node.get("value")
        spec = HealthFunctions.FUNCTION_TABLE.get(name)
        if spec is None:
            known = ", ".join(sorted(HealthFunctions.FUNCTION_TABLE))
            return f"unknown function {name}() (known: {known})"
        signature = spec["signature"]
        variadic = bool(signature) and signature[-1].get("variadic")
        if (variadic and len(children) < len(signature)) or (not variadic and len(children) != len(signature)):
            wanted = f"at least {len(signature)}" if variadic else str(len(signature))
            return f"function {name}() takes {wanted} argument(s), got {len(children)}"
    return _function_problems(children)


def _compile(raw: Mapping, key: str, where: str, name: str, required: bool) -> Any:
    text = raw.get(key)
    if text is None:
        if required:
            raise HealthRuleError(where, "is required (a JMESPath expression)", name, key)
        return None
    if not isinstance(text, str) or not text.strip():
        raise HealthRuleError(where, f"must be a non-empty JMESPath string, got {text!r}", name, key)
    try:
        compiled = jmespath.compile(text)
    except jmespath_exceptions.JMESPathError as exc:
        detail = " ".join(str(exc).split())
        raise HealthRuleError(where, f"invalid JMESPath {text!r}: {detail}", name, key) from None
    problem = _function_problems(compiled.parsed)
    if problem:
        raise HealthRuleError(where, f"{problem} in {text!r}", name, key)
    return compiled


def _number(value: Any, where: str, name: str, key: str) -> float | None:
    """Thresholds are numbers; numeric strings (e.g. from -e key=value) are accepted."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise HealthRuleError(where, f"must be a number, got {value!r}", name, key)
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise HealthRuleError(where, f"must be a number, got {value!r}", name, key) from None
        if number.is_integer() and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            number = int(number)
    else:
        raise HealthRuleError(where, f"must be a number, got {type(value).__name__} {value!r}", name, key)
    if isinstance(number, float) and not math.isfinite(number):
        raise HealthRuleError(where, f"must be a finite number, got {value!r}", name, key)
    return number


def _severity(value: Any, where: str, name: str) -> str:
    if value not in SEVERITIES:
        raise HealthRuleError(where, f"must be one of {', '.join(SEVERITIES)}, got {value!r}", name, "severity")
    return str(value)


def _check_bounds(maximum, minimum, where: str, name: str) -> None:
    if maximum is None and minimum is None:
        raise HealthRuleError(where, "a rule needs max and/or min", name, "max")
    if maximum is not None and minimum is not None and minimum > maximum:
        raise HealthRuleError(where, f"{minimum} is above max {maximum}", name, "min")


def validate_rule(raw: Any, where: str) -> Rule:
    """Validate one rule mapping; ``where`` locates it (``rules[2]``) in error messages."""
    if not isinstance(raw, Mapping):
        raise HealthRuleError(where, f"must be a mapping, got {type(raw).__name__} {raw!r}")
    name = raw.get("name")
    if name is None:
        raise HealthRuleError(where, "is required", None, "name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise HealthRuleError(where, f"must match {NAME_PATTERN.pattern}, got {name!r}", None, "name")
    name = str(name)
    unknown = sorted(str(key) for key in raw if key not in RULE_FIELDS)
    if unknown:
        raise HealthRuleError(where, f"unknown field (allowed: {', '.join(RULE_FIELDS)})", name, unknown[0])
    compiled = {"query": _compile(raw, "query", where, name, required=True)}
    for key in ("each", "label"):
        expression = _compile(raw, key, where, name, required=False)
        if expression is not None:
            compiled[key] = expression
    maximum = _number(raw.get("max"), where, name, "max")
    minimum = _number(raw.get("min"), where, name, "min")
    _check_bounds(maximum, minimum, where, name)
    description = raw.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise HealthRuleError(where, f"must be a string, got {description!r}", name, "description")
    return Rule(
        name=name,
        query=str(raw["query"]),
        severity=_severity(raw.get("severity", "critical"), where, name),
        max=maximum,
        min=minimum,
        description=" ".join(description.split()),
        each=None if raw.get("each") is None else str(raw["each"]),
        label=None if raw.get("label") is None else str(raw["label"]),
        compiled=compiled,
    )


def validate_rules(rules: Any, source: str = "rules") -> list[Rule]:
    """Validate a list of rule mappings; duplicate names are an error."""
    if jmespath is None:
        raise HealthRuleError(source, "health rules need the jmespath Python library on the controller "
                                      "(pip install jmespath)")
    if rules is None:
        return []
    if not isinstance(rules, (list, tuple)):
        raise HealthRuleError(source, f"must be a list of rules, got {type(rules).__name__} {rules!r}")
    validated: list[Rule] = []
    for index, raw in enumerate(rules):
        validated.append(validate_rule(raw, f"{source}[{index}]"))
    _reject_duplicates(validated, [f"{source}[{index}]" for index in range(len(validated))])
    return validated


def _reject_duplicates(rules: list[Rule], places: list[str]) -> None:
    first: dict[str, str] = {}
    for rule, place in zip(rules, places):
        if rule.name in first:
            raise HealthRuleError(place, f"duplicate name, already used by {first[rule.name]}", rule.name, "name")
        first[rule.name] = place


def load_builtin_rules(path: str = BUILTIN_RULES_PATH) -> list[Rule]:
    """The documented built-in rules (health_builtin_rules.yml next to this file)."""
    import yaml  # controller dependency of ansible-core; imported late so the engine imports without it

    with open(path, encoding="utf-8") as handle:
        return validate_rules(yaml.safe_load(handle), source=os.path.basename(path))


def apply_thresholds(rules: list[Rule], thresholds: Any, source: str = "thresholds") -> list[Rule]:
    """Override thresholds by rule name: a number replaces max (min when the rule only has min);
    a mapping sets any of max, min (null removes a bound), severity, enabled (false drops the rule)."""
    if thresholds is None:
        return list(rules)
    if not isinstance(thresholds, Mapping):
        raise HealthRuleError(source, f"must be a mapping of rule name to threshold, got {thresholds!r}")
    by_name = {rule.name: rule for rule in rules}
    disabled: set[str] = set()
    for name, override in thresholds.items():
        rule = by_name.get(name)
        if rule is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise HealthRuleError(source, f"no such rule (known: {known})", str(name))
        changes: dict[str, Any] = {}
        if isinstance(override, Mapping):
            unknown = sorted(str(key) for key in override if key not in THRESHOLD_FIELDS)
            if unknown:
                raise HealthRuleError(source, f"unknown field (allowed: {', '.join(THRESHOLD_FIELDS)})",
                                      rule.name, unknown[0])
            for key in ("max", "min"):
                if key in override:
                    changes[key] = _number(override[key], source, rule.name, key)
            if "severity" in override:
                changes["severity"] = _severity(override["severity"], source, rule.name)
            enabled = override.get("enabled", True)
            if not isinstance(enabled, bool):
                raise HealthRuleError(source, f"must be true or false, got {enabled!r}", rule.name, "enabled")
            if not enabled:
                disabled.add(rule.name)
        else:
            key = "max" if rule.max is not None else "min"
            if override is None:
                raise HealthRuleError(source, "must be a number or a mapping of max, min, severity, enabled",
                                      rule.name, key)
            changes[key] = _number(override, source, rule.name, key)
        merged = {"max": rule.max, "min": rule.min, "severity": rule.severity}
        merged.update(changes)
        _check_bounds(merged["max"], merged["min"], source, rule.name)
        by_name[rule.name] = Rule(name=rule.name, query=rule.query, description=rule.description,
                                  each=rule.each, label=rule.label, compiled=rule.compiled, **merged)
    return [by_name[rule.name] for rule in rules if rule.name not in disabled]


def build_rules(rules: Any = None, extra_rules: Any = None, thresholds: Any = None,
                threshold_source: str = "thresholds") -> list[Rule]:
    """The effective rule list: ``rules`` (built-ins when None) + ``extra_rules``, then overrides."""
    base = load_builtin_rules() if rules is None else validate_rules(rules, "rules")
    extra = validate_rules(extra_rules, "extra_rules")
    base_places = ["built-in rules" if rules is None else f"rules[{index}]" for index in range(len(base))]
    _reject_duplicates(base + extra, base_places + [f"extra_rules[{index}]" for index in range(len(extra))])
    return apply_thresholds(base + extra, thresholds, threshold_source)


def check_fail_on(value: Any) -> str:
    if value not in SEVERITIES:
        raise HealthRuleError("fail_on", f"must be one of {', '.join(SEVERITIES)}, got {value!r}")
    return str(value)


def needs_rates(rules: list[Rule]) -> bool:
    return any(rule.uses_rates for rule in rules)


# --- evaluation ------------------------------------------------------------------------------

def plain(data: Any) -> Any:
    """Plain JSON types: JMESPath type-checks by exact type name, so str/dict subclasses
    (e.g. values tagged by the templating engine) are copied to their base types."""
    if isinstance(data, Mapping):
        return {str(key): plain(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain(value) for value in data]
    if data is None or isinstance(data, bool):
        return None if data is None else bool(data)
    if isinstance(data, int):
        return int(data)
    if isinstance(data, float):
        return float(data)
    if isinstance(data, str):
        return str(data)
    return data


def format_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _search(expression: Any, data: Any) -> Any:
    return expression.search(data, options=_OPTIONS)


def _result(rule: Rule, status: str, value: Any, subject: str | None, detail: str = "") -> dict:
    if rule.max is not None and (status not in SEVERITIES or value > rule.max):
        bound, threshold = "max", rule.max
    else:
        bound, threshold = "min", rule.min
    # The message is a log line: a subject a host chose (a process name) cannot break it.
    where = f" [{escape.log_line(subject)}]" if subject is not None else ""
    if status in SEVERITIES:
        sign = ">" if bound == "max" else "<"
        message = f"{status}: {rule.name}{where}: {format_value(value)} {sign} {bound} {format_value(threshold)}"
    elif status == "ok":
        limits = ", ".join(f"{key} {format_value(getattr(rule, key))}" for key in ("min", "max")
                           if getattr(rule, key) is not None)
        shown = format_value(value) if value is not None else detail
        message = f"ok: {rule.name}{where}: {shown} ({limits})"
    elif status == "no_data":
        message = f"no data: {rule.name}{where}: {detail}"
    else:
        message = f"error: {rule.name}{where}: {detail}"
    return {"name": rule.name, "value": value, "threshold": threshold, "bound": bound,
            "severity": rule.severity, "ok": status in ("ok", "no_data"), "status": status,
            "subject": subject, "message": message}


def _judge(rule: Rule, value: Any, subject: str | None) -> dict:
    if value is None:
        return _result(rule, "no_data", None, subject, "query returned null (fact missing or not sampled)")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _result(rule, "error", value, subject,
                       f"query returned {type(value).__name__} {value!r}, expected a number")
    if (rule.max is not None and value > rule.max) or (rule.min is not None and value < rule.min):
        return _result(rule, rule.severity, value, subject)
    return _result(rule, "ok", value, subject)


def _subject(rule: Rule, target: Any, default: str | None) -> str | None:
    label = rule.compiled.get("label")
    if label is None:
        return default
    text = _search(label, target)
    if text is None:
        return default
    return text if isinstance(text, str) else format_value(text) if isinstance(text, (int, float)) else str(text)


def _sort_key(key: str):
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def evaluate_rule(rule: Rule, facts: Any) -> list[dict]:
    """Results of one rule: one result, or for ``each`` rules one per violating element
    (or one for the worst element when none violates)."""
    try:
        if "each" not in rule.compiled:
            return [_judge(rule, _search(rule.compiled["query"], facts), _subject(rule, facts, None))]
        collection = _search(rule.compiled["each"], facts)
        if collection is None:
            return [_result(rule, "no_data", None, None, "each returned null (fact missing)")]
        if isinstance(collection, dict):
            # objects: the key names the element; label is evaluated on the key
            elements = [(element, _subject(rule, key, key))
                        for key, element in sorted(collection.items(), key=lambda item: _sort_key(item[0]))]
        elif isinstance(collection, list):
            elements = [(element, _subject(rule, element, f"#{index}")) for index, element in enumerate(collection)]
        else:
            return [_result(rule, "error", None, None,
                            f"each returned {type(collection).__name__}, expected an object or a list")]
        if not elements:
            return [_result(rule, "ok", None, None, "nothing to check")]
        judged = [_judge(rule, _search(rule.compiled["query"], element), subject) for element, subject in elements]
    except jmespath_exceptions.JMESPathError as exc:
        return [_result(rule, "error", None, None, " ".join(str(exc).split()))]
    bad = [result for result in judged if result["status"] in SEVERITIES + ("error",)]
    if bad:
        return bad
    measured = [result for result in judged if result["status"] == "ok"]
    if not measured:
        return judged[:1]
    pick = max if rule.max is not None else min
    return [pick(measured, key=lambda result: result["value"])]


def evaluate(rules: list[Rule], facts: Any) -> list[dict]:
    """Every rule's results, in rule order, against one host's ``ansible_facts.netstate``."""
    data = plain(facts)
    results: list[dict] = []
    for rule in rules:
        results.extend(evaluate_rule(rule, data))
    return results


def is_failing(result: Mapping, fail_on: str) -> bool:
    """Errors always fail; violations fail at or above ``fail_on``."""
    if result["status"] == "error":
        return True
    return result["status"] in SEVERITIES and SEVERITIES.index(result["severity"]) >= SEVERITIES.index(fail_on)


def summarize(results: list[dict], fail_on: str) -> dict:
    """Counts per status, the failing results and one message line per failing result."""
    counts = dict.fromkeys(STATUSES, 0)
    for result in results:
        counts[result["status"]] += 1
    failing = [result for result in results if is_failing(result, fail_on)]
    violations = [result for result in results if not result["ok"]]
    if failing:
        msg = "\n".join([f"{len(failing)} health rule violation(s) at or above {fail_on}:"]
                        + [result["message"] for result in failing])
    else:
        warnings = len(violations)
        msg = f"{len(results)} health results, none at or above {fail_on}" + (
            f" ({warnings} below it)" if warnings else "")
    return {"healthy": not failing, "counts": counts, "failing": failing, "violations": violations, "msg": msg}
