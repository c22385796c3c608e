# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How fleets share 198.18.0.0/24: one /27 slice each, adjacent slices for larger fleets (100 hosts
take a /25), and a wait while other fleets hold them. Plain state files in a scratch root and the
machine's real routes: no podman needed."""

import ipaddress
import json
import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet as fleet_module  # noqa: E402
from fleet import Fleet, FleetError, slice_prefix  # noqa: E402


def hold(root, name, subnet, pid=None):
    path = root / "fleets" / name / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "subnet": subnet, "owner_pid": pid or os.getpid()}))
    return path


@pytest.fixture
def routed():
    """Parts of 198.18.0.0/24 the machine routes already (other fleets of real test sessions)."""
    return [ipaddress.ip_network(net) for net, owner in Fleet("probe", root="/nonexistent")._used_networks().items()
            if owner.startswith("route")]


def test_prefix_grows_by_whole_slices():
    assert [slice_prefix(n) for n in (1, 29, 30, 61, 62, 100, 125, 126, 253)] == [27, 27, 26, 26, 25, 25, 25, 24, 24]
    assert fleet_module.MAX_HOSTS == 253


def test_a_hundred_hosts_take_the_first_free_aligned_25(tmp_path, routed):
    if any(net.overlaps(ipaddress.ip_network("198.18.0.128/25")) for net in routed):
        pytest.fail("198.18.0.128/25 is routed on this machine already: {}".format(routed))
    hold(tmp_path, "small", "198.18.0.32/27")      # the lower /25 is no longer whole
    assert Fleet("big", root=tmp_path)._allocate_subnet(100) == "198.18.0.128/25"
    assert Fleet("tiny", root=tmp_path)._allocate_subnet(3) not in ("198.18.0.32/27", None)
    hold(tmp_path, "upper", "198.18.0.224/27")
    assert Fleet("big", root=tmp_path)._allocate_subnet(100) is None


def test_up_waits_for_a_slice_and_takes_the_one_given_back(tmp_path, monkeypatch, routed):
    held = [hold(tmp_path, "f{}".format(i), str(net))
            for i, net in enumerate(ipaddress.ip_network("198.18.0.0/24").subnets(new_prefix=27))]
    monkeypatch.setenv("NETSTATE_FLEET_SLICE_WAIT", "0")
    busy = r"no free /27 of 198.18.0.0/24 for 5 hosts after 0s \(in use: .*198.18.0.96/27=f3"
    with pytest.raises(FleetError, match=busy):
        Fleet("late", root=tmp_path)._claim_subnet(5)
    monkeypatch.setenv("NETSTATE_FLEET_SLICE_WAIT", "60")
    free = next(path for path in held[1:] if not any(
        net.overlaps(ipaddress.ip_network(json.loads(path.read_text())["subnet"])) for net in routed))
    subnet = json.loads(free.read_text())["subnet"]
    threading.Timer(2.0, free.unlink).start()      # another session's fleet goes down
    started = time.monotonic()
    late = Fleet("late", root=tmp_path, owner_pid=os.getpid())
    late._claim_subnet(5)
    assert 1.5 < time.monotonic() - started < 30
    assert late.subnet == subnet
    assert json.loads((tmp_path / "fleets" / "late" / "state.json").read_text())["owner_pid"] == os.getpid()


def test_a_fleet_too_small_for_more_hosts_says_so(tmp_path):
    hold(tmp_path, "grown", "198.18.0.64/27")
    with pytest.raises(FleetError, match=r"fleet grown holds 198.18.0.64/27 \(room for 29 hosts\), 40 asked for"):
        Fleet("grown", root=tmp_path)._claim_subnet(40)


def test_bad_wait_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSTATE_FLEET_SLICE_WAIT", "soon")
    with pytest.raises(FleetError, match=r"NETSTATE_FLEET_SLICE_WAIT: expected a number of seconds >= 0, got 'soon'"):
        Fleet("late", root=tmp_path)._claim_subnet(5)
