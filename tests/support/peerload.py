"""Real TCP connections between network namespaces for the peer_block tests (standard library only).

    peerload.py serve PORT                     accept on [::]:PORT (IPv4 too) and hold every connection
    peerload.py connect DEST PORT SRC:N ...    open N connections to DEST from each source address, hold them

Each prints ``READY {json}`` once its sockets are there and holds them until stdin closes.
"""

import json
import selectors
import socket
import sys


def serve(port):
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", port))
    listener.listen(4096)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    held = []
    print("READY " + json.dumps({"port": port}), flush=True)
    while True:
        for key, _events in selector.select():
            if key.fileobj is sys.stdin:
                return
            while True:
                try:
                    sock, _peer = listener.accept()
                except BlockingIOError:
                    break
                held.append(sock)


def connect(dest, port, specs):
    held = []
    made = {}
    for spec in specs:
        source, _sep, count = spec.rpartition(":")
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        for _number in range(int(count)):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.bind((source, 0))
            sock.connect((dest, port))
            held.append(sock)
        made[source] = int(count)
    print("READY " + json.dumps({"connections": made}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        connect(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
