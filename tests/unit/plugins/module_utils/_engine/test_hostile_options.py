# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Property tests: every gathering option (the fact modules' and gather()'s) and every collector
argument, given hostile strings, paths and numbers, ends in a clear refusal naming the option and
bounded in size, or in a value inside its grammar; never a traceback (docs/security.md)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


import argparse
import contextlib
import io
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _argspec as contract
from ansible_collections.netstate.tcp.plugins.module_utils._engine import collect, engine

# Strings a caller can pass: control characters, separators, path tricks, long and non-ASCII text.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.sampled_from("/.\\:-!,\0\n\r\t %$'\"ab1"), max_size=40),
    st.sampled_from(["..", "../etc", "/run/netns/../../etc/shadow", "/proc/self/ns/../../etc", "pid:-1",
                     "pid:1/../2", "pid:00", "a" * 70, "/" + "a/" * 40, "host\n", "all\0", "\u202eall",
                     "x" * 100000, "/dev/zero", "/run/netns/", "./blue", "blue/"]),
)
HOSTILE_VALUE = st.one_of(
    HOSTILE_TEXT, st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=20),
    st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
GATHER_OPTIONS = ["gather_subset", "top", "sample_interval", "namespace", "backend", "max_sockets", "walk_budget",
                  "local_ports_limit", "listeners_limit"]
MESSAGE_LIMIT = 600


def _valid(option, value):
    """Whether gather() may accept the value (then it gathers for real; the test skips those)."""
    if option in ("top", "max_sockets", "walk_budget", "local_ports_limit", "listeners_limit"):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0 or value is None
    if option == "sample_interval":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 60
    if option == "backend":
        return value in contract.BACKENDS
    return value is None or value == "" or isinstance(value, (list, str)) and not isinstance(value, bytes)


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


@settings(max_examples=300, deadline=None)
@given(HOSTILE_TEXT)
def test_namespace_grammar_admits_nothing_that_escapes(namespace):
    try:
        engine.check_namespace(namespace)
    except engine.GatherError as error:
        assert str(error).startswith("namespace: ") and len(str(error)) < MESSAGE_LIMIT
        return
    if namespace in ("", "host", "self", "all"):
        return
    assert not set(namespace) & {"\0", "\n", "\r", "\\", " "}
    if namespace.startswith("/"):
        assert not {"", ".", ".."} & set(namespace.split("/")[1:]), namespace
    elif namespace.startswith("pid:"):
        assert namespace[4:].isdigit() and namespace[4] != "0"
    else:
        assert "/" not in namespace and namespace[0] not in ".-" and len(namespace) <= 64


# The subsets and the names of groups of them (all, default, min).
SUBSET_NAMES = set(contract.SUBSETS) | set(contract.SUBSET_GROUPS)
# Every collector argument that takes a value, with what a value that parses must satisfy.
ARGUMENTS = {
    "--format": lambda v: v in collect.FORMATS,
    "--gather-subset": lambda v: all(name.lstrip("!") in SUBSET_NAMES for name in v),
    "--subset": lambda v: all(name.lstrip("!") in SUBSET_NAMES for name in v),  # deprecated alias
    "--top": lambda v: 1 <= v <= 100000,
    "--sample-interval": lambda v: 0 <= v <= 60 and not math.isnan(v),
    "--namespace": lambda v: v == "" or engine.NAMESPACE_RE.fullmatch(v) is not None and "\n" not in v,
    "--backend": lambda v: v in contract.BACKENDS,
    "--max-sockets": lambda v: v >= 0,
    "--local-ports-limit": lambda v: v >= 1,
    "--listeners-limit": lambda v: v >= 1,
    "--walk-budget": lambda v: v >= 0,
    "--protocol": lambda v: v in collect.PROTOCOLS,
    "--discovery-file": lambda v: v.startswith("/") and not set(v) & {"\0", "\n", "\r"},
    "--discovery-max-age": lambda v: 1 <= v <= 86400,
    "--output": lambda v: "\0" not in v and "\n" not in v,
}

# arguments whose parsed value is not under their own name
DEST = {"--subset": "gather_subset"}


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(ARGUMENTS)), st.one_of(HOSTILE_TEXT, st.integers().map(str),
                                                     st.floats().map(repr)))
def test_every_collector_argument_is_refused_with_exit_2_or_inside_its_grammar(argument, value):
    assume(not value.startswith("-") or value.lstrip("-").replace(".", "").isdigit())
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = collect.build_parser().parse_args([argument + "=" + value])
    except SystemExit as exit_status:
        assert exit_status.code == 2
        text = stderr.getvalue()
        assert text.count("\n") == 1 and len(text) < 1200, text[:300]
        assert "argument %s" % argument in text, text
        return
    parsed_value = getattr(parsed, DEST.get(argument, argument[2:].replace("-", "_")))
    assert ARGUMENTS[argument](parsed_value), (argument, value, parsed_value)


@pytest.mark.parametrize("value", ["/tmp/../tmp/x/../../etc/passwd\n", "/tmp/x\0", "/run/netns/../x", "a b"])
def test_collector_namespace_refusals_name_the_argument(value):
    stderr = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stderr(stderr):
        collect.build_parser().parse_args(["--namespace", value])
    assert "argument --namespace: namespace: " in stderr.getvalue()


def test_collector_and_modules_share_one_namespace_grammar():
    """The collector's --namespace type is the engine's check: one grammar, not two."""
    for value in ("blue", "pid:12", "/run/netns/blue", "all", "host"):
        assert collect._namespace(value) == engine.check_namespace(value) == value
    for value in ("../x", "pid:x", "x/y", "/a/../b", "-x"):
        with pytest.raises(argparse.ArgumentTypeError):
            collect._namespace(value)
        with pytest.raises(engine.GatherError):
            engine.check_namespace(value)
