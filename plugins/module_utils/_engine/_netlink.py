# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: NETLINK_SOCK_DIAG dumps (inet_diag_req_v2), standard library only.

This file is part of the engine: it must not import ansible and must run on Python 3.8+.
It hands raw receive buffers to the engine's consumers; parsing and aggregation live in
_aggregate.py, so a dump builds no Python object per socket. The netlink plumbing rtnetlink shares
(socket, request, header flags) is here too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import select
import signal
import socket
import struct
import threading

AF_NETLINK = getattr(socket, "AF_NETLINK", 16)
NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
# The older request of inet_diag (struct inet_diag_req), TCP by its type: the kernel's dump for it
# (inet_diag_dump_compat, in every kernel since 2.6) asks for AF_UNSPEC, so one walk of the established
# hash table returns the sockets of both families, each reply message of this type. SOCK_DIAG_BY_FAMILY
# walks that whole table once per family, skipping the other family's sockets (at 1M IPv4 sockets the
# empty IPv6 dump alone took 124 ms). A kernel refusing it is one without sock_diag, as for the other.
TCPDIAG_GETSOCK = 18
DATA_TYPES = (SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK)

NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3

IPPROTO_TCP = 6
IPPROTO_UDP = 17

# How many times a dump (sock_diag or rtnetlink) is tried when each try is interrupted (NLM_F_DUMP_INTR):
# the table changed while it was read.
DUMP_ATTEMPTS = 3

NLMSG_HDR = struct.Struct("=IHHII")
MSG_HEAD = struct.Struct("=IH")
ERROR_CODE = struct.Struct("=i")
# inet_diag_req_v2: family, protocol, ext, pad, states, then an all-zero inet_diag_sockid (48 bytes).
INET_DIAG_REQ_V2 = struct.Struct("=BBBxI48x")
# inet_diag_req: family (AF_UNSPEC: both), src_len, dst_len, ext, an all-zero inet_diag_sockid, states, dbs.
INET_DIAG_REQ = struct.Struct("=BBBB48xII")

# Offsets inside one netlink message (nlmsghdr is 16 bytes, inet_diag_msg follows; the kernel's
# include/uapi/linux/inet_diag.h: idiag_family, idiag_state, idiag_timer, idiag_retrans, the
# 48-byte inet_diag_sockid, idiag_expires, idiag_rqueue, idiag_wqueue, idiag_uid, idiag_inode).
# Ports are big-endian, the other numbers host order; an IPv4 address fills the first 4 of its 16
# bytes. Every reader of a sock_diag message uses these names.
OFF_FAMILY = 16
OFF_STATE = 17
OFF_TIMER = 18
OFF_RETRANS = 19
OFF_SPORT = 20
OFF_DPORT = 22
OFF_SRC = 24
OFF_DST = 40
OFF_EXPIRES = 68
OFF_RQUEUE = 72
OFF_WQUEUE = 76
OFF_UID = 80
OFF_INODE = 84
MSG_MIN_LEN = 88
ADDRESS_WIDTH = {socket.AF_INET: 4, socket.AF_INET6: 16}

# One unpack for what the connection loop reads of every message: nlmsg_len, nlmsg_type, then
# idiag_family, idiag_state, idiag_timer, idiag_retrans, id.idiag_sport, then idiag_rqueue and
# idiag_wqueue. The port is big-endian in the message and read here in native order (byte-swapped
# on a little-endian host): the loop tests it against the listening ports read the same way.
# It needs OFF_WQUEUE + 4 bytes: a shorter tail of a buffer can only be NLMSG_DONE (20 bytes).
MSG_FIXED = struct.Struct("=IH%dxBBBBH%dxII" % (OFF_FAMILY - MSG_HEAD.size, OFF_RQUEUE - OFF_SPORT - 2))

# idiag_timer values (net/ipv4/inet_diag.c), named as tcp.timers names them.
TIMER_NAMES = ("none", "retransmit", "keepalive", "time_wait", "zero_window_probe")
TIMER_RETRANSMIT = 1
TIMER_KEEPALIVE = 2
TIMER_ZERO_WINDOW_PROBE = 4

RECV_SIZE = 1 << 18
# NLMSG_DONE of a dump: a header and the int the kernel puts after it (no extended ack asked for).
DONE_LEN = NLMSG_HDR.size + ERROR_CODE.size


class NetlinkUnavailable(Exception):
    """The kernel or a sandbox refused NETLINK_SOCK_DIAG: the caller may fall back to /proc."""


class NetlinkError(Exception):
    """The kernel answered a dump with an error."""


class DumpInterrupted(Exception):
    """The kernel flagged the dump NLM_F_DUMP_INTR: the socket tables changed while it ran."""


def malformed(off, msg_len, length):
    """The NetlinkError for a data message whose length field cannot be right.

    A sock_diag message holds at least a netlink header and an inet_diag_msg (MSG_MIN_LEN
    bytes) and ends inside the buffer; a length of 0 would otherwise walk the same offset
    for ever, a short one read the next message's bytes as this one's fields.
    """
    return NetlinkError("malformed sock_diag reply: the message at offset %d says it is %d bytes long "
                        "(at least %d, and %d bytes are left in the buffer)"
                        % (off, msg_len, MSG_MIN_LEN, length - off))


# ---------------------------------------------------------------- netlink plumbing (sock_diag and rtnetlink)

def netlink_socket(protocol, rcvbuf=0):
    """A netlink socket of one protocol; OSError or ValueError when the kernel or a sandbox refuses it."""
    sock = socket.socket(AF_NETLINK, socket.SOCK_RAW | getattr(socket, "SOCK_CLOEXEC", 0), protocol)
    if rcvbuf:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        except OSError:
            pass
    return sock


def send_dump_request(sock, msg_type, payload, seq=1):
    """Ask the kernel for a dump: one nlmsghdr (NLM_F_REQUEST | NLM_F_DUMP) and its payload. OSError on refusal."""
    sock.sendto(NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                + payload, (0, 0))


# ---------------------------------------------------------------- sock_diag dumps

def open_socket():
    try:
        return netlink_socket(NETLINK_SOCK_DIAG, rcvbuf=4 << 20)
    except (OSError, ValueError) as exc:
        raise NetlinkUnavailable("cannot open a NETLINK_SOCK_DIAG socket: %s" % exc)


def request(sock, family, protocol, states_mask, seq=1):
    """Send the inet_diag_req_v2 of one dump, or with family None the inet_diag_req of one TCP dump of both
    families (TCPDIAG_GETSOCK); NetlinkUnavailable when it is refused."""
    if family is None:
        msg_type, payload = TCPDIAG_GETSOCK, INET_DIAG_REQ.pack(socket.AF_UNSPEC, 0, 0, 0, states_mask, 0)
    else:
        msg_type, payload = SOCK_DIAG_BY_FAMILY, INET_DIAG_REQ_V2.pack(family, protocol, 0, states_mask)
    try:
        send_dump_request(sock, msg_type, payload, seq)
    except OSError as exc:
        raise NetlinkUnavailable("sock_diag request refused: %s" % exc)


def data_type(buf):
    """The message type of a receive buffer's sockets: its first message's when that is one of DATA_TYPES (a
    dump answers one request, all its sockets in one type), else SOCK_DIAG_BY_FAMILY (the buffer then
    starts with a control message, which every consumer stops at)."""
    first = MSG_HEAD.unpack_from(buf, 0)[1] if len(buf) >= MSG_HEAD.size else SOCK_DIAG_BY_FAMILY
    return first if first in DATA_TYPES else SOCK_DIAG_BY_FAMILY


# Per thread: the buffer every recv_into() of that thread fills.
_scratch = threading.local()


def receive(sock):
    """One receive buffer of a dump, as bytes (not a reused bytearray: slices of it are hashable dict keys).

    The kernel's datagram lands in a buffer the thread keeps, and only its length is copied out:
    recv(RECV_SIZE) would map a fresh RECV_SIZE block and shrink it for every datagram. Python retries
    a recv a signal interrupts (PEP 475); a socket timeout goes to the caller.
    """
    scratch = getattr(_scratch, "buf", None)
    if scratch is None:
        scratch = _scratch.buf = memoryview(bytearray(RECV_SIZE))
    try:
        return bytes(scratch[:sock.recv_into(scratch)])
    except socket.timeout:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOBUFS:
            raise DumpInterrupted("netlink receive buffer overrun")
        raise NetlinkError("sock_diag receive failed: %s" % exc)


def take(buf, consume):
    """Hand one receive buffer of a dump to consume(buf, length); True when the buffer ended the dump.

    consume walks the messages of the buffer and returns None when all were data
    (SOCK_DIAG_BY_FAMILY), or the offset of the first other message (NLMSG_DONE or
    NLMSG_ERROR), which this function then reads. This keeps the per-message loop in one
    place: the caller's aggregation. Raises DumpInterrupted when the kernel marks the dump
    inconsistent, NetlinkError on an error reply or a malformed buffer, NetlinkUnavailable
    when the kernel refuses the request.
    """
    length = len(buf)
    if length < NLMSG_HDR.size:
        raise NetlinkError("sock_diag dump ended without NLMSG_DONE")
    # The kernel flags every message after an inconsistency (NLMSG_DONE included),
    # so the first message of each buffer and the final one are enough to look at.
    if NLMSG_HDR.unpack_from(buf, 0)[2] & NLM_F_DUMP_INTR:
        raise DumpInterrupted("the socket table changed during the dump")
    try:
        stop = consume(buf, length)
    except (IndexError, KeyError, AttributeError, TypeError, struct.error) as exc:
        # a field out of range: an address family or a state the decoders have no slot for
        raise NetlinkError("malformed sock_diag reply: a field out of range (%s: %s)" % (type(exc).__name__, exc))
    if stop is None:
        return False
    _end_of_dump(buf, length, stop)
    return True


def _end_of_dump(buf, length, stop):
    """Read the control message at offset stop: return at NLMSG_DONE, raise on anything else."""
    if stop + NLMSG_HDR.size > length:
        raise NetlinkError("malformed sock_diag reply: %d bytes at offset %d, too short for a netlink header"
                           % (length - stop, stop))
    _msg_len, msg_type, flags, _seq, _pid = NLMSG_HDR.unpack_from(buf, stop)
    if msg_type == NLMSG_ERROR:
        if stop + DONE_LEN > length:
            raise NetlinkError("malformed sock_diag reply: truncated NLMSG_ERROR at offset %d" % stop)
        code = ERROR_CODE.unpack_from(buf, stop + NLMSG_HDR.size)[0]
        if code in (-errno.EPERM, -errno.EACCES, -errno.EPROTONOSUPPORT, -errno.ENOENT,
                    -errno.EOPNOTSUPP, -errno.EINVAL):
            raise NetlinkUnavailable("sock_diag refused: %s" % os.strerror(-code))
        raise NetlinkError("sock_diag error: %s" % os.strerror(-code))
    if msg_type != NLMSG_DONE:
        raise NetlinkError("unexpected netlink message type %d" % msg_type)
    if flags & NLM_F_DUMP_INTR:
        raise DumpInterrupted("the socket table changed during the dump")


def dump(family, protocol, states_mask, consume, sock=None, seq=1, relay_after=None):
    """Run one sock_diag dump, handing every receive buffer to consume (see take()). family None: a TCP
    dump of both families in one walk of the kernel's table (see request()).

    relay_after (a number of buffers, or None): when the dump has not ended after that many, a child
    process (Relay) receives the rest from the kernel while this one counts what it has, so the kernel's
    work for the next buffers and the counting of the last ones run on two CPUs side by side. Small
    tables end before the fork would pay; where a process cannot be forked the dump goes on here.
    """
    own = sock is None
    if own:
        sock = open_socket()
    relay = None
    try:
        request(sock, family, protocol, states_mask, seq)
        buffers = 0
        while True:
            if relay is None and relay_after is not None and buffers >= relay_after:
                relay = Relay.start(sock)
                relay_after = None   # one try: a refused fork is not tried again for every buffer
            if take(relay.receive() if relay is not None else receive(sock), consume):
                break
            buffers += 1
    finally:
        if relay is not None:
            relay.stop()
        if own:
            sock.close()


# How long a relay waits for the kernel's next buffer, or for room to pass it on, before it gives up:
# the kernel fills the next buffer in the receive call itself, so a wait this long means the dump ended
# (the parent is done with it and ends the relay) or the parent is gone.
RELAY_IDLE_MS = 10000
# A receive-side error the relay passes on: its 1-byte marker and the errno (a netlink buffer is at least a
# 16-byte header, so a 5-byte message is never one).
RELAY_ERROR = struct.Struct("=ci")


class Relay:
    """A forked child that receives a dump's buffers from the netlink socket it inherited and passes each,
    whole, over a SOCK_SEQPACKET pair to the parent, which counts them meanwhile.

    The child runs no code of the caller's: it receives, sends and leaves with os._exit (no atexit, no
    buffered output flushed twice). The parent ends it when the dump is read (or failed) and reaps it; a
    child whose parent died ends by itself when the socket pair breaks or after RELAY_IDLE_MS without
    data. Only a single-threaded process forks (a fork copies one thread of a threaded one, locks held by
    the others included); Relay.start returns None otherwise, and when fork or socketpair is refused.
    """

    def __init__(self, pid, channel):
        self.pid, self.channel = pid, channel

    @classmethod
    def start(cls, sock):
        if threading.active_count() != 1 or not hasattr(os, "fork"):
            return None
        try:
            parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            return None
        for end, option in ((child_end, socket.SO_SNDBUF), (parent_end, socket.SO_RCVBUF)):
            _raise_buffer(end, option, 4 << 20)
        try:
            pid = os.fork()
        except OSError:
            parent_end.close()
            child_end.close()
            return None
        if pid == 0:  # the child: nothing below returns
            code = 1
            try:
                parent_end.close()
                code = _relay(sock, child_end)
            finally:
                os._exit(code)
        child_end.close()
        return cls(pid, parent_end)

    def receive(self):
        """The next buffer the child passed on, as receive() returns one from the kernel."""
        scratch = getattr(_scratch, "buf", None)
        if scratch is None:
            scratch = _scratch.buf = memoryview(bytearray(RECV_SIZE))
        try:
            length = self.channel.recv_into(scratch)
        except OSError as exc:
            raise NetlinkError("sock_diag relay: receive failed: %s" % exc)
        if length == RELAY_ERROR.size and scratch[0:1] == b"E":
            code = RELAY_ERROR.unpack_from(scratch)[1]
            if code == errno.ENOBUFS:
                raise DumpInterrupted("netlink receive buffer overrun")
            raise NetlinkError("sock_diag receive failed: %s" % os.strerror(code))
        if length == 0:
            raise NetlinkError("sock_diag relay: the receiving process ended before the dump did")
        return bytes(scratch[:length])

    def stop(self):
        self.channel.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except OSError:
            pass


def _raise_buffer(sock, option, size):
    """SO_*BUFFORCE (root may pass the system's limit) or else the option itself; best effort."""
    force = {socket.SO_SNDBUF: 32, socket.SO_RCVBUF: 33}[option]  # SO_SNDBUFFORCE, SO_RCVBUFFORCE
    for name in (force, option):
        try:
            sock.setsockopt(socket.SOL_SOCKET, name, size)
            return
        except OSError:
            pass


def _relay(sock, channel):
    """The child's loop: kernel buffer -> channel, until the parent ends it. Returns the exit code."""
    scratch = memoryview(bytearray(RECV_SIZE))
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        if not poller.poll(RELAY_IDLE_MS):
            return 0
        try:
            length = sock.recv_into(scratch)
        except OSError as exc:
            channel.send(RELAY_ERROR.pack(b"E", exc.errno or errno.EIO))
            return 1
        try:
            channel.send(scratch[:length])
        except OSError:
            return 1   # the parent is gone or ended the relay
