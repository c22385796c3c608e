"""Benchmark of the netstate engine against the tools operators use today (issue 2).

Run as root (make bench):  python3 benchmarks/bench_engine.py [--write-doc] [--phases ...] [--sizes ...]

Four phases, each in a private network namespace of its own, in this order (--phases picks some):

listeners       ~1,000 TCP listeners: listener_facts against community.general's listen_ports_facts.
many_listeners  10,000 TCP listeners over processes of 2,500: listener_facts and connection_facts (time,
                JSON size) against `ss -tln | wc -l`, `ss -tlnp | wc -l`, and one listen_ports_facts run
                when the listeners phase's figure says it fits in --slow-budget seconds.
sockets         ~10k, ~100k and ~180k TCP sockets spread over many worker processes (benchmarks/_sockfarm.py,
                <= 19,000 files each), in two socket mixes (--mixes), each in a namespace of its own:
                  default     mostly ESTABLISHED from 1,000 client addresses (127.1.x.y, Zipf-weighted) to
                              two hot and 45 cold ports per server worker, 15% TIME_WAIT from 50 sources,
                              1% CLOSE_WAIT/FIN_WAIT2 pairs, 5% IPv6, ~300 listeners;
                  many_peers  a third TIME_WAIT from 9,000 sources (127.48.0.1 up), the rest ESTABLISHED
                              pairs from 9,000 client addresses (127.32.0.1 up; half round-robin over all,
                              half Zipf-weighted) to 20 IPv4 ports per server worker, plus 1% half-closed
                              pairs and 5% IPv6 (at 180k: ~58k pairs + ~1.8k half-closed, 60k TIME_WAIT);
                both with a listener nobody accepts from (100 queued clients). Each mix is timed
                round-robin and side by side, wall and CPU time: connection_facts as a whole
                process, the collector (plugins/module_utils/_engine/collect.py as roles/_agent installs and runs
                it, --format json and --format prometheus), one whole scrape of Debian's
                prometheus-node-exporter with only its tcpstat collector, engine.gather() in-process,
                `ss -tan | awk`, `netstat -ant | awk`, psutil.net_connections(), a bare netlink dump (the
                floor), and connection_facts and the engine with and without the listeners subset while
                the namespace also holds a listener no process holds (its descriptor only in a unix
                socket message in flight).
million         ~1,000,000 sockets: ~500k ESTABLISHED pairs whose client side each binds a source address
                of its own in 127.0.0.0/8 (500k distinct peers), ~1,120 listening ports: connection_facts,
                the engine, the floor and `ss -tan | awk`, peak RSS and the facts' JSON size.

It checks the engine's state counts against `ss -tan` run just before and after, prints medians of
wall and CPU time (user + system of the whole process tree), their ratios, peak RSS and each target
with PASS/FAIL (the socket targets on every mix at its largest size), the collector's CPU time per
poll, and with --write-doc writes docs/performance.md. Results go to benchmarks/results/bench-*.json:
the default mix under "sockets" (as before the second mix, so --from-json renders older files),
many_peers under "sockets_many_peers".

The benchmark enters each namespace with setns(2) (what `ip netns exec` does) and spawns every
measured process from there, so no `ip netns exec` start-up is counted against any tool.
psutil and the `ansible` package (community.general) live only in the benchmark's own venv,
benchmarks/.venv, made on first run from benchmarks/requirements.txt.
Everything it starts (workers, node_exporter, namespaces) is removed on exit, Ctrl-C and errors included.
"""

import argparse
import ctypes
import datetime
import http.client
import json
import math
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
sys.path.insert(0, ROOT)

from tests.support.namespaces import Namespace  # noqa: E402
from tests.support.ss_oracle import ALL_STATES, rows, states_of  # noqa: E402

BENCH_VENV = os.path.join(HERE, ".venv")
BENCH_PYTHON = os.path.join(BENCH_VENV, "bin", "python")
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
FARM = os.path.join(HERE, "_sockfarm.py")
INPROC = os.path.join(HERE, "_inproc.py")
RESULTS_DIR = os.path.join(HERE, "results")
DOC = os.path.join(ROOT, "docs", "performance.md")
TARGET_PYTHON = "/usr/bin/python3"  # what a Debian 12 target runs modules with
COLLECTOR_MODULE = "ansible_collections.netstate.tcp.plugins.module_utils._engine.collect"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"  # Debian's prometheus-node-exporter
NS_PREFIX = "nsbench-"

SS_AWK = "ss -tan | awk 'NR>1{++S[$1]}END{for(a in S) print a,S[a]}'"
NETSTAT_AWK = "netstat -ant | awk '/^tcp/{++S[$NF]}END{for(a in S) print a,S[a]}'"

# The socket mix, as shares of each size (the rest is ESTABLISHED pairs).
TIME_WAIT_SHARE = 0.15
HALF_CLOSED_SHARE = 0.01   # pairs: one CLOSE_WAIT (server never closes) + one FIN_WAIT2 (client)
IPV6_SHARE = 0.05
HOT_SHARE = 0.80           # of the IPv4 connections, to two hot ports per server
PAIR_CAPACITY = 14500      # connections per client worker (and per server worker, + listeners)
COLD_LISTENERS = 45        # per server worker, on 127.0.0.1
NODE_EXPORTER_PORT = 9100    # node_exporter's own port, in each socket mix's namespace
STUCK_PORT, STUCK_CONNECTIONS = 9999, 100   # a listener nobody accepts from (full-ish queue)
LISTENERS_APPROX = 300     # listeners of the big phase, counted off each size before the connections
TIME_WAIT_PORT = 8080
PEER_SOURCES = 1000        # client addresses 127.1.x.y, Zipf-weighted
V6_SOURCES = 20            # fd00:0:0:b::N/128 on lo, plus ::1
ORPHAN_PORT = 9998         # the listener no process holds (orphan rows)
ORPHAN_QUEUED = 8          # connections waiting in its accept queue
# The many_peers socket mix (ManyPeersMix): a third TIME_WAIT, the ESTABLISHED pairs from thousands
# of client addresses to 20 ports per server worker.
MANY_TIME_WAIT_SHARE = 1 / 3
MANY_HOT_PORTS = 20            # IPv4 ports per server worker (plus one IPv6 and one half-closing port)
MANY_PEER_SOURCES = 9000       # client addresses counting up from MANY_PEERS_FIRST
MANY_PEERS_FIRST = "127.32.0.1"
MANY_PEERS_SPREAD = 0.5        # of the IPv4 connections, round-robin over all sources; the rest Zipf-weighted
MANY_TIME_WAIT_SOURCES = 9000  # TIME_WAIT client addresses counting up from MANY_TIME_WAIT_FIRST
MANY_TIME_WAIT_FIRST = "127.48.0.1"
MANY_LISTENERS_APPROX = 115    # 22 per server worker (5 at 180k) + the stuck and TIME_WAIT listeners
# The million phase: ESTABLISHED pairs whose client side each binds its own source address.
MILLION_PAIR_CAPACITY = 18000   # connections per client worker (and per server worker, + listeners)
DISTINCT_FIRST = "127.16.0.1"   # the distinct peers count up from here (500k end in 127.23.x.y)
# The many-listeners phase: listeners per worker process.
MANY_LISTENERS_PER_PROCESS = 2500

LIBC = ctypes.CDLL(None, use_errno=True)


class BenchError(Exception):
    pass


def log(message):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), message))
    sys.stderr.flush()


def run(argv, check=True, **kwargs):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False, **kwargs)
    if check and result.returncode != 0:
        raise BenchError("%s failed (%d): %s" % (" ".join(argv), result.returncode, result.stderr.strip()))
    return result


# ---------------------------------------------------------------- the benchmark's own venv

def ensure_bench_venv():
    """benchmarks/.venv with psutil and the ansible package (community.general); nothing else uses it."""
    probe = "import psutil, ansible_collections.community.general, ansible"
    if os.path.exists(BENCH_PYTHON) and run([BENCH_PYTHON, "-c", probe], check=False).returncode == 0:
        return
    log("creating benchmarks/.venv (psutil, ansible with community.general) - once")
    if not os.path.exists(BENCH_PYTHON):
        run([TARGET_PYTHON, "-m", "venv", BENCH_VENV])
    run([BENCH_PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", REQUIREMENTS])


def bench_site_packages():
    return run([BENCH_PYTHON, "-c", "import ansible, os; print(os.path.dirname(os.path.dirname(ansible.__file__)))"]
               ).stdout.strip()


# ---------------------------------------------------------------- namespaces

# Raised in each namespace of the benchmark.
NAMESPACE_SYSCTLS = {
    "net.ipv4.ip_local_port_range": "1024 65535",
    "net.core.somaxconn": "65535",
    "net.ipv4.tcp_max_syn_backlog": "65535",
    "net.ipv4.tcp_max_tw_buckets": "1000000",
    # 2 (the default) lets connect() on loopback recycle TIME_WAIT sockets: the population
    # the benchmark builds would melt away while it measures.
    "net.ipv4.tcp_tw_reuse": "0",
    "net.ipv4.tcp_max_orphans": "1000000",
}


def enter_namespace(label, namespaces):
    """A namespace of our own (tests/support/namespaces.py), entered: lo up with the IPv6 sources,
    the sysctls raised. Its name ends in our pid, so a later run removes it if this one is killed."""
    try:
        ns = Namespace(name="%s%s-%d" % (NS_PREFIX, label, os.getpid()))
        namespaces.append(ns)
        for index in range(1, V6_SOURCES + 1):
            ns.run(["ip", "-6", "addr", "add", "fd00:0:0:b::%x/128" % index, "dev", "lo", "nodad"])
    except subprocess.CalledProcessError as exc:
        raise BenchError("%s failed (%d): %s" % (" ".join(exc.cmd), exc.returncode, (exc.stderr or "").strip()))
    skipped = [key for key, value in NAMESPACE_SYSCTLS.items() if not ns.sysctl(key, value, check=False)]
    if skipped:  # some are global on some kernels; the defaults are then large enough
        log("namespace %s: left at their defaults (not per-namespace here): %s" % (ns.name, ", ".join(skipped)))
    ns.enter()
    return ns


def remove_stale_namespaces():
    """Namespaces of an earlier run that was killed too hard to clean up (its pid is gone)."""
    listing = run(["ip", "netns", "list"], check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.match(re.escape(NS_PREFIX) + r".*-(\d+)$", name)
        if match and not os.path.exists("/proc/%s" % match.group(1)):
            log("removing stale namespace %s" % name)
            run(["ip", "netns", "del", name], check=False)


# ---------------------------------------------------------------- socket workers

class Worker:
    """One _sockfarm.py process; it inherits the namespace the benchmark is in when it starts."""

    def __init__(self, name):
        self.name = name
        self.proc = subprocess.Popen([TARGET_PYTHON, FARM], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, close_fds=True)

    def send(self, op, **fields):
        fields["op"] = op
        self.proc.stdin.write(json.dumps(fields) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout=300):
        ready = select.select([self.proc.stdout], [], [], timeout)[0]
        if not ready:
            raise BenchError("worker %s did not answer within %ds" % (self.name, timeout))
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError("worker %s exited (%s)" % (self.name, self.proc.poll()))
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise BenchError("worker %s: %s" % (self.name, answer["error"]))
        return answer

    def call(self, op, timeout=300, **fields):
        self.send(op, **fields)
        return self.receive(timeout)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Workers:
    def __init__(self):
        self.all = []

    def start(self, name):
        worker = Worker(name)
        self.all.append(worker)
        return worker

    def stop(self):
        for worker in self.all:
            worker.stop()
        self.all = []


def zipf_weights(count, exponent=1.1):
    return [1.0 / (rank ** exponent) for rank in range(1, count + 1)]


class SocketMix:
    """Builds and grows the socket mix of the big phase; sizes are total TCP sockets."""

    def __init__(self, workers, max_size, seed=2):
        self.random = random.Random(seed)
        self.workers = workers
        pairs_needed = self.plan(max_size)["pairs"] + self.plan(max_size)["half_pairs"]
        self.pair_count = max(2, math.ceil(pairs_needed / PAIR_CAPACITY))
        self.servers, self.clients = [], []
        self.connected = [0] * self.pair_count   # connections (est + half) per pair its server accepted
        self.half = [0] * self.pair_count
        self.v4_sources = ["127.1.%d.%d" % (index // 250, index % 250 + 1) for index in range(PEER_SOURCES)]
        self.v4_weights = zipf_weights(PEER_SOURCES)
        self.v6_sources = ["::1"] + ["fd00:0:0:b::%x" % index for index in range(1, V6_SOURCES + 1)]
        self.listener_count = 0
        self.time_wait_sources = ["127.2.0.%d" % index for index in range(1, 51)]
        self.time_wait_worker = None
        self.stuck_done = False

    @staticmethod
    def plan(size):
        time_wait = int(size * TIME_WAIT_SHARE)
        half_pairs = int(size * HALF_CLOSED_SHARE)
        pairs = max(0, (size - LISTENERS_APPROX - time_wait - 2 * half_pairs - 2 * STUCK_CONNECTIONS) // 2)
        return {"time_wait": time_wait, "half_pairs": half_pairs, "pairs": pairs}

    @staticmethod
    def ports(index):
        base = 10000 + 100 * index
        return {"hot": [base, base + 1], "hot6": base + 2, "leaky": base + 3,
                "cold": list(range(base + 10, base + 10 + COLD_LISTENERS))}

    def start(self):
        for index in range(self.pair_count):
            ports = self.ports(index)
            listeners = [{"family": 4, "address": "0.0.0.0", "port": port, "backlog": 4096} for port in ports["hot"]]
            listeners.append({"family": 6, "address": "::", "port": ports["hot6"], "backlog": 4096})
            listeners.append({"family": 4, "address": "0.0.0.0", "port": ports["leaky"], "backlog": 511})
            listeners += [{"family": 4, "address": "127.0.0.1", "port": port, "backlog": 511}
                          for port in ports["cold"]]
            if index == 0:
                listeners.append({"family": 4, "address": "127.0.0.1", "port": STUCK_PORT, "backlog": 128,
                                  "accept": False})
            server = self.workers.start("server%d" % index)
            self.listener_count += server.call("listen", listeners=listeners)["listeners"]
            self.servers.append(server)
            self.clients.append(self.workers.start("client%d" % index))
        self.time_wait_worker = self.workers.start("time_wait")
        self.listener_count += 1

    def _groups(self, index, connections, half):
        ports = self.ports(index)
        picks = {}
        v6 = int(connections * IPV6_SHARE)
        for source in self.random.choices(self.v6_sources, k=v6):
            key = (6, source, "::1", ports["hot6"], False)
            picks[key] = picks.get(key, 0) + 1
        v4 = connections - v6
        hot = int(v4 * HOT_SHARE)
        port_choices = (self.random.choices(ports["hot"], weights=[3, 2], k=hot)
                        + self.random.choices(ports["cold"], weights=zipf_weights(COLD_LISTENERS, 0.8), k=v4 - hot))
        sources = self.random.choices(self.v4_sources, weights=self.v4_weights, k=v4)
        for source, port in zip(sources, port_choices):
            key = (4, source, "127.0.0.1", port, False)
            picks[key] = picks.get(key, 0) + 1
        for source in self.random.choices(self.v4_sources, weights=self.v4_weights, k=half):
            key = (4, source, "127.0.0.1", ports["leaky"], True)
            picks[key] = picks.get(key, 0) + 1
        self.add_stuck(index, picks)
        return [{"family": family, "source": source, "address": address, "port": port, "count": count,
                 "half_close": half_close}
                for (family, source, address, port, half_close), count in picks.items()]

    def grow(self, size):
        plan = self.plan(size)
        started = time.monotonic()
        busy = []
        for index in range(self.pair_count):
            want_pairs = plan["pairs"] // self.pair_count + (index < plan["pairs"] % self.pair_count)
            want_half = plan["half_pairs"] // self.pair_count + (index < plan["half_pairs"] % self.pair_count)
            more_half = max(0, want_half - self.half[index])
            more = max(0, want_pairs - (self.connected[index] - self.half[index])) + more_half
            if not more:
                continue
            self.clients[index].send("connect", groups=self._groups(index, more - more_half, more_half))
            busy.append((index, more, more_half))
        for index, more, more_half in busy:
            self.clients[index].receive(timeout=600)
            self.connected[index] += more
            self.half[index] += more_half
        deadline = time.monotonic() + 120
        for index in range(self.pair_count):
            while True:
                status = self.servers[index].call("status")
                expected = self.connected[index]
                if status["accepted"] >= expected:
                    break
                if time.monotonic() > deadline:
                    raise BenchError("server%d accepted %d of %d connections" % (index, status["accepted"], expected))
                time.sleep(0.2)
        self.top_up_time_wait(size)
        log("built %d sockets' worth in %.1fs (%d workers)" % (size, time.monotonic() - started, len(self.workers.all)))

    def top_up_time_wait(self, size):
        target = self.plan(size)["time_wait"]
        return self.time_wait_worker.call("time_wait", target=target, address="127.0.0.1", port=TIME_WAIT_PORT,
                                          sources=self.time_wait_sources, timeout=600)

    def add_stuck(self, index, picks):
        """The stuck listener's clients, once, with the first connections of server 0."""
        if index == 0 and not self.stuck_done:
            picks[(4, "127.3.0.1", "127.0.0.1", STUCK_PORT, False)] = STUCK_CONNECTIONS
            self.stuck_done = True


class ManyPeersMix(SocketMix):
    """The many_peers socket mix (issue 23): a third of each size TIME_WAIT from MANY_TIME_WAIT_SOURCES
    addresses, the ESTABLISHED pairs to MANY_HOT_PORTS ports per server worker from MANY_PEER_SOURCES
    addresses (half of them round-robin over all, half Zipf-weighted: a few heavy peers, a long tail),
    5% IPv6, 1% half-closed pairs, the stuck listener. Each client binds its source before connect()."""

    def __init__(self, workers, max_size, seed=2):
        SocketMix.__init__(self, workers, max_size, seed)
        first = struct_ip(MANY_PEERS_FIRST)
        self.v4_sources = [ip_text(first + index) for index in range(MANY_PEER_SOURCES)]
        self.v4_weights = zipf_weights(MANY_PEER_SOURCES)
        first = struct_ip(MANY_TIME_WAIT_FIRST)
        self.time_wait_sources = [ip_text(first + index) for index in range(MANY_TIME_WAIT_SOURCES)]
        self.cursor = 0  # the round-robin share's next source, across sizes

    @staticmethod
    def plan(size):
        time_wait = int(size * MANY_TIME_WAIT_SHARE)
        half_pairs = int(size * HALF_CLOSED_SHARE)
        pairs = max(0, (size - MANY_LISTENERS_APPROX - time_wait - 2 * half_pairs - 2 * STUCK_CONNECTIONS) // 2)
        return {"time_wait": time_wait, "half_pairs": half_pairs, "pairs": pairs}

    @staticmethod
    def ports(index):
        base = 10000 + 100 * index
        return {"hot": list(range(base, base + MANY_HOT_PORTS)), "hot6": base + MANY_HOT_PORTS,
                "leaky": base + MANY_HOT_PORTS + 1, "cold": []}

    def _groups(self, index, connections, half):
        ports = self.ports(index)
        picks = {}
        v6 = int(connections * IPV6_SHARE)
        for source in self.random.choices(self.v6_sources, k=v6):
            key = (6, source, "::1", ports["hot6"], False)
            picks[key] = picks.get(key, 0) + 1
        v4 = connections - v6
        spread = int(v4 * MANY_PEERS_SPREAD)
        weights = zipf_weights(MANY_HOT_PORTS, 0.8)
        groups = []
        # The round-robin share: consecutive sources, a run of them per port (split where the pool wraps).
        per_port = [0] * MANY_HOT_PORTS
        for pick in self.random.choices(range(MANY_HOT_PORTS), weights=weights, k=spread):
            per_port[pick] += 1
        first = struct_ip(MANY_PEERS_FIRST)
        for port, count in zip(ports["hot"], per_port):
            while count:
                run_length = min(count, MANY_PEER_SOURCES - self.cursor)
                groups.append({"family": 4, "source_first": ip_text(first + self.cursor), "address": "127.0.0.1",
                               "port": port, "count": run_length, "half_close": False})
                self.cursor = (self.cursor + run_length) % MANY_PEER_SOURCES
                count -= run_length
        sources = self.random.choices(self.v4_sources, weights=self.v4_weights, k=v4 - spread)
        for source, port in zip(sources, self.random.choices(ports["hot"], weights=weights, k=v4 - spread)):
            key = (4, source, "127.0.0.1", port, False)
            picks[key] = picks.get(key, 0) + 1
        for source in self.random.choices(self.v4_sources, weights=self.v4_weights, k=half):
            key = (4, source, "127.0.0.1", ports["leaky"], True)
            picks[key] = picks.get(key, 0) + 1
        self.add_stuck(index, picks)
        return groups + [{"family": family, "source": source, "address": address, "port": port, "count": count,
                          "half_close": half_close}
                         for (family, source, address, port, half_close), count in picks.items()]


def build_listener_farm(workers, tcp_listeners, connections, seed=3):
    """The listener phase: ~1,000 TCP listeners (and some UDP) over 8 processes, a few connections."""
    rng = random.Random(seed)
    processes = 8
    per_process = tcp_listeners // processes
    ports = []
    for index in range(processes):
        listeners = []
        for slot in range(per_process + (index < tcp_listeners % processes)):
            port = 20000 + index * 500 + slot
            family, address = rng.choice([(4, "0.0.0.0"), (4, "127.0.0.1"), (4, "127.0.0.%d" % (index + 2)),
                                          (6, "::")])
            listeners.append({"family": family, "address": address, "port": port,
                              "backlog": rng.choice([128, 511, 4096])})
            ports.append((family, address, port))
        listeners += [{"family": 4, "address": "127.0.0.1", "port": 40000 + index * 10 + slot, "udp": True}
                      for slot in range(6)]
        workers.start("listen%d" % index).call("listen", listeners=listeners)
    client = workers.start("listen-client")
    picks = {}
    for family, address, port in rng.choices(ports, k=connections):
        target = "::1" if family == 6 else ("127.0.0.1" if address == "0.0.0.0" else address)
        key = (family, target, port)
        picks[key] = picks.get(key, 0) + 1
    client.call("connect", groups=[{"family": family, "address": target, "port": port, "count": count}
                                   for (family, target, port), count in picks.items()])
    time.sleep(0.5)  # let the listeners' event loops accept


# ---------------------------------------------------------------- measuring

class Runner:
    """Spawns measured processes and reports wall time, CPU time and peak RSS.

    Peak RSS comes from GNU time (%M) wrapped around the command: wait4() on a child spawned
    straight from this (Python, ~20 MiB) process would report at least this process's RSS,
    because the kernel keeps the pre-exec high-water mark. The wrapper costs every process
    measured here the same ~1 ms of wall time.
    """

    TIME = "/usr/bin/time"

    def __init__(self, workdir):
        self.workdir = workdir
        self.current = None
        self.has_time = os.access(self.TIME, os.X_OK)
        if not self.has_time:
            log("no %s (Debian package 'time'): peak RSS is reported as n/a" % self.TIME)

    def run(self, argv, timeout, env=None):
        out_path = os.path.join(self.workdir, "out")
        err_path = os.path.join(self.workdir, "err")
        rss_path = os.path.join(self.workdir, "rss")
        command = [self.TIME, "-f", "%M", "-o", rss_path] + list(argv) if self.has_time else list(argv)
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.perf_counter()
            # A session of its own: on timeout the whole tree goes (killing /usr/bin/time alone
            # would leave the measured process running).
            proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                    close_fds=True, start_new_session=True)
            self.current = proc
            timer = threading.Timer(timeout, self.kill_group, (proc,))
            timer.start()
            try:
                _pid, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
                self.current = None
            seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        with open(out_path, "rb") as handle:
            stdout = handle.read().decode("utf-8", "replace")
        with open(err_path, "rb") as handle:
            stderr = handle.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            raise BenchError("%s exited %d after %.1fs: %s" % (" ".join(argv)[:120], proc.returncode, seconds,
                                                               (stderr or stdout).strip()[-600:]))
        rss_kib = None
        if self.has_time:
            with open(rss_path) as handle:
                rss_kib = int(handle.read().split()[-1])
        return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "rss_kib": rss_kib,
                "stdout": stdout}

    @staticmethod
    def kill_group(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill_current(self):
        if self.current is not None:
            self.kill_group(self.current)


class Tool:
    """One thing to time. kind: 'process' (wall and CPU time of the whole process) or 'inproc'
    (the child's own timing of one warm call; RSS is still the whole child's peak)."""

    def __init__(self, key, label, argv, kind="process", env=None, timeout=180, check=None, reps=None, needs=None):
        self.key, self.label, self.argv, self.kind = key, label, argv, kind
        self.env, self.timeout, self.check, self.reps = env, timeout, check, reps
        self.needs = needs  # "orphan": timed while the namespace has a listener no process holds

    def measure(self, runner):
        result = runner.run(self.argv, self.timeout, self.env)
        if self.kind == "inproc":
            inner = json.loads(result["stdout"].strip().splitlines()[-1])
            result["seconds"] = inner.pop("seconds")
            result["cpu"] = inner.pop("cpu")
            result["detail"] = inner
        if self.check:
            result["detail"] = self.check(result["stdout"])
        result.pop("stdout")
        return result


WALK_KEYS = ("descriptors_read", "unattributed", "reason", "walk_ms", "time_budget_ms")


def module_facts_check(key):
    """Checks a module's output and keeps what the tables report of it (JSON size, listener walk)."""
    def check(stdout):
        answer = json.loads(stdout[stdout.index("{"):])
        if answer.get("failed"):
            raise BenchError("module failed: %s" % answer.get("msg"))
        facts = answer["ansible_facts"]
        size = {"json_bytes": len(stdout.strip().encode("utf-8"))}
        if key == "netstate":
            netstate = facts["netstate"]
            size["facts_bytes"] = len(json.dumps(netstate, separators=(",", ":")).encode("utf-8"))
            walk = netstate.get("listener_walk")
            size.update({"total": netstate["tcp"]["total"], "duration_ms": netstate.get("duration_ms"),
                         "listeners": len(netstate.get("listeners") or []),
                         "listener_walk": None if walk is None else {name: walk.get(name) for name in WALK_KEYS}})
            return size
        size.update({"tcp_listen": len(facts["tcp_listen"]), "udp_listen": len(facts["udp_listen"]),
                     "with_pid": sum(1 for entry in facts["tcp_listen"] if entry.get("pid"))})
        return size
    return check


def collector_check(output_file=None):
    """The collector's JSON on stdout, or (--output) the Prometheus textfile it replaced."""
    def check(stdout):
        if output_file is None:
            doc = json.loads(stdout)
            return {"total": doc["tcp"]["total"], "json_bytes": len(stdout.strip().encode("utf-8"))}
        with open(output_file, "rb") as handle:
            text = handle.read()
        if b"netstate_tcp_" not in text:
            raise BenchError("collector wrote no netstate_tcp_ metrics to %s" % output_file)
        samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        return {"prom_bytes": len(text), "samples": samples}
    return check


def install_collector(workdir):
    """The collector as roles/_agent installs it: the package plugins/module_utils/_engine/ copied whole
    under DIR/ansible_collections/netstate/tcp/plugins/module_utils/ and compiled for the target's
    Python; run as `cd DIR && exec /usr/bin/python3 -E -s -m ..._engine.collect` (the role's command)."""
    top = os.path.join(workdir, "collector")
    package = os.path.join(top, "ansible_collections", "netstate", "tcp", "plugins", "module_utils", "_engine")
    shutil.copytree(os.path.join(ROOT, "plugins", "module_utils", "_engine"), package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    run([TARGET_PYTHON, "-m", "compileall", "-q", package])
    return top


def collector_command(top, arguments):
    command = "cd %s && exec %s -E -s -m %s --quiet %s" % (top, TARGET_PYTHON, COLLECTOR_MODULE, arguments)
    return ["/bin/sh", "-c", command]


def die_with_parent():
    """In a child before exec: SIGKILL when the benchmark dies (PR_SET_PDEATHSIG), as the workers do."""
    LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)


class NodeExporter:
    """Debian's prometheus-node-exporter with only the tcpstat collector, on 127.0.0.1:9100 of the
    namespace the benchmark is in when it starts (its own port: a free one taken at random from the
    namespace's 1024-65535 once landed on a port the socket mix listens on later)."""

    def __init__(self, workdir):
        self.port = NODE_EXPORTER_PORT
        self.log_path = os.path.join(workdir, "node_exporter.log")
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                [NODE_EXPORTER, "--collector.disable-defaults", "--collector.tcpstat", "--web.disable-exporter-metrics",
                 "--web.listen-address=127.0.0.1:%d" % self.port], stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=log_file, close_fds=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.scrape()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    with open(self.log_path, errors="replace") as handle:
                        raise BenchError("node_exporter did not come up on 127.0.0.1:%d: %s"
                                         % (self.port, handle.read()[-600:]))
                time.sleep(0.1)

    def scrape(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise BenchError("node_exporter answered %d" % response.status)
            return body
        finally:
            connection.close()

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ScrapeTool(Tool):
    """One whole scrape: HTTP GET /metrics of a running node_exporter, from inside the namespace.
    CPU is what the exporter spent meanwhile (/proc/PID/stat), RSS its peak so far (VmHWM)."""

    def __init__(self, key, label, exporter):
        Tool.__init__(self, key, label, [])
        self.exporter = exporter

    def measure(self, runner):
        cpu = self.exporter.cpu_seconds()
        started = time.perf_counter()
        body = self.exporter.scrape()
        seconds = time.perf_counter() - started
        cpu = self.exporter.cpu_seconds() - cpu
        states = {}
        for line in body.decode("utf-8", "replace").splitlines():
            match = re.match(r'^node_tcp_connection_states\{state="([a-z_0-9]+)"\}\s+(\S+)$', line)
            if match and not match.group(1).endswith("_queued_bytes"):  # rx/tx_queued_bytes share the name
                states[match.group(1)] = int(float(match.group(2)))
        if not states:
            raise BenchError("the node_exporter scrape had no node_tcp_connection_states")
        return {"seconds": seconds, "cpu": cpu, "rss_kib": self.exporter.peak_rss_kib(),
                "detail": {"total": sum(states.values()), "states": states, "bytes": len(body)}}


def summarize(samples):
    seconds = [sample["seconds"] for sample in samples]
    return {"median_ms": statistics.median(seconds) * 1000, "min_ms": min(seconds) * 1000,
            "max_ms": max(seconds) * 1000, "cpu_ms": statistics.median(s["cpu"] for s in samples) * 1000,
            "rss_mib": None if samples[0]["rss_kib"] is None else max(s["rss_kib"] for s in samples) / 1024.0,
            "runs": len(samples),
            "detail": samples[-1].get("detail")}


def ss_counts(runner):
    """State and family counts from `ss -tanH`, read by the tests' oracle (tests/support/ss_oracle.py)."""
    tcp = rows(runner.run(["ss", "-tanH"], 120)["stdout"])
    families = {"ipv4": 0, "ipv6": 0}
    for row in tcp:
        families[row["family"]] += 1
    return {"total": len(tcp), "states": states_of(tcp), "families": families}


def check_engine_against_ss(runner, engine_tool, size_label):
    """The engine's counts must lie between `ss` just before and just after (TIME_WAIT decays)."""
    before = ss_counts(runner)
    engine = engine_tool.measure(runner)["detail"]
    after = ss_counts(runner)
    problems = []
    pairs = [("total", before["total"], engine["total"], after["total"])]
    pairs += [("states." + name, before["states"][name], engine["states"].get(name), after["states"][name])
              for name in ALL_STATES]
    pairs += [("families." + name, before["families"][name], engine["families"].get(name), after["families"][name])
              for name in ("ipv4", "ipv6")]
    for name, low, value, high in pairs:
        low, high = min(low, high), max(low, high)
        if value is None or not low <= value <= high:
            problems.append("%s: engine %s, ss before/after %d..%d" % (name, value, low, high))
    if problems:
        banner = "!" * 78
        log("\n%s\n!!! MISMATCH at %s: engine totals differ from ss -tan\n!!! %s\n%s"
            % (banner, size_label, "\n!!! ".join(problems), banner))
    else:
        log("check %s: engine = ss (total %d; %s)" % (size_label, engine["total"], ", ".join(
            "%s %d" % (name, count) for name, count in engine["states"].items() if count)))
    return {"size": size_label, "ok": not problems, "problems": problems, "ss_before": before,
            "engine": engine, "ss_after": after}


# ---------------------------------------------------------------- AnsiballZ payloads

NO_LISTENERS = "gather_subset=!listeners"  # the module's gather_subset: ['!listeners']


def build_payloads(workdir, modules):
    """The exact files Ansible runs on a target: AnsiballZ_<module>.py, kept with ANSIBLE_KEEP_REMOTE_FILES
    (the options are inside). Built once on the host with the benchmark venv's ansible. A module
    given as "name key=value" gets those options, and is keyed by that string."""
    config = os.path.join(workdir, "ansible.cfg")
    with open(config, "w") as handle:
        handle.write("[defaults]\ninterpreter_python = %s\n" % TARGET_PYTHON)
    payloads = {}
    for index, spec in enumerate(modules):
        module, _space, options = spec.partition(" ")
        remote = os.path.join(workdir, "remote-%d-%s" % (index, module.split(".")[-1]))
        env = dict(os.environ, ANSIBLE_KEEP_REMOTE_FILES="1", ANSIBLE_REMOTE_TMP=remote, ANSIBLE_PIPELINING="0",
                   ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_CONFIG=config, ANSIBLE_DEPRECATION_WARNINGS="0")
        result = run([os.path.join(BENCH_VENV, "bin", "ansible"), "all", "-i", "localhost,", "-c", "local",
                      "-m", module] + (["-a", options] if options else []), check=False, env=env)
        found = [os.path.join(path, name) for path, _dirs, names in os.walk(remote) for name in names
                 if name.startswith("AnsiballZ_")]
        if result.returncode != 0 or not found:
            raise BenchError("could not build the AnsiballZ payload of %s: %s"
                             % (spec, (result.stdout + result.stderr)[-800:]))
        payloads[spec] = found[0]
    return payloads


# ---------------------------------------------------------------- the phases

def round_robin(runner, tools, reps, before_each=None, label=""):
    """Every tool once per round, so slow drifts (TIME_WAIT expiring, neighbours' load) hit all alike."""
    samples = {tool.key: [] for tool in tools}
    for repetition in range(reps):
        for tool in tools:
            if tool.reps is not None and repetition >= tool.reps:
                continue
            if before_each:
                before_each(tool)
            samples[tool.key].append(tool.measure(runner))
        log("%s round %d/%d: %s" % (label, repetition + 1, reps, ", ".join(
            "%s %.0fms" % (tool.key, samples[tool.key][-1]["seconds"] * 1000) for tool in tools if samples[tool.key])))
    return {key: summarize(values) for key, values in samples.items() if values}


def listener_phase(args, runner, workers, payloads, namespaces):
    """~1,000 TCP listeners: listener_facts against community.general.listen_ports_facts."""
    ns = enter_namespace("listen", namespaces)
    build_listener_farm(workers, args.listeners, connections=2000)
    oracle = len(runner.run(["ss", "-tlnH"], 60)["stdout"].splitlines())
    ours = Tool("listener_facts", "netstate.tcp.listener_facts",
                [TARGET_PYTHON, payloads["netstate.tcp.listener_facts"]], check=module_facts_check("listen"))
    theirs = Tool("listen_ports_facts", "community.general.listen_ports_facts",
                  [TARGET_PYTHON, payloads["community.general.listen_ports_facts"]],
                  check=module_facts_check("listen"), timeout=600, reps=args.slow_reps)
    results = round_robin(runner, [ours, theirs], args.reps, label="listeners")
    results["ss_tcp_listeners"] = oracle
    for key in ("listener_facts", "listen_ports_facts"):
        found = results[key]["detail"]["tcp_listen"]
        if found != oracle:
            log("!!! %s reported %d TCP listeners, ss -tln shows %d" % (key, found, oracle))
    workers.stop()
    ns.delete()
    return results


class Orphan:
    """A listener no process holds, in a worker of its own: there while an orphan row is timed,
    gone (the message that held it dropped) for every other row and for the checks."""

    def __init__(self, workers):
        self.worker = workers.start("orphan")
        self.present = False

    def want(self, present):
        if present and not self.present:
            # clients wait in its accept queue, as they do at a listener whose server is gone: that puts it
            # first among the listeners connection_facts lists (listeners_limit), so the walk looks for it
            self.worker.call("orphan_listener", address="127.0.0.1", port=ORPHAN_PORT, backlog=511,
                             queued=ORPHAN_QUEUED)
        elif self.present and not present:
            self.worker.call("release_orphans")
        self.present = present


def many_listeners_phase(args, runner, workers, payloads, namespaces, slow_median_ms):
    """10,000 TCP listeners (by default) over processes of 2,500 each, no connections.

    listen_ports_facts forks `ps` twice per listener: it runs once, and only when the listener
    phase's figure scaled to this count fits in --slow-budget seconds (else the row says why not).
    """
    count = args.many_listeners
    ns = enter_namespace("manylisten", namespaces)
    started = time.monotonic()
    rng = random.Random(5)
    choices = [(4, "0.0.0.0"), (4, "127.0.0.1"), (6, "::")]
    for index in range(math.ceil(count / MANY_LISTENERS_PER_PROCESS)):
        first = index * MANY_LISTENERS_PER_PROCESS
        listeners = []
        for port in range(20000 + first, 20000 + min(count, first + MANY_LISTENERS_PER_PROCESS)):
            family, address = rng.choice(choices)
            listeners.append({"family": family, "address": address, "port": port, "backlog": 511})
        workers.start("many%d" % index).call("listen", listeners=listeners)
    oracle = len(runner.run(["ss", "-tlnH"], 60)["stdout"].splitlines())
    log("built %d TCP listeners in %.1fs (ss -tln: %d)" % (count, time.monotonic() - started, oracle))
    tools = [
        Tool("listener_facts", "netstate.tcp.listener_facts (AnsiballZ)",
             [TARGET_PYTHON, payloads["netstate.tcp.listener_facts"]], check=module_facts_check("listen")),
        Tool("connection_facts", "netstate.tcp.connection_facts (AnsiballZ), default options",
             [TARGET_PYTHON, payloads["netstate.tcp.connection_facts"]], check=module_facts_check("netstate")),
        Tool("ss_tln_wc", "ss -tln | wc -l", ["/bin/sh", "-c", "ss -tln | wc -l"]),
        Tool("ss_tlnp_wc", "ss -tlnp | wc -l (with processes)", ["/bin/sh", "-c", "ss -tlnp | wc -l"]),
    ]
    results = round_robin(runner, tools, args.reps, label="%d listeners" % count)
    results["ss_tcp_listeners"] = oracle
    results["skipped"] = {}
    if "community.general.listen_ports_facts" in payloads:
        estimate = None if slow_median_ms is None else slow_median_ms / 1000.0 * count / args.listeners
        if estimate is not None and estimate > args.slow_budget:
            reason = ("not run: %.0f s expected (the %d-listener phase's median scaled), over --slow-budget %d s"
                      % (estimate, args.listeners, args.slow_budget))
            log("listen_ports_facts at %d listeners %s" % (count, reason))
            results["skipped"]["listen_ports_facts"] = reason
        else:
            theirs = Tool("listen_ports_facts", "community.general.listen_ports_facts (1 run)",
                          [TARGET_PYTHON, payloads["community.general.listen_ports_facts"]],
                          check=module_facts_check("listen"), timeout=args.slow_budget)
            try:
                results.update(round_robin(runner, [theirs], 1, label="%d listeners" % count))
            except BenchError as exc:
                reason = ("not measured: killed at --slow-budget %d s" % args.slow_budget if " exited -9 " in str(exc)
                          else "not measured: %s" % exc)
                log("listen_ports_facts at %d listeners %s" % (count, reason))
                results["skipped"]["listen_ports_facts"] = reason[:200]
    for key in ("listener_facts", "listen_ports_facts"):
        if key in results and results[key]["detail"]["tcp_listen"] != oracle:
            log("!!! %s reported %d TCP listeners, ss -tln shows %d"
                % (key, results[key]["detail"]["tcp_listen"], oracle))
    workers.stop()
    ns.delete()
    return results


def build_million(workers, sockets, distinct_peers, listener_count):
    """~sockets/2 ESTABLISHED pairs (the first distinct_peers each from its own 127/8 source) to
    listener_count listening ports, over server and client workers of <= 19,000 files each."""
    pairs = max(1, (sockets - listener_count) // 2)
    pair_count = max(1, math.ceil(pairs / MILLION_PAIR_CAPACITY))
    started = time.monotonic()
    servers, clients = [], []
    for index in range(pair_count):
        ports = [10000 + number for number in range(index, listener_count, pair_count)]
        server = workers.start("mserver%d" % index)
        server.call("listen", listeners=[{"family": 4, "address": "0.0.0.0", "port": port, "backlog": 4096}
                                         for port in ports])
        servers.append((server, ports))
        clients.append(workers.start("mclient%d" % index))
    rng = random.Random(7)
    distinct_first = struct_ip(DISTINCT_FIRST)
    distinct_used = 0
    wanted = []
    for index, (_server, ports) in enumerate(servers):
        count = pairs // pair_count + (index < pairs % pair_count)
        picks = rng.choices(range(len(ports)), weights=zipf_weights(len(ports), 0.8), k=count)
        per_port = [0] * len(ports)
        for pick in picks:
            per_port[pick] += 1
        groups = []
        for port, number in zip(ports, per_port):
            distinct = max(0, min(number, distinct_peers - distinct_used))
            if distinct:
                groups.append({"family": 4, "address": "127.0.0.1", "port": port, "count": distinct,
                               "source_first": ip_text(distinct_first + distinct_used)})
                distinct_used += distinct
            if number - distinct:
                groups.append({"family": 4, "address": "127.0.0.1", "port": port, "count": number - distinct,
                               "source": "127.1.0.1"})
        clients[index].send("connect", groups=groups)
        wanted.append(count)
    for client in clients:
        client.receive(timeout=1200)
    deadline = time.monotonic() + 300
    for (server, _ports), count in zip(servers, wanted):
        while server.call("status")["accepted"] < count:
            if time.monotonic() > deadline:
                raise BenchError("a million-phase server did not accept its %d connections" % count)
            time.sleep(0.5)
    seconds = time.monotonic() - started
    log("built %d ESTABLISHED pairs (%d distinct peers) and %d listeners in %.1fs (%d workers)"
        % (pairs, distinct_used, listener_count, seconds, 2 * pair_count))
    return {"pairs": pairs, "distinct_peers": distinct_used, "listeners": listener_count, "build_s": seconds,
            "workers": 2 * pair_count}


def struct_ip(text):
    return int.from_bytes(socket.inet_aton(text), "big")


def ip_text(number):
    return socket.inet_ntoa(number.to_bytes(4, "big"))


def profile_gather(args, runner):
    """With --profile: a cProfile of one warm engine.gather() in the namespace the benchmark is in, printed and
    returned as text; else None."""
    if not args.profile:
        return None
    profile = runner.run([BENCH_PYTHON, INPROC, "profile", COLLECTIONS], 600)["stdout"]
    print(profile)
    return profile


def million_phase(args, runner, workers, payloads, namespaces):
    """A million sockets (by default): 500k ESTABLISHED pairs, 500k distinct peers, ~1,120 listening ports."""
    with open("/proc/sys/fs/file-max") as handle:
        file_max = int(handle.read())
    if file_max < args.million_sockets + 200000:  # fs.file-max is global, not per namespace
        log("raising fs.file-max from %d to %d" % (file_max, args.million_sockets + 200000))
        run(["sysctl", "-qw", "fs.file-max=%d" % (args.million_sockets + 200000)])
    ns = enter_namespace("million", namespaces)
    build = build_million(workers, args.million_sockets, args.distinct_peers, args.million_listeners)
    tools = [
        Tool("module", "connection_facts, whole process (AnsiballZ)",
             [TARGET_PYTHON, payloads["netstate.tcp.connection_facts"]], check=module_facts_check("netstate"),
             timeout=600),
        Tool("engine", "engine.gather() in-process", [BENCH_PYTHON, INPROC, "engine", COLLECTIONS], kind="inproc",
             timeout=600),
        Tool("floor", "floor: _netlink.dump, parses nothing", [BENCH_PYTHON, INPROC, "floor", COLLECTIONS],
             kind="inproc", timeout=600),
        Tool("floor_raw", "floor: bench's own recv loop, 1 MiB buffer",
             [BENCH_PYTHON, INPROC, "floor_raw", COLLECTIONS], kind="inproc", timeout=600),
        Tool("ss_awk", "ss -tan | awk (state counts)", ["/bin/sh", "-c", SS_AWK], timeout=600),
    ]
    check = check_engine_against_ss(runner, tools[1], "million before")
    results = round_robin(runner, tools, args.million_reps, label="million")
    results["ss_total"] = check["ss_before"]["total"]
    results["profile"] = profile_gather(args, runner)
    results["build"] = build
    results["check"] = check
    workers.stop()
    ns.delete()
    return results


# The socket mixes of the sockets phase (--mixes), each in a namespace of its own: (namespace label, class,
# what it is). The default one is report["sockets"], any other report["sockets_<name>"].
SOCKET_MIXES = {
    "default": ("sockets", SocketMix,
                "%d%% TIME_WAIT (50 sources), 1%% half-closed pairs, the rest ESTABLISHED pairs from %d client "
                "addresses (Zipf-weighted), %d%% of them IPv6, 80%% of the IPv4 ones to two hot ports per server "
                "worker, the rest to %d others; a listener nobody accepts from"
                % (TIME_WAIT_SHARE * 100, PEER_SOURCES, IPV6_SHARE * 100, COLD_LISTENERS)),
    "many_peers": ("peers", ManyPeersMix,
                   "a third TIME_WAIT from %d client addresses, 1%% half-closed pairs, the rest ESTABLISHED pairs "
                   "from %d client addresses (half round-robin over all, half Zipf-weighted) to %d ports per "
                   "server worker, %d%% of them IPv6; a listener nobody accepts from"
                   % (MANY_TIME_WAIT_SOURCES, MANY_PEER_SOURCES, MANY_HOT_PORTS, IPV6_SHARE * 100)),
}


def mix_key(name):
    return "sockets" if name == "default" else "sockets_" + name


def socket_reports(report):
    """(mix name, results) of the socket mixes a report holds, default first (older reports: only that one)."""
    return [(name, report[mix_key(name)]) for name in SOCKET_MIXES if report.get(mix_key(name))]


def distinct_peers(runner):
    """From `ss -tan`: distinct client addresses of the connections the servers accepted (ESTABLISHED or
    CLOSE_WAIT on a listening port, from a port that is not one) and distinct local addresses of TIME_WAIT
    but 127.0.0.1 (the benchmark's own scrapes of node_exporter leave some there)."""
    tcp = rows(runner.run(["ss", "-tanH"], 120)["stdout"])
    listening = {row["lport"] for row in tcp if row["state"] == "LISTEN"}
    peers = {row["peer"] for row in tcp if row["state"] in ("ESTABLISHED", "CLOSE_WAIT")
             and row["lport"] in listening and row["pport"] not in listening}
    time_wait = {row["local"] for row in tcp if row["state"] == "TIME_WAIT" and row["local"] != "127.0.0.1"}
    return {"peers": len(peers), "time_wait_sources": len(time_wait)}


def socket_phase(args, runner, workers, payloads, namespaces, site_packages, collector, mix_name="default"):
    label_ns, mix_class, description = SOCKET_MIXES[mix_name]
    ns = enter_namespace(label_ns, namespaces)
    log("socket mix %s: %s" % (mix_name, description))
    exporter = None
    if os.access(NODE_EXPORTER, os.X_OK):
        exporter = NodeExporter(runner.workdir)
        workers.all.append(exporter)  # stopped with the workers
    else:
        log("no %s (Debian package prometheus-node-exporter): no node_exporter row" % NODE_EXPORTER)
    textfile = os.path.join(runner.workdir, "netstate_tcp.prom")
    pylib = os.path.join(runner.workdir, "pylib")
    os.makedirs(pylib, exist_ok=True)
    if not os.path.exists(os.path.join(pylib, "ansible")):
        os.symlink(os.path.join(site_packages, "ansible"), os.path.join(pylib, "ansible"))
    args_file = os.path.join(runner.workdir, "args.json")
    with open(args_file, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": {}}, handle)
    direct_env = dict(os.environ, PYTHONPATH=COLLECTIONS + os.pathsep + pylib)
    module_file = os.path.join(ROOT, "plugins", "modules", "connection_facts.py")
    tools = [
        Tool("module", "connection_facts, whole process (AnsiballZ)",
             [TARGET_PYTHON, payloads["netstate.tcp.connection_facts"]], check=module_facts_check("netstate")),
        Tool("module_direct", "connection_facts, module file without AnsiballZ",
             [TARGET_PYTHON, module_file, args_file], env=direct_env, check=module_facts_check("netstate")),
        Tool("collector_json", "collector `collect.py --format json`, whole process (Zabbix poll)",
             collector_command(collector, "--format json --top 10"), check=collector_check()),
        Tool("collector_prom", "collector `collect.py --format prometheus --output`, whole process (textfile timer)",
             collector_command(collector, "--format prometheus --top 10 --output " + textfile),
             check=collector_check(textfile)),
        Tool("engine", "engine.gather() in-process", [BENCH_PYTHON, INPROC, "engine", COLLECTIONS], kind="inproc"),
        Tool("engine_no_listeners", "engine.gather(), default subset minus listeners",
             [BENCH_PYTHON, INPROC, "engine", COLLECTIONS, "states,ports,peers,counters,timers"], kind="inproc"),
        Tool("engine_states", "engine.gather(gather_subset=states)",
             [BENCH_PYTHON, INPROC, "engine", COLLECTIONS, "states"], kind="inproc"),
        Tool("hotloop", "engine hot loop alone: TcpAggregate.consume_netlink over a captured dump",
             [BENCH_PYTHON, INPROC, "hotloop", COLLECTIONS], kind="inproc"),
        Tool("floor", "floor: _netlink.dump, parses nothing", [BENCH_PYTHON, INPROC, "floor", COLLECTIONS],
             kind="inproc"),
        Tool("floor_raw", "floor: bench's own recv loop, 1 MiB buffer",
             [BENCH_PYTHON, INPROC, "floor_raw", COLLECTIONS], kind="inproc"),
        Tool("ss_awk", "ss -tan | awk (state counts)", ["/bin/sh", "-c", SS_AWK]),
        Tool("netstat_awk", "netstat -ant | awk (state counts)", ["/bin/sh", "-c", NETSTAT_AWK], timeout=600),
        Tool("psutil", "psutil.net_connections(kind='tcp')", [BENCH_PYTHON, INPROC, "psutil", COLLECTIONS],
             kind="inproc", timeout=600),
        Tool("orphan_module", "orphan listener: connection_facts process (AnsiballZ), default options",
             [TARGET_PYTHON, payloads["netstate.tcp.connection_facts"]], check=module_facts_check("netstate"),
             needs="orphan"),
        Tool("orphan_module_no_listeners", "orphan listener: connection_facts process, gather_subset ['!listeners']",
             [TARGET_PYTHON, payloads["netstate.tcp.connection_facts " + NO_LISTENERS]],
             check=module_facts_check("netstate"), needs="orphan"),
        Tool("orphan_engine", "orphan listener: engine.gather() in-process, default subset",
             [BENCH_PYTHON, INPROC, "engine", COLLECTIONS], kind="inproc", needs="orphan"),
        Tool("orphan_engine_no_listeners", "orphan listener: engine.gather(gather_subset=['!listeners'])",
             [BENCH_PYTHON, INPROC, "engine", COLLECTIONS, "!listeners"], kind="inproc", needs="orphan"),
    ]
    if exporter is not None:
        tools.insert(4, ScrapeTool("node_exporter", "node_exporter (tcpstat only): one whole scrape, GET /metrics",
                                   exporter))
    if args.baseline:
        tools += [
            Tool("engine_baseline", "engine.gather() in-process, --baseline tree",
                 [BENCH_PYTHON, INPROC, "engine", args.baseline], kind="inproc"),
            Tool("hotloop_baseline", "engine hot loop alone, --baseline tree",
                 [BENCH_PYTHON, INPROC, "hotloop", args.baseline], kind="inproc"),
        ]
    engine_tool = next(tool for tool in tools if tool.key == "engine")
    if args.tools:
        unknown = set(args.tools) - {tool.key for tool in tools}
        if unknown:
            raise BenchError("--tools: unknown %s (choose from %s)"
                             % (", ".join(sorted(unknown)), ", ".join(tool.key for tool in tools)))
        tools = [tool for tool in tools if tool.key in args.tools]
    mix = mix_class(workers, max(args.sizes))
    mix.start()
    orphan = Orphan(workers)
    per_size, checks, builds = {}, [], {}
    for size in args.sizes:
        started = time.monotonic()
        mix.grow(size)
        builds[size] = {"build_s": round(time.monotonic() - started, 1)}
        builds[size].update(distinct_peers(runner))
        label = "%s %dk" % (mix_name, round(size / 1000))
        log("%s: %d distinct client addresses of accepted connections, %d of TIME_WAIT"
            % (label, builds[size]["peers"], builds[size]["time_wait_sources"]))
        checks.append(check_engine_against_ss(runner, engine_tool, label + " before"))

        def before(tool, size=size):
            orphan.want(tool.needs == "orphan")
            mix.top_up_time_wait(size)
        per_size[size] = round_robin(runner, tools, args.reps, label=label, before_each=before)
        orphan.want(False)
        per_size[size]["ss_total"] = checks[-1]["ss_before"]["total"]
        checks.append(check_engine_against_ss(runner, engine_tool, label + " after"))
    profile = profile_gather(args, runner)
    workers.stop()
    ns.delete()
    return {"mix": mix_name, "description": description, "builds": builds, "workers": len(mix.servers) * 2 + 1,
            "sizes": per_size, "checks": checks, "labels": {tool.key: tool.label for tool in tools},
            "listeners": mix.listener_count, "profile": profile}


# ---------------------------------------------------------------- targets, table, doc

def ratio(results, size, numerator, denominator):
    try:
        return results[size][numerator]["median_ms"] / results[size][denominator]["median_ms"]
    except (KeyError, ZeroDivisionError):
        return None


def best_floor(row):
    """The faster of the two floors in one size's results (--tools may leave them out)."""
    floors = [key for key in ("floor", "floor_raw") if key in row]
    return min(floors, key=lambda key: row[key]["median_ms"]) if floors else None


def size_label(size):
    return "%dk" % round(size / 1000) if size < 999500 else "%gM" % round(size / 1e6, 1)


MIX_TITLES = {"default": "default mix", "many_peers": "many peers"}


def evaluate_targets(report):
    """The targets of issue 23 on every socket mix at its largest size, and the million phase's."""
    listeners, million = report.get("listeners"), report.get("million")
    out = []

    def add(name, value, limit, kind, unit="x"):
        passed = value is not None and (value <= limit if kind == "max" else value >= limit)
        out.append({"target": name, "value": value, "limit": limit, "kind": kind, "unit": unit, "pass": passed})

    ours = []
    for mix_name, sockets in socket_reports(report):
        sizes = sockets["sizes"]
        largest = max(sizes)
        at = " @%s, %s" % (size_label(largest), MIX_TITLES.get(mix_name, mix_name))
        add("connection_facts process <= 0.8x ss -tan | awk" + at, ratio(sizes, largest, "module", "ss_awk"), 0.8,
            "max")
        add("connection_facts process <= 0.6x netstat -ant | awk" + at,
            ratio(sizes, largest, "module", "netstat_awk"), 0.6, "max")
        floor = best_floor(sizes[largest])
        if floor:
            add("engine <= 1.3x the floor (%s)%s" % (floor, at), ratio(sizes, largest, "engine", floor), 1.3, "max")
        add("engine >= 5x faster than psutil" + at, ratio(sizes, largest, "psutil", "engine"), 5.0, "min")
        for key, name in (("collector_json", "collector --format json"),
                          ("collector_prom", "collector --format prometheus")):
            if key in sizes[largest]:
                add("%s process <= 0.6x ss -tan | awk%s" % (name, at), ratio(sizes, largest, key, "ss_awk"), 0.6,
                    "max")
                if "node_exporter" in sizes[largest]:
                    add("%s process faster than a node_exporter tcpstat scrape%s" % (name, at),
                        ratio(sizes, largest, key, "node_exporter"), 1.0, "max")
        for key, name in (("orphan_module", "connection_facts process"), ("orphan_engine", "engine")):
            if key in sizes[largest]:
                add("orphan listener: %s default <= 1.3x ['!listeners']%s" % (name, at),
                    ratio(sizes, largest, key, key + "_no_listeners"), 1.3, "max")
        ours += [("connection_facts" + at, sizes[largest][key]["rss_mib"])
                 for key in ("module",) if key in sizes[largest]]
        ours += [("engine" + at, sizes[largest][key]["rss_mib"]) for key in ("engine",) if key in sizes[largest]]
    if listeners:
        value = listeners["listen_ports_facts"]["median_ms"] / listeners["listener_facts"]["median_ms"]
        add("listener_facts >= 20x faster than listen_ports_facts", value, 20.0, "min")
        ours.append(("listener_facts", listeners["listener_facts"]["rss_mib"]))
    if million:
        at = " @%s (%d distinct peers)" % (size_label(million["ss_total"]), million["build"]["distinct_peers"])
        mil = {"m": million}
        floor = best_floor(million)
        if floor:
            add("engine <= 1.3x the floor (%s)%s" % (floor, at), ratio(mil, "m", "engine", floor), 1.3, "max")
        add("connection_facts process <= 0.6x ss -tan | awk" + at, ratio(mil, "m", "module", "ss_awk"), 0.6, "max")
        if "module" in million:
            add("connection_facts peak RSS <= 64 MiB" + at, million["module"]["rss_mib"], 64.0, "max", unit=" MiB")
            add("connection_facts output JSON <= 256 KiB" + at, million["module"]["detail"]["json_bytes"] / 1024.0,
                256.0, "max", unit=" KiB")
    if ours:
        if any(rss is None for _name, rss in ours):
            name, worst = "not measured without /usr/bin/time", None
        else:
            name, worst = max(ours, key=lambda item: item[1])
        add("peak RSS <= 64 MiB (largest: %s)" % name, worst, 64.0, "max", unit=" MiB")
    return out


def machine():
    def first(command):
        result = run(command, check=False)
        return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else "?"
    model = "?"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        memory = int(handle.readline().split()[1]) / 1024 / 1024
    versions = run([BENCH_PYTHON, "-c", "import psutil, ansible.release as r, importlib.metadata as m; "
                    "print(psutil.__version__, r.__version__, m.version('ansible'))"], check=False).stdout.split()
    commit = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--", "plugins"], check=False).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": "%d cores, %s" % (os.cpu_count(), model), "memory": "%.0f GiB" % memory,
        "kernel": platform.release(), "os": first(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "python": first([TARGET_PYTHON, "--version"]) + " (" + TARGET_PYTHON + ")",
        "ss": first(["ss", "-V"]), "netstat": first(["netstat", "-V"]),
        "psutil": versions[0] if versions else "?",
        "ansible": "ansible-core %s, ansible %s" % tuple(versions[1:3]) if len(versions) == 3 else "?",
        "commit": commit + (" (plugins/ modified)" if dirty else ""),
        "node_exporter": (first([NODE_EXPORTER, "--version"]).replace("node_exporter, version", "node_exporter")
                          if os.access(NODE_EXPORTER, os.X_OK) else None),
        "load": load_average(),
    }


def load_average():
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


ROW_ORDER = ["module", "module_direct", "collector_json", "collector_prom", "node_exporter", "engine",
             "engine_baseline", "engine_no_listeners", "engine_states", "hotloop", "hotloop_baseline", "floor",
             "floor_raw", "ss_awk", "netstat_awk", "psutil", "orphan_module", "orphan_module_no_listeners",
             "orphan_engine", "orphan_engine_no_listeners"]
RATIOS = (
    ("connection_facts process / `ss -tan \\| awk`", "module", "ss_awk"),
    ("connection_facts process / `netstat -ant \\| awk`", "module", "netstat_awk"),
    ("collector json process / `ss -tan \\| awk`", "collector_json", "ss_awk"),
    ("collector prometheus process / `ss -tan \\| awk`", "collector_prom", "ss_awk"),
    ("collector json process / node_exporter scrape", "collector_json", "node_exporter"),
    ("collector prometheus process / node_exporter scrape", "collector_prom", "node_exporter"),
    ("engine / floor (`_netlink.dump`)", "engine", "floor"),
    ("engine / floor (bench recv loop)", "engine", "floor_raw"),
    ("engine, default subset minus listeners / floor (`_netlink.dump`)", "engine_no_listeners", "floor"),
    ("psutil / engine", "psutil", "engine"),
    ("engine / engine of the --baseline tree", "engine", "engine_baseline"),
    ("hot loop / hot loop of the --baseline tree", "hotloop", "hotloop_baseline"),
    ("AnsiballZ process / engine in-process", "module", "engine"),
    ("orphan listener: connection_facts process, default / ['!listeners']", "orphan_module",
     "orphan_module_no_listeners"),
    ("orphan listener: engine, default / ['!listeners']", "orphan_engine", "orphan_engine_no_listeners"),
)


def mib(value):
    return "n/a" if value is None else "%.1f" % value


def cell(text):
    """Markdown table cell: a literal | (as in `ss -tan | awk`) would end the cell."""
    return text.replace("|", "\\|")


def cpu_ratio(results, size, numerator, denominator):
    try:
        return results[size][numerator]["cpu_ms"] / results[size][denominator]["cpu_ms"]
    except (KeyError, ZeroDivisionError):
        return None


def kib(value):
    return "n/a" if value is None else "%.1f" % (value / 1024.0)


def walk_text(walk):
    if not walk:
        return "n/a"
    return "descriptors_read %s, unattributed %s, reason %s, walk_ms %s" % (
        walk.get("descriptors_read"), walk.get("unattributed"), walk.get("reason"), walk.get("walk_ms"))


def render_sockets(report, sockets, mix_name="default"):
    """One socket mix: wall and CPU ms of every row at every size, then the ratios of both."""
    sizes = sorted(sockets["sizes"])
    largest = sizes[-1]
    heads = ["~%s sockets" % size_label(size) for size in sizes]
    description = sockets.get("description", SOCKET_MIXES["default"][2])
    lines = ["Socket mix `%s`: %s." % (mix_name, description), ""]
    lines += ["| Measured (median of %d, ms) | %s | peak RSS MiB @%s |"
              % (report["reps"], " | ".join("%s | CPU ms @%s" % (head, head[1:]) for head in heads), heads[-1][1:]),
              "|---|" + "---:|" * (2 * len(sizes) + 1)]
    for key in ROW_ORDER:
        if key not in sockets["sizes"][largest]:
            continue
        cells = []
        for size in sizes:
            row = sockets["sizes"][size].get(key)
            cells += ["n/a", "n/a"] if row is None else ["%.1f" % row["median_ms"], "%.1f" % row["cpu_ms"]]
        rss = mib(sockets["sizes"][largest][key]["rss_mib"])
        lines.append("| %s | %s | %s |" % (cell(sockets["labels"][key]), " | ".join(cells), rss))

    def extra(label, values):
        lines.append("| %s | %s | |" % (label, " | ".join("%s | " % value for value in values)))

    extra("sockets seen by `ss -tan`", [sockets["sizes"][size]["ss_total"] for size in sizes])
    builds = sockets.get("builds")
    if builds:
        extra("distinct client addresses seen by `ss -tan`: accepted connections / TIME_WAIT",
              ["%d / %d" % (builds[size]["peers"], builds[size]["time_wait_sources"]) for size in sizes])
        extra("seconds to build (from the size before)", ["%.1f" % builds[size]["build_s"] for size in sizes])
    lines += ["", "| Ratio (medians, wall and CPU time) | %s |"
              % " | ".join("%s | CPU @%s" % (head, head[1:]) for head in heads),
              "|---|" + "---:|" * (2 * len(sizes))]
    for name, numerator, denominator in RATIOS:
        values = []
        for size in sizes:
            values += [ratio(sockets["sizes"], size, numerator, denominator),
                       cpu_ratio(sockets["sizes"], size, numerator, denominator)]
        if all(value is None for value in values):
            continue
        lines.append("| %s | %s |" % (name, " | ".join("%.2f" % value if value else "n/a" for value in values)))
    big = sockets["sizes"][largest]
    notes = []
    for key, name in (("orphan_module", "connection_facts"), ("orphan_engine", "engine.gather()")):
        if key in big and big[key].get("detail"):
            notes.append("%s's listener_walk with the orphan listener @%s: %s"
                         % (name, size_label(largest), walk_text(big[key]["detail"].get("listener_walk"))))
    if "node_exporter" in big:
        notes.append("node_exporter's scrape @%s counted %s sockets (its own connection included), %s KiB of "
                     "text; the collector's json was %s KiB, its textfile %s KiB"
                     % (size_label(largest), big["node_exporter"]["detail"]["total"],
                        kib(big["node_exporter"]["detail"]["bytes"]),
                        kib((big.get("collector_json") or {}).get("detail", {}).get("json_bytes")),
                        kib((big.get("collector_prom") or {}).get("detail", {}).get("prom_bytes"))))
    if notes:
        lines += [""] + ["%s." % note for note in notes]
    return lines


def render_many(many):
    lines = ["| %d TCP listeners, no connections | median ms | min ms | max ms | runs | CPU ms | peak RSS MiB "
             "| JSON KiB | TCP listeners reported |" % many["ss_tcp_listeners"],
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, label in (("listener_facts", "netstate.tcp.listener_facts"),
                       ("connection_facts", "netstate.tcp.connection_facts, default options"),
                       ("ss_tln_wc", "`ss -tln \\| wc -l`"), ("ss_tlnp_wc", "`ss -tlnp \\| wc -l` (with processes)"),
                       ("listen_ports_facts", "community.general.listen_ports_facts")):
        if key not in many:
            reason = many.get("skipped", {}).get(key)
            if reason:
                lines.append("| %s | %s | | | | | | | |" % (label, cell(reason)))
            continue
        row = many[key]
        detail = row.get("detail") or {}
        reported = detail.get("tcp_listen", detail.get("listeners", ""))
        lines.append("| %s | %.1f | %.1f | %.1f | %d | %.1f | %s | %s | %s |" % (
            label, row["median_ms"], row["min_ms"], row["max_ms"], row["runs"], row["cpu_ms"], mib(row["rss_mib"]),
            kib(detail.get("json_bytes")), reported))
    return lines


def render_million(million):
    build = million["build"]
    lines = ["| ~%s sockets: %d ESTABLISHED pairs, %d distinct peers, %d listening ports (median of %d) "
             "| median ms | min ms | max ms | CPU ms | peak RSS MiB | JSON KiB |"
             % (size_label(million["ss_total"]), build["pairs"], build["distinct_peers"], build["listeners"],
                million["module"]["runs"] if "module" in million else 0),
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in (("module", "connection_facts, whole process (AnsiballZ)"),
                       ("engine", "engine.gather() in-process"), ("floor", "floor: _netlink.dump, nothing parsed"),
                       ("floor_raw", "floor: bench's own recv loop"), ("ss_awk", "`ss -tan \\| awk`")):
        if key not in million:
            continue
        row = million[key]
        lines.append("| %s | %.1f | %.1f | %.1f | %.1f | %s | %s |" % (
            label, row["median_ms"], row["min_ms"], row["max_ms"], row["cpu_ms"], mib(row["rss_mib"]),
            kib((row.get("detail") or {}).get("json_bytes"))))
    mil = {"m": million}
    floor = best_floor(million)
    parts = []
    for name, numerator, denominator in (("engine / floor", "engine", floor),
                                         ("connection_facts / `ss -tan | awk`", "module", "ss_awk"),
                                         ("engine / `ss -tan | awk`", "engine", "ss_awk")):
        value = ratio(mil, "m", numerator, denominator) if denominator else None
        if value is not None:
            parts.append("%s %.2f" % (name, value))
    lines += ["", "Built in %.0f s over %d worker processes; `ss -tan` saw %d sockets; ratios: %s%s." % (
        build["build_s"], build["workers"], million["ss_total"], ", ".join(parts),
        "" if million["check"]["ok"] else " (**MISMATCH** of the engine's counts with `ss -tan`: "
        + "; ".join(million["check"]["problems"]) + ")")]
    return lines


def collector_cpu_line(report):
    """The collector's CPU time per poll (whole process) at each mix's largest size."""
    parts = []
    for mix_name, sockets in socket_reports(report):
        largest = max(sockets["sizes"])
        row = sockets["sizes"][largest]
        found = ["%s %.1f ms" % (name, row[key]["cpu_ms"])
                 for key, name in (("collector_json", "json"), ("collector_prom", "prometheus")) if key in row]
        if found:
            parts.append("%s @%s (`ss -tan | awk` %s): %s" % (
                MIX_TITLES.get(mix_name, mix_name), size_label(largest),
                "%.1f ms" % row["ss_awk"]["cpu_ms"] if "ss_awk" in row else "not timed", ", ".join(found)))
    if not parts:
        return []
    return ["", "The collector's CPU time per poll, whole process (median, user + system of the process tree): "
            + "; ".join(parts) + "."]


def render(report):
    listeners, info = report.get("listeners"), report["machine"]
    lines = []
    for mix_name, sockets in socket_reports(report):
        lines += [""] + render_sockets(report, sockets, mix_name)
    if listeners:
        lines += ["", "| ~%d TCP listeners (+48 UDP) | median ms | min ms | max ms | runs | peak RSS MiB "
                  "| TCP listeners reported |" % listeners["ss_tcp_listeners"], "|---|---:|---:|---:|---:|---:|---:|"]
        for key, label in (("listener_facts", "netstate.tcp.listener_facts"),
                           ("listen_ports_facts", "community.general.listen_ports_facts")):
            row = listeners[key]
            lines.append("| %s | %.1f | %.1f | %.1f | %d | %s | %d |" % (
                label, row["median_ms"], row["min_ms"], row["max_ms"], row["runs"], mib(row["rss_mib"]),
                row["detail"]["tcp_listen"]))
    if report.get("many_listeners"):
        lines += [""] + render_many(report["many_listeners"])
    if report.get("million"):
        lines += [""] + render_million(report["million"])
    lines += ["", "| Target | Measured | Result |", "|---|---:|---|"]
    for target in report["targets"]:
        value = "n/a" if target["value"] is None else "%.2f%s" % (target["value"], target["unit"])
        lines.append("| %s | %s | %s |" % (cell(target["target"]), value, "PASS" if target["pass"] else "**FAIL**"))
    lines += collector_cpu_line(report)
    for mix_name, sockets in socket_reports(report):
        checks = sockets["checks"]
        bad = [check for check in checks if not check["ok"]]
        lines += ["", "Correctness on the side (socket mix `%s`): the engine's total, per-state and per-family "
                  "counts lay between `ss -tan` run just before and just after, at every size, %d of %d checks%s."
                  % (mix_name, len(checks) - len(bad), len(checks), "" if not bad else " (**MISMATCH**: "
                     + "; ".join(problem for check in bad for problem in check["problems"]) + ")")]
    lines += ["", "Machine: %s, %s RAM; %s; kernel %s; %s; %s; %s; psutil %s; %s%s. Commit %s, %s. "
              "Load average %s at the start, %s at the end%s."
              % (info["cpu"], info["memory"], info["os"], info["kernel"], info["python"], info["ss"],
                 info["netstat"], info["psutil"], info["ansible"],
                 "; " + info["node_exporter"] if info.get("node_exporter") else "", info["commit"], info["date"],
                 info["load"], info["load_end"], "; run with --nice %d" % report["nice"] if report["nice"] else "")]
    return "\n".join(lines).lstrip("\n")


BEGIN, END = "<!-- bench:begin (written by benchmarks/bench_engine.py --write-doc) -->", "<!-- bench:end -->"


def write_doc(table):
    with open(DOC) as handle:
        text = handle.read()
    if BEGIN not in text or END not in text:
        raise BenchError("%s has no %s ... %s markers" % (DOC, BEGIN, END))
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    with open(DOC, "w") as handle:
        handle.write(head + BEGIN + "\n" + table + "\n" + END + tail)
    log("wrote %s" % DOC)


# ---------------------------------------------------------------- main

# In the order they run: the heaviest last.
PHASES = ("listeners", "many_listeners", "sockets", "million")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="10000,100000,180000",
                        type=lambda text: sorted(int(part) for part in text.split(",")),
                        help="total TCP sockets to build, comma separated (default: %(default)s)")
    parser.add_argument("--mixes", default=",".join(SOCKET_MIXES),
                        type=lambda text: [part for part in text.split(",") if part],
                        help="the socket mixes of the sockets phase, each in a namespace of its own, comma "
                             "separated: default (1,000 client addresses) and many_peers (9,000 client addresses, "
                             "9,000 more in TIME_WAIT) (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per measurement (default: %(default)s)")
    parser.add_argument("--slow-reps", type=int, default=3,
                        help="repetitions of listen_ports_facts, which takes seconds per run (default: %(default)s)")
    parser.add_argument("--listeners", type=int, default=1000, help="TCP listeners in the listener phase")
    parser.add_argument("--skip-listeners", action="store_true", help="leave out the listener phase")
    parser.add_argument("--phases", default=",".join(PHASES),
                        type=lambda text: [part for part in text.split(",") if part],
                        help="the phases to run, comma separated, in this order whatever the order given "
                             "(default: %(default)s)")
    parser.add_argument("--many-listeners", type=int, default=10000,
                        help="TCP listeners of the many_listeners phase (default: %(default)s)")
    parser.add_argument("--slow-budget", type=int, default=300,
                        help="seconds the one listen_ports_facts run of the many_listeners phase may take; it is "
                             "left out when the listeners phase's figure scaled up says it would take longer "
                             "(default: %(default)s)")
    parser.add_argument("--million-sockets", type=int, default=1000000,
                        help="TCP sockets of the million phase: ESTABLISHED pairs plus the listeners "
                             "(default: %(default)s)")
    parser.add_argument("--distinct-peers", type=int, default=500000,
                        help="of the million phase's connections, how many bind a source address of their own "
                             "in 127.0.0.0/8, so the server sees that many distinct peers (default: %(default)s)")
    parser.add_argument("--million-listeners", type=int, default=1120,
                        help="listening ports of the million phase (default: %(default)s)")
    parser.add_argument("--million-reps", type=int, default=3,
                        help="repetitions per measurement in the million phase (default: %(default)s)")
    parser.add_argument("--time-limit", type=int, default=3600, help="stop and clean up after this many seconds")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness for the benchmark and everything it measures, e.g. -10 on a busy machine "
                             "(all tools get the same; default: %(default)s)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of engine.gather() at the largest size of each socket mix "
                             "and at ~1M")
    parser.add_argument("--from-json", metavar="RESULTS",
                        help="measure nothing: print (and with --write-doc, write) the table of a saved "
                             "benchmarks/results/bench-*.json")
    parser.add_argument("--write-doc", action="store_true", help="write the table into docs/performance.md")
    parser.add_argument("--baseline", metavar="COLLECTIONS",
                        help="also time engine.gather() and the hot loop of another tree, in the same rounds "
                             "(a directory holding ansible_collections/netstate/tcp, e.g. an older checkout's "
                             ".build/collections)")
    parser.add_argument("--tools", type=lambda text: [part for part in text.split(",") if part],
                        help="time only these rows of the socket phase (keys: module, module_direct, collector_json, "
                             "collector_prom, node_exporter, orphan_module, orphan_module_no_listeners, "
                             "orphan_engine, orphan_engine_no_listeners, engine, "
                             "engine_no_listeners, engine_states, hotloop, floor, floor_raw, ss_awk, netstat_awk, "
                             "psutil, engine_baseline, hotloop_baseline); default all")
    args = parser.parse_args(argv)
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error("--phases: unknown %s (choose from %s)" % (", ".join(sorted(unknown)), ", ".join(PHASES)))
    if args.skip_listeners:
        args.phases = [phase for phase in args.phases if phase != "listeners"]
    args.phases = [phase for phase in PHASES if phase in args.phases]
    unknown = set(args.mixes) - set(SOCKET_MIXES)
    if unknown or not args.mixes:
        parser.error("--mixes: unknown %s (choose from %s)" % (", ".join(sorted(unknown)) or "(none given)",
                                                               ", ".join(SOCKET_MIXES)))
    args.mixes = [name for name in SOCKET_MIXES if name in args.mixes]
    for name in ("many_listeners", "million_sockets", "distinct_peers", "million_listeners", "million_reps",
                 "reps", "slow_budget"):
        if getattr(args, name) < 1:
            parser.error("--%s: %d is not a positive number" % (name.replace("_", "-"), getattr(args, name)))
    if args.million_listeners >= args.million_sockets:
        parser.error("--million-listeners: %d leaves no room for connections in --million-sockets %d"
                     % (args.million_listeners, args.million_sockets))
    return args


def integer_sizes(mapping):
    """JSON turned the socket sizes (dict keys) into strings."""
    return {int(key) if key.isdigit() else key: value for key, value in mapping.items()}


def raise_exit(signum, _frame):
    raise SystemExit("stopped by signal %d" % signum)


def raise_timeout(_signum, _frame):
    raise BenchError("time limit reached")


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:
        with open(args.from_json) as handle:
            table = render(json.load(handle, object_hook=integer_sizes))
        print(table)
        if args.write_doc:
            write_doc(table)
        return 0
    if os.geteuid() != 0:
        sys.exit("bench_engine.py needs root (network namespaces, sysctls)")
    for tool in ("ip", "ss", "netstat", "awk"):
        if not shutil.which(tool):
            sys.exit("bench_engine.py needs %s (Debian: iproute2, net-tools, gawk/mawk)" % tool)
    # Also when started in the background, where the shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_exit)
    signal.signal(signal.SIGHUP, raise_exit)
    signal.signal(signal.SIGALRM, raise_timeout)
    signal.alarm(args.time_limit)
    if args.nice:
        os.nice(args.nice)
    remove_stale_namespaces()
    ensure_bench_venv()
    workdir = tempfile.mkdtemp(prefix="netstate-bench-")
    runner, workers, namespaces = Runner(workdir), Workers(), []
    started = time.monotonic()
    try:
        modules = ["netstate.tcp.connection_facts", "netstate.tcp.connection_facts " + NO_LISTENERS,
                   "netstate.tcp.listener_facts"]
        if "listeners" in args.phases or "many_listeners" in args.phases:
            modules.append("community.general.listen_ports_facts")
        payloads = build_payloads(workdir, modules)
        report = {"reps": args.reps, "machine": machine(), "phases": args.phases}
        report["listeners"] = (listener_phase(args, runner, workers, payloads, namespaces)
                               if "listeners" in args.phases else None)
        if "many_listeners" in args.phases:
            slow = report["listeners"]["listen_ports_facts"]["median_ms"] if report["listeners"] else None
            report["many_listeners"] = many_listeners_phase(args, runner, workers, payloads, namespaces, slow)
        report["sockets"] = None
        if "sockets" in args.phases:
            site_packages, collector = bench_site_packages(), install_collector(workdir)
            for name in args.mixes:
                report[mix_key(name)] = socket_phase(args, runner, workers, payloads, namespaces, site_packages,
                                                     collector, name)
        if "million" in args.phases:
            report["million"] = million_phase(args, runner, workers, payloads, namespaces)
        report["targets"] = evaluate_targets(report)
        report["machine"]["load_end"] = load_average()
        report["nice"] = args.nice
        table = render(report)
        print(table)
        os.makedirs(RESULTS_DIR, exist_ok=True)
        with open(os.path.join(RESULTS_DIR, time.strftime("bench-%Y%m%d-%H%M%S.json")), "w") as handle:
            json.dump(report, handle, indent=1, default=str)
        if args.write_doc:
            write_doc(table)
        log("done in %.0fs" % (time.monotonic() - started))
        checks = [check for _name, sockets in socket_reports(report) for check in sockets["checks"]] + (
            [report["million"]["check"]] if report.get("million") else [])
        mismatches = [check for check in checks if not check["ok"]]
        return 1 if mismatches else 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except BenchError as exc:
        log("error: %s; cleaning up" % exc)
        return 1
    finally:
        signal.alarm(0)
        runner.kill_current()
        workers.stop()
        for ns in reversed(namespaces):
            try:
                ns.delete()
            except OSError as exc:
                log("%s" % exc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
