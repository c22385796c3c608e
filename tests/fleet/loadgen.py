"""Socket load generator for fleet hosts: builds a named TCP/UDP scenario and holds it until SIGTERM.

Standard library only, Python 3.8+. Runs on a host (fleet.py mounts it at
/usr/local/lib/netstate-fleet/loadgen.py; Fleet.loadgen() starts it through podman exec).
All traffic stays on the host's own addresses (loopback, or its 198.18.0.0/24 address) unless
--target names another fleet host.

When the scenario is built it prints one line ``READY {json}``: the scenario, its parameters and
``expect``, the socket states it added on this host (e.g. {"ESTABLISHED": 200, "LISTEN": 1}).
On SIGTERM it tears down what it built (connections reset, so no TIME_WAIT is left behind; extra
loopback addresses removed), prints ``STOPPED`` and exits 0. time_wait and churn make TIME_WAIT
sockets on purpose; the kernel keeps those for 60 s, and loadgen asks ``ss -K`` to drop them on
stop where the kernel allows it.

Scenarios (see --help of each):
  established  N connections to a local listener port (or, with --target, held to another host)
  time_wait    a TIME_WAIT flood towards one destination address:port
  close_wait   a CLOSE_WAIT leak: the server never closes after the client does
  accept_full  a listener with a full accept queue (small backlog, never accepts) -> listen overflows
  peers        many connections from a few source addresses (extra addresses on lo)
  udp_ipv6     UDP (IPv4 and IPv6) and IPv6 TCP listeners plus IPv6 connections
  churn        connections opened and closed at a fixed rate, bounded by --duration / --count
  healthy      a modest normal mix
  sink         a listener that accepts and closes when the peer closes (a target for time_wait)
"""

from __future__ import print_function

import argparse
import errno
import ipaddress
import json
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time

PID_DIR = "/run/netstate-loadgen"
LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends RST: no TIME_WAIT left behind
FD_MARGIN = 64


class LoadError(Exception):
    """Bad parameters or a scenario that could not be built."""


# ------------------------------------------------------------------------------ helpers
def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def port_range():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
        low, high = (int(x) for x in handle.read().split())
    return low, high


def own_address():
    """The host's first global IPv4 address (its fleet address), else 127.0.0.1.

    TIME_WAIT floods go to this address rather than to loopback: with tcp_tw_reuse=2 the kernel
    recycles loopback TIME_WAIT sockets, which would make the flood's size unpredictable.
    """
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "127.0.0.1"
    for line in out.decode().splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    return "127.0.0.1"


def family_of(address):
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def make_listener(address, port, backlog, proto=socket.SOCK_STREAM):
    sock = socket.socket(family_of(address), proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family_of(address) == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((address, port))
    except OSError as error:
        sock.close()
        raise LoadError("cannot bind {} {}:{}: {}".format(
            "tcp" if proto == socket.SOCK_STREAM else "udp", address, port, error.strerror))
    if proto == socket.SOCK_STREAM:
        sock.listen(backlog)
    return sock


def reset_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    except OSError:
        pass
    sock.close()


def connect(address, port, source=None, timeout=10.0):
    sock = socket.socket(family_of(address), socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source:
        sock.bind((source, 0))
    sock.connect((address, port))
    return sock


def parse_target(text):
    """'ADDR:PORT' or '[V6]:PORT' -> (address, port)."""
    if text.startswith("["):
        address, _sep, port = text[1:].partition("]:")
    else:
        address, _sep, port = text.rpartition(":")
    try:
        ipaddress.ip_address(address)
        port_number = int(port)
    except ValueError:
        raise LoadError("--target {!r} is not ADDRESS:PORT".format(text))
    if not 1 <= port_number <= 65535:
        raise LoadError("--target {!r}: port out of range".format(text))
    return address, port_number


# ------------------------------------------------------------------------------ workers
class Workers(object):
    """Forked processes that hold sockets, so no process passes the open-files limit."""

    def __init__(self):
        self.children = []  # (pid, read end of its status pipe)

    def spawn(self, job, *args):
        """Runs job(held, ready, *args) in a child; the child reports ready when job calls ready()
        or returns, then holds its sockets (the job may go on working) until SIGTERM."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_fd)
            _die_with_parent()
            held = []
            signal.signal(signal.SIGTERM, lambda *_: _child_exit(held))
            reported = []

            def ready():
                if not reported:
                    os.write(write_fd, b"ok\n")
                    os.close(write_fd)
                    reported.append(True)

            try:
                job(held, ready, *args)
            except Exception as error:  # reported to the parent, which fails the run
                if not reported:
                    os.write(write_fd, "error {}\n".format(error).encode())
                _child_exit(held, 1)
            ready()
            while True:
                signal.pause()
        os.close(write_fd)
        self.children.append((pid, read_fd))

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        for pid, read_fd in self.children:
            remaining = deadline - time.monotonic()
            ready = selectors.DefaultSelector()
            ready.register(read_fd, selectors.EVENT_READ)
            if not ready.select(max(remaining, 0)):
                raise LoadError("workers not ready after {:.0f}s".format(timeout))
            status = os.read(read_fd, 4096).decode().strip()
            if status != "ok":
                raise LoadError("worker {}: {}".format(pid, status or "died"))

    def stop(self):
        for pid, _read_fd in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid, read_fd in self.children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            os.close(read_fd)
        self.children = []


def _die_with_parent():
    """Workers end with the main process even when it is killed with SIGKILL."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_exit(held, code=0):
    for sock in held:
        reset_close(sock)
    os._exit(code)


def split_quota(total, per_worker):
    quotas = []
    while total > 0:
        quotas.append(min(total, per_worker))
        total -= quotas[-1]
    return quotas


def hold_pairs(held, ready, listener, quota, address, port, sources, shutdown_client):
    """Opens `quota` connections to the shared listener and accepts `quota` from it.

    Workers share one listener, so a worker may accept another's connection; every worker
    accepts exactly its quota, and the totals match.
    """
    listener.setblocking(False)
    clients = accepted = 0
    while clients < quota or accepted < quota:
        if clients < quota:
            source = sources[clients % len(sources)] if sources else None
            sock = connect(address, port, source)
            if shutdown_client:
                sock.shutdown(socket.SHUT_WR)  # FIN now; fd stays open so FIN_WAIT2 never times out
            held.append(sock)
            clients += 1
        while accepted < quota:
            try:
                sock, _peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            held.append(sock)
            accepted += 1
        if clients >= quota and accepted < quota:
            waiter = selectors.DefaultSelector()
            waiter.register(listener, selectors.EVENT_READ)
            waiter.select(1.0)
            waiter.close()


def run_sink(held, ready, listener):
    """Accepts connections and closes each once the peer has closed (EOF); runs until SIGTERM."""
    ready()
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    held.append(listener)
    while True:
        for key, _events in selector.select(1.0):
            if key.fileobj is listener:
                while True:
                    try:
                        sock, _peer = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    sock.setblocking(False)
                    selector.register(sock, selectors.EVENT_READ)
            else:
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    sock.close()


# ------------------------------------------------------------------------------ scenarios
class Scenario(object):
    """Builds on start(), returns the READY document; stop() tears down."""

    def __init__(self, args):
        self.args = args
        self.workers = Workers()
        self.sockets = []
        self.lo_addresses = []
        self.kill_filters = []  # ss filters whose sockets are dropped with ss -K on stop
        self.fd_limit = raise_fd_limit()
        self.per_worker = max((min(self.fd_limit, 20000) - FD_MARGIN) // 2, 1)

    def listener(self, address, port, backlog=4096, proto=socket.SOCK_STREAM):
        sock = make_listener(address, port, backlog, proto)
        self.sockets.append(sock)
        return sock

    def pairs(self, listener, count, address, port, sources=None, shutdown_client=False):
        for quota in split_quota(count, self.per_worker):
            self.workers.spawn(hold_pairs, listener, quota, address, port, sources, shutdown_client)
        self.workers.wait_ready(self.args.ready_timeout)

    def add_lo_address(self, address):
        """127.0.0.0/8 is local already; other addresses go on lo for the run (needs NET_ADMIN)."""
        ip = ipaddress.ip_address(address)
        if ip.version == 4 and ip in ipaddress.ip_network("127.0.0.0/8"):
            return
        if ip.version == 6 and ip == ipaddress.ip_address("::1"):
            return
        plen = 32 if ip.version == 4 else 128
        result = subprocess.run(["ip", "addr", "add", "{}/{}".format(address, plen), "dev", "lo"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        output = result.stdout.decode(errors="replace").strip()
        if result.returncode != 0 and "File exists" not in output:
            raise LoadError("cannot add {} to lo: {}".format(address, output))
        if result.returncode == 0:
            self.lo_addresses.append("{}/{}".format(address, plen))

    def stop(self):
        self.workers.stop()
        for sock in self.sockets:
            reset_close(sock)
        self.sockets = []
        for ss_filter in self.kill_filters:
            subprocess.run(["ss", "-K", "-tan"] + ss_filter, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        for address in self.lo_addresses:
            subprocess.run(["ip", "addr", "del", address, "dev", "lo"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        self.lo_addresses = []


def hold_connections(held, ready, address, port, quota):
    """Opens `quota` connections to address:port and holds them (reset on stop)."""
    for _connection in range(quota):
        held.append(connect(address, port))


class Established(Scenario):
    def start(self):
        a = self.args
        if a.target:
            address, port = a.target
            for quota in split_quota(a.count, self.per_worker * 2):
                self.workers.spawn(hold_connections, address, port, quota)
            self.workers.wait_ready(a.ready_timeout)
            return {"target": "{}:{}".format(address, port), "connections": a.count,
                    "expect": {"ESTABLISHED": a.count}}
        listener = self.listener(a.address, a.port)
        self.pairs(listener, a.count, a.address, a.port)
        return {"listener": "{}:{}".format(a.address, a.port), "connections": a.count,
                "expect": {"ESTABLISHED": 2 * a.count, "LISTEN": 1}}


class CloseWait(Scenario):
    def start(self):
        a = self.args
        listener = self.listener(a.address, a.port)
        self.pairs(listener, a.count, a.address, a.port, shutdown_client=True)
        return {"listener": "{}:{}".format(a.address, a.port), "connections": a.count,
                "expect": {"CLOSE_WAIT": a.count, "FIN_WAIT2": a.count, "LISTEN": 1}}


class Peers(Scenario):
    def start(self):
        a = self.args
        for source in a.sources:
            self.add_lo_address(source)
        self.add_lo_address(a.address)
        listener = self.listener(a.address, a.port)
        # Skewed on purpose (weights k, k-1, ..., 1) so the busiest peer is well defined.
        weights = list(range(len(a.sources), 0, -1))
        per_source = [a.count * w // sum(weights) for w in weights]
        per_source[0] += a.count - sum(per_source)
        sequence = [s for s, n in zip(a.sources, per_source) for _copy in range(n)]
        # Each worker gets a run of the sequence; pairs() cycles through the given sources.
        offset = 0
        for quota in split_quota(a.count, self.per_worker):
            chunk = sequence[offset:offset + quota]
            offset += quota
            self.workers.spawn(hold_pairs, listener, quota, a.address, a.port, chunk, False)
        self.workers.wait_ready(a.ready_timeout)
        return {"listener": "{}:{}".format(a.address, a.port), "connections": a.count,
                "peers": dict(zip(a.sources, per_source)),
                "expect": {"ESTABLISHED": 2 * a.count, "LISTEN": 1}}


class AcceptFull(Scenario):
    def start(self):
        a = self.args
        if a.clients <= a.backlog + 1:
            raise LoadError("--clients ({}) must exceed --backlog + 1 ({}) to overflow the queue"
                            .format(a.clients, a.backlog + 1))
        self.listener(a.address, a.port, backlog=a.backlog)
        self.workers.spawn(self._clients, a.address, a.port, a.clients)
        self.workers.wait_ready(a.ready_timeout)
        queued = a.backlog + 1  # Linux queues backlog + 1 before it drops SYNs
        return {"listener": "{}:{}".format(a.address, a.port), "backlog": a.backlog,
                "clients": a.clients, "queued": queued,
                "expect": {"LISTEN": 1, "ESTABLISHED": 2 * queued, "SYN_SENT": a.clients - queued}}

    @staticmethod
    def _clients(held, ready, address, port, clients):
        """Non-blocking connects; the ones the full queue drops stay in SYN_SENT, retried forever."""
        selector = selectors.DefaultSelector()

        def open_one():
            sock = socket.socket(family_of(address), socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex((address, port))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                raise LoadError("connect {}:{}: {}".format(address, port, os.strerror(err)))
            held.append(sock)
            selector.register(sock, selectors.EVENT_WRITE)

        for _client in range(clients):
            open_one()
        # Ready once the queue has filled: backlog + 1 connects completed (or a short wait).
        deadline = time.monotonic() + 5
        completed = 0
        while time.monotonic() < deadline and completed < clients:
            events = selector.select(0.5)
            for key, _mask in events:
                selector.unregister(key.fileobj)
                completed += 1
            if not events and completed:
                break
        ready()
        while True:  # pragma: no cover - runs until SIGTERM
            for key, _mask in selector.select(5.0):
                sock = key.fileobj
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    selector.unregister(sock)
                    held.remove(sock)
                    sock.close()
                    open_one()
                else:
                    selector.unregister(sock)


class TimeWait(Scenario):
    def start(self):
        a = self.args
        low, high = port_range()
        size = high - low + 1
        if a.count > size - 1024:
            raise LoadError("--count {} exceeds the ephemeral port range {}-{} ({} ports) less "
                            "1024 spare".format(a.count, low, high, size))
        if a.target:
            address, port = a.target
            expect = {"TIME_WAIT": a.count}
        else:
            address = own_address()
            port = a.port
            listener = self.listener(address, port)
            self.workers.spawn(run_sink, listener)
            expect = {"TIME_WAIT": a.count, "LISTEN": 1}
        self.kill_filters.append(["state", "time-wait", "dst", address, "dport", "=", str(port)])
        made = flood(address, port, a.count)
        expect["TIME_WAIT"] = wait_time_wait(address, port, a.count, timeout=30)
        if a.refresh > 0:
            self.workers.spawn(_refresher, address, port, a.count, a.refresh)
        return {"destination": "{}:{}".format(address, port), "connections": made,
                "refresh": a.refresh, "port_range": [low, high], "share": round(made / size, 4),
                "expect": expect}


def flood(address, port, count):
    """count connections opened and closed by us first: each leaves a TIME_WAIT socket here."""
    for _connection in range(count):
        sock = connect(address, port)
        sock.close()
    return count


def count_time_wait(address, port):
    """TIME_WAIT sockets here towards address:port, read from /proc/net/tcp(6)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        files = ["/proc/net/tcp"]
        want = "{:08X}:{:04X}".format(int.from_bytes(ip.packed, "little"), port)
    else:  # four 32-bit words, each printed in host (little-endian) order
        files = ["/proc/net/tcp6"]
        words = struct.unpack("<4I", ip.packed)
        want = "{}:{:04X}".format("".join("{:08X}".format(w) for w in words), port)
    total = 0
    for path in files:
        with open(path) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if fields[3] == "06" and fields[2] == want:
                    total += 1
    return total


def wait_time_wait(address, port, count, timeout):
    """Waits until the flood's TIME_WAIT sockets are all there, or their number stops growing;
    returns how many there are. A few percent of them can be gone at once on a busy host: the
    kernel answers a late segment with a reset (TcpOutRsts), which ends a TIME_WAIT socket
    (tcp_rfc1337=0). So READY reports what is there, not what was asked for."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        now = count_time_wait(address, port)
        if now >= count:
            return now
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 2 and now >= count * 0.9:
            return now
        if time.monotonic() > deadline:
            raise LoadError("only {} of {} TIME_WAIT sockets towards {}:{} after {}s (is the "
                            "target a listener that closes on EOF?)".format(
                                now, count, address, port, timeout))
        time.sleep(0.1)


def _refresher(held, ready, address, port, count, every):
    """Reports ready at once, then re-floods every `every` seconds until SIGTERM."""
    ready()
    while True:  # pragma: no cover - runs until SIGTERM
        time.sleep(every)
        try:
            flood(address, port, count)
        except OSError:
            pass  # ports still held by the previous flood; the next round tries again


class Churn(Scenario):
    def start(self):
        a = self.args
        low, high = port_range()
        total = a.count if a.count else a.rate * a.duration
        address = own_address() if a.close == "fin" else a.address
        if a.close == "fin" and total > (high - low + 1) - 1024:
            raise LoadError("churn with --close fin leaves one TIME_WAIT per connection: {} "
                            "connections exceed the port range {}-{}; lower --rate/--duration or "
                            "use --count or --close rst".format(total, low, high))
        listener = self.listener(address, a.port)
        self.workers.spawn(run_sink, listener)
        if a.close == "fin":
            self.kill_filters.append(["state", "time-wait", "dst", address, "dport", "=",
                                      str(a.port)])
        self.workers.spawn(_churner, address, a.port, a.rate, a.duration, total, a.close)
        self.workers.wait_ready(a.ready_timeout)
        return {"destination": "{}:{}".format(address, a.port), "rate": a.rate,
                "duration": a.duration, "connections": total, "close": a.close,
                "started": time.time(),
                # One listener always; in flight at most a few pairs; with fin one TIME_WAIT per
                # finished connection (up to `connections`).
                "expect": {"LISTEN": 1}}


def _churner(held, ready, address, port, rate, duration, total, close):
    ready()
    started = time.monotonic()
    made = 0
    batch = max(rate // 50, 1)
    while made < total and time.monotonic() - started < duration:  # pragma: no cover
        for _connection in range(min(batch, total - made)):
            try:
                sock = connect(address, port, timeout=5)
            except OSError:
                continue
            if close == "rst":
                reset_close(sock)
            else:
                sock.close()
            made += 1
        # Pace to `rate`: sleep until where this many connections should be.
        ahead = made / float(rate) - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    print("CHURN {}".format(json.dumps({"connections": made,
                                        "seconds": round(time.monotonic() - started, 2)})),
          flush=True)
    while True:  # pragma: no cover
        signal.pause()


class UdpIpv6(Scenario):
    def start(self):
        a = self.args
        tcp6 = self.listener("::1", a.port)
        self.listener("::", a.port + 1)
        for i in range(a.count):
            self.listener("127.0.0.1", a.port + i, proto=socket.SOCK_DGRAM)
            self.listener("::1", a.port + i, proto=socket.SOCK_DGRAM)
        self.pairs(tcp6, a.connections, "::1", a.port)
        return {"udp_ports": [a.port, a.port + a.count - 1], "tcp6_listeners": 2,
                "connections": a.connections,
                "expect": {"LISTEN": 2, "ESTABLISHED": 2 * a.connections,
                           "udp": {"ipv4": a.count, "ipv6": a.count}}}


class Healthy(Scenario):
    def start(self):
        a = self.args
        web = self.listener(a.address, a.port)
        self.listener("::", a.port + 1)
        self.listener("127.0.0.1", a.port + 2, proto=socket.SOCK_DGRAM)
        self.pairs(web, a.count, a.address, a.port)
        return {"listener": "{}:{}".format(a.address, a.port), "connections": a.count,
                "expect": {"LISTEN": 2, "ESTABLISHED": 2 * a.count, "udp": {"ipv4": 1, "ipv6": 0}}}


class Sink(Scenario):
    def start(self):
        a = self.args
        listener = self.listener(a.address, a.port)
        self.workers.spawn(run_sink, listener)
        return {"listener": "{}:{}".format(a.address, a.port), "expect": {"LISTEN": 1}}


SCENARIOS = {
    "established": Established,
    "time_wait": TimeWait,
    "close_wait": CloseWait,
    "accept_full": AcceptFull,
    "peers": Peers,
    "udp_ipv6": UdpIpv6,
    "churn": Churn,
    "healthy": Healthy,
    "sink": Sink,
}


# ------------------------------------------------------------------------------ command line
def _positive(name, low=1, high=None):
    def check(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("{} must be an integer, got {!r}".format(name, text))
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError("{} must be in {}..{}, got {}".format(
                name, low, high if high is not None else "", value))
        return value
    return check


def _address(text):
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError("not an IP address: {!r}".format(text))


def _addresses(text):
    values = [_address(part) for part in text.split(",") if part]
    if not values:
        raise argparse.ArgumentTypeError("needs at least one address")
    return values


def _target(text):
    try:
        return parse_target(text)
    except LoadError as error:
        raise argparse.ArgumentTypeError(str(error))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="scenario")
    sub.required = True
    port = _positive("--port", 1, 65535)

    def add(name, help_text, default_port, count=None):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--id", default=str(os.getpid()),
                       help="run id: pid file {}/ID.pid (for stopping it)".format(PID_DIR))
        p.add_argument("--port", type=port, default=default_port, help="listener port")
        p.add_argument("--address", type=_address, default="127.0.0.1", help="listener address")
        p.add_argument("--ready-timeout", type=_positive("--ready-timeout"), default=300)
        if count is not None:
            p.add_argument("--count", type=_positive("--count", 1, 200000), default=count,
                           help="connections (default %(default)s)")
        return p

    p = add("established", "N connections to a local listener", 8080, 100)
    p.add_argument("--target", type=_target, help="ADDRESS:PORT of a listener on another host (a sink): "
                                                  "the connections go there, no local listener")
    p = add("time_wait", "TIME_WAIT flood towards one destination", 8081, 1000)
    p.add_argument("--target", type=_target, help="ADDRESS:PORT of a listener that closes on EOF "
                                                  "(default: our own sink on this host's address)")
    p.add_argument("--refresh", type=_positive("--refresh", 0), default=0,
                   help="seconds between re-floods (0: one flood, gone after ~60 s)")
    add("close_wait", "CLOSE_WAIT leak on a port", 8082, 100)
    p = add("accept_full", "listener with a full accept queue", 8083)
    p.add_argument("--backlog", type=_positive("--backlog", 1, 4096), default=4)
    p.add_argument("--clients", type=_positive("--clients", 2, 10000), default=20)
    p = add("peers", "many connections from a few source addresses", 8084, 200)
    p.add_argument("--sources", type=_addresses,
                   default=["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"],
                   help="comma separated source addresses (non-127/8 ones are added to lo)")
    p = add("udp_ipv6", "UDP and IPv6 listeners", 8085, 4)
    p.add_argument("--connections", type=_positive("--connections", 0, 100000), default=10,
                   help="IPv6 TCP connections to the ::1 listener")
    p = add("churn", "connections opened and closed at a fixed rate", 8086)
    p.add_argument("--rate", type=_positive("--rate", 1, 50000), default=2000,
                   help="connections per second")
    p.add_argument("--duration", type=_positive("--duration", 1, 3600), default=10,
                   help="seconds of churn at most")
    p.add_argument("--count", type=_positive("--count", 0, 10000000), default=0,
                   help="connections at most (0: rate x duration)")
    p.add_argument("--close", choices=["fin", "rst"], default="fin",
                   help="fin: client closes first (TIME_WAIT here); rst: reset, no TIME_WAIT")
    add("healthy", "a modest normal mix", 8087, 20)
    add("sink", "a listener that closes when the peer closes", 8088)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if "/" in args.id or not args.id:
        print("loadgen: error: --id {!r} must be a plain name".format(args.id), file=sys.stderr)
        return 2
    scenario = SCENARIOS[args.scenario](args)
    os.makedirs(PID_DIR, exist_ok=True)
    pid_file = os.path.join(PID_DIR, args.id + ".pid")
    with open(pid_file, "w") as handle:
        handle.write(str(os.getpid()))

    def terminate(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    code = 0
    try:
        info = scenario.start()
        info.update({"scenario": args.scenario, "pid": os.getpid()})
        print("READY " + json.dumps(info, sort_keys=True), flush=True)
        while True:
            signal.pause()
    except LoadError as error:
        print("loadgen: error: {}".format(error), file=sys.stderr, flush=True)
        code = 1
    except OSError as error:
        print("loadgen: error: {} failed: {}".format(args.scenario, error), file=sys.stderr, flush=True)
        code = 1
    except SystemExit:
        pass
    finally:
        scenario.stop()
        try:
            os.unlink(pid_file)
        except OSError:
            pass
    print("STOPPED", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
