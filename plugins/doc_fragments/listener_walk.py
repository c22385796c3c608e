# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The options of the walk that finds each listener's process (plugins/module_utils/_engine/_argspec.py)."""

    DOCUMENTATION = r"""
options:
  walk_budget:
    description:
      - The most file descriptors the walk that finds each listener's process reads (through C(/proc/PID/fd)).
        It stops earlier as soon as every listener is found.
      - Unset, the walk may take a quarter of the time the socket dumps took, and at least 100 ms, however many
        descriptors that is. A listener that no process holds (its descriptor in flight over a unix socket, or
        held by a process of another network namespace) then cannot make the walk read every descriptor of the
        host; the usual walk, which finds every listener among the first descriptors, takes a few milliseconds.
      - Listeners still unattributed when the budget is spent have null C(pid) and C(process), the module warns
        once, and C(listener_walk) in the facts says how many and why.
      - V(0) reads no descriptor at all.
      - Whatever the number of processes, the walk holds at most 64 C(/proc/PID/fd) directories open at once (fewer
        when the open-files soft limit, C(ulimit -n), leaves less room), and gives some back when it runs out.
        Listeners it still could not attribute for want of a file descriptor get the reason V(fd limit), and the
        warning names the soft limit.
    type: int
  walk_all_namespaces:
    description:
      - Also read the descriptors of processes of other network namespaces (after those of the namespace being
        gathered). By default only the gathered namespace's processes are read, since they hold its sockets.
    type: bool
    default: false
"""
