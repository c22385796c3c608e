# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rule engine behind netstate.tcp.health_check (private: not a public API of the collection).

Plain Python on the controller, no ``ansible`` import, so it is tested and reused without Ansible.
A rule is data: ``{name, query, max and/or min, severity, description, each, label}`` where the
JMESPath ``query`` runs over ``ansible_facts.netstate`` (docs/facts-contract.md); the mappings
``doc``, ``prometheus`` and ``zabbix`` (DERIVED_FIELDS) are accepted and not evaluated. Rules are
validated completely (names, fields, JMESPath syntax, functions and their arity, thresholds)
before any host is contacted; every problem is a :class:`HealthRuleError` naming the rule and
the field. JMESPath has no arithmetic, so the engine registers ``div``, ``sub``, ``add``, ``mul``
(null in, null out; ``div`` by zero is null) and ``format`` for subject labels.

Evaluation is budgeted (docs/health.md "Evaluation budget"): a rule has ``rule_seconds`` and
``rule_size``, a host ``host_seconds`` and ``host_size``. JMESPath runs in pure Python here, so
the budget is enforced in-process by an interpreter that checks the (CPU) time as it walks and
counts what the query makes (strings of ``to_string``, ``join`` and ``format`` before they are
built, lists and objects by their expanded size, so ``[@, @]`` nested twenty times is a million,
not forty). A rule that runs out is an ``error`` result naming the rule and the budget; the next
rules still run. ``format`` templates are literal, with plain field names and bounded widths.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape

try:
    import jmespath
    from jmespath import exceptions as jmespath_exceptions
    from jmespath import functions as jmespath_functions
    from jmespath import visitor as jmespath_visitor
except ImportError:  # the action plugins say so in one line; the engine needs it for everything else
    jmespath = None

SEVERITIES = ("warning", "critical")  # ascending
STATUSES = ("ok", "no_data", "warning", "critical", "error")
#: Parts of a rule record for the files derived from it (scripts/generate_thresholds.py writes the alert
#: rules, the Zabbix template and the docs tables from the built-in rules' parts): mappings, not evaluated.
DERIVED_FIELDS = ("doc", "prometheus", "zabbix", "remediation")
RULE_FIELDS = ("name", "description", "query", "each", "label", "max", "min", "severity") + DERIVED_FIELDS
THRESHOLD_FIELDS = ("max", "min", "severity", "enabled")
# Applied with fullmatch: "$" would accept a trailing newline.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: What netstate.tcp.remediate does about a violation of a rule (its ``remediation`` part), and the fields
#: each kind takes beside ``kind`` and ``doc``: restart the systemd unit owning the port (the rule's ``each``
#: must give ports), set sysctl keys, apply a profile of the tuning role, or only write a plan entry.
REMEDIATION_KINDS = {"restart_unit": (), "sysctl": ("settings",), "tuning_profile": ("profile",), "plan": ()}
#: The ``each`` collections whose elements are ports (their port is where a unit is looked for).
PORT_COLLECTIONS = ("tcp.local_ports",)
SYSCTL_KEY_PATTERN = re.compile(r"net(?:\.[a-z0-9_]{1,64}){1,4}")
PROFILE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: The longest JMESPath expression a rule may hold (the built-in rules use under 200 characters).
EXPRESSION_LIMIT = 4096
#: The largest width or precision of a format() field ("{:>999999999}" would allocate a gigabyte).
FORMAT_WIDTH_LIMIT = 1000
# A format() field: a plain name ({address}), {} or {0}; no attribute or index access, no nesting.
FORMAT_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}|0?")
FORMAT_SPEC = re.compile(r"(?:[^{}]?[<>=^])?[-+ ]?#?0?(?P<width>[0-9]+)?[_,]?(?:\.(?P<precision>[0-9]+))?"
                         r"[bcdeEfFgGnosxX%]?")
#: The default evaluation budget; health_check's budget option and evaluate()'s budget change it.
DEFAULT_BUDGET = {"rule_seconds": 0.5, "host_seconds": 5.0, "rule_size": 1_000_000, "host_size": 10_000_000}
# The range of each budget key: at least enough for the built-in rules, at most what a controller survives.
BUDGET_RANGES = {"rule_seconds": (0.001, 60.0), "host_seconds": (0.001, 3600.0),
                 "rule_size": (1_000, 100_000_000), "host_size": (1_000, 1_000_000_000)}
#: The most characters of a subject (label) a result keeps.
SUBJECT_LIMIT = 200
#: The most characters of a HealthRuleError message.
MESSAGE_LIMIT = 2000
BUILTIN_RULES_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "health_builtin_rules.yml")


class HealthRuleError(ValueError):
    """A rule, a threshold override or a fail_on value is invalid; names where and what."""

    def __init__(self, where: str, problem: str, rule: str | None = None, field_name: str | None = None):
        # Each part may come from a rules file (a key, a name): bounded, one line.
        self.where = _clip(where)
        self.rule = None if rule is None else _clip(rule)
        self.field = None if field_name is None else _clip(field_name)
        self.problem = _clip(problem, MESSAGE_LIMIT)
        parts = [self.where]
        if rule is not None:
            parts.append(f"rule '{self.rule}'")
        if field_name is not None:
            parts.append(f"field '{self.field}'")
        super().__init__(": ".join(parts + [self.problem]))


def _clip(value: Any, limit: int = escape.REPR_LIMIT) -> str:
    """Text for a message: one line, at most ``limit`` characters (and a note of the length)."""
    shown = escape.log_line(value if isinstance(value, str) else str(value))
    return shown if len(shown) <= limit else f"{shown[:limit]}...({len(shown)} characters)"


def _shown(value: Any) -> str:
    return escape.bounded_repr(value)


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


class BudgetExceeded(Exception):
    """A rule ran out of its evaluation budget (or of what was left of its host's)."""


@functools.lru_cache(maxsize=256)
def _format_fields(template: str) -> tuple:
    """(field name, width) of each field of an accepted template; ValueError with the problem otherwise."""
    problem = format_template_problem(template)
    if problem:
        raise ValueError(problem)
    fields = []
    for _literal, field_name, spec, _conversion in string.Formatter().parse(template):
        if field_name is not None:
            fields.append((field_name, int(FORMAT_SPEC.fullmatch(spec or "").group("width") or 0)))
    return tuple(fields)


def format_template_problem(template: Any) -> str | None:
    """Why a format() template is refused, or None: plain field names ({address}, {}, {0}) only,
    no attribute or index access ({x.__class__}, {x[0]}), no nested fields, width and precision
    at most FORMAT_WIDTH_LIMIT. Checked when rules are validated and again at every call."""
    if not isinstance(template, str):
        return f"the template must be a string, got {type(template).__name__}"
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"template {_shown(template)}: {exc}"
    for _literal, field_name, spec, conversion in fields:
        if field_name is None:
            continue
        shown = _shown("{" + field_name + "}")
        if not FORMAT_FIELD.fullmatch(field_name):
            return f"field {shown}: only a plain name, {{}} or {{0}} (no attribute or index access)"
        if conversion not in (None, "s", "r"):
            return f"field {shown}: conversion !{_clip(conversion, 10)} (allowed: !s, !r)"
        match = FORMAT_SPEC.fullmatch(spec or "")
        if match is None:
            return f"field {shown}: format spec {_shown(spec)} (no nested fields; fill, align, width, precision, type)"
        for part in ("width", "precision"):
            if match.group(part) is not None and int(match.group(part)) > FORMAT_WIDTH_LIMIT:
                return f"field {shown}: {part} {_clip(match.group(part), 20)} is above {FORMAT_WIDTH_LIMIT}"
    return None


def _format_size(template: str, fields: tuple, values: list[str]) -> int:
    """The most characters format() can make of ``template`` (its ``fields``) and the field values."""
    longest = max(map(len, values), default=0)
    # !r may write a character as an escape (4 characters) and adds quotes
    return len(template) + sum(max(width, 4 * longest + 2) for _name, width in fields)


def check_budget(value: Any, source: str = "budget") -> dict:
    """The evaluation budget with defaults filled in; unknown keys and values out of range are errors."""
    if value is None:
        return dict(DEFAULT_BUDGET)
    if not isinstance(value, Mapping):
        raise HealthRuleError(source, f"must be a mapping of {', '.join(DEFAULT_BUDGET)}, got {_shown(value)}")
    unknown = sorted(str(key) for key in value if key not in DEFAULT_BUDGET)
    if unknown:
        raise HealthRuleError(source, f"unknown key (allowed: {', '.join(DEFAULT_BUDGET)})", None, unknown[0])
    budget = dict(DEFAULT_BUDGET)
    for key, given in value.items():
        if given is None:
            continue
        number = _number(given, source, None, key)
        low, high = BUDGET_RANGES[key]
        if not low <= number <= high:
            raise HealthRuleError(source, f"must be from {low:g} to {high:g}, got {_shown(given)}", None, key)
        budget[key] = float(number) if key.endswith("seconds") else int(number)
    return budget


def _json_length(value: Any, meter: Meter, lengths: dict) -> int:
    """The length of json.dumps(value, separators=(",", ":"), default=str), computed once per object."""
    if isinstance(value, str):
        return len(json.encoder.encode_basestring_ascii(value))
    if value is None or isinstance(value, bool):
        return 4 if value in (None, True) else 5
    if isinstance(value, (int, float)):
        return len(json.dumps(value))
    if not isinstance(value, (list, dict)):
        return len(json.encoder.encode_basestring_ascii(str(value)))
    known = lengths.get(id(value))
    if known is not None:
        return known
    meter.tick()
    if isinstance(value, dict):
        length = 1 + sum(_json_length(str(key), meter, lengths) + 1 + _json_length(item, meter, lengths) + 1
                         for key, item in value.items())
    else:
        length = 1 + sum(_json_length(item, meter, lengths) + 1 for item in value)
    length = max(length, 2)
    lengths[id(value)] = length
    return length


class HostBudget:
    """What one host's evaluation may spend; each rule gets a Meter within it.

    Seconds are CPU seconds of the evaluating thread (time.thread_time): a runaway query is work,
    and a busy controller (forks, other jobs) that keeps the thread waiting does not spend its budget."""

    def __init__(self, budget: Mapping | None = None, clock=time.thread_time):
        self.budget = check_budget(budget)
        self.clock = clock
        self.deadline = clock() + self.budget["host_seconds"]
        self.size_left = self.budget["host_size"]

    def meter(self) -> Meter:
        now = self.clock()
        rule_deadline = now + self.budget["rule_seconds"]
        if rule_deadline <= self.deadline:
            time_limit = (rule_deadline, f"the rule's time budget of {self.budget['rule_seconds']:g} s (rule_seconds)")
        else:
            time_limit = (self.deadline, f"the host's time budget of {self.budget['host_seconds']:g} s (host_seconds)")
        if self.budget["rule_size"] <= self.size_left:
            size_limit = (self.budget["rule_size"], f"the rule's result size budget of {self.budget['rule_size']} "
                                                    "(rule_size)")
        else:
            size_limit = (self.size_left, f"what is left of the host's result size budget of "
                                          f"{self.budget['host_size']} (host_size)")
        return Meter(self, time_limit, size_limit)


class Meter:
    """One rule's spending: visited nodes against a deadline, made values against a size."""

    def __init__(self, host: HostBudget, time_limit: tuple, size_limit: tuple):
        self.host = host
        self.clock = host.clock
        self.deadline, self.time_reason = time_limit
        self.size_limit, self.size_reason = size_limit
        self.used = 0
        self.countdown = self.TICKS
        self.interpreter = None
        self.sizes: dict[int, int] = {}  # id -> expanded size of a value this rule made
        self.kept: list = []  # the values of ``sizes`` stay alive, so their ids are not reused
        self.start = self.clock()

    TICKS = 32  # nodes between two reads of the clock (a node takes about a microsecond)

    def tick(self) -> None:
        self.countdown -= 1
        if self.countdown <= 0:
            self.check_clock()

    def check_clock(self) -> None:
        self.countdown = self.TICKS
        if self.clock() > self.deadline:
            raise BudgetExceeded(f"stopped after {self.clock() - self.start:.2f} s of CPU time: {self.time_reason} "
                                 "is spent")

    def room(self, size: int) -> None:
        """Refuse before making a value of ``size`` that would not fit."""
        if self.used + size > self.size_limit:
            raise BudgetExceeded(f"stopped: a value of {size} would exceed {self.size_reason} "
                                 f"({self.used} already used)")

    def made(self, value: Any) -> None:
        """Count a value a node made: strings by length, lists and objects by expanded size."""
        if isinstance(value, (list, dict)):
            size = self.sizes.get(id(value))
            if size is None:
                children = value.values() if isinstance(value, dict) else value
                sizes = self.sizes
                size = len(value) + sum(sizes.get(id(child), 0) for child in children)
                sizes[id(value)] = size
                self.kept.append(value)
        elif isinstance(value, str):
            size = len(value)
            if id(value) not in self.sizes:
                self.sizes[id(value)] = size
                self.kept.append(value)
        else:
            size = 1
        self.used += size
        if self.used > self.size_limit:
            raise BudgetExceeded(f"stopped: the values made exceed {self.size_reason}")

    def close(self) -> None:
        self.host.size_left -= min(self.used, self.size_limit)
        self.sizes.clear()
        self.kept.clear()
        self.interpreter = None


if jmespath is not None:
    class HealthFunctions(jmespath_functions.Functions):
        """JMESPath functions for health rules: arithmetic that propagates null, labels, and the
        string makers (to_string, join, format) bounded by the rule's Meter before they build."""

        def __init__(self, meter: Meter | None = None):
            super().__init__()
            self.meter = meter

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
                fields = _format_fields(template)
            except ValueError as exc:
                raise jmespath_exceptions.JMESPathError(f"format(): {exc}") from None
            if isinstance(value, dict):
                labels = _LabelFields(value)
                mapping = {name: labels[name] for name, _width in fields if name}
                texts = list(mapping.values())
            else:
                mapping = None
                texts = [_label_text(value)]
            if self.meter is not None:
                self.meter.room(_format_size(template, fields, texts))
            try:
                if mapping is not None:
                    return template.format_map(mapping)
                return template.format(_label_text(value))
            except (IndexError, KeyError, ValueError) as exc:
                raise jmespath_exceptions.JMESPathError(f"format({_shown(template)}): {_clip(exc)}") from None

        @jmespath_functions.signature({"types": []})
        def _func_to_string(self, arg):
            if isinstance(arg, str):
                return arg
            if self.meter is not None:
                # The length first, each distinct list or object once: [@, @] nested twenty times is
                # measured in twenty steps and refused, never encoded to its megabytes.
                self.meter.room(_json_length(arg, self.meter, {}))
            return json.dumps(arg, separators=(",", ":"), default=str)

        @jmespath_functions.signature({"types": ["string"]}, {"types": ["array-string"]})
        def _func_join(self, separator, array):
            if self.meter is not None:
                self.meter.room(sum(map(len, array)) + len(separator) * max(len(array) - 1, 0))
            return separator.join(array)

    class BudgetedInterpreter(jmespath_visitor.TreeInterpreter):
        """The JMESPath tree interpreter with a Meter: the deadline checked at every node, every value
        a node makes (not the facts it only reads) counted against the size budget."""

        MAKERS = frozenset(("multi_select_list", "multi_select_dict", "projection", "value_projection",
                            "filter_projection", "flatten", "function_expression", "slice"))

        def __init__(self, meter: Meter):
            super().__init__(jmespath.Options(custom_functions=HealthFunctions(meter)))
            self.meter = meter

        def visit(self, node, *args, **kwargs):
            meter = self.meter
            meter.countdown -= 1
            if meter.countdown <= 0:
                meter.check_clock()
            node_type = node["type"]
            method = self._method_cache.get(node_type)  # as jmespath's Visitor.visit, without a second call
            if method is None:
                method = self._method_cache[node_type] = getattr(self, f"visit_{node_type}", self.default_visit)
            value = method(node, *args, **kwargs)
            if node_type in self.MAKERS:
                meter.made(value)
            return value

    _FUNCTIONS = HealthFunctions()
    _OPTIONS = jmespath.Options(custom_functions=_FUNCTIONS)
else:  # pragma: no cover - jmespath is a controller requirement
    HealthFunctions = None
    BudgetedInterpreter = None
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
    remediation: dict | None = field(default=None, compare=False)
    compiled: dict = field(default_factory=dict, compare=False, repr=False)

    def as_dict(self) -> dict:
        data = {"name": self.name, "description": self.description, "query": self.query,
                "severity": self.severity}
        for key in ("each", "label", "max", "min", "remediation"):
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
        if name == "format" and children:
            template = children[0]
            if template.get("type") != "literal" or not isinstance(template.get("value"), str):
                return "format() takes a literal template as its first argument ('{address}:{port}')"
            problem = format_template_problem(template["value"])
            if problem:
                return f"format(): {problem}"
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
        raise HealthRuleError(where, f"must be a non-empty JMESPath string, got {_shown(text)}", name, key)
    if len(text) > EXPRESSION_LIMIT:
        raise HealthRuleError(where, f"is {len(text)} characters long, more than {EXPRESSION_LIMIT}: "
                                     f"{_shown(text)}", name, key)
    try:
        compiled = jmespath.compile(text)
        problem = _function_problems(compiled.parsed)
    except jmespath_exceptions.JMESPathError as exc:
        detail = _clip(" ".join(str(exc).split()), 400)
        raise HealthRuleError(where, f"invalid JMESPath {_shown(text)}: {detail}", name, key) from None
    except RecursionError:
        raise HealthRuleError(where, f"nested too deeply: {_shown(text)}", name, key) from None
    if problem:
        raise HealthRuleError(where, f"{problem} in {_shown(text)}", name, key)
    return compiled


def _number(value: Any, where: str, name: str, key: str) -> float | None:
    """Thresholds are numbers; numeric strings (e.g. from -e key=value) are accepted."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise HealthRuleError(where, f"must be a number, got {_shown(value)}", name, key)
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise HealthRuleError(where, f"must be a number, got {_shown(value)}", name, key) from None
        if number.is_integer() and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            number = int(number)
    else:
        raise HealthRuleError(where, f"must be a number, got {type(value).__name__} {_shown(value)}", name, key)
    if isinstance(number, float) and not math.isfinite(number):
        raise HealthRuleError(where, f"must be a finite number, got {_shown(value)}", name, key)
    return number


def _severity(value: Any, where: str, name: str) -> str:
    if value not in SEVERITIES:
        raise HealthRuleError(where, f"must be one of {', '.join(SEVERITIES)}, got {_shown(value)}", name,
                              "severity")
    return str(value)


def _check_bounds(maximum, minimum, where: str, name: str) -> None:
    if maximum is None and minimum is None:
        raise HealthRuleError(where, "a rule needs max and/or min", name, "max")
    if maximum is not None and minimum is not None and minimum > maximum:
        raise HealthRuleError(where, f"{minimum} is above max {maximum}", name, "min")


def validate_rule(raw: Any, where: str) -> Rule:
    """Validate one rule mapping; ``where`` locates it (``rules[2]``) in error messages."""
    if not isinstance(raw, Mapping):
        raise HealthRuleError(where, f"must be a mapping, got {type(raw).__name__} {_shown(raw)}")
    name = raw.get("name")
    if name is None:
        raise HealthRuleError(where, "is required", None, "name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise HealthRuleError(where, f"must match {NAME_PATTERN.pattern} (letters, digits, '_', '.', '-', at most 128, "
                                     f"nothing after), got {_shown(name)}", None, "name")
    name = str(name)
    unknown = sorted(str(key) for key in raw if key not in RULE_FIELDS)
    if unknown:
        raise HealthRuleError(where, f"unknown field (allowed: {', '.join(RULE_FIELDS)})", name, unknown[0])
    for key in DERIVED_FIELDS:
        if raw.get(key) is not None and not isinstance(raw[key], Mapping):
            raise HealthRuleError(where, f"must be a mapping, got {_shown(raw[key])}", name, key)
    remediation = check_remediation(raw.get("remediation"), where, name, raw.get("each"))
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
        raise HealthRuleError(where, f"must be a string, got {_shown(description)}", name, "description")
    return Rule(
        name=name,
        query=str(raw["query"]),
        severity=_severity(raw.get("severity", "critical"), where, name),
        max=maximum,
        min=minimum,
        description=" ".join(description.split()),
        each=None if raw.get("each") is None else str(raw["each"]),
        label=None if raw.get("label") is None else str(raw["label"]),
        remediation=remediation,
        compiled=compiled,
    )


def check_remediation(value: Any, where: str, name: str, each: Any = None) -> dict | None:
    """A rule's ``remediation`` part as a plain dict (None when the rule has none), or a HealthRuleError
    naming the rule and the field: a known kind, a non-empty ``doc``, and the fields of that kind only."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise HealthRuleError(where, f"must be a mapping, got {_shown(value)}", name, "remediation")
    kind = value.get("kind")
    if kind not in REMEDIATION_KINDS:
        raise HealthRuleError(where, f"must be one of {', '.join(REMEDIATION_KINDS)}, got {_shown(kind)}", name,
                              "remediation.kind")
    allowed = ("kind", "doc") + REMEDIATION_KINDS[kind]
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise HealthRuleError(where, f"not a field of kind {kind} (allowed: {', '.join(allowed)})", name,
                              f"remediation.{unknown[0]}")
    for key in allowed:
        if key not in value:
            raise HealthRuleError(where, f"is required for kind {kind}", name, f"remediation.{key}")
    if not isinstance(value["doc"], str) or not value["doc"].strip():
        raise HealthRuleError(where, f"must be a non-empty string, got {_shown(value['doc'])}", name,
                              "remediation.doc")
    checked = {"kind": kind, "doc": " ".join(value["doc"].split())}
    if kind == "restart_unit" and each not in PORT_COLLECTIONS:
        raise HealthRuleError(where, f"restart_unit needs a rule whose each is one of {', '.join(PORT_COLLECTIONS)} "
                                     f"(the port names the unit), got {_shown(each)}", name, "remediation.kind")
    if kind == "sysctl":
        settings = value["settings"]
        if not isinstance(settings, Mapping) or not settings:
            raise HealthRuleError(where, f"must be a non-empty mapping of key to value, got {_shown(settings)}",
                                  name, "remediation.settings")
        for key, setting in settings.items():
            if not isinstance(key, str) or not SYSCTL_KEY_PATTERN.fullmatch(key):
                raise HealthRuleError(where, f"key {_shown(key)} must match {SYSCTL_KEY_PATTERN.pattern}", name,
                                      "remediation.settings")
            if isinstance(setting, bool) or not isinstance(setting, int) or not 0 <= setting <= 2**31 - 1:
                raise HealthRuleError(where, f"value of {key} must be an integer from 0 to {2**31 - 1}, got "
                                             f"{_shown(setting)}", name, "remediation.settings")
        checked["settings"] = dict(settings)
    if kind == "tuning_profile":
        profile = value["profile"]
        if not isinstance(profile, str) or not PROFILE_PATTERN.fullmatch(profile):
            raise HealthRuleError(where, f"must match {PROFILE_PATTERN.pattern}, got {_shown(profile)}", name,
                                  "remediation.profile")
        checked["profile"] = profile
    return checked


def validate_rules(rules: Any, source: str = "rules") -> list[Rule]:
    """Validate a list of rule mappings; duplicate names are an error."""
    if jmespath is None:
        raise HealthRuleError(source, "health rules need the jmespath Python library on the controller "
                                      "(pip install jmespath)")
    if rules is None:
        return []
    if not isinstance(rules, (list, tuple)):
        raise HealthRuleError(source, f"must be a list of rules, got {type(rules).__name__} {_shown(rules)}")
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
        raise HealthRuleError(source, f"must be a mapping of rule name to threshold, got {_shown(thresholds)}")
    by_name = {rule.name: rule for rule in rules}
    disabled: set[str] = set()
    for name, override in thresholds.items():
        rule = by_name.get(name)
        if rule is None:
            known = _clip(", ".join(sorted(by_name)) or "none", 1000)
            raise HealthRuleError(source, f"no such rule (known: {known})",
                                  name if isinstance(name, str) else _shown(name))
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
                raise HealthRuleError(source, f"must be true or false, got {_shown(enabled)}", rule.name, "enabled")
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
                                  each=rule.each, label=rule.label, remediation=rule.remediation,
                                  compiled=rule.compiled, **merged)
    return [by_name[rule.name] for rule in rules if rule.name not in disabled]


def build_rules(rules: Any = None, extra_rules: Any = None, thresholds: Any = None,
                threshold_source: str = "thresholds", extra_source: str = "extra_rules") -> list[Rule]:
    """The effective rule list: ``rules`` (built-ins when None) + ``extra_rules``, then overrides.
    ``extra_source`` names ``extra_rules`` in messages (the event source calls its extra rules ``rules``)."""
    base = load_builtin_rules() if rules is None else validate_rules(rules, "rules")
    extra = validate_rules(extra_rules, extra_source)
    base_places = ["built-in rules" if rules is None else f"rules[{index}]" for index in range(len(base))]
    _reject_duplicates(base + extra, base_places + [f"{extra_source}[{index}]" for index in range(len(extra))])
    return apply_thresholds(base + extra, thresholds, threshold_source)


def check_fail_on(value: Any) -> str:
    if value not in SEVERITIES:
        raise HealthRuleError("fail_on", f"must be one of {', '.join(SEVERITIES)}, got {_shown(value)}")
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


def _search(expression: Any, data: Any, meter: Meter) -> Any:
    if meter.interpreter is None:
        meter.interpreter = BudgetedInterpreter(meter)
    return meter.interpreter.visit(expression.parsed, data)


def _result(rule: Rule, status: str, value: Any, subject: str | None, detail: str = "") -> dict:
    if rule.max is not None and (status not in SEVERITIES or value > rule.max):
        bound, threshold = "max", rule.max
    else:
        bound, threshold = "min", rule.min
    # The message is a log line: a subject a host chose (a process name) cannot break it.
    where = f" [{_clip(subject)}]" if subject is not None else ""
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
    if isinstance(value, (str, list, dict)):
        # Not a number: the result keeps a short string as it is, anything else as a bounded picture
        # (a list the query made may share its elements a million times over: never serialized whole).
        kept = value if isinstance(value, str) and len(value) <= SUBJECT_LIMIT else _shown(value)
        return _result(rule, "error", kept, subject,
                       f"query returned {type(value).__name__} {_shown(value)}, expected a number")
    if value is None:
        return _result(rule, "no_data", None, subject, "query returned null (fact missing or not sampled)")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _result(rule, "error", value, subject,
                       f"query returned {type(value).__name__} {_shown(value)}, expected a number")
    if (rule.max is not None and value > rule.max) or (rule.min is not None and value < rule.min):
        return _result(rule, rule.severity, value, subject)
    return _result(rule, "ok", value, subject)


def _subject(rule: Rule, target: Any, default: str | None, meter: Meter) -> str | None:
    label = rule.compiled.get("label")
    if label is None:
        return default
    text = _search(label, target, meter)
    if text is None:
        return default
    if not isinstance(text, str):
        text = format_value(text) if isinstance(text, (int, float)) else _shown(text)
    return text if len(text) <= SUBJECT_LIMIT else f"{text[:SUBJECT_LIMIT]}...({len(text)} characters)"


def _sort_key(key: str):
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def evaluate_rule(rule: Rule, facts: Any, host_budget: HostBudget | None = None,
                  per_element: bool = False) -> list[dict]:
    """Results of one rule: one result, or for ``each`` rules one per violating element
    (or one for the worst element when none violates). A rule that runs out of its budget,
    or of what is left of the host's, is one ``error`` result naming the budget.

    With ``per_element``, an ``each`` rule gives one result per element judged, violating or not (the
    same verdicts), and every result has ``element``: ``{collection, key, value}`` (the object or list
    ``each`` returned, the element's key or index, the element itself, as evaluated), or None for a result of
    no element. The event source netstate.tcp.tcp_health reads from
    it where a violation is (port, address, process) and when one ends."""
    meter = (host_budget or HostBudget()).meter()
    try:
        meter.check_clock()  # the host's time may be spent already
        results = _evaluate_rule(rule, facts, meter, per_element)
        if per_element:
            for result in results:
                result.setdefault("element", None)
        return results
    except BudgetExceeded as exc:
        return [_result(rule, "error", None, None, f"evaluation {exc}")]
    except RecursionError:
        return [_result(rule, "error", None, None, "evaluation stopped: the query nests too deeply for its data")]
    except (ArithmeticError, ValueError, TypeError) as exc:
        # e.g. an integer of the facts too large to divide or to print: this rule's error, not the run's
        return [_result(rule, "error", None, None, f"evaluation failed: {type(exc).__name__}: {_clip(exc)}")]
    finally:
        meter.close()


def _evaluate_rule(rule: Rule, facts: Any, meter: Meter, per_element: bool = False) -> list[dict]:
    try:
        if "each" not in rule.compiled:
            return [_judge(rule, _search(rule.compiled["query"], facts, meter), _subject(rule, facts, None, meter))]
        collection = _search(rule.compiled["each"], facts, meter)
        if collection is None:
            return [_result(rule, "no_data", None, None, "each returned null (fact missing)")]
        if isinstance(collection, dict):
            # objects: the key names the element; label is evaluated on the key
            elements = [(element, _subject(rule, key, key, meter), key)
                        for key, element in sorted(collection.items(), key=lambda item: _sort_key(item[0]))]
        elif isinstance(collection, list):
            elements = [(element, _subject(rule, element, f"#{index}", meter), index)
                        for index, element in enumerate(collection)]
        else:
            return [_result(rule, "error", None, None,
                            f"each returned {type(collection).__name__}, expected an object or a list")]
        if not elements:
            return [_result(rule, "ok", None, None, "nothing to check")]
        judged = [_judge(rule, _search(rule.compiled["query"], element, meter), subject)
                  for element, subject, _key in elements]
    except jmespath_exceptions.JMESPathError as exc:
        return [_result(rule, "error", None, None, _clip(" ".join(str(exc).split()), 1000))]
    if per_element:
        for result, (element, _subject_text, key) in zip(judged, elements):
            result["element"] = {"collection": collection, "key": key, "value": element}
        return judged
    bad = [result for result in judged if result["status"] in SEVERITIES + ("error",)]
    if bad:
        return bad
    measured = [result for result in judged if result["status"] == "ok"]
    if not measured:
        return judged[:1]
    pick = max if rule.max is not None else min
    return [pick(measured, key=lambda result: result["value"])]


def evaluate(rules: list[Rule], facts: Any, budget: Mapping | None = None, per_element: bool = False) -> list[dict]:
    """Every rule's results, in rule order, against one host's ``ansible_facts.netstate``,
    within ``budget`` (check_budget(); DEFAULT_BUDGET when None); ``per_element`` as evaluate_rule's."""
    data = plain(facts)
    host_budget = HostBudget(budget)
    results: list[dict] = []
    for rule in rules:
        results.extend(evaluate_rule(rule, data, host_budget, per_element))
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
