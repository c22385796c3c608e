# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The event source netstate.tcp.tcp_health in the real ansible-rulebook, over real sockets.

A process in a private network namespace (its name chosen by the test: a Jinja expression) listens on a
port and leaves connections in CLOSE_WAIT beyond the threshold a rulebook sets through `thresholds`; the
rulebook (print_event) must print exactly one firing event within two intervals of the source's start,
naming the port and the process as `ss -p` sees them, and, once the process closes those sockets (`ss`
shows none left), exactly one resolved event within two intervals. A bad argument stops ansible-rulebook
before the first poll with a message naming the argument and the value. The source's EXAMPLES, as pasted,
start polling.

ansible-rulebook loads the source from the collection on ANSIBLE_COLLECTIONS_PATH (this tree's
.build/collections), by `ansible-galaxy collection list`, and runs its drools rule engine on a Java runtime
(Debian's openjdk-17-jre-headless: scripts/setup.sh).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
from tests.conftest import COLLECTIONS, ROOT, require
from tests.support import sandbox
from tests.support.ss_oracle import rows

pytestmark = pytest.mark.netns

INTERVAL = 3
PORT = 8080
LEAKED = 5
LIMIT = 3
HOST = "eda-test"
# What the process calls itself: a template, passed on as data, never evaluated (docs/security.md)
PROCESS = "{{ 7*7 }}"
STARTED = "netstate.tcp.tcp_health: watching"


def ansible_rulebook() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "ansible-rulebook")
    require(os.access(path, os.X_OK), "needs ansible-rulebook in the virtualenv (tests/requirements.txt)")
    require(shutil.which("java") is not None, "needs a Java runtime for ansible-rulebook (openjdk-17-jre-headless)")
    require(os.access(os.path.join(os.path.dirname(sys.executable), "ansible-galaxy"), os.X_OK),
            "needs ansible-galaxy beside ansible-rulebook")
    return path


def write_rulebook(directory, sources: list) -> None:
    """rulebook.yml (these sources, every netstate event printed) and inventory.yml in directory."""
    rulebook = [{"name": "netstate events", "hosts": "all", "sources": sources,
                 "rules": [{"name": "print every netstate event", "condition": "event.netstate is defined",
                            "action": {"print_event": {}}}]}]
    (directory / "rulebook.yml").write_text(yaml.safe_dump(rulebook, sort_keys=False))
    (directory / "inventory.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")


def rulebook_env() -> dict:
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


class Rulebook:
    """ansible-rulebook running one rulebook: its output lines as they come, with the time each arrived."""

    def __init__(self, tmp_path, source_args: dict):
        write_rulebook(tmp_path, [{"netstate.tcp.tcp_health": source_args}])
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen([ansible_rulebook(), "-r", "rulebook.yml", "-i", "inventory.yml", "-v"],
                                     cwd=str(tmp_path), env=rulebook_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def output(self) -> str:
        return "\n".join(line for _at, line in self.lines)

    def wait(self, what, found, timeout):
        """The first value found(lines) gives that is not None, waited for up to timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = found(list(self.lines))
            if value is not None:
                return value
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self.reader.is_alive()):
                raise AssertionError("%s: not within %s s; ansible-rulebook printed:\n%s"
                                     % (what, timeout, self.output()[-6000:]))
            time.sleep(0.1)

    def events(self):
        """(arrival time, event.netstate) of every event print_event printed."""
        found = []
        for at, line in self.lines:
            if line.startswith("{'meta'"):
                found.append((at, ast.literal_eval(line)["netstate"]))
        return found

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.reader.join(5)


def close_wait_on_port(netns) -> int:
    """The oracle: sockets in CLOSE_WAIT on PORT as ss counts them."""
    out = netns.run(["ss", "-H", "-n", "-t", "-a"]).stdout
    return sum(1 for row in rows(out) if row["lport"] == PORT and row["state"] == "CLOSE_WAIT")


def test_one_firing_then_one_resolved_event(netns, tmp_path):
    ansible_rulebook()
    built = netns.hold_mix({"listeners": [{"address": "127.0.0.1", "port": PORT}],
                            "close_wait": [{"to": ["127.0.0.1", PORT], "count": LEAKED}],
                            "comm_hex": PROCESS.encode().hex()}, tmp_path)
    mix = netns.processes[-1]
    assert close_wait_on_port(netns) == LEAKED
    listeners = netns.run(["ss", "-H", "-n", "-l", "-t", "-p"]).stdout
    assert [(row["lport"], row["pid"], row["process"]) for row in rows(listeners, with_process=True)] == [
        (PORT, built["pid"], PROCESS)]
    # the unit, where listener facts give one, is the listener's (null before they do)
    [entry] = engine.gather(namespace=netns.name, gather_subset=["listeners"])["listeners"]
    rulebook = Rulebook(tmp_path, {"host": HOST, "interval": INTERVAL, "namespace": netns.name,
                                   "thresholds": {"close_wait_per_port": LIMIT}})
    try:
        started = rulebook.wait("the source's start", lambda lines: next(
            (at for at, line in lines if STARTED in line), None), 60)
        fired_at, fired = rulebook.wait("a firing event", lambda _lines: next(iter(rulebook.events()), None),
                                        started + 2 * INTERVAL - time.monotonic())
        assert fired_at - started <= 2 * INTERVAL
        assert {key: value for key, value in fired.items() if key != "at"} == {
            "host": HOST, "rule": "close_wait_per_port", "severity": "critical", "status": "firing",
            "subject": "port %d" % PORT, "value": LEAKED, "limit": LIMIT, "port": PORT, "address": "127.0.0.1",
            "process": PROCESS, "pid": built["pid"], "unit": entry.get("unit")}
        assert fired["at"].endswith("Z") and fired["at"][:4].isdigit()

        mix.stdin.write("close close_wait\n")
        mix.stdin.flush()
        assert mix.stdout.readline().strip() == 'CLOSED {"close_wait": %d}' % LEAKED
        closed = time.monotonic()
        assert close_wait_on_port(netns) == 0
        resolved_at, resolved = rulebook.wait("a resolved event", lambda _lines: next(
            (item for item in rulebook.events() if item[1]["status"] == "resolved"), None), 2 * INTERVAL)
        assert resolved_at - closed <= 2 * INTERVAL
        assert resolved == dict(fired, status="resolved", value=0, at=resolved["at"])
        time.sleep(INTERVAL + 1)  # one more poll: nothing changed, nothing sent
        assert [event for _at, event in rulebook.events()] == [fired, resolved], rulebook.output()[-6000:]
        assert rulebook.proc.poll() is None, rulebook.output()[-6000:]
    finally:
        rulebook.stop()


@pytest.mark.parametrize("args, message", [
    ({"interval": 0}, "netstate.tcp.tcp_health: interval: 0 must be a number of seconds from 1 to 86400"),
    ({"interval": 5, "thresholds": {"close_wait_per_prot": 3}},
     "netstate.tcp.tcp_health: thresholds: rule 'close_wait_per_prot': no such rule"),
])
def test_a_bad_argument_stops_the_rulebook_naming_it(netns, tmp_path, args, message):
    rulebook = Rulebook(tmp_path, dict(args, namespace=netns.name))
    try:
        rulebook.proc.wait(60)
        rulebook.reader.join(5)
    finally:
        rulebook.stop()
    output = rulebook.output()
    assert rulebook.proc.returncode != 0, output[-4000:]
    assert message in output, output[-4000:]
    assert STARTED not in output and rulebook.events() == [], output[-4000:]


def examples() -> list:
    """The source's EXAMPLES, read as ansible-doc reads them: rulebook source entries."""
    path = Path(ROOT) / "extensions/eda/plugins/event_source/tcp_health.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "EXAMPLES":
            return yaml.safe_load(node.value.value)
    raise AssertionError("tcp_health.py has no EXAMPLES")


def test_the_examples_start_as_pasted(netns, tmp_path):
    """Every EXAMPLES entry, unchanged, as the sources of one rulebook: each passes its checks and starts
    polling (the namespace blue exists in the sandbox's private /run/netns)."""
    command = [ansible_rulebook(), "-r", "rulebook.yml", "-i", "inventory.yml", "-v"]
    require(os.path.exists("/usr/bin/unshare"), "needs util-linux (unshare)")
    entries = examples()
    assert len(entries) == 2 and all(list(entry) == ["name", "netstate.tcp.tcp_health"] for entry in entries)
    write_rulebook(tmp_path, entries)
    status, output = sandbox.run(netns.name, tmp_path, ["timeout", "-s", "INT", "10"] + command, rulebook_env(),
                                 namespaces=["blue"], timeout=60)
    assert output.count(STARTED) == 2, output[-6000:]
    assert "watching web1 (namespace blue) every 5 s with 11 rules" in output, output[-6000:]
    assert "Source error" not in output and "Traceback" not in output, output[-6000:]
    assert status == 124, output[-6000:]  # stopped by timeout, not by an error
