"""How a ``/v1/speech-to-text/realtime`` session ends, behind a real Daphne, with the workspace
on the ElevenLabs engine and a stand-in for ElevenLabs' realtime socket on a local port.

Whatever ends a session (a refusal, a spent budget, bad input, the client leaving, the
server dying) it closes with a code Daphne may send (1000 or 4xxx, never 1008 or 1011),
settles the seconds it received, and closes its upstream connection."""

import base64
import json
import signal
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve

from apps.billing.models import Budget, UsageEvent, UsageStatus
from apps.billing.services import reservations_sweep
from apps.gateway import services
from apps.workspaces.services import engine_settings_update
from tests.conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
UPSTREAM_KEY = "sk_upstream_realtime_key"
RATE_PER_HOUR = Decimal(1273)  # the default stt_realtime rate, credits an hour
SECOND = b"\0\0" * 16000  # a second of 16 kHz s16le silence
WORD = {"text": "hello", "start": 0.1, "end": 0.4, "type": "word", "logprob": 0}


class FakeRealtime:
    """ElevenLabs' realtime STT socket on 127.0.0.1: ``session_started``, then a committed
    transcript for each commit (or the ``refusal`` message at once). It counts the
    connections that Chorus opened and the ones still open, and the audio it was sent."""

    def __init__(self, refusal: dict | None = None):
        self.refusal = refusal
        self.opened = self.open = self.audio_bytes = 0
        self._lock = threading.Lock()
        self._server = serve(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.socket.getsockname()[1]}"

    def _handle(self, ws):
        with self._lock:
            self.opened += 1
            self.open += 1
        try:
            if self.refusal:
                ws.send(json.dumps(self.refusal))
                ws.recv(timeout=10)  # until Chorus hangs up
                return
            ws.send(json.dumps({"message_type": "session_started", "session_id": "up-1"}))
            for raw in ws:
                message = json.loads(raw)
                with self._lock:
                    self.audio_bytes += len(base64.b64decode(message["audio_base_64"]))
                if message.get("commit"):
                    ws.send(json.dumps({"message_type": "committed_transcript", "text": "hello"}))
                    ws.send(json.dumps({"message_type": "committed_transcript_with_timestamps",
                                        "text": "hello", "words": [WORD]}))  # fmt: skip
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            with self._lock:
                self.open -= 1

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()


def on_fake(workspace, owner, fake: FakeRealtime):
    engine_settings_update(
        workspace=workspace, actor=owner, kind="elevenlabs", api_key=UPSTREAM_KEY,
        base_url=fake.url,
    )  # fmt: skip


def session(server, raw: str | None, query: str = ""):
    headers = {"xi-api-key": raw} if raw else {}
    url = f"ws://127.0.0.1:{server.port}/v1/speech-to-text/realtime?{query}"
    return ws_connect(url, additional_headers=headers, open_timeout=30, max_size=None)


def chunk(pcm: bytes, **more) -> str:
    return json.dumps({"message_type": "input_audio_chunk",
                       "audio_base_64": base64.b64encode(pcm).decode(), "commit": False,
                       "sample_rate": 16000, **more})  # fmt: skip


def until_closed(ws) -> tuple[list[dict], int | None]:
    """The messages until the server closes the socket, and its close code."""
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout=30)))
    except ConnectionClosed as exc:
        return messages, exc.rcvd.code if exc.rcvd else None


def settled():
    """The session's usage rows once none is reserved."""

    def done():
        rows = list(UsageEvent.objects.filter(capability="stt_realtime").order_by("pk"))
        return rows if rows and all(r.status != UsageStatus.RESERVED for r in rows) else None

    return wait_until(done, timeout=30, what="the session's usage to be settled")


def credits_for(seconds: float) -> Decimal:
    hours = (Decimal(seconds) / 3600).quantize(Decimal("0.001"))
    return (hours * RATE_PER_HOUR).quantize(Decimal("0.001"))


def assert_clean_log(server):
    log = server.proc.output()
    assert "Traceback" not in log and "invalid close code" not in log, log


def test_a_session_refused_for_a_spent_budget_closes_4402_with_nothing_reserved_or_open(
    daphne_server, workspace, owner, member
):
    raw = services.api_key_create(workspace=workspace, user=member, name="rt").raw
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(1))
    with FakeRealtime() as fake:
        on_fake(workspace, owner, fake)
        with session(daphne_server, raw) as ws:
            messages, code = until_closed(ws)
    assert [m["message_type"] for m in messages] == ["quota_exceeded"]
    assert code == 4402
    assert not UsageEvent.objects.filter(status=UsageStatus.RESERVED).exists()
    assert (fake.opened, fake.open) == (0, 0)
    assert_clean_log(daphne_server)


def test_a_session_the_engine_refuses_closes_4502_releases_its_reservation_and_upstream(
    daphne_server, workspace, owner, member
):
    raw = services.api_key_create(workspace=workspace, user=member, name="rt").raw
    refusal = {"message_type": "quota_exceeded", "error": "The provider's credits ran out."}
    with FakeRealtime(refusal=refusal) as fake:
        on_fake(workspace, owner, fake)
        with session(daphne_server, raw) as ws:
            messages, code = until_closed(ws)
        wait_until(lambda: fake.open == 0, timeout=10, what="the upstream to be closed")
    assert [m["message_type"] for m in messages] == ["invalid_request"]
    assert "credits ran out" in messages[0]["error"]
    assert code == 4502
    [event] = settled()
    assert (event.status, event.credits) == (UsageStatus.REFUNDED, 0)
    assert fake.opened == 1
    assert_clean_log(daphne_server)


def test_json_nested_100000_deep_is_an_input_error_and_the_session_goes_on_and_settles(
    daphne_server, workspace, owner, member
):
    raw = services.api_key_create(workspace=workspace, user=member, name="rt").raw
    with FakeRealtime() as fake:
        on_fake(workspace, owner, fake)
        with session(daphne_server, raw) as ws:
            assert json.loads(ws.recv(timeout=30))["message_type"] == "session_started"
            ws.send("[" * 100_000)
            error = json.loads(ws.recv(timeout=30))
            for _ in range(4):  # 36 s: 0.010 hours
                ws.send(chunk(SECOND * 9))
            ws.send(chunk(b"", commit=True))
            reply = json.loads(ws.recv(timeout=30))
            ws.close()
            code = ws.protocol.close_rcvd.code
        [event] = settled()
        wait_until(lambda: fake.open == 0, timeout=10, what="the upstream to be closed")
    assert error["message_type"] == "input_error"
    assert reply == {"message_type": "committed_transcript", "text": "hello"}
    assert code == 1000  # the client's close, answered: never 1011
    assert (event.status, event.units) == (UsageStatus.SETTLED, Decimal("0.010"))
    assert event.credits == credits_for(36)
    assert fake.audio_bytes == 36 * len(SECOND)
    assert_clean_log(daphne_server)


def test_a_session_stopped_by_its_budget_settles_what_it_received_and_closes_upstream(
    daphne_server, workspace, owner, member
):
    """Room for 2.5 minutes: each new minute is checked with the first one still reserved,
    so the chunk that would pass 130 s is refused; the 130 s before it are charged."""
    raw = services.api_key_create(workspace=workspace, user=member, name="rt").raw
    Budget.objects.create(
        workspace=workspace, user=member, limit_credits=RATE_PER_HOUR * Decimal(2.5) / 60
    )
    with FakeRealtime() as fake:
        on_fake(workspace, owner, fake)
        with session(daphne_server, raw) as ws:
            assert json.loads(ws.recv(timeout=30))["message_type"] == "session_started"
            sent = 0
            try:
                while sent < 300:
                    ws.send(chunk(SECOND * 10))
                    sent += 10
            except ConnectionClosed:
                pass
            messages, code = until_closed(ws)
        [event] = settled()
        wait_until(lambda: fake.open == 0, timeout=10, what="the upstream to be closed")
    assert [m["message_type"] for m in messages] == ["quota_exceeded"]
    assert "another minute" in messages[0]["error"]
    assert code == 4402
    assert fake.audio_bytes == 130 * len(SECOND)
    assert (event.status, event.credits) == (UsageStatus.SETTLED, credits_for(130))
    assert_clean_log(daphne_server)


@pytest.mark.parametrize("raw", ["sk_wrong", None])
def test_auth_refusals_close_4401_without_a_traceback(daphne_server, workspace, owner, raw):
    with FakeRealtime() as fake:
        on_fake(workspace, owner, fake)
        with session(daphne_server, raw) as ws:
            messages, code = until_closed(ws)
    assert [m["message_type"] for m in messages] == ["auth_error"]
    assert code == 4401
    assert fake.opened == 0 and not UsageEvent.objects.exists()
    assert_clean_log(daphne_server)


def test_a_session_whose_server_died_is_settled_by_the_sweeper_on_its_recorded_seconds(
    daphne_server, workspace, owner, member
):
    raw = services.api_key_create(workspace=workspace, user=member, name="rt").raw
    with FakeRealtime() as fake:
        on_fake(workspace, owner, fake)
        with session(daphne_server, raw) as ws:
            assert json.loads(ws.recv(timeout=30))["message_type"] == "session_started"
            for _ in range(4):  # 36 s, recorded after each chunk (every 5 s at most)
                ws.send(chunk(SECOND * 9))
            ws.send(chunk(b"", commit=True))
            json.loads(ws.recv(timeout=30))  # all four chunks were taken
            daphne_server.proc.stop(sig=signal.SIGKILL)
        wait_until(lambda: fake.open == 0, timeout=10, what="the upstream to be dropped")
    [event] = UsageEvent.objects.all()
    assert event.status == UsageStatus.RESERVED
    assert event.units_so_far == Decimal("0.010")  # 36 s in hours, to three decimals
    assert reservations_sweep(older_than=timedelta(microseconds=1)) == 1
    event.refresh_from_db()
    assert (event.status, event.flagged, event.units) == (
        UsageStatus.SETTLED,
        True,
        Decimal("0.010"),
    )
    assert event.credits == credits_for(36)
