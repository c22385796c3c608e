# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection as AWX runs it: the health playbook under ansible-runner in the execution
environment (tests/fleet/ee.py) on real fleet hosts, against a plain ansible-playbook run.

The EE is built once per content hash (a warm session only builds the collection tarball to hash it).
Two hosts carry loads for the whole module: one a healthy mix, one a CLOSE_WAIT leak (critical), so
the verdicts compared differ from host to host.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

import pytest
import yaml
from ee import ROOT, ExecutionEnvironment, health_verdicts
from fleet import FleetError
from fleetcheck import run_playbook

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

PLAYBOOK = "netstate.tcp.health"
LEAK_LINE = "critical: close_wait_per_port [port 8082]: 150 > max 100"


@pytest.fixture(scope="module")
def ee(fleet):
    """(ExecutionEnvironment, image): built unless cached, the build's seconds printed."""
    environment = ExecutionEnvironment(fleet)
    try:
        image = environment.ensure()
    except FleetError as error:
        pytest.fail("execution environment: %s" % error, pytrace=False)
    print("execution environment %s, seconds %s" % (image, environment.timings))
    return environment, image


@pytest.fixture(scope="module")
def loaded(fleet, tmp_path_factory):
    """Loads on two hosts and the plain ansible-playbook run of the health playbook on them:
    {"hosts", "plain" (CompletedProcess), "report" (its health.json, parsed)}."""
    healthy, leaking = fleet.hosts[:2]
    report = tmp_path_factory.mktemp("plain") / "report"
    with fleet.loadgen(healthy, "healthy"), fleet.loadgen(leaking, "close_wait", count=150, port=8082) as leak:
        assert leak.info["expect"]["CLOSE_WAIT"] == 150
        plain = run_playbook(fleet, PLAYBOOK, "-l", "%s,%s" % (healthy, leaking),
                             "-e", "netstate_health_report_dir=%s" % report)
        assert plain.returncode == 2, plain.stdout
        yield {"hosts": [healthy, leaking], "plain": plain,
               "report": json.loads((report / "health.json").read_text())}


IN_IMAGE = (
    "ansible-galaxy collection list netstate.tcp --format json | tr -d '\\n'; echo; "
    "python3 -c 'import jmespath; print(jmespath.__name__)'; "
    "ip -V; "
    "python3 -c 'import ansible.release as r; print(r.__version__)'; "
    "ansible-runner --version; "
    "id -u"
)


def test_the_ee_holds_the_collection_and_what_its_meta_files_ask_for(fleet, ee):
    environment, image = ee
    # one container of the image (its entrypoint, its default user, no network) answers every question
    done = fleet.podman.run("run", "--rm", "--network=none", image, "sh", "-ec", IN_IMAGE, check=False)
    assert done.returncode == 0, (done.stdout.decode(), done.stderr.decode())
    listed, module, ip, core, runner, uid = done.stdout.decode().splitlines()
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    assert json.loads(listed) == {
        "/usr/share/ansible/collections/ansible_collections": {"netstate.tcp": {"version": version}}}
    # meta/ee-requirements.txt (Python) and meta/ee-bindep.txt (system) of the collection, by introspection
    assert module == "jmespath"
    assert ip.startswith("ip utility"), ip
    # the releases the controller runs: ansible-core's minor and ansible-runner exactly
    assert core.split(".")[:2] == metadata.version("ansible-core").split(".")[:2], core
    assert runner == metadata.version("ansible-runner")
    assert uid == "1000"   # ansible-builder's default user; jobs here run with --user=root as AWX's do
    labels = json.loads(fleet.podman.text("image", "inspect", "--format", "{{json .Labels}}", image))
    assert labels.get("ansible-execution-environment") == "true"
    # cached by content: a second ensure() builds nothing
    assert environment.ensure() == image
    assert set(environment.timings) == {"collection", "total"}, environment.timings


def test_health_under_ansible_runner_matches_a_plain_run(ee, loaded, tmp_path):
    environment, image = ee
    job = environment.run(tmp_path / "job", loaded["hosts"], image=image)
    print("ansible-runner job in %.1fs" % job.seconds)
    assert job.status == "failed", job.output
    assert job.rc == loaded["plain"].returncode == 2, job.output
    assert LEAK_LINE in job.stdout and LEAK_LINE in loaded["plain"].stdout
    report = json.loads(job.report("health.json").read_text())
    assert sorted(health_verdicts(report)[1]) == sorted(loaded["hosts"])
    assert health_verdicts(report) == health_verdicts(loaded["report"])
    assert report["healthy"] is loaded["report"]["healthy"] is False
    assert job.report("health.junit.xml").exists() and job.report("health.md").exists()
    # the job's events (what AWX records): every host checked by the EE's own copy of the collection
    checked = {event["event_data"]["host"]: event["event_data"]["task_path"] for event in job.events()
               if event.get("event") == "runner_on_ok"
               and event["event_data"].get("resolved_action") == "netstate.tcp.health_check"
               and event["event_data"].get("task") == "Check the TCP health thresholds"}
    assert sorted(checked) == sorted(loaded["hosts"])
    for path in checked.values():
        assert path.startswith("/usr/share/ansible/collections/ansible_collections/netstate/tcp/roles/health/"), path


def test_job_slices_report_their_own_hosts_and_together_the_plain_verdicts(ee, loaded, tmp_path):
    """AWX job slicing: one job per slice of the inventory (host i in slice i mod N), run side by side,
    each with a report of its own hosts only."""
    environment, image = ee
    hosts = loaded["hosts"]
    slices = {"slice%d" % (number + 1): hosts[number::2] for number in range(2)}
    with ThreadPoolExecutor(max_workers=len(slices)) as pool:
        jobs = {ident: pool.submit(environment.run, tmp_path / ident, members, image=image, ident=ident)
                for ident, members in slices.items()}
    combined = {}
    for ident, members in slices.items():
        job = jobs[ident].result()
        print("%s (%s) in %.1fs" % (ident, ",".join(members), job.seconds))
        found = health_verdicts(json.loads(job.report("health.json").read_text()))[1]
        assert sorted(found) == sorted(members), job.output
        leaks = hosts[1] in members
        assert (job.status, job.rc) == (("failed", 2) if leaks else ("successful", 0)), job.output
        combined.update(found)
    assert combined == health_verdicts(loaded["report"])[1]
