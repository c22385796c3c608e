# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real browser for the HTML reports: headless Chromium (Debian package chromium, scripts/setup.sh).

``screenshot`` renders a page to a PNG and returns what the page wrote to the browser console
(Chromium logs each console message to stderr as ``INFO:CONSOLE``); ``dump_dom`` returns the DOM
after parsing (``--dump-dom``), read back with html.parser into rows; ``colour_counts`` decodes the
screenshot with the standard library and counts the pixels of given colours.
"""

import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from html.parser import HTMLParser

CONSOLE = re.compile(r":CONSOLE(?:\(\d+\))?:?\d*\]")


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(arguments, timeout=120):
    with tempfile.TemporaryDirectory(prefix="netstate-chromium-") as profile:
        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--user-data-dir=" + profile, "--enable-logging=stderr", "--v=0"] + arguments
        return subprocess.run(command, capture_output=True, timeout=timeout, check=False,
                              env=dict(os.environ, HOME=profile))


def console_messages(stderr):
    return [line for line in stderr.decode("utf-8", "replace").splitlines() if CONSOLE.search(line)]


def screenshot(page_path, png_path, width=1400, height=1200):
    """Render the page into png_path; returns the console messages."""
    done = _run(["--screenshot=" + str(png_path), "--window-size=%d,%d" % (width, height),
                 "file://" + os.path.abspath(str(page_path))])
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-3000:]
    assert os.path.getsize(png_path) > 0
    return console_messages(done.stderr)


def dump_dom(page_path):
    """(serialized DOM, console messages)."""
    done = _run(["--dump-dom", "file://" + os.path.abspath(str(page_path))])
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-3000:]
    return done.stdout.decode("utf-8"), console_messages(done.stderr)


class _Dom(HTMLParser):
    """Tags seen, and per <tr class="host-row">: the text of td.host and of span.verdict."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []
        self.attributes = []
        self.rows = []
        self._field = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend(name for name, _value in attrs)
        classes = (dict(attrs).get("class") or "").split()
        if tag == "tr" and "host-row" in classes:
            self.rows.append({"host": "", "verdict": ""})
        elif self.rows and tag == "td" and "host" in classes:
            self._field = "host"
        elif self.rows and tag == "span" and "verdict" in classes:
            self._field = "verdict"

    def handle_endtag(self, tag):
        if tag in ("td", "span"):
            self._field = None

    def handle_data(self, data):
        if self._field:
            self.rows[-1][self._field] += data


def parse_dom(text):
    parser = _Dom()
    parser.feed(text)
    parser.close()
    return parser


def png_size(path):
    """(width, height) of a PNG, from its header."""
    with open(path, "rb") as stream:
        data = stream.read(24)
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def png_pixels(path, max_rows=None):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB or RGBA, non-interlaced PNG; only the first
    max_rows rows are decoded when given (the rows of a PNG are filtered one after the other)."""
    with open(path, "rb") as stream:
        data = stream.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, chunks, header = 8, [], None
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        offset += 12 + length
    width, height, depth, colour, _compression, _filter, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows, previous = [], bytes(stride)
    for y in range(height if max_rows is None else min(height, max_rows)):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous))
        elif kind in (1, 3, 4):
            for x in range(stride):
                left = line[x - channels] if x >= channels else 0
                up = previous[x]
                if kind == 1:
                    line[x] = (line[x] + left) & 0xFF
                elif kind == 3:
                    line[x] = (line[x] + ((left + up) >> 1)) & 0xFF
                else:
                    corner = previous[x - channels] if x >= channels else 0
                    estimate = left + up - corner
                    pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                    line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(list(zip(line[0::channels], line[1::channels], line[2::channels])))
        previous = line
    return width, height, rows


def colour_counts(path, hex_colours, max_rows=None):
    """Colour (#rrggbb) -> pixels of exactly that colour in the PNG (in its first max_rows rows)."""
    wanted = {tuple(int(colour[index:index + 2], 16) for index in (1, 3, 5)): colour for colour in hex_colours}
    counts = Counter()
    for row in png_pixels(path, max_rows)[2]:
        counts.update(pixel for pixel in row if pixel in wanted)
    return {colour: counts[pixel] for pixel, colour in wanted.items()}
