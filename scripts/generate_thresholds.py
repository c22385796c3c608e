# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Alert rules, Zabbix template parts and docs tables from the one record of each built-in health rule.

plugins/plugin_utils/health_builtin_rules.yml holds every built-in health rule: its JMESPath query,
threshold and severity, and its ``doc``, ``prometheus`` and ``zabbix`` parts. This script writes from it:

* roles/node_exporter/files/netstate_tcp_alerts.yml: a Prometheus rules file, one alert per rule,
  labels ``rule: <name>`` and ``severity``, the rule's threshold in the expression;
* in roles/zabbix_agent/files/netstate_tcp_zabbix_template.yaml, the default values of the threshold
  macros and every trigger (one per rule, under the item, the discovery rule or the template, as
  Zabbix exports it, tagged ``rule: <name>`` and, on a port's trigger prototype, ``port: {#PORT}``:
  what the Zabbix media type posts to ansible-rulebook); nothing else in the template changes;
* roles/zabbix_register/vars/main.yml: which macro holds each rule's threshold, so per-host
  overrides (netstate_health_thresholds) become per-host macros;
* the rules table of docs/health.md, the trigger table of docs/monitoring.md and the remediation table
  of docs/remediation.md,
  between the markers ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``.

    python3 scripts/generate_thresholds.py           # rewrite the files that differ
    python3 scripts/generate_thresholds.py --check   # exit 1 and name the files that differ

tests/integration/test_thresholds.py runs ``--check`` so a changed rule that was not regenerated
fails ``make test``. Plain standard library plus PyYAML (a dependency of ansible-core).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES_PATH = os.path.join(ROOT, "plugins", "plugin_utils", "health_builtin_rules.yml")
ALERTS_PATH = os.path.join(ROOT, "roles", "node_exporter", "files", "netstate_tcp_alerts.yml")
TEMPLATE_PATH = os.path.join(ROOT, "roles", "zabbix_agent", "files", "netstate_tcp_zabbix_template.yaml")
REGISTER_VARS_PATH = os.path.join(ROOT, "roles", "zabbix_register", "vars", "main.yml")
HEALTH_DOC_PATH = os.path.join(ROOT, "docs", "health.md")
MONITORING_DOC_PATH = os.path.join(ROOT, "docs", "monitoring.md")
REMEDIATION_DOC_PATH = os.path.join(ROOT, "docs", "remediation.md")

# The parts of a rule record this script needs, beyond name, description, max and severity.
REQUIRED_PARTS = {
    "doc": ("per", "text"),
    "prometheus": ("expr", "summary"),
    "zabbix": ("macro", "doc", "trigger"),
    "remediation": ("kind", "doc"),
}
TRIGGER_FIELDS = ("uuid", "name", "expression", "description")
TRIGGER_OPTIONAL = ("depends_on",)
PRIORITY = {"warning": "WARNING", "critical": "HIGH"}
# The LLD macro of a port's trigger prototype; its value becomes the trigger's tag "port".
PORT_MACRO = "{#PORT}"
# Folding of the template's single-quoted scalars: a line breaks at the first space past FOLD_WIDTH
# (how the template was first written), and before a word that would pass LINE_LIMIT (yamllint).
FOLD_WIDTH = 142
LINE_LIMIT = 160


class _Dumper(yaml.SafeDumper):
    """Block sequences indented under their key, as yamllint (ansible-lint) wants them."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def fail(message: str):
    raise SystemExit("generate_thresholds: %s" % message)


def number(value) -> str:
    """A threshold as PromQL and Zabbix write it: 100, 0.25."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def alert_name(rule: str) -> str:
    return "Netstate" + "".join(part.capitalize() for part in rule.split("_"))


def check_rule(rule, names) -> None:
    """Refuse a record without what the generated files need, naming the rule and the part."""
    if not isinstance(rule, dict) or not isinstance(rule.get("name"), str):
        fail("a rule without a name: %r" % (rule,))
    name = rule["name"]
    if rule.get("min") is not None or rule.get("max") is None:
        fail("rule %s: only max thresholds are translated" % name)
    for key in ("description", "severity"):
        if not isinstance(rule.get(key), str):
            fail("rule %s: no %s" % (name, key))
    for part, keys in REQUIRED_PARTS.items():
        value = rule.get(part)
        if not isinstance(value, dict):
            fail("rule %s: no %s part (a mapping of %s)" % (name, part, ", ".join(keys)))
        for key in keys:
            if key == "trigger":
                continue
            if not isinstance(value.get(key), str) or not value[key].strip():
                fail("rule %s: %s.%s is missing or empty" % (name, part, key))
    if "{threshold}" not in rule["prometheus"]["expr"]:
        fail("rule %s: prometheus.expr has no {threshold}" % name)
    trigger = rule["zabbix"].get("trigger")
    if not isinstance(trigger, dict):
        fail("rule %s: zabbix.trigger is missing (a mapping of %s)" % (name, ", ".join(TRIGGER_FIELDS)))
    unknown = sorted(set(trigger) - set(TRIGGER_FIELDS + TRIGGER_OPTIONAL))
    if unknown:
        fail("rule %s: zabbix.trigger.%s is not a trigger field" % (name, unknown[0]))
    for key in TRIGGER_FIELDS:
        if not isinstance(trigger.get(key), str) or not trigger[key].strip():
            fail("rule %s: zabbix.trigger.%s is missing or empty" % (name, key))
    # the macro itself or with a context: {$NETSTATE.CLOSE_WAIT.MAX:"{#PORT}"}
    if not re.search(re.escape(rule["zabbix"]["macro"][:-1]) + "[}:]", trigger["expression"]):
        fail("rule %s: zabbix.trigger.expression does not use %s" % (name, rule["zabbix"]["macro"]))
    for other in trigger.get("depends_on") or []:
        if other not in names or other == name:
            fail("rule %s: zabbix.trigger.depends_on names %r, not another built-in rule" % (name, other))


def load_rules(path: str) -> list:
    with open(path, encoding="utf-8") as stream:
        rules = yaml.safe_load(stream)
    if not isinstance(rules, list) or not rules:
        fail("%s holds no list of rules" % path)
    names = [rule.get("name") if isinstance(rule, dict) else None for rule in rules]
    for rule in rules:
        check_rule(rule, names)
    return rules


def render_alerts(rules: list) -> str:
    alerts = []
    for rule in rules:
        threshold = number(rule["max"])
        alerts.append({
            "alert": alert_name(rule["name"]),
            "expr": " ".join(rule["prometheus"]["expr"].split()).replace("{threshold}", threshold),
            "labels": {"rule": rule["name"], "severity": rule["severity"]},
            "annotations": {
                "summary": " ".join(rule["prometheus"]["summary"].split()),
                "description": " ".join(rule["description"].split()) + " Threshold: above %s." % threshold,
            },
        })
    document = {"groups": [{"name": "netstate.tcp", "rules": alerts}]}
    header = ("# Generated by scripts/generate_thresholds.py from plugins/plugin_utils/health_builtin_rules.yml:\n"
              "# edit the rules there and regenerate. One alert per built-in health rule, same threshold and\n"
              "# severity, label rule: <health rule name>.\n")
    return header + "---\n" + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)


# --- the Zabbix template ----------------------------------------------------------------------

def expression_keys(expression: str, host: str) -> list:
    """The item keys a trigger expression reads (``last(/HOST/KEY)``, ``avg(/HOST/KEY,5m)``)."""
    keys = []
    marker = "(/%s/" % host
    start = expression.find(marker)
    while start >= 0:
        position = start + len(marker)
        depth = 0
        quoted = False
        end = position
        while end < len(expression):
            char = expression[end]
            if quoted:
                quoted = char != '"' or expression[end - 1] == "\\"
            elif char == '"':
                quoted = True
            elif char == "[":
                depth += 1
            elif char == "]":
                depth -= 1
            elif char in ",)" and depth == 0:
                break
            end += 1
        keys.append(expression[position:end])
        start = expression.find(marker, end)
    return keys


def _scalar(text: str, column: int, indent: int) -> str:
    """``text`` single-quoted, folded at spaces as the template is (see FOLD_WIDTH)."""
    words = text.replace("'", "''").split(" ")
    out = "'" + words[0]
    column += len(out)
    for index, word in enumerate(words[1:], 1):
        closing = 1 if index == len(words) - 1 else 0
        if words[index - 1] and word and (column > FOLD_WIDTH or column + 1 + len(word) + closing > LINE_LIMIT):
            out += "\n" + " " * indent + word
            column = indent + len(word)
        else:
            out += " " + word
            column += 1 + len(word)
    return out + "'"


def _plain(key: str, text: str) -> bool:
    """True when ``key: text`` reads back as that string (uuids and priorities are written plain)."""
    try:
        return (re.fullmatch(r"[A-Za-z0-9_]+", text) is not None
                and yaml.safe_load("%s: %s" % (key, text)) == {key: text})
    except yaml.YAMLError:
        return False


def _emit_triggers(triggers: list, indent: int) -> str:
    lines = []
    for trigger in triggers:
        lead = "- "
        for key, value in trigger.items():
            prefix = " " * indent + lead + key + ":"
            lead = "  "
            if key in ("dependencies", "tags"):
                lines.append(prefix + "\n" + _emit_triggers(value, indent + 4))
            elif "\n" in value:
                fail("trigger %s: %s holds a line break" % (trigger.get("uuid"), key))
            elif key in ("uuid", "priority", "tag", "value") and _plain(key, value):
                lines.append("%s %s\n" % (prefix, value))
            else:
                lines.append("%s %s\n" % (prefix, _scalar(value, len(prefix) + 1, indent + 4)))
    return "".join(lines)


def zabbix_triggers(rules: list, template: dict) -> dict:
    """Rule name -> (place, trigger) for each rule; place is ("item", key), ("discovery", key) or
    ("template",), where Zabbix exports a trigger on that one item, on item prototypes of that
    discovery rule, or on several items."""
    host = template["template"]
    items = {item["key"] for item in template.get("items") or []}
    prototypes = {prototype["key"]: rule["key"] for rule in template.get("discovery_rules") or []
                  for prototype in rule.get("item_prototypes") or []}
    by_name = {rule["name"]: rule for rule in rules}
    placed = {}
    for rule in rules:
        spec = rule["zabbix"]["trigger"]
        expression = " ".join(spec["expression"].split())
        keys = sorted(set(expression_keys(expression, host)))
        if not keys:
            fail("rule %s: zabbix.trigger.expression reads no item of %s" % (rule["name"], host))
        unknown = [key for key in keys if key not in items and key not in prototypes]
        if unknown:
            fail("rule %s: zabbix.trigger.expression reads %s, no item or item prototype of the template"
                 % (rule["name"], unknown[0]))
        discovery = {prototypes[key] for key in keys if key in prototypes}
        if discovery and (len(discovery) > 1 or any(key in items for key in keys)):
            fail("rule %s: zabbix.trigger.expression mixes items and prototypes of several rules" % rule["name"])
        if discovery:
            place = ("discovery", discovery.pop())
        elif len(keys) == 1:
            place = ("item", keys[0])
        else:
            place = ("template",)
        trigger = {"uuid": spec["uuid"], "expression": expression, "name": " ".join(spec["name"].split()),
                   "priority": PRIORITY[rule["severity"]], "description": " ".join(spec["description"].split())}
        if spec.get("depends_on"):
            trigger["dependencies"] = []
            for other in spec["depends_on"]:
                depended = by_name[other]["zabbix"]["trigger"]
                trigger["dependencies"].append({"name": " ".join(depended["name"].split()),
                                                "expression": " ".join(depended["expression"].split())})
        # the tags name what the event is about, for whoever Zabbix tells (extensions/eda/rulebooks/alerts.yml)
        trigger["tags"] = [{"tag": "rule", "value": rule["name"]}]
        if place[0] == "discovery" and PORT_MACRO in expression:
            trigger["tags"].append({"tag": "port", "value": PORT_MACRO})
        placed[rule["name"]] = (place, trigger)
    return placed


def _mapping(node) -> dict:
    return {key.value: (key, value) for key, value in node.value}


def render_template(text: str, rules: list) -> str:
    # threshold macros: only their values change
    for rule in rules:
        macro = rule["zabbix"]["macro"]
        pattern = re.compile(r"(- macro: '%s'\n\s+value: ')[^']*(')" % re.escape(macro))
        text, count = pattern.subn(r"\g<1>%s\g<2>" % number(rule["max"]), text)
        if count != 1:
            fail("rule %s: macro %s found %d times in %s" % (rule["name"], macro, count, TEMPLATE_PATH))
    data = yaml.safe_load(text)
    template = data["zabbix_export"]["templates"][0]
    placed = zabbix_triggers(rules, template)
    uuids = [trigger["uuid"] for _place, trigger in placed.values()]
    if len(set(uuids)) != len(uuids):
        fail("two rules share a zabbix.trigger.uuid")

    # every trigger list of the template (items, discovery rules, the template) is written from the rules;
    # a trigger already there keeps its position, a new one comes after them
    root = _mapping(yaml.compose(text))["zabbix_export"][1]
    template_node = _mapping(_mapping(root)["templates"][1].value[0])
    containers = [(("template",), "triggers", root, data["zabbix_export"], 2)]
    for node, item in zip(template_node["items"][1].value if "items" in template_node else [],
                          template.get("items") or []):
        containers.append((("item", item["key"]), "triggers", node, item, 10))
    for node, rule in zip(template_node["discovery_rules"][1].value if "discovery_rules" in template_node else [],
                          template.get("discovery_rules") or []):
        containers.append((("discovery", rule["key"]), "trigger_prototypes", node, rule, 10))
    lines = text.splitlines(keepends=True)
    edits = []
    for place, key, node, mapping, indent in containers:
        wanted = {trigger["uuid"]: trigger for where, trigger in placed.values() if where == place}
        order = [trigger["uuid"] for trigger in mapping.get(key) or [] if trigger.get("uuid") in wanted]
        order += [uuid for uuid in wanted if uuid not in order]
        triggers = [wanted[uuid] for uuid in order]
        block = (" " * indent + key + ":\n" + _emit_triggers(triggers, indent + 2)) if triggers else ""
        existing = _mapping(node).get(key)
        if existing:
            edits.append((existing[0].start_mark.line, existing[1].end_mark.line, block))
        elif block:
            edits.append((node.end_mark.line, node.end_mark.line, block))
        if triggers:
            mapping[key] = triggers
        else:
            mapping.pop(key, None)
    for start, end, block in sorted(edits, reverse=True):
        lines[start:end] = [block]
    result = "".join(lines)
    if yaml.safe_load(result) != data:  # the text says what the data says, or this script has a bug
        fail("the template's triggers could not be written in place")
    return result


def render_register_vars(rules: list, template_text: str) -> str:
    template = yaml.safe_load(template_text)["zabbix_export"]["templates"][0]["template"]
    document = {
        "__netstate_zabbix_register_template_name": template,
        "__netstate_zabbix_register_rule_macros": {rule["name"]: rule["zabbix"]["macro"] for rule in rules},
    }
    return ("---\n# Generated by scripts/generate_thresholds.py: the template's name and the macro holding each\n"
            "# built-in health rule's threshold (plugins/plugin_utils/health_builtin_rules.yml).\n"
            + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=110))


# --- docs ------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def rules_table(rules: list) -> str:
    rows = ["| Rule | Severity | Threshold | Per | What it catches |",
            "|------|----------|-----------|-----|-----------------|"]
    for rule in rules:
        rows.append("| `%s` | %s | max %s | %s | %s |" % (rule["name"], rule["severity"], number(rule["max"]),
                                                          _cell(rule["doc"]["per"]), _cell(rule["doc"]["text"])))
    return "\n".join(rows) + "\n"


def zabbix_table(rules: list) -> str:
    rows = ["| health rule | trigger | macro (default) | severity |", "|---|---|---|---|"]
    for rule in rules:
        rows.append("| %s | %s | `%s` (%s) | %s |" % (
            rule["name"], _cell(rule["zabbix"]["doc"]), rule["zabbix"]["macro"], number(rule["max"]),
            PRIORITY[rule["severity"]].lower()))
    return "\n".join(rows) + "\n"


def remediation_table(rules: list) -> str:
    rows = ["| Rule | Remediation | Target | What `netstate.tcp.remediate` does in mode `act` |",
            "|------|-------------|--------|----------------------------------------------|"]
    for rule in rules:
        part = rule["remediation"]
        target = {"restart_unit": "the listener's `unit`",
                  "sysctl": ", ".join("`%s=%s`" % item for item in sorted((part.get("settings") or {}).items())),
                  "tuning_profile": "profile `%s`" % part.get("profile"),
                  "plan": "-"}.get(part["kind"], "-")
        rows.append("| `%s` | %s | %s | %s |" % (rule["name"], part["kind"], target, _cell(part["doc"])))
    return "\n".join(rows) + "\n"


def replace_generated(text: str, name: str, content: str, path: str) -> str:
    """``content`` between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``."""
    begin, end = "<!-- generated: %s -->\n" % name, "<!-- end generated: %s -->" % name
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        fail("%s: the markers of %s are missing or repeated" % (os.path.relpath(path, ROOT), name))
    head, rest = text.split(begin)
    return head + begin + content + end + rest.split(end, 1)[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    rules = load_rules(RULES_PATH)
    current = {}
    for path in (ALERTS_PATH, TEMPLATE_PATH, REGISTER_VARS_PATH, HEALTH_DOC_PATH, MONITORING_DOC_PATH,
                 REMEDIATION_DOC_PATH):
        current[path] = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as stream:
                current[path] = stream.read()
    template = current[TEMPLATE_PATH]
    wanted = {
        ALERTS_PATH: render_alerts(rules),
        TEMPLATE_PATH: render_template(template, rules),
        REGISTER_VARS_PATH: render_register_vars(rules, template),
        HEALTH_DOC_PATH: replace_generated(current[HEALTH_DOC_PATH], "built-in rules", rules_table(rules),
                                           HEALTH_DOC_PATH),
        MONITORING_DOC_PATH: replace_generated(current[MONITORING_DOC_PATH], "zabbix triggers", zabbix_table(rules),
                                               MONITORING_DOC_PATH),
        REMEDIATION_DOC_PATH: replace_generated(current[REMEDIATION_DOC_PATH], "remediations",
                                                remediation_table(rules), REMEDIATION_DOC_PATH),
    }
    stale = []
    for path, text in wanted.items():
        if current[path] == text:
            continue
        stale.append(os.path.relpath(path, ROOT))
        if not args.check:
            with open(path, "w", encoding="utf-8") as stream:
                stream.write(text)
    if args.check and stale:
        sys.stderr.write("out of date (run python3 scripts/generate_thresholds.py): %s\n" % ", ".join(stale))
        return 1
    for path in [] if args.check else stale:
        print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
