"""The /v1 TTS endpoints of a workspace on the ElevenLabs engine when the provider misbehaves:
a server error that a retry gets past, a provider quota that ran out, and a client that hangs
up mid-stream. Faults come from the network edge only: an ``httpx.MockTransport`` under the
engine, or a stand-in for api.elevenlabs.io on a real socket behind a real Daphne."""

import json
import math
import queue
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from asgiref.sync import async_to_sync

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.engines.elevenlabs import client as elevenlabs_client
from apps.gateway import services
from apps.generation import engine as engine_resolution
from apps.workspaces.services import engine_settings_update
from tests.conftest import wait_until
from tests.engines.test_elevenlabs_client import Body, Script, error, shape_b

VOICE = "21m00Tcm4TlvDq8ikWAM"
TEXT = "Hello from the faults."  # 22 characters: the reservation is 22 credits
UPSTREAM_KEY = "sk_upstream_test_key"
AUDIO = b"ID3\x04" + bytes(range(256)) * 8
QUOTA_MESSAGE = "This request exceeds your quota of 10000. You have 12 credits remaining."


# --- The network edge -----------------------------------------------------------------


@pytest.fixture
def upstream(monkeypatch):
    """``upstream(*answers)`` → the script every ElevenLabs engine built from now on talks to
    (see ``Script``); the waits it would have slept between attempts are in ``sleeps``."""
    sleeps: list[float] = []
    scripts: list[Script] = []

    class ScriptedEngine(elevenlabs_client.ElevenLabsEngine):
        def __init__(self, *args, **kwargs):
            kwargs.update(
                transport=httpx.MockTransport(scripts[-1]), sleep=sleeps.append, rng=lambda: 0.5
            )
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(elevenlabs_client, "ElevenLabsEngine", ScriptedEngine)
    monkeypatch.setattr(engine_resolution, "_engine_cache", {})

    def script(*answers) -> Script:
        scripts.append(Script(*answers))
        return scripts[-1]

    script.sleeps = sleeps
    return script


@pytest.fixture
def on_elevenlabs(workspace, owner):
    engine_settings_update(
        workspace=workspace,
        actor=owner,
        kind="elevenlabs",
        api_key=UPSTREAM_KEY,
        base_url="https://api.elevenlabs.test",
    )
    return workspace


@pytest.fixture
def issued(on_elevenlabs, member):
    return services.api_key_create(workspace=on_elevenlabs, user=member, name="Faults")


def post_speech(client, issued, endpoint: str):
    return client.post(
        f"/v1/text-to-speech/{VOICE}{endpoint}",
        data=json.dumps({"text": TEXT}),
        content_type="application/json",
        headers={"xi-api-key": issued.raw},
    )


def body_of(response) -> bytes:
    """The whole body; a stream is drained the way an ASGI server reads it."""
    if not response.streaming:
        return response.content

    async def drain():
        return b"".join([chunk async for chunk in response])

    return async_to_sync(drain)()


def audio_reply(request_id: str, cost: str, *pieces: bytes) -> httpx.Response:
    headers = {"request-id": request_id, "character-cost": cost, "content-type": "audio/mpeg"}
    return httpx.Response(200, headers=headers, stream=Body(*pieces))


# --- A server error, then success -----------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "cost_header"), [("", "19"), ("/stream", "22")])
def test_an_upstream_500_then_success_gives_the_audio_and_exactly_one_settled_event(
    upstream, issued, member, client, endpoint, cost_header
):
    halves = AUDIO[: len(AUDIO) // 2], AUDIO[len(AUDIO) // 2 :]
    server_error = error(500, shape_b("internal_error", "Oops."), headers={"request-id": "up-1"})
    script = upstream(server_error, audio_reply("up-2", "19", *halves))

    response = post_speech(client, issued, endpoint)

    assert response.status_code == 200
    assert body_of(response) == AUDIO
    [event] = UsageEvent.objects.all()
    assert (event.status, event.source, event.user_id, event.api_key_id) == (
        UsageStatus.SETTLED,
        UsageSource.API,
        member.pk,
        issued.api_key.pk,
    )
    assert (event.engine, event.capability, event.voice_id) == ("elevenlabs", "tts", VOICE)
    # Billed the provider's character-cost of the attempt that worked, not the estimate.
    assert (event.units, event.estimated_credits, event.credits, event.upstream_credits) == (
        Decimal(22),
        Decimal(22),
        Decimal(19),
        Decimal(19),
    )
    assert event.upstream_request_id == "up-2"
    assert response["request-id"] == event.request_id
    # A whole response reports what was charged; a stream, what was reserved.
    assert response["character-cost"] == cost_header
    assert [r.url.path for r in script.requests] == [f"/v1/text-to-speech/{VOICE}{endpoint}"] * 2
    assert {r.headers["xi-api-key"] for r in script.requests} == {UPSTREAM_KEY}
    assert [json.loads(r.content)["text"] for r in script.requests] == [TEXT, TEXT]
    assert upstream.sleeps == [0.25]  # one full-jitter backoff: 0.5 × 0.5 s


# --- The provider's quota ran out ---------------------------------------------------------

QUOTA_BODIES = {
    "401-legacy-shape": (401, shape_b("quota_exceeded", QUOTA_MESSAGE)),
    "429-current-shape": (
        429,
        {
            "detail": {
                "type": "rate_limit_error",
                "code": "quota_exceeded",
                "message": QUOTA_MESSAGE,
                "status": "quota_exceeded",
                "request_id": "up-quota",
            }
        },
    ),
}


@pytest.mark.parametrize("endpoint", ["", "/stream"])
@pytest.mark.parametrize("answer", QUOTA_BODIES.values(), ids=QUOTA_BODIES.keys())
def test_an_upstream_quota_error_refunds_the_reservation_and_is_a_429_quota_exceeded(
    upstream, issued, client, endpoint, answer
):
    status, body = answer
    script = upstream(error(status, body), audio_reply("never", "22", AUDIO))

    response = post_speech(client, issued, endpoint)

    [event] = UsageEvent.objects.all()
    assert (event.status, event.credits, event.charged, event.units) == (
        UsageStatus.REFUNDED,
        Decimal(0),
        Decimal(0),
        None,
    )
    assert event.estimated_credits == Decimal(22)
    assert QUOTA_MESSAGE in event.note
    assert response.status_code == 429
    assert response.json() == {
        "detail": {
            "type": "rate_limit_error",
            "code": "quota_exceeded",
            "message": "The workspace's ElevenLabs quota ran out (the provider refused the "
            f"call): {QUOTA_MESSAGE}",
            "status": "quota_exceeded",
            "request_id": event.request_id,
        }
    }
    assert response["request-id"] == event.request_id
    assert "retry-after" not in response  # waiting does not bring a quota back
    assert len(script.requests) == 1  # never retried
    assert upstream.sleeps == []


def test_an_upstream_quota_error_says_it_was_the_providers_quota(upstream, issued, client):
    upstream(error(401, shape_b("quota_exceeded", QUOTA_MESSAGE)))

    message = post_speech(client, issued, "").json()["detail"]["message"]

    assert "ElevenLabs" in message and QUOTA_MESSAGE in message


# --- A client that hangs up mid-stream ------------------------------------------------------


class FakeElevenLabs:
    """A stand-in for api.elevenlabs.io on a real socket, for servers in other processes.

    ``POST /v1/text-to-speech/{voice}`` answers ``audio`` at once; ``…/stream`` sends
    ``chunks`` pieces of ``chunk_bytes`` every ``interval`` seconds and puts how it ended on
    ``streams``: ``("complete", n)`` or ``("closed", n)`` when the reader went away after
    ``n`` pieces were written. Each answer has ``request-id`` ``up-<n>`` and a
    ``character-cost`` of the text's length. ``requests`` holds (path, JSON body) of each.
    """

    def __init__(self, *, audio=AUDIO, chunks=60, chunk_bytes=16000, interval=0.2):
        self.audio, self.chunks, self.chunk_bytes = audio, chunks, chunk_bytes
        self.interval = interval
        self.requests: list[tuple[str, dict]] = []
        self.streams: queue.Queue[tuple[str, int]] = queue.Queue()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with fake._lock:
                    fake.requests.append((self.path, body))
                    request_id = f"up-{len(fake.requests)}"
                streaming = self.path.split("?")[0].endswith("/stream")
                self.send_response(200)
                self.send_header("content-type", "audio/mpeg")
                self.send_header("request-id", request_id)
                self.send_header("character-cost", str(len(body["text"])))
                if not streaming:
                    self.send_header("content-length", str(len(fake.audio)))
                    self.end_headers()
                    self.wfile.write(fake.audio)
                    return
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                written = 0
                try:
                    for _ in range(fake.chunks):
                        self.wfile.write(b"\xff" * fake.chunk_bytes)
                        self.wfile.flush()
                        written += 1
                        fake._stopped.wait(fake.interval)
                except (BrokenPipeError, ConnectionResetError):
                    fake.streams.put(("closed", written))
                    return
                fake.streams.put(("complete", written))

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self._stopped = threading.Event()
        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeElevenLabs":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()


def units_for(size: int) -> int:
    """What ``SpeechStream`` bills for ``size`` bytes of mp3_44100_128: 15 characters a second."""
    return math.ceil(size * 8 / 128_000 * services.SPEECH_CHARACTERS_PER_SECOND)


@pytest.mark.slow
def test_a_client_that_hangs_up_mid_stream_is_settled_for_its_share_and_the_upstream_is_closed(
    daphne_server, workspace, owner, member
):
    text = " ".join(f"Sentence number {i}, read aloud slowly." for i in range(20))  # 769 characters
    with FakeElevenLabs(chunks=60, chunk_bytes=16000, interval=0.2) as fake:
        engine_settings_update(
            workspace=workspace, actor=owner, kind="elevenlabs", api_key=UPSTREAM_KEY,
            base_url=fake.url,
        )  # fmt: skip
        issued = services.api_key_create(workspace=workspace, user=member, name="Hang-up")
        received = 0
        with httpx.stream(
            "POST",
            f"{daphne_server.url}/v1/text-to-speech/{VOICE}/stream",
            json={"text": text},
            headers={"xi-api-key": issued.raw},
            timeout=30,
        ) as response:
            assert response.status_code == 200, daphne_server.proc.output()
            request_id = response.headers["request-id"]
            chunks = response.iter_raw()
            while received < 2 * 16000:
                received += len(next(chunks))
        # Leaving the block closed the connection with most of the audio unsent.

        ended, written = fake.streams.get(timeout=30)

        def finished():
            event = UsageEvent.objects.get(request_id=request_id)
            return event if event.status != UsageStatus.RESERVED else None

        event = wait_until(finished, timeout=30, what="the cut-off stream to be settled")

    assert (ended, written < 60) == ("closed", True)  # Chorus closed its upstream stream
    assert [(path.split("?")[0], body["text"]) for path, body in fake.requests] == [
        (f"/v1/text-to-speech/{VOICE}/stream", text)
    ]
    assert (event.status, event.engine, event.upstream_request_id) == (
        UsageStatus.SETTLED,
        "elevenlabs",
        "up-1",
    )
    # Units: the share delivered, between what the client read and what the upstream wrote.
    assert units_for(received) <= event.units <= units_for(written * 16000)
    assert 0 < event.units < len(text) == 769
    # Credits: what the provider said the call cost (its character-cost header).
    assert (event.estimated_credits, event.upstream_credits, event.credits) == (
        Decimal(769),
        Decimal(769),
        Decimal(769),
    )
    # The engine's one log line of the call: closed by Chorus, or (async stream) aborted by
    # the cancelled response task; either way before its end.
    log_line = daphne_server.proc.output()
    assert "outcome=closed" in log_line or "outcome=aborted" in log_line, log_line
    assert "outcome=complete" not in log_line
