# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every fenced block of README.md, docs/ and the roles' READMEs says what it is, and those a user runs
run as pasted.

Each block carries a marker on the line before its opening fence, `<!-- snippet: KIND ... -->`:

- `run`: run as pasted. YAML: a playbook (its first item has `hosts`) or a task list (run in a play on
  every host of the inventory); `sh`/`bash`: a bash script stopping at the first failing command;
  `console`: the lines after a `$ ` prompt, the others being what they print. `rc=N` expects exit status N.
- `file NAME`: written to NAME in the page's working directory, for the page's later `run` blocks
  (an ansible.cfg, a requirements.yml, a playbook a command names).
- `vars PLAYBOOK`: variables, run as `ansible-playbook PLAYBOOK -i inventory.ini -e @FILE`.
- `output`: what a command prints or a module returns; YAML and JSON must parse.
- `shown`: a command shown for what it does wrong (the folklore a page replaces); never run.
- `elsewhere REASON`: not run here because it needs what ELSEWHERE names (a fleet, a server, a CI
  service, a registry); the tests that cover it are named there. YAML must still parse.

A page's `file` blocks are written first, as a user creates files before running anything; then its `run`
and `vars` blocks run in order, in one working directory, inside private namespaces
(tests/support/sandbox.py) holding the page's fixture (FIXTURES: the sockets its examples mention). The
working directory stands for the user's project: `inventory.ini` puts this machine (local connection) in
every group the pages name, `docs/` is the checkout's, HOME is empty, /var/tmp is a tmpfs of the sandbox,
and the collection is the one installed (ANSIBLE_COLLECTIONS_PATH); no ansible.cfg of ours applies. A
page's fixture may add files (FIXTURES `files`), such as the tarball a requirements.yml names.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from tests.conftest import require
from tests.integration.test_sysctl_netns import COLLECTIONS_ROOT, REPO, _ansible_playbook, _prerequisites
from tests.support import sandbox

PAGES = ["README.md"] + sorted("docs/" + name for name in os.listdir(REPO / "docs") if name.endswith(".md")) \
    + sorted("roles/%s/README.md" % name for name in os.listdir(REPO / "roles")
             if (REPO / "roles" / name / "README.md").is_file())
RUN_TIMEOUT = 600

# why a block is not run here, and the tests that cover what it needs
ELSEWHERE = {
    "quickstart": ("the README's quick start, run verbatim from a clone", ["tests/integration/test_quickstart.py"]),
    "fleet": ("needs SSH hosts or a systemd host",
              ["tests/fleet/test_kinds.py", "tests/fleet/test_agents.py", "tests/fleet/test_fleet_gather.py",
               "tests/fleet/test_health.py", "tests/fleet/test_remediate.py"]),
    "slices": ("job slices of a hundred hosts each", ["tests/integration/test_health_merge_slices.py",
                                                      "tests/fleet/test_fleet_slices.py"]),
    "server": ("needs a Zabbix or Prometheus server", ["tests/fleet/test_servers.py"]),
    "ci-service": ("runs in a CI service (GitLab, GitHub); its commands are those of the `run` blocks", []),
    "registry": ("builds or runs an execution environment image", ["tests/fleet/test_execution_environment.py"]),
    "execution-node": ("sends a job to an execution node with ansible-runner transmit, worker and process",
                       ["tests/fleet/test_execution_node.py"]),
    "loop": ("needs Prometheus, Alertmanager and ansible-rulebook on a systemd fleet",
             ["tests/fleet/test_closed_loop.py"]),
    "zabbix-loop": ("needs a Zabbix server and ansible-rulebook on a systemd fleet",
                    ["tests/fleet/test_zabbix_route.py"]),
    "checkout": ("a make target or script of the checkout, run by make test itself", ["Makefile"]),
    "rulebook": ("runs in ansible-rulebook, a long-running process on a Java runtime",
                 ["tests/integration/test_eda_tcp_health.py"]),
}
GROUPS = ("web", "proxies", "db")
# the sockets each page's examples mention (tests/support/sockmix.py's spec) and named namespaces
FIXTURES = {
    "docs/modules.md": {
        "sockets": {"listeners": [{"address": "127.0.0.1", "port": 80, "backlog": 16},
                                  {"address": "127.0.0.1", "port": 8080, "backlog": 16}],
                    "established": [{"to": ["127.0.0.1", 80], "from": "127.0.0.2", "count": 3}]},
    },
    "docs/health.md": {"tarball": "vendor"},  # the tarball its requirements.yml names, built from this tree
    "docs/peer_block.md": {
        "sockets": {"listeners": [{"address": "127.0.0.1", "port": 443, "backlog": 16}],
                    "established": [{"to": ["127.0.0.1", 443], "from": "127.0.0.2", "count": 3}]},
    },
}

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!-- snippet: (.*?) -->\n\Z")
KINDS = {"run": 0, "file": 1, "vars": 1, "output": 0, "shown": 0, "elsewhere": 1}  # kind: positional arguments
SHELLS = ("sh", "bash", "console")


class Snippet:
    def __init__(self, page, line, language, body, marker):
        self.page, self.line, self.language, self.body = page, line, language, body
        words = shlex.split(marker) if marker else []
        self.kind = words[0] if words else None
        self.args = [word for word in words[1:] if "=" not in word]
        self.options = dict(word.split("=", 1) for word in words[1:] if "=" in word)

    @property
    def where(self):
        return "%s:%d" % (self.page, self.line)

    def yaml(self):
        return yaml.safe_load(self.body)


def snippets(page):
    text = (REPO / page).read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()]
        marker = MARKER.search(before)
        found.append(Snippet(page, before.count("\n") + 1, match.group(1), match.group(2),
                             marker.group(1) if marker else None))
    return found


def malformed(snippet):
    """Why a block's marker is wrong, or None."""
    if snippet.kind is None:
        return "no <!-- snippet: KIND --> marker on the line before the block"
    if snippet.kind not in KINDS:
        return "unknown kind %r (one of %s)" % (snippet.kind, ", ".join(KINDS))
    if len(snippet.args) != KINDS[snippet.kind]:
        return "%s takes %d argument(s), got %r" % (snippet.kind, KINDS[snippet.kind], snippet.args)
    if set(snippet.options) - {"rc"} or (snippet.options and snippet.kind != "run"):
        return "unknown options %r" % snippet.options
    if snippet.kind == "elsewhere" and snippet.args[0] not in ELSEWHERE:
        return "elsewhere %r: not one of %s" % (snippet.args[0], ", ".join(ELSEWHERE))
    if snippet.kind == "run" and snippet.language not in SHELLS + ("yaml",):
        return "run: a %r block cannot be run (yaml, sh, bash or console)" % snippet.language
    if snippet.kind in ("file", "vars") and snippet.language not in ("yaml", "ini"):
        return "%s: a %r block (yaml or ini)" % (snippet.kind, snippet.language)
    if snippet.language in ("yaml", "json"):
        try:
            snippet.yaml()
        except yaml.YAMLError as error:
            return "does not parse: %s" % error
    return None


def console_commands(body):
    """The commands of a console block: lines after a `$ ` prompt, with their continuation lines."""
    commands, current = [], None
    for line in body.splitlines():
        if current is not None:
            current.append(line)
        elif line.startswith("$ "):
            current = [line[2:]]
        if current is not None and not line.endswith("\\"):
            commands.append("\n".join(current))
            current = None
    return commands


def console_output(body):
    """What a console block shows its commands print: each line up to a `...` that stands for the rest."""
    shown, command = [], False
    for line in body.splitlines():
        if line.startswith("$ ") or command:
            command = line.endswith("\\")
            continue
        text = line.split("...", 1)[0].strip()
        if text:
            shown.append(text)
    return shown


def steps_of(page):
    """The page's runnable blocks as the driver's steps, in order."""
    steps = []
    ordered = sorted(snippets(page), key=lambda snippet: snippet.kind != "file")  # stable: files first
    for index, snippet in enumerate(ordered):
        step = {"where": snippet.where, "rc": int(snippet.options.get("rc", 0))}
        name = "snippet-%02d.yml" % index
        if snippet.kind == "file":
            steps.append(dict(step, write=snippet.args[0], text=snippet.body))
        elif snippet.kind == "vars":
            steps.append(dict(step, write=name, text=snippet.body,
                              argv=["ansible-playbook", snippet.args[0], "-i", "inventory.ini", "-e", "@" + name]))
        elif snippet.kind == "run" and snippet.language == "yaml":
            data = snippet.yaml()
            plays = data if "hosts" in data[0] else [{"name": snippet.where, "hosts": "all",
                                                      "gather_facts": False, "tasks": data}]
            steps.append(dict(step, write=name, text=yaml.safe_dump(plays, sort_keys=False),
                              argv=["ansible-playbook", "-i", "inventory.ini", name]))
        elif snippet.kind == "run":
            script = "\n".join(console_commands(snippet.body)) if snippet.language == "console" else snippet.body
            shown = console_output(snippet.body) if snippet.language == "console" else []
            steps.append(dict(step, argv=["bash", "-e", "-o", "pipefail", "-c", script], shown=shown))
    return steps


# runs inside the sandbox: every step in order, each one's status and output into results.json
DRIVER = r'''
import json, os, subprocess, sys
steps = json.load(open(sys.argv[1]))
results = []
for step in steps:
    if "write" in step:
        os.makedirs(os.path.dirname(step["write"]) or ".", exist_ok=True)
        with open(step["write"], "w") as handle:
            handle.write(step["text"])
    if "argv" in step:
        done = subprocess.run(step["argv"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL, timeout=300, check=False)
        results.append({"where": step["where"], "rc": done.returncode, "output": done.stdout})
        print("=== %s: exit %d" % (step["where"], done.returncode), flush=True)
json.dump(results, open("results.json", "w"))
'''


def runnable_pages():
    return [page for page in PAGES if any("argv" in step for step in steps_of(page))]


def test_every_block_says_what_it_is():
    wrong = ["%s: %s" % (snippet.where, why) for page in PAGES for snippet in snippets(page)
             for why in [malformed(snippet)] if why]
    assert not wrong, "\n".join(wrong)


def test_what_covers_the_blocks_not_run_here_exists():
    for reason, (_why, paths) in ELSEWHERE.items():
        for path in paths:
            assert (REPO / path).is_file(), (reason, path)


def test_the_marker_check_finds_an_unmarked_block(tmp_path):
    unmarked = Snippet("x.md", 1, "yaml", "a: 1\n", None)
    bad_yaml = Snippet("x.md", 1, "yaml", "a: [\n", "output")
    shown = Snippet("x.md", 1, "text", "", "run")
    assert "no <!-- snippet" in malformed(unmarked)
    assert "does not parse" in malformed(bad_yaml)
    assert "cannot be run" in malformed(shown)
    assert console_commands("$ a \\\n  b\nout\n$ c\n") == ["a \\\n  b", "c"]
    assert console_output("$ a \\\n  b\nout: x ... y\n...\n$ c\n") == ["out: x"]


def test_the_examples_a_user_runs_are_run():
    """A page cannot opt out by marking everything elsewhere: the pages a new user reads first have blocks
    that run here."""
    counted = {page: sum(1 for step in steps_of(page) if "argv" in step) for page in PAGES}
    for page in ("docs/modules.md", "docs/health.md", "docs/fleet.md", "docs/peer_block.md", "docs/tuning.md",
                 "docs/inventory.md", "roles/gather/README.md", "roles/health/README.md", "roles/tuning/README.md"):
        assert counted[page] > 0, page
    for fixture in FIXTURES:
        assert fixture in counted, fixture


@pytest.mark.netns
@pytest.mark.parametrize("page", runnable_pages())
def test_snippets_run_as_pasted(netns, tmp_path, page):
    _prerequisites()
    require(os.path.exists("/usr/bin/unshare"), "needs util-linux (unshare)")
    work = tmp_path / "work"
    (work / "home").mkdir(parents=True)
    os.symlink(REPO / "docs", work / "docs")
    host = "localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable
    (work / "inventory.ini").write_text(host + "".join("[%s]\nlocalhost\n" % group for group in GROUPS))
    (work / "driver.py").write_text(DRIVER)
    steps = steps_of(page)
    (work / "steps.json").write_text(json.dumps(steps))
    fixture = FIXTURES.get(page, {})
    if "tarball" in fixture:
        built = subprocess.run([os.path.join(os.path.dirname(_ansible_playbook()), "ansible-galaxy"), "collection",
                                "build", str(REPO), "--output-path", str(work / fixture["tarball"])],
                               capture_output=True, text=True, check=False, timeout=300)
        assert built.returncode == 0, built.stdout + built.stderr
    path = "%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" % os.path.dirname(_ansible_playbook())
    env = {"PATH": path,
           "HOME": str(work / "home"), "LANG": "C.UTF-8", "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_ROOT),
           "ANSIBLE_NOCOLOR": "1"}
    try:
        status, output = sandbox.run(netns.name, work, [sys.executable, "driver.py", "steps.json"], env,
                                     sockets=fixture.get("sockets"), namespaces=fixture.get("namespaces", ()),
                                     tmpfs=("/var/tmp",), timeout=RUN_TIMEOUT)
    except sandbox.SandboxTimeout as timeout:
        pytest.fail("%s: the snippets did not finish within %d s:\n%s" % (page, RUN_TIMEOUT, timeout.output[-5000:]))
    assert status == 0, output[-5000:]
    results = json.loads((work / "results.json").read_text())
    ran = {step["where"]: step for step in steps if "argv" in step}
    expected = {where: step["rc"] for where, step in ran.items()}
    assert [result["where"] for result in results] == list(expected)
    failed = ["%s: exit %d, expected %d\n%s" % (result["where"], result["rc"], expected[result["where"]],
                                                result["output"][-4000:])
              for result in results if result["rc"] != expected[result["where"]]]
    assert not failed, "\n\n".join(failed)
    for result in results:
        printed = " ".join(result["output"].split())
        missing = [line for line in ran[result["where"]].get("shown", []) if " ".join(line.split()) not in printed]
        assert not missing, "%s: the page shows output the command did not print: %r\n%s" % (
            result["where"], missing, result["output"][-4000:])
