# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of peer_block's option checks, address handling, SSH client search (a temporary /proc tree)
and the nft transaction text. The firewall itself is tested for real in tests/integration and tests/fleet."""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import ipaddress
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils import _peer_block
from ansible_collections.netstate.tcp.plugins.module_utils._peer_block import (
    NftablesFirewall,
    PeerBlockError,
    protected_reason,
    ssh_client,
    validate,
)


def test_defaults_count_every_state_but_listen():
    options = validate({"max_connections": 5})
    assert "LISTEN" not in options["states"] and "TIME_WAIT" in options["states"]
    assert options["duration"] == 3600 and options["max_blocks"] == 10 and options["allow"] == []


def test_defaults_count_inbound_connections_without_syn_recv():
    """Issue 18: SYN_RECV is made by forged SYNs, and outgoing connections are to this host's own servers."""
    options = validate({"max_connections": 5})
    assert options["direction"] == "inbound"
    assert options["states"] == ["ESTABLISHED", "SYN_SENT", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
                                 "CLOSE_WAIT", "LAST_ACK", "CLOSING"]
    asked = validate({"max_connections": 5, "states": ["established", "SYN_RECV"], "direction": "all"})
    assert asked["states"] == ["ESTABLISHED", "SYN_RECV"] and asked["direction"] == "all"


@pytest.mark.parametrize("params, message", [
    ({"max_connections": True}, "max_connections: True is not an integer"),
    ({"max_connections": "5"}, "max_connections: '5' is not an integer"),
    ({"max_connections": 5, "states": "ESTABLISHED"}, "states: 'ESTABLISHED' must be a non-empty list"),
    ({"max_connections": 5, "states": ["ESTAB"]}, "states: 'ESTAB' is not a TCP state"),
    ({"max_connections": 5, "allow": "10.0.0.1"}, "allow: '10.0.0.1' must be a list"),
    ({"max_connections": 5, "allow": ["300.1.1.1"]}, "allow: '300.1.1.1' is not an IPv4/IPv6 address or CIDR"),
    ({"max_connections": 5, "duration": 2147484}, "duration: 2147484 is out of range (0..2147483)"),
    ({"max_connections": 5, "state": "gone"}, "state: 'gone' is not one of present, absent"),
    ({}, "max_connections: required with state=present"),
    ({"max_connections": 5, "direction": "outbound"}, "direction: 'outbound' is not one of inbound, all"),
    ({"max_connections": 5, "allow": ["10.0.0.1%eth0"]}, "allow: '10.0.0.1%eth0' is not an IPv4/IPv6"),
    ({"max_connections": 5, "allow": ""}, "allow: '' must be a list"),
    ({"max_connections": 5, "states": [None]}, "states: None is not a TCP state"),
])
def test_bad_options_name_the_option_and_value(params, message):
    with pytest.raises(PeerBlockError) as error:
        validate(params)
    assert message in str(error.value)


def test_absent_needs_no_threshold():
    assert validate({"state": "absent"})["max_connections"] is None


def test_reasons_in_order():
    own = {ipaddress.ip_address("192.0.2.1")}
    client = ipaddress.ip_address("192.0.2.50")
    allow = [ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8::/32")]
    assert protected_reason(ipaddress.ip_address("127.0.0.9"), own, client, allow) == "loopback"
    assert protected_reason(ipaddress.ip_address("::1"), own, client, allow) == "loopback"
    assert protected_reason(ipaddress.ip_address("192.0.2.1"), own, client, allow) == "own_address"
    assert protected_reason(client, own, client, allow) == "ssh_client"
    assert protected_reason(ipaddress.ip_address("198.51.100.77"), own, client, allow) == "allow"
    assert protected_reason(ipaddress.ip_address("2001:db8::5"), own, client, allow) == "allow"
    assert protected_reason(ipaddress.ip_address("203.0.113.5"), own, client, allow) is None


def _process(proc, pid, ppid, environ):
    os.makedirs(os.path.join(proc, str(pid)))
    with open(os.path.join(proc, str(pid), "status"), "w") as handle:
        handle.write("Name:\tx\nPPid:\t%d\n" % ppid)
    with open(os.path.join(proc, str(pid), "environ"), "wb") as handle:
        handle.write(b"\0".join(b"%s=%s" % (k.encode(), v.encode()) for k, v in environ.items()))


def test_ssh_client_from_own_environment_first(tmp_path):
    address, source = ssh_client({"SSH_CLIENT": "2001:db8::9 40000 22"}, proc=str(tmp_path), pid=1)
    assert (str(address), source) == ("2001:db8::9", "SSH_CLIENT")


def test_ssh_client_from_an_ancestor_when_become_cleared_it(tmp_path):
    proc = str(tmp_path)
    _process(proc, 100, 1, {"SSH_CONNECTION": "192.0.2.50 51000 192.0.2.1 22"})  # the session's shell
    _process(proc, 200, 100, {"SUDO_USER": "admin"})                          # sudo
    _process(proc, 300, 200, {})                                               # the module
    address, source = ssh_client({}, proc=proc, pid=300)
    assert (str(address), source) == ("192.0.2.50", "SSH_CONNECTION of process 100")
    assert ssh_client({}, proc=proc, pid=100) == (None, None)  # pid 1 is never read


def test_nft_transaction_is_one_table_of_our_own():
    script = NftablesFirewall(None, "nft").script(
        [ipaddress.ip_address("198.51.100.7"), ipaddress.ip_address("2001:db8::7")], 600)
    lines = script.splitlines()
    assert all(" inet netstate_tcp" in line for line in lines)
    assert "add element inet netstate_tcp blocked_ipv4 { 198.51.100.7 timeout 600s }" in lines
    assert "add element inet netstate_tcp blocked_ipv6 { 2001:db8::7 timeout 600s }" in lines
    assert "timeout" not in NftablesFirewall(None, "nft").script([ipaddress.ip_address("192.0.2.9")], 0) \
        .splitlines()[-1]


# ---------------------------------------------------------------- hostile options (property)

OPTIONS = ("max_connections", "states", "direction", "local_port", "allow", "duration", "max_blocks", "state",
           "backend")
VALID = {"max_connections": 5, "states": ["ESTABLISHED"], "direction": "inbound", "local_port": 443,
         "allow": ["192.0.2.0/24"], "duration": 60, "max_blocks": 3, "state": "present", "backend": "nftables"}
NOT_INT = st.one_of(st.booleans(), st.floats(allow_nan=True), st.text(max_size=30), st.binary(max_size=10),
                    st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
TEXT = st.text(max_size=300)
HUGE = st.integers(min_value=10, max_value=10 ** 6).map(lambda n: "9" * n)  # a string a megabyte long
OTHER = st.one_of(st.integers(), st.floats(), st.binary(max_size=20), st.lists(st.text(max_size=5), max_size=3),
                  st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2), st.booleans())


def not_one_of(choices):
    return st.one_of(OTHER, st.none(), TEXT.filter(lambda text: text not in choices), HUGE)


ADDRESS = st.one_of(st.ip_addresses().map(str), st.ip_addresses(v=4).map(lambda a: "%s/24" % a))
BAD_ALLOW_ITEM = st.one_of(
    OTHER, st.none(), HUGE,
    st.tuples(ADDRESS, st.sampled_from(["%eth0", " ", "\n", ";", "\0", "/33x", "/-1", ",10.0.0.1", " -j ACCEPT"]))
    .map("".join),
    st.tuples(st.sampled_from(["", " ", "\t"]), ADDRESS).filter(lambda pair: pair[0]).map("".join),
    st.from_regex(r"\A[a-z]{1,20}\.(com|org|net)\Z"),
    st.ip_addresses(v=4).map(lambda a: "%s/%d" % (a, 33)), st.ip_addresses(v=6).map(lambda a: "%s/%d" % (a, 129)),
)
HOSTILE = {
    "max_connections": st.one_of(NOT_INT, st.integers(max_value=0), st.integers(min_value=10 ** 9 + 1)),
    "local_port": st.one_of(NOT_INT, st.integers(max_value=0), st.integers(min_value=65536)),
    "duration": st.one_of(NOT_INT, st.none(), st.integers(max_value=-1), st.integers(min_value=2147484)),
    "max_blocks": st.one_of(NOT_INT, st.none(), st.integers(max_value=0), st.integers(min_value=65537)),
    "states": st.one_of(
        TEXT, HUGE, st.integers(), st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=1, max_size=2),
        st.just([]), st.just(["LISTEN"]),
        st.lists(st.one_of(OTHER, st.none(), TEXT.filter(lambda text: text.upper() not in _peer_block.STATES)),
                 min_size=1, max_size=4).map(lambda bad: ["ESTABLISHED"] + bad)),
    "allow": st.one_of(TEXT.filter(bool), HUGE, st.integers(),
                       st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
                       st.lists(BAD_ALLOW_ITEM, min_size=1, max_size=3).map(lambda bad: ["192.0.2.1"] + bad)),
    "direction": not_one_of(_peer_block.DIRECTIONS),
    "state": not_one_of(("present", "absent")),
    "backend": not_one_of(_peer_block.BACKENDS),
}
HOSTILE_CASE = st.sampled_from(OPTIONS).flatmap(lambda name: st.tuples(st.just(name), HOSTILE[name]))
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Untouchable:
    """peer_block's `run` and `which`: any use of one means something was looked at or applied."""

    def __init__(self):
        self.calls = []

    def run(self, argv, data=None):
        self.calls.append(list(argv))
        return 1, "", "not run"

    def which(self, name):
        self.calls.append(["which", name])
        return "/usr/sbin/" + name


@PROPERTY
@given(HOSTILE_CASE)
def test_a_hostile_option_fails_naming_it_and_nothing_is_run(case):
    name, value = case
    params = dict(VALID, **{name: value})
    tools = Untouchable()
    with pytest.raises(PeerBlockError) as error:
        _peer_block.run(params, tools.run, tools.which, environ={}, proc="/nonexistent")
    message = str(error.value)
    assert message.startswith(name + ": "), (name, message)
    assert len(message) < 600, message  # the value is quoted bounded, never whole
    assert tools.calls == []  # checked before a command was looked up or run: nothing applied


@PROPERTY
@given(st.fixed_dictionaries({
    "max_connections": st.integers(1, 10 ** 9), "local_port": st.one_of(st.none(), st.integers(1, 65535)),
    "duration": st.integers(0, 2147483), "max_blocks": st.integers(1, 65536),
    "states": st.one_of(st.none(), st.lists(st.sampled_from(_peer_block.STATES), min_size=1, max_size=4)),
    "allow": st.lists(ADDRESS, max_size=3), "direction": st.sampled_from(_peer_block.DIRECTIONS),
    "backend": st.sampled_from(_peer_block.BACKENDS)}))
def test_every_valid_option_set_is_accepted(params):
    """The other side of the property above: its hostile values are hostile, not merely unusual."""
    options = validate(params)
    assert options["direction"] == params["direction"] and len(options["allow"]) == len(params["allow"])


@pytest.mark.parametrize("name, value", [
    ("allow", ["192.0.2.1\n"]),          # `$` matched before a trailing newline, and the address was stripped
    ("allow", ["2001:db8::/32\n"]),
    ("allow", [" 192.0.2.1"]),
    ("states", ["e\u017ftablished"]),    # LATIN SMALL LETTER LONG S: its upper() is an ASCII S
    ("states", ["f\u0131n_wait1"]),     # LATIN SMALL LETTER DOTLESS I: its upper() is an ASCII I
])
def test_near_misses_of_the_grammar_are_refused(name, value):
    """Values that a lenient parser would read as valid, found by the property above on a CI run."""
    with pytest.raises(PeerBlockError) as error:
        validate(dict(VALID, **{name: value}))
    assert str(error.value).startswith(name + ": ")
