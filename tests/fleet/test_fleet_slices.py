# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How fleets share 198.18.0.0/24: one /27 slice each, adjacent slices for larger fleets (100 hosts
take a /25), and a wait while other fleets hold them. Plain state files in a scratch root; the
allocations run in a network namespace of their own (the `netns` fixture), whose real routes are the ones
a test adds on a veth link, so that fleets of test sessions running beside this one (make test runs
two) neither change the answers nor are touched. No podman needed."""

import ipaddress
import json
import os
import re
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet as fleet_module  # noqa: E402
from fleet import Fleet, FleetError, slice_prefix  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

CALL = """import json, os, sys, time
sys.path.insert(0, os.environ["FLEET_DIR"])
from fleet import Fleet, FleetError
root, name, what, hosts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fleet = Fleet(name, root=root, owner_pid=os.getpid())
started = time.monotonic()
try:
    if what == "allocate":
        answer = fleet._allocate_subnet(hosts)
    else:
        fleet._claim_subnet(hosts)
        answer = fleet.subnet
except FleetError as error:
    answer = {"error": str(error)}
print(json.dumps({"answer": answer, "seconds": time.monotonic() - started, "pid": os.getpid()}))
"""


def route(netns, *addresses):
    """Addresses (with their prefix) on a veth link of the namespace: each routes its network there."""
    netns.run(["ip", "link", "add", "nsf-probe", "type", "veth", "peer", "name", "nsf-peer"])
    for address in addresses:
        netns.run(["ip", "addr", "add", address, "dev", "nsf-probe"])
    netns.run(["ip", "link", "set", "nsf-peer", "up"])
    netns.run(["ip", "link", "set", "nsf-probe", "up"])


def in_netns(netns, root, name, what, hosts, wait=None):
    """A started process in the namespace running Fleet(name, root)._allocate_subnet(hosts) or
    _claim_subnet(hosts)."""
    env = dict(os.environ, FLEET_DIR=HERE)
    if wait is not None:
        env["NETSTATE_FLEET_SLICE_WAIT"] = str(wait)
    return subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-c", CALL, str(root), name, what,
                             str(hosts)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def result(process):
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return json.loads(out)


def allocate(netns, root, name, hosts):
    return result(in_netns(netns, root, name, "allocate", hosts))["answer"]


def hold(root, name, subnet, pid=None):
    path = root / "fleets" / name / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "subnet": subnet, "owner_pid": pid or os.getpid()}))
    return path


def test_prefix_grows_by_whole_slices():
    assert [slice_prefix(n) for n in (1, 29, 30, 61, 62, 100, 125, 126, 253)] == [27, 27, 26, 26, 25, 25, 25, 24, 24]
    assert fleet_module.MAX_HOSTS == 253


@pytest.mark.netns
def test_a_hundred_hosts_take_the_first_free_aligned_25(netns, tmp_path):
    hold(tmp_path, "small", "198.18.0.32/27")      # the lower /25 is no longer whole
    assert allocate(netns, tmp_path, "big", 100) == "198.18.0.128/25"
    assert allocate(netns, tmp_path, "tiny", 3) == "198.18.0.0/27"
    hold(tmp_path, "upper", "198.18.0.224/27")
    assert allocate(netns, tmp_path, "big", 100) is None


@pytest.mark.netns
def test_what_the_machine_routes_is_taken_too(netns, tmp_path):
    # another tool's bridge on 198.18.0.0/26 and one on 198.18.0.192/28: only 64/26 and 128/26 stay free
    route(netns, "198.18.0.1/26", "198.18.0.193/28")
    assert allocate(netns, tmp_path, "tiny", 3) == "198.18.0.64/27"
    assert allocate(netns, tmp_path, "mid", 40) == "198.18.0.64/26"
    assert allocate(netns, tmp_path, "big", 100) is None
    answer = result(in_netns(netns, tmp_path, "late", "claim", 100, wait=0))["answer"]
    assert "198.18.0.0/26=route 198.18.0.0/26" in answer["error"], answer
    assert "198.18.0.192/28=route 198.18.0.192/28" in answer["error"], answer


@pytest.mark.netns
def test_up_waits_for_a_slice_and_takes_the_one_given_back(netns, tmp_path):
    held = [hold(tmp_path, "f{}".format(i), str(net))
            for i, net in enumerate(ipaddress.ip_network("198.18.0.0/24").subnets(new_prefix=27))]
    busy = r"^no free /27 of 198.18.0.0/24 for 5 hosts after 0s \(in use: .*198.18.0.96/27=f3"
    answer = result(in_netns(netns, tmp_path, "late", "claim", 5, wait=0))["answer"]
    assert re.search(busy, answer["error"]), answer
    assert not (tmp_path / "fleets" / "late").exists()
    waiting = in_netns(netns, tmp_path, "late", "claim", 5, wait=60)
    time.sleep(2.0)
    assert waiting.poll() is None                   # still waiting
    held[3].unlink()                                # another session's fleet goes down
    done = result(waiting)
    assert done["answer"] == "198.18.0.96/27", done
    assert 1.5 < done["seconds"] < 30
    assert json.loads((tmp_path / "fleets" / "late" / "state.json").read_text())["owner_pid"] == done["pid"]


def test_a_fleet_too_small_for_more_hosts_says_so(tmp_path):
    hold(tmp_path, "grown", "198.18.0.64/27")
    with pytest.raises(FleetError, match=r"fleet grown holds 198.18.0.64/27 \(room for 29 hosts\), 40 asked for"):
        Fleet("grown", root=tmp_path)._claim_subnet(40)


def test_bad_wait_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSTATE_FLEET_SLICE_WAIT", "soon")
    with pytest.raises(FleetError, match=r"NETSTATE_FLEET_SLICE_WAIT: expected a number of seconds >= 0, got 'soon'"):
        Fleet("late", root=tmp_path)._claim_subnet(5)
