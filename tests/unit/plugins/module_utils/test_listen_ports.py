# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""listener_facts' community.general shape, on gather() documents built by hand.

The same code on real sockets, against community.general's own module, is in
tests/integration/test_listen_ports_compat.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import os

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils import _listen_ports as lp


def listener(protocol, family, address, port, pid=None):
    return {"protocol": protocol, "family": family, "address": address, "port": port,
            "backlog": 128 if protocol == "tcp" else None, "queue": 0 if protocol == "tcp" else None,
            "saturation": 0.0, "pid": pid, "process": "srv" if pid else None, "user": "root",
            "stime": "2026-11-26T03:58:31" if pid else None, "connections": 1 if protocol == "tcp" else None,
            "unit": "srv.service" if pid else None}


def sock(protocol, state, local, lport, remote, rport, inode=0, family="ipv4"):
    return {"protocol": protocol, "family": family, "state": state, "local_address": local, "local_port": lport,
            "remote_address": remote, "remote_port": rport, "recv_q": 0, "send_q": 0, "uid": 0, "inode": inode}


FACTS = {
    "listeners": [listener("tcp", "ipv4", "0.0.0.0", 80, pid=10), listener("tcp", "ipv6", "::", 443, pid=10),
                  listener("udp", "ipv4", "0.0.0.0", 53, pid=11)],
    "sockets": [
        sock("tcp", "LISTEN", "0.0.0.0", 80, "0.0.0.0", 0, inode=1),
        sock("tcp", "TIME_WAIT", "127.0.0.1", 80, "127.0.0.1", 40000),
        sock("tcp", "CLOSE_WAIT", "::1", 443, "::1", 40001, family="ipv6"),
        sock("udp", "UNCONN", "0.0.0.0", 53, "0.0.0.0", 0, inode=2),
        sock("udp", "ESTAB", "127.0.0.1", 40002, "127.0.0.1", 53),
    ],
}


@pytest.mark.parametrize("address, port, text", [
    ("127.0.0.1", 5556, "127.0.0.1:5556"), ("0.0.0.0", 0, "0.0.0.0:*"), ("::", 0, ":::*"),
    ("::1", 5556, "::1:5556"), ("2001:db8::1", 443, "2001:db8::1:443"),
])
def test_foreign_address_is_netstat_n(address, port, text):
    assert lp.foreign_address(address, port) == text


def test_lstart_is_ps_lstart():
    assert lp.lstart("2026-11-06T03:58:31") == "Fri Nov  6 03:58:31 2026"
    assert lp.lstart(None) is None and lp.lstart("not a time") is None


def test_default_is_listeners_only_without_state():
    result = lp.listen_ports_facts(FACTS)
    assert [(r["address"], r["port"]) for r in result["tcp_listen"]] == [("0.0.0.0", 80), ("::", 443)]
    assert [(r["address"], r["port"]) for r in result["udp_listen"]] == [("0.0.0.0", 53)]
    for row in result["tcp_listen"] + result["udp_listen"]:
        assert "state" not in row and "foreign_address" not in row
    assert result["tcp_listen"][0]["stime"] == "Thu Nov 26 03:58:31 2026"
    assert result["tcp_listen"][0]["name"] == "srv" and result["tcp_listen"][0]["backlog"] == 128
    assert result["tcp_listen"][0]["unit"] == "srv.service"  # the engine's, as it is


def test_include_non_listening_adds_every_socket_once(tmp_path):
    os.makedirs(tmp_path / "proc")
    warnings = []
    result = lp.listen_ports_facts(FACTS, include_non_listening=True, proc=str(tmp_path / "proc"),
                                   warnings=warnings)
    tcp = [(r["state"], r["address"], r["port"], r["foreign_address"]) for r in result["tcp_listen"]]
    assert tcp == [("LISTEN", "0.0.0.0", 80, "0.0.0.0:*"), ("TIME_WAIT", "127.0.0.1", 80, "127.0.0.1:40000"),
                   ("LISTEN", "::", 443, ":::*"), ("CLOSE_WAIT", "::1", 443, "::1:40001")]
    udp = [(r["state"], r["address"], r["port"], r["foreign_address"]) for r in result["udp_listen"]]
    assert udp == [("UNCONN", "0.0.0.0", 53, "0.0.0.0:*"), ("ESTAB", "127.0.0.1", 40002, "127.0.0.1:53")]
    time_wait = result["tcp_listen"][1]
    # Nobody holds a TIME_WAIT socket: no pid, no user, no listener fields.
    assert [time_wait[k] for k in ("pid", "name", "user", "stime", "backlog", "queue", "connections", "unit")] == [
        None] * 8
    assert result["tcp_listen"][0]["pid"] == 10 and result["tcp_listen"][0]["backlog"] == 128
    assert warnings == []


def test_gather_args():
    # listener_facts lists every listener: no listeners_limit
    assert lp.gather_args(False) == {"gather_subset": ["listeners"], "max_sockets": 0, "listeners_limit": None}
    assert lp.gather_args(True)["gather_subset"] == ["listeners", "sockets"]
    assert lp.gather_args(True)["listeners_limit"] is None
