# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The socket engine as a command for monitoring agents.

Run it from an installed or checked-out collection (the directory holding ``ansible_collections``
must be on ``sys.path``, e.g. the current directory)::

    python3 -m ansible_collections.netstate.tcp.plugins.module_utils._engine.collect --format prometheus

Formats:

``json``
    the ``ansible_facts.netstate`` document (docs/facts-contract.md), one line.
``prometheus``
    Prometheus text exposition format 0.0.4 (node_exporter's textfile collector reads it).
``zabbix-discovery``
    Zabbix low-level discovery JSON, one row per listening port and protocol. With
    ``--discovery-file`` the rows come from that file when it is younger than
    ``--discovery-max-age`` seconds (a root job writes it with ``--protocol all --output``, so
    ``{#PROCESS}`` is filled although the agent's user cannot read other users' /proc/PID/fd);
    otherwise, or when the file is unreadable or malformed, the collector gathers itself.

Every argument is validated by argparse before anything is gathered; the command never runs a
shell and never writes anywhere but ``--output``, which it replaces atomically. Plain Python,
standard library only, no ``ansible`` import: the agent roles copy this file and the engine files
next to it onto monitored hosts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import math
import os
import re
import sys
import time

from . import _argspec as contract
from . import _escape as escape
from . import _files as files
from . import _options as options
from ._argspec import BACKENDS, DEFAULT_SUBSET, TCP_STATES
from ._atomic import write_atomically
from ._procfs import TCP_GAUGE_FIELDS
from .engine import GatherError, gather

FORMATS = ("json", "prometheus", "zabbix-discovery")
PROTOCOLS = ("tcp", "udp", "all")
LLD_KEYS = ("{#PROTOCOL}", "{#PORT}", "{#ADDRESS}", "{#ADDRESSES}", "{#FAMILY}", "{#PROCESS}", "{#UNIT}")

_METRIC_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_ACRONYM_PLURAL = re.compile(r"([A-Z]{2,})s(?=[A-Z]|$)")
_CAMEL_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_WORD = re.compile(r"([a-z0-9])([A-Z])")


class UsageError(Exception):
    """A bad argument; argparse turns it into a usage message naming the argument."""


# ---------------------------------------------------------------------------------------------
# argument types: each one names the value it refuses
# ---------------------------------------------------------------------------------------------

def _checked(check, name: str, number):
    """An argparse type: the text as a number, checked by the engine's check of the option (the one
    validation the modules get too). Text that is no number goes to the check as it is, which refuses it
    naming it: "argument --top: top: 'x' is not an integer"."""
    def convert(text: str):
        try:
            value = number(text)
        except ValueError:
            value = text
        try:
            return check(name, value)
        except GatherError as error:
            raise argparse.ArgumentTypeError(str(error))
    return convert


def _int_range(name: str):
    """An integer within contract.RANGES[name]."""
    return _checked(options.check_count, name, lambda text: int(text, 10))


def _float_range(name: str):
    """A number of seconds within contract.RANGES[name]."""
    return _checked(options.check_seconds, name, float)


def _gather_subset(text: str) -> list:
    """The comma-separated names, each one checked by the engine's resolve_subset (the modules' check)."""
    names = [part.strip() for part in text.split(",")]
    try:
        options.resolve_subset(names)
    except GatherError as error:
        raise argparse.ArgumentTypeError(str(error))
    return names


def _namespace(text: str) -> str:
    try:
        return options.check_namespace(text)
    except GatherError as error:
        raise argparse.ArgumentTypeError(str(error))


def _protocol(text: str) -> str:
    # Zabbix passes an empty string for a flexible key used without parameters.
    if text == "":
        return "tcp"
    if text not in PROTOCOLS:
        raise argparse.ArgumentTypeError("%r is not a protocol (choose from %s)" % (text, ", ".join(PROTOCOLS)))
    return text


def _absolute_file(text: str) -> str:
    try:
        files.check_path(text, absolute=True, name="the file name")
    except OSError as error:
        raise argparse.ArgumentTypeError(str(error))
    if text.endswith("/"):
        raise argparse.ArgumentTypeError("%s is not an absolute file name" % escape.bounded_repr(text))
    return text


def _output(text: str) -> str:
    """A file the collector may replace: checked here, before anything is gathered, and again by the
    writer (the spare failure file beside it too) just before each rename."""
    if not text or text.endswith("/"):
        raise argparse.ArgumentTypeError("%s is not a file name" % escape.bounded_repr(text))
    try:
        files.check_replaceable(text)
    except OSError as error:
        raise argparse.ArgumentTypeError(str(error))
    return text


#: The most characters of an argument error (the message names the argument first).
ERROR_LIMIT = 600


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # exit 2 like argparse, but never print help text into a metric file
        # one line, bounded: argparse quotes a bad value whole ("invalid choice: '<100 kB>'")
        message = escape.log_line(message)
        if len(message) > ERROR_LIMIT:
            message = message[:ERROR_LIMIT] + "...(%d characters)" % len(message)
        self.exit(2, "%s: error: %s\n" % (self.prog, message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python3 -m ansible_collections.netstate.tcp.plugins.module_utils._engine.collect",
        description="Print TCP socket state (ansible_facts.netstate) for monitoring agents.",
        allow_abbrev=False,
    )
    parser.add_argument("--format", choices=FORMATS, default="json", help="output format (default json)")
    defaults = contract.DEFAULTS
    parser.add_argument("--gather-subset", type=_gather_subset, default=None,
                        help="comma-separated gather_subset, e.g. states,ports,!peers (default %s)"
                        % ",".join(DEFAULT_SUBSET))
    # The earlier spelling, deprecated and hidden from --help: agent configurations written for earlier
    # releases pass it. To be removed in 1.0.0 (changelog, deprecated_features).
    parser.add_argument("--subset", dest="gather_subset", type=_gather_subset, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    parser.add_argument("--top", type=_int_range("top"), default=defaults["top"],
                        help="how many peers and remote ports to keep, %s (default %d)"
                        % (contract.describe_range("top"), defaults["top"]))
    parser.add_argument("--sample-interval", type=_float_range("sample_interval"),
                        default=float(defaults["sample_interval"]),
                        help="seconds between two counter samples to compute rates, %s (default 0: no rates)"
                        % contract.describe_range("sample_interval"))
    parser.add_argument("--namespace", type=_namespace, default=None,
                        help="network namespace: host (default), a name under /run/netns, pid:N, a path, or all")
    parser.add_argument("--backend", choices=BACKENDS, default=defaults["backend"],
                        help="socket source (default %s)" % defaults["backend"])
    parser.add_argument("--max-sockets", type=_int_range("max_sockets"), default=defaults["max_sockets"],
                        help="raw socket list limit with --gather-subset sockets (default %d)"
                        % defaults["max_sockets"])
    parser.add_argument("--local-ports-limit", type=_int_range("local_ports_limit"),
                        default=defaults["local_ports_limit"],
                        help="listening ports listed one by one in tcp.local_ports, %s (default %d; the busiest, "
                        "and each state's worst, are kept; the rest are summed in tcp.local_ports_rest)"
                        % (contract.describe_range("local_ports_limit"), defaults["local_ports_limit"]))
    parser.add_argument("--listeners-limit", type=_int_range("listeners_limit"),
                        default=defaults["listeners_limit"],
                        help="most listeners in the listeners list and zabbix-discovery, %s (default %d; the "
                        "fullest accept queues are kept, the rest are summed in listeners_rest)"
                        % (contract.describe_range("listeners_limit"), defaults["listeners_limit"]))
    parser.add_argument("--walk-budget", type=_int_range("walk_budget"), default=None,
                        help="most file descriptors read to find listeners' processes (default: as many as a "
                        "quarter of the socket dumps' time allows, at least 100 ms)")
    parser.add_argument("--walk-all-namespaces", action="store_true",
                        help="also read processes of other network namespaces to find listeners' processes")
    parser.add_argument("--protocol", type=_protocol, default="tcp",
                        help="zabbix-discovery: listeners of this protocol: tcp (default), udp or all")
    parser.add_argument("--discovery-file", type=_absolute_file, default=None,
                        help="zabbix-discovery: take the rows from this file (written by a root job with "
                        "--format zabbix-discovery --protocol all --output FILE) when it is fresh")
    parser.add_argument("--discovery-max-age", type=_int_range("discovery_max_age"),
                        default=defaults["discovery_max_age"],
                        help="zabbix-discovery: seconds after which --discovery-file is stale, %s (default %d)"
                        % (contract.describe_range("discovery_max_age"), defaults["discovery_max_age"]))
    parser.add_argument("--quiet", action="store_true",
                        help="no warnings on standard error (Zabbix reads standard error into the value)")
    parser.add_argument("--output", type=_output, default=None,
                        help="write to this file atomically instead of standard output")
    return parser


# ---------------------------------------------------------------------------------------------
# renderers: pure functions of the fact document
# ---------------------------------------------------------------------------------------------

def render_json(facts: dict) -> str:
    return json.dumps(facts, sort_keys=True, separators=(",", ":")) + "\n"


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _metric_name(*parts: str) -> str:
    return _METRIC_NAME_BAD.sub("_", "_".join(parts))


def snake_case(name: str) -> str:
    """A kernel field name in Prometheus's snake_case: TCPTimeWaitOverflow -> tcp_time_wait_overflow."""
    name = _ACRONYM_PLURAL.sub(r"\1S", name)  # DelayedACKs -> delayed_acks, not delayed_ac_ks
    name = _CAMEL_WORD.sub(r"\1_\2", _CAMEL_ACRONYM.sub(r"\1_\2", name))
    return _METRIC_NAME_BAD.sub("_", name).lower()


def netstat_metric(group: str, field: str) -> tuple:
    """(series name, type) of a /proc/net/snmp or /proc/net/netstat field.

    Counters end in _total: Tcp ActiveOpens -> netstate_netstat_tcp_active_opens_total,
    TcpExt ListenOverflows -> netstate_netstat_tcpext_listen_overflows_total; the Tcp values that
    are no counters (CurrEstab, RtoMin, ...) are gauges without the suffix.
    """
    name = _metric_name("netstate_netstat", group.lower(), snake_case(field))
    if group == "Tcp" and field in TCP_GAUGE_FIELDS:
        return name, "gauge"
    return name + "_total", "counter"


class _Exposition:
    """Collects samples per metric family; a family is printed once with its HELP and TYPE."""

    def __init__(self) -> None:
        self._families = {}  # name -> [help, type, {label tuple: value}]

    def add(self, name: str, kind: str, help_text: str, value, labels=None) -> None:
        if value is None or isinstance(value, (str, list, dict)):
            return
        family = self._families.setdefault(name, [help_text, kind, {}])
        key = tuple(sorted((labels or {}).items()))
        # Two sources for one series (e.g. SO_REUSEPORT listeners on the same address and port) add up.
        family[2][key] = family[2].get(key, 0) + value

    def text(self) -> str:
        lines = []
        for name, (help_text, kind, samples) in self._families.items():
            lines.append("# HELP %s %s" % (name, escape.prometheus_help(help_text)))
            lines.append("# TYPE %s %s" % (name, kind))
            for key, value in samples.items():
                if key:
                    labels = ",".join('%s="%s"' % (label, escape.prometheus_label(text)) for label, text in key)
                    lines.append("%s{%s} %s" % (name, labels, _format_value(value)))
                else:
                    lines.append("%s %s" % (name, _format_value(value)))
        return "\n".join(lines) + "\n"


def _labels(extra: dict, **labels) -> dict:
    labels.update(extra)
    return labels


def _add_states(out: _Exposition, name: str, help_text: str, states: dict, labels: dict) -> None:
    for state in TCP_STATES:
        out.add(name, "gauge", help_text, (states or {}).get(state, 0), _labels(labels, state=state))


def _add_document(out: _Exposition, facts: dict, extra: dict) -> None:
    """Every series of one fact document; extra labels (the namespace) go on each of them."""
    tcp = facts.get("tcp") or {}
    _add_states(out, "netstate_tcp_connections", "TCP sockets by state.", tcp.get("states"), extra)
    for family, entry in sorted((tcp.get("families") or {}).items()):
        _add_states(out, "netstate_tcp_family_connections", "TCP sockets by address family and state.",
                    entry.get("states"), _labels(extra, family=family))
    for port, entry in sorted((tcp.get("local_ports") or {}).items(), key=lambda item: int(item[0])):
        _add_states(out, "netstate_tcp_port_connections",
                    "TCP sockets by local port that has a listener (server side) and state.",
                    entry.get("states"), _labels(extra, port=port))
    rest = tcp.get("local_ports_rest")
    if rest is not None:
        out.add("netstate_tcp_port_rest_ports", "gauge",
                "Listening ports not in netstate_tcp_port_connections (beyond --local-ports-limit), summed below.",
                rest.get("ports"), extra)
        _add_states(out, "netstate_tcp_port_rest_connections",
                    "TCP sockets by state on the listening ports beyond --local-ports-limit, summed.",
                    rest.get("states"), extra)
    for port, entry in sorted((tcp.get("remote_ports") or {}).items(), key=lambda item: int(item[0])):
        _add_states(out, "netstate_tcp_remote_port_connections",
                    "TCP sockets by remote port of outgoing connections (top N) and state.",
                    entry.get("states"), _labels(extra, port=port))
    for peer in tcp.get("peers") or []:
        out.add("netstate_tcp_peer_connections", "gauge", "TCP sockets (not LISTEN) by remote address, top N peers.",
                peer.get("total"), _labels(extra, address=peer.get("address")))
    ephemeral = tcp.get("ephemeral") or {}
    out.add("netstate_tcp_ephemeral_ports", "gauge", "Size of the ephemeral port range (ip_local_port_range).",
            ephemeral.get("size"), extra)
    busiest = ephemeral.get("busiest")
    if busiest:
        where = _labels(extra, address=busiest.get("address"), port=busiest.get("port"))
        out.add("netstate_tcp_ephemeral_busiest_connections", "gauge",
                "Sockets from an ephemeral local port to the busiest remote address and port.",
                busiest.get("connections"), where)
        out.add("netstate_tcp_ephemeral_busiest_time_wait", "gauge",
                "TIME_WAIT sockets among them.", busiest.get("time_wait"), where)
        out.add("netstate_tcp_ephemeral_busiest_share", "gauge",
                "Those sockets as a share (0..1) of the ephemeral port range.", busiest.get("share"), where)

    for timer, count in sorted((tcp.get("timers") or {}).items()):
        out.add("netstate_tcp_timer_sockets", "gauge", "TCP sockets (not LISTEN) by the kernel timer pending on them.",
                count, _labels(extra, timer=timer))
    queues = tcp.get("queues") or {}
    for queue in ("recv", "send"):
        out.add("netstate_tcp_queue_bytes", "gauge",
                "Bytes queued on TCP sockets (not LISTEN): recv not yet read by the application (ss Recv-Q), "
                "send not yet acknowledged by the peer (ss Send-Q).",
                queues.get("%s_bytes" % queue), _labels(extra, queue=queue))
        out.add("netstate_tcp_queue_sockets", "gauge", "TCP sockets (not LISTEN) with a non-empty queue.",
                queues.get("%s_sockets" % queue), _labels(extra, queue=queue))
    for entry in queues.get("send_ports") or []:
        where = _labels(extra, port=entry.get("port"), side=entry.get("side"))
        out.add("netstate_tcp_send_queue_port_sockets", "gauge",
                "TCP sockets with a send queue, by service port (side local: a listener's port, side remote: the "
                "remote port of outgoing connections), top N by bytes.", entry.get("sockets"), where)
        out.add("netstate_tcp_send_queue_port_bytes", "gauge", "Bytes in those send queues.", entry.get("bytes"), where)
        out.add("netstate_tcp_send_queue_port_stalled_sockets", "gauge",
                "Those sockets whose peer advertises a zero window or does not acknowledge (probe or retransmission "
                "under way).", entry.get("stalled"), where)
    for peer in tcp.get("retransmitting") or []:
        where = _labels(extra, address=peer.get("address"))
        out.add("netstate_tcp_retransmitting_sockets", "gauge",
                "TCP sockets to a peer whose retransmit timer has fired (top N peers).", peer.get("sockets"), where)
        out.add("netstate_tcp_retransmitting_retransmits", "gauge",
                "Sum over those sockets of the retransmissions in a row of their oldest unacknowledged segment "
                "(a gauge: it falls back to 0 when the peer acknowledges).", peer.get("retransmits"), where)

    udp = facts.get("udp") or {}
    out.add("netstate_udp_sockets", "gauge", "UDP sockets.", udp.get("total"), extra)

    for listener in facts.get("listeners") or []:
        if listener.get("protocol") != "tcp":
            continue
        # unit "" where the process is unknown: the series keeps its name when the walk misses it once
        where = _labels(extra, address=listener.get("address"), port=listener.get("port"),
                        unit=listener.get("unit") or "")
        out.add("netstate_tcp_listen_queue", "gauge",
                "Accept queue of a TCP listener now (ss Recv-Q).", listener.get("queue"), where)
        out.add("netstate_tcp_listen_backlog", "gauge",
                "Maximum accept queue of a TCP listener (ss Send-Q).", listener.get("backlog"), where)
    rest = facts.get("listeners_rest")
    if rest is not None:
        for protocol in ("tcp", "udp"):
            out.add("netstate_listeners_rest", "gauge",
                    "Listeners not in the per-listener series (beyond --listeners-limit).", rest.get(protocol),
                    _labels(extra, protocol=protocol))
        out.add("netstate_tcp_listen_rest_queue", "gauge",
                "Accept queues of the TCP listeners beyond --listeners-limit, summed.", rest.get("queue"), extra)

    counters = facts.get("counters") or {}
    for line_field, value in sorted((counters.get("sockstat") or {}).items()):
        out.add(_metric_name("netstate_sockstat", line_field.lower()), "gauge",
                "/proc/net/sockstat{,6} %s." % line_field, value, extra)
    for group, source in (("Tcp", "snmp"), ("TcpExt", "netstat")):
        for field, value in sorted((counters.get(group) or {}).items()):
            name, kind = netstat_metric(group, field)
            out.add(name, kind, "%s %s from /proc/net/%s." % (group, field, source), value, extra)
    for key, value in sorted((counters.get("sysctl") or {}).items()):
        out.add("netstate_sysctl", "gauge", "TCP-related sysctl values (null ones left out).",
                value, _labels(extra, name=key))
    for group, fields in sorted((counters.get("rates") or {}).items()):
        for field, value in sorted((fields or {}).items()):
            out.add("netstate_netstat_rate", "gauge",
                    "Per-second rate of a cumulative counter over the sample interval.",
                    value, _labels(extra, group=group, field=field))

    for name, entry in sorted((facts.get("processes") or {}).items()):
        _add_states(out, "netstate_process_connections", "TCP sockets by process name and state.",
                    (entry.get("connections") or {}).get("states"), _labels(extra, process=name))
    for unit, states in sorted((facts.get("units") or {}).items()):
        _add_states(out, "netstate_unit_connections",
                    "TCP sockets (LISTEN included) by the systemd unit (or cgroup path) owning them and state.",
                    states, _labels(extra, unit=unit))


def render_prometheus(facts: dict) -> str:
    out = _Exposition()
    _add_document(out, facts, {})
    for other in facts.get("namespaces") or []:
        _add_document(out, other, {"namespace": other.get("namespace")})
    out.add("netstate_collector_duration_seconds", "gauge", "Time the enumeration took.",
            (facts.get("duration_ms") or 0) / 1000.0)
    out.add("netstate_collector_success", "gauge", "1 when the last enumeration succeeded.", 1)
    return out.text()


def render_failure(message: str) -> str:
    """What the textfile collector gets when gathering failed: no stale numbers, a visible 0."""
    out = _Exposition()
    out.add("netstate_collector_success", "gauge", "1 when the last enumeration succeeded.", 0)
    return "# netstate collector failed: %s\n%s" % (escape.log_line(message), out.text())


def render_zabbix_discovery(facts: dict, protocol: str = "tcp") -> str:
    """One row per (protocol, port) so every item prototype key is unique per host."""
    rows = {}
    for listener in facts.get("listeners") or []:
        if protocol != "all" and listener.get("protocol") != protocol:
            continue
        key = (listener.get("protocol"), int(listener.get("port")))
        row = rows.setdefault(key, {"addresses": [], "families": [], "process": None, "unit": None})
        if listener.get("address") not in row["addresses"]:
            row["addresses"].append(listener.get("address"))
        if listener.get("family") not in row["families"]:
            row["families"].append(listener.get("family"))
        if row["process"] is None and listener.get("process"):
            row["process"] = listener.get("process")
        if row["unit"] is None and listener.get("unit"):
            row["unit"] = listener.get("unit")
    data = []
    for (proto, port), row in sorted(rows.items()):
        data.append({
            "{#PROTOCOL}": escape.json_text(proto),
            "{#PORT}": str(port),
            "{#ADDRESS}": escape.json_text(row["addresses"][0] if row["addresses"] else ""),
            "{#ADDRESSES}": escape.json_text(",".join(escape.text(address) for address in row["addresses"])),
            "{#FAMILY}": escape.json_text(",".join(escape.text(family) for family in row["families"])),
            "{#PROCESS}": escape.json_text(row["process"] or ""),
            "{#UNIT}": escape.json_text(row["unit"] or ""),
        })
    return json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"


#: The largest discovery file read (the collector writes some hundred bytes a listener).
DISCOVERY_FILE_LIMIT = 16 * 1024 * 1024


def read_discovery_file(path: str, protocol: str, max_age: float, now=None):
    """The rows of a fresh discovery file for one protocol (as render_zabbix_discovery prints them),
    or None with the reason when it is missing, stale or not what the collector writes."""
    try:
        descriptor = files.open_regular(path)  # never a FIFO or a device: those are refused, not read
        try:
            age = (time.time() if now is None else now) - os.fstat(descriptor).st_mtime
            if age > max_age:
                return None, "%s is %d s old (more than %d s)" % (path, age, max_age)
            data = json.loads(files.read_descriptor(descriptor, DISCOVERY_FILE_LIMIT, path).decode("utf-8"))
        finally:
            os.close(descriptor)
    except files.FileRefused as error:
        return None, str(error)  # names the path already
    except (OSError, ValueError) as error:
        return None, "%s: %s" % (path, error)
    if not isinstance(data, list) or not all(
            isinstance(row, dict) and sorted(row) == sorted(LLD_KEYS) and all(isinstance(v, str) for v in row.values())
            for row in data):
        return None, "%s does not hold discovery rows" % path
    rows = [row for row in data if protocol == "all" or row["{#PROTOCOL}"] == protocol]
    return json.dumps(rows, sort_keys=True, separators=(",", ":")) + "\n", None


def render(facts: dict, output_format: str, protocol: str = "tcp") -> str:
    if output_format == "json":
        return render_json(facts)
    if output_format == "prometheus":
        return render_prometheus(facts)
    if output_format == "zabbix-discovery":
        return render_zabbix_discovery(facts, protocol)
    raise UsageError("unknown format %r" % output_format)


def spare_path(path: str) -> str:
    """A failure textfile kept ready next to ``--output`` (node_exporter reads only ``*.prom``)."""
    return os.path.join(os.path.dirname(os.path.abspath(path)), ".%s.failed" % os.path.basename(path))


SPARE_MESSAGE = "cannot write the textfile (directory full or not writable, see the collector's standard error)"


def write_output(path: str, text: str, output_format: str) -> None:
    """Replace ``path`` atomically; for Prometheus also keep a failure textfile ready beside it,
    so that a directory too full for one more byte can still be given ``netstate_collector_success 0``
    by a rename, which needs no space."""
    write_atomically(path, text)
    if output_format == "prometheus" and not os.path.exists(spare_path(path)):
        try:
            write_atomically(spare_path(path), render_failure(SPARE_MESSAGE))
        except OSError:
            pass


def write_failure(path: str, message: str) -> bool:
    """Put ``netstate_collector_success 0`` in ``path``: a new failure textfile if it fits, else
    the spare renamed over it. False when neither could be done (the old file then stays whole)."""
    try:
        write_atomically(path, render_failure(message))
        return True
    except OSError:
        pass
    try:
        os.replace(spare_path(path), path)
        return True
    except OSError:
        return False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings = []
    if args.format == "zabbix-discovery" and args.discovery_file:
        text, reason = read_discovery_file(args.discovery_file, args.protocol, args.discovery_max_age)
        if text is not None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return 0
        warnings.append("gathering instead of reading the discovery file: %s" % reason)
    gather_subset = ["listeners"] if args.format == "zabbix-discovery" else args.gather_subset or list(DEFAULT_SUBSET)
    try:
        facts = gather(gather_subset=gather_subset, top=args.top, sample_interval=args.sample_interval,
                       namespace=args.namespace, backend=args.backend, max_sockets=args.max_sockets,
                       walk_budget=args.walk_budget, walk_all_namespaces=args.walk_all_namespaces,
                       local_ports_limit=args.local_ports_limit, listeners_limit=args.listeners_limit,
                       warnings=warnings)
    except GatherError as error:
        sys.stderr.write("netstate collect: %s\n" % escape.log_line(error))
        if args.output and args.format == "prometheus":
            write_failure(args.output, str(error))
        return 1
    for warning in [] if args.quiet else warnings:
        sys.stderr.write("netstate collect: warning: %s\n" % escape.log_line(warning))
    text = render(facts, args.format, args.protocol)
    if args.output:
        try:
            write_output(args.output, text, args.format)
        except OSError as error:
            message = "cannot write --output %s: %s" % (args.output, error.strerror or error)
            if args.format == "prometheus" and not write_failure(args.output, message):
                message += "; nor a failure textfile: %s is left as it was" % args.output
            sys.stderr.write("netstate collect: %s\n" % escape.log_line(message))
            return 1
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
