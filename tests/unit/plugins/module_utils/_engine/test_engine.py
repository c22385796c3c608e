# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""engine: gather()'s options, refused by name before anything is read (hypothesis on hostile values,
docs/security.md).

The counting is tested in test_aggregate.py, the option checks in test_options.py, the route and
multicast wrappers in test_rtnetlink.py and test_routes.py; the namespace tests compare gather() with
ss on real sockets.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _argspec as contract
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine

from tests.unit.plugins.module_utils._engine._helpers import HOSTILE_TEXT, MESSAGE_LIMIT


@pytest.mark.parametrize("kwargs, message", [
    ({"gather_subset": ["bogus"]}, "gather_subset: unknown subset 'bogus'"),
    ({"top": "5"}, "top: '5' is not an integer"),
    ({"top": True}, "top: True is not an integer"),
    ({"sample_interval": -1}, "sample_interval: -1 must be"),
    ({"backend": "bpf"}, "backend: 'bpf' is not one of auto, netlink, proc"),
    ({"namespace": "pid:abc"}, "namespace: 'pid:abc': expected pid:<number>"),
    ({"namespace": "a/b"}, "namespace: 'a/b' is not a namespace name"),
])
def test_gather_rejects_bad_options_before_reading_anything(kwargs, message):
    with pytest.raises(engine.GatherError, match=message):
        engine.gather(proc="/nonexistent", **kwargs)


HOSTILE_VALUE = st.one_of(
    HOSTILE_TEXT, st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=20),
    st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


GATHER_OPTIONS = ["gather_subset", "top", "sample_interval", "namespace", "backend", "max_sockets", "walk_budget",
                  "local_ports_limit", "listeners_limit"]


def _valid(option, value):
    """Whether gather() may accept the value (then it gathers for real; the test skips those)."""
    if option in ("top", "max_sockets", "walk_budget", "local_ports_limit", "listeners_limit"):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0 or value is None
    if option == "sample_interval":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 60
    if option == "backend":
        return value in contract.BACKENDS
    return value is None or value == "" or isinstance(value, (list, str)) and not isinstance(value, bytes)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GATHER_OPTIONS), HOSTILE_VALUE)
def test_check_options_refuses_what_gather_refuses_and_reads_nothing(option, value):
    """check_options() (the event source's check before its first poll) is gather()'s own check: the same
    refusal, word for word, without /proc (here /nonexistent) being read."""
    assume(value != "all")
    options = {option: value, "proc": "/nonexistent/proc"}
    try:
        engine.check_options(**options)
    except engine.GatherError as error:
        with pytest.raises(engine.GatherError) as again:
            engine.gather(run_netns="/nonexistent/netns", **options)
        assert str(again.value) == str(error)
        return
    assert _valid(option, value), (option, value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GATHER_OPTIONS), HOSTILE_VALUE)
def test_gather_refuses_hostile_options_by_name_before_reading_anything(option, value):
    assume(not _valid(option, value) or option in ("namespace", "gather_subset"))
    assume(value != "all")  # a real value: every namespace of the machine would be gathered
    try:
        # /nonexistent as /proc: an option that got through would fail on reading, which the test tells apart
        engine.gather(**{option: value, "proc": "/nonexistent/proc", "run_netns": "/nonexistent/netns"})
    except engine.GatherError as error:
        message = str(error)
        assert len(message) < MESSAGE_LIMIT, message[:300]
        assert "\n" not in message and "\0" not in message
        if "/nonexistent/" in message and option not in ("namespace",):
            # went through validation: only a value inside the option's grammar may get here
            assert _valid(option, value), (option, value, message)
            return
        # a namespace that cannot be entered is named by its label: "namespace /dev/zero: cannot enter ..."
        # the message starts with the option's name, the name the modules' users know too
        assert message.startswith((option + ":", option + " ") if option == "namespace" else option + ":"), \
            (option, message)
        return
    except (OSError, ValueError) as error:
        # past validation, reading /nonexistent/proc fails: only values inside the grammar may get here
        assert _valid(option, value) or option == "gather_subset", (option, value, error)
        return
    assert _valid(option, value), (option, value)
