# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: everything the engine reads from /proc, standard library only.

Part of the engine: no ansible import, Python 3.8+. Parsers take text and return plain
data so they can be tested on recorded or malformed input; readers take a root so tests
can point them at a temporary tree.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd
import socket
import struct
import time

from . import _escape as escape
from . import _files as files
from ._netlink import TIMER_KEEPALIVE, TIMER_ZERO_WINDOW_PROBE

CLONE_NEWNET = 0x40000000


class ProcFormatError(ValueError):
    """A /proc file did not have the layout the kernel documents."""


# ---------------------------------------------------------------- /proc/net/{tcp,udp}[6]

# Columns of a /proc/net/tcp(6) or udp(6) line (net/ipv4/tcp_ipv4.c, get_tcp4_sock): sl, local_address,
# rem_address, st, tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, inode, then more.
COL_LOCAL, COL_REMOTE, COL_STATE, COL_QUEUES, COL_TIMER, COL_RETRANSMITS, COL_UID, COL_PROBES, COL_INODE = range(1, 10)


def _hex_address(text, family):
    """Turn the kernel's %08X-per-32-bit-word address into a printable address."""
    if family == socket.AF_INET:
        if len(text) != 8:
            raise ProcFormatError("bad IPv4 address field %r" % text)
        return socket.inet_ntop(socket.AF_INET, struct.pack("=I", int(text, 16)))
    if len(text) != 32:
        raise ProcFormatError("bad IPv6 address field %r" % text)
    raw = b"".join(struct.pack("=I", int(text[i:i + 8], 16)) for i in range(0, 32, 8))
    return socket.inet_ntop(socket.AF_INET6, raw)


def parse_proc_net(text, family):
    """Parse /proc/net/tcp(6) or udp(6) text into tuples.

    Yields (state, local_address, local_port, remote_address, remote_port, tx_queue,
    rx_queue, uid, inode, timer, retransmits). Raises ProcFormatError on a malformed line.

    timer is the "tr" column (0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero window
    probe, as idiag_timer); retransmits is what sock_diag's idiag_retrans holds for that timer:
    the "retrnsmt" column (icsk_retransmits), or for keepalive and zero window probes the
    probes sent ("timeout" column, icsk_probes_out).
    """
    lines = text.splitlines()
    if not lines:
        return
    if not lines[0].lstrip().startswith("sl"):
        raise ProcFormatError("missing header line")
    for number, line in enumerate(lines[1:], 2):
        fields = line.split()
        if len(fields) <= COL_INODE:
            raise ProcFormatError("line %d has %d fields, expected at least %d" % (number, len(fields), COL_INODE + 1))
        try:
            local, local_port = fields[COL_LOCAL].split(":")
            remote, remote_port = fields[COL_REMOTE].split(":")
            tx_queue, rx_queue = fields[COL_QUEUES].split(":")
            timer = int(fields[COL_TIMER].split(":")[0], 16)
            probing = timer in (TIMER_KEEPALIVE, TIMER_ZERO_WINDOW_PROBE)
            yield (
                int(fields[COL_STATE], 16),
                _hex_address(local, family), int(local_port, 16),
                _hex_address(remote, family), int(remote_port, 16),
                int(tx_queue, 16), int(rx_queue, 16),
                int(fields[COL_UID]), int(fields[COL_INODE]),
                timer, int(fields[COL_PROBES]) if probing else int(fields[COL_RETRANSMITS], 16),
            )
        except (ValueError, struct.error) as exc:
            raise ProcFormatError("line %d: %s" % (number, exc))


# ---------------------------------------------------------------- /proc/net/igmp{,6}

def _group_v4(text):
    if len(text) != 8:
        raise ProcFormatError("bad IPv4 group field %r" % text)
    return socket.inet_ntop(socket.AF_INET, struct.pack("=I", int(text, 16)))


def parse_igmp(text):
    """/proc/net/igmp -> [(interface, group, users)].

    A device line ``idx<TAB>name : count querier`` is followed by one line per group, each
    starting with a tab: ``group users timer_running:expires reporter``, group as the kernel's
    %08X of the address in network order (so host-order hex on little-endian machines).
    """
    lines = text.splitlines()
    if not lines:
        return []
    if not lines[0].startswith("Idx"):
        raise ProcFormatError("missing header line")
    result = []
    device = None
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            if line[0] in " \t":
                if device is None:
                    raise ValueError("group line before any device line")
                fields = line.split()
                if len(fields) < 2:
                    raise ValueError("%d fields, expected at least 2" % len(fields))
                result.append((device, _group_v4(fields[0]), int(fields[1], 10)))
            else:
                head, sep, _rest = line.partition(":")
                fields = head.split()
                if not sep or len(fields) != 2 or not fields[0].isdigit():
                    raise ValueError("bad device line %r" % line)
                device = fields[1]
        except ValueError as exc:
            raise ProcFormatError("line %d: %s" % (number, exc))
    return result


def parse_igmp6(text):
    """/proc/net/igmp6 -> [(interface, group, users)]: ``ifindex name group32hex users flags timer``."""
    result = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 4:
            raise ProcFormatError("line %d has %d fields, expected at least 4" % (number, len(fields)))
        if len(fields[2]) != 32 or not fields[0].isdigit():
            raise ProcFormatError("line %d: bad index or group field in %r" % (number, line))
        try:
            group = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[2]))
            users = int(fields[3], 10)
        except ValueError as exc:
            raise ProcFormatError("line %d: %s" % (number, exc))
        result.append((fields[1], group, users))
    return result


def read_text(path):
    """A /proc file as text whatever the locale: a process names itself (comm, stat) with any
    bytes but NUL, so bytes that are not UTF-8 come back as \\xNN (escape.decode)."""
    with open(path, "rb") as handle:
        return escape.decode(handle.read())


# ---------------------------------------------------------------- counters

def parse_header_pairs(text):
    """Parse /proc/net/snmp or /proc/net/netstat: 'Prefix: names' then 'Prefix: values'.

    Returns {prefix: {name: int}}.
    """
    result = {}
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) % 2:
        raise ProcFormatError("odd number of lines: header and value lines must pair up")
    for header, values in zip(lines[0::2], lines[1::2]):
        prefix, _sep, names = header.partition(":")
        prefix_v, _sep_v, numbers = values.partition(":")
        if not _sep or prefix != prefix_v:
            raise ProcFormatError("header %r does not match value line %r" % (prefix, prefix_v))
        names = names.split()
        numbers = numbers.split()
        if len(names) != len(numbers):
            raise ProcFormatError("%s: %d names but %d values" % (prefix, len(names), len(numbers)))
        try:
            result[prefix] = dict(zip(names, (int(n) for n in numbers)))
        except ValueError as exc:
            raise ProcFormatError("%s: %s" % (prefix, exc))
    return result


def parse_sockstat(text):
    """Parse /proc/net/sockstat{,6}: 'TCP: inuse 3 orphan 0 ...' -> {'TCP_inuse': 3, ...}."""
    result = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        prefix, sep, rest = line.partition(":")
        words = rest.split()
        if not sep or len(words) % 2:
            raise ProcFormatError("bad sockstat line %r" % line)
        for name, value in zip(words[0::2], words[1::2]):
            try:
                result["%s_%s" % (prefix.strip(), name)] = int(value)
            except ValueError:
                raise ProcFormatError("bad sockstat value %r in %r" % (value, line))
    return result


# Tcp fields of /proc/net/snmp that are gauges or settings, not cumulative counters: no rates of them,
# and the collector exports them as gauges.
TCP_GAUGE_FIELDS = frozenset(("RtoAlgorithm", "RtoMin", "RtoMax", "MaxConn", "CurrEstab"))


def read_counters(proc="/proc"):
    """sockstat (both files), TcpExt and Tcp as dicts of integers named as the kernel names them."""
    sockstat = {}
    for name in ("sockstat", "sockstat6"):
        try:
            sockstat.update(parse_sockstat(read_text(os.path.join(proc, "net", name))))
        except (IOError, OSError):
            pass
    netstat = parse_header_pairs(read_text(os.path.join(proc, "net", "netstat")))
    snmp = parse_header_pairs(read_text(os.path.join(proc, "net", "snmp")))
    return {"sockstat": sockstat, "TcpExt": netstat.get("TcpExt", {}), "Tcp": snmp.get("Tcp", {})}


def rates(before, after, interval):
    """Per-second rates of the cumulative counters between two read_counters() results."""
    result = {}
    for group in ("TcpExt", "Tcp"):
        older = before.get(group, {})
        result[group] = {
            name: round((value - older[name]) / interval, 3)
            for name, value in after.get(group, {}).items()
            if name in older and not (group == "Tcp" and name in TCP_GAUGE_FIELDS)
        }
    return result


SYSCTL_KEYS = (
    ("tcp_max_orphans", "net/ipv4/tcp_max_orphans"),
    ("somaxconn", "net/core/somaxconn"),
    ("tcp_max_tw_buckets", "net/ipv4/tcp_max_tw_buckets"),
    ("tcp_tw_reuse", "net/ipv4/tcp_tw_reuse"),
    ("tcp_timestamps", "net/ipv4/tcp_timestamps"),
    ("tcp_fin_timeout", "net/ipv4/tcp_fin_timeout"),
    ("tcp_max_syn_backlog", "net/ipv4/tcp_max_syn_backlog"),
    ("tcp_syncookies", "net/ipv4/tcp_syncookies"),
    ("tcp_abort_on_overflow", "net/ipv4/tcp_abort_on_overflow"),
)


def read_sysctls(proc="/proc"):
    """The TCP sysctls rules need; None where /proc/sys does not show a key (global keys in a netns)."""
    result = {}
    for name, path in SYSCTL_KEYS:
        try:
            result[name] = int(read_text(os.path.join(proc, "sys", path)).split()[0])
        except (IOError, OSError, ValueError, IndexError):
            result[name] = None
    return result


def read_port_range(proc="/proc"):
    """net.ipv4.ip_local_port_range as (low, high); the kernel default when unreadable."""
    try:
        low, high = read_text(os.path.join(proc, "sys/net/ipv4/ip_local_port_range")).split()
        return int(low), int(high)
    except (IOError, OSError, ValueError):
        return 32768, 60999


# ---------------------------------------------------------------- processes

_BOOT_TIME = []


def boot_time(proc="/proc"):
    if not _BOOT_TIME:
        for line in read_text(os.path.join(proc, "stat")).splitlines():
            if line.startswith("btime "):
                _BOOT_TIME.append(int(line.split()[1]))
                break
        else:
            _BOOT_TIME.append(0)
    return _BOOT_TIME[0]


#: More than /proc/PID/comm ever holds (TASK_COMM_LEN, 16 bytes with the newline).
COMM_LIMIT = 64


def process_info(pid, proc="/proc"):
    """{pid, process, user, stime} for one pid, or None when it has gone away."""
    base = os.path.join(proc, str(pid))
    try:
        with open(os.path.join(base, "comm"), "rb") as handle:
            raw = handle.read(COMM_LIMIT)
        # the kernel ends the name with a newline (the name itself may end with one too)
        name = escape.name_text(raw[:-1] if raw.endswith(b"\n") else raw)
        uid = os.stat(base).st_uid
        stat = read_text(os.path.join(base, "stat"))
    except (IOError, OSError):
        return None
    stime = None
    try:
        # comm may hold spaces and parentheses: fields start after the last ')'.
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        started = boot_time(proc) + start_ticks / float(os.sysconf("SC_CLK_TCK"))
        stime = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))
    except (ValueError, IndexError, OSError):
        pass
    return {"pid": pid, "process": name, "user": user_name(uid), "stime": stime}


_USERS = {}


def user_name(uid):
    if uid is None:
        return None
    if uid not in _USERS:
        try:
            _USERS[uid] = escape.text(pwd.getpwuid(uid).pw_name)
        except KeyError:
            _USERS[uid] = str(uid)
    return _USERS[uid]


def pids(proc="/proc"):
    return sorted(int(name) for name in os.listdir(proc) if name.isdigit())


# ---------------------------------------------------------------- network namespaces

_LIBC = []


def _setns(fd):
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
        return
    # Python before 3.12: libc's setns, from the symbols the interpreter has loaded already (no library
    # search, which would start ldconfig); ctypes only here, so that a gather in its own namespace never loads it
    import ctypes  # pylint: disable=import-outside-toplevel
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    if _LIBC[0].setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class NetNamespace:
    """Context manager: enter the network namespace at `path`, return to ours on exit."""

    def __init__(self, path):
        self.path = path
        self._own = None

    def __enter__(self):
        # never blocks on a FIFO, and refuses anything that is not a namespace file
        target = files.open_namespace(self.path)
        try:
            self._own = os.open(own_namespace_file(), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            _setns(target)
        except Exception:
            if self._own is not None:
                os.close(self._own)
                self._own = None
            raise
        finally:
            os.close(target)
        return self

    def __exit__(self, *exc):
        try:
            _setns(self._own)
        finally:
            os.close(self._own)
        return False


def own_namespace_file(proc="/proc"):
    """The network namespace file of the calling thread: setns(2) moves one thread, and /proc/self is the
    thread group leader's (another thread's namespace when the gathering runs in a worker thread that
    entered one: an asyncio executor, the event source). /proc/self where there is no thread-self (a
    copy of /proc's tables, a kernel before 3.17)."""
    thread = os.path.join(proc, "thread-self")
    return os.path.join(thread if os.path.exists(thread) else os.path.join(proc, "self"), "ns/net")


def namespace_id(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def own_namespace_label(proc="/proc", run_netns="/run/netns"):
    """How the facts name the network namespace this process runs in: "host" where it is PID 1's (or PID 1's
    cannot be read), its name where /run/netns names it, "self" otherwise."""
    try:
        own = namespace_id(os.path.join(proc, "self/ns/net"))
    except (IOError, OSError):
        return "host"  # a /proc without namespaces (a copy of its tables): nothing else to name it by
    try:
        if namespace_id(os.path.join(proc, "1/ns/net")) == own:
            return "host"
        pid1_readable = True
    except (IOError, OSError):
        pid1_readable = False  # not root: PID 1's namespace is not ours to read
    try:
        names = sorted(os.listdir(run_netns))
    except (IOError, OSError):
        names = []
    for name in names:
        try:
            if namespace_id(os.path.join(run_netns, name)) == own:
                return escape.text(name)
        except (IOError, OSError):
            continue
    return "self" if pid1_readable else "host"


def find_namespaces(proc="/proc", run_netns="/run/netns"):
    """Every network namespace other than ours: [(label, path)], named ones first.

    Named namespaces come from /run/netns; the others are found through processes and
    labelled pid:N with the lowest pid inside. A file of /run/netns that is not a namespace
    (not on the namespace file system: one that `ip netns add` or a container runtime is still
    setting up, or has just unmounted) is left out.
    """
    own = namespace_id(os.path.join(proc, "self/ns/net"))
    seen = {own}
    try:
        names = sorted(os.listdir(run_netns))
    except (IOError, OSError):
        names = []
    candidates = [(escape.text(name), os.path.join(run_netns, name)) for name in names]
    candidates += [("pid:%d" % pid, os.path.join(proc, str(pid), "ns/net")) for pid in pids(proc)]
    found = []
    for label, path in candidates:
        try:
            ident = namespace_id(path)
        except (IOError, OSError):
            continue
        if ident[0] != own[0]:
            continue  # not (or no longer) a bind mount of a namespace
        if ident not in seen:
            seen.add(ident)
            found.append((label, path))
    return found
