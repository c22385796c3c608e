# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_paths: the one rule for report directories on the controller (the controller_path filter and the
health_report action use it; the filter's own checks are in tests/unit/plugins/filter/test_controller_path.py)."""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import os

from ansible_collections.netstate.tcp.plugins.plugin_utils._paths import controller_path


def test_a_relative_path_is_taken_against_the_directory_ansible_playbook_runs_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert controller_path("reports") == str(tmp_path / "reports")
    assert controller_path("reports/../fleet/./html") == str(tmp_path / "fleet" / "html")


def test_home_is_expanded_and_an_absolute_path_normalized(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert controller_path("~/reports/") == str(tmp_path / "reports")
    assert controller_path("/var/tmp//reports/./health/..") == "/var/tmp/reports"
    assert os.path.isabs(controller_path("."))
