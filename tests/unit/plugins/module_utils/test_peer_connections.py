# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_peer_connections: the state mask, which connections are inbound (Listening), and PeerCounter counting
the same peers with and without spilling, on /proc tables recorded on a real host and on made-up rows.

peer_connections on real sockets, against ss, is in tests/integration/test_peer_block_netns.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils import _peer_connections as peers
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs
from ansible_collections.netstate.tcp.plugins.module_utils._engine._options import GatherError

from tests.unit.plugins.module_utils._engine._helpers import PROC_NET_TCP, PROC_NET_TCP6


def tables():
    return [(socket.AF_INET, list(procfs.parse_proc_net(PROC_NET_TCP, socket.AF_INET))),
            (socket.AF_INET6, list(procfs.parse_proc_net(PROC_NET_TCP6, socket.AF_INET6)))]


def counted(mask, spill_keys, local_port=None, listening=None, more_than=0, rows=None):
    counter = peers.PeerCounter(mask, local_port, spill_keys, listening)
    for family, entries in rows or tables():
        for entry in entries:
            counter.add_proc(family, entry)
            counter.spill_if_full()
    return counter.counted(more_than)


def test_state_mask_takes_syn_recv_with_new_syn_recv():
    assert peers.state_mask(["LISTEN"]) == 1 << 10
    assert peers.state_mask(["ESTABLISHED", "TIME_WAIT"]) == 1 << 1 | 1 << 6
    assert peers.state_mask(["SYN_RECV"]) == 1 << 3 | 1 << 12
    with pytest.raises(GatherError, match="^states: 'BOGUS' is not a TCP state"):
        peers.state_mask(["BOGUS"])


def test_listening_covers_its_address_or_the_wildcard_of_its_family():
    listening = peers.Listening()
    listening.add(socket.inet_aton("127.0.0.1"), 8080)
    listening.add(socket.inet_pton(socket.AF_INET6, "::"), 443)
    assert listening.covers(socket.inet_aton("127.0.0.1"), 8080)
    assert not listening.covers(socket.inet_aton("127.0.0.2"), 8080)  # the same port on another address
    assert not listening.covers(socket.inet_aton("127.0.0.1"), 8081)
    # [::] covers an IPv4 client of a dual-stack listener (an IPv4-mapped local address), not an IPv4 socket
    assert listening.covers(socket.inet_pton(socket.AF_INET6, "::ffff:10.0.0.1"), 443)
    assert not listening.covers(socket.inet_aton("10.0.0.1"), 443)


@pytest.mark.parametrize("spill_keys", [peers.SPILL_KEYS, 0, 1], ids=["dicts", "spilled", "spilled-late"])
def test_counts_every_peer_of_the_recorded_tables(spill_keys):
    every = peers.state_mask([name for name in peers.STATES if name != "LISTEN"])
    # 127.0.0.2 and 127.0.0.1 (ESTABLISHED, both ends), 10.0.0.5 (TIME_WAIT), 127.0.0.3 (IPv4-mapped, as IPv4)
    assert counted(every, spill_keys) == ({"10.0.0.5": 1, "127.0.0.1": 1, "127.0.0.2": 1, "127.0.0.3": 1}, 4, 4)
    assert counted(peers.state_mask(["TIME_WAIT"]), spill_keys) == ({"10.0.0.5": 1}, 1, 1)
    assert counted(every, spill_keys, local_port=8080) == ({"127.0.0.2": 1}, 1, 1)


@pytest.mark.parametrize("spill_keys", [peers.SPILL_KEYS, 0])
def test_inbound_counts_only_connections_to_a_listener(spill_keys):
    listening = peers.Listening()
    for family, entries in tables():
        for entry in entries:
            listening.add_proc(family, entry)
    every = peers.state_mask([name for name in peers.STATES if name != "LISTEN"])
    # the server side of 127.0.0.1:8080 and of [::]:8081; not the client end nor the TIME_WAIT we made
    assert counted(every, spill_keys, listening=listening) == ({"127.0.0.2": 1, "127.0.0.3": 1}, 2, 2)


@pytest.mark.parametrize("spill_keys", [peers.SPILL_KEYS, 0, 3])
def test_more_than_keeps_the_busiest_peers_most_first_and_counts_them_all(spill_keys):
    rows = [(1, "10.0.0.1", 80, "192.0.2.%d" % (index % 5), 40000 + index) for index in range(15)]
    rows += [(1, "10.0.0.1", 80, "192.0.2.9", 50000 + index) for index in range(4)]
    rows += [(1, "::1", 80, "2001:db8::1", 50000 + index) for index in range(6)]
    by_family = [(socket.AF_INET, rows[:19]), (socket.AF_INET6, rows[19:])]
    mask = peers.state_mask(["ESTABLISHED"])
    assert counted(mask, spill_keys, more_than=3, rows=by_family) == ({"2001:db8::1": 6, "192.0.2.9": 4}, 25, 7)
    assert list(counted(mask, spill_keys, rows=by_family)[0]) == [
        "2001:db8::1", "192.0.2.9", "192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]


@pytest.mark.parametrize("kwargs, message", [
    ({"states": "ESTABLISHED"}, "^states: 'ESTABLISHED' must be a non-empty list"),
    ({"states": []}, r"^states: \[\] must be a non-empty list"),
    ({"direction": "outbound"}, "^direction: 'outbound' is not one of inbound, all"),
    ({"backend": "bpf"}, "^backend: 'bpf' is not one of auto, netlink, proc"),
    ({"more_than": -1}, "^more_than: -1 is out of range"),
])
def test_peer_connections_refuses_options_before_reading_anything(kwargs, message):
    with pytest.raises(GatherError, match=message):
        peers.peer_connections(proc="/nonexistent", **kwargs)
