# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""peer_block on two private network namespaces joined by a veth pair: real connections from several
client addresses to a server namespace, the module run inside the server namespace (ansible-playbook
under ip netns exec, so its nft/iptables only ever see that namespace), and as oracles
`nft -j list table inet netstate_tcp`, `ipset list`, ss, and real connection attempts."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import SUPPORT, Namespace, require
from tests.support.firewall import ipset_members, nft_set_members
from tests.support.ss_oracle import Snapshot

pytestmark = pytest.mark.netns

PORT = 8443
SERVER4, SERVER6 = "198.18.0.1", "fd77::1"
HOG = "198.18.0.2"          # over the limit: blocked
SSH_CLIENT = "198.18.0.3"   # over the limit, the SSH client: spared
ALLOWED = "198.18.0.4"      # over the limit, in allow: spared
QUIET = "198.18.0.5"        # under the limit
HOG6 = "fd77::2"           # over the limit, IPv6: blocked
LOAD = {HOG: 30, SSH_CLIENT: 20, ALLOWED: 25, QUIET: 5, HOG6: 24}
LIMIT = 10

PLAYBOOK = textwrap.dedent("""\
    - hosts: localhost
      connection: local
      gather_facts: false
      tasks:
        - name: Block the top talkers
          netstate.tcp.peer_block: "{{ item }}"
          loop: "{{ peer_block_args }}"
          register: peer_block_result
          ignore_errors: true
        - name: Keep the result for the test
          ansible.builtin.copy:
            content: "{{ peer_block_result | to_json }}"
            dest: "{{ result_file }}"
            mode: "0600"
          check_mode: false
          diff: false
""")


def have(*tools):
    for tool in tools:
        require(shutil.which(tool) is not None, "needs %s (scripts/setup.sh installs it)" % tool)


class Lab:
    """Server namespace (198.18.0.1, fd77::1) and client namespace (198.18.0.2-5, fd77::2) on one veth."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.server = Namespace("nspb")
        self.clients = Namespace("nspc")
        link = self.link = self.server.name[-8:]
        subprocess.run(["ip", "link", "add", "s" + link, "netns", self.server.name, "type", "veth",
                        "peer", "name", "c" + link, "netns", self.clients.name], check=True)
        self.server.run(["ip", "addr", "add", SERVER4 + "/25", "dev", "s" + link])
        self.server.run(["ip", "addr", "add", SERVER6 + "/64", "dev", "s" + link, "nodad"])
        self.server.run(["ip", "link", "set", "s" + link, "up"])
        for address in (HOG, SSH_CLIENT, ALLOWED, QUIET):
            self.clients.run(["ip", "addr", "add", address + "/25", "dev", "c" + link])
        self.clients.run(["ip", "addr", "add", HOG6 + "/64", "dev", "c" + link, "nodad"])
        self.clients.run(["ip", "link", "set", "c" + link, "up"])
        self.runs = 0

    def hold(self, namespace, *args):
        proc = subprocess.Popen(["ip", "netns", "exec", namespace.name, sys.executable,
                                 os.path.join(SUPPORT, "peerload.py")] + list(args),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        namespace.processes.append(proc)
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        return json.loads(line[6:])

    def load(self):
        """The server listens (dual stack, so IPv4 peers show as ::ffff:a.b.c.d there); clients connect."""
        self.hold(self.server, "serve", str(PORT))
        self.hold(self.clients, "connect", SERVER4, str(PORT),
                  *["%s:%d" % (a, n) for a, n in LOAD.items() if ":" not in a])
        self.hold(self.clients, "connect", SERVER6, str(PORT), "%s:%d" % (HOG6, LOAD[HOG6]))
        # The host's own address and loopback, both far over the limit: never blocked.
        self.hold(self.server, "connect", SERVER4, str(PORT), "%s:15" % SERVER4)
        self.hold(self.server, "connect", "127.0.0.1", str(PORT), "127.0.0.1:15")

    def peer_block(self, args, check=False, diff=False, env=None, parent_env=None, where=None):
        """ansible-playbook in the server namespace (or `where`); returns (registered result, seconds taken).

        args: the module's arguments, or a list of argument sets run as one loop (a list of results)."""
        self.runs += 1
        playbook = self.tmp_path / "peer_block.yml"
        playbook.write_text(PLAYBOOK)
        result_file = self.tmp_path / ("result-%d.json" % self.runs)
        extra = self.tmp_path / ("vars-%d.json" % self.runs)
        arg_sets = args if isinstance(args, list) else [args]
        extra.write_text(json.dumps({"peer_block_args": arg_sets, "result_file": str(result_file)}))
        command = ["ansible-playbook", "-i", "localhost,", str(playbook), "-e", "@%s" % extra]
        if check:
            command.append("--check")
        if diff:
            command.append("--diff")
        environment = dict(os.environ)
        environment.pop("SSH_CONNECTION", None)
        environment.pop("SSH_CLIENT", None)
        environment.update(env or {})
        argv = ["ip", "netns", "exec", (where or self.server).name]
        if parent_env:
            # A parent process holds SSH_CONNECTION, ansible-playbook below it does not (as under sudo).
            argv += ["env"] + ["%s=%s" % item for item in parent_env.items()]
            argv += ["sh", "-c", 'env -u SSH_CONNECTION -u SSH_CLIENT "$@"; exit $?', "sh"]
        started = time.monotonic()
        done = subprocess.run(argv + command, env=environment, capture_output=True, text=True, timeout=300,
                              check=False)
        took = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr
        registered = json.loads(result_file.read_text())
        results = registered["results"]
        if isinstance(args, list):
            return results, took
        # A loop's warnings are gathered at the top of the registered result.
        results[0].setdefault("warnings", registered.get("warnings", []))
        return results[0], took

    def nft_active(self, where=None):
        """Addresses in the table's sets, from nft -j (None when the table does not exist)."""
        listed = (where or self.server).run(["nft", "-j", "list", "table", "inet", "netstate_tcp"], check=False)
        return nft_set_members(listed.stdout) if listed.returncode == 0 else None

    def ipset_active(self):
        members = set()
        found = False
        for name in ("netstate_tcp_ipv4", "netstate_tcp_ipv6"):
            listed = self.server.run(["ipset", "list", name], check=False)
            if listed.returncode != 0:
                continue
            found = True
            members |= ipset_members(listed.stdout)
        return members if found else None

    def can_connect(self, source, destination=SERVER4, timeout=2.0):
        probe = ("import socket,sys\n"
                 "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
                 "s.bind((sys.argv[1],0)); s.settimeout(float(sys.argv[3]))\n"
                 "try:\n s.connect((sys.argv[2],%d)); print('ok')\n"
                 # closed with a reset: no socket is left behind to change the next count
                 " s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\\1\\0\\0\\0\\0\\0\\0\\0')\n"
                 "except OSError as e:\n print(e)\n") % PORT
        out = self.clients.run([sys.executable, "-c", probe, source, destination, str(timeout)]).stdout
        return out.strip() == "ok"

    def close(self):
        self.clients.close()
        self.server.close()


@pytest.fixture
def lab(tmp_path):
    have("nft", "ipset", "iptables", "ip6tables")
    the_lab = Lab(tmp_path)
    try:
        the_lab.load()
        yield the_lab
    finally:
        the_lab.close()


BASE = {"max_connections": LIMIT, "allow": [ALLOWED + "/32", "2001:db8::/32"], "duration": 300}
SSH_ENV = {"SSH_CONNECTION": "%s 50022 %s 22" % (SSH_CLIENT, SERVER4)}


def test_engine_counts_every_peer_like_ss(lab):
    from ansible_collections.netstate.tcp.plugins.module_utils import _peer_connections
    from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs

    oracle = Snapshot(lab.server.name, top=3).peers()
    with _procfs.NetNamespace(lab.server.path):
        counted = _peer_connections.peer_connections()
        established_on_port = _peer_connections.peer_connections(states=["ESTABLISHED"], local_port=PORT)
        other_port = _peer_connections.peer_connections(local_port=PORT + 1)
        from_proc = _peer_connections.peer_connections(backend="proc")
    assert counted["peers"] == {address: row["total"] for address, row in oracle.items()}
    assert len(counted["peers"]) > 3  # all of them, not a top-N
    assert from_proc["peers"] == counted["peers"]
    assert established_on_port["peers"][HOG] == LOAD[HOG] and established_on_port["peers"][HOG6] == LOAD[HOG6]
    # The clients' side of the self connections has a random local port: only the server side counts.
    assert established_on_port["peers"][SERVER4] == 15
    assert other_port["peers"] == {}


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_block_check_real_idempotent_absent(lab, backend):
    args = dict(BASE, backend=backend)
    active = lab.nft_active if backend == "nftables" else lab.ipset_active

    checked, _took = lab.peer_block(args, check=True, diff=True, env=SSH_ENV)
    assert not checked.get("failed"), checked
    assert checked["changed"] is True
    assert checked["blocked"] == [{"address": HOG, "connections": LOAD[HOG]},
                                  {"address": HOG6, "connections": LOAD[HOG6]}]
    assert checked["diff"] == {"before": {"active": []}, "after": {"active": [HOG, HOG6]}}
    assert active() is None and lab.nft_active() is None  # check mode created nothing
    assert lab.can_connect(HOG)

    started = time.monotonic()
    real, took = lab.peer_block(args, env=SSH_ENV)
    assert real["changed"] is True and real["backend"] == backend
    assert real["blocked"] == checked["blocked"]
    assert active() == {HOG, HOG6}
    assert [item["address"] for item in real["active"]] == [HOG, HOG6]
    assert all(0 < item["expires_in"] <= 300 for item in real["active"])
    spared = {item["address"]: (item["reason"], item["connections"]) for item in real["spared"]}
    # The self connections count once each (15): their accepted end is inbound, their connecting end is not.
    assert spared == {SSH_CLIENT: ("ssh_client", LOAD[SSH_CLIENT]), ALLOWED: ("allow", LOAD[ALLOWED]),
                      SERVER4: ("own_address", 15), "127.0.0.1": ("loopback", 15)}
    assert real["ssh_client"] == {"address": SSH_CLIENT, "source": "SSH_CONNECTION"}
    blocked_after = time.monotonic() - started
    assert not lab.can_connect(HOG) and not lab.can_connect(HOG6, SERVER6)
    for source in (SSH_CLIENT, ALLOWED, QUIET):
        assert lab.can_connect(source), source
    print("\n%s: %d peers, %d connections counted; blocked %s within %.1fs (module run %.1fs)" % (
        backend, real["counted"]["peers"], real["counted"]["connections"],
        ", ".join("%s (%d)" % (b["address"], b["connections"]) for b in real["blocked"]), blocked_after, took))

    again, _took = lab.peer_block(args, env=SSH_ENV)
    assert again["changed"] is False and again["blocked"] == []
    assert active() == {HOG, HOG6}

    removed, _took = lab.peer_block({"state": "absent", "backend": backend}, diff=True)
    assert removed["changed"] is True
    assert [item["address"] for item in removed["removed"]] == [HOG, HOG6]
    assert active() is None
    assert lab.can_connect(HOG) and lab.can_connect(HOG6, SERVER6)
    if backend == "iptables":
        rules = lab.server.run(["iptables", "-S"]).stdout + lab.server.run(["ip6tables", "-S"]).stdout
        assert "NETSTATE_TCP" not in rules
    removed_again, _took = lab.peer_block({"state": "absent", "backend": backend})
    assert removed_again["changed"] is False


def test_ssh_client_found_in_a_parent_process_after_become(lab):
    """become (sudo) resets the environment: the SSH client is then read from an ancestor process."""
    result, _took = lab.peer_block(dict(BASE, duration=0), parent_env=SSH_ENV)
    assert result["ssh_client"]["address"] == SSH_CLIENT
    assert result["ssh_client"]["source"].startswith("SSH_CONNECTION of process ")
    assert {"address": SSH_CLIENT, "connections": LOAD[SSH_CLIENT], "reason": "ssh_client"} in result["spared"]
    assert SSH_CLIENT not in lab.nft_active()
    assert [item["expires_in"] for item in result["active"]] == [None, None]  # duration 0: until removed


def test_without_ssh_client_it_warns_and_max_blocks_defers(lab):
    result, _took = lab.peer_block(dict(BASE, max_blocks=1))
    assert result["ssh_client"] is None
    assert any("no SSH client address found" in str(warning) for warning in result["warnings"])
    # Without the SSH client known, 198.18.0.3 is just another peer over the limit.
    assert result["blocked"] == [{"address": HOG, "connections": LOAD[HOG]}]
    assert result["deferred"] == [{"address": HOG6, "connections": LOAD[HOG6]},
                                  {"address": SSH_CLIENT, "connections": LOAD[SSH_CLIENT]}]
    assert lab.nft_active() == {HOG}


BAD_OPTIONS = [
    ({"max_connections": 0}, "max_connections: 0 is out of range"),
    ({"max_connections": 5, "allow": ["10.0.0.0/33"]}, "allow: '10.0.0.0/33' is not an IPv4/IPv6 address or CIDR"),
    ({"max_connections": 5, "allow": ["example.org"]}, "allow: 'example.org'"),
    ({"max_connections": 5, "duration": -1}, "duration: -1 is out of range"),
    ({"max_connections": 5, "max_blocks": 0}, "max_blocks: 0 is out of range"),
    ({"max_connections": 5, "local_port": 70000}, "local_port: 70000 is out of range"),
    ({"max_connections": 5, "states": ["LISTEN"]}, "LISTEN"),
    ({"max_connections": 5, "backend": "pf"}, "backend"),
    ({"state": "present"}, "max_connections"),
]


def test_bad_options_fail_before_anything_is_touched(lab):
    results, _took = lab.peer_block([args for args, _message in BAD_OPTIONS])
    for (args, message), result in zip(BAD_OPTIONS, results):
        assert result["failed"] is True, args
        assert message in result["msg"], (args, result["msg"])
    assert len(results) == len(BAD_OPTIONS)
    assert lab.nft_active() is None and lab.ipset_active() is None
    assert lab.can_connect(HOG)


# ---------------------------------------------------------------- which connections count

def _ss_count(namespace, *filters):
    """Sockets `ss -tanH` lists in a namespace for a state/address filter: the oracle of a count."""
    return len(namespace.run(["ss", "-tanH"] + list(filters)).stdout.splitlines())


@pytest.fixture
def pair(tmp_path):
    """The lab's two namespaces with no load: each test makes its own."""
    have("nft", "ipset", "iptables", "ip6tables")
    the_lab = Lab(tmp_path)
    try:
        yield the_lab
    finally:
        the_lab.close()


DATABASE_CLIENT = 25  # A's connections out to B's listener, over the limit of 20
INTRUDER = "198.18.0.9"  # an address of B that connects in to A's own listener


def test_outgoing_connections_never_block_the_server_they_go_to(pair):
    """Host A (the clients namespace) holds 25 connections out to B's listener (its database, say), and
    B's other address 25 in to A's own listener. With max_connections 20, A blocks only the peer that
    connected in; with direction all it blocks B's listener address too."""
    pair.server.run(["ip", "addr", "add", INTRUDER + "/25", "dev", "s" + pair.link])
    pair.hold(pair.server, "serve", str(PORT))
    pair.hold(pair.clients, "serve", str(PORT + 1))  # dual stack: the intruder's sockets are ::ffff:... here
    pair.hold(pair.clients, "connect", SERVER4, str(PORT), "%s:%d" % (HOG, DATABASE_CLIENT))
    pair.hold(pair.server, "connect", HOG, str(PORT + 1), "%s:%d" % (INTRUDER, DATABASE_CLIENT))
    assert _ss_count(pair.clients, "state", "established", "dst", SERVER4) == DATABASE_CLIENT
    assert _ss_count(pair.clients, "state", "established", "dst", INTRUDER) == DATABASE_CLIENT
    args = {"max_connections": 20, "backend": "nftables", "duration": 300}

    default, _took = pair.peer_block(args, where=pair.clients)
    assert not default.get("failed"), default
    assert default["blocked"] == [{"address": INTRUDER, "connections": DATABASE_CLIENT}]
    assert default["counted"]["direction"] == "inbound"
    assert pair.nft_active(pair.clients) == {INTRUDER}
    # the database connections are untouched: B still answers A
    assert _ss_count(pair.clients, "state", "established", "dst", SERVER4) == DATABASE_CLIENT

    pair.peer_block({"state": "absent", "backend": "nftables"}, where=pair.clients)
    everything, _took = pair.peer_block(dict(args, direction="all"), where=pair.clients)
    assert everything["counted"]["direction"] == "all"
    assert sorted(everything["blocked"], key=lambda item: item["address"]) == [
        {"address": SERVER4, "connections": DATABASE_CLIENT}, {"address": INTRUDER, "connections": DATABASE_CLIENT}]
    assert pair.nft_active(pair.clients) == {SERVER4, INTRUDER}


FORGED = "198.18.0.135"  # never configured anywhere (outside the lab's /25): the SYNs come from nobody


def test_forged_syns_are_not_counted_unless_syn_recv_is_asked_for(pair):
    """Forged SYNs from an address that never completes a handshake leave SYN_RECV request sockets on
    the server: by default they are not counted, so that address is not blocked."""
    pair.server.sysctl("net.ipv4.tcp_syncookies", 0)
    pair.server.sysctl("net.ipv4.tcp_synack_retries", 8)  # the half-open sockets outlive the test
    # SYN-ACKs to the forged address go to the clients namespace, which does not forward: nobody answers.
    pair.server.run(["ip", "route", "add", "198.18.0.128/25", "via", HOG])
    pair.hold(pair.server, "serve", str(PORT))
    sent = pair.clients.run([sys.executable, os.path.join(SUPPORT, "spoofed_syn.py"), FORGED, SERVER4, str(PORT),
                             "40"]).stdout
    assert sent.strip() == "SENT 40"
    half_open = _ss_count(pair.server, "state", "syn-recv", "dst", FORGED)
    assert half_open > 20, half_open  # the oracle: the SYN_RECV sockets are there
    assert _ss_count(pair.server, "state", "established") == 0
    args = {"max_connections": 20, "backend": "nftables", "duration": 300}

    default, _took = pair.peer_block(args)
    assert not default.get("failed"), default
    assert default["blocked"] == [] and default["changed"] is False
    assert pair.nft_active() is None
    assert "SYN_RECV" not in default["counted"]["states"]

    asked, _took = pair.peer_block(dict(args, states=["ESTABLISHED", "SYN_RECV"]))
    assert len(asked["blocked"]) == 1 and asked["blocked"][0]["address"] == FORGED
    assert asked["blocked"][0]["connections"] > 20
    assert pair.nft_active() == {FORGED}


def test_engine_inbound_matches_the_listener_address_not_just_its_port(netns):
    """A connection whose local port is a listener's but whose local address is not (the listener is bound
    to one address) is one this host made: not inbound. A wildcard listener covers every address."""
    from ansible_collections.netstate.tcp.plugins.module_utils import _peer_connections
    from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs

    script = textwrap.dedent("""\
        import socket, sys
        specific = socket.socket(); specific.bind(("127.0.0.2", 7001)); specific.listen(8)
        wildcard = socket.socket(); wildcard.bind(("0.0.0.0", 7002)); wildcard.listen(8)
        out = socket.socket(); out.bind(("127.0.0.3", 7001)); out.connect(("127.0.0.1", 7002))
        inside, _peer = wildcard.accept()
        print("READY", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-c", script],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    netns.processes.append(proc)
    assert proc.stdout.readline().strip() == "READY"
    # ss: the connection's two ends, 127.0.0.3:7001 -> 127.0.0.1:7002 and back
    assert _ss_count(netns, "state", "established") == 2
    for backend in ("netlink", "proc"):
        with _procfs.NetNamespace(netns.path):
            inbound = _peer_connections.peer_connections(direction="inbound", backend=backend)
            every = _peer_connections.peer_connections(direction="all", backend=backend)
        # the accepted end (local 127.0.0.1:7002, under 0.0.0.0:7002) counts its peer 127.0.0.3; the
        # connecting end (local 127.0.0.3:7001, not 127.0.0.2:7001) does not count 127.0.0.1
        assert inbound["peers"] == {"127.0.0.3": 1}, (backend, inbound)
        assert every["peers"] == {"127.0.0.1": 1, "127.0.0.3": 1}, (backend, every)


# ---------------------------------------------------------------- a failed apply

def _firewall_state(namespace):
    """Everything a block could leave, as the kernel's own tools list it."""
    return {
        "nft": namespace.run(["nft", "list", "ruleset"]).stdout,
        "iptables": namespace.run(["iptables", "-w", "-S"]).stdout,
        "ipset": sorted(namespace.run(["ipset", "list", "-n"]).stdout.split()),
    }


def _loaded(lab):
    lab.hold(lab.server, "serve", str(PORT))
    lab.hold(lab.clients, "connect", SERVER4, str(PORT), "%s:%d" % (HOG, LOAD[HOG]))


IPTABLES_NFT_BUILTIN = ("table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; "
                        "policy accept;\n\t}\n}\n")


def test_failed_iptables_apply_takes_back_what_it_made(pair):
    """ip6tables fails at the last step: the nftables ruleset already has a regular chain named INPUT in
    `ip6 filter`, so `ip6tables -I INPUT` is refused after both ipsets, the iptables chain, rule and jump
    and the ip6tables chain and rule were made. Every one of them is taken back and named."""
    _loaded(pair)
    pair.server.run(["nft", "add", "table", "ip6", "filter"])
    pair.server.run(["nft", "add", "chain", "ip6", "filter", "INPUT"])
    before = _firewall_state(pair.server)

    result, _took = pair.peer_block(dict(BASE, backend="iptables"))
    assert result["failed"] is True
    after = _firewall_state(pair.server)
    assert (after["iptables"], after["ipset"]) == (before["iptables"], before["ipset"])
    # iptables-nft makes its own table the first time a chain is added, with the built-in chain empty and
    # accepting (`iptables -S` reads the same without it): that, and nothing of ours, is all that stays.
    assert after["nft"] == before["nft"] + IPTABLES_NFT_BUILTIN, after["nft"]
    message = result["msg"]
    assert "ip6tables" in message and "INPUT" in message, message
    assert ("taken back: ip6tables rule in NETSTATE_TCP matching netstate_tcp_ipv6, ip6tables chain NETSTATE_TCP, "
            "iptables jump from INPUT to NETSTATE_TCP, iptables rule in NETSTATE_TCP matching netstate_tcp_ipv4, "
            "iptables chain NETSTATE_TCP, ipset netstate_tcp_ipv6, ipset netstate_tcp_ipv4") in message, message
    assert "LEFT IN PLACE" not in message
    assert pair.can_connect(HOG)


def test_existing_ipset_of_another_type_fails_and_leaves_only_what_was_there(pair):
    """netstate_tcp_ipv6 already exists as hash:net (not ours): creating ours fails after the IPv4 set was
    made; that one is taken back, the existing one is left as it was."""
    _loaded(pair)
    pair.server.run(["ipset", "create", "netstate_tcp_ipv6", "hash:net", "family", "inet6"])
    before = _firewall_state(pair.server)

    result, _took = pair.peer_block(dict(BASE, backend="iptables"))
    assert result["failed"] is True
    assert _firewall_state(pair.server) == before
    assert before["ipset"] == ["netstate_tcp_ipv6"]
    assert "ipset create netstate_tcp_ipv6" in result["msg"], result["msg"]
    assert result["msg"].endswith("; taken back: ipset netstate_tcp_ipv4"), result["msg"]


def test_failed_nft_apply_changes_nothing_and_says_so(pair):
    """The table exists with a set of our name without timeouts: the kernel refuses our set (File exists)
    in the middle of the one nft -f batch, so the other set, the chain and its rules after it are not
    made either; the error says nothing was changed."""
    _loaded(pair)
    pair.server.run(["nft", "add", "table", "inet", "netstate_tcp"])
    pair.server.run(["nft", "add", "set", "inet", "netstate_tcp", "blocked_ipv4", "{ type ipv4_addr; }"])
    before = _firewall_state(pair.server)

    result, _took = pair.peer_block(dict(BASE, backend="nftables"))
    assert result["failed"] is True
    assert "File exists" in result["msg"], result["msg"]  # refused by the kernel, not by nft's own checks
    assert "nothing was changed" in result["msg"], result["msg"]
    assert _firewall_state(pair.server) == before
    assert pair.can_connect(HOG)
