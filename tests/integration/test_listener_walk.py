# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The walk that finds listeners' processes is bounded, on real sockets in a private namespace.

An orphan listener (its only reference a descriptor in flight over a unix socket), a listener
held by a process that moved to another network namespace, and a budget smaller than the
descriptors before a listener: each leaves that listener unattributed with the reason said
once, reads no more descriptors than it may, and attributes every other listener as `ss -p`
does.

The socket mix and the gathering run in a PID namespace of their own (unshare --pid
--mount-proc): only their processes are in /proc there, so a process of the machine that even
root cannot read (a protected PID 1 in a sandbox) does not turn "no process holds it" into
"some processes are unreadable".
"""

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
from tests.conftest import COLLECTIONS, SUPPORT, Namespace
from tests.support.ss_oracle import rows

pytestmark = pytest.mark.netns

HELD_PORT = 8100
ORPHAN_PORT = 8101


PROBE = textwrap.dedent("""
    import json, subprocess, sys
    sys.path.insert(0, %r)
    from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
    mixes = [subprocess.Popen([sys.executable, %r, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for path in sys.argv[3:] + sys.argv[1:2]]
    built = [json.loads(mix.stdout.readline()[len("READY "):]) for mix in mixes][-1]
    ss = subprocess.run(["ss", "-H", "-n", "-l", "-t", "-p"], capture_output=True, text=True, check=True).stdout
    runs = []
    for options in json.loads(sys.argv[2]):
        warnings = []
        runs.append({"facts": engine.gather(warnings=warnings, **options), "warnings": warnings})
    for mix in mixes:
        mix.stdin.close()
        mix.wait()
    print(json.dumps({"built": built, "ss": ss, "runs": runs}))
""" % (COLLECTIONS, os.path.join(SUPPORT, "sockmix.py")))


def probe(ns, spec, tmp_path, *option_sets, extra=()):
    """Build the mix (and one more process per spec in extra, started first) and gather once per
    option set, in a PID namespace of their own inside ns."""
    files = []
    for index, one in enumerate([spec] + list(extra)):
        files.append(tmp_path / ("mix-%d.json" % index))
        files[-1].write_text(json.dumps(one))
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "ip", "netns", "exec", ns.name,
                          sys.executable, "-c", PROBE, str(files[0]), json.dumps(option_sets)]
                         + [str(path) for path in files[1:]],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def ss_listeners(result):
    """(address, port) -> pid or None, from the `ss -ltnp` taken beside the gathering."""
    return {(row["local"], row["lport"]): row["pid"] for row in rows(result["ss"], with_process=True)}


def listeners_by_port(facts):
    return {item["port"]: item for item in facts["listeners"] if item["protocol"] == "tcp"}


def test_orphan_listener_is_reported_and_bounded(netns, tmp_path):
    result = probe(netns, {"filler_fds": 3000,
                           "listeners": [{"address": "127.0.0.1", "port": HELD_PORT}],
                           "established": [{"to": ["127.0.0.1", HELD_PORT], "count": 200}],
                           "in_flight": [{"address": "127.0.0.1", "port": ORPHAN_PORT}]}, tmp_path,
                   {"walk_budget": 100000}, {"walk_budget": 500},
                   {"gather_subset": ["listeners", "processes"], "walk_budget": 500})
    pid = result["built"]["pid"]
    assert ss_listeners(result) == {("127.0.0.1", HELD_PORT): pid, ("127.0.0.1", ORPHAN_PORT): None}
    ample, small, full = result["runs"]

    facts = ample["facts"]
    ports = listeners_by_port(facts)
    assert ports[HELD_PORT]["pid"] == pid
    assert ports[ORPHAN_PORT]["pid"] is None and ports[ORPHAN_PORT]["process"] is None
    walk = facts["listener_walk"]
    assert walk["unattributed"] == 1 and walk["reason"] == "not held", walk
    assert walk["budget"] == 100000 and walk["time_budget_ms"] is None, walk
    # Nothing holds the orphan, so the walk read every descriptor of the namespace's processes (the
    # filler, the 400 connection ends), probing each process's numbers up to its last window (4096).
    assert 3000 + 400 <= walk["descriptors_read"] <= 2 * 4096, walk
    assert [line for line in ample["warnings"] if "without pid/process" in line] == [
        "1 listener(s) without pid/process: no process of this namespace holds them (a descriptor in flight "
        "over a unix socket, or held by a process of another network namespace)"]

    # A budget below the descriptors before the held listener: it stays unattributed too, and the
    # walk stops at exactly the budget.
    assert listeners_by_port(small["facts"])[HELD_PORT]["pid"] is None
    walk = small["facts"]["listener_walk"]
    assert (walk["descriptors_read"], walk["budget"], walk["unattributed"], walk["reason"]) == (500, 500, 2, "budget")
    assert [line for line in small["warnings"] if "without pid/process" in line] == [
        "2 listener(s) without pid/process: the walk that finds their processes spent its budget of 500 file "
        "descriptors (walk_budget)"]

    # The per-process view reads everything whatever the budget: the held listener is found again.
    assert listeners_by_port(full["facts"])[HELD_PORT]["pid"] == pid
    assert full["facts"]["listener_walk"]["budget"] is None


def test_default_budget_is_time(netns, tmp_path):
    """Unset walk_budget: an orphan among 150,000 descriptors stops the walk at its time budget,
    after the listener that sits among its process's first descriptors was found."""
    result = probe(netns, {"in_flight": [{"address": "127.0.0.1", "port": ORPHAN_PORT}],
                           "listeners": [{"address": "127.0.0.1", "port": HELD_PORT}]}, tmp_path, {},
                   {"walk_budget": 1000000}, extra=[{"filler_fds": 15000}] * 10)
    default, ample = result["runs"]
    assert ample["facts"]["listener_walk"]["descriptors_read"] >= 150000  # what an unbounded walk reads
    walk = default["facts"]["listener_walk"]
    assert walk["reason"] == "budget" and walk["budget"] is None, walk
    assert walk["time_budget_ms"] >= 100.0, walk
    assert walk["descriptors_read"] < 150000, walk
    # Stopped at its deadline (looked at every 64 descriptors), not after the whole table.
    assert walk["walk_ms"] < walk["time_budget_ms"] + 50, walk
    assert listeners_by_port(default["facts"])[HELD_PORT]["pid"] == result["built"]["pid"]
    assert [line for line in default["warnings"] if "without pid/process" in line] == [
        "1 listener(s) without pid/process: the walk that finds their processes spent its time, %d ms (a quarter "
        "of the socket dump's, at least 100 ms), after %d file descriptors; walk_budget sets a number of "
        "descriptors instead" % (round(walk["time_budget_ms"]), walk["descriptors_read"])]


def test_found_listeners_stop_the_walk_early(netns, tmp_path):
    result = probe(netns, {"listeners": [{"address": "127.0.0.1", "port": HELD_PORT}],
                           "established": [{"to": ["127.0.0.1", HELD_PORT], "count": 2000}]}, tmp_path, {})
    facts = result["runs"][0]["facts"]
    pid = result["built"]["pid"]
    assert listeners_by_port(facts)[HELD_PORT]["pid"] == pid == ss_listeners(result)[("127.0.0.1", HELD_PORT)]
    walk = facts["listener_walk"]
    assert walk["unattributed"] == 0 and walk["reason"] is None
    # The listener sits among the first descriptors: the walk never reaches the 4000 connection ends.
    assert walk["descriptors_read"] < 200, walk


@pytest.fixture
def other_netns():
    namespace = Namespace()
    try:
        yield namespace
    finally:
        namespace.close()


def test_holder_in_another_namespace_needs_walk_all_namespaces(netns, other_netns, tmp_path):
    result = probe(netns, {"listeners": [{"address": "127.0.0.1", "port": HELD_PORT}],
                           "leave_namespace": other_netns.path}, tmp_path, {}, {"walk_all_namespaces": True})
    pid = result["built"]["pid"]
    # ss -p reads every process it can see, whatever its namespace, so it names the holder.
    assert ss_listeners(result) == {("127.0.0.1", HELD_PORT): pid}
    default, everywhere = result["runs"]
    assert listeners_by_port(default["facts"])[HELD_PORT]["pid"] is None
    assert default["facts"]["listener_walk"]["reason"] == "not held"
    assert listeners_by_port(everywhere["facts"])[HELD_PORT]["pid"] == pid
    assert everywhere["facts"]["listener_walk"]["reason"] is None


def test_unreadable_processes_are_the_reason_when_not_root(netns, tmp_path):
    """As nobody, root's processes are unreadable: that is the reason given, not 'not held'."""
    netns.hold_mix({"listeners": [{"address": "127.0.0.1", "port": HELD_PORT}]}, tmp_path)
    code = ("import json, sys; sys.path.insert(0, %r); "
            "from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine; "
            "print(json.dumps(engine.gather()['listener_walk']))" % COLLECTIONS)
    out = netns.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code])
    walk = json.loads(out.stdout)
    assert walk["reason"] == "unreadable" and walk["unattributed"] == 1, walk


def test_bad_walk_budget_names_the_option(netns):
    with pytest.raises(engine.GatherError, match="walk_budget: -1 is out of range"):
        engine.gather(namespace=netns.name, walk_budget=-1)


def test_a_worker_thread_walks_the_namespace_it_entered(netns, tmp_path):
    """setns(2) moves one thread and /proc/self is the thread group leader's: gathering a named namespace
    from a worker thread (an asyncio executor: the event source netstate.tcp.tcp_health) must walk the
    processes of the namespace the thread entered, and attribute its listener as from the main thread."""
    built = netns.hold_mix({"listeners": [{"address": "127.0.0.1", "port": HELD_PORT}]}, tmp_path)
    ss = netns.run(["ss", "-H", "-n", "-l", "-t", "-p"]).stdout
    assert {(row["local"], row["lport"]): row["pid"] for row in rows(ss, with_process=True)} == {
        ("127.0.0.1", HELD_PORT): built["pid"]}
    gathered = {}

    def in_worker():
        gathered["facts"] = engine.gather(namespace=netns.name, gather_subset=["listeners"])

    worker = threading.Thread(target=in_worker)
    worker.start()
    worker.join(60)
    facts = gathered["facts"]
    assert listeners_by_port(facts)[HELD_PORT]["pid"] == built["pid"], facts["listener_walk"]
    assert facts["listener_walk"]["reason"] is None
    assert listeners_by_port(engine.gather(namespace=netns.name, gather_subset=["listeners"]))[HELD_PORT]["pid"] \
        == built["pid"]
