# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Netlink sock_diag refused for real: a seccomp filter (tests/support/seccomp_exec.py).

The collector, connection_facts and listener_facts (through ansible-playbook, whose module
processes inherit the filter) run in a private network namespace holding a known socket mix.
With backend auto they fall back to /proc, say backend: proc, warn once and still agree with ss
(run outside the filter); with backend netlink they fail with one clear message.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import COLLECTIONS, require
from tests.support.ss_oracle import Snapshot

pytestmark = pytest.mark.netns

SECCOMP_EXEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support", "seccomp_exec.py")
PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
MIX = {
    "listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 50}, {"address": "::1", "port": 9443}],
    "established": [{"to": ["127.0.0.1", 8080], "from": "127.0.0.2", "count": 4}],
    "close_wait": [{"to": ["127.0.0.1", 8080], "count": 2}],
    "udp": [{"address": "127.0.0.1", "port": 5353}],
}
FALLBACK = ("netlink sock_diag unavailable (cannot open a NETLINK_SOCK_DIAG socket: [Errno 1] Operation not "
            "permitted); using /proc/net")
PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Gather under the filter
      netstate.tcp.{module}:
        namespace: "{{{{ namespace }}}}"
        backend: "{{{{ backend }}}}"
      register: result
      ignore_errors: true
    - name: Keep the result
      ansible.builtin.copy:
        content: "{{{{ result | to_json }}}}"
        dest: "{{{{ out }}}}"
        mode: "0600"
"""


def _libseccomp():
    import ctypes.util

    require(ctypes.util.find_library("seccomp") is not None, "needs libseccomp2 (scripts/setup.sh installs it)")


def refused(*command, errno_name="EPERM", **kwargs):
    """Run command under the filter; the launcher proves the filter before exec."""
    _libseccomp()
    return subprocess.run([sys.executable, SECCOMP_EXEC, "--errno", errno_name, "--", *command],
                          capture_output=True, text=True, timeout=240, check=False, **kwargs)


def collect(*args, **kwargs):
    return refused(sys.executable, "-m", "ansible_collections.netstate.tcp.plugins.module_utils._engine.collect", *args,
                   cwd=COLLECTIONS, **kwargs)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    from tests.conftest import Namespace, netns_prerequisites

    netns_prerequisites()
    namespace = Namespace(prefix="nsr")
    try:
        namespace.built = namespace.hold_mix(MIX, tmp_path_factory.mktemp("mix"))
        yield namespace
    finally:
        namespace.close()


def test_the_filter_refuses_sock_diag_and_nothing_else(mixed):
    done = refused("ss", "-tln", "-N", mixed.name)
    assert "Cannot open netlink socket: Operation not permitted" in done.stderr  # ss falls back to /proc too
    assert "127.0.0.1:8080" in done.stdout
    assert refused("ip", "-n", mixed.name, "link", "show", "lo").returncode == 0  # NETLINK_ROUTE still works


def test_collector_falls_back_to_proc_and_warns_once(mixed):
    snapshot = Snapshot(mixed.name)
    done = collect("--format", "json", "--namespace", mixed.name)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["backend"] == "proc"
    assert [line for line in done.stderr.splitlines() if "sock_diag" in line] == \
        ["netstate collect: warning: " + FALLBACK]
    assert facts["tcp"]["states"] == snapshot.states()
    assert facts["tcp"]["local_ports"] == snapshot.local_ports()
    assert {(item["address"], item["port"]) for item in facts["listeners"] if item["protocol"] == "tcp"} == \
        {("127.0.0.1", 8080), ("::1", 9443)}


def test_collector_over_every_namespace_warns_once():
    """Three namespaces (ours and two of our own children), each gathered through /proc: one warning.

    A private PID and mount namespace keeps the machine's other namespaces out: /proc shows our
    processes only and /run/netns is an empty tmpfs.
    """
    script = ("mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && "
              "(unshare --net sleep 30 &) && (unshare --net sleep 30 &) && sleep 0.5 && exec \"$@\"")
    _libseccomp()
    done = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private", "sh", "-c", script, "sh",
         sys.executable, SECCOMP_EXEC, "--", sys.executable, "-m",
         "ansible_collections.netstate.tcp.plugins.module_utils._engine.collect",
         "--format", "json", "--namespace", "all"],
        capture_output=True, text=True, timeout=120, check=False, cwd=COLLECTIONS)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["backend"] == "proc"
    assert [item["backend"] for item in facts["namespaces"]] == ["proc", "proc"]
    assert done.stderr.count("sock_diag unavailable") == 1, done.stderr


@pytest.mark.parametrize("errno_name, reason", [("EPERM", "Operation not permitted"), ("EACCES", "Permission denied"),
                                                ("EAFNOSUPPORT", "Address family not supported by protocol")])
def test_collector_with_backend_netlink_fails_clearly(mixed, errno_name, reason):
    done = collect("--format", "prometheus", "--backend", "netlink", "--namespace", mixed.name, errno_name=errno_name)
    assert done.returncode == 1
    assert done.stdout == ""
    errno_number = {"EPERM": 1, "EACCES": 13, "EAFNOSUPPORT": 97}[errno_name]
    assert done.stderr == ("netstate collect: backend=netlink: cannot open a NETLINK_SOCK_DIAG socket: "
                           "[Errno %d] %s\n" % (errno_number, reason))


def run_play(module, namespace, backend, tmp_path):
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(module=module))
    out = tmp_path / "result.json"
    variables = {"namespace": namespace, "backend": backend, "out": str(out)}
    done = refused(PLAYBOOK, "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable,
                   "-e", json.dumps(variables), str(play))
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text()), done.stdout + done.stderr


def test_connection_facts_fall_back_to_proc_and_warn_once(mixed, tmp_path):
    snapshot = Snapshot(mixed.name)
    result, output = run_play("connection_facts", mixed.name, "auto", tmp_path)
    assert not result.get("failed"), result
    facts = result["ansible_facts"]["netstate"]
    assert facts["backend"] == "proc"
    assert result["warnings"] == [FALLBACK]
    assert output.count("sock_diag unavailable") == 1
    assert facts["tcp"]["states"] == snapshot.states()
    listener = next(item for item in facts["listeners"] if item["port"] == 8080)
    assert listener["pid"] == mixed.built["pid"] and listener["backlog"] is None  # /proc has no backlog


def test_listener_facts_fall_back_to_proc_and_warn_once(mixed, tmp_path):
    result, _output = run_play("listener_facts", mixed.name, "auto", tmp_path)
    assert not result.get("failed"), result
    assert result["warnings"] == [FALLBACK]
    ports = sorted((item["address"], item["port"], item["pid"]) for item in result["ansible_facts"]["tcp_listen"])
    assert ports == [("127.0.0.1", 8080, mixed.built["pid"]), ("::1", 9443, mixed.built["pid"])]


@pytest.mark.parametrize("module", ["connection_facts", "listener_facts"])
def test_modules_with_backend_netlink_fail_clearly(mixed, tmp_path, module):
    result, _output = run_play(module, mixed.name, "netlink", tmp_path)
    assert result["failed"] is True
    assert result["msg"] == ("backend=netlink: cannot open a NETLINK_SOCK_DIAG socket: [Errno 1] Operation not "
                             "permitted")
    assert "ansible_facts" not in result
