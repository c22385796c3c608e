# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The execution environment (EE) AWX runs netstate.tcp jobs in: built with ansible-builder, run with
ansible-runner against the fleet's hosts.

Command line (as root)::

    python3 tests/fleet/ee.py build                        # prints the image, builds it unless cached
    python3 tests/fleet/fleet.py --name demo up --hosts 2
    python3 tests/fleet/ee.py --fleet demo run --dir /tmp/job -e netstate_health_fail_on=warning
    python3 tests/fleet/fleet.py --name demo down

Importable::

    from ee import ExecutionEnvironment
    ee = ExecutionEnvironment(fleet)           # a Fleet (fleet.py): its podman storage and network
    image = ee.ensure()                        # localhost/netstate-ee:<hash>, built once
    job = ee.run(tmp_path / "job", hosts=["h01", "h02"], extravars={...})
    job.rc, job.status, job.report("health.json"), job.events()

What is built, from the project's own files only (nothing is pulled from a registry)
    * the base image ``localhost/netstate-ee-base:<hash>``: the fleet's Debian 12 image
      (``localhost/netstate-fleet-debian12-none``, debootstrap) with tests/fleet/ee/base.Containerfile:
      pip, venv and the package manager ansible-builder's scripts call (tests/fleet/ee/netstate-ee-pkgmgr,
      dnf's ``install -y`` and ``clean all`` on apt-get);
    * the EE ``localhost/netstate-ee:<hash>``: ``ansible-builder build`` of tests/fleet/ee/execution-environment.yml
      (schema 3) with the collection tarball that ``ansible-galaxy collection build`` makes from this tree.
      ansible-builder installs the tarball, introspects it and so installs what the collection's own
      meta/execution-environment.yml names (meta/ee-requirements.txt, meta/ee-bindep.txt), then
      ansible-core, ansible-runner and dumb-init from PyPI.
    Both tags are content hashes: the base's covers base.Containerfile, netstate-ee-pkgmgr and the fleet
    image's tag (itself a hash of the fleet recipe); the EE's covers the base tag, the definition, the
    galaxy requirements, the collection tarball's MANIFEST.json and FILES.json (the checksum of every file
    shipped) and ansible-builder's version. An image whose tag exists is never rebuilt; a new one drops
    the tags of its repository but the three newest. Builds run ``podman build --layers=false --network
    host``: RUN steps reach Debian's mirror and PyPI as the machine does, and the machine's CA bundle
    (/etc/ssl/certs/ca-certificates.crt) is mounted over the image's for the build's steps only (a machine
    whose way out re-signs TLS), never kept.

How a job runs (as AWX runs one with podman)
    ``ansible-runner run DIR -p health.yml --process-isolation --process-isolation-executable podman
    --container-image IMAGE --container-option=--user=root --container-option=--network=nsf-<fleet>``.
    DIR is the job's private data directory: ``inventory/hosts`` (the fleet's hosts by address, its SSH
    options without the host-side ControlPath), ``env/ssh_key`` (the fleet key: runner hands it to
    ssh-agent in the container, as AWX does with a machine credential), ``env/extravars`` and
    ``project/health.yml`` (the project's playbook: ``import_playbook: netstate.tcp.health``) and
    ``project/ansible.cfg`` (SSH pipelining, as this tree's ansible.cfg for plain runs). The container
    joins the fleet's own bridge network, so it reaches the hosts as a controller on that network would.
    ``--user=root`` is what AWX passes to podman too: the private data directory belongs to root here.
    The health reports land in DIR/project/netstate-health (the role's relative default report dir).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fleet import SYSTEMS, Fleet, FleetError, _locked, default_name, log  # noqa: E402  (tests/fleet/fleet.py)

EE_FILES = HERE / "ee"
BASE_FILES = ("base.Containerfile", "netstate-ee-pkgmgr")
DEFINITION_FILES = ("execution-environment.yml", "requirements.yml")
BASE_REPO = "localhost/netstate-ee-base"
EE_REPO = "localhost/netstate-ee"
BASE_KIND = ("debian12", "none")          # the fleet image the base is made from
KEEP_IMAGES = 3                           # tags kept per repository (the newest)
TARBALL = "netstate-tcp.tar.gz"           # the name execution-environment.yml and requirements.yml use
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PROJECT_PLAYBOOK = "health.yml"
# The project's ansible.cfg (ansible-playbook runs in the project directory): SSH pipelining, as this
# tree's ansible.cfg has it for plain runs; no collections_path, so the EE's collections are found.
PROJECT_CONFIG_TEXT = "[ssh_connection]\npipelining = True\n"
PROJECT_PLAYBOOK_TEXT = (
    "---\n"
    "# The project's playbook of the job template: the collection's health playbook, from the EE.\n"
    "- name: Check TCP health thresholds across the fleet\n"
    "  ansible.builtin.import_playbook: netstate.tcp.health\n"
)


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def venv_tool(name: str) -> str:
    """A command of the virtualenv running this (ansible-builder, ansible-galaxy, ansible-runner)."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise FleetError("{} is not installed: install tests/requirements.txt into the virtualenv "
                         "(scripts/setup.sh)".format(name))
    return found


def build_collection(into: Path) -> Path:
    """``ansible-galaxy collection build`` of this tree into `into`, renamed to TARBALL."""
    into.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "ANSIBLE_CONFIG"}
    result = subprocess.run([venv_tool("ansible-galaxy"), "collection", "build", "--force", "--output-path",
                             str(into), str(ROOT)], cwd=str(into), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    built = sorted(into.glob("netstate-tcp-*.tar.gz"))
    if result.returncode != 0 or len(built) != 1:
        raise FleetError("ansible-galaxy collection build failed ({}):\n{}".format(
            result.returncode, result.stdout[-3000:]))
    return built[0].replace(into / TARBALL)


def collection_digest(tarball: Path) -> str:
    """What the tarball ships: its MANIFEST.json and FILES.json (a checksum of every file; no times)."""
    with tarfile.open(tarball) as tar:
        parts = []
        for name in ("MANIFEST.json", "FILES.json"):
            member = tar.extractfile(name)
            if member is None:
                raise FleetError("{} has no {}".format(tarball, name))
            parts.append(member.read())
    return _digest(*parts)


def health_verdicts(report: dict) -> tuple:
    """(healthy, {host: (status, {rule: status}, violations)}) of a parsed health.json, violations the
    sorted (rule, subject) of every result neither ok nor no_data. An ok result's subject is only the
    busiest item at that instant (the job's own SSH session can be it), so two runs compare on
    statuses and on what they flagged."""
    return report["healthy"], {
        entry["host"]: (entry["status"], {result["name"]: result["status"] for result in entry["results"]},
                        sorted((result["name"], result["subject"]) for result in entry["results"]
                               if result["status"] not in ("ok", "no_data")))
        for entry in report["hosts"]}


class Job:
    """One finished ansible-runner job: its private data directory and artifacts."""

    def __init__(self, directory: Path, ident: str, command: List[str], output: str, seconds: float) -> None:
        self.directory = directory
        self.ident = ident
        self.command = command
        self.output = output
        self.seconds = seconds
        self.artifacts = directory / "artifacts" / ident

    def _artifact(self, name: str) -> str:
        path = self.artifacts / name
        return path.read_text().strip() if path.exists() else ""

    @property
    def rc(self) -> Optional[int]:
        text = self._artifact("rc")
        return int(text) if text else None

    @property
    def status(self) -> str:
        """runner's verdict on the job: successful, failed, timeout, canceled (AWX's job status)."""
        return self._artifact("status")

    @property
    def stdout(self) -> str:
        return self._artifact("stdout")

    def report(self, name: str) -> Path:
        """A health report the job wrote (the role's relative report dir, under the project dir)."""
        return self.directory / "project" / "netstate-health" / name

    def events(self) -> List[Dict[str, Any]]:
        """The job events runner's callback wrote (what AWX stores and shows for a job), in order."""
        events = [json.loads(path.read_text()) for path in (self.artifacts / "job_events").glob("*.json")]
        return sorted(events, key=lambda event: event.get("counter", 0))


class ExecutionEnvironment:
    """The EE image of this tree, in the fleet's podman storage; see the module docstring."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.podman = fleet.podman
        self.work = fleet.root / "ee"
        self.timings: Dict[str, float] = {}     # seconds of the last ensure(): base, collection, ee, total

    # ---------------------------------------------------------------- tags
    def base_image(self, fleet_image: str) -> str:
        parts = [(EE_FILES / name).read_bytes() for name in BASE_FILES]
        return "{}:{}".format(BASE_REPO, _digest(fleet_image.encode(), *parts))

    def ee_image(self, base: str, collection: str) -> str:
        parts = [(EE_FILES / name).read_bytes() for name in DEFINITION_FILES]
        builder = metadata.version("ansible-builder")
        return "{}:{}".format(EE_REPO, _digest(base.encode(), collection.encode(), builder.encode(), *parts))

    def _exists(self, tag: str) -> bool:
        return self.podman.run("image", "exists", tag, check=False).returncode == 0

    def _drop_older(self, tag: str) -> None:
        """Removes the tags of tag's repository but the KEEP_IMAGES newest (tag among them): other
        trees' test runs on the machine share the storage and may be about to start a job in theirs;
        an image a container still uses stays."""
        repository = tag.rsplit(":", 1)[0]
        listed = self.podman.text("images", "--sort", "created", "--format", "{{.Repository}}:{{.Tag}}", repository)
        older = [line for line in listed.splitlines() if line != tag and line.rsplit(":", 1)[0] == repository]
        for line in older[KEEP_IMAGES - 1:]:
            self.podman.run("rmi", line, check=False)

    def _build_options(self) -> List[str]:
        options = ["--layers=false", "--network", "host"]
        if HOST_CA_BUNDLE.is_file():
            options += ["-v", "{0}:{0}:ro".format(HOST_CA_BUNDLE)]
        return options

    def _logged(self, command: List[str], log_file: Path, cwd: Path, what: str) -> None:
        with open(log_file, "w") as handle:
            result = subprocess.run(command, cwd=str(cwd), env=self.podman.env, stdout=handle,
                                    stderr=subprocess.STDOUT, timeout=1800, check=False)
        if result.returncode != 0:
            tail = log_file.read_text(errors="replace")[-4000:]
            raise FleetError("{} failed ({}), log {}:\n{}".format(what, result.returncode, log_file, tail))

    # ---------------------------------------------------------------- build
    def ensure(self) -> str:
        """The EE image's tag, built (base image first) unless the current one is cached."""
        started = time.monotonic()
        self.timings = {}
        self.podman.configure()
        fleet_image = self.fleet.ensure_image(*BASE_KIND)
        self.work.mkdir(parents=True, exist_ok=True)
        with _locked(self.fleet.root / "locks" / "ee.lock"):
            base = self.base_image(fleet_image)
            if not self._exists(base):
                step = time.monotonic()
                log("building EE base image {} from {}".format(base, fleet_image))
                self._logged(self.podman.command("build", *self._build_options(), "--build-arg",
                                                 "FLEET_IMAGE=" + fleet_image, "-f", str(EE_FILES / BASE_FILES[0]),
                                                 "-t", base, str(EE_FILES)),
                             self.work / "base-build.log", self.work, "podman build of " + base)
                self._drop_older(base)
                self.timings["base"] = time.monotonic() - step
            step = time.monotonic()
            build = self.work / "build"
            shutil.rmtree(build, ignore_errors=True)
            build.mkdir(parents=True)
            for name in DEFINITION_FILES:
                shutil.copyfile(EE_FILES / name, build / name)
            tag = self.ee_image(base, collection_digest(build_collection(build)))
            self.timings["collection"] = time.monotonic() - step
            if not self._exists(tag):
                step = time.monotonic()
                log("building execution environment {} with ansible-builder (a minute or so)".format(tag))
                self._logged([venv_tool("ansible-builder"), "build", "-v", "3", "--container-runtime", "podman",
                              "-f", "execution-environment.yml", "-c", "context", "-t", tag,
                              "--build-arg", "EE_BASE_IMAGE=" + base,
                              "--extra-build-cli-args", " ".join(self._build_options())],
                             self.work / "ee-build.log", build, "ansible-builder build of " + tag)
                self._drop_older(tag)
                self.timings["ee"] = time.monotonic() - step
                log("execution environment {} built in {:.0f}s".format(tag, self.timings["ee"]))
            shutil.rmtree(build, ignore_errors=True)
        self.timings["total"] = time.monotonic() - started
        return tag

    # ---------------------------------------------------------------- jobs
    def inventory(self, hosts: Sequence[str]) -> Dict[str, Any]:
        """The job's inventory: hosts by address and the fleet's SSH options, minus its ControlPath
        (a directory of the machine's, not the container's); no key file: the key is the job's
        credential (env/ssh_key)."""
        options = self.fleet.ssh_args()
        common = [value for flag, value in zip(options[::2], options[1::2]) if not value.startswith("Control")]
        host_vars = {host: {"ansible_host": self.fleet.address(host), "fleet_os": self.fleet.os(host),
                            "fleet_init": self.fleet.init(host),
                            "ansible_python_interpreter": SYSTEMS[self.fleet.os(host)][1]} for host in hosts}
        return {"all": {"children": {"fleet": {"hosts": host_vars, "vars": {
            "ansible_user": "root", "ansible_ssh_common_args": " ".join("-o " + value for value in common)}}}}}

    def prepare(self, directory: Path, hosts: Sequence[str], extravars: Optional[Dict[str, Any]] = None) -> Path:
        """Writes the private data directory of a job on hosts (see the module docstring)."""
        for sub in ("inventory", "env", "project"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        (directory / "inventory" / "hosts.yml").write_text(json.dumps(self.inventory(hosts), indent=2) + "\n")
        key = directory / "env" / "ssh_key"
        shutil.copyfile(self.fleet.key, key)
        key.chmod(0o600)
        (directory / "env" / "extravars").write_text(json.dumps(extravars or {}, indent=2) + "\n")
        (directory / "project" / PROJECT_PLAYBOOK).write_text(PROJECT_PLAYBOOK_TEXT)
        (directory / "project" / "ansible.cfg").write_text(PROJECT_CONFIG_TEXT)
        return directory

    def runner_command(self, directory: Path, image: str, ident: str) -> List[str]:
        return [venv_tool("ansible-runner"), "run", str(directory), "-p", PROJECT_PLAYBOOK, "--ident", ident,
                "--process-isolation", "--process-isolation-executable", "podman", "--container-image", image,
                "--container-option=--user=root", "--container-option=--network=" + self.fleet.network]

    def run(self, directory: Path, hosts: Sequence[str], extravars: Optional[Dict[str, Any]] = None,
            image: Optional[str] = None, ident: str = "health", timeout: float = 900) -> Job:
        """The health playbook on hosts under ansible-runner in the EE; returns the finished Job."""
        image = image or self.ensure()
        self.prepare(directory, hosts, extravars)
        command = self.runner_command(directory, image, ident)
        started = time.monotonic()
        # runner gives the container its own environment (env.list); podman itself needs the fleet's
        # containers.conf and storage.conf to find the image and the fleet's network.
        result = subprocess.run(command, env=self.podman.env, cwd=str(directory), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                check=False)
        return Job(directory, ident, command, result.stdout, time.monotonic() - started)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--fleet", default=default_name(), help="fleet name (run: the hosts' fleet)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the EE unless cached; print its image")
    run = sub.add_parser("run", help="the health playbook in the EE under ansible-runner on the fleet")
    run.add_argument("--dir", required=True, help="the job's private data directory (made)")
    run.add_argument("--hosts", help="comma separated fleet hosts (default: all)")
    run.add_argument("-e", "--extra", action="append", default=[], help="KEY=VALUE extra variable")
    args = parser.parse_args(argv)
    try:
        ee = ExecutionEnvironment(Fleet(name=args.fleet))
        image = ee.ensure()
        print(image)
        print(json.dumps({key: round(value, 1) for key, value in ee.timings.items()}), file=sys.stderr)
        if args.command == "build":
            return 0
        hosts = args.hosts.split(",") if args.hosts else ee.fleet.hosts
        if not hosts:
            raise FleetError("fleet {} has no hosts: run `fleet.py --name {} up` first".format(args.fleet, args.fleet))
        extravars = {}
        for item in args.extra:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise FleetError("-e: expected KEY=VALUE, got {!r}".format(item))
            extravars[key] = value
        job = ee.run(Path(args.dir).resolve(), hosts, extravars, image=image)
        print(job.output)
        print("ee: job {} {} (rc {}) in {:.1f}s; reports in {}".format(
            job.ident, job.status, job.rc, job.seconds, job.report("")), file=sys.stderr)
        return job.rc if job.rc is not None else 1
    except FleetError as error:
        print("ee: " + str(error), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
