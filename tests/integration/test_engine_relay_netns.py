# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A large connection dump received by a child process while the engine counts (_netlink.Relay), real
sockets in private network namespaces, `ss` the oracle.

Each gather runs in a fresh Python process (DRIVER), as the modules and the collector run: it prints the
counts of its second gather and what the children reaped during it cost (getrusage(RUSAGE_CHILDREN)): a
relay child touches pages of its own, so their minor faults are how the test sees that one ran, and none
that none did. The relay is
used only for a table of engine.RELAY_MIN_SOCKETS sockets and more, only in a single-threaded process, and not
when fork is refused (a real seccomp filter, tests/support/seccomp_exec.py); the counts are exact in every case.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import COLLECTIONS, Namespace, netns_prerequisites
from tests.support.ss_oracle import Snapshot

pytestmark = pytest.mark.netns

SECCOMP_EXEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support", "seccomp_exec.py")
# Two processes of some 7,600 connections each (30,400 sockets, over RELAY_MIN_SOCKETS) make some 110 receive buffers;
# one of them alone (15,202 sockets, under it, yet some 55 buffers) forks nothing, nor do 20 connections.
HALF = {"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 4096}, {"address": "::1", "port": 8443}],
        "established": [{"to": ["127.0.0.1", 8080], "from": "127.0.0.2", "count": 5000},
                        {"to": ["127.0.0.1", 8080], "from": "127.0.0.3", "count": 1800},
                        {"to": ["::1", 8443], "count": 500}],
        "close_wait": [{"to": ["127.0.0.1", 8080], "count": 300}]}
OTHER_HALF = {"listeners": [{"address": "127.0.0.1", "port": 9090, "backlog": 4096}],
              "established": [{"to": ["127.0.0.1", 9090], "from": "127.0.0.4", "count": 7600}]}
SMALL = {"listeners": [{"address": "127.0.0.1", "port": 8080}],
         "established": [{"to": ["127.0.0.1", 8080], "from": "127.0.0.2", "count": 20}]}

DRIVER = r"""
import json, os, resource, sys, threading, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
namespace, mode = sys.argv[2], sys.argv[3]
if mode == "thread":
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
def run():
    warnings = []
    return engine.gather(gather_subset=["states", "ports", "peers"], namespace=namespace, warnings=warnings), warnings
run()  # the first call may start processes of its own (ctypes looking for libc); the second is measured
before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
facts, warnings = run()
after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
with open("/proc/%d/task/%d/children" % (os.getpid(), os.getpid())) as handle:
    left = handle.read().split()
print(json.dumps({"states": facts["tcp"]["states"], "local_ports": facts["tcp"]["local_ports"],
                  "peers": facts["tcp"]["peers"], "relay_min": engine.RELAY_MIN_SOCKETS,
                  "children_minflt": after - before, "children_left": left, "warnings": warnings}))
"""


def gather(namespace, mode="plain", refuse_fork=False):
    command = [sys.executable, "-c", DRIVER, COLLECTIONS, namespace.name, mode]
    if refuse_fork:
        command = [sys.executable, SECCOMP_EXEC, "--refuse", "fork", "--"] + command
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    netns_prerequisites()
    namespace = Namespace(prefix="nsrl")
    try:
        namespace.hold_mix(HALF, tmp_path_factory.mktemp("relay"))
        namespace.hold_mix(OTHER_HALF, tmp_path_factory.mktemp("relay"))
        yield namespace
    finally:
        namespace.close()


def agrees_with_ss(facts, namespace):
    snapshot = Snapshot(namespace.name)
    assert facts["states"] == snapshot.states()
    assert facts["local_ports"] == snapshot.local_ports()
    # fewer than top (10) peers in these mixes: the list is every peer, as ss sees them
    assert {peer["address"]: {"total": peer["total"], "states": peer["states"]} for peer in facts["peers"]} == \
        snapshot.peers()


def test_a_large_dump_is_received_by_a_child_and_counted_exactly(big):
    facts = gather(big)
    assert facts["states"]["ESTABLISHED"] == 29800 and facts["states"]["CLOSE_WAIT"] == 300, facts["states"]
    assert sum(facts["states"].values()) >= facts["relay_min"]
    agrees_with_ss(facts, big)
    assert facts["children_minflt"] > 0, "no relay process ran for %d sockets" % sum(facts["states"].values())
    assert facts["children_left"] == [], "the relay outlived the gather"
    assert facts["warnings"] == []


def test_a_threaded_process_counts_in_process(big):
    """A fork copies one thread of a threaded process (and the locks the others hold): no relay there."""
    facts = gather(big, mode="thread")
    agrees_with_ss(facts, big)
    assert facts["children_minflt"] == 0
    assert facts["warnings"] == []


def test_fork_refused_by_seccomp_counts_in_process(big):
    facts = gather(big, refuse_fork=True)
    agrees_with_ss(facts, big)
    assert facts["children_minflt"] == 0
    assert facts["warnings"] == []


@pytest.mark.parametrize("mix, sockets", [(HALF, 15202), (SMALL, 41)], ids=["15k-sockets", "41-sockets"])
def test_a_table_under_relay_min_sockets_forks_nothing(tmp_path, mix, sockets):
    namespace = Namespace(prefix="nsrs")
    try:
        namespace.hold_mix(mix, tmp_path)
        facts = gather(namespace)
        agrees_with_ss(facts, namespace)
        assert sum(facts["states"].values()) == sockets < facts["relay_min"]
        assert facts["children_minflt"] == 0
        assert facts["children_left"] == []
    finally:
        namespace.close()


LOOP = r"""
import sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
while True:
    engine.gather(gather_subset=["states"], namespace=sys.argv[2])
"""


def children_of(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as handle:
            return [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return []


def running(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_relay_whose_parent_dies_ends(big):
    """A gatherer killed while its relay receives leaves a relay that ends by itself (its channel breaks, or
    RELAY_IDLE_MS pass); that one is reaped after each gather is test_a_large_dump_is_received_by_a_child_...'s."""
    looping = subprocess.Popen([sys.executable, "-c", LOOP, COLLECTIONS, big.name])
    try:
        deadline = time.monotonic() + 60
        relays = []
        while not relays and time.monotonic() < deadline:
            relays = children_of(looping.pid)
        assert relays, "no relay process seen in 60 s of gathers of %s" % big.name
        looping.kill()
        looping.wait()
    finally:
        if looping.poll() is None:
            looping.kill()
            looping.wait()
    ended = time.monotonic() + 15
    while any(running(pid) for pid in relays) and time.monotonic() < ended:
        time.sleep(0.1)
    assert not any(running(pid) for pid in relays), "relay %s still runs 15 s after its parent died" % relays
