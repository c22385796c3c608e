# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private engine of the ``netstate.tcp.sysctl`` module: safe TCP sysctl tuning.

Private to this collection (the leading underscore): the API may change without notice.
Plain Python, standard library only, no ``ansible`` import, Python 3.8+.

What it does, in order (:meth:`SysctlEngine.run`):

1. *plan*: resolve every key (short ``tcp_tw_reuse`` or dotted ``net.ipv4.tcp_tw_reuse``), check it
   against the knowledge table :data:`KNOWLEDGE` and the running kernel, validate every value and
   read the current live value. Every problem is collected; if there is any, one
   :class:`SysctlError` names each bad key and value, before anything changes.
2. *write* the persistent drop-in atomically (temporary file + rename).
3. *apply* live values under ``/proc/sys``; if one write fails, every value already written and
   the previous drop-in are restored, then :class:`SysctlError` names the key.
4. *report* per key: before, after, the value that wins at boot and the file it comes from
   (systemd-sysctl / ``sysctl --system`` order), and warnings when another file overrides ours.

The drop-in is owned by this engine: keys already in it that are not in ``settings`` are kept
(several tasks may share one file), a key given the value ``None`` is removed from it, and the file
is rewritten in a canonical form (one ``key = value`` line per key, header comment).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fnmatch
import os
import re
import stat

from ._engine._atomic import write_atomically
from ._engine._escape import bounded_repr, visible
from ._engine._files import FileRefused, check_path, check_replaceable, read_bytes, read_text, read_text_and_mode
from ._engine._files import kind as _kind

DEFAULT_PATH = "/etc/sysctl.d/60-netstate-tcp.conf"
DEFAULT_PROC_SYS = "/proc/sys"
# systemd-sysctl(8) and procps `sysctl --system` read these in this precedence order: files are
# sorted by basename across all directories, a basename in an earlier directory masks the same
# basename in a later one, later files override earlier keys; /etc/sysctl.conf comes last.
DEFAULT_SYSCTL_DIRS = (
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
)
DEFAULT_SYSCTL_CONF = "/etc/sysctl.conf"

FILE_HEADER = (
    "# Managed by netstate.tcp.sysctl; changes made by hand are overwritten.\n"
    "# Read at boot by systemd-sysctl and `sysctl --system`, in file-name order.\n"
)

NAMESPACED = "netns"
GLOBAL = "global"
ALLOWED_PREFIXES = ("net.ipv4.", "net.core.")

# Bounds of what is read: a /proc/sys value is at most a few pages (ip_local_reserved_ports, the
# largest, prints at most 64 KiB); a drop-in or another sysctl.d file is a few lines.
PROC_READ_LIMIT = 1024 * 1024
FILE_READ_LIMIT = 1024 * 1024
# The longest key and value accepted (a value is one line of the drop-in; the kernel's largest
# buffer, ip_local_reserved_ports, is 64 KiB).
KEY_LIMIT = 256
VALUE_LIMIT = 65536
# The fewest ephemeral ports a host keeps: a narrower ip_local_port_range, or reserved ports that
# leave fewer free inside it, is refused unless force (every outgoing connect() fails with
# EADDRNOTAVAIL once they are all in use or in TIME_WAIT).
MIN_EPHEMERAL_PORTS = 1024


class SysctlError(Exception):
    """A problem with the request or the system, with a message naming the key involved."""


class KeySpec:
    """What we know about one sysctl key."""

    def __init__(self, name, kind, scope, since, advice, minimum=None, maximum=None, choices=None, default=None):
        self.name = name
        self.short = name.rsplit(".", 1)[-1]
        self.kind = kind  # int | choice | port_range | port_list | triple
        self.scope = scope
        self.since = since
        self.advice = advice
        self.minimum = minimum
        self.maximum = maximum
        self.choices = tuple(choices) if choices is not None else None
        self.default = default

    def as_dict(self):
        return {
            "kind": self.kind,
            "scope": self.scope,
            "since": self.since,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": list(self.choices) if self.choices is not None else None,
            "default": self.default,
            "advice": self.advice,
        }


INT_MAX = 2 ** 31 - 1
# proc_dointvec_jiffies keys (seconds, stored as jiffies in an int) take at most INT_MAX / HZ; HZ is
# 100..1000 and not visible from user space, so the bound that holds for every HZ is INT_MAX // 1000.
JIFFIES_SECONDS_MAX = INT_MAX // 1000

# The ranges below are the kernel's own or narrower, never wider. Probed on Linux 6.18.44 in a private
# network namespace (write the value, read back, EINVAL = refused):
#   tcp_tw_reuse 0..2; tcp_tw_reuse_delay 1..60000; tcp_fin_timeout, tcp_keepalive_time and
#   tcp_keepalive_intvl any int up to INT_MAX / HZ (21474836 refused, 2147484 taken at this HZ);
#   tcp_syncookies, tcp_timestamps, tcp_abort_on_overflow, tcp_keepalive_probes 0..255 (u8);
#   tcp_max_tw_buckets, tcp_max_syn_backlog any int; somaxconn 0..INT_MAX;
#   tcp_rmem/tcp_wmem each field 1..INT_MAX (0 refused, order not checked);
#   ip_local_port_range low >= ip_unprivileged_port_start (1024) and low <= high <= 65535;
#   ip_local_reserved_ports 0..65535 (the whole range "1-65535" is taken without a word).

_SPECS = [
    KeySpec("net.ipv4.tcp_tw_reuse", "choice", NAMESPACED, "2.6.x (value 2: 4.19; per namespace: 4.11)",
            "Lets connect() reuse a TIME_WAIT port towards the same destination once the TIME_WAIT socket "
            "is older than tcp_tw_reuse_delay (1 s). 0 off, 1 on, 2 loopback only (default). "
            "Needs tcp_timestamps (PAWS protects the new connection).",
            choices=(0, 1, 2), default="2"),
    KeySpec("net.ipv4.tcp_tw_reuse_delay", "int", NAMESPACED, "6.14",
            "Milliseconds a TIME_WAIT socket must age before tcp_tw_reuse may take its port "
            "(1..60000, default 1000). Lower only if peers' timestamp clocks tick faster than 1 Hz.",
            minimum=1, maximum=60000, default="1000"),
    KeySpec("net.ipv4.tcp_fin_timeout", "int", NAMESPACED, "2.2 (per namespace: 4.13)",
            "Seconds an orphaned connection stays in FIN_WAIT2. It does NOT shorten TIME_WAIT, "
            "which is fixed at 60 s (TCP_TIMEWAIT_LEN).",
            minimum=1, maximum=JIFFIES_SECONDS_MAX, default="60"),
    KeySpec("net.ipv4.tcp_max_tw_buckets", "int", NAMESPACED, "2.4 (per namespace: 4.1)",
            "Most TIME_WAIT sockets kept; beyond it they are destroyed at once (TCPTimeWaitOverflow). "
            "The kernel docs say never to lower it artificially: raise it if anything.",
            minimum=0, maximum=INT_MAX),
    KeySpec("net.ipv4.ip_local_port_range", "port_range", NAMESPACED, "2.2 (per namespace: 4.0)",
            "Ephemeral ports for outgoing connections: two ports, low < high, within 1024..65535. "
            "connect() takes ports of one parity first and bind(0) the other, so give low and high "
            "different parity (e.g. 16384 65535).",
            minimum=1024, maximum=65535, default="32768 60999"),
    KeySpec("net.ipv4.ip_local_reserved_ports", "port_list", NAMESPACED, "2.6.35 (per namespace: 4.0)",
            "Ports (comma separated, ranges as a-b) that automatic port selection never hands out; "
            "reserve the listening ports that lie inside ip_local_port_range.",
            minimum=1, maximum=65535, default=""),
    KeySpec("net.core.somaxconn", "int", NAMESPACED, "2.2 (per namespace: 4.x)",
            "Upper bound on every listen() backlog (accept queue). Default 4096 since 5.4; the "
            "application's own backlog argument still applies.",
            minimum=0, maximum=INT_MAX, default="4096"),
    KeySpec("net.ipv4.tcp_max_syn_backlog", "int", NAMESPACED, "2.2 (per namespace: 4.x)",
            "Most half-open connections (SYN_RECV) kept per listener before SYN cookies or drops.",
            minimum=0, maximum=INT_MAX),
    KeySpec("net.ipv4.tcp_syncookies", "choice", NAMESPACED, "2.2 (per namespace: 4.x)",
            "SYN cookies when the SYN queue overflows: 0 off, 1 on overflow (default), 2 always.",
            choices=(0, 1, 2), default="1"),
    KeySpec("net.ipv4.tcp_timestamps", "choice", NAMESPACED, "2.2 (per namespace: 4.10)",
            "TCP timestamps (RFC 7323): 0 off, 1 on with random offsets (default), 2 on without. "
            "tcp_tw_reuse does nothing without them.",
            choices=(0, 1, 2), default="1"),
    KeySpec("net.ipv4.tcp_keepalive_time", "int", NAMESPACED, "2.2 (per namespace: 4.x)",
            "Seconds of idleness before the first keepalive probe on sockets with SO_KEEPALIVE "
            "(default 7200).",
            minimum=1, maximum=32767, default="7200"),
    KeySpec("net.ipv4.tcp_keepalive_intvl", "int", NAMESPACED, "2.2 (per namespace: 4.x)",
            "Seconds between keepalive probes (default 75).",
            minimum=1, maximum=32767, default="75"),
    KeySpec("net.ipv4.tcp_keepalive_probes", "int", NAMESPACED, "2.2 (per namespace: 4.x)",
            "Unanswered keepalive probes before the connection is dropped (default 9).",
            minimum=1, maximum=127, default="9"),
    KeySpec("net.ipv4.tcp_abort_on_overflow", "choice", NAMESPACED, "2.4 (per namespace: 4.x)",
            "1 answers a full accept queue with RST instead of dropping the final ACK; 0 (default) "
            "lets clients retry and ride out bursts.",
            choices=(0, 1), default="0"),
    KeySpec("net.ipv4.tcp_max_orphans", "int", GLOBAL, "2.4",
            "Most sockets not attached to any process (orphans) for the whole machine; beyond it they "
            "are reset. One value for all namespaces.",
            minimum=0, maximum=INT_MAX),
    KeySpec("net.ipv4.tcp_mem", "triple", GLOBAL, "2.4",
            "Pages of memory for all TCP sockets of the machine: low, pressure, high (low <= pressure "
            "<= high). One value for all namespaces.",
            minimum=0, maximum=2 ** 63 - 1),
    KeySpec("net.ipv4.udp_mem", "triple", GLOBAL, "2.6.25",
            "Pages of memory for all UDP sockets of the machine: low, pressure, high.",
            minimum=0, maximum=2 ** 63 - 1),
    KeySpec("net.ipv4.tcp_rmem", "triple", NAMESPACED, "2.4 (per namespace: 4.15)",
            "Receive buffer per TCP socket in bytes: min, default, max (min <= default <= max).",
            minimum=1, maximum=INT_MAX),
    KeySpec("net.ipv4.tcp_wmem", "triple", NAMESPACED, "2.4 (per namespace: 4.15)",
            "Send buffer per TCP socket in bytes: min, default, max (min <= default <= max).",
            minimum=1, maximum=INT_MAX),
]

#: The knowledge table: full dotted name -> :class:`KeySpec`.
KNOWLEDGE = {spec.name: spec for spec in _SPECS}
_BY_SHORT = {spec.short: spec for spec in _SPECS}

#: Keys that are refused outright, with the reason.
REFUSED = {
    "net.ipv4.tcp_tw_recycle": (
        "tcp_tw_recycle was removed in Linux 4.12: it dropped connections from clients behind NAT "
        "(their timestamps are not monotonic across hosts). Use tcp_tw_reuse=1 with tcp_timestamps=1, "
        "or widen ip_local_port_range."
    ),
}

# The key grammar, in dotted form (a "/" inside an interface component stands for a "." of its name,
# as sysctl(8) writes eth0.100): net.core.LEAF, net.ipv4.LEAF, net.ipv4.route.LEAF and
# net.ipv4.{conf,neigh}.INTERFACE.LEAF. The kernel's names of these tables are lower case, digits
# and underscores.
_LEAF_RE = re.compile(r"[a-z0-9_]{1,64}")
# The kernel's dev_valid_name(): 1..15 bytes (IFNAMSIZ 16 with the NUL), not "." or "..", no "/",
# ":" or white space. Narrower here: only letters, digits and "_.@+-", so an interface component is
# never read as a glob ("*?[") or a comment by systemd-sysctl when the drop-in is read at boot.
_INTERFACE_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")
_PER_INTERFACE = ("conf", "neigh")
_BOOLEAN_WORDS = ("yes", "no", "true", "false", "on", "off", "y", "n")


def shown_key(raw_key):
    """A key as a message shows it: control and invisible characters escaped, bounded."""
    text = visible(raw_key if isinstance(raw_key, str) else str(raw_key))
    return text if len(text) <= 200 else text[:200] + "...(%d characters)" % len(text)


def shown_value(value):
    """A value as a message shows it: str() escaped when short, else bounded (never fails: an int of
    5000 digits has no str())."""
    if isinstance(value, str):
        return shown_key(value)
    if isinstance(value, (list, tuple, dict)) and len(value) > 16:
        return bounded_repr(value)
    try:
        text = str(value)
    except ValueError:
        return bounded_repr(value)
    return shown_key(text) if len(text) <= 200 else bounded_repr(value)


def check_key_grammar(key):
    """Raise ValueError unless the dotted ``key`` is net.ipv4.* or net.core.* and well formed."""
    parts = key.split(".")
    if any(not part for part in parts):
        raise ValueError("not a sysctl key name: empty component")
    if len(parts) < 3 or parts[0] != "net" or parts[1] not in ("ipv4", "core"):
        raise ValueError("only net.ipv4.* and net.core.* keys are managed by this module")
    rest = parts[2:]
    if parts[1] == "ipv4" and len(rest) == 3 and rest[0] in _PER_INTERFACE:
        interface = rest[1].replace("/", ".")
        if interface in (".", "..") or not _INTERFACE_RE.fullmatch(interface):
            raise ValueError("not a sysctl key name: %s is not an interface name (1..15 of letters, digits "
                             "and _.@+-, not . or ..)" % shown_key(interface))
        rest = rest[2:]
    elif parts[1] == "ipv4" and len(rest) == 2 and rest[0] == "route":
        rest = rest[1:]
    if len(rest) != 1 or not _LEAF_RE.fullmatch(rest[0]):
        raise ValueError("not a sysctl key name: expected net.core.NAME, net.ipv4.NAME, net.ipv4.route.NAME "
                         "or net.ipv4.conf|neigh.INTERFACE.NAME (NAME of a-z, 0-9, _)")
    return key


def _to_int(value):
    if isinstance(value, bool):
        raise ValueError("a boolean (true/false, yes/no in YAML) is not a number; give 0 or 1")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,20}\s*", value):
        return int(value)
    raise ValueError("not an integer")


def canonical_text(value):
    """Collapse whitespace the way values are compared (the kernel prints tabs between fields)."""
    return " ".join(str(value).split())


def _parse_port_list(value):
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        text = str(value).strip()
        items = text.split(",") if text else []
    ranges = []
    for item in items:
        item = item.strip()
        if not item:
            raise ValueError("empty element")
        if "-" in item:
            low_text, high_text = item.split("-", 1)
            low, high = _to_int(low_text), _to_int(high_text)
        else:
            low = high = _to_int(item)
        if not (1 <= low <= 65535 and 1 <= high <= 65535):
            raise ValueError("port %s is outside 1..65535" % item)
        if low > high:
            raise ValueError("range %s has low > high" % item)
        ranges.append((low, high))
    ranges.sort()
    merged = []
    for low, high in ranges:
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return [(pair[0], pair[1]) for pair in merged]


def normalize_value(spec, value):
    """Validate ``value`` for ``spec`` and return it as the canonical string the kernel shows.

    Raises ValueError with a short reason.
    """
    if isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value)):
        raise ValueError("a boolean (true/false, yes/no in YAML) is not a number; give 0 or 1")
    if isinstance(value, (list, tuple)) and len(value) > VALUE_LIMIT:
        raise ValueError("more than %d elements" % VALUE_LIMIT)
    if isinstance(value, (str, list, tuple)) and len(str(value)) > VALUE_LIMIT:
        raise ValueError("longer than %d characters" % VALUE_LIMIT)
    if spec is None:
        if isinstance(value, (list, tuple)):
            if any(isinstance(v, (dict, list, tuple, float)) for v in value):
                raise ValueError("expected strings or integers")
            value = " ".join(str(v) for v in value)
        if not isinstance(value, (str, int)):
            raise ValueError("expected a string or an integer")
        if "\n" in str(value) or "=" in str(value):
            raise ValueError("a value may not contain newlines or '='")
        if any(not (ch.isprintable() or ch.isspace()) or ch in "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
               for ch in str(value)):
            raise ValueError("a value may not contain control characters or line separators")
        text = canonical_text(value)
        if text.lower() in _BOOLEAN_WORDS:
            raise ValueError("%s is a boolean word, which no net.ipv4/net.core key takes; give 0 or 1" % text)
        return text
    if spec.kind in ("int", "choice"):
        if isinstance(value, (list, tuple, dict, float)):
            raise ValueError("expected an integer")
        number = _to_int(value)
        if spec.choices is not None and number not in spec.choices:
            raise ValueError("must be one of %s" % ", ".join(str(c) for c in spec.choices))
        if spec.minimum is not None and number < spec.minimum:
            raise ValueError("must be at least %d" % spec.minimum)
        if spec.maximum is not None and number > spec.maximum:
            raise ValueError("must be at most %d" % spec.maximum)
        return str(number)
    if spec.kind == "port_range":
        parts = list(value) if isinstance(value, (list, tuple)) else str(value).split()
        if len(parts) != 2:
            raise ValueError('expected two ports, "low high" or [low, high]')
        low, high = _to_int(parts[0]), _to_int(parts[1])
        if not (spec.minimum <= low <= spec.maximum and spec.minimum <= high <= spec.maximum):
            raise ValueError("ports must lie within %d..%d" % (spec.minimum, spec.maximum))
        if low >= high:
            raise ValueError("low port must be below high port")
        return "%d %d" % (low, high)
    if spec.kind == "port_list":
        return ",".join(str(low) if low == high else "%d-%d" % (low, high)
                        for low, high in _parse_port_list(value))
    if spec.kind == "triple":
        parts = list(value) if isinstance(value, (list, tuple)) else str(value).split()
        if len(parts) != 3:
            raise ValueError("expected three integers")
        numbers = [_to_int(p) for p in parts]
        for number in numbers:
            if number < spec.minimum or number > spec.maximum:
                raise ValueError("values must lie within %d..%d" % (spec.minimum, spec.maximum))
        if not numbers[0] <= numbers[1] <= numbers[2]:
            raise ValueError("expected three non-decreasing integers")
        return " ".join(str(n) for n in numbers)
    raise ValueError("unsupported kind %s" % spec.kind)  # pragma: no cover - table is static


def normalize_live(spec, text):
    """Canonical form of a value read from /proc/sys or a sysctl file (never raises)."""
    try:
        return normalize_value(spec, text)
    except ValueError:
        return canonical_text(text)


def dotted_key(key):
    """``net/ipv4/conf/eth0.100/rp_filter`` -> dotted form; like sysctl(8), the first separator decides."""
    key = key.strip()
    first = re.search(r"[./]", key.lstrip("/"))
    if key.startswith("/") or (first is not None and first.group() == "/"):
        # slashes are the separators, dots are part of names (kept as "/" in the dotted form)
        return key.strip("/").replace(".", "\0").replace("/", ".").replace("\0", "/")
    return key


def parse_sysctl_text(text):
    """(key, value) assignments of a sysctl.d file, in order, keys in dotted form."""
    assignments = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("-"):
            line = line[1:].lstrip()
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        assignments.append((dotted_key(key.strip()), value.strip()))
    return assignments


class Entry:
    """One requested key, planned."""

    def __init__(self, key, raw_key, spec, value, proc_path):
        self.key = key
        self.raw_key = raw_key
        self.spec = spec
        self.value = value  # canonical string, None = remove from our file
        self.proc_path = proc_path
        self.before = None
        self.after = None
        self.skipped = False

    @property
    def live_changes(self):
        return not self.skipped and self.value is not None and self.before != self.value


class SysctlEngine:
    """Plans, applies and reports sysctl changes. Paths are injectable for tests."""

    def __init__(self, proc_sys=DEFAULT_PROC_SYS, sysctl_dirs=DEFAULT_SYSCTL_DIRS, sysctl_conf=DEFAULT_SYSCTL_CONF,
                 kernel_release=None):
        self.proc_sys = proc_sys
        self.sysctl_dirs = tuple(sysctl_dirs)
        self.sysctl_conf = sysctl_conf
        self.kernel_release = kernel_release or os.uname().release

    # ---------------------------------------------------------------- keys and /proc/sys
    def proc_path(self, key):
        """The file of the dotted ``key`` under proc_sys; ValueError unless it lies under net/ipv4 or net/core.

        A "/" inside a dotted component stands for a literal dot (interface eth0.100). The built path is
        checked again whatever the grammar said: lexically (no component may climb out) and with the
        links of its directories resolved (realpath), which must stay under proc_sys's net/ipv4 or
        net/core. The last component is not resolved: /proc/sys has no links, and a test tree may link
        a key to a real read-only sysctl.
        """
        parts = [part.replace("/", ".") for part in key.split(".")]
        if any(part in ("", ".", "..") or "\0" in part for part in parts):
            raise ValueError("%s: not a sysctl key name: an empty, '.' or '..' component" % shown_key(key))
        built = os.path.join(self.proc_sys, *parts)
        allowed = [os.path.join(self.proc_sys, "net", branch) for branch in ("ipv4", "core")]
        lexical = os.path.normpath(built)
        directory = os.path.realpath(os.path.dirname(built))
        if not (any(lexical.startswith(os.path.normpath(root) + os.sep) for root in allowed)
                and any(directory == os.path.realpath(root) or directory.startswith(os.path.realpath(root) + os.sep)
                        for root in allowed)):
            raise ValueError("%s: refused: its file %s is not under %s" % (
                shown_key(key), shown_key(built), " or ".join(allowed)))
        return built

    def resolve_key(self, raw_key):
        """Full dotted name of ``raw_key`` (short, dotted or slash form). Raises ValueError."""
        key = raw_key if isinstance(raw_key, str) else str(raw_key)
        key = key.strip()
        if not key or len(key) > KEY_LIMIT or any(not ch.isprintable() for ch in key):
            raise ValueError("not a sysctl key name")
        key = dotted_key(key)
        if "." not in key:
            if not _LEAF_RE.fullmatch(key):
                raise ValueError("not a sysctl key name")
            if key in _BY_SHORT:
                return _BY_SHORT[key].name
            full = "net.ipv4." + key
            if full in REFUSED:
                return full
            for prefix in ALLOWED_PREFIXES:
                if os.path.exists(self.proc_path(prefix + key)):
                    return prefix + key
            raise ValueError("no such key under net.ipv4 or net.core in this kernel")
        check_key_grammar(key)
        self.proc_path(key)  # the built path, checked again
        return key

    def read_live(self, key):
        # bounded, a regular file only, never blocking (proc_path refused anything outside net/ipv4, net/core)
        return read_bytes(self.proc_path(key), PROC_READ_LIMIT).decode("utf-8", "replace")

    def _open_live_for_writing(self, key, truncate):
        """A write descriptor of the key's file: O_NONBLOCK (a FIFO never blocks), a regular file only.

        Opening a /proc/sys file changes nothing (the kernel acts on write()); O_TRUNC is asked
        only by the writer, as sysctl(8) does, so a check of a test tree's files truncates nothing.
        """
        path = self.proc_path(key)
        flags = os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags | (os.O_TRUNC if truncate else 0))
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise FileRefused(path, "is %s, not a sysctl" % _kind(mode))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def write_live(self, key, value):
        # one write() call: /proc/sys parses the whole buffer at once
        fd = self._open_live_for_writing(key, truncate=True)
        try:
            os.write(fd, (value + "\n").encode())
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- drop-in file
    @staticmethod
    def read_file(path):
        """(content, mode) of the drop-in, or (None, 0o644) when there is none.

        Bounded, a regular file only (a device or FIFO is refused, never read or waited on), and a
        symbolic link is not followed: the drop-in is replaced, never written through a link, so a
        link is refused and its target must be named instead.
        """
        content, mode = read_text_and_mode(path, FILE_READ_LIMIT, follow_links=False)
        if content is None:
            return None, 0o644
        return content, mode

    @staticmethod
    def write_file_atomic(path, content, mode):
        """Replace ``path`` by ``content`` atomically (None removes the file)."""
        directory = os.path.dirname(path) or "."
        if content is None:
            check_replaceable(path)  # a link, device or FIFO is never removed in its place
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        write_atomically(path, content, mode, sync_directory=True)

    @staticmethod
    def render(values):
        if not values:
            return None
        return FILE_HEADER + "".join("%s = %s\n" % (key, value) for key, value in values.items())

    # ---------------------------------------------------------------- boot order
    def boot_files(self, path, new_content):
        """Files in the order systemd-sysctl / sysctl --system read them."""
        by_name = {}
        seen_dirs = set()
        target_dir = os.path.realpath(os.path.dirname(path))
        for directory in self.sysctl_dirs:
            real = os.path.realpath(directory)
            if real in seen_dirs:
                continue  # /lib -> /usr/lib on merged-/usr systems
            seen_dirs.add(real)
            names = []
            try:
                names = [n for n in os.listdir(directory) if n.endswith(".conf")]
            except OSError:
                pass
            if real == target_dir and new_content is not None and path.endswith(".conf"):
                names.append(os.path.basename(path))
            for name in names:
                candidate = os.path.join(directory, name)
                if real == target_dir and name == os.path.basename(path):
                    if new_content is None:
                        continue
                    candidate = path
                by_name.setdefault(name, candidate)
        files = [by_name[name] for name in sorted(by_name)]
        if self.sysctl_conf and (os.path.exists(self.sysctl_conf) or
                                 os.path.realpath(path) == os.path.realpath(self.sysctl_conf)):
            files.append(self.sysctl_conf)
        return files

    def boot_values(self, keys, path, new_content):
        """key -> (raw value, file) that wins at boot, or (None, None)."""
        result = dict.fromkeys(keys, (None, None))
        ours = os.path.realpath(path)
        for filename in self.boot_files(path, new_content):
            if os.path.realpath(filename) == ours:
                text = new_content or ""
            else:
                try:
                    # links followed (a vendor file masked by a link to /dev/null is refused, as empty)
                    text = read_text(filename, FILE_READ_LIMIT, follow_links=True)
                except (OSError, UnicodeDecodeError):
                    continue
            for file_key, value in parse_sysctl_text(text):
                if any(c in file_key for c in "*?["):
                    matched = [k for k in keys if fnmatch.fnmatchcase(k, file_key)]
                else:
                    matched = [file_key] if file_key in result else []
                for key in matched:
                    result[key] = (value, filename)
        return result

    def path_read_at_boot(self, path):
        directory = os.path.realpath(os.path.dirname(path))
        if self.sysctl_conf and os.path.realpath(path) == os.path.realpath(self.sysctl_conf):
            return True
        return path.endswith(".conf") and any(
            os.path.realpath(d) == directory for d in self.sysctl_dirs)

    # ---------------------------------------------------------------- plan
    def plan(self, settings, force=False, problems=()):
        """Validate everything; return (entries, warnings) or raise SysctlError listing every problem
        (``problems`` found before, the drop-in's, come first)."""
        if not isinstance(settings, dict):
            raise SysctlError("settings must be a dict of key: value, got %s" % bounded_repr(settings))
        errors = list(problems)
        warnings = []
        entries = []
        by_key = {}
        for raw_key, raw_value in settings.items():
            shown = "%s=%s" % (shown_key(raw_key), shown_value(raw_value))
            try:
                key = self.resolve_key(raw_key)
            except ValueError as exc:
                errors.append("%s: %s" % (shown, exc))
                continue
            if key in REFUSED:
                errors.append("%s: refused: %s" % (shown, REFUSED[key]))
                continue
            if key in by_key:
                errors.append("%s: %s is given twice (as %s and %s)"
                              % (shown, key, shown_key(by_key[key].raw_key), shown_key(raw_key)))
                continue
            spec = KNOWLEDGE.get(key)
            value = None
            if raw_value is not None:
                try:
                    value = normalize_value(spec, raw_value)
                except ValueError as exc:
                    errors.append("%s: invalid value for %s: %s" % (shown, key, exc))
                    continue
            entry = Entry(key, str(raw_key), spec, value, self.proc_path(key))
            by_key[key] = entry
            entries.append(entry)
            if not os.path.exists(entry.proc_path):
                if spec is not None and spec.scope == GLOBAL:
                    entry.skipped = True
                    warnings.append(
                        "%s is global (one value for the whole machine) and not visible in this "
                        "network namespace: skipped, neither applied nor written to the drop-in" % key)
                    continue
                if value is None:
                    continue  # only removing it from our file
                if spec is not None:
                    errors.append("%s: %s is not in this kernel (%s); it appeared in Linux %s"
                                  % (shown, key, self.kernel_release, spec.since))
                else:
                    errors.append("%s: %s does not exist in this kernel (%s)"
                                  % (shown, key, self.kernel_release))
                continue
            try:
                entry.before = normalize_live(spec, self.read_live(key))
            except OSError as exc:
                errors.append("%s: cannot read %s: %s" % (shown, shown_key(entry.proc_path), exc.strerror or exc))
        self._cross_checks(by_key, force, errors, warnings)
        if errors:
            raise SysctlError("invalid sysctl settings, nothing was changed: " + "; ".join(errors))
        return entries, warnings

    def _current(self, by_key, key):
        entry = by_key.get(key)
        if entry is not None and entry.value is not None and not entry.skipped:
            return entry.value
        try:
            return normalize_live(KNOWLEDGE.get(key), self.read_live(key))
        except OSError:
            return None

    def _cross_checks(self, by_key, force, errors, warnings):
        buckets = by_key.get("net.ipv4.tcp_max_tw_buckets")
        if (buckets is not None and buckets.value is not None and buckets.before is not None
                and int(buckets.value) < int(buckets.before)):
            message = ("tcp_max_tw_buckets=%s: lowering it below the current %s makes the kernel destroy "
                       "TIME_WAIT sockets early (TCPTimeWaitOverflow) instead of protecting new "
                       "connections; the kernel docs say never to lower it artificially"
                       % (buckets.value, buckets.before))
            if force:
                warnings.append(message + " (done anyway: force)")
            else:
                errors.append(message + "; set force to do it anyway")
        if "net.ipv4.tcp_tw_reuse" in by_key or "net.ipv4.tcp_timestamps" in by_key:
            reuse = self._current(by_key, "net.ipv4.tcp_tw_reuse")
            timestamps = self._current(by_key, "net.ipv4.tcp_timestamps")
            if reuse not in (None, "0") and timestamps == "0":
                warnings.append("tcp_tw_reuse=%s has no effect while tcp_timestamps=0: TIME_WAIT ports are "
                                "only reused for connections that carry timestamps" % reuse)
        fin = by_key.get("net.ipv4.tcp_fin_timeout")
        if fin is not None and fin.value is not None and int(fin.value) < 60:
            warnings.append("tcp_fin_timeout=%s does not shorten TIME_WAIT (fixed at 60 s in the kernel); "
                            "it only limits how long orphaned connections stay in FIN_WAIT2" % fin.value)
        self._port_checks(by_key, force, errors, warnings)
        ports = by_key.get("net.ipv4.ip_local_port_range")
        if ports is not None and ports.value is not None:
            low, high = (int(p) for p in ports.value.split())
            if low % 2 == high % 2:
                warnings.append("ip_local_port_range=%s: low and high have the same parity; connect() uses "
                                "ports of one parity first and bind(0) the other, so the split is uneven "
                                "(e.g. use %d %d)" % (ports.value, low, high + 1 if high < 65535 else high - 1))

    def _port_checks(self, by_key, force, errors, warnings):
        """Refuse (unless force) port settings that leave a host without ephemeral ports; refuse what
        the kernel would refuse (a range starting below ip_unprivileged_port_start)."""
        range_key, reserved_key = "net.ipv4.ip_local_port_range", "net.ipv4.ip_local_reserved_ports"
        given = [by_key[k] for k in (range_key, reserved_key)
                 if k in by_key and by_key[k].value is not None and not by_key[k].skipped]
        if not given:
            return
        problems = []
        try:
            low, high = (int(p) for p in (self._current(by_key, range_key) or "").split())
        except ValueError:
            return  # no range visible here: nothing to compare with
        ports = by_key.get(range_key)
        if ports in given:
            try:
                unprivileged = int(normalize_live(None, self.read_live("net.ipv4.ip_unprivileged_port_start")))
            except (OSError, ValueError):
                unprivileged = None
            if unprivileged is not None and low < unprivileged:
                errors.append("ip_local_port_range=%s: the kernel refuses a range starting below "
                              "ip_unprivileged_port_start (%d)" % (ports.value, unprivileged))
            if high - low + 1 < MIN_EPHEMERAL_PORTS:
                problems.append("ip_local_port_range=%s: %d ephemeral ports, fewer than %d: outgoing connect() "
                                "fails with EADDRNOTAVAIL once they are in use or in TIME_WAIT"
                                % (ports.value, high - low + 1, MIN_EPHEMERAL_PORTS))
        try:
            reserved = _parse_port_list(self._current(by_key, reserved_key) or "")
        except ValueError:
            reserved = []
        taken = sum(max(0, min(high, last) - max(low, first) + 1) for first, last in reserved)
        free = high - low + 1 - taken
        shown = "; ".join("%s=%s" % (e.key.rsplit(".", 1)[-1], e.value) for e in given)
        if taken and free <= 0:
            problems.append("%s: the reserved ports cover the whole ephemeral range %d-%d: every outgoing "
                            "connect() and bind(0) fails" % (shown, low, high))
        elif taken and free < MIN_EPHEMERAL_PORTS:
            problems.append("%s: the reserved ports leave %d free ephemeral port(s) in %d-%d, fewer than %d"
                            % (shown, free, low, high, MIN_EPHEMERAL_PORTS))
        for message in problems:
            if force:
                warnings.append(message + " (done anyway: force)")
            else:
                errors.append(message + "; set force to do it anyway")

    # ---------------------------------------------------------------- run
    def run(self, settings, path=DEFAULT_PATH, persist=True, apply=True, force=False, check_mode=False):
        try:
            check_path(path, absolute=True, name="path")
        except FileRefused as exc:
            raise SysctlError("path=%s: must be an absolute file path (%s)" % (shown_key(path), exc.reason))
        old_content, mode, file_values, problems, line_problems = self._read_drop_in(path)
        # foreign lines matter only when the file is rewritten (they would be copied into it)
        entries, warnings = self.plan(settings, force=force, problems=problems + (line_problems if persist else []))
        active = [e for e in entries if not e.skipped]
        new_content = self._merge(file_values, active) if persist else old_content
        file_changed = persist and new_content != old_content

        live_changes = [e for e in active if e.live_changes] if apply else []
        self._check_writable(live_changes)
        if not check_mode:
            if file_changed:
                try:
                    self.write_file_atomic(path, new_content, mode)
                except OSError as exc:
                    raise SysctlError("path=%s: cannot write the drop-in, nothing was changed: %s"
                                      % (path, exc.strerror or exc))
            self._apply_live(live_changes, path, old_content if file_changed else False, mode)
        self._read_back(active, live_changes, check_mode, warnings)

        if persist and entries and not self.path_read_at_boot(path):
            warnings.append("%s is not in a directory read at boot (%s): the values will not come back "
                            "after a reboot" % (path, ", ".join(self.sysctl_dirs)))
        diff = []
        if persist:
            diff.append({"before_header": path, "after_header": path,
                         "before": old_content or "", "after": new_content or ""})
        if apply:
            diff.append(_live_diff(active))
        return {
            "changed": bool(file_changed or live_changes),
            "path": path,
            "file_changed": bool(file_changed),
            "live_changed": [e.key for e in live_changes],
            "per_key": self._per_key(entries, live_changes, path, persist, new_content, warnings),
            # not "skipped": Ansible reads a truthy "skipped" in a result as "the task was skipped"
            "skipped_keys": [e.key for e in entries if e.skipped],
            "removed": [e.key for e in active if e.value is None],
            "warnings": warnings,
            "diff": diff,
        }

    def _read_drop_in(self, path):
        """(content, mode, {key: value}, problems, line problems) of the drop-in; problems name ``path``.

        Only lines this module writes are carried over: ``key = value`` with a net.ipv4 or net.core key
        of the grammar. Any other line (a foreign key, a glob, a line without "=") is a problem, never
        copied silently into the new file.
        """
        try:
            content, mode = self.read_file(path)
        except FileRefused as exc:
            reason = exc.reason
            if os.path.islink(path):
                reason = ("is a symbolic link (to %s), which is not followed: the drop-in is replaced, never "
                          "written through a link; name the link's target as path instead"
                          % shown_key(os.readlink(path)))
            return None, 0o644, {}, ["path=%s: %s" % (shown_key(path), reason)], []
        except (OSError, ValueError) as exc:
            return None, 0o644, {}, ["path=%s: cannot read the drop-in: %s" % (
                shown_key(path), getattr(exc, "strerror", None) or exc)], []
        file_values = {}
        problems = []
        for number, line in enumerate((content or "").splitlines(), 1):
            text = line.strip()
            if not text or text[0] in "#;":
                continue
            reason = None
            if "=" not in text:
                reason = "not a key = value line"
            else:
                file_key, file_value = text[1:].lstrip().split("=", 1) if text[0] == "-" else text.split("=", 1)
                file_key = dotted_key(file_key.strip())
                try:
                    check_key_grammar(file_key)
                    self.proc_path(file_key)
                except ValueError as exc:
                    reason = str(exc)
                else:
                    file_values[file_key] = canonical_text(file_value)
            if reason is not None:
                problems.append("path=%s: line %d %s: %s; only net.ipv4.* and net.core.* key = value lines are "
                                "kept in the drop-in: remove the line or name another path"
                                % (shown_key(path), number, shown_key(text[:100]), reason))
        return content, mode, file_values, [], problems

    def _merge(self, file_values, active):
        """The new drop-in: the file's values with ours set or removed, rendered."""
        file_values = dict(file_values)
        for entry in active:
            if entry.value is None:
                file_values.pop(entry.key, None)
            else:
                file_values[entry.key] = entry.value
        return self.render(file_values)

    def _read_back(self, active, live_changes, check_mode, warnings):
        """Set every active entry's after: what the kernel holds now (the value asked for in check mode)."""
        for entry in active:
            if entry not in live_changes:
                entry.after = entry.before
                continue
            entry.after = entry.value
            if check_mode:
                continue
            try:
                entry.after = normalize_live(entry.spec, self.read_live(entry.key))
            except OSError:
                pass
            if entry.after != entry.value:
                warnings.append("%s: the kernel stored %r after %r was written" % (entry.key, entry.after, entry.value))

    def _per_key(self, entries, live_changes, path, persist, new_content, warnings):
        """The per_key result, with a warning for each key another file sets differently at boot."""
        boot = self.boot_values([e.key for e in entries], path, new_content)
        keys = {}
        for entry in entries:
            boot_raw, boot_file = boot[entry.key]
            boot_value = normalize_live(entry.spec, boot_raw) if boot_raw is not None else None
            if (persist and entry.value is not None and not entry.skipped and boot_file is not None
                    and os.path.realpath(boot_file) != os.path.realpath(path) and boot_value != entry.value):
                warnings.append("%s: %s sets %s and is read after %s, so %s wins at boot instead of %s"
                                % (entry.key, boot_file, boot_value, path, boot_value, entry.value))
            keys[entry.key] = {
                "value": entry.value,
                "before": entry.before,
                "after": entry.after,
                "changed": (entry in live_changes),
                "skipped": entry.skipped,
                "scope": entry.spec.scope if entry.spec else NAMESPACED,
                "advice": entry.spec.advice if entry.spec else None,
                "boot": {"value": boot_value, "file": boot_file},
            }
        return keys

    def _check_writable(self, changes):
        """Fail before anything is written when a key cannot be set live (read-only /proc/sys, not root).

        Opening a /proc/sys file for writing changes nothing (the kernel acts on write()), and
        gives the reason the write would fail: EROFS for a read-only mount, EACCES without the
        right. Check mode runs this too, so it predicts the failure.
        """
        errors = []
        for entry in changes:
            try:
                os.close(self._open_live_for_writing(entry.key, truncate=False))
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if exc.errno == errno.EROFS:
                    reason += " (/proc/sys is mounted read-only here: a container without the right to change it?)"
                elif exc.errno in (errno.EACCES, errno.EPERM):
                    reason += " (not allowed: not root, or a namespace this user does not own)"
                errors.append("%s=%s: cannot write %s: %s" % (entry.key, entry.value, entry.proc_path, reason))
        if errors:
            raise SysctlError("cannot set live, nothing was changed: " + "; ".join(errors))

    def _apply_live(self, changes, path, old_content, mode):
        """Write live values; on failure restore what was written and the previous file (if rewritten)."""
        done = []
        for entry in changes:
            try:
                self.write_live(entry.key, entry.value)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if exc.errno == errno.EINVAL:
                    reason += " (the kernel rejected the value)"
                elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                    reason += " (/proc/sys is read-only here: a container without the right to change it?)"
                problems = self._rollback(done, path, old_content, mode)
                message = ("%s=%s: cannot set it live: %s; restored %d value(s) already written%s"
                           % (entry.key, entry.value, reason, len(done),
                              "" if old_content is False else " and the previous " + path))
                if problems:
                    message += "; ROLLBACK INCOMPLETE: " + "; ".join(problems)
                raise SysctlError(message)
            done.append(entry)

    def _rollback(self, done, path, old_content, mode):
        problems = []
        for entry in reversed(done):
            try:
                self.write_live(entry.key, entry.before or "")
            except OSError as exc:
                problems.append("%s back to %s: %s" % (entry.key, entry.before, exc.strerror or exc))
        if old_content is not False:
            try:
                self.write_file_atomic(path, old_content, mode)
            except OSError as exc:
                problems.append("%s: %s" % (path, exc.strerror or exc))
        return problems


def _live_diff(active):
    """The diff entry of the live values, before and after, as `key = value` lines."""
    lines = [e for e in active if e.value is not None]
    return {"before_header": "live values (/proc/sys)", "after_header": "live values (/proc/sys)",
            "before": "".join("%s = %s\n" % (e.key, e.before) for e in lines),
            "after": "".join("%s = %s\n" % (e.key, e.after) for e in lines)}
