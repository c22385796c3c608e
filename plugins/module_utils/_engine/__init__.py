# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: the engine, everything that runs on a monitored host without Ansible.

Netlink sock_diag and route netlink, the /proc readers, the gathering and its aggregation (engine.py),
the options contract (_argspec.py), escaping, the file helpers and the atomic writer, and the collector
command (collect.py, run as ``python -m ansible_collections.netstate.tcp.plugins.module_utils._engine.collect``).
The fact modules import it; the agent roles copy this one directory to the hosts. It imports nothing outside
itself but the standard library (tests/unit/test_layers.py). Python 3.8.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type
