# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One source of thresholds: plugins/plugin_utils/health_builtin_rules.yml, one record per rule.

The shipped Prometheus alerts (roles/node_exporter/files/netstate_tcp_alerts.yml), the Zabbix
template's macro defaults and triggers, and the rule tables of the docs must say what the health
rules say; scripts/generate_thresholds.py writes them, this test fails on any drift, on a rule record
the generator cannot translate, and on a count of built-in rules in the docs that is not the code's.
Nothing else in plugins/ or roles/ may hold a copy of a threshold: the reports evaluate the rules
(fleet_report's pressure, the tuning report's TIME_WAIT share), and a scan of every file proves no
threshold literal is left.
The alerts are checked by Prometheus's own promtool: ``check rules`` and ``test rules`` (unit tests
with series just beyond and exactly at each threshold, tests/integration/prometheus/).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from ansible_collections.netstate.tcp.plugins.filter import fleet_report
from ansible_collections.netstate.tcp.plugins.plugin_utils import _fleet_model
from tests.conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "plugins", "plugin_utils", "health_builtin_rules.yml")
ALERTS = os.path.join(ROOT, "roles", "node_exporter", "files", "netstate_tcp_alerts.yml")
ALERTS_TEST = os.path.join(ROOT, "tests", "integration", "prometheus", "netstate_tcp_alerts_test.yml")
TEMPLATE = os.path.join(ROOT, "roles", "zabbix_agent", "files", "netstate_tcp_zabbix_template.yaml")
GENERATOR = os.path.join(ROOT, "scripts", "generate_thresholds.py")
SEVERITY_PRIORITY = {"warning": "WARNING", "critical": "HIGH"}
# Files generate_thresholds.py writes from the rules (drift-tested above): they hold thresholds by design.
GENERATED = {RULES, ALERTS, TEMPLATE}


def load(path):
    with open(path, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


@pytest.fixture(scope="module")
def rules():
    return {rule["name"]: rule for rule in load(RULES)}


@pytest.fixture(scope="module")
def alerts():
    return [alert for group in load(ALERTS)["groups"] for alert in group["rules"]]


def promtool(*args, cwd=None):
    require(shutil.which("promtool") is not None,
            "needs promtool (Debian package prometheus, scripts/setup.sh installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def test_generated_files_are_current():
    done = subprocess.run([sys.executable, GENERATOR, "--check"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_one_alert_per_rule_with_its_threshold_and_severity(rules, alerts):
    by_rule = {}
    for alert in alerts:
        by_rule.setdefault(alert["labels"]["rule"], []).append(alert)
    assert sorted(by_rule) == sorted(rules)
    for name, rule in rules.items():
        (alert,) = by_rule[name]
        assert alert["labels"]["severity"] == rule["severity"], name
        threshold = re.search(r"> ([0-9.]+)$", alert["expr"])
        assert threshold, (name, alert["expr"])
        assert float(threshold.group(1)) == float(rule["max"]), name


def test_promtool_check_rules_is_clean():
    done = promtool("check", "rules", ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: %d rules found" % len(load(RULES)) in done.stdout


def test_promtool_unit_tests_pass():
    done = promtool("test", "rules", os.path.basename(ALERTS_TEST), cwd=os.path.dirname(ALERTS_TEST))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_fail_when_a_threshold_moves(tmp_path, rules):
    """The unit tests see a threshold change: raise close_wait_per_port and they no longer pass."""
    with open(ALERTS, encoding="utf-8") as stream:
        text = stream.read()
    moved = text.replace('state="CLOSE_WAIT"} > %d' % rules["close_wait_per_port"]["max"], 'state="CLOSE_WAIT"} > 200')
    assert moved != text
    rules_dir = tmp_path / "roles" / "node_exporter" / "files"
    rules_dir.mkdir(parents=True)
    (rules_dir / os.path.basename(ALERTS)).write_text(moved, encoding="utf-8")
    tests_dir = tmp_path / "tests" / "integration" / "prometheus"
    tests_dir.mkdir(parents=True)
    shutil.copy(ALERTS_TEST, tests_dir)
    done = promtool("test", "rules", os.path.basename(ALERTS_TEST), cwd=str(tests_dir))
    assert done.returncode != 0
    assert "NetstateCloseWaitPerPort" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def generator():
    sys.path.insert(0, os.path.dirname(GENERATOR))
    try:
        import generate_thresholds  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    return generate_thresholds


def template_triggers():
    template = load(TEMPLATE)["zabbix_export"]["templates"][0]
    triggers = list(load(TEMPLATE)["zabbix_export"].get("triggers") or [])
    for item in template.get("items") or []:
        triggers += item.get("triggers") or []
    for rule in template.get("discovery_rules") or []:
        for prototype in rule.get("item_prototypes") or []:
            triggers += prototype.get("trigger_prototypes") or []
        triggers += rule.get("trigger_prototypes") or []
    return triggers


def test_zabbix_triggers_are_the_rules_triggers(rules):
    """Every trigger of the template is a rule's, with the rule's expression and the priority of its severity."""
    triggers = {trigger["uuid"]: trigger for trigger in template_triggers()}
    assert sorted(triggers) == sorted(rule["zabbix"]["trigger"]["uuid"] for rule in rules.values())
    for name, rule in rules.items():
        trigger = triggers[rule["zabbix"]["trigger"]["uuid"]]
        assert trigger["expression"] == " ".join(rule["zabbix"]["trigger"]["expression"].split()), name
        assert trigger["priority"] == SEVERITY_PRIORITY[rule["severity"]], name


def test_every_trigger_is_tagged_with_its_rule_and_port(rules):
    """The tags the Zabbix media type posts to ansible-rulebook: rule on every trigger, port ({#PORT}) on every
    trigger prototype of a port, on no other."""
    template = load(TEMPLATE)["zabbix_export"]["templates"][0]
    prototypes = {trigger["uuid"] for rule in template.get("discovery_rules") or []
                  for trigger in rule.get("trigger_prototypes") or []}
    assert prototypes, "the template has no trigger prototype"
    by_uuid = {trigger["uuid"]: trigger for trigger in template_triggers()}
    for name, rule in rules.items():
        uuid = rule["zabbix"]["trigger"]["uuid"]
        wanted = [{"tag": "rule", "value": name}]
        if uuid in prototypes:
            wanted.append({"tag": "port", "value": "{#PORT}"})
        assert by_uuid[uuid]["tags"] == wanted, name


@pytest.mark.parametrize("part", ["doc", "prometheus", "zabbix", "doc.text", "prometheus.expr", "prometheus.summary",
                                  "zabbix.macro", "zabbix.trigger", "zabbix.trigger.expression"])
def test_generator_refuses_a_rule_without_a_part_naming_it(tmp_path, monkeypatch, generator, part):
    """A record missing what a generated file needs stops the generator before anything is written."""
    raw = load(RULES)
    victim = raw[3]
    *parents, last = part.split(".")
    holder = victim
    for key in parents:
        holder = holder[key]
    del holder[last]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    monkeypatch.setattr(generator, "RULES_PATH", str(path))
    with pytest.raises(SystemExit) as refused:
        generator.main([])
    message = str(refused.value)
    assert "rule %s:" % victim["name"] in message and part in message, message


def test_generator_refuses_an_expression_on_no_item_of_the_template(generator):
    raw = load(RULES)
    raw[0]["zabbix"]["trigger"]["expression"] = "last(/netstate TCP by Zabbix agent/no.such.key)>%s" % (
        raw[0]["zabbix"]["macro"])
    template = load(TEMPLATE)["zabbix_export"]["templates"][0]
    with pytest.raises(SystemExit, match="rule %s: .*no.such.key" % raw[0]["name"]):
        generator.zabbix_triggers(raw, template)


def test_generator_places_triggers_where_zabbix_exports_them(rules, generator):
    """One item: under it; item prototypes: under their discovery rule; several items: the template's."""
    template = load(TEMPLATE)["zabbix_export"]["templates"][0]
    placed = generator.zabbix_triggers(list(rules.values()), template)
    assert placed["syn_recv_total"][0] == ("item", "netstate.tcp.state[SYN_RECV]")
    assert placed["close_wait_per_port"][0] == ("discovery", "netstate.tcp.discovery[tcp]")
    assert placed["orphans_share"][0] == ("template",)
    assert placed["accept_queue_saturation"][1]["dependencies"] == [
        {"name": rules["accept_queue_full"]["zabbix"]["trigger"]["name"],
         "expression": rules["accept_queue_full"]["zabbix"]["trigger"]["expression"]}]


COUNT_WORDS = {word: number for number, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
STATED_COUNT = re.compile(r"\b(\d+|%s) built-in (?:health )?rules\b" % "|".join(COUNT_WORDS), re.I)


def stated_counts(text):
    """Every number the text gives for the built-in rules ("Eleven built-in rules", "11 built-in health rules")."""
    return [int(word) if word.isdigit() else COUNT_WORDS[word.lower()] for word in STATED_COUNT.findall(text)]


def test_docs_state_the_codes_count_of_built_in_rules(rules):
    paths = [os.path.join(ROOT, "README.md")]
    for top in ("docs", "roles"):
        for directory, _subdirectories, names in os.walk(os.path.join(ROOT, top)):
            paths += [os.path.join(directory, name) for name in sorted(names) if name.endswith(".md")]
    found = {}
    for path in paths:
        with open(path, encoding="utf-8") as stream:
            counts = stated_counts(stream.read())
        if counts:
            found[os.path.relpath(path, ROOT)] = counts
    assert "README.md" in found  # the README states the count, so the scan reads what it should
    assert {path: counts for path, counts in found.items() if set(counts) != {len(rules)}} == {}


def test_the_count_scan_finds_a_stale_count():
    text = "Nine built-in rules (TIME_WAIT ...) and 9 built-in health rules; the built-in rules"
    assert stated_counts(text) == [9, 9]


def test_generated_tables_list_every_rule(rules):
    """The rules table of docs/health.md and the trigger table of docs/monitoring.md have one row per rule, in
    rule order."""
    for path, name in ((os.path.join(ROOT, "docs", "health.md"), "built-in rules"),
                       (os.path.join(ROOT, "docs", "monitoring.md"), "zabbix triggers")):
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
        table = re.search(r"<!-- generated: %s -->\n(.*?)<!-- end generated: %s -->" % (name, name), text, re.S)
        assert table, (path, name)
        rows = table.group(1).splitlines()[2:]
        assert [re.match(r"\| `?(\w+)`? \|", row).group(1) for row in rows] == list(rules), path


def test_zabbix_macros_and_trigger_severities_match(rules):
    template = load(TEMPLATE)["zabbix_export"]["templates"][0]
    macros = {macro["macro"]: macro["value"] for macro in template["macros"]}
    triggers = template_triggers()
    for name, rule in rules.items():
        macro = rule["zabbix"]["macro"]
        assert float(macros[macro]) == float(rule["max"]), (name, macro)
        using = [trigger for trigger in triggers if re.search(r">=?%s" % re.escape(macro[:-1]), trigger["expression"])]
        assert using, (name, macro)
        for trigger in using:
            assert trigger["priority"] == SEVERITY_PRIORITY[rule["severity"]], (name, trigger["name"])


NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"


def threshold_scanner(rules):
    """(path, text) -> list of (line number, rule, line) where a rule's threshold is written down.

    A rule is named by its name or by the fleet report's column for it (accept_queue for
    accept_queue_full, ...). A threshold literal is its max or min (as any number equal to it:
    0.25, .25, 25 %) bound to such a name - ``name: 0.25``, ``"name": 0.25``, ``name=0.25``,
    ``name > 0.25`` - or given, on a line naming the rule, as ``max 0.25``, ``limit 0.25``,
    ``threshold 0.25``, a comparison (``share > 0.25``) or a percentage.
    """
    columns = {rule: column for column, rule in _fleet_model.PRESSURE_RULES.items()}
    checks = []
    for name, rule in rules.items():
        labels = [name] + ([columns[name]] if name in columns else [])
        label = "(?:%s)" % "|".join(re.escape(item) for item in labels)
        bound = re.compile(r"\b%s\b['\"]?\s*(?::|=|==|[<>]=?)\s*%s(%%?)(?![\w.])" % (label, NUMBER), re.I)
        reverse = re.compile(r"(?<![\w.])%s(%%?)\s*[<>]=?\s*\b%s\b" % (NUMBER, label), re.I)
        prose = re.compile(r"\b(?:max|min|limit|threshold)\s*(?:of\s*|is\s*|:\s*)?%s(%%?)(?![\w.])" % NUMBER, re.I)
        percent = re.compile(r"(?<![\w.])%s\s*(%%)" % NUMBER)
        compared = re.compile(r"(?:[<>]=?|==)\s*%s(%%?)(?![\w.])" % NUMBER)
        named = re.compile(r"\b%s\b" % label, re.I)
        values = {float(rule[key]) for key in ("max", "min") if rule.get(key) is not None}
        checks.append((name, values, bound, reverse, (prose, percent, compared), named))

    def scan(text):
        found = []
        for number, line in enumerate(text.splitlines(), 1):
            for name, values, bound, reverse, near, named in checks:
                matches = list(bound.finditer(line)) + list(reverse.finditer(line))
                if named.search(line):
                    matches += [match for pattern in near for match in pattern.finditer(line)]
                for match in matches:
                    value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
                    if any(abs(value - wanted) < 1e-9 for wanted in values):
                        found.append((number, name, line.strip()))
        return found
    return scan


def tracked_files(*tops):
    for top in tops:
        for directory, _subdirectories, names in os.walk(os.path.join(ROOT, top)):
            for name in sorted(names):
                path = os.path.join(directory, name)
                if path in GENERATED or "__pycache__" in path:
                    continue
                try:
                    with open(path, encoding="utf-8") as stream:
                        yield path, stream.read()
                except UnicodeDecodeError:
                    continue


def test_no_threshold_literal_outside_the_rules_file(rules):
    scan = threshold_scanner(rules)
    scanned = 0
    found = []
    for path, text in tracked_files("plugins", "roles"):
        scanned += 1
        found += [(os.path.relpath(path, ROOT),) + hit for hit in scan(text)]
    assert scanned > 50  # the walk really read the tree
    assert found == []


@pytest.mark.parametrize("copy", [
    'DEFAULT_LIMITS = {"accept_queue": 1.0, "time_wait_share": 0.25, "close_wait": 100, "syn_recv": 256}',
    "netstate_gather_report_limits: {close_wait: 100}",
    "{% if share > 0.25 %}time_wait_share above its limit{% endif %}",
    "thresholds: {syn_recv_total: 256}",
    "    default: {accept_queue: 1.0}",
    "CLOSE_WAIT on one port beyond close_wait_per_port's max 100",
    "the time_wait_ephemeral_share rule warns above 25 % of the range",
    "if queue / backlog > 1: # accept_queue_full",
    "0.8 < accept_queue_saturation",
])
def test_the_scan_finds_a_copied_threshold(rules, copy):
    """The scan above can fail: each way a threshold used to be (or could be) copied is found."""
    hits = threshold_scanner(rules)("x = 1\n" + copy + "\n")
    assert hits and all(number == 2 for number, _rule, _line in hits), hits


def test_the_scan_leaves_other_numbers_alone(rules):
    scan = threshold_scanner(rules)
    assert scan("top: 10\nmode: '0644'\nsaturation: round(queue / backlog, 4)\nclose_wait: 5000\n") == []


def test_fleet_report_limits_are_the_rules_maxima_and_follow_host_overrides(rules):
    """The pressure limits are read from the rules, per host after its netstate_health_thresholds."""
    facts = {"tcp": {"total": 1, "states": {"CLOSE_WAIT": 0}, "local_ports": {}, "ephemeral": {}},
             "listeners": []}
    hostvars = {"a": {"netstate_gather_result": {"ansible_facts": {"netstate": facts}}},
                "b": {"netstate_gather_result": {"ansible_facts": {"netstate": facts}},
                      "netstate_health_thresholds": {"close_wait_per_port": 7, "syn_recv_total": {"enabled": False}}}}
    report = fleet_report.fleet_report(["a", "b"], hostvars)
    expected = {column: rules[rule]["max"] for column, rule in _fleet_model.PRESSURE_RULES.items()}
    assert report["limits"] == expected
    rows = {row["host"]: row for row in report["rows"]}
    assert rows["a"]["limits"] == expected
    assert rows["b"]["limits"] == dict(expected, close_wait=7, syn_recv=None)
    assert fleet_report.fleet_report(["a"], hostvars, limits={"close_wait": 3})["limits"]["close_wait"] == 3
