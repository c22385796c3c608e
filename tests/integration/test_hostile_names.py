# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real processes with hostile names, end to end: the health playbook and the collector.

In each private network namespace a process names itself with prctl(PR_SET_NAME) (ctypes, in
tests/support/sockmix.py) and listens with a full accept queue, so the accept_queue_full rule names
it in every report. The reports are read back by real parsers (tests/support/hostile.py): the
Markdown by a CommonMark/GFM parser (no raw HTML from data, every row with its cells), the JUnit by
an XML parser, the Zabbix discovery by json, the Prometheus text by prometheus_client's parser.
"""

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape
from tests.conftest import COLLECTIONS, require
from tests.integration.test_health_role import inventory, run_playbook
from tests.support.hostile import markdown_problems, markdown_tables, parse_junit, parse_lld, parse_prometheus, \
    promtool_available, promtool_problems

pytestmark = pytest.mark.netns

NAMES = {
    "img": b"<img src=x>|a",
    # pipe, newline, right-to-left override, quote, backslash, markup, an entity, a byte that is not UTF-8
    "bytes": b'|\n\xe2\x80\xae"\\<b>&\xff',
    # longer than the kernel's 15 bytes: what is left is still markup, and a UTF-8 sequence is cut
    "long": b"<script>alert(\xe2\x80\xae1)</script>",
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from tests.conftest import Namespace, netns_prerequisites

    netns_prerequisites()
    made = {}
    try:
        for host, raw in NAMES.items():
            namespace = made[host] = Namespace(prefix="nsx")
            namespace.built = namespace.hold_mix(
                {"comm_hex": raw.hex(), "listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 16}],
                 "accept_full": [{"address": "127.0.0.1", "port": 9000, "backlog": 2, "clients": 6}]},
                tmp_path_factory.mktemp(host))
            namespace.comm = bytes.fromhex(namespace.built["comm_hex"])
        yield made
    finally:
        for namespace in made.values():
            namespace.close()


def test_the_kernel_keeps_the_names_as_set(hostile):
    assert hostile["img"].comm == NAMES["img"]
    assert hostile["bytes"].comm == NAMES["bytes"]
    assert hostile["long"].comm == NAMES["long"][:15] == b"<script>alert(\xe2"
    for namespace in hostile.values():
        with open("/proc/%d/comm" % namespace.built["pid"], "rb") as handle:
            assert handle.read() == namespace.comm + b"\n"


def subject(namespace):
    """The listener as the rule names it, with the process name as the engine reads it."""
    return "127.0.0.1:9000 %d/%s" % (namespace.built["pid"], escape.name_text(namespace.comm))


@pytest.fixture(scope="module")
def health_run(hostile, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile-health")
    path = inventory(tmp / "inventory.yml",
                     {host: {"netstate_health_gather_args": {"namespace": namespace.name}}
                      for host, namespace in hostile.items()})
    report_dir = tmp / "report"
    done = run_playbook(path, "-e", "netstate_health_report_dir=%s" % report_dir)
    return done, report_dir


def test_health_playbook_names_each_process_on_one_line(hostile, health_run):
    done, _report_dir = health_run
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    for namespace in hostile.values():
        line = "critical: accept_queue_full [%s]: 1.5 > max 1" % escape.log_line(subject(namespace))
        assert line in done.stdout, line


def test_health_markdown_has_no_html_from_the_names_and_intact_rows(hostile, health_run):
    _done, report_dir = health_run
    text = (report_dir / "health.md").read_text(encoding="utf-8")
    assert markdown_problems(text) == []
    rows = markdown_tables(text)[0]
    assert rows[0] == ["Host", "Result", "Critical", "Warning", "Error", "No data", "OK", "Violations"]
    assert [len(row) for row in rows] == [8] * (1 + len(hostile))
    by_host = {row[0]: row for row in rows[1:]}
    for host, namespace in hostile.items():
        assert by_host[host][1:3] == ["FAILED", "1"]
        # what a reader of the rendered page sees: the name, every hostile character written out
        violations = by_host[host][7].split("\n")  # one line per violation, the name kept on its line
        shown = escape.log_line(subject(namespace))
        assert "critical: accept_queue_full [%s]: 1.5 > max 1" % shown in violations
        assert "warning: accept_queue_saturation [%s]: 1.5 > max 0.8" % shown in violations


def test_health_junit_is_well_formed_xml_naming_each_process(hostile, health_run):
    _done, report_dir = health_run
    root = parse_junit((report_dir / "health.junit.xml").read_text(encoding="utf-8"))
    failures = {case.get("classname"): case.find("failure") for case in root.iter("testcase")
                if case.find("failure") is not None}
    assert sorted(failures) == sorted(hostile)
    for host, namespace in hostile.items():
        message = "critical: accept_queue_full [%s]: 1.5 > max 1" % escape.log_line(subject(namespace))
        assert failures[host].get("message") == message


def test_health_json_keeps_the_name_as_data(hostile, health_run):
    _done, report_dir = health_run
    data = json.loads((report_dir / "health.json").read_text(encoding="utf-8"))
    for entry in data["hosts"]:
        failing = [result for result in entry["results"] if result["status"] == "critical"]
        assert [result["subject"] for result in failing] == [subject(hostile[entry["host"]])]


def collect(namespace, *args):
    done = subprocess.run(["ip", "netns", "exec", namespace.name, sys.executable, "-m",
                           "ansible_collections.netstate.tcp.plugins.module_utils._engine.collect", *args],
                          capture_output=True, timeout=120, check=False, cwd=COLLECTIONS)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8")  # strict: the output is valid UTF-8


@pytest.mark.parametrize("host", sorted(NAMES))
def test_collector_zabbix_discovery_is_json_with_intact_macros(hostile, host):
    namespace = hostile[host]
    rows = parse_lld(collect(namespace, "--format", "zabbix-discovery"))
    by_port = {row["{#PORT}"]: row for row in rows}
    assert sorted(by_port) == ["8080", "9000"]
    # the name as the facts hold it (name_text), shown as visible() shows it, its own backslashes doubled
    assert by_port["9000"]["{#PROCESS}"] == escape.visible(escape.name_text(namespace.comm).replace("\\", "\\\\"))
    assert "\n" not in by_port["9000"]["{#PROCESS}"] and "\u202e" not in by_port["9000"]["{#PROCESS}"]


@pytest.mark.parametrize("host", sorted(NAMES))
def test_collector_prometheus_text_parses_with_the_label_intact(hostile, host):
    namespace = hostile[host]
    text = collect(namespace, "--format", "prometheus", "--gather-subset", "default,processes")
    families = parse_prometheus(text)
    names = {sample.labels["process"] for sample in families["netstate_process_connections"].samples}
    assert escape.visible(escape.name_text(namespace.comm), keep="\t\n") in names
    queue = {sample.labels["port"]: sample.value for sample in families["netstate_tcp_listen_queue"].samples}
    assert queue["9000"] == 3
    require(promtool_available(), "needs promtool (Debian package prometheus, scripts/setup.sh installs it)")
    assert promtool_problems(text) == []


def test_promtool_sees_bad_escaping():
    """The oracle is not blind: an unescaped quote and a byte that is not UTF-8 are parse errors to it."""
    require(promtool_available(), "needs promtool (Debian package prometheus, scripts/setup.sh installs it)")
    family = "# HELP netstate_x A test.\n# TYPE netstate_x gauge\n"
    assert promtool_problems(family + 'netstate_x{process="a\\"b\\\\\\n\\\\xff"} 1\n') == []
    assert promtool_problems(family + 'netstate_x{process="a"b"} 1\n') != []
    assert promtool_problems(family.encode() + b'netstate_x{process="\xff"} 1\n') != []


def test_listener_facts_report_the_name_as_text(hostile, tmp_path):
    """listener_facts (community.general's keys) return the name; bytes that are not UTF-8 as \\xNN."""
    playbook = tmp_path / "play.yml"
    playbook.write_text("\n".join([
        "- hosts: all", "  gather_facts: false", "  tasks:",
        "    - netstate.tcp.listener_facts:", "        namespace: \"{{ namespace }}\"",
        "    - ansible.builtin.copy:", "        content: \"{{ ansible_facts.tcp_listen | to_json }}\"",
        "        dest: \"%s/{{ inventory_hostname }}.json\"" % tmp_path, "        mode: \"0600\"", ""]))
    path = inventory(tmp_path / "inventory.yml", {host: {"namespace": namespace.name}
                                                  for host, namespace in hostile.items()})
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", path,
                           str(playbook)], capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for host, namespace in hostile.items():
        listeners = json.loads((tmp_path / ("%s.json" % host)).read_text(encoding="utf-8"))
        full = next(item for item in listeners if item["port"] == 9000)
        assert full["name"] == escape.name_text(namespace.comm)
        assert full["pid"] == namespace.built["pid"] and full["queue"] == 3
