# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The README's quick start, verbatim, on a fresh Debian 12 host and a fresh Debian 13 host (the release the
ansible-core matrix runs 2.20 and 2.21 on), checked as tests/integration/test_quickstart.py checks it on
this machine, with that file's reading of the README.

A fleet of this module's own, one host of each release without an init (the other fleets have no Debian 12
and 13 hosts to spare, and their proxies must refuse PyPI). Its proxy tunnels HTTPS to pypi.org and
files.pythonhosted.org (NETSTATE_FLEET_PROXY_ALLOW, set here while the fleet comes up), and its hosts trust
what this machine trusts beyond Debian's own CA list (NETSTATE_FLEET_HOST_CA if set, else this machine's
local CAs in /etc/ssl/certs), as a machine on the same network would: where the way out re-signs TLS,
pip needs that.

On each host, as root: `apt-get install python3-venv git` (git for the README's `git clone`). The user's
checkout is a `git bundle` of this checkout's HEAD, copied to the host; `git clone <bundle>` is the README's
clone. Then as an unprivileged user with a fresh home, in an empty directory holding play.yml: the README's
shell lines and play, only `<this repository>` replaced by the bundle's path, under `env -i` with PATH, HOME,
LANG and https_proxy (the fleet's proxy, for pip). Bash traces each command with its time (`set -x`, PS4
holding $EPOCHREALTIME), which times the steps without changing them. Both hosts run at once.

Printed (pytest -s) and written to .build/quickstart-hosts.json per release: pip install, the clone to the
ad-hoc command's answer, the first line to that answer and to the playbook's recap, in seconds, with the
Python and ansible-core the host got.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT, require
from tests.integration.test_quickstart import quick_start

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

SYSTEMS = ("debian12", "debian13")
PYPI = "pypi.org,files.pythonhosted.org"
USER = "quickstart"
HOME = "/home/" + USER
WORK = HOME + "/work"
BUNDLE = "/srv/netstate-tcp.bundle"
RESULTS = os.path.join(ROOT, ".build", "quickstart-hosts.json")
# where the traced commands start: (name, how the command begins in bash's trace)
STEPS = (("venv", "python3 -m venv "), ("pip", "pip install "), ("clone", "git clone "),
         ("playbook", "ansible-playbook "))
TRACE = re.compile(r"^\++ (\d+\.\d+) (.*)$")


def local_certificate_authorities():
    """The CA files this machine trusts beyond Debian's ca-certificates: the .pem files of /etc/ssl/certs
    that are not links into /usr/share/ca-certificates."""
    return [path for path in sorted(glob.glob("/etc/ssl/certs/*.pem"))
            if not os.path.realpath(path).startswith("/usr/share/ca-certificates/")]


def step_times(trace):
    """name -> when the first traced command of STEPS began (epoch seconds, the host's clock is ours)."""
    found = {}
    for line in trace.splitlines():
        match = TRACE.match(line)
        if not match:
            continue
        for name, start in STEPS:
            if name not in found and match.group(2).startswith(start):
                found[name] = float(match.group(1))
    return found


def podman_exec(the_fleet, host, argv, options=(), stdin=None, timeout=900):
    """argv on host through podman exec with its options (-u USER, -w DIRECTORY); text output."""
    return subprocess.run(the_fleet.podman.command("exec", "-i", *options, the_fleet.container(host), *argv),
                          env=the_fleet.podman.env, input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)


def run_on(the_fleet, host, bundle, install, play, run):
    """apt, a fresh user, the quick start as that user; what a test checks afterwards."""
    result = {"host": host}
    started = time.monotonic()
    the_fleet.exec(host, "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                   "--no-install-recommends python3-venv git", timeout=600)
    result["apt_s"] = round(time.monotonic() - started, 1)
    # nothing else on the host provides ansible: the one that answers is the user's
    result["system_ansible"] = the_fleet.exec(host, "command -v ansible ansible-playbook", check=False).stdout
    the_fleet.podman.run("cp", str(bundle), "%s:%s" % (the_fleet.container(host), BUNDLE))
    the_fleet.exec(host, "chmod 0644 {bundle}; userdel -r {user} 2>/dev/null; useradd -m -s /bin/bash {user} && "
                   "install -d -o {user} -g {user} {work}".format(bundle=BUNDLE, user=USER, work=WORK))
    wrote = podman_exec(the_fleet, host, ["sh", "-c", "cat > %s/play.yml" % WORK], ("-u", USER), stdin=play, timeout=60)
    assert wrote.returncode == 0, wrote.stderr
    script = "set -e\nPS4='+ $EPOCHREALTIME '\nset -x\n" + install.replace("<this repository>", BUNDLE) + "\n" + run
    environment = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + HOME, "LANG=C.UTF-8",
                   "https_proxy=" + the_fleet.proxy_url]
    tunnels = the_fleet.proxy_stats()["tunnels"]
    begun = time.time()
    done = podman_exec(the_fleet, host, ["env", "-i", *environment, "bash", "-c", script], ("-u", USER, "-w", WORK))
    ended = time.time()
    result.update(returncode=done.returncode, stdout=done.stdout, stderr=done.stderr,
                  tunnels=the_fleet.proxy_stats()["tunnels"] - tunnels)
    steps = step_times(done.stderr)
    if "venv" in steps and "playbook" in steps:
        result.update(first_line_to_answer_s=round(steps["playbook"] - steps["venv"], 1),
                      first_line_to_recap_s=round(ended - steps["venv"], 1))
    if "pip" in steps and "clone" in steps:
        result["pip_install_s"] = round(steps["clone"] - steps["pip"], 1)
    if "clone" in steps and "playbook" in steps:
        result["clone_to_answer_s"] = round(steps["playbook"] - steps["clone"], 1)
    result["steps_missing"] = [name for name, _start in STEPS if name not in steps]
    result["whole_s"] = round(ended - begun, 1)
    versions = podman_exec(the_fleet, host, [
        HOME + "/netstate/bin/python", "-c", "import ansible, sys; print(ansible.__version__, sys.version.split()[0])"],
        ("-u", USER), timeout=60)
    result["ansible_core"], result["python"] = (versions.stdout.split() + ["?", "?"])[:2]
    result["venv_ansible"] = podman_exec(the_fleet, host, ["test", "-x", HOME + "/netstate/bin/ansible"],
                                         timeout=60).returncode == 0
    result["installed"] = podman_exec(the_fleet, host, ["test", "-f", HOME + (
        "/.ansible/collections/ansible_collections/netstate/tcp/MANIFEST.json")], timeout=60).returncode == 0
    return result


@pytest.fixture(scope="module")
def quick_started(fleet_factory, tmp_path_factory):
    """system -> run_on()'s result, both hosts at once; the times also go to RESULTS."""
    require(shutil.which("git") is not None, "needs git to bundle this checkout")
    inside = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", "HEAD"], capture_output=True, check=False)
    require(inside.returncode == 0, "needs a git checkout to bundle (%s)" % ROOT)
    install, play, run = quick_start()
    assert "<this repository>" in install
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NETSTATE_FLEET_PROXY_ALLOW", PYPI)
        if not os.environ.get("NETSTATE_FLEET_HOST_CA"):
            patch.setenv("NETSTATE_FLEET_HOST_CA", ",".join(local_certificate_authorities()))
        the_fleet = fleet_factory("qs", len(SYSTEMS), systems=SYSTEMS, init="none")
    hosts = {the_fleet.os(host): host for host in the_fleet.hosts}
    assert sorted(hosts) == sorted(SYSTEMS), hosts
    bundle = tmp_path_factory.mktemp("quickstart") / "netstate-tcp.bundle"
    subprocess.run(["git", "-C", ROOT, "bundle", "create", "-q", str(bundle), "HEAD"], capture_output=True,
                   check=True)
    with ThreadPoolExecutor(len(SYSTEMS)) as pool:
        runs = dict(zip(SYSTEMS, pool.map(lambda system: run_on(the_fleet, hosts[system], bundle, install, play, run),
                                          SYSTEMS)))
    measured = {system: {key: value for key, value in result.items()
                         if key.endswith("_s") or key in ("python", "ansible_core", "returncode")}
                for system, result in runs.items()}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as handle:
        json.dump(measured, handle, indent=2, sort_keys=True)
        handle.write("\n")
    for system in SYSTEMS:
        times = measured[system]
        print("\nquick start on %s (Python %s, ansible-core %s): pip install %s s, git clone to the first answer "
              "%s s, first line to the answer %s s and to the recap %s s (apt-get install before it: %s s)" % (
                  system, times["python"], times["ansible_core"], times.get("pip_install_s"),
                  times.get("clone_to_answer_s"), times.get("first_line_to_answer_s"),
                  times.get("first_line_to_recap_s"), times["apt_s"]))
    return runs


@pytest.mark.parametrize("system", SYSTEMS)
def test_quick_start_runs_verbatim_on_a_fresh_host(quick_started, system):
    result = quick_started[system]
    output = result["stdout"] + result["stderr"]
    assert result["returncode"] == 0, output[-6000:]
    assert result["steps_missing"] == [], (result["steps_missing"], result["stderr"][-3000:])
    assert result["tunnels"] > 0, "pip did not reach PyPI through the fleet's proxy"
    assert result["system_ansible"] == "", "the host has an ansible of its own: %r" % result["system_ansible"]
    assert result["venv_ansible"]  # the user's venv, the only ansible on the host
    answer = result["stdout"].split("localhost | SUCCESS => ", 1)
    assert len(answer) == 2, result["stdout"][-4000:]
    assert '"netstate"' in answer[1] and '"states"' in answer[1]
    assert re.search(r"^localhost\s*: ok=\d+ .*failed=0 ", result["stdout"], re.M), result["stdout"][-4000:]
    assert re.search(r"\d+ health results, none at or above critical", result["stdout"]), result["stdout"][-4000:]
    assert result["installed"], "not installed from the tarball into the user's collections"
    # what the README says pip picks: 2.19 on Python 3.11, 2.20 or later from Python 3.12 on
    python = tuple(int(part) for part in result["python"].split(".")[:2])
    core = tuple(int(part) for part in result["ansible_core"].split(".")[:2])
    if python < (3, 12):
        assert core == (2, 19), result["ansible_core"]
    else:
        assert core >= (2, 20), result["ansible_core"]
