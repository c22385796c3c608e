# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_atomic: the one writer that replaces a file, on real files in a temporary directory.

What it refuses to replace (devices, FIFOs, links) is tested with _files' guard in test_files.py; the
collector's --output through it in test_collect.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _atomic


def test_the_text_is_written_as_utf8_with_the_mode_asked_for(tmp_path):
    target = tmp_path / "60-netstate-tcp.conf"
    _atomic.write_atomically(str(target), "net.ipv4.tcp_tw_reuse = 1 # é\n", mode=0o600, sync_directory=True)
    assert target.read_bytes() == "net.ipv4.tcp_tw_reuse = 1 # é\n".encode("utf-8")
    assert stat.S_IMODE(os.stat(str(target)).st_mode) == 0o600
    _atomic.write_atomically(str(target), "")
    assert target.read_bytes() == b"" and stat.S_IMODE(os.stat(str(target)).st_mode) == 0o644


def test_a_text_that_cannot_be_written_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "health.md"
    target.write_text("old\n")
    # a lone surrogate (a byte that was not UTF-8) cannot be encoded: the write fails half-way
    with pytest.raises(UnicodeEncodeError):
        _atomic.write_atomically(str(target), "new \udcff\n")
    assert target.read_text() == "old\n"
    assert os.listdir(str(tmp_path)) == ["health.md"]


def test_the_temporary_file_is_hidden_beside_the_target_and_never_named_like_it(tmp_path, monkeypatch):
    """node_exporter reads every *.prom of its directory: the file being written must not be one."""
    renamed = []
    replace = os.replace

    def recording_replace(source, destination):
        renamed.append((source, destination))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", recording_replace)
    target = str(tmp_path / "netstate.prom")
    _atomic.write_atomically(target, "netstate_collector_success 1\n")
    [(temporary, destination)] = renamed
    assert destination == target and os.path.dirname(temporary) == str(tmp_path)
    name = os.path.basename(temporary)
    assert name.startswith(".netstate.prom.") and name.endswith(".tmp") and not name.endswith(".prom")
    assert os.listdir(str(tmp_path)) == ["netstate.prom"]
