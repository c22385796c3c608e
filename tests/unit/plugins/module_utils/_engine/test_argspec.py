# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The options contract (_argspec.py) against everything that takes those options.

The engine, the collector's argparse, the modules' argument specs, the doc fragment and the
collector's page in docs/ must accept, refuse, choose and document what the contract says, at
the very bounds. The roles' side is tests/unit/roles/test_role_options.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import os
import re

import pytest
import yaml

from ansible_collections.netstate.tcp.plugins.doc_fragments import gather as fragment
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _aggregate as aggregate
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _argspec as contract
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _options as options
from ansible_collections.netstate.tcp.plugins.module_utils import _peer_block, _peer_connections
from ansible_collections.netstate.tcp.plugins.module_utils._engine import collect, engine
from tests.conftest import ROOT
from tests.support.ss_oracle import ALL_STATES

# contract option -> the collector's flag
FLAGS = {"top": "--top", "sample_interval": "--sample-interval", "max_sockets": "--max-sockets",
         "walk_budget": "--walk-budget", "discovery_max_age": "--discovery-max-age",
         "local_ports_limit": "--local-ports-limit", "listeners_limit": "--listeners-limit"}


def parse(*argv):
    return collect.build_parser().parse_args(list(argv))


def refused(capsys, *argv):
    """The collector's one-line error for argv (it must exit 2)."""
    with pytest.raises(SystemExit) as raised:
        parse(*argv)
    assert raised.value.code == 2
    return capsys.readouterr().err


def test_states_are_the_ones_ss_knows():
    # ss's own state names, mapped by the oracle independently of the engine
    assert contract.TCP_STATES == ALL_STATES
    assert contract.CONNECTION_STATES == tuple(state for state in ALL_STATES if state != "LISTEN")


def test_everything_takes_its_lists_from_the_contract():
    assert aggregate.STATES == contract.TCP_STATES
    # kernel numbers 1..11 in the contract's order; 12 (NEW_SYN_RECV) counts as SYN_RECV
    assert aggregate.STATE_NAMES[1:12] == contract.TCP_STATES and aggregate.STATE_NAMES[12] == "SYN_RECV"
    assert (options.SUBSETS, options.DEFAULT_SUBSET, engine.BACKENDS) == (
        contract.SUBSETS, contract.DEFAULT_SUBSET, contract.BACKENDS)
    assert collect.TCP_STATES == contract.TCP_STATES
    assert _peer_block.STATES == contract.CONNECTION_STATES


def test_subset_groups_resolve_as_documented():
    assert options.resolve_subset(["all"]) == sorted(contract.SUBSETS)
    assert options.resolve_subset(["default"]) == sorted(contract.DEFAULT_SUBSET)
    assert options.resolve_subset(["min"]) == ["states"]
    assert set(contract.DEFAULT_SUBSET) <= set(contract.SUBSETS)
    for name in contract.SUBSET_GROUPS:
        assert name not in contract.SUBSETS


@pytest.mark.parametrize("name", sorted(contract.RANGES))
def test_every_range_is_used(name):
    assert name in FLAGS or name == "local_port"
    low, high = contract.RANGES[name]
    assert high is None or low < high
    if name in contract.DEFAULTS:
        assert low <= contract.DEFAULTS[name] and (high is None or contract.DEFAULTS[name] <= high)


def test_collector_defaults_and_choices_are_the_contract_s():
    args = parse()
    assert (args.top, args.sample_interval, args.backend, args.max_sockets, args.discovery_max_age, args.walk_budget) \
        == (contract.DEFAULTS["top"], contract.DEFAULTS["sample_interval"], contract.DEFAULTS["backend"],
            contract.DEFAULTS["max_sockets"], contract.DEFAULTS["discovery_max_age"], None)
    backend = next(action for action in collect.build_parser()._actions if action.dest == "backend")
    assert tuple(backend.choices) == contract.BACKENDS
    for name in ("all", "default", "min") + contract.SUBSETS:
        assert parse("--gather-subset", "%s,!%s" % (name, name)).gather_subset == [name, "!" + name]


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_collector_accepts_the_bounds_and_refuses_one_beyond(capsys, name):
    flag = FLAGS[name]
    dest = flag[2:].replace("-", "_")
    low, high = contract.RANGES[name]
    assert getattr(parse(flag, str(low)), dest) == low
    err = refused(capsys, flag, str(low - 1))
    # the engine's message (the modules' users read the same), after the flag
    assert "argument %s: %s: " % (flag, name) in err and str(low - 1) in err
    assert ("is out of range (%s)" % contract.describe_range(name) in err if name != "sample_interval"
            else "must be a number of seconds from %s to %s" % (low, high) in err), err
    if high is None:
        assert getattr(parse(flag, str(10 ** 15)), dest) == 10 ** 15
    else:
        assert getattr(parse(flag, str(high)), dest) == high
        err = refused(capsys, flag, str(high + 1))
        assert "argument %s: %s: " % (flag, name) in err and str(high + 1) in err and "%s" % high in err


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_collector_and_engine_share_one_range_check(capsys, name):
    """The collector's type for a numeric flag is the engine's check: same verdict, same message."""
    flag = FLAGS[name]
    check = options.check_seconds if name == "sample_interval" else options.check_count
    number = float if name == "sample_interval" else int
    low, high = contract.RANGES[name]
    for value in (low - 1, low, 10 ** 15 if high is None else high, 10 ** 15 if high is None else high + 1):
        try:
            expected = check(name, number(value))
        except options.GatherError as error:
            assert str(error) in refused(capsys, flag, str(number(value)))
        else:
            assert getattr(parse(flag, str(number(value))), flag[2:].replace("-", "_")) == expected


@pytest.mark.parametrize("name, option", [("top", "top"), ("max_sockets", "max_sockets"),
                                          ("walk_budget", "walk_budget"), ("sample_interval", "sample_interval")])
def test_engine_accepts_the_bounds_and_refuses_one_beyond(name, option):
    low, high = contract.RANGES[name]
    for value in (low, 10 ** 15 if high is None else high):
        # this host's own sockets, the cheapest subset that uses the option
        gather_subset = {"max_sockets": ["min", "sockets"], "walk_budget": ["min", "listeners"]}.get(option, ["min"])
        facts = engine.gather(gather_subset=gather_subset, **{option: value})
        assert facts["tcp"]["total"] >= 0
    beyond = [low - 1] + ([] if high is None else [high + 1])
    for value in beyond:
        # refused before anything is read
        with pytest.raises(engine.GatherError, match=r"^%s: %s" % (option, value)):
            engine.gather(proc="/nonexistent", **{option: value})


def test_engine_and_peer_block_refuse_ports_outside_the_range():
    low, high = contract.RANGES["local_port"]
    for value in (low - 1, high + 1):
        with pytest.raises(engine.GatherError, match="^local_port: %d is out of range" % value):
            _peer_connections.peer_connections(local_port=value, proc="/nonexistent")
        with pytest.raises(_peer_block.PeerBlockError, match="^local_port: %d is out of range" % value):
            _peer_block.validate({"max_connections": 5, "local_port": value})
    assert _peer_block.validate({"max_connections": 5, "local_port": high})["local_port"] == high


def test_module_argument_specs_are_built_from_the_contract():
    specs = dict(contract.GATHER_SCOPE, **contract.SOCKET_SOURCE)
    assert specs["backend"]["choices"] == list(contract.BACKENDS)
    for name in ("top", "sample_interval", "max_sockets", "backend"):
        assert specs[name]["default"] == contract.DEFAULTS[name], name
    assert specs["gather_subset"]["default"] == list(contract.DEFAULTS["gather_subset"])


def _fragment(var):
    return yaml.safe_load(getattr(fragment.ModuleDocFragment, var))["options"]


def test_doc_fragment_documents_the_contract():
    source = _fragment("DOCUMENTATION")
    assert source["backend"]["choices"] == list(contract.BACKENDS)
    assert source["backend"]["default"] == contract.DEFAULTS["backend"]
    counts = _fragment("COUNTS")
    assert sorted(counts) == sorted(contract.GATHER_SCOPE) and sorted(source) == sorted(contract.SOCKET_SOURCE)
    for name, spec in dict(contract.GATHER_SCOPE, **contract.SOCKET_SOURCE).items():
        documented = dict(counts, **source)[name]
        assert documented["type"] == spec["type"] and documented.get("default") == spec.get("default"), name
    subset_lines = counts["gather_subset"]["description"]
    for name in contract.SUBSETS:        # each subset described in a line of its own, in the contract's order
        assert sum(line.startswith("V(%s) " % name) for line in subset_lines) == 1, name
    described = [line.split(")", 1)[0][2:] for line in subset_lines if line.startswith("V(")
                 and line.split(")", 1)[0][2:] in contract.SUBSETS]
    assert described == list(contract.SUBSETS)
    groups = subset_lines[-1]
    for group, members in contract.SUBSET_GROUPS.items():
        expected = "every subset" if members == contract.SUBSETS else \
            " and ".join([", ".join("V(%s)" % m for m in members[:-1]), "V(%s)" % members[-1]]) \
            if len(members) > 1 else "V(%s)" % members[0]
        assert "V(%s) is %s" % (group, expected) in groups, group
    assert "From V(%s) to V(%s)." % contract.RANGES["top"] in counts["top"]["description"]
    interval = counts["sample_interval"]["description"]
    assert "From V(%s) to V(%s) seconds." % contract.RANGES["sample_interval"] in interval
    low, high = contract.RANGES["max_sockets"]
    assert high is None and "V(%s) or more." % low in counts["max_sockets"]["description"]


def read_doc(name):
    with open(os.path.join(ROOT, "docs", name), encoding="utf-8") as handle:
        return handle.read()


def test_collector_page_in_docs_agrees():
    rows = dict(re.findall(r"^\| `(--[a-z-]+)[^`]*` \| (.*) \|$", read_doc("monitoring.md"), re.MULTILINE))
    assert "%s..%s" % contract.RANGES["top"] in rows["--top"]
    assert "(default %d)" % contract.DEFAULTS["top"] in rows["--top"]
    assert rows["--sample-interval"].startswith("%s..%s s" % contract.RANGES["sample_interval"])
    assert re.findall(r"`([a-z]+)`", rows["--backend"]) == list(contract.BACKENDS)
    assert re.match(r"gather_subset, comma separated: `([a-z,]+)` by default", rows["--gather-subset"]).group(1) \
        == ",".join(contract.DEFAULT_SUBSET)


def test_facts_contract_lists_the_states():
    text = read_doc("facts-contract.md")
    listed = re.search(r"all eleven TCP states, zeros included:\n(.*?) \(NEW_SYN_RECV", text, re.DOTALL).group(1)
    assert tuple(listed.replace("\n", " ").split(", ")) == contract.TCP_STATES
    assert len(contract.TCP_STATES) == 11  # "all eleven", as the page and the modules say
