# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Thresholds of the monitoring files from the one place that defines them.

plugins/plugin_utils/health_builtin_rules.yml holds every built-in health rule with its threshold and
severity. This script writes from it:

* roles/node_exporter/files/netstate_tcp_alerts.yml: a Prometheus rules file, one alert per rule,
  labels ``rule: <name>`` and ``severity``, the rule's threshold in the expression;
* the default values of the threshold macros in roles/zabbix_agent/files/netstate_tcp_zabbix_template.yaml
  (only those lines change);
* roles/zabbix_register/vars/main.yml: which macro holds each rule's threshold, so per-host
  overrides (netstate_health_thresholds) become per-host macros.

    python3 scripts/generate_thresholds.py           # rewrite both files
    python3 scripts/generate_thresholds.py --check   # exit 1 and name the files that differ

tests/integration/test_thresholds.py runs ``--check`` so a changed threshold that was not
regenerated fails ``make test``. Plain standard library plus PyYAML (a dependency of ansible-core).
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

# Window of the rate() of the counter rules: the collector's file changes once a minute by default
# (netstate_node_exporter_schedule_minutes), so five minutes hold several samples.
RATE_WINDOW = "5m"

# Per rule: the PromQL of the value the health rule computes ({threshold} is substituted), the
# summary (a Prometheus template, not formatted here) naming the subject, and the Zabbix macro
# holding the same threshold.
RULES = {
    "time_wait_ephemeral_share": {
        "expr": "netstate_tcp_ephemeral_busiest_time_wait / ignoring (address, port) group_left () "
                "(netstate_tcp_ephemeral_ports > 0) > {threshold}",
        "summary": "TIME_WAIT to {{ $labels.address }}:{{ $labels.port }} holds {{ $value | humanizePercentage }} "
                   "of the ephemeral port range on {{ $labels.instance }}",
        "macro": "{$NETSTATE.TIME_WAIT.SHARE.MAX}",
    },
    "close_wait_per_port": {
        "expr": 'netstate_tcp_port_connections{{state="CLOSE_WAIT"}} > {threshold}',
        "summary": "{{ $value }} CLOSE_WAIT sockets on port {{ $labels.port }} on {{ $labels.instance }}",
        "macro": "{$NETSTATE.CLOSE_WAIT.MAX}",
    },
    "syn_recv_total": {
        "expr": 'netstate_tcp_connections{{state="SYN_RECV"}} > {threshold}',
        "summary": "{{ $value }} half-open (SYN_RECV) connections on {{ $labels.instance }}",
        "macro": "{$NETSTATE.SYN_RECV.MAX}",
    },
    "accept_queue_saturation": {
        "expr": "netstate_tcp_listen_queue / (netstate_tcp_listen_backlog > 0) > {threshold}",
        "summary": "Accept queue of {{ $labels.address }}:{{ $labels.port }} at {{ $value | humanizePercentage }} "
                   "of its backlog on {{ $labels.instance }}",
        "macro": "{$NETSTATE.ACCEPT_QUEUE.SATURATION.MAX}",
    },
    "accept_queue_full": {
        "expr": "netstate_tcp_listen_queue / (netstate_tcp_listen_backlog > 0) > {threshold}",
        "summary": "Accept queue of {{ $labels.address }}:{{ $labels.port }} beyond its backlog "
                   "({{ $value | humanizePercentage }}) on {{ $labels.instance }}",
        "macro": "{$NETSTATE.ACCEPT_QUEUE.FULL.MAX}",
    },
    "listen_overflows_rate": {
        "expr": "rate(netstate_netstat_tcpext_listen_overflows_total[%s]) > {threshold}" % RATE_WINDOW,
        "summary": "{{ printf \"%.3g\" $value }} accept-queue overflows per second on {{ $labels.instance }}",
        "macro": "{$NETSTATE.LISTEN_OVERFLOWS.RATE.MAX}",
    },
    "listen_drops_rate": {
        "expr": "rate(netstate_netstat_tcpext_listen_drops_total[%s]) > {threshold}" % RATE_WINDOW,
        "summary": "{{ printf \"%.3g\" $value }} SYNs dropped by listeners per second on {{ $labels.instance }}",
        "macro": "{$NETSTATE.LISTEN_DROPS.RATE.MAX}",
    },
    "orphans_share": {
        "expr": 'netstate_sockstat_tcp_orphan / ignoring (name) (netstate_sysctl{{name="tcp_max_orphans"}} > 0) '
                "> {threshold}",
        "summary": "Orphaned sockets at {{ $value | humanizePercentage }} of tcp_max_orphans on "
                   "{{ $labels.instance }}",
        "macro": "{$NETSTATE.ORPHANS.SHARE.MAX}",
    },
    "time_wait_overflow_rate": {
        "expr": "rate(netstate_netstat_tcpext_tcp_time_wait_overflow_total[%s]) > {threshold}" % RATE_WINDOW,
        "summary": "{{ printf \"%.3g\" $value }} TIME_WAIT sockets per second destroyed early (tcp_max_tw_buckets) on "
                   "{{ $labels.instance }}",
        "macro": "{$NETSTATE.TIME_WAIT_OVERFLOW.RATE.MAX}",
    },
    "retransmitting_peer": {
        # the health rule: sockets to the peer when their retransmissions average 3 or more, else 0
        "expr": "(netstate_tcp_retransmitting_sockets and netstate_tcp_retransmitting_retransmits "
                "/ netstate_tcp_retransmitting_sockets >= 3) > {threshold}",
        "summary": "{{ $value }} sockets to {{ $labels.address }} stuck retransmitting on {{ $labels.instance }}",
        "macro": "{$NETSTATE.RETRANSMIT.SOCKETS.MAX}",
    },
    "send_queue_stalled_port": {
        "expr": "netstate_tcp_send_queue_port_stalled_sockets > {threshold}",
        "summary": "{{ $value }} sockets with a stalled send queue on {{ $labels.side }} port {{ $labels.port }} on "
                   "{{ $labels.instance }}",
        "macro": "{$NETSTATE.SEND_QUEUE.STALLED.MAX}",
    },
}


class _Dumper(yaml.SafeDumper):
    """Block sequences indented under their key, as yamllint (ansible-lint) wants them."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def number(value) -> str:
    """A threshold as PromQL and Zabbix write it: 100, 0.25."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def alert_name(rule: str) -> str:
    return "Netstate" + "".join(part.capitalize() for part in rule.split("_"))


def load_rules(path: str = RULES_PATH) -> list:
    with open(path, encoding="utf-8") as stream:
        rules = yaml.safe_load(stream)
    names = [rule["name"] for rule in rules]
    if sorted(names) != sorted(RULES):
        raise SystemExit("generate_thresholds: rules without PromQL: %s; PromQL without rule: %s"
                         % (sorted(set(names) - set(RULES)), sorted(set(RULES) - set(names))))
    for rule in rules:
        if rule.get("min") is not None or rule.get("max") is None:
            raise SystemExit("generate_thresholds: rule %s: only max thresholds are translated" % rule["name"])
    return rules


def render_alerts(rules: list) -> str:
    alerts = []
    for rule in rules:
        spec = RULES[rule["name"]]
        threshold = number(rule["max"])
        alerts.append({
            "alert": alert_name(rule["name"]),
            "expr": spec["expr"].format(threshold=threshold),
            "labels": {"rule": rule["name"], "severity": rule["severity"]},
            "annotations": {
                "summary": spec["summary"],
                "description": " ".join(rule["description"].split()) + " Threshold: above %s." % threshold,
            },
        })
    document = {"groups": [{"name": "netstate.tcp", "rules": alerts}]}
    header = ("# Generated by scripts/generate_thresholds.py from plugins/plugin_utils/health_builtin_rules.yml:\n"
              "# edit the rules there and regenerate. One alert per built-in health rule, same threshold and\n"
              "# severity, label rule: <health rule name>.\n")
    return header + "---\n" + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)


def render_template(text: str, rules: list) -> str:
    for rule in rules:
        macro = RULES[rule["name"]]["macro"]
        pattern = re.compile(r"(- macro: '%s'\n\s+value: ')[^']*(')" % re.escape(macro))
        text, count = pattern.subn(r"\g<1>%s\g<2>" % number(rule["max"]), text)
        if count != 1:
            raise SystemExit("generate_thresholds: macro %s found %d times in %s" % (macro, count, TEMPLATE_PATH))
    return text


def render_register_vars(rules: list, template_text: str) -> str:
    template = yaml.safe_load(template_text)["zabbix_export"]["templates"][0]["template"]
    document = {
        "__netstate_zabbix_register_template_name": template,
        "__netstate_zabbix_register_rule_macros": {rule["name"]: RULES[rule["name"]]["macro"] for rule in rules},
    }
    return ("---\n# Generated by scripts/generate_thresholds.py: the template's name and the macro holding each\n"
            "# built-in health rule's threshold (plugins/plugin_utils/health_builtin_rules.yml).\n"
            + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=110))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    rules = load_rules()
    with open(TEMPLATE_PATH, encoding="utf-8") as stream:
        template = stream.read()
    wanted = {ALERTS_PATH: render_alerts(rules), TEMPLATE_PATH: render_template(template, rules),
              REGISTER_VARS_PATH: render_register_vars(rules, template)}
    stale = []
    for path, text in wanted.items():
        current = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as stream:
                current = stream.read()
        if current == text:
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
