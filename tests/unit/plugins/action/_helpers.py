# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the action plugins' tests share (not a test file): an action plugin made as a play makes it, on the
local connection, to run in this process, and the agreement of a documentation-only module with the argument
spec of its action plugin."""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task
from ansible.plugins.connection.local import Connection
from ansible.template import Templar


def action(plugin, args, check_mode=False):
    """plugin.ActionModule for a task of these args; run it with .run(task_vars=...)."""
    task = Task()
    task.action = "netstate.tcp." + plugin.__name__.rsplit(".", 1)[-1]
    task.args = args
    task.check_mode = check_mode
    play_context = PlayContext()
    loader = DataLoader()
    return plugin.ActionModule(task=task, connection=Connection(play_context, None), play_context=play_context,
                               loader=loader, templar=Templar(loader=loader), shared_loader_obj=None)


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
