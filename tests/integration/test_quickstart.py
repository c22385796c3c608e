# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The README's quick start, verbatim, as a new user runs it: a fresh home directory, no variable of ours in
the environment, the system's python3, ansible-core and jmespath from PyPI, the collection built from a clone
of this checkout and installed from the tarball, then the ad-hoc command and the first playbook.

The only change to the README's text: `<this repository>` becomes this checkout's path. The time from the
clone to the first answer is printed (pytest -s shows it) and bounded loosely, to catch a step that hangs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

from tests.conftest import ROOT, require

README = os.path.join(ROOT, "README.md")


def quick_start():
    """(shell lines, play.yml, the command that runs it) from the README's Quick start section."""
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w+)\n(.*?)^```$", section, re.M | re.S)
    shell = [body for kind, body in blocks if kind == "sh"]
    play = [body for kind, body in blocks if kind == "yaml"]
    assert len(shell) == 2 and len(play) == 1, blocks
    before = section.split("```yaml", 1)[0].rstrip()
    assert before.endswith("<!-- snippet: file play.yml -->"), "the playbook's file name, for the docs' snippets test"
    assert before.rsplit("\n", 1)[0].rstrip().endswith("`play.yml`:"), "the playbook's file name"
    return shell[0], play[0], shell[1]


def test_quick_start_runs_verbatim_from_a_clone(tmp_path):
    require(shutil.which("git") is not None, "needs git")
    require(os.path.exists(os.path.join(ROOT, ".git")), "needs a git checkout to clone")  # a worktree has a .git file
    install, play, run = quick_start()
    assert "<this repository>" in install
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (work / "play.yml").write_text(play)
    script = "set -e\n" + install.replace("<this repository>", ROOT) + "\n" + run
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", script], cwd=str(work), env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    elapsed = time.monotonic() - started
    print("quick start, from python3 -m venv to the playbook's recap: %.1f s" % elapsed)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert (home / "netstate" / "bin" / "ansible").exists()  # the user's venv, not ours
    answer = done.stdout.split("localhost | SUCCESS => ", 1)
    assert len(answer) == 2, done.stdout[-4000:]
    assert '"netstate"' in answer[1] and '"states"' in answer[1]
    assert re.search(r"^localhost\s*: ok=\d+ .*failed=0 ", done.stdout, re.M), done.stdout[-4000:]
    assert re.search(r"\d+ health results, none at or above critical", done.stdout), done.stdout[-4000:]
    installed = home / ".ansible" / "collections" / "ansible_collections" / "netstate" / "tcp"
    assert (installed / "MANIFEST.json").is_file(), "not installed from the tarball into the user's collections"
