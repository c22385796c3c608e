# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The listener walk under a small open-files limit (RLIMIT_NOFILE), on real processes.

A tree of 1,100 real processes in a private network namespace (and a PID namespace of their
own, so /proc holds only them and a protected process of the machine cannot change the reason
given), each holding one listener of its own - a few at descriptor numbers past the walk's
first windows, a tenth with a connection to itself - is gathered in a child process whose soft
limit is 1024 (the usual default) or 40. Every listener must carry the pid and process `ss -tlnp`
names, and `processes` the counts `ss -tanp` gives. With no descriptor free at all when the walk
starts, the walk says the open-files limit is why, not protected processes.
"""

import json
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from tests.conftest import COLLECTIONS
from tests.support.ss_oracle import rows

pytestmark = pytest.mark.netns

PROCESSES = 1100
BASE_PORT = 20000
NAMES = 4  # the children name themselves walk-0 .. walk-3

# Runs as PID 1 of a fresh PID namespace inside the test's network namespace: forks the tree,
# takes `ss` as the oracle, gathers in a child under the soft limit, kills the tree.
TREE = textwrap.dedent("""
    import json, os, resource, signal, socket, subprocess, sys
    count, base, names, limit, mode = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                       sys.argv[5])
    stop_read, stop_write = os.pipe()
    ready_read, ready_write = os.pipe()
    children = []
    try:
        for index in range(count):
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(stop_write)
                    os.close(ready_read)
                    with open("/proc/self/comm", "w") as handle:
                        handle.write("walk-%d" % (index % names))
                    listener = socket.socket()
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    listener.bind(("127.0.0.1", base + index))
                    listener.listen(8)
                    held = [listener.detach()]
                    if index % 10 == 3:
                        held.append(socket.create_connection(("127.0.0.1", base + index)).detach())
                    # a few listeners past the walk's first windows of descriptor numbers (64, 512)
                    for every, number in ((97, 300), (389, 1000)):
                        if index % every == 5:
                            os.dup2(held[0], number)
                            os.close(held[0])
                            held[0] = number
                    os.write(ready_write, b"r")
                    os.read(stop_read, 1)  # end of file when the tree's parent goes
                finally:
                    os._exit(0)
            children.append(pid)
        os.close(stop_read)
        os.close(ready_write)
        ready = 0
        while ready < count:
            chunk = os.read(ready_read, count)
            if not chunk:
                raise RuntimeError("a child died before it was ready")
            ready += len(chunk)
        ss = subprocess.run(["ss", "-H", "-n", "-t", "-a", "-p"], capture_output=True, text=True, check=True).stdout
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        run = subprocess.run([sys.executable, "-c", sys.argv[6], sys.argv[7], mode], capture_output=True, text=True,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard)))
        if run.returncode:
            raise RuntimeError("the gathering failed: %s" % run.stderr[-3000:])
        names_of = {pid: "walk-%d" % (index % names) for index, pid in enumerate(children)}
        print(json.dumps({"children": names_of, "ss": ss, "gathered": json.loads(run.stdout)}))
    finally:
        os.close(stop_write)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
""")

# The gathering, in the child under the limit.
GATHER = textwrap.dedent("""
    import json, os, resource, socket, sys
    sys.path.insert(0, sys.argv[1])
    from ansible_collections.netstate.tcp.plugins.module_utils._engine import _listeners as listener_walk
    from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs, engine
    mode = sys.argv[2]
    if mode == "engine":
        runs = {}
        for name, gather_subset in (("listeners", ["listeners"]), ("processes", ["listeners", "processes"])):
            warnings = []
            # every listener (not the 200 fullest), and a descriptor budget, not the default time budget: a loaded
            # machine must not stop the walk early
            facts = engine.gather(gather_subset=gather_subset, walk_budget=1000000, listeners_limit=None,
                                  warnings=warnings)
            runs[name] = {"facts": facts, "warnings": warnings}
        print(json.dumps(runs))
    elif mode == "listen_ports":
        # listener_facts with include_non_listening: the sockets gathered first, then every descriptor below
        # the soft limit taken, so the walk of the non-listening sockets' processes cannot read one process
        from ansible_collections.netstate.tcp.plugins.module_utils import _listen_ports as listen_ports
        facts = engine.gather(walk_budget=1000000, **listen_ports.gather_args(True))
        import time
        time.strptime("2000-01-01T00:00:00", "%Y-%m-%dT%H:%M:%S")  # Python imports _strptime on first use
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        warnings = []
        try:
            result = listen_ports.listen_ports_facts(facts, include_non_listening=True, warnings=warnings)
        finally:
            for fd in held:
                os.close(fd)
        rows = [row for row in result["tcp_listen"] if row["state"] != "LISTEN"]
        print(json.dumps({"rows": len(rows), "without_pid": sum(1 for row in rows if row["pid"] is None),
                          "warnings": warnings, "held": len(held)}))
    else:
        # Every descriptor below the soft limit taken before the walk starts: it cannot read one process.
        text = procfs.read_text("/proc/net/tcp")
        listeners = {row[8] for row in procfs.parse_proc_net(text, socket.AF_INET) if row[0] == 10}  # LISTEN
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        found = listener_walk.map_socket_inodes(listeners)
        for fd in held:
            os.close(fd)
        warnings = []
        reason = listener_walk.walk_warning(found, len(listeners) - len(found.owners), None, None, False, warnings)
        print(json.dumps({"owners": len(found.owners), "fd_limited": found.fd_limited, "unlisted": found.unlisted,
                          "denied": found.denied,
                          "soft_limit": found.soft_limit, "held": len(held), "reason": reason,
                          "warnings": warnings, "limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}))
""")


def gather_in_tree(netns, limit, mode="engine"):
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "ip", "netns", "exec",
                          netns.name, sys.executable, "-c", TREE, str(PROCESSES), str(BASE_PORT), str(NAMES),
                          str(limit), mode, GATHER, COLLECTIONS], check=False,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def oracle(result):
    """What ss says: port -> (pid, process) of every listener, and per process name its sockets' states."""
    listeners = {}
    states = {}
    for row in rows(result["ss"], with_process=True):
        if row["state"] == "LISTEN":
            listeners[row["lport"]] = (row["pid"], row["process"])
        if row["pid"] is not None:
            states.setdefault(row["process"], Counter())[row["state"]] += 1
    return listeners, states


def check_against_ss(result):
    listeners, states = oracle(result)
    children = {int(pid): name for pid, name in result["children"].items()}
    assert len(listeners) == PROCESSES and all(pid in children for pid, _name in listeners.values())
    for run in ("listeners", "processes"):
        facts = result["gathered"][run]["facts"]
        got = {item["port"]: (item["pid"], item["process"]) for item in facts["listeners"] if item["protocol"] == "tcp"}
        unattributed = sorted(port for port, (pid, _name) in got.items() if pid is None)
        assert unattributed == [], "%s: %d listener(s) without pid, first %s; walk %s; warnings %s" % (
            run, len(unattributed), unattributed[:5], facts["listener_walk"], result["gathered"][run]["warnings"])
        assert got == listeners
        assert facts["listener_walk"]["unattributed"] == 0 and facts["listener_walk"]["reason"] is None
        assert not [line for line in result["gathered"][run]["warnings"] if "descriptor" in line]
    processes = result["gathered"]["processes"]["facts"]["processes"]
    for name in sorted(set(children.values())):
        entry = processes[name]
        assert entry["count"] == sum(1 for one in children.values() if one == name)
        assert sorted(entry["pids"]) == sorted(pid for pid, one in children.items() if one == name)
        got_states = {state: number for state, number in entry["connections"]["states"].items() if number}
        assert got_states == dict(states[name]), name
        assert entry["connections"]["total"] == sum(states[name].values())


def test_every_listener_found_under_the_usual_soft_limit(netns):
    """1,100 processes, soft limit 1024: the walk used to open one directory per process and
    drop, without a word, every process past the limit."""
    check_against_ss(gather_in_tree(netns, 1024))


def test_every_listener_found_under_a_limit_of_40(netns):
    """The walk holds as few directories as the limit leaves room for, and still finds them all."""
    check_against_ss(gather_in_tree(netns, 40))


def test_no_descriptor_left_names_the_limit(netns):
    """Not one descriptor free when the walk starts: the reason is the open-files limit, with its value."""
    result = gather_in_tree(netns, 64, mode="starved")["gathered"]
    assert result["limit"] == 64 and result["held"] > 0, result
    # It could not even list /proc, so it read no process.
    assert result["owners"] == 0 and result["unlisted"] and result["denied"] == 0, result
    assert result["soft_limit"] == 64 and result["reason"] == "fd limit", result
    assert result["warnings"] == [
        "%d listener(s) without pid/process: the walk that finds their processes ran out of file descriptors "
        "(the open-files soft limit, RLIMIT_NOFILE or ulimit -n, is 64) and could not read the list of processes; "
        "raise the soft limit" % PROCESSES], result


def test_listener_facts_other_sockets_name_the_limit(netns):
    """listener_facts' walk of the non-listening sockets' processes, with no descriptor free: it says the
    open-files limit is why (it used to blame protected processes, as root)."""
    result = gather_in_tree(netns, 64, mode="listen_ports")["gathered"]
    # A tenth of the processes connected to their own listener and never accepted: the client end is held
    # by the process, the server end waits in the accept queue, held by no file (no process to find).
    connected = len([index for index in range(PROCESSES) if index % 10 == 3])
    assert result["held"] > 0 and result["rows"] == 2 * connected and result["without_pid"] == 2 * connected, result
    assert result["warnings"] == [
        "%d non-listening socket(s) without pid/name: the walk of the processes' file descriptors ran out of file "
        "descriptors (the open-files soft limit, RLIMIT_NOFILE or ulimit -n, is 64) and could not read the list "
        "of processes; raise the soft limit" % connected], result
