# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Open files the one safe way: the reader and the guard of every file the collection opens or
replaces (private, not a public API; standard library only, Python 3.8).

- Nothing is ever waited on: every open is ``O_NONBLOCK``, so a FIFO opens at once and is then
  refused by its type instead of hanging in ``open()``.
- Only the type asked for is accepted: a regular file for data, a namespace file (nsfs) for
  network namespaces. A device node, FIFO, socket or directory is refused with
  :class:`FileRefused`, naming the path and what it is.
- Reads are bounded: more than ``limit`` bytes is refused, never read whole (``/dev/zero`` named as
  a file cannot fill memory, and a regular file of 7 GB is not loaded).
- Where a file is *replaced* (:func:`check_replaceable`, called by ``_atomic.write_atomically``),
  links are not followed: a symbolic link, a device node or a FIFO at the target is refused, never
  renamed over, so the collection never turns ``/dev/full`` into a regular file, nor writes through
  a link into a file the caller did not name.
- Paths are checked before use: absolute where asked, no NUL byte, no newline.

:class:`FileRefused` is an ``OSError`` (errno ``EINVAL``, or ``EFBIG`` for a file over its bound), so
callers that already turn ``OSError`` into a message naming their option keep doing so.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat

# The bound of a file read when the caller names none: every file the collection reads
# (a drop-in, a discovery file, a rules file, a report) is far smaller.
DEFAULT_LIMIT = 16 * 1024 * 1024

_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


class FileRefused(OSError):
    """A path that names something the collection will not open or replace; the message names it."""

    def __init__(self, path, reason, code=errno.EINVAL):
        self.message = "%s: %s" % (_shown(path), reason)
        OSError.__init__(self, code, self.message)
        self.path = path
        self.reason = reason

    def __str__(self):
        return self.message


def _shown(path):
    """The path for a message: bounded, control characters visible (a path may come from anyone)."""
    text = path if isinstance(path, str) else repr(path)
    if len(text) > 300:
        text = text[:300] + "..."
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def kind(mode):
    """What a stat mode is, in words ("a FIFO (named pipe)")."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a special file"


def check_path(path, absolute=False, name="path"):
    """Raise FileRefused unless ``path`` is a usable path string: not empty, no NUL byte, no
    newline or carriage return (they would break the lines of a log, a unit or a report), and
    absolute when asked. Returns the path."""
    if not isinstance(path, str) or not path:
        raise FileRefused(str(path), "%s must be a non-empty path" % name)
    for character, words in (("\0", "a NUL byte"), ("\n", "a newline"), ("\r", "a carriage return")):
        if character in path:
            raise FileRefused(path, "%s contains %s" % (name, words))
    if absolute and not os.path.isabs(path):
        raise FileRefused(path, "%s must be an absolute path" % name)
    return path


def _open(path, follow_links):
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= os.O_NOFOLLOW
    try:
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise FileRefused(path, "is a symbolic link, which is not followed here; name the file it points to")
        raise


def open_regular(path, follow_links=True):
    """A read-only descriptor of the regular file ``path`` (never blocks); FileRefused for anything
    else. The caller closes it."""
    check_path(path)
    descriptor = _open(path, follow_links)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise FileRefused(path, "is %s, not a regular file" % kind(mode))
        # back to blocking reads: a regular file never blocks, and Python's readers expect it
        os.set_blocking(descriptor, True)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def read_descriptor(descriptor, limit=DEFAULT_LIMIT, path="file"):
    """At most ``limit`` bytes of an open descriptor; FileRefused (EFBIG) when it holds more."""
    chunks = []
    size = 0
    while True:
        chunk = os.read(descriptor, min(1024 * 1024, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise FileRefused(path, "is larger than %d bytes, the most read here" % limit, errno.EFBIG)
    return b"".join(chunks)


def read_bytes(path, limit=DEFAULT_LIMIT, follow_links=True):
    """The content of the regular file ``path``, at most ``limit`` bytes (FileRefused beyond)."""
    descriptor = open_regular(path, follow_links)
    try:
        return read_descriptor(descriptor, limit, path)
    finally:
        os.close(descriptor)


def read_text(path, limit=DEFAULT_LIMIT, follow_links=True, encoding="utf-8"):
    """:func:`read_bytes` decoded (UnicodeDecodeError, a ValueError, when it is not ``encoding``)."""
    return read_bytes(path, limit, follow_links).decode(encoding)


def read_text_and_mode(path, limit=DEFAULT_LIMIT, follow_links=False):
    """(text, permission bits) of a regular file, or (None, None) when there is none; links are not
    followed unless asked (the file is about to be replaced)."""
    try:
        descriptor = open_regular(path, follow_links)
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    try:
        mode = stat.S_IMODE(os.fstat(descriptor).st_mode)
        return read_descriptor(descriptor, limit, path).decode("utf-8"), mode
    finally:
        os.close(descriptor)


def check_replaceable(path):
    """Raise FileRefused unless ``path`` can be replaced by a regular file: it does not exist, or it
    is a regular file itself (links not followed), and its directory is a directory."""
    check_path(path)
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None  # the directory's own check below names what is wrong
    if mode is not None and not stat.S_ISREG(mode):
        raise FileRefused(path, "is %s; only a regular file is ever replaced" % kind(mode))
    directory = os.path.dirname(os.path.abspath(path))
    try:
        directory_mode = os.stat(directory).st_mode
    except FileNotFoundError:
        raise FileRefused(path, "its directory %s does not exist" % _shown(directory), errno.ENOENT)
    if not stat.S_ISDIR(directory_mode):
        raise FileRefused(path, "%s is %s, not a directory" % (_shown(directory), kind(directory_mode)),
                          errno.ENOTDIR)
    return path


def append_line(path, line, mode=0o600):
    """Append ``line`` (one line of text, a newline added) to the regular file ``path``, created with
    ``mode`` when missing. Links are not followed and nothing is waited on: a symbolic link, FIFO,
    device or socket at ``path`` is refused (FileRefused), never written through. One ``write`` of
    an ``O_APPEND`` descriptor: concurrent appenders never interleave within a line."""
    check_path(path)
    if "\n" in line or "\r" in line:
        raise ValueError("append_line: the line holds a line break")
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW
             | getattr(os, "O_CLOEXEC", 0))
    try:
        descriptor = os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileRefused(path, "is a symbolic link, which is never written through")
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads, a socket: O_NONBLOCK makes open fail, not hang
            raise FileRefused(path, "is %s; only a regular file is appended to" % kind(os.lstat(path).st_mode))
        raise
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise FileRefused(path, "is %s; only a regular file is appended to" % kind(status.st_mode))
        data = (line + "\n").encode("utf-8")
        written = os.write(descriptor, data)
        if written != len(data):
            raise OSError(errno.EIO, "%s: short write (%d of %d bytes)" % (_shown(path), written, len(data)))
    finally:
        os.close(descriptor)


def open_namespace(path, own_namespace="/proc/self/ns/net"):
    """A read-only descriptor of the network namespace file ``path`` (a /run/netns bind mount or a
    /proc/PID/ns/net link), never blocking; FileRefused for anything that is not a namespace file
    (it must live on the namespace file system, as our own namespace does). The caller closes it."""
    check_path(path)
    descriptor = _open(path, True)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode) or status.st_dev != os.stat(own_namespace).st_dev:
            what = kind(status.st_mode)
            if stat.S_ISREG(status.st_mode):
                what = "an ordinary file"
            raise FileRefused(path, "is %s, not a network namespace file" % what)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor
