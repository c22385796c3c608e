# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The soak of tests/fleet/soak.py, short: the collector every 2 s beside connection churn, with
node_exporter scraped and parsed without pause. `make soak` runs it for 30 minutes on a fleet of
its own; NETSTATE_SOAK_SECONDS sets the length here (default 120)."""

import json
import os

import pytest
from soak import soak

pytestmark = pytest.mark.fleet

SECONDS = float(os.environ.get("NETSTATE_SOAK_SECONDS", "120"))


@pytest.mark.parametrize("duration", [SECONDS])
def test_soak(fleet, node_exporter_host, tmp_path, duration):
    figures, failed = soak(fleet, node_exporter_host["host"], duration, interval=2.0, rate=200,
                           workdir=tmp_path)
    print(json.dumps(figures, indent=2, sort_keys=True))
    assert figures["runs"] >= duration / 2.0 * 0.8, figures
    assert failed == [], failed
