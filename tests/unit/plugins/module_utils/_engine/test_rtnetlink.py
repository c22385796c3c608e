# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_rtnetlink: RTM_NEWROUTE messages (through _routes.parse_route_messages, which names the message) and the
iproute2 names files, on messages laid out as the kernel lays them out, malformed ones and random ones.

The namespace tests (tests/integration/test_routes_netns.py) compare them with `ip` on real tables.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _rtnetlink as rtnetlink
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _routes as route_facts


def rtattr(kind, value):
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def route_message(family=socket.AF_INET, dst_len=24, table=254, protocol=4, scope=0, kind=1, attrs=b""):
    return rtnetlink.RTMSG.pack(family, dst_len, 0, 0, table, protocol, scope, kind, 0) + attrs


NAMES = {7: "rt0", 1: "lo"}.get


def test_route_with_every_attribute():
    attrs = (rtattr(rtnetlink.RTA_TABLE, struct.pack("=I", 1000))
             + rtattr(rtnetlink.RTA_DST, socket.inet_aton("203.0.113.0"))
             + rtattr(rtnetlink.RTA_GATEWAY, socket.inet_aton("198.18.0.1"))
             + rtattr(rtnetlink.RTA_OIF, struct.pack("=I", 7))
             + rtattr(rtnetlink.RTA_PREFSRC, socket.inet_aton("198.18.0.9"))
             + rtattr(rtnetlink.RTA_PRIORITY, struct.pack("=I", 20)))
    route = route_facts.parse_route_messages([route_message(table=252, attrs=attrs)], interface_name=NAMES)[0]
    assert route == {"family": "ipv4", "table": "1000", "destination": "203.0.113.0/24", "gateway": "198.18.0.1",
                     "interface": "rt0", "source": "198.18.0.9", "metric": 20, "protocol": "static",
                     "scope": "global", "type": "unicast", "nexthops": []}


def test_route_defaults_multipath_and_names():
    hop = struct.pack("=HBBi", 8 + 8, 0, 2, 7) + rtattr(rtnetlink.RTA_GATEWAY, socket.inet_aton("198.18.0.2"))
    via = struct.pack("=H", socket.AF_INET6) + socket.inet_pton(socket.AF_INET6, "fe80::1")
    messages = [
        route_message(dst_len=0, table=255, protocol=2, scope=254, kind=2),
        route_message(dst_len=0, attrs=rtattr(rtnetlink.RTA_MULTIPATH, hop)),
        route_message(dst_len=0, attrs=rtattr(rtnetlink.RTA_VIA, via)),
        route_message(family=socket.AF_INET6, dst_len=48, kind=6, protocol=77,
                      attrs=rtattr(rtnetlink.RTA_DST, socket.inet_pton(socket.AF_INET6, "2001:db8:3::"))),
        route_message(family=128),  # RTNL_FAMILY_IPMR: not a family of ours
    ]
    routes = route_facts.parse_route_messages(messages, tables={255: "local", 254: "main"}, protocols={2: "kernel"},
                                              interface_name=NAMES)
    assert len(routes) == 4
    assert (routes[0]["table"], routes[0]["destination"], routes[0]["protocol"], routes[0]["scope"],
            routes[0]["type"]) == ("local", "0.0.0.0/0", "kernel", "host", "local")
    assert routes[1]["nexthops"] == [{"gateway": "198.18.0.2", "interface": "rt0", "weight": 3}]
    assert routes[2]["gateway"] == "fe80::1"
    assert (routes[3]["destination"], routes[3]["type"], routes[3]["protocol"]) == ("2001:db8:3::/48", "blackhole",
                                                                                    "77")


@pytest.mark.parametrize("data, message", [
    (b"\x02\x18", "shorter than struct rtmsg"),
    (route_message(dst_len=33), "prefix length 33"),
    (route_message(attrs=struct.pack("=HH", 2, 1)), "bad length 2"),
    (route_message(attrs=struct.pack("=HH", 40, 1) + b"\0" * 4), "bad length 40"),
    (route_message(attrs=rtattr(rtnetlink.RTA_DST, b"\1\2\3")), "RTA_DST: 3 bytes, expected 4"),
    (route_message(attrs=rtattr(rtnetlink.RTA_OIF, b"\1\2")), "RTA_OIF: 2 bytes"),
    (route_message(attrs=rtattr(rtnetlink.RTA_VIA, struct.pack("=H", 99) + b"\0" * 4)), "unknown address family"),
    (route_message(attrs=rtattr(rtnetlink.RTA_MULTIPATH, struct.pack("=HBBi", 4, 0, 0, 0))), "next hop"),
])
def test_malformed_route_names_the_message(data, message):
    with pytest.raises(route_facts.GatherError, match=message) as caught:
        route_facts.parse_route_messages([route_message(), data], interface_name=NAMES)
    assert str(caught.value).startswith("routes: rtnetlink RTM_NEWROUTE message 2: ")


@given(st.binary(max_size=120))
@settings(max_examples=500, deadline=None)
def test_route_parser_raises_only_gather_error(data):
    try:
        routes = route_facts.parse_route_messages([data], interface_name=NAMES)
    except route_facts.GatherError as exc:
        assert str(exc).startswith("routes: rtnetlink RTM_NEWROUTE message 1: ")
        return
    for route in routes:
        assert route["family"] in ("ipv4", "ipv6") and "/" in route["destination"]


@given(st.lists(st.tuples(st.sampled_from([1, 4, 5, 6, 7, 9, 15, 18, 99]), st.binary(max_size=24)), max_size=6),
       st.sampled_from([socket.AF_INET, socket.AF_INET6]))
@settings(max_examples=500, deadline=None)
def test_route_parser_on_random_attributes(attributes, family):
    data = route_message(family=family, dst_len=0, attrs=b"".join(rtattr(kind, value) for kind, value in attributes))
    try:
        routes = route_facts.parse_route_messages([data], interface_name=NAMES)
    except route_facts.GatherError as exc:
        assert "RTM_NEWROUTE message 1" in str(exc)
        return
    # what the attributes say, decoded here on their own: the last of each kind wins
    last = dict(attributes)
    default = "0.0.0.0" if family == socket.AF_INET else "::"
    assert len(routes) == 1
    route = routes[0]
    assert route["family"] == ("ipv4" if family == socket.AF_INET else "ipv6")
    assert route["destination"] == "%s/0" % (socket.inet_ntop(family, last[1]) if 1 in last else default)
    assert route["metric"] == (struct.unpack("=I", last[6])[0] if 6 in last else 0)
    table = struct.unpack("=I", last[15])[0] if 15 in last else 254
    assert route["table"] == {254: "main", 255: "local", 253: "default", 0: "unspec"}.get(table, str(table))
    assert route["interface"] == (NAMES(struct.unpack("=I", last[4])[0]) if 4 in last else None)


def test_iproute2_names_files(tmp_path):
    (tmp_path / "rt_tables").write_text("# comment\n255\tlocal\n100 web  # trailing\nbad line\n0x20 hex\n")
    (tmp_path / "rt_tables.d").mkdir()
    (tmp_path / "rt_tables.d" / "extra.conf").write_text("200 backup\n")
    names = rtnetlink.read_names(str(tmp_path / "rt_tables"), rtnetlink.TABLES)
    assert names[100] == "web" and names[200] == "backup" and names[32] == "hex" and names[254] == "main"
    assert rtnetlink.read_names(str(tmp_path / "missing"), {1: "x"}) == {1: "x"}


def test_iproute2_names_files_that_are_fifos_are_skipped_not_waited_on(tmp_path):
    """A FIFO among the names files (rt_tables.d/x.conf) would block open() for ever; it is skipped."""
    (tmp_path / "rt_tables").write_text("100 web\n")
    (tmp_path / "rt_tables.d").mkdir()
    os.mkfifo(tmp_path / "rt_tables.d" / "a.conf")
    (tmp_path / "rt_tables.d" / "b.conf").write_text("200 backup\n")

    def hung(_signum, _frame):
        raise AssertionError("read_names waited on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        names = rtnetlink.read_names(str(tmp_path / "rt_tables"), rtnetlink.TABLES)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert names[100] == "web" and names[200] == "backup"
