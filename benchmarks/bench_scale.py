# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fleet scale: gather and health at 20, 50 and 100 hosts against the naive playbooks, side by side.

One podman fleet of the largest size (tests/fleet/fleet.py; 100 hosts take a /25 of 198.18.0.0/24),
every host with a load of its own (ESTABLISHED pairs and a TIME_WAIT flood from tests/fleet/loadgen.py).
For each size N (the first N hosts, with --limit) and each forks setting, it runs, alternating:
`netstate.tcp.gather` against benchmarks/naive_gather.yml (netstat | awk, ss -tlnp, set_fact), and
`netstate.tcp.health` against the naive health playbook of benchmarks/bench_health.py (nine shell
checks, set_fact and assert each). For every run: wall time, the controller's CPU (user + system of
ansible-playbook and everything it started, from the kernel's accounting of reaped children) and the
controller's peak memory (the sum of the RSS of ansible-playbook's process tree, sampled every 0.1 s).
Then a least-squares fit of  wall = a + b * ceil(N / forks),  cpu = c + d * N  and
rss = e + f * min(N, forks)  per playbook, and what the fit predicts for 10,000 hosts. Needs root.
Not part of make test (`make bench-scale`).

    .venv/bin/python benchmarks/bench_scale.py [--sizes 20,50,100] [--forks 10,25,50] [--sockets 2000]
        [--rounds 1] [--playbooks gather,health] [--json .build/bench-scale.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fleet"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)

from bench_health import naive_playbook  # noqa: E402
from fleet import Fleet, FleetError  # noqa: E402
from fleetcheck import ansible_binary, playbook_env  # noqa: E402

NAIVE_GATHER = os.path.join(ROOT, "benchmarks", "naive_gather.yml")
PAGE = os.sysconf("SC_PAGE_SIZE")
PLAYBOOKS = ("gather", "naive gather", "health", "naive health")


def _children() -> dict:
    """pid -> (ppid, rss bytes) of every process on the machine."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        table[int(name)] = (int(fields[1]), int(fields[21]) * PAGE)
    return table


def tree_rss(root: int) -> int:
    """The RSS of `root` and all its descendants, in bytes."""
    table = _children()
    kids: dict = {}
    for pid, (ppid, _rss) in table.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += table.get(pid, (0, 0))[1]
        todo.extend(kids.get(pid, []))
    return total


def measured(command: list, env: dict, verdicts: bool = False) -> dict:
    """Runs one playbook: wall seconds, controller CPU seconds, peak controller RSS in MiB. With
    verdicts, exit status 2 (a host failed a health rule: a whole run with a verdict) is a result too."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=ROOT)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(process.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.communicate()[0]
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode not in ((0, 2) if verdicts else (0,)):
        raise SystemExit("failed (%d): %s\n%s" % (process.returncode, " ".join(command), output[-3000:]))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": round(wall, 2), "cpu": round(cpu, 2), "rss_mib": round(peak[0] / 2 ** 20, 1),
            "rc": process.returncode}


def fit(points: list) -> tuple:
    """Least squares y = a + b x over (x, y) points."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    return mean_y - slope * mean_x, slope


def load_host(fleet, host, sockets):
    pairs = sockets * 3 // 8
    return [fleet.loadgen(host, "established", port=8080, count=pairs, ready_timeout=600),
            fleet.loadgen(host, "time_wait", port=8081, count=sockets - 2 * pairs, refresh=45, ready_timeout=600)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="20,50,100", help="fleet sizes, comma separated")
    parser.add_argument("--forks", default="10,25,50", help="forks settings, comma separated")
    parser.add_argument("--sockets", type=int, default=2000, help="TCP sockets per host (about)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--name", default=os.environ.get("NETSTATE_FLEET_NAME", "scale"), help="fleet name")
    parser.add_argument("--keep", action="store_true", help="leave the fleet up afterwards")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--playbooks", default=",".join(PLAYBOOKS),
                        help="which of %s to run, comma separated (a forks sweep of ours alone, say)" % (
                            ", ".join(PLAYBOOKS)))
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.playbooks.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(PLAYBOOKS))
    if unknown or not chosen:
        parser.error("--playbooks takes names out of %s, got %r" % (", ".join(PLAYBOOKS), args.playbooks))
    try:
        sizes = sorted({int(size) for size in args.sizes.split(",")})
        forks_list = sorted({int(forks) for forks in args.forks.split(",")})
    except ValueError:
        parser.error("--sizes and --forks take comma separated whole numbers, got %r and %r" % (args.sizes, args.forks))
    if sizes[0] < 1 or forks_list[0] < 1:
        parser.error("--sizes and --forks must be at least 1")

    fleet = Fleet(name=args.name, owner_pid=None if args.keep else os.getpid())
    handles = []
    figures: dict = {"sizes": sizes, "forks": forks_list, "sockets_per_host": args.sockets, "runs": [],
                     "playbooks": chosen}
    try:
        started = time.monotonic()
        fleet.up(sizes[-1])
        figures["up_seconds"] = round(time.monotonic() - started, 1)
        print("fleet: %d hosts up in %.1fs (%s)" % (sizes[-1], figures["up_seconds"], fleet.subnet), flush=True)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            for pair in pool.map(lambda host: load_host(fleet, host, args.sockets), fleet.hosts):
                handles.extend(pair)
        figures["load_seconds"] = round(time.monotonic() - started, 1)
        print("load: about %d sockets on each of %d hosts in %.1fs" % (args.sockets, len(fleet.hosts),
                                                                       figures["load_seconds"]), flush=True)
        playbook = ansible_binary()
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            naive_health = os.path.join(tmp, "naive_health.yml")
            with open(naive_health, "w", encoding="utf-8") as handle:
                json.dump(naive_playbook(), handle)
            inventory = str(fleet.inventory)
            for name in ("gather", "naive", "health"):
                os.makedirs(os.path.join(tmp, name))
            commands = {
                "gather": [playbook, "-i", inventory, "netstate.tcp.gather",
                           "-e", "netstate_gather_report_dir=%s/gather" % tmp,
                           "-e", '{"netstate_gather_show_report": false}'],
                "naive gather": [playbook, "-i", inventory, NAIVE_GATHER, "-e", "naive_report_dir=%s/naive" % tmp],
                "health": [playbook, "-i", inventory, "netstate.tcp.health",
                           "-e", "netstate_health_report_dir=%s/health" % tmp],
                "naive health": [playbook, "-i", inventory, naive_health],
            }
            commands = {name: commands[name] for name in PLAYBOOKS if name in chosen}
            warm = playbook_env({"ANSIBLE_FORKS": str(forks_list[-1])})
            # SSH control masters to every host, then each playbook once on the smallest size (page cache)
            measured([ansible_binary("ansible"), "-i", inventory, "all", "-m", "ansible.builtin.ping"], warm)
            for name, command in commands.items():
                measured(command + ["--limit", ",".join(fleet.hosts[:sizes[0]])], warm, verdicts="health" in name)
            for size in sizes:
                limit = ["--limit", ",".join(fleet.hosts[:size])]
                for forks in forks_list:
                    env = playbook_env({"ANSIBLE_FORKS": str(forks)})
                    for _round in range(args.rounds):
                        for name, command in commands.items():
                            run = dict(measured(command + limit, env, verdicts="health" in name), playbook=name,
                                       hosts=size, forks=forks, load=round(os.getloadavg()[0], 1))
                            figures["runs"].append(run)
                            print("  %-13s hosts %3d forks %3d  wall %6.1fs  cpu %6.1fs  rss %6.1f MiB  load %.1f" % (
                                name, size, forks, run["wall"], run["cpu"], run["rss_mib"], run["load"]), flush=True)
        report(figures)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(figures, handle, indent=2)
    except FleetError as error:
        raise SystemExit("bench_scale: %s" % error)
    finally:
        for handle in handles:
            handle.stop()
        if not args.keep:
            fleet.down()
    return 0


def report(figures: dict) -> None:
    runs = figures["runs"]
    names = sorted({run["playbook"] for run in runs})
    print("\nbest forks per size (median wall):")
    best = {}
    for name in names:
        for size in figures["sizes"]:
            by_forks = {}
            for run in runs:
                if run["playbook"] == name and run["hosts"] == size:
                    by_forks.setdefault(run["forks"], []).append(run["wall"])
            forks, wall = min(((f, statistics.median(w)) for f, w in by_forks.items()), key=lambda item: item[1])
            best[(name, size)] = (forks, wall)
            print("  %-13s hosts %3d: forks %3d  %6.1fs  (%.2fs per host)" % (name, size, forks, wall, wall / size))
    for ours, naive in (("gather", "naive gather"), ("health", "naive health")):
        for size in figures["sizes"]:
            if (ours, size) in best and (naive, size) in best:
                ratio = best[(ours, size)][1] / best[(naive, size)][1]
                print("  ratio %s/%s at %d hosts: %.2f" % (ours, naive, size, ratio))
    print("\nmodel: wall = a + b * ceil(hosts / forks), cpu = c + d * hosts (least squares over every run)")
    figures["model"] = {}
    for name in names:
        mine = [run for run in runs if run["playbook"] == name]
        a, b = fit([(math.ceil(run["hosts"] / run["forks"]), run["wall"]) for run in mine])
        c, d = fit([(run["hosts"], run["cpu"]) for run in mine])
        e, f = fit([(min(run["hosts"], run["forks"]), run["rss_mib"]) for run in mine])
        forks = max(figures["forks"])
        predicted_wall = a + b * math.ceil(10000 / forks)
        predicted_cpu = c + d * 10000
        figures["model"][name] = {"a": a, "b": b, "c": c, "d": d, "rss_base": e, "rss_per_fork": f,
                                  "wall_10000": predicted_wall, "cpu_10000": predicted_cpu}
        print("  %-13s wall %.1f + %.2f s per round of forks; cpu %.1f + %.3f s per host; rss %.0f + %.2f MiB "
              "per fork -> 10,000 hosts at forks %d: wall %.0f s, controller cpu %.0f s (%.1f cores busy)" % (
                  name, a, b, c, d, e, f, forks, predicted_wall, predicted_cpu, predicted_cpu / predicted_wall))


if __name__ == "__main__":
    sys.exit(main())
