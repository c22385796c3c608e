# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: how the modules end, in one place.

A module is a thin shell: its argument spec, a call into module_utils, then one of these with its
AnsibleModule. Nothing of Ansible is imported here (the collector copies module_utils onto
monitored hosts); `module` only needs fail_json, warn, exit_json and _diff.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ._engine import _escape as escape


def exit_facts(module, gather, error_type, what):
    """End a facts module with ansible_facts=gather(warnings).

    An error_type error fails with its message (it names the option, value or file); any other
    error too, with the traceback for -vvv, as a facts module must never end in one. Every
    message and warning is escaped into one line.
    """
    warnings = []
    try:
        facts = gather(warnings)
    except error_type as exc:
        module.fail_json(msg=escape.log_line(exc))
    except Exception as exc:  # a facts module must never end in a traceback
        module.fail_json(msg="unexpected error gathering %s: %s" % (what, escape.log_line(exc)),
                         exception=traceback.format_exc())
    for warning in warnings:
        module.warn(escape.log_line(warning))
    module.exit_json(ansible_facts=facts)


def exit_change(module, run, error_type):
    """End a module that changes the host with the result of run().

    The result's warnings become module warnings and its diff is returned under --diff only.
    An error_type error fails with its message, outside the except block: the message names the
    option, key or command, and the backend's traceback is noise.
    """
    error = None
    try:
        result = run()
    except error_type as exc:
        error = str(exc)
    if error is not None:
        module.fail_json(msg=error)
    for warning in result.pop("warnings"):
        module.warn(warning)
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)
