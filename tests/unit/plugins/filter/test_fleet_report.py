# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The netstate.tcp.fleet_report filter on its own (no fleet needed): ranking, unreachable and failed
hosts, the FACTS_MODULES fallback, limits, Markdown (read back by a CommonMark/GFM parser, with hostile
names), and clear errors for bad input."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.netstate.tcp.plugins.filter.fleet_report import FilterModule
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape

from tests.support.hostile import HOSTILE_NAMES, markdown_problems, markdown_tables
from tests.support.ss_oracle import ALL_STATES

fleet_report = FilterModule().filters()["fleet_report"]


def states(**counts):
    result = dict.fromkeys(ALL_STATES, 0)
    result.update(counts)
    return result


def facts(total=3, queue=0, backlog=128, close_wait=0, time_wait_busy=0, syn_recv=0, peers=None):
    port_states = states(LISTEN=1, CLOSE_WAIT=close_wait, ESTABLISHED=total - 1 - close_wait)
    return {"netstate": {
        "backend": "netlink", "kernel": "6.1.0",
        "tcp": {"total": total, "states": states(LISTEN=1, CLOSE_WAIT=close_wait, SYN_RECV=syn_recv),
                "local_ports": {"8080": {"total": total, "states": port_states},
                                "22": {"total": 1, "states": states(LISTEN=1)}},
                "peers": peers or [],
                "ephemeral": {"range": [32768, 60999], "size": 28232,
                              "busiest": {"address": "198.18.0.9", "port": 80, "connections": time_wait_busy,
                                          "time_wait": time_wait_busy, "share": 0.0} if time_wait_busy else None}},
        "udp": {"total": 1},
        "listeners": [{"protocol": "tcp", "address": "0.0.0.0", "port": 8080, "queue": queue, "backlog": backlog,
                       "saturation": round(queue / backlog, 4), "process": "web"},
                      {"protocol": "udp", "address": "0.0.0.0", "port": 53, "queue": None, "backlog": None,
                       "saturation": None, "process": "dns"}],
        "counters": {"TcpExt": {"ListenOverflows": 7, "ListenDrops": 9}},
    }}


def registered(document):
    return {"changed": False, "ansible_facts": document}


HOSTVARS = {
    "calm": {"netstate_gather_result": registered(facts(total=40))},
    "busy": {"netstate_gather_result": registered(facts(total=900))},
    "queue": {"netstate_gather_result": registered(facts(queue=129, backlog=128))},
    "waits": {"netstate_gather_result": registered(facts(time_wait_busy=14116))},
    "leak": {"netstate_gather_result": registered(facts(total=60, close_wait=50))},
    "down": {"netstate_gather_result": {
        "unreachable": True, "msg": "ssh: connect to host 198.18.0.7 port 22:\nConnection timed out"}},
    "broken": {"netstate_gather_result": {"failed": True, "msg": "python3 not found"}},
    "cached": {"ansible_facts": facts(total=10)},  # gather_facts with FACTS_MODULES, no registered result
    "never": {},
}


def test_rows_worst_first():
    report = fleet_report(list(HOSTVARS), HOSTVARS)
    assert [row["host"] for row in report["rows"]] == [
        "down", "never", "broken", "waits", "queue", "leak", "busy", "calm", "cached"]
    assert [row["rank"] for row in report["rows"]] == list(range(1, 10))
    assert report["unreachable"] == ["down", "never"] and report["failed"] == ["broken"]
    assert report["hosts"] == 9 and report["gathered"] == 6
    rows = {row["host"]: row for row in report["rows"]}
    assert rows["waits"]["worst"] == "time_wait_share" and rows["waits"]["pressure"] == 2.0
    assert rows["queue"]["worst"] == "accept_queue" and rows["queue"]["pressure"] == pytest.approx(1.0078, abs=1e-4)
    assert rows["queue"]["fullest_accept_queue"] == {"address": "0.0.0.0", "port": 8080, "queue": 129,
                                                     "backlog": 128, "saturation": 1.0078, "process": "web"}
    assert rows["leak"]["worst"] == "close_wait" and rows["leak"]["pressure"] == 0.5
    assert rows["busy"]["pressure"] == 0 and rows["busy"]["worst"] is None
    assert rows["busy"]["busiest_port"]["port"] == 8080 and rows["busy"]["listen_overflows"] == 7
    assert rows["down"]["message"] == "ssh: connect to host 198.18.0.7 port 22: Connection timed out"
    assert rows["broken"]["message"] == "python3 not found" and rows["broken"]["states"] is None


def test_limits_change_the_ranking_and_are_validated():
    report = fleet_report(["queue", "leak"], HOSTVARS, limits={"close_wait": 10})
    assert [row["host"] for row in report["rows"]] == ["leak", "queue"]
    assert report["limits"]["close_wait"] == 10 and report["limits"]["accept_queue"] == 1.0
    with pytest.raises(AnsibleFilterError, match="limits: unknown key 'orphans'"):
        fleet_report(["calm"], HOSTVARS, limits={"orphans": 1})
    with pytest.raises(AnsibleFilterError, match="limits.close_wait must be a number above 0, got 0"):
        fleet_report(["calm"], HOSTVARS, limits={"close_wait": 0})


def test_markdown_names_unreachable_hosts():
    markdown = fleet_report(["calm", "down", "waits"], HOSTVARS, format="markdown")
    lines = markdown.splitlines()
    assert lines[0] == "# netstate.tcp fleet report"
    assert "3 hosts, 2 gathered, unreachable: down." in lines
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| #")]
    assert [line.split("|")[2].strip() for line in table] == ["down", "waits", "calm"]
    assert "- down (unreachable): ssh: connect to host 198.18.0.7 port 22: Connection timed out" in lines
    assert fleet_report(["calm", "down", "waits"], HOSTVARS, format="markdown") == markdown  # no time stamps


def test_top_peer_and_time_wait_share():
    hostvars = {"a": {"netstate_gather_result": registered(
        facts(time_wait_busy=2823, peers=[{"address": "198.18.0.5", "total": 40}, {"address": "::1", "total": 2}]))}}
    row = fleet_report(["a"], hostvars)["rows"][0]
    assert row["top_peer"] == {"address": "198.18.0.5", "total": 40}
    assert row["time_wait_share"] == pytest.approx(2823 / 28232, abs=1e-4)


@pytest.mark.parametrize("args,message", [
    (("calm", HOSTVARS), "the input must be a list of host names, got str"),
    ((["calm"], ["x"]), "hostvars must be the play's hostvars, got list"),
    ((["nobody"], HOSTVARS), "host 'nobody' is not in hostvars"),
    ((["calm"], HOSTVARS, "netstate_gather_result", None, "pdf"), "format must be data, markdown, html, got 'pdf'"),
    ((["calm"], HOSTVARS, "netstate_gather_result", [1]), "limits must be a dictionary, got \\[1\\]"),
])
def test_bad_input_is_named(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        fleet_report(*args)


# ---------------------------------------------------------------- hostile names

@pytest.fixture(params=HOSTILE_NAMES, ids=[ascii(name) for name in HOSTILE_NAMES])
def name(request):
    return request.param


def fleet_facts(name):
    return {"netstate": {
        "backend": name, "kernel": name,
        "tcp": {"total": 2, "states": {"LISTEN": 1}, "local_ports": {"9000": {"total": 2, "states": {"LISTEN": 1}}},
                "peers": [{"address": name, "total": 1}], "ephemeral": {}},
        "listeners": [{"protocol": "tcp", "address": name, "port": 9000, "queue": 3, "backlog": 2,
                       "saturation": 1.5, "process": name}],
    }}


def test_fleet_markdown_has_no_html_and_intact_rows(name):
    hostvars = {"h1": {"netstate_gather_result": {"ansible_facts": fleet_facts(name)}},
                "h2": {"netstate_gather_result": {"unreachable": True, "msg": name}},
                name: {"netstate_gather_result": {"failed": True, "msg": name}}}
    text = fleet_report(["h1", "h2", name], hostvars, format="markdown")
    assert markdown_problems(text) == []
    rows = markdown_tables(text)[0]
    assert len({len(row) for row in rows}) == 1 and len(rows) == 4
    by_host = {row[1]: row for row in rows[1:]}
    shown = escape.visible(name, keep="\n")
    assert set(by_host) == {"h1", "h2", shown}
    assert by_host["h1"][-1] == shown  # the backend column
    assert by_host["h1"][-3].startswith(shown + ":9000 3/2")  # the fullest accept queue


def test_markdown_verdict_is_the_health_rules_word_not_the_gathering_status():
    """A host whose accept queue is beyond its backlog (accept_queue_full, critical) is gathered fine: the
    Verdict column says critical, as the HTML page and the health report (FAILED at fail_on critical) do,
    never "ok" beside a pressure above 1."""
    markdown = fleet_report(["queue", "calm", "down"], HOSTVARS, format="markdown")
    header = next(line for line in markdown.splitlines() if line.startswith("| #"))
    assert [cell.strip() for cell in header.split("|")[1:4]] == ["#", "Host", "Verdict"]
    verdicts = {line.split("|")[2].strip(): line.split("|")[3].strip()
                for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| #")}
    assert verdicts == {"queue": "critical", "calm": "ok", "down": "unreachable"}
    page = fleet_report(["queue", "calm", "down"], HOSTVARS, format="html")
    assert 'data-verdict="critical"' in page and 'data-verdict="ok"' in page and 'data-verdict="unreachable"' in page
