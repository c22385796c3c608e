# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Names a host can choose that break naive reports, and checks of each output format with real parsers.

Markdown is parsed by markdown-it-py (CommonMark with GFM tables and raw HTML enabled, as CI job
summaries render it), JUnit by ElementTree, Prometheus text by prometheus_client's parser, Zabbix
low-level discovery by json.
"""

import json
import shutil
import subprocess
from xml.etree import ElementTree

from markdown_it import MarkdownIt
from prometheus_client.parser import text_string_to_metric_families

# Each at most 15 bytes in UTF-8 where it is meant as a process name (the kernel's comm limit).
HOSTILE_NAMES = [
    "<img src=x>|a",            # live HTML and a cell break
    "a|b\nc",                   # pipe and newline
    "x\\|y",                    # an escaped pipe: the backslash must not escape ours
    'q"uo\\te',                 # double quote and backslash
    "\u202eexe.txt",            # right-to-left override
    "x\x01\x1b[31m\x7f",        # control characters XML 1.0 forbids, a terminal escape
    "[a](http://x)",            # a link
    "`*b*`_i_~s~",              # code, emphasis, strike-through
    "&lt;b&gt;",                # entities
    "\udcff\udcfe",             # bytes that are not UTF-8 (as Python's surrogateescape shows them)
    "tab\there",
    "\u2028\ufeff\u200b",       # line separator, BOM, zero width space
]
# Raw comm bytes as prctl(PR_SET_NAME) sets them: 15 bytes at most, not necessarily UTF-8.
HOSTILE_COMM = b"<img src=x>|a\xe2\x80"  # a right-to-left override cut by the 15-byte limit


_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable("table")


def _inline_tokens(tokens):
    for token in tokens:
        yield token
        yield from token.children or []


def markdown_problems(text):
    """Raw HTML that the data brought in (anything but our own <br>), links and images."""
    problems = []
    for token in _inline_tokens(_MARKDOWN.parse(text)):
        if token.type in ("html_inline", "html_block") and token.content.strip() != "<br>":
            problems.append("raw HTML %r" % token.content)
        if token.type in ("link_open", "image"):
            problems.append("%s %r" % (token.type, token.attrs))
    return problems


def markdown_tables(text):
    """Every table as a list of rows, each a list of cell texts (what a reader sees, <br> as a newline)."""
    tables = []
    rows = None
    cells = None
    for token in _MARKDOWN.parse(text):
        if token.type == "table_open":
            rows = []
            tables.append(rows)
        elif token.type == "tr_open":
            cells = []
            rows.append(cells)
        elif token.type == "inline" and cells is not None:
            cells.append("".join(_text_of(child) for child in token.children or []))
        elif token.type == "tr_close":
            cells = None
    return tables


def _text_of(token):
    if token.type in ("text", "code_inline"):
        return token.content
    if token.type == "html_inline" and token.content.strip() == "<br>":
        return "\n"
    if token.type in ("softbreak", "hardbreak"):
        return "\n"
    if token.type.endswith("_open") or token.type.endswith("_close"):
        return ""
    return token.content


def parse_junit(text):
    """ElementTree root of a JUnit document; raises ParseError when it is not well-formed XML 1.0."""
    return ElementTree.fromstring(text.encode("utf-8"))


def parse_prometheus(text):
    """{family name: family} through prometheus_client's parser (which rejects bad escaping)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def parse_lld(text):
    data = json.loads(text)
    assert isinstance(data, list)
    for row in data:
        assert all(key.startswith("{#") and key.endswith("}") for key in row), row
        assert all(isinstance(value, str) for value in row.values()), row
    return data


def promtool_available():
    return shutil.which("promtool") is not None


def promtool_problems(text):
    """What `promtool check metrics` (Prometheus's own Go parser and linter) finds: parse errors and lint.

    Exit status 1 is a parse error; 3 is lint only. Nothing is tolerated.
    """
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    done = subprocess.run(["promtool", "check", "metrics"], input=data, capture_output=True,
                          timeout=60, check=False)
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    problems = [line for line in output.splitlines() if line.strip()]
    if done.returncode != 0 and not problems:
        problems.append("promtool exited %d" % done.returncode)
    return problems
