# -*- coding: utf-8 -*-
# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collector's renderers and argument validation, on fact documents built by hand; every argument
given hostile values (hypothesis, docs/security.md).

The real engine on real sockets is exercised in tests/integration/test_collect_netns.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import argparse
import contextlib
import io
import json
import math
import os
import stat

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _argspec as contract
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _options as options
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs
from ansible_collections.netstate.tcp.plugins.module_utils._engine import collect
from ansible_collections.netstate.tcp.plugins.module_utils._engine._argspec import TCP_STATES as STATES

from tests.unit.plugins.module_utils._engine._helpers import HOSTILE_TEXT


def states(**counts):
    result = dict.fromkeys(STATES, 0)
    result.update(counts)
    return result


def listener(protocol, family, address, port, backlog=None, queue=None, process="nginx"):
    return {
        "protocol": protocol, "family": family, "address": address, "port": port,
        "backlog": backlog, "queue": queue,
        "saturation": None if not backlog else round(queue / backlog, 4),
        "pid": 42 if process else None, "process": process, "user": "www-data", "stime": "2026-01-01T00:00:00",
        "unit": process + ".service" if process else None, "connections": 0,
    }


@pytest.fixture
def facts():
    return {
        "backend": "netlink", "namespace": "host", "kernel": "6.1.0", "duration_ms": 12.5,
        "gather_subset": ["counters", "listeners", "peers", "ports", "states"],
        "tcp": {
            "total": 23,
            "states": states(ESTABLISHED=12, TIME_WAIT=5, LISTEN=4, CLOSE_WAIT=2),
            "families": {"ipv4": {"total": 20, "states": states(ESTABLISHED=12, TIME_WAIT=5, LISTEN=3)},
                         "ipv6": {"total": 3, "states": states(LISTEN=1, CLOSE_WAIT=2)}},
            "local_ports": {"8080": {"total": 9, "states": states(ESTABLISHED=6, CLOSE_WAIT=2, LISTEN=1)},
                            "22": {"total": 3, "states": states(ESTABLISHED=1, LISTEN=2)},
                            "443": {"total": 1, "states": states(LISTEN=1)}},
            "remote_ports": {"5432": {"total": 5, "states": states(ESTABLISHED=5)}},
            "peers": [{"address": "198.18.0.5", "total": 7, "states": states(ESTABLISHED=7)},
                      {"address": "2001:db8::1", "total": 2, "states": states(CLOSE_WAIT=2)}],
            "ephemeral": {"range": [32768, 60999], "size": 28232,
                          "busiest": {"address": "198.18.0.9", "port": 5432, "connections": 5,
                                      "time_wait": 0, "share": 0.0002}},
        },
        "udp": {"total": 1, "families": {"ipv4": 1, "ipv6": 0}},
        "listeners": [
            listener("tcp", "ipv4", "0.0.0.0", 22, 128, 0, "sshd"),
            listener("tcp", "ipv6", "::", 22, 128, 0, "sshd"),
            # two SO_REUSEPORT listeners on one address and port
            listener("tcp", "ipv4", "0.0.0.0", 8080, 511, 3),
            listener("tcp", "ipv4", "0.0.0.0", 8080, 511, 4),
            listener("tcp", "ipv4", "127.0.0.1", 443, 0, 0, None),
            listener("udp", "ipv4", "0.0.0.0", 53, process="dnsmasq"),
        ],
        "counters": {
            "sockstat": {"sockets_used": 40, "TCP_inuse": 18, "TCP_tw": 5, "UDP_inuse": 1},
            "TcpExt": {"ListenOverflows": 3, "ListenDrops": 3, "TCPTimeWaitOverflow": 0, "TW": 99},
            "Tcp": {"ActiveOpens": 10, "PassiveOpens": 20, "CurrEstab": 12, "MaxConn": -1},
            "sysctl": {"somaxconn": 4096, "tcp_max_orphans": None},
        },
    }


def parse(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family):
    return {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}


# ------------------------------------------------------------------------------- json

def test_json_is_the_fact_document(facts):
    text = collect.render(facts, "json")
    assert text.endswith("\n") and text.count("\n") == 1
    assert json.loads(text) == facts


# ------------------------------------------------------------------------------- prometheus

def test_prometheus_parses_and_has_help_and_type_once(facts):
    text = collect.render(facts, "prometheus")
    families = parse(text)
    for name in ("netstate_tcp_connections", "netstate_tcp_port_connections", "netstate_tcp_listen_queue",
                 "netstate_tcp_listen_backlog", "netstate_tcp_peer_connections",
                 "netstate_netstat_tcpext_listen_overflows", "netstate_sockstat_tcp_tw"):
        assert name in families, name
        exposed = name + "_total" if families[name].type == "counter" else name
        assert text.count("# HELP %s " % exposed) == 1
        assert text.count("# TYPE %s " % exposed) == 1
    assert families["netstate_tcp_connections"].type == "gauge"
    # kernel counters: snake_case, type counter, _total on the series (the parser strips it off the family)
    assert families["netstate_netstat_tcpext_listen_overflows"].type == "counter"
    assert "\nnetstate_netstat_tcpext_listen_overflows_total " in text


@pytest.mark.parametrize("field, series", [
    ("TCPTimeWaitOverflow", "tcp_time_wait_overflow"), ("ListenOverflows", "listen_overflows"), ("TW", "tw"),
    ("TWRecycled", "tw_recycled"), ("DelayedACKs", "delayed_acks"), ("TCPSpuriousRTOs", "tcp_spurious_rtos"),
    ("PAWSActive", "paws_active"), ("InCsumErrors", "in_csum_errors"), ("TCP_orphan", "tcp_orphan")])
def test_snake_case_of_kernel_field_names(field, series):
    assert collect.snake_case(field) == series


def test_prometheus_states_are_zero_filled_and_exact(facts):
    families = parse(collect.render(facts, "prometheus"))
    got = samples(families["netstate_tcp_connections"])
    assert got == {(("state", state),): float(facts["tcp"]["states"][state]) for state in STATES}
    per_port = samples(families["netstate_tcp_port_connections"])
    assert len(per_port) == 3 * len(STATES)
    assert per_port[(("port", "8080"), ("state", "CLOSE_WAIT"))] == 2
    assert per_port[(("port", "22"), ("state", "LISTEN"))] == 2
    family = samples(families["netstate_tcp_family_connections"])
    assert family[(("family", "ipv6"), ("state", "CLOSE_WAIT"))] == 2


def test_prometheus_listeners_reuseport_adds_up_and_udp_left_out(facts):
    families = parse(collect.render(facts, "prometheus"))
    queue = samples(families["netstate_tcp_listen_queue"])
    backlog = samples(families["netstate_tcp_listen_backlog"])
    assert queue[(("address", "0.0.0.0"), ("port", "8080"), ("unit", "nginx.service"))] == 7
    assert backlog[(("address", "0.0.0.0"), ("port", "8080"), ("unit", "nginx.service"))] == 1022
    assert backlog[(("address", "::"), ("port", "22"), ("unit", "sshd.service"))] == 128
    assert backlog[(("address", "127.0.0.1"), ("port", "443"), ("unit", ""))] == 0  # no process: unit ""
    assert not any(dict(key)["port"] == "53" for key in queue)
    assert len(queue) == 4


def test_prometheus_units_zero_filled_per_unit_and_state(facts):
    assert "netstate_unit_connections" not in parse(collect.render(facts, "prometheus"))  # no subset units
    facts["units"] = {"nginx.service": states(ESTABLISHED=6, LISTEN=2), "/": states(CLOSE_WAIT=1)}
    got = samples(parse(collect.render(facts, "prometheus"))["netstate_unit_connections"])
    assert len(got) == 2 * len(STATES)
    assert got[(("state", "ESTABLISHED"), ("unit", "nginx.service"))] == 6
    assert got[(("state", "LISTEN"), ("unit", "nginx.service"))] == 2
    assert got[(("state", "CLOSE_WAIT"), ("unit", "/"))] == 1
    assert got[(("state", "TIME_WAIT"), ("unit", "/"))] == 0


def test_prometheus_listeners_beyond_the_limit(facts):
    families = parse(collect.render(facts, "prometheus"))
    assert "netstate_listeners_rest" not in families  # a document without listeners_rest: no rest series
    facts["listeners_rest"] = {"tcp": 9800, "udp": 3, "queue": 12, "max_saturation": 0.0234}
    families = parse(collect.render(facts, "prometheus"))
    assert families["netstate_listeners_rest"].type == "gauge"
    assert samples(families["netstate_listeners_rest"]) == {(("protocol", "tcp"),): 9800, (("protocol", "udp"),): 3}
    assert samples(families["netstate_tcp_listen_rest_queue"]) == {(): 12}
    assert len(samples(families["netstate_tcp_listen_queue"])) == 4  # the listed listeners only


def test_prometheus_peers_counters_sysctl(facts):
    families = parse(collect.render(facts, "prometheus"))
    assert samples(families["netstate_tcp_peer_connections"]) == {
        (("address", "198.18.0.5"),): 7, (("address", "2001:db8::1"),): 2}
    assert samples(families["netstate_netstat_tcpext_tw"]) == {(): 99}
    assert families["netstate_netstat_tcp_max_conn"].type == "gauge"  # a setting, not a counter
    assert samples(families["netstate_netstat_tcp_max_conn"]) == {(): -1}
    # a null sysctl (global key not visible in a namespace) is left out, not exported as 0
    assert samples(families["netstate_sysctl"]) == {(("name", "somaxconn"),): 4096}
    assert samples(families["netstate_collector_success"]) == {(): 1}
    assert samples(families["netstate_collector_duration_seconds"]) == {(): 0.0125}
    busiest = samples(families["netstate_tcp_ephemeral_busiest_connections"])
    assert busiest == {(("address", "198.18.0.9"), ("port", "5432")): 5}


@pytest.mark.parametrize("hostile", ['a"b', "back\\slash", "new\nline", 'x\\"}\n{y="1', "ünïcode"])
def test_prometheus_label_escaping_round_trips(facts, hostile):
    facts["tcp"]["peers"] = [{"address": hostile, "total": 3, "states": states(ESTABLISHED=3)}]
    text = collect.render(facts, "prometheus")
    families = parse(text)
    assert samples(families["netstate_tcp_peer_connections"]) == {(("address", hostile),): 3}
    # every sample stays on one line
    peer_lines = [line for line in text.splitlines() if line.startswith("netstate_tcp_peer_connections{")]
    assert len(peer_lines) == 1


def test_prometheus_namespaces_are_labelled(facts):
    other = json.loads(json.dumps(facts))
    other["namespace"] = "web"
    other["tcp"]["states"]["ESTABLISHED"] = 77
    facts["namespaces"] = [other]
    got = samples(parse(collect.render(facts, "prometheus"))["netstate_tcp_connections"])
    assert got[(("state", "ESTABLISHED"),)] == 12
    assert got[(("namespace", "web"), ("state", "ESTABLISHED"))] == 77


def test_prometheus_timers_queues_retransmitting(facts):
    facts["tcp"]["timers"] = {"none": 10, "retransmit": 3, "keepalive": 2, "time_wait": 5, "zero_window_probe": 1}
    facts["tcp"]["queues"] = {
        "recv_bytes": 5120, "send_bytes": 9000, "recv_sockets": 2, "send_sockets": 4,
        "send_ports": [{"port": 7001, "side": "remote", "sockets": 3, "bytes": 8900, "stalled": 3},
                       {"port": 8080, "side": "local", "sockets": 1, "bytes": 100, "stalled": 0}]}
    facts["tcp"]["retransmitting"] = [{"address": "198.18.0.202", "sockets": 3, "retransmits": 11}]
    families = parse(collect.render_prometheus(facts))
    samples = {name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
               for name, family in families.items()}
    assert samples["netstate_tcp_timer_sockets"][(("timer", "zero_window_probe"),)] == 1
    assert sum(samples["netstate_tcp_timer_sockets"].values()) == 21
    assert samples["netstate_tcp_queue_bytes"] == {(("queue", "recv"),): 5120, (("queue", "send"),): 9000}
    assert samples["netstate_tcp_queue_sockets"] == {(("queue", "recv"),): 2, (("queue", "send"),): 4}
    assert samples["netstate_tcp_send_queue_port_stalled_sockets"] == {
        (("port", "7001"), ("side", "remote")): 3, (("port", "8080"), ("side", "local")): 0}
    assert samples["netstate_tcp_retransmitting_retransmits"] == {(("address", "198.18.0.202"),): 11}
    # gauges, all of them: a retransmission count falls back when the peer acknowledges
    assert {families[name].type for name in samples if "timer" in name or "queue" in name or "retrans" in name} \
        == {"gauge"}


def test_failure_exposition_has_no_stale_numbers():
    families = parse(collect.render_failure("cannot read /proc/net/netstat:\nboom"))
    assert set(families) == {"netstate_collector_success"}
    assert samples(families["netstate_collector_success"]) == {(): 0}


# ------------------------------------------------------------------------------- zabbix

def test_zabbix_discovery_one_row_per_port(facts):
    rows = json.loads(collect.render(facts, "zabbix-discovery"))
    assert [row["{#PORT}"] for row in rows] == ["22", "443", "8080"]
    ssh = rows[0]
    assert ssh == {"{#PROTOCOL}": "tcp", "{#PORT}": "22", "{#ADDRESS}": "0.0.0.0", "{#ADDRESSES}": "0.0.0.0,::",
                   "{#FAMILY}": "ipv4,ipv6", "{#PROCESS}": "sshd", "{#UNIT}": "sshd.service"}
    assert rows[1]["{#PROCESS}"] == "" and rows[1]["{#UNIT}"] == ""


@pytest.mark.parametrize("protocol, ports", [("udp", [("udp", "53")]),
                                             ("all", [("tcp", "22"), ("tcp", "443"), ("tcp", "8080"),
                                                      ("udp", "53")])])
def test_zabbix_discovery_protocol_filter(facts, protocol, ports):
    rows = json.loads(collect.render(facts, "zabbix-discovery", protocol))
    assert [(row["{#PROTOCOL}"], row["{#PORT}"]) for row in rows] == ports


def test_prometheus_gauges_are_the_tcp_fields_rates_leave_out():
    fields = ("RtoAlgorithm", "RtoMin", "RtoMax", "MaxConn", "ActiveOpens", "PassiveOpens", "AttemptFails",
              "EstabResets", "CurrEstab", "InSegs", "OutSegs", "RetransSegs", "InErrs", "OutRsts", "InCsumErrors")
    rated = procfs.rates({"Tcp": dict.fromkeys(fields, 1)}, {"Tcp": dict.fromkeys(fields, 3)}, 1.0)["Tcp"]
    gauges = {field for field in fields if collect.netstat_metric("Tcp", field)[1] == "gauge"}
    assert gauges == {"RtoAlgorithm", "RtoMin", "RtoMax", "MaxConn", "CurrEstab"}
    assert set(rated) == set(fields) - gauges


def test_zabbix_discovery_empty():
    assert json.loads(collect.render({"tcp": {}, "listeners": []}, "zabbix-discovery")) == []


# ------------------------------------------------------------------------------- arguments

def test_defaults():
    args = collect.build_parser().parse_args([])
    assert (args.format, args.gather_subset, args.top, args.sample_interval, args.namespace, args.backend,
            args.protocol, args.output, args.quiet) == ("json", None, 10, 0.0, None, "auto", "tcp", None, False)


def test_valid_arguments(tmp_path):
    args = collect.build_parser().parse_args([
        "--format", "prometheus", "--gather-subset", "all,!sockets", "--top", "3", "--sample-interval", "0.5",
        "--namespace", "pid:1", "--backend", "proc", "--max-sockets", "0", "--protocol", "",
        "--output", str(tmp_path / "netstate.prom"), "--quiet"])
    assert args.gather_subset == ["all", "!sockets"]
    assert args.protocol == "tcp"  # what Zabbix passes for a flexible key used without parameters
    assert (args.top, args.sample_interval, args.max_sockets) == (3, 0.5, 0)


def test_deprecated_subset_flag_is_a_hidden_alias_of_gather_subset(capsys):
    parser = collect.build_parser()
    assert parser.parse_args(["--subset", "min,timers"]).gather_subset == ["min", "timers"]
    assert parser.parse_args(["--gather-subset", "all", "--subset", "min"]).gather_subset == ["min"]  # last wins
    assert not hasattr(parser.parse_args([]), "subset")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    shown = capsys.readouterr().out
    assert "--gather-subset" in shown
    assert "--subset" not in shown


@pytest.mark.parametrize("argv, named", [
    (["--format", "xml"], "'xml'"),
    (["--format", "json;id"], "'json;id'"),
    (["--top", "0"], "argument --top: top: 0 is out of range (1..100000)"),
    (["--top", "1; rm -rf /"], "argument --top: top: '1; rm -rf /' is not an integer"),
    (["--top", "100001"], "argument --top: top: 100001 is out of range (1..100000)"),
    (["--sample-interval", "-1"], "argument --sample-interval: sample_interval: -1.0 must be a number of seconds"),
    (["--sample-interval", "nan"], "argument --sample-interval: sample_interval: nan must be a number of seconds"),
    (["--sample-interval", "61"], "argument --sample-interval: sample_interval: 61.0 must be a number of seconds"),
    (["--sample-interval", "soon"], "argument --sample-interval: sample_interval: 'soon' must be a number"),
    (["--gather-subset", "states,$(id)"], "argument --gather-subset: gather_subset: unknown subset '$(id)'"),
    (["--gather-subset", "!bogus"], "argument --gather-subset: gather_subset: unknown subset '!bogus'"),
    (["--gather-subset", "states,"], "argument --gather-subset: gather_subset: unknown subset ''"),
    # the deprecated alias, named as typed
    (["--subset", "!bogus"], "argument --subset: gather_subset: unknown subset '!bogus'"),
    (["--namespace", "web;id"], "'web;id'"),
    (["--namespace", "/run/netns/../../etc/passwd"], "/run/netns/../../etc/passwd"),
    (["--namespace", "pid:abc"], "'pid:abc'"),
    (["--backend", "shell"], "'shell'"),
    (["--protocol", "tcp --output /tmp/x"], "'tcp --output /tmp/x'"),
    (["--max-sockets", "-5"], "argument --max-sockets: max_sockets: -5 is out of range (0 or more)"),
    (["--output", "/nonexistent-dir/x.prom"], "/nonexistent-dir"),
    (["--output", ""], "''"),
    (["--bogus"], "--bogus"),
    (["--form", "json"], "--form"),  # no abbreviations
    (["positional"], "positional"),
])
def test_bad_arguments_are_refused_naming_the_value(capsys, argv, named):
    with pytest.raises(SystemExit) as raised:
        collect.build_parser().parse_args(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert named in err
    assert "usage:" not in err  # no usage text that could end up in a metrics file


# ------------------------------------------------------------------------------- hostile arguments

# The subsets and the names of groups of them (all, default, min).
SUBSET_NAMES = set(contract.SUBSETS) | set(contract.SUBSET_GROUPS)


# Every collector argument that takes a value, with what a value that parses must satisfy.
ARGUMENTS = {
    "--format": lambda v: v in collect.FORMATS,
    "--gather-subset": lambda v: all(name.lstrip("!") in SUBSET_NAMES for name in v),
    "--subset": lambda v: all(name.lstrip("!") in SUBSET_NAMES for name in v),  # deprecated alias
    "--top": lambda v: 1 <= v <= 100000,
    "--sample-interval": lambda v: 0 <= v <= 60 and not math.isnan(v),
    "--namespace": lambda v: v == "" or options.NAMESPACE_RE.fullmatch(v) is not None and "\n" not in v,
    "--backend": lambda v: v in contract.BACKENDS,
    "--max-sockets": lambda v: v >= 0,
    "--local-ports-limit": lambda v: v >= 1,
    "--listeners-limit": lambda v: v >= 1,
    "--walk-budget": lambda v: v >= 0,
    "--protocol": lambda v: v in collect.PROTOCOLS,
    "--discovery-file": lambda v: v.startswith("/") and not set(v) & {"\0", "\n", "\r"},
    "--discovery-max-age": lambda v: 1 <= v <= 86400,
    "--output": lambda v: "\0" not in v and "\n" not in v,
}


# arguments whose parsed value is not under their own name
DEST = {"--subset": "gather_subset"}


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(ARGUMENTS)), st.one_of(HOSTILE_TEXT, st.integers().map(str),
                                                     st.floats().map(repr)))
def test_every_collector_argument_is_refused_with_exit_2_or_inside_its_grammar(argument, value):
    assume(not value.startswith("-") or value.lstrip("-").replace(".", "").isdigit())
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = collect.build_parser().parse_args([argument + "=" + value])
    except SystemExit as exit_status:
        assert exit_status.code == 2
        text = stderr.getvalue()
        assert text.count("\n") == 1 and len(text) < 1200, text[:300]
        assert "argument %s" % argument in text, text
        return
    parsed_value = getattr(parsed, DEST.get(argument, argument[2:].replace("-", "_")))
    assert ARGUMENTS[argument](parsed_value), (argument, value, parsed_value)


@pytest.mark.parametrize("value", ["/tmp/../tmp/x/../../etc/passwd\n", "/tmp/x\0", "/run/netns/../x", "a b"])
def test_collector_namespace_refusals_name_the_argument(value):
    stderr = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stderr(stderr):
        collect.build_parser().parse_args(["--namespace", value])
    assert "argument --namespace: namespace: " in stderr.getvalue()


def test_collector_and_modules_share_one_namespace_grammar():
    """The collector's --namespace type is the engine's check: one grammar, not two."""
    for value in ("blue", "pid:12", "/run/netns/blue", "all", "host"):
        assert collect._namespace(value) == options.check_namespace(value) == value
    for value in ("../x", "pid:x", "x/y", "/a/../b", "-x"):
        with pytest.raises(argparse.ArgumentTypeError):
            collect._namespace(value)
        with pytest.raises(options.GatherError):
            options.check_namespace(value)


# ------------------------------------------------------------------------------- atomic output

def test_write_atomically(tmp_path):
    target = tmp_path / "netstate.prom"
    target.write_text("old\n")
    collect.write_atomically(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert os.listdir(tmp_path) == ["netstate.prom"]


def test_write_atomically_failure_leaves_target_and_no_temporary(tmp_path):
    target = tmp_path / "netstate.prom"
    target.mkdir()  # os.replace of a file over a directory fails
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        collect.write_atomically(str(target), "new\n")
    assert sorted(os.listdir(tmp_path)) == ["netstate.prom"]
    assert (target / "keep").read_text() == "x"


# ------------------------------------------------------------------------------- discovery file

def _rows():
    row = {"{#PROTOCOL}": "tcp", "{#PORT}": "22", "{#ADDRESS}": "0.0.0.0", "{#ADDRESSES}": "0.0.0.0",
           "{#FAMILY}": "ipv4", "{#PROCESS}": "sshd", "{#UNIT}": "ssh.service"}
    return [row, dict(row, **{"{#PROTOCOL}": "udp", "{#PORT}": "53", "{#PROCESS}": "dnsmasq", "{#UNIT}": "/"})]


def test_discovery_file_fresh_rows_filtered_by_protocol(tmp_path):
    path = tmp_path / "discovery.json"
    path.write_text(json.dumps(_rows()))
    text, reason = collect.read_discovery_file(str(path), "tcp", 900)
    assert reason is None
    assert json.loads(text) == [_rows()[0]]
    text, _reason = collect.read_discovery_file(str(path), "all", 900)
    assert len(json.loads(text)) == 2


@pytest.mark.parametrize("content, problem", [
    ("[{\"{#PORT}\": \"22\"}]", "does not hold discovery rows"),
    ("{not json", "discovery.json"),
    ("{\"data\": []}", "does not hold discovery rows")])
def test_discovery_file_malformed_is_refused(tmp_path, content, problem):
    path = tmp_path / "discovery.json"
    path.write_text(content)
    text, reason = collect.read_discovery_file(str(path), "tcp", 900)
    assert text is None and problem in reason


def test_discovery_file_stale_or_missing_is_refused(tmp_path):
    path = tmp_path / "discovery.json"
    path.write_text(json.dumps(_rows()))
    old = path.stat().st_mtime - 1000
    os.utime(str(path), (old, old))
    text, reason = collect.read_discovery_file(str(path), "tcp", 900)
    assert text is None and "old" in reason
    text, reason = collect.read_discovery_file(str(tmp_path / "missing.json"), "tcp", 900)
    assert text is None and "missing.json" in reason


def test_discovery_file_argument_must_be_absolute():
    with pytest.raises(SystemExit):
        collect.build_parser().parse_args(["--format", "zabbix-discovery", "--discovery-file", "relative.json"])
