# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ownership on real cgroups: processes moved into cgroups this test makes under the cgroup v2 mount (and under
the v1 name=systemd hierarchy where it is mounted, as systemd does on a hybrid layout), named as systemd names
units, hold listeners and connections in a private network namespace.

- subset units equals what `ss --cgroup` shows per cgroup, read from the sockets' cgroup ids (netlink), and the
  same from the process walk (the proc backend, which has no cgroup ids);
- each listener's unit is its process's, as /proc/PID/cgroup names it (the name=systemd line first);
- a cgroup named with bytes that are not UTF-8, an escape sequence and a backslash (not a unit name: the path
  stands for it) is escaped in the facts, the Prometheus labels and the Zabbix discovery rows.

A fleet host running systemd compares the same with systemctl: tests/fleet/test_units.py.
"""

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine import collect, engine
from tests.conftest import require
from tests.support.hostile import parse_lld, parse_prometheus
from tests.support.ss_oracle import cgroup_states

pytestmark = pytest.mark.netns

SERVER_PORT = 7401
HOSTILE_PORT = 7402

# One process: listens on a port, accepts the number of connections it is told, says ACCEPTED once it holds them
# all (a connection not accepted yet has no process, and the process walk could not name it), and holds everything
# until stdin closes.
SERVER = textwrap.dedent("""
    import socket, sys, threading
    listener = socket.socket()
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(16)
    accepted = []
    def accept():
        for _ in range(int(sys.argv[2])):
            accepted.append(listener.accept())
        print("ACCEPTED", flush=True)
    threading.Thread(target=accept, daemon=True).start()
    print("READY", flush=True)
    sys.stdin.read()
""")

# One process: connects `count` times to each port given, shuts the sending side of the first connection down
# (FIN_WAIT2 here, CLOSE_WAIT at the server), says READY once the kernel has the first connection in FIN_WAIT2 (the
# peer's ACK of the FIN can be handled later than shutdown() returns on a busy machine: FIN_WAIT1 until then), and
# holds everything until stdin closes.
CLIENT = textwrap.dedent("""
    import socket, sys, time
    held = []
    for port, count in zip(sys.argv[1::2], sys.argv[2::2]):
        for _ in range(int(count)):
            held.append(socket.create_connection(("127.0.0.1", int(port))))
    held[0].shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + 30
    # struct tcp_info begins with tcpi_state; TCP_FIN_WAIT2 is 5
    while held[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    print("READY", flush=True)
    sys.stdin.read()
""")


def _mounts():
    """(cgroup v2 mount point, v1 name=systemd mount point or None), read from mountinfo here, not by the engine."""
    unified = systemd = None
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            separator = fields.index("-")
            kind, options = fields[separator + 1], fields[-1].split(",")
            if kind == "cgroup2" and unified is None:
                unified = fields[4]
            if kind == "cgroup" and "name=systemd" in options and systemd is None:
                systemd = fields[4]
    return unified, systemd


class Cgroups:
    """cgroup directories made for one test (in every hierarchy systemd tracks units in), removed on close()."""

    def __init__(self):
        self.unified, self.systemd = _mounts()
        require(self.unified is not None, "needs a cgroup v2 file system mounted")
        self.slice = b"nst-%s.slice" % uuid.uuid4().hex[:8].encode()
        self.made = []
        self.processes = []

    def make(self, name):
        """The cgroup /SLICE/name (bytes) in each hierarchy; returns its path as /proc/PID/cgroup shows it."""
        for mount in filter(None, (self.unified, self.systemd)):
            for part in (self.slice, self.slice + b"/" + name):
                directory = os.path.join(os.fsencode(mount), part)
                if not os.path.isdir(directory):
                    os.mkdir(directory)
                    self.made.append(directory)
        return b"/" + self.slice + b"/" + name

    def start(self, path, ns, script, *args):
        """A process in cgroup path (moved before it runs anything) and network namespace ns, once READY."""
        targets = [os.path.join(os.fsencode(mount), path.lstrip(b"/"), b"cgroup.procs")
                   for mount in filter(None, (self.unified, self.systemd))]

        def enter():
            for target in targets:
                with open(target, "w") as handle:
                    handle.write(str(os.getpid()))

        process = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c", script] + list(args),
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=enter)
        self.processes.append(process)
        assert process.stdout.readline().strip() == "READY"
        return process

    def close(self):
        for process in self.processes:
            process.stdin.close()
            process.wait(timeout=10)
        for directory in reversed(self.made):
            os.rmdir(directory)


@pytest.fixture
def owned(netns):
    """Three cgroups: a.service (a server), b.service (its client, also a client of the third) and a cgroup whose
    name is no unit name and is hostile; returns (namespace, {cgroup path: unit expected}, processes by name)."""
    cgroups = Cgroups()
    try:
        server = cgroups.make(b"a.service")
        client = cgroups.make(b"b.service")
        hostile = cgroups.make(b"evil-\xff\x1b[31m\\x.srv")
        started = {
            "server": cgroups.start(server, netns, SERVER, str(SERVER_PORT), "3"),
            "hostile": cgroups.start(hostile, netns, SERVER, str(HOSTILE_PORT), "1"),
        }
        started["client"] = cgroups.start(client, netns, CLIENT, str(SERVER_PORT), "3", str(HOSTILE_PORT), "1")
        for name in ("server", "hostile"):
            assert started[name].stdout.readline().strip() == "ACCEPTED", name
        # the engine's text of a host-chosen name: bytes that are not UTF-8 as \\xNN, a backslash doubled
        shown = hostile.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
        yield netns, {server: "a.service", client: "b.service", hostile: shown}, started
    finally:
        cgroups.close()


def _expected(ns, units):
    """ss's counts per cgroup, by the unit each of our cgroups stands for; the other cgroups (none in a fresh
    namespace) by their path."""
    expected = {}
    for path, states in cgroup_states(ns.name).items():
        unit = units.get(path, path.decode("utf-8", "backslashreplace"))
        row = expected.setdefault(unit, dict.fromkeys(states, 0))
        for state, count in states.items():
            row[state] += count
    return expected


def test_units_equal_ss_per_cgroup_from_cgroup_ids_and_from_the_process_walk(owned):
    ns, units, _started = owned
    expected = _expected(ns, units)
    assert expected["a.service"]["LISTEN"] == 1 and expected["a.service"]["ESTABLISHED"] == 2
    assert expected["a.service"]["CLOSE_WAIT"] == 1 and expected["b.service"]["FIN_WAIT2"] == 1
    # the proc backend has no cgroup ids: the process walk names the sockets, its own or that of subset processes
    for backend, subsets in (("netlink", ["units"]), ("proc", ["units"]), ("proc", ["units", "processes"])):
        warnings = []
        facts = engine.gather(gather_subset=subsets, namespace=ns.name, backend=backend, warnings=warnings)
        assert facts["units"] == expected, (backend, subsets)
        assert not [warning for warning in warnings if warning.startswith("units:")], (backend, warnings)


def _proc_cgroup(pid):
    """The path systemd tracks pid in: the name=systemd line, else the 0:: line (bytes)."""
    with open("/proc/%d/cgroup" % pid, "rb") as handle:
        lines = [line.split(b":", 2) for line in handle.read().splitlines()]
    systemd = [path for _id, controllers, path in lines if controllers == b"name=systemd"]
    return (systemd or [path for hierarchy, controllers, path in lines if hierarchy == b"0"])[0]


def test_listeners_carry_their_process_unit(owned):
    ns, units, started = owned
    facts = engine.gather(gather_subset=["listeners"], namespace=ns.name)
    by_port = {item["port"]: item for item in facts["listeners"]}
    assert by_port[SERVER_PORT]["unit"] == "a.service"
    assert by_port[HOSTILE_PORT]["unit"] == units[_proc_cgroup(by_port[HOSTILE_PORT]["pid"])]
    for port, name in ((SERVER_PORT, "server"), (HOSTILE_PORT, "hostile")):
        # ip netns exec runs the script in its own process: the listener's pid is that process's
        assert by_port[port]["pid"] == started[name].pid
        assert units[_proc_cgroup(by_port[port]["pid"])] == by_port[port]["unit"]


def test_a_hostile_cgroup_name_is_escaped_in_every_output(owned):
    ns, units, _started = owned
    facts = engine.gather(gather_subset=["listeners", "units"], namespace=ns.name)
    shown = [unit for unit in units.values() if unit.startswith("/")][0]
    assert shown in facts["units"] and "\x1b" in shown and "\\\\x" in shown and "\\xff" in shown
    families = parse_prometheus(collect.render(facts, "prometheus"))
    label = {sample.labels["unit"] for sample in families["netstate_unit_connections"].samples}
    listener_label = {sample.labels["unit"] for sample in families["netstate_tcp_listen_queue"].samples}
    # the escape character shown as \\x1b, never sent to a terminal or a dashboard as it is
    assert all("\x1b" not in value for value in label | listener_label)
    assert shown.replace("\x1b", "\\x1b") in label and shown.replace("\x1b", "\\x1b") in listener_label
    rows = parse_lld(collect.render(facts, "zabbix-discovery"))
    macro = {row["{#PORT}"]: row["{#UNIT}"] for row in rows}[str(HOSTILE_PORT)]
    assert "\x1b" not in macro and macro.isascii()
    assert json.loads(json.dumps(macro)) == macro
    assert macro == shown.replace("\\", "\\\\").replace("\x1b", "\\x1b")
