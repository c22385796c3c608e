# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The netstate engine: TCP/UDP socket facts from netlink sock_diag, /proc as fallback.

Plain Python (standard library only, no ansible import, Python 3.8+): the modules, the
collector command and the benchmarks all call gather(). One pass over each dump
aggregates into a few counting dicts; no Python object is made per socket unless the
raw socket list or the per-process view was asked for.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import errno
import heapq
import itertools
import os
import re
import socket
import struct
import time

from . import _netlink as netlink
from . import _procfs as procfs
from . import _escape as escape
from . import _rtnetlink as rtnetlink
from ._address import address_text as _address_text
from ._address import plain_raw as _plain_raw
from ._address import plain_text as _printable
from ._argspec import BACKENDS, DEFAULT_SUBSET, DEFAULTS, RANGES, SUBSET_GROUPS, SUBSETS, range_text
from ._argspec import TCP_STATES as STATES

_ntoa, _ntop = socket.inet_ntoa, socket.inet_ntop

# Kernel TCP state numbers (include/net/tcp_states.h): 1..11 in STATES' order, 12 NEW_SYN_RECV.
STATE_NAMES = (None,) + STATES + ("SYN_RECV",)
ESTABLISHED = 1
TIME_WAIT = 6
TCP_CLOSE = 7
LISTEN = 10
NEW_SYN_RECV = 12
# Every state a connection can be in (1..12); 13 (BOUND_INACTIVE) is a bound, unused socket.
TCP_ALL_MASK = 0x1FFE
LISTEN_MASK = 1 << LISTEN
CONNECTION_MASK = TCP_ALL_MASK & ~LISTEN_MASK
UDP_ALL_MASK = 0xFFFFFFFF

DUMP_ATTEMPTS = 3

FAMILIES = ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6"))


class GatherError(Exception):
    """Facts could not be gathered; the message names the option, value or file involved."""


# ---------------------------------------------------------------- options

def resolve_subset(requested):
    """Turn gather_subset (like setup's: names, 'all', '!name') into a sorted list of names."""
    if requested is None:
        return sorted(DEFAULT_SUBSET)
    if isinstance(requested, str):
        requested = [part.strip() for part in requested.split(",") if part.strip()]
    if not isinstance(requested, (list, tuple)):
        raise GatherError("gather_subset: %s is not a list of subset names" % escape.bounded_repr(requested))
    chosen = set()
    excluded = set()
    only_negations = True
    for item in requested:
        if not isinstance(item, str):
            raise GatherError("gather_subset: %s is not a subset name" % escape.bounded_repr(item))
        negate = item.startswith("!")
        name = item[1:] if negate else item
        if name in SUBSET_GROUPS:
            names = set(SUBSET_GROUPS[name])
        elif name in SUBSETS:
            names = {name}
        else:
            raise GatherError("gather_subset: unknown subset %s (choose from %s, or !name)"
                              % (escape.bounded_repr(item), ", ".join(tuple(SUBSET_GROUPS) + SUBSETS)))
        if negate:
            excluded |= names
        else:
            only_negations = False
            chosen |= names
    if only_negations:
        chosen = set(DEFAULT_SUBSET)
    chosen -= excluded
    chosen.add("states")
    return sorted(chosen)


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise GatherError("%s: %s is not an integer" % (name, escape.bounded_repr(value)))
    if value < low or (high is not None and value > high):
        raise GatherError("%s: %s is out of range (%s)" % (name, escape.bounded_repr(value), range_text(low, high)))
    return value


# The checks of the numeric options of RANGES, the one validation gather(), the modules (through it) and
# the collector's argparse types share.

def check_count(name, value):
    """value, an integer within RANGES[name]; GatherError naming the option otherwise."""
    return _check_int(name, value, *RANGES[name])


def check_seconds(name, value):
    """value, a number of seconds within RANGES[name] (NaN is not); GatherError naming the option otherwise."""
    low, high = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise GatherError("%s: %s must be a number of seconds from %d to %d"
                          % (name, escape.bounded_repr(value), low, high))
    return value


#: The namespace option's grammar, the one the modules and the collector's --namespace share: host
#: (or self), all, pid:N, a name under /run/netns as `ip netns` makes them, or an absolute path
#: with no "." or ".." component. What a name or path opens is checked again when it is entered:
#: it must be a namespace file (nsfs), never a FIFO or an ordinary file (_files.open_namespace).
NAMESPACE_RE = re.compile(r"(host|self|all|pid:[1-9][0-9]{0,9}|[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
                          r"|/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,31})")  # fullmatch: "$" admits a final newline
NAMESPACE_CHOICES = "host, all, pid:N, a name under /run/netns or an absolute path"


def check_namespace(namespace):
    """The namespace option as given, or GatherError naming it when it is outside the grammar."""
    if namespace is None or namespace == "":
        return namespace
    if not isinstance(namespace, str):
        raise GatherError("namespace: %s is not a string" % escape.bounded_repr(namespace))
    if (not NAMESPACE_RE.fullmatch(namespace) or len(namespace) > 4096
            or any(part in (".", "..") for part in namespace.split("/")[1:])):
        if namespace.startswith("pid:"):
            raise GatherError("namespace: %s: expected pid:<number>" % escape.bounded_repr(namespace))
        raise GatherError("namespace: %s is not a namespace name (%s)"
                          % (escape.bounded_repr(namespace), NAMESPACE_CHOICES))
    return namespace


def resolve_namespace(namespace, run_netns="/run/netns", proc="/proc"):
    """Map the namespace option to (label, path); (None, None) for our own namespace."""
    check_namespace(namespace)
    if namespace in (None, "", "host", "self"):
        return None, None
    if namespace.startswith("pid:"):
        path = os.path.join(proc, namespace[4:], "ns/net")
    elif namespace.startswith("/"):
        path = namespace
    else:
        path = os.path.join(run_netns, namespace)
    if not os.path.lexists(path):
        raise GatherError("namespace: %r not found (%s does not exist)" % (namespace, path))
    return namespace, path


# ---------------------------------------------------------------- aggregation

def _zero_states():
    return dict.fromkeys(STATES, 0)


def _states_from(counts):
    """counts indexed by kernel state number -> zero-filled dict by name (NEW_SYN_RECV -> SYN_RECV)."""
    states = _zero_states()
    for number, count in enumerate(counts):
        if count and 0 < number < len(STATE_NAMES):
            states[STATE_NAMES[number]] += count
    return states


def each_message(buf, length, visit):
    """Call visit(buf, off) for every sock_diag message of a receive buffer.

    Returns the offset of the first control message (NLMSG_DONE/ERROR) or None, as
    netlink.take() expects of a consumer; a length field that cannot be right is a
    NetlinkError naming its offset. The TCP connection loop does the same walk and check
    inline, because it runs once per socket on busy hosts.
    """
    unpack = netlink.MSG_HEAD.unpack_from
    off = 0
    while off < length:
        msg_len, msg_type = unpack(buf, off)
        if msg_type != netlink.SOCK_DIAG_BY_FAMILY:
            return off
        if msg_len < netlink.MSG_MIN_LEN or off + msg_len > length:
            raise netlink.malformed(off, msg_len, length)
        visit(buf, off)
        off += (msg_len + 3) & ~3
    return None


def _port(buf, at):
    return (buf[at] << 8) | buf[at + 1]


def _u32(buf, at):
    return int.from_bytes(buf[at:at + 4], "little")


def _peer_raw(buf, off):
    """The raw remote address of a message: 4 bytes for IPv4, 16 for IPv6."""
    start = off + netlink.OFF_DST
    return buf[start:start + netlink.ADDRESS_WIDTH[buf[off + netlink.OFF_FAMILY]]]


def decode_message(buf, off):
    """Every field of one inet_diag_msg, for the few sockets kept whole (listeners, raw lists)."""
    family = buf[off + netlink.OFF_FAMILY]
    width = netlink.ADDRESS_WIDTH[family]
    src = off + netlink.OFF_SRC
    return {
        "protocol": "tcp", "family": "ipv4" if family == socket.AF_INET else "ipv6",
        "state": buf[off + netlink.OFF_STATE],
        "local_address": _address_text(buf[src:src + width]),
        "local_port": _port(buf, off + netlink.OFF_SPORT),
        "remote_address": _address_text(_peer_raw(buf, off)),
        "remote_port": _port(buf, off + netlink.OFF_DPORT),
        "recv_q": _u32(buf, off + netlink.OFF_RQUEUE),
        "send_q": _u32(buf, off + netlink.OFF_WQUEUE),
        "uid": _u32(buf, off + netlink.OFF_UID),
        "inode": _u32(buf, off + netlink.OFF_INODE),
    }


# ---------------------------------------------------------------- many distinct keys

# The distinct keys the counting dicts of one dump may hold (about 100 bytes each) before they
# are spilled into KeyRecords (11 bytes an IPv4 key, 23 an IPv6 one); hosts with fewer never spill.
SPILL_KEYS = 1 << 16
SPILL_PARTITIONS = 256
# The kind of a record: a server-side peer in state s is kind s, a client-side destination
# CLIENT_KIND + s; a retransmitting peer has one record of each RETRANS kind; PeerCounter's PEER_KIND.
CLIENT_KIND = 16
RETRANS_SOCKETS = 32
RETRANS_COUNT = 33
PEER_KIND = 0
RECORD = {4: struct.Struct("=4sHBI"), 16: struct.Struct("=16sHBI")}
# Records are summed (KeyRecords.spilled) only past this many times spill_keys (8 x 65,536 records
# are 6-12 MiB): below it, summing duplicates costs more time than the memory it gives back.
COMPACT_FACTOR = 8


class KeyRecords:
    """Counted keys (address, port, kind) -> count as fixed-width records, one bytearray per address
    width and partition (the address's hash), so that finishing needs the dict of one partition at a
    time. A key may be in several records (one per spill) until spilled() sums them; it does when the
    records are more than twice as many as after the last time and more than COMPACT_FACTOR times
    spill_keys, so they stay within twice the distinct keys (plus one spill) or that many."""

    def __init__(self, spill_keys, partitions=SPILL_PARTITIONS):
        self.parts = [bytearray() for _part in range(2 * partitions)]
        self.mask = partitions - 1
        self.spill_keys = spill_keys
        self.compact_records = COMPACT_FACTOR * spill_keys
        self.records = 0
        self.compacted = 0

    def add(self, address, port, kind, count):
        """address: plain raw bytes (4 or 16)."""
        wide = len(address) == 16
        self.parts[(hash(address) & self.mask) << 1 | wide] += RECORD[len(address)].pack(address, port, kind, count)
        self.records += 1

    def add_peers(self, peers, kind):
        """add(address, 0, kind, count) for each raw address -> count of a dict (addresses made plain)."""
        parts, mask, pack4, pack16 = self.parts, self.mask, RECORD[4].pack, RECORD[16].pack
        for address, count in peers.items():
            if len(address) != 4:
                address = _plain_raw(address)
            if len(address) == 4:
                parts[(hash(address) & mask) << 1] += pack4(address, 0, kind, count)
            else:
                parts[(hash(address) & mask) << 1 | 1] += pack16(address, 0, kind, count)
        self.records += len(peers)

    def spilled(self):
        """Called after each spill: sum the duplicate keys when they have piled up."""
        if self.records > max(2 * self.compacted + self.spill_keys, self.compact_records):
            self.records = 0
            for index in range(0, len(self.parts), 2):
                counts = {}
                for address, port, kind, count in self.partition(index >> 1):
                    key = (address, port, kind)
                    counts[key] = counts.get(key, 0) + count
                self.parts[index] = bytearray()
                self.parts[index + 1] = bytearray()
                for (address, port, kind), count in counts.items():
                    self.add(address, port, kind, count)
            self.compacted = self.records

    def partition(self, number):
        """The (address, port, kind, count) records of one partition, duplicates not summed."""
        return itertools.chain.from_iterable(RECORD[width].iter_unpack(self.parts[number << 1 | wide])
                                             for width, wide in ((4, 0), (16, 1)))

    def partitions(self):
        for number in range(self.mask + 1):
            yield self.partition(number)


# Where the remote address starts in a client-side key (the bytes of a message from OFF_DPORT on).
CLIENT_KEY_DST = netlink.OFF_DST - netlink.OFF_DPORT


class TcpAggregate:
    """Counts for one TCP dump, kept as integers and small dicts until finish()."""

    def __init__(self, port_range, want_sockets=0, want_inodes=False, spill_keys=SPILL_KEYS):
        # the ports of this host's TCP listeners: set from the listener dump before connections count
        self.listen_ports = frozenset()
        self.low, self.high = port_range
        # Counts by (state, idiag_timer) in one list per family, indexed state | timer << 4: one
        # increment per socket for both. states() and timer_counts() fold them.
        self.family_states = {socket.AF_INET: [0] * 4096, socket.AF_INET6: [0] * 4096}
        # server side: port -> [count per state]; peers seen from the server side
        self.local = {}
        self.server_peers = [None] + [{} for _state in range(15)]
        # client side, per state: key bytes (dport, src, dst: the message from OFF_DPORT on) -> count
        self.client = [None] + [{} for _state in range(15)]
        self.listeners = []
        self.want_sockets = want_sockets
        self.sockets = []
        self.sockets_seen = 0
        self.inode_states = {} if want_inodes else None
        self._summary = None
        # past spill_keys distinct keys in server_peers, client and retransmits, they go to records
        self.spill_keys = spill_keys
        self.records = None
        # recv_bytes, send_bytes, recv_sockets, send_sockets over non-LISTEN sockets
        self.queue_totals = [0, 0, 0, 0]
        # (port, side) -> [sockets, bytes, stalled] of sockets with a send queue
        self.send_ports = {}
        # raw peer address -> [sockets, retransmits] of sockets with a retransmission under way
        self.retransmits = {}

    def consume_netlink(self, buf, length):
        stop = self._consume_netlink(buf, length)
        self.bound()
        return stop

    def bound(self):
        """Spill the counting dicts into records once they hold more than spill_keys distinct keys."""
        held = len(self.retransmits)
        for state in range(1, 16):
            held += len(self.server_peers[state]) + len(self.client[state])
        if held > self.spill_keys:
            self._spill()

    def _spill(self):
        if self.records is None:
            self.records = KeyRecords(self.spill_keys)
        add = self.records.add
        for state in range(1, 16):
            peers = self.server_peers[state]
            self.records.add_peers(peers, state)
            peers.clear()
            # the source address is in a client key only to make it one slice
            destinations = {}
            for key, count in self.client[state].items():
                key = key[:2] + key[CLIENT_KEY_DST:]
                destinations[key] = destinations.get(key, 0) + count
            self.client[state].clear()
            for key, count in destinations.items():
                add(_plain_raw(key[2:]), _port(key, 0), CLIENT_KIND + state, count)
        for raw, (sockets, retransmits) in self.retransmits.items():
            add(raw, 0, RETRANS_SOCKETS, sockets)
            add(raw, 0, RETRANS_COUNT, retransmits)
        self.retransmits.clear()
        self.records.spilled()

    # The hot loop: one call per receive buffer of the connection dump.
    def _consume_netlink(self, buf, length):
        unpack = netlink.MSG_FIXED.unpack_from
        listen_ports = self.listen_ports
        family_states = self.family_states
        local = self.local
        server_peers = self.server_peers
        client = self.client
        detail = self.want_sockets or self.inode_states is not None
        # the offsets as locals: the loop runs once per socket
        data_type, min_len, ipv4 = netlink.SOCK_DIAG_BY_FAMILY, netlink.MSG_MIN_LEN, socket.AF_INET
        sport_at, dport_at, dst_at = netlink.OFF_SPORT, netlink.OFF_DPORT, netlink.OFF_DST
        sport_low, dst_end4, dst_end6 = sport_at + 1, dst_at + 4, dst_at + 16
        off = 0
        while off < length:
            try:
                msg_len, msg_type, family, state, timer, retrans, rqueue, wqueue = unpack(buf, off)
            except struct.error:
                return off  # less than a whole inet_diag_msg left: the 20-byte NLMSG_DONE
            if msg_type != data_type:
                return off
            if msg_len < min_len or off + msg_len > length:
                raise netlink.malformed(off, msg_len, length)
            family_states[family][state | timer << 4] += 1
            sport = (buf[off + sport_at] << 8) | buf[off + sport_low]
            dst_end = off + (dst_end4 if family == ipv4 else dst_end6)
            if sport in listen_ports:
                counts = local.get(sport)
                if counts is None:
                    counts = local[sport] = [0] * 16
                counts[state] += 1
                peers = server_peers[state]
                key = buf[off + dst_at:dst_end]
                peers[key] = peers.get(key, 0) + 1
            else:
                # dport, src, dst in one slice: one dict operation for ports, peers and ephemeral use.
                side = client[state]
                key = buf[off + dport_at:dst_end]
                side[key] = side.get(key, 0) + 1
            if rqueue or wqueue or retrans:
                # rare on most hosts: data waiting, or a retransmission/probe under way
                if sport in listen_ports:
                    port, side_name = sport, "local"
                else:
                    port, side_name = _port(buf, off + dport_at), "remote"
                self._queued(port, side_name, buf[off + dst_at:dst_end], timer, retrans, rqueue, wqueue)
            if detail:
                self._detail(buf, off, state)
            off += (msg_len + 3) & ~3
        return None

    def _queued(self, port, side, peer, timer, retrans, rqueue, wqueue):
        """Queues and retransmissions of one non-LISTEN socket that has any."""
        totals = self.queue_totals
        retransmitting = timer == netlink.TIMER_RETRANSMIT and retrans > 0
        if rqueue:
            totals[0] += rqueue
            totals[2] += 1
        if wqueue:
            totals[1] += wqueue
            totals[3] += 1
            entry = self.send_ports.get((port, side))
            if entry is None:
                entry = self.send_ports[(port, side)] = [0, 0, 0]
            entry[0] += 1
            entry[1] += wqueue
            if retransmitting or timer == netlink.TIMER_ZERO_WINDOW_PROBE:
                entry[2] += 1
        if retransmitting:
            peer = _plain_raw(peer)
            entry = self.retransmits.get(peer)
            if entry is None:
                entry = self.retransmits[peer] = [0, 0]
            entry[0] += 1
            entry[1] += retrans

    def _detail(self, buf, off, state):
        decoded = decode_message(buf, off)
        if self.inode_states is not None:
            self.inode_states[decoded["inode"]] = state
        self.sockets_seen += 1
        if len(self.sockets) < self.want_sockets:
            decoded["state"] = STATE_NAMES[state]
            self.sockets.append(decoded)

    def consume_listeners(self, buf, length):
        return each_message(buf, length, self._add_listener)

    def _add_listener(self, buf, off):
        decoded = decode_message(buf, off)
        self.family_states[buf[off + netlink.OFF_FAMILY]][LISTEN] += 1
        self.listeners.append({
            "protocol": "tcp", "family": decoded["family"], "address": decoded["local_address"],
            "port": decoded["local_port"], "queue": decoded["recv_q"], "backlog": decoded["send_q"],
            "uid": decoded["uid"], "inode": decoded["inode"],
        })
        if self.inode_states is not None or self.want_sockets:
            self._detail(buf, off, LISTEN)

    # /proc fallback: same counts from parsed lines.
    def add_proc(self, family, entry):
        state, laddr, lport, raddr, rport, tx_q, rx_q, uid, inode, timer, retrans = entry
        if state == LISTEN:
            self.family_states[family][LISTEN] += 1
            self.listeners.append({
                "protocol": "tcp", "family": "ipv4" if family == socket.AF_INET else "ipv6",
                "address": _printable(laddr), "port": lport, "queue": rx_q, "backlog": None,
                "uid": uid, "inode": inode,
            })
        else:
            if state >= 16:
                return
            self.family_states[family][state | (timer & 0xFF) << 4] += 1
            peer = socket.inet_pton(socket.AF_INET6 if ":" in raddr else socket.AF_INET, raddr)
            if lport in self.listen_ports:
                counts = self.local.setdefault(lport, [0] * 16)
                counts[state] += 1
                peers = self.server_peers[state]
                peers[peer] = peers.get(peer, 0) + 1
                port, side_name = lport, "local"
            else:
                src = socket.inet_pton(socket.AF_INET6 if ":" in laddr else socket.AF_INET, laddr)
                key = rport.to_bytes(2, "big") + src.ljust(16, b"\0") + peer
                side = self.client[state]
                side[key] = side.get(key, 0) + 1
                port, side_name = rport, "remote"
            if rx_q or tx_q or retrans:
                self._queued(port, side_name, peer, timer, retrans, rx_q, tx_q)
        if self.inode_states is not None:
            self.inode_states[inode] = state
        self.sockets_seen += 1
        if len(self.sockets) < self.want_sockets:
            self.sockets.append({
                "protocol": "tcp", "family": "ipv4" if family == socket.AF_INET else "ipv6",
                "state": STATE_NAMES[state], "local_address": _printable(laddr), "local_port": lport,
                "remote_address": _printable(raddr), "remote_port": rport,
                "recv_q": rx_q, "send_q": tx_q, "inode": inode, "uid": uid,
            })

    # ------------------------------------------------------------ results

    def states(self):
        by_state = {family: [sum(counts[state::16]) for state in range(16)]
                    for family, counts in self.family_states.items()}
        total_counts = [a + b for a, b in zip(by_state[socket.AF_INET], by_state[socket.AF_INET6])]
        families = {}
        for family, label in FAMILIES:
            states = _states_from(by_state[family])
            families[label] = {"total": sum(states.values()), "states": states}
        states = _states_from(total_counts)
        return {"total": sum(states.values()), "states": states, "families": families}

    def local_ports_bounded(self, limit, top=10):
        """(local_ports, local_ports_rest): every port with a listener, or with more than limit ports the
        limit busiest (most sockets, ties by lower port) and, for each state, the top ports with the most
        sockets in it (so the worst port of each state is always listed); the other ports summed in rest."""
        listening = {}
        for item in self.listeners:
            listening[item["port"]] = listening.get(item["port"], 0) + 1
        entries = {}
        for port in self.listen_ports:
            states = _states_from(self.local.get(port, ()))
            states["LISTEN"] = listening.get(port, 0)
            entries[port] = {"total": sum(states.values()), "states": states}
        kept = set(entries)
        if limit is not None and len(entries) > limit:
            kept = set(heapq.nsmallest(limit, entries, key=lambda port: (-entries[port]["total"], port)))
            for state in STATES:
                busy = [port for port in entries if entries[port]["states"][state]]
                kept.update(heapq.nsmallest(top, busy, key=lambda port: (-entries[port]["states"][state], port)))
        rest = {"ports": 0, "total": 0, "states": _zero_states()}
        for port, entry in entries.items():
            if port not in kept:
                rest["ports"] += 1
                rest["total"] += entry["total"]
                for state, count in entry["states"].items():
                    rest["states"][state] += count
        return {str(port): entries[port] for port in sorted(kept)}, rest

    def _records(self):
        """Every counted key as partitions of (plain address, port, kind, count) records: the dicts as
        one partition, or, once they were spilled, what is left of them spilled too and the records."""
        if self.records is not None:
            self._spill()
            return self.records.partitions()
        return [self._dict_records()]

    def _dict_records(self):
        for state in range(1, 16):
            for key, count in self.server_peers[state].items():
                yield _plain_raw(key), 0, state, count
            for key, count in self.client[state].items():
                yield _plain_raw(key[CLIENT_KEY_DST:]), _port(key, 0), CLIENT_KIND + state, count
        for raw, (sockets, retransmits) in self.retransmits.items():
            yield raw, 0, RETRANS_SOCKETS, sockets
            yield raw, 0, RETRANS_COUNT, retransmits

    def summary(self, top):
        """(remote_ports, peers, busiest destination, retransmitting) for top, one partition at a time.

        Within a partition every key of an address is there, so its counts are whole; the top N
        of each partition merge into the exact top N, sorted as _top_entries sorts.
        """
        if self._summary is not None and self._summary[0] == top:
            return self._summary[1]
        per_port = {}
        best_peers = []     # (-total, text, counts)
        best_retrans = []   # ((-sockets, -retransmits), text, None)
        busiest = None      # (connections, (address, port)), time_wait
        counted = len(STATE_NAMES)  # states a peer's total counts (as _states_from)
        for records in self._records():
            # A partition's records twice: totals per peer first, then the states of the few peers that
            # make the top N (most peers of a busy server have a single record).
            if not isinstance(records, list):
                records = list(records)
            per_peer = {}
            per_destination = {}
            retrans = {}
            for address, port, kind, count in records:
                if kind < RETRANS_SOCKETS:
                    state = kind if kind < CLIENT_KIND else kind - CLIENT_KIND
                    per_peer[address] = per_peer.get(address, 0) + (count if state < counted else 0)
                    if kind < CLIENT_KIND:
                        continue
                    counts = per_port.get(port)
                    if counts is None:
                        counts = per_port[port] = [0] * 16
                    counts[state] += count
                    entry = per_destination.get((address, port))
                    if entry is None:
                        entry = per_destination[(address, port)] = [0, 0]
                    entry[0] += count
                    if state == TIME_WAIT:
                        entry[1] += count
                else:
                    entry = retrans.get(address)
                    if entry is None:
                        entry = retrans[address] = [0, 0]
                    entry[kind - RETRANS_SOCKETS] += count
            if per_destination:
                key, (count, time_wait) = max(per_destination.items(), key=lambda item: (item[1][0], item[0]))
                if busiest is None or (count, key) > busiest[0]:
                    busiest = (count, key), time_wait
            best_peers = _merge_best(best_peers, top, [(-total, address, None) for address, total in per_peer.items()])
            new = {_packed(text): [0] * 16 for _total, text, counts in best_peers if counts is None}
            if new:
                for address, _port_number, kind, count in records:
                    if kind < RETRANS_SOCKETS and address in new:
                        new[address][kind if kind < CLIENT_KIND else kind - CLIENT_KIND] += count
                best_peers = [(total, text, new[_packed(text)] if counts is None else counts)
                              for total, text, counts in best_peers]
            best_retrans = _merge_best(best_retrans, top, [
                ((-sockets, -retransmits), address, None) for address, (sockets, retransmits) in retrans.items()])
        peers = [{"address": text, "total": -total, "states": _states_from(counts)}
                 for total, text, counts in best_peers]
        retransmitting = [{"address": text, "sockets": -sockets, "retransmits": -retransmits}
                          for (sockets, retransmits), text, _none in best_retrans]
        self._summary = top, (_top_entries(per_port, top), peers, busiest, retransmitting)
        return self._summary[1]

    def remote_ports(self, top):
        return self.summary(top)[0]

    def peers(self, top):
        return self.summary(top)[1]

    def ephemeral(self, top=10):
        size = max(self.high - self.low + 1, 0)
        found = self.summary(top)[2]
        busiest = None
        if found is not None:
            (count, (raw, port)), time_wait = found
            busiest = {"address": _address_text(raw), "port": port, "connections": count, "time_wait": time_wait,
                       "share": round(count / size, 6) if size else None}
        return {"range": [self.low, self.high], "size": size, "busiest": busiest}

    def timer_counts(self):
        """Non-LISTEN sockets by idiag_timer."""
        timers = [0] * 256
        for counts in self.family_states.values():
            for index, count in enumerate(counts):
                if count and index & 15 != LISTEN:
                    timers[index >> 4] += count
        return {name: timers[number] for number, name in enumerate(netlink.TIMER_NAMES)}

    def queues(self, top):
        recv_bytes, send_bytes, recv_sockets, send_sockets = self.queue_totals
        rows = sorted(self.send_ports.items(), key=lambda item: (-item[1][1], -item[1][0], item[0]))[:top]
        return {
            "recv_bytes": recv_bytes, "send_bytes": send_bytes,
            "recv_sockets": recv_sockets, "send_sockets": send_sockets,
            "send_ports": [{"port": port, "side": side, "sockets": sockets, "bytes": size, "stalled": stalled}
                           for (port, side), (sockets, size, stalled) in rows],
        }

    def retransmitting(self, top):
        return self.summary(top)[3]

    def established_on(self, port):
        counts = self.local.get(port)
        return counts[ESTABLISHED] if counts else 0


def _packed(text):
    """The plain raw bytes of an address _merge_best wrote as text."""
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def _merge_best(best, top, rows):
    """The top smallest of best and rows (rank, raw address, value), the address as text: rows whose rank
    cannot make it are dropped before their address is turned into text (a partition's rows are mostly
    dropped once best is full). Ties of rank go by the text, as _top_entries sorts."""
    if len(best) >= top:
        worst = best[-1][0]
        rows = [row for row in rows if row[0] <= worst]
        if not rows:
            return best
    # the records' addresses are plain already: 4 bytes are IPv4
    return heapq.nsmallest(top, best + [
        (rank, _ntoa(raw) if len(raw) == 4 else _ntop(socket.AF_INET6, raw), value) for rank, raw, value in rows])


def _top_entries(per_key, top):
    """per_key: key -> counts by state number. Top N by total (ties by key), zero-filled states, keyed by
    the key as text."""
    rows = []
    for key, counts in per_key.items():
        states = _states_from(counts)
        rows.append((sum(states.values()), key, states))
    rows.sort(key=lambda row: (-row[0], str(row[1])))
    return {str(key): {"total": total, "states": states} for total, key, states in rows[:top]}


class UdpAggregate:
    def __init__(self, want_sockets=0):
        self.families = {socket.AF_INET: 0, socket.AF_INET6: 0}
        self.listeners = []
        self.want_sockets = want_sockets
        self.sockets = []

    def consume_netlink(self, buf, length):
        return each_message(buf, length, self._add_message)

    def _add_message(self, buf, off):
        self.families[buf[off + netlink.OFF_FAMILY]] += 1
        # Only bound, unconnected sockets (listeners) and the raw list need decoding.
        unconnected = buf[off + netlink.OFF_STATE] == TCP_CLOSE and not _port(buf, off + netlink.OFF_DPORT)
        if unconnected or len(self.sockets) < self.want_sockets:
            self._keep(decode_message(buf, off))

    def add_proc(self, family, entry):
        state, laddr, lport, raddr, rport, tx_q, rx_q, uid, inode = entry[:9]
        self.families[family] += 1
        self._keep({
            "family": "ipv4" if family == socket.AF_INET else "ipv6", "state": state,
            "local_address": _printable(laddr), "local_port": lport, "remote_address": _printable(raddr),
            "remote_port": rport, "recv_q": rx_q, "send_q": tx_q, "uid": uid, "inode": inode,
        })

    def _keep(self, entry):
        if entry["state"] == TCP_CLOSE and entry["remote_port"] == 0 and entry["local_port"]:
            self.listeners.append({
                "protocol": "udp", "family": entry["family"], "address": entry["local_address"],
                "port": entry["local_port"], "queue": None, "backlog": None, "uid": entry["uid"],
                "inode": entry["inode"],
            })
        if len(self.sockets) < self.want_sockets:
            raw = dict(entry, protocol="udp", state="UNCONN" if entry["state"] == TCP_CLOSE else "ESTAB")
            self.sockets.append(raw)


# ---------------------------------------------------------------- backends

def _netlink_gather(tcp, udp):
    """The TCP listener, TCP connection and UDP dumps of both families, one after the other: listeners
    first, as counting connections needs their ports."""
    for family, _label in FAMILIES:
        netlink.dump(family, netlink.IPPROTO_TCP, LISTEN_MASK, tcp.consume_listeners)
    tcp.listen_ports = frozenset(item["port"] for item in tcp.listeners)
    for family, _label in FAMILIES:
        netlink.dump(family, netlink.IPPROTO_TCP, CONNECTION_MASK, tcp.consume_netlink)
    for family, _label in FAMILIES:
        netlink.dump(family, netlink.IPPROTO_UDP, UDP_ALL_MASK, udp.consume_netlink)


def _proc_table(proc, name, family, required):
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


def _add_proc_entries(counter, family, entries):
    """Feed /proc/net rows to a counter (TcpAggregate or PeerCounter), bounding it every 4,096 rows."""
    for number, entry in enumerate(entries, 1):
        counter.add_proc(family, entry)
        if not number & 4095:
            counter.bound()


def _proc_gather(tcp, udp, proc):
    parsed = [(family, _proc_table(proc, name, family, family == socket.AF_INET))
              for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6))]
    tcp.listen_ports = frozenset(e[2] for _family, entries in parsed for e in entries if e[0] == LISTEN)
    for family, entries in parsed:
        _add_proc_entries(tcp, family, entries)
    tcp.bound()
    for name, family in (("udp", socket.AF_INET), ("udp6", socket.AF_INET6)):
        for entry in _proc_table(proc, name, family, False):
            udp.add_proc(family, entry)


def _netlink_attempts(backend, warnings, attempt):
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


def _collect_sockets(backend, top_sockets, want_inodes, proc, warnings, spill_keys=SPILL_KEYS):
    """Run the dumps (retrying an interrupted one) and return (backend_used, tcp, udp)."""
    port_range = procfs.read_port_range(proc)

    def attempt():
        tcp = TcpAggregate(port_range, top_sockets, want_inodes, spill_keys)
        udp = UdpAggregate(top_sockets)
        _netlink_gather(tcp, udp)
        return tcp, udp

    read = _netlink_attempts(backend, warnings, attempt)
    if read is not None:
        return ("netlink",) + read
    tcp = TcpAggregate(port_range, top_sockets, want_inodes, spill_keys)
    udp = UdpAggregate(top_sockets)
    _proc_gather(tcp, udp, proc)
    return "proc", tcp, udp


# ---------------------------------------------------------------- listeners and processes

# Unless told a descriptor budget, the listener walk may take this share of the dumps' own
# time, and at least the floor (a host's whole walk usually takes a few milliseconds).
WALK_TIME_SHARE = 0.25
WALK_TIME_FLOOR = 0.1


def _listeners(tcp, udp, options, full_walk, warnings, dump_seconds):
    """Listener rows with process information, the walk's account, and the inode -> pids map
    when full_walk."""
    proc = options.proc
    rows, rest = _bounded_listeners(tcp, tcp.listeners + udp.listeners, options.listeners_limit)
    wanted = {item["inode"] for item in rows if item["inode"]}
    budget = options.walk_budget
    time_budget = None
    if budget is None and not full_walk:
        time_budget = max(WALK_TIME_FLOOR, WALK_TIME_SHARE * dump_seconds)
    started = time.monotonic()
    found = procfs.map_socket_inodes(wanted, proc=proc, full=full_walk, budget=budget,
                                     deadline=None if time_budget is None else started + time_budget,
                                     all_namespaces=options.walk_all_namespaces)
    walk_ms = round((time.monotonic() - started) * 1000, 1)
    infos = {}
    missing = 0
    result = []
    for item in sorted(rows, key=lambda r: (r["protocol"], r["port"], r["family"], r["address"])):
        pid = found.owners.get(item["inode"])
        info = None
        if pid is not None:
            if pid not in infos:
                infos[pid] = procfs.process_info(pid, proc)
            info = infos[pid]
        if info is None:
            missing += 1
        backlog = item["backlog"]
        queue = item["queue"]
        result.append({
            "protocol": item["protocol"], "family": item["family"], "address": item["address"],
            "port": item["port"], "backlog": backlog, "queue": queue,
            "saturation": round(queue / backlog, 4) if backlog else None,
            "pid": info["pid"] if info else None,
            "process": info["process"] if info else None,
            "user": info["user"] if info else procfs.user_name(item["uid"]),
            "stime": info["stime"] if info else None,
            "connections": tcp.established_on(item["port"]) if item["protocol"] == "tcp" else None,
            "inode": item["inode"],
        })
    reason = walk_warning(found, missing, budget, time_budget, options.walk_all_namespaces, warnings)
    if full_walk and (found.fd_limited or found.unlisted):
        warnings.append("processes: the walk of their file descriptors ran out of them (%s): the connections of %s "
                        "are not counted" % (_soft_limit_text(found.soft_limit), _unread_text(found)))
    account = {"descriptors_read": found.reads, "budget": None if full_walk else budget,
               "time_budget_ms": None if time_budget is None else round(time_budget * 1000, 1),
               "walk_ms": walk_ms, "unattributed": missing, "reason": reason}
    return result, account, found.inode_pids, rest


def _soft_limit_text(soft_limit):
    return "the open-files soft limit, RLIMIT_NOFILE or ulimit -n, is %s" % (
        "unlimited" if soft_limit is None else soft_limit)


def _unread_text(found):
    return "the list of processes" if found.unlisted else "%d process(es)" % found.fd_limited


def fd_limit_text(found):
    """Why a walk that ran out of file descriptors (procfs.FdWalkResult `found`) left sockets without their
    process: one wording for the listener walk and listener_facts' walk of the other sockets."""
    return "ran out of file descriptors (%s) and could not read %s; raise the soft limit" % (
        _soft_limit_text(found.soft_limit), _unread_text(found))


def walk_warning(found, missing, budget, time_budget, all_namespaces, warnings):
    """Why `missing` listeners were left without a process by the walk (procfs.FdWalkResult `found`):
    appends the warning and returns the reason of the listener_walk fact (None when none is missing)."""
    if not missing:
        return None
    if found.exhausted:
        if time_budget is None:
            spent = "its budget of %d file descriptors (walk_budget)" % budget
        else:
            spent = ("its time, %d ms (a quarter of the socket dump's, at least %d ms), after %d file descriptors; "
                     "walk_budget sets a number of descriptors instead" % (
                         round(time_budget * 1000), WALK_TIME_FLOOR * 1000, found.reads))
        warnings.append("%d listener(s) without pid/process: the walk that finds their processes spent %s"
                        % (missing, spent))
        return "budget"
    if found.fd_limited or found.unlisted:
        warnings.append("%d listener(s) without pid/process: the walk that finds their processes %s"
                        % (missing, fd_limit_text(found)))
        return "fd limit"
    if found.denied:
        why = "not running as root" if os.geteuid() != 0 else "running as root, but some processes are protected"
        warnings.append("%s: %d listener(s) without pid/process (the file descriptors of %d process(es) are "
                        "unreadable)" % (why, missing, found.denied))
        return "unreadable"
    warnings.append("%d listener(s) without pid/process: no process of %s holds them (a descriptor in "
                    "flight over a unix socket, or held by a process of another network namespace)"
                    % (missing, "any namespace" if all_namespaces else "this namespace"))
    return "not held"


def _saturation_rank(tcp, item):
    """Sort key of a listener, the fullest accept queue first: queue / backlog (a queue on backlog 0 above
    all), then the queue, then the connections on its port; ties in the listing order."""
    queue = item["queue"] or 0
    backlog = item["backlog"]
    share = queue / backlog if backlog else (float("inf") if queue else 0.0)
    connections = tcp.established_on(item["port"]) if item["protocol"] == "tcp" else 0
    return (-share, -queue, -connections, item["protocol"], item["port"], item["family"], item["address"])


def _bounded_listeners(tcp, rows, limit):
    """(rows kept, listeners_rest): every row when limit is None or not exceeded, else the limit
    rows with the fullest accept queues (_saturation_rank), the others summed - how many per
    protocol, their TCP accept queues and the highest saturation among them."""
    rest = {"tcp": 0, "udp": 0, "queue": 0, "max_saturation": None}
    if limit is None or len(rows) <= limit:
        return rows, rest
    ranked = sorted(rows, key=lambda item: _saturation_rank(tcp, item))
    for item in ranked[limit:]:
        rest[item["protocol"]] += 1
        if item["protocol"] == "tcp":
            rest["queue"] += item["queue"] or 0
            if item["backlog"]:
                share = round(item["queue"] / item["backlog"], 4)
                if rest["max_saturation"] is None or share > rest["max_saturation"]:
                    rest["max_saturation"] = share
    return ranked[:limit], rest


def _processes(tcp, inode_pids, proc):
    """Per process name: instance count, pids, TCP connections by state (sockets counted once per name)."""
    result = {}
    inodes_by_name = {}
    for pid in procfs.pids(proc):
        info = procfs.process_info(pid, proc)
        if info is None:
            continue
        entry = result.setdefault(info["process"], {"count": 0, "pids": []})
        entry["count"] += 1
        entry["pids"].append(pid)
        inodes_by_name.setdefault(info["process"], set())
    pid_names = {pid: name for name, entry in result.items() for pid in entry["pids"]}
    for inode, holders in (inode_pids or {}).items():
        for pid in holders:
            name = pid_names.get(pid)
            if name is not None:
                inodes_by_name[name].add(inode)
    for name, entry in result.items():
        counts = [0] * 16
        for inode in inodes_by_name[name]:
            state = tcp.inode_states.get(inode)
            if state is not None:
                counts[state] += 1
        states = _states_from(counts)
        entry["connections"] = {"total": sum(states.values()), "states": states}
    return result


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
    WALK_TIME_SHARE of the dumps' time, at least WALK_TIME_FLOOR seconds); walk_all_namespaces
    lets it read processes of other network namespaces too. local_ports_limit: the ports of
    tcp.local_ports listed one by one (TcpAggregate.local_ports). listeners_limit: the most entries of
    `listeners`, the fullest accept queues first, the rest summed in `listeners_rest` (None: every
    listener, as listener_facts needs; the walk looks only for the processes of the listeners kept).
    spill_keys (internal, for tests):
    the distinct keys counted in dicts before they are spilled into records (KeyRecords).
    Raises GatherError with a message naming the option, value or file involved.
    """
    if warnings is None:
        warnings = []
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
    spill_keys = _check_int("spill_keys", spill_keys, 0)
    check_namespace(namespace)
    options = GatherOptions(
        gather_subset=gather_subset, top=top, sample_interval=sample_interval, backend=backend, max_sockets=max_sockets,
        proc=proc, walk_budget=walk_budget, walk_all_namespaces=bool(walk_all_namespaces),
        local_ports_limit=local_ports_limit, listeners_limit=listeners_limit, spill_keys=spill_keys)
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
    backend_used, tcp, udp = _collect_sockets(
        options.backend, options.max_sockets if "sockets" in want else 0, "processes" in want, proc, warnings,
        options.spill_keys)
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
    if "listeners" in want or "processes" in want:
        listeners, account, inode_pids, rest = _listeners(tcp, udp, options, "processes" in want, warnings,
                                                          dump_seconds)
        if "listeners" in want:
            for item in listeners:
                del item["inode"]
            facts["listeners"] = listeners
            facts["listeners_rest"] = rest
            facts["listener_walk"] = account
        if "processes" in want:
            facts["processes"] = _processes(tcp, inode_pids, proc)
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
        facts["routes"] = _routes()
    if "multicast" in want:
        facts["multicast"] = _multicast(proc)
    if "sockets" in want:
        facts["sockets"] = (tcp.sockets + udp.sockets)[:options.max_sockets]
        facts["sockets_truncated"] = tcp.sockets_seen + len(udp.sockets) > options.max_sockets
    facts["duration_ms"] = round((time.time() - started) * 1000, 1)
    return facts


def _read_counters(proc):
    try:
        return procfs.read_counters(proc)
    except (IOError, OSError) as exc:
        raise GatherError("cannot read kernel counters: %s" % exc)
    except procfs.ProcFormatError as exc:
        raise GatherError("kernel counters: %s" % exc)


# ---------------------------------------------------------------- connections per peer

def state_mask(names):
    """TCP state names (engine.STATES) -> the sock_diag state bit mask; NEW_SYN_RECV goes with SYN_RECV."""
    mask = 0
    for name in names:
        if name not in STATES:
            raise GatherError("states: %r is not a TCP state (choose from %s)" % (name, ", ".join(STATES)))
        for number, state_name in enumerate(STATE_NAMES):
            if state_name == name:
                mask |= 1 << number
    return mask


#: Which connections peer_connections counts: those to a listening port of this namespace (peers that
#: connected in), or every one.
DIRECTIONS = ("inbound", "all")
#: A listener bound to every address, by address width (4: IPv4, 16: IPv6).
WILDCARD = {4: b"\0" * 4, 16: b"\0" * 16}


class Listening:
    """The (address, port) pairs the namespace's TCP listeners are bound to, as raw addresses (4 bytes for
    an IPv4 socket, 16 for an IPv6 one), to tell a connection a peer made to us from one we made.

    A connection is inbound when its local port is a listener's and its local address is the listener's
    address or the listener is bound to the wildcard of its family (0.0.0.0, ::). A connection a listener
    accepted has the listener's family, so families are matched as they are: an IPv4 client of a dual-stack
    [::] listener is an IPv6 socket whose local address is IPv4-mapped (::ffff:a.b.c.d), which [::] covers;
    a listener bound to one address does not make the same port on another address inbound.
    """

    def __init__(self):
        self.by_port = {}

    def add(self, raw_address, port):
        self.by_port.setdefault(port, set()).add(bytes(raw_address))

    def covers(self, raw_address, port):
        """raw_address: the connection's local address, 4 or 16 bytes as its socket's family has it."""
        bound = self.by_port.get(port)
        return bound is not None and (raw_address in bound or WILDCARD[len(raw_address)] in bound)

    def consume_netlink(self, buf, length):
        return each_message(buf, length, self._add_message)

    def _add_message(self, buf, off):
        if buf[off + netlink.OFF_STATE] == LISTEN:
            start = off + netlink.OFF_SRC
            self.add(buf[start:start + netlink.ADDRESS_WIDTH[buf[off + netlink.OFF_FAMILY]]],
                     _port(buf, off + netlink.OFF_SPORT))

    def add_proc(self, family, entry):
        if entry[0] == LISTEN:
            self.add(socket.inet_pton(family, entry[1]), entry[2])


class PeerCounter:
    """Connections per remote address for every peer (no top-N cut), one dict operation per socket.

    Only sockets in `mask` count; with local_port, only those whose local port is that port; with
    listening (a Listening), only connections to a listener's address and port (peers that connected
    in). IPv4-mapped IPv6 peers count as their IPv4 address. Past spill_keys distinct peers the dict
    is spilled into KeyRecords; counted(more_than) keeps the peers with more connections than that.
    """

    def __init__(self, mask, local_port=None, spill_keys=SPILL_KEYS, listening=None):
        self.mask = mask
        self.local_port = local_port
        self.listening = listening
        self.raw = {}
        self.spill_keys = spill_keys
        self.records = None

    def consume_netlink(self, buf, length):
        stop = each_message(buf, length, self._add_message)
        self.bound()
        return stop

    def bound(self):
        if len(self.raw) > self.spill_keys:
            self._spill()

    def _spill(self):
        if self.records is None:
            self.records = KeyRecords(self.spill_keys)
        for key, count in self.raw.items():
            self.records.add(_plain_raw(key), 0, PEER_KIND, count)
        self.raw.clear()
        self.records.spilled()

    def _add_message(self, buf, off):
        if not (1 << buf[off + netlink.OFF_STATE]) & self.mask:
            return
        local_port = _port(buf, off + netlink.OFF_SPORT)
        if self.local_port is not None and local_port != self.local_port:
            return
        if self.listening is not None:
            start = off + netlink.OFF_SRC
            if not self.listening.covers(buf[start:start + netlink.ADDRESS_WIDTH[buf[off + netlink.OFF_FAMILY]]],
                                         local_port):
                return
        key = _peer_raw(buf, off)
        self.raw[key] = self.raw.get(key, 0) + 1

    def add_proc(self, family, entry):
        state, laddr, lport, raddr, _rport = entry[:5]
        if state >= 16 or not (1 << state) & self.mask or (self.local_port is not None and lport != self.local_port):
            return
        if self.listening is not None and not self.listening.covers(socket.inet_pton(family, laddr), lport):
            return
        key = socket.inet_pton(family, raddr)
        self.raw[key] = self.raw.get(key, 0) + 1

    def counted(self, more_than=0):
        """(peers, connections, distinct peers): peers {address: count} of the peers with more than
        more_than connections, the most first (ties by address)."""
        if self.records is None:
            partitions = [((_plain_raw(key), 0, PEER_KIND, count) for key, count in self.raw.items())]
        else:
            self._spill()
            partitions = self.records.partitions()
        rows = []
        total = distinct = 0
        for records in partitions:
            per_peer = {}
            for address, _where, _kind, count in records:
                per_peer[address] = per_peer.get(address, 0) + count
            distinct += len(per_peer)
            for address, count in per_peer.items():
                total += count
                if count > more_than:
                    rows.append((-count, _address_text(address)))
        rows.sort()
        return {text: -count for count, text in rows}, total, distinct


def peer_connections(states=None, local_port=None, backend="auto", proc="/proc", warnings=None, more_than=0,
                     spill_keys=SPILL_KEYS, direction="all"):
    """Connections per remote address: {"backend", "peers": {address: count}, "total", "peer_count"}.

    states: TCP state names counted (default: every state but LISTEN); local_port: count only
    connections whose local port is this one; direction: "inbound" counts only connections to a
    listener of this namespace (Listening: the listeners are read first, in the same pass), "all"
    every connection whatever its direction; peers holds the peers with more than more_than
    connections (0: every peer), the most first; total and peer_count count every connection and
    peer. spill_keys (internal, for tests) as for gather(). Raises GatherError naming the option and value.
    """
    if warnings is None:
        warnings = []
    if states is None:
        states = [name for name in STATES if name != "LISTEN"]
    if isinstance(states, str) or not isinstance(states, (list, tuple)) or not states:
        raise GatherError("states: %r must be a non-empty list of TCP state names" % (states,))
    mask = state_mask(states)
    if local_port is not None:
        local_port = check_count("local_port", local_port)
    more_than = _check_int("more_than", more_than, 0)
    spill_keys = _check_int("spill_keys", spill_keys, 0)
    if backend not in BACKENDS:
        raise GatherError("backend: %s is not one of %s" % (escape.bounded_repr(backend), ", ".join(BACKENDS)))
    if direction not in DIRECTIONS:
        raise GatherError("direction: %s is not one of %s" % (escape.bounded_repr(direction), ", ".join(DIRECTIONS)))
    inbound = direction == "inbound"

    def attempt():
        listening = Listening() if inbound else None
        counter = PeerCounter(mask, local_port, spill_keys, listening)
        # the listeners first, as counting needs them
        if inbound:
            for family, _label in FAMILIES:
                netlink.dump(family, netlink.IPPROTO_TCP, LISTEN_MASK, listening.consume_netlink)
        for family, _label in FAMILIES:
            netlink.dump(family, netlink.IPPROTO_TCP, mask, counter.consume_netlink)
        return counter.counted(more_than)

    counted = _netlink_attempts(backend, warnings, attempt)
    backend_used = "netlink"
    if counted is None:
        backend_used = "proc"
        tables = [(family, _proc_table(proc, name, family, family == socket.AF_INET))
                  for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6))]
        listening = None
        if inbound:
            listening = Listening()
            for family, entries in tables:
                for entry in entries:
                    listening.add_proc(family, entry)
        counter = PeerCounter(mask, local_port, spill_keys, listening)
        for family, entries in tables:
            _add_proc_entries(counter, family, entries)
        counter.bound()
        counted = counter.counted(more_than)
    peers, total, distinct = counted
    return {"backend": backend_used, "peers": peers, "total": total, "peer_count": distinct}


# ---------------------------------------------------------------- routes and multicast groups

def parse_route_messages(messages, tables=None, protocols=None, interface_name=None):
    """RTM_NEWROUTE payloads -> route dicts (docs/facts-contract.md); GatherError names the bad message."""
    routes = []
    for number, data in enumerate(messages, 1):
        try:
            route = rtnetlink.parse_route(data, tables, protocols, interface_name)
        except rtnetlink.RouteFormatError as exc:
            raise GatherError("routes: rtnetlink RTM_NEWROUTE message %d: %s" % (number, exc))
        if route is not None:
            routes.append(route)
    return routes


def _routes(etc="/etc/iproute2"):
    tables = rtnetlink.read_names(os.path.join(etc, "rt_tables"), rtnetlink.TABLES)
    protocols = rtnetlink.read_names(os.path.join(etc, "rt_protos"), rtnetlink.PROTOCOLS)
    last = None
    for _attempt in range(DUMP_ATTEMPTS):
        try:
            messages = [data for family, _label in FAMILIES for data in rtnetlink.dump_routes(family)]
        except rtnetlink.RouteDumpInterrupted as exc:
            last = exc
            continue
        except rtnetlink.RouteDumpError as exc:
            raise GatherError("routes: %s" % exc)
        return parse_route_messages(messages, tables, protocols)
    raise GatherError("routes: rtnetlink dump interrupted %d times in a row (%s)" % (DUMP_ATTEMPTS, last))


def parse_multicast(text, source, family):
    """/proc/net/igmp (family ipv4) or igmp6 (ipv6) text -> [{interface, family, group, users}]."""
    try:
        rows = procfs.parse_igmp(text) if family == "ipv4" else procfs.parse_igmp6(text)
    except procfs.ProcFormatError as exc:
        raise GatherError("%s: %s" % (source, exc))
    return [{"interface": interface, "family": family, "group": group, "users": users}
            for interface, group, users in rows]


def _multicast(proc):
    groups = []
    for name, family in (("igmp", "ipv4"), ("igmp6", "ipv6")):
        path = os.path.join(proc, "net", name)
        try:
            text = procfs.read_text(path)
        except (IOError, OSError):
            continue  # a kernel without that family
        groups += parse_multicast(text, path, family)
    return groups
