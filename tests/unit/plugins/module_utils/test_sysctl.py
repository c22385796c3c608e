# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_sysctl: the sysctl engine on a temporary /proc/sys and sysctl.d tree (no mocks).

Live and persistent changes, check mode and every validation; keys confined to /proc/sys/net/{ipv4,core},
values the kernel refuses or that break a host refused before anything is written, the drop-in read
safely; the drop-in parser fuzzed (hypothesis). ``proc_sys`` and the sysctl.d directories are the
engine's injectable paths, and files beside the tree stand for what lies outside /proc/sys. The kernel
itself is the oracle in tests/integration/test_sysctl_netns.py and test_sysctl_confined_netns.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import os
import stat
import threading

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils import _sysctl as sysctl
from ansible_collections.netstate.tcp.plugins.module_utils._engine._escape import visible
from ansible_collections.netstate.tcp.plugins.module_utils._sysctl import (
    KNOWLEDGE,
    REFUSED,
    SysctlEngine,
    SysctlError,
    normalize_value,
    parse_sysctl_text,
)
from tests.conftest import require

PROC_VALUES = {
    "net/ipv4/tcp_tw_reuse": "2",
    "net/ipv4/tcp_timestamps": "1",
    "net/ipv4/tcp_fin_timeout": "60",
    "net/ipv4/tcp_max_tw_buckets": "131072",
    "net/ipv4/ip_local_port_range": "32768\t60999",
    "net/ipv4/ip_local_reserved_ports": "",
    "net/ipv4/tcp_max_syn_backlog": "512",
    "net/ipv4/tcp_keepalive_probes": "9",
    "net/ipv4/tcp_keepalive_time": "7200",
    "net/ipv4/tcp_syncookies": "1",
    "net/ipv4/tcp_mem": "287898\t383867\t575796",
    "net/ipv4/tcp_max_orphans": "131072",
    "net/ipv4/tcp_ecn": "2",
    "net/core/somaxconn": "4096",
}


class Tree(object):
    """A fake root: proc/sys plus the sysctl.d directories, and an engine pointed at it."""

    def __init__(self, root):
        self.root = str(root)
        self.proc = os.path.join(self.root, "proc", "sys")
        for rel, value in PROC_VALUES.items():
            self.set_live(rel, value)
        self.dirs = [os.path.join(self.root, d) for d in
                     ("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d")]
        for directory in self.dirs:
            os.makedirs(directory)
        self.conf = os.path.join(self.root, "etc", "sysctl.conf")
        self.ours = os.path.join(self.dirs[0], "60-netstate-tcp.conf")
        self.engine = SysctlEngine(proc_sys=self.proc, sysctl_dirs=self.dirs, sysctl_conf=self.conf,
                                   kernel_release="6.18.0-test")

    def set_live(self, rel, value):
        path = os.path.join(self.proc, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(value + "\n")

    def live(self, rel):
        with open(os.path.join(self.proc, rel)) as handle:
            return handle.read().strip()

    def write(self, path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)

    def read(self, path):
        with open(path) as handle:
            return handle.read()

    def snapshot(self):
        """Every file under the tree with its content and mode."""
        files = {}
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    files[path] = ("link", os.readlink(path))
                    continue
                with open(path, "rb") as handle:
                    files[path] = (handle.read(), stat.S_IMODE(os.stat(path).st_mode))
        return files

    def run(self, settings, **kwargs):
        kwargs.setdefault("path", self.ours)
        return self.engine.run(settings, **kwargs)


@pytest.fixture
def tree(tmp_path):
    """The tree of PROC_VALUES and, for the confinement tests, what lies around net/: a key outside it
    (kernel/hostname), a file outside /proc/sys, an interface key with a dot, ip_unprivileged_port_start."""
    made = Tree(tmp_path)
    made.set_live("kernel/hostname", "host")
    made.write(os.path.join(made.root, "proc", "outside"), "an ordinary file outside /proc/sys\n")
    made.set_live("net/ipv4/conf/eth0.100/rp_filter", "0")
    made.set_live("net/ipv4/ip_unprivileged_port_start", "1024")
    return made


def test_short_and_dotted_keys_apply_live_and_persist(tree):
    result = tree.run({"tcp_tw_reuse": 1, "net.core.somaxconn": "8192", "ip_local_port_range": [16384, 65535],
                       "net/ipv4/tcp_fin_timeout": 30})
    assert result["changed"] is True
    assert result["file_changed"] is True
    assert sorted(result["live_changed"]) == sorted(["net.ipv4.tcp_tw_reuse", "net.core.somaxconn",
                                                     "net.ipv4.ip_local_port_range", "net.ipv4.tcp_fin_timeout"])
    assert tree.live("net/ipv4/tcp_tw_reuse") == "1"
    assert tree.live("net/core/somaxconn") == "8192"
    assert tree.live("net/ipv4/ip_local_port_range") == "16384 65535"
    assert tree.live("net/ipv4/tcp_fin_timeout") == "30"
    content = tree.read(tree.ours)
    assert content.startswith("# Managed by netstate.tcp.sysctl")
    assert "net.ipv4.tcp_tw_reuse = 1\n" in content
    assert "net.ipv4.ip_local_port_range = 16384 65535\n" in content
    assert stat.S_IMODE(os.stat(tree.ours).st_mode) == 0o644
    key = result["per_key"]["net.ipv4.tcp_tw_reuse"]
    assert key["before"] == "2" and key["after"] == "1" and key["changed"] is True
    assert key["boot"] == {"value": "1", "file": tree.ours}
    assert key["scope"] == "netns" and "timestamps" in key["advice"]
    assert result["per_key"]["net.ipv4.ip_local_port_range"]["before"] == "32768 60999"
    # tcp_fin_timeout below 60 is allowed but explained
    assert any("does not shorten TIME_WAIT" in w for w in result["warnings"])

    again = tree.run({"tcp_tw_reuse": "1", "somaxconn": 8192, "ip_local_port_range": "16384   65535",
                      "tcp_fin_timeout": 30})
    assert again["changed"] is False
    assert again["file_changed"] is False and again["live_changed"] == []


def test_check_mode_changes_nothing_and_predicts(tree):
    before = tree.snapshot()
    result = tree.run({"tcp_tw_reuse": 1, "somaxconn": 1024}, check_mode=True)
    assert tree.snapshot() == before
    assert result["changed"] is True
    assert result["per_key"]["net.ipv4.tcp_tw_reuse"]["after"] == "1"
    assert result["per_key"]["net.core.somaxconn"]["boot"]["value"] == "1024"
    file_diff, live_diff = result["diff"]
    assert file_diff["before"] == "" and "net.core.somaxconn = 1024" in file_diff["after"]
    assert live_diff["before"] == "net.ipv4.tcp_tw_reuse = 2\nnet.core.somaxconn = 4096\n"
    assert live_diff["after"] == "net.ipv4.tcp_tw_reuse = 1\nnet.core.somaxconn = 1024\n"


def test_persist_false_and_apply_false(tree):
    result = tree.run({"tcp_tw_reuse": 1}, persist=False)
    assert result["file_changed"] is False and not os.path.exists(tree.ours)
    assert tree.live("net/ipv4/tcp_tw_reuse") == "1"
    assert [d["before_header"] for d in result["diff"]] == ["live values (/proc/sys)"]
    result = tree.run({"tcp_keepalive_probes": 5}, apply=False)
    assert result["live_changed"] == [] and tree.live("net/ipv4/tcp_keepalive_probes") == "9"
    assert "net.ipv4.tcp_keepalive_probes = 5" in tree.read(tree.ours)


@pytest.mark.parametrize("key,value,reason", [
    ("tcp_tw_reuse", 3, "must be one of 0, 1, 2"),
    ("tcp_tw_reuse", "yes", "not an integer"),
    ("tcp_timestamps", [1], "expected an integer"),
    ("ip_local_port_range", "60000 50000", "low port must be below high port"),
    ("ip_local_port_range", "40000 40000", "low port must be below high port"),
    ("ip_local_port_range", "1000 2000", "within 1024..65535"),
    ("ip_local_port_range", [1024, 70000], "within 1024..65535"),
    ("ip_local_port_range", "32768", "expected two ports"),
    ("ip_local_port_range", [1, 2, 3], "expected two ports"),
    ("ip_local_reserved_ports", "8080,70000", "outside 1..65535"),
    ("ip_local_reserved_ports", "9100-9000", "low > high"),
    ("ip_local_reserved_ports", "8080,,9090", "empty element"),
    ("somaxconn", -1, "at least 0"),
    ("tcp_fin_timeout", 0, "at least 1"),
    ("tcp_keepalive_probes", 200, "at most 127"),
    ("tcp_mem", "3 2 1", "non-decreasing"),
    ("tcp_mem", "1 2", "three integers"),
    ("net.ipv4.tcp_ecn", {"a": 1}, "expected a string or an integer"),
    ("net.ipv4.tcp_no_such_key", 1, "does not exist in this kernel (6.18.0-test)"),
    ("no_such_key", 1, "no such key under net.ipv4 or net.core"),
    ("vm.swappiness", 10, "only net.ipv4.* and net.core.* keys"),
    ("tcp_tw_reuse_delay", 100, "appeared in Linux 6.14"),
    ("tcp_tw_recycle", 1, "removed in Linux 4.12"),
    ("net.ipv4.tcp_tw_recycle", 0, "behind NAT"),
    ("tcp_max_tw_buckets", 1000, "never to lower it"),
    ("bad key!", 1, "not a sysctl key name"),
])
def test_each_invalid_setting_is_named_and_nothing_changes(tree, key, value, reason):
    tree.write(tree.ours, "net.ipv4.tcp_keepalive_probes = 7\n")
    before = tree.snapshot()
    with pytest.raises(SysctlError) as caught:
        # valid settings around the bad one: all or nothing
        tree.run({"tcp_keepalive_time": 600, key: value, "tcp_syncookies": 2})
    message = str(caught.value)
    assert "nothing was changed" in message
    assert "%s=%s" % (key, value) in message
    assert reason in message
    assert tree.snapshot() == before


def test_every_problem_is_reported_in_one_error(tree):
    before = tree.snapshot()
    with pytest.raises(SysctlError) as caught:
        tree.run({"tcp_tw_reuse": 9, "somaxconn": 1024, "tcp_tw_recycle": 1,
                  "ip_local_port_range": "5000 4000", "net.ipv4.tcp_missing": 1})
    message = str(caught.value)
    for fragment in ("tcp_tw_reuse=9", "tcp_tw_recycle=1", "ip_local_port_range=5000 4000",
                     "net.ipv4.tcp_missing=1"):
        assert fragment in message
    assert "somaxconn" not in message
    assert tree.snapshot() == before


def test_same_key_twice_is_an_error(tree):
    with pytest.raises(SysctlError, match="given twice"):
        tree.run({"tcp_tw_reuse": 1, "net.ipv4.tcp_tw_reuse": 1})


def test_relative_path_is_refused(tree):
    with pytest.raises(SysctlError, match="path=etc/x.conf: must be an absolute"):
        tree.run({"tcp_tw_reuse": 1}, path="etc/x.conf")


def test_lowering_tw_buckets_needs_force(tree):
    result = tree.run({"tcp_max_tw_buckets": 1000}, force=True)
    assert tree.live("net/ipv4/tcp_max_tw_buckets") == "1000"
    assert any("never to lower it" in w and "force" in w for w in result["warnings"])
    # raising is always fine
    tree.run({"tcp_max_tw_buckets": 200000})
    assert tree.live("net/ipv4/tcp_max_tw_buckets") == "200000"


def test_reuse_without_timestamps_warns(tree):
    tree.set_live("net/ipv4/tcp_timestamps", "0")
    result = tree.run({"tcp_tw_reuse": 1})
    assert any("tcp_tw_reuse=1 has no effect while tcp_timestamps=0" in w for w in result["warnings"])
    result = tree.run({"tcp_timestamps": 1})
    assert not any("no effect" in w for w in result["warnings"])
    result = tree.run({"tcp_tw_reuse": 0, "tcp_timestamps": 0})
    assert not any("no effect" in w for w in result["warnings"])


def test_port_range_parity_warning(tree):
    result = tree.run({"ip_local_port_range": "20000 30000"})
    assert any("same parity" in w and "20000 30001" in w for w in result["warnings"])
    result = tree.run({"ip_local_port_range": "20000 30001"})
    assert not any("parity" in w for w in result["warnings"])


def test_global_key_invisible_in_namespace_is_skipped(tree):
    os.unlink(os.path.join(tree.proc, "net/ipv4/tcp_max_orphans"))
    result = tree.run({"tcp_max_orphans": 4096, "tcp_tw_reuse": 1})
    assert result["skipped_keys"] == ["net.ipv4.tcp_max_orphans"]
    assert result["per_key"]["net.ipv4.tcp_max_orphans"]["skipped"] is True
    assert any(w.startswith("net.ipv4.tcp_max_orphans is global") for w in result["warnings"])
    assert "tcp_max_orphans" not in tree.read(tree.ours)
    assert tree.live("net/ipv4/tcp_tw_reuse") == "1"
    # visible (host namespace): applied like any other key
    tree.set_live("net/ipv4/tcp_max_orphans", "131072")
    result = tree.run({"tcp_max_orphans": 4096})
    assert result["skipped_keys"] == [] and tree.live("net/ipv4/tcp_max_orphans") == "4096"


def test_unknown_key_present_in_kernel_is_accepted(tree):
    result = tree.run({"tcp_ecn": 1})
    assert tree.live("net/ipv4/tcp_ecn") == "1"
    assert result["per_key"]["net.ipv4.tcp_ecn"]["advice"] is None


def test_other_keys_in_our_file_are_kept_and_null_removes(tree):
    tree.write(tree.ours, "# old\nnet.ipv4.tcp_keepalive_probes=5\nnet/core/somaxconn = 2048\n")
    os.chmod(tree.ours, 0o600)
    result = tree.run({"tcp_tw_reuse": 1, "somaxconn": None})
    content = tree.read(tree.ours)
    assert "net.ipv4.tcp_keepalive_probes = 5\n" in content
    assert "somaxconn" not in content
    assert "net.ipv4.tcp_tw_reuse = 1\n" in content
    assert result["removed"] == ["net.core.somaxconn"]
    assert tree.live("net/core/somaxconn") == "4096"  # removal leaves the live value alone
    assert stat.S_IMODE(os.stat(tree.ours).st_mode) == 0o600  # an existing file keeps its mode
    tree.run({"tcp_tw_reuse": None, "tcp_keepalive_probes": None})
    assert not os.path.exists(tree.ours)  # nothing left: the drop-in is removed


def test_reserved_ports_are_compared_in_kernel_form(tree):
    result = tree.run({"ip_local_reserved_ports": "9101,9000-9100,8080"})
    assert tree.live("net/ipv4/ip_local_reserved_ports") == "8080,9000-9101"
    assert result["per_key"]["net.ipv4.ip_local_reserved_ports"]["after"] == "8080,9000-9101"
    assert tree.run({"ip_local_reserved_ports": [8080, "9000-9101"]})["changed"] is False


def test_boot_order_scan(tree):
    etc, run, _local, usr = tree.dirs
    tree.write(os.path.join(run, "10-early.conf"), "net.ipv4.tcp_tw_reuse = 0\n")
    tree.write(os.path.join(usr, "70-vendor.conf"), "net.ipv4.tcp_fin_timeout = 15\nnet.core.somaxconn=128\n")
    # same basename in /etc masks the vendor file: only its somaxconn line counts
    tree.write(os.path.join(etc, "70-vendor.conf"), "-net/core/somaxconn = 256\n")
    tree.write(os.path.join(usr, "80-glob.conf"), "net.ipv4.tcp_keepalive_*=300\n")
    tree.write(os.path.join(etc, "not-a-conf.txt"), "net.ipv4.tcp_tw_reuse = 0\n")
    tree.write(tree.conf, "; sysctl.conf is read last\nnet.ipv4.ip_local_port_range = 20000 30001\n")
    result = tree.run({"tcp_tw_reuse": 1, "tcp_fin_timeout": 30, "somaxconn": 1024,
                       "tcp_keepalive_probes": 4, "ip_local_port_range": "16384 65535"})
    keys = result["per_key"]
    assert keys["net.ipv4.tcp_tw_reuse"]["boot"] == {"value": "1", "file": tree.ours}
    assert keys["net.ipv4.tcp_fin_timeout"]["boot"] == {"value": "30", "file": tree.ours}
    assert keys["net.core.somaxconn"]["boot"] == {"value": "256", "file": os.path.join(etc, "70-vendor.conf")}
    assert keys["net.ipv4.tcp_keepalive_probes"]["boot"] == {"value": "300",
                                                             "file": os.path.join(usr, "80-glob.conf")}
    assert keys["net.ipv4.ip_local_port_range"]["boot"] == {"value": "20000 30001", "file": tree.conf}
    overrides = [w for w in result["warnings"] if "wins at boot" in w]
    assert len(overrides) == 3
    assert any(w.startswith("net.core.somaxconn: %s sets 256" % os.path.join(etc, "70-vendor.conf"))
               for w in overrides)
    assert any(w.startswith("net.ipv4.ip_local_port_range: %s" % tree.conf) for w in overrides)


def test_override_with_same_value_is_not_a_warning(tree):
    tree.write(os.path.join(tree.dirs[0], "99-local.conf"), "net.ipv4.tcp_tw_reuse = 1\n")
    result = tree.run({"tcp_tw_reuse": 1})
    assert result["per_key"]["net.ipv4.tcp_tw_reuse"]["boot"]["file"].endswith("99-local.conf")
    assert not any("wins at boot" in w for w in result["warnings"])


def test_path_outside_boot_dirs_warns(tree):
    path = os.path.join(tree.root, "elsewhere", "x.conf")
    result = tree.run({"tcp_tw_reuse": 1}, path=path)
    assert os.path.exists(path)
    assert any("not in a directory read at boot" in w for w in result["warnings"])
    assert result["per_key"]["net.ipv4.tcp_tw_reuse"]["boot"] == {"value": None, "file": None}


def require_read_only_sysctl():
    require(os.path.exists("/proc/sys/net/ipv4/tcp_available_ulp"),
            "needs Linux /proc/sys (net.ipv4.tcp_available_ulp, a read-only kernel sysctl)")


def _read_only_proc_file(tree, rel):
    """A file in the tree that refuses writes, for root too: a link to a read-only kernel sysctl."""
    path = os.path.join(tree.proc, rel)
    os.unlink(path) if os.path.exists(path) else None
    if os.geteuid() == 0:
        # root ignores file modes on ordinary files; /proc/sys honours the table's 0444
        os.symlink("/proc/sys/net/ipv4/tcp_available_ulp", path)
    else:
        with open(path, "w") as handle:
            handle.write("espintcp mptcp\n")
        os.chmod(path, 0o444)


@pytest.mark.parametrize("check_mode", [False, True])
def test_unwritable_key_fails_before_anything_is_written(tree, check_mode):
    """A key that cannot be set live is found before the drop-in or any other key is written.

    (Until the write check, the keys before it were written and then rolled back; the rollback
    itself is proven on the kernel by test_kernel_rejection_restores_values_and_file.)
    """
    require_read_only_sysctl()
    tree.write(tree.ours, "net.ipv4.tcp_keepalive_probes = 7\n")
    os.chmod(tree.ours, 0o640)
    _read_only_proc_file(tree, "net/ipv4/tcp_available_ulp")
    before = tree.snapshot()
    inode = os.stat(tree.ours).st_ino
    with pytest.raises(SysctlError) as caught:
        tree.run({"tcp_tw_reuse": 1, "somaxconn": 1024, "net.ipv4.tcp_available_ulp": "tls",
                  "tcp_fin_timeout": 20}, check_mode=check_mode)
    message = str(caught.value)
    assert message.startswith("cannot set live, nothing was changed: net.ipv4.tcp_available_ulp=tls: cannot write ")
    assert "Permission denied" in message
    assert tree.snapshot() == before  # live values, file content and mode
    assert os.stat(tree.ours).st_ino == inode  # the drop-in was not even replaced by a copy of itself
    assert tree.live("net/ipv4/tcp_tw_reuse") == "2"


def test_failed_live_write_removes_a_new_file(tree):
    require_read_only_sysctl()
    _read_only_proc_file(tree, "net/ipv4/tcp_available_ulp")
    with pytest.raises(SysctlError, match="tcp_available_ulp"):
        tree.run({"tcp_tw_reuse": 1, "net.ipv4.tcp_available_ulp": "tls"})
    assert not os.path.exists(tree.ours)
    assert tree.live("net/ipv4/tcp_tw_reuse") == "2"


def test_unwritable_drop_in_fails_before_live_changes(tree):
    blocker = os.path.join(tree.root, "blocker")
    tree.write(blocker, "a file where a directory should be\n")
    with pytest.raises(SysctlError, match="cannot write the drop-in, nothing was changed"):
        tree.run({"tcp_tw_reuse": 1}, path=os.path.join(blocker, "60.conf"))
    assert tree.live("net/ipv4/tcp_tw_reuse") == "2"


def test_parse_sysctl_text():
    text = ("# comment\n; comment\n\n  net.ipv4.tcp_tw_reuse=1 \n-net/ipv4/conf/eth0.100/rp_filter = 2\n"
            "garbage line\nnet.core.somaxconn =  4096  \n")
    assert parse_sysctl_text(text) == [
        ("net.ipv4.tcp_tw_reuse", "1"),
        ("net.ipv4.conf.eth0/100.rp_filter", "2"),
        ("net.core.somaxconn", "4096"),
    ]


def test_knowledge_table_covers_the_issue():
    required = ["tcp_tw_reuse", "tcp_tw_reuse_delay", "tcp_fin_timeout", "tcp_max_tw_buckets",
                "ip_local_port_range", "ip_local_reserved_ports", "somaxconn", "tcp_max_syn_backlog",
                "tcp_syncookies", "tcp_timestamps", "tcp_keepalive_time", "tcp_keepalive_intvl",
                "tcp_keepalive_probes", "tcp_max_orphans", "tcp_abort_on_overflow"]
    shorts = {name.rsplit(".", 1)[-1]: spec for name, spec in KNOWLEDGE.items()}
    for short in required:
        spec = shorts[short]
        assert spec.advice and spec.since and spec.scope in ("netns", "global")
    assert shorts["tcp_max_orphans"].scope == "global" and shorts["tcp_mem"].scope == "global"
    assert "net.ipv4.tcp_tw_recycle" in REFUSED


def test_normalize_value_forms():
    spec = KNOWLEDGE["net.ipv4.ip_local_port_range"]
    assert normalize_value(spec, [16384, 65535]) == "16384 65535"
    assert normalize_value(spec, "16384\t65535") == "16384 65535"
    # a YAML boolean is refused, not turned into 1 (somaxconn: true used to become 1)
    with pytest.raises(ValueError, match="a boolean"):
        normalize_value(KNOWLEDGE["net.ipv4.tcp_abort_on_overflow"], True)
    assert normalize_value(KNOWLEDGE["net.ipv4.ip_local_reserved_ports"], "") == ""
    assert normalize_value(None, ["4096", 87380, 6291456]) == "4096 87380 6291456"


# ---------------------------------------------------------------- confinement: keys, values, the drop-in

# Key spellings that reached files outside /proc/sys/net before the fix (found by running them against
# the old engine): the slash form climbs with "..", and the dotted form of the same path ("//" is ".."
# once each "/" is read as the dot of an interface name).
ESCAPES = {
    "net/ipv4/../../kernel/hostname": "proc/sys/kernel/hostname",
    "net.ipv4.//.//.kernel.hostname": "proc/sys/kernel/hostname",
    "/net/ipv4/../../../outside": "proc/outside",
    "net.ipv4.//.//.//.outside": "proc/outside",
    "net/core/../../../outside": "proc/outside",
}


def shown_key(text):
    """How an error message shows a caller's key or value: control characters escaped, 200 at most."""
    text = visible(str(text))
    return text if len(text) <= 200 else text[:200] + "...(%d characters)" % len(text)


@pytest.mark.parametrize("key", sorted(ESCAPES))
def test_key_escaping_proc_sys_net_is_refused_and_nothing_written(tree, key):
    before = tree.snapshot()
    with pytest.raises(SysctlError) as caught:
        tree.run({key: "pwned", "tcp_tw_reuse": 1})
    message = str(caught.value)
    assert message.startswith("invalid sysctl settings, nothing was changed: ")
    assert "%s=pwned: " % key in message  # the error names the key as given
    assert tree.snapshot() == before  # the outside file, kernel/hostname, every live value, no drop-in
    assert not os.path.exists(tree.ours)
    assert tree.read(os.path.join(tree.root, ESCAPES[key])) in ("host\n", "an ordinary file outside /proc/sys\n")


@pytest.mark.parametrize("key,reason", [
    ("net.ipv4..", "empty component"),
    ("net..ipv4.tcp_tw_reuse", "empty component"),
    ("net/ipv4//tcp_tw_reuse", "empty component"),
    ("net.ipv4.conf.//.rp_filter", "is not an interface name"),
    ("net.ipv4.conf./.rp_filter", "is not an interface name"),
    ("net/ipv4/conf/../rp_filter", "is not an interface name"),
    ("net.ipv4.conf.abcdefghijklmnop.rp_filter", "is not an interface name"),  # 16 bytes: IFNAMSIZ
    ("net.ipv4.conf.eth0:1.rp_filter", "is not an interface name"),
    ("net.ipv4.conf.eth*.rp_filter", "is not an interface name"),
    ("net.ipv4.conf.eth0", "expected net.core.NAME"),
    ("net.ipv4.tcp_tw_reuse.x", "expected net.core.NAME"),
    ("net.core.conf.eth0.x", "expected net.core.NAME"),
    ("kernel.hostname", "only net.ipv4.* and net.core.* keys"),
    ("net.ipv6.conf.all.forwarding", "only net.ipv4.* and net.core.* keys"),
    ("tcp_tw\nreuse", "not a sysctl key name"),
    ("net.ipv4.tcp\x00_tw_reuse", "not a sysctl key name"),
    ("x" * 300, "not a sysctl key name"),
    ("net.ipv4.conf.eth0\n.rp_filter", "not a sysctl key name"),
])
def test_key_grammar(tree, key, reason):
    before = tree.snapshot()
    with pytest.raises(SysctlError) as caught:
        tree.run({key: 1})
    assert "%s=1: " % shown_key(key) in str(caught.value)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value) and "\x00" not in str(caught.value)
    assert tree.snapshot() == before


def test_interface_keys_keep_working(tree):
    """The kernel's interface names, with the dot of a VLAN written as "/" in the dotted form."""
    result = tree.run({"net/ipv4/conf/eth0.100/rp_filter": 2})
    assert result["live_changed"] == ["net.ipv4.conf.eth0/100.rp_filter"]
    assert tree.live("net/ipv4/conf/eth0.100/rp_filter") == "2"
    assert "net.ipv4.conf.eth0/100.rp_filter = 2\n" in tree.read(tree.ours)
    assert tree.run({"net.ipv4.conf.eth0/100.rp_filter": 2})["changed"] is False
    tree.set_live("net/ipv4/conf/abcdefghijklmno/rp_filter", "0")  # 15 bytes: the longest name
    tree.run({"net.ipv4.conf.abcdefghijklmno.rp_filter": 1})
    assert tree.live("net/ipv4/conf/abcdefghijklmno/rp_filter") == "1"


def test_proc_path_rechecks_the_built_path(tree):
    """The path is checked again after it is built, whatever the grammar let through: a directory of
    the tree that is a link out of net/ipv4 is refused, naming the key."""
    os.symlink(os.path.join(tree.proc, "kernel"), os.path.join(tree.proc, "net", "ipv4", "conf", "lo"))
    before = tree.snapshot()
    with pytest.raises(SysctlError) as caught:
        tree.run({"net.ipv4.conf.lo.hostname": "pwned"})
    assert "net.ipv4.conf.lo.hostname=pwned: net.ipv4.conf.lo.hostname: refused: its file" in str(caught.value)
    assert tree.snapshot() == before


@pytest.mark.parametrize("key,value,reason", [
    ("somaxconn", True, "a boolean"),
    ("tcp_tw_reuse", False, "a boolean"),
    ("tcp_rmem", [4096, True, 6291456], "a boolean"),
    ("somaxconn", "true", "not an integer"),
    ("somaxconn", "yes", "not an integer"),
    ("net.ipv4.tcp_ecn", True, "a boolean"),
    ("net.ipv4.tcp_ecn", "yes", "a boolean word"),
    ("net.ipv4.tcp_ecn", "1\x002", "control characters"),
    ("tcp_fin_timeout", 2147483647, "at most 2147483"),
    ("tcp_rmem", "0 87380 6291456", "within 1.."),
    ("ip_local_port_range", "80 65535", "within 1024..65535"),
])
def test_values_refused_before_anything_is_written(tree, key, value, reason):
    before = tree.snapshot()
    with pytest.raises(SysctlError) as caught:
        tree.run({"tcp_tw_reuse": 1, key: value})
    assert "%s=%s: " % (key, shown_key(value) if isinstance(value, str) else value) in str(caught.value)
    assert reason in str(caught.value)
    assert tree.snapshot() == before


@pytest.mark.parametrize("settings,reason", [
    ({"ip_local_reserved_ports": "1-65535"}, "cover the whole ephemeral range 32768-60999"),
    ({"ip_local_reserved_ports": "32768-60999"}, "cover the whole ephemeral range 32768-60999"),
    ({"ip_local_reserved_ports": "32768-60000"}, "leave 999 free ephemeral port(s) in 32768-60999, fewer than 1024"),
    ({"ip_local_port_range": "40000 40099"}, "100 ephemeral ports, fewer than 1024"),
    ({"ip_local_port_range": "40000 41999", "ip_local_reserved_ports": "40000-41500"},
     "leave 499 free ephemeral port(s) in 40000-41999"),
])
def test_port_settings_that_break_a_host_need_force(tree, settings, reason):
    before = tree.snapshot()
    with pytest.raises(SysctlError) as caught:
        tree.run(dict(settings, tcp_tw_reuse=1))
    assert reason in str(caught.value) and "set force to do it anyway" in str(caught.value)
    assert tree.snapshot() == before
    result = tree.run(dict(settings, tcp_tw_reuse=1), force=True)
    assert any(reason in w and "done anyway: force" in w for w in result["warnings"])


def test_reserved_ports_checked_against_the_live_range(tree):
    tree.set_live("net/ipv4/ip_local_port_range", "40000\t41999")
    with pytest.raises(SysctlError, match="cover the whole ephemeral range 40000-41999"):
        tree.run({"ip_local_reserved_ports": "39000-42000"})
    # reserving ports outside the range, or a few inside it, is fine
    tree.run({"ip_local_reserved_ports": "8080,9000-9100,40000-40010"})


def test_range_below_unprivileged_port_start_is_refused(tree):
    tree.set_live("net/ipv4/ip_unprivileged_port_start", "2048")
    with pytest.raises(SysctlError, match="starting below ip_unprivileged_port_start"):
        tree.run({"ip_local_port_range": "1024 65535"}, force=True)


def test_symlinked_path_is_refused_and_its_target_never_copied(tree):
    secret = os.path.join(tree.root, "secret.env")
    tree.write(secret, "SECRET_TOKEN = hunter2\nnet.ipv4.tcp_keepalive_time = 600\n")
    os.symlink(secret, tree.ours)
    before = tree.snapshot()
    with pytest.raises(SysctlError) as caught:
        tree.run({"tcp_tw_reuse": 1})
    message = str(caught.value)
    assert "path=%s: is a symbolic link (to %s)" % (tree.ours, secret) in message
    assert "name the link's target as path instead" in message
    assert "hunter2" not in message
    assert tree.snapshot() == before and os.path.islink(tree.ours)


def test_fifo_path_is_refused_without_waiting(tree):
    os.mkfifo(tree.ours)
    outcome = {}

    def run():
        try:
            tree.run({"tcp_tw_reuse": 1})
        except SysctlError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # unblock the old engine's open() so the test run can end
        os.close(os.open(tree.ours, os.O_WRONLY | os.O_NONBLOCK))
    assert not worker.is_alive() and "error" in outcome, "the engine waited on a FIFO"
    assert "path=%s: is a FIFO (named pipe), not a regular file" % tree.ours in outcome["error"]
    assert stat.S_ISFIFO(os.lstat(tree.ours).st_mode)
    assert tree.live("net/ipv4/tcp_tw_reuse") == "2"


def test_nul_or_newline_in_path_is_refused(tree):
    for path in (tree.ours + "\x00x", tree.ours + "\nx"):
        with pytest.raises(SysctlError) as caught:
            tree.run({"tcp_tw_reuse": 1}, path=path)
        assert str(caught.value).startswith("path=%s" % shown_key(path))
    assert tree.live("net/ipv4/tcp_tw_reuse") == "2"


@pytest.mark.parametrize("line", [
    "SECRET_TOKEN = hunter2",
    "kernel.hostname = pwned",
    "net/ipv4/../../kernel/hostname = pwned",
    "net.ipv4.conf.*.rp_filter = 1",
    "garbage without an equals sign",
])
def test_foreign_lines_in_the_drop_in_are_refused_not_copied(tree, line):
    tree.write(tree.ours, "# old\nnet.ipv4.tcp_keepalive_probes = 5\n%s\n" % line)
    before = tree.snapshot()
    with pytest.raises(SysctlError) as caught:
        tree.run({"tcp_tw_reuse": 1, "tcp_tw_recycle": 1})
    message = str(caught.value)
    assert "path=%s: line 3 %s: " % (tree.ours, line) in message
    assert "tcp_tw_recycle=1: refused" in message  # every problem in one error
    assert tree.snapshot() == before
    # not rewriting it (persist: false) does not copy anything either: the line is not a problem then
    tree.run({"tcp_tw_reuse": 1}, persist=False)
    assert tree.read(tree.ours) == before[tree.ours][0].decode()


_hostile_text = st.text(alphabet=st.sampled_from(list("./_-:@*?[ \t\n\x00\u202eé") + list("netipv4corcfgkhs01")),
                        max_size=40) | st.text(max_size=300)


_hostile_key = st.one_of(
    _hostile_text,
    st.builds(lambda prefix, rest: prefix + rest,
              st.sampled_from(["net.ipv4.", "net.core.", "net/ipv4/", "/net/core/", "net.ipv4.conf.", "net/ipv4/conf/",
                               "net.ipv4.neigh.", "net.ipv4.route."]), _hostile_text),
    st.sampled_from(sorted(ESCAPES) + ["tcp_tw_reuse", "somaxconn", "net.ipv4.conf.eth0/100.rp_filter"]),
)


_hostile_value = st.one_of(st.none(), st.booleans(), st.integers(), st.just(10 ** 5000), st.floats(allow_nan=True),
                           _hostile_text,
                           st.lists(st.one_of(st.integers(), st.booleans(), st.text(max_size=8)), max_size=4),
                           st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


_hostile_path = st.one_of(st.just(None), _hostile_text, st.builds(lambda t: "/" + t, _hostile_text))


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(settings=st.dictionaries(_hostile_key, _hostile_value, min_size=1, max_size=3), force=st.booleans())
def test_property_hostile_settings_are_confined_or_refused_naming_the_key(tmp_path_factory, settings, force):
    tree = _fresh_tree(tmp_path_factory)
    outside = _outside(tree)
    try:
        result = tree.run(settings, force=force)
    except SysctlError as exc:
        message = str(exc)
        assert "\n" not in message and "\x00" not in message
        assert any(shown_key(key)[:50] in message for key in settings) or message.startswith("path=")
    else:
        for key in result["per_key"]:
            path = os.path.realpath(tree.engine.proc_path(key))
            assert path.startswith(tuple(os.path.join(os.path.realpath(tree.proc), "net", b) + os.sep
                                         for b in ("ipv4", "core")))
    assert _outside(tree) == outside, "a file outside proc/sys/net or the drop-in changed"


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=_hostile_path)
def test_property_hostile_paths_are_refused_naming_path(tmp_path_factory, path):
    tree = _fresh_tree(tmp_path_factory)
    before = tree.snapshot()
    try:
        tree.run({"tcp_tw_reuse": 1}, path=path, check_mode=True)
    except SysctlError as exc:
        assert str(exc).startswith("path=") or "nothing was changed" in str(exc)
    assert tree.snapshot() == before


def _fresh_tree(tmp_path_factory):
    made = Tree(tmp_path_factory.mktemp("tree"))
    made.set_live("kernel/hostname", "host")
    made.write(os.path.join(made.root, "proc", "outside"), "outside\n")
    made.set_live("net/ipv4/conf/eth0.100/rp_filter", "0")
    return made


def _outside(tree):
    """Every file of the tree except those the engine may write: live keys under net/ and the drop-in."""
    net = os.path.join(tree.proc, "net") + os.sep
    return {path: content for path, content in tree.snapshot().items()
            if not path.startswith(net) and path != tree.ours}


# ---------------------------------------------------------------- the drop-in parser, fuzzed

@given(st.text(max_size=200))
@hypothesis_settings(max_examples=300, deadline=None)
def test_sysctl_file_parser_never_raises(text):
    assignments = sysctl.parse_sysctl_text(text)
    # lines are read one by one: the file's assignments are its lines' assignments, in order
    assert assignments == [pair for line in text.splitlines() for pair in sysctl.parse_sysctl_text(line)]
    for key, value in assignments:
        assert key == key.strip() and value == value.strip()
        sysctl.normalize_live(sysctl.KNOWLEDGE.get(key), value)


SYSCTL_NAME = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,9}", fullmatch=True)  # as the kernel names its entries


# anything on one line: printable ASCII without the line breaks str.splitlines() knows
SYSCTL_VALUE = st.text(alphabet=[chr(c) for c in range(32, 127)] + ["\t"], max_size=20)


SYSCTL_LINE = st.one_of(
    st.tuples(st.just("assign"), st.lists(SYSCTL_NAME, min_size=1, max_size=4), SYSCTL_VALUE,
              st.sampled_from(["", " ", "\t "]), st.sampled_from(["", " ", "\t"]), st.booleans(), st.booleans()),
    st.tuples(st.just("other"), st.sampled_from(["", "   ", "# net.ipv4.tcp_tw_reuse = 1", "; a = b",
                                                 "  # indented = comment", "no assignment here"])),
)


@given(st.lists(SYSCTL_LINE, max_size=8))
@hypothesis_settings(max_examples=300, deadline=None)
def test_sysctl_file_parser_reads_back_what_was_written(lines):
    """A sysctl.d file written from known assignments (dotted or slashed keys, '-' prefixes, blanks
    around '=', comments and blank lines between) reads back as exactly those assignments."""
    text, expected = [], []
    for line in lines:
        if line[0] == "other":
            text.append(line[1])
            continue
        _kind, parts, value, lead, around, slashed, ignore_errors = line
        key = "/".join(parts) if slashed else ".".join(parts)
        text.append("%s%s%s%s=%s%s" % (lead, "-" if ignore_errors else "", key, around, around, value))
        expected.append((".".join(parts), value.strip()))
    assert sysctl.parse_sysctl_text("\n".join(text)) == expected
