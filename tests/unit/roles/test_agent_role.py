# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The internal role netstate.tcp._agent: what the agent roles install on hosts and how they include it.

The collector on a host is the engine package, plugins/module_utils/_engine/, copied whole (its Python
files). Everything the collector imports must be inside it (read from the source, every import form), it
must hold no code that only tests or benchmarks call, and the collector must run from a copy holding that
package only (a real run of each output format, the modules it loaded read from the interpreter afterwards).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLES = os.path.join(ROOT, "roles")
AGENT = os.path.join(ROLES, "_agent")
ENGINE = os.path.join(ROOT, "plugins", "module_utils", "_engine")
PACKAGE = "ansible_collections.netstate.tcp.plugins.module_utils._engine"
FORMATS = ("json", "prometheus", "zabbix-discovery")
STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


def load(*path):
    with open(os.path.join(*path), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def package_files():
    """What the role copies: the package's Python files."""
    return sorted(name for name in os.listdir(ENGINE) if name.endswith(".py"))


def imports(path, package):
    """Full names of the modules path's source imports; relative imports resolved within package."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            # from X import y: y may be a module of package X
            found.update(module + "." + alias.name for alias in node.names)
            found.add(module)
    return found


def collection_path(module):
    """The file of a module of this collection, or None when the name is no module of it."""
    prefix = "ansible_collections.netstate.tcp."
    relative = module[len(prefix):].split(".")
    for candidate in (os.path.join(ROOT, *relative) + ".py", os.path.join(ROOT, *relative, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def import_graph(module):
    """{module: its file} of module and everything it imports from the collection, transitively; and the
    names outside the collection and the standard library it imports."""
    seen, foreign, todo = {}, set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = collection_path(name)
        seen[name] = path
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        for imported in imports(path, package):
            if imported.startswith("ansible_collections."):
                target = collection_path(imported)
                if target is None and os.path.isdir(os.path.join(ROOT, *imported.split(".")[3:])):
                    continue  # a directory without code: ansible_collections...module_utils of "from .. import x"
                if target is not None:
                    todo.append(imported)
                elif collection_path(imported.rsplit(".", 1)[0]) is None:
                    foreign.add(imported)  # neither a module nor a name in one
            elif imported.split(".")[0] not in STDLIB:
                foreign.add(imported)
    return seen, foreign


def test_everything_the_collector_imports_is_in_the_package():
    if not STDLIB:
        pytest.skip("needs Python 3.10+ (sys.stdlib_module_names)")
    graph, foreign = import_graph(PACKAGE + ".collect")
    assert foreign == set()
    outside = {name: path for name, path in graph.items() if os.path.dirname(path) != ENGINE}
    assert outside == {}
    assert PACKAGE + ".engine" in graph and PACKAGE + "._netlink" in graph


def test_the_import_graph_follows_every_import_form(tmp_path, monkeypatch):
    # the reader itself: relative, absolute and package imports all count, and leaving the package shows
    package = tmp_path / "plugins" / "module_utils" / "_engine"
    package.mkdir(parents=True)
    name = "ansible_collections.netstate.tcp.plugins.module_utils._engine"
    sources = {
        "__init__": "", "a": "from . import b\nfrom .c import thing\n",
        "b": "import %s.d\n" % name,
        "c": "from %s import e\n" % name,
        "d": "from %s.f import other\nimport os\n" % name,
        "e": "from .. import _outside\n", "f": "import yaml\n", "unused": "",
    }
    for module, text in sources.items():
        (package / (module + ".py")).write_text(text)
    (package.parent / "_outside.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    graph, foreign = import_graph(name + ".a")
    assert {module.rsplit(".", 1)[1] for module in graph} == {"a", "b", "c", "d", "e", "f", "_outside", "_engine"}
    assert foreign == {"yaml"}


def names_used(directory):
    """Every name the Python files under directory read: variables, attributes, imported names."""
    used = set()
    for top, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(top, name), encoding="utf-8") as handle:
                    tree = ast.parse(handle.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                        used.add(node.id)
                    elif isinstance(node, ast.Attribute):
                        used.add(node.attr)
                    elif isinstance(node, ast.alias):
                        used.add(node.name.rsplit(".", 1)[-1])
    return used


def package_code():
    """(file, name) of every function, class and method the package defines (dunder methods aside)."""
    found = []
    for name in package_files():
        with open(os.path.join(ENGINE, name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found.append((name, node.name))
            if isinstance(node, ast.ClassDef):
                found.extend((name, node.name + "." + method.name) for method in node.body
                             if isinstance(method, ast.FunctionDef) and not method.name.startswith("__"))
    return found


def test_the_package_holds_nothing_only_tests_or_benchmarks_use():
    # what ships to every host is called by the collection itself; a benchmark's floor or a test's
    # helper lives in benchmarks/ or tests/
    used = names_used(os.path.join(ROOT, "plugins"))
    unused = [(name, code) for name, code in package_code() if code.rsplit(".", 1)[-1] not in used]
    assert unused == [], unused
    assert ("_netlink.py", "dump") in package_code()  # the reader sees the package


def test_a_helper_only_a_benchmark_calls_is_found(tmp_path, monkeypatch):
    package = tmp_path / "_engine"
    package.mkdir()
    (package / "_netlink.py").write_text("def dump():\n    pass\n\n\ndef dump_raw():\n    dump()\n")
    (package / "collect.py").write_text("from . import _netlink\n_netlink.dump()\n")
    monkeypatch.setattr(sys.modules[__name__], "ENGINE", str(package))
    used = names_used(str(tmp_path))
    assert [code for _name, code in package_code() if code not in used] == ["dump_raw"]


@pytest.fixture(scope="module")
def installed_copy(tmp_path_factory):
    """The collector as the role lays a release out on a host: <release>/ansible_collections/.../_engine/*.py."""
    base = tmp_path_factory.mktemp("collector")
    target = base.joinpath(*PACKAGE.split("."))
    target.mkdir(parents=True)
    for name in package_files():
        shutil.copyfile(os.path.join(ENGINE, name), str(target / name))
    return base


# Run the collector's main() as the roles' jobs run the module (python -E -s, the release's directory as the
# working directory) and print which of the collection's modules it loaded.
PROBE = (
    "import importlib, sys\n"
    "collect = importlib.import_module(%r)\n"
    "status = collect.main(sys.argv[1:])\n"
    "loaded = [module for name, module in sys.modules.items()\n"
    "          if name.startswith('ansible_collections.') and getattr(module, '__file__', None)]\n"
    "sys.stderr.write('LOADED ' + ' '.join(sorted(module.__file__ for module in loaded)) + '\\n')\n"
    "sys.exit(status)\n" % (PACKAGE + ".collect",)
)


def test_the_collector_runs_from_the_package_alone(installed_copy):
    loaded = set()
    for output_format in FORMATS:
        done = subprocess.run([sys.executable, "-E", "-s", "-c", PROBE, "--format", output_format, "--quiet"],
                              cwd=str(installed_copy), capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr  # an ImportError of a file outside the package fails here
        assert done.stdout.strip(), "--format %s printed nothing" % output_format
        loaded.update(*[line.split()[1:] for line in done.stderr.splitlines() if line.startswith("LOADED")])
    directory = str(installed_copy.joinpath(*PACKAGE.split(".")))
    assert {os.path.dirname(path) for path in loaded} == {directory}, loaded  # the copy, not this tree
    assert "collect.py" in {os.path.basename(path) for path in loaded}


def test_the_role_copies_the_package_and_keeps_no_list_of_it():
    with open(os.path.join(AGENT, "tasks", "install.yml"), encoding="utf-8") as handle:
        text = handle.read()
    assert '/plugins/module_utils/_engine"' in text and "'/*.py'" in text
    assert "__netstate_agent_collector_modules" not in str(load(AGENT, "vars", "main.yml"))


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
