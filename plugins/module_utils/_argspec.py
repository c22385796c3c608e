# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: argument specs shared by several modules, documented once in a doc fragment."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# plugins/doc_fragments/listener_walk.py documents these.
LISTENER_WALK = dict(
    walk_budget=dict(type="int"),
    walk_all_namespaces=dict(type="bool", default=False),
)
