# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection as users get it: the built artifact, imported, introspected, installed and run.

1. ``ansible-galaxy collection build`` from this tree;
2. galaxy-importer on the tarball, offline (tests/integration/galaxy-importer.cfg: no containers, no
   network); an ERROR line fails, WARNING lines are reported as pytest warnings;
3. ``ansible-galaxy collection install`` of the tarball into an empty collections path;
4. ``ansible-builder introspect`` on that path finds meta/ee-requirements.txt and meta/ee-bindep.txt;
5. ``ansible-playbook netstate.tcp.health`` from the installed copy only (ANSIBLE_COLLECTIONS_PATH is
   the install directory) against localhost gathering from a private network namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

from tests.conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# every role of the tree, the internal ones (_agent, _report) among them
ROLES = sorted(name for name in os.listdir(os.path.join(ROOT, "roles")) if not name.startswith("."))
BIN = os.path.dirname(sys.executable)
IMPORTER_CONFIG = os.path.join(ROOT, "tests", "integration", "galaxy-importer.cfg")
# Shipped by the collection for ansible-builder, exactly as introspect must report them.
EE_PYTHON = ["jmespath>=1.0"]
EE_SYSTEM = ["iproute2 [platform:dpkg]", "iproute [platform:rpm]"]
# Never in the artifact: development state and caches.
NOT_SHIPPED = (".ansible/", ".build/", ".venv/", ".git/", ".pytest_cache/", ".hypothesis/", ".ruff_cache/",
               "tests/output/", "benchmarks/results/")

pytestmark = pytest.mark.slow


def tool(name):
    path = os.path.join(BIN, name)
    require(os.access(path, os.X_OK), "needs %s in the virtualenv (tests/requirements.txt)" % name)
    return path


def clean_env(collections_path, **extra):
    """The environment of a user: this tree's ansible.cfg and collections path removed."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS")}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["ANSIBLE_COLLECTIONS_PATH"] = collections_path
    env["ANSIBLE_COLLECTIONS_SCAN_SYS_PATH"] = "false"
    env.update(extra)
    return env


def run(command, **kwargs):
    kwargs.setdefault("timeout", 600)
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, "%s exited %d\n%s\n%s" % (command, done.returncode, done.stdout, done.stderr)
    return done


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """Built tarball and its installed copy: {tarball, work, collections, installed}."""
    galaxy = tool("ansible-galaxy")
    work = tmp_path_factory.mktemp("artifact")
    empty = str(work / "nothing")
    run([galaxy, "collection", "build", "--output-path", str(work / "dist"), ROOT],
        env=clean_env(empty), cwd=str(work))
    (tarball,) = (work / "dist").glob("netstate-tcp-*.tar.gz")
    collections = work / "collections"
    collections.mkdir()
    run([galaxy, "collection", "install", "--offline", "-p", str(collections), str(tarball)],
        env=clean_env(str(collections)), cwd=str(work))
    installed = collections / "ansible_collections" / "netstate" / "tcp"
    return {"tarball": tarball, "work": work, "collections": collections, "installed": installed}


def test_tarball_ships_the_collection_and_no_development_state(artifact):
    with tarfile.open(artifact["tarball"]) as tar:
        names = tar.getnames()
    size = artifact["tarball"].stat().st_size
    print("artifact %s: %d bytes, %d entries" % (artifact["tarball"].name, size, len(names)))
    for wanted in ("LICENSE", "README.md", "meta/execution-environment.yml", "meta/ee-requirements.txt",
                   "meta/ee-bindep.txt", "meta/runtime.yml", "meta/extensions.yml", "playbooks/health.yml",
                   "playbooks/gather.yml", "extensions/eda/plugins/event_source/tcp_health.py"):
        assert wanted in names, wanted
    for role in ROLES:
        assert "roles/%s/README.md" % role in names, role
    shipped = [name for name in names if any((name + "/").startswith(prefix) for prefix in NOT_SHIPPED)]
    assert not shipped, shipped


def test_galaxy_importer_reports_no_error(artifact):
    work = artifact["work"] / "importer"
    work.mkdir()
    env = clean_env(str(artifact["work"] / "nothing"),
                    GALAXY_IMPORTER_CONFIG=IMPORTER_CONFIG,
                    GALAXY_IMPORTER_ANSIBLE_LOCAL_TMP=str(work / "ansible-tmp"),
                    GALAXY_IMPORTER_TMP_ROOT_DIR=str(work))
    done = subprocess.run([sys.executable, "-m", "galaxy_importer.main", str(artifact["tarball"])],
                          cwd=str(work), env=env, capture_output=True, text=True, timeout=600, check=False)
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith(("ERROR", "CRITICAL", "Traceback"))]
    # Galaxy shows an import's warnings on the collection's page (ansible-lint's findings among them)
    warned = [line for line in output.splitlines() if line.startswith("WARNING")]
    assert done.returncode == 0 and not errors and not warned, output
    assert "Importer processing completed successfully" in output, output
    result = json.loads((work / "importer_result.json").read_text())
    contents = result["docs_blob"]["contents"]
    roles = {entry["content_name"]: entry for entry in contents if entry["content_type"] == "role"}
    # _agent and _report are internal roles (include_role); galaxy-importer takes a leading '_'
    assert sorted(roles) == ROLES
    assert all(entry["readme_html"] for entry in roles.values()), "a role without README"
    documented = [entry for entry in contents if entry["content_type"] in ("module", "filter")]
    undocumented = sorted(entry["content_name"] for entry in documented if not entry["doc_strings"])
    assert documented and not undocumented, undocumented
    # the event source, listed and documented from meta/extensions.yml as ansible.eda's are
    [source] = [entry for entry in contents if entry["content_type"] == "eda/plugins/event_source"]
    assert source["content_name"] == "tcp_health", source
    assert sorted(option["name"] for option in source["doc_strings"]["doc"]["options"]) == [
        "gather_args", "host", "interval", "namespace", "rules", "thresholds"], source["doc_strings"]
    assert "netstate.tcp.tcp_health:" in source["doc_strings"]["examples"], source["doc_strings"]
    assert result["requires_ansible"] == ">=2.16.0"


def test_ansible_builder_introspect_finds_the_requirements(artifact):
    builder = tool("ansible-builder")
    pip_file = artifact["work"] / "ee-pip.txt"
    bindep_file = artifact["work"] / "ee-bindep.txt"
    done = run([builder, "introspect", "--sanitize", "--write-pip", str(pip_file), "--write-bindep",
                str(bindep_file), str(artifact["collections"])], cwd=str(artifact["work"]))
    data = yaml.safe_load(done.stdout.split("---", 1)[1])
    origin = "  # from collection netstate.tcp"
    assert data["python"] == [line + origin for line in EE_PYTHON], done.stdout
    assert data["system"] == [line + origin for line in EE_SYSTEM], done.stdout
    assert pip_file.read_text().splitlines() == [line + origin for line in EE_PYTHON]
    assert bindep_file.read_text().splitlines() == [line + origin for line in EE_SYSTEM]


@pytest.mark.netns
def test_health_playbook_runs_from_the_installed_copy(artifact, netns, tmp_path):
    netns.hold_mix({"listeners": [{"address": "127.0.0.1", "port": 8080, "backlog": 16}],
                    "established": [{"to": ["127.0.0.1", 8080], "count": 3}]}, tmp_path)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"installed": {
        "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
        "netstate_health_gather_args": {"namespace": netns.name}}}}}))
    env = clean_env(str(artifact["collections"]))
    where = run([tool("ansible-galaxy"), "collection", "list", "netstate.tcp", "--format", "json"],
                env=env, cwd=str(tmp_path))
    assert list(json.loads(where.stdout)) == [str(artifact["collections"] / "ansible_collections")], where.stdout
    done = run([tool("ansible-playbook"), "netstate.tcp.health", "-i", str(inventory),
                "-e", "netstate_health_report_dir=reports"], env=env, cwd=str(tmp_path), timeout=300)
    assert "installed" in done.stdout and "failed=0" in done.stdout, done.stdout
    report = json.loads((tmp_path / "reports" / "health.json").read_text())
    assert report["healthy"] is True, report
    assert [host["host"] for host in report["hosts"]] == ["installed"], report
    assert not (artifact["installed"] / "playbooks" / "reports").exists()
