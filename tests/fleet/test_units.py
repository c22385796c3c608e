# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ownership against systemd itself: a Debian 12 host with systemd as PID 1 runs a unit of this test's own
(a unit file, `systemctl start`) that listens on a port and holds connections to itself.

- listener_facts: every listener's `unit` is what `ps -o unit= PID` says of its pid (systemd's own reading
  of the process's cgroup), and the test's listener is in the unit `systemctl show` gives its main pid;
- connection_facts' subset units: the test's unit counts, state by state, the sockets `ss -p` shows held by
  processes `ps -o unit=` puts in the unit. The fleet's systemd containers run on the legacy cgroup layout with
  no cgroup v2 mount, where `ss --cgroup` names no cgroup either: the units come from the process walk, and the
  engine says so in a warning (the kernel's cgroup ids are compared with `ss --cgroup` on real cgroups in
  tests/integration/test_units_netns.py).

One host of its own (fleet_factory "units"); its own work takes some 20 s once the fleet is up.
"""

import json
import re

import pytest
from fleetcheck import run_playbook

from tests.support.ss_oracle import SS_STATES
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.fleet]

UNIT = "netstate-owned.service"
PORT = 18090
CONNECTIONS = 3
USERS = re.compile(r"users:\(\(\"[^\"]*\",pid=(\d+),")

SERVER = """\
import socket, time
listener = socket.socket(socket.AF_INET6)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("::", %d))
listener.listen(64)
held = [socket.create_connection(("127.0.0.1", %d)) for _ in range(%d)]
held += [listener.accept()[0] for _ in range(%d)]
held[0].shutdown(socket.SHUT_WR)  # FIN_WAIT2 here, CLOSE_WAIT on its accepted end
while True:
    time.sleep(3600)
""" % (PORT, PORT, CONNECTIONS, CONNECTIONS)

UNIT_FILE = """\
[Unit]
Description=netstate.tcp test: a listener with connections of its own

[Service]
ExecStart=/usr/bin/python3 /usr/local/lib/netstate-owned.py
"""


@pytest.fixture(scope="module")
def owned(fleet_factory):
    fleet = fleet_factory("units", 1, systems=("debian12",), init="systemd")
    host = fleet.hosts[0]
    fleet.exec(host, "cat > /usr/local/lib/netstate-owned.py <<'EOF'\n%sEOF\n"
                     "cat > /etc/systemd/system/%s <<'EOF'\n%sEOF\n"
                     "systemctl daemon-reload && systemctl restart %s" % (SERVER, UNIT, UNIT_FILE, UNIT))
    try:
        def held():
            return fleet.exec(host, "ss -H -t -n state close-wait sport = :%d" % PORT).stdout.strip()
        wait_for("%s holds its connections" % UNIT, held, 30, interval=0.5)
        yield fleet, host
    finally:
        fleet.exec(host, "systemctl stop %s; rm -f /etc/systemd/system/%s; systemctl daemon-reload" % (UNIT, UNIT),
                   check=False)


def module(fleet, host, name, arguments, directory):
    """The result of one module task run on the host through a playbook (warnings included), as the controller
    got it."""
    playbook, saved = directory / "play.yml", directory / "result.json"
    playbook.write_text(json.dumps([{"hosts": host, "gather_facts": False, "tasks": [
        {"name": "Run the module", name: arguments, "register": "result"},
        {"name": "Keep its result", "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": str(saved)},
         "delegate_to": "localhost"}]}]))
    done = run_playbook(fleet, playbook, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]
    return json.loads(saved.read_text())


def test_listener_units_are_what_systemd_says(owned, tmp_path):
    fleet, host = owned
    listeners = module(fleet, host, "netstate.tcp.listener_facts", {}, tmp_path)["ansible_facts"]["tcp_listen"]
    main_pid = int(fleet.exec(host, "systemctl show -p MainPID --value %s" % UNIT).stdout)
    ours = [item for item in listeners if item["port"] == PORT]
    assert [(item["pid"], item["unit"]) for item in ours] == [(main_pid, UNIT)]
    assert UNIT in fleet.exec(host, "systemctl status %d --no-pager --lines=0" % main_pid, check=False).stdout
    for item in listeners:
        assert item["pid"], item  # root on a host with nothing hidden: every listener's process is found
        said = fleet.exec(host, "ps -o unit= -p %d" % item["pid"]).stdout.strip()
        assert item["unit"] == said, (item, said)


def _ss_unit_states(fleet, host):
    """What ss and systemd say of the unit's sockets, state by state: each socket of `ss -p` whose process
    `ps -o unit=` puts in the unit; and whether `ss --cgroup` could name the sockets' cgroups (it needs a cgroup
    v2 mount, which a systemd container on a legacy-layout host does not have)."""
    states = dict.fromkeys(SS_STATES.values(), 0)
    units = {}
    for line in fleet.exec(host, "ss -H -n -t -a -p").stdout.splitlines():
        found = USERS.search(line)
        if not found:
            continue
        pid = int(found.group(1))
        if pid not in units:
            units[pid] = fleet.exec(host, "ps -o unit= -p %d" % pid).stdout.strip()
        if units[pid] == UNIT:
            states[SS_STATES[line.split()[0]]] += 1
    cgroups = fleet.exec(host, "ss -H -n -t -l --cgroup sport = :%d" % PORT).stdout
    return states, "cgroup:unreachable" not in cgroups


def test_units_count_what_ss_and_systemd_say(owned, tmp_path):
    fleet, host = owned
    expected, named_by_ss = _ss_unit_states(fleet, host)
    assert expected["LISTEN"] == 1 and expected["CLOSE_WAIT"] == 1 and expected["FIN_WAIT2"] == 1
    assert expected["ESTABLISHED"] == 2 * CONNECTIONS - 2
    result = module(fleet, host, "netstate.tcp.connection_facts", {"gather_subset": ["units"]}, tmp_path)
    units = result["ansible_facts"]["netstate"]["units"]
    assert units[UNIT] == expected
    # where ss cannot name the cgroups, neither can the engine: it says so and names the units by their processes
    warnings = [str(warning) for warning in result.get("warnings", [])]
    walked = [warning for warning in warnings if "units: no cgroup v2 file system is mounted" in warning]
    assert bool(walked) == (not named_by_ss), warnings
