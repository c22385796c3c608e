#!/usr/bin/env bash
# make fleet-demo: five podman hosts, each with a different TCP load, one netstate.tcp.gather
# run, the fleet report printed, everything torn down. Needs root (see docs/fleet.md).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
py=${PYTHON:-$here/.venv/bin/python}
export NETSTATE_FLEET_NAME=${NETSTATE_FLEET_NAME:-demo}
export ANSIBLE_COLLECTIONS_PATH=${ANSIBLE_COLLECTIONS_PATH:-$here/.build/collections}
export ANSIBLE_CONFIG=${ANSIBLE_CONFIG:-$here/ansible.cfg}
report=${NETSTATE_DEMO_REPORT_DIR:-$here/.build/fleet-demo}

cleanup() { "$py" tests/fleet/fleet.py down >/dev/null 2>&1 || true; }
trap cleanup EXIT

# Hosts and load generators live as long as this Python process (Ctrl-C or the end tears down).
"$py" - "$report" <<'PY'
import os, subprocess, sys
sys.path.insert(0, "tests/fleet")
from fleet import Fleet

report = sys.argv[1]
fleet = Fleet().up(5)
scenarios = [
    ("accept_full", {"port": 8083, "backlog": 8, "clients": 40}),
    ("time_wait", {"port": 8081, "count": 6000}),
    ("close_wait", {"port": 8082, "count": 150}),
    ("peers", {"port": 8084, "count": 400}),
    ("healthy", {"port": 8087, "count": 25}),
]
loads = []
try:
    for host, (scenario, params) in zip(fleet.hosts, scenarios):
        loads.append(fleet.loadgen(host, scenario, **params))
        print("%s (%s): %s %s" % (host, fleet.address(host), scenario, loads[-1].info["expect"]), flush=True)
    run = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                          "-i", str(fleet.inventory), "netstate.tcp.gather",
                          "-e", "netstate_gather_report_dir=" + report,
                          "-e", '{"netstate_gather_show_report": false}'])
    print()
    with open(os.path.join(report, "fleet-report.md")) as handle:
        print(handle.read())
    print("JSON report: " + os.path.join(report, "fleet-report.json"))
    sys.exit(run.returncode)
finally:
    for load in loads:
        load.stop()
PY
