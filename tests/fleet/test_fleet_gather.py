# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.gather on five real SSH hosts, each holding a different load: facts against ss, report ranking."""

import json

import pytest
from fleetcheck import GATHER, HostSnapshot, check_against_ss, read_fact_cache, run_playbook

from tests.conftest import require

pytestmark = pytest.mark.fleet

# host index -> (scenario, parameters); the report must rank them in this order (worst first).
SCENARIOS = [
    ("accept_full", {"port": 8083, "backlog": 4, "clients": 30}),  # accept queue 5/4: pressure 1.25
    ("time_wait", {"port": 8081, "count": 5000}),                   # TIME_WAIT share ~0.18: pressure ~0.71
    ("close_wait", {"port": 8082, "count": 40}),                    # 40 CLOSE_WAIT on a port: pressure 0.4
    ("peers", {"port": 8084, "count": 300}),                        # no pressure, 600 sockets
    ("healthy", {"port": 8087, "count": 20}),                       # no pressure, 40 sockets
]


@pytest.fixture(scope="module")
def gathered(fleet, tmp_path_factory):
    """One gather run over five loaded hosts, with ss snapshots of each host around it."""
    require(len(fleet.hosts) >= len(SCENARIOS), "needs %d fleet hosts (NETSTATE_FLEET_HOSTS)" % len(SCENARIOS))
    hosts = fleet.hosts[:len(SCENARIOS)]
    handles = []
    try:
        for host, (scenario, params) in zip(hosts, SCENARIOS):
            handles.append(fleet.loadgen(host, scenario, **params))
        tmp = tmp_path_factory.mktemp("gather")
        before = {host: HostSnapshot(fleet, host) for host in hosts}
        run = run_playbook(fleet, GATHER, "-e", "netstate_gather_report_dir=%s" % (tmp / "report"),
                           env={"ANSIBLE_CACHE_PLUGIN": "jsonfile",
                                "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp / "facts")})
        after = {host: HostSnapshot(fleet, host) for host in hosts}
        yield {"run": run, "tmp": tmp, "hosts": hosts, "before": before, "after": after,
               "info": {handle.host: handle.info for handle in handles}}
    finally:
        for handle in handles:
            handle.stop()


def test_gather_run_succeeds(gathered):
    assert gathered["run"].returncode == 0, gathered["run"].stdout[-4000:]


@pytest.mark.parametrize("index", range(len(SCENARIOS)), ids=[name for name, _params in SCENARIOS])
def test_facts_match_ss_on_the_host(gathered, index):
    host = gathered["hosts"][index]
    facts = read_fact_cache(gathered["tmp"] / "facts", host)["netstate"]
    assert facts["backend"] == "netlink"
    check_against_ss(facts, gathered["before"][host], gathered["after"][host], host)
    # The scenario is really there, as loadgen built it.
    expect = gathered["info"][host]["expect"]
    for state in ("CLOSE_WAIT", "FIN_WAIT2", "SYN_SENT", "TIME_WAIT"):
        if state in expect:
            assert facts["tcp"]["states"][state] >= expect[state], (host, state, facts["tcp"]["states"])


def test_report_ranks_hosts_as_the_scenarios_dictate(gathered):
    report = json.loads((gathered["tmp"] / "report" / "fleet-report.json").read_text())
    assert [row["host"] for row in report["rows"]] == gathered["hosts"]
    assert report["unreachable"] == [] and report["failed"] == [] and report["gathered"] == len(SCENARIOS)
    rows = {row["host"]: row for row in report["rows"]}
    accept_full, time_wait, close_wait, peers, healthy = gathered["hosts"]

    queue = rows[accept_full]["fullest_accept_queue"]
    assert (queue["port"], queue["queue"], queue["backlog"]) == (8083, 5, 4)
    assert rows[accept_full]["worst"] == "accept_queue" and rows[accept_full]["pressure"] == 1.25

    size = read_fact_cache(gathered["tmp"] / "facts", time_wait)["netstate"]["tcp"]["ephemeral"]["size"]
    assert rows[time_wait]["worst"] == "time_wait_share"
    waiting = gathered["info"][time_wait]["expect"]["TIME_WAIT"]  # what loadgen built and saw
    # one socket either way, and the report rounds shares to 4 decimals
    assert rows[time_wait]["time_wait_share"] == pytest.approx(waiting / size, abs=1 / size + 0.00005)
    destination = gathered["info"][time_wait]["destination"]
    busiest = rows[time_wait]["busiest_destination"]
    assert "%s:%s" % (busiest["address"], busiest["port"]) == destination

    assert rows[close_wait]["worst"] == "close_wait" and rows[close_wait]["pressure"] == 0.4
    assert rows[close_wait]["busiest_port"]["port"] == 8082
    assert rows[close_wait]["busiest_port"]["states"]["CLOSE_WAIT"] == 40

    before = gathered["before"][peers].peers()
    top_address = max(before, key=lambda address: before[address]["total"])
    assert rows[peers]["top_peer"]["address"] == top_address
    assert rows[peers]["busiest_port"]["port"] == 8084
    assert rows[peers]["pressure"] == 0 and rows[healthy]["pressure"] == 0
    assert rows[peers]["total"] > rows[healthy]["total"]


def test_markdown_report_lists_every_host_worst_first(gathered):
    markdown = (gathered["tmp"] / "report" / "fleet-report.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert [line.split("|")[2].strip() for line in table] == gathered["hosts"]
    assert "%d hosts, %d gathered." % (len(SCENARIOS), len(SCENARIOS)) in markdown
    assert "fleet report" in gathered["run"].stdout  # printed at the end of the run
