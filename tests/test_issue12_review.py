"""Ways around the issue 12 fixes, found by reviewing them as an attacker: each test failed
before its fix."""

import os
import socket
import time

from studio_site.server import request_admission


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _exchange(port: int, data: bytes, *, timeout: float = 5) -> bytes:
    """Send ``data`` on a new connection; what came back until the server closed or went
    quiet."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    return answer


def _websocket_handshake(path: str, body: bytes) -> bytes:
    return (
        b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Upgrade: h2c\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
    )


def test_a_websocket_handshake_with_a_body_is_refused_from_its_headers():
    headers = {"upgrade": "websocket", "connection": "Upgrade"}
    for length in (200_000, None):
        answer = request_admission(path="/ws/jobs/1/", headers=headers, length=length).answer
        assert answer is not None and answer.status == 400
    assert request_admission(path="/ws/jobs/1/", headers=headers, length=0).answer is None


def test_websocket_handshakes_with_bodies_leave_no_open_files_behind(daphne_server):
    """Daphne hands an upgraded connection to its websocket protocol and never finishes the
    HTTP request, so a body spooled to a temporary file (any body over 100 kB, no sign-in
    needed) stayed open, and on disk, for as long as the process lived: one file descriptor
    per handshake until the process could accept no more connections. A second ``Upgrade``
    header must not hide the first, which is the one Daphne acts on."""
    pid = daphne_server.proc.popen.pid
    before = _open_fds(pid)
    for _ in range(40):
        _exchange(daphne_server.port, _websocket_handshake("/ws/jobs/1/", b"x" * 200_000))
    time.sleep(0.5)
    assert _open_fds(pid) - before < 5, os.listdir(f"/proc/{pid}/fd")
