# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Waiting for a condition, with a deadline, instead of sleeping and hoping."""

import time


def wait_for(what, probe, timeout, interval=2.0):
    """probe() until it returns something true; that value, or AssertionError naming what.

    An exception from probe() counts as not yet (the thing may still be coming up); the last
    one is in the message when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = probe()
        except Exception as error:  # noqa: BLE001 - retried until the deadline, then reported
            last = error
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("%s: not within %s s (last: %r)" % (what, timeout, last))
        time.sleep(interval)
