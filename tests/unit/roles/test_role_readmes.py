# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every role has a README that names each option of its meta/argument_specs.yml, and no other.

galaxy-importer refuses a collection with a role without README; this keeps the READMEs from drifting
away from the argument specs when an option is added, renamed or removed.
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLES = os.path.join(ROOT, "roles")
ROLE_NAMES = sorted(name for name in os.listdir(ROLES) if os.path.isdir(os.path.join(ROLES, name)))
# A variable in a README's table: the first cell, in backticks.
TABLE_ROW = re.compile(r"^\|\s*`([a-z0-9_]+)`\s*\|", re.MULTILINE)


def options(role):
    with open(os.path.join(ROLES, role, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    names = set()
    for entry_point in specs.values():
        names.update((entry_point.get("options") or {}).keys())
    return names


def readme(role):
    path = os.path.join(ROLES, role, "README.md")
    assert os.path.isfile(path), "roles/%s has no README.md" % role
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def missing_options(text, wanted):
    """Options of `wanted` that the README text does not name in backticks."""
    return sorted(name for name in wanted if "`%s`" % name not in text)


def test_every_role_is_covered():
    # the five roles of the collection; a new role gets checked as soon as it has a directory
    assert {"gather", "health", "node_exporter", "tuning", "zabbix_agent"} <= set(ROLE_NAMES)


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_readme_names_every_option(role):
    text = readme(role)
    wanted = options(role)
    assert wanted, "roles/%s/meta/argument_specs.yml has no options" % role
    missing = missing_options(text, wanted)
    assert not missing, "roles/%s/README.md does not name %s" % (role, ", ".join(missing))


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_readme_table_names_only_options(role):
    rows = TABLE_ROW.findall(readme(role))
    assert rows, "roles/%s/README.md has no variables table" % role
    unknown = sorted(set(rows) - options(role))
    assert not unknown, "roles/%s/README.md lists %s, not in meta/argument_specs.yml" % (role, ", ".join(unknown))
    repeated = sorted(name for name in set(rows) if rows.count(name) > 1)
    assert not repeated, "roles/%s/README.md lists %s twice" % (role, ", ".join(repeated))


def test_a_missing_option_is_reported():
    # a README that lost one option's row and mentions
    text = readme("gather").replace("`netstate_gather_top`", "netstate_gather_top")
    assert missing_options(text, options("gather")) == ["netstate_gather_top"]
