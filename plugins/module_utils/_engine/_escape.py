# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: escaping of text a host chooses, one function per output format.

A process names itself (prctl PR_SET_NAME: any 15 bytes but NUL, not necessarily UTF-8), a
host names its users, its namespaces and its rules' labels; all of it ends up in reports and
metrics. Every renderer of the collection escapes such text through the functions here and
nowhere else:

``decode``            bytes read from the kernel -> text, bad UTF-8 as ``\\xNN``
``name_text``         a process name (``/proc/PID/comm``) -> text, bad UTF-8 as ``\\xNN`` and a backslash doubled
``visible``           control, bidirectional-override and invisible characters as ``\\xNN``/``\\uNNNN``
``log_line``          one line for logs and module messages
``bounded_repr``      a value a caller gave, for an error message: its repr, visible, at most 200 characters
``markdown``          a Markdown table cell or inline text: no HTML, no markup, pipes and newlines kept
``xml_text``          text XML 1.0 allows (ElementTree escapes ``<&>"`` itself)
``prometheus_label``  a label value of the text exposition format
``prometheus_help``   a HELP text of the text exposition format
``json_text``         a string value for JSON that any consumer reads back (Zabbix LLD macros), injective
``html_text``         HTML (and inline SVG) element content or a quoted attribute value

Part of the engine: standard library only, no ansible import, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# C0 and C1 controls, DEL, lone surrogates (undecodable bytes under surrogateescape), the
# bidirectional embeddings, overrides and isolates (U+202E turns "exe.txt" into "txt.exe"),
# zero-width characters, line/paragraph separators and the two XML-forbidden non-characters.
_UNSAFE = re.compile(u"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
                     u"\ud800-\udfff\ufffe\uffff]")
# What Markdown would read as markup in a table cell: the pipe (ends the cell), the backslash
# (would escape our escapes), code, emphasis and strike-through marks, an underscore that can
# open or close emphasis (not one inside a word: tcp_max_syn_backlog stays readable), a "]("
# that would make a link or an image; "<" and "&" start HTML and entities.
_MARKDOWN = re.compile(r"[\\`*~|<&]|(?<![^\W_])_|_(?![^\W_])|\](?=\()")
_MARKDOWN_REPLACEMENTS = {"&": "&amp;", "<": "&lt;", "]": "]\\"}  # others: a backslash before


def _shown(match):
    code = ord(match.group(0))
    if 0xDC80 <= code <= 0xDCFF:  # a byte Python could not decode (surrogateescape)
        return "\\x%02x" % (code - 0xDC00)
    if code < 0x100:
        return "\\x%02x" % code
    return "\\u%04x" % code


def decode(raw):
    """Bytes from the kernel as text: valid UTF-8 as it is, any other byte as ``\\xNN``."""
    return raw.decode("utf-8", "backslashreplace")


def name_text(raw):
    """A name a host chose (``/proc/PID/comm``: any bytes but NUL) as text that tells every byte string
    apart: valid UTF-8 as it is, a backslash as ``\\\\``, any other byte as ``\\xNN``. The process
    literally named ``\\xff`` (four characters) and the one named with the byte 0xff never read the
    same, in the facts or in any output made from them (a Zabbix macro, a Prometheus label)."""
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def text(value):
    """Any value as text (None as the empty string, bytes through decode()).

    Text the operating system could not decode (user or file names under surrogateescape)
    gets its undecodable bytes as ``\\xNN`` too, so no lone surrogate reaches JSON or a file.
    """
    if value is None:
        return ""
    if isinstance(value, bytes):
        return decode(value)
    string = value if isinstance(value, str) else str(value)
    if not string.isascii():
        try:
            string = decode(string.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            pass  # surrogates that are no escaped bytes: visible() writes them out
    return string


def visible(value, keep=""):
    """The text with every unsafe character (see _UNSAFE) written as an escape, except those in keep."""
    string = text(value)
    if keep:
        return _UNSAFE.sub(lambda match: match.group(0) if match.group(0) in keep else _shown(match), string)
    return _UNSAFE.sub(_shown, string)


def log_line(value):
    """One line for a log or a module message: newlines and every other control as escapes."""
    return visible(value)


#: The most characters of a caller's value an error message quotes.
REPR_LIMIT = 200


def bounded_repr(value, limit=REPR_LIMIT):
    """A value for an error message: its repr with every unsafe character visible, cut to ``limit``
    characters (a value nested a million levels deep, or megabytes long, never fills a message).
    The repr of a huge container is never built whole: reprlib stops at a few items per level."""
    import reprlib  # standard library; late so the escape functions' import stays light

    shown = reprlib.Repr()
    shown.maxstring = shown.maxother = shown.maxlong = limit
    shown.maxlevel, shown.maxdict, shown.maxlist, shown.maxtuple, shown.maxset = 3, 8, 8, 8, 8
    try:
        text_value = shown.repr(value)
    except Exception:  # a repr that fails (recursion, a broken __repr__) still gives a message
        text_value = "<%s>" % type(value).__name__
    text_value = visible(text_value)
    if len(text_value) > limit:
        text_value = text_value[:limit] + "...(%d characters)" % len(text_value)
    return text_value


def markdown(value):
    """Text for a Markdown table cell or paragraph, rendered as the literal text it is.

    Markup characters are backslash-escaped (a pipe never ends the cell, a backslash never
    escapes ours), ``&`` and ``<`` become entities (no HTML from data), a newline becomes
    ``<br>``, the only tag in the output.
    """
    string = visible(value, keep="\n")
    string = _MARKDOWN.sub(lambda match: _MARKDOWN_REPLACEMENTS.get(match.group(0), "\\" + match.group(0)), string)
    return string.replace("\n", "<br>")


def xml_text(value):
    """Text XML 1.0 allows, for an element or attribute; tab and newline are kept."""
    return visible(value, keep="\t\n")


def prometheus_label(value):
    """A label value of the text exposition format: valid UTF-8, ``\\``, ``"`` and newline escaped."""
    string = visible(value, keep="\t\n")
    return string.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_help(value):
    """A HELP text of the text exposition format: ``\\`` and newline escaped."""
    return visible(value, keep="\t\n").replace("\\", "\\\\").replace("\n", "\\n")


def _json_shown(match):
    code = ord(match.group(0))
    if 0x80 <= code < 0x100:  # a C1 control: \u0080, so it never reads as the byte \x80 (below)
        return "\\u%04x" % code
    return _shown(match)


def json_text(value):
    """A JSON string value on one line, without characters a consumer may drop or reorder.

    Injective, so two names never share a macro value: the backslash itself is doubled (a real
    ``\\x01`` and the four characters ``\\x01`` differ), a byte that is not UTF-8 is ``\\xNN``
    (80-ff), a control below 0x80 ``\\xNN`` (00-7f), any other escaped character ``\\uNNNN``.
    Not passed through text(): re-decoding escaped bytes could turn two of them into one character.
    """
    if value is None:
        string = ""
    elif isinstance(value, bytes):
        string = value.decode("utf-8", "surrogateescape")
    else:
        string = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_json_shown, string.replace("\\", "\\\\"))


_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"}
_HTML_SPECIAL = re.compile("[&<>\"']")


def html_text(value):
    """Text for HTML (and inline SVG) element content or a quoted attribute value.

    ``&<>"'`` become character references, so data never opens a tag, ends an attribute or
    makes an entity; newlines are kept (a page shows them with ``white-space: pre-line``).
    """
    return _HTML_SPECIAL.sub(lambda match: _HTML[match.group(0)], visible(value, keep="\n"))
