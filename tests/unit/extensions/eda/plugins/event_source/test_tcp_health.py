# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The event source netstate.tcp.tcp_health: its arguments are checked before the first poll, naming the
argument and the value, and a poll gives an event only when a rule's verdict for a subject changes.

The verdicts are the rule engine's own (built-in rules, real evaluation) over facts documents written here
as docs/facts-contract.md describes them; tests/integration/test_eda_tcp_health.py runs the source in
ansible-rulebook over real sockets."""

from __future__ import annotations

import asyncio
import copy
import socket

import pytest

from ansible_collections.netstate.tcp.extensions.eda.plugins.event_source import tcp_health as source
from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

AT = "2026-12-06T02:00:00Z"


def listener(port, pid, process, address="127.0.0.1", queue=0, backlog=128, **extra):
    return dict(protocol="tcp", family="ipv4", address=address, port=port, backlog=backlog, queue=queue,
                saturation=queue / backlog, pid=pid, process=process, user="root", stime=None, connections=0, **extra)


def facts(close_wait=None, listeners=(), send_ports=(), retransmitting=()):
    """A facts document with these ports (port -> CLOSE_WAIT sockets), listeners and queues."""
    close_wait = close_wait or {}
    local_ports = {str(port): {"total": count, "states": {"CLOSE_WAIT": count}} for port, count in close_wait.items()}
    total = sum(close_wait.values())
    return {"tcp": {"total": total, "states": {"SYN_RECV": 0, "CLOSE_WAIT": total},
                    "local_ports": local_ports, "ephemeral": {"size": 28232, "busiest": None},
                    "queues": {"send_ports": list(send_ports)}, "retransmitting": list(retransmitting)},
            "listeners": list(listeners)}


def evaluated(rules, document):
    data = health.plain(document)
    return data, health.evaluate(rules, data, per_element=True)


def poll(verdicts, rules, document, at=AT):
    data, results = evaluated(rules, document)
    return [event["netstate"] for event in verdicts.update(results, data, at)]


@pytest.fixture(scope="module")
def rules():
    return health.build_rules(None, [], {"close_wait_per_port": 3})


# ------------------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("args, message", [
    ({"intervall": 5}, "unknown argument(s) 'intervall' (allowed: host, interval, namespace, rules, thresholds, "
                       "gather_args)"),
    ({"host": "web1\nrm -rf /"}, "host: 'web1\\nrm -rf /' is not a host name"),
    ({"host": "-web1"}, "host: '-web1' is not a host name"),
    ({"host": ["web1"]}, "host: ['web1'] is not a host name"),
    ({"host": "w" * 254}, "host: 'wwww"),
    ({"interval": 0}, "interval: 0 must be a number of seconds from 1 to 86400"),
    ({"interval": 0.5}, "interval: 0.5 must be a number of seconds from 1 to 86400"),
    ({"interval": 86401}, "interval: 86401 must be a number"),
    ({"interval": True}, "interval: True must be a number"),
    ({"interval": "5"}, "interval: '5' must be a number"),
    ({"interval": float("nan")}, "interval: nan must be a number"),
    ({"namespace": "all"}, "namespace: 'all' is not watched"),
    ({"namespace": "../etc"}, "namespace: '../etc' is not a namespace name"),
    ({"namespace": "blue\n"}, "namespace: 'blue\\n' is not a namespace name"),
    ({"namespace": "netstate-no-such-namespace"}, "namespace: 'netstate-no-such-namespace' not found"),
    ({"rules": {"name": "x"}}, "rules: must be a list of rules, got dict"),
    ({"rules": [{"name": "x", "query": "tcp.total"}]}, "rules[0]: rule 'x': "),
    ({"rules": [{"name": "x", "query": "tcp.[", "max": 1}]}, "rules[0]: rule 'x': field 'query'"),
    ({"rules": [{"name": "close_wait_per_port", "query": "tcp.total", "max": 1}]},
     "rules[0]: rule 'close_wait_per_port': field 'name': duplicate name, already used by built-in rules"),
    ({"thresholds": {"close_wait_per_prot": 5}}, "thresholds: rule 'close_wait_per_prot': no such rule"),
    ({"thresholds": {"close_wait_per_port": "many"}}, "thresholds: rule 'close_wait_per_port': field 'max'"),
    ({"thresholds": [5]}, "thresholds: must be a mapping of rule name to threshold"),
    ({"gather_args": "top=5"}, "gather_args: must be a mapping of connection_facts options, got 'top=5'"),
    ({"gather_args": {"namespace": "blue"}}, "gather_args: unknown option(s) 'namespace' (the source's own "
                                             "argument namespace says where)"),
    ({"gather_args": {"topp": 5}}, "gather_args: unknown option(s) 'topp'; allowed: backend, gather_subset"),
    ({"gather_args": {"top": -1}}, "gather_args: top: -1 is out of range"),
    ({"gather_args": {"gather_subset": ["state"]}}, "gather_args: gather_subset: unknown subset 'state'"),
    ({"gather_args": {"backend": "ebpf"}}, "gather_args: backend: 'ebpf' is not one of auto, netlink, proc"),
    ({"gather_args": {"sample_interval": 61}}, "gather_args: sample_interval: 61 must be a number of seconds"),
])
def test_a_bad_argument_is_named_with_its_value(args, message):
    with pytest.raises(source.SourceArgumentError) as raised:
        source.check_args(args)
    text = str(raised.value)
    assert text.startswith("netstate.tcp.tcp_health: " + message), text
    assert "\n" not in text and len(text) < 1500, text


def test_a_bad_argument_stops_the_source_before_the_first_poll(monkeypatch):
    gathered = []
    monkeypatch.setattr(engine, "gather", lambda **options: gathered.append(options))
    queue = asyncio.Queue()
    with pytest.raises(source.SourceArgumentError, match=r"^netstate\.tcp\.tcp_health: interval: -5 must be"):
        asyncio.run(asyncio.wait_for(source.main(queue, {"interval": -5}), 5))
    assert gathered == [] and queue.empty()


def test_defaults_and_what_the_rulebook_adds():
    settings = source.check_args({"eda_feedback_queue": object()})
    assert settings.host == socket.gethostname()
    assert settings.interval == source.DEFAULT_INTERVAL and settings.namespace is None
    assert [rule.name for rule in settings.rules] == [rule.name for rule in health.load_builtin_rules()]
    # the built-in rules read counters.rates: each poll samples them as health_check does
    assert settings.gather_args == {"sample_interval": source.SAMPLE_INTERVAL}
    settings = source.check_args({"host": "db-1.example.com", "interval": 2, "namespace": "host",
                                  "rules": [{"name": "many", "query": "tcp.total", "max": 10}],
                                  "thresholds": {"listen_overflows_rate": {"enabled": False},
                                                 "listen_drops_rate": {"enabled": False},
                                                 "time_wait_overflow_rate": {"enabled": False}},
                                  "gather_args": {"top": 5}})
    assert (settings.host, settings.interval, settings.namespace) == ("db-1.example.com", 2.0, "host")
    assert settings.rules[-1].name == "many" and "listen_drops_rate" not in [rule.name for rule in settings.rules]
    assert settings.gather_args == {"top": 5}  # no rule reads rates: no sampling


# ------------------------------------------------------------------------------------- verdicts

def test_an_event_only_when_a_verdict_changes(rules):
    verdicts = source.Verdicts("web1")
    app = listener(8080, 4321, "app", unit="app.service")
    assert poll(verdicts, rules, facts({8080: 2}, [app])) == []
    fired = poll(verdicts, rules, facts({8080: 5}, [app]), at="2026-12-06T02:00:10Z")
    assert fired == [{"host": "web1", "rule": "close_wait_per_port", "severity": "critical", "status": "firing",
                      "subject": "port 8080", "value": 5, "limit": 3, "port": 8080, "address": "127.0.0.1",
                      "process": "app", "pid": 4321, "unit": "app.service", "at": "2026-12-06T02:00:10Z"}]
    # still violated, a different value: the verdict did not change
    assert poll(verdicts, rules, facts({8080: 9}, [app])) == []
    resolved = poll(verdicts, rules, facts({8080: 1}, [app]), at="2026-12-06T02:00:30Z")
    assert resolved == [dict(fired[0], status="resolved", value=1, at="2026-12-06T02:00:30Z")]
    assert poll(verdicts, rules, facts({8080: 1}, [app])) == []
    # violated again: a new firing event
    assert [event["status"] for event in poll(verdicts, rules, facts({8080: 4}, [app]))] == ["firing"]


def test_each_subject_has_its_own_verdict(rules):
    verdicts = source.Verdicts("web1")
    web, api = listener(80, 10, "nginx"), listener(9000, 20, "api")
    fired = poll(verdicts, rules, facts({80: 4, 9000: 7}, [web, api]))
    assert [(event["subject"], event["process"], event["status"]) for event in fired] == [
        ("port 80", "nginx", "firing"), ("port 9000", "api", "firing")]
    changed = poll(verdicts, rules, facts({80: 4, 9000: 0}, [web, api]))
    assert [(event["subject"], event["status"], event["value"]) for event in changed] == [("port 9000", "resolved", 0)]


def test_a_subject_that_is_gone_is_resolved_with_no_value(rules):
    """The listener restarted away (its port no longer listed): the violation ended, its value is unknown."""
    verdicts = source.Verdicts("web1")
    assert len(poll(verdicts, rules, facts({8080: 5}, [listener(8080, 1, "app")]))) == 1
    [resolved] = poll(verdicts, rules, facts({}, []))
    assert (resolved["status"], resolved["subject"], resolved["value"], resolved["process"]) == (
        "resolved", "port 8080", None, "app")


def test_an_error_keeps_the_violations_of_its_rule(rules):
    """A poll where the rule errs (its query meets data it cannot use) says nothing of whether they ended."""
    verdicts = source.Verdicts("web1")
    poll(verdicts, rules, facts({8080: 5}, [listener(8080, 1, "app")]))
    broken = facts({8080: 5}, [listener(8080, 1, "app")])
    broken["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = "five"
    assert poll(verdicts, rules, broken) == []
    assert [event["status"] for event in poll(verdicts, rules, facts({}, []))] == ["resolved"]


def test_the_first_poll_fires_what_is_violated_already(rules):
    verdicts = source.Verdicts("db1")
    document = facts({5432: 50}, [listener(5432, 7, "postgres")])
    document["tcp"]["states"]["SYN_RECV"] = 300
    fired = poll(verdicts, rules, document)
    assert [(event["rule"], event["subject"], event["severity"], event["value"], event["limit"], event["port"])
            for event in fired] == [("close_wait_per_port", "port 5432", "critical", 50, 3, 5432),
                                    ("syn_recv_total", None, "warning", 300, 256, None)]


# ------------------------------------------------------------------------------------- where

def test_a_listener_rule_names_the_listener():
    rules = health.build_rules(None, [], {"accept_queue_saturation": {"enabled": False}})
    full = listener(8443, 99, "{{ 7*7 }}", address="::", queue=129, unit="tls.service")
    [fired] = poll(source.Verdicts("web1"), rules, facts({}, [listener(80, 1, "nginx"), full]))
    assert fired["rule"] == "accept_queue_full" and fired["subject"] == ":::8443 99/{{ 7*7 }}"
    # a name the host chose is data, as the facts spell it
    assert {key: fired[key] for key in source.WHERE} == {
        "port": 8443, "address": "::", "process": "{{ 7*7 }}", "pid": 99, "unit": "tls.service"}


def test_the_unit_is_null_where_the_listener_has_none(rules):
    [fired] = poll(source.Verdicts("web1"), rules, facts({8080: 5}, [listener(8080, 1, "app")]))
    assert fired["unit"] is None and fired["process"] == "app"


def test_a_port_held_by_two_processes_names_no_process(rules):
    """Two processes listen on the port (two addresses): which of them leaks is not known."""
    holders = [listener(8080, 1, "old", address="127.0.0.1"), listener(8080, 2, "new", address="127.0.0.2")]
    [fired] = poll(source.Verdicts("web1"), rules, facts({8080: 5}, holders))
    assert {key: fired[key] for key in source.WHERE} == dict.fromkeys(source.WHERE) | {"port": 8080}
    # one process with two listeners (IPv4 and IPv6) is named, without an address
    holders = [listener(8080, 3, "app", address="0.0.0.0"), listener(8080, 3, "app", address="::")]
    [fired] = poll(source.Verdicts("web1"), rules, facts({8080: 5}, holders))
    assert (fired["port"], fired["address"], fired["process"], fired["pid"]) == (8080, None, "app", 3)


def test_queues_and_peers_name_their_port_or_address():
    rules = health.build_rules(None, [], {"send_queue_stalled_port": 1, "retransmitting_peer": 2})
    document = facts({}, [listener(7001, 5, "cache")],
                     send_ports=[{"port": 7001, "side": "local", "sockets": 3, "bytes": 10, "stalled": 3},
                                 {"port": 5432, "side": "remote", "sockets": 3, "bytes": 10, "stalled": 3}],
                     retransmitting=[{"address": "198.18.0.202", "sockets": 5, "retransmits": 17}])
    fired = poll(source.Verdicts("web1"), rules, document)
    assert [(event["subject"], event["port"], event["address"], event["process"]) for event in fired] == [
        ("198.18.0.202", None, "198.18.0.202", None),
        ("local port 7001", 7001, "127.0.0.1", "cache"),
        ("remote port 5432", 5432, None, None)]


def test_a_rule_without_elements_names_nowhere(rules):
    assert source.locate({"element": None}, facts()) == dict.fromkeys(source.WHERE)


def test_events_leave_the_facts_unchanged(rules):
    document = facts({8080: 5}, [listener(8080, 1, "app")])
    before = copy.deepcopy(document)
    poll(source.Verdicts("web1"), rules, document)
    assert document == before
