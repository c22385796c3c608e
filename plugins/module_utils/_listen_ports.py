# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The community.general.listen_ports_facts shape, for listener_facts only.

Turns a gather() document into ansible_facts.tcp_listen / udp_listen. The engine knows
nothing of this presentation. Plain Python (standard library only, Python 3.8+).

With include_non_listening, every TCP socket (all states) and every UDP socket is listed
with the two keys community.general adds, spelt as it prints them with its default
command (netstat):
  state            TCP: the kernel's state name (LISTEN, ESTABLISHED, TIME_WAIT, CLOSE_WAIT, ...);
                   UDP: UNCONN (bound, unconnected) or ESTAB (connected), the values
                   community.general documents for UDP.
  foreign_address  "ADDRESS:PORT" as netstat -n prints it: IPv6 without brackets, an
                   IPv4-mapped IPv6 address as IPv4, port 0 as "*" (0.0.0.0:*, :::*).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ._engine import _cgroup as cgroup
from ._engine import _listeners as listener_walk
from ._engine import _options as options
from ._engine import _procfs as procfs

# Enough for every socket of a host: include_non_listening lists them all, as netstat -a does.
ALL_SOCKETS = 1 << 62
WILDCARD = {"ipv4": "0.0.0.0", "ipv6": "::"}


def gather_args(include_non_listening):
    """The gather() arguments listener_facts needs: its gather_subset, max_sockets and listeners_limit."""
    if include_non_listening:
        return {"gather_subset": ["listeners", "sockets"], "max_sockets": ALL_SOCKETS, "listeners_limit": None}
    return {"gather_subset": ["listeners"], "max_sockets": 0, "listeners_limit": None}


def lstart(iso):
    """ISO start time -> the 'ps -o lstart' text community.general.listen_ports_facts returns."""
    if not iso:
        return None
    try:
        return time.strftime("%a %b %e %H:%M:%S %Y", time.strptime(iso, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def foreign_address(address, port):
    """netstat -n's Foreign Address column: 127.0.0.1:5556, ::1:5556, 0.0.0.0:*, :::*."""
    return "%s:%s" % (address, port if port else "*")


def _row(item, include_non_listening):
    """One listener of gather()'s `listeners` as a tcp_listen / udp_listen entry."""
    row = {
        "address": item["address"], "port": item["port"], "protocol": item["protocol"],
        "pid": item["pid"], "name": item["process"], "user": item["user"], "stime": lstart(item["stime"]),
        "family": item["family"], "backlog": item["backlog"], "queue": item["queue"],
        "connections": item["connections"], "unit": item["unit"],
    }
    if include_non_listening:
        row["state"] = "LISTEN" if item["protocol"] == "tcp" else "UNCONN"
        row["foreign_address"] = foreign_address(WILDCARD[item["family"]], 0)
    return row


def _is_udp_listener(sock):
    # The engine's definition of a UDP listener: bound to a port, unconnected.
    return sock["state"] == "UNCONN" and not sock["remote_port"] and sock["local_port"]


def _other_sockets(facts):
    """The sockets of gather()'s `sockets` list that are not already listeners."""
    for sock in facts.get("sockets", []):
        if sock["protocol"] == "tcp" and sock["state"] == "LISTEN":
            continue
        if sock["protocol"] == "udp" and _is_udp_listener(sock):
            continue
        yield sock


def _owners(wanted, proc, namespace, walk):
    """map_socket_inodes run inside the namespace gathered, as the engine's listener walk is."""
    _label, path = options.resolve_namespace(namespace)
    if path is None:
        return listener_walk.map_socket_inodes(wanted, proc=proc, **walk)
    try:
        with procfs.NetNamespace(path):
            return listener_walk.map_socket_inodes(wanted, proc=proc, **walk)
    except (IOError, OSError) as exc:
        raise options.GatherError("namespace %s: cannot enter %s: %s" % (namespace, path, exc.strerror or exc))


def _socket_rows(sockets, proc, warnings, namespace=None, walk_budget=None, walk_all_namespaces=False):
    """Entries for connected (and closing) sockets, with the process holding each one."""
    wanted = {sock["inode"] for sock in sockets if sock["inode"]}
    found = _owners(wanted, proc, namespace, {"budget": walk_budget, "all_namespaces": walk_all_namespaces})
    owners, denied = found.owners, found.denied
    infos = {}
    units = {}
    root = cgroup.systemd_root(proc) if owners else None
    missing = 0
    rows = []
    for sock in sockets:
        info = None
        pid = owners.get(sock["inode"]) if sock["inode"] else None
        if pid is not None:
            if pid not in infos:
                infos[pid] = procfs.process_info(pid, proc)
                units[pid] = cgroup.process_unit(pid, proc, root) if infos[pid] else None
            info = infos[pid]
        if info is None and sock["inode"]:
            missing += 1
        if info is not None:
            user = info["user"]
        elif sock["inode"]:
            user = procfs.user_name(sock["uid"])
        else:
            # No file holds it (TIME_WAIT, an orphan closing): nobody's socket.
            user = None
        rows.append({
            "address": sock["local_address"], "port": sock["local_port"], "protocol": sock["protocol"],
            "pid": info["pid"] if info else None, "name": info["process"] if info else None, "user": user,
            "stime": lstart(info["stime"]) if info else None, "family": sock["family"],
            "backlog": None, "queue": None, "connections": None, "unit": units[pid] if info else None,
            "state": sock["state"], "foreign_address": foreign_address(sock["remote_address"], sock["remote_port"]),
        })
    if (found.fd_limited or found.unlisted) and missing:
        warnings.append("%d non-listening socket(s) without pid/name: the walk of the processes' file descriptors %s"
                        % (missing, listener_walk.fd_limit_text(found)))
    if denied and missing:
        why = "not running as root" if os.geteuid() != 0 else "running as root, but some processes are protected"
        warnings.append("%s: %d non-listening socket(s) without pid/name (the file descriptors of %d process(es) "
                        "are unreadable)" % (why, missing, denied))
    if found.exhausted and missing:
        warnings.append("%d non-listening socket(s) without pid/name: the walk stopped at its budget of %d file "
                        "descriptors (walk_budget)" % (missing, walk_budget))
    return rows


def _order(row):
    return (row["port"], row["state"] != "LISTEN", row["family"], row["address"],
            row.get("foreign_address") or "")


def listen_ports_facts(facts, include_non_listening=False, proc="/proc", warnings=None, namespace=None,
                       walk_budget=None, walk_all_namespaces=False):
    """Split a gather() document into community.general.listen_ports_facts' tcp_listen / udp_listen.

    Keys of community.general.listen_ports_facts (address, port, protocol, pid, name, user,
    stime, and with include_non_listening state and foreign_address) plus family, backlog,
    queue, connections and unit. Each list is sorted by port, a port's listeners first.
    namespace, walk_budget and walk_all_namespaces are gather()'s: the processes holding the
    non-listening sockets are looked for as the engine looks for the listeners' (inside the
    namespace, within the same budget).
    """
    if warnings is None:
        warnings = []
    result = {"tcp_listen": [], "udp_listen": []}
    for item in facts.get("listeners", []):
        result["%s_listen" % item["protocol"]].append(_row(item, include_non_listening))
    if include_non_listening:
        for row in _socket_rows(list(_other_sockets(facts)), proc, warnings, namespace, walk_budget,
                                walk_all_namespaces):
            result["%s_listen" % row["protocol"]].append(row)
        for key in result:
            result[key].sort(key=_order)
    return result
