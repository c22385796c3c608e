# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: NETLINK_SOCK_DIAG dumps (inet_diag_req_v2), standard library only.

This file is part of the engine: it must not import ansible and must run on Python 3.8+.
It yields raw receive buffers; parsing and aggregation live in engine.py, so a dump
builds no Python object per socket.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import socket
import struct

AF_NETLINK = getattr(socket, "AF_NETLINK", 16)
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20

NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3

IPPROTO_TCP = 6
IPPROTO_UDP = 17

NLMSG_HDR = struct.Struct("=IHHII")
MSG_HEAD = struct.Struct("=IH")
# inet_diag_req_v2: family, protocol, ext, pad, states, then an all-zero inet_diag_sockid (48 bytes).
INET_DIAG_REQ_V2 = struct.Struct("=BBBxI48x")

# Offsets inside one netlink message (nlmsghdr is 16 bytes, inet_diag_msg follows; the kernel's
# include/uapi/linux/inet_diag.h: idiag_family, idiag_state, idiag_timer, idiag_retrans, the
# 48-byte inet_diag_sockid, idiag_expires, idiag_rqueue, idiag_wqueue, idiag_uid, idiag_inode).
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

# One unpack for what the connection loop reads of every message: nlmsg_len, nlmsg_type, then
# idiag_family, idiag_state, idiag_timer, idiag_retrans, then idiag_rqueue and idiag_wqueue.
# It needs OFF_WQUEUE + 4 bytes: a shorter tail of a buffer can only be NLMSG_DONE (20 bytes).
MSG_FIXED = struct.Struct("=IH%dxBBBB%dxII" % (OFF_FAMILY - MSG_HEAD.size, OFF_RQUEUE - OFF_RETRANS - 1))

# idiag_timer values (net/ipv4/inet_diag.c), named as tcp.timers names them.
TIMER_NAMES = ("none", "retransmit", "keepalive", "time_wait", "zero_window_probe")
TIMER_RETRANSMIT = 1
TIMER_ZERO_WINDOW_PROBE = 4

RECV_SIZE = 1 << 18


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


def open_socket():
    try:
        sock = socket.socket(AF_NETLINK, socket.SOCK_RAW | getattr(socket, "SOCK_CLOEXEC", 0), NETLINK_SOCK_DIAG)
    except (OSError, ValueError) as exc:
        raise NetlinkUnavailable("cannot open a NETLINK_SOCK_DIAG socket: %s" % exc)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    except OSError:
        pass
    return sock


def dump(family, protocol, states_mask, consume, sock=None, seq=1):
    """Run one sock_diag dump, handing every receive buffer to consume(buf, length).

    consume walks the messages of the buffer and returns None when all were data
    (SOCK_DIAG_BY_FAMILY), or the offset of the first other message (NLMSG_DONE or
    NLMSG_ERROR), which this function then reads. This keeps the per-message loop in one
    place: the caller's aggregation. Raises DumpInterrupted when the kernel marks the
    dump inconsistent, NetlinkError on an error reply, NetlinkUnavailable when netlink is
    refused.
    """
    own = sock is None
    if own:
        sock = open_socket()
    try:
        payload = INET_DIAG_REQ_V2.pack(family, protocol, 0, states_mask)
        request = NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), SOCK_DIAG_BY_FAMILY,
                                 NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + payload
        try:
            sock.sendto(request, (0, 0))
        except OSError as exc:
            raise NetlinkUnavailable("sock_diag request refused: %s" % exc)
        unpack_hdr = NLMSG_HDR.unpack_from
        while True:
            try:
                # bytes, not a reused bytearray: slices of it are hashable dict keys.
                buf = sock.recv(RECV_SIZE)
                length = len(buf)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                if exc.errno == errno.ENOBUFS:
                    raise DumpInterrupted("netlink receive buffer overrun")
                raise NetlinkError("sock_diag receive failed: %s" % exc)
            if length < NLMSG_HDR.size:
                raise NetlinkError("sock_diag dump ended without NLMSG_DONE")
            # The kernel flags every message after an inconsistency (NLMSG_DONE included),
            # so the first message of each buffer and the final one are enough to look at.
            if unpack_hdr(buf, 0)[2] & NLM_F_DUMP_INTR:
                raise DumpInterrupted("the socket table changed during the dump")
            try:
                stop = consume(buf, length)
            except (IndexError, KeyError, AttributeError, TypeError, struct.error) as exc:
                # a field out of range: an address family or a state the decoders have no slot for
                raise NetlinkError("malformed sock_diag reply: a field out of range (%s: %s)"
                                   % (type(exc).__name__, exc))
            if stop is None:
                continue
            if stop + NLMSG_HDR.size > length:
                raise NetlinkError("malformed sock_diag reply: %d bytes at offset %d, too short for a netlink "
                                   "header" % (length - stop, stop))
            _msg_len, msg_type, flags, _seq, _pid = unpack_hdr(buf, stop)
            if msg_type == NLMSG_ERROR:
                if stop + NLMSG_HDR.size + 4 > length:
                    raise NetlinkError("malformed sock_diag reply: truncated NLMSG_ERROR at offset %d" % stop)
                code = struct.unpack_from("=i", buf, stop + NLMSG_HDR.size)[0]
                if code in (-errno.EPERM, -errno.EACCES, -errno.EPROTONOSUPPORT, -errno.ENOENT,
                            -errno.EOPNOTSUPP, -errno.EINVAL):
                    raise NetlinkUnavailable("sock_diag refused: %s" % os.strerror(-code))
                raise NetlinkError("sock_diag error: %s" % os.strerror(-code))
            if msg_type != NLMSG_DONE:
                raise NetlinkError("unexpected netlink message type %d" % msg_type)
            if flags & NLM_F_DUMP_INTR:
                raise DumpInterrupted("the socket table changed during the dump")
            return
    finally:
        if own:
            sock.close()


def count_messages(buf, length):
    """consume() for the floor benchmark and tests: walks headers only. Returns (stop, count)."""
    off = 0
    count = 0
    unpack = MSG_HEAD.unpack_from
    while off < length:
        msg_len, msg_type = unpack(buf, off)
        if msg_type != SOCK_DIAG_BY_FAMILY:
            return off, count
        if msg_len < MSG_MIN_LEN or off + msg_len > length:
            raise malformed(off, msg_len, length)
        count += 1
        off += (msg_len + 3) & ~3
    return None, count


DONE_LEN = NLMSG_HDR.size + 4


def dump_raw(family, protocol, states_mask):
    """The floor for benchmarks: receive a whole dump and parse nothing.

    Only the tail of each buffer is read, where the kernel puts NLMSG_DONE (20 bytes, no
    extended ack on success). Returns the number of bytes received.
    """
    total = [0]

    def consume(buf, length):
        total[0] += length
        tail = length - DONE_LEN
        if tail >= 0 and MSG_HEAD.unpack_from(buf, tail) == (DONE_LEN, NLMSG_DONE):
            return tail
        return None

    dump(family, protocol, states_mask, consume)
    return total[0]
