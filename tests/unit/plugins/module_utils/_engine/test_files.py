# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_files: the one reader and replace-guard, on real FIFOs, links, devices and namespace files.

Every open here would hang for ever on a FIFO if it blocked; SIGALRM turns such a hang into a
failure instead of a stuck test run.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


import errno
import os
import signal
import socket
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _atomic, _files


@pytest.fixture(autouse=True)
def _no_hang():
    """Fail (not hang) when something waits on a FIFO."""
    def hung(_signum, _frame):
        raise AssertionError("blocked for 10 s: an open() waited on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


def test_a_fifo_is_refused_at_once_not_waited_on(fifo):
    for reader in (_files.read_bytes, _files.read_text, _files.open_regular):
        with pytest.raises(_files.FileRefused, match="is a FIFO"):
            reader(fifo)
    with pytest.raises(_files.FileRefused, match="not a network namespace file"):
        _files.open_namespace(fifo)


def test_a_device_is_refused_not_read_without_bound():
    # /dev/zero would fill memory if read whole; it is refused by its type before any read
    with pytest.raises(_files.FileRefused, match="/dev/zero: is a character device, not a regular file"):
        _files.read_bytes("/dev/zero")


def test_reads_are_bounded(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    assert _files.read_bytes(str(big), limit=5000) == b"x" * 5000
    with pytest.raises(_files.FileRefused, match="larger than 4999 bytes") as raised:
        _files.read_bytes(str(big), limit=4999)
    assert raised.value.errno == errno.EFBIG


def test_links_are_followed_only_when_asked(tmp_path):
    target = tmp_path / "secret.conf"
    target.write_text("SECRET_TOKEN = x\n")
    link = tmp_path / "link.conf"
    link.symlink_to(target)
    assert _files.read_text(str(link)) == "SECRET_TOKEN = x\n"
    with pytest.raises(_files.FileRefused, match="is a symbolic link"):
        _files.read_text(str(link), follow_links=False)
    with pytest.raises(_files.FileRefused, match="is a symbolic link"):
        _files.read_text_and_mode(str(link))
    assert _files.read_text_and_mode(str(tmp_path / "missing")) == (None, None)
    target.chmod(0o640)
    assert _files.read_text_and_mode(str(target)) == ("SECRET_TOKEN = x\n", 0o640)


def test_only_a_regular_file_or_nothing_is_replaced(tmp_path, fifo):
    regular = tmp_path / "regular"
    regular.write_text("old")
    link = tmp_path / "link"
    link.symlink_to(regular)
    sock_path = str(tmp_path / "sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(sock_path)
    try:
        for path, what in ((fifo, "a FIFO"), (str(link), "a symbolic link"), (str(tmp_path), "a directory"),
                           (sock_path, "a socket"), ("/dev/null", "a character device")):
            with pytest.raises(_files.FileRefused, match=what):
                _atomic.write_atomically(path, "new")
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert os.path.islink(link) and regular.read_text() == "old"
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
        _atomic.write_atomically(str(regular), "new")
        _atomic.write_atomically(str(tmp_path / "fresh"), "fresh")
        assert regular.read_text() == "new" and (tmp_path / "fresh").read_text() == "fresh"
        # no temporary file is left beside a refused target
        assert sorted(os.listdir(tmp_path)) == ["fifo", "fresh", "link", "regular", "sock"]
    finally:
        listener.close()
    with pytest.raises(_files.FileRefused, match="does not exist"):
        _files.check_replaceable(str(tmp_path / "no" / "file"))
    with pytest.raises(_files.FileRefused, match="not a directory"):
        _files.check_replaceable(str(regular / "file"))


def test_namespace_files_are_told_from_ordinary_files(tmp_path):
    os.close(_files.open_namespace("/proc/self/ns/net"))
    ordinary = tmp_path / "ns"
    ordinary.write_text("")
    with pytest.raises(_files.FileRefused, match="is an ordinary file, not a network namespace file"):
        _files.open_namespace(str(ordinary))
    with pytest.raises(_files.FileRefused, match="is a directory"):
        _files.open_namespace(str(tmp_path))


@pytest.mark.parametrize("path, problem", [
    ("", "must be a non-empty path"),
    ("/etc/x\0y", "contains a NUL byte"),
    ("/etc/x\ny", "contains a newline"),
    ("/etc/x\ry", "contains a carriage return"),
    ("relative", "must be an absolute path"),
])
def test_paths_are_checked_before_use(path, problem):
    with pytest.raises(_files.FileRefused, match=problem):
        _files.check_path(path, absolute=True)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=50), st.none(), st.integers()))
def test_any_path_is_either_usable_or_refused_with_a_bounded_message(path):
    try:
        _files.check_path(path, absolute=True)
    except _files.FileRefused as error:
        assert len(str(error)) < 500
        assert "\n" not in str(error) and "\0" not in str(error)
        return
    assert isinstance(path, str) and path.startswith("/")
    assert not set(path) & {"\0", "\n", "\r"}


def test_lines_are_appended_to_a_regular_file_only(tmp_path, fifo):
    log = tmp_path / "audit.jsonl"
    _files.append_line(str(log), '{"a": 1}')
    _files.append_line(str(log), '{"b": 2}')
    assert log.read_text() == '{"a": 1}\n{"b": 2}\n'
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    link = tmp_path / "link"
    link.symlink_to(log)
    sock_path = str(tmp_path / "sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(sock_path)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # with a reader, a FIFO opens: its type refuses it
    try:
        for path, what in ((fifo, "a FIFO"), (str(link), "a symbolic link"), (sock_path, "a socket"),
                           ("/dev/null", "a character device"), (str(tmp_path), "directory")):
            with pytest.raises((_files.FileRefused, IsADirectoryError), match=what):
                _files.append_line(path, "x")
        assert os.read(reader, 100) == b""  # nothing went into the FIFO
    finally:
        os.close(reader)
        listener.close()
    os.unlink(fifo)
    os.mkfifo(fifo)  # without a reader: refused at once, not waited on
    with pytest.raises(_files.FileRefused, match="a FIFO"):
        _files.append_line(fifo, "x")
    assert log.read_text() == '{"a": 1}\n{"b": 2}\n'
    with pytest.raises(ValueError, match="line break"):
        _files.append_line(str(log), "two\nlines")
