# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fleet benchmark: `netstate.tcp.gather` against the naive shell playbook, side by side.

Brings up a podman fleet (tests/fleet/fleet.py; 20 hosts by default), loads every host with about
20,000 sockets (ESTABLISHED pairs on one port plus a TIME_WAIT flood, from tests/fleet/loadgen.py),
then runs, with the same --forks, `ansible-playbook netstate.tcp.gather` and
benchmarks/naive_gather.yml (netstat | awk, ss -tlnp, set_fact parsing, a summary on the
controller), alternating, --rounds times each. Prints each wall time, the medians and the ratio
(target: ours <= 0.5 x naive). Needs root. Not part of `make test`.

    .venv/bin/python benchmarks/bench_fleet.py [--hosts 20] [--sockets 20000] [--forks 10] [--rounds 2]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fleet"))
sys.path.insert(0, ROOT)

from fleet import Fleet, FleetError  # noqa: E402
from fleetcheck import ansible_binary, playbook_env  # noqa: E402

NAIVE = os.path.join(ROOT, "benchmarks", "naive_gather.yml")


def load_host(fleet, host, sockets):
    """About `sockets` TCP sockets: 3/4 in ESTABLISHED pairs, 1/4 TIME_WAIT (refreshed so it lasts)."""
    pairs = sockets * 3 // 8
    waiting = sockets - 2 * pairs
    return [fleet.loadgen(host, "established", port=8080, count=pairs, ready_timeout=600),
            fleet.loadgen(host, "time_wait", port=8081, count=waiting, refresh=45, ready_timeout=600)]


def timed(command, env):
    started = time.monotonic()
    run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                         check=False)
    elapsed = time.monotonic() - started
    if run.returncode != 0:
        raise SystemExit("failed (%d): %s\n%s" % (run.returncode, " ".join(command), run.stdout[-3000:]))
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--sockets", type=int, default=20000, help="TCP sockets per host (about)")
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--name", default=os.environ.get("NETSTATE_FLEET_NAME", "bench"), help="fleet name")
    parser.add_argument("--keep", action="store_true", help="leave the fleet up afterwards")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    fleet = Fleet(name=args.name, owner_pid=None if args.keep else os.getpid())
    handles = []
    try:
        started = time.monotonic()
        fleet.up(args.hosts)
        print("fleet: %d hosts up in %.1fs" % (args.hosts, time.monotonic() - started), flush=True)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            for pair in pool.map(lambda host: load_host(fleet, host, args.sockets), fleet.hosts):
                handles.extend(pair)
        counts = [int(fleet.exec(host, "ss -H -t -a -n | wc -l").stdout) for host in fleet.hosts]
        print("load: %d..%d TCP sockets per host (%d in all) in %.1fs" % (
            min(counts), max(counts), sum(counts), time.monotonic() - started), flush=True)

        env = playbook_env({"ANSIBLE_FORKS": str(args.forks)})
        report_dir = tempfile.mkdtemp(prefix="bench-fleet-")
        playbook = ansible_binary()
        commands = {
            "netstate.tcp.gather": [playbook, "-i", str(fleet.inventory), "netstate.tcp.gather",
                                    "-e", "netstate_gather_report_dir=%s" % report_dir,
                                    "-e", '{"netstate_gather_show_report": false}'],
            "naive shell playbook": [playbook, "-i", str(fleet.inventory), NAIVE,
                                     "-e", "naive_report_dir=%s" % report_dir],
        }
        # One warm-up each (SSH control masters, page cache), then alternate.
        for command in commands.values():
            timed(command, env)
        times = {name: [] for name in commands}
        for _round in range(args.rounds):
            for name, command in commands.items():
                times[name].append(timed(command, env))
                print("  %-22s %6.2fs" % (name, times[name][-1]), flush=True)
        ours = statistics.median(times["netstate.tcp.gather"])
        naive = statistics.median(times["naive shell playbook"])
        print("hosts=%d sockets/host~%d forks=%d rounds=%d" % (args.hosts, args.sockets, args.forks, args.rounds))
        print("netstate.tcp.gather   median %6.2fs" % ours)
        print("naive shell playbook  median %6.2fs" % naive)
        print("ratio ours/naive      %6.2f (target <= 0.5)" % (ours / naive))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"hosts": args.hosts, "sockets_per_host": counts, "forks": args.forks, "times": times,
                           "median": {"gather": ours, "naive": naive}, "ratio": ours / naive}, handle, indent=2)
    except FleetError as error:
        raise SystemExit("bench_fleet: %s" % error)
    finally:
        for handle in handles:
            handle.stop()
        if not args.keep:
            fleet.down()


if __name__ == "__main__":
    main()
