# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstate.tcp.controller_path: the one rule for report directories on the controller."""

from __future__ import annotations

import os

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.netstate.tcp.plugins.filter.controller_path import FilterModule

controller_path = FilterModule().filters()["controller_path"]


def test_relative_path_is_taken_against_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert controller_path("reports") == os.path.join(str(tmp_path), "reports")
    assert controller_path("./a/../reports/") == os.path.join(str(tmp_path), "reports")


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert controller_path("~/fleet") == os.path.join(str(tmp_path), "fleet")


def test_absolute_path_is_kept(tmp_path):
    assert controller_path(str(tmp_path / "x")) == str(tmp_path / "x")


@pytest.mark.parametrize("bad", ["", None, 3, ["reports"]])
def test_bad_input_is_one_clear_error(bad):
    with pytest.raises(AnsibleFilterError, match=r"controller_path: expected a non-empty path, got"):
        controller_path(bad)
