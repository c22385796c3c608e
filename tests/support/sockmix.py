# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build a known mix of real sockets and hold it until standard input closes.

Run inside a private network namespace (`ip netns exec NS python3 sockmix.py SPEC.json`).
The spec (JSON) lists what to build; every address must be a loopback one. Prints one
line `READY {...}` with the pid and what was built, then waits; closing stdin (or
SIGTERM) ends it and the kernel tears everything down with the namespace. The line `close close_wait` on
stdin closes the server ends left in CLOSE_WAIT (the application fixed: they go to LAST_ACK, then away)
and answers `CLOSED {"close_wait": n}`; everything else stays.

Spec keys, all optional:
  listeners:    [{"address": "127.0.0.1", "port": 8080, "backlog": 128}]
  established:  [{"to": ["127.0.0.1", 8080], "from": "127.0.0.2", "count": 10}]
                "accepted": false leaves the connections in the listener's accept queue
  time_wait:    [{"to": [...], "from": ..., "count": n}]   client closes first: client side TIME_WAIT
  server_time_wait: [{"to": [...], "count": n}]             server closes first: TIME_WAIT on the listener port
  close_wait:   [{"to": [...], "count": n}]                 client closes, server never does: CLOSE_WAIT + FIN_WAIT2
  accept_full:  [{"address": ..., "port": ..., "backlog": 2, "clients": 6, "from": ...}]   never accepted
  udp:          [{"address": "0.0.0.0", "port": 5353}]     bound, unconnected
  udp_connected: [{"to": ["127.0.0.1", 5353]}]
  filler_fds:   n                                          n descriptors (pipes) opened first, so the sockets
                                                           after them sit at descriptor numbers above n
  in_flight:    [{"address": "127.0.0.1", "port": 9000}]   a listener whose only reference is its descriptor
                                                           in flight over a unix socket (sent, never received):
                                                           no process holds it; "queued": n clients wait in its
                                                           accept queue (OrphanListener)
  leave_namespace: "/run/netns/NAME"                       after building, move this process into that network
                                                           namespace: it then holds sockets of another one
  comm_hex:     "3c623e"   the process names itself with these bytes (prctl PR_SET_NAME, any bytes but
                           NUL; the kernel keeps the first 15); READY's "comm_hex" is what /proc/PID/comm shows
Addresses containing ':' are IPv6.
"""

import array
import ctypes
import ctypes.util
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time

if __package__ in (None, ""):
    # run as a script (`ip netns exec NS python3 tests/support/sockmix.py`): tests.support from the tree's root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.support.namespaces import setns  # noqa: E402

HELD = []
CLOSE_WAIT = []  # the server ends left in CLOSE_WAIT, also in HELD


def family_of(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def listen(address, port, backlog):
    sock = socket.socket(family_of(address), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family_of(address) == socket.AF_INET6 and address == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, port))
    sock.listen(backlog)
    HELD.append(sock)
    return sock


LISTENERS = {}


def listener_for(to):
    key = (to[0], to[1])
    if key not in LISTENERS:
        raise SystemExit("sockmix: no listener declared for %s:%s" % key)
    return LISTENERS[key]


def connect_pair(to, source=None, accept=True):
    """Connect a client to a declared listener and accept it: (client, server); server None if not accepted."""
    server_sock = listener_for(to)
    address = to[0]
    if address in ("0.0.0.0",):
        address = "127.0.0.1"
    if address == "::":
        # a dual-stack listener: IPv4 clients reach it as IPv4-mapped peers
        address = "127.0.0.1" if source and family_of(source) == socket.AF_INET else "::1"
    client = socket.socket(family_of(address), socket.SOCK_STREAM)
    if source:
        client.bind((source, 0))
    client.connect((address, to[1]))
    if not accept:
        return client, None
    server, _peer = server_sock.accept()
    return client, server


class OrphanListener:
    """A TCP listener no process holds, with queued clients waiting in its accept queue.

    Its descriptor is sent over a unix socket pair (SCM_RIGHTS) and every copy this process had is
    closed while the message is unread, so the listener lives only in the message in flight; the
    clients (held here) then connect, and nobody ever accepts them. close() drops it.
    """

    def __init__(self, address, port, backlog=128, queued=0):
        listener = socket.socket(family_of(address), socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(backlog)
        self.pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.pair[0].sendmsg([b"fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", [listener.fileno()]))])
        self.inode = os.fstat(listener.fileno()).st_ino
        listener.close()  # the message in the pair's queue now holds the only reference
        self.clients = []
        for _index in range(queued):
            client = socket.socket(family_of(address), socket.SOCK_STREAM)
            client.connect((address, port))  # the handshake completes in the kernel: queued, never accepted
            self.clients.append(client)

    def files(self):
        """The descriptors this process holds for it."""
        return len(self.pair) + len(self.clients)

    def close(self):
        """Reset the clients and close the pair, which drops the message and with it the listener."""
        for client in self.clients:
            # a reset, not a FIN: nothing is left behind in FIN_WAIT2 or TIME_WAIT
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        for sock in self.pair:
            sock.close()
        self.clients, self.pair = [], ()


def build(spec):
    built = {}
    if spec.get("filler_fds"):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for _index in range(spec.get("filler_fds", 0) // 2):
        HELD.extend(os.pipe())
    for item in spec.get("listeners", []):
        LISTENERS[(item["address"], item["port"])] = listen(item["address"], item["port"], item.get("backlog", 128))
    built["listeners"] = len(LISTENERS)

    count = 0
    for item in spec.get("established", []):
        for _index in range(item["count"]):
            client, server = connect_pair(item["to"], item.get("from"), item.get("accepted", True))
            HELD.extend(sock for sock in (client, server) if sock is not None)
            count += 1
    built["established_pairs"] = count

    # TIME_WAIT stays with the side that closes first: the client (time_wait) or the server
    for key, client_first in (("time_wait", True), ("server_time_wait", False)):
        count = 0
        for item in spec.get(key, []):
            for _index in range(item["count"]):
                client, server = connect_pair(item["to"], item.get("from"))
                first, second = (client, server) if client_first else (server, client)
                first.close()
                second.recv(1)  # EOF: the first side's FIN arrived
                second.close()
                count += 1
        built[key] = count

    count = 0
    for item in spec.get("close_wait", []):
        for _index in range(item["count"]):
            client, server = connect_pair(item["to"], item.get("from"))
            client.close()
            server.recv(1)
            HELD.append(server)  # never closed: CLOSE_WAIT; the client's orphan waits in FIN_WAIT2
            CLOSE_WAIT.append(server)
            count += 1
    built["close_wait"] = count

    count = 0
    for item in spec.get("accept_full", []):
        listen(item["address"], item["port"], item.get("backlog", 2))
        address = item["address"]
        if address == "0.0.0.0":
            address = "127.0.0.1"
        for _index in range(item["clients"]):
            client = socket.socket(family_of(address), socket.SOCK_STREAM)
            if item.get("from"):
                client.bind((item["from"], 0))
            client.setblocking(False)
            try:
                client.connect((address, item["port"]))
            except BlockingIOError:
                pass
            HELD.append(client)
            count += 1
    built["accept_full_clients"] = count

    for item in spec.get("udp", []):
        sock = socket.socket(family_of(item["address"]), socket.SOCK_DGRAM)
        if family_of(item["address"]) == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((item["address"], item["port"]))
        HELD.append(sock)
    for item in spec.get("udp_connected", []):
        sock = socket.socket(family_of(item["to"][0]), socket.SOCK_DGRAM)
        sock.connect(tuple(item["to"]))
        HELD.append(sock)
    built["udp"] = len(spec.get("udp", [])) + len(spec.get("udp_connected", []))

    for item in spec.get("in_flight", []):
        HELD.append(OrphanListener(item["address"], item["port"], item.get("backlog", 128), item.get("queued", 0)))
    built["in_flight"] = len(spec.get("in_flight", []))
    if spec.get("leave_namespace"):
        setns(spec["leave_namespace"])
    # Let the handshakes of the never-accepted clients settle (queued or dropped SYNs).
    time.sleep(0.3)
    return built


PR_SET_NAME = 15


def set_comm(raw):
    """Name this process as a hostile one would: prctl(PR_SET_NAME), the name ps and /proc show."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")
    with open("/proc/self/comm", "rb") as handle:
        return handle.read()[:-1]


def main():
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    comm = set_comm(bytes.fromhex(spec["comm_hex"])) if "comm_hex" in spec else None
    built = build(spec)
    built["pid"] = os.getpid()
    if comm is not None:
        built["comm_hex"] = comm.hex()
    sys.stdout.write("READY %s\n" % json.dumps(built))
    sys.stdout.flush()
    while True:
        ready, _w, _x = select.select([sys.stdin], [], [], 3600)
        if not ready:
            continue
        line = sys.stdin.readline()
        if not line:
            return
        if line.strip() == "close close_wait":
            for sock in CLOSE_WAIT:
                sock.close()
                HELD.remove(sock)
            sys.stdout.write("CLOSED %s\n" % json.dumps({"close_wait": len(CLOSE_WAIT)}))
            sys.stdout.flush()
            del CLOSE_WAIT[:]


if __name__ == "__main__":
    main()
