# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The internal role netstate.tcp._agent: what the agent roles install on hosts and how they include it.

The collector's files on a host are the list in roles/_agent/vars/main.yml. It must equal what collect.py
imports from the collection, transitively (read from the source), and the collector must run from a copy
holding those files only, importing every one of them (a real run of each output format, the modules it
loaded read from the interpreter afterwards).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLES = os.path.join(ROOT, "roles")
AGENT = os.path.join(ROLES, "_agent")
MODULE_UTILS = os.path.join(ROOT, "plugins", "module_utils", "_engine")
PACKAGE = "ansible_collections.netstate.tcp.plugins.module_utils._engine"
FORMATS = ("json", "prometheus", "zabbix-discovery")


def load(*path):
    with open(os.path.join(*path), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def installed_files():
    return load(AGENT, "vars", "main.yml")["__netstate_agent_collector_modules"]


def local_imports(name):
    """Module names of plugins/module_utils that plugins/module_utils/<name>.py imports."""
    with open(os.path.join(MODULE_UTILS, name + ".py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None:  # from . import x
                found.update(alias.name for alias in node.names)
            elif node.level == 1:  # from .x import y
                found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith(PACKAGE + "."):
                found.add(node.module[len(PACKAGE) + 1:].split(".")[0])
            elif node.module == PACKAGE:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name[len(PACKAGE) + 1:].split(".")[0] for alias in node.names
                         if alias.name.startswith(PACKAGE + "."))
    return found


def import_closure(start):
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(local_imports(name))
    return seen


def test_installed_files_are_what_collect_imports():
    closure = import_closure("collect")
    assert sorted(name + ".py" for name in closure | {"__init__"}) == installed_files()


def test_the_closure_follows_every_import_form(tmp_path, monkeypatch):
    # the reader itself: relative, absolute and package imports all count
    sources = {
        "a": "from . import b\nfrom .c import thing\n",
        "b": "import %s.d\n" % PACKAGE,
        "c": "from %s import e\n" % PACKAGE,
        "d": "from %s.f import other\nimport os\n" % PACKAGE,
        "e": "", "f": "", "unused": "",
    }
    for name, text in sources.items():
        (tmp_path / (name + ".py")).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "MODULE_UTILS", str(tmp_path))
    assert import_closure("a") == {"a", "b", "c", "d", "e", "f"}


@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory):
    """The collector as the role lays it out on a host: <dir>/ansible_collections/.../module_utils/<files>."""
    base = tmp_path_factory.mktemp("collector")
    target = base.joinpath(*PACKAGE.split("."))
    target.mkdir(parents=True)
    for name in installed_files():
        with open(os.path.join(MODULE_UTILS, name), "rb") as source:
            (target / name).write_bytes(source.read())
    return base


# Run the collector's main() as the roles' jobs run the module (python -E -s, the copy's directory as the
# working directory) and print which of the package's modules it loaded.
PROBE = (
    "import importlib, sys\n"
    "collect = importlib.import_module(%r)\n"
    "status = collect.main(sys.argv[1:])\n"
    "loaded = [module for name, module in sys.modules.items() if (name + '.').startswith(%r)]\n"
    "sys.stderr.write('LOADED ' + ' '.join(sorted(module.__file__ for module in loaded)) + '\\n')\n"
    "sys.exit(status)\n" % (PACKAGE + ".collect", PACKAGE + ".")
)


def test_every_installed_file_is_loaded_by_the_collector(installed_copy):
    loaded = set()
    for output_format in FORMATS:
        done = subprocess.run([sys.executable, "-E", "-s", "-c", PROBE, "--format", output_format, "--quiet"],
                              cwd=str(installed_copy), capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr  # an ImportError of a file not installed fails here
        assert done.stdout.strip(), "--format %s printed nothing" % output_format
        loaded.update(*[line.split()[1:] for line in done.stderr.splitlines() if line.startswith("LOADED")])
    directory = str(installed_copy.joinpath(*PACKAGE.split(".")))
    assert {os.path.dirname(path) for path in loaded} == {directory}, loaded  # the copy, not this tree
    assert sorted(os.path.basename(path) for path in loaded) == installed_files()


# ------------------------------------------------------------------------------ the role's entry points


def argument_specs():
    return load(AGENT, "meta", "argument_specs.yml")["argument_specs"]


def test_every_entry_point_has_a_tasks_file_and_an_argument_spec():
    tasks = {name[:-4] for name in os.listdir(os.path.join(AGENT, "tasks")) if name.endswith(".yml")}
    assert tasks == set(argument_specs())
    for name, spec in argument_specs().items():
        assert spec["short_description"].startswith("Internal only"), name


def role_includes():
    """(role, tasks_from, vars) of every include of netstate.tcp._agent in the agent roles."""
    found = []
    for role in ("node_exporter", "zabbix_agent"):
        for directory in ("tasks", "handlers"):
            for name in sorted(os.listdir(os.path.join(ROLES, role, directory))):
                for task in load(ROLES, role, directory, name) or []:
                    include = task.get("ansible.builtin.include_role")
                    if include and include["name"] == "netstate.tcp._agent":
                        found.append((role, include["tasks_from"], task.get("vars", {})))
                    path = task.get("ansible.builtin.include_tasks")
                    if isinstance(path, str) and "/_agent/tasks/" in path:
                        found.append((role, os.path.basename(path)[:-4], task.get("vars", {})))
    return found


def test_agent_roles_pass_exactly_the_options_of_each_entry_point():
    specs = argument_specs()
    used = set()
    for role, entry_point, variables in role_includes():
        options = specs[entry_point]["options"]
        required = {name for name, option in options.items() if option.get("required")}
        assert required <= set(variables) <= set(options), (role, entry_point, sorted(variables))
        used.add((role, entry_point))
    assert used == {(role, entry_point) for role in ("node_exporter", "zabbix_agent") for entry_point in specs}
