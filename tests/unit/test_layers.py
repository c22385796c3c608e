# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Who may import whom (docs/architecture.md), read from every file's imports.

The engine (plugins/module_utils/_engine) runs on monitored hosts without Ansible and imports nothing
outside itself, so the agent roles can copy that one directory; the modules' backends
(plugins/module_utils) build on it; the controller engines (plugins/plugin_utils) are reused without
Ansible; modules never reach into the controller side; the test oracles (tests/support) share no code
with what they check.
"""

from __future__ import annotations

import ast
import os
import sys

import pytest

from tests.conftest import ROOT, require

PLUGINS = "ansible_collections.netstate.tcp.plugins."
STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))
ENGINE = (PLUGINS + "module_utils._engine",)
MODULE_UTILS = (PLUGINS + "module_utils",)
CONTROLLER = ENGINE + (PLUGINS + "plugin_utils",)
# directory -> what its files may import besides the standard library
ALLOWED = {
    "plugins/module_utils/_engine": ENGINE,
    "plugins/module_utils": MODULE_UTILS,
    "plugins/plugin_utils": CONTROLLER + ("jmespath", "yaml"),
    "plugins/modules": MODULE_UTILS + ("ansible.module_utils",),
    "plugins/action": CONTROLLER + ("ansible",),
    "plugins/filter": CONTROLLER + ("ansible",),
    "plugins/doc_fragments": (),
    # run by ansible-rulebook, beside the controller: the engine and the rules, never Ansible
    "extensions/eda/plugins/event_source": CONTROLLER,
    # parsers of the outputs and the oracles' own shared helpers, never the collection
    "tests/support": ("markdown_it", "prometheus_client", "tests.support"),
}


def imported(source, package):
    """(line, module) of every import in source; relative imports resolved within package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.append((node.lineno, base + ("." + node.module if node.module else "")))
            else:
                found.append((node.lineno, node.module))
    return found


def violations(source, directory):
    allowed = ALLOWED[directory]
    package = PLUGINS + directory.split("/", 1)[1].replace("/", ".") if directory.startswith("plugins/") else directory
    return [(line, module) for line, module in imported(source, package)
            if module.split(".")[0] not in STDLIB
            and not any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)]


def python_files(directory):
    path = os.path.join(ROOT, directory)
    return sorted(os.path.join(directory, name) for name in os.listdir(path) if name.endswith(".py"))


@pytest.mark.parametrize("directory", sorted(ALLOWED))
def test_every_import_is_allowed_for_its_directory(directory):
    require(bool(STDLIB), "needs Python 3.10+ (sys.stdlib_module_names)")
    files = python_files(directory)
    assert files, directory
    found = {}
    for name in files:
        with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
            bad = violations(handle.read(), directory)
        if bad:
            found[name] = bad
    assert found == {}, "imports against docs/architecture.md's table: %r" % found


@pytest.mark.parametrize("directory, source", [
    ("plugins/module_utils/_engine", "from ansible.module_utils.basic import AnsibleModule\n"),
    ("plugins/module_utils/_engine", "from ansible_collections.netstate.tcp.plugins.module_utils import _sysctl\n"),
    ("plugins/module_utils/_engine", "import ansible_collections.netstate.tcp.plugins.module_utils._exit\n"),
    ("plugins/module_utils", "from ansible.module_utils.basic import AnsibleModule\n"),
    ("plugins/module_utils", "from ansible_collections.netstate.tcp.plugins.plugin_utils import _paths\n"),
    ("plugins/module_utils", "import jmespath\n"),
    ("plugins/plugin_utils", "from ansible.errors import AnsibleError\n"),
    ("plugins/modules", "from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules\n"),
    ("plugins/modules", "from ansible.plugins.action import ActionBase\n"),
    ("plugins/action", "from ansible_collections.netstate.tcp.plugins.module_utils import _peer_block\n"),
    ("tests/support", "from ansible_collections.netstate.tcp.plugins.module_utils._engine import engine\n"),
    ("extensions/eda/plugins/event_source", "from ansible.template import Templar\n"),
    ("extensions/eda/plugins/event_source", "import yaml\n"),
])
def test_a_forbidden_import_is_found(directory, source):
    require(bool(STDLIB), "needs Python 3.10+ (sys.stdlib_module_names)")
    assert violations("import os\n" + source, directory) == [(2, source.split()[1])]


def test_relative_imports_resolve_within_the_package():
    engine = PLUGINS + "module_utils._engine"
    assert imported("from . import engine\nfrom ._atomic import write_atomically\n", engine) == [
        (1, engine), (2, engine + "._atomic")]
    assert imported("from ._engine import engine\n", PLUGINS + "module_utils") == [(1, engine)]


@pytest.mark.parametrize("source, module", [
    ("from .. import _peer_block\n", "module_utils"),
    ("from .._listen_ports import gather_args\n", "module_utils._listen_ports"),
    ("from ..._engine import engine\n", "tcp.plugins._engine"),  # three dots climb out of module_utils
])
def test_the_engine_reaches_nothing_outside_itself_relatively(source, module):
    require(bool(STDLIB), "needs Python 3.10+ (sys.stdlib_module_names)")
    found = violations(source, "plugins/module_utils/_engine")
    assert len(found) == 1 and found[0][1].endswith(module), found
