# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""roles/remediate and playbooks/remediate.yml: what the guard plugin cannot check for itself.

The playbook never reads ansible_eda (ansible-rulebook passes the whole event there, host-chosen names included)
and never templates the source text; the inputs the guard takes are those of the argument specs, with the same
defaults; the validate entry point (run on localhost first) checks the same options as main, and the hosts."""

from __future__ import annotations

import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLE = os.path.join(ROOT, "roles", "remediate")
PLAYBOOK = os.path.join(ROOT, "playbooks", "remediate.yml")


def load(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def role_files():
    found = [PLAYBOOK]
    for directory, _names, files in os.walk(ROLE):
        found += [os.path.join(directory, name) for name in files if name.endswith((".yml", ".j2"))]
    return found


def test_nothing_reads_ansible_eda_or_templates_the_source():
    for path in role_files():
        text = load(path)
        assert "ansible_eda" not in text, path
        # the guard reads netstate_remediate_source from its variable, as it is
        assert not re.search(r"\{\{[^}]*netstate_remediate_source", text), path


def test_the_entry_points_agree_with_the_defaults():
    specs = yaml.safe_load(load(os.path.join(ROLE, "meta", "argument_specs.yml")))["argument_specs"]
    defaults = yaml.safe_load(load(os.path.join(ROLE, "defaults", "main.yml")))
    main, validate = specs["main"]["options"], specs["validate"]["options"]
    assert set(validate) == set(main) | {"netstate_remediate_hosts"}
    for name, option in main.items():
        assert validate[name] == option, name
        assert option.get("required") or defaults[name] == option["default"], name
    assert set(defaults) == {name for name, option in main.items() if not option.get("required")}


def test_every_input_reaches_the_guard_in_every_phase():
    tasks = yaml.safe_load(load(os.path.join(ROLE, "tasks", "main.yml"))) + yaml.safe_load(
        load(os.path.join(ROLE, "tasks", "validate.yml")))
    guards = [task["netstate.tcp.remediation_guard"] for task in tasks if "netstate.tcp.remediation_guard" in task]
    assert sorted(guard["phase"] for guard in guards) == ["decide", "prove", "validate"]
    specs = yaml.safe_load(load(os.path.join(ROLE, "meta", "argument_specs.yml")))["argument_specs"]
    for guard in guards:
        for name in specs["main"]["options"]:
            option = name[len("netstate_remediate_"):]
            assert guard[option] == "{{ %s }}" % name, (guard["phase"], option)
        assert guard["thresholds"] == "{{ netstate_health_thresholds | default({}) }}"
