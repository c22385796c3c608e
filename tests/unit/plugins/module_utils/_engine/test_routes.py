# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_routes: the multicast groups of /proc/net/igmp and igmp6 (recorded, malformed, shuffled and random text;
a malformed file is a GatherError naming the file and line), and the files read_multicast reads or skips.

The route wrapper is tested with its decoder (test_rtnetlink.py); the namespace tests
(tests/integration/test_routes_netns.py) compare both with `ip` on real tables and groups.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _routes as routes


# ---------------------------------------------------------------- /proc/net/igmp and igmp6 (routes.parse_multicast)

# Recorded from a Debian 12 namespace (kernel 6.1), lo and one veth with two groups joined,
# 239.1.2.3 by two sockets.
IGMP = (
    "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n"
    "1\tlo        :     1      V3\n"
    "\t\t\t\t010000E0     1 0:00000000\t\t0\n"
    "3\trt0       :     3      V3\n"
    "\t\t\t\t030201EF     2 0:00000000\t\t0\n"
    "\t\t\t\t040201EF     1 0:00000000\t\t0\n"
    "\t\t\t\t010000E0     1 0:00000000\t\t0\n"
)


IGMP6 = (
    "1    lo              ff020000000000000000000000000001     1 0000000C 0\n"
    "3    rt0             ff150000000000000000000000010003     2 00000004 0\n"
)


def test_igmp_recorded():
    assert routes.parse_multicast(IGMP, "/proc/net/igmp", "ipv4") == [
        {"interface": "lo", "family": "ipv4", "group": "224.0.0.1", "users": 1},
        {"interface": "rt0", "family": "ipv4", "group": "239.1.2.3", "users": 2},
        {"interface": "rt0", "family": "ipv4", "group": "239.1.2.4", "users": 1},
        {"interface": "rt0", "family": "ipv4", "group": "224.0.0.1", "users": 1},
    ]


def test_igmp6_recorded():
    assert routes.parse_multicast(IGMP6, "/proc/net/igmp6", "ipv6") == [
        {"interface": "lo", "family": "ipv6", "group": "ff02::1", "users": 1},
        {"interface": "rt0", "family": "ipv6", "group": "ff15::1:3", "users": 2},
    ]


@pytest.mark.parametrize("text, family, message", [
    ("no header\n", "ipv4", "missing header"),
    ("Idx\tDevice\n\t\t\t\t010000E0     1 0:0\n", "ipv4", "group line before any device line"),
    ("Idx\tDevice\n1\tlo        :     1      V3\n\t\t\t\t0100E0     1 0:0\n", "ipv4", "bad IPv4 group"),
    ("Idx\tDevice\n1\tlo        :     1      V3\n\t\t\t\t010000E0     x 0:0\n", "ipv4", "line 3"),
    ("Idx\tDevice\nlo  1\n", "ipv4", "bad device line"),
    ("1 lo ff02 1\n", "ipv6", "bad index or group"),
    ("1 lo\n", "ipv6", "expected at least 4"),
    ("1 lo ff02000000000000000000000000000g 1 0 0\n", "ipv6", "line 1"),
])
def test_multicast_malformed_names_source_and_line(text, family, message):
    source = "/proc/net/igmp" if family == "ipv4" else "/proc/net/igmp6"
    with pytest.raises(routes.GatherError, match=message) as caught:
        routes.parse_multicast(text, source, family)
    assert str(caught.value).startswith(source + ": ")


@given(st.text(max_size=300), st.sampled_from(["ipv4", "ipv6"]))
@settings(max_examples=400, deadline=None)
def test_multicast_parsers_raise_only_gather_error(text, family):
    try:
        groups = routes.parse_multicast(text, "/proc/net/igmpX", family)
    except routes.GatherError as exc:
        assert str(exc).startswith("/proc/net/igmpX: ")
        return
    for group in groups:
        assert set(group) == {"interface", "family", "group", "users"} and group["family"] == family
    if family == "ipv6":
        # /proc/net/igmp6 has one group per line, no header: the groups are those of each line alone
        assert groups == [group for line in text.splitlines()
                          for group in routes.parse_multicast(line, "/proc/net/igmpX", family)]


# each line of /proc/net/igmp with what it says: a device, a group joined (address, users), or nonsense
IGMP_LINES = {
    "1\tlo        :     1      V3": ("device", "lo"),
    "3\trt0       :     3      V3": ("device", "rt0"),
    "9\tbig:": ("device", "big"),
    "\t\t\t\t010000E0     1 0:00000000\t\t0": ("group", "224.0.0.1", 1),
    "\t\t\t\t030201EF     2 0:00000000\t\t0": ("group", "239.1.2.3", 2),
    "\t\t\t\t040201EF     1 0:00000000\t\t0": ("group", "239.1.2.4", 1),
    "\t\t\t\tZZ 1 0:0": ("bad",),
    "x": ("bad",),
}


@given(st.lists(st.sampled_from(sorted(IGMP_LINES)), max_size=10))
@settings(max_examples=300, deadline=None)
def test_igmp_on_shuffled_lines(lines):
    """Each group belongs to the device line above it; a group before any device, or a line that is
    neither, fails naming its line number."""
    expected, device = [], None
    for number, line in enumerate(lines, 2):
        meaning = IGMP_LINES[line]
        if meaning[0] == "device":
            device = meaning[1]
        elif meaning[0] == "group" and device is not None:
            expected.append({"interface": device, "family": "ipv4", "group": meaning[1], "users": meaning[2]})
        else:
            expected = "/proc/net/igmp: line %d: " % number
            break
    text = IGMP.splitlines()[0] + "\n" + "\n".join(lines)
    try:
        groups = routes.parse_multicast(text, "/proc/net/igmp", "ipv4")
    except routes.GatherError as exc:
        assert isinstance(expected, str) and str(exc).startswith(expected), (exc, expected)
    else:
        assert groups == expected


def test_read_multicast_reads_both_files_and_skips_a_missing_one(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "igmp").write_text(IGMP)
    ipv4 = routes.parse_multicast(IGMP, "/proc/net/igmp", "ipv4")
    assert routes.read_multicast(str(tmp_path)) == ipv4  # a kernel without IPv6: no igmp6
    (tmp_path / "net" / "igmp6").write_text(IGMP6)
    assert routes.read_multicast(str(tmp_path)) == ipv4 + routes.parse_multicast(IGMP6, "/proc/net/igmp6", "ipv6")


def test_read_multicast_names_the_file_of_a_malformed_table(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "igmp").write_text("no header\n")
    with pytest.raises(routes.GatherError, match="^%s: missing header" % (tmp_path / "net" / "igmp")):
        routes.read_multicast(str(tmp_path))
