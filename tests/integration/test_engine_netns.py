# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine against `ss` on real sockets in a private network namespace.

Every aggregate of the fact document is computed a second, independent way from `ss`
output taken just before and just after gathering; the mix is held steady, so both
snapshots must agree with the facts exactly. Both backends (netlink and /proc) run.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
from ansible_collections.netstate.tcp.plugins.module_utils._engine._argspec import RANGES, TCP_STATES
from tests.conftest import COLLECTIONS
from tests.support.ss_oracle import Snapshot

pytestmark = pytest.mark.netns

# A mix with every state the engine must tell apart; port 80 next to 8080 and 8081 so a
# "grep 80" style mistake would show.
MIX = {
    "listeners": [
        {"address": "127.0.0.1", "port": 80, "backlog": 64},
        {"address": "0.0.0.0", "port": 8080, "backlog": 128},
        {"address": "::1", "port": 9090, "backlog": 32},
        {"address": "::", "port": 7070, "backlog": 16},
        {"address": "127.0.0.1", "port": 5432, "backlog": 100},
    ],
    "established": [
        {"to": ["127.0.0.1", 80], "from": "127.0.0.2", "count": 7},
        {"to": ["0.0.0.0", 8080], "from": "127.0.0.3", "count": 12},
        {"to": ["0.0.0.0", 8080], "from": "127.0.0.4", "count": 3},
        {"to": ["::1", 9090], "count": 5},
        {"to": ["::", 7070], "from": "127.0.0.5", "count": 4},
        {"to": ["127.0.0.1", 5432], "from": "127.0.0.6", "count": 9},
    ],
    "time_wait": [{"to": ["127.0.0.1", 5432], "from": "127.0.0.7", "count": 25}],
    "server_time_wait": [{"to": ["0.0.0.0", 8080], "from": "127.0.0.8", "count": 6}],
    "close_wait": [{"to": ["127.0.0.1", 80], "from": "127.0.0.9", "count": 11}],
    "accept_full": [{"address": "127.0.0.1", "port": 8081, "backlog": 2, "clients": 6}],
    "udp": [{"address": "0.0.0.0", "port": 5353}, {"address": "::", "port": 5353},
            {"address": "127.0.0.1", "port": 69}],
    "udp_connected": [{"to": ["127.0.0.1", 69]}],
}


def gather_between(ns, **options):
    before = Snapshot(ns.name)
    facts = engine.gather(namespace=ns.name, **options)
    after = Snapshot(ns.name)
    return before, facts, after


def assert_same(name, value, before, after):
    assert value == before == after, "%s: facts %r, ss before %r, ss after %r" % (name, value, before, after)


@pytest.fixture
def mix_ns(netns, tmp_path):
    """A fresh namespace and mix per test: TIME_WAIT lasts 60 s, so a shared mix would age with the suite."""
    netns.sysctl("net.ipv4.tcp_tw_reuse", 0)
    netns.built = netns.hold_mix(MIX, tmp_path)
    return netns


@pytest.mark.parametrize("backend", ["netlink", "proc"])
def test_states_and_families_match_ss(mix_ns, backend):
    before, facts, after = gather_between(mix_ns, backend=backend)
    assert facts["backend"] == backend
    assert facts["namespace"] == mix_ns.name
    assert_same("states", facts["tcp"]["states"], before.states(), after.states())
    assert_same("total", facts["tcp"]["total"], len(before.tcp), len(after.tcp))
    assert_same("families", facts["tcp"]["families"], before.families(), after.families())
    # the mix really holds every state it was built for
    states = facts["tcp"]["states"]
    assert states["ESTABLISHED"] >= 2 * 40 and states["TIME_WAIT"] >= 31 and states["CLOSE_WAIT"] == 11
    assert states["FIN_WAIT2"] == 11 and states["LISTEN"] == 6 and states["SYN_SENT"] >= 1
    assert set(states) == set(TCP_STATES)


@pytest.mark.parametrize("backend", ["netlink", "proc"])
def test_ports_match_ss(mix_ns, backend):
    before, facts, after = gather_between(mix_ns, backend=backend, top=50)
    assert_same("local_ports", facts["tcp"]["local_ports"], before.local_ports(), after.local_ports())
    # 80 is counted exactly: not 8080, not 8081, not addresses containing 80
    assert facts["tcp"]["local_ports"]["80"]["states"]["ESTABLISHED"] == 7
    assert facts["tcp"]["local_ports"]["80"]["states"]["CLOSE_WAIT"] == 11
    assert facts["tcp"]["local_ports"]["8080"]["states"]["TIME_WAIT"] == 6
    assert_same("remote_ports", facts["tcp"]["remote_ports"], before.remote_ports(), after.remote_ports())


@pytest.mark.parametrize("backend", ["netlink", "proc"])
def test_peers_match_ss(mix_ns, backend):
    before, facts, after = gather_between(mix_ns, backend=backend, top=3)
    peers = facts["tcp"]["peers"]
    assert len(peers) == 3
    totals = [p["total"] for p in peers]
    assert totals == sorted(totals, reverse=True)
    for entry in peers:
        expect_before = before.peers()[entry["address"]]
        expect_after = after.peers()[entry["address"]]
        assert_same("peer %s" % entry["address"], {"total": entry["total"], "states": entry["states"]},
                    expect_before, expect_after)
    # no address outside the top 3 has more sockets than the third
    assert max(v["total"] for a, v in before.peers().items() if a not in {p["address"] for p in peers}) <= totals[-1]
    # IPv4-mapped peers of the dual-stack listener are shown as IPv4
    assert not any(p["address"].startswith("::ffff:") for p in peers)


@pytest.mark.parametrize("backend", ["netlink", "proc"])
def test_top_at_its_upper_bound_keeps_every_peer(mix_ns, backend):
    before, facts, after = gather_between(mix_ns, backend=backend, top=RANGES["top"][1])
    peers = {entry["address"]: {"total": entry["total"], "states": entry["states"]} for entry in facts["tcp"]["peers"]}
    assert len(peers) == len(facts["tcp"]["peers"]) > 3
    assert_same("peers", peers, before.peers(), after.peers())


@pytest.mark.parametrize("backend", ["netlink", "proc"])
def test_ephemeral_busiest_matches_ss(mix_ns, backend):
    before, facts, after = gather_between(mix_ns, backend=backend)
    ephemeral = facts["tcp"]["ephemeral"]
    low, high = [int(v) for v in mix_ns.run(["sysctl", "-n", "net.ipv4.ip_local_port_range"]).stdout.split()]
    assert ephemeral["range"] == [low, high] and ephemeral["size"] == high - low + 1
    busiest = ephemeral["busiest"]
    (address, port), count = before.busiest_destination().most_common(1)[0]
    assert (busiest["address"], busiest["port"], busiest["connections"]) == (address, port, count)
    assert after.busiest_destination()[(address, port)] == count
    assert busiest["time_wait"] == 25
    assert busiest["share"] == round(count / ephemeral["size"], 6)


def test_listeners_match_ss(mix_ns):
    before, facts, after = gather_between(mix_ns)
    expected = before.listeners()
    assert expected == after.listeners()
    tcp = [item for item in facts["listeners"] if item["protocol"] == "tcp"]
    assert len(tcp) == len(expected)
    for item in tcp:
        oracle = expected[(item["address"], item["port"])]
        assert item["queue"] == oracle["queue"], item
        assert item["backlog"] == oracle["backlog"], item
        assert item["pid"] == oracle["pid"] == mix_ns.built["pid"], item
        assert item["process"] == oracle["process"], item
        assert item["connections"] == oracle["connections"], item
        assert item["user"] == "root" and item["stime"]
    full = [item for item in tcp if item["port"] == 8081][0]
    # Linux lets the accept queue hold backlog + 1 before it drops SYNs
    assert full["backlog"] == 2 and full["queue"] == 3 and full["saturation"] == 1.5


def test_udp_matches_ss(mix_ns):
    before, facts, after = gather_between(mix_ns)
    assert_same("udp", facts["udp"], before.udp_totals(), after.udp_totals())
    udp = sorted((item["address"], item["port"]) for item in facts["listeners"] if item["protocol"] == "udp")
    assert_same("udp listeners", udp, before.udp_listeners(), after.udp_listeners())
    assert all(item["queue"] is None and item["backlog"] is None
               for item in facts["listeners"] if item["protocol"] == "udp")


def test_counters_are_the_kernels(mix_ns):
    facts = engine.gather(namespace=mix_ns.name, sample_interval=0.5)
    counters = facts["counters"]
    names, values = mix_ns.run(["cat", "/proc/net/netstat"]).stdout.splitlines()[0:2]
    kernel = dict(zip(names.split()[1:], (int(v) for v in values.split()[1:])))
    assert set(counters["TcpExt"]) == set(kernel)
    # the never-accepted clients keep retrying their SYNs: overflows only grow
    assert 0 < counters["TcpExt"]["ListenOverflows"] <= kernel["ListenOverflows"]
    sockstat = mix_ns.run(["cat", "/proc/net/sockstat"]).stdout
    assert "TCP: inuse %d " % counters["sockstat"]["TCP_inuse"] in sockstat
    assert counters["interval"] >= 0.5 and "ActiveOpens" in counters["rates"]["Tcp"]
    assert "CurrEstab" not in counters["rates"]["Tcp"]
    assert counters["sysctl"]["tcp_tw_reuse"] == 0  # set in this namespace only


def test_processes_view(mix_ns):
    facts = engine.gather(namespace=mix_ns.name, gather_subset=["min", "processes"])
    holder = [entry for entry in facts["processes"].values() if mix_ns.built["pid"] in entry["pids"]]
    assert len(holder) == 1
    snapshot = Snapshot(mix_ns.name)
    # the mix process holds every socket of the namespace that still has a descriptor: not the
    # TIME_WAIT and FIN_WAIT2 orphans, nor the connections waiting in accept queues
    with_fd = {s: n for s, n in snapshot.states().items() if s not in ("TIME_WAIT", "FIN_WAIT2")}
    with_fd["ESTABLISHED"] -= sum(item["queue"] for item in snapshot.listeners().values())
    held = holder[0]["connections"]["states"]
    for state, count in with_fd.items():
        assert held[state] == count, (state, held, with_fd)


def test_raw_sockets_and_truncation(mix_ns):
    facts = engine.gather(namespace=mix_ns.name, gather_subset=["min", "sockets"], max_sockets=10)
    assert len(facts["sockets"]) == 10 and facts["sockets_truncated"] is True
    facts = engine.gather(namespace=mix_ns.name, gather_subset=["min", "sockets"], max_sockets=100000)
    snapshot = Snapshot(mix_ns.name)
    assert facts["sockets_truncated"] is False
    # every socket, whole: both addresses (IPv4-mapped shown as IPv4 on both sides), ports, state, queues;
    # UDP sockets carry ss's own words, UNCONN (bound, unconnected) and ESTAB (connected)
    udp_states = {"CLOSE": "UNCONN", "ESTABLISHED": "ESTAB"}
    for protocol, oracle_rows, state_of in (("tcp", snapshot.tcp, lambda state: state),
                                            ("udp", snapshot.udp, udp_states.__getitem__)):
        got = sorted((s["family"], s["local_address"], s["local_port"], s["remote_address"], s["remote_port"],
                      s["state"], s["recv_q"], s["send_q"]) for s in facts["sockets"] if s["protocol"] == protocol)
        oracle = sorted((r["family"], r["local"], r["lport"], r["peer"], r["pport"], state_of(r["state"]),
                         r["recv_q"], r["send_q"]) for r in oracle_rows)
        assert got == oracle, protocol
    assert len(facts["sockets"]) == len(snapshot.tcp) + len(snapshot.udp)


def test_namespace_all_labels_each(mix_ns):
    facts = engine.gather(namespace="all", gather_subset=["min"])
    assert facts["namespace"] == "host"
    labels = {doc["namespace"]: doc for doc in facts["namespaces"]}
    assert mix_ns.name in labels
    assert labels[mix_ns.name]["tcp"]["states"] == Snapshot(mix_ns.name).states()


def test_namespace_all_leaves_out_what_is_no_namespace(mix_ns, tmp_path):
    """A /run/netns file that is not (or no longer) a namespace - as `ip netns add` or a container runtime
    leaves it for a moment while setting one up or tearing it down - is left out, the others are read; a
    namespace gone between being found and being entered is an error of its own (the kernel refuses setns)."""
    from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs

    run_netns = tmp_path / "netns"
    run_netns.mkdir()
    (run_netns / "placeholder").write_text("")
    named = run_netns / "bound"
    named.write_text("")
    subprocess.run(["mount", "--bind", os.path.join("/run/netns", mix_ns.name), str(named)], check=True)
    try:
        found = dict(procfs.find_namespaces(run_netns=str(run_netns)))
        assert "placeholder" not in found and found["bound"] == str(named)
        facts = engine.gather(namespace="all", gather_subset=["min"], run_netns=str(run_netns))
        labels = {doc["namespace"]: doc for doc in facts["namespaces"]}
        assert "placeholder" not in labels
        assert labels["bound"]["tcp"]["states"] == Snapshot(mix_ns.name).states()
    finally:
        subprocess.run(["umount", str(named)], check=True)
    options = engine.GatherOptions(
        gather_subset=["states"], top=10, sample_interval=0, backend="auto", max_sockets=0, proc="/proc",
        walk_budget=None, walk_all_namespaces=False, local_ports_limit=100, listeners_limit=200,
        spill_keys=engine.SPILL_KEYS)
    # unmounted: an ordinary file now, refused by its type before setns (EINVAL); removed: ENOENT
    for gone, reason in ((named, "is an ordinary file, not a network namespace file"),
                         (run_netns / "removed", "No such file")):
        with pytest.raises(engine.GatherError, match=r"namespace bound: cannot enter .*" + reason) as caught:
            engine._gather_in(options, str(gone), "bound", [])
        assert isinstance(caught.value, engine._Vanished)


def test_interrupted_netlink_falls_back_only_when_auto(mix_ns, monkeypatch):
    from ansible_collections.netstate.tcp.plugins.module_utils._engine import _netlink

    def refuse(*_args, **_kwargs):
        raise _netlink.NetlinkUnavailable("refused for the test")

    monkeypatch.setattr(_netlink, "open_socket", refuse)
    warnings = []
    facts = engine.gather(namespace=mix_ns.name, warnings=warnings)
    assert facts["backend"] == "proc" and "unavailable" in warnings[0]
    assert facts["tcp"]["states"] == Snapshot(mix_ns.name).states()
    with pytest.raises(engine.GatherError, match="backend=netlink"):
        engine.gather(namespace=mix_ns.name, backend="netlink")


def test_dump_interrupted_is_retried_then_reported(mix_ns, monkeypatch):
    """Real dumps whose buffers carry NLM_F_DUMP_INTR, as the kernel marks them when a table changes."""
    from ansible_collections.netstate.tcp.plugins.module_utils._engine import _netlink

    real_receive = _netlink.receive
    flag = {"buffers": 1}

    def interrupted(sock):
        buf = real_receive(sock)
        if not flag["buffers"]:
            return buf
        flag["buffers"] -= 1
        marked = bytearray(buf)
        flags = struct.unpack_from("=H", marked, 6)[0]
        struct.pack_into("=H", marked, 6, flags | _netlink.NLM_F_DUMP_INTR)
        return bytes(marked)

    monkeypatch.setattr(_netlink, "receive", interrupted)
    facts = engine.gather(namespace=mix_ns.name)
    assert flag["buffers"] == 0
    assert facts["backend"] == "netlink" and facts["tcp"]["states"] == Snapshot(mix_ns.name).states()

    flag["buffers"] = float("inf")
    with pytest.raises(engine.GatherError, match="interrupted 3 times"):
        engine.gather(namespace=mix_ns.name)


ONE_WALK = r"""
import json, socket, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _aggregate, _netlink as netlink
def messages(family):
    found = []
    def keep(buf, off):
        fields = buf[off + netlink.OFF_FAMILY:off + netlink.OFF_DST + 16]   # family to the remote address
        found.append([netlink.MSG_HEAD.unpack_from(buf, off)[1]] + list(fields))
    netlink.dump(family, netlink.IPPROTO_TCP, _aggregate.CONNECTION_MASK,
                 lambda buf, length: _aggregate.each_message(buf, length, keep))
    return found
print(json.dumps({"one": messages(None), "each": messages(socket.AF_INET) + messages(socket.AF_INET6)}))
"""


def test_one_dump_of_both_families_is_the_two_per_family_dumps(mix_ns):
    """The connection dump the engine asks for (the older inet_diag request, both families in one walk of the
    kernel's table) returns exactly the sockets of the two SOCK_DIAG_BY_FAMILY dumps, IPv4 and IPv6, every
    message of its own type; as many as `ss` sees outside LISTEN."""
    out = subprocess.run(["ip", "netns", "exec", mix_ns.name, sys.executable, "-c", ONE_WALK, COLLECTIONS],
                         capture_output=True, text=True, check=True).stdout
    found = json.loads(out)
    one, each = found["one"], found["each"]
    assert {message[0] for message in one} == {18} and {message[0] for message in each} == {20}
    assert sorted(message[1:] for message in one) == sorted(message[1:] for message in each)
    assert {message[1] for message in one} == {socket.AF_INET, socket.AF_INET6}
    states = Snapshot(mix_ns.name).states()
    assert len(one) == sum(count for name, count in states.items() if name != "LISTEN")


def test_dumps_are_received_in_the_callers_thread(mix_ns, monkeypatch):
    """Five dumps (listeners and UDP per family, the connections of both families in one), every one
    received and counted in the caller's thread: gather() starts no thread, and gives the same facts
    confined to one CPU."""
    started = []
    real_start = threading.Thread.start

    def counted(thread):
        started.append(thread.name)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    cpus = os.sched_getaffinity(0)
    facts = engine.gather(namespace=mix_ns.name)
    assert facts["tcp"]["states"] == Snapshot(mix_ns.name).states()
    assert started == []
    os.sched_setaffinity(0, {min(cpus)})
    try:
        facts = engine.gather(namespace=mix_ns.name)
    finally:
        os.sched_setaffinity(0, cpus)
    assert started == []
    assert facts["backend"] == "netlink" and facts["tcp"]["states"] == Snapshot(mix_ns.name).states()


NAMED = r"""
import socket, sys
with open("/proc/self/comm", "wb") as handle:
    handle.write(b"bad\xff\xfename")
listener = socket.socket()
listener.bind(("127.0.0.1", 6553))
listener.listen(4)
print("READY", flush=True)
sys.stdin.read()
"""


def test_process_named_with_bytes_that_are_not_utf8(netns):
    import subprocess
    import sys

    holder = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-c", NAMED],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "READY"
        facts = engine.gather(namespace=netns.name, gather_subset=["listeners", "processes"])
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    listener = [item for item in facts["listeners"] if item["port"] == 6553][0]
    # the name as the kernel holds it, undecodable bytes escaped
    assert listener["process"] == "bad\\xff\\xfename" and listener["pid"] == holder.pid
    assert facts["processes"]["bad\\xff\\xfename"]["connections"]["states"]["LISTEN"] == 1


OWN_LABEL = """
import json, sys
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
facts = engine.gather(namespace=sys.argv[1], gather_subset=["min"])
print(json.dumps([facts["namespace"]] + [doc["namespace"] for doc in facts.get("namespaces", [])]))
"""


@pytest.mark.parametrize("namespace", [None, "all"])
def test_own_namespace_is_labelled_by_its_name_not_host(netns, namespace):
    """Run inside a named namespace that is not PID 1's, the engine names its own namespace by that name;
    in PID 1's it is "host" (test_namespace_all_labels_each)."""
    done = netns.run([sys.executable, "-c", OWN_LABEL, namespace or ""], check=False, env=dict(
        os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert done.returncode == 0, done.stderr
    labels = json.loads(done.stdout)
    assert labels[0] == netns.name, labels
    assert "host" not in labels[:1]
    if namespace == "all":
        assert netns.name not in labels[1:], labels  # our own, once
