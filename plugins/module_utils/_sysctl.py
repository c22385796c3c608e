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

from ._atomic import write_atomically

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
            minimum=1, maximum=INT_MAX, default="60"),
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

_KEY_RE = re.compile(r"^[A-Za-z0-9_.:@+-]+$")


def _to_int(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.match(r"^\s*-?\d+\s*$", value):
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
    if spec is None:
        if isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value)
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (dict, float)):
            raise ValueError("expected a string or an integer")
        text = canonical_text(value)
        if "\n" in str(value) or "=" in text:
            raise ValueError("a value may not contain newlines or '='")
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
        # a "/" inside a dotted segment stands for a literal dot (interface eth0.100)
        return os.path.join(self.proc_sys, *(part.replace("/", ".") for part in key.split(".")))

    def resolve_key(self, raw_key):
        """Full dotted name of ``raw_key`` (short, dotted or slash form). Raises ValueError."""
        key = str(raw_key).strip()
        if not key or not _KEY_RE.match(key.replace("/", ".")):
            raise ValueError("not a sysctl key name")
        key = dotted_key(key)
        if "." not in key:
            if key in _BY_SHORT:
                return _BY_SHORT[key].name
            full = "net.ipv4." + key
            if full in REFUSED:
                return full
            for prefix in ALLOWED_PREFIXES:
                if os.path.exists(self.proc_path(prefix + key)):
                    return prefix + key
            raise ValueError("no such key under net.ipv4 or net.core in this kernel")
        if key in REFUSED or key in KNOWLEDGE:
            return key
        if not key.startswith(ALLOWED_PREFIXES):
            raise ValueError("only net.ipv4.* and net.core.* keys are managed by this module")
        return key

    def read_live(self, key):
        with open(self.proc_path(key), "r") as handle:
            return handle.read()

    def write_live(self, key, value):
        # one write() call: /proc/sys parses the whole buffer at once
        fd = os.open(self.proc_path(key), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, (value + "\n").encode())
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- drop-in file
    @staticmethod
    def read_file(path):
        try:
            with open(path, "r") as handle:
                content = handle.read()
            return content, stat.S_IMODE(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return None, 0o644

    @staticmethod
    def write_file_atomic(path, content, mode):
        """Replace ``path`` by ``content`` atomically (None removes the file)."""
        directory = os.path.dirname(path) or "."
        if content is None:
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
                    with open(filename, "r") as handle:
                        text = handle.read()
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
    def plan(self, settings, force=False):
        """Validate everything; return (entries, warnings) or raise SysctlError listing every problem."""
        if not isinstance(settings, dict):
            raise SysctlError("settings must be a dict of key: value, got %r" % (settings,))
        errors = []
        warnings = []
        entries = []
        by_key = {}
        for raw_key, raw_value in settings.items():
            shown = "%s=%s" % (raw_key, raw_value)
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
                              % (shown, key, by_key[key].raw_key, raw_key))
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
                errors.append("%s: cannot read %s: %s" % (shown, entry.proc_path, exc.strerror or exc))
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
        ports = by_key.get("net.ipv4.ip_local_port_range")
        if ports is not None and ports.value is not None:
            low, high = (int(p) for p in ports.value.split())
            if low % 2 == high % 2:
                warnings.append("ip_local_port_range=%s: low and high have the same parity; connect() uses "
                                "ports of one parity first and bind(0) the other, so the split is uneven "
                                "(e.g. use %d %d)" % (ports.value, low, high + 1 if high < 65535 else high - 1))

    # ---------------------------------------------------------------- run
    def run(self, settings, path=DEFAULT_PATH, persist=True, apply=True, force=False, check_mode=False):
        if not path or not os.path.isabs(path):
            raise SysctlError("path=%s: must be an absolute file path" % (path,))
        entries, warnings = self.plan(settings, force=force)
        active = [e for e in entries if not e.skipped]
        old_content, mode, new_content = self._drop_in(path, active, persist)
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

    def _drop_in(self, path, active, persist):
        """(old content, mode, new content) of the drop-in: ours merged into what it holds when persist."""
        try:
            old_content, mode = self.read_file(path)
        except OSError as exc:
            raise SysctlError("path=%s: cannot read the drop-in: %s" % (path, exc.strerror or exc))
        if not persist:
            return old_content, mode, old_content
        file_values = {}
        for file_key, file_value in parse_sysctl_text(old_content or ""):
            file_values[file_key] = canonical_text(file_value)
        for entry in active:
            if entry.value is None:
                file_values.pop(entry.key, None)
            else:
                file_values[entry.key] = entry.value
        return old_content, mode, self.render(file_values)

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
                os.close(os.open(entry.proc_path, os.O_WRONLY))
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
