# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ownership against systemd itself: a Debian 12 host with systemd as PID 1 runs a unit of this test's own
(a unit file, `systemctl start`) that listens on a port and holds connections to itself.

- listener_facts: every listener's `unit` is what `ps -o unit= PID` says of its pid (systemd's own reading
  of the process's cgroup), and the test's listener is in the unit `systemctl show` gives its main pid;
- connection_facts' subset units: the test's unit counts what `ss --cgroup` shows for the unit's cgroup,
  state by state (the kernel's cgroup id of each socket, read by ss and by the engine).

One host of its own (fleet_factory "units"); its own work takes some 20 s once the fleet is up.
"""

import json
import subprocess

import pytest
from fleetcheck import ansible_binary, playbook_env

from tests.support.ss_oracle import SS_STATES
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.fleet]

UNIT = "netstate-owned.service"
PORT = 18090
CONNECTIONS = 3

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
        wait_for("%s holds its connections" % UNIT,
                 lambda: fleet.exec(host, "ss -H -t -n state close-wait sport = :%d" % PORT).stdout.strip(), 30,
                 interval=0.5)
        yield fleet, host
    finally:
        fleet.exec(host, "systemctl stop %s; rm -f /etc/systemd/system/%s; systemctl daemon-reload" % (UNIT, UNIT),
                   check=False)


def module(fleet, host, name, arguments=""):
    """The result of one module run through Ansible's ad-hoc command against the host."""
    command = [ansible_binary("ansible"), host, "-i", str(fleet.inventory), "-m", name, "-o"]
    if arguments:
        command += ["-a", arguments]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=playbook_env(),
                          timeout=300, check=False)
    line = next((line for line in done.stdout.splitlines() if line.startswith(host + " | SUCCESS")), None)
    assert done.returncode == 0 and line, done.stdout[-4000:]
    return json.loads(line.split("=>", 1)[1])


def test_listener_units_are_what_systemd_says(owned):
    fleet, host = owned
    listeners = module(fleet, host, "netstate.tcp.listener_facts")["ansible_facts"]["tcp_listen"]
    main_pid = int(fleet.exec(host, "systemctl show -p MainPID --value %s" % UNIT).stdout)
    ours = [item for item in listeners if item["port"] == PORT]
    assert [(item["pid"], item["unit"]) for item in ours] == [(main_pid, UNIT)]
    assert UNIT in fleet.exec(host, "systemctl status %d --no-pager --lines=0" % main_pid, check=False).stdout
    for item in listeners:
        assert item["pid"], item  # root on a host with nothing hidden: every listener's process is found
        said = fleet.exec(host, "ps -o unit= -p %d" % item["pid"]).stdout.strip()
        assert item["unit"] == said, (item, said)


def _ss_unit_states(fleet, host):
    """ss --cgroup's count per state of the sockets in the unit's cgroup (its path from systemctl)."""
    cgroup = fleet.exec(host, "systemctl show -p ControlGroup --value %s" % UNIT).stdout.strip()
    states = dict.fromkeys(SS_STATES.values(), 0)
    for line in fleet.exec(host, "ss -H -n -t -a --cgroup").stdout.splitlines():
        fields = line.split()
        if fields and fields[-1] == "cgroup:" + cgroup:
            states[SS_STATES[fields[0]]] += 1
    return states


def test_units_count_what_ss_shows_in_the_unit_cgroup(owned):
    fleet, host = owned
    expected = _ss_unit_states(fleet, host)
    assert expected["LISTEN"] == 1 and expected["CLOSE_WAIT"] == 1 and expected["FIN_WAIT2"] == 1
    assert expected["ESTABLISHED"] == 2 * CONNECTIONS - 2
    result = module(fleet, host, "netstate.tcp.connection_facts", "gather_subset=units")
    units = result["ansible_facts"]["netstate"]["units"]
    assert units[UNIT] == expected
    assert not [warning for warning in result.get("warnings", []) if warning.startswith("units:")]
