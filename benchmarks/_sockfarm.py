"""Private helper of benchmarks/bench_engine.py: one worker process that holds sockets.

It runs inside the benchmark's network namespace (it inherits it from bench_engine.py) and is
driven by one JSON command per line on stdin; it answers one JSON line per command on stdout.
A process may hold at most 20,000 files, so the benchmark spreads its sockets over many of
these workers. A worker exits when stdin closes or when its parent dies (PR_SET_PDEATHSIG),
so an interrupted benchmark leaves nothing behind.

Commands (all answer {"ok": true, ...} or {"ok": false, "error": "..."}):
  {"op": "listen", "listeners": [{"family": 4|6, "address", "port", "backlog", "accept", "udp"}]}
      open listeners; accepting ones are served by the event loop (connections are held, never
      read, so a peer that half-closes leaves the accepted socket in CLOSE_WAIT).
  {"op": "connect", "groups": [{"family", "source", "address", "port", "count", "half_close",
                                 "source_first"}]}
      open and hold client connections; half_close shuts the write side (FIN_WAIT2 here,
      CLOSE_WAIT on the server). With source_first (an IPv4 address, e.g. in 127.0.0.0/8) each
      connection binds the next address from it, so the server sees one distinct peer each.
  {"op": "orphan_listener", "address", "port", "backlog", "queued"}
      open a listener that no process holds, with queued clients waiting in its accept queue
      (tests/support/sockmix.py's OrphanListener, the one the tests build). {"op": "release_orphans"}
      resets the clients and drops the listener.
  {"op": "time_wait", "target": N, "address", "port", "sources": [...]}
      top the namespace's TIME_WAIT population (/proc/net/sockstat "tw") up to N by opening
      connections to this worker's own listener and closing the client side first.
  {"op": "status"}
      counts of held and accepted sockets.
"""

import ctypes
import ipaddress
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.sockmix import OrphanListener  # noqa: E402

IP_BIND_ADDRESS_NO_PORT = 24  # the kernel picks the port at connect(), unique per 4-tuple
PR_SET_PDEATHSIG = 1
FILE_BUDGET = 19000  # below the 20,000 hard limit: stdio, pipes and the selector need a few
FILE_LIMIT = 20000
TIME_WAIT_BATCH = 1000


def die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        sys.exit(0)


def _family(value):
    return socket.AF_INET6 if int(value) == 6 else socket.AF_INET


def sockstat_time_wait():
    with open("/proc/net/sockstat") as handle:
        for line in handle:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    return 0


class Worker:
    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.listeners = []
        self.held = []
        self.accepted = 0
        self.pending = b""
        self.time_wait_listener = None
        self.orphans = []
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, None)

    def open_files(self):
        return len(self.listeners) + len(self.held) + sum(orphan.files() for orphan in self.orphans)

    def _budget(self, more):
        if self.open_files() + more > FILE_BUDGET:
            raise RuntimeError("would hold %d sockets, over this worker's budget of %d"
                               % (self.open_files() + more, FILE_BUDGET))

    def listen(self, listeners):
        self._budget(len(listeners))
        for spec in listeners:
            family = _family(spec["family"])
            kind = socket.SOCK_DGRAM if spec.get("udp") else socket.SOCK_STREAM
            sock = socket.socket(family, kind)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((spec["address"], int(spec["port"])))
            if kind == socket.SOCK_STREAM:
                sock.listen(int(spec.get("backlog", 128)))
                if spec.get("accept", True):
                    sock.setblocking(False)
                    self.selector.register(sock, selectors.EVENT_READ, "accept")
            self.listeners.append(sock)
        return {"listeners": len(self.listeners)}

    def accept_ready(self, listener):
        while True:
            if self.open_files() >= FILE_BUDGET:
                # Over budget: leave the rest in the accept queue rather than spin on it.
                self.selector.unregister(listener)
                return
            try:
                conn, _peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self.held.append(conn)
            self.accepted += 1

    @staticmethod
    def _client(family, source):
        sock = socket.socket(family, socket.SOCK_STREAM)
        if source:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        return sock

    def connect(self, groups):
        self._budget(sum(int(group["count"]) for group in groups))
        started = time.monotonic()
        opened = 0
        for group in groups:
            family = _family(group["family"])
            target = (group["address"], int(group["port"]))
            first = int(ipaddress.IPv4Address(group["source_first"])) if group.get("source_first") else None
            for number in range(int(group["count"])):
                source = str(ipaddress.IPv4Address(first + number)) if first is not None else group.get("source")
                sock = self._client(family, source)
                sock.connect(target)
                if group.get("half_close"):
                    sock.shutdown(socket.SHUT_WR)
                self.held.append(sock)
                opened += 1
        return {"opened": opened, "seconds": round(time.monotonic() - started, 3)}

    def time_wait(self, target, address, port, sources):
        if self.time_wait_listener is None:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            self.time_wait_listener = socket.socket(family, socket.SOCK_STREAM)
            self.time_wait_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.time_wait_listener.bind((address, int(port)))
            self.time_wait_listener.listen(4096)
            self.listeners.append(self.time_wait_listener)
        family = self.time_wait_listener.family
        before = sockstat_time_wait()
        missing = max(0, int(target) - before)
        made = 0
        while made < missing:
            pairs = []
            for index in range(min(TIME_WAIT_BATCH, missing - made)):
                client = self._client(family, sources[(made + index) % len(sources)])
                client.connect((address, int(port)))
                server, _peer = self.time_wait_listener.accept()
                pairs.append((client, server))
            # The client closes first, so the client side ends in TIME_WAIT (an application
            # making short-lived connections to an upstream), the server side goes away.
            for client, _server in pairs:
                client.close()
            for _client, server in pairs:
                server.close()
            made += len(pairs)
        return {"before": before, "made": made, "after": sockstat_time_wait()}

    def orphan_listener(self, address, port, backlog, queued=0):
        self._budget(2 + int(queued))
        orphan = OrphanListener(address, int(port), int(backlog), int(queued))
        self.orphans.append(orphan)
        return {"inode": orphan.inode, "orphans": len(self.orphans), "queued": len(orphan.clients)}

    def release_orphans(self):
        released = len(self.orphans)
        for orphan in self.orphans:
            orphan.close()
        self.orphans = []
        return {"released": released}

    def status(self):
        return {"held": len(self.held), "accepted": self.accepted, "listeners": len(self.listeners)}

    def handle(self, line):
        try:
            command = json.loads(line)
            op = command.pop("op")
            if op == "listen":
                answer = self.listen(command["listeners"])
            elif op == "connect":
                answer = self.connect(command["groups"])
            elif op == "time_wait":
                answer = self.time_wait(command["target"], command["address"], command["port"],
                                        command["sources"])
            elif op == "orphan_listener":
                answer = self.orphan_listener(command["address"], command["port"], command.get("backlog", 128),
                                              command.get("queued", 0))
            elif op == "release_orphans":
                answer = self.release_orphans()
            elif op == "status":
                answer = self.status()
            else:
                raise ValueError("unknown op %r" % op)
            answer["ok"] = True
        except Exception as exc:  # answered to the driver, which reports it and stops
            answer = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    def run(self):
        stdin = sys.stdin.fileno()
        while True:
            for key, _events in self.selector.select():
                if key.data == "accept":
                    self.accept_ready(key.fileobj)
                    continue
                chunk = os.read(stdin, 1 << 16)
                if not chunk:
                    return
                self.pending += chunk
                while b"\n" in self.pending:
                    line, self.pending = self.pending.split(b"\n", 1)
                    if line.strip():
                        self.handle(line)


def raise_file_limit():
    """Up to FILE_LIMIT open files, as far as the hard limit allows (a worker holds up to FILE_BUDGET)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FILE_LIMIT if hard == resource.RLIM_INFINITY else min(FILE_LIMIT, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main():
    die_with_parent()
    raise_file_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver cleans up; Ctrl-C goes to it
    Worker().run()


if __name__ == "__main__":
    main()
