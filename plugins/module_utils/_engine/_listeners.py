# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The listener walk, both halves together: which processes hold the listeners' socket inodes (the walk
of /proc/PID/fd, map_socket_inodes), and the listener rows, warnings and per-process view gather() makes
of what it found."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import resource
import time

from . import _cgroup as cgroup
from . import _procfs as procfs
from ._aggregate import states_from

# Listening sockets are usually opened early, so they sit at low descriptor numbers even in
# servers that hold thousands of accepted connections. The walk probes every process's
# descriptors breadth-first in growing windows of numbers and stops as soon as every wanted
# inode is found; only what is left after the last window is listed.
FD_WINDOWS = (64, 512, 4096)

# The walk holds at most this many /proc/PID/fd directories open at once (and no more than half
# the descriptors the open-files soft limit leaves free), whatever the number of processes: with
# more processes than that it opens each again for the next window.
WALK_DIRECTORIES = 64

_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


def _soft_limit():
    """The open-files soft limit (RLIMIT_NOFILE), None when unlimited or unknown."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ValueError, OSError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def _directories_allowed(soft):
    """How many directories the walk may hold: WALK_DIRECTORIES, or half of what the soft limit
    leaves free if that is fewer (at least one: running out is handled as it comes)."""
    if soft is None:
        return WALK_DIRECTORIES
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        return 1
    return max(1, min(WALK_DIRECTORIES, (soft - in_use) // 2))


class FdWalkResult:
    """What map_socket_inodes found: owners (inode -> lowest pid holding it), denied (count of
    processes whose fds could not be read), inode_pids (full walk only: inode -> set of pids),
    reads (descriptors read), exhausted (the budget ran out before every inode was found),
    fd_limited (count of processes not read, or not wholly, because this process had no file
    descriptor free: the open-files limit), unlisted (not even /proc could be listed for that
    reason, so no process was read) and soft_limit (the open-files soft limit, None when
    unlimited)."""

    def __init__(self, owners, denied, inode_pids, reads, exhausted, fd_limited=0, unlisted=False, soft_limit=None):
        self.owners = owners
        self.denied = denied
        self.inode_pids = inode_pids
        self.reads = reads
        self.exhausted = exhausted
        self.fd_limited = fd_limited
        self.unlisted = unlisted
        self.soft_limit = soft_limit


def map_socket_inodes(wanted, proc="/proc", full=False, budget=None, deadline=None, all_namespaces=False):
    """Find which processes hold the socket inodes in `wanted`; returns an FdWalkResult.

    Without full, the walk reads the descriptors of the processes of the current network
    namespace only (all_namespaces adds the others, after them), stops as soon as every
    wanted inode is found, and reads at most `budget` descriptors and only until
    time.monotonic() passes `deadline` (None: no limit): one listener that no process
    holds (its descriptor in flight over a unix socket, or held by a process of another
    namespace) must not make it read every descriptor of the host.
    With full, every descriptor of every process is read and inode_pids maps every socket
    inode -> set of pids (the per-process view).

    The walk holds a bounded number of directories open (WALK_DIRECTORIES, fewer under a small
    open-files limit) and, out of descriptors (EMFILE, ENFILE), holds fewer and goes on; what it
    still could not read for that reason is counted in fd_limited.
    """
    owners = {}
    remaining = set(wanted)
    denied = set()
    inode_pids = {} if full else None
    soft = _soft_limit()
    if not remaining and not full:
        return FdWalkResult(owners, 0, inode_pids, 0, False, soft_limit=soft)
    # Processes of the namespace being gathered hold its sockets: walk them first, so a
    # listener whose owner is unreadable does not make us read other namespaces' fds first.
    try:
        here = procfs.namespace_id(os.path.join(proc, "self/ns/net"))
    except (IOError, OSError):
        here = None
    try:
        every_pid = procfs.pids(proc)
    except OSError as exc:
        if exc.errno not in _OUT_OF_DESCRIPTORS:
            raise
        return FdWalkResult(owners, 0, inode_pids, 0, False, unlisted=True, soft_limit=soft)
    local_pids, other_pids = [], []
    for pid in every_pid:
        try:
            same = here is None or procfs.namespace_id(os.path.join(proc, str(pid), "ns/net")) == here
        except PermissionError:
            # Its namespace is as unreadable as its descriptors would be (not root, or protected).
            denied.add(pid)
            continue
        except (IOError, OSError):
            continue  # gone
        (local_pids if same else other_pids).append(pid)
    groups = (local_pids, other_pids) if full or all_namespaces else (local_pids,)
    walk = _FdWalk(proc, remaining, owners, inode_pids, denied, None if full else budget,
                   None if full else deadline, _directories_allowed(soft))
    try:
        for group in groups:
            if walk.run(group, full) or walk.exhausted:
                break
    finally:
        walk.close()
    return FdWalkResult(owners, len(denied), inode_pids, walk.reads, walk.exhausted,
                        fd_limited=len(walk.starved), soft_limit=soft)


class _FdWalk:
    def __init__(self, proc, remaining, owners, inode_pids, denied, budget, deadline, allowed):
        self.proc = proc
        self.remaining = remaining
        self.owners = owners
        self.inode_pids = inode_pids
        self.denied = denied
        self.dirs = {}  # pid -> open /proc/PID/fd, the longest held first
        self.allowed = allowed
        self.starved = set()  # pids left unread, or partly, for want of a descriptor
        self.reads = 0
        self.budget = budget
        self.deadline = deadline
        self.exhausted = False

    def _late(self):
        """Whether the deadline has passed; looked at every 64 descriptors (a clock read each is waste)."""
        if self.deadline is None or self.reads & 63:
            return False
        if time.monotonic() > self.deadline:
            self.exhausted = True
        return self.exhausted

    def _allow(self, wanted):
        """How many of `wanted` more descriptor reads the budget allows (all when unlimited)."""
        if self.budget is None:
            return wanted
        allowed = min(wanted, self.budget - self.reads)
        if allowed < wanted:
            self.exhausted = True
        return max(allowed, 0)

    def close(self):
        for dir_fd in self.dirs.values():
            os.close(dir_fd)
        self.dirs.clear()

    def _release(self):
        """Out of descriptors: close the directory held longest and hold fewer from now on.
        False when none is held (nothing left to give back)."""
        if not self.dirs:
            return False
        oldest = next(iter(self.dirs))
        os.close(self.dirs.pop(oldest))
        self.allowed = max(1, min(self.allowed, len(self.dirs)))
        return True

    def _dir(self, pid):
        """pid's open /proc/PID/fd (opened, the longest held closed, when not held); None when
        unreadable, gone, or no descriptor could be had."""
        dir_fd = self.dirs.get(pid)
        if dir_fd is not None:
            return dir_fd
        path = os.path.join(self.proc, str(pid), "fd")
        while True:
            while len(self.dirs) >= self.allowed:
                os.close(self.dirs.pop(next(iter(self.dirs))))
            try:
                dir_fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
            except PermissionError:
                self.denied.add(pid)
                return None
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    if self._release():
                        continue
                    self.starved.add(pid)
                return None  # gone
            self.dirs[pid] = dir_fd
            return dir_fd

    def _with_descriptor(self, action):
        """action() opens a file for a moment: out of descriptors, give back directories until it
        can. Raises _Starved when none is left to give back."""
        while True:
            try:
                return action()
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS:
                    raise
                if not self._release():
                    raise _Starved()

    def run(self, group, full):
        """Walk the fds of the pids in group. True when every wanted inode was found."""
        active = group
        low = 0
        if not full:
            for high in FD_WINDOWS:
                still = []
                for pid in active:
                    state = self._probe(pid, low, high)
                    if not self.remaining:
                        return True
                    if self.exhausted:
                        return False
                    if state:
                        still.append(pid)
                    # None: unreadable or gone
                active = still
                low = high
        for pid in active:
            self._rest(pid, low)
            if not self.remaining and not full:
                return True
            if self.exhausted:
                return False
        return not self.remaining and not full

    def _probe(self, pid, low, high):
        """readlink fds low..high-1 of pid. None when unreadable, else whether it may have more."""
        end = high
        if low:
            # Its descriptor table (FDSize) may end before this window or inside it: no fd lies
            # beyond (without this, one fd at 100 meant reading every number up to 4096).
            end = min(high, self._fd_size(pid))
            if end <= low:
                return False
        dir_fd = self._dir(pid)
        if dir_fd is None:
            return None
        readlink = os.readlink
        more = False
        for number in range(low, low + self._allow(end - low)):
            self.reads += 1
            if self._late():
                return None
            try:
                target = readlink(str(number), dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            except PermissionError:
                self.denied.add(pid)
                return None
            except (IOError, OSError):
                return None
            more = True
            if target.startswith("socket:["):
                self._note(int(target[8:-1]), pid)
                if not self.remaining and self.inode_pids is None:
                    return True
        # A process whose window held nothing may still have higher fds (dup2, closed low fds):
        # keep it unless its descriptor table is no larger than the window.
        return more or self._fd_size(pid) > high

    def _fd_size(self, pid):
        """FDSize of pid's status; 0 when unreadable, and larger than any window when no descriptor
        was free to read it (so the process is kept, not dropped)."""
        path = os.path.join(self.proc, str(pid), "status")

        def read():
            with open(path) as handle:
                for line in handle:
                    if line.startswith("FDSize:"):
                        return int(line.split()[1])
            return 0
        try:
            return self._with_descriptor(read)
        except _Starved:
            return FD_WINDOWS[-1] + 1  # not lost: its next window is read all the same
        except (IOError, OSError, ValueError):
            return 0

    def _rest(self, pid, low):
        try:
            names = self._with_descriptor(lambda: os.listdir(os.path.join(self.proc, str(pid), "fd")))
        except _Starved:
            self.starved.add(pid)
            return
        except PermissionError:
            self.denied.add(pid)
            return
        except (IOError, OSError):
            return
        dir_fd = self._dir(pid)
        if dir_fd is None:
            return
        names = [name for name in names if int(name) >= low]
        readlink = os.readlink
        for name in names[:self._allow(len(names))]:
            self.reads += 1
            if self._late():
                return
            try:
                target = readlink(name, dir_fd=dir_fd)
            except PermissionError:
                self.denied.add(pid)
                return
            except (IOError, OSError):
                continue
            if target.startswith("socket:["):
                self._note(int(target[8:-1]), pid)
                if not self.remaining and self.inode_pids is None:
                    return

    def _note(self, inode, pid):
        if inode in self.remaining:
            self.remaining.discard(inode)
            self.owners[inode] = pid
        elif inode in self.owners and pid < self.owners[inode]:
            self.owners[inode] = pid
        if self.inode_pids is not None:
            self.inode_pids.setdefault(inode, set()).add(pid)


class _Starved(Exception):
    """No file descriptor could be had, even with every directory given back."""


# ---------------------------------------------------------------- listener rows and processes

# Unless told a descriptor budget, the listener walk may take this share of the dumps' own
# time, and at least the floor (a host's whole walk usually takes a few milliseconds).
WALK_TIME_SHARE = 0.25
WALK_TIME_FLOOR = 0.1


def listener_rows(tcp, udp, options, full_walk, warnings, dump_seconds):
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
    found = map_socket_inodes(wanted, proc=proc, full=full_walk, budget=budget,
                              deadline=None if time_budget is None else started + time_budget,
                              all_namespaces=options.walk_all_namespaces)
    walk_ms = round((time.monotonic() - started) * 1000, 1)
    infos = {}
    units = {}
    root = None  # systemd's root cgroup, read with the first process found
    missing = 0
    result = []
    for item in sorted(rows, key=lambda r: (r["protocol"], r["port"], r["family"], r["address"])):
        pid = found.owners.get(item["inode"])
        info = None
        if pid is not None:
            if pid not in infos:
                infos[pid] = procfs.process_info(pid, proc)
                if infos[pid] and root is None:
                    root = cgroup.systemd_root(proc)
                units[pid] = cgroup.process_unit(pid, proc, root) if infos[pid] else None
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
            "unit": units[pid] if info else None,
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
    """Why a walk that ran out of file descriptors (FdWalkResult `found`) left sockets without their
    process: one wording for the listener walk and listener_facts' walk of the other sockets."""
    return "ran out of file descriptors (%s) and could not read %s; raise the soft limit" % (
        _soft_limit_text(found.soft_limit), _unread_text(found))


def walk_warning(found, missing, budget, time_budget, all_namespaces, warnings):
    """Why `missing` listeners were left without a process by the walk (FdWalkResult `found`):
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


def processes(tcp, inode_pids, proc):
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
        states = states_from(counts)
        entry["connections"] = {"total": sum(states.values()), "states": states}
    return result
