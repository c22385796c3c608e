# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: block the peers with the most TCP connections, never the ones that keep the host reachable.

Plain Python (no ansible import, Python 3.8+). The module peer_block is its thin shell. Counting
is _peer_connections.py's (peer_connections, every peer; by default only the connections peers made to
this host's listeners, never SYN_RECV, which a forged source address can fill); the firewall is
either an nftables table of our own (inet netstate_tcp: two timed sets and one input chain) or,
where nft is missing, two ipsets and one iptables/ip6tables chain jumped to from INPUT. Commands
run through a `run` callable (argv, data) -> (rc, stdout, stderr) and are found through `which`
(name) -> path or None, so the caller decides how processes are started. A block that fails part
way takes back what it added, or its error names what it could not take back.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import re

from ._engine._address import plain_address, plain_network
from ._engine._argspec import CONNECTION_STATES as STATES
from ._engine._argspec import RANGES
from ._engine._escape import bounded_repr
from ._engine._options import GatherError
from ._peer_connections import DIRECTIONS, peer_connections

BACKENDS = ("auto", "nftables", "iptables")
MAX_DURATION = 2147483  # the largest ipset timeout (seconds); nftables takes it too
MAX_BLOCKS = 65536
MAX_CONNECTIONS = 10 ** 9
DEFAULT_DIRECTION = "inbound"
#: SYN_RECV is counted only when asked for: a SYN with a forged source address makes one (no handshake
#: is needed), so anyone could make the host block an address that never connected.
SPOOFABLE_STATES = ("SYN_RECV",)
DEFAULT_STATES = tuple(state for state in STATES if state not in SPOOFABLE_STATES)
#: An allow entry: an IPv4/IPv6 address or CIDR, nothing else (no zone, no spaces, no host names).
ALLOW_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}(/[0-9]{1,3}|/[0-9.]{7,15})?")

NFT_TABLE = "netstate_tcp"
NFT_SETS = {4: "blocked_ipv4", 6: "blocked_ipv6"}
NFT_CHAIN = "input"
NFT_PRIORITY = -10  # before the usual filter chains (priority 0), so their accepts come too late
IPSETS = {4: "netstate_tcp_ipv4", 6: "netstate_tcp_ipv6"}
IPT_CHAIN = "NETSTATE_TCP"


class PeerBlockError(Exception):
    """An option, a command or the firewall state is wrong; the message names it."""


# ---------------------------------------------------------------- options

def _int_option(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise PeerBlockError("%s: %s is not an integer" % (name, bounded_repr(value)))
    if not low <= value <= high:
        raise PeerBlockError("%s: %s is out of range (%d..%d)" % (name, bounded_repr(value), low, high))
    return value


def _choice(params, name, choices, default):
    value = params.get(name, default)
    if not isinstance(value, str) or value not in choices:
        raise PeerBlockError("%s: %s is not one of %s" % (name, bounded_repr(value), ", ".join(choices)))
    return value


def _list_option(params, name, what):
    value = params.get(name)
    if value is not None and (isinstance(value, str) or not isinstance(value, (list, tuple))):
        raise PeerBlockError("%s: %s must be a %s" % (name, bounded_repr(value), what))
    return value


def _allowed_network(item):
    if not isinstance(item, str) or not ALLOW_RE.fullmatch(item):
        return None
    return plain_network(item)


def validate(params):
    """Every option checked before anything is touched; returns the normalised options."""
    state = _choice(params, "state", ("present", "absent"), "present")
    backend = _choice(params, "backend", BACKENDS, "auto")
    options = {"state": state, "backend": backend}
    options["direction"] = _choice(params, "direction", DIRECTIONS, DEFAULT_DIRECTION)
    max_connections = params.get("max_connections")
    if state == "present" and max_connections is None:
        raise PeerBlockError("max_connections: required with state=present")
    if max_connections is not None:
        max_connections = _int_option("max_connections", max_connections, 1, MAX_CONNECTIONS)
    options["max_connections"] = max_connections
    states = _list_option(params, "states", "non-empty list of TCP states")
    if states is None:
        states = list(DEFAULT_STATES)
    if not states:
        raise PeerBlockError("states: [] must be a non-empty list of TCP states")
    chosen = []
    for name in states:
        upper = name.upper() if isinstance(name, str) and name.isascii() else None
        if upper == "LISTEN":
            raise PeerBlockError("states: 'LISTEN' is not a connection state (listeners have no peer)")
        if upper not in STATES:
            raise PeerBlockError("states: %s is not a TCP state (choose from %s)"
                                 % (bounded_repr(name), ", ".join(STATES)))
        if upper not in chosen:
            chosen.append(upper)
    options["states"] = chosen
    local_port = params.get("local_port")
    options["local_port"] = None if local_port is None else _int_option("local_port", local_port, *RANGES["local_port"])
    allow = _list_option(params, "allow", "list of addresses and CIDRs") or []
    networks = []
    for item in allow:
        network = _allowed_network(item)
        if network is None:
            raise PeerBlockError("allow: %s is not an IPv4/IPv6 address or CIDR" % (bounded_repr(item),))
        networks.append(network)
    options["allow"] = networks
    options["duration"] = _int_option("duration", params.get("duration", 3600), 0, MAX_DURATION)
    options["max_blocks"] = _int_option("max_blocks", params.get("max_blocks", 10), 1, MAX_BLOCKS)
    return options


# ---------------------------------------------------------------- who must stay reachable

def _environ_of(pid, proc):
    try:
        with open(os.path.join(proc, str(pid), "environ"), "rb") as handle:
            raw = handle.read()
    except (IOError, OSError):
        return {}
    result = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            result[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return result


def _parent_of(pid, proc):
    try:
        with open(os.path.join(proc, str(pid), "status")) as handle:
            for line in handle:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except (IOError, OSError, ValueError, IndexError):
        return None
    return None


def _client_from(environ):
    for key in ("SSH_CONNECTION", "SSH_CLIENT"):
        fields = environ.get(key, "").split()
        if fields:
            address = plain_address(fields[0])
            if address is not None:
                return address, key
    return None, None


def ssh_client(environ=None, proc="/proc", pid=None):
    """The address of the SSH client this process runs under, and where it was found.

    SSH_CONNECTION / SSH_CLIENT of our own environment first. become (sudo, su) usually clears
    them, so then the environments of our ancestor processes are read up to the SSH session's
    shell (root can read them). Returns (address or None, source text or None).
    """
    environ = os.environ if environ is None else environ
    address, key = _client_from(environ)
    if address is not None:
        return address, key
    pid = os.getpid() if pid is None else pid
    seen = set()
    while pid and pid > 1 and pid not in seen:
        seen.add(pid)
        pid = _parent_of(pid, proc)
        if not pid or pid <= 1:
            break
        address, key = _client_from(_environ_of(pid, proc))
        if address is not None:
            return address, "%s of process %d" % (key, pid)
    return None, None


def own_addresses(run, which):
    """Every address configured on this host's interfaces (ip -j addr show)."""
    ip = which("ip")
    if ip is None:
        raise PeerBlockError("cannot find the host's own addresses: the ip command (iproute2) is missing")
    rc, out, err = run([ip, "-j", "addr", "show"])
    if rc != 0:
        raise PeerBlockError("cannot find the host's own addresses: ip -j addr show failed: %s" % err.strip())
    try:
        links = json.loads(out or "[]")
    except ValueError as exc:
        raise PeerBlockError("cannot find the host's own addresses: ip -j addr show: %s" % exc)
    result = set()
    for link in links:
        for info in link.get("addr_info", []):
            address = plain_address(info.get("local", ""))
            if address is not None:
                result.add(address)
    return result


def protected_reason(address, own, client, allow):
    if address.is_loopback:
        return "loopback"
    if address in own:
        return "own_address"
    if client is not None and address == client:
        return "ssh_client"
    for network in allow:
        if network.version == address.version and address in network:
            return "allow"
    return None


# ---------------------------------------------------------------- firewalls

def _run_checked(run, argv, what, data=None):
    rc, out, err = run(argv, data)
    if rc != 0:
        raise PeerBlockError("%s failed (%s, rc=%d): %s" % (what, " ".join(argv), rc, (err or out).strip()))
    return out


class NftablesFirewall:
    """Table inet netstate_tcp: sets blocked_ipv4/blocked_ipv6 (flags timeout), chain input drops their members."""

    name = "nftables"

    def __init__(self, run, nft):
        self.run = run
        self.nft = nft

    def active(self):
        """{address text: seconds left or None (until removed)}; {} when the table does not exist."""
        rc, out, err = self.run([self.nft, "-j", "list", "table", "inet", NFT_TABLE], None)
        if rc != 0:
            if "No such file" in err or "does not exist" in err:
                return None
            raise PeerBlockError("nft -j list table inet %s failed: %s" % (NFT_TABLE, err.strip()))
        try:
            document = json.loads(out)
        except ValueError as exc:
            raise PeerBlockError("nft -j list table inet %s: bad JSON: %s" % (NFT_TABLE, exc))
        result = {}
        for item in document.get("nftables", []):
            found = item.get("set")
            if not found or found.get("name") not in NFT_SETS.values():
                continue
            for element in found.get("elem", []):
                if isinstance(element, dict) and "elem" in element:
                    result[str(element["elem"]["val"])] = element["elem"].get("expires")
                elif isinstance(element, str):
                    result[element] = None
        return result

    def script(self, additions, duration):
        lines = ["add table inet %s" % NFT_TABLE]
        for version, set_name in sorted(NFT_SETS.items()):
            lines.append("add set inet %s %s { type ipv%d_addr; flags timeout; }" % (NFT_TABLE, set_name, version))
        lines.append("add chain inet %s %s { type filter hook input priority %d; policy accept; }"
                     % (NFT_TABLE, NFT_CHAIN, NFT_PRIORITY))
        # The chain is ours: rewritten whole in the same transaction, so it never holds a rule twice.
        lines.append("flush chain inet %s %s" % (NFT_TABLE, NFT_CHAIN))
        lines.append("add rule inet %s %s ip saddr @%s counter drop" % (NFT_TABLE, NFT_CHAIN, NFT_SETS[4]))
        lines.append("add rule inet %s %s ip6 saddr @%s counter drop" % (NFT_TABLE, NFT_CHAIN, NFT_SETS[6]))
        timeout = " timeout %ds" % duration if duration else ""
        for version, set_name in sorted(NFT_SETS.items()):
            members = [str(a) for a in additions if a.version == version]
            if members:
                lines.append("add element inet %s %s { %s }" % (
                    NFT_TABLE, set_name, ", ".join(m + timeout for m in members)))
        return "\n".join(lines) + "\n"

    def block(self, additions, duration):
        # One nft -f transaction: the kernel commits the whole batch or none of it.
        try:
            _run_checked(self.run, [self.nft, "-f", "-"], "nft", self.script(additions, duration))
        except PeerBlockError as exc:
            raise PeerBlockError("%s; nothing was changed (nft -f applies its whole transaction or none of it)"
                                 % exc)

    def remove(self):
        _run_checked(self.run, [self.nft, "delete", "table", "inet", NFT_TABLE], "nft")


class IptablesFirewall:
    """ipsets netstate_tcp_ipv4/_ipv6 (hash:ip, timeout) and chain NETSTATE_TCP, jumped to first from INPUT."""

    name = "iptables"

    def __init__(self, run, ipset, tables):
        self.run = run
        self.ipset = ipset
        self.tables = tables  # {4: iptables path, 6: ip6tables path}

    def _set_exists(self, version):
        rc, _out, _err = self.run([self.ipset, "list", "-n", IPSETS[version]], None)
        return rc == 0

    def active(self):
        result = None
        for version in (4, 6):
            rc, out, err = self.run([self.ipset, "list", IPSETS[version]], None)
            if rc != 0:
                if "does not exist" in err:
                    continue
                raise PeerBlockError("ipset list %s failed: %s" % (IPSETS[version], err.strip()))
            result = {} if result is None else result
            members = False
            for line in out.splitlines():
                if line.startswith("Members:"):
                    members = True
                    continue
                if members and line.strip():
                    fields = line.split()
                    seconds = None
                    if "timeout" in fields:
                        seconds = int(fields[fields.index("timeout") + 1]) or None
                    result[fields[0]] = seconds
        if result is None and self._chain_exists(4):
            result = {}
        return result

    def _chain_exists(self, version):
        rc, _out, _err = self.run([self.tables[version], "-w", "-S", IPT_CHAIN], None)
        return rc == 0

    def _rule(self, version):
        return ["-m", "set", "--match-set", IPSETS[version], "src", "-j", "DROP"]

    def block(self, additions, duration):
        """Sets, chains, jumps, then members, each step only where missing. Many commands, so not atomic:
        a step that fails takes back every one this call made, newest first (a chain is not removed while
        a rule refers to it, nor a set while a rule matches it); the error says what was taken back and
        names what could not be."""
        made = []  # (what it is, the command that takes it back), in the order they were made
        try:
            self._block(additions, duration, made)
        except PeerBlockError as exc:
            raise PeerBlockError("%s; %s" % (exc, self._take_back(made)))

    def _block(self, additions, duration, made):
        for version in (4, 6):
            family = "inet" if version == 4 else "inet6"
            existed = self._set_exists(version)
            # -exist: an existing set of exactly this kind is fine, one of another kind is an error.
            _run_checked(self.run, [self.ipset, "create", IPSETS[version], "hash:ip", "family", family,
                                    "timeout", "0", "-exist"], "ipset")
            if not existed:
                made.append(("ipset %s" % IPSETS[version], [self.ipset, "destroy", IPSETS[version]]))
        for version in (4, 6):
            tool = self.tables[version]
            name = os.path.basename(tool)
            if not self._chain_exists(version):
                _run_checked(self.run, [tool, "-w", "-N", IPT_CHAIN], tool)
                made.append(("%s chain %s" % (name, IPT_CHAIN), [tool, "-w", "-X", IPT_CHAIN]))
            if self.run([tool, "-w", "-C", IPT_CHAIN] + self._rule(version), None)[0] != 0:
                _run_checked(self.run, [tool, "-w", "-A", IPT_CHAIN] + self._rule(version), tool)
                made.append(("%s rule in %s matching %s" % (name, IPT_CHAIN, IPSETS[version]),
                             [tool, "-w", "-D", IPT_CHAIN] + self._rule(version)))
            if self.run([tool, "-w", "-C", "INPUT", "-j", IPT_CHAIN], None)[0] != 0:
                _run_checked(self.run, [tool, "-w", "-I", "INPUT", "1", "-j", IPT_CHAIN], tool)
                made.append(("%s jump from INPUT to %s" % (name, IPT_CHAIN),
                             [tool, "-w", "-D", "INPUT", "-j", IPT_CHAIN]))
        # Members last: a failure above leaves no address blocked.
        for address in additions:
            _run_checked(self.run, [self.ipset, "add", IPSETS[address.version], str(address),
                                    "timeout", str(duration), "-exist"], "ipset")
            made.append(("block of %s in %s" % (address, IPSETS[address.version]),
                         [self.ipset, "del", IPSETS[address.version], str(address)]))

    def _take_back(self, made):
        """Undo `made` newest first; the text the error ends with."""
        if not made:
            return "nothing had been changed"
        undone = []
        left = []
        for what, argv in reversed(made):
            rc, out, err = self.run(argv, None)
            if rc == 0:
                undone.append(what)
            else:
                left.append("%s (%s: %s)" % (what, " ".join(argv), (err or out).strip() or "rc=%d" % rc))
        text = "taken back: %s" % ", ".join(undone) if undone else "nothing could be taken back"
        if left:
            text += "; LEFT IN PLACE: %s (state=absent removes them)" % "; ".join(left)
        return text

    def remove(self):
        for version in (4, 6):
            tool = self.tables[version]
            while self.run([tool, "-w", "-C", "INPUT", "-j", IPT_CHAIN], None)[0] == 0:
                _run_checked(self.run, [tool, "-w", "-D", "INPUT", "-j", IPT_CHAIN], tool)
            if self._chain_exists(version):
                _run_checked(self.run, [tool, "-w", "-F", IPT_CHAIN], tool)
                _run_checked(self.run, [tool, "-w", "-X", IPT_CHAIN], tool)
        for version in (4, 6):
            if self._set_exists(version):
                _run_checked(self.run, [self.ipset, "destroy", IPSETS[version]], "ipset")


def firewalls(backend, run, which, state):
    """The firewall(s) to use: the one backend for present; for absent with auto, every one installed."""
    nft = which("nft")
    ipset = which("ipset")
    tables = {4: which("iptables"), 6: which("ip6tables")}
    iptables_ok = ipset is not None and None not in tables.values()
    found = []
    if backend in ("auto", "nftables") and nft is not None:
        found.append(NftablesFirewall(run, nft))
    wants_iptables = backend == "iptables" or (backend == "auto" and (state == "absent" or not found))
    if wants_iptables and iptables_ok:
        found.append(IptablesFirewall(run, ipset, tables))
    if backend == "nftables" and nft is None:
        raise PeerBlockError("backend: 'nftables' but the nft command is missing (install nftables)")
    if backend == "iptables" and not iptables_ok:
        missing = [n for n, p in (("ipset", ipset), ("iptables", tables[4]), ("ip6tables", tables[6])) if p is None]
        raise PeerBlockError("backend: 'iptables' but %s missing (install iptables and ipset)" % ", ".join(missing))
    if not found and state == "present":
        raise PeerBlockError("backend: 'auto' found neither nft nor iptables+ipset (install nftables, or "
                             "iptables and ipset)")
    return found[:1] if state == "present" else found


# ---------------------------------------------------------------- the run

def _sorted_addresses(addresses):
    return sorted(addresses, key=lambda a: (plain_address(a).version, plain_address(a)))


def _active_list(active):
    return [{"address": a, "expires_in": active[a]} for a in _sorted_addresses(active)]


def run(params, run, which, check_mode=False, environ=None, proc="/proc", warnings=None):
    """Count, decide, block (or remove). Returns the module result without ansible keys."""
    if warnings is None:
        warnings = []
    options = validate(params)
    chosen = firewalls(options["backend"], run, which, options["state"])
    if options["state"] == "absent":
        return _remove(chosen, check_mode)

    try:
        counts = peer_connections(states=options["states"], local_port=options["local_port"],
                                  warnings=warnings, proc=proc, more_than=options["max_connections"],
                                  direction=options["direction"])
    except GatherError as exc:
        raise PeerBlockError(str(exc))
    own = own_addresses(run, which)
    client, client_source = ssh_client(environ, proc)
    if client is None:
        warnings.append("no SSH client address found (SSH_CONNECTION/SSH_CLIENT unset here and in the parent "
                        "processes): the controller is not protected unless it is in allow")
    firewall = chosen[0]
    before = firewall.active() or {}
    active_now = {str(plain_address(a)) for a in before}

    threshold = options["max_connections"]
    over = []
    spared = []
    for text, connections in counts["peers"].items():
        address = plain_address(text)
        if address is None or address.is_unspecified or connections <= threshold:
            continue
        reason = protected_reason(address, own, client, options["allow"])
        if reason is not None:
            spared.append({"address": str(address), "connections": connections, "reason": reason})
        elif str(address) not in active_now:
            over.append((address, connections))
    over.sort(key=lambda item: (-item[1], item[0].version, item[0]))
    chosen_now = over[:options["max_blocks"]]
    deferred = [{"address": str(a), "connections": n} for a, n in over[options["max_blocks"]:]]
    if deferred:
        warnings.append("max_blocks=%d: %d more peer(s) over max_connections=%d left for the next run (%s)" % (
            options["max_blocks"], len(deferred), threshold, ", ".join(d["address"] for d in deferred)))
    blocked = [{"address": str(a), "connections": n} for a, n in chosen_now]
    spared.sort(key=lambda item: (-item["connections"], item["address"]))

    after = dict(before)
    for address, _connections in chosen_now:
        after[str(address)] = options["duration"] or None
    if chosen_now and not check_mode:
        firewall.block([a for a, _n in chosen_now], options["duration"])
        after = firewall.active() or {}
    return {
        "changed": bool(chosen_now),
        "blocked": blocked,
        "active": _active_list(after),
        "spared": spared,
        "deferred": deferred,
        "backend": firewall.name,
        "ssh_client": None if client is None else {"address": str(client), "source": client_source},
        "counted": {"peers": counts["peer_count"], "connections": counts["total"], "engine": counts["backend"],
                    "states": options["states"], "local_port": options["local_port"],
                    "direction": options["direction"]},
        "diff": {"before": {"active": _sorted_addresses(before)}, "after": {"active": _sorted_addresses(after)}},
        "warnings": warnings,
    }


def _remove(chosen, check_mode):
    before = {}
    present = []
    for firewall in chosen:
        active = firewall.active()
        if active is not None:
            present.append(firewall)
            before.update(active)
    if present and not check_mode:
        for firewall in present:
            firewall.remove()
    return {
        "changed": bool(present),
        "blocked": [],
        "removed": _active_list(before),
        "active": [],
        "spared": [],
        "deferred": [],
        "backend": ",".join(f.name for f in present) or None,
        "ssh_client": None,
        "counted": None,
        "diff": {"before": {"active": _sorted_addresses(before)}, "after": {"active": []}},
        "warnings": [],
    }
