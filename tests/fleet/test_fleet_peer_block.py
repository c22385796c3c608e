# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.peer_block on real SSH hosts (playbook netstate.tcp.peer_block, with become).

One target runs a sink; a flooder holds many connections to it, a second host just as many but is in
allow, a third stays under the limit, and the controller itself (the address the play's SSH session
comes from) opens more than the limit too. After the run the flooder cannot connect and its held
connections stall (what it sends is never acknowledged), the others and the controller's SSH keep
working; state=absent restores access. Oracles: nft -j / ipset list on the target, real connects.
"""

import ipaddress
import itertools
import json
import re
import socket
import struct
import subprocess
import time

import pytest
from fleetcheck import run_playbook

from tests.conftest import require
from tests.support.firewall import ipset_members, nft_set_members

pytestmark = pytest.mark.fleet

PLAYBOOK = "netstate.tcp.peer_block"
# Each test its own sink port: sockets a block left half-closed must not count in the next test.
PORTS = itertools.count(8099)
LIMIT = 30
FLOOD, ALLOWED_LOAD, QUIET_LOAD, CONTROLLER_LOAD = 80, 60, 5, 40
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
PROBE = """
import socket, struct, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError as error:
    print("failed", error)
else:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    print("ok")
"""
# Connects, waits for a line on stdin, sends 100 bytes, then reports its own unacknowledged Send-Q.
HELD = """
import socket, subprocess, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print("connected", flush=True)
sys.stdin.readline()
s.send(b"x" * 100)
time.sleep(3)
out = subprocess.run(["ss", "-tnH", "state", "established", "sport", "=", ":%d" % s.getsockname()[1]],
                     capture_output=True, text=True).stdout.split()
print("send_q", out[1] if out else "gone", flush=True)
"""


def recap(run):
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(5))}
            for m in RECAP.finditer(run.stdout)}


class Scene:
    def __init__(self, fleet, tmp_path):
        self.fleet = fleet
        self.target, self.flooder, self.allowed, self.quiet = fleet.hosts[-1], fleet.hosts[0], fleet.hosts[1], \
            fleet.hosts[2]
        self.address = {host: fleet.address(host) for host in fleet.hosts}
        self.controller = str(ipaddress.ip_network(fleet.subnet)[1])  # the bridge: where our SSH comes from
        self.tmp_path = tmp_path
        self.runs = 0
        self.port = next(PORTS)

    def play(self, *args, **variables):
        """The playbook on the target; returns (result document, recap of the target, seconds)."""
        self.runs += 1
        report_dir = self.tmp_path / ("run-%d" % self.runs)
        report_dir.mkdir()
        variables.update({"netstate_peer_block_hosts": self.target,
                          "netstate_peer_block_report_dir": str(report_dir)})
        started = time.monotonic()
        # The fleet logs in as root: without this Ansible would skip sudo (become_user == remote_user),
        # and sudo's env_reset, which clears SSH_CONNECTION, is what this test must go through.
        run = run_playbook(self.fleet, PLAYBOOK, "-e", json.dumps(variables), *args,
                           env={"ANSIBLE_BECOME_ALLOW_SAME_USER": "1"})
        took = time.monotonic() - started
        assert run.returncode == 0, run.stdout
        return json.loads((report_dir / ("%s.json" % self.target)).read_text()), recap(run)[self.target], took

    def can_connect(self, host):
        out = self.fleet.exec(host, ["python3", "-c", PROBE, self.address[self.target], str(self.port)]).stdout
        return out.strip() == "ok"

    def nft_members(self):
        listed = self.fleet.exec(self.target, "nft -j list table inet netstate_tcp", check=False)
        return nft_set_members(listed.stdout) if listed.returncode == 0 else None

    def dropped_packets(self):
        listed = json.loads(self.fleet.exec(self.target, "nft -j list table inet netstate_tcp").stdout)
        return sum(expr["counter"]["packets"] for item in listed["nftables"] if "rule" in item
                   for expr in item["rule"]["expr"] if "counter" in expr)

    def ipset_members(self):
        listed = self.fleet.exec(self.target, "ipset list netstate_tcp_ipv4", check=False)
        return ipset_members(listed.stdout) if listed.returncode == 0 else None

    def held(self, host):
        proc = self.fleet.podman.popen("exec", "-i", self.fleet.container(host), "python3", "-c", HELD,
                                       self.address[self.target], str(self.port),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline().decode().strip() == "connected"
        return proc

    def cleanup(self):
        self.fleet.exec(self.target, "nft delete table inet netstate_tcp; "
                        "for t in iptables ip6tables; do $t -D INPUT -j NETSTATE_TCP; $t -F NETSTATE_TCP; "
                        "$t -X NETSTATE_TCP; done; ipset destroy netstate_tcp_ipv4; ipset destroy netstate_tcp_ipv6; "
                        "test -e /usr/sbin/nft.hidden && mv /usr/sbin/nft.hidden /usr/sbin/nft; true", check=False)


@pytest.fixture
def scene(fleet, loads, tmp_path):
    require(len(fleet.hosts) >= 4, "peer_block's fleet test needs 4 hosts (NETSTATE_FLEET_HOSTS >= 4)")
    the_scene = Scene(fleet, tmp_path)
    target = "%s:%d" % (the_scene.address[the_scene.target], the_scene.port)
    loads.start(the_scene.target, "sink", port=the_scene.port, address="0.0.0.0")
    loads.start(the_scene.flooder, "established", target=target, count=FLOOD)
    loads.start(the_scene.allowed, "established", target=target, count=ALLOWED_LOAD)
    loads.start(the_scene.quiet, "established", target=target, count=QUIET_LOAD)
    controller_sockets = [socket.create_connection((the_scene.address[the_scene.target], the_scene.port), timeout=5)
                          for _number in range(CONTROLLER_LOAD)]
    the_scene.variables = {
        "netstate_peer_block_max_connections": LIMIT, "netstate_peer_block_local_port": the_scene.port,
        "netstate_peer_block_allow": [the_scene.address[the_scene.allowed] + "/32"],
        "netstate_peer_block_duration": 600,
    }
    try:
        yield the_scene
    finally:
        the_scene.cleanup()
        for sock in controller_sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


def test_blocks_the_flooder_spares_allow_and_the_controller(scene):
    flooder, allowed = scene.address[scene.flooder], scene.address[scene.allowed]
    variables = scene.variables

    checked, checked_recap, _took = scene.play("--check", "--diff", **variables)
    assert checked["blocked"] == [{"address": flooder, "connections": FLOOD}]
    assert checked["diff"] == {"before": {"active": []}, "after": {"active": [flooder]}}
    assert checked_recap["changed"] == 1
    assert scene.nft_members() is None, "check mode created the table"
    assert scene.can_connect(scene.flooder)

    allowed_held = scene.held(scene.allowed)
    flooder_held = scene.held(scene.flooder)
    result, real_recap, took = scene.play(**variables)
    assert real_recap["changed"] == 1 and result["backend"] == "nftables"
    assert result["blocked"] == [{"address": flooder, "connections": FLOOD + 1}]
    assert scene.nft_members() == {flooder}
    spared = {item["address"]: item for item in result["spared"]}
    assert spared[allowed] == {"address": allowed, "connections": ALLOWED_LOAD + 1, "reason": "allow"}
    # The controller is over the limit too, and spared because the play's SSH session comes from it;
    # become (sudo) reset the module's environment, so the address came from an ancestor process.
    assert spared[scene.controller]["reason"] == "ssh_client"
    assert spared[scene.controller]["connections"] == CONTROLLER_LOAD
    assert result["ssh_client"]["address"] == scene.controller
    assert result["ssh_client"]["source"].startswith("SSH_CONNECTION of process "), result["ssh_client"]
    print("\nssh_client found in: %s" % result["ssh_client"]["source"])
    assert scene.quiet not in spared and scene.address[scene.quiet] not in spared

    assert not scene.can_connect(scene.flooder)
    assert scene.can_connect(scene.allowed) and scene.can_connect(scene.quiet)
    assert scene.fleet.ssh(scene.target, "echo still-here").stdout.strip() == "still-here"
    # A held connection of the flooder stalls at its next send; the allowed host's does not.
    dropped_before = scene.dropped_packets()
    for proc in (flooder_held, allowed_held):
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    flooder_out = flooder_held.communicate(timeout=30)[0].decode().split()
    allowed_out = allowed_held.communicate(timeout=30)[0].decode().split()
    assert allowed_out == ["send_q", "0"]
    assert flooder_out == ["send_q", "100"]
    assert scene.dropped_packets() > dropped_before
    print("nftables: %d peers, %d connections on port %d; blocked %s in a %.1fs playbook run; spared %s" % (
        result["counted"]["peers"], result["counted"]["connections"], scene.port, result["blocked"], took,
        sorted((a, s["reason"], s["connections"]) for a, s in spared.items())))

    again, again_recap, _took = scene.play(**variables)
    assert again_recap["changed"] == 0 and again["blocked"] == []
    assert [item["address"] for item in again["active"]] == [flooder]

    removed, removed_recap, _took = scene.play(netstate_peer_block_state="absent")
    assert removed_recap["changed"] == 1 and [item["address"] for item in removed["removed"]] == [flooder]
    assert scene.nft_members() is None
    assert scene.can_connect(scene.flooder)


def test_iptables_and_ipset_where_nft_is_missing(scene):
    flooder = scene.address[scene.flooder]
    scene.fleet.exec(scene.target, "mv /usr/sbin/nft /usr/sbin/nft.hidden")
    assert scene.fleet.exec(scene.target, "command -v nft", check=False).returncode != 0

    result, real_recap, _took = scene.play(**scene.variables)
    assert real_recap["changed"] == 1 and result["backend"] == "iptables"
    assert result["blocked"] == [{"address": flooder, "connections": FLOOD}]
    assert scene.ipset_members() == {flooder}
    rules = scene.fleet.exec(scene.target, "iptables -S").stdout
    assert "-A INPUT -j NETSTATE_TCP" in rules and "--match-set netstate_tcp_ipv4 src -j DROP" in rules
    assert not scene.can_connect(scene.flooder)
    assert scene.can_connect(scene.allowed) and scene.can_connect(scene.quiet)
    assert scene.fleet.ssh(scene.target, "echo still-here").stdout.strip() == "still-here"

    again, again_recap, _took = scene.play(**scene.variables)
    assert again_recap["changed"] == 0 and again["blocked"] == []

    removed, removed_recap, _took = scene.play(netstate_peer_block_state="absent")
    assert removed_recap["changed"] == 1 and removed["backend"] == "iptables"
    assert scene.ipset_members() is None
    assert "NETSTATE_TCP" not in scene.fleet.exec(scene.target, "iptables -S").stdout
    assert scene.can_connect(scene.flooder)
