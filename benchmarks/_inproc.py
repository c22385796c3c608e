"""Private helper of benchmarks/bench_engine.py: time one in-process call in a fresh process.

    python _inproc.py {engine|hotloop|floor|floor_raw|psutil} COLLECTIONS_DIR [GATHER_SUBSET,...]
      (GATHER_SUBSET as the modules take it: names, groups, !name; e.g. '!listeners')
    python _inproc.py profile COLLECTIONS_DIR   (cProfile of one warm engine.gather(), as text)

Runs the call once to warm up (imports, first page faults), then once more timed, and prints
one JSON line: {"seconds": ..., "cpu": ..., ...} for the timed call (cpu: of this process and of the
children reaped meanwhile, the engine's relay). The caller measures this
process's peak RSS, so every in-process figure is "a Python process doing only this". It
inherits the caller's network namespace.
"""

import json
import resource
import socket
import struct
import sys
import time

NETLINK_SOCK_DIAG = 4
TCPDIAG_GETSOCK = 18  # the older inet_diag request: both families in one walk
NLM_F_REQUEST_DUMP = 0x1 | 0x300
NLMSG_DONE = 3
TCP_ALL_STATES = 0x1FFE  # TCP states 1..12 (NEW_SYN_RECV included), as the engine asks
HEADER = struct.Struct("=IHHII")
DONE = HEADER.size + 4


def engine_modules(collections):
    """(_netlink, engine) of the tree at collections; a baseline tree may predate the _engine package."""
    sys.path.insert(0, collections)
    try:
        from ansible_collections.netstate.tcp.plugins.module_utils._engine import _netlink, engine
    except ImportError:
        from ansible_collections.netstate.tcp.plugins.module_utils import _netlink, engine
    return _netlink, engine


def counting_modules(collections):
    """(_netlink, the module of TcpAggregate): _engine._aggregate, or engine in a baseline tree from before it."""
    _netlink, engine = engine_modules(collections)
    try:
        from ansible_collections.netstate.tcp.plugins.module_utils._engine import _aggregate
    except ImportError:
        return _netlink, engine
    return _netlink, _aggregate


def engine_call(collections, gather_subset=None):
    _netlink, engine = engine_modules(collections)

    # no argument for the default: a --baseline tree may predate the gather_subset name
    arguments = {} if gather_subset is None else {"gather_subset": gather_subset}

    def call():
        return engine.gather(**arguments)

    def summary(doc):
        tcp = doc["tcp"]
        return {"total": tcp["total"], "states": tcp["states"],
                "families": {name: family["total"] for name, family in tcp["families"].items()},
                "backend": doc.get("backend"), "listeners": len(doc.get("listeners") or []),
                "listener_walk": doc.get("listener_walk")}
    return call, summary


def floor_call(collections, _gather_subset=None):
    """The engine's own dump (its socket, request and receive loop), handing buffers to a consumer that
    parses nothing, IPv4 and IPv6: in one walk of the kernel's table as the engine asks for them, or one
    dump per family for a --baseline tree from before it did."""
    _netlink, _engine = engine_modules(collections)
    if hasattr(_netlink, "TCPDIAG_GETSOCK"):
        def call():
            return dump_raw(_netlink, None, socket.IPPROTO_TCP, TCP_ALL_STATES)
    elif hasattr(_netlink, "dump_raw"):  # a baseline tree from before the floor moved here
        def call():
            return sum(_netlink.dump_raw(family, socket.IPPROTO_TCP, TCP_ALL_STATES)
                       for family in (socket.AF_INET, socket.AF_INET6))
    elif hasattr(_netlink, "dump"):
        def call():
            return sum(dump_raw(_netlink, family, socket.IPPROTO_TCP, TCP_ALL_STATES)
                       for family in (socket.AF_INET, socket.AF_INET6))
    else:
        def call():
            return sum(len(chunk) for family in (socket.AF_INET, socket.AF_INET6)
                       for chunk in _netlink.dump_chunks(family, socket.IPPROTO_TCP, TCP_ALL_STATES))
    return call, lambda received: {"bytes": received}


def dump_raw(netlink, family, protocol, states_mask):
    """The floor: receive a whole dump through netlink.dump() and parse nothing.

    Only the tail of each buffer is read, where the kernel puts NLMSG_DONE (20 bytes, no extended ack
    on success). Returns the number of bytes received.
    """
    total = [0]
    head = struct.Struct("=IH")

    def consume(buf, length):
        total[0] += length
        tail = length - netlink.DONE_LEN
        if tail >= 0 and head.unpack_from(buf, tail) == (netlink.DONE_LEN, netlink.NLMSG_DONE):
            return tail
        return None

    netlink.dump(family, protocol, states_mask, consume)
    return total[0]


def floor_raw_call(_collections, _gather_subset=None):
    """The benchmark's own bare dump: one reused 1 MiB buffer, no extensions, parses nothing; both families
    in one walk (the older inet_diag request, TCPDIAG_GETSOCK, with AF_UNSPEC)."""
    buffer = bytearray(1 << 20)

    def dump():
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            # inet_diag_req: family, src_len, dst_len, ext, a zeroed inet_diag_sockid, states, dbs
            request = (struct.pack("=BBBB", socket.AF_UNSPEC, 0, 0, 0) + bytes(48)
                       + struct.pack("=II", TCP_ALL_STATES, 0))
            sock.send(HEADER.pack(HEADER.size + len(request), TCPDIAG_GETSOCK, NLM_F_REQUEST_DUMP, 1, 0)
                      + request)
            received = 0
            while True:
                length = sock.recv_into(buffer)
                received += length
                if length >= DONE and struct.unpack_from("=IH", buffer, length - DONE) == (DONE, NLMSG_DONE):
                    return received
        finally:
            sock.close()

    def call():
        return dump()
    return call, lambda received: {"bytes": received}


def psutil_call(_collections, _gather_subset=None):
    import psutil

    def call():
        return psutil.net_connections(kind="tcp")

    def summary(connections):
        states = {}
        for connection in connections:
            states[connection.status] = states.get(connection.status, 0) + 1
        return {"total": len(connections), "states": states}
    return call, summary


def hotloop_call(collections, _gather_subset=None):
    """The engine's per-socket loop alone: TcpAggregate.consume_netlink over a dump captured once.

    The dump (connections of both families, as the engine asks for them) is received before
    the warm-up, so the timed call is Python work only: no kernel time, no receive.
    """
    _netlink, counting = counting_modules(collections)

    def aggregate(ports):
        try:
            tcp = counting.TcpAggregate((1024, 65535))
        except TypeError:  # a --baseline tree from before the listening ports were set after the listener dump
            tcp = counting.TcpAggregate(frozenset(), (1024, 65535))
        tcp.listen_ports = ports
        return tcp

    listeners = aggregate(frozenset())
    buffers = []

    def keep(buf, length):
        buffers.append((buf, length))
        return counting.each_message(buf, length, lambda _buf, _off: None)

    for family in (socket.AF_INET, socket.AF_INET6):
        _netlink.dump(family, socket.IPPROTO_TCP, counting.LISTEN_MASK, listeners.consume_listeners)
    ports = frozenset(item["port"] for item in listeners.listeners)
    for family in (socket.AF_INET, socket.AF_INET6):
        _netlink.dump(family, socket.IPPROTO_TCP, counting.CONNECTION_MASK, keep)

    def call():
        tcp = aggregate(ports)
        for buf, length in buffers:
            tcp.consume_netlink(buf, length)
        return tcp
    return call, lambda tcp: {"sockets": sum(sum(counts) for counts in tcp.family_states.values())}


CALLS = {"engine": engine_call, "floor": floor_call, "floor_raw": floor_raw_call, "psutil": psutil_call,
         "hotloop": hotloop_call}


def profile(collections):
    import cProfile
    import pstats
    call, _summary = engine_call(collections)
    call()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(call)
    print("one warm engine.gather() under cProfile: %.0f ms (profiling slows Python code down)"
          % ((time.perf_counter() - started) * 1000))
    stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)


def cpu_seconds():
    """User and system time of this process and of the children it reaped (the engine's relay process)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main():
    what, collections = sys.argv[1], sys.argv[2]
    gather_subset = sys.argv[3].split(",") if len(sys.argv) > 3 else None
    if what == "profile":
        profile(collections)
        return
    call, summary = CALLS[what](collections, gather_subset)
    call()  # warm-up
    cpu_started = cpu_seconds()
    started = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - started
    answer = {"seconds": seconds, "cpu": cpu_seconds() - cpu_started}
    answer.update(summary(result))
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
