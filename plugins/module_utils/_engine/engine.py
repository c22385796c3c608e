# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The netstate engine: TCP/UDP socket facts from netlink sock_diag, /proc as fallback.

Plain Python (standard library only, no ansible import, Python 3.8+): the modules, the
collector command and the benchmarks all call gather(). It checks its options (_options),
picks the backend and runs the dumps here, counts them (_aggregate), finds the listeners'
processes (_listeners) and reads routes and multicast groups (_routes).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import errno
import os
import socket
import time

from . import _cgroup as cgroup
from . import _escape as escape
from . import _listeners as listener_walk
from . import _netlink as netlink
from . import _procfs as procfs
from . import _routes as routes
from ._aggregate import CONNECTION_MASK, FAMILIES, LISTEN, LISTEN_MASK, SPILL_KEYS, UDP_ALL_MASK, TcpAggregate, \
    UdpAggregate, add_proc_entries
from ._argspec import BACKENDS, DEFAULTS
from ._netlink import DUMP_ATTEMPTS
from ._options import GatherError, check_count, check_int, check_namespace, check_seconds, resolve_namespace, \
    resolve_subset


# ---------------------------------------------------------------- backends

# A TCP table of at least RELAY_MIN_SOCKETS sockets (/proc/net/sockstat and sockstat6: in use, TIME_WAIT) has
# its connection dumps received by a child process while this one counts (_netlink.Relay), from the second
# receive buffer on; below it a fork costs more than running the kernel's part and the counting side by side
# saves (measured on tables of full sockets, whose counting is fastest: docs/performance.md).
RELAY_MIN_SOCKETS = 24000
RELAY_AFTER = 1


def relay_after(proc):
    """RELAY_AFTER when this namespace's TCP table is large enough for a relay, else None (also when sockstat
    cannot be read: then the dumps run in-process as they always could)."""
    counts = {}
    try:
        for name in ("sockstat", "sockstat6"):
            counts.update(procfs.parse_sockstat(procfs.read_text(os.path.join(proc, "net", name))))
    except (IOError, OSError, procfs.ProcFormatError):
        return None
    size = counts.get("TCP_inuse", 0) + counts.get("TCP6_inuse", 0) + counts.get("TCP_tw", 0)
    return RELAY_AFTER if size >= RELAY_MIN_SOCKETS else None


def _netlink_gather(tcp, udp, units=None, relay=None):
    """The TCP listener, TCP connection and UDP dumps of both families, one after the other: listeners
    first, as counting connections needs their ports; the connections of both families in one walk of the
    kernel's table (netlink.TCPDIAG_GETSOCK). units (a cgroup.UnitCounter, subset units) counts
    the TCP replies after the aggregation has. relay: the connection dumps' relay_after (see relay_after())."""
    consume_listeners, consume_connections = tcp.consume_listeners, tcp.consume_netlink
    if units is not None:
        consume_listeners, consume_connections = units.wrap(consume_listeners), units.wrap(consume_connections)
    for family, _label in FAMILIES:
        netlink.dump(family, netlink.IPPROTO_TCP, LISTEN_MASK, consume_listeners)
    tcp.listen_ports = frozenset(item["port"] for item in tcp.listeners)
    netlink.dump(None, netlink.IPPROTO_TCP, CONNECTION_MASK, consume_connections, relay_after=relay)
    for family, _label in FAMILIES:
        netlink.dump(family, netlink.IPPROTO_UDP, UDP_ALL_MASK, udp.consume_netlink)


def proc_table(proc, name, family, required):
    """The parsed rows of /proc/net/<name>; [] for a missing optional table (IPv6 disabled)."""
    path = os.path.join(proc, "net", name)
    try:
        text = procfs.read_text(path)
    except (IOError, OSError) as exc:
        if required:
            raise GatherError("cannot read %s: %s" % (path, exc))
        return []
    try:
        return list(procfs.parse_proc_net(text, family))
    except procfs.ProcFormatError as exc:
        raise GatherError("%s: %s" % (path, exc))


def _proc_gather(tcp, udp, proc):
    parsed = [(family, proc_table(proc, name, family, family == socket.AF_INET))
              for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6))]
    tcp.listen_ports = frozenset(e[2] for _family, entries in parsed for e in entries if e[0] == LISTEN)
    for family, entries in parsed:
        add_proc_entries(tcp, family, entries)
    tcp.spill_if_full()
    for name, family in (("udp", socket.AF_INET), ("udp6", socket.AF_INET6)):
        for entry in proc_table(proc, name, family, False):
            udp.add_proc(family, entry)


def netlink_attempts(backend, warnings, attempt):
    """attempt() (one whole netlink read, returning its result) until a try is not interrupted.
    None when backend is auto and netlink is unavailable (the warning said once); GatherError when
    backend is netlink and it is, when netlink fails, or when every try was interrupted."""
    if backend not in ("auto", "netlink"):
        return None
    last = None
    for _attempt in range(DUMP_ATTEMPTS):
        try:
            return attempt()
        except netlink.DumpInterrupted as exc:
            last = exc
        except netlink.NetlinkUnavailable as exc:
            if backend == "netlink":
                raise GatherError("backend=netlink: %s" % exc)
            warning = "netlink sock_diag unavailable (%s); using /proc/net" % exc
            if warning not in warnings:  # once, not once per namespace
                warnings.append(warning)
            return None
        except netlink.NetlinkError as exc:
            raise GatherError(str(exc))
    raise GatherError("netlink dump interrupted %d times in a row (%s): the socket table changes too fast; "
                      "retry or use backend=proc" % (DUMP_ATTEMPTS, last))


def _collect_sockets(backend, top_sockets, want_inodes, proc, warnings, spill_keys=SPILL_KEYS, want_units=False):
    """Run the dumps (retrying an interrupted one) and return (backend_used, tcp, udp, units): units a
    cgroup.UnitCounter when want_units, else None."""
    port_range = procfs.read_port_range(proc)

    def attempt():
        tcp = TcpAggregate(port_range, top_sockets, want_inodes, spill_keys)
        udp = UdpAggregate(top_sockets)
        units = cgroup.UnitCounter(proc) if want_units else None
        _netlink_gather(tcp, udp, units, relay_after(proc))
        return tcp, udp, units

    read = netlink_attempts(backend, warnings, attempt)
    if read is not None:
        return ("netlink",) + read
    # /proc/net has no cgroup ids: the units of the sockets' processes (their inodes kept for the walk)
    tcp = TcpAggregate(port_range, top_sockets, want_inodes or want_units, spill_keys)
    udp = UdpAggregate(top_sockets)
    _proc_gather(tcp, udp, proc)
    units = None
    if want_units:
        units = cgroup.UnitCounter(proc)
        units.add_inode_states(tcp.inode_states)
    return "proc", tcp, udp, units


# ---------------------------------------------------------------- entry point

# The checked options of one gather(), the same for every namespace it visits.
GatherOptions = collections.namedtuple(
    "GatherOptions", "gather_subset top sample_interval backend max_sockets proc walk_budget walk_all_namespaces "
    "local_ports_limit listeners_limit spill_keys")


def gather(gather_subset=None, top=10, sample_interval=0, namespace=None, backend="auto", max_sockets=1000,
           warnings=None, proc="/proc", run_netns="/run/netns", walk_budget=None, walk_all_namespaces=False,
           local_ports_limit=DEFAULTS["local_ports_limit"], listeners_limit=DEFAULTS["listeners_limit"],
           spill_keys=SPILL_KEYS):
    """Gather the ansible_facts.netstate document (see docs/facts-contract.md).

    warnings, when a list, receives one line per thing the caller should tell the user.
    walk_budget caps the file descriptors the listener walk reads (None: the walk may take
    _listeners.WALK_TIME_SHARE of the dumps' time, at least WALK_TIME_FLOOR seconds);
    walk_all_namespaces lets it read processes of other network namespaces too. local_ports_limit: the ports of
    tcp.local_ports listed one by one (TcpAggregate.local_ports). listeners_limit: the most entries of
    `listeners`, the fullest accept queues first, the rest summed in `listeners_rest` (None: every
    listener, as listener_facts needs; the walk looks only for the processes of the listeners kept).
    spill_keys (internal, for tests):
    the distinct keys counted in dicts before they are spilled into records (KeyRecords).
    Raises GatherError with a message naming the option, value or file involved.
    """
    if warnings is None:
        warnings = []
    options = check_options(gather_subset=gather_subset, top=top, sample_interval=sample_interval,
                            namespace=namespace, backend=backend, max_sockets=max_sockets, proc=proc,
                            walk_budget=walk_budget, walk_all_namespaces=walk_all_namespaces,
                            local_ports_limit=local_ports_limit, listeners_limit=listeners_limit,
                            spill_keys=spill_keys)
    if namespace == "all":
        facts = _gather_here(options, procfs.own_namespace_label(proc, run_netns), warnings)
        facts["namespaces"] = []
        for label, path in procfs.find_namespaces(proc, run_netns):
            try:
                facts["namespaces"].append(_gather_in(options, path, label, warnings))
            except _Vanished as exc:
                # found a moment ago and gone now (a container stopped, `ip netns del`): the others still count
                warnings.append("namespace %s: left out, it went away while the namespaces were read (%s)"
                                % (label, exc))
        return facts
    label, path = resolve_namespace(namespace, run_netns, proc)
    if path is None:
        return _gather_here(options, procfs.own_namespace_label(proc, run_netns), warnings)
    return _gather_in(options, path, label, warnings)


def check_options(gather_subset=None, top=10, sample_interval=0, namespace=None, backend="auto", max_sockets=1000,
                  proc="/proc", walk_budget=None, walk_all_namespaces=False,
                  local_ports_limit=DEFAULTS["local_ports_limit"], listeners_limit=DEFAULTS["listeners_limit"],
                  spill_keys=SPILL_KEYS):
    """gather()'s options checked, without reading anything: the GatherOptions, or GatherError naming the
    option and the value. gather() calls it first; a caller that gathers again and again (the event source
    netstate.tcp.tcp_health) calls it once before the first time."""
    gather_subset = resolve_subset(gather_subset)
    top = check_count("top", top)
    max_sockets = check_count("max_sockets", max_sockets)
    sample_interval = check_seconds("sample_interval", sample_interval)
    if backend not in BACKENDS:
        raise GatherError("backend: %s is not one of %s" % (escape.bounded_repr(backend), ", ".join(BACKENDS)))
    if walk_budget is not None:
        walk_budget = check_count("walk_budget", walk_budget)
    local_ports_limit = check_count("local_ports_limit", local_ports_limit)
    if listeners_limit is not None:
        listeners_limit = check_count("listeners_limit", listeners_limit)
    spill_keys = check_int("spill_keys", spill_keys, 0)
    check_namespace(namespace)
    return GatherOptions(
        gather_subset=gather_subset, top=top, sample_interval=sample_interval, backend=backend, max_sockets=max_sockets,
        proc=proc, walk_budget=walk_budget, walk_all_namespaces=bool(walk_all_namespaces),
        local_ports_limit=local_ports_limit, listeners_limit=listeners_limit, spill_keys=spill_keys)


class _Vanished(GatherError):
    """A namespace that could not be entered because it is gone (ENOENT, or EINVAL: the file is no
    longer a namespace)."""


def _gather_in(options, path, label, warnings):
    try:
        with procfs.NetNamespace(path):
            return _gather_here(options, label, warnings)
    except (IOError, OSError) as exc:
        error = _Vanished if exc.errno in (errno.ENOENT, errno.EINVAL) else GatherError
        # a refused file's reason (_files.FileRefused.reason) does not repeat the path
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise error("namespace %s: cannot enter %s: %s" % (label, path, reason))


def _gather_here(options, label, warnings):
    started = time.time()
    want = set(options.gather_subset)
    proc, top, sample_interval = options.proc, options.top, options.sample_interval
    counters_before = None
    if "counters" in want and sample_interval:
        counters_before = _read_counters(proc)
        sample_started = time.time()
    dump_started = time.monotonic()
    backend_used, tcp, udp, units = _collect_sockets(
        options.backend, options.max_sockets if "sockets" in want else 0, "processes" in want, proc, warnings,
        options.spill_keys, "units" in want)
    dump_seconds = time.monotonic() - dump_started
    facts = {
        "backend": backend_used,
        "namespace": label,
        "kernel": os.uname()[2],
        "gather_subset": options.gather_subset,
    }
    facts["tcp"] = tcp.states()
    facts["udp"] = {
        "total": udp.families[socket.AF_INET] + udp.families[socket.AF_INET6],
        "families": {"ipv4": udp.families[socket.AF_INET], "ipv6": udp.families[socket.AF_INET6]},
    }
    if "ports" in want:
        facts["tcp"]["local_ports"], facts["tcp"]["local_ports_rest"] = tcp.local_ports_bounded(
            options.local_ports_limit, top)
        facts["tcp"]["remote_ports"] = tcp.remote_ports(top)
        facts["tcp"]["ephemeral"] = tcp.ephemeral(top)
    if "peers" in want:
        facts["tcp"]["peers"] = tcp.peers(top)
    if "timers" in want:
        facts["tcp"]["timers"] = tcp.timer_counts()
        facts["tcp"]["queues"] = tcp.queues(top)
        facts["tcp"]["retransmitting"] = tcp.retransmitting(top)
    inode_pids = None
    if "listeners" in want or "processes" in want:
        listeners, account, inode_pids, rest = listener_walk.listener_rows(
            tcp, udp, options, "processes" in want, warnings, dump_seconds)
        if "listeners" in want:
            for item in listeners:
                del item["inode"]
            facts["listeners"] = listeners
            facts["listeners_rest"] = rest
            facts["listener_walk"] = account
        if "processes" in want:
            facts["processes"] = listener_walk.processes(tcp, inode_pids, proc)
    if "units" in want:
        facts["units"] = units.units(lambda inodes: _owners(inodes, inode_pids, options), warnings)
    if "counters" in want:
        if counters_before is not None:
            remaining = sample_interval - (time.time() - sample_started)
            if remaining > 0:
                time.sleep(remaining)
            counters = _read_counters(proc)
            interval = time.time() - sample_started
            counters["interval"] = round(interval, 3)
            counters["rates"] = procfs.rates(counters_before, counters, interval)
        else:
            counters = _read_counters(proc)
        counters["sysctl"] = procfs.read_sysctls(proc)
        facts["counters"] = counters
    if "routes" in want:
        facts["routes"] = routes.read_routes()
    if "multicast" in want:
        facts["multicast"] = routes.read_multicast(proc)
    if "sockets" in want:
        facts["sockets"] = (tcp.sockets + udp.sockets)[:options.max_sockets]
        facts["sockets_truncated"] = tcp.sockets_seen + len(udp.sockets) > options.max_sockets
    facts["duration_ms"] = round((time.time() - started) * 1000, 1)
    return facts


def _owners(inodes, inode_pids, options):
    """inode -> pid (the lowest holding it) for the sockets the units fall back to the process walk for: from the
    walk of subset processes when it ran, else a walk of its own."""
    if inode_pids is not None:
        return {inode: min(inode_pids[inode]) for inode in inodes if inode_pids.get(inode)}
    return listener_walk.map_socket_inodes(inodes, proc=options.proc, budget=options.walk_budget,
                                           all_namespaces=options.walk_all_namespaces).owners


def _read_counters(proc):
    try:
        return procfs.read_counters(proc)
    except (IOError, OSError) as exc:
        raise GatherError("cannot read kernel counters: %s" % exc)
    except procfs.ProcFormatError as exc:
        raise GatherError("kernel counters: %s" % exc)
