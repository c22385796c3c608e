# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private: where a report directory given by the user lies on the controller.

One rule for every report the collection writes (the health_report action, the gather role through
the controller_path filter): ``~`` is expanded and a relative path is taken against the current
directory of ansible-playbook, the directory the user runs it from. Modules run with the local
connection cannot be given a relative path for this, as ansible-core runs them in the playbook's
directory.
"""

from __future__ import annotations

import os


def controller_path(path: str) -> str:
    """Absolute path on the controller: ``~`` expanded, relative to the current directory."""
    return os.path.abspath(os.path.expanduser(path))
