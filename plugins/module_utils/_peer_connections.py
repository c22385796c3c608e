# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Connections per remote address, every peer counted (peer_connections), for the peer_block module's
backend (_peer_block.py). Not part of the engine package: no agent host runs it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket

from ._engine import _escape as escape
from ._engine import _netlink as netlink
from ._engine import engine
from ._engine._address import address_text as _address_text
from ._engine._address import plain_raw as _plain_raw
from ._engine._aggregate import FAMILIES, LISTEN, LISTEN_MASK, PEER_KIND, SPILL_KEYS, STATE_NAMES, KeyRecords, \
    add_proc_entries, each_message, peer_raw, port_at
from ._engine._argspec import BACKENDS
from ._engine._argspec import TCP_STATES as STATES
from ._engine._options import GatherError, check_count, check_int


def state_mask(names):
    """TCP state names (_argspec.TCP_STATES) -> the sock_diag state bit mask; NEW_SYN_RECV goes with SYN_RECV."""
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
                     port_at(buf, off + netlink.OFF_SPORT))

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
        self.spill_if_full()
        return stop

    def spill_if_full(self):
        if len(self.raw) > self.spill_keys:
            self._spill()

    def _spill(self):
        if self.records is None:
            self.records = KeyRecords(self.spill_keys)
        for key, count in self.raw.items():
            self.records.add(_plain_raw(key), 0, PEER_KIND, count)
        self.raw.clear()
        self.records.compact_if_piled_up()

    def _add_message(self, buf, off):
        if not (1 << buf[off + netlink.OFF_STATE]) & self.mask:
            return
        local_port = port_at(buf, off + netlink.OFF_SPORT)
        if self.local_port is not None and local_port != self.local_port:
            return
        if self.listening is not None:
            start = off + netlink.OFF_SRC
            if not self.listening.covers(buf[start:start + netlink.ADDRESS_WIDTH[buf[off + netlink.OFF_FAMILY]]],
                                         local_port):
                return
        key = peer_raw(buf, off)
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
    more_than = check_int("more_than", more_than, 0)
    spill_keys = check_int("spill_keys", spill_keys, 0)
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

    counted = engine.netlink_attempts(backend, warnings, attempt)
    backend_used = "netlink"
    if counted is None:
        backend_used = "proc"
        tables = [(family, engine.proc_table(proc, name, family, family == socket.AF_INET))
                  for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6))]
        listening = None
        if inbound:
            listening = Listening()
            for family, entries in tables:
                for entry in entries:
                    listening.add_proc(family, entry)
        counter = PeerCounter(mask, local_port, spill_keys, listening)
        for family, entries in tables:
            add_proc_entries(counter, family, entries)
        counter.spill_if_full()
        counted = counter.counted(more_than)
    peers, total, distinct = counted
    return {"backend": backend_used, "peers": peers, "total": total, "peer_count": distinct}
