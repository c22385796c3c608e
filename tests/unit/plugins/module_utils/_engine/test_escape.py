# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile names through the escaping helpers and the collector's renderers, read back by real parsers."""

from __future__ import absolute_import, division, print_function
from __future__ import annotations

__metaclass__ = type

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _escape as escape
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _procfs as procfs
from ansible_collections.netstate.tcp.plugins.module_utils._engine import collect

from tests.support.hostile import HOSTILE_COMM, HOSTILE_NAMES, markdown_problems, markdown_tables, parse_junit, \
    parse_lld, parse_prometheus

UNSAFE = [chr(code) for code in list(range(0x20)) + list(range(0x7f, 0xa0))] + \
    ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f",
     "\u061c", "\u2028", "\u2029", "\ufeff", "\ufffe", "\uffff", "\ud800", "\udcff"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_log_line_is_one_printable_line(name):
    line = escape.log_line(name)
    assert not any(char in line for char in UNSAFE), repr(line)
    assert line.encode("utf-8")  # no lone surrogate left


def test_visible_names_each_escaped_character():
    assert escape.log_line("a\nb\x00\u202ec\udcff") == "a\\x0ab\\x00\\u202ec\\xff"
    assert escape.visible("a\tb\nc", keep="\t\n") == "a\tb\nc"
    assert escape.text(None) == "" and escape.text(42) == "42"
    # a name the operating system could not decode (surrogateescape) gets its bytes back as \xNN
    assert escape.text(b"caf\xc3\xa9\xff".decode("utf-8", "surrogateescape")) == "caf\u00e9\\xff"
    assert escape.decode(HOSTILE_COMM) == "<img src=x>|a\\xe2\\x80"


def test_html_text_escapes_markup_and_keeps_newlines():
    assert escape.html_text('<b a="1">&\'x\'</b>') == "&lt;b a=&quot;1&quot;&gt;&amp;&#x27;x&#x27;&lt;/b&gt;"
    assert escape.html_text("a\nb\x1b\u202e\udcff") == "a\nb\\x1b\\u202e\\xff"
    assert escape.html_text(None) == ""


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_markdown_cell_keeps_the_table_and_the_text(name):
    table = "| left | name | right |\n|---|---|---|\n| l | %s | r |\n" % escape.markdown(name)
    assert markdown_problems(table) == []
    rows = markdown_tables(table)[0]
    assert rows[1] == ["l", escape.visible(name, keep="\n"), "r"]  # three cells, the name shown as it is


def test_markdown_without_escaping_is_broken_by_these_names():
    """The parser-based checks do see the attack: the raw names give HTML, a link and extra cells."""
    raw = "| left | name | right |\n|---|---|---|\n| l | %s | r |\n"
    assert markdown_problems(raw % "<img src=x>") == ["raw HTML '<img src=x>'"]
    assert markdown_problems(raw % "[a](http://x)")[0].startswith("link_open")
    assert markdown_tables(raw % "a|b")[0][1] == ["l", "a", "b"]  # the name split, the last cell lost


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_xml_text_is_well_formed(name):
    from xml.etree import ElementTree

    element = ElementTree.Element("testcase", name=escape.xml_text(name))
    element.text = escape.xml_text(name)
    parsed = parse_junit(ElementTree.tostring(element, encoding="unicode"))
    assert parsed.get("name") == escape.xml_text(name) and parsed.text == escape.xml_text(name)


def test_xml_without_escaping_is_not_well_formed():
    from xml.etree import ElementTree

    element = ElementTree.Element("testcase", name="x\x01")
    with pytest.raises(ElementTree.ParseError):
        parse_junit(ElementTree.tostring(element, encoding="unicode"))


def hostile_facts(name):
    listener = {"protocol": "tcp", "family": "ipv4", "address": "127.0.0.1", "port": 9000, "backlog": 2, "queue": 3,
                "saturation": 1.5, "pid": 42, "process": name, "user": name, "stime": None, "unit": name,
                "connections": 0}
    udp = dict(listener, protocol="udp", port=5353, backlog=None, queue=None, saturation=None)
    return {
        "backend": "netlink", "namespace": "host", "kernel": "6.1.0", "duration_ms": 1.0,
        "tcp": {"total": 1, "states": {"LISTEN": 1}, "peers": [{"address": name, "total": 1}]},
        "udp": {"total": 1},
        "listeners": [listener, udp],
        "processes": {name: {"count": 1, "pids": [42], "connections": {"total": 1, "states": {"LISTEN": 1}}}},
        "units": {name: {"LISTEN": 1}},
        "counters": {"sysctl": {name: 1}},
        "namespaces": [{"namespace": name, "tcp": {"total": 0, "states": {}}}],
    }


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_prometheus_label_values_read_back(name):
    families = parse_prometheus(collect.render_prometheus(hostile_facts(name)))
    expected = escape.visible(name, keep="\t\n")
    processes = [sample.labels["process"] for sample in families["netstate_process_connections"].samples]
    assert processes and set(processes) == {expected}
    assert [sample.labels["address"] for sample in families["netstate_tcp_peer_connections"].samples] == [expected]
    assert [sample.labels["name"] for sample in families["netstate_sysctl"].samples] == [expected]
    # a unit name (a cgroup anyone with a delegated subtree may name) as a label of listeners and units
    assert {sample.labels["unit"] for sample in families["netstate_tcp_listen_queue"].samples} == {expected}
    assert {sample.labels["unit"] for sample in families["netstate_unit_connections"].samples} == {expected}
    namespaces = {sample.labels.get("namespace") for sample in families["netstate_tcp_connections"].samples}
    assert namespaces == {None, expected}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_prometheus_text_is_valid_utf8_lines(name):
    text = collect.render_prometheus(hostile_facts(name))
    text.encode("utf-8")  # raises on a lone surrogate
    for line in text.splitlines():
        assert line.startswith(("#", "netstate_")), repr(line)


def test_prometheus_failure_comment_is_one_line():
    text = collect.render_failure("cannot read /proc/net/tcp\n<img src=x>\udcff")
    assert text.splitlines()[0] == "# netstate collector failed: cannot read /proc/net/tcp\\x0a<img src=x>\\xff"
    assert parse_prometheus(text)["netstate_collector_success"].samples[0].value == 0


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("protocol", ["tcp", "all"])
def test_zabbix_discovery_is_valid_json_with_intact_macros(name, protocol):
    rows = parse_lld(collect.render_zabbix_discovery(hostile_facts(name), protocol))
    # the name shown as visible() shows it, its own backslashes doubled; and read back whole
    assert {row["{#PROCESS}"] for row in rows} == {escape.visible(name.replace("\\", "\\\\"))}
    assert {read_macro(row["{#PROCESS}"]) for row in rows} == {name}
    assert {row["{#UNIT}"] for row in rows} == {escape.visible(name.replace("\\", "\\\\"))}
    assert {read_macro(row["{#UNIT}"]) for row in rows} == {name}
    assert {row["{#PORT}"] for row in rows} == ({"9000"} if protocol == "tcp" else {"9000", "5353"})
    assert set(rows[0]) == {"{#PROTOCOL}", "{#PORT}", "{#ADDRESS}", "{#ADDRESSES}", "{#FAMILY}", "{#PROCESS}",
                            "{#UNIT}"}
    text = collect.render_zabbix_discovery(hostile_facts(name), protocol)
    assert "\n" not in text[:-1] and text.isascii()


def read_macro(value):
    """The name a {#PROCESS} value was made of: the inverse of json_text, written from its contract."""
    def one(match):
        escaped = match.group(0)
        if escaped == "\\\\":
            return "\\"
        code = int(escaped[2:], 16)
        if escaped[1] == "x" and code >= 0x80:
            return chr(0xDC00 + code)  # a byte that was not UTF-8 (surrogateescape)
        return chr(code)

    assert re.fullmatch(r"(?:[^\\]|\\\\|\\x[0-9a-f]{2}|\\u[0-9a-f]{4})*", value), value
    return re.sub(r"\\\\|\\x[0-9a-f]{2}|\\u[0-9a-f]{4}", one, value)


def process_macro(name):
    return parse_lld(collect.render_zabbix_discovery(hostile_facts(name), "tcp"))[0]["{#PROCESS}"]


@pytest.mark.parametrize("first, second", [
    ("x\x01", "x\\x01"),          # a real control character and the four characters backslash x 0 1
    ("\udcff", "\\xff"),          # a byte that is not UTF-8 and the text that used to show it
    ("\x85", "\udc85"),           # a C1 control and the byte 0x85
    ("\udcc3\udca9", "\u00e9"),   # two bytes that are not UTF-8 alone, and the character they encode
])
def test_zabbix_process_macro_tells_hostile_names_apart(first, second):
    assert process_macro(first) != process_macro(second), (process_macro(first), process_macro(second))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=15), st.text(max_size=15))
def test_zabbix_process_macro_is_injective(first, second):
    """Distinct names, distinct macro values (Zabbix keys item prototypes on them)."""
    assume(first and second and first != second)
    assert process_macro(first) != process_macro(second)
    assert read_macro(process_macro(first)) == first


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xDCFF), max_size=15))
def test_json_text_reads_back_any_text(name):
    """Controls, C1, bidirectional characters and lone surrogates (undecodable bytes) included."""
    assert read_macro(escape.json_text(name)) == name
    assert not any(char in escape.json_text(name) for char in UNSAFE)


def _process_name(tmp_path, pid, comm):
    """process_info() of a /proc/PID laid out as the kernel does for a process named with these bytes."""
    base = tmp_path / str(pid)
    base.mkdir()
    (base / "comm").write_bytes(comm + b"\n")
    fields = " ".join(["S"] + ["0"] * 18 + ["100"] + ["0"] * 10)
    (base / "stat").write_bytes(b"%d (" % pid + comm + b") " + fields.encode())
    (tmp_path / "stat").write_text("btime 1700000000\n")
    procfs._BOOT_TIME.clear()
    try:
        return procfs.process_info(pid, proc=str(tmp_path))["process"]
    finally:
        procfs._BOOT_TIME.clear()


# Byte strings a process can name itself with (prctl) that a lossy decoding reads alike.
COMM_PAIRS = [(b"\xff", b"\\xff"), (b"a\xe2\x80", b"a\\xe2\\x80"), (b"\\", b"\\\\"), (b"x\x01", b"x\\x01")]


@pytest.mark.parametrize("first, second", COMM_PAIRS)
def test_process_names_that_differ_as_bytes_differ_in_the_facts_and_the_macro(tmp_path, first, second):
    one, other = _process_name(tmp_path, 4001, first), _process_name(tmp_path, 4002, second)
    assert one != other
    assert process_macro(one) != process_macro(other)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=15), st.binary(min_size=1, max_size=15))
def test_name_text_tells_every_byte_string_apart(first, second):
    assume(first != second and b"\0" not in first + second)
    assert escape.name_text(first) != escape.name_text(second)
    assert process_macro(escape.name_text(first)) != process_macro(escape.name_text(second))
