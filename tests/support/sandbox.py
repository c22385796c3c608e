# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the documentation's examples run: private namespaces holding a small declared fixture.

run() starts a command inside the given network namespace (with the sockets of a sockmix spec, started
before the command and kept open while it runs), a private mount namespace where /etc/sysctl.d and
/run/netns are empty tmpfs (the drop-in a sysctl example writes and the named namespaces an example
mentions stay there), and a private PID namespace (an example's `namespace: all` sees the command's
processes only). Used by tests/integration/test_examples.py (plugins' EXAMPLES) and
tests/integration/test_docs_snippets.py (README.md, docs/ and the roles' READMEs).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import signal
import subprocess
import sys

SOCKMIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sockmix.py")

SCRIPT = r'''
set -e
mount -t tmpfs netstate-examples /etc/sysctl.d
mount -t tmpfs netstate-examples /run/netns
for directory in $TMPFS; do mount -t tmpfs netstate-examples "$directory"; done
for name in $NAMESPACES; do ip netns add "$name"; done
sleep 100000 | "$PYTHON" "$SOCKMIX" "$SPEC" > "$WORK/sockmix.out" &
tries=0
until grep -q '^READY ' "$WORK/sockmix.out" 2>/dev/null; do
    tries=$((tries + 1)); [ $tries -lt 100 ] || { echo "sockmix did not start"; exit 70; }; sleep 0.1
done
cd "$WORK"
"$@"
'''


class SandboxTimeout(Exception):
    """The command did not finish in time; output holds what it printed."""

    def __init__(self, timeout, output):
        super().__init__("the command did not finish within %d s" % timeout)
        self.output = output


def run(netns_name, work, command, env, sockets=None, namespaces=(), tmpfs=(), timeout=300):
    """Run command (a list) in work inside the sandbox; returns (exit status, stdout and stderr together).

    netns_name: an existing network namespace (`ip netns`); sockets: a tests/support/sockmix.py spec;
    namespaces: /run/netns names made inside the private mount namespace; tmpfs: more directories that
    get an empty tmpfs there.
    """
    spec = os.path.join(str(work), "sockets.json")
    with open(spec, "w") as handle:
        json.dump(sockets or {}, handle)
    env = dict(env, PYTHON=sys.executable, SOCKMIX=SOCKMIX, SPEC=spec, WORK=str(work),
               NAMESPACES=" ".join(namespaces), TMPFS=" ".join(tmpfs))
    argv = ["ip", "netns", "exec", netns_name, "unshare", "--mount", "--propagation", "private", "--pid",
            "--fork", "--mount-proc", "sh", "-c", SCRIPT, "sh"] + list(command)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        output, _stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _stderr = proc.communicate()
        raise SandboxTimeout(timeout, output)
    return proc.returncode, output
