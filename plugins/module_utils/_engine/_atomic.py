# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replace a file atomically: the one writer of the collection (private, not a public API).

A temporary file next to the target, written, flushed and fsynced, its mode set, then renamed
over the target, which may only be a regular file or nothing (_files.check_replaceable: never a
device, FIFO or link). A reader (node_exporter, a CI server, a second run) sees the old file or
the new one, whole, never a part. On any error the temporary file is removed and the target is untouched.
Used by the collector's ``--output`` (on monitored hosts: standard library, Python 3.8), the
sysctl drop-in and the health report files on the controller.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ._files import check_replaceable


def write_atomically(path, text, mode=0o644, sync_directory=False):
    """Replace ``path`` by ``text`` (UTF-8); the temporary name starts with '.' and never ends
    like the target (node_exporter reads only ``*.prom``)."""
    # a device node, FIFO, socket or link at ``path`` is refused, never renamed over
    check_replaceable(path)
    # imported here: only a caller that writes pays for it, not every import of the engine
    import tempfile  # pylint: disable=import-outside-toplevel
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    if sync_directory:
        try:
            descriptor = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError:
            pass
