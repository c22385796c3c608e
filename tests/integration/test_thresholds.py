# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One source of thresholds: plugins/plugin_utils/health_builtin_rules.yml.

The shipped Prometheus alerts (roles/node_exporter/files/netstate_tcp_alerts.yml), the Zabbix
template's macro defaults and trigger severities, and fleet_report's default limits must say what the
health rules say; scripts/generate_thresholds.py writes the first two, this test fails on any drift.
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
from tests.conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "plugins", "plugin_utils", "health_builtin_rules.yml")
ALERTS = os.path.join(ROOT, "roles", "node_exporter", "files", "netstate_tcp_alerts.yml")
ALERTS_TEST = os.path.join(ROOT, "tests", "integration", "prometheus", "netstate_tcp_alerts_test.yml")
TEMPLATE = os.path.join(ROOT, "roles", "zabbix_agent", "files", "netstate_tcp_zabbix_template.yaml")
GENERATOR = os.path.join(ROOT, "scripts", "generate_thresholds.py")
SEVERITY_PRIORITY = {"warning": "WARNING", "critical": "HIGH"}
# fleet_report's limit -> the health rule whose max it must equal
FLEET_LIMITS = {"accept_queue": "accept_queue_full", "time_wait_share": "time_wait_ephemeral_share",
                "close_wait": "close_wait_per_port", "syn_recv": "syn_recv_total"}


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


def test_zabbix_macros_and_trigger_severities_match(rules):
    sys.path.insert(0, os.path.dirname(GENERATOR))
    try:
        import generate_thresholds  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    template = load(TEMPLATE)["zabbix_export"]["templates"][0]
    macros = {macro["macro"]: macro["value"] for macro in template["macros"]}
    triggers = list(load(TEMPLATE)["zabbix_export"].get("triggers") or [])
    for item in template.get("items") or []:
        triggers += item.get("triggers") or []
    for rule in template.get("discovery_rules") or []:
        for prototype in rule.get("item_prototypes") or []:
            triggers += prototype.get("trigger_prototypes") or []
        triggers += rule.get("trigger_prototypes") or []
    for name, rule in rules.items():
        macro = generate_thresholds.RULES[name]["macro"]
        assert float(macros[macro]) == float(rule["max"]), (name, macro)
        using = [trigger for trigger in triggers if re.search(r">=?%s" % re.escape(macro[:-1]), trigger["expression"])]
        assert using, (name, macro)
        for trigger in using:
            assert trigger["priority"] == SEVERITY_PRIORITY[rule["severity"]], (name, trigger["name"])


def test_fleet_report_default_limits_match(rules):
    assert set(fleet_report.DEFAULT_LIMITS) == set(FLEET_LIMITS)
    for limit, rule in FLEET_LIMITS.items():
        assert float(fleet_report.DEFAULT_LIMITS[limit]) == float(rules[rule]["max"]), limit
