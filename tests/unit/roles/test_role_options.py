# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The roles' options that end up in connection_facts or the collector agree with the options contract.

plugins/module_utils/_engine/_argspec.py holds the choices, ranges and defaults. A role's
meta/argument_specs.yml, defaults, README and its asserts (what no argument spec can express) must
say the same, and every collector command line a role writes must pass the collector's own argparse
at the bounds the role lets through.
"""

from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _argspec as contract
from ansible_collections.netstate.tcp.plugins.module_utils._engine import collect

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLES = os.path.join(ROOT, "roles")
ROLE_NAMES = sorted(name for name in os.listdir(ROLES) if os.path.isdir(os.path.join(ROLES, name)))

# Role variable -> the contract option it is. "module": the role hands it to a module, which checks it
# (connection_facts directly, or health_check when it gathers); "collector": the role writes it into a
# collector command line, which runs later on the host, so the role must check it first (an assert).
ROLE_OPTIONS = {
    "netstate_gather_subset": ("gather", "gather_subset", "module"),
    "netstate_gather_top": ("gather", "top", "module"),
    "netstate_health_sample_interval": ("health", "sample_interval", "module"),
    "netstate_node_exporter_top": ("node_exporter", "top", "collector"),
    "netstate_zabbix_agent_top": ("zabbix_agent", "top", "collector"),
}
SPECS = dict(contract.GATHER_SCOPE, **contract.SOCKET_SOURCE, **contract.LISTENER_WALK)
CHOICES = {"backend": contract.BACKENDS}
# Option names of the contract a role variable may end in.
CONTRACT_NAMES = sorted(set(contract.RANGES) | set(SPECS) | {"subset", "states"}, key=len, reverse=True)
# The collector's flags whose values the contract defines.
COLLECTOR_FLAGS = {"--top": "top", "--sample-interval": "sample_interval", "--max-sockets": "max_sockets",
                   "--local-ports-limit": "local_ports_limit", "--listeners-limit": "listeners_limit",
                   "--walk-budget": "walk_budget", "--discovery-max-age": "discovery_max_age",
                   "--backend": "backend", "--gather-subset": "gather_subset"}
# Flags the collector still accepts but the roles must not write any more.
DEPRECATED_FLAGS = ("--subset",)
# `--flag value` in a task or template: a literal, or one variable, optionally times a number.
FLAG_VALUE = re.compile(r"(--[a-z-]+)[ =](?:\{\{\s*(\w+)\s*(?:\*\s*(\d+)\s*)?\}\}|([^\s'\"{}]+))")
# `L <= variable <= H` in an assert.
ASSERT_RANGE = re.compile(r"(-?[0-9.]+)\s*<=\s*(netstate_\w+)\s*<=\s*(-?[0-9.]+)")
# `(..., L to H)` in a description or README row.
TEXT_RANGE = re.compile(r"\b(-?[0-9.]+) to (-?[0-9.]+)\)")


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def role_specs(role):
    specs = yaml.safe_load(read(os.path.join(ROLES, role, "meta", "argument_specs.yml")))["argument_specs"]
    options = {}
    for entry_point in specs.values():
        options.update(entry_point.get("options") or {})
    return options


def role_defaults(role):
    path = os.path.join(ROLES, role, "defaults", "main.yml")
    return (yaml.safe_load(read(path)) or {}) if os.path.exists(path) else {}


def role_files(role, *kinds):
    return sorted(path for kind in kinds for path in glob.glob(os.path.join(ROLES, role, kind, "*")))


def asserted_ranges():
    """variable -> (low, high) of every `low <= variable <= high` in the roles' tasks."""
    ranges = {}
    for role in ROLE_NAMES:
        for path in role_files(role, "tasks"):
            for low, name, high in ASSERT_RANGE.findall(read(path)):
                assert name not in ranges, "%s is range-checked twice" % name
                ranges[name] = (float(low), float(high))
    return ranges


def bounded(option):
    low, high = contract.RANGES[option]
    assert high is not None, "%s has no upper bound: nothing to assert" % option
    return float(low), float(high)


def test_every_role_option_named_after_a_contract_option_is_checked_here():
    unlisted = []
    for role in ROLE_NAMES:
        for name in role_specs(role):
            rest = name[len("netstate_%s_" % role):]
            for option in CONTRACT_NAMES:
                if (rest == option or rest.endswith("_" + option)) and name not in ROLE_OPTIONS:
                    unlisted.append(name)
    assert not unlisted, "add to ROLE_OPTIONS: %s" % ", ".join(unlisted)


@pytest.mark.parametrize("name", sorted(ROLE_OPTIONS))
def test_argument_spec_and_defaults_agree(name):
    role, option, _checked_by = ROLE_OPTIONS[name]
    spec = role_specs(role)[name]
    want = SPECS[option]
    assert spec["type"] == want["type"] and spec.get("elements") == want.get("elements"), name
    default = role_defaults(role).get(name, spec.get("default"))
    assert spec.get("default") == default, "%s: argument spec default %r, defaults/main.yml %r" % (
        name, spec.get("default"), default)
    if option in contract.RANGES:
        low, high = contract.RANGES[option]
        assert low <= default and (high is None or default <= high), "%s: default %r outside %s" % (
            name, default, contract.describe_range(option))
    if option in CHOICES:
        assert spec.get("choices") == list(CHOICES[option]), name
    elif "choices" in spec:
        assert set(spec["choices"]) <= set(CHOICES.get(option, ())), name


@pytest.mark.parametrize("name", sorted(ROLE_OPTIONS))
def test_documented_ranges_agree(name):
    role, option, _checked_by = ROLE_OPTIONS[name]
    description = role_specs(role)[name]["description"]
    readme_rows = [line for line in read(os.path.join(ROLES, role, "README.md")).splitlines()
                   if line.startswith("| `%s`" % name)]
    assert len(readme_rows) == 1, name
    for text in [" ".join(description) if isinstance(description, list) else description] + readme_rows:
        for low, high in TEXT_RANGE.findall(text):
            assert (float(low), float(high)) == bounded(option), "%s documents %s to %s, the contract %s" % (
                name, low, high, contract.describe_range(option))


@pytest.mark.parametrize("name", sorted(ROLE_OPTIONS))
def test_asserts_agree(name):
    role, option, checked_by = ROLE_OPTIONS[name]
    ranges = asserted_ranges()
    if checked_by == "collector":
        assert name in ranges, "roles/%s hands %s to the collector without checking it first" % (role, name)
    if name in ranges:
        assert ranges[name] == bounded(option), "%s is asserted within %s, the contract says %s" % (
            name, ranges[name], contract.describe_range(option))


@pytest.mark.parametrize("name", sorted(name for name, entry in ROLE_OPTIONS.items() if entry[2] == "module"))
def test_module_options_reach_the_module(name):
    role, option, _checked_by = ROLE_OPTIONS[name]
    tasks = " ".join(read(path) for path in role_files(role, "tasks"))
    assert re.search(r"\b%s: \"\{\{ %s \}\}\"" % (option, name), tasks), "roles/%s does not pass %s as %s" % (
        role, name, option)


def collector_command_lines():
    """(file, flag, variable or None, factor, literal) of every contract flag a role writes."""
    found = []
    for role in ROLE_NAMES:
        for path in role_files(role, "tasks", "templates"):
            for flag, variable, factor, literal in FLAG_VALUE.findall(read(path)):
                if flag in COLLECTOR_FLAGS:
                    found.append((os.path.relpath(path, ROOT), flag, variable or None, int(factor or 1), literal))
    return found


def test_the_agent_roles_write_collector_flags():
    files = {entry[0] for entry in collector_command_lines()}
    assert "roles/node_exporter/tasks/main.yml" in files
    assert "roles/zabbix_agent/templates/netstate_tcp.conf.j2" in files
    assert "roles/zabbix_agent/tasks/process_names.yml" in files


def test_the_agent_roles_write_no_deprecated_collector_flag():
    written = [(os.path.relpath(path, ROOT), flag) for role in ROLE_NAMES
               for path in role_files(role, "tasks", "templates")
               for flag in re.findall(r"--[a-z-]+", read(path)) if flag in DEPRECATED_FLAGS]
    assert not written, written


@pytest.mark.parametrize("where, flag, variable, factor, literal", collector_command_lines())
def test_collector_command_lines_pass_its_argparse(where, flag, variable, factor, literal):
    if variable is None:
        values = [literal]
    else:
        ranges = asserted_ranges()
        assert variable in ranges, "%s: %s {{ %s }} is not range-checked by an assert" % (where, flag, variable)
        values = ["%d" % (bound * factor) for bound in ranges[variable]]
    for value in values:
        args = collect.build_parser().parse_args([flag, value])  # exits 2 with the reason when refused
        assert getattr(args, flag[2:].replace("-", "_")) is not None, (where, flag, value)


def test_gather_args_declare_and_forward_every_other_connection_facts_option():
    """netstate_gather_args: each further connection_facts option declared (an unknown key such as `topp` fails
    the role's argument validation), with the module's type and choices, and forwarded under its own name."""
    module_spec = dict(**contract.GATHER_SCOPE, **contract.SOCKET_SOURCE, **contract.LISTENER_WALK)
    own = {"gather_subset": "netstate_gather_subset", "top": "netstate_gather_top"}  # role variables of their own
    declared = role_specs("gather")["netstate_gather_args"]["options"]
    assert sorted(declared) == sorted(set(module_spec) - set(own)), "roles/gather netstate_gather_args options"
    for option, spec in declared.items():
        want = module_spec[option]
        assert spec["type"] == want["type"] and spec.get("choices") == want.get("choices"), option
        assert "default" not in spec, "%s: the module's default applies when the key is absent" % option
    tasks = " ".join(read(path) for path in role_files("gather", "tasks"))
    for option in module_spec:
        if option in own:
            assert re.search(r"\b%s: \"\{\{ %s \}\}\"" % (option, own[option]), tasks), option
        else:
            assert re.search(r"\b%s: \"\{\{ netstate_gather_args\.%s \| default\(omit\) \}\}\"" % (option, option),
                             tasks), "roles/gather does not forward netstate_gather_args.%s" % option


def test_health_gather_args_declare_every_connection_facts_option():
    """netstate_health_gather_args: every connection_facts option declared (an unknown key such as `topp` fails
    the role's argument validation), with the module's type, choices and elements; no default of its own."""
    declared = role_specs("health")["netstate_health_gather_args"]["options"]
    assert sorted(declared) == sorted(contract.CONNECTION_FACTS), "roles/health netstate_health_gather_args options"
    for option, spec in declared.items():
        want = contract.CONNECTION_FACTS[option]
        assert (spec["type"], spec.get("choices"), spec.get("elements")) == (
            want["type"], want.get("choices"), want.get("elements")), option
        assert "default" not in spec, "%s: the module's default applies when the key is absent" % option
