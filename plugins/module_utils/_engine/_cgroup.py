# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ownership: the systemd unit (or the cgroup) a process or a socket belongs to. Standard library only,
Python 3.8, no ansible import.

- A process's unit comes from /proc/PID/cgroup: the ``name=systemd`` line of a hybrid or v1 layout
  when there is one (the hierarchy systemd itself tracks units in), the cgroup v2 ``0::`` line
  otherwise. The unit is what systemd's ``sd_pid_get_unit`` finds (``ps -o unit=``): the path shifted
  by systemd's own root (PID 1's cgroup without its ``/init.scope``: inside a container sharing the
  host's cgroup tree, the container's directory), then the first component after the leading slices
  when it is a valid unit name (systemd's grammar, below); else the path itself ("/" for the root,
  "/docker/ID" for a container under cgroupfs).
- A socket's owner comes from the kernel's cgroup id of the socket (INET_DIAG_CGROUP_ID, kernel 5.7
  and later), mapped to a directory of the cgroup v2 mount by inode number (UnitCounter).

Unit names and cgroup paths are chosen by whoever can create a cgroup (delegation, containers): they
are read as bytes and made text as process names are (escape.name_text), and every output escapes them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import struct

from . import _escape as escape
from . import _files as files
from . import _netlink as netlink
from ._aggregate import NEW_SYN_RECV, TIME_WAIT, states_from

#: The most bytes of /proc/PID/cgroup read: a line per v1 hierarchy and a path each (PATH_MAX at most).
CGROUP_FILE_LIMIT = 64 * 1024

#: The most directories of the cgroup v2 mount read to map socket cgroup ids to paths.
CGROUP_DIRECTORY_LIMIT = 20000

#: The netlink attribute of a sock_diag reply holding the socket's cgroup v2 id (include/uapi/linux/inet_diag.h).
INET_DIAG_CGROUP_ID = 21
_ATTR_HEAD = struct.Struct("=HH")
_CGROUP_ID = struct.Struct("=Q")

# systemd's unit name grammar (src/basic/unit-name.c, unit_name_is_valid with UNIT_NAME_PLAIN |
# UNIT_NAME_INSTANCE): letters, digits and ":-_.\" in the prefix, "@" once to start a non-empty
# instance (which may hold "@" too), a known unit type as suffix, fewer than 256 characters.
UNIT_TYPES = ("service", "mount", "swap", "socket", "target", "device", "automount", "timer", "path", "slice",
              "scope")
UNIT_NAME_MAX = 256
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\@-]+)?\.(%s)" % "|".join(UNIT_TYPES))


def is_unit_name(name):
    """Whether name is a valid systemd unit name (a template such as ``getty@.service`` is not: no unit
    runs as one)."""
    return len(name) < UNIT_NAME_MAX and _UNIT_NAME.fullmatch(name) is not None


def _unescaped(component):
    """systemd's cg_unescape: a cgroup name that would clash with a kernel file is stored with a leading "_"."""
    return component[1:] if component.startswith("_") else component


def unit_of_path(path):
    """The unit systemd sees in a cgroup path, or the path itself when it names none.

    "/system.slice/nginx.service" -> "nginx.service", "/system.slice/app.service/worker" -> "app.service"
    (a delegated subtree), "/user.slice/user-1000.slice/session-4.scope" -> "session-4.scope",
    "/" -> "/", "/system.slice" -> "/system.slice", "/docker/3f2a..." -> "/docker/3f2a...".
    """
    for component in path.split("/"):
        if not component:
            continue
        name = _unescaped(component)
        if name.endswith(".slice") and is_unit_name(name):
            continue
        if is_unit_name(name):
            return name
        break
    return path


def parse_cgroup(raw, unified=False):
    """The cgroup path systemd tracks a process in, from the bytes of /proc/PID/cgroup, as text (escape.name_text):
    the ``name=systemd`` line, else the ``0::`` line (only that one with unified); None when there is none."""
    found = None
    for line in raw.split(b"\n"):
        parts = line.split(b":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if not unified and b"name=systemd" in controllers.split(b","):
            return escape.name_text(path)
        if hierarchy == b"0" and not controllers and found is None:
            found = escape.name_text(path)
    return found


def process_cgroup(pid, proc="/proc", unified=False):
    """pid's cgroup path (parse_cgroup), None when it is gone or unreadable."""
    try:
        return parse_cgroup(files.read_bytes(os.path.join(proc, str(pid), "cgroup"), CGROUP_FILE_LIMIT), unified)
    except (IOError, OSError):
        return None


# systemd's own cgroup is PID 1's without these last components (cg_get_root_path): inside a container that shares
# the host's cgroup tree, the container's directory, which systemd there leaves out of every unit's path.
_ROOT_SUFFIXES = ("/init.scope", "/system.slice", "/system")


def systemd_root(proc="/proc", unified=False):
    """The cgroup systemd runs the units under: "" at the top of the tree (or when PID 1 is unreadable), else
    a path such as "/machine.slice/libpod-ID.scope" that every unit path of this system starts with."""
    path = process_cgroup(1, proc, unified) or "/"
    for suffix in _ROOT_SUFFIXES:
        if path.endswith(suffix):
            path = path[:-len(suffix)]
            break
    return path.rstrip("/")


def shifted(path, root):
    """path as systemd at root sees it (cg_pid_get_path_shifted): root cut off the front when under it."""
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path


def process_unit(pid, proc="/proc", root=None):
    """The unit owning pid (unit_of_path of its cgroup, shifted by systemd_root(), read when root is None);
    None when unknown."""
    path = process_cgroup(pid, proc)
    if path is None:
        return None
    return unit_of_path(shifted(path, systemd_root(proc) if root is None else root))


# ---------------------------------------------------------------- cgroup v2 ids

def _mountinfo_field(text):
    """A path field of /proc/self/mountinfo: the kernel writes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), text)


def cgroup2_mount(proc="/proc"):
    """(mount point, root of the hierarchy it shows) of the first cgroup v2 mount this process sees,
    or None when there is none."""
    try:
        text = files.read_bytes(os.path.join(proc, "self", "mountinfo"), files.DEFAULT_LIMIT).decode(
            "utf-8", "surrogateescape")
    except (IOError, OSError):
        return None
    for line in text.splitlines():
        fields = line.split()
        try:
            separator = fields.index("-")
        except ValueError:
            continue
        if len(fields) > separator + 1 and fields[separator + 1] == "cgroup2" and separator >= 5:
            return _mountinfo_field(fields[4]), _mountinfo_field(fields[3])
    return None


def map_cgroup_ids(wanted, mount, root="/", limit=CGROUP_DIRECTORY_LIMIT):
    """{cgroup id: cgroup path} for the ids of `wanted` found under the cgroup v2 mount (a cgroup's id is
    its directory's inode number), and whether the walk stopped at `limit` directories. The walk is
    breadth-first and ends as soon as every wanted id is found. Paths are as /proc/PID/cgroup shows
    them: `root` (the hierarchy's directory the mount shows) joined with the path under the mount, read
    as bytes and made text as parse_cgroup makes them (escape.name_text)."""
    remaining = set(wanted)
    found = {}
    if not remaining:
        return found, False
    top_directory = os.fsencode(mount)
    try:
        top = os.stat(top_directory).st_ino
    except OSError:
        return found, False
    base = os.fsencode(root).rstrip(b"/")
    if top in remaining:
        found[top] = escape.name_text(base or b"/")
        remaining.discard(top)
    queue = [(top_directory, base)]
    read = 1
    while queue and remaining:
        next_queue = []
        for directory, shown in queue:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue  # removed meanwhile, or unreadable
            for entry in entries:
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    inode = entry.inode()
                except OSError:
                    continue
                if read >= limit:
                    return found, True
                read += 1
                path = shown + b"/" + entry.name
                if inode in remaining:
                    found[inode] = escape.name_text(path)
                    remaining.discard(inode)
                next_queue.append((entry.path, path))
        queue = next_queue
    return found, False


class UnitCounter:
    """TCP sockets counted by cgroup id and state from sock_diag replies, then by unit (units()).

    wrap() puts its own walk of each receive buffer behind the aggregation's, so the aggregation's hot
    loop is the same whether units are counted or not. A full socket without the cgroup id attribute
    (a kernel before 5.7), or any full socket when no cgroup v2 file system is mounted to name the ids,
    is kept by inode for the process walk; a TIME_WAIT or request socket (a minisock: no cgroup, no
    inode, no process) is counted in `unowned` only.
    """

    def __init__(self, proc="/proc"):
        self.proc = proc
        self.mount = cgroup2_mount(proc)   # (mount point, root) or None: the ids cannot be named
        self.by_cgroup = {}        # (cgroup id, state) -> sockets
        self.without_id = {}       # inode -> state: full sockets left to the process walk
        self.unowned = [0] * 16    # by state: sockets no process or cgroup holds

    def wrap(self, consume):
        """A consumer for netlink.take() that runs consume (the aggregation's, which checks every message's
        length) and then counts the same messages."""
        def both(buf, length):
            stop = consume(buf, length)
            self.consume(buf, length if stop is None else stop)
            return stop
        return both

    def consume(self, buf, length):
        """Count the sock_diag messages of buf[:length] (their lengths already checked)."""
        by_cgroup, without_id, unowned = self.by_cgroup, self.without_id, self.unowned
        unpack_head, unpack_attr = netlink.MSG_HEAD.unpack_from, _ATTR_HEAD.unpack_from
        unpack_id = _CGROUP_ID.unpack_from
        state_at, inode_at, attrs_at = netlink.OFF_STATE, netlink.OFF_INODE, netlink.MSG_MIN_LEN
        named = self.mount is not None
        off = 0
        while off < length:
            msg_len = unpack_head(buf, off)[0]
            state = buf[off + state_at] & 15
            end = off + msg_len
            at = off + attrs_at
            cgroup = None
            while named and at + 4 <= end:
                attr_len, attr_type = unpack_attr(buf, at)
                if attr_len < 4:
                    break
                if attr_type == INET_DIAG_CGROUP_ID:
                    if attr_len >= 12 and at + 12 <= end:
                        cgroup = unpack_id(buf, at + 4)[0]
                    break
                at += (attr_len + 3) & ~3
            if cgroup is not None:
                key = (cgroup, state)
                by_cgroup[key] = by_cgroup.get(key, 0) + 1
            else:
                inode = int.from_bytes(buf[off + inode_at:off + inode_at + 4], "little")
                if inode and state not in (TIME_WAIT, NEW_SYN_RECV):
                    without_id[inode] = state
                else:
                    unowned[state] += 1
            off += (msg_len + 3) & ~3

    def add_inode_states(self, inode_states):
        """The /proc backend's sockets (inode -> state; TIME_WAIT ones have inode 0) for the process walk."""
        for inode, state in inode_states.items():
            if inode:
                self.without_id[inode] = state & 15
            else:
                self.unowned[state & 15] += 1

    def units(self, owner_of_inode, warnings, directory_limit=CGROUP_DIRECTORY_LIMIT):
        """{unit: {state: count}} (zero-filled states, LISTEN included): the cgroup ids mapped to paths under the
        cgroup v2 mount; the sockets without one through owner_of_inode(inodes) -> {inode: pid} (the process
        walk, called only when there are such sockets), each pid named by its /proc/PID/cgroup."""
        counts = {}  # unit -> [count per state]

        def add(unit, state, count):
            row = counts.get(unit)
            if row is None:
                row = counts[unit] = [0] * 16
            row[state] += count

        if self.by_cgroup:
            mount, root = self.mount
            paths, stopped = map_cgroup_ids({cgroup for cgroup, _state in self.by_cgroup}, mount, root,
                                            directory_limit)
            lost = 0
            root = systemd_root(self.proc, unified=True)
            for (cgroup, state), count in self.by_cgroup.items():
                path = paths.get(cgroup)
                if path is None:
                    lost += count
                else:
                    add(unit_of_path(shifted(path, root)), state, count)
            if lost:
                why = ("the walk of %s stopped at %d directories" % (mount, directory_limit) if stopped
                       else "removed since, or outside the cgroup v2 mount %s" % mount)
                warnings.append("units: %d socket(s) in cgroups that could not be named (%s) are not counted"
                                % (lost, why))
        if self.without_id:
            if self.mount is None:
                warnings.append("units: no cgroup v2 file system is mounted to name the sockets' cgroups; their "
                                "processes' units are counted instead (the process walk)")
            owners = owner_of_inode(set(self.without_id))
            names = {}
            unheld = 0
            root = systemd_root(self.proc)
            for inode, state in self.without_id.items():
                pid = owners.get(inode)
                if pid is not None and pid not in names:
                    names[pid] = process_unit(pid, self.proc, root)
                unit = None if pid is None else names[pid]
                if unit is None:
                    unheld += 1
                else:
                    add(unit, state, 1)
            if unheld:
                warnings.append("units: %d socket(s) whose process was not found are not counted" % unheld)
        return {unit: states_from(row) for unit, row in sorted(counts.items())}
