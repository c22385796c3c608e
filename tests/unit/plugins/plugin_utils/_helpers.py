# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the controller side's tests share (not a test file): the fact documents of a healthy host, the unit
fleet made from them by the real rule engine, and the check that an HTML page is self-contained.

Fixtures are taken into a test module by assignment (``facts = _helpers.facts``).
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import json
import re

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine._argspec import TCP_STATES as STATES
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_report as report
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as health

from tests.support.browser import parse_dom


def states(**counts):
    result = dict.fromkeys(STATES, 0)
    result.update(counts)
    return result


def listener(port, queue, backlog, process="nginx", pid=1234):
    return {"protocol": "tcp", "family": "ipv4", "address": "0.0.0.0", "port": port, "backlog": backlog,
            "queue": queue, "saturation": round(queue / backlog, 4), "pid": pid, "process": process,
            "user": "www-data", "stime": "2026-11-26T03:58:31", "connections": 3}


@pytest.fixture
def facts():
    """A healthy host (the same shape as in test_health_rules.py): web server on 8080, sshd, sampled."""
    return {
        "backend": "netlink", "namespace": "host", "kernel": "6.1.0",
        "tcp": {
            "total": 12, "states": states(ESTABLISHED=8, TIME_WAIT=2, LISTEN=2, SYN_RECV=1),
            "local_ports": {"22": {"total": 2, "states": states(ESTABLISHED=1, LISTEN=1)},
                            "8080": {"total": 8, "states": states(ESTABLISHED=6, LISTEN=1, CLOSE_WAIT=1)}},
            "ephemeral": {"range": [32768, 60999], "size": 28232,
                          "busiest": {"address": "198.18.0.5", "port": 5432, "connections": 2, "time_wait": 1,
                                      "share": 0.0001}},
            "queues": {"send_ports": [{"port": 8080, "side": "local", "sockets": 1, "bytes": 1200, "stalled": 0}]},
            "retransmitting": [],
        },
        "listeners": [listener(22, 0, 128, process="sshd", pid=700), listener(8080, 2, 511)],
        "counters": {
            "sockstat": {"TCP_orphan": 3},
            "TcpExt": {"ListenOverflows": 7, "ListenDrops": 7, "TCPTimeWaitOverflow": 0},
            "sysctl": {"tcp_max_orphans": 65536},
            "interval": 1.0,
            "rates": {"TcpExt": {"ListenOverflows": 0.0, "ListenDrops": 0.0, "TCPTimeWaitOverflow": 0.0}},
        },
    }


def registered(facts, fail_on="critical", thresholds=None):
    """What the role registers from netstate.tcp.health_check for one host."""
    result = report.host_result(health.build_rules(None, [], thresholds), facts, fail_on)
    # the role registers it with failed_when: false
    return dict(result, changed=False, failed=False, facts_source="gathered")


@pytest.fixture
def fleet(facts):
    leaking = json.loads(json.dumps(facts))
    leaking["tcp"]["local_ports"]["8080"]["states"]["CLOSE_WAIT"] = 5000
    full = json.loads(json.dumps(facts))
    full["listeners"].append(listener(9000, 9, 8, process="java", pid=77))
    flood = json.loads(json.dumps(facts))
    flood["tcp"]["ephemeral"]["busiest"].update(time_wait=20000, connections=20000, address="198.18.0.9", port=80)
    no_rates = json.loads(json.dumps(facts))
    del no_rates["counters"]["rates"]
    return {
        "healthy": registered(facts),
        "leak": registered(leaking),
        "full": registered(full),
        "flood": registered(flood),
        "sampled_not": registered(no_rates),
        "down": {"unreachable": True, "changed": False,
                 "msg": "Failed to connect to the host via ssh: Connection timed out"},
        "broken": {"failed": True, "msg": "netstate.tcp.connection_facts failed: boom"},
        "never_ran": None,
    }


# ---------------------------------------------------------------- HTML pages

# every element the page is made of; data must not add any
# every element the page is made of; data must not add any
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "p", "span", "i", "table", "thead", "tbody",
             "tr", "th", "td", "svg", "rect", "line"}


PAGE_ATTRIBUTES = {"lang", "charset", "name", "content", "class", "width", "height", "role", "x", "x1", "x2", "y1",
                   "y2", "fill", "stroke", "stroke-width", "style", "colspan", "data-verdict"}


EXTERNAL = re.compile(r"url\(|@import|@font-face|https?:", re.I)


def self_contained(text):
    """Only the page's own elements and attributes (no src, href, script, link), no external style."""
    dom = parse_dom(text)
    styles = re.findall(r"<style>(.*?)</style>|style=\"([^\"]*)\"", text, re.S)
    return (set(dom.tags) <= PAGE_TAGS and set(dom.attributes) <= PAGE_ATTRIBUTES
            and not any(EXTERNAL.search(part) for pair in styles for part in pair))
