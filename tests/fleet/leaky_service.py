# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A service with a socket leak, and the clients that expose it, for fleet hosts (standard library only).

    python3 leaky_service.py serve PORT           accepts connections and never closes one, even after its
                                                   client has closed its side: each sits in CLOSE_WAIT
    python3 leaky_service.py clients HOST PORT N   opens N connections, half-closes each (FIN sent, the
                                                   descriptor kept, so FIN_WAIT2 never times out), holds them

Both run until killed. Tests install `serve` as a systemd unit, so that a restart of the unit is what ends
the leak, as it would for a real service.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import resource
import selectors
import socket
import sys
import time


def serve(port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(1024)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    leaked = []
    while True:
        for key, _mask in selector.select():
            if key.fileobj is listener:
                conn, _peer = listener.accept()
                selector.register(conn, selectors.EVENT_READ)
                continue
            data = key.fileobj.recv(4096)
            if not data:
                # the client closed its side: the leak is never to close ours
                selector.unregister(key.fileobj)
                leaked.append(key.fileobj)


def clients(host, port, count):
    held = []
    for _number in range(count):
        sock = socket.create_connection((host, port), timeout=10)
        sock.shutdown(socket.SHUT_WR)
        held.append(sock)
    print("READY %d" % len(held), flush=True)
    while True:
        time.sleep(3600)


def main(argv):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(int(argv[1]))
    elif argv[:1] == ["clients"] and len(argv) == 4:
        clients(argv[1], int(argv[2]), int(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
