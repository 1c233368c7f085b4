"""Ways around the issue 12 fixes, found by reviewing them as an attacker: each test failed
before its fix."""

import io
import os
import socket
import time

import av
import numpy as np
import pytest

from apps.engines import audio
from apps.engines.base import InvalidRequest
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


# --- A header that understates the length -----------------------------------------------------


def _flac_stating(seconds: float, *, stated_samples: int) -> bytes:
    """A 16 kHz FLAC of a tone ``seconds`` long whose STREAMINFO says ``stated_samples``."""
    rate, buf = 16000, io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        t = np.arange(int(seconds * rate))
        pcm = (np.sin(t * 2 * np.pi * 440 / rate) * 3000).astype(np.int16)
        for start in range(0, len(pcm), 4096):
            frame = av.AudioFrame.from_ndarray(
                pcm[None, start : start + 4096], format="s16", layout="mono"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = bytearray(buf.getvalue())
    # STREAMINFO follows "fLaC" and its 4-byte block header; the total sample count is the
    # low 36 bits of its bytes 10..17.
    field = int.from_bytes(data[18:26], "big")
    field = (field & ~((1 << 36) - 1)) | stated_samples
    data[18:26] = field.to_bytes(8, "big")
    return bytes(data)


def test_a_file_is_never_decoded_far_past_the_length_its_header_states(tmp_path):
    """The upload check times a file by its header and the budget reserves that; the engine
    then decoded (and the job charged) the whole file, up to 4 h: a FLAC saying 1 s and
    playing 60 s was reserved 1 s, transcribed for 60 s and settled past the budget."""
    path = tmp_path / "understated.flac"
    path.write_bytes(_flac_stating(60, stated_samples=16000))
    assert audio.probe_duration(str(path), "understated.flac") == pytest.approx(1.0)
    decoded = 0
    with (
        pytest.raises(InvalidRequest) as refused,
        audio.Pcm16kReader(str(path), filename="understated.flac") as reader,
    ):
        for window in reader.windows():
            decoded += len(window)
    assert "header" in refused.value.message
    assert decoded / audio.PCM16K_RATE < 5


def test_a_file_decoding_a_little_past_its_stated_length_is_still_read(tmp_path):
    path = tmp_path / "padded.flac"
    path.write_bytes(_flac_stating(10.5, stated_samples=160000))  # 10 s stated, 10.5 played
    with audio.Pcm16kReader(str(path), filename="padded.flac") as reader:
        decoded = sum(len(window) for window in reader.windows())
    assert decoded / audio.PCM16K_RATE == 10.5
