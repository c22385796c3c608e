# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""listener_facts as a drop-in for community.general.listen_ports_facts.

1. The compatibility target (targets/listen_ports_facts_compat: community.general's own
   integration target, turned on listener_facts) runs with ansible-playbook inside a private
   network, mount and pid namespace. /usr, /etc and /var are throw-away overlays there, so the
   target really uninstalls iproute2 and net-tools without touching the machine.
   The same target with community.general's module name must fail, and only at the one
   assertion turned around: the target tells the two modules apart.
2. Both modules, run on the same real sockets, give the same rows: community.general's module
   (from the ansible package, unpacked by scripts/setup.sh) is the oracle.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import COLLECTIONS, ROOT, require
from tests.support.ss_oracle import SS_STATES, plain, split_endpoint

pytestmark = pytest.mark.netns

TARGETS = os.path.join(ROOT, "tests", "integration", "targets")
TARGET = "listen_ports_facts_compat"
ORACLE = os.path.join(ROOT, ".build", "oracle")
ORACLE_MODULE = os.path.join(ORACLE, "ansible_collections", "community", "general", "plugins", "modules",
                             "listen_ports_facts.py")
OURS = "netstate.tcp.listener_facts"
THEIRS = "community.general.listen_ports_facts"
ASSERTIONS = 7

# Inside `unshare --mount --net --pid --fork --mount-proc`: overlays over /usr, /etc and /var on a
# tmpfs at $1, loopback up, then the command. Everything ends with the namespace's pid 1.
SCRATCH_ROOT = r"""
set -eu
scratch=$1; shift
mount -t tmpfs netstate-compat "$scratch"
for dir in usr etc var; do
    mkdir -p "$scratch/$dir.upper" "$scratch/$dir.work"
    mount -t overlay overlay -o "lowerdir=/$dir,upperdir=$scratch/$dir.upper,workdir=$scratch/$dir.work" "/$dir"
done
ip link set lo up
"$@"
"""

PLAYBOOK = """\
- name: listen_ports_facts integration target
  hosts: localhost
  connection: local
  gather_facts: true
  vars:
    compat_scratch_root: true
  roles:
    - %s
"""


def _prerequisites():
    for tool in ("unshare", "nc", "netstat", "ss"):
        require(shutil.which(tool) is not None, "needs %s (scripts/setup.sh installs it)" % tool)
    require(os.path.exists("/usr/lib/python3/dist-packages/apt"), "needs python3-apt (scripts/setup.sh)")
    require(os.path.exists(ORACLE_MODULE), "needs community.general unpacked in .build/oracle (scripts/setup.sh)")


def run_target(tmp_path, module_name):
    """Run the target with its module name set to module_name; returns (rc, output)."""
    roles = tmp_path / "roles"
    shutil.copytree(os.path.join(TARGETS, TARGET), roles / TARGET)
    for tasks in (roles / TARGET / "tasks").iterdir():
        tasks.write_text(tasks.read_text().replace(OURS, module_name))
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK % TARGET)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(roles), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=os.pathsep.join([COLLECTIONS, ORACLE]),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
               ANSIBLE_ASYNC_DIR=str(tmp_path / "async"))
    cmd = ["unshare", "--mount", "--propagation", "private", "--net", "--pid", "--fork", "--mount-proc",
           "bash", "-c", SCRATCH_ROOT, "scratch-root", str(scratch),
           os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", str(playbook)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def task_outcomes(output):
    """{task name: 'ok' | 'failed' | 'skipped'} from the default callback's output."""
    outcomes = {}
    name = None
    for line in output.splitlines():
        header = re.match(r"TASK \[(?:[^\]:]+ : )?(.*)\] \*+$", line)
        if header:
            name = header.group(1)
            continue
        if name is None:
            continue
        if line.startswith(("ok: [", "changed: [")):
            outcomes[name] = "ok"
        elif line.startswith(("fatal: [", "failed: [")):
            outcomes[name] = "failed"
        elif line.startswith("skipping: ["):
            outcomes.setdefault(name, "skipped")
    return outcomes


def assertions(outcomes):
    return {name: outcome for name, outcome in outcomes.items() if name.startswith("Assert (")}


def test_compat_target_passes_with_listener_facts(tmp_path):
    _prerequisites()
    rc, output = run_target(tmp_path, OURS)
    results = assertions(task_outcomes(output))
    assert rc == 0, output
    assert len(results) == ASSERTIONS, output
    assert set(results.values()) == {"ok"}, results
    # The machine still has what the target uninstalled in its scratch root.
    assert shutil.which("ss") and shutil.which("netstat")


def test_compat_target_tells_community_general_apart(tmp_path):
    """The same target on community.general's module: every assertion holds but the turned one."""
    _prerequisites()
    rc, output = run_target(tmp_path, THEIRS)
    results = assertions(task_outcomes(output))
    assert rc != 0, output
    assert len(results) == ASSERTIONS, output
    failed = [name for name, outcome in results.items() if outcome != "ok"]
    assert len(failed) == 1 and failed[0].startswith("Assert (7/7)"), results
    assert "Unable to find any of the supported commands" in output


# ---------------------------------------------------------------- the oracle: the same sockets, both modules

MIX = {
    "listeners": [
        {"address": "127.0.0.1", "port": 8080, "backlog": 16},
        {"address": "::", "port": 9443, "backlog": 16},
        {"address": "::1", "port": 7000, "backlog": 16},
    ],
    "established": [
        {"to": ["127.0.0.1", 8080], "from": "127.0.0.2", "count": 2},
        {"to": ["::", 9443], "count": 1},
        {"to": ["::", 9443], "from": "127.0.0.1", "count": 1},
        {"to": ["::1", 7000], "count": 1},
    ],
    "close_wait": [{"to": ["127.0.0.1", 8080], "from": "127.0.0.3", "count": 2}],
    "time_wait": [{"to": ["127.0.0.1", 8080], "from": "127.0.0.4", "count": 2}],
    "udp": [{"address": "127.0.0.1", "port": 5353}, {"address": "::", "port": 5354}],
    "udp_connected": [{"to": ["127.0.0.1", 5353]}],
}


def run_module(netns, module, tmp_path, **params):
    """Run one module with ansible inside the namespace; its result, as the tree callback saves it."""
    tree = tmp_path / ("tree-%d" % len(list(tmp_path.iterdir())))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.pathsep.join([COLLECTIONS, ORACLE]),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"))
    cmd = ["ip", "netns", "exec", netns.name, os.path.join(os.path.dirname(sys.executable), "ansible"),
           "localhost", "-i", "localhost,", "-c", "local", "-m", module, "-a", json.dumps(params), "-t", str(tree)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    result = json.loads((tree / "localhost").read_text())
    assert out.returncode == 0 and not result.get("failed"), (out.stdout, out.stderr)
    return result["ansible_facts"]


def as_theirs(row):
    """Our row with community.general's placeholders for what no process holds: pid 0, empty strings."""
    row = dict(row)
    for key, empty in (("pid", 0), ("name", ""), ("user", ""), ("stime", "")):
        if row[key] is None:
            row[key] = empty
    return row


def pick(rows, keys):
    return sorted(tuple(row[key] for key in keys) for row in rows)


BASE = ("protocol", "address", "port", "pid", "name", "user", "stime")


@pytest.fixture
def mixed(netns, tmp_path):
    _prerequisites()
    netns.built = netns.hold_mix(MIX, tmp_path)
    return netns


@pytest.mark.parametrize("command", ["netstat", "ss"])
def test_listening_rows_match_community_general(mixed, tmp_path, command):
    theirs = run_module(mixed, THEIRS, tmp_path, command=command)
    ours = run_module(mixed, OURS, tmp_path, command=command)
    for key in ("tcp_listen", "udp_listen"):
        assert theirs[key], theirs
        for row in theirs[key]:
            if command == "ss" and row["address"] == "*":
                row["address"] = "::"  # ss's name for a dual-stack [::] socket
        for row in ours[key]:
            assert set(theirs[key][0]) <= set(row), (theirs[key][0], row)
            assert "state" not in row and "foreign_address" not in row
        assert pick(map(as_theirs, ours[key]), BASE) == pick(theirs[key], BASE)


def test_non_listening_rows_match_community_general_netstat(mixed, tmp_path):
    """include_non_listening spells state and foreign_address as community.general does with netstat."""
    theirs = run_module(mixed, THEIRS, tmp_path, command="netstat", include_non_listening=True)
    ours = run_module(mixed, OURS, tmp_path, command="netstat", include_non_listening=True)
    keys = BASE + ("state", "foreign_address")
    tcp_ours = [as_theirs(row) for row in ours["tcp_listen"]]
    assert {"LISTEN", "ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT2", "TIME_WAIT"} <= {row["state"] for row in tcp_ours}
    assert any(":::*" == row["foreign_address"] for row in tcp_ours)
    # netstat prints one line per socket and community.general drops repeated rows: compare as sets.
    assert set(pick(tcp_ours, keys)) == set(pick(theirs["tcp_listen"], keys))
    assert all(row["pid"] is None and row["user"] is None for row in ours["tcp_listen"] if row["state"] == "TIME_WAIT")
    # UDP: netstat leaves an unconnected socket's state empty (community.general documents UNCONN),
    # and community.general misreads a connected socket's line (no pid, no name, no state).
    unconnected = [dict(as_theirs(row), state="") for row in ours["udp_listen"] if row["state"] == "UNCONN"]
    theirs_unconnected = [row for row in theirs["udp_listen"] if row["foreign_address"].endswith(":*")]
    assert pick(unconnected, keys) == pick(theirs_unconnected, keys)
    connected = [row for row in ours["udp_listen"] if row["state"] == "ESTAB"]
    theirs_connected = [row for row in theirs["udp_listen"] if not row["foreign_address"].endswith(":*")]
    where = ("address", "port", "foreign_address")
    assert pick(connected, where) == pick(theirs_connected, where) == [("127.0.0.1", connected[0]["port"],
                                                                        "127.0.0.1:5353")]
    assert connected[0]["pid"] == mixed.built["pid"]


def test_non_listening_rows_match_community_general_ss(mixed, tmp_path):
    """The same sockets as community.general finds with ss, once ss's spelling is read back."""
    theirs = run_module(mixed, THEIRS, tmp_path, command="ss", include_non_listening=True)
    ours = run_module(mixed, OURS, tmp_path, command="ss", include_non_listening=True)

    def read_back(row):
        row = dict(row)
        if row["protocol"] == "tcp":
            row["state"] = SS_STATES[row["state"]]
        address, port, _v6 = split_endpoint(row["foreign_address"])
        row["foreign"] = (plain(address), port)
        row["address"] = plain("::" if row["address"] == "*" else row["address"])
        return row

    def ours_back(row):
        row = as_theirs(row)
        address, _sep, port = row["foreign_address"].rpartition(":")
        row["foreign"] = (address, 0 if port == "*" else int(port))
        return row

    keys = ("protocol", "state", "address", "port", "foreign", "pid", "name", "user", "stime")
    for key in ("tcp_listen", "udp_listen"):
        held = pick([ours_back(row) for row in ours[key] if row["pid"] is not None], keys)
        unheld = pick([ours_back(row) for row in ours[key] if row["pid"] is None], keys)
        theirs_rows = pick(map(read_back, theirs[key]), keys)
        # With ss, community.general 11 leaves out the sockets no process holds; later versions list
        # them with pid 0. Either way every row it gives is ours, and every held socket is there.
        assert [row for row in theirs_rows if row not in unheld] == held
        assert all(row in unheld for row in theirs_rows if row not in held)
        assert {row[1] for row in unheld} == ({"FIN_WAIT2", "TIME_WAIT"} if key == "tcp_listen" else set())
