# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""README.md is the front door and docs/index.md the map: every page listed, every relative link resolves."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")
README = os.path.join(ROOT, "README.md")
INDEX = os.path.join(DOCS, "index.md")
README_MAX_BYTES = 8 * 1024
# [text](target): the target up to the first space or closing parenthesis
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def pages():
    return sorted(os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))


def anchor(heading):
    """The anchor GitHub gives a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    return {anchor(line.lstrip("#")) for line in FENCE.sub("", read(path)).splitlines() if line.startswith("#")}


def links(path):
    """Relative link targets of a Markdown file, outside code blocks: (file or None for the page itself, anchor)."""
    found = []
    for target in LINK.findall(FENCE.sub("", read(path))):
        if re.match(r"[a-z]+:", target):
            continue
        name, _hash, fragment = target.partition("#")
        found.append((os.path.normpath(os.path.join(os.path.dirname(path), name)) if name else path, fragment))
    return found


def test_index_lists_every_docs_page():
    listed = {os.path.normpath(os.path.join(DOCS, target)) for target, _fragment in
              ((name.partition("#")[0], None) for name in LINK.findall(read(INDEX))) if target}
    missing = [os.path.relpath(page, ROOT) for page in pages() if page != INDEX and page not in listed]
    assert not missing, "docs/index.md does not list %s" % ", ".join(missing)


def test_every_relative_link_resolves():
    broken = []
    for path in [README] + pages():
        for target, fragment in links(path):
            where = os.path.relpath(path, ROOT)
            if not os.path.exists(target):
                broken.append("%s -> %s" % (where, os.path.relpath(target, ROOT)))
            elif fragment and target.endswith(".md") and fragment not in anchors(target):
                broken.append("%s -> %s#%s" % (where, os.path.relpath(target, ROOT), fragment))
    assert not broken, "broken links: %s" % "; ".join(broken)


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n[there](missing.md) [here](#a-page) [nowhere](#no-such)\n```\n[code](x.md)\n```\n")
    found = links(str(page))
    assert found == [(str(tmp_path / "missing.md"), ""), (str(page), "a-page"), (str(page), "no-such")]
    assert anchors(str(page)) == {"a-page"}


def test_readme_stays_a_front_door():
    size = os.path.getsize(README)
    assert size <= README_MAX_BYTES, "README.md is %d bytes; reference belongs in docs/ (docs/index.md)" % size
    text = read(README)
    assert "docs/index.md" in text


def matrix_releases():
    """(version, controller python, target pythons) of every release scripts/matrix.py tests."""
    text = read(os.path.join(ROOT, "scripts", "matrix.py"))
    found = []
    for version, python, targets in re.findall(
            r'Release\("\d+\.\d+", "([\d.]+)", "(?:local|fleet)", ("[\d.]+"|REMOTE_PYTHON), \(([^)]*)\)\)', text):
        remote = re.search(r'^REMOTE_PYTHON = "([\d.]+)"', text, re.M).group(1)
        found.append((version, remote if python == "REMOTE_PYTHON" else python.strip('"'),
                      sorted(re.findall(r'"([\d.]+)"', targets))))
    assert len(found) >= 6, found
    return found


def test_supported_releases_in_the_docs_are_the_matrix():
    """The releases the README and docs/matrix.md name as tested are scripts/matrix.py's, with the same
    controller and target Pythons: each number has one source, the matrix that tests it."""
    releases = matrix_releases()
    readme = " ".join(read(README).split())
    tested = re.search(r"tested: ([\d., and]+?);", readme)
    assert tested, "README: no 'tested: <releases>;' in the supported line"
    assert re.findall(r"\d+\.\d+\.\d+", tested.group(1)) == [version for version, _p, _t in releases]
    lines = [line for line in read(os.path.join(DOCS, "matrix.md")).splitlines()
             if re.match(r"\| \d+\.\d+\.\d+ \| \d\.\d+ \(", line)]
    table = {}
    for line in lines:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        table[cells[0]] = (cells[1].split()[0], sorted(re.findall(r"(\d\.\d+) \(Debian", cells[2])))
    assert table == {version: (python, targets) for version, python, targets in releases}, "docs/matrix.md Tested with"


def test_the_tarball_the_docs_name_is_the_one_make_dist_builds():
    """A requirements.yml or EE definition copied from the docs names the tarball of galaxy.yml's version."""
    version = re.search(r"^version: (\S+)$", read(os.path.join(ROOT, "galaxy.yml")), re.M).group(1)
    named = [(os.path.relpath(path, ROOT), found) for path in [README] + pages()
             for found in re.findall(r"netstate-tcp-(\d[\w.]*?)\.tar\.gz", read(path))]
    assert named, "the docs name no tarball"
    assert all(found == version for _path, found in named), (version, named)
