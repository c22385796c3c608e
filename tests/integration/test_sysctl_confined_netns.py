# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 18 (sysctl part) on the real kernel: netstate.tcp.sysctl run by ansible-playbook keeps to
/proc/sys/net/{ipv4,core}, refuses the values the kernel refuses (or that break a host) before it writes
anything, and never reads, waits on or replaces a special file or a link named as its drop-in.

Everything runs in private namespaces: a network namespace per test (tests/conftest.py Namespace), a
private UTS namespace where kernel.hostname could be reached, and a private mount namespace with a tmpfs
where the device nodes are made. The host's values and hostname must not move.
"""

from __future__ import annotations

import json
import os
import signal
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Namespace, require
from tests.integration.test_sysctl_netns import (
    HOST_KEYS,
    PLAYBOOK,
    _ansible_playbook,
    _env,
    _prerequisites,
    host_values,
    read_ns,
)

pytestmark = pytest.mark.netns

# Seconds a module run may take; a run that reads /dev/zero or waits on a FIFO is killed at this bound.
RUN_TIMEOUT = 120
# Virtual memory of the playbook and its module (KiB): reading /dev/zero whole cannot take the machine's.
MEMORY_KIB = 3 * 1024 * 1024


@pytest.fixture
def sysctl_ns():
    _prerequisites()
    require(shutil.which("unshare") is not None, "needs util-linux (unshare)")
    host = host_values()
    hostname = socket.gethostname()
    namespace = Namespace(prefix="nst-confine")
    try:
        yield namespace.name
    finally:
        namespace.close()
    assert host_values() == host, "the host's values changed"
    assert socket.gethostname() == hostname, "the host's name changed"


def run_playbook(ns: str, tmp_path: Path, variables: dict, prelude: str = "", unshare=(), check: bool = False,
                 diff: bool = False):
    """ansible-playbook with PLAYBOOK inside `ns` (and `unshare` namespaces), after the shell `prelude`;
    bounded in time and memory, its whole process group killed at the bound.

    Returns (result or None, output, what the prelude's `after` shell function printed)."""
    playbook = tmp_path / "sysctl.yml"
    playbook.write_text(PLAYBOOK)
    out = tmp_path / "result.json"
    if out.exists():
        out.unlink()
    variables = dict(variables, out=str(out))
    variables.setdefault("path", str(tmp_path / "sysctl.d" / "60-netstate-tcp.conf"))
    script = ("ulimit -v %d; %s\n\"$@\" > %s/ansible.log 2>&1; status=$?; after 2>/dev/null; exit $status"
              % (MEMORY_KIB, prelude or "after() { :; }", tmp_path))
    command = ["ip", "netns", "exec", ns, *(["unshare", *unshare] if unshare else []), "sh", "-c", script, "sh",
               _ansible_playbook(), "-i", "localhost,", "-c", "local",
               "-e", "ansible_python_interpreter=" + sys.executable, "-e", json.dumps(variables), str(playbook),
               *(["--check"] if check else []), *(["--diff"] if diff else [])]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)
    try:
        after, errors = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the module did not finish within %d s (waiting on, or reading, a special file)" % RUN_TIMEOUT)
    output = (tmp_path / "ansible.log").read_text() + errors
    assert proc.returncode == 0, output
    return json.loads(out.read_text()), output, after


def assert_refused(result: dict, *fragments: str) -> None:
    assert result["failed"] is True, result
    assert result.get("changed") is not True
    for fragment in fragments:
        assert fragment in result["msg"], result["msg"]
    # ansible-core 2.19 marks every failure with "exception: (traceback unavailable)"; no real traceback here
    assert "module_stderr" not in result and "Traceback" not in result.get("exception", ""), result


# ------------------------------------------------------------------ keys


# In a private UTS namespace kernel.hostname is the namespace's own: the old module set it through the
# first spelling; `after` prints it from inside the same namespaces once the module has run.
UTS = "echo netstate-before > /proc/sys/kernel/hostname\nafter() { cat /proc/sys/kernel/hostname; }"


@pytest.mark.parametrize("key", ["net/ipv4/../../kernel/hostname", "net.ipv4.//.//.kernel.hostname"])
def test_key_cannot_reach_kernel_hostname(sysctl_ns, tmp_path, key):
    path = tmp_path / "sysctl.d" / "60-netstate-tcp.conf"
    somaxconn = read_ns(sysctl_ns, "net/core/somaxconn")
    result, _output, after = run_playbook(
        sysctl_ns, tmp_path, {"settings": {key: "pwned", "somaxconn": 1024}, "path": str(path)},
        prelude=UTS, unshare=("--uts",))
    assert_refused(result, "invalid sysctl settings, nothing was changed: %s=pwned: " % key)
    assert after.strip() == "netstate-before", "kernel.hostname was set through %s" % key
    assert not path.exists(), "the drop-in recorded the key"
    assert read_ns(sysctl_ns, "net/core/somaxconn") == somaxconn  # all or nothing


def test_key_cannot_write_a_file_outside_proc(sysctl_ns, tmp_path):
    """/proc/sys/net/ipv4/../../../../<tmp_path>/victim: an ordinary file, reached by climbing out of /proc."""
    victim = tmp_path / "victim"
    victim.write_text("an ordinary file\n")
    key = "net/ipv4/../../../.." + str(victim)
    path = tmp_path / "sysctl.d" / "60-netstate-tcp.conf"
    result, _output, _after = run_playbook(sysctl_ns, tmp_path, {"settings": {key: "pwned"}, "path": str(path)})
    assert_refused(result, "%s=pwned: " % key)
    assert victim.read_text() == "an ordinary file\n"
    assert not path.exists()


# ------------------------------------------------------------------ values, the kernel as oracle


def kernel_takes(ns: str, rel: str, value: str) -> bool:
    """Whether the kernel of `ns` takes `value` for /proc/sys/`rel` (written for real, then restored)."""
    before = read_ns(ns, rel)
    taken = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", 'printf "%s\\n" "$1" > "/proc/sys/$2"', "sh",
                            value, rel], capture_output=True, check=False).returncode == 0
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", 'printf "%s\\n" "$1" > "/proc/sys/$2"', "sh",
                    before or "\n", rel], check=True)
    assert read_ns(ns, rel) == before
    return taken


@pytest.mark.parametrize("key,rel,value,reason", [
    ("tcp_fin_timeout", "net/ipv4/tcp_fin_timeout", 2147483647, "must be at most 2147483"),
    ("ip_local_port_range", "net/ipv4/ip_local_port_range", "80 65535", "within 1024..65535"),
    ("tcp_rmem", "net/ipv4/tcp_rmem", "0 87380 6291456", "values must lie within 1.."),
])
def test_value_the_kernel_refuses_is_refused_before_writing(sysctl_ns, tmp_path, key, rel, value, reason):
    assert not kernel_takes(sysctl_ns, rel, str(value)), "the oracle: this kernel refuses %s=%s" % (rel, value)
    path = tmp_path / "sysctl.d" / "60-netstate-tcp.conf"
    before = {r: read_ns(sysctl_ns, r) for r in HOST_KEYS if "orphans" not in r}
    result, _output, _after = run_playbook(sysctl_ns, tmp_path, {"settings": {"tcp_tw_reuse": 1, key: value},
                                                                 "path": str(path)})
    # refused by validation, not by the kernel after a write and a rollback
    assert_refused(result, "invalid sysctl settings, nothing was changed: %s=%s: invalid value" % (key, value), reason)
    assert "cannot set it live" not in result["msg"] and "restored" not in result["msg"]
    assert {r: read_ns(sysctl_ns, r) for r in before} == before
    assert not path.exists()


@pytest.mark.parametrize("value", [True, "true", "yes"])
def test_boolean_is_not_a_number(sysctl_ns, tmp_path, value):
    somaxconn = read_ns(sysctl_ns, "net/core/somaxconn")
    result, _output, _after = run_playbook(sysctl_ns, tmp_path, {"settings": {"somaxconn": value}, "persist": False})
    assert_refused(result, "invalid sysctl settings, nothing was changed: somaxconn=%s: invalid value for "
                           "net.core.somaxconn" % value)
    assert read_ns(sysctl_ns, "net/core/somaxconn") == somaxconn, "a boolean became a backlog"


def connect_errno(ns: str) -> str:
    """What a connect() to a listener on the namespace's loopback gives: "ok" or the errno's name."""
    # the listener binds a port of its own (an explicit bind ignores reservations); the client's connect()
    # needs an ephemeral port
    code = ("import errno, socket\nserver = socket.socket(); server.bind(('127.0.0.1', 8080)); server.listen()\n"
            "client = socket.socket()\ntry:\n    client.connect(server.getsockname()); print('ok')\n"
            "except OSError as exc:\n    print(errno.errorcode[exc.errno])\n")
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_reserving_every_ephemeral_port_needs_force(sysctl_ns, tmp_path):
    """The kernel takes "1-65535" without a word and every connect() then fails: refused unless force."""
    path = tmp_path / "sysctl.d" / "60-netstate-tcp.conf"
    assert connect_errno(sysctl_ns) == "ok"
    result, _output, _after = run_playbook(sysctl_ns, tmp_path, {"settings": {"ip_local_reserved_ports": "1-65535"},
                                                                 "path": str(path)})
    low, high = read_ns(sysctl_ns, "net/ipv4/ip_local_port_range").split()
    assert_refused(result, "ip_local_reserved_ports=1-65535: the reserved ports cover the whole ephemeral range "
                           "%s-%s" % (low, high), "set force to do it anyway")
    assert read_ns(sysctl_ns, "net/ipv4/ip_local_reserved_ports") == ""
    assert not path.exists()
    assert connect_errno(sysctl_ns) == "ok"

    # force: done, with a warning; the kernel shows what it breaks
    result, output, _after = run_playbook(sysctl_ns, tmp_path, {"settings": {"ip_local_reserved_ports": "1-65535"},
                                                                "path": str(path), "force": True})
    assert result["changed"] is True and "done anyway: force" in output
    assert read_ns(sysctl_ns, "net/ipv4/ip_local_reserved_ports") == "1-65535"
    assert connect_errno(sysctl_ns) == "EADDRNOTAVAIL"


def test_narrow_port_range_needs_force(sysctl_ns, tmp_path):
    before = read_ns(sysctl_ns, "net/ipv4/ip_local_port_range")
    assert kernel_takes(sysctl_ns, "net/ipv4/ip_local_port_range", "40000 40099")  # the kernel says nothing
    result, _output, _after = run_playbook(sysctl_ns, tmp_path, {"settings": {"ip_local_port_range": "40000 40099"},
                                                                 "persist": False})
    assert_refused(result, "ip_local_port_range=40000 40099: 100 ephemeral ports, fewer than 1024")
    assert read_ns(sysctl_ns, "net/ipv4/ip_local_port_range") == before


# ------------------------------------------------------------------ the drop-in path

# A private mount namespace with a tmpfs holding the device nodes: /dev/zero is c 1 5, /dev/full c 1 7.
DEVICES = ('mount -t tmpfs -o size=1m,mode=0755 netstate-devs "$DEVS" && mknod "$DEVS/zero.conf" c 1 5'
           ' && mknod "$DEVS/full.conf" c 1 7\nafter() { :; }')


@pytest.mark.parametrize("device", ["zero.conf", "full.conf"])
@pytest.mark.parametrize("check", [False, True])
def test_device_node_as_path_is_refused_bounded(sysctl_ns, tmp_path, device, check):
    devices = tmp_path / "devs"
    devices.mkdir()
    path = devices / device
    somaxconn = read_ns(sysctl_ns, "net/core/somaxconn")
    prelude = "DEVS=%s\n%s\nls -l %s >&2" % (devices, DEVICES, path)
    result, output, _after = run_playbook(sysctl_ns, tmp_path, {"settings": {"somaxconn": 1024}, "path": str(path)},
                                          prelude=prelude, unshare=("--mount", "--propagation", "private"),
                                          check=check)
    assert_refused(result, "path=%s: is a character device, not a regular file" % path)
    assert "MemoryError" not in output
    assert read_ns(sysctl_ns, "net/core/somaxconn") == somaxconn
    assert os.listdir(devices) == []  # the tmpfs (and the nodes) lived in the private mount namespace only


def test_fifo_as_path_is_refused_without_waiting(sysctl_ns, tmp_path):
    path = tmp_path / "60-netstate-tcp.conf"
    os.mkfifo(path)
    result, _output, _after = run_playbook(sysctl_ns, tmp_path, {"settings": {"somaxconn": 1024}, "path": str(path)})
    assert_refused(result, "path=%s: is a FIFO (named pipe), not a regular file" % path)
    assert path.is_fifo()


@pytest.mark.parametrize("check", [False, True])
def test_symlink_as_path_is_refused_and_its_target_never_shown_or_copied(sysctl_ns, tmp_path, check):
    secret = tmp_path / "app.env"
    secret.write_text("SECRET_TOKEN = x\nnet.ipv4.tcp_keepalive_time = 600\n")
    path = tmp_path / "sysctl.d" / "60-netstate-tcp.conf"
    path.parent.mkdir()
    path.symlink_to(secret)
    # --diff: the old module showed the target's whole content as the drop-in's "before"
    result, output, _after = run_playbook(sysctl_ns, tmp_path, {"settings": {"somaxconn": 1024}, "path": str(path)},
                                          check=check, diff=True)
    assert_refused(result, "path=%s: is a symbolic link (to %s), which is not followed" % (path, secret),
                   "name the link's target as path instead")
    assert "SECRET_TOKEN" not in output and "SECRET_TOKEN" not in json.dumps(result)
    assert path.is_symlink() and secret.read_text() == "SECRET_TOKEN = x\nnet.ipv4.tcp_keepalive_time = 600\n"


def test_nul_in_path_is_an_error_not_a_traceback(sysctl_ns, tmp_path):
    path = str(tmp_path / "60-netstate-tcp.conf") + "\x00.conf"
    result, _output, _after = run_playbook(sysctl_ns, tmp_path, {"settings": {"somaxconn": 1024}, "path": path})
    assert_refused(result, "path=%s\\x00.conf: must be an absolute file path (path contains a NUL byte)"
                   % (tmp_path / "60-netstate-tcp.conf"))
    assert not (tmp_path / "60-netstate-tcp.conf").exists()
