# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/security.md: every promise names a test, and every test it names exists."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "security.md")
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _promise_rows():
    """The rows of the promise tables (those under "## Promises"): (line number, last cell)."""
    rows = []
    in_promises = False
    with open(DOC, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.startswith("## "):
                in_promises = line.startswith("## Promises")
            if in_promises and line.startswith("| ") and not line.startswith(("| Input", "| ---")):
                rows.append((number, line.rstrip("\n").rstrip("|").rsplit("|", 1)[-1]))
    return rows


def _test_functions(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test")}


def test_every_promise_names_a_test():
    rows = _promise_rows()
    assert len(rows) >= 10
    for number, cell in rows:
        assert TEST_REFERENCE.search(cell), "docs/security.md line %d names no test: %s" % (number, cell)


def test_every_named_test_exists():
    missing = []
    for number, cell in _promise_rows():
        for path, name in TEST_REFERENCE.findall(cell):
            if not os.path.exists(os.path.join(ROOT, path)) or name not in _test_functions(path):
                missing.append("line %d: %s::%s" % (number, path, name))
    assert not missing, "docs/security.md names tests that do not exist: %s" % ", ".join(missing)
