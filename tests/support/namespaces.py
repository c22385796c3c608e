# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Network namespaces of our own, for the tests and the benchmarks: made and removed with `ip netns`,
entered with setns(2). Standard library only; needs root.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os
import subprocess
import uuid

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns/"


def setns(target):
    """Move this thread into the network namespace target: a path (/run/netns/NAME) or an open descriptor."""
    opened = isinstance(target, str)
    fd = os.open(target, os.O_RDONLY) if opened else target
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, CLONE_NEWNET)
        elif ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, "setns(%s): %s" % (target, os.strerror(error)))
    finally:
        if opened:
            os.close(fd)


class Namespace:
    """A named network namespace (`ip netns add`) with loopback up; delete() removes it.

    The name is prefix plus a random part, or name whole (a benchmark puts its pid in it, so a later
    run can find what a killed one left).
    """

    def __init__(self, prefix="nst", name=None):
        self.name = name or "%s-%s" % (prefix, uuid.uuid4().hex[:8])
        self.path = NETNS_DIR + self.name
        self.created = False
        self._home = None
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.created = True
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.delete()
            raise

    def run(self, cmd, **kwargs):
        """cmd inside the namespace (`ip netns exec`), output captured as text; check=True unless told."""
        check = kwargs.pop("check", True)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.name] + list(cmd), check=check, **kwargs)

    def sysctl(self, key, value, check=True):
        """Set a sysctl in the namespace; with check=False, False where the kernel refused it."""
        return self.run(["sysctl", "-q", "-w", "%s=%s" % (key, value)], check=check).returncode == 0

    def enter(self):
        """Move this thread in (what `ip netns exec` does before it runs a command); leave() comes back."""
        if self._home is not None:
            raise RuntimeError("already in namespace %s" % self.name)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            setns(self.path)
        except BaseException:
            os.close(home)
            raise
        self._home = home

    def leave(self):
        """Back to the namespace enter() was called from; nothing to do when not entered."""
        if self._home is None:
            return
        home, self._home = self._home, None
        try:
            setns(home)
        finally:
            os.close(home)

    def delete(self):
        """Leave it and remove it; again is harmless."""
        try:
            self.leave()
        finally:
            if self.created:
                subprocess.run(["ip", "netns", "del", self.name], check=False)
                self.created = False
