# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet's Debian-mirror proxy when the way to the mirror fails: a real relay on loopback, set
as the machine's http_proxy, drops the first connections (closed before any answer, then cut in
the middle of a file); the proxy tries again and the client still gets the whole file, once.
Needs Debian's mirror (deb.debian.org) and no podman."""

import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleet as fleet_module  # noqa: E402

MIRROR = "http://{}/debian/dists/bookworm/".format(fleet_module.APT_MIRROR_HOST)


class FlakyRelay:
    """An HTTP forward proxy on 127.0.0.1: connection n (from 0) is closed unanswered while
    n < refuse, cut after `cut_after` bytes of its answer while n < refuse + cut; relayed whole after."""

    def __init__(self, refuse=0, cut=0, cut_after=4096):
        self.refuse, self.cut, self.cut_after = refuse, cut, cut_after
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client = self.listener.accept()[0]
            except OSError:
                return
            number, self.connections = self.connections, self.connections + 1
            threading.Thread(target=self._one, args=(client, number), daemon=True).start()

    def _one(self, client, number):
        with client:
            request = b""
            while b"\r\n\r\n" not in request:
                data = client.recv(65536)
                if not data:
                    return
                request += data
            if number < self.refuse:
                return                                     # closed before any answer
            line, rest = request.split(b"\r\n", 1)
            method, url, version = line.split(b" ")
            assert url.startswith(b"http://" + fleet_module.APT_MIRROR_HOST.encode() + b"/"), url
            path = url[len(b"http://" + fleet_module.APT_MIRROR_HOST.encode()):]
            limit = self.cut_after if number < self.refuse + self.cut else None
            try:
                self._relay(client, method, path, version, rest, limit)
            except OSError:
                return  # the mirror's keep-alive connection idled out, or the proxy hung up: the exchange is over

    @staticmethod
    def _relay(client, method, path, version, rest, limit):
        with socket.create_connection((fleet_module.APT_MIRROR_HOST, 80), timeout=60) as upstream:
            upstream.sendall(b" ".join([method, path, version]) + b"\r\n" + rest)
            sent = 0
            while limit is None or sent < limit:
                data = upstream.recv(65536)
                if not data:
                    break
                data = data if limit is None else data[:limit - sent]
                client.sendall(data)
                sent += len(data)

    def close(self):
        self.listener.close()


@pytest.fixture
def proxy(tmp_path, monkeypatch):
    """The fleet proxy (fleet.AptProxyServer) on loopback, with the relay as the machine's http_proxy."""
    started = []

    def start(relay):
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:{}".format(relay.port))
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        server = fleet_module.AptProxyServer(("127.0.0.1", 0), tmp_path / "cache", [])
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append((server, relay))
        return server

    yield start
    for server, relay in started:
        server.shutdown()
        server.server_close()
        relay.close()


def get(server, url):
    connection = http.client.HTTPConnection(*server.server_address, timeout=120)
    try:
        connection.request("GET", url)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def counted(server, what, deadline=10.0):
    """server.stats[what] once the handler has counted: the proxy counts a passed-through answer after its
    last byte is written, so the client can have the whole body a moment before the count."""
    end = time.monotonic() + deadline
    while server.stats[what] == 0 and time.monotonic() < end:
        time.sleep(0.01)
    return server.stats[what]


def test_a_refused_mirror_connection_is_tried_again(proxy):
    relay = FlakyRelay(refuse=2)
    server = proxy(relay)
    status, body = get(server, MIRROR + "InRelease")
    assert status == 200 and b"Acquire-By-Hash: yes" in body
    assert relay.connections == 3
    assert counted(server, "passed") == 1 and server.stats["retries"] == 2


def test_a_file_cut_short_is_fetched_again_and_cached_whole(proxy):
    release = get(proxy(FlakyRelay()), MIRROR + "InRelease")[1].decode()
    # the file every host's apt-get update wants most, by its by-hash name as apt asks for it
    name = "main/binary-amd64/Packages.xz"
    digest, size = next(line.split()[:2] for line in release.split("SHA256:", 1)[1].splitlines()
                        if line.startswith(" ") and line.split()[2] == name)
    url = MIRROR + "main/binary-amd64/by-hash/SHA256/" + digest
    relay = FlakyRelay(cut=1, cut_after=4096)
    server = proxy(relay)
    status, body = get(server, url)
    assert status == 200 and len(body) == int(size) and hashlib.sha256(body).hexdigest() == digest
    assert relay.connections == 2 and server.stats["retries"] == 1 and server.stats["misses"] == 1
    assert not list((server.cache_dir).rglob("*.part"))
    assert get(server, url) == (200, body) and relay.connections == 2 and server.stats["hits"] == 1


def test_the_daemon_answers_when_started_with_its_stdin_closed(tmp_path):
    """As a CI runner starts the suite (stdin closed): the daemon's listening socket must not take
    descriptor 0, which it hands to /dev/null when it lets go of the starter's pipes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pid_file = tmp_path / "proxy.pid"
    command = [sys.executable, fleet_module.__file__, "--name", "stdin", "proxy-serve", "--address", "127.0.0.1",
               "--port", str(port), "--cache", str(tmp_path / "cache"), "--allow", "", "--pid-file", str(pid_file)]
    with open(tmp_path / "proxy.log", "wb") as log:     # as the fleet starts it: the daemon keeps this file
        started = subprocess.run(command, preexec_fn=lambda: os.close(0), stdout=log, stderr=subprocess.PIPE,
                                 timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    pid = int(pid_file.read_text())
    try:
        assert os.readlink("/proc/{}/fd/0".format(pid)) == "/dev/null"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "http://example.org/")
        assert connection.getresponse().status == 403      # answered, and nothing forwarded
        connection.close()
    finally:
        os.kill(pid, signal.SIGTERM)
