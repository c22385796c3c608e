"""Issue 18 (sysctl part): keys confined to /proc/sys/net/{ipv4,core}, values the kernel refuses or that
break a host refused before anything is written, the drop-in read safely.

Every test runs the engine against a temporary tree: ``proc_sys`` and the sysctl.d directories are
the engine's injectable paths (no mocks), and files beside the tree stand for what lies outside
/proc/sys. The kernel itself is the oracle in tests/integration/test_sysctl_confined_netns.py.
"""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import os
import stat
import threading

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine._escape import visible
from ansible_collections.netstate.tcp.plugins.module_utils._sysctl import SysctlError

from tests.unit.plugins.module_utils.test_sysctl_engine import Tree

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


@pytest.fixture
def tree(tmp_path):
    made = Tree(tmp_path)
    made.set_live("kernel/hostname", "host")
    made.write(os.path.join(made.root, "proc", "outside"), "an ordinary file outside /proc/sys\n")
    made.set_live("net/ipv4/conf/eth0.100/rp_filter", "0")
    made.set_live("net/ipv4/ip_unprivileged_port_start", "1024")
    return made


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


# ------------------------------------------------------------------ values


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


# ------------------------------------------------------------------ the drop-in path


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


# ------------------------------------------------------------------ properties

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
