# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_cgroup: systemd's unit name grammar, the unit of a cgroup path, /proc/PID/cgroup of every layout (read
bounded, never from a FIFO), the cgroup v2 mount and its ids, and the counting of sock_diag replies by
cgroup id. Real cgroups, real listeners and `ss --cgroup` as the oracle: tests/integration/test_units_netns.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import struct

import pytest

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _cgroup as cgroup
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _netlink as netlink

from ._helpers import diag_message, done_message


@pytest.mark.parametrize("name", [
    "nginx.service", "user@1000.service", "getty@tty1.service", "session-4.scope", "system.slice",
    "docker-3f2a9c.scope", "dev-disk-by\\x2duuid-1234.device", "a:b_c.socket", "x@y@z.timer",
    "a" * 247 + ".service",
])
def test_valid_unit_names(name):
    assert cgroup.is_unit_name(name)


@pytest.mark.parametrize("name", [
    "", ".service", "nginx", "nginx.services", "nginx.service/", "getty@.service", "@x.service",
    "a b.service", "évil.service", "nginx.service\n", "a" * 248 + ".service", "x.Service",
])
def test_invalid_unit_names(name):
    assert not cgroup.is_unit_name(name)


@pytest.mark.parametrize("path, unit", [
    ("/system.slice/nginx.service", "nginx.service"),
    ("/system.slice/app.service/worker", "app.service"),           # a delegated subtree
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service", "user@1000.service"),
    ("/user.slice/user-1000.slice/session-4.scope", "session-4.scope"),
    ("/machine.slice/_cpu.service", "cpu.service"),                # systemd's escape of a kernel name
    ("/system.slice/docker-3f2a.scope", "docker-3f2a.scope"),
    ("/", "/"),
    ("/system.slice", "/system.slice"),                             # only slices: no unit
    ("/docker/3f2a9c", "/docker/3f2a9c"),                           # cgroupfs driver: the path
    ("/kubepods/besteffort/pod1/x.service", "/kubepods/besteffort/pod1/x.service"),
    ("/system.slice/évil.service", "/system.slice/évil.service"),
])
def test_unit_of_path_follows_systemd(path, unit):
    assert cgroup.unit_of_path(path) == unit


def test_hybrid_layout_reads_the_name_systemd_line_first():
    raw = (b"12:pids:/system.slice/other.service\n1:name=systemd:/system.slice/nginx.service\n"
           b"0::/system.slice/nginx.service\n")
    assert cgroup.parse_cgroup(raw) == "/system.slice/nginx.service"
    # the name=systemd line wins even when the unified line comes first and differs
    assert cgroup.parse_cgroup(b"0::/elsewhere\n1:name=systemd:/system.slice/a.service\n") == "/system.slice/a.service"
    assert cgroup.parse_cgroup(b"0::/elsewhere\n1:name=systemd:/system.slice/a.service\n", unified=True) == "/elsewhere"


def test_unified_layout_reads_the_0_line_and_a_v1_only_layout_has_none():
    assert cgroup.parse_cgroup(b"0::/system.slice/ssh.service\n") == "/system.slice/ssh.service"
    assert cgroup.parse_cgroup(b"4:memory:/x\n3:cpu:/x\n") is None
    assert cgroup.parse_cgroup(b"") is None
    assert cgroup.parse_cgroup(b"0::/with:colons/a.service\n") == "/with:colons/a.service"


def test_paths_that_differ_as_bytes_read_differently():
    first = cgroup.parse_cgroup(b"0::/x/\xff.service\n")
    second = cgroup.parse_cgroup(b"0::/x/\\xff.service\n")
    assert first == "/x/\\xff.service" and second == "/x/\\\\xff.service" and first != second


def _proc_with(tmp_path, pid, content):
    directory = tmp_path / str(pid)
    directory.mkdir()
    (directory / "cgroup").write_bytes(content)
    return str(tmp_path)


def test_process_unit_from_a_proc_tree(tmp_path):
    proc = _proc_with(tmp_path, 42, b"1:name=systemd:/system.slice/leaky-app.service\n0::/\n")
    assert cgroup.process_unit(42, proc) == "leaky-app.service"
    assert cgroup.process_unit(43, proc) is None  # gone


@pytest.mark.parametrize("pid1, root", [
    (b"1:name=systemd:/init.scope\n0::/init.scope\n", ""),                            # systemd on the host
    (b"1:name=systemd:/libpod_parent/libpod-3f/init.scope\n0::/libpod_parent/libpod-3f\n", "/libpod_parent/libpod-3f"),
    (b"0::/machine.slice/libpod-3f.scope/init.scope\n", "/machine.slice/libpod-3f.scope"),
    (b"1:name=systemd:/lxc/c1/system.slice\n", "/lxc/c1"),                            # an old systemd's own slice
    (b"1:name=systemd:/\n", ""),                                                       # no systemd as PID 1
])
def test_systemd_root_is_pid_1_cgroup_without_its_own_scope(tmp_path, pid1, root):
    assert cgroup.systemd_root(_proc_with(tmp_path, 1, pid1)) == root


def test_units_inside_a_container_sharing_the_host_tree_are_named_as_systemd_there_names_them(tmp_path):
    # a systemd container under podman with the host's cgroup tree: what `ps -o unit=` says inside
    proc = _proc_with(tmp_path, 1, b"9:name=systemd:/libpod_parent/libpod-3f/init.scope\n0::/libpod_parent/libpod-3f\n")
    _proc_with(tmp_path, 81, b"9:name=systemd:/libpod_parent/libpod-3f/system.slice/ssh.service\n0::/libpod_parent/x\n")
    _proc_with(tmp_path, 82, b"0::/elsewhere/x.service\n")
    assert cgroup.process_unit(81, proc) == "ssh.service"
    assert cgroup.process_unit(82, proc) == "/elsewhere/x.service"  # outside systemd's tree: the path as it is
    assert cgroup.process_unit(81, proc, root="") == "/libpod_parent/libpod-3f/system.slice/ssh.service"
    assert cgroup.shifted("/libpod_parent/libpod-3f", "/libpod_parent/libpod-3f") == "/"
    assert cgroup.shifted("/libpod_parent/libpod-3fx/a.service", "/libpod_parent/libpod-3f") == \
        "/libpod_parent/libpod-3fx/a.service"


def test_own_process_unit_agrees_with_proc_self_cgroup():
    with open("/proc/self/cgroup", "rb") as handle:
        lines = handle.read().decode().splitlines()
    systemd = [line.split(":", 2)[2] for line in lines if line.split(":", 2)[1] == "name=systemd"]
    unified = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
    expected = (systemd or unified)[0]
    assert cgroup.process_cgroup(os.getpid()) == expected


def test_the_read_is_bounded(tmp_path):
    proc = _proc_with(tmp_path, 7, b"0::/" + b"a" * (cgroup.CGROUP_FILE_LIMIT + 1) + b"\n")
    assert cgroup.process_cgroup(7, proc) is None


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    (tmp_path / "9").mkdir()
    os.mkfifo(str(tmp_path / "9" / "cgroup"))
    assert cgroup.process_cgroup(9, str(tmp_path)) is None


def test_cgroup2_mount_from_mountinfo(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 /sub /sys/fs/cgroup/uni\\040fied rw,relatime shared:9 - cgroup2 cgroup2 rw\n")
    assert cgroup.cgroup2_mount(str(tmp_path)) == ("/sys/fs/cgroup/uni fied", "/sub")
    (tmp_path / "self" / "mountinfo").write_text("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n")
    assert cgroup.cgroup2_mount(str(tmp_path)) is None
    assert cgroup.cgroup2_mount(str(tmp_path / "missing")) is None


def _tree(tmp_path):
    paths = ["system.slice", "system.slice/a.service", "system.slice/b.service", "system.slice/b.service/w",
             "user.slice"]
    for path in paths:
        (tmp_path / path).mkdir(parents=True)
    return {os.stat(str(tmp_path / path)).st_ino: "/" + path for path in paths}


def test_ids_map_to_directories_by_inode(tmp_path):
    expected = _tree(tmp_path)
    found, stopped = cgroup.map_cgroup_ids(set(expected), str(tmp_path))
    assert found == expected and not stopped
    root = os.stat(str(tmp_path)).st_ino
    found, stopped = cgroup.map_cgroup_ids({root, 1 << 60}, str(tmp_path), root="/outer")
    assert found == {root: "/outer"} and not stopped
    found, _stopped = cgroup.map_cgroup_ids(set(expected), str(tmp_path), root="/outer/")
    assert sorted(found.values()) == sorted("/outer" + path for path in expected.values())


def test_directory_names_are_escaped_as_proc_pid_cgroup_paths_are(tmp_path):
    hostile = os.path.join(os.fsencode(str(tmp_path)), b"a\\x\xff\x1b.service")
    os.mkdir(hostile)
    found, _stopped = cgroup.map_cgroup_ids({os.stat(hostile).st_ino}, str(tmp_path))
    assert list(found.values()) == [cgroup.parse_cgroup(b"0::/a\\x\xff\x1b.service\n")] == ["/a\\\\x\\xff\x1b.service"]


def test_the_directory_walk_is_bounded(tmp_path):
    expected = _tree(tmp_path)
    deepest = [inode for inode, path in expected.items() if path.endswith("/w")]
    found, stopped = cgroup.map_cgroup_ids(set(deepest), str(tmp_path), limit=3)
    assert found == {} and stopped
    assert cgroup.map_cgroup_ids(set(), str(tmp_path)) == ({}, False)


def _cgroup_attr(cgroup_id):
    # nla_put_u64_64bit puts an INET_DIAG_PAD first where the value would be unaligned
    return struct.pack("=HH", 4, 22) + struct.pack("=HHQ", 12, cgroup.INET_DIAG_CGROUP_ID, cgroup_id)


def _other_attr():
    return struct.pack("=HHB3x", 5, 8, 0)  # INET_DIAG_SHUTDOWN, padded


def test_replies_are_counted_by_cgroup_then_named_by_unit(tmp_path):
    expected = _tree(tmp_path)
    ids = {path: inode for inode, path in expected.items()}
    counter = cgroup.UnitCounter()
    counter.mount = (str(tmp_path), "/")
    v4 = socket.AF_INET
    messages = [
        diag_message(v4, 10, 80, 0, "0.0.0.0", "0.0.0.0", inode=11, attrs=_other_attr() + _cgroup_attr(
            ids["/system.slice/a.service"])),
        diag_message(v4, 1, 80, 5000, "10.0.0.1", "10.0.0.2", inode=12, attrs=_cgroup_attr(
            ids["/system.slice/a.service"])),
        diag_message(v4, 1, 6000, 80, "10.0.0.1", "10.0.0.2", inode=13, attrs=_cgroup_attr(
            ids["/system.slice/b.service/w"])),
        diag_message(v4, 8, 6001, 80, "10.0.0.1", "10.0.0.2", inode=14, attrs=_cgroup_attr(
            ids["/user.slice"])),
        diag_message(v4, 6, 6002, 80, "10.0.0.1", "10.0.0.2"),              # TIME_WAIT: nobody's
        diag_message(v4, 12, 80, 6003, "10.0.0.1", "10.0.0.2"),             # a request socket
        diag_message(v4, 1, 6004, 80, "10.0.0.1", "10.0.0.2", inode=15),    # no cgroup id: the walk
        diag_message(v4, 1, 6005, 80, "10.0.0.1", "10.0.0.2", inode=16, attrs=_cgroup_attr(1 << 60)),
    ]
    buf = b"".join(messages) + done_message()
    seen = []
    consume = counter.wrap(lambda data, length: seen.append(length) or len(data) - len(done_message()))
    assert netlink.take(buf, consume)
    assert seen == [len(buf)]
    assert counter.unowned[6] == 1 and counter.unowned[12] == 1 and counter.without_id == {15: 1}
    (tmp_path / "proc").mkdir()
    counter.proc = _proc_with(tmp_path / "proc", 77, b"0::/system.slice/b.service\n")
    asked = []

    def owners(inodes):
        asked.append(inodes)
        return {15: 77}

    warnings = []
    units = counter.units(owners, warnings)
    assert asked == [{15}]
    assert set(units) == {"a.service", "b.service", "/user.slice"}
    assert units["a.service"]["LISTEN"] == 1 and units["a.service"]["ESTABLISHED"] == 1
    assert units["b.service"]["ESTABLISHED"] == 2 and sum(units["b.service"].values()) == 2
    assert units["/user.slice"]["CLOSE_WAIT"] == 1
    assert len(units["a.service"]) == 11  # every state, zeros included
    assert warnings == ["units: 1 socket(s) in cgroups that could not be named (removed since, or outside the "
                        "cgroup v2 mount %s) are not counted" % tmp_path]


def test_without_a_cgroup2_mount_every_socket_goes_to_the_process_walk(tmp_path):
    counter = cgroup.UnitCounter(proc=str(tmp_path))  # no self/mountinfo: no mount
    assert counter.mount is None
    buf = diag_message(socket.AF_INET, 1, 1, 2, "10.0.0.1", "10.0.0.2", inode=21, attrs=_cgroup_attr(5))
    counter.consume(buf, len(buf))
    assert counter.by_cgroup == {} and counter.without_id == {21: 1}
    warnings = []
    assert counter.units(lambda inodes: {}, warnings) == {}
    assert len(warnings) == 2 and "no cgroup v2 file system" in warnings[0] and "1 socket(s)" in warnings[1]


def test_a_truncated_cgroup_attribute_is_not_read(tmp_path):
    counter = cgroup.UnitCounter()
    counter.mount = (str(tmp_path), "/")
    short = struct.pack("=HH", 8, cgroup.INET_DIAG_CGROUP_ID) + b"\0" * 4
    zero = struct.pack("=HH", 0, 1) + b"\0" * 12
    for attrs in (short, zero):
        buf = diag_message(socket.AF_INET, 1, 1, 2, "10.0.0.1", "10.0.0.2", inode=31, attrs=attrs)
        counter.consume(buf, len(buf))
    assert counter.by_cgroup == {} and counter.without_id == {31: 1}


def test_proc_backend_sockets_all_go_to_the_walk():
    counter = cgroup.UnitCounter()
    counter.add_inode_states({0: 6, 40: 1, 41: 10})
    assert counter.without_id == {40: 1, 41: 10} and counter.unowned[6] == 1
