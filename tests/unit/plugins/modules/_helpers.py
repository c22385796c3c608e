# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the modules' tests share (not a test file): a module run in this process as Ansible runs it, and
the agreement of a module's documentation with the argument spec of the action plugin doing its work."""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import contextlib
import json

import pytest
import yaml

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core before 2.19: AnsibleModule reads its arguments from basic._ANSIBLE_ARGS
    from ansible.module_utils import basic

    @contextlib.contextmanager
    def patch_module_args(args):
        arguments = dict(args, _ansible_remote_tmp="/tmp", _ansible_keep_remote_files=False)
        saved = basic._ANSIBLE_ARGS  # pylint: disable=protected-access
        basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": arguments}).encode()  # pylint: disable=protected-access
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved  # pylint: disable=protected-access


def run_module(capsys, module, **args):
    """(exit status, result) of module.main() given args, read from the JSON it prints."""
    with patch_module_args(args), pytest.raises(SystemExit) as caught:
        module.main()
    return caught.value.code, json.loads(capsys.readouterr().out)


# what the documentation says of an option and the argument spec's word for it
SPEC_FIELDS = ("type", "elements", "default", "choices", "required")


def documented_against_spec(documentation, argument_spec):
    """Where the options of DOCUMENTATION and an action plugin's ARGUMENT_SPEC differ: {option: {field: (doc, spec)}}.

    An option the spec takes as raw (the rule engine checks it and names rule and field) is documented
    with the type it accepts; its type and elements are not compared.
    """
    options = yaml.safe_load(documentation)["options"]
    differences = {}
    for name in sorted(set(options) | set(argument_spec)):
        documented, spec = options.get(name), argument_spec.get(name)
        if documented is None or spec is None:
            differences[name] = {"option": ("documented" if documented else None, "in the spec" if spec else None)}
            continue
        fields = {}
        for field in SPEC_FIELDS:
            if field in ("type", "elements") and spec.get("type") == "raw":
                continue
            said, taken = documented.get(field), spec.get(field)
            if field == "type":
                said, taken = said or "str", taken or "str"
            elif field == "required":
                said, taken = bool(said), bool(taken)
            if said != taken:
                fields[field] = (said, taken)
        if fields:
            differences[name] = fields
    return differences
