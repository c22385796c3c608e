"""A fleet of real SSH hosts for tests: podman containers from minimal Debian images.

Command line (as root)::

    python3 tests/fleet/fleet.py up --hosts 3 --inventory /tmp/fleet.ini
    python3 tests/fleet/fleet.py up --hosts 6 --os debian11,debian12,debian13 --init systemd
    ansible all -i /tmp/fleet.ini -m ansible.builtin.ping
    python3 tests/fleet/fleet.py status
    python3 tests/fleet/fleet.py image --os debian11,debian12,debian13 --init none,systemd
    python3 tests/fleet/fleet.py down

Importable::

    from fleet import Fleet
    fleet = Fleet(name="demo")
    fleet.up(5)                        # idempotent; builds/caches the images, starts hosts, writes the inventory
    fleet.up(3, systems=("debian11", "debian13"), init="systemd")   # h01 debian11, h02 debian13, h03 debian11
    fleet.os("h01"), fleet.init("h01") # "debian11", "systemd" (also the fleet_os / fleet_init host variables)
    fleet.exec("h01", "ss -tan")       # CompletedProcess, via podman exec
    load = fleet.loadgen("h02", "time_wait", count=2000)
    print(load.info)                   # what the load generator built (its READY line)
    load.stop()
    fleet.down()                       # removes hosts, network, proxy and every file the fleet made

What a fleet is made of
    * one podman bridge network ``nsf-<name>`` over a /27 slice of 198.18.0.0/24 (eight fleets at
      most, so several engineers can run fleets at once; a larger fleet takes adjacent slices, and
      ``up`` waits up to NETSTATE_FLEET_SLICE_WAIT seconds for slices to come free); ``--internal``:
      no route out of it, no DNS.
    * hosts ``h01``..``hNN`` (containers ``nsf-<name>-hNN``), addresses .2 upwards in the slice, with
      a key the harness generates. Each host has a kind: its system (``debian11``, ``debian12`` or
      ``debian13``: Debian bullseye, bookworm, trixie) and its init. ``none``: sshd is the container
      command. ``systemd``: systemd is PID 1 (``--systemd=always /sbin/init``), sshd and cron are
      units, and ``up`` waits until ``systemctl is-system-running`` says running; the container's
      cgroup (name=systemd and cgroup2 trees) is handed to its root between ``podman init`` and
      ``podman start``, which systemd in a user namespace needs on this cgroup v1 machine.
      Hosts take the systems in turn, and the inits too when several are given.
    * containers run in a user namespace (uid 0 inside is an unprivileged uid outside) with
      ``--cap-add NET_ADMIN`` and ``--security-opt unmask=/proc/sys``: that is the least podman needs
      so that root in a host can write its own net.* sysctls and addresses, while kernel-wide
      sysctls (vm.*, kernel.*) stay out of reach.
    * the load generator (loadgen.py) is mounted read-only at /usr/local/lib/netstate-fleet/loadgen.py.
    * a forward proxy (``fleet.py proxy-serve``, a daemon with its pid file in the fleet's run dir)
      on the gateway, port 3142, that every host's apt uses (/etc/apt/apt.conf.d/01netstate-fleet-proxy):
      it forwards http://deb.debian.org only, keeps pool/*.deb files in STATE_DIR/apt-cache (so N
      hosts installing a package fetch it from the mirror once), passes lists (dists/...) through
      with the client's If-Modified-Since, and tunnels HTTPS CONNECT to port 443 of the hosts named
      in NETSTATE_FLEET_PROXY_ALLOW only. ``up`` starts it, ``down`` stops it.

Everything lives under the state directory (env NETSTATE_FLEET_STATE_DIR, default
/var/lib/netstate-fleet) and /run/netstate-fleet: our own containers.conf and storage.conf (given
to podman through CONTAINERS_CONF / CONTAINERS_STORAGE_CONF), podman storage, network configs,
the debootstrap package caches, the proxy's cache and one directory per fleet (key, state.json).
Nothing in /etc is touched. Each kind has its image ``localhost/netstate-fleet-<os>-<init>:<hash>``
(the hash covers image/recipe.sh, NETSTATE_FLEET_EXTRA_PACKAGES, the os and the init), built by
debootstrap up to three kinds at a time, each under its own lock, and rebuilt only when that
changes; a rebuild drops that kind's older images only.

Environment: NETSTATE_FLEET_NAME (fleet name, default "netstate"), NETSTATE_FLEET_STATE_DIR,
NETSTATE_FLEET_MIRROR (default http://deb.debian.org/debian), NETSTATE_FLEET_EXTRA_PACKAGES
(comma separated Debian packages added to every image), NETSTATE_FLEET_PROXY_ALLOW (comma separated
host names the proxy tunnels HTTPS to, e.g. pypi.org,files.pythonhosted.org), NETSTATE_FLEET_HOST_CA
(comma separated PEM files every host adds to its trust store, for a machine whose way out
re-signs TLS).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "image" / "recipe.sh"
LOADGEN = HERE / "loadgen.py"

FLEET_NETWORK = ipaddress.ip_network("198.18.0.0/24")
SLICE_PREFIX = 27                     # 8 fleets of up to 29 hosts each; a larger fleet takes
MAX_HOSTS = 2 ** (32 - FLEET_NETWORK.prefixlen) - 3  # several adjacent slices (a /25 for 100 hosts)
SLICE_WAIT = 600                      # seconds up() waits for slices to come free (NETSTATE_FLEET_SLICE_WAIT)
IMAGE_REPO = "localhost/netstate-fleet"   # one repository per kind: IMAGE_REPO-<os>-<init>:<hash>
# The systems a host can run: fleet_os -> (Debian suite, Python interpreter for Ansible).
SYSTEMS = {
    "debian11": ("bullseye", "/usr/bin/python3"),   # Python 3.9
    "debian12": ("bookworm", "/usr/bin/python3"),   # Python 3.11
    "debian13": ("trixie", "/usr/bin/python3"),     # Python 3.13
}
INITS = ("none", "systemd")   # none: sshd is the container command; systemd: systemd is PID 1
DEFAULT_SYSTEMS = ("debian12",)
DEFAULT_INIT = "none"
APT_PROXY_PORT = 3142
APT_PROXY_CONF = "/etc/apt/apt.conf.d/01netstate-fleet-proxy"
APT_MIRROR_HOST = "deb.debian.org"
UPSTREAM_TRIES = 4                      # the proxy's tries of one mirror request
LABEL = "netstate.fleet"
# Container root is this uid/gid outside; the same map for every host and fleet.
ID_MAP_BASE = 2_000_000
ID_MAP_SIZE = 65536
REMOTE_LOADGEN = "/usr/local/lib/netstate-fleet/loadgen.py"
RUN_DIR = Path("/run/netstate-fleet")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
SSHD_COMMAND = (
    "test -f /etc/ssh/ssh_host_ed25519_key || "
    "ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key </dev/null; "
    "exec /usr/sbin/sshd -D -e"
)
REQUIRED_TOOLS = {            # command -> Debian package
    "podman": "podman",
    "runc": "runc",
    "debootstrap": "debootstrap",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
INVENTORY_MARK = "netstate-fleet inventory"
SYSTEMD_COMMAND = ("/sbin/init",)


class FleetError(RuntimeError):
    """A fleet operation failed; the message says what and how to fix it."""


def log(message: str) -> None:
    print("fleet: " + message, file=sys.stderr, flush=True)


def state_dir() -> Path:
    return Path(os.environ.get("NETSTATE_FLEET_STATE_DIR", "/var/lib/netstate-fleet"))


def default_name() -> str:
    return os.environ.get("NETSTATE_FLEET_NAME", "netstate")


def recipe_hash(system: str = "debian12", init: str = "none") -> str:
    """The image tag of one kind: changes whenever the build recipe or the extra package list changes."""
    digest = hashlib.sha256(RECIPE.read_bytes())
    digest.update(b"\0" + os.environ.get("NETSTATE_FLEET_EXTRA_PACKAGES", "").encode())
    digest.update(b"\0" + system.encode() + b"\0" + init.encode())
    return digest.hexdigest()[:16]


def image_name(system: str = "debian12", init: str = "none") -> str:
    """The cached image of one kind (os, init), e.g. localhost/netstate-fleet-debian13-systemd:<hash>."""
    return "{}-{}-{}:{}".format(IMAGE_REPO, system, init, recipe_hash(system, init))


def _as_list(value: Union[str, Sequence[str], None], field: str) -> List[str]:
    """A comma separated string or a sequence of strings, as a list (empty items are errors)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    if not items or not all(isinstance(item, str) and item.strip() for item in items):
        raise FleetError("{}: expected a non-empty comma separated list, got {!r}".format(field, value))
    return [item.strip() for item in items]


def validate_kinds(systems: Union[str, Sequence[str]], init: Union[str, Sequence[str]]) -> Tuple[List[str], List[str]]:
    """Checks the systems and inits a fleet is asked for; FleetError names the field and the value."""
    system_list = _as_list(systems, "os")
    for system in system_list:
        if system not in SYSTEMS:
            raise FleetError("os: unknown system {!r} (known: {})".format(system, ", ".join(SYSTEMS)))
    init_list = _as_list(init, "init")
    for one in init_list:
        if one not in INITS:
            raise FleetError("init: unknown init {!r} (known: {})".format(one, ", ".join(INITS)))
    return system_list, init_list


def mac_address(address: str) -> str:
    """A fixed, locally administered MAC per address: a restarted host keeps its MAC, so the
    controller's ARP entry stays right and it answers at once (not after neighbour probing)."""
    return "02:4e:53:" + ":".join("{:02x}".format(octet) for octet in ipaddress.ip_address(address).packed[1:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock shared by every fleet.py on the machine (image build, subnet choice)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_if_changed(path: Path, text: str, mode: int = 0o644) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


class Podman:
    """podman with our own containers.conf and storage.conf; nothing in /etc is read or written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.containers_conf = root / "containers.conf"
        self.storage_conf = root / "storage.conf"

    def configure(self) -> None:
        run = RUN_DIR
        for directory in (self.root, self.root / "storage", self.root / "networks", run):
            directory.mkdir(parents=True, exist_ok=True)
        _write_if_changed(self.containers_conf, (
            "# written by tests/fleet/fleet.py\n"
            "[containers]\n"
            "default_ulimits = []\n"          # podman's default nofile/nproc limits fail here
            # Every host's root is the same unprivileged uid outside: a session keyring per
            # container and exec would soon pass that uid's kernel key quota (kernel.keys.maxkeys).
            "keyring = false\n"
            "log_driver = \"k8s-file\"\n"
            "[engine]\n"
            "cgroup_manager = \"cgroupfs\"\n"  # no systemd
            "events_logger = \"file\"\n"
            f"events_logfile_path = \"{self.root}/events.log\"\n"
            "runtime = \"runc\"\n"
            f"tmp_dir = \"{run}/libpod\"\n"
            "[network]\n"
            "network_backend = \"netavark\"\n"
            f"network_config_dir = \"{self.root}/networks\"\n"
        ))
        _write_if_changed(self.storage_conf, (
            "# written by tests/fleet/fleet.py\n"
            "[storage]\n"
            "driver = \"overlay\"\n"
            f"graphroot = \"{self.root}/storage\"\n"
            f"runroot = \"{run}/storage\"\n"
        ))

    @property
    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = str(self.containers_conf)
        env["CONTAINERS_STORAGE_CONF"] = str(self.storage_conf)
        return env

    def command(self, *args: str) -> List[str]:
        return ["podman", "--runtime", "runc", *args]

    def run(self, *args: str, check: bool = True, input: Optional[bytes] = None,
            timeout: Optional[float] = 300) -> subprocess.CompletedProcess:
        result = subprocess.run(self.command(*args), env=self.env, input=input,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise FleetError("podman {} failed ({}): {}".format(
                " ".join(args[:3]), result.returncode, result.stderr.decode(errors="replace").strip()))
        return result

    def text(self, *args: str) -> str:
        return self.run(*args).stdout.decode().strip()

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), env=self.env, **kwargs)


def ensure_prerequisites(install: bool = True) -> None:
    """Root, podman, runc, debootstrap and ssh; installs the missing packages with apt-get."""
    if sys.platform != "linux":
        raise FleetError("the fleet needs Linux (podman containers); this is " + sys.platform)
    if os.geteuid() != 0:
        raise FleetError("the fleet needs root: podman runs rootful here (networks, user "
                         "namespaces, debootstrap); run as root or with sudo")
    missing = sorted({package for tool, package in REQUIRED_TOOLS.items() if not shutil.which(tool)})
    if not missing:
        return
    if not install or not shutil.which("apt-get"):
        raise FleetError("missing commands from Debian packages {}; install them with "
                         "apt-get install {}".format(", ".join(missing), " ".join(missing)))
    log("installing " + " ".join(missing) + " with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            output = result.stdout.decode(errors="replace")[-2000:]
            raise FleetError("{} failed: {}".format(" ".join(command), output))
    still = sorted(tool for tool in REQUIRED_TOOLS if not shutil.which(tool))
    if still:
        raise FleetError("still missing after apt-get install: " + ", ".join(still))


# ------------------------------------------------------------------------------ the Debian-mirror proxy

def proxy_allow_list() -> List[str]:
    """Extra host names reachable through the proxy by HTTPS CONNECT (NETSTATE_FLEET_PROXY_ALLOW)."""
    names = [name.strip().lower() for name in os.environ.get("NETSTATE_FLEET_PROXY_ALLOW", "").split(",")]
    for name in names:
        if name and not re.match(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", name):
            raise FleetError("NETSTATE_FLEET_PROXY_ALLOW: {!r} is not a host name".format(name))
    return sorted({name for name in names if name})


def host_ca_certificates() -> List[str]:
    """The PEM certificates in NETSTATE_FLEET_HOST_CA (comma separated files), for the hosts' trust
    store: where the machine's way out re-signs TLS, a host tunnelling HTTPS through the proxy (pip
    from PyPI) must trust that CA as the machine does."""
    pems: List[str] = []
    for name in [item.strip() for item in os.environ.get("NETSTATE_FLEET_HOST_CA", "").split(",") if item.strip()]:
        try:
            text = Path(name).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise FleetError("NETSTATE_FLEET_HOST_CA: cannot read {!r}: {}".format(name, error)) from None
        found = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
        if not found:
            raise FleetError("NETSTATE_FLEET_HOST_CA: {!r} holds no PEM certificate".format(name))
        pems.extend(found)
    return pems


class AptProxyHandler(http.server.BaseHTTPRequestHandler):
    """A forward proxy for the hosts: GET/HEAD of http://deb.debian.org only, pool/*.deb files and
    the by-hash index files cached on disk (they never change under one name), everything else
    (InRelease) passed through with the client's conditional headers; CONNECT to port 443 of the
    allow-listed hosts."""

    protocol_version = "HTTP/1.1"
    server: "AptProxyServer"
    request_headers = ("If-Modified-Since", "If-None-Match", "Range", "If-Range", "Accept", "Cache-Control")
    response_headers = ("Content-Type", "Last-Modified", "ETag", "Content-Range", "Accept-Ranges", "Date")
    timeout = 300

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        self.server.log(format % args)

    def _cache_path(self, url: urllib.parse.SplitResult) -> Optional[Path]:
        parts = url.path.split("/")
        # pool/*.deb never change under one name, and neither do the index files apt fetches by
        # their hash (dists/.../by-hash/SHA256/<hash>, Debian's InRelease says Acquire-By-Hash).
        immutable = ("pool" in parts and url.path.endswith(".deb")) or (
            "by-hash" in parts and len(parts) >= 3 and parts[-2].startswith("SHA"))
        if url.query or not immutable or any(part in ("", ".", "..") for part in parts[1:]):
            return None
        return self.server.cache_dir / url.hostname / url.path.lstrip("/")

    def do_GET(self, head: bool = False) -> None:  # noqa: N802  (http.server's name)
        url = urllib.parse.urlsplit(self.path)
        try:
            port = url.port
        except ValueError:
            port = -1
        if url.scheme != "http" or url.hostname != APT_MIRROR_HOST or port not in (None, 80):
            self.send_error(403, "only http://{} is forwarded".format(APT_MIRROR_HOST))
            return
        cached = self._cache_path(url)
        try:
            if cached is not None:
                self._send_cached(url, cached, head)
            else:
                self._pass_through(url, head)
        except OSError as error:
            with contextlib.suppress(OSError):
                self.send_error(502, str(error))

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET(head=True)

    def _upstream(self, url: urllib.parse.SplitResult, method: str,
                  headers: Dict[str, str]) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The mirror's answer, through the machine's own http_proxy when it has one. A refused or
        dropped connection and a 5xx answer are tried again (4 tries in about 7 s) before the host
        is told: one mirror hiccup must not leave a host's apt lists half fetched."""
        target = url.path + ("?" + url.query if url.query else "")
        via = urllib.request.getproxies().get("http")
        if via and not urllib.request.proxy_bypass(url.hostname):
            proxy = urllib.parse.urlsplit(via)
            address, target = (proxy.hostname, proxy.port or 80), urllib.parse.urlunsplit(url)
        else:
            address = (url.hostname, 80)
        for attempt in range(UPSTREAM_TRIES):
            connection = http.client.HTTPConnection(*address, timeout=120)
            try:
                connection.request(method, target, headers=dict(headers, Host=url.hostname))
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                if attempt == UPSTREAM_TRIES - 1:
                    raise OSError("{} {}: {}".format(method, url.path, error)) from None
            else:
                if response.status < 500 or attempt == UPSTREAM_TRIES - 1:
                    return connection, response
                connection.close()
            self.server.count("retries")
            time.sleep(2 ** attempt)
        raise AssertionError("unreachable")

    def _pass_through(self, url: urllib.parse.SplitResult, head: bool) -> None:
        headers = {name: self.headers[name] for name in self.request_headers if self.headers.get(name)}
        connection, response = self._upstream(url, "HEAD" if head else "GET", headers)
        try:
            length = response.getheader("Content-Length")
            body = None
            if not head and length is None:
                body = response.read()
                length = str(len(body))
            self.send_response(response.status, response.reason)
            for name in self.response_headers:
                if response.getheader(name):
                    self.send_header(name, response.getheader(name))
            self.send_header("Content-Length", length or "0")
            self.end_headers()
            if head or response.status in (204, 304):
                return
            if body is not None:
                self.wfile.write(body)
            else:
                shutil.copyfileobj(response, self.wfile, 1 << 16)
            self.server.count("passed")
        finally:
            connection.close()

    def _send_cached(self, url: urllib.parse.SplitResult, cached: Path, head: bool) -> None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # One download per file, whichever host (or fleet: the cache is shared) asks first.
        with _locked(cached.with_name(cached.name + ".lock")):
            if cached.exists():
                self.server.count("hits")
            else:
                failure = self._download(url, cached)
                if failure is not None:
                    self.send_error(*failure)
                    return
                self.server.count("misses")
        size = cached.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.debian.binary-package")
        self.send_header("Content-Length", str(size))
        self.send_header("Last-Modified", self.date_time_string(int(cached.stat().st_mtime)))
        self.end_headers()
        if not head:
            with open(cached, "rb") as handle:
                shutil.copyfileobj(handle, self.wfile, 1 << 16)

    def _download(self, url: urllib.parse.SplitResult, cached: Path) -> Optional[Tuple[int, str]]:
        """Fetches one immutable file into the cache, whole or not at all; a dropped or short
        transfer is fetched again. Returns the error to send when the mirror does not give it."""
        partial = cached.with_name(cached.name + ".part")
        for attempt in range(UPSTREAM_TRIES):
            connection, response = self._upstream(url, "GET", {})
            try:
                if response.status != 200:
                    return response.status, response.reason
                expected = response.getheader("Content-Length")
                with open(partial, "wb") as handle:
                    shutil.copyfileobj(response, handle, 1 << 16)
                if expected is None or partial.stat().st_size == int(expected):
                    partial.replace(cached)
                    return None
            except (OSError, http.client.HTTPException):
                if attempt == UPSTREAM_TRIES - 1:
                    raise
            finally:
                connection.close()
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            self.server.count("retries")
            time.sleep(2 ** attempt)
        return 502, "short download of " + url.path

    def do_CONNECT(self) -> None:  # noqa: N802
        host, port = self.path.rpartition(":")[::2]
        if port != "443" or host.lower() not in self.server.allow:
            self.send_error(403, "CONNECT only to port 443 of: {}".format(", ".join(self.server.allow) or "nobody"))
            return
        try:
            upstream = socket.create_connection((host, 443), timeout=30)
        except OSError as error:
            self.send_error(502, str(error))
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.server.count("tunnels")
        sockets = [self.connection, upstream]
        try:
            while True:
                readable = select.select(sockets, [], [], 300)[0]
                if not readable:
                    break
                for sock in readable:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)
        except OSError:
            pass
        finally:
            upstream.close()
            self.close_connection = True


class AptProxyServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], cache_dir: Path, allow: Sequence[str],
                 stats: Optional[Path] = None) -> None:
        super().__init__(address, AptProxyHandler)
        self.cache_dir = cache_dir
        self.allow = list(allow)
        self.stats_path = stats
        self.stats = {"hits": 0, "misses": 0, "passed": 0, "tunnels": 0, "retries": 0}
        self._stats_lock = threading.Lock()

    def count(self, what: str) -> None:
        with self._stats_lock:
            self.stats[what] += 1
            if self.stats_path is not None:
                with contextlib.suppress(OSError):
                    _write_if_changed(self.stats_path, json.dumps(self.stats))

    def log(self, line: str) -> None:
        print("{} {}".format(time.strftime("%H:%M:%S"), line), flush=True)


def serve_proxy(address: str, port: int, cache_dir: Path, allow: Sequence[str], pid_file: Path) -> int:
    """The proxy daemon (``fleet.py proxy-serve``): binds, forks into the background, writes its pid
    file once it listens, and serves until SIGTERM."""
    # Started with a standard descriptor closed (a CI runner's stdin), the listening socket would
    # take its number, and the dup2 below would put /dev/null in its place: a proxy that answers
    # nobody and spins on poll(). Hold 0, 1 and 2 first.
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    server = AptProxyServer((address, port), cache_dir, allow, stats=pid_file.with_name("proxy-stats.json"))
    child = os.fork()
    if child:
        pid_file.write_text("{}\n".format(child))
        return 0
    os.setsid()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    # Let go of the starter's pipes (it waits for their end): stdin from /dev/null, stderr to the log.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(1, 2)
    try:
        server.serve_forever()
    finally:
        os._exit(0)


class LoadHandle:
    """A running load generator on one host. Use .stop() (or a with block) to end it."""

    def __init__(self, fleet: "Fleet", host: str, scenario: str, process: subprocess.Popen,
                 run_id: str, timeout: float) -> None:
        self.fleet = fleet
        self.host = host
        self.scenario = scenario
        self.run_id = run_id
        self.process = process
        self.lines: List[str] = []
        self.info: Dict[str, Any] = {}
        self._ready = threading.Event()
        self._stderr = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()
        if not self._ready.wait(timeout) or not self.info:
            self._kill()
            raise FleetError("load generator {} on {} did not get ready within {}s: {}".format(
                scenario, host, timeout, self.output()))

    def _read(self) -> None:
        # Always drain stdout, so the generator never blocks on a full pipe.
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("READY "):
                self.info = json.loads(line[len("READY "):])
                self._ready.set()
        self._ready.set()

    def _read_stderr(self) -> None:
        self._stderr = self.process.stderr.read()

    def output(self) -> str:
        self._stderr_reader.join(timeout=1)
        return "\n".join(self.lines + [self._stderr.decode(errors="replace").strip()]).strip()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def _kill(self) -> None:
        self.fleet.exec(self.host, "kill -KILL $(cat /run/netstate-loadgen/{}.pid) 2>/dev/null; "
                        "true".format(self.run_id), check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(5)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the generator (it tears down what it built) and wait; returns its exit code."""
        if self.process.poll() is None:
            self.fleet.exec(self.host, "kill -TERM $(cat /run/netstate-loadgen/{}.pid) 2>/dev/null; "
                            "true".format(self.run_id), check=False)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self._reader.join(timeout=5)
        return self.process.returncode

    def __enter__(self) -> "LoadHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def slice_prefix(hosts: int) -> int:
    """The prefix of the network a fleet of `hosts` needs: a /27 slice up to 29 hosts, then the
    smallest run of adjacent slices with room for them and the network, gateway and broadcast."""
    prefix = SLICE_PREFIX
    while 2 ** (32 - prefix) - 3 < hosts and prefix > FLEET_NETWORK.prefixlen:
        prefix -= 1
    return prefix


def env_seconds(name: str, default: float) -> float:
    """A non-negative number of seconds from the environment; FleetError names the variable."""
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise FleetError("{}: expected a number of seconds >= 0, got {!r}".format(name, text))
    return value


class Fleet:
    """N SSH hosts in podman containers; see the module docstring."""

    def __init__(self, name: Optional[str] = None, root: Optional[Path] = None,
                 owner_pid: Optional[int] = None) -> None:
        self.name = name or default_name()
        if not NAME_RE.match(self.name):
            raise FleetError("fleet name {!r} is invalid: use 1-16 of a-z, 0-9 and '-', starting "
                             "with a letter".format(self.name))
        self.root = Path(root) if root else state_dir()
        self.podman = Podman(self.root)
        self.dir = self.root / "fleets" / self.name
        self.run_dir = RUN_DIR / self.name
        self.key = self.dir / "id_ed25519"
        self.owner_pid = owner_pid
        self.network = "nsf-" + self.name
        self.state: Dict[str, Any] = self._load()

    # ---------------------------------------------------------------- state
    def _load(self) -> Dict[str, Any]:
        path = self.dir / "state.json"
        if path.exists():
            return json.loads(path.read_text())
        return {}

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_if_changed(self.dir / "state.json", json.dumps(self.state, indent=2, sort_keys=True))

    @property
    def inventory(self) -> Optional[Path]:
        path = self.state.get("inventory")
        return Path(path) if path else None

    @property
    def hosts(self) -> List[str]:
        return [host["name"] for host in self.state.get("hosts", [])]

    def _host(self, host: str) -> Dict[str, str]:
        for entry in self.state.get("hosts", []):
            if entry["name"] == host:
                return entry
        raise FleetError("fleet {} has no host {!r} (hosts: {})".format(
            self.name, host, ", ".join(self.hosts) or "none, run up first"))

    def address(self, host: str) -> str:
        return self._host(host)["address"]

    def container(self, host: str) -> str:
        return self._host(host)["container"]

    def os(self, host: str) -> str:
        """The host's system: debian11, debian12 or debian13 (its fleet_os host variable)."""
        return self._host(host).get("os", "debian12")

    def init(self, host: str) -> str:
        """The host's init: none (sshd is the container command) or systemd (PID 1)."""
        return self._host(host).get("init", "none")

    @property
    def gateway(self) -> Optional[str]:
        """The controller's address on the fleet's bridge (the Debian-mirror proxy listens there)."""
        return str(ipaddress.ip_network(self.subnet)[1]) if self.subnet else None

    @property
    def subnet(self) -> Optional[str]:
        return self.state.get("subnet")

    # ---------------------------------------------------------------- image
    def image(self, system: str = "debian12", init: str = "none") -> str:
        return image_name(system, init)

    def ensure_images(self, kinds: Sequence[Tuple[str, str]]) -> Dict[Tuple[str, str], str]:
        """Builds the images of every (os, init) kind not cached yet, up to three at a time."""
        unique = list(dict.fromkeys(kinds))
        with ThreadPoolExecutor(max_workers=min(3, len(unique))) as pool:
            futures = {kind: pool.submit(self.ensure_image, *kind) for kind in unique}
        errors = [str(future.exception()) for future in futures.values() if future.exception() is not None]
        if errors:
            raise FleetError("\n".join(errors))
        return {kind: future.result() for kind, future in futures.items()}

    def ensure_image(self, system: str = "debian12", init: str = "none") -> str:
        """Builds one kind's image with debootstrap + podman import unless the cached one is current.

        Each kind has its own lock, build directory and debootstrap cache, so builders of different
        kinds (in this process or another) run side by side and builders of the same kind wait.
        """
        validate_kinds([system], [init])
        tag = self.image(system, init)
        kind = "{}-{}".format(system, init)
        with _locked(self.root / "locks" / "image-{}.lock".format(kind)):
            if self.podman.run("image", "exists", tag, check=False).returncode == 0:
                return tag
            suite = SYSTEMS[system][0]
            log("building image {} (debootstrap {}{}, a minute or two)".format(
                tag, suite, " + systemd" if init == "systemd" else ""))
            started = time.monotonic()
            build = self.root / "build" / kind
            shutil.rmtree(build, ignore_errors=True)
            rootfs = build / "rootfs"
            rootfs.parent.mkdir(parents=True)
            mirror = os.environ.get("NETSTATE_FLEET_MIRROR", "http://deb.debian.org/debian")
            extra = os.environ.get("NETSTATE_FLEET_EXTRA_PACKAGES", "")
            result = subprocess.run(
                ["sh", str(RECIPE), str(rootfs), mirror, str(self.root / "debootstrap-cache" / kind), extra,
                 suite, init],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
            if result.returncode != 0:
                shutil.rmtree(build, ignore_errors=True)
                raise FleetError("image build of {} failed (recipe {}):\n{}".format(
                    kind, RECIPE, result.stdout.decode(errors="replace")[-3000:]))
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
                                   stdout=subprocess.PIPE)
            imported = subprocess.run(self.podman.command("import", "-", tag), stdin=tar.stdout,
                                      env=self.podman.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
            tar.stdout.close()
            tar.wait()
            shutil.rmtree(build, ignore_errors=True)
            if imported.returncode != 0 or tar.returncode != 0:
                raise FleetError("podman import of {} failed: {}".format(
                    kind, imported.stderr.decode(errors="replace")))
            # This kind's older recipes: drop them unless a container still uses one. Other kinds'
            # images live in repositories of their own and are never touched here.
            repository = tag.rsplit(":", 1)[0]
            for line in self.podman.text("images", "--format", "{{.Repository}}:{{.Tag}}",
                                         repository).splitlines():
                if line != tag and line.rsplit(":", 1)[0] == repository:
                    self.podman.run("rmi", line, check=False)
            log("image {} built in {:.0f}s".format(tag, time.monotonic() - started))
        return tag

    # ---------------------------------------------------------------- network
    def _used_networks(self) -> Dict[str, str]:
        """network -> owner (fleet name or 'route ...'), for every part of 198.18.0.0/24 in use."""
        used: Dict[str, str] = {}
        fleets = self.root / "fleets"
        for path in sorted(fleets.glob("*/state.json")) if fleets.exists() else []:
            with contextlib.suppress(ValueError, OSError):
                state = json.loads(path.read_text())
                if state.get("subnet"):
                    used[state["subnet"]] = state.get("name", path.parent.name)
        # Addresses the machine already routes (other tools' bridges) are taken too.
        routes = subprocess.run(["ip", "-4", "route", "show"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, check=False).stdout.decode()
        for line in routes.splitlines():
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(line.split()[0], strict=False)
                if net.overlaps(FLEET_NETWORK) and str(net) not in used:
                    used[str(net)] = "route " + str(net)
        return used

    def _reap_abandoned(self) -> None:
        """Fleets whose owning test session died (owner_pid gone) give their slice back."""
        for path in sorted((self.root / "fleets").glob("*/state.json")):
            with contextlib.suppress(ValueError, OSError):
                state = json.loads(path.read_text())
                pid = state.get("owner_pid")
                if pid and state.get("name") != self.name and not _pid_alive(int(pid)):
                    log("removing abandoned fleet {} (its test session {} is gone)".format(
                        state["name"], pid))
                    Fleet(state["name"], root=self.root)._remove()

    def _allocate_subnet(self, hosts: int) -> Optional[str]:
        """The first free network of 198.18.0.0/24 with room for `hosts` (one /27 slice, or adjacent
        slices for more), or None while every fitting one is in use."""
        for attempt in range(2):
            used = [ipaddress.ip_network(net) for net in self._used_networks()]
            for candidate in FLEET_NETWORK.subnets(new_prefix=slice_prefix(hosts)):
                if not any(candidate.overlaps(net) for net in used):
                    return str(candidate)
            if attempt == 0:
                self._reap_abandoned()
        return None

    def _ensure_network(self) -> None:
        subnet = ipaddress.ip_network(self.state["subnet"])
        if self.podman.run("network", "exists", self.network, check=False).returncode == 0:
            current = self.podman.text("network", "inspect", "--format",
                                       "{{range .Subnets}}{{.Subnet}}{{end}}", self.network)
            if current == str(subnet):
                return
            # Left over from a fleet whose state was lost: rebuild it on the subnet we hold.
            self.podman.run("network", "rm", "-f", self.network)
        self.podman.run("network", "create", "--internal", "--disable-dns",
                        "--subnet", str(subnet), "--gateway", str(subnet[1]),
                        "--label", "{}={}".format(LABEL, self.name), self.network)

    # ---------------------------------------------------------------- hosts
    def _ensure_key(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                            "netstate-fleet-" + self.name, "-f", str(self.key)],
                           check=True, stdin=subprocess.DEVNULL)
        # sshd's StrictModes wants authorized_keys owned by root *inside* the user namespace.
        authorized = self.dir / "authorized_keys"
        shutil.copyfile(str(self.key) + ".pub", authorized)
        os.chown(authorized, ID_MAP_BASE, ID_MAP_BASE)
        authorized.chmod(0o600)
        # The load generator is mounted read-only; a copy so edits to the repo mid-run do not matter.
        shutil.copyfile(LOADGEN, self.dir / "loadgen.py")
        (self.dir / "loadgen.py").chmod(0o644)

    def _containers(self) -> Dict[str, str]:
        """container name -> status (running, exited, created...) for this fleet."""
        out = self.podman.text("ps", "-a", "--filter", "label={}={}".format(LABEL, self.name), "--format", "json")
        return {entry["Names"][0]: entry["State"] for entry in json.loads(out or "[]")}

    def _container_images(self) -> Dict[str, str]:
        """container name -> the image (name:tag) it was made from, for this fleet."""
        out = self.podman.text("ps", "-a", "--filter", "label={}={}".format(LABEL, self.name), "--format", "json")
        return {entry["Names"][0]: entry.get("Image", "") for entry in json.loads(out or "[]")}

    def _create_host(self, entry: Dict[str, str]) -> None:
        options = [
            "run", "-d", "--name", entry["container"], "--hostname", entry["name"],
            "--network", self.network, "--ip", entry["address"], "--mac-address", mac_address(entry["address"]),
            "--uidmap", "0:{}:{}".format(ID_MAP_BASE, ID_MAP_SIZE),
            "--gidmap", "0:{}:{}".format(ID_MAP_BASE, ID_MAP_SIZE),
            "--cap-add", "NET_ADMIN", "--security-opt", "unmask=/proc/sys",
            "--pull", "never", "--label", "{}={}".format(LABEL, self.name),
            "--label", "{}.kind={}-{}".format(LABEL, entry.get("os", "debian12"), entry.get("init", "none")),
            "-v", "{}:/root/.ssh/authorized_keys:ro".format(self.dir / "authorized_keys"),
            "-v", "{}:{}:ro".format(self.dir / "loadgen.py", REMOTE_LOADGEN),
        ]
        if entry.get("init") == "systemd":
            # systemd as PID 1: podman mounts /run, /tmp and the cgroups the way systemd wants them;
            # SIGRTMIN+3 is systemd's "halt" (a clean shutdown of every unit; SIGTERM is not).
            options += ["--systemd=always", "--stop-signal", "SIGRTMIN+3", "--stop-timeout", "10",
                        entry["image"], *SYSTEMD_COMMAND]
        else:
            options += ["--stop-timeout", "2", entry["image"], "sh", "-c", SSHD_COMMAND]
        options[0] = "create"
        options.remove("-d")
        self.podman.run(*options)
        self._start_container(entry)

    def _start_container(self, entry: Dict[str, str]) -> None:
        """podman start; a systemd host first gets its own cgroup (see _delegate_cgroup)."""
        if entry.get("init") != "systemd":
            self.podman.run("start", entry["container"])
            return
        error = ""
        for attempt in range(8):
            # Right after a stop, podman's clean-up of the previous run can still tear down the
            # runtime `podman init` just made (its process is gone): then init again.
            init = self.podman.run("init", entry["container"], check=False)
            try:
                if init.returncode != 0:
                    raise FleetError(init.stderr.decode(errors="replace").strip())
                self._delegate_cgroup(entry["container"])
                self.podman.run("start", entry["container"])
                return
            except (FleetError, OSError) as failure:
                error = str(failure)
            time.sleep(0.3 * (attempt + 1))
        raise FleetError("cannot start systemd host {}: {}".format(entry["container"], error))

    def _delegate_cgroup(self, container: str) -> None:
        """Hands the container's cgroup to its root (ID_MAP_BASE outside) before PID 1 runs.

        runc makes the container's cgroup owned by the machine's root; systemd as PID 1 in a user
        namespace must create init.scope and a cgroup per unit below it, and stops with
        "Failed to allocate manager object: Permission denied" otherwise. Between `podman init`
        (cgroup made, process not started) and `podman start` the directory tree of the
        name=systemd and unified (cgroup2) hierarchies is given to the container's root; the other
        controllers stay the machine's.
        """
        pid = self.podman.text("inspect", "--format", "{{.State.Pid}}", container)
        mounts = {}   # "name=systemd" or "" (cgroup2) -> mount point
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split(" - ", 1)
            if len(fields) != 2:
                continue
            point = fields[0].split()[4]
            fstype, _source, options = (fields[1].split() + ["", ""])[:3]
            if fstype == "cgroup2":
                mounts.setdefault("", point)
            elif fstype == "cgroup" and "name=systemd" in options.split(","):
                mounts.setdefault("name=systemd", point)
        for line in Path("/proc/{}/cgroup".format(pid)).read_text().splitlines():
            _number, controllers, path = line.split(":", 2)
            point = mounts.get(controllers)
            if point is None or path in ("", "/"):
                continue
            top = Path(point + path)
            if not top.is_dir():
                continue
            for directory, _dirs, files in os.walk(top):
                for name in [None, *files]:
                    target = directory if name is None else os.path.join(directory, name)
                    os.chown(target, ID_MAP_BASE, ID_MAP_BASE)

    def ssh_args(self) -> List[str]:
        return ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "ControlMaster=auto", "-o", "ControlPersist=60s",
                "-o", "ControlPath={}/cp/%C".format(self.run_dir)]

    def ssh(self, host: str, command: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """Runs a shell command on host over SSH, as Ansible would reach it."""
        result = subprocess.run(["ssh", "-i", str(self.key), *self.ssh_args(),
                                 "root@" + self.address(host), command],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise FleetError("ssh {} {!r} failed ({}): {}".format(
                host, command, result.returncode, result.stderr.strip()))
        return result

    def _close_master(self, host: str) -> None:
        """Ends the SSH ControlMaster to host: a stopped host must look unreachable, not hang."""
        entry = self._host(host)
        subprocess.run(["ssh", *self.ssh_args(), "-O", "exit", "root@" + entry["address"]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=False)

    def _wait_ssh(self, hosts: Sequence[str], timeout: float = 60) -> None:
        def wait(host: str) -> None:
            deadline = time.monotonic() + timeout
            address = self.address(host)
            while True:
                with contextlib.suppress(OSError):
                    with socket.create_connection((address, 22), timeout=2):
                        pass
                    if self.ssh(host, "true", check=False, timeout=15).returncode == 0:
                        return
                if time.monotonic() > deadline:
                    logs = self.podman.run("logs", "--tail", "20", self.container(host), check=False)
                    raise FleetError("host {} ({}) does not answer SSH after {}s; container log:\n{}"
                                     .format(host, address, timeout, logs.stdout.decode(errors="replace")
                                             + logs.stderr.decode(errors="replace")))
                time.sleep(0.3)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(wait, hosts))

    def _wait_systemd(self, host: str, timeout: float = 120) -> None:
        """Waits until systemd on host finished booting; FleetError unless it is "running"."""
        deadline = time.monotonic() + timeout
        while True:
            # --wait blocks until boot is over; right after the start PID 1 may not listen yet.
            result = self.exec(host, ["timeout", str(int(timeout)), "systemctl", "is-system-running", "--wait"],
                               check=False, timeout=timeout + 10)
            state = result.stdout.strip()
            if state in ("running", "degraded", "maintenance", "stopping") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        if state != "running":
            failed = self.exec(host, ["systemctl", "--failed", "--no-legend", "--plain"], check=False)
            raise FleetError("systemd on host {} is {!r}, not running; failed units: {}".format(
                host, state or result.stderr.strip(), failed.stdout.strip() or "none"))

    def _wait_ready(self, hosts: Sequence[str]) -> None:
        """SSH answers on every host, and systemd hosts finished booting."""
        self._wait_ssh(hosts)
        booting = [host for host in hosts if self.init(host) == "systemd"]
        if booting:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(self._wait_systemd, booting))

    def _claim_subnet(self, hosts: int) -> None:
        """Gives the fleet a network with room for `hosts`, waiting up to NETSTATE_FLEET_SLICE_WAIT
        seconds while other fleets hold every fitting slice (many test sessions share one machine)."""
        wait = env_seconds("NETSTATE_FLEET_SLICE_WAIT", SLICE_WAIT)
        deadline = time.monotonic() + wait
        said = False
        while True:
            with _locked(self.root / "fleets.lock"):
                self.state = self._load()
                subnet = self.state.get("subnet")
                if subnet:
                    room = ipaddress.ip_network(subnet).num_addresses - 3
                    if hosts > room:
                        raise FleetError(
                            "fleet {} holds {} (room for {} hosts), {} asked for: remove it first with "
                            "`fleet.py down --name {}`".format(self.name, subnet, room, hosts, self.name))
                    return
                subnet = self._allocate_subnet(hosts)
                if subnet is not None:
                    # owner_pid from the start: a session that dies now still gives the slice back
                    self.state = {"name": self.name, "subnet": subnet, "owner_pid": self.owner_pid}
                    self._save()
                    return
                used = self._used_networks()
            if time.monotonic() >= deadline:
                raise FleetError("no free /{} of {} for {} hosts after {:.0f}s (in use: {}); remove a fleet with "
                                 "`fleet.py down --name NAME`".format(
                                     slice_prefix(hosts), FLEET_NETWORK, hosts, wait,
                                     ", ".join("{}={}".format(k, v) for k, v in sorted(used.items()))))
            if not said:
                log("fleet {}: waiting up to {:.0f}s for a free /{} of {} (other fleets hold them)".format(
                    self.name, wait, slice_prefix(hosts), FLEET_NETWORK))
                said = True
            time.sleep(5)

    def up(self, hosts: int = 5, inventory: Optional[Union[str, Path]] = None,
           systems: Union[str, Sequence[str]] = DEFAULT_SYSTEMS,
           init: Union[str, Sequence[str]] = DEFAULT_INIT) -> "Fleet":
        """Starts (or reconciles to) `hosts` hosts and writes the inventory; idempotent.

        Hosts take the systems in turn (h01 the first, h02 the second, ...), and the inits too
        when init lists several (with three systems and two inits, six hosts are every kind once).
        A host whose kind or image changed is made again.
        """
        if isinstance(hosts, bool) or not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
            raise FleetError("hosts must be between 1 and {} ({}), got {!r}".format(
                MAX_HOSTS, FLEET_NETWORK, hosts))
        system_list, init_list = validate_kinds(systems, init)
        proxy_allow_list()
        host_ca_certificates()   # bad settings fail before anything is made
        ensure_prerequisites()
        started = time.monotonic()
        self.podman.configure()
        kinds = [(system_list[i % len(system_list)], init_list[i % len(init_list)]) for i in range(hosts)]
        images = self.ensure_images(kinds)
        self._claim_subnet(hosts)
        with _locked(self.root / "fleets.lock"):
            self.state = self._load()
            self.state["network"] = self.network
            self.state["owner_pid"] = self.owner_pid
            if inventory is not None:
                self.state["inventory"] = str(Path(inventory).resolve())
            elif not self.state.get("inventory"):
                self.state["inventory"] = str(self.dir / "inventory.ini")
            subnet = ipaddress.ip_network(self.state["subnet"])
            self.state["hosts"] = [
                {"name": "h{:02d}".format(i), "container": "nsf-{}-h{:02d}".format(self.name, i),
                 "address": str(subnet[i + 1]), "os": kinds[i - 1][0], "init": kinds[i - 1][1],
                 "image": images[kinds[i - 1]]} for i in range(1, hosts + 1)]
            self._save()
            self._ensure_network()
        self._ensure_key()
        (self.run_dir / "cp").mkdir(parents=True, exist_ok=True)

        existing = self._containers()
        existing_images = self._container_images()
        wanted = {entry["container"] for entry in self.state["hosts"]}
        for container in sorted(set(existing) - wanted):
            self._remove_container(container)

        def ensure(entry: Dict[str, str]) -> None:
            status = existing.get(entry["container"])
            if status is not None and existing_images.get(entry["container"]) != entry["image"]:
                self._remove_container(entry["container"])   # another kind or an older image
                status = None
            if status is None:
                self._create_host(entry)
            elif status != "running":
                self._start_container(entry)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(ensure, self.state["hosts"]))
        self._ensure_proxy()
        self._wait_ready(self.hosts)
        self._configure_apt(self.hosts)
        self.write_inventory()
        log("fleet {}: {} hosts up on {} in {:.1f}s ({}), inventory {}".format(
            self.name, hosts, self.subnet, time.monotonic() - started,
            ", ".join("{}x {}/{}".format(kinds.count(kind), *kind) for kind in dict.fromkeys(kinds)),
            self.inventory))
        return self

    def write_inventory(self) -> Path:
        path = self.inventory
        assert path is not None
        common = " ".join(self.ssh_args())
        host_vars = {entry["name"]: {"ansible_host": entry["address"],
                                     "netstate_fleet_container": entry["container"],
                                     "fleet_os": entry.get("os", "debian12"),
                                     "fleet_init": entry.get("init", "none"),
                                     "ansible_python_interpreter": SYSTEMS[entry.get("os", "debian12")][1]}
                     for entry in self.state["hosts"]}
        group_vars = {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": common,
            "netstate_fleet_name": self.name,
        }
        if path.suffix in (".yml", ".yaml"):
            document = {"all": {"children": {"fleet": {"hosts": host_vars, "vars": group_vars}}}}
            # JSON is YAML; no PyYAML needed on the controller for this.
            text = "# {} for fleet {}\n{}\n".format(
                INVENTORY_MARK, self.name, json.dumps(document, indent=2))
        else:
            lines = ["# {} for fleet {}".format(INVENTORY_MARK, self.name), "[fleet]"]
            for host, variables in host_vars.items():
                lines.append(host + " " + " ".join("{}={}".format(k, v) for k, v in variables.items()))
            lines.append("")
            lines.append("[fleet:vars]")
            for key, value in group_vars.items():
                lines.append("{}={}".format(key, "'{}'".format(value) if " " in value else value))
            text = "\n".join(lines) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_if_changed(path, text, mode=0o600)
        return path

    def _remove_container(self, container: str, attempts: int = 6) -> None:
        """podman rm -f, retried: a container mount another process's new mount namespace still
        holds for a moment (other fleets starting in parallel) makes the first removal fail busy."""
        for attempt in range(attempts):
            result = self.podman.run("rm", "-f", "-t", "0", container, check=False)
            if result.returncode == 0:
                return
            time.sleep(0.5 * (attempt + 1))
        raise FleetError("cannot remove container {}: {}".format(
            container, result.stderr.decode(errors="replace").strip()))

    def _remove(self) -> List[str]:
        removed: List[str] = []
        if self._stop_proxy():
            removed.append("proxy")
        if shutil.which("podman"):
            self.podman.configure()
            for container in sorted(self._containers()):
                self._remove_container(container)
                removed.append("container " + container)
            if self.podman.run("network", "exists", self.network, check=False).returncode == 0:
                self.podman.run("network", "rm", "-f", self.network)
                removed.append("network " + self.network)
        for socket_path in sorted((self.run_dir / "cp").glob("*")):
            subprocess.run(["ssh", "-o", "ControlPath=" + str(socket_path), "-O", "exit", "x"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=False)
        inventory = self.inventory
        if inventory and inventory.exists() and INVENTORY_MARK in inventory.read_text()[:200]:
            inventory.unlink()
            removed.append("inventory " + str(inventory))
        for directory in (self.run_dir, self.dir):
            if directory.exists():
                shutil.rmtree(directory)
                removed.append("directory " + str(directory))
        self.state = {}
        return removed

    def down(self) -> List[str]:
        """Removes the fleet's hosts, network, inventory and state; idempotent. Returns what went."""
        if os.geteuid() != 0:
            raise FleetError("fleet down needs root (the fleet's podman containers belong to root)")
        with _locked(self.root / "fleets.lock"):
            removed = self._remove()
        log("fleet {}: {}".format(self.name, "removed " + ", ".join(removed) if removed
                                  else "nothing to remove"))
        return removed

    # ---------------------------------------------------------------- the Debian-mirror proxy
    @property
    def proxy_url(self) -> Optional[str]:
        """http://GATEWAY:PORT/, the proxy every host's apt uses (None before up)."""
        return "http://{}:{}/".format(self.gateway, APT_PROXY_PORT) if self.gateway else None

    def _proxy_pid(self) -> Optional[int]:
        """The running proxy daemon of this fleet, if any (checked to be ours by its command line)."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.run_dir / "proxy.pid").read_text())
            cmdline = Path("/proc/{}/cmdline".format(pid)).read_bytes().split(b"\0")
            if b"proxy-serve" in cmdline and self.name.encode() in cmdline:
                return pid
        return None

    def _ensure_proxy(self) -> None:
        """Starts the fleet's proxy daemon on the gateway unless it runs with the same allow list."""
        allow = proxy_allow_list()
        settings = self.run_dir / "proxy.json"
        pid = self._proxy_pid()
        if pid is not None:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(settings.read_text()).get("allow") == allow:
                    return
            self._stop_proxy()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cache = self.root / "apt-cache"
        command = [sys.executable, str(Path(__file__).resolve()), "--name", self.name, "proxy-serve",
                   "--address", str(self.gateway), "--port", str(APT_PROXY_PORT), "--cache", str(cache),
                   "--allow", ",".join(allow), "--pid-file", str(self.run_dir / "proxy.pid")]
        with open(self.run_dir / "proxy.log", "ab") as log_file:
            deadline = time.monotonic() + 20
            while True:   # the gateway address appears on the bridge with its first container
                result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.PIPE,
                                        timeout=60, check=False)
                if result.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        if result.returncode != 0:
            raise FleetError("the Debian-mirror proxy did not start on {}:{}: {}".format(
                self.gateway, APT_PROXY_PORT, result.stderr.decode(errors="replace").strip()[-1500:]))
        _write_if_changed(settings, json.dumps({"allow": allow, "url": self.proxy_url}))

    def _stop_proxy(self) -> bool:
        pid = self._proxy_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and Path("/proc/{}".format(pid)).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "proxy.pid").unlink()
        return True

    def proxy_stats(self) -> Dict[str, int]:
        """What the proxy served so far: pool files from its cache (hits), fetched (misses), passed
        through (lists), CONNECT tunnels."""
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.run_dir / "proxy-stats.json").read_text())
        return {"hits": 0, "misses": 0, "passed": 0, "tunnels": 0, "retries": 0}

    def _configure_apt(self, hosts: Sequence[str]) -> None:
        """Points every host's apt at the proxy, and adds NETSTATE_FLEET_HOST_CA to its trust store."""
        # Retries: a download the mirror drops under load is tried again rather than leaving apt's lists
        # half updated ("Some index files failed to download" is only a warning to apt-get update).
        # Languages none: no Translation-en (6 MB per update and host, which the mirror does not offer
        # by hash, so the proxy cannot cache it); package descriptions are not needed on test hosts.
        text = 'Acquire::http::Proxy "{}";\nAcquire::Retries "5";\nAcquire::Languages "none";\n'.format(
            self.proxy_url)
        certificates = host_ca_certificates()
        # One file per certificate (older ca-certificates take only the first of a file), written
        # and update-ca-certificates run only when they changed (a second or two per host).
        script = ('printf "%s\\n" "$1" > {conf}; shift; changed=; i=0; for pem in "$@"; do i=$((i+1)); '
                  'file=/usr/local/share/ca-certificates/netstate-fleet-$i.crt; '
                  'if [ "$(cat "$file" 2>/dev/null)" != "$pem" ]; then printf "%s\\n" "$pem" > "$file"; changed=1; fi; '
                  'done; if [ -n "$changed" ]; then update-ca-certificates >/dev/null; fi').format(conf=APT_PROXY_CONF)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda host: self.exec(host, ["sh", "-c", script, "sh", text.strip(), *certificates]),
                          hosts))

    # ---------------------------------------------------------------- per host
    def exec(self, host: str, command: Union[str, Sequence[str]], check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess:
        """Runs command in host through podman exec (a str goes through sh -c); text output."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        result = subprocess.run(self.podman.command("exec", self.container(host), *argv),
                                env=self.podman.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise FleetError("{} on {} failed ({}): {}".format(
                argv, host, result.returncode, (result.stderr or result.stdout).strip()))
        return result

    def stop_host(self, host: str) -> None:
        """Stops host: it keeps its address in the inventory but no longer answers (unreachable)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._close_master(host)
        # A systemd host shuts its units down (10 s at most); sshd alone is stopped in 2 s.
        self.podman.run("stop", "-t", "10" if self.init(host) == "systemd" else "2", self.container(host))

    def start_host(self, host: str) -> None:
        self._start_container(self._host(host))
        self._wait_ready([host])

    def restart_host(self, host: str) -> None:
        """Stops and starts the host's container: a fresh network namespace (net.* sysctls and
        addresses back to their defaults), and on a systemd host a real boot (boot-time units such
        as systemd-sysctl and every enabled service run again)."""
        self.stop_host(host)
        self.start_host(host)

    def is_running(self, host: str) -> bool:
        out = self.podman.run("inspect", "--format", "{{.State.Running}}", self.container(host),
                              check=False)
        return out.stdout.decode().strip() == "true"

    def loadgen(self, host: str, scenario: str, ready_timeout: float = 180,
                **params: Any) -> LoadHandle:
        """Starts loadgen.py SCENARIO on host; returns once it printed READY (see .info).

        Keyword parameters become options: loadgen(h, "established", count=100, port=8080)
        runs ``loadgen.py established --count 100 --port 8080``; True adds a bare flag.
        """
        run_id = uuid.uuid4().hex[:12]
        argv = ["python3", REMOTE_LOADGEN, scenario, "--id", run_id]
        for key, value in params.items():
            if value is None or value is False:
                continue
            argv.append("--" + key.replace("_", "-"))
            if value is not True:
                argv.append(",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
        process = self.podman.popen("exec", "-i", self.container(host), *argv,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        return LoadHandle(self, host, scenario, process, run_id, ready_timeout)


def list_fleets(root: Optional[Path] = None) -> List[Dict[str, Any]]:
    fleets = (Path(root) if root else state_dir()) / "fleets"
    out = []
    for path in sorted(fleets.glob("*/state.json")) if fleets.exists() else []:
        with contextlib.suppress(ValueError, OSError):
            out.append(json.loads(path.read_text()))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--name", default=None,
                        help="fleet name (default: $NETSTATE_FLEET_NAME or 'netstate')")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start hosts and write the inventory (idempotent)")
    up.add_argument("--hosts", type=int, default=5, help="number of hosts (1-%d)" % MAX_HOSTS)
    up.add_argument("--inventory", help="inventory path (.ini, or .yml/.yaml for YAML); default "
                                        "STATE_DIR/fleets/NAME/inventory.ini")
    up.add_argument("--os", default=",".join(DEFAULT_SYSTEMS),
                    help="systems the hosts take in turn, comma separated: {} (default %(default)s)".format(
                        ", ".join(SYSTEMS)))
    up.add_argument("--init", default=DEFAULT_INIT,
                    help="init of the hosts: none (sshd is the container command) or systemd (PID 1); "
                         "a comma separated list is taken in turn like --os (default %(default)s)")
    down = sub.add_parser("down", help="remove the fleet's hosts, network and files (idempotent)")
    down.add_argument("--all", action="store_true", help="every fleet on this machine")
    down.add_argument("--purge", action="store_true",
                      help="with --all: also the cached image, podman storage and the state dir")
    sub.add_parser("status", help="list fleets and their hosts")
    image = sub.add_parser("image", help="build the host images if their recipe changed")
    image.add_argument("--os", default=",".join(DEFAULT_SYSTEMS), help="systems, comma separated")
    image.add_argument("--init", default=DEFAULT_INIT, help="inits, comma separated")
    serve = sub.add_parser("proxy-serve", help=argparse.SUPPRESS)   # started by up, stopped by down
    serve.add_argument("--address", required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--cache", required=True)
    serve.add_argument("--allow", default="")
    serve.add_argument("--pid-file", required=True)
    args = parser.parse_args(argv)
    # So that a Ctrl-C during `up` still lets `down` clean up afterwards.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.command == "up":
            fleet = Fleet(args.name).up(args.hosts, args.inventory, systems=args.os, init=args.init)
            print(fleet.inventory)
        elif args.command == "down":
            names = [f["name"] for f in list_fleets()] if args.all else [args.name or default_name()]
            for name in names:
                Fleet(name).down()
            if args.purge:
                if not args.all:
                    raise FleetError("--purge needs --all (the image and storage are shared)")
                purge()
        elif args.command == "status":
            for state in list_fleets():
                running = Fleet(state["name"])._containers() if shutil.which("podman") else {}
                print("{} {} inventory={} owner_pid={}".format(
                    state["name"], state.get("subnet"), state.get("inventory"), state.get("owner_pid")))
                for host in state.get("hosts", []):
                    print("  {} {} {}".format(host["name"], host["address"],
                                              running.get(host["container"], "missing")))
        elif args.command == "image":
            systems, inits = validate_kinds(args.os, args.init)
            ensure_prerequisites()
            fleet = Fleet(args.name)
            fleet.podman.configure()
            started = time.monotonic()
            for tag in fleet.ensure_images([(s, i) for s in systems for i in inits]).values():
                print(tag)
            log("images ready in {:.0f}s".format(time.monotonic() - started))
        elif args.command == "proxy-serve":
            return serve_proxy(args.address, args.port, Path(args.cache),
                               [name for name in args.allow.split(",") if name], Path(args.pid_file))
    except FleetError as error:
        print("fleet: error: {}".format(error), file=sys.stderr)
        return 1
    return 0


def purge(root: Optional[Path] = None) -> None:
    """Removes the cached image, our podman storage and the whole state directory."""
    root = Path(root) if root else state_dir()
    if list_fleets(root):
        raise FleetError("fleets remain; run down --all first")
    if shutil.which("podman") and root.exists():
        podman = Podman(root)
        podman.configure()
        podman.run("rmi", "--all", "--force", check=False)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    log("purged " + str(root))


if __name__ == "__main__":
    sys.exit(main())
