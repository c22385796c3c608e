# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Special files named where a file or a namespace is expected, for real (docs/security.md).

Device nodes are made with mknod on a tmpfs inside a private mount namespace, so the machine's
own /dev is never at stake; FIFOs, links and ordinary files stand where the collector, the
fact modules and the health report expect a file or a network namespace. Every command runs
with a timeout: code that waits on a FIFO fails the test instead of hanging it.
"""

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import COLLECTIONS

pytestmark = pytest.mark.netns

# in a network namespace of its own: few sockets, no machine-wide listener walk
COLLECT = ["unshare", "--net", sys.executable, "-m",
           "ansible_collections.netstate.tcp.plugins.module_utils._engine.collect"]
ENV = dict(os.environ, PYTHONPATH=COLLECTIONS)


def run(cmd, timeout=60, **kwargs):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV, check=False, **kwargs)
    except subprocess.TimeoutExpired:
        pytest.fail("%s waited %d s (on a FIFO?) instead of refusing it" % (" ".join(cmd[:6]), timeout))


def in_private_mounts(script, timeout=60):
    """Run a shell script in a private mount namespace with a fresh tmpfs at $DEV, where it can
    mknod device nodes; the script's last line prints what the test checks."""
    wrapped = 'DEV=$(mktemp -d) && mount -t tmpfs -o mode=0755 netstate-dev "$DEV" && ' + script
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", wrapped], timeout=timeout)


def file_type(path):
    return stat.S_IFMT(os.lstat(path).st_mode)


@pytest.mark.parametrize("device, numbers", [("full", "1 7"), ("zero", "1 5"), ("null", "1 3")])
def test_collector_output_onto_a_device_node_is_refused_and_the_node_kept(device, numbers):
    collect = " ".join(COLLECT)
    result = in_private_mounts(
        'mknod "$DEV/%(d)s" c %(n)s && '
        'set +e; %(c)s --format prometheus --output "$DEV/%(d)s" --gather-subset states; echo "rc=$?"; '
        'stat -c "type=%%F" "$DEV/%(d)s"; ls -A "$DEV"' % {"d": device, "n": numbers, "c": collect})
    assert "rc=2" in result.stdout, result.stdout + result.stderr
    assert "type=character special file" in result.stdout
    assert "argument --output:" in result.stderr and "is a character device" in result.stderr
    # nothing written beside it either: no temporary file, no spare failure file
    assert result.stdout.strip().splitlines()[-1] == device


def test_collector_output_onto_a_fifo_or_a_link_is_refused(tmp_path):
    fifo = tmp_path / "netstate.prom"
    os.mkfifo(fifo)
    target = tmp_path / "elsewhere"
    target.write_text("kept\n")
    link = tmp_path / "link.prom"
    link.symlink_to(target)
    for path, what in ((fifo, "is a FIFO (named pipe)"), (link, "is a symbolic link")):
        result = run(COLLECT + ["--format", "prometheus", "--output", str(path), "--gather-subset", "states"])
        assert result.returncode == 2, result.stderr
        assert what in result.stderr
    assert stat.S_ISFIFO(file_type(fifo))
    assert os.path.islink(link) and target.read_text() == "kept\n"
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "link.prom", "netstate.prom"]


def test_collector_namespace_that_is_a_fifo_or_a_file_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "ns-fifo"
    os.mkfifo(fifo)
    ordinary = tmp_path / "ns-file"
    ordinary.write_text("")
    for path, what in ((fifo, "is a FIFO (named pipe), not a network namespace file"),
                       (ordinary, "is an ordinary file, not a network namespace file")):
        result = run(COLLECT + ["--namespace", str(path), "--gather-subset", "states"], timeout=30)
        assert result.returncode == 1, result.stderr
        assert "namespace %s: cannot enter" % path in result.stderr and what in result.stderr
        assert result.stdout == ""


def test_a_fifo_in_run_netns_is_refused_by_name(tmp_path):
    """A name under /run/netns (as `ip netns` makes them) that is a FIFO: refused, not waited on."""
    name = "netstate-fifo-%d" % os.getpid()
    path = os.path.join("/run/netns", name)
    os.makedirs("/run/netns", exist_ok=True)
    os.mkfifo(path)
    try:
        result = run(COLLECT + ["--namespace", name, "--gather-subset", "states"], timeout=30)
    finally:
        os.unlink(path)
    assert result.returncode == 1
    assert "is a FIFO (named pipe), not a network namespace file" in result.stderr


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_collector_discovery_file_that_is_special_is_gathered_around(tmp_path, kind):
    path = tmp_path / "discovery.json"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = "/dev/zero"  # read whole, it would never end
    result = run(COLLECT + ["--format", "zabbix-discovery", "--discovery-file", str(path)], timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[")
    what = "is a FIFO (named pipe)" if kind == "fifo" else "is a character device"
    assert "gathering instead of reading the discovery file: %s: %s, not a regular file" % (path, what) \
        in result.stderr


def _playbook(tmp_path, task):
    playbook = tmp_path / "play.yml"
    playbook.write_text(textwrap.dedent("""\
        - name: Special files
          hosts: localhost
          gather_facts: false
          tasks:
        """) + textwrap.indent(textwrap.dedent(task), "    "))
    return run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook)], timeout=120, cwd=tmp_path)


@pytest.mark.parametrize("module", ["connection_facts", "listener_facts"])
def test_fact_modules_refuse_a_fifo_as_namespace(tmp_path, module):
    fifo = tmp_path / "ns"
    os.mkfifo(fifo)
    result = _playbook(tmp_path, """\
        - name: Gather from a FIFO
          netstate.tcp.%s:
            namespace: %s
        """ % (module, fifo))
    assert result.returncode == 2, result.stdout
    assert "is a FIFO (named pipe), not a network namespace file" in result.stdout
    assert "Traceback" not in result.stdout


def test_health_report_refuses_special_files_on_the_controller(tmp_path):
    """A FIFO among the partial reports to merge, and one where a report file goes: refused, named."""
    partial = tmp_path / "partial.json"
    os.mkfifo(partial)
    result = _playbook(tmp_path, """\
        - name: Merge a FIFO
          netstate.tcp.health_report:
            merge: ["%s"]
            dest: "%s/merged"
        """ % (partial, tmp_path))
    assert result.returncode == 2, result.stdout
    assert "merge: cannot read %s: %s: is a FIFO (named pipe), not a regular file" % (partial, partial) \
        in result.stdout
    reports = tmp_path / "reports"
    reports.mkdir()
    os.mkfifo(reports / "health.json")
    result = _playbook(tmp_path, """\
        - name: Report onto a FIFO
          netstate.tcp.health_report:
            hosts: []
            dest: "%s"
        """ % reports)
    assert result.returncode == 2, result.stdout
    assert "dest: cannot write %s/health" % reports in result.stdout
    assert "is a FIFO (named pipe); only a regular file is ever replaced" in result.stdout
    assert stat.S_ISFIFO(file_type(reports / "health.json"))
