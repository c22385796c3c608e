# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health over a fleet: the netstate.tcp.health playbook against the naive playbook.

The naive playbook does what operators write by hand: for nine of the built-in rules' checks a shell
pipeline over ss and /proc, a set_fact and an assert (the three rate checks share one 1-second
sample, as the health check does). Both run against the same podman fleet (tests/fleet/fleet.py)
with the same forks, after one warm-up ping that opens the SSH control sockets for both. Prints
the wall times and health/naive (target: <= 0.5).

    sudo .venv/bin/python benchmarks/bench_health.py [--hosts 20] [--forks 10] [--name bench] [--keep]

Not part of make test: it brings up (and, without --keep, removes) a fleet of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fleet"))

import fleet as fleet_module  # noqa: E402  (tests/fleet/fleet.py)

BIN = os.path.dirname(sys.executable)

# Nine of the built-in rules' checks, the way they are written by hand (retransmitting_peer and
# send_queue_stalled_port have no shell version here).
NAIVE_CHECKS = [
    ("time_wait_ephemeral_share",
     "read low high < /proc/sys/net/ipv4/ip_local_port_range; "
     "top=$(ss -Htan state time-wait | awk '{print $4}' | sort | uniq -c | sort -rn | head -1 | awk '{print $1}'); "
     "echo \"${top:-0} $((high - low + 1))\" | awk '{printf \"%.4f\", $1 / $2}'",
     "(out | float) <= 0.25"),
    ("close_wait_per_port",
     "ss -Htan state close-wait | awk '{n=split($3, a, \":\"); print a[n]}' | sort | uniq -c | sort -rn "
     "| head -1 | awk '{print $1} END {if (NR == 0) print 0}'",
     "(out | int) <= 100"),
    ("syn_recv_total", "ss -Htan state syn-recv | wc -l", "(out | int) <= 256"),
    ("accept_queue_saturation",
     "ss -Htln | awk '$3 > 0 {printf \"%.4f\\n\", $2 / $3}' | sort -rn | head -1 "
     "| awk '{print} END {if (NR == 0) print 0}'",
     "(out | float) <= 0.8"),
    ("accept_queue_full", "ss -Htln | awk '$2 > $3' | wc -l", "(out | int) == 0"),
    ("orphans_share",
     "orphans=$(awk '/^TCP:/ {print $5}' /proc/net/sockstat); "
     "max=$(cat /proc/sys/net/ipv4/tcp_max_orphans 2>/dev/null || echo 0); "
     "[ \"$max\" -gt 0 ] && echo \"$orphans $max\" | awk '{printf \"%.4f\", $1 / $2}' || echo 0",
     "(out | float) <= 0.5"),
]
RATES = ("listen_overflows_rate", "listen_drops_rate", "time_wait_overflow_rate")
RATE_SAMPLE = (
    "read_counters() { awk '/^TcpExt:/ {if (!h) {for (i = 1; i <= NF; i++) k[i] = $i; h = 1} "
    "else for (i = 1; i <= NF; i++) if (k[i] == \"ListenOverflows\" || k[i] == \"ListenDrops\" "
    "|| k[i] == \"TCPTimeWaitOverflow\") printf \"%s \", $i}' /proc/net/netstat; }; "
    "a=$(read_counters); sleep 1; b=$(read_counters); set -- $a $b; echo \"$(($4 - $1)) $(($5 - $2)) $(($6 - $3))\""
)


def builtin_rules() -> int:
    """How many built-in rules the health playbook evaluates."""
    with open(os.path.join(ROOT, "plugins", "plugin_utils", "health_builtin_rules.yml"), encoding="utf-8") as stream:
        return len(yaml.safe_load(stream))


def naive_playbook() -> list:
    tasks = []
    for name, command, condition in NAIVE_CHECKS:
        tasks += [
            {"name": f"Measure {name}", "ansible.builtin.shell": command, "register": f"raw_{name}",
             "changed_when": False},
            {"name": f"Remember {name}", "ansible.builtin.set_fact": {name: f"{{{{ raw_{name}.stdout | trim }}}}"}},
            {"name": f"Assert {name}", "ansible.builtin.assert": {
                "that": [condition.replace("out", name)], "quiet": True}},
        ]
    tasks.append({"name": "Sample the TcpExt counters for 1 s", "ansible.builtin.shell": RATE_SAMPLE,
                  "args": {"executable": "/bin/bash"}, "register": "raw_rates", "changed_when": False})
    for index, name in enumerate(RATES):
        tasks += [
            {"name": f"Remember {name}", "ansible.builtin.set_fact": {
                name: f"{{{{ (raw_rates.stdout.split())[{index}] | int }}}}"}},
            {"name": f"Assert {name}", "ansible.builtin.assert": {"that": [f"({name} | int) <= 0"], "quiet": True}},
        ]
    return [{"name": "Naive TCP health", "hosts": "fleet", "gather_facts": False, "tasks": tasks}]


def timed(command: list, env: dict) -> tuple:
    started = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=ROOT, check=False)
    return time.monotonic() - started, done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--name", default=os.environ.get("NETSTATE_FLEET_NAME", "bench"))
    parser.add_argument("--keep", action="store_true", help="leave the fleet up afterwards")
    args = parser.parse_args(argv)

    fleet = fleet_module.Fleet(name=args.name)
    fleet.up(args.hosts)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"),
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_FORKS=str(args.forks),
               ANSIBLE_NOCOLOR="1")
    inventory = str(fleet.inventory)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            naive = os.path.join(tmp, "naive.yml")
            with open(naive, "w", encoding="utf-8") as handle:
                json.dump(naive_playbook(), handle)
            warm, done = timed([os.path.join(BIN, "ansible"), "fleet", "-i", inventory, "-m", "ansible.builtin.ping"],
                               env)
            if done.returncode != 0:
                print(done.stdout)
                return 1
            naive_seconds, naive_done = timed([os.path.join(BIN, "ansible-playbook"), "-i", inventory, naive], env)
            health_seconds, health_done = timed(
                [os.path.join(BIN, "ansible-playbook"), "-i", inventory, "netstate.tcp.health",
                 "-e", f"netstate_health_report_dir={tmp}/report"], env)
            for label, result in (("naive", naive_done), ("health", health_done)):
                if result.returncode != 0:
                    print(f"{label} playbook failed (rc {result.returncode}):\n{result.stdout[-3000:]}")
            ratio = health_seconds / naive_seconds
            print(f"hosts {len(fleet.hosts)}, forks {args.forks}, warm-up ping {warm:.1f} s")
            print(f"naive playbook ({len(NAIVE_CHECKS)} checks: {len(naive_playbook()[0]['tasks'])} tasks per host): "
                  f"{naive_seconds:.1f} s")
            print(f"netstate.tcp.health ({builtin_rules()} built-in rules, 1 module run per host): "
                  f"{health_seconds:.1f} s")
            print(f"ratio health/naive: {ratio:.2f} (target <= 0.5)")
            return 0 if naive_done.returncode == 0 and health_done.returncode == 0 else 1
    finally:
        if not args.keep:
            fleet.down()


if __name__ == "__main__":
    sys.exit(main())
