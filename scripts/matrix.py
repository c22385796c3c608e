# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ansible-core test matrix (make test-matrix): for every release line the collection supports,
ansible-test sanity, ansible-test units and a smoke run of the modules and playbooks on real SSH hosts.

    .venv/bin/python scripts/matrix.py [--only 2.16,2.21] [--jobs 1|2] [--latest]

Where each release runs (MATRIX below):

* 2.16 to 2.19 on this machine's Python 3.11, each in its own virtualenv .build/matrix/venv-<version>
  (ansible-core and tests/matrix/requirements.txt); ansible-test through scripts/ansible-test.sh.
* 2.20 and 2.21 need Python 3.12 or later on the controller: they run on a Debian 13 fleet host
  (Python 3.13) with the collection copied in. Their wheels (ansible-core, its dependencies, every
  requirement file of that ansible-test, the unit test requirements) are downloaded on this machine
  (``pip download --python-version 3.13 --only-binary=:all:``) and copied in; the host's pip is set
  to use nothing else (no index), so the host needs no network.
* The smoke run (tests/matrix/smoke.yml, smoke_tune.yml --check) drives other fleet hosts over SSH:
  Debian 12 (Python 3.11) and Debian 11 (3.9) for every release, Debian 13 (3.13) for the releases
  that support 3.13 on targets. 2.20 and 2.21 drive them from the Debian 13 controller host.

One fleet of four hosts per run (h01 Debian 13: controller; h02 Debian 12, h03 Debian 13, h04 Debian 11:
targets), always taken down at the end. One progress line per phase; a final table; the logs of every
phase in .build/matrix/logs/, the results (with the time each sanity test took) in .build/matrix/results.json.
Exit status 0 only when every phase of every release passed.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".build" / "matrix"
LOGS = BUILD / "logs"
REQUIREMENTS = ROOT / "tests" / "matrix" / "requirements.txt"
UNIT_REQUIREMENTS = ROOT / "tests" / "unit" / "requirements.txt"
SMOKE = "tests/matrix/smoke.yml"
SMOKE_TUNE = "tests/matrix/smoke_tune.yml"
sys.path.insert(0, str(ROOT / "tests" / "fleet"))

import fleet as fleet_module  # noqa: E402  (tests/fleet/fleet.py)

# The remote controller: where the collection, wheels and virtualenvs go on the Debian 13 host.
REMOTE = "/opt/netstate-matrix"
REMOTE_WHEELS = REMOTE + "/wheels"
REMOTE_KEY = "/root/.ssh/netstate-fleet"
REMOTE_PYTHON = "3.13"
HOST_CACHE = BUILD / "host-cache.tar"
# h01 runs the controller of 2.20/2.21; h02 to h04 are the smoke targets (each release drives
# those whose Python it supports).
FLEET_SYSTEMS = ("debian13", "debian12", "debian13", "debian11")
TARGETS = {"h02": "3.11", "h03": "3.13", "h04": "3.9"}


@dataclass
class Release:
    line: str                 # 2.16
    version: str              # 2.16.19, the latest patch on PyPI when the matrix was last updated
    where: str                # local (this machine) or fleet (the Debian 13 host h01)
    controller: str           # Python of the controller
    targets: Sequence[str]    # target Pythons this release supports, of TARGETS
    results: Dict[str, str] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    cpu: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    sanity_tests: Dict[str, float] = field(default_factory=dict)

    @property
    def hosts(self) -> List[str]:
        return [host for host, python in TARGETS.items() if python in self.targets]


# Controller and target Pythons each release supports (ansible_test/_util/target/common/constants.py
# of each release): 2.16 controller 3.10-3.12, targets 2.7 and 3.6-3.12; 2.17 controller 3.10-3.12,
# targets 3.7-3.12; 2.18/2.19 controller 3.11-3.13, targets 3.8-3.13; 2.20/2.21 controller 3.12-3.14,
# targets 3.9-3.14.
MATRIX = [
    Release("2.16", "2.16.19", "local", "3.11", ("3.11", "3.9")),
    Release("2.17", "2.17.14", "local", "3.11", ("3.11", "3.9")),
    Release("2.18", "2.18.19", "local", "3.11", ("3.11", "3.13", "3.9")),
    Release("2.19", "2.19.14", "local", "3.11", ("3.11", "3.13", "3.9")),
    Release("2.20", "2.20.10", "fleet", REMOTE_PYTHON, ("3.11", "3.13", "3.9")),
    Release("2.21", "2.21.5", "fleet", REMOTE_PYTHON, ("3.11", "3.13", "3.9")),
]
PHASES = ("venv", "sanity", "units", "smoke")
PRINT_LOCK = threading.Lock()
CPU = threading.local()   # CPU seconds of the commands the current phase ran on this machine
STARTED = time.monotonic()


def say(line: str) -> None:
    with PRINT_LOCK:
        print("matrix [{:5.0f}s] {}".format(time.monotonic() - STARTED, line), flush=True)


class PhaseError(Exception):
    """A phase failed; the message is its one-line reason."""


def run_logged(argv: Sequence[str], log: Path, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
               timeout: float = 1800, stdin: Optional[bytes] = None) -> List[str]:
    """Runs argv with stdout+stderr into log, each line stamped with the seconds since it started.
    Returns the output lines (unstamped); PhaseError when the exit status is not 0."""
    log.parent.mkdir(parents=True, exist_ok=True)
    lines: List[str] = []
    started = time.monotonic()
    with open(log, "w", buffering=1) as out:   # line buffered: the log can be followed while it runs
        out.write("$ {}\n".format(" ".join(shlex.quote(a) for a in argv)))
        process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                   cwd=str(cwd) if cwd else None,
                                   stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
        if stdin is not None:
            threading.Thread(target=_feed, args=(process, stdin), daemon=True).start()
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                out.write("[{:7.1f}] {}\n".format(time.monotonic() - started, line))
            # wait4: the CPU seconds of this command and what it waited for (not of a podman exec'd one)
            status, usage = os.wait4(process.pid, 0)[1:]
            process.returncode = os.waitstatus_to_exitcode(status)
            CPU.seconds = getattr(CPU, "seconds", 0.0) + usage.ru_utime + usage.ru_stime
        finally:
            timer.cancel()
        out.write("exit status {}\n".format(process.returncode))
    if process.returncode != 0:
        raise PhaseError("exit status {} ({}), last lines: {}".format(
            process.returncode, log.relative_to(ROOT), " | ".join(_interesting(lines))))
    return lines


def _feed(process: subprocess.Popen, data: bytes) -> None:
    try:
        process.stdin.write(data)
        process.stdin.close()
    except OSError:
        pass


def _interesting(lines: List[str], count: int = 4) -> List[str]:
    picked = [line for line in lines if re.search(r"ERROR|FATAL|FAILED|fatal:|failed=[1-9]|Error", line)]
    return [line.strip()[:300] for line in (picked or lines)[-count:]]


def sanity_times(log: Path) -> Dict[str, float]:
    """Seconds per sanity test, from the stamps of the 'Running sanity test' lines of its log."""
    marks = []
    end = None
    for line in log.read_text(errors="replace").splitlines():
        match = re.match(r"\[\s*([0-9.]+)\] (.*)", line)
        if not match:
            continue
        end = float(match.group(1))
        test = re.match(r'Running sanity test "([^"]+)"', match.group(2))
        if test:
            marks.append((test.group(1), end))
    times = {}
    for index, (name, start) in enumerate(marks):
        stop = marks[index + 1][1] if index + 1 < len(marks) else end
        times[name] = round(stop - start, 1)
    return times


def sanity_verdict(lines: List[str]) -> None:
    """ansible-test exits 0 even when it skipped a test for want of a program (shellcheck): here that
    is a failure. pwsh is the exception: pslint has no PowerShell file to check in this collection."""
    missing = [line.strip() for line in lines
               if re.search(r'WARNING: (Required program "[^"]+" not found|Skipping sanity test)', line)
               and "pwsh" not in line]
    if missing:
        raise PhaseError("sanity could not run every test: " + " | ".join(missing))


# ---------------------------------------------------------------------------------- local releases
def local_env(release: Release) -> Dict[str, str]:
    env = dict(os.environ)
    venv = BUILD / ("venv-" + release.version)
    env["NETSTATE_ANSIBLE_VENV"] = str(venv)
    base = os.environ.get("NETSTATE_ANSIBLE_TEST_DIR", "/var/tmp/netstate-tcp-ansible-test")
    env["NETSTATE_ANSIBLE_TEST_DIR"] = "{}-matrix-{}".format(base, release.line)
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".build" / "collections")
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env.pop("ANSIBLE_PYTHON_INTERPRETER", None)
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


def local_venv(release: Release) -> None:
    """.build/matrix/venv-<version>: ansible-core and the controller requirements, made once."""
    venv = BUILD / ("venv-" + release.version)
    stamp = venv / ".netstate-matrix"
    want = hashlib.sha256((release.version + "\n").encode() + REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return
    shutil.rmtree(venv, ignore_errors=True)
    log = LOGS / "{}-venv.log".format(release.line)
    # the system Python 3.11 (Debian 12), not the virtualenv running this script
    run_logged(["/usr/bin/python3", "-m", "venv", str(venv)], log)
    run_logged([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                "ansible-core==" + release.version, "-r", str(REQUIREMENTS)], LOGS / "{}-pip.log".format(release.line))
    version = subprocess.run([str(venv / "bin" / "python"), "-c", "import ansible; print(ansible.__version__)"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    if version != release.version:
        raise PhaseError("the virtualenv holds ansible-core {}, not {}".format(version, release.version))
    stamp.write_text(want)


def local_sanity(release: Release) -> None:
    log = LOGS / "{}-sanity.log".format(release.line)
    try:
        lines = run_logged(["bash", str(ROOT / "scripts" / "ansible-test.sh"), "sanity"], log,
                           env=local_env(release))
    finally:
        release.sanity_tests = sanity_times(log)
    sanity_verdict(lines)


def local_units(release: Release) -> None:
    run_logged(["bash", str(ROOT / "scripts" / "ansible-test.sh"), "units"], LOGS / "{}-units.log".format(release.line),
               env=local_env(release))


def inventory_text(hosts: Dict[str, str], key: str, ssh_args: Sequence[str]) -> str:
    lines = ["# the matrix smoke targets (scripts/matrix.py)", "[targets]"]
    lines += ["{} ansible_host={}".format(host, address) for host, address in hosts.items()]
    lines += ["", "[targets:vars]", "ansible_user=root", "ansible_ssh_private_key_file=" + key,
              "ansible_python_interpreter=/usr/bin/python3",
              "ansible_ssh_common_args='{}'".format(" ".join(ssh_args)), ""]
    return "\n".join(lines)


def check_recap(lines: List[str], hosts: Sequence[str], what: str) -> None:
    """Every target ran (ok > 0) and none failed or was unreachable: the playbook's assertions held."""
    recap = {m.group(1): m.groups()[1:] for m in (
        re.match(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)", line) for line in lines)
        if m}
    for host in hosts:
        ok, unreachable, failed = (int(v) for v in recap.get(host, ("0", "0", "0")))
        if ok == 0 or unreachable or failed:
            raise PhaseError("{}: {} ok={} unreachable={} failed={}".format(what, host, ok, unreachable, failed))
    passed = sum(1 for line in lines if '"msg": "All assertions passed"' in line)
    # smoke.yml: three assertions per host and one on localhost; smoke_tune.yml: one per host
    expected = 3 * len(hosts) + 1 if what == "smoke" else len(hosts)
    if passed != expected:
        raise PhaseError("{}: {} assertions passed, expected {}".format(what, passed, expected))


def local_smoke(release: Release, fleet: "MatrixFleet") -> None:
    fleet.wait()
    hosts = {host: fleet.fleet.address(host) for host in release.hosts}
    directory = BUILD / "smoke" / release.line
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    inventory = directory / "inventory.ini"
    inventory.write_text(inventory_text(hosts, str(fleet.fleet.key), fleet.fleet.ssh_args()))
    env = local_env(release)
    playbook = str(BUILD / ("venv-" + release.version) / "bin" / "ansible-playbook")
    lines = run_logged([playbook, "-i", str(inventory), SMOKE, "-e", "netstate_smoke_dir=" + str(directory)],
                       LOGS / "{}-smoke.log".format(release.line), env=env, cwd=ROOT)
    check_recap(lines, list(hosts), "smoke")
    lines = run_logged([playbook, "-i", str(inventory), SMOKE_TUNE, "--check",
                        "-e", "netstate_tuning_profile=client_heavy"],
                       LOGS / "{}-smoke-tune.log".format(release.line), env=env, cwd=ROOT)
    check_recap(lines, list(hosts), "smoke tune")


# ---------------------------------------------------------------------------------- the fleet
class MatrixFleet:
    """The run's fleet: h01 the Debian 13 controller, h02/h03 targets; brought up in the background."""

    def __init__(self) -> None:
        self.fleet = fleet_module.Fleet(name="mx{}".format(os.getpid() % 100000), owner_pid=os.getpid())
        self.ready = threading.Event()
        self.error: Optional[str] = None
        self.kinds = "systems" in inspect.signature(fleet_module.Fleet.up).parameters
        self.seconds = 0.0

    def up(self) -> None:
        started = time.monotonic()
        try:
            if self.kinds:
                self.fleet.up(len(FLEET_SYSTEMS), systems=FLEET_SYSTEMS, init="none")
            else:
                self.fleet.up(2)
            self.seconds = time.monotonic() - started
            say("fleet {}: {} hosts up in {:.0f}s".format(self.fleet.name, len(self.fleet.hosts), self.seconds))
        except Exception as error:  # noqa: BLE001  (any failure ends in the table, not a traceback)
            self.error = "fleet up failed: {}".format(error)
            say(self.error)
        finally:
            self.ready.set()

    def wait(self) -> None:
        self.ready.wait()
        if self.error:
            raise PhaseError(self.error)

    def os_of(self, host: str) -> str:
        if hasattr(self.fleet, "os"):
            return self.fleet.os(host)
        return "debian12"

    def down(self) -> None:
        if os.environ.get("NETSTATE_FLEET_KEEP") == "1":
            say("fleet {} kept (NETSTATE_FLEET_KEEP=1)".format(self.fleet.name))
            return
        try:
            self.fleet.down()
        except Exception as error:  # noqa: BLE001
            say("fleet down failed: {}".format(error))


# ---------------------------------------------------------------------------------- fleet releases
def pip_pin(wheel: Path) -> str:
    """The pip version this ansible-test bootstraps in its virtualenvs."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("ansible_test/_internal/python_requirements.py").decode()
    return re.search(r"pip='([0-9.]+)'", source).group(1)


def requirement_files(wheel: Path, into: Path) -> List[Path]:
    """ansible-test's requirement files (sanity, units, its own, ansible-core's) out of the wheel."""
    into.mkdir(parents=True, exist_ok=True)
    files = []
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            match = re.match(r"ansible_test/_data/requirements/([a-z0-9.-]+\.txt)$", name)
            if match and not match.group(1).startswith("windows"):
                path = into / match.group(1)
                path.write_bytes(archive.read(name))
                files.append(path)
    return sorted(files)


def download_wheels(releases: Sequence[Release]) -> Path:
    """Every wheel the fleet releases need for Python 3.13, into .build/matrix/wheels-cp313 (cached)."""
    wheels = BUILD / "wheels-cp{}".format(REMOTE_PYTHON.replace(".", ""))
    # what decides the wheels: the releases, the Python, our requirement files (not this script's text)
    digest = hashlib.sha256()
    for path in (REQUIREMENTS, UNIT_REQUIREMENTS):
        digest.update(path.read_bytes())
    digest.update(" ".join([REMOTE_PYTHON] + [r.version for r in releases]).encode())
    stamp = wheels / ".netstate-matrix"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return wheels
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [str(ROOT / ".venv" / "bin" / "pip"), "download", "-q", "--disable-pip-version-check",
           "--python-version", REMOTE_PYTHON, "--only-binary=:all:", "-d", str(wheels)]
    for release in releases:
        log = LOGS / "{}-wheels.log".format(release.line)
        run_logged(pip + ["--no-deps", "ansible-core==" + release.version], log)
        wheel = next(wheels.glob("ansible_core-{}-*.whl".format(release.version)))
        requirements = requirement_files(wheel, BUILD / "requirements-{}".format(release.version))
        run_logged(pip + ["ansible-core==" + release.version, "pip==" + pip_pin(wheel), "-r", str(REQUIREMENTS)],
                   LOGS / "{}-wheels-core.log".format(release.line))
        constraints = [path for path in requirements if path.name == "constraints.txt"]
        for path in requirements:
            if path.name != "constraints.txt":
                run_logged(pip + ["-r", str(path)], LOGS / "{}-wheels-{}.log".format(release.line, path.stem))
        run_logged(pip + ["-r", str(UNIT_REQUIREMENTS)] + [arg for c in constraints for arg in ("-c", str(c))],
                   LOGS / "{}-wheels-unit.log".format(release.line))
    stamp.write_text(digest.hexdigest())
    return wheels


class Remote:
    """The Debian 13 controller host h01, prepared once for the fleet releases."""

    def __init__(self, fleet: MatrixFleet) -> None:
        self.fleet = fleet
        self.prepared = False

    @property
    def container(self) -> str:
        return self.fleet.fleet.container("h01")

    def exec_argv(self, command: str, workdir: str = "/") -> List[str]:
        return self.fleet.fleet.podman.command("exec", "-i", "-w", workdir, self.container, "sh", "-c", command)

    def run(self, command: str, log: Path, workdir: str = "/", stdin: Optional[bytes] = None,
            timeout: float = 1800) -> List[str]:
        return run_logged(self.exec_argv(command, workdir), log, env=self.fleet.fleet.podman.env,
                          stdin=stdin, timeout=timeout)

    def prepare(self, releases: Sequence[Release]) -> None:
        """Wheels, pip's configuration, the fleet key and the collection on h01 (once per run)."""
        if self.prepared:
            return
        wheels = download_wheels(releases)   # while the fleet comes up
        self.fleet.wait()
        if self.fleet.os_of("h01") != "debian13":
            raise PhaseError("the fleet has no Debian 13 host to be the controller (tests/fleet/fleet.py "
                             "without host kinds)")
        podman = self.fleet.fleet.podman
        log = LOGS / "remote-prepare.log"
        self.run("mkdir -p {0} /root/.ssh /root/.ansible/test/cache && rm -rf {1}".format(REMOTE, REMOTE_WHEELS), log)
        podman.run("cp", str(wheels), "{}:{}".format(self.container, REMOTE_WHEELS), timeout=600)
        podman.run("cp", str(self.fleet.fleet.key), "{}:{}".format(self.container, REMOTE_KEY))
        archive = subprocess.run(
            "git ls-files -z --cached --others --exclude-standard | tar --null -T - -c",
            shell=True, cwd=str(ROOT), stdout=subprocess.PIPE, check=True).stdout
        self.run("rm -rf {0}/collection && mkdir -p {0}/collection && tar -x -C {0}/collection".format(REMOTE),
                 LOGS / "remote-collection.log", stdin=archive)
        pip_conf = ("[global]\nno-index = true\nfind-links = {}\n"
                    "disable-pip-version-check = true\n").format(REMOTE_WHEELS)
        self.run("cat > /etc/pip.conf && chmod 600 {key} && chown -R root:root {key} {wheels}".format(
            key=REMOTE_KEY, wheels=REMOTE_WHEELS), log, stdin=pip_conf.encode())
        # shellcheck for ansible-test's shellcheck test, from Debian's mirror through the fleet's proxy
        self.run("command -v shellcheck >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                 "apt-get install -y -qq --no-install-recommends shellcheck; }", LOGS / "remote-apt.log", timeout=600)
        self.restore_cache(releases)
        self.prepared = True

    # The virtualenvs a run made on h01 (ours, ansible-test's sanity ones and the ones it delegates
    # to) are kept in .build/matrix/host-cache.tar for the next run's fresh host: the same paths, the
    # same image, the same wheels, so they are what ansible-test would find in its own cache.
    def cache_key(self, releases: Sequence[Release]) -> str:
        image = self.fleet.fleet.podman.text("inspect", "--format", "{{.Image}}", self.container)
        stamp = (BUILD / "wheels-cp313" / ".netstate-matrix").read_text()
        return hashlib.sha256("{} {} {}".format(image, stamp, [r.version for r in releases]).encode()).hexdigest()

    def restore_cache(self, releases: Sequence[Release]) -> None:
        key_file = HOST_CACHE.with_suffix(".key")
        if not HOST_CACHE.exists() or not key_file.exists() or key_file.read_text() != self.cache_key(releases):
            say("host cache: none for this image and these wheels, h01 builds its virtualenvs")
            return
        started = time.monotonic()
        with open(HOST_CACHE, "rb") as handle:
            self.run("tar -x -C /", LOGS / "remote-cache-restore.log", stdin=handle.read())
        say("host cache: virtualenvs restored on h01 in {:.0f}s".format(time.monotonic() - started))

    def save_cache(self, releases: Sequence[Release]) -> None:
        paths = ["root/.ansible/test/venv"] + ["{}/venv-{}".format(REMOTE[1:], r.version) for r in releases] + [
            self.tree(r)[1:] + "/tests/output/.tmp/delegation" for r in releases]
        command = "cd / && tar -c $(for p in {}; do test -e $p && echo $p; done)".format(" ".join(paths))
        with open(str(HOST_CACHE) + ".tmp", "wb") as out:
            result = subprocess.run(self.exec_argv(command), env=self.fleet.fleet.podman.env, stdout=out,
                                    stderr=subprocess.PIPE, check=False, timeout=600)
        if result.returncode != 0:
            say("host cache: not saved: " + result.stderr.decode(errors="replace").strip()[-300:])
            return
        os.replace(str(HOST_CACHE) + ".tmp", HOST_CACHE)
        HOST_CACHE.with_suffix(".key").write_text(self.cache_key(releases))
        say("host cache: saved ({:.0f} MB)".format(HOST_CACHE.stat().st_size / 1e6))

    def tree(self, release: Release) -> str:
        return "{}/{}/ansible_collections/netstate/tcp".format(REMOTE, release.line)

    def venv(self, release: Release) -> None:
        wheel = sorted(Path(BUILD / "wheels-cp313").glob("ansible_core-{}-*.whl".format(release.version)))[0]
        pin = pip_pin(wheel)
        venv = "{}/venv-{}".format(REMOTE, release.version)
        tree = self.tree(release)
        version_check = "{venv}/bin/python -c 'import ansible, sys; print(ansible.__version__, sys.version.split()[0])'"
        script = " && ".join([
            # a fresh copy of the collection; ansible-test's own output (its delegation virtualenv) stays
            "mkdir -p {tree}/tests/output",
            "find {tree} -mindepth 1 -maxdepth 1 ! -name tests -exec rm -rf {{}} +",
            "find {tree}/tests -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {{}} +",
            "cp -a {remote}/collection/. {tree}/",
            # a virtualenv from the host cache is used when it holds this ansible-core
            "if ! " + version_check + " 2>/dev/null | grep -q '^{version} '; then rm -rf {venv}"
            # Debian's python3 has no ensurepip without python3-venv: pip runs from its own wheel.
            " && python3 -m venv --without-pip {venv}"
            " && {venv}/bin/python {wheels}/pip-{pin}-py3-none-any.whl/pip install -q pip=={pin}"
            " ansible-core=={version} -r {tree}/tests/matrix/requirements.txt; fi",
            "cp {tree}/scripts/get_pip.py /root/.ansible/test/cache/get_pip_{under}.py",
            version_check,
        ]).format(venv=venv, tree=tree, remote=REMOTE, wheels=REMOTE_WHEELS, pin=pin, version=release.version,
                  under=pin.replace(".", "_"))
        lines = self.run(script, LOGS / "{}-venv.log".format(release.line))
        if not lines or lines[-1].split()[0] != release.version:
            raise PhaseError("the host's virtualenv says {!r}, not {}".format(lines[-1:], release.version))
        release.controller = lines[-1].split()[1]

    def ansible_test(self, release: Release, command: str) -> List[str]:
        venv = "{}/venv-{}".format(REMOTE, release.version)
        script = "PATH={venv}/bin:$PATH ansible-test {command} --venv --python {python} --color no".format(
            venv=venv, command=command, python=REMOTE_PYTHON)
        log = LOGS / "{}-{}.log".format(release.line, command)
        try:
            return self.run(script, log, workdir=self.tree(release))
        finally:
            if command == "sanity":
                release.sanity_tests = sanity_times(log)

    def smoke(self, release: Release) -> None:
        fleet = self.fleet.fleet
        hosts = {host: fleet.address(host) for host in release.hosts}
        ssh_args = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"]
        directory = "{}/smoke-{}".format(REMOTE, release.line)
        top = "{}/{}".format(REMOTE, release.line)
        env = ("ANSIBLE_COLLECTIONS_PATH={top} ANSIBLE_CONFIG={tree}/ansible.cfg ANSIBLE_NOCOLOR=1 "
               "PATH={remote}/venv-{version}/bin:$PATH").format(
                   top=top, tree=self.tree(release), remote=REMOTE, version=release.version)
        prepare = "rm -rf {d} && mkdir -p {d} && cat > {d}/inventory.ini".format(d=directory)
        self.run(prepare, LOGS / "{}-smoke-inventory.log".format(release.line),
                 stdin=inventory_text(hosts, REMOTE_KEY, ssh_args).encode())
        lines = self.run("{env} ansible-playbook -i {d}/inventory.ini {smoke} -e netstate_smoke_dir={d}".format(
            env=env, d=directory, smoke=SMOKE), LOGS / "{}-smoke.log".format(release.line), workdir=self.tree(release))
        check_recap(lines, list(hosts), "smoke")
        lines = self.run("{env} ansible-playbook -i {d}/inventory.ini {tune} --check -e netstate_tuning_profile="
                         "client_heavy".format(env=env, d=directory, tune=SMOKE_TUNE),
                         LOGS / "{}-smoke-tune.log".format(release.line), workdir=self.tree(release))
        check_recap(lines, list(hosts), "smoke tune")


# ---------------------------------------------------------------------------------- driver
def phase(release: Release, name: str, action) -> bool:
    started = time.monotonic()
    CPU.seconds = 0.0
    try:
        action()
        release.results[name] = "ok"
    except PhaseError as error:
        release.results[name] = "FAIL"
        release.notes.append("{}: {}".format(name, error))
    except Exception as error:  # noqa: BLE001  (a broken phase is a failed phase, in the table)
        release.results[name] = "FAIL"
        release.notes.append("{}: {}: {}".format(name, type(error).__name__, error))
    release.seconds[name] = time.monotonic() - started
    release.cpu[name] = CPU.seconds
    detail = ""
    if name == "sanity" and release.sanity_tests:
        costly = sorted(release.sanity_tests.items(), key=lambda item: -item[1])[:3]
        detail = " (" + ", ".join("{} {:.0f}s".format(test, seconds) for test, seconds in costly) + ")"
    if release.where == "local":
        detail += " cpu {:.0f}s".format(release.cpu[name])
    say("{} {:<6} {}{} in {:.0f}s{}".format(release.version, name, release.results[name], detail,
                                            release.seconds[name],
                                            "" if release.results[name] == "ok" else ": " + release.notes[-1]))
    return release.results[name] == "ok"


def run_local(release: Release, fleet: MatrixFleet) -> None:
    if not phase(release, "venv", lambda: local_venv(release)):
        for name in PHASES[1:]:
            release.results[name] = "not run"
        return
    phase(release, "sanity", lambda: local_sanity(release))
    phase(release, "units", lambda: local_units(release))
    phase(release, "smoke", lambda: local_smoke(release, fleet))


def run_remote(release: Release, remote: Remote, releases: Sequence[Release]) -> None:
    def venv() -> None:
        remote.prepare(releases)
        remote.venv(release)

    if not phase(release, "venv", venv):
        for name in PHASES[1:]:
            release.results[name] = "not run"
        return
    phase(release, "sanity", lambda: sanity_verdict(remote.ansible_test(release, "sanity")))
    phase(release, "units", lambda: remote.ansible_test(release, "units"))
    phase(release, "smoke", lambda: remote.smoke(release))


def table(releases: Sequence[Release], total: float) -> str:
    rows = [("ansible-core", "controller python", "targets", "sanity", "units", "smoke", "seconds")]
    for release in releases:
        where = "this machine" if release.where == "local" else "fleet h01 debian13"
        rows.append((release.version, "{} ({})".format(release.controller, where),
                     ",".join(release.targets), release.results.get("sanity", "-"), release.results.get("units", "-"),
                     release.results.get("smoke", "-"), "{:.0f}".format(sum(release.seconds.values()))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("total wall time {:.0f}s".format(total))
    return "\n".join(lines)


def latest_patches() -> Dict[str, str]:
    """The newest patch release of each line on PyPI (pip index versions, for Python 3.13)."""
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "pip"), "index", "versions", "ansible-core",
                          "--python-version", REMOTE_PYTHON], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, check=True).stdout
    versions = re.search(r"Available versions: (.*)", out).group(1).split(", ")
    newest: Dict[str, str] = {}
    for version in versions:
        line = ".".join(version.split(".")[:2])
        newest.setdefault(line, version)
    return newest


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--only", help="comma separated release lines (2.16,2.21); default all")
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=int(os.environ.get("MATRIX_JOBS", "2")),
                        help="2: the local releases and the fleet releases side by side (default)")
    parser.add_argument("--latest", action="store_true", help="compare MATRIX with PyPI's newest patches and exit")
    args = parser.parse_args(argv)
    if args.latest:
        newest = latest_patches()
        stale = 0
        for release in MATRIX:
            current = newest.get(release.line)
            stale += current != release.version
            hint = "" if current == release.version else "  <- update MATRIX"
            print("{} matrix {} PyPI {}{}".format(release.line, release.version, current, hint))
        return 1 if stale else 0
    releases = [r for r in MATRIX if not args.only or r.line in args.only.split(",")]
    if not releases:
        parser.error("--only {!r} names no release of {}".format(args.only, ", ".join(r.line for r in MATRIX)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    say("releases {}; fleet {}; logs {}".format(", ".join(r.version for r in releases), ",".join(FLEET_SYSTEMS),
                                                LOGS.relative_to(ROOT)))
    fleet = MatrixFleet()
    remote = Remote(fleet)
    local = [r for r in releases if r.where == "local"]
    remote_releases = [r for r in releases if r.where == "fleet"]
    started = time.monotonic()
    up = threading.Thread(target=fleet.up, daemon=True)
    up.start()
    try:
        def local_lane() -> None:
            for release in local:
                run_local(release, fleet)

        def remote_lane() -> None:
            for release in remote_releases:
                run_remote(release, remote, remote_releases)
            if remote_releases and all(r.results.get("venv") == "ok" for r in remote_releases):
                remote.save_cache(remote_releases)

        if args.jobs == 2:
            lanes = [threading.Thread(target=lane, daemon=True) for lane in (local_lane, remote_lane)]
            for lane in lanes:
                lane.start()
            for lane in lanes:
                lane.join()
        else:
            local_lane()
            remote_lane()
        up.join()
    finally:
        fleet.down()
    total = time.monotonic() - started
    say("done\n" + table(releases, total))
    failed = [r for r in releases if any(r.results.get(p) != "ok" for p in PHASES)]
    for release in failed:
        for note in release.notes:
            print("matrix: {} {}".format(release.version, note))
    (BUILD / "results.json").write_text(json.dumps({
        "total_seconds": round(total, 1), "fleet_up_seconds": round(fleet.seconds, 1),
        "releases": [{"version": r.version, "where": r.where, "controller_python": r.controller,
                      "targets": list(r.targets), "results": r.results,
                      "seconds": {k: round(v, 1) for k, v in r.seconds.items()},
                      "cpu_seconds_here": {k: round(v, 1) for k, v in r.cpu.items()},
                      "sanity_tests": r.sanity_tests, "notes": r.notes} for r in releases]}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
