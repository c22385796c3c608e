# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The independent oracle: run `ss` and compute every aggregate from its text output.

Nothing here imports the engine; the aggregates are computed the plain way, from rows.
"""

import re
import subprocess
import time
from collections import Counter, defaultdict

SS_STATES = {
    "ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV", "FIN-WAIT-1": "FIN_WAIT1",
    "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT", "UNCONN": "CLOSE", "CLOSE-WAIT": "CLOSE_WAIT",
    "LAST-ACK": "LAST_ACK", "LISTEN": "LISTEN", "CLOSING": "CLOSING",
}
# The states ss knows, named as the facts name them; tests/unit/plugins/module_utils/_engine/test_argspec.py
# checks the options contract's list against it.
ALL_STATES = tuple(SS_STATES.values())


def split_endpoint(text):
    """'127.0.0.1:80' / '[::1]:80' / '[::ffff:1.2.3.4]:80' / '*:80' / '0.0.0.0%lo:80' -> (address, port, v6)."""
    host, _sep, port = text.rpartition(":")
    v6 = host.startswith("[")
    host = host.strip("[]")
    host = host.split("%", 1)[0]
    if host == "*":
        # ss prints a dual-stack (not IPV6_V6ONLY) IPv6 socket bound to [::] as '*'
        host, v6 = "::", True
    port = 0 if port == "*" else int(port)
    return host, port, v6 or ":" in host


def plain(address):
    return address[7:] if address.startswith("::ffff:") and "." in address else address


def endpoint(text):
    """An ss endpoint as (address, port), IPv4-mapped addresses shown as IPv4."""
    host, port, _v6 = split_endpoint(text)
    return plain(host), port


def run_ss(args, netns=None):
    cmd = ["ss", "-H", "-n"] + args
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


USERS = re.compile(r'users:\(\("([^"]*)",pid=(\d+),fd=(\d+)\)')


def rows(text, with_process=False):
    result = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        state = SS_STATES.get(fields[0], fields[0])
        local, lport, v6 = split_endpoint(fields[3])
        peer, pport, _pv6 = split_endpoint(fields[4])
        row = {"state": state, "recv_q": int(fields[1]), "send_q": int(fields[2]),
               "local": plain(local), "lport": lport, "peer": plain(peer), "pport": pport,
               "family": "ipv6" if v6 else "ipv4"}
        if with_process:
            match = USERS.search(line)
            row["process"] = match.group(1) if match else None
            row["pid"] = int(match.group(2)) if match else None
        result.append(row)
    return result


def zero_states():
    return dict.fromkeys(ALL_STATES, 0)


def states_of(items):
    states = zero_states()
    for row in items:
        states[row["state"]] += 1
    return states


def ss_view(tcp_text, udp_text=None, exclude=()):
    """What ss says, in the shape the collector's outputs are checked in, from `ss -H -n -t -a` text.

    states (Counter of TCP states), listeners [{address, port, queue, backlog}], per_port (listening
    port as text -> Counter of the states of its sockets), peers (remote address -> connections); with
    udp_text (`ss -H -n -u -l`), udp [(address, port)] of the UDP listeners. Connections (not listeners)
    on a local port in exclude are left out: a query's own socket to the agent answering it.
    """
    tcp = [row for row in rows(tcp_text) if row["state"] == "LISTEN" or row["lport"] not in exclude]
    listeners = [{"address": row["local"], "port": row["lport"], "queue": row["recv_q"], "backlog": row["send_q"]}
                 for row in tcp if row["state"] == "LISTEN"]
    ports = {listener["port"] for listener in listeners}
    per_port = {str(port): Counter() for port in ports}
    peers = Counter()
    for row in tcp:
        if row["lport"] in ports:
            per_port[str(row["lport"])][row["state"]] += 1
        if row["state"] != "LISTEN":
            peers[row["peer"]] += 1
    view = {"states": Counter(row["state"] for row in tcp), "listeners": listeners, "per_port": per_port,
            "peers": peers}
    if udp_text is not None:
        view["udp"] = [(row["local"], row["lport"]) for row in rows(udp_text)]
    return view


def stable(view, produce, attempts=5, pause=0.0):
    """(view, produce()) with produce() run between two identical view()s; tried again while sockets move."""
    for _attempt in range(attempts):
        before = view()
        value = produce()
        if view() == before:
            return before, value
        time.sleep(pause)
    raise AssertionError("the sockets kept changing around %d runs of %r" % (attempts, produce))


class Snapshot:
    """Every aggregate connection_facts computes, from one run of ss."""

    def __init__(self, netns=None, top=10):
        self.tcp = rows(run_ss(["-t", "-a"], netns))
        self.udp = rows(run_ss(["-u", "-a"], netns))
        self.listen = rows(run_ss(["-t", "-l", "-p"], netns), with_process=True)
        self.top = top

    def states(self):
        return states_of(self.tcp)

    def families(self):
        return {fam: {"total": sum(1 for r in self.tcp if r["family"] == fam),
                      "states": states_of([r for r in self.tcp if r["family"] == fam])}
                for fam in ("ipv4", "ipv6")}

    def listen_ports(self):
        return {r["lport"] for r in self.tcp if r["state"] == "LISTEN"}

    def local_ports(self):
        ports = self.listen_ports()
        return {str(p): {"total": sum(1 for r in self.tcp if r["lport"] == p),
                         "states": states_of([r for r in self.tcp if r["lport"] == p])} for p in ports}

    def _client_side(self):
        ports = self.listen_ports()
        return [r for r in self.tcp if r["state"] != "LISTEN" and r["lport"] not in ports]

    def remote_ports(self):
        grouped = defaultdict(list)
        for r in self._client_side():
            grouped[r["pport"]].append(r)
        return {str(p): {"total": len(v), "states": states_of(v)} for p, v in grouped.items()}

    def peers(self):
        grouped = defaultdict(list)
        for r in self.tcp:
            if r["state"] != "LISTEN":
                grouped[r["peer"]].append(r)
        return {a: {"total": len(v), "states": states_of(v)} for a, v in grouped.items()}

    def busiest_destination(self):
        return Counter((r["peer"], r["pport"]) for r in self._client_side())

    def udp_totals(self):
        return {"total": len(self.udp),
                "families": {f: sum(1 for r in self.udp if r["family"] == f) for f in ("ipv4", "ipv6")}}

    def udp_listeners(self):
        return sorted((r["local"], r["lport"]) for r in self.udp if r["state"] == "CLOSE" and r["pport"] == 0)

    def listeners(self):
        """{(address, port): {queue, backlog, pid, process, established}}"""
        established = Counter(r["lport"] for r in self.tcp if r["state"] == "ESTABLISHED")
        result = {}
        for r in self.listen:
            result[(r["local"], r["lport"])] = {
                "queue": r["recv_q"], "backlog": r["send_q"], "pid": r["pid"], "process": r["process"],
                "connections": established[r["lport"]],
            }
        return result


# `ss -o` prints timer:(NAME,EXPIRES,COUNT); COUNT is idiag_retrans (retransmissions for "on",
# unanswered probes for "keepalive" and "persist").
TIMER = re.compile(r"timer:\(([a-z]+),[^,]*,(\d+)\)")
SS_TIMERS = {"on": "retransmit", "keepalive": "keepalive", "timewait": "time_wait", "persist": "zero_window_probe"}
TIMER_KEYS = ("none", "retransmit", "keepalive", "time_wait", "zero_window_probe")


class TimerSnapshot:
    """Timers, queues and retransmissions of every TCP socket, from one run of `ss -tano`."""

    def __init__(self, netns=None):
        self.rows = []
        for line in run_ss(["-t", "-a", "-o"], netns).splitlines():
            parsed = rows(line)
            if not parsed:
                continue
            row = parsed[0]
            match = TIMER.search(line)
            row["timer"] = SS_TIMERS[match.group(1)] if match else "none"
            row["retrans"] = int(match.group(2)) if match else 0
            self.rows.append(row)
        self.listen_ports = {r["lport"] for r in self.rows if r["state"] == "LISTEN"}
        self.connections = [r for r in self.rows if r["state"] != "LISTEN"]

    def timers(self):
        counts = dict.fromkeys(TIMER_KEYS, 0)
        for r in self.connections:
            counts[r["timer"]] += 1
        return counts

    def queue_totals(self):
        return {
            "recv_bytes": sum(r["recv_q"] for r in self.connections),
            "send_bytes": sum(r["send_q"] for r in self.connections),
            "recv_sockets": sum(1 for r in self.connections if r["recv_q"]),
            "send_sockets": sum(1 for r in self.connections if r["send_q"]),
        }

    @staticmethod
    def _retransmitting(row):
        return row["timer"] == "retransmit" and row["retrans"] > 0

    def send_ports(self):
        """{(port, side): {sockets, bytes, stalled}} of sockets with a send queue."""
        result = {}
        for r in self.connections:
            if not r["send_q"]:
                continue
            key = (r["lport"], "local") if r["lport"] in self.listen_ports else (r["pport"], "remote")
            entry = result.setdefault(key, {"sockets": 0, "bytes": 0, "stalled": 0})
            entry["sockets"] += 1
            entry["bytes"] += r["send_q"]
            if self._retransmitting(r) or r["timer"] == "zero_window_probe":
                entry["stalled"] += 1
        return result

    def retransmitting(self):
        """{peer address: {sockets, retransmits}} of sockets whose retransmit timer has fired."""
        result = {}
        for r in self.connections:
            if self._retransmitting(r):
                entry = result.setdefault(r["peer"], {"sockets": 0, "retransmits": 0})
                entry["sockets"] += 1
                entry["retransmits"] += r["retrans"]
        return result


def cgroup_states(netns=None):
    """{cgroup path as bytes: {state: count}} of every TCP socket `ss --cgroup` gives a cgroup (TIME_WAIT and
    request sockets have none), from `ss -H -n -t -a --cgroup`: the path is the text after "cgroup:" (bytes,
    as a host may name a cgroup with any of them). ss names a cgroup id by finding it under the cgroup v2
    mount, which `ip netns exec` hides (it mounts a /sys of the namespace): nsenter enters the network
    namespace only."""
    cmd = ["ss", "-H", "-n", "-t", "-a", "--cgroup"]
    if netns:
        cmd = ["nsenter", "--net=/run/netns/%s" % netns, "--"] + cmd
    result = defaultdict(zero_states)
    for line in subprocess.run(cmd, check=True, capture_output=True).stdout.splitlines():
        state, _sep, rest = line.partition(b" ")
        head, sep, path = rest.partition(b" cgroup:")
        if not sep:
            continue
        result[path.rstrip(b" ")][SS_STATES[state.decode()]] += 1
    return dict(result)
