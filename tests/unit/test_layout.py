# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests are found by name: tests/unit mirrors plugins/ and extensions/.

The unit tests of plugins/<directory>/<name>.py live in tests/unit/plugins/<directory>/test_<name>.py, a
private module's leading underscore dropped (plugins/module_utils/_engine/_netlink.py is tested in
tests/unit/plugins/module_utils/_engine/test_netlink.py); those of the event sources
(extensions/eda/plugins/event_source/<name>.py) in tests/unit/extensions/eda/plugins/event_source/test_<name>.py.
Every test file names an existing source, except
the few that check the tree as a whole (ACROSS) and the roles' tests (tests/unit/roles). What tests share
lives in modules that are not test files (_helpers.py, conftest.py): no test file imports another. Every
directory of tests/unit is a package, so that test files of one name in two directories (modules/test_sysctl.py,
module_utils/test_sysctl.py) are two modules.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import os

from tests.conftest import ROOT

# the directories whose every Python file has unit tests of its own (doc fragments are only data)
SOURCE_DIRECTORIES = ("plugins/action", "plugins/filter", "plugins/module_utils", "plugins/module_utils/_engine",
                      "plugins/modules", "plugins/plugin_utils", "extensions/eda/plugins/event_source")
# the trees tests/unit mirrors
MIRRORED = ("tests/unit/plugins", "tests/unit/extensions")
# test files that check the tree as a whole, not one source
ACROSS = frozenset([
    "tests/unit/test_layers.py",        # who may import whom
    "tests/unit/test_layout.py",        # this file
    "tests/unit/test_security_doc.py",  # docs/security.md names tests that exist
    "tests/unit/test_docs_index.py",    # docs/index.md lists every page; links resolve; the README stays short
])
ROLE_TESTS = "tests/unit/roles/"


def expected_test_file(source):
    """plugins/<directory>/_<name>.py or <name>.py -> tests/unit/plugins/<directory>/test_<name>.py (and so for
    extensions/)"""
    directory, name = os.path.split(source)
    return "/".join(["tests/unit", directory, "test_" + name.lstrip("_")])


def sources(root):
    found = []
    for directory in SOURCE_DIRECTORIES:
        found += ["%s/%s" % (directory, name) for name in sorted(os.listdir(os.path.join(root, directory)))
                  if name.endswith(".py") and name != "__init__.py"]
    return found


def unit_files(root):
    """Every Python file under tests/unit, relative to root."""
    found = []
    for path, directories, names in os.walk(os.path.join(root, "tests", "unit")):
        directories[:] = sorted(name for name in directories if name != "__pycache__")
        found += [os.path.relpath(os.path.join(path, name), root).replace(os.sep, "/")
                  for name in sorted(names) if name.endswith(".py")]
    return found


def sources_without_tests(root):
    return [source for source in sources(root) if not os.path.isfile(os.path.join(root, expected_test_file(source)))]


def orphan_test_files(root):
    """Test files that are not tests/unit/<plugins or extensions>/<directory>/test_<name>.py of an existing source."""
    orphans = []
    for path in unit_files(root):
        directory, name = path.rsplit("/", 1)
        if not name.startswith("test_") or path in ACROSS or path.startswith(ROLE_TESTS):
            continue
        source_directory = directory[len("tests/unit/"):] if directory.startswith(MIRRORED) else None
        stem = name[len("test_"):]
        if source_directory is None or not any(os.path.isfile(os.path.join(root, source_directory, candidate))
                                               for candidate in (stem, "_" + stem)):
            orphans.append(path)
    return orphans


def imported_test_modules(source, package):
    """The test modules (test_*) a file imports, in any import form; relative imports resolved in package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = parent + ("." + base if base else "")
            modules = [base] + ["%s.%s" % (base, alias.name) for alias in node.names]
        else:
            continue
        found += [module for module in modules if module.rsplit(".", 1)[-1].startswith("test_")]
    return found


def files_importing_test_files(root):
    found = {}
    for path in unit_files(root):
        with open(os.path.join(root, path), encoding="utf-8") as handle:
            modules = imported_test_modules(handle.read(), path.rsplit("/", 1)[0].replace("/", "."))
        if modules:
            found[path] = modules
    return found


def test_every_source_has_a_test_file_of_its_name():
    missing = sources_without_tests(ROOT)
    assert missing == [], "sources without tests/unit/<directory>/test_<name>.py: %s" % ", ".join(missing)


def test_every_test_file_names_a_source():
    orphans = orphan_test_files(ROOT)
    assert orphans == [], "test files named after no source (ACROSS lists the exceptions): %s" % ", ".join(orphans)


def test_no_test_file_imports_another():
    found = files_importing_test_files(ROOT)
    assert found == {}, "test files importing test files (share through _helpers.py or conftest.py): %r" % found


def test_every_directory_of_tests_is_a_package():
    directories = sorted({path.rsplit("/", 1)[0] for path in unit_files(ROOT)})
    assert [directory for directory in directories
            if not os.path.isfile(os.path.join(ROOT, directory, "__init__.py"))] == []
    assert os.path.isfile(os.path.join(ROOT, "tests", "__init__.py"))


def test_the_checks_see_a_missing_test_an_orphan_and_an_import(tmp_path):
    """On a made-up tree: a source without tests, a test file of no source, one test file importing another."""
    for directory in SOURCE_DIRECTORIES:
        os.makedirs(str(tmp_path / directory))
    os.makedirs(str(tmp_path / "tests/unit/plugins/module_utils/_engine"))
    for path, text in (("plugins/module_utils/_engine/_netlink.py", ""), ("plugins/module_utils/_engine/engine.py", ""),
                       ("plugins/module_utils/_engine/__init__.py", ""),
                       ("tests/unit/plugins/module_utils/_engine/test_engine.py", ""),
                       ("tests/unit/plugins/module_utils/_engine/_helpers.py", ""),
                       ("tests/unit/plugins/module_utils/_engine/test_engine_parsers.py",
                        "from .test_engine import x\nfrom tests.unit import test_layers\nfrom . import _helpers\n")):
        (tmp_path / path).write_text(text)
    assert sources_without_tests(str(tmp_path)) == ["plugins/module_utils/_engine/_netlink.py"]
    assert orphan_test_files(str(tmp_path)) == ["tests/unit/plugins/module_utils/_engine/test_engine_parsers.py"]
    assert files_importing_test_files(str(tmp_path)) == {
        "tests/unit/plugins/module_utils/_engine/test_engine_parsers.py": [
            "tests.unit.plugins.module_utils._engine.test_engine", "tests.unit.test_layers"]}
    (tmp_path / "tests/unit/plugins/module_utils/_engine/test_netlink.py").write_text("")
    assert sources_without_tests(str(tmp_path)) == []
    (tmp_path / "extensions/eda/plugins/event_source/tcp_health.py").write_text("")
    os.makedirs(str(tmp_path / "tests/unit/extensions/eda/plugins/event_source"))
    (tmp_path / "tests/unit/extensions/eda/plugins/event_source/test_tcp_healht.py").write_text("")
    assert sources_without_tests(str(tmp_path)) == ["extensions/eda/plugins/event_source/tcp_health.py"]
    assert orphan_test_files(str(tmp_path)) == [
        "tests/unit/extensions/eda/plugins/event_source/test_tcp_healht.py",
        "tests/unit/plugins/module_utils/_engine/test_engine_parsers.py"]
