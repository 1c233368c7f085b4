"""The web server (``studio_site.server``): request bodies never sit in memory, and a body that
must not be read is answered before it is (issue 12, item 1).

Plain Daphne parsed every multipart or form-encoded POST in memory before the application
ran: a 200 MiB multipart POST without a key took ~2.4 GB and answered 401 after the whole
body. These tests run against a real server process and read its memory from ``/proc``.
"""

import select
import socket
import time

import pytest
from django.conf import settings

from apps.gateway import services
from studio_site.server import MB, request_admission

from .conftest import session_cookie_for

# --- The admission rule (no server) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "length", "status"),
    [
        ("/healthz", {}, 50 * MB, 413),  # over the default limit, whatever the route
        ("/v1/text-to-speech/x", {"xi-api-key": "k"}, 4 * MB, 413),
        ("/v1/speech-to-text", {}, 200 * MB, 401),  # a big upload without a key
        ("/v1/speech-to-text", {}, None, 401),  # chunked, without a key
        ("/v1/speech-to-text", {"xi-api-key": "k"}, 200 * MB, None),  # within its limit
        ("/v1/speech-to-text", {"xi-api-key": "k"}, 502 * MB, 413),  # over its limit
        ("/transcripts/new/", {}, 200 * MB, 403),  # studio upload, not signed in
        ("/transcripts/new/", {"cookie": "sessionid=abc"}, 200 * MB, None),
        ("/v1/text-to-speech/x", {}, 1000, None),  # small calls reach the app as ever
        ("/voices/", {}, 2 * MB, None),
    ],
)
def test_admission_decides_from_the_request_line_and_headers(path, headers, length, status):
    admission = request_admission(path=path, headers=headers, length=length)
    got = admission.answer.status if admission.answer else None
    assert got == status


def test_an_api_refusal_has_the_official_error_shape():
    import json

    answer = request_admission(path="/v1/speech-to-text", headers={}, length=None).answer
    detail = json.loads(answer.body)["detail"]
    assert answer.content_type == "application/json"
    assert detail["code"] == detail["status"] == "needs_authorization"
    assert detail["message"] and detail["request_id"]


# --- A real server ---------------------------------------------------------------------------


def _memory_mb(pid: int) -> tuple[float, float]:
    """(resident now, resident high-water mark) of ``pid`` in MB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value.split()
    return int(fields["VmRSS"][0]) / 1024, int(fields["VmHWM"][0]) / 1024


def _post(port: int, path: str, *, total: int, headers: str = "", chunked: bool = False):
    """Send a multipart POST of ``total`` bytes while watching for an answer.

    Returns (the answer's head and start of body, bytes sent when it came). Stops sending
    once an answer is in, as a client that reads while it writes does.
    """
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "Content-Type: multipart/form-data; boundary=chorusboundary\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n"
    head += headers + "\r\n"
    part = (
        b'--chorusboundary\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    )
    filler = b"\0" * (64 * 1024)
    answer, sent = b"", 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode())
        pending = memoryview(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
        sock.setblocking(False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer and len(answer) > answer.index(b"\r\n\r\n") + 4:
                    break
            if writable and sent < total:
                if not pending:
                    pending = memoryview(filler[: min(len(filler), total - sent)])
                    if chunked:
                        pending = memoryview(b"%x\r\n%s\r\n" % (len(pending), pending))
                try:
                    n = sock.send(pending)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += n
                pending = pending[n:]
    return answer, sent


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


@pytest.mark.slow
def test_a_200_mib_multipart_post_without_a_key_is_answered_401_before_it_is_read(
    daphne_server,
):
    pid = daphne_server.proc.popen.pid
    before, _ = _memory_mb(pid)
    total = 200 * MB
    answer, sent = _post(daphne_server.port, "/v1/speech-to-text", total=total)
    assert _status(answer) == 401
    assert b"needs_authorization" in answer
    assert sent < total // 4, f"the answer came after {sent / MB:.0f} MB of {total / MB:.0f}"
    _, peak = _memory_mb(pid)
    assert peak - before < 64, f"RSS rose from {before:.0f} MB to a peak of {peak:.0f} MB"


@pytest.mark.slow
def test_a_body_over_its_routes_limit_is_answered_413_before_it_is_read(daphne_server):
    pid = daphne_server.proc.popen.pid
    before, _ = _memory_mb(pid)
    answer, sent = _post(daphne_server.port, "/healthz", total=50 * MB)
    assert _status(answer) == 413
    assert b"at most 3 MB" in answer
    assert sent < 25 * MB
    _, peak = _memory_mb(pid)
    assert peak - before < 64


@pytest.mark.slow
def test_a_chunked_body_is_counted_as_it_comes_and_cut_at_its_limit(
    daphne_server, workspace, member
):
    key = services.api_key_create(workspace=workspace, user=member, name="Big").raw
    answer, sent = _post(
        daphne_server.port,
        "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM",
        total=100 * MB,
        headers=f"xi-api-key: {key}\r\n",
        chunked=True,
    )
    assert _status(answer) == 413
    assert b"payload_too_large" in answer
    assert sent < 50 * MB


@pytest.mark.slow
def test_an_accepted_upload_reaches_the_app_from_disk_not_memory(daphne_server, workspace, member):
    """A keyed 150 MiB upload (within its limit) is read by Django from the spooled body, piece
    by piece: neither Twisted's form parser nor a whole-body copy into the app's queue."""
    key = services.api_key_create(workspace=workspace, user=member, name="Big").raw
    pid = daphne_server.proc.popen.pid
    before, _ = _memory_mb(pid)
    answer, sent = _post(
        daphne_server.port,
        "/v1/speech-to-text",
        total=150 * MB,
        headers=f"xi-api-key: {key}\r\n",
    )
    # The body is malformed (it never ends its part): the app answers it as a bad request,
    # after reading all of it.
    assert sent == 150 * MB
    assert 400 <= _status(answer) < 500, answer[:300]
    _, peak = _memory_mb(pid)
    assert peak - before < 64, f"RSS rose from {before:.0f} MB to a peak of {peak:.0f} MB"


@pytest.mark.slow
def test_a_made_up_key_is_looked_up_before_a_large_body_is_read(daphne_server):
    """Any ``xi-api-key`` header at all must not buy a 500 MB spool on disk: the key is looked
    up (off the event loop) before the body is read."""
    answer, sent = _post(
        daphne_server.port, "/v1/speech-to-text", total=200 * MB, headers="xi-api-key: junk\r\n"
    )
    assert _status(answer) == 401
    assert sent < 50 * MB, f"the answer came after {sent / MB:.0f} MB"


@pytest.mark.slow
def test_a_made_up_session_is_looked_up_before_a_large_studio_upload_is_read(daphne_server):
    answer, sent = _post(
        daphne_server.port, "/transcripts/new/", total=200 * MB, headers="Cookie: sessionid=x\r\n"
    )
    assert _status(answer) == 403
    assert b"Sign in before uploading" in answer
    assert sent < 50 * MB


@pytest.mark.slow
def test_a_live_session_may_send_a_large_studio_upload(daphne_server, member):
    """A signed-in member's body is read whole and reaches Django (which refuses it here for
    its missing CSRF token: the app's answer, not the server's)."""
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie_for(member)}"
    answer, sent = _post(
        daphne_server.port, "/transcripts/new/", total=20 * MB, headers=f"Cookie: {cookie}\r\n"
    )
    assert sent == 20 * MB
    assert _status(answer) == 403
    assert b"Sign in before uploading" not in answer
