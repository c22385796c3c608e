# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Counting one dump: TCP and UDP sockets into a few dicts (TcpAggregate, UdpAggregate), spilled into
fixed-width records (KeyRecords) past a number of distinct keys; no Python object per socket unless the
raw socket list or the per-process view was asked for."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import heapq
import itertools
import re
import socket
import struct
import sys

from . import _netlink as netlink
from ._address import address_text as _address_text
from ._address import plain_raw as _plain_raw
from ._address import plain_text as _printable
from ._argspec import TCP_STATES as STATES

_aton, _ntoa, _ntop = socket.inet_aton, socket.inet_ntoa, socket.inet_ntop

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

FAMILIES = ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6"))


def zero_states():
    return dict.fromkeys(STATES, 0)


def states_from(counts):
    """counts indexed by kernel state number -> zero-filled dict by name (NEW_SYN_RECV -> SYN_RECV)."""
    states = zero_states()
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
    data_type = netlink.data_type(buf)
    off = 0
    while off < length:
        msg_len, msg_type = unpack(buf, off)
        if msg_type != data_type:
            return off
        if msg_len < netlink.MSG_MIN_LEN or off + msg_len > length:
            raise netlink.malformed(off, msg_len, length)
        visit(buf, off)
        off += (msg_len + 3) & ~3
    return None


def port_at(buf, at):
    return (buf[at] << 8) | buf[at + 1]


def _u32(buf, at):
    """A 32-bit field of inet_diag_msg the kernel writes in the host's order."""
    return int.from_bytes(buf[at:at + 4], sys.byteorder)


def peer_raw(buf, off):
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
        "local_port": port_at(buf, off + netlink.OFF_SPORT),
        "remote_address": _address_text(peer_raw(buf, off)),
        "remote_port": port_at(buf, off + netlink.OFF_DPORT),
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
# Records are summed (KeyRecords.compact_if_piled_up) only past this many times spill_keys (8 x 65,536 records
# are 6-12 MiB): below it, summing duplicates costs more time than the memory it gives back.
COMPACT_FACTOR = 8


class KeyRecords:
    """Counted keys (address, port, kind) -> count as fixed-width records, one bytearray per address
    width and partition (the address's hash), so that finishing needs the dict of one partition at a
    time. A key may be in several records (one per spill) until compact_if_piled_up() sums them; it does
    when the records are more than twice as many as after the last time and more than COMPACT_FACTOR
    times spill_keys, so they stay within twice the distinct keys (plus one spill) or that many."""

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

    def compact_if_piled_up(self):
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


# A client-side key is the remote port's two bytes (network order) and the remote address's raw bytes; the
# remote address starts here. The local address is left out: nothing counts by it, and with it every source
# address of a busy client made keys of its own, to be spilled and summed again.
CLIENT_KEY_DST = 2

# TcpAggregate._consume_uniform: its "not this buffer" answer; the first 6 bytes of NLMSG_DONE (length 20, type 3);
# (message length, family) -> Struct of one message; (message length, type) -> [(offset, the byte every message
# has there)].
NOT_UNIFORM = object()
_DONE_HEAD = struct.pack("=IH", netlink.DONE_LEN, netlink.NLMSG_DONE)
_UNIFORM = {}
_UNIFORM_HEADER = {}
# A dump of both families interleaves them in the kernel's hash order: a uniform buffer is read as runs of
# one family (a regular expression over the family bytes at every stride finds them), unless its runs are
# shorter than this many messages on average.
UNIFORM_RUN = 8
_FAMILY_RUNS = re.compile(b"|".join(re.escape(bytes((family,))) + b"+" for family in sorted(netlink.ADDRESS_WIDTH)))


def _uniform_record(msg_len, family):
    """The Struct reading state, timer, retrans, sport (native order: a byte-swapped port), dport (its two
    bytes), the remote address (its address width of bytes), rqueue and wqueue of one message."""
    record = _UNIFORM.get((msg_len, family))
    if record is None:
        width = netlink.ADDRESS_WIDTH[family]
        record = _UNIFORM[(msg_len, family)] = struct.Struct("=%dxBBBH2s%dx%ds%dxII%dx" % (
            netlink.OFF_STATE, netlink.OFF_DST - netlink.OFF_DPORT - 2, width,
            netlink.OFF_RQUEUE - netlink.OFF_DST - width, msg_len - netlink.OFF_WQUEUE - 4))
    return record


def _uniform_header(msg_len, msg_type):
    """The header bytes every message of a uniform buffer must have: [(offset, byte)]."""
    header = _UNIFORM_HEADER.get((msg_len, msg_type))
    if header is None:
        head = struct.pack("=IH", msg_len, msg_type)
        header = _UNIFORM_HEADER[(msg_len, msg_type)] = [(at, head[at:at + 1]) for at in range(len(head))]
    return header


def _family_runs(buf, msg_len, count):
    """[(family, the bytes of a run of messages of that family)] of a buffer of count messages of msg_len, as
    a dump of both families interleaves them; None when a family byte is neither AF_INET nor AF_INET6, or
    when the runs are shorter than UNIFORM_RUN messages on average (the general loop is then faster)."""
    families = buf[netlink.OFF_FAMILY::msg_len]
    first = families[0]
    if families.count(first) == count:
        return [(first, buf)] if first in netlink.ADDRESS_WIDTH else None
    runs, at = [], 0
    for match in _FAMILY_RUNS.finditer(families):
        if match.start() != at or (len(runs) + 1) * UNIFORM_RUN > count:
            return None
        runs.append((families[at], buf[at * msg_len:match.end() * msg_len]))
        at = match.end()
    return runs if at == count else None


if sys.byteorder == "little":
    def _swap16(port):
        """A port as a native-order unpack of its network-order bytes reads it, and back (its own inverse)."""
        return ((port & 0xFF) << 8) | (port >> 8)
else:
    def _swap16(port):
        """On a big-endian host, network order is the native order: the port as it is."""
        return port


class TcpAggregate:
    """Counts for one TCP dump, kept as integers and small dicts until finish()."""

    def __init__(self, port_range, want_sockets=0, want_inodes=False, spill_keys=SPILL_KEYS):
        # the ports of this host's TCP listeners: set from the listener dump before connections count
        self.listen_ports = frozenset()
        # what the uniform loop counts server-side sockets by: port (as a native-order unpack of its
        # big-endian bytes reads it) -> [count per state]; folded into self.local when that is read
        self._local_swapped = {}
        self.low, self.high = port_range
        # Counts by (state, idiag_timer) in one list per family, indexed state | timer << 4: one
        # increment per socket for both. states() and timer_counts() fold them.
        self.family_states = {socket.AF_INET: [0] * 4096, socket.AF_INET6: [0] * 4096}
        # server side: port -> [count per state] (self.local); peers seen from the server side
        self._local = {}
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

    @property
    def local(self):
        if self._local_swapped:
            self._fold_local()
        return self._local

    @property
    def listen_ports(self):
        return self._listen_ports

    @listen_ports.setter
    def listen_ports(self, ports):
        self._listen_ports = frozenset(ports)
        self._listen_swapped = frozenset(_swap16(port) for port in self._listen_ports)

    def consume_netlink(self, buf, length):
        stop = self._consume_uniform(buf, length)
        if stop is NOT_UNIFORM:
            stop = self._consume_netlink(buf, length)
        self.spill_if_full()
        return stop

    def spill_if_full(self):
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
            for key, count in self.client[state].items():
                add(_plain_raw(key[CLIENT_KEY_DST:]), port_at(key, 0), CLIENT_KIND + state, count)
            self.client[state].clear()
        for raw, (sockets, retransmits) in self.retransmits.items():
            add(raw, 0, RETRANS_SOCKETS, sockets)
            add(raw, 0, RETRANS_COUNT, retransmits)
        self.retransmits.clear()
        self.records.compact_if_piled_up()

    def _consume_uniform(self, buf, length):
        """The hot loop for a receive buffer whose messages all have one length (full sockets only, as on a
        host without TIME_WAIT or SYN_RECV: the kernel gives every full socket the same attributes, the mini
        sockets fewer): the messages of each run of one family are unpacked by one Struct.iter_unpack, with
        no offset arithmetic per socket. NOT_UNIFORM when the buffer is not such a run (the general loop then
        reads it), or when every socket is wanted whole.

        Uniform means: the buffer is n messages of length L (a multiple of 4, at least MSG_MIN_LEN),
        perhaps followed by the 20-byte NLMSG_DONE, and at every multiple of L the header says length L
        and the first message's type (one of netlink.DATA_TYPES), and the family byte is AF_INET or
        AF_INET6 in runs (_family_runs). By induction from offset 0 every message then starts where the
        stride says; the checks are strided byte slices, compared whole.
        """
        if self.want_sockets or self.inode_states is not None or length < netlink.MSG_MIN_LEN:
            return NOT_UNIFORM
        msg_len, msg_type = netlink.MSG_HEAD.unpack_from(buf, 0)
        if msg_len < netlink.MSG_MIN_LEN or msg_len & 3 or msg_type not in netlink.DATA_TYPES:
            return NOT_UNIFORM
        count, rest = divmod(length, msg_len)
        stop = None
        if rest:
            count, rest = divmod(length - netlink.DONE_LEN, msg_len)
            if rest or buf[length - netlink.DONE_LEN:length - netlink.DONE_LEN + 6] != _DONE_HEAD:
                return NOT_UNIFORM
            stop = count * msg_len
            buf = buf[:stop]
        for at, byte in _uniform_header(msg_len, msg_type):
            if buf[at::msg_len] != byte * count:
                return NOT_UNIFORM
        runs = _family_runs(buf, msg_len, count)
        if runs is None:
            return NOT_UNIFORM
        listen = self._listen_swapped
        local = self._local_swapped
        server_peers = self.server_peers
        client = self.client
        for family, run in runs:
            self._count_run(_uniform_record(msg_len, family), run, self.family_states[family], listen, local,
                            server_peers, client)
        return stop

    def _count_run(self, record, run, family_states, listen, local, server_peers, client):
        """The uniform loop's body over a run of messages of one family."""
        for state, timer, retrans, sport, dport, peer, rqueue, wqueue in record.iter_unpack(run):
            family_states[state | timer << 4] += 1
            if sport in listen:
                counts = local.get(sport)
                if counts is None:
                    counts = local[sport] = [0] * 16
                counts[state] += 1
                peers = server_peers[state]
                peers[peer] = peers.get(peer, 0) + 1
            else:
                # dport and dst: the same key the general loop joins
                side = client[state]
                key = dport + peer
                side[key] = side.get(key, 0) + 1
            if rqueue or wqueue or retrans:
                if sport in listen:
                    port, side_name = _swap16(sport), "local"
                else:
                    port, side_name = port_at(dport, 0), "remote"
                self._queued(port, side_name, peer, timer, retrans, rqueue, wqueue)

    def _fold_local(self):
        local = self._local
        for swapped, counts in self._local_swapped.items():
            port = _swap16(swapped)
            total = local.get(port)
            if total is None:
                local[port] = counts
            else:
                local[port] = [a + b for a, b in zip(total, counts)]
        self._local_swapped = {}

    # The general hot loop: one call per receive buffer of the connection dump.
    def _consume_netlink(self, buf, length):
        unpack = netlink.MSG_FIXED.unpack_from
        # ports as MSG_FIXED reads them (native order): no byte arithmetic per socket
        listen = self._listen_swapped
        family_states = self.family_states
        local = self._local_swapped
        server_peers = self.server_peers
        client = self.client
        detail = self.want_sockets or self.inode_states is not None
        # the offsets as locals: the loop runs once per socket
        data_type, min_len, ipv4 = netlink.data_type(buf), netlink.MSG_MIN_LEN, socket.AF_INET
        dport_at, dport_end, dst_at = netlink.OFF_DPORT, netlink.OFF_DPORT + 2, netlink.OFF_DST
        dst_end4, dst_end6 = dst_at + 4, dst_at + 16
        off = 0
        while off < length:
            try:
                msg_len, msg_type, family, state, timer, retrans, sport, rqueue, wqueue = unpack(buf, off)
            except struct.error:
                return off  # less than a whole inet_diag_msg left: the 20-byte NLMSG_DONE
            if msg_type != data_type:
                return off
            if msg_len < min_len or off + msg_len > length:
                raise netlink.malformed(off, msg_len, length)
            family_states[family][state | timer << 4] += 1
            dst_end = off + (dst_end4 if family == ipv4 else dst_end6)
            if sport in listen:
                counts = local.get(sport)
                if counts is None:
                    counts = local[sport] = [0] * 16
                counts[state] += 1
                peers = server_peers[state]
                key = buf[off + dst_at:dst_end]
                peers[key] = peers.get(key, 0) + 1
            else:
                # dport and dst in one key: one dict operation for ports, peers and ephemeral use.
                side = client[state]
                key = buf[off + dport_at:off + dport_end] + buf[off + dst_at:dst_end]
                side[key] = side.get(key, 0) + 1
            if rqueue or wqueue or retrans:
                # rare on most hosts: data waiting, or a retransmission/probe under way
                if sport in listen:
                    port, side_name = _swap16(sport), "local"
                else:
                    port, side_name = port_at(buf, off + dport_at), "remote"
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
                counts = self._local.setdefault(lport, [0] * 16)
                counts[state] += 1
                peers = self.server_peers[state]
                peers[peer] = peers.get(peer, 0) + 1
                port, side_name = lport, "local"
            else:
                key = rport.to_bytes(2, "big") + peer
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
            states = states_from(by_state[family])
            families[label] = {"total": sum(states.values()), "states": states}
        states = states_from(total_counts)
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
            states = states_from(self.local.get(port, ()))
            states["LISTEN"] = listening.get(port, 0)
            entries[port] = {"total": sum(states.values()), "states": states}
        kept = set(entries)
        if limit is not None and len(entries) > limit:
            kept = set(heapq.nsmallest(limit, entries, key=lambda port: (-entries[port]["total"], port)))
            for state in STATES:
                busy = [port for port in entries if entries[port]["states"][state]]
                kept.update(heapq.nsmallest(top, busy, key=lambda port: (-entries[port]["states"][state], port)))
        rest = {"ports": 0, "total": 0, "states": zero_states()}
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
                yield _plain_raw(key[CLIENT_KEY_DST:]), port_at(key, 0), CLIENT_KIND + state, count
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
        counted = len(STATE_NAMES)  # states a peer's total counts (as states_from)
        client_kind, retrans_kind = CLIENT_KIND, RETRANS_SOCKETS
        for records in self._records():
            # A partition's records twice: totals per peer first, then the states of the few peers that
            # make the top N (most peers of a busy server have a single record).
            if not isinstance(records, list):
                records = list(records)
            per_peer = {}
            per_destination = {}
            retrans = {}
            peer_total = per_peer.get
            for address, port, kind, count in records:
                if kind < client_kind:
                    # a server-side peer: most records of a host of many peers
                    per_peer[address] = peer_total(address, 0) + (count if kind < counted else 0)
                elif kind < retrans_kind:
                    state = kind - client_kind
                    per_peer[address] = peer_total(address, 0) + (count if state < counted else 0)
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
            best_peers = _best_peers(best_peers, top, per_peer)
            new = {_packed(text): [0] * 16 for _total, text, counts in best_peers if counts is None}
            if new:
                for address, _port_number, kind, count in records:
                    if kind < RETRANS_SOCKETS and address in new:
                        new[address][kind if kind < CLIENT_KIND else kind - CLIENT_KIND] += count
                best_peers = [(total, text, new[_packed(text)] if counts is None else counts)
                              for total, text, counts in best_peers]
            best_retrans = _merge_best(best_retrans, top, [
                ((-sockets, -retransmits), address, None) for address, (sockets, retransmits) in retrans.items()])
        peers = [{"address": text, "total": -total, "states": states_from(counts)}
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
    dropped once best is full, and of many rows only those up to the top-th rank are kept). Ties of rank go
    by the text, as _top_entries sorts."""
    if len(best) >= top:
        worst = best[-1][0]
        rows = [row for row in rows if row[0] <= worst]
        if not rows:
            return best
    if len(rows) > top:
        # a row ranked after the top-th rank of rows has top rows before it whatever the texts: ties kept
        cutoff = heapq.nsmallest(top, [row[0] for row in rows])[-1]
        rows = [row for row in rows if row[0] <= cutoff]
    # the records' addresses are plain already: 4 bytes are IPv4
    return heapq.nsmallest(top, best + [
        (rank, _ntoa(raw) if len(raw) == 4 else _ntop(socket.AF_INET6, raw), value) for rank, raw, value in rows])


def _text_order_v4():
    """A bytes.translate table: each byte of an IPv4 address becomes the rank of its decimal text among
    the 256 octets' texts, so that translated addresses compare as their dotted texts compare ('1.' before
    '10', as '1' before '10'; the dot is below every digit)."""
    table = bytearray(256)
    for rank, value in enumerate(sorted(range(256), key=str)):
        table[value] = rank
    return bytes(table)


_TEXT_ORDER_V4 = _text_order_v4()


def _best_peers(best, top, totals):
    """_merge_best of one partition's peers (plain raw address -> total), ranked (-total, text). Once best
    holds top rows only a total above its worst one, or equal to it with a smaller text, can enter: those
    are picked before any address is turned into text (an IPv4 address compared as its text through
    _TEXT_ORDER_V4), and the rest never are. On a host of many peers with one connection each nearly all
    totals tie with the worst."""
    if len(best) < top or not best:
        return _merge_best(best, top, [(-total, address, None) for address, total in totals.items()])
    worst_rank, worst_text = best[-1][0], best[-1][1]
    floor = -worst_rank
    rows = [(-total, address, None) for address, total in totals.items() if total > floor]
    tied = [address for address, total in totals.items() if total == floor]
    if tied:
        if ":" in worst_text:
            rows += [(worst_rank, address, None) for address in tied]
        else:
            worst_key, order = _aton(worst_text).translate(_TEXT_ORDER_V4), _TEXT_ORDER_V4
            rows += [(worst_rank, address, None) for address in tied
                     if len(address) != 4 or address.translate(order) < worst_key]
    return _merge_best(best, top, rows) if rows else best


def _top_entries(per_key, top):
    """per_key: key -> counts by state number. Top N by total (ties by key), zero-filled states, keyed by
    the key as text."""
    rows = []
    for key, counts in per_key.items():
        states = states_from(counts)
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
        unconnected = buf[off + netlink.OFF_STATE] == TCP_CLOSE and not port_at(buf, off + netlink.OFF_DPORT)
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


def add_proc_entries(counter, family, entries):
    """Feed /proc/net rows to a counter (TcpAggregate, or _peer_connections.PeerCounter), spilling it if full
    every 4,096 rows."""
    for number, entry in enumerate(entries, 1):
        counter.add_proc(family, entry)
        if not number & 4095:
            counter.spill_if_full()
