#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: sysctl
short_description: Set TCP sysctl keys safely, several at once, live and persistent
version_added: 0.1.0
description:
  - Sets several TCP related kernel parameters (C(net.ipv4.*), C(net.core.*)) in one task, live under
    C(/proc/sys) and in a persistent drop-in read at boot.
  - Knows the TCP keys that matter for TIME_WAIT, ephemeral ports and accept queues (type, valid range,
    per network namespace or global, first kernel version, advice) and validates every value before
    anything changes. Other keys under C(net.ipv4) and C(net.core) are accepted when the running kernel
    has them; keys the kernel lacks are an error naming them.
  - Refuses C(tcp_tw_recycle) (removed in Linux 4.12 because it broke clients behind NAT). Warns when
    C(tcp_tw_reuse) is enabled while C(tcp_timestamps) is V(0) (reuse then does nothing) and when
    C(tcp_fin_timeout) is lowered in the belief it shortens TIME_WAIT. Refuses to lower
    C(tcp_max_tw_buckets) below its current value, and port settings that leave the host without ephemeral
    ports, unless O(force=true).
  - "All or nothing: every key and value is validated first and every problem is reported in one error.
    Then the drop-in is written atomically and the live values are applied; if one live write fails,
    every value already written and the previous drop-in are restored and the task fails naming the key."
  - In a network namespace other than the host's (containers, pods), global keys such as
    C(tcp_max_orphans) and C(tcp_mem) are not visible under C(/proc/sys). They are skipped with a
    warning naming them and listed in RV(skipped_keys), instead of failing.
  - Scans C(/etc/sysctl.d), C(/run/sysctl.d), C(/usr/local/lib/sysctl.d), C(/usr/lib/sysctl.d),
    C(/lib/sysctl.d) and C(/etc/sysctl.conf) in the order systemd-sysctl and C(sysctl --system) use and
    reports, per key, the value that wins at boot and its file; warns when another file overrides ours.
  - "The drop-in O(path) belongs to this module: keys already in it that are not in O(settings) are kept,
    so several tasks can share it; a key set to V(null) is removed from it (its live value is left alone).
    The file is rewritten in canonical form, C(key = value) per line under a header comment."
author:
  - netstate.tcp developers (@netstate-tcp)
extends_documentation_fragment:
  - netstate.tcp.attributes
  - netstate.tcp.attributes.LINUX
options:
  settings:
    description:
      - Keys and values to set. A key is a short name from the knowledge table (V(tcp_tw_reuse),
        V(somaxconn)), a short name found under C(net.ipv4) or C(net.core), or a full dotted name
        (V(net.ipv4.tcp_tw_reuse)).
      - "Keys are confined to C(/proc/sys/net/ipv4) and C(/proc/sys/net/core): a full name is
        C(net.core.NAME), C(net.ipv4.NAME), C(net.ipv4.route.NAME) or C(net.ipv4.conf.INTERFACE.NAME) /
        C(net.ipv4.neigh.INTERFACE.NAME), NAME of lower case letters, digits and C(_). The slash form
        (C(net/ipv4/conf/eth0.100/rp_filter)) is accepted; a dot in an interface name is written C(/) in the
        dotted form (C(net.ipv4.conf.eth0/100.rp_filter)). An interface name has 1 to 15 characters of letters,
        digits and C(_.@+-) and is not C(.) or C(..). Any other key (an empty component, C(..), another tree)
        is refused, naming it, and so is a key whose file would lie outside those two directories."
      - Values are integers or strings. C(ip_local_port_range) takes V(1024 65000) or a list of two
        integers; C(ip_local_reserved_ports) a comma separated list with ranges (V(8080,9000-9100)) or a list;
        C(tcp_mem), C(tcp_rmem) and C(tcp_wmem) three integers as a string or a list.
      - "Every known key's value is checked against the range the kernel accepts (or a narrower one), so a
        value the kernel would refuse fails before anything is written. A boolean (V(true), V(false), or
        V(yes)/V(true) as a string) is refused, never turned into V(1) or V(0): write the number."
      - "A port setting that leaves the host without ephemeral ports is refused unless O(force=true):
        C(ip_local_port_range) narrower than 1024 ports, or C(ip_local_reserved_ports) covering the whole
        range or leaving fewer than 1024 of its ports free (every outgoing C(connect()) then fails with
        C(EADDRNOTAVAIL))."
      - V(null) removes the key from the drop-in O(path) and leaves its live value alone.
    type: dict
    required: true
  path:
    description:
      - The persistent drop-in. Put it in C(/etc/sysctl.d) with a C(.conf) suffix so it is read at boot;
        the module warns otherwise.
      - Created with mode C(0644) when missing; an existing file keeps its mode.
      - "An absolute path without NUL bytes or newlines. It must be a regular file (or not exist): a device
        node, FIFO, socket or directory is refused, never read or waited on, and at most 1 MiB of it is read."
      - "A symbolic link is refused, not followed: the drop-in is replaced by a new file, and a link would
        either be replaced (breaking it) or let the module show and copy a file the task did not name. Name
        the link's target as O(path) instead."
      - "When O(persist=true) every line of an existing file must be a comment or a C(key = value) line of a
        C(net.ipv4) or C(net.core) key of the grammar above; any other line is refused with its line number,
        never copied into the new file."
    type: path
    default: /etc/sysctl.d/60-netstate-tcp.conf
  persist:
    description:
      - Write the values to O(path).
    type: bool
    default: true
  apply:
    description:
      - Set the live values under C(/proc/sys).
    type: bool
    default: true
  force:
    description:
      - Allow lowering C(tcp_max_tw_buckets) below its current value (a warning is still given).
      - Allow an C(ip_local_port_range) narrower than 1024 ports, and C(ip_local_reserved_ports) that cover the
        whole ephemeral range or leave fewer than 1024 of its ports free (a warning is still given).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - Two diffs, the drop-in file content and the live values (C(key = value) per line), before and after.
notes:
  - TIME_WAIT lasts 60 seconds and no sysctl changes that; C(tcp_fin_timeout) governs orphaned FIN_WAIT2.
    Against port exhaustion use C(tcp_tw_reuse=1) (with C(tcp_timestamps=1)) and a wider
    C(ip_local_port_range).
  - Values are compared in the form the kernel prints them, whitespace collapsed, so a second run with
    the same settings reports no change.
seealso:
  - name: ip-sysctl.txt
    description: The kernel's documentation of every C(net.ipv4) key.
    link: https://docs.kernel.org/networking/ip-sysctl.html
  - module: netstate.tcp.connection_facts
"""

EXAMPLES = r"""
- name: Let clients reuse TIME_WAIT ports and widen the ephemeral range
  netstate.tcp.sysctl:
    settings:
      tcp_tw_reuse: 1
      tcp_timestamps: 1
      ip_local_port_range: [16384, 65535]

- name: Raise the accept queue limits, live only
  netstate.tcp.sysctl:
    settings:
      net.core.somaxconn: 8192
      net.ipv4.tcp_max_syn_backlog: 8192
    persist: false

- name: Drop a key from our drop-in without touching its live value
  netstate.tcp.sysctl:
    settings:
      tcp_keepalive_time: null
    apply: false

- name: Preview the change
  netstate.tcp.sysctl:
    settings:
      tcp_tw_reuse: 1
  check_mode: true
  diff: true
  register: preview
"""

RETURN = r"""
changed:
  description: Whether the drop-in or a live value changed (or would change, in check mode).
  returned: always
  type: bool
path:
  description: The drop-in O(path).
  returned: always
  type: str
  sample: /etc/sysctl.d/60-netstate-tcp.conf
file_changed:
  description: Whether the drop-in was (or would be) rewritten.
  returned: always
  type: bool
live_changed:
  description: Full names of the keys whose live value was (or would be) changed.
  returned: always
  type: list
  elements: str
  sample: [net.ipv4.tcp_tw_reuse]
skipped_keys:
  description:
    - Global keys not visible in this network namespace, neither applied nor written to the drop-in.
    - Not called C(skipped), which Ansible reads as "the task was skipped".
  returned: always
  type: list
  elements: str
  sample: [net.ipv4.tcp_max_orphans]
removed:
  description: Keys removed from the drop-in (given as V(null) in O(settings)).
  returned: always
  type: list
  elements: str
per_key:
  description:
    - One entry per key of O(settings), by full dotted name. Values are strings in the form the kernel prints
      them, whitespace collapsed (V(32768 60999)).
  returned: always
  type: dict
  contains:
    value:
      description: The requested value, canonical; V(null) for a removal.
      type: str
    before:
      description: The live value before the task; V(null) when the key is not visible here.
      type: str
    after:
      description: The live value after the task (the value it would have, in check mode).
      type: str
    changed:
      description: Whether the live value changed.
      type: bool
    skipped:
      description: Whether the key was skipped (global key invisible in this network namespace).
      type: bool
    scope:
      description: V(netns) for per network namespace keys, V(global) for one value per machine.
      type: str
    advice:
      description: What the key does and how to set it, from the knowledge table; V(null) for unknown keys.
      type: str
    boot:
      description: The value that wins at boot and the file that sets it (both V(null) when no file sets it).
      type: dict
      contains:
        value:
          description: The winning value.
          type: str
        file:
          description: The file it comes from.
          type: str
  sample:
    net.ipv4.tcp_tw_reuse:
      value: "1"
      before: "2"
      after: "1"
      changed: true
      skipped: false
      scope: netns
      advice: Lets connect() reuse a TIME_WAIT port ...
      boot: {value: "1", file: /etc/sysctl.d/60-netstate-tcp.conf}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netstate.tcp.plugins.module_utils._exit import exit_change
from ansible_collections.netstate.tcp.plugins.module_utils._sysctl import (
    DEFAULT_PATH,
    SysctlEngine,
    SysctlError,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            settings=dict(type="dict", required=True),
            path=dict(type="path", default=DEFAULT_PATH),
            persist=dict(type="bool", default=True),
            apply=dict(type="bool", default=True),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params

    def run():
        return SysctlEngine().run(params["settings"], path=params["path"], persist=params["persist"],
                                  apply=params["apply"], force=params["force"], check_mode=module.check_mode)

    exit_change(module, run, SysctlError)


if __name__ == "__main__":
    main()
