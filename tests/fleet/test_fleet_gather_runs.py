# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netstate.tcp.gather when things go wrong or move fast, and connection_facts through gather_facts."""

import json
import textwrap

import pytest
from fleetcheck import GATHER, HostSnapshot, between, read_fact_cache

from tests.conftest import require
from tests.support.ss_oracle import ALL_STATES

pytestmark = pytest.mark.fleet


def test_stopped_host_is_reported_and_fails_the_run(fleet, ansible_playbook, tmp_path):
    require(len(fleet.hosts) >= 3, "needs 3 fleet hosts (NETSTATE_FLEET_HOSTS)")
    stopped = fleet.hosts[len(fleet.hosts) // 2]  # in the middle of the inventory
    fleet.stop_host(stopped)
    run = ansible_playbook(GATHER, "-e", "netstate_gather_report_dir=%s" % tmp_path)
    assert run.returncode != 0, run.stdout[-3000:]
    assert "fatal: [%s]" % stopped in run.stdout
    report = json.loads((tmp_path / "fleet-report.json").read_text())
    assert report["unreachable"] == [stopped]
    assert report["rows"][0]["host"] == stopped and report["rows"][0]["status"] == "unreachable"
    assert str(fleet.address(stopped)) in report["rows"][0]["message"]  # ssh's own words
    others = [row for row in report["rows"] if row["host"] != stopped]
    assert [row["status"] for row in others] == ["ok"] * (len(fleet.hosts) - 1)
    assert all(row["states"]["LISTEN"] >= 1 for row in others)  # sshd, at least
    markdown = (tmp_path / "fleet-report.md").read_text()
    assert "unreachable: %s" % stopped in markdown and "## Hosts without facts" in markdown


def test_gather_during_churn(fleet, loads, ansible_playbook, tmp_path):
    """Thousands of connections per second open and close while the facts are gathered."""
    host = fleet.hosts[-1]
    churn = loads.start(host, "churn", port=8086, rate=1200, duration=20)
    before = HostSnapshot(fleet, host)
    run = ansible_playbook(GATHER, "-l", host, "-e", "netstate_gather_report_dir=%s" % (tmp_path / "report"),
                           env={"ANSIBLE_CACHE_PLUGIN": "jsonfile",
                                "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp_path / "facts")})
    after = HostSnapshot(fleet, host)
    assert churn.running, churn.output()
    assert run.returncode == 0, run.stdout[-3000:]
    facts = read_fact_cache(tmp_path / "facts", host)["netstate"]
    # Closed by the client first towards a non-loopback address: TIME_WAIT only grows during the
    # 20 s of churn (nothing expires before 60 s, nothing is reused), so ss brackets it.
    before_tw, after_tw = before.states()["TIME_WAIT"], after.states()["TIME_WAIT"]
    assert after_tw - before_tw >= 1000, "churn did not run: %s -> %s TIME_WAIT" % (before_tw, after_tw)
    between(facts["tcp"]["states"]["TIME_WAIT"], before_tw, after_tw, "TIME_WAIT during churn")
    # Whatever else is in flight at the instant of the dump is bounded by the churn's own pace.
    in_flight = 64
    assert len(before.tcp) - in_flight <= facts["tcp"]["total"] <= len(after.tcp) + in_flight
    assert set(facts["tcp"]["states"]) == set(ALL_STATES)
    assert facts["tcp"]["local_ports"]["8086"]["states"]["LISTEN"] == 1
    report = json.loads((tmp_path / "report" / "fleet-report.json").read_text())
    assert report["gathered"] == 1 and report["rows"][0]["host"] == host


def test_facts_modules_fill_the_fact_cache(fleet, ansible_playbook, tmp_path):
    playbook = tmp_path / "facts.yml"
    playbook.write_text(textwrap.dedent("""\
        - name: Gather with setup and connection_facts together
          hosts: fleet
          gather_facts: true
          module_defaults:
            # In parallel mode ansible-core runs setup as an async job with time limit 0, whose
            # watcher kills it when still running after 5 s (a busy 2-core CI machine); in turn.
            ansible.builtin.gather_facts:
              parallel: false
            netstate.tcp.connection_facts:
              top: 3
          tasks:
            - name: Use a connection fact
              ansible.builtin.assert:
                that: ansible_facts.netstate.tcp.states.LISTEN >= 1
        """))
    cache = tmp_path / "cache"
    run = ansible_playbook(playbook, env={
        "ANSIBLE_FACTS_MODULES": "ansible.builtin.setup,netstate.tcp.connection_facts",
        "ANSIBLE_CACHE_PLUGIN": "jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache),
    })
    assert run.returncode == 0, run.stdout[-3000:]
    for host in fleet.hosts:
        facts = read_fact_cache(cache, host)
        netstate = facts["netstate"]
        assert set(netstate["tcp"]["states"]) == set(ALL_STATES), host
        assert netstate["tcp"]["states"]["LISTEN"] >= 2, host  # sshd on IPv4 and IPv6
        assert len(netstate["tcp"]["peers"]) <= 3  # module_defaults reached the facts module
        # setup's facts sit next to ours, from the same host
        hostname = facts.get("ansible_hostname", facts.get("hostname"))
        assert hostname == host, (host, sorted(facts)[:20])
        addresses = facts.get("ansible_all_ipv4_addresses", facts.get("all_ipv4_addresses"))
        assert fleet.address(host) in addresses
