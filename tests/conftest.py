# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared test set-up: the collection on ANSIBLE_COLLECTIONS_PATH, private network namespaces.

Tests that need root and namespaces carry @pytest.mark.netns: they skip without root,
except under CI=true, where a missing prerequisite is a failure.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPPORT = os.path.join(ROOT, "tests", "support")
if ROOT.split(os.sep)[-3:] == ["ansible_collections", "netstate", "tcp"]:
    # Already laid out as a collection (ansible-test, an installed collection): use it as it is.
    COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(ROOT)))
else:
    COLLECTIONS = os.path.join(ROOT, ".build", "collections")
    LINK = os.path.join(COLLECTIONS, "ansible_collections", "netstate", "tcp")
    if not os.path.islink(LINK):
        os.makedirs(os.path.dirname(LINK), exist_ok=True)
        os.symlink("../../../..", LINK)
    if COLLECTIONS not in sys.path:
        sys.path.insert(0, COLLECTIONS)
os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS
# ansible-playbook and ansible-test of the virtualenv running the tests
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("ANSIBLE_CONFIG", os.path.join(ROOT, "ansible.cfg"))
# Local runs use the test interpreter (interpreter discovery may find a broken shim);
# fleet inventories set ansible_python_interpreter per host, which wins over this.
os.environ.setdefault("ANSIBLE_PYTHON_INTERPRETER", sys.executable)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.support import namespaces  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition, reason):
    """Skip when a prerequisite is missing; under CI=true fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail("CI=true but %s" % reason)
    pytest.skip(reason)


def netns_prerequisites():
    require(os.geteuid() == 0, "needs root for network namespaces")
    require(shutil.which("ip") is not None, "needs iproute2 (ip)")
    require(shutil.which("ss") is not None, "needs iproute2 (ss)")


@pytest.fixture(autouse=True)
def _netns_guard(request):
    if request.node.get_closest_marker("netns") is not None:
        netns_prerequisites()


class Namespace(namespaces.Namespace):
    """A private network namespace with loopback up (tests/support/namespaces.py) and the socket mixes
    it holds, all removed on close()."""

    def __init__(self, prefix="nst"):
        super().__init__(prefix=prefix)
        self.processes = []

    def hold_mix(self, spec, tmp_path):
        """Build a socket mix (tests/support/sockmix.py) inside the namespace; returns its READY data."""
        spec_file = tmp_path / ("mix-%s.json" % uuid.uuid4().hex[:6])
        spec_file.write_text(json.dumps(spec))
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, os.path.join(SUPPORT, "sockmix.py"), str(spec_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.processes.append(proc)
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            proc.kill()
            raise RuntimeError("sockmix did not start: %r" % line)
        return json.loads(line[6:])

    def close(self):
        for proc in self.processes:
            if proc.poll() is None:
                proc.stdin.close()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.delete()


@pytest.fixture
def netns():
    """A fresh private network namespace per test."""
    netns_prerequisites()
    namespace = Namespace()
    try:
        yield namespace
    finally:
        namespace.close()
