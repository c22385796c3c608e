# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real failures in the middle of a run, on the fleet of real SSH hosts.

* a host stopped (podman stop) while netstate.tcp.gather / netstate.tcp.health run on it: the module
  is seen running on the host first (its python3 under the pipelined SSH session), and the long
  sample_interval keeps it in flight;
* the controller's SSH connection killed inside the host (SIGKILL to the sshd session processes)
  while a module runs;
* node_exporter's textfile directory on a full tmpfs, mounted in the host's own user and mount
  namespaces from the controller (nsenter --user --mount: no capability is added to the container);
* an unwritable report directory on the controller: a read-only bind mount in a private mount
  namespace that ansible-playbook runs in (root ignores mode bits, not a read-only mount);
* two health runs writing one report directory at once, the files parsed on every version read.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import threading
import time
from xml.etree import ElementTree

import pytest
import yaml
from fleetcheck import GATHER, ansible_binary, playbook_env
from markdown_it import MarkdownIt
from soak import TEXTFILE, parse_scrape, scrape_text

from tests.conftest import ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.fleet

HEALTH = "netstate.tcp.health"
# every built-in health rule is one testcase per host in the JUnit report
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins", "plugin_utils",
                       "health_builtin_rules.yml")) as _rules:
    RULES = len(yaml.safe_load(_rules))
# With pipelining the module is /usr/bin/python3 reading its payload from the SSH session's stdin.
MODULE = "^/usr/bin/python3$"


def start_playbook(fleet, playbook, *args):
    """ansible-playbook in the background (stdout and stderr merged)."""
    command = [ansible_binary(), "-i", str(fleet.inventory), playbook, *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=playbook_env(), cwd=ROOT)


def wait_for_module(fleet, host, process, timeout=60):
    """Until the module runs on host (pgrep inside the container); fails if the play ended first."""
    def running():
        if process.poll() is not None:
            return "the play ended"
        return fleet.exec(host, "pgrep -f '%s'" % MODULE, check=False).stdout.split()

    try:
        found = wait_for("the module runs on %s" % host, running, timeout, interval=0.2)
    except AssertionError:
        process.kill()
        raise
    assert found != "the play ended", "the play ended before the module ran on %s:\n%s" % (
        host, process.stdout.read()[-3000:])
    return found


def start_health(fleet, hosts, victim, report):
    """netstate.tcp.health over hosts in the background with a long sample interval, once its module
    runs on victim: the moment to break victim."""
    play = start_playbook(fleet, HEALTH, "-l", ",".join(hosts), "-e", "netstate_health_report_dir=%s" % report,
                          "-e", "netstate_health_sample_interval=10")
    wait_for_module(fleet, victim, play)
    return play


def finish(process, timeout=300):
    out, _stderr = process.communicate(timeout=timeout)
    return process.returncode, out


def recap(out):
    rows = {}
    for line in out.split("PLAY RECAP", 1)[1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line)
        if match:
            rows[match.group(1)] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return rows


# ------------------------------------------------------------------------------ host stopped mid-run

def test_host_stopped_while_gather_runs(fleet, tmp_path):
    hosts = fleet.hosts[:3]
    victim = hosts[1]
    play = start_playbook(fleet, GATHER, "-l", ",".join(hosts), "-e", "netstate_gather_report_dir=%s" % tmp_path,
                          "-e", '{"netstate_gather_args": {"sample_interval": 10}}')
    wait_for_module(fleet, victim, play)
    stopped = time.monotonic()
    fleet.stop_host(victim)
    code, out = finish(play)
    print("gather ended %.1fs after the stop" % (time.monotonic() - stopped))
    assert code == 2, out[-4000:]
    report = json.loads((tmp_path / "fleet-report.json").read_text())
    rows = {row["host"]: row for row in report["rows"]}
    assert rows[victim]["status"] in ("unreachable", "failed"), rows[victim]
    assert report["rows"][0]["host"] == victim  # worst first
    for host in set(hosts) - {victim}:
        assert rows[host]["status"] == "ok", rows[host]
        assert rows[host]["states"]["LISTEN"] >= 1
    assert victim in (tmp_path / "fleet-report.md").read_text()
    assert recap(out)[victim].get("failed", 0) + recap(out)[victim].get("unreachable", 0) >= 1
    assert all(recap(out)[host]["failed"] == 0 for host in set(hosts) - {victim}), out[-3000:]
    print("stopped mid-gather:", rows[victim])


def test_host_stopped_while_health_runs(fleet, tmp_path):
    hosts = fleet.hosts[:3]
    victim = hosts[2]
    report = tmp_path / "report"
    play = start_health(fleet, hosts, victim, report)
    fleet.stop_host(victim)
    code, out = finish(play)
    assert code == 2, out[-4000:]
    document = json.loads((report / "health.json").read_text())
    entries = {entry["host"]: entry for entry in document["hosts"]}
    assert entries[victim]["status"] == "unreachable", entries[victim]
    assert all(entries[host]["status"] in ("passed", "failed") and entries[host]["results"]
               for host in set(hosts) - {victim}), document
    assert document["totals"]["unreachable"] == 1 and document["healthy"] is False
    root = ElementTree.parse(report / "health.junit.xml").getroot()
    errors = [case for case in root.iter("testcase")
              if case.get("classname") == victim and case.find("error") is not None]
    assert len(errors) == RULES
    assert "| %s | UNREACHABLE |" % victim in (report / "health.md").read_text()
    print("stopped mid-health:", entries[victim]["message"])


# ------------------------------------------------------------------------------ SSH connection killed

KILL_SESSIONS = "for p in $(pgrep -x sshd); do [ \"$p\" = 1 ] || kill -KILL \"$p\"; done"


def sshd_processes(fleet, host):
    """The pids of host's live sshd processes (a killed one is listed as a zombie until reaped: left out)."""
    listed = fleet.exec(host, "ps -o pid=,stat= -C sshd").stdout.split("\n")
    return [line.split()[0] for line in listed if line.strip() and not line.split()[1].startswith("Z")]


def test_ssh_connection_killed_mid_task(fleet, tmp_path):
    hosts = fleet.hosts[:2]
    victim = hosts[0]
    report = tmp_path / "report"
    play = start_health(fleet, hosts, victim, report)
    fleet.exec(victim, KILL_SESSIONS)

    def only_the_listening_sshd():
        left = sshd_processes(fleet, victim)
        assert left == ["1"], left
        return left

    wait_for("only the listening sshd is left on %s" % victim, only_the_listening_sshd, 10, interval=0.2)
    code, out = finish(play)
    assert code == 2, out[-4000:]
    assert "UNREACHABLE" in out or "unreachable" in out, out[-3000:]
    document = json.loads((report / "health.json").read_text())
    entries = {entry["host"]: entry for entry in document["hosts"]}
    assert entries[victim]["status"] == "unreachable", entries[victim]
    assert entries[hosts[1]]["status"] in ("passed", "failed") and entries[hosts[1]]["results"]
    print("ssh killed:", entries[victim]["message"])
    # the next run reconnects (a new ControlMaster)
    again = subprocess.run([ansible_binary(), "-i", str(fleet.inventory), GATHER, "-l", victim,
                            "-e", "netstate_gather_report_dir=%s" % (tmp_path / "again")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=playbook_env(),
                           cwd=ROOT, timeout=300, check=False)
    assert again.returncode == 0, again.stdout[-3000:]


# ------------------------------------------------------------------------------ full textfile directory

def in_mount_namespace(fleet, host, command):
    """command in host's user and mount namespaces (nsenter from the controller): as the host's own
    root, with the capabilities it holds in its user namespace only (nothing outside, no podman
    option changed). Real root without --user may not mount there: the mount namespace belongs to
    the host's user namespace."""
    pid = fleet.podman.text("inspect", "--format", "{{.State.Pid}}", fleet.container(host))
    return subprocess.run(["nsenter", "--target", pid, "--user", "--mount", "--", "sh", "-c", command],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, check=False)


def test_textfile_directory_full(fleet, node_exporter_host):
    host, command = node_exporter_host["host"], node_exporter_host["command"]
    directory = TEXTFILE.rsplit("/", 1)[0]
    fleet.exec(host, "mv /etc/cron.d/netstate-tcp-textfile /etc/netstate-tcp-textfile.cron-off")
    mounted = in_mount_namespace(fleet, host, "mount -t tmpfs -o size=64k,mode=0755 netstate-full " + directory)
    assert mounted.returncode == 0, mounted.stdout
    try:
        fleet.exec(host, command)
        good = fleet.exec(host, "cat " + TEXTFILE).stdout
        assert parse_scrape(good)["netstate_collector_success"][()] == 1
        filled = fleet.exec(host, "dd if=/dev/zero of=%s/fill bs=4096 2>&1; df -k --output=avail %s | tail -1"
                            % (directory, directory), check=False)
        assert "No space left on device" in filled.stdout and filled.stdout.split()[-1] == "0", filled.stdout

        # 1. full: the new textfile does not fit, nor a failure one; the spare kept beside it is renamed over it
        first = fleet.exec(host, command, check=False)
        assert first.returncode == 1, first
        assert "cannot write --output %s: No space left on device" % TEXTFILE in first.stderr, first.stderr
        failed = fleet.exec(host, "cat " + TEXTFILE).stdout
        assert parse_scrape(failed)["netstate_collector_success"][()] == 0
        assert "netstate_tcp_connections" not in failed  # no stale numbers
        scraped = parse_scrape(scrape_text(fleet.address(host)))
        assert scraped["netstate_collector_success"][()] == 0
        assert list(scraped["node_textfile_scrape_error"].values()) == [0]

        # 2. the stale textfile's pages were freed by that rename: fill them too; with no spare left
        # and not a byte free, the file stays exactly as it was
        refilled = fleet.exec(host, "dd if=/dev/zero of=%s/fill2 bs=4096 2>&1; df -k --output=avail %s | tail -1"
                              % (directory, directory), check=False)
        assert refilled.stdout.split()[-1] == "0", refilled.stdout
        second = fleet.exec(host, command, check=False)
        assert second.returncode == 1
        assert "nor a failure textfile: %s is left as it was" % TEXTFILE in second.stderr, second.stderr
        assert fleet.exec(host, "cat " + TEXTFILE).stdout == failed
        listing = fleet.exec(host, "ls -A " + directory).stdout.split()
        assert sorted(listing) == ["fill", "fill2", "netstate_tcp.prom"], listing  # no temporary file left

        # 3. room again: a whole textfile, success 1, the spare made again
        fleet.exec(host, "rm %s/fill %s/fill2" % (directory, directory))
        fleet.exec(host, command)
        assert parse_scrape(fleet.exec(host, "cat " + TEXTFILE).stdout)["netstate_collector_success"][()] == 1
        assert fleet.exec(host, "ls -A " + directory).stdout.split() == [".netstate_tcp.prom.failed",
                                                                         "netstate_tcp.prom"]
        print("full textfile directory:", first.stderr.strip(), "|", second.stderr.strip())
    finally:
        in_mount_namespace(fleet, host, "umount " + directory)
        fleet.exec(host, "mv /etc/netstate-tcp-textfile.cron-off /etc/cron.d/netstate-tcp-textfile", check=False)
        fleet.exec(host, command, check=False)


# ------------------------------------------------------------------------------ unwritable report directory

def read_only(directory, argv):
    """argv in a private mount namespace where directory is a read-only bind mount of itself."""
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(directory),
                           *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=playbook_env(), cwd=ROOT, timeout=600, check=False)


def test_unwritable_report_directory(fleet, tmp_path):
    """The roles check their report directory on the controller first: a read-only one ends the play naming
    the role's variable, before any fleet host is contacted."""
    hosts = fleet.hosts[:2]
    report = tmp_path / "report"
    report.mkdir(mode=0o755)
    report.chmod(0o755)
    base = [ansible_binary(), "-i", str(fleet.inventory), "-l", ",".join(hosts)]
    health = read_only(report, base + [HEALTH, "-e", "netstate_health_report_dir=%s" % report])
    assert health.returncode == 2, health.stdout[-4000:]
    assert ('netstate_health_report_dir "%s": the report directory %s cannot be written ([Errno 30] Read-only '
            'file system' % (report, report)) in health.stdout, health.stdout[-3000:]
    assert "TASK [netstate.tcp.health : Check the TCP health thresholds]" not in health.stdout  # no host checked
    gather = read_only(report, base + [GATHER, "-e", "netstate_gather_report_dir=%s" % report])
    assert gather.returncode == 2, gather.stdout[-4000:]
    assert ('netstate_gather_report_dir "%s": the report directory %s cannot be written ([Errno 30] Read-only '
            'file system' % (report, report)) in gather.stdout, gather.stdout[-3000:]
    assert "TASK [netstate.tcp.gather : Gather TCP connection facts]" not in gather.stdout  # no host gathered
    assert list(report.iterdir()) == []
    print("read-only report dir:", [line for line in (health.stdout + gather.stdout).splitlines()
                                    if "fatal:" in line or "msg:" in line][:6])


# ------------------------------------------------------------------------------ two runs, one directory

MARKDOWN = MarkdownIt("commonmark").enable("table")


def parse_markdown(text):
    """Host names of the summary table; fails unless the headline and every row are whole."""
    assert text.endswith("\n")
    match = re.match(r"## netstate\.tcp health: \d+ of (\d+) hosts passed", text)
    assert match, text[:200]
    tokens = MARKDOWN.parse(text)
    rows, cells, row = [], 0, None
    for token in tokens:
        if token.type == "tr_open":
            row, cells = [], 0
        elif token.type in ("td_open", "th_open"):
            cells += 1
        elif token.type == "inline" and row is not None and cells == 1:
            row.append(token.content)
        elif token.type == "tr_close":
            assert cells == 8, (cells, text)
            rows.append(row[0] if row else "")
            row = None
    hosts = rows[1:]
    assert len(hosts) == int(match.group(1)), text
    return sorted(hosts)


def parse_all(directory):
    """{format: host list} of each report file as it is now, each through its own parser."""
    found = {}
    for name, parse in (("health.json", lambda t: sorted(h["host"] for h in json.loads(t)["hosts"])),
                        ("health.junit.xml", lambda t: sorted(s.get("name") for s in ElementTree.fromstring(t))),
                        ("health.md", parse_markdown),
                        ("health.html", lambda t: sorted(html.unescape(cell) for cell in
                                                         re.findall(r'<td class="host">(.*?)</td>', t)))):
        try:
            with open(directory / name, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            continue
        found[name] = parse(text)
    return found


def test_two_health_runs_write_one_directory(fleet, tmp_path):
    report = tmp_path / "report"
    one, two = [fleet.hosts[0]], fleet.hosts[:3]
    seen, errors, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                for name, hosts in parse_all(report).items():
                    seen.add((name, tuple(hosts)))
            except Exception as error:  # pylint: disable=broad-except  # every refusal is a finding
                errors.append(repr(error))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        runs = [start_playbook(fleet, HEALTH, "-l", ",".join(hosts), "-e", "netstate_health_report_dir=%s" % report,
                               "-e", "netstate_health_sample_interval=0")
                for hosts in (one, two)]
        results = [finish(run) for run in runs]
        assert all(code in (0, 2) for code, _out in results), [out[-2000:] for _code, out in results]
        final = parse_all(report)
        assert len(final) == 4
        assert len({tuple(hosts) for hosts in final.values()}) == 1, final  # one run's set, not a mix
        assert list(final.values())[0] in (sorted(one), sorted(two))
    finally:
        stop.set()
        thread.join(10)
    assert errors == [], errors[:5]
    assert {hosts for _name, hosts in seen} <= {tuple(sorted(one)), tuple(sorted(two))}
    assert sorted(p.name for p in report.iterdir()) == ["health.html", "health.json", "health.junit.xml", "health.md"]
    print("concurrent runs: %d distinct versions read, all whole" % len(seen))
