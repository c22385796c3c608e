# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Soak: the node_exporter collector every 2 s beside connection churn on a real fleet host.

    python3 tests/fleet/soak.py --duration 1800            # make soak (own one-host fleet)
    tests/fleet/test_soak.py                               # the 2-minute version, on the session fleet

What runs
    * node_exporter and the collector installed by the netstate.tcp.node_exporter role (Debian
      packages through an apt proxy on the bridge gateway), so cron also runs the collector
      once a minute: a second writer of the same textfile, as on a real host.
    * loadgen.py ``churn``: connections opened and closed (FIN, so each leaves a TIME_WAIT) at --rate
      per second for the whole run, in windows of 120 s (loadgen refuses more connections in one
      run than the ephemeral port range holds); TIME_WAIT climbs to about rate x 60.
    * on the host, a probe runs the role's exact collector command every --interval seconds as a
      child process: its peak RSS (``wait4`` rusage of that child), the most descriptors it held
      (``/proc/PID/fd`` sampled every 5 ms while it runs), its exit code and duration, and the
      textfile's size after it.
    * on the controller, a scraper GETs node_exporter's /metrics without pause and parses every
      scrape with prometheus_client's parser: a textfile read half-written would fail to parse
      (node_textfile_scrape_error 1) or lose series.
    * node_exporter's own RSS and descriptors every 5 s (it is the long-lived process).

Criteria (all must hold; --json writes the figures)
    * every collector run exits 0;
    * every scrape parses, with node_textfile_scrape_error 0, netstate_collector_success 1 and all
      11 netstate_tcp_connections series;
    * flat: the last quarter's maximum of the collector's peak RSS within 10 % of the first
      quarter's, its descriptors at most 2 above the first quarter's maximum (sampled every 5 ms, one
      held for less can be missed), the textfile's size within
      25 % (churn moves ports and peers), node_exporter's RSS within 25 % and the least descriptors it
      held in the last quarter at most 2 above the least in the first (it is scraped without pause, so
      a sample can land while its collectors have files open; what a leak leaves is the floor rising).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for path in (str(HERE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

TEXTFILE = "/var/lib/prometheus/node-exporter/netstate_tcp.prom"
COLLECTOR_DIR = "/usr/local/lib/netstate"
CHURN_PORT = 18186
CHURN_WINDOW = 120

# Runs on the host: the collector command every INTERVAL s for DURATION s, one JSON line per run.
PROBE = r'''
import json, os, subprocess, sys, time
interval, duration, textfile, command = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
end = time.monotonic() + duration
run = 0
while time.monotonic() < end:
    started = time.monotonic()
    child = subprocess.Popen(["/bin/sh", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fds = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        try:
            fds = max(fds, len(os.listdir("/proc/%d/fd" % child.pid)))
        except OSError:
            pass
        time.sleep(0.005)
    stderr = child.stderr.read().decode(errors="replace")[-500:]
    child.stderr.close()
    try:
        size = os.stat(textfile).st_size
    except OSError:
        size = -1
    print(json.dumps({"run": run, "t": round(started, 3), "rc": os.waitstatus_to_exitcode(status),
                      "maxrss_kib": usage.ru_maxrss, "fds": fds, "size": size,
                      "seconds": round(time.monotonic() - started, 3), "stderr": stderr}), flush=True)
    run += 1
    time.sleep(max(0.0, started + interval - time.monotonic()))
'''

# node_exporter's resident set and descriptors, one JSON line.
EXPORTER = (
    "pid=$(pgrep -o -x prometheus-node || pgrep -o -f prometheus-node-exporter); "
    "echo \"{\\\"rss_kib\\\": $(awk '/^VmRSS/ {print $2}' /proc/$pid/status), "
    "\\\"fds\\\": $(ls /proc/$pid/fd | wc -l)}\""
)


def install_node_exporter(fleet, host, workdir):
    """netstate.tcp.node_exporter on host (idempotent); returns the collector command cron runs."""
    from fleetcheck import run_playbook  # pylint: disable=import-outside-toplevel

    playbook = Path(workdir) / "node_exporter.yml"
    playbook.write_text(json.dumps([{
        "name": "netstate.tcp.node_exporter for the soak", "hosts": "all", "gather_facts": False,
        "tasks": [{"name": "Apply the role",
                   "ansible.builtin.include_role": {"name": "netstate.tcp.node_exporter"}}]}]))
    # apt reaches the mirror through the fleet's own proxy (fleet.py configures every host).
    result = run_playbook(fleet, playbook, "-l", host, timeout=900)
    if result.returncode != 0:
        raise RuntimeError("node_exporter role failed on %s:\n%s" % (host, result.stdout[-4000:]))
    line = fleet.exec(host, "grep -v '^#' /etc/cron.d/netstate-tcp-textfile | grep python3").stdout.strip()
    return line.split(None, 6)[6]


def scrape_text(address, timeout=10):
    """One GET /metrics from node_exporter on address, the body as text."""
    connection = http.client.HTTPConnection(address, 9100, timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def parse_scrape(text):
    """{name: {labels: value}} of one /metrics body; raises on anything the parser refuses."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return values


class Scraper(threading.Thread):
    """GET /metrics from node_exporter in a loop; every scrape is parsed and checked."""

    def __init__(self, address):
        super().__init__(daemon=True)
        self.address = address
        self.stopping = threading.Event()
        self.scrapes = 0
        self.bad = []          # (time, reason) of scrapes that failed a check
        self.connect_errors = 0

    def run(self):
        while not self.stopping.is_set():
            try:
                body = scrape_text(self.address)
            except OSError:
                self.connect_errors += 1
                time.sleep(0.2)
                continue
            self.scrapes += 1
            reason = self.check(body)
            if reason:
                self.bad.append((round(time.time(), 3), reason))
            time.sleep(0.05)

    @staticmethod
    def check(body):
        try:
            values = parse_scrape(body)
        except Exception as error:  # pylint: disable=broad-except  # the parser's refusal is the finding
            return "unparsable: %s" % error
        errors = list(values.get("node_textfile_scrape_error", {}).values())
        if errors != [0]:
            return "node_textfile_scrape_error %r" % errors
        if values.get("netstate_collector_success", {}).get(()) != 1:
            return "netstate_collector_success %r" % values.get("netstate_collector_success")
        if len(values.get("netstate_tcp_connections", {})) != 11:
            return "netstate_tcp_connections has %d series" % len(values.get("netstate_tcp_connections", {}))
        return None


def quarters(values, pick=max):
    """(pick of the first quarter, pick of the last quarter) of a list: their maxima, or with min their floors."""
    quarter = max(len(values) // 4, 1)
    return pick(values[:quarter]), pick(values[-quarter:])


def evaluate(runs, exporter, scraper):
    """The figures and the list of criteria that failed."""
    failed = []
    figures = {"runs": len(runs), "scrapes": scraper.scrapes, "bad_scrapes": scraper.bad[:20],
               "bad_scrape_count": len(scraper.bad), "scrape_connect_errors": scraper.connect_errors}
    if len(runs) < 8 or len(exporter) < 4:
        failed.append("too few samples: %d collector runs, %d node_exporter samples" % (len(runs), len(exporter)))
        return figures, failed
    # descriptors are sampled every 5 ms: one held for less may be missed in a quarter, hence + 2
    for key, limit, absolute in (("maxrss_kib", 1.10, 0), ("fds", 1.0, 2), ("size", 1.25, 0)):
        series = [run[key] for run in runs]
        first, last = quarters(series)
        figures[key] = {"first_quarter_max": first, "last_quarter_max": last, "min": min(series), "max": max(series)}
        if last > first * limit + absolute:
            failed.append("collector %s grew: last quarter max %s > first quarter max %s x %.2f + %d"
                          % (key, last, first, limit, absolute))
    seconds = [run["seconds"] for run in runs]
    figures["collector_seconds"] = {"median": sorted(seconds)[len(seconds) // 2], "max": max(seconds)}
    series = [sample["rss_kib"] for sample in exporter]
    first, last = quarters(series)
    figures["node_exporter_rss_kib"] = {"first_quarter_max": first, "last_quarter_max": last,
                                        "min": min(series), "max": max(series)}
    if last > first * 1.25:
        failed.append("node_exporter rss_kib grew: last quarter max %s > first quarter max %s x 1.25" % (last, first))
    # node_exporter is scraped without pause: a sample lands mid-scrape, with the files its collectors
    # have open at that instant (3 more seen); a leak is what stays open, so the quarters' floors compare
    series = [sample["fds"] for sample in exporter]
    first, last = quarters(series)
    first_floor, last_floor = quarters(series, min)
    figures["node_exporter_fds"] = {"first_quarter_max": first, "last_quarter_max": last,
                                    "first_quarter_min": first_floor, "last_quarter_min": last_floor,
                                    "min": min(series), "max": max(series)}
    if last_floor > first_floor + 2:
        failed.append("node_exporter fds grew: last quarter min %s > first quarter min %s + 2"
                      % (last_floor, first_floor))
    bad_runs = [run for run in runs if run["rc"] != 0]
    if bad_runs:
        failed.append("%d collector runs failed, first: %r" % (len(bad_runs), bad_runs[0]))
    if scraper.bad:
        failed.append("%d of %d scrapes failed a check, first: %r"
                      % (len(scraper.bad), scraper.scrapes, scraper.bad[0]))
    if scraper.scrapes < len(runs):
        failed.append("only %d scrapes for %d collector runs" % (scraper.scrapes, len(runs)))
    return figures, failed


def soak(fleet, host, duration, interval=2.0, rate=200, workdir="/tmp", log=print):
    """Runs the soak on host of fleet; returns (figures, failed criteria)."""
    command = install_node_exporter(fleet, host, workdir)
    log("soak: node_exporter and the collector installed on %s; collector: %s" % (host, command))
    fleet.exec(host, command)  # a first textfile before node_exporter's first scrape
    scraper = Scraper(fleet.address(host))
    exporter = []
    stopping = threading.Event()
    windows = []

    def churn():
        # loadgen refuses more FIN-closed connections than the port range holds (each leaves a
        # TIME_WAIT), so the churn runs in windows of CHURN_WINDOW s, one after the other.
        while not stopping.is_set():
            with fleet.loadgen(host, "churn", port=CHURN_PORT, rate=rate, duration=CHURN_WINDOW) as load:
                windows.append(load.info)
                stopping.wait(CHURN_WINDOW)

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()

    def watch_exporter():
        while not stopping.wait(5):
            result = fleet.exec(host, EXPORTER, check=False)
            if result.returncode == 0:
                exporter.append(json.loads(result.stdout))

    watcher = threading.Thread(target=watch_exporter, daemon=True)
    runs = []
    try:
        scraper.start()
        watcher.start()
        probe = fleet.podman.popen("exec", "-i", fleet.container(host), "python3", "-c", PROBE, str(interval),
                                   str(duration), TEXTFILE, command, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for raw in probe.stdout:
            run = json.loads(raw)
            runs.append(run)
            if run["run"] % 30 == 0:
                log("soak: run %(run)d rc=%(rc)d maxrss=%(maxrss_kib)d KiB fds=%(fds)d size=%(size)d "
                    "%(seconds).3fs" % run + "; scrapes %d, bad %d" % (scraper.scrapes, len(scraper.bad)))
        probe.wait()
        if probe.returncode != 0:
            raise RuntimeError("soak probe failed: %s" % probe.stderr.read().decode(errors="replace"))
    finally:
        stopping.set()
        scraper.stopping.set()
        scraper.join(15)
        churner.join(60)
    figures, failed = evaluate(runs, exporter, scraper)
    figures.update(duration_s=duration, interval_s=interval, churn_rate=rate, host=host,
                   churn_windows=len(windows), churn=windows[:1],
                   samples={"collector": runs, "node_exporter": exporter})
    return figures, failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--duration", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between collector runs (default 2)")
    parser.add_argument("--rate", type=int, default=200, help="churn: connections per second (default 200)")
    parser.add_argument("--name", default="soak%d" % (os.getpid() % 100000), help="fleet name")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    import fleet as fleet_module  # pylint: disable=import-outside-toplevel

    the_fleet = fleet_module.Fleet(name=args.name, owner_pid=os.getpid())
    try:
        the_fleet.up(1)
        with tempfile.TemporaryDirectory() as workdir:
            figures, failed = soak(the_fleet, the_fleet.hosts[0], args.duration, args.interval, args.rate, workdir,
                                   log=lambda text: print(text, file=sys.stderr, flush=True))
    finally:
        the_fleet.down()
    figures["failed"] = failed
    text = json.dumps(figures, indent=2, sort_keys=True)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    for line in failed:
        print("soak: FAILED: " + line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
