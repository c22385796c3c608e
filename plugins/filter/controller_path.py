# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.netstate.tcp.plugins.plugin_utils._paths import controller_path as _controller_path

DOCUMENTATION = r"""
name: controller_path
short_description: Absolute controller path, a relative one taken against the directory ansible-playbook runs in
version_added: 0.1.0
description:
  - Expands C(~) and makes a relative path absolute against the current directory of C(ansible-playbook) on the
    controller, the directory the user runs it from.
  - Modules that write on the controller (C(delegate_to localhost), the local connection) run in the playbook's
    directory, so a relative path given to them lands next to the playbook, inside the collection for a playbook
    run by its FQCN. Give them this filter's result instead.
  - M(netstate.tcp.health_report) resolves its O(netstate.tcp.health_report#module:dest) by the same rule, and the
    role C(netstate.tcp.gather) its C(netstate_gather_report_dir) with this filter.
author:
  - netstate.tcp developers
options:
  _input:
    description: A path; absolute, relative, or starting with C(~).
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Create the report directory where the user ran ansible-playbook
  ansible.builtin.file:
    path: "{{ 'reports' | netstate.tcp.controller_path }}"
    state: directory
    mode: "0755"
  run_once: true
  delegate_to: localhost

- name: Write a report where the user ran ansible-playbook, not next to the playbook
  ansible.builtin.copy:
    content: "{{ ansible_play_hosts_all | netstate.tcp.fleet_report(hostvars) | to_nice_json }}\n"
    dest: "{{ 'reports' | netstate.tcp.controller_path }}/fleet-report.json"
    mode: "0644"
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
_value:
  description: The absolute path, normalized (no C(.) or C(..) parts); symbolic links are kept.
  type: path
"""


def controller_path(path):
    if not isinstance(path, str) or not path:
        raise AnsibleFilterError("controller_path: expected a non-empty path, got %r" % (path,))
    return _controller_path(path)


class FilterModule:
    """netstate.tcp.controller_path"""

    def filters(self):
        return {"controller_path": controller_path}
