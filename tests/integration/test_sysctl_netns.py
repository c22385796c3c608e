# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstate.tcp.sysctl and the tuning role on the real kernel, inside private network namespaces.

Every run happens under `ip netns exec` in a namespace made here; the host's values are read before
and after and must not move. The drop-in goes to a temporary directory, never to /etc/sysctl.d.

The proof of effect: client and server in two namespaces joined by a veth pair (198.18.0.241/30 and
.242/30), the client's port range narrowed to 100 ports. With tcp_tw_reuse=0 a paced stream of short
connections fails with EADDRNOTAVAIL once TIME_WAIT holds every port; after the tuning role sets
tcp_tw_reuse=1 the same stream succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils import _sysctl
from tests.conftest import Namespace, netns_prerequisites, require
from tests.support.waiting import wait_for

pytestmark = pytest.mark.netns

COLLECTIONS_ROOT = Path(os.path.abspath(_sysctl.__file__)).parents[5]
REPO = Path(os.path.abspath(_sysctl.__file__)).parents[2]
HOST_KEYS = ("net/ipv4/tcp_tw_reuse", "net/ipv4/ip_local_port_range", "net/ipv4/tcp_fin_timeout",
             "net/core/somaxconn", "net/ipv4/tcp_max_orphans", "net/ipv4/tcp_ecn", "net/ipv4/tcp_timestamps")
CLIENT_ADDRESS, SERVER_ADDRESS, SERVER_PORT = "198.18.0.241", "198.18.0.242", 8080
PORTS = (40000, 40099)  # 100 ephemeral ports in the client namespace

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Run netstate.tcp.sysctl
      netstate.tcp.sysctl:
        settings: "{{ settings }}"
        path: "{{ path }}"
        persist: "{{ persist | default(true) }}"
        apply: "{{ apply | default(true) }}"
        force: "{{ force | default(false) }}"
      register: result
      ignore_errors: true
    - name: Save the result
      ansible.builtin.copy:
        content: "{{ result | to_nice_json }}"
        dest: "{{ out }}"
        mode: "0600"
      check_mode: false
      diff: false
"""

# Accepts connections and closes each one once the client has closed it: the client closes
# first, so the TIME_WAIT sockets are the client's, holding its ephemeral ports.
SERVER = r"""
import selectors, socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen(1024)
selector = selectors.DefaultSelector()
selector.register(server, selectors.EVENT_READ)
print("READY", flush=True)
while True:
    for key, _ in selector.select():
        if key.fileobj is server:
            conn, _ = server.accept()
            conn.setblocking(False)
            selector.register(conn, selectors.EVENT_READ)
            continue
        try:
            data = key.fileobj.recv(64)
        except OSError:
            data = b""
        if not data:
            selector.unregister(key.fileobj)
            key.fileobj.close()
"""

# Opens `count` short connections to one destination at `rate` per second; prints a JSON summary.
CLIENT = r"""
import errno, json, socket, sys, time
address, port, count, rate, max_errors = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), 5
ok, errors, first_error = 0, {}, None
start = time.monotonic()
for i in range(count):
    delay = start + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    s = socket.socket()
    try:
        s.connect((address, port))
        ok += 1
    except OSError as exc:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        errors[name] = errors.get(name, 0) + 1
        if first_error is None:
            first_error = {"index": i, "errno": name, "message": exc.strerror}
        if sum(errors.values()) >= max_errors:
            break
    finally:
        s.close()
print(json.dumps({"ok": ok, "errors": errors, "first_error": first_error,
                  "seconds": round(time.monotonic() - start, 2)}))
"""


def _prerequisites() -> None:
    netns_prerequisites()
    require(_ansible_playbook() is not None, "needs ansible-playbook next to the test interpreter")


def _ansible_playbook() -> str:
    local = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return local if os.path.exists(local) else shutil.which("ansible-playbook")  # type: ignore[return-value]


def _env() -> dict:
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS_ROOT)
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_DEPRECATION_WARNINGS"] = "0"
    return env


def inside(ns: str, *command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *command], check=check, text=True,
                          capture_output=True, **kwargs)


def read_ns(ns: str, rel: str) -> str:
    return " ".join(inside(ns, "cat", "/proc/sys/" + rel).stdout.split())


def host_values() -> dict:
    values = {}
    for rel in HOST_KEYS:
        with open("/proc/sys/" + rel) as handle:
            values[rel] = " ".join(handle.read().split())
    return values


@pytest.fixture
def sysctl_ns():
    """A private namespace's name; the host's own values must be the same afterwards."""
    _prerequisites()
    host = host_values()
    namespace = Namespace(prefix="nst-sysctl")
    try:
        yield namespace.name
    finally:
        namespace.close()
    assert host_values() == host, "the host's values changed"


@pytest.fixture
def veth_pair():
    """(client, server) namespaces joined by a veth pair, addresses from 198.18.0.0/24 only."""
    _prerequisites()
    host = host_values()
    made = []
    try:
        for prefix in ("nst-twc", "nst-tws"):
            made.append(Namespace(prefix=prefix))
        client, server = (namespace.name for namespace in made)
        subprocess.run(["ip", "link", "add", "nstc%d" % os.getpid(), "netns", client,
                        "type", "veth", "peer", "name", "nsts%d" % os.getpid(), "netns", server], check=True)
        for ns, dev, address in ((client, "nstc%d" % os.getpid(), CLIENT_ADDRESS),
                                 (server, "nsts%d" % os.getpid(), SERVER_ADDRESS)):
            subprocess.run(["ip", "-n", ns, "addr", "add", address + "/30", "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        yield client, server
    finally:
        for namespace in made:
            namespace.close()
    assert host_values() == host, "the host's values changed"


def run_module(ns: str, tmp_path: Path, settings: dict, *flags: str, **options) -> tuple:
    """Run the module through ansible-playbook inside `ns`; returns (result, stdout+stderr)."""
    playbook = tmp_path / "sysctl.yml"
    playbook.write_text(PLAYBOOK)
    out = tmp_path / "result.json"
    if out.exists():
        out.unlink()
    variables = dict(options, settings=settings, out=str(out))
    variables.setdefault("path", str(tmp_path / "sysctl.d" / "60-netstate-tcp.conf"))
    proc = inside(ns, _ansible_playbook(), "-i", "localhost,", "-c", "local",
                  "-e", "ansible_python_interpreter=" + sys.executable,
                  "-e", json.dumps(variables), str(playbook), *flags, env=_env(), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout + proc.stderr


def test_module_changes_the_namespace_only(sysctl_ns, tmp_path):
    path = tmp_path / "sysctl.d" / "60-netstate-tcp.conf"
    settings = {"tcp_tw_reuse": 1, "ip_local_port_range": [20000, 29999], "net.core.somaxconn": 1024,
                "tcp_fin_timeout": 45, "tcp_max_orphans": 12345}
    defaults = {rel: read_ns(sysctl_ns, rel) for rel in HOST_KEYS if "orphans" not in rel}

    preview, output = run_module(sysctl_ns, tmp_path, settings, "--check", "--diff")
    assert preview["changed"] is True and not preview.get("failed")
    assert {rel: read_ns(sysctl_ns, rel) for rel in defaults} == defaults, "check mode changed a live value"
    assert not path.exists(), "check mode wrote the drop-in"
    for key in ("net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range", "net.core.somaxconn",
                "net.ipv4.tcp_fin_timeout"):
        assert "+%s = " % key in output and "-%s = " % key in output, key  # --diff shows each key

    result, output = run_module(sysctl_ns, tmp_path, settings, "--diff")
    assert result["changed"] is True and result["file_changed"] is True
    assert read_ns(sysctl_ns, "net/ipv4/tcp_tw_reuse") == "1"
    assert read_ns(sysctl_ns, "net/ipv4/ip_local_port_range") == "20000 29999"
    assert read_ns(sysctl_ns, "net/core/somaxconn") == "1024"
    assert read_ns(sysctl_ns, "net/ipv4/tcp_fin_timeout") == "45"
    # a global key is invisible in a private namespace: skipped, named, never written
    assert result["skipped_keys"] == ["net.ipv4.tcp_max_orphans"]
    assert "net.ipv4.tcp_max_orphans is global" in output
    assert "tcp_max_orphans" not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert result["per_key"]["net.ipv4.tcp_tw_reuse"]["before"] == defaults["net/ipv4/tcp_tw_reuse"]

    again, _output = run_module(sysctl_ns, tmp_path, settings)
    assert again["changed"] is False, again


def test_kernel_rejection_restores_values_and_file(sysctl_ns, tmp_path):
    path = tmp_path / "sysctl.d" / "60-netstate-tcp.conf"
    path.parent.mkdir()
    path.write_text("net.ipv4.tcp_keepalive_time = 600\n")
    path.chmod(0o640)
    reuse, somaxconn = read_ns(sysctl_ns, "net/ipv4/tcp_tw_reuse"), read_ns(sysctl_ns, "net/core/somaxconn")
    # tcp_ecn is not in the knowledge table: only the kernel can say 9 is out of range (it takes 0..2)
    result, _output = run_module(sysctl_ns, tmp_path, {"tcp_tw_reuse": 1, "somaxconn": 1024, "net.ipv4.tcp_ecn": 9})
    assert result["failed"] is True
    assert result["msg"].startswith("net.ipv4.tcp_ecn=9: cannot set it live: Invalid argument")
    assert "restored 2 value(s) already written and the previous %s" % path in result["msg"]
    # ansible-core 2.19 marks every failure with "exception: (traceback unavailable)"; no real traceback here
    assert "module_stderr" not in result and "Traceback" not in result.get("exception", "")
    assert read_ns(sysctl_ns, "net/ipv4/tcp_tw_reuse") == reuse
    assert read_ns(sysctl_ns, "net/core/somaxconn") == somaxconn
    assert path.read_text() == "net.ipv4.tcp_keepalive_time = 600\n"
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_invalid_settings_change_nothing(sysctl_ns, tmp_path):
    path = tmp_path / "sysctl.d" / "60-netstate-tcp.conf"
    before = {rel: read_ns(sysctl_ns, rel) for rel in HOST_KEYS if "orphans" not in rel}
    settings = {"tcp_tw_reuse": 1, "tcp_tw_recycle": 1, "ip_local_port_range": "50000 40000", "somaxconn": 1024}
    result, _output = run_module(sysctl_ns, tmp_path, settings)
    assert result["failed"] is True
    assert "tcp_tw_recycle=1: refused: tcp_tw_recycle was removed in Linux 4.12" in result["msg"]
    assert "NAT" in result["msg"]
    assert "ip_local_port_range=50000 40000" in result["msg"]
    assert {rel: read_ns(sysctl_ns, rel) for rel in before} == before
    assert not path.exists()


def test_tw_buckets_not_lowered_without_force(sysctl_ns, tmp_path):
    current = int(read_ns(sysctl_ns, "net/ipv4/tcp_max_tw_buckets"))
    result, _output = run_module(sysctl_ns, tmp_path, {"tcp_max_tw_buckets": current // 2}, persist=False)
    assert result["failed"] is True and "never to lower it" in result["msg"]
    assert int(read_ns(sysctl_ns, "net/ipv4/tcp_max_tw_buckets")) == current
    result, output = run_module(sysctl_ns, tmp_path, {"tcp_max_tw_buckets": current // 2}, persist=False, force=True)
    assert result["changed"] is True and "done anyway: force" in output
    assert int(read_ns(sysctl_ns, "net/ipv4/tcp_max_tw_buckets")) == current // 2


def _time_wait_to_server(ns: str) -> int:
    rows = inside(ns, "ss", "-H", "-tn", "state", "time-wait", "dst", SERVER_ADDRESS).stdout.splitlines()
    return len([row for row in rows if row.strip()])


def _closes_settled(ns: str) -> bool:
    """Every connection of the load towards the server has finished closing: TIME_WAIT or gone."""
    rows = inside(ns, "ss", "-H", "-tan", "dst", SERVER_ADDRESS).stdout.splitlines()
    return all(row.split()[0] == "TIME-WAIT" for row in rows if row.strip())


def _load(client: str, count: int, rate: float) -> dict:
    proc = inside(client, sys.executable, "-c", CLIENT, SERVER_ADDRESS, str(SERVER_PORT), str(count), str(rate),
                  timeout=120)
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_proof_tw_reuse_lets_the_same_load_through(veth_pair, tmp_path):
    client, server = veth_pair
    ports = PORTS[1] - PORTS[0] + 1
    inside(client, "sysctl", "-qw", "net.ipv4.ip_local_port_range=%d %d" % PORTS)
    inside(client, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=0")
    assert read_ns(client, "net/ipv4/tcp_timestamps") != "0"
    # a TIME_WAIT socket may be reused once it is older than the reuse delay (1 s before 6.14);
    # pace the load so that at most half the range enters TIME_WAIT within two delays
    delay_ms = 1000
    if inside(client, "test", "-e", "/proc/sys/net/ipv4/tcp_tw_reuse_delay", check=False).returncode == 0:
        delay_ms = int(read_ns(client, "net/ipv4/tcp_tw_reuse_delay"))
    rate = ports / (2 * 2 * delay_ms / 1000.0)
    count = ports + ports // 2

    holder = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", SERVER, SERVER_ADDRESS,
                               str(SERVER_PORT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = holder.stdout.readline().strip()
        assert ready == "READY", holder.stderr.read() if holder.poll() is not None else ready

        first = _load(client, count, rate)
        print("tcp_tw_reuse=0:", first)
        wait_for("the first load's connections have closed", lambda: _closes_settled(client), 10, interval=0.05)
        held = _time_wait_to_server(client)
        # the range is used up before the load ends: a port for every connection up to the range's size,
        # and then none. Now and then (seen once in CI, on a loaded machine) one connection more gets
        # through: a connection that ends without TIME_WAIT gives its port back; what follows does not
        # depend on it, the TIME_WAIT sockets ss shows are checked below.
        assert ports <= first["ok"] <= ports + 2 and first["ok"] < count, first
        assert first["first_error"] is not None and first["first_error"]["errno"] == "EADDRNOTAVAIL", first
        assert first["first_error"]["message"] == "Cannot assign requested address"
        assert held == ports, "ss shows %d TIME_WAIT sockets to the server, expected %d" % (held, ports)

        sysctl_file = tmp_path / "60-netstate-tcp.conf"
        variables = {"netstate_tuning_settings": {"tcp_tw_reuse": 1},
                     "netstate_tuning_sysctl_file": str(sysctl_file)}
        tune = inside(client, _ansible_playbook(), "netstate.tcp.tune", "-i", "localhost,", "-c", "local",
                      "-e", "ansible_python_interpreter=" + sys.executable, "-e", json.dumps(variables),
                      env=_env(), check=False)
        assert tune.returncode == 0, tune.stdout + tune.stderr
        assert "net.ipv4.tcp_tw_reuse: 0 -> 1" in tune.stdout
        assert "busiest destination %s:%d" % (SERVER_ADDRESS, SERVER_PORT) in tune.stdout
        assert read_ns(client, "net/ipv4/tcp_tw_reuse") == "1"
        assert "net.ipv4.tcp_tw_reuse = 1" in sysctl_file.read_text()

        second = _load(client, count, rate)
        print("tcp_tw_reuse=1:", second)
        wait_for("the second load's connections have closed", lambda: _closes_settled(client), 10, interval=0.05)
        assert second["errors"] == {} and second["ok"] == count, second
        # more connections than ports: ports were taken over from TIME_WAIT sockets
        assert _time_wait_to_server(client) <= ports
    finally:
        holder.kill()
        holder.wait()


# A private mount namespace in which /proc/sys/net is a read-only bind mount of itself: what a
# container without the right to change sysctls sees. The host's mounts are not touched.
READ_ONLY = ("mount --bind /proc/sys/net /proc/sys/net && mount -o remount,ro,bind /proc/sys/net"
             ' && exec "$@"')


def inside_read_only(ns: str, *command: str) -> subprocess.CompletedProcess:
    require(shutil.which("unshare") is not None, "needs util-linux (unshare)")
    return inside(ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, "sh", *command,
                  env=_env(), check=False)


@pytest.mark.parametrize("check", [False, True])
def test_read_only_proc_sys_fails_before_changing_anything(sysctl_ns, tmp_path, check):
    path = tmp_path / "sysctl.d" / "60-netstate-tcp.conf"
    path.parent.mkdir()
    path.write_text("net.ipv4.tcp_keepalive_time = 600\n")
    before = {rel: read_ns(sysctl_ns, rel) for rel in HOST_KEYS if "orphans" not in rel}
    playbook = tmp_path / "sysctl.yml"
    playbook.write_text(PLAYBOOK)
    out = tmp_path / "result.json"
    variables = {"settings": {"somaxconn": 1024, "tcp_fin_timeout": 45}, "path": str(path), "out": str(out)}
    done = inside_read_only(sysctl_ns, _ansible_playbook(), "-i", "localhost,", "-c", "local",
                            "-e", "ansible_python_interpreter=" + sys.executable, "-e", json.dumps(variables),
                            str(playbook), *(["--check"] if check else []))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["failed"] is True
    assert result["msg"].startswith("cannot set live, nothing was changed: net.core.somaxconn=1024: cannot write "
                                    "/proc/sys/net/core/somaxconn: Read-only file system (/proc/sys is mounted "
                                    "read-only here"), result["msg"]
    assert "net.ipv4.tcp_fin_timeout=45: cannot write /proc/sys/net/ipv4/tcp_fin_timeout" in result["msg"]
    assert {rel: read_ns(sysctl_ns, rel) for rel in before} == before
    assert path.read_text() == "net.ipv4.tcp_keepalive_time = 600\n"  # the drop-in was never rewritten
    assert sorted(os.listdir(path.parent)) == ["60-netstate-tcp.conf"]  # no temporary file left either


def test_tuning_role_on_read_only_proc_sys_fails_naming_the_key(sysctl_ns, tmp_path):
    sysctl_file = tmp_path / "60-netstate-tcp.conf"
    before = {rel: read_ns(sysctl_ns, rel) for rel in HOST_KEYS if "orphans" not in rel}
    variables = {"netstate_tuning_settings": {"tcp_tw_reuse": 1}, "netstate_tuning_sysctl_file": str(sysctl_file)}
    done = inside_read_only(sysctl_ns, _ansible_playbook(), "netstate.tcp.tune", "-i", "localhost,", "-c", "local",
                            "-e", "ansible_python_interpreter=" + sys.executable, "-e", json.dumps(variables))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert ("cannot set live, nothing was changed: net.ipv4.tcp_tw_reuse=1: cannot write "
            "/proc/sys/net/ipv4/tcp_tw_reuse: Read-only file system") in output
    assert "Traceback" not in output
    assert {rel: read_ns(sysctl_ns, rel) for rel in before} == before
    assert not sysctl_file.exists()
