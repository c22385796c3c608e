"""Benchmark of the netstate engine against the tools operators use today (issue 2).

Run as root (make bench):  python3 benchmarks/bench_engine.py [--write-doc] [--sizes 10000,100000,180000]

In private network namespaces it creates, it builds ~10k, ~100k and ~180k TCP sockets (mostly
ESTABLISHED, plus TIME_WAIT, CLOSE_WAIT/FIN_WAIT2 pairs, a few hundred listeners) spread over
many worker processes (benchmarks/_sockfarm.py, <= 19,000 files each), then times, round-robin
and side by side: connection_facts as a whole process, engine.gather() in-process, `ss -tan | awk`,
`netstat -ant | awk`, psutil.net_connections(), and a bare netlink dump (the floor). At ~1,000
listeners it times listener_facts against community.general's listen_ports_facts. It checks the
engine's state counts against `ss -tan` run just before and after, prints medians, ratios,
peak RSS and each target with PASS/FAIL, and with --write-doc writes docs/performance.md.

The benchmark enters each namespace with setns(2) (what `ip netns exec` does) and spawns every
measured process from there, so no `ip netns exec` start-up is counted against any tool.
psutil and the `ansible` package (community.general) live only in the benchmark's own venv,
benchmarks/.venv, made on first run from benchmarks/requirements.txt.
Everything it starts (workers, namespaces) is removed on exit, Ctrl-C and errors included.
"""

import argparse
import ctypes
import datetime
import json
import math
import os
import platform
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
BENCH_VENV = os.path.join(HERE, ".venv")
BENCH_PYTHON = os.path.join(BENCH_VENV, "bin", "python")
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
FARM = os.path.join(HERE, "_sockfarm.py")
INPROC = os.path.join(HERE, "_inproc.py")
RESULTS_DIR = os.path.join(HERE, "results")
DOC = os.path.join(ROOT, "docs", "performance.md")
TARGET_PYTHON = "/usr/bin/python3"  # what a Debian 12 target runs modules with
NS_PREFIX = "nsbench-"

SS_AWK = "ss -tan | awk 'NR>1{++S[$1]}END{for(a in S) print a,S[a]}'"
NETSTAT_AWK = "netstat -ant | awk '/^tcp/{++S[$NF]}END{for(a in S) print a,S[a]}'"
SS_STATES = {
    "ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV", "FIN-WAIT-1": "FIN_WAIT1",
    "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT", "UNCONN": "CLOSE", "CLOSE-WAIT": "CLOSE_WAIT",
    "LAST-ACK": "LAST_ACK", "LISTEN": "LISTEN", "CLOSING": "CLOSING",
}
STATES = list(SS_STATES.values())

# The socket mix, as shares of each size (the rest is ESTABLISHED pairs).
TIME_WAIT_SHARE = 0.15
HALF_CLOSED_SHARE = 0.01   # pairs: one CLOSE_WAIT (server never closes) + one FIN_WAIT2 (client)
IPV6_SHARE = 0.05
HOT_SHARE = 0.80           # of the IPv4 connections, to two hot ports per server
PAIR_CAPACITY = 14500      # connections per client worker (and per server worker, + listeners)
COLD_LISTENERS = 45        # per server worker, on 127.0.0.1
STUCK_PORT, STUCK_CONNECTIONS = 9999, 100   # a listener nobody accepts from (full-ish queue)
LISTENERS_APPROX = 300     # listeners of the big phase, counted off each size before the connections
TIME_WAIT_PORT = 8080
PEER_SOURCES = 1000        # client addresses 127.1.x.y, Zipf-weighted
V6_SOURCES = 20            # fd00:0:0:b::N/128 on lo, plus ::1

CLONE_NEWNET = 0x40000000
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

def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if LIBC.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, "setns(%s): %s" % (path, os.strerror(error)))
    finally:
        os.close(fd)


# The namespace the benchmark started in, to come back to between phases and before cleaning up.
HOME_NS = "/proc/%d/ns/net" % os.getpid()
home_ns_fd = None


def go_home():
    if home_ns_fd is not None and LIBC.setns(home_ns_fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns back to the starting namespace failed")


class Namespace:
    """A named network namespace of our own (ip netns add), with lo up and the sysctls raised."""

    SYSCTLS = {
        "net.ipv4.ip_local_port_range": "1024 65535",
        "net.core.somaxconn": "65535",
        "net.ipv4.tcp_max_syn_backlog": "65535",
        "net.ipv4.tcp_max_tw_buckets": "1000000",
        # 2 (the default) lets connect() on loopback recycle TIME_WAIT sockets: the population
        # the benchmark builds would melt away while it measures.
        "net.ipv4.tcp_tw_reuse": "0",
        "net.ipv4.tcp_max_orphans": "1000000",
    }

    def __init__(self, label):
        self.name = "%s%s-%d" % (NS_PREFIX, label, os.getpid())
        self.created = False

    def create(self):
        run(["ip", "netns", "add", self.name])
        self.created = True
        run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"])
        for index in range(1, V6_SOURCES + 1):
            run(["ip", "netns", "exec", self.name, "ip", "-6", "addr", "add", "fd00:0:0:b::%x/128" % index,
                 "dev", "lo", "nodad"])
        skipped = []
        for key, value in self.SYSCTLS.items():
            if run(["ip", "netns", "exec", self.name, "sysctl", "-qw", "%s=%s" % (key, value)],
                   check=False).returncode != 0:
                skipped.append(key)
        if skipped:  # some are global on some kernels; the defaults are then large enough
            log("namespace %s: left at their defaults (not per-namespace here): %s" % (self.name, ", ".join(skipped)))
        return self

    def enter(self):
        setns("/run/netns/" + self.name)

    def delete(self):
        if self.created:
            run(["ip", "netns", "del", self.name], check=False)
            self.created = False


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
        if index == 0 and not self.stuck_done:
            picks[(4, "127.3.0.1", "127.0.0.1", STUCK_PORT, False)] = STUCK_CONNECTIONS
            self.stuck_done = True
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
        sources = ["127.2.0.%d" % index for index in range(1, 51)]
        return self.time_wait_worker.call("time_wait", target=target, address="127.0.0.1", port=TIME_WAIT_PORT,
                                          sources=sources, timeout=600)


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
            proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                    close_fds=True)
            self.current = proc
            timer = threading.Timer(timeout, proc.kill)
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

    def kill_current(self):
        if self.current is not None and self.current.poll() is None:
            self.current.kill()


class Tool:
    """One thing to time. kind: 'process' (wall and CPU time of the whole process) or 'inproc'
    (the child's own timing of one warm call; RSS is still the whole child's peak)."""

    def __init__(self, key, label, argv, kind="process", env=None, timeout=180, check=None, reps=None):
        self.key, self.label, self.argv, self.kind = key, label, argv, kind
        self.env, self.timeout, self.check, self.reps = env, timeout, check, reps

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


def module_facts_check(key):
    def check(stdout):
        answer = json.loads(stdout[stdout.index("{"):])
        if answer.get("failed"):
            raise BenchError("module failed: %s" % answer.get("msg"))
        facts = answer["ansible_facts"]
        if key == "netstate":
            return {"total": facts["netstate"]["tcp"]["total"], "duration_ms": facts["netstate"].get("duration_ms")}
        return {"tcp_listen": len(facts["tcp_listen"]), "udp_listen": len(facts["udp_listen"]),
                "with_pid": sum(1 for entry in facts["tcp_listen"] if entry.get("pid"))}
    return check


def summarize(samples):
    seconds = [sample["seconds"] for sample in samples]
    return {"median_ms": statistics.median(seconds) * 1000, "min_ms": min(seconds) * 1000,
            "max_ms": max(seconds) * 1000, "cpu_ms": statistics.median(s["cpu"] for s in samples) * 1000,
            "rss_mib": None if samples[0]["rss_kib"] is None else max(s["rss_kib"] for s in samples) / 1024.0,
            "runs": len(samples),
            "detail": samples[-1].get("detail")}


def ss_counts(runner):
    """State and family counts from `ss -tanH` (the oracle)."""
    stdout = runner.run(["ss", "-tanH"], 120)["stdout"]
    states = dict.fromkeys(STATES, 0)
    families = {"ipv4": 0, "ipv6": 0}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        states[SS_STATES[fields[0]]] += 1
        families["ipv6" if fields[3].startswith("[") else "ipv4"] += 1
    return {"total": sum(states.values()), "states": states, "families": families}


def check_engine_against_ss(runner, engine_tool, size_label):
    """The engine's counts must lie between `ss` just before and just after (TIME_WAIT decays)."""
    before = ss_counts(runner)
    engine = engine_tool.measure(runner)["detail"]
    after = ss_counts(runner)
    problems = []
    pairs = [("total", before["total"], engine["total"], after["total"])]
    pairs += [("states." + name, before["states"][name], engine["states"].get(name), after["states"][name])
              for name in STATES]
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

def build_payloads(workdir, modules):
    """The exact files Ansible runs on a target: AnsiballZ_<module>.py, default options, kept with
    ANSIBLE_KEEP_REMOTE_FILES. Built once on the host with the benchmark venv's ansible."""
    config = os.path.join(workdir, "ansible.cfg")
    with open(config, "w") as handle:
        handle.write("[defaults]\ninterpreter_python = %s\n" % TARGET_PYTHON)
    payloads = {}
    for module in modules:
        remote = os.path.join(workdir, "remote-" + module.split(".")[-1])
        env = dict(os.environ, ANSIBLE_KEEP_REMOTE_FILES="1", ANSIBLE_REMOTE_TMP=remote, ANSIBLE_PIPELINING="0",
                   ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_CONFIG=config, ANSIBLE_DEPRECATION_WARNINGS="0")
        result = run([os.path.join(BENCH_VENV, "bin", "ansible"), "all", "-i", "localhost,", "-c", "local",
                      "-m", module], check=False, env=env)
        found = [os.path.join(path, name) for path, _dirs, names in os.walk(remote) for name in names
                 if name.startswith("AnsiballZ_")]
        if result.returncode != 0 or not found:
            raise BenchError("could not build the AnsiballZ payload of %s: %s"
                             % (module, (result.stdout + result.stderr)[-800:]))
        payloads[module] = found[0]
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
                before_each()
            samples[tool.key].append(tool.measure(runner))
        log("%s round %d/%d: %s" % (label, repetition + 1, reps, ", ".join(
            "%s %.0fms" % (tool.key, samples[tool.key][-1]["seconds"] * 1000) for tool in tools if samples[tool.key])))
    return {key: summarize(values) for key, values in samples.items() if values}


def listener_phase(args, runner, workers, payloads, namespaces):
    ns = Namespace("listen").create()
    namespaces.append(ns)
    ns.enter()
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
    go_home()
    ns.delete()
    return results


def socket_phase(args, runner, workers, payloads, namespaces, site_packages):
    ns = Namespace("sockets").create()
    namespaces.append(ns)
    ns.enter()
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
        Tool("engine", "engine.gather() in-process", [BENCH_PYTHON, INPROC, "engine", COLLECTIONS], kind="inproc"),
        Tool("engine_no_listeners", "engine.gather(), default subset minus listeners",
             [BENCH_PYTHON, INPROC, "engine", COLLECTIONS, "states,ports,peers,counters,timers"], kind="inproc"),
        Tool("engine_states", "engine.gather(gather_subset=states)",
             [BENCH_PYTHON, INPROC, "engine", COLLECTIONS, "states"], kind="inproc"),
        Tool("hotloop", "engine hot loop alone: TcpAggregate.consume_netlink over a captured dump",
             [BENCH_PYTHON, INPROC, "hotloop", COLLECTIONS], kind="inproc"),
        Tool("floor", "floor: _netlink.dump_raw, parses nothing", [BENCH_PYTHON, INPROC, "floor", COLLECTIONS],
             kind="inproc"),
        Tool("floor_raw", "floor: bench's own recv loop, 1 MiB buffer",
             [BENCH_PYTHON, INPROC, "floor_raw", COLLECTIONS], kind="inproc"),
        Tool("ss_awk", "ss -tan | awk (state counts)", ["/bin/sh", "-c", SS_AWK]),
        Tool("netstat_awk", "netstat -ant | awk (state counts)", ["/bin/sh", "-c", NETSTAT_AWK], timeout=600),
        Tool("psutil", "psutil.net_connections(kind='tcp')", [BENCH_PYTHON, INPROC, "psutil", COLLECTIONS],
             kind="inproc", timeout=600),
    ]
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
    mix = SocketMix(workers, max(args.sizes))
    mix.start()
    per_size, checks = {}, []
    for size in args.sizes:
        mix.grow(size)
        label = "%dk" % round(size / 1000)
        checks.append(check_engine_against_ss(runner, engine_tool, label + " before"))
        per_size[size] = round_robin(runner, tools, args.reps, label=label,
                                     before_each=lambda size=size: mix.top_up_time_wait(size))
        per_size[size]["ss_total"] = checks[-1]["ss_before"]["total"]
        checks.append(check_engine_against_ss(runner, engine_tool, label + " after"))
    profile = None
    if args.profile:
        profile = runner.run([BENCH_PYTHON, INPROC, "profile", COLLECTIONS], 600)["stdout"]
        print(profile)
    workers.stop()
    go_home()
    ns.delete()
    return {"sizes": per_size, "checks": checks, "labels": {tool.key: tool.label for tool in tools},
            "listeners": mix.listener_count, "profile": profile}


# ---------------------------------------------------------------- targets, table, doc

def ratio(results, size, numerator, denominator):
    try:
        return results[size][numerator]["median_ms"] / results[size][denominator]["median_ms"]
    except (KeyError, ZeroDivisionError):
        return None


def evaluate_targets(sockets, listeners):
    sizes = sockets["sizes"]
    largest = max(sizes)
    out = []

    def add(name, value, limit, kind, unit="x"):
        passed = value is not None and (value <= limit if kind == "max" else value >= limit)
        out.append({"target": name, "value": value, "limit": limit, "kind": kind, "unit": unit, "pass": passed})

    add("connection_facts process <= 1.0x ss -tan | awk", ratio(sizes, largest, "module", "ss_awk"), 1.0, "max")
    add("connection_facts process <= 0.6x netstat -ant | awk", ratio(sizes, largest, "module", "netstat_awk"), 0.6,
        "max")
    floors = [key for key in ("floor", "floor_raw") if key in sizes[largest]]
    if floors:  # --tools may leave them out
        floor = min(floors, key=lambda key: sizes[largest][key]["median_ms"])
        add("engine <= 2.5x the floor (%s)" % floor, ratio(sizes, largest, "engine", floor), 2.5, "max")
    add("engine >= 5x faster than psutil", ratio(sizes, largest, "psutil", "engine"), 5.0, "min")
    if listeners:
        value = listeners["listen_ports_facts"]["median_ms"] / listeners["listener_facts"]["median_ms"]
        add("listener_facts >= 20x faster than listen_ports_facts", value, 20.0, "min")
    ours = [(name, sizes[largest][key]["rss_mib"])
            for name, key in (("connection_facts", "module"), ("engine", "engine")) if key in sizes[largest]]
    if listeners:
        ours.append(("listener_facts", listeners["listener_facts"]["rss_mib"]))
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
        "load": load_average(),
    }


def load_average():
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


ROW_ORDER = ["module", "module_direct", "engine", "engine_baseline", "engine_no_listeners", "engine_states",
             "hotloop", "hotloop_baseline", "floor", "floor_raw", "ss_awk", "netstat_awk", "psutil"]


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


def render(report):
    sockets, listeners, info = report["sockets"], report.get("listeners"), report["machine"]
    sizes = sorted(sockets["sizes"])
    largest = sizes[-1]
    heads = ["~%dk sockets" % round(size / 1000) for size in sizes]
    lines = ["| Measured (median of %d, ms) | %s | CPU ms @%s | peak RSS MiB @%s |"
             % (report["reps"], " | ".join(heads), heads[-1][1:], heads[-1][1:]),
             "|---|" + "---:|" * (len(sizes) + 2)]
    for key in ROW_ORDER:
        if key not in sockets["sizes"][largest]:
            continue
        cells = ["%.1f" % sockets["sizes"][size][key]["median_ms"] for size in sizes]
        big = sockets["sizes"][largest][key]
        lines.append("| %s | %s | %.1f | %s |" % (cell(sockets["labels"][key]), " | ".join(cells), big["cpu_ms"],
                                                  mib(big["rss_mib"])))
    lines.append("| sockets seen by `ss -tan` | %s | | |" % " | ".join(
        str(sockets["sizes"][size]["ss_total"]) for size in sizes))
    lines += ["", "| Ratio (medians) | %s | same, CPU time @%s |" % (" | ".join(heads), heads[-1][1:]),
              "|---|" + "---:|" * (len(sizes) + 1)]
    for name, numerator, denominator in (
            ("connection_facts process / `ss -tan \\| awk`", "module", "ss_awk"),
            ("connection_facts process / `netstat -ant \\| awk`", "module", "netstat_awk"),
            ("engine / floor (`_netlink.dump_raw`)", "engine", "floor"),
            ("engine / floor (bench recv loop)", "engine", "floor_raw"),
            ("engine, default subset minus listeners / floor (`_netlink.dump_raw`)", "engine_no_listeners", "floor"),
            ("psutil / engine", "psutil", "engine"),
            ("engine / engine of the --baseline tree", "engine", "engine_baseline"),
            ("hot loop / hot loop of the --baseline tree", "hotloop", "hotloop_baseline"),
            ("AnsiballZ process / engine in-process", "module", "engine")):
        values = [ratio(sockets["sizes"], size, numerator, denominator) for size in sizes]
        values.append(cpu_ratio(sockets["sizes"], largest, numerator, denominator))
        lines.append("| %s | %s |" % (name, " | ".join("%.2f" % value if value else "n/a" for value in values)))
    if listeners:
        lines += ["", "| ~%d TCP listeners (+48 UDP) | median ms | min ms | max ms | runs | peak RSS MiB "
                  "| TCP listeners reported |" % listeners["ss_tcp_listeners"], "|---|---:|---:|---:|---:|---:|---:|"]
        for key, label in (("listener_facts", "netstate.tcp.listener_facts"),
                           ("listen_ports_facts", "community.general.listen_ports_facts")):
            row = listeners[key]
            lines.append("| %s | %.1f | %.1f | %.1f | %d | %s | %d |" % (
                label, row["median_ms"], row["min_ms"], row["max_ms"], row["runs"], mib(row["rss_mib"]),
                row["detail"]["tcp_listen"]))
    lines += ["", "| Target | Measured | Result |", "|---|---:|---|"]
    for target in report["targets"]:
        value = "n/a" if target["value"] is None else "%.2f%s" % (target["value"], target["unit"])
        lines.append("| %s | %s | %s |" % (cell(target["target"]), value, "PASS" if target["pass"] else "**FAIL**"))
    checks = report["sockets"]["checks"]
    bad = [check for check in checks if not check["ok"]]
    lines += ["", "Correctness on the side: the engine's total, per-state and per-family counts lay between "
              "`ss -tan` run just before and just after, at every size, %d of %d checks%s."
              % (len(checks) - len(bad), len(checks), "" if not bad else " (**MISMATCH**: "
                 + "; ".join(problem for check in bad for problem in check["problems"]) + ")")]
    lines += ["", "Machine: %s, %s RAM; %s; kernel %s; %s; %s; %s; psutil %s; %s. Commit %s, %s. "
              "Load average %s at the start, %s at the end%s."
              % (info["cpu"], info["memory"], info["os"], info["kernel"], info["python"], info["ss"],
                 info["netstat"], info["psutil"], info["ansible"], info["commit"], info["date"], info["load"],
                 info["load_end"], "; run with --nice %d" % report["nice"] if report["nice"] else "")]
    return "\n".join(lines)


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

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="10000,100000,180000",
                        type=lambda text: sorted(int(part) for part in text.split(",")),
                        help="total TCP sockets to build, comma separated (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per measurement (default: %(default)s)")
    parser.add_argument("--slow-reps", type=int, default=3,
                        help="repetitions of listen_ports_facts, which takes seconds per run (default: %(default)s)")
    parser.add_argument("--listeners", type=int, default=1000, help="TCP listeners in the listener phase")
    parser.add_argument("--skip-listeners", action="store_true", help="leave out the listener phase")
    parser.add_argument("--time-limit", type=int, default=1800, help="stop and clean up after this many seconds")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness for the benchmark and everything it measures, e.g. -10 on a busy machine "
                             "(all tools get the same; default: %(default)s)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of engine.gather() at the largest size")
    parser.add_argument("--from-json", metavar="RESULTS",
                        help="measure nothing: print (and with --write-doc, write) the table of a saved "
                             "benchmarks/results/bench-*.json")
    parser.add_argument("--write-doc", action="store_true", help="write the table into docs/performance.md")
    parser.add_argument("--baseline", metavar="COLLECTIONS",
                        help="also time engine.gather() and the hot loop of another tree, in the same rounds "
                             "(a directory holding ansible_collections/netstate/tcp, e.g. an older checkout's "
                             ".build/collections)")
    parser.add_argument("--tools", type=lambda text: [part for part in text.split(",") if part],
                        help="time only these rows of the socket phase (keys: module, module_direct, engine, "
                             "engine_no_listeners, engine_states, hotloop, floor, floor_raw, ss_awk, netstat_awk, "
                             "psutil, engine_baseline, hotloop_baseline); default all")
    return parser.parse_args(argv)


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
    global home_ns_fd
    home_ns_fd = os.open(HOME_NS, os.O_RDONLY)
    if args.nice:
        os.nice(args.nice)
    remove_stale_namespaces()
    ensure_bench_venv()
    workdir = tempfile.mkdtemp(prefix="netstate-bench-")
    runner, workers, namespaces = Runner(workdir), Workers(), []
    started = time.monotonic()
    try:
        modules = ["netstate.tcp.connection_facts", "netstate.tcp.listener_facts"]
        if not args.skip_listeners:
            modules.append("community.general.listen_ports_facts")
        payloads = build_payloads(workdir, modules)
        report = {"reps": args.reps, "machine": machine()}
        report["listeners"] = (None if args.skip_listeners
                               else listener_phase(args, runner, workers, payloads, namespaces))
        report["sockets"] = socket_phase(args, runner, workers, payloads, namespaces, bench_site_packages())
        report["targets"] = evaluate_targets(report["sockets"], report["listeners"])
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
        mismatches = [check for check in report["sockets"]["checks"] if not check["ok"]]
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
        try:
            go_home()
        except OSError as exc:
            log("%s" % exc)
        for ns in namespaces:
            ns.delete()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
