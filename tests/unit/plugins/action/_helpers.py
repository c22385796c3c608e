# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the action plugins' tests share (not a test file): an action plugin made as a play makes it, on the
local connection, to run in this process."""

from __future__ import annotations

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
