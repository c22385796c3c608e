# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make run`'s summary (scripts/summary.py) in a private network namespace holding known sockets: what it
prints is the sockets there, and no value it could not read shows as Python's None."""

from __future__ import annotations

import re
import sys

import pytest

from tests.integration.test_sysctl_netns import REPO, _env

pytestmark = pytest.mark.netns


def test_summary_of_a_namespace_names_its_sockets_and_no_none(netns, tmp_path):
    netns.hold_mix({"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 7}],
                    "established": [{"to": ["127.0.0.1", 8080], "from": "127.0.0.2", "count": 3}]}, tmp_path)
    done = netns.run([sys.executable, str(REPO / "scripts" / "summary.py")], check=False, env=_env(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"TCP sockets: 7 +\(ESTABLISHED 6, LISTEN 1\)", out), out
    assert re.search(r"^8080 +4 +ESTABLISHED 3, LISTEN 1 *$", out, re.M), out
    # tcp_max_orphans is global: a namespace other than the host's does not show it (the orphan count of
    # /proc/net/sockstat is the kernel's whole count)
    assert re.search(r"orphans \d+ \(tcp_max_orphans not shown in this network namespace\)$", out, re.M), out
    assert "None" not in out, out
