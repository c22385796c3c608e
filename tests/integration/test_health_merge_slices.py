# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Job slices of the health playbook merged by playbooks/health_merge.yml, on real sockets.

Nine inventory hosts: eight are localhost gathering from one of the namespaces of
tests/integration/test_health_role.py (a healthy host, a CLOSE_WAIT leak - once with its own
threshold -, a full accept queue, a TIME_WAIT flood, each twice), the ninth cannot be reached. The
gather playbook gathers every host once into a jsonfile fact cache, so that every later run checks
the same facts: the health playbook once over all nine hosts, then as three slices (--limit, as
AWX slices an inventory), then health_merge.yml over the three slice reports. The merged files
are byte-identical to the unsliced run's. The fleet pages of both roles, from the same facts, rank
the hosts by the same pressure and render in headless Chromium.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.conftest import require
from tests.integration import test_health_role
from tests.integration.test_health_role import PLAYBOOK, TARGET_PYTHON
from tests.support import browser

# the namespaces of test_health_role.py (module scope: built again for this module)
held_namespaces = test_health_role.held_namespaces

FILES = ("health.junit.xml", "health.json", "health.md", "health.html")


def run(playbook, inventory_path, cache, *extra):
    env = dict(os.environ, ANSIBLE_CACHE_PLUGIN="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(cache),
               ANSIBLE_CACHE_PLUGIN_TIMEOUT="0")
    return subprocess.run([PLAYBOOK, playbook, "-i", inventory_path, *extra], capture_output=True, text=True,
                          timeout=600, check=False, env=env)


@pytest.fixture(scope="module")
def sliced(held_namespaces, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("merge")
    namespaces = test_health_role.renewed(held_namespaces, tmp)
    hosts = {}
    for name in sorted(namespaces):
        for copy in (1, 2):
            args = {"namespace": namespaces[name].name}
            hosts["%s-%d" % (name, copy)] = {
                "netstate_gather_args": dict(args, sample_interval=1), "netstate_health_gather_args": args}
    hosts["leak-2"]["netstate_health_thresholds"] = {"close_wait_per_port": 500}
    # Without pipelining the first ssh run sends nothing on stdin, so its failure reads the same every run. With it,
    # ansible-core words the failure in one of two ways, by whether ssh has exited 1 ms after a failed write
    # (ssh.py _send_initial_data), and a loaded machine saw the whole run and a slice word it differently.
    hosts["gone"] = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 9,
                     "ansible_user": "nobody", "ansible_pipelining": False}
    data = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": TARGET_PYTHON},
                    "hosts": hosts}}
    path = tmp / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    inventory_path = str(path)
    cache = tmp / "facts"
    gathered = run("netstate.tcp.gather", inventory_path, cache,
                   "-e", "netstate_gather_report_dir=%s" % (tmp / "gather"),
                   "-e", "netstate_gather_fail_unreachable=false")
    assert gathered.returncode == 0, gathered.stdout[-4000:] + gathered.stderr
    assert len(os.listdir(cache)) == 8  # every reached host, once
    whole = run("netstate.tcp.health", inventory_path, cache, "-e", "netstate_health_report_dir=%s" % (tmp / "whole"))
    names = sorted(hosts)
    slices = [names[index::3] for index in range(3)]
    runs = []
    for index, part in enumerate(slices, 1):
        runs.append(run("netstate.tcp.health", inventory_path, cache, "--limit", ",".join(part),
                        "-e", "netstate_health_report_dir=%s" % (tmp / ("slice-%d" % index))))
    merge_vars = {"netstate_health_merge_reports": [str(tmp / ("slice-%d" % index)) for index in (1, 2, 3)],
                  "netstate_health_report_dir": str(tmp / "merged")}
    merged = run("netstate.tcp.health_merge", "localhost,", cache, "-e", json.dumps(merge_vars))
    return {"tmp": tmp, "whole": whole, "slices": slices, "runs": runs, "merged": merged}


@pytest.mark.netns
@pytest.mark.slow
def test_merged_slices_are_byte_identical_to_one_run(sliced):
    tmp = sliced["tmp"]
    # one run and the merge fail alike: leak-1 and the two full hosts violate a critical rule, gone is unreachable
    assert sliced["whole"].returncode == 2, sliced["whole"].stdout[-4000:]
    assert sliced["merged"].returncode == 2, sliced["merged"].stdout[-4000:] + sliced["merged"].stderr
    assert "did not" in sliced["merged"].stdout
    for run_ in sliced["runs"]:
        assert run_.returncode in (0, 2), run_.stdout[-4000:] + run_.stderr
    whole = json.loads((tmp / "whole" / "health.json").read_text())
    assert len(whole["hosts"]) == 9 and whole["totals"] == {"passed": 5, "failed": 3, "error": 0, "unreachable": 1}
    assert "Failed to connect to the host via ssh" in (tmp / "whole" / "health.junit.xml").read_text()
    for index, part in enumerate(sliced["slices"], 1):
        partial = json.loads((tmp / ("slice-%d" % index) / "health.json").read_text())
        assert [entry["host"] for entry in partial["hosts"]] == sorted(part)
    for name in FILES:
        assert (tmp / "merged" / name).read_bytes() == (tmp / "whole" / name).read_bytes(), name


@pytest.mark.netns
@pytest.mark.slow
def test_both_fleet_pages_rank_by_the_same_rules(sliced):
    """gather's fleet report and the health report evaluate the same rules on the same cached facts."""
    tmp = sliced["tmp"]
    fleet = json.loads((tmp / "gather" / "fleet-report.json").read_text())
    health = json.loads((tmp / "whole" / "health.json").read_text())
    snapshots = {entry["host"]: entry["snapshot"] for entry in health["hosts"]}
    for row in fleet["rows"]:
        if row["status"] != "ok":
            assert row["host"] == "gone" and snapshots["gone"] is None
            continue
        for key in ("pressure", "worst", "ratios", "limits", "time_wait_share", "fullest_accept_queue", "states"):
            assert row[key] == snapshots[row["host"]][key], (row["host"], key)
    rows = {row["host"]: row for row in fleet["rows"]}
    # leak-2's own threshold (netstate_health_thresholds) moves its pressure in both reports
    assert rows["leak-1"]["ratios"]["close_wait"] == 1.5 and rows["leak-2"]["ratios"]["close_wait"] == 0.3
    assert rows["leak-2"]["limits"]["close_wait"] == 500
    assert rows["flood-1"]["worst"] == "time_wait_share" and rows["flood-1"]["time_wait_share"] == 0.3


@pytest.mark.netns
@pytest.mark.slow
def test_real_fleet_pages_render_in_chromium(sliced):
    require(browser.chromium() is not None, "needs headless Chromium (Debian package chromium, scripts/setup.sh)")
    tmp = sliced["tmp"]
    fleet = json.loads((tmp / "gather" / "fleet-report.json").read_text())
    health = json.loads((tmp / "merged" / "health.json").read_text())
    for page, expected in [(tmp / "gather" / "fleet-report.html", [(row["host"], row["verdict"])
                                                                   for row in fleet["rows"]]),
                           (tmp / "merged" / "health.html", None)]:
        assert browser.screenshot(page, tmp / (page.name + ".png")) == []
        dom, console = browser.dump_dom(page)
        assert console == []
        rows = [(row["host"], row["verdict"]) for row in browser.parse_dom(dom).rows]
        if expected is None:
            expected = sorted(((entry["host"], entry["status"]) for entry in health["hosts"]),
                              key=lambda item: ["unreachable", "error", "failed", "passed"].index(item[1]))
            assert sorted(rows) == sorted(expected) and [verdict for _host, verdict in rows] == [
                verdict for _host, verdict in expected]
        else:
            assert rows == expected
