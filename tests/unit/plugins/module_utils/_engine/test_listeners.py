# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_listeners: the walk finds the process of a socket this test holds, and what gather() makes of a walk's
result: the listeners kept under listeners_limit and the reason and warning for listeners left without
a process.

The walk on real listeners of other processes, and under a small open-files limit, is in
tests/integration/test_listener_walk.py and test_listener_walk_fd_limit.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _aggregate as aggregate
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _listeners as listeners


def test_the_walk_finds_the_process_of_a_socket_it_holds():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        inode = os.fstat(held.fileno()).st_ino
        found = listeners.map_socket_inodes({inode})
        assert found.owners == {inode: os.getpid()}
        assert found.reads >= 1 and not found.exhausted and not found.fd_limited and not found.unlisted
        full = listeners.map_socket_inodes(set(), full=True)
        assert os.getpid() in full.inode_pids[inode]


def test_a_budget_of_no_descriptor_is_exhausted():
    with socket.socket() as held:
        found = listeners.map_socket_inodes({os.fstat(held.fileno()).st_ino}, budget=0)
    assert found.exhausted and found.owners == {} and found.reads == 0


def result(**fields):
    values = dict(owners={}, denied=0, inode_pids=None, reads=7, exhausted=False)
    values.update(fields)
    return listeners.FdWalkResult(**values)


@pytest.mark.parametrize("found, time_budget, reason, words", [
    (result(exhausted=True), None, "budget", "its budget of 100 file descriptors (walk_budget)"),
    (result(exhausted=True), 0.25, "budget", "its time, 250 ms (a quarter of the socket dump's, at least 100 ms), "
                                             "after 7 file descriptors"),
    (result(fd_limited=3, soft_limit=64), None, "fd limit",
     "ran out of file descriptors (the open-files soft limit, RLIMIT_NOFILE or ulimit -n, is 64) and could not "
     "read 3 process(es)"),
    (result(unlisted=True), None, "fd limit", "is unlimited) and could not read the list of processes"),
    (result(denied=4), None, "unreadable", "the file descriptors of 4 process(es) are unreadable"),
    (result(), None, "not held", "no process of this namespace holds them"),
])
def test_walk_warning_gives_the_reason_of_listeners_left_without_a_process(found, time_budget, reason, words):
    warnings = []
    assert listeners.walk_warning(found, 2, 100, time_budget, False, warnings) == reason
    assert len(warnings) == 1 and words in warnings[0], warnings
    assert warnings[0].startswith("2 listener(s) without pid/process") or reason == "unreadable"
    assert listeners.walk_warning(found, 0, 100, time_budget, False, warnings) is None and len(warnings) == 1


def row(protocol, port, queue=None, backlog=None):
    return {"protocol": protocol, "family": "ipv4", "address": "0.0.0.0", "port": port, "queue": queue,
            "backlog": backlog, "uid": 0, "inode": port}


def test_listeners_limit_keeps_the_fullest_accept_queues_and_sums_the_rest():
    tcp = aggregate.TcpAggregate((32768, 60999))
    rows = [row("tcp", 80, 1, 100), row("tcp", 81, 50, 100), row("tcp", 82, 3, 0), row("udp", 53),
            row("tcp", 83, 0, 10), row("tcp", 84, 10, 40)]
    assert listeners._bounded_listeners(tcp, rows, None) == (rows, {"tcp": 0, "udp": 0, "queue": 0,
                                                                    "max_saturation": None})
    kept, rest = listeners._bounded_listeners(tcp, rows, 3)
    # a queue on backlog 0 ranks above all, then 50/100, then 10/40
    assert [item["port"] for item in kept] == [82, 81, 84]
    assert rest == {"tcp": 2, "udp": 1, "queue": 1, "max_saturation": 0.01}
