# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A job on a remote execution node, as AWX runs one over receptor: ``ansible-runner transmit`` of the job's
private data directory on the controller, the stream piped into ``ansible-runner worker`` on the execution
node, and the worker's stream turned back into artifacts on the controller by ``ansible-runner process``
(docs/awx.md, "Jobs on execution nodes"). Compared with the same job run by ``ansible-runner run`` on the
controller: rc, status, the per-host results in the job events, the reports and the verdicts must be equal.

A fleet of this module's own, three Debian 12 hosts without an init: h01 is the execution node, h02 and h03
the job's targets, which h01 reaches over SSH on the fleet's network. h01 gets what an execution environment
holds (tests/fleet/ee.py builds the image of it; here it is the host itself, without a container layer): in a
venv, ansible-runner at tests/requirements.txt's release, ansible-core at the controller's release and jmespath
from PyPI through the fleet's proxy (NETSTATE_FLEET_PROXY_ALLOW, as tests/fleet/test_quickstart_hosts.py), and
the collection from the tarball ``ansible-galaxy collection build`` makes of this tree, in
/usr/share/ansible/collections. The controller's local run uses the same tarball, installed in a directory of
its own.

The stream goes through ``podman exec -i`` stdin and stdout, the two pipes receptor's work unit gives
``ansible-runner worker`` on a node; nothing else joins the two sides. The SSH key is the job's credential
(``env/ssh_key`` of the private data directory), so it travels in the stream like AWX's machine credential,
and ``worker --delete`` removes the node's copy of the job when it ends. The health reports go to
``netstate-health`` in the job's artifact directory (runner names it to the playbook in AWX_ISOLATED_DATA_DIR),
which the worker streams back when the job ends, so the remote run's reports arrive on the controller.

h02 holds LEAK CLOSE_WAIT sockets on port 8082 during the module: under the default limit (100), so the
first job passes; the second sets close_wait_per_port's limit to LIMIT and fails the health gate on h02.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pytest
from ee import ExecutionEnvironment, Job, build_collection, health_verdicts
from test_quickstart_hosts import PYPI, local_certificate_authorities

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

NODE, LEAKING, HEALTHY = "h01", "h02", "h03"
NODE_VENV = "/opt/netstate-runner"
NODE_COLLECTIONS = "/usr/share/ansible/collections"
WORKER_DIR = "/var/lib/netstate-runner/job"     # the worker's private data directory (--delete)
RUNNER_VERSION = "2.4.3"                         # tests/requirements.txt's
LEAK, LIMIT, PORT = 30, 20, 8082
IDENT = "health"
# the job's artifact directory, which runner names to the playbook (AWX_ISOLATED_DATA_DIR) and the worker
# streams back when the job ends: the reports arrive on the controller with the artifacts
REPORT_DIR = "{{ lookup('ansible.builtin.env', 'AWX_ISOLATED_DATA_DIR') }}/netstate-health"
PLAYBOOK = "health.yml"                                  # ee.py's project playbook: netstate.tcp.health
RESULT_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")
CHECK_TASK = "Check the TCP health thresholds"
RUNNER = str(Path(sys.executable).with_name("ansible-runner"))
COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def install_execution_node(fleet, host, tarball):
    """What an execution environment holds, on host: ansible-runner, ansible-core (the controller's release)
    and jmespath in a venv from PyPI, and the collection from tarball; seconds taken."""
    started = time.monotonic()
    fleet.exec(host, "set -e\nexport DEBIAN_FRONTEND=noninteractive\napt-get update -q >/dev/null\n"
                     "apt-get install -y -q --no-install-recommends python3-venv >/dev/null", timeout=900)
    fleet.exec(host, "python3 -m venv {venv} && https_proxy={proxy} {venv}/bin/pip install -q "
                     "--disable-pip-version-check ansible-core=={core} jmespath ansible-runner=={runner}".format(
                         venv=NODE_VENV, proxy=fleet.proxy_url, core=metadata.version("ansible-core"),
                         runner=RUNNER_VERSION), timeout=1500)
    fleet.podman.run("cp", str(tarball), "%s:/srv/netstate-tcp.tar.gz" % fleet.container(host))
    fleet.exec(host, "{venv}/bin/ansible-galaxy collection install -p {path} /srv/netstate-tcp.tar.gz >/dev/null"
                     .format(venv=NODE_VENV, path=NODE_COLLECTIONS), timeout=300)
    return round(time.monotonic() - started, 1)


def controller_env(collections):
    """ansible-runner's environment on the controller: the project's ansible.cfg (no ANSIBLE_CONFIG of
    this tree's), the collection installed from the tarball only."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections),
               PATH="%s:%s" % (Path(sys.executable).parent, env.get("PATH", "")))
    return env


def worker_command(fleet):
    """``ansible-runner worker`` on the execution node, its stdin and stdout those of podman exec -i; a
    minimal environment of its own (the worker's "starting" status carries its environment back)."""
    return fleet.podman.command(
        "exec", "-i", fleet.container(NODE), "env", "-i", "PATH=%s/bin:/usr/sbin:/usr/bin:/sbin:/bin" % NODE_VENV,
        "HOME=/root", "LANG=C.UTF-8", NODE_VENV + "/bin/ansible-runner", "worker",
        "--private-data-dir", WORKER_DIR, "--delete")


def run_local(directory, env, timeout=900):
    """The job on the controller: ansible-runner run; (Job, exit status)."""
    started = time.monotonic()
    done = subprocess.run([RUNNER, "run", str(directory), "-p", PLAYBOOK, "--ident", IDENT], env=env,
                          cwd=str(directory), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
    return Job(directory, IDENT, done.args, done.stdout, time.monotonic() - started), done.returncode


def run_remote(fleet, directory, env, timeout=900):
    """transmit | worker on the node | process; (Job, {transmit, worker, process: exit status})."""
    started = time.monotonic()
    logs = {name: open(directory.parent / ("%s-%s.log" % (directory.name, name)), "w+")  # noqa: SIM115
            for name in ("transmit", "worker", "process")}
    try:
        transmit = subprocess.Popen([RUNNER, "transmit", str(directory), "-p", PLAYBOOK, "--ident", IDENT],
                                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=logs["transmit"])
        worker = subprocess.Popen(worker_command(fleet), env=fleet.podman.env, stdin=transmit.stdout,
                                  stdout=subprocess.PIPE, stderr=logs["worker"])
        transmit.stdout.close()   # the worker holds the read end; transmit sees a closed pipe if it dies
        process = subprocess.Popen([RUNNER, "process", str(directory), "--ident", IDENT], env=env,
                                   stdin=worker.stdout, stdout=logs["process"], stderr=subprocess.STDOUT)
        worker.stdout.close()
        codes = {}
        for name, child in (("process", process), ("worker", worker), ("transmit", transmit)):
            try:
                codes[name] = child.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                for other in (transmit, worker, process):
                    other.kill()
                raise
        output = ""
        for name, handle in logs.items():
            handle.seek(0)
            output += "--- %s (exit %s)\n%s" % (name, codes[name], handle.read()[-4000:])
    finally:
        for handle in logs.values():
            handle.close()
    return Job(directory, IDENT, ["transmit", "worker", "process"], output, time.monotonic() - started), codes


def host_results(job, hosts):
    """host -> the job events of its task results in order: (task, event, the health check's verdict)."""
    found = {host: [] for host in hosts}
    for event in job.events():
        data = event.get("event_data", {})
        if event.get("event") not in RESULT_EVENTS or data.get("host") not in found:
            continue
        verdict = None
        if data.get("task") == CHECK_TASK:
            result = data.get("res", {})
            verdict = (result.get("healthy"),
                       tuple((item["name"], item["status"]) for item in result.get("results", [])))
        found[data["host"]].append((data.get("task"), event["event"], verdict))
    return found


def recap(job):
    """The play recap of the job events (playbook_on_stats): counter -> host -> count."""
    stats = [event["event_data"] for event in job.events() if event.get("event") == "playbook_on_stats"]
    assert len(stats) == 1, job.output
    return {key: stats[0].get(key) for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")}


def verdicts(job):
    """health_verdicts of the job's health.json."""
    return health_verdicts(json.loads((job.artifacts / "netstate-health" / "health.json").read_text()))


def task_paths(job):
    return {event["event_data"]["task_path"] for event in job.events()
            if event.get("event") == "runner_on_ok" and event["event_data"].get("task") == CHECK_TASK}


@pytest.fixture(scope="module")
def node(fleet_factory, tmp_path_factory):
    """The fleet, its execution node set up, the controller's collection dir and environment, the leak on
    LEAKING held for the module; the setup's seconds printed."""
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        # the execution node's ansible-runner and ansible-core come from PyPI through the fleet's proxy
        patch.setenv("NETSTATE_FLEET_PROXY_ALLOW", PYPI)
        if not os.environ.get("NETSTATE_FLEET_HOST_CA"):
            patch.setenv("NETSTATE_FLEET_HOST_CA", ",".join(local_certificate_authorities()))
        fleet = fleet_factory("xn", 3, systems=("debian12",), init="none")
    up_s = round(time.monotonic() - started, 1)
    tmp = tmp_path_factory.mktemp("execution-node")
    tarball = build_collection(tmp / "collection")
    collections = tmp / "collections"
    subprocess.run([str(Path(sys.executable).with_name("ansible-galaxy")), "collection", "install", "-p",
                    str(collections), str(tarball)], env=controller_env(collections), stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, text=True, timeout=300, check=True)
    install_s = install_execution_node(fleet, NODE, tarball)
    print("\nexecution node: fleet up in %s s, %s set up in %s s" % (up_s, NODE, install_s))
    with fleet.loadgen(LEAKING, "close_wait", count=LEAK, port=PORT) as leak:
        assert leak.info["expect"]["CLOSE_WAIT"] == LEAK
        yield {"fleet": fleet, "env": controller_env(collections), "collections": collections,
               "ee": ExecutionEnvironment(fleet)}
    print("test_execution_node: %.1f s from the fleet's start to the last test's end" % (time.monotonic() - started))


def both(node, tmp_path, extravars):
    """The same job prepared twice, run locally and on the node at once: (local, local exit, remote, exits)."""
    targets = [LEAKING, HEALTHY]
    local_dir = node["ee"].prepare(tmp_path / "local", targets, extravars)
    remote_dir = node["ee"].prepare(tmp_path / "remote", targets, extravars)
    with ThreadPoolExecutor(2) as pool:
        local = pool.submit(run_local, local_dir, node["env"])
        remote = pool.submit(run_remote, node["fleet"], remote_dir, node["env"])
        (local_job, local_rc), (remote_job, codes) = local.result(), remote.result()
    print("local run %.1f s, remote run %.1f s (transmit, worker, process exits %s)"
          % (local_job.seconds, remote_job.seconds, codes))
    return local_job, local_rc, remote_job, codes


def assert_same_job(node, local, local_rc, remote, codes):
    targets = [LEAKING, HEALTHY]
    assert remote.status == local.status, (local.output[-3000:], remote.output)
    assert remote.rc == local.rc == local_rc == codes["worker"], (local.output[-3000:], remote.output)
    assert codes["transmit"] == 0 and codes["process"] == 0, remote.output
    assert host_results(remote, targets) == host_results(local, targets)
    assert recap(remote) == recap(local)
    assert verdicts(remote) == verdicts(local)
    for job in (local, remote):
        for name in ("health.junit.xml", "health.md"):
            assert (job.artifacts / "netstate-health" / name).is_file(), (job.directory, name)
    # it ran where it says: the node's copy of the collection, from the worker's private data directory
    assert {path.split("/roles/")[0] for path in task_paths(remote)} == {
        NODE_COLLECTIONS + "/ansible_collections/netstate/tcp"}, task_paths(remote)
    assert {path.split("/roles/")[0] for path in task_paths(local)} == {
        str(node["collections"]) + "/ansible_collections/netstate/tcp"}, task_paths(local)
    assert json.loads((remote.artifacts / "command").read_text())["cwd"] == WORKER_DIR + "/project"


def test_a_passing_job_on_the_execution_node_equals_the_local_run(node, tmp_path):
    local, local_rc, remote, codes = both(node, tmp_path, {"netstate_health_report_dir": REPORT_DIR})
    assert (local.status, local.rc) == ("successful", 0), local.output[-6000:]
    healthy, hosts = verdicts(local)
    assert healthy is True and sorted(hosts) == [LEAKING, HEALTHY]
    assert_same_job(node, local, local_rc, remote, codes)
    # worker --delete: nothing of the job (its SSH key included) stays on the node
    assert node["fleet"].exec(NODE, "test -e %s" % WORKER_DIR, check=False).returncode == 1


def test_a_failing_health_gate_fails_the_remote_job_as_the_local_one(node, tmp_path):
    extravars = {"netstate_health_report_dir": REPORT_DIR, "netstate_health_thresholds": {"close_wait_per_port": LIMIT}}
    local, local_rc, remote, codes = both(node, tmp_path, extravars)
    assert (local.status, local.rc) == ("failed", 2), local.output[-6000:]
    healthy, hosts = verdicts(local)
    assert healthy is False
    assert hosts[LEAKING][0] == "failed" and hosts[HEALTHY][0] == "passed", hosts
    assert ("close_wait_per_port", "port %d" % PORT) in hosts[LEAKING][2], hosts
    line = "critical: close_wait_per_port [port %d]: %d > max %d" % (PORT, LEAK, LIMIT)
    outputs = [COLOUR.sub("", job.stdout) for job in (local, remote)]
    assert line in outputs[0] and line in outputs[1], [output[-3000:] for output in outputs]
    assert_same_job(node, local, local_rc, remote, codes)
    failed = {event["event_data"]["host"] for event in remote.events() if event.get("event") == "runner_on_failed"}
    assert failed == {LEAKING}
