# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fleet fixtures: one podman fleet of real SSH hosts per test session (tests/fleet/fleet.py).

Using the fleet in a test file of your own (tests/fleet/test_<yours>.py)::

    import pytest
    pytestmark = pytest.mark.fleet          # every fleet test carries the marker

    def test_something(fleet, loads, ansible_playbook):
        host = fleet.hosts[0]                           # "h01" .. "h05"
        load = loads.start(host, "close_wait", count=50)  # stopped for you after the test
        assert load.info["expect"]["CLOSE_WAIT"] == 50
        result = ansible_playbook("netstate.tcp.health", "-l", host)  # plain subprocess
        assert result.returncode == 0, result.stdout
        print(fleet.exec(host, "ss -tan").stdout)        # podman exec, the oracle side

Fixtures
    fleet               session scope: the Fleet (fleet.py), up once with NETSTATE_FLEET_HOSTS hosts
                        (default 5) of NETSTATE_FLEET_OS (comma separated, taken in turn; default
                        debian12) and NETSTATE_FLEET_INIT (none or systemd; default none), torn down
                        at the end. ``fleet.inventory`` is its Ansible inventory (group ``fleet``,
                        host variables ``fleet_os`` and ``fleet_init``); ``fleet.address(h)``,
                        ``fleet.os(h)``, ``fleet.init(h)``, ``fleet.exec(h, cmd)``, ``fleet.ssh(h, cmd)``,
                        ``fleet.stop_host(h)`` / ``start_host`` / ``restart_host``,
                        ``fleet.loadgen(h, scenario, **params)``. apt on every host goes through the
                        fleet's Debian-mirror proxy (``fleet.proxy_url``).
    fleet_factory       session scope: ``fleet_factory(suffix, hosts, systems=("debian12",), init="none")``
                        returns another up Fleet (name ``pt<pid><suffix>``), the same one for the
                        same arguments within the session, torn down at the session's end. Use it
                        when a test needs other kinds of hosts than the session fleet, and share
                        it: every fleet costs a /27 slice (eight on the machine) and start-up time.
    loads               per test: ``loads.start(host, scenario, **params)`` starts a load generator
                        (tests/fleet/loadgen.py) and stops it when the test ends, pass or fail.
    ansible_playbook    per test: ``ansible_playbook(playbook, *args, env=None, timeout=600)`` runs
                        ansible-playbook against the fleet inventory; returns a CompletedProcess
                        (stdout and stderr merged into .stdout).

Rules for sharing the one session fleet (every fleet test file runs on the same hosts)
    * Stop every load generator you start (use ``loads``, or ``with fleet.loadgen(...)``).
      Stopping resets its connections and drops its TIME_WAIT sockets (ss -K), so it leaves
      nothing behind; use ports of your own when you run several at once.
    * A host you stop comes back up after your test (the fixture starts it); do not remove hosts.
    * Anything else you change on a host (sysctls, files, packages, services) you undo, or you
      call ``fleet.restart_host(h)`` at the end: a restarted host gets a fresh network namespace,
      so its net.* sysctls and addresses are back to the defaults.
    * Never assert exact whole-host totals that another test's leftovers could change: compare
      with ``ss`` run on the host before and after (see test_fleet_gather.py), or count your own ports.

Prerequisites: root and podman (fleet.py installs podman, runc and debootstrap with apt-get
when CI=true). Without them fleet tests skip and say why; under CI=true they fail instead.
NETSTATE_FLEET_NAME picks the fleet name (default ``pt<pid>``, so parallel sessions by different
people get their own network slice of 198.18.0.0/24); NETSTATE_FLEET_KEEP=1 leaves the fleet up
after the session for debugging (``python3 tests/fleet/fleet.py --name NAME down`` removes it).
"""

import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import fleet as fleet_module  # noqa: E402  (tests/fleet/fleet.py)
from fleetcheck import run_playbook  # noqa: E402

from tests.conftest import IN_CI, require  # noqa: E402  (skip, or fail under CI=true)


def pytest_collection_modifyitems(items):
    # A test that uses the fleet is a fleet test, marker or not (so -m 'not fleet' leaves it out).
    for item in items:
        names = getattr(item, "fixturenames", ())
        if ("fleet" in names or "fleet_factory" in names) and item.get_closest_marker("fleet") is None:
            item.add_marker(pytest.mark.fleet)


@pytest.fixture(scope="session")
def fleet():
    """The session's fleet of real SSH hosts; see the module docstring."""
    require(sys.platform.startswith("linux"), "the fleet needs Linux")
    require(os.geteuid() == 0, "the fleet needs root (rootful podman, networks, user namespaces)")
    require(IN_CI or shutil.which("podman") is not None,
            "podman is not installed (fleet.py installs it when CI=true, or run "
            "`python3 tests/fleet/fleet.py up` once as root)")
    try:
        hosts = int(os.environ.get("NETSTATE_FLEET_HOSTS", "5"))
    except ValueError:
        pytest.fail("NETSTATE_FLEET_HOSTS must be a number, got %r" % os.environ["NETSTATE_FLEET_HOSTS"])
    systems = os.environ.get("NETSTATE_FLEET_OS") or ",".join(fleet_module.DEFAULT_SYSTEMS)
    init = os.environ.get("NETSTATE_FLEET_INIT") or fleet_module.DEFAULT_INIT
    try:
        fleet_module.validate_kinds(systems, init)
    except fleet_module.FleetError as error:
        pytest.fail("NETSTATE_FLEET_OS/NETSTATE_FLEET_INIT: %s" % error, pytrace=False)
    name = os.environ.get("NETSTATE_FLEET_NAME") or "pt%d" % os.getpid()
    the_fleet = _up(fleet_module.Fleet(name=name, owner_pid=os.getpid()), hosts, systems, init)
    try:
        yield the_fleet
    finally:
        if os.environ.get("NETSTATE_FLEET_KEEP") != "1":
            the_fleet.down()


def _up(the_fleet, hosts, systems, init):
    try:
        return the_fleet.up(hosts, systems=systems, init=init)
    except fleet_module.FleetError as error:
        the_fleet.down()
        pytest.fail("fleet %s up failed: %s" % (the_fleet.name, error), pytrace=False)


@pytest.fixture(scope="session")
def fleet_factory():
    """fleet_factory(suffix, hosts, systems=("debian12",), init="none") -> an up Fleet of its own."""
    require(sys.platform.startswith("linux"), "the fleet needs Linux")
    require(os.geteuid() == 0, "the fleet needs root (rootful podman, networks, user namespaces)")
    require(IN_CI or shutil.which("podman") is not None, "podman is not installed")
    made = {}

    def make(suffix, hosts, systems=fleet_module.DEFAULT_SYSTEMS, init=fleet_module.DEFAULT_INIT):
        system_list, init_list = fleet_module.validate_kinds(systems, init)
        key = (suffix, hosts, tuple(system_list), tuple(init_list))
        if key in made:
            return made[key]
        if any(other[0] == suffix for other in made):
            raise fleet_module.FleetError("fleet_factory: suffix %r is already used for %r" % (
                suffix, [other for other in made if other[0] == suffix][0]))
        name = "pt%d%s" % (os.getpid(), suffix)
        the_fleet = fleet_module.Fleet(name=name, owner_pid=os.getpid())  # FleetError names a bad name
        made[key] = _up(the_fleet, hosts, system_list, init_list)
        return made[key]

    try:
        yield make
    finally:
        if os.environ.get("NETSTATE_FLEET_KEEP") != "1":
            for the_fleet in made.values():
                the_fleet.down()


class Loads:
    """Load generators started by one test, all stopped at its end."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.handles = []

    def start(self, host, scenario, **params):
        handle = self.fleet.loadgen(host, scenario, **params)
        self.handles.append(handle)
        return handle

    def stop_all(self):
        while self.handles:
            self.handles.pop().stop()


@pytest.fixture
def loads(fleet):
    tracker = Loads(fleet)
    try:
        yield tracker
    finally:
        tracker.stop_all()


@pytest.fixture(autouse=True)
def _hosts_back_up(request):
    """After a fleet test, any host it stopped is started again for the next test."""
    yield
    if "fleet" not in request.fixturenames:
        return
    the_fleet = request.getfixturevalue("fleet")
    for host in the_fleet.hosts:
        if not the_fleet.is_running(host):
            the_fleet.start_host(host)


@pytest.fixture
def ansible_playbook(fleet):
    """ansible-playbook PLAYBOOK ARGS... -i <fleet inventory>, as a plain subprocess."""

    def run(playbook, *args, env=None, timeout=600, inventory=None):
        return run_playbook(fleet, playbook, *args, env=env, timeout=timeout, inventory=inventory)

    return run


@pytest.fixture(scope="module")
def node_exporter_host(fleet, tmp_path_factory):
    """The last fleet host with node_exporter and the collector from the netstate.tcp.node_exporter
    role (installed through the fleet's apt proxy; packages an
    earlier module installed are still there); restarted at the end of the test module, so
    node_exporter and cron stop before other modules use the host. {"host": ..., "command": the collector's
    command line as cron runs it}."""
    from soak import install_node_exporter  # pylint: disable=import-outside-toplevel

    host = fleet.hosts[-1]
    try:
        command = install_node_exporter(fleet, host, tmp_path_factory.mktemp("node_exporter"))
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield {"host": host, "command": command}
    finally:
        fleet.exec(host, "rm -f /etc/cron.d/netstate-tcp-textfile", check=False)
        fleet.restart_host(host)


@pytest.fixture(scope="module")
def ansible_env():
    """The environment ansible-playbook and ansible-rulebook run in from a test: this checkout's collection and
    ansible.cfg, and the virtualenv's tools first on PATH (ansible-rulebook calls ansible-galaxy)."""
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", os.path.join(ROOT, ".build", "collections"))
    env.setdefault("ANSIBLE_CONFIG", os.path.join(ROOT, "ansible.cfg"))
    env["PATH"] = "%s:%s" % (os.path.dirname(sys.executable), env.get("PATH", ""))
    return env
