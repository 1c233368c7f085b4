"""``/v1/speech-to-text/realtime`` on the real ASGI application: ElevenLabs' protocol
(session_started, input_audio_chunk, partial and committed transcripts, errors), personal-key
auth by header or token, metering by seconds per member; then the official SDK's realtime
client against a real Daphne."""

import asyncio
import base64
import json
from decimal import Decimal

import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from apps.billing.models import Budget, UsageEvent, UsageSource, UsageStatus
from apps.gateway import services
from apps.gateway.realtime import to_pcm16k
from studio_site.asgi import application
from tests.engines.test_local_stt import human_recordings, silence, wer
from tests.transcripts.test_batch import samples_of

pytestmark = pytest.mark.django_db(transaction=True)
FRAME = 3200
# The first message waits for the session to open (the speech model loads on first use, slowly
# on a busy machine).
SESSION_OPENS = 60


@pytest.fixture(scope="module")
def speech():
    wav, text = human_recordings()[0]
    samples = np.concatenate([samples_of(wav), silence(0.6)])
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes(), text


@pytest.fixture
def key(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="live").raw


def chunk(pcm: bytes, **more) -> str:
    return json.dumps({"message_type": "input_audio_chunk",
                       "audio_base_64": base64.b64encode(pcm).decode(), "commit": False,
                       "sample_rate": 16000, **more})  # fmt: skip


def socket(query: str = "", key: str | None = None) -> WebsocketCommunicator:
    headers = [(b"xi-api-key", key.encode())] if key else []
    return WebsocketCommunicator(
        application, f"/v1/speech-to-text/realtime?{query}", headers=headers
    )


async def drain(ws, into, wait=0.001):
    while not await ws.receive_nothing(timeout=wait):
        into.append(json.loads(await ws.receive_from()))


def test_speech_in_chunks_gets_partials_then_a_committed_transcript_metered_by_seconds(
    key, member, speech
):
    pcm, said = speech

    async def scenario():
        ws = socket("model_id=scribe_v2_realtime&audio_format=pcm_16000&commit_strategy=manual"
                    "&language_code=en&include_timestamps=true&keyterms=Dashwood", key)  # fmt: skip
        assert (await ws.connect())[0]
        got = [json.loads(await ws.receive_from(timeout=SESSION_OPENS))]
        for start in range(0, len(pcm), FRAME):
            await ws.send_to(text_data=chunk(pcm[start : start + FRAME]))
            await drain(ws, got)
        await ws.send_to(text_data=json.dumps({"message_type": "input_audio_chunk",
                                               "audio_base_64": "", "commit": True,
                                               "sample_rate": 16000}))  # fmt: skip
        while not any(m["message_type"] == "committed_transcript_with_timestamps" for m in got):
            got.append(json.loads(await ws.receive_from(timeout=30)))
        await ws.disconnect()
        return got

    got = async_to_sync(scenario)()
    started = got[0]
    assert started["message_type"] == "session_started" and started["session_id"]
    assert started["config"]["commit_strategy"] == "manual"
    assert started["config"]["keyterms"] == ["Dashwood"]
    kinds = [m["message_type"] for m in got]
    assert "partial_transcript" in kinds
    committed = " ".join(m["text"] for m in got if m["message_type"] == "committed_transcript")
    assert wer(said, committed) <= 0.2, committed
    timed = next(m for m in got if m["message_type"] == "committed_transcript_with_timestamps")
    words = [w for w in timed["words"] if w["type"] == "word"]
    assert words and all(w["end"] >= w["start"] for w in words)
    [event] = UsageEvent.objects.all()
    assert (event.capability, event.status, event.source, event.user_id) == (
        "stt_realtime", UsageStatus.SETTLED, UsageSource.API, member.pk,
    )  # fmt: skip
    assert event.unit == "hour"
    assert event.units == pytest.approx(Decimal(len(pcm) / 32000 / 3600), abs=Decimal("0.001"))


def test_the_token_query_authenticates_and_bad_keys_get_an_auth_error(key):
    async def scenario():
        by_token = socket(f"token={key}")
        await by_token.connect()
        first = json.loads(await by_token.receive_from(timeout=SESSION_OPENS))
        await by_token.disconnect()
        wrong = socket("", "sk_wrong")
        await wrong.connect()
        refused = json.loads(await wrong.receive_from(timeout=SESSION_OPENS))
        closed = await wrong.receive_output(timeout=2)
        nobody = socket("")
        await nobody.connect()
        anonymous = json.loads(await nobody.receive_from(timeout=SESSION_OPENS))
        return first, refused, closed, anonymous

    first, refused, closed, anonymous = async_to_sync(scenario)()
    assert first["message_type"] == "session_started"
    assert refused["message_type"] == "auth_error" and closed["type"] == "websocket.close"
    assert anonymous["message_type"] == "auth_error"
    assert (
        not UsageEvent.objects.exclude(status=UsageStatus.REFUNDED)
        .exclude(status=UsageStatus.SETTLED)
        .exists()
    )


def test_bad_input_gets_errors_and_the_session_goes_on(key, speech):
    async def scenario():
        ws = socket("audio_format=pcm_16000", key)
        await ws.connect()
        await ws.receive_from(timeout=SESSION_OPENS)
        replies = []
        for message in (
            "not json",
            json.dumps({"message_type": "dance"}),
            json.dumps({"message_type": "input_audio_chunk", "audio_base_64": "***"}),
            chunk(b"\x00\x01\x02"),
            chunk(b"\0\0" * 1600, sample_rate=8000),
            chunk(b"\0\0" * 16000 * 11),
        ):
            await ws.send_to(text_data=message)
            replies.append(json.loads(await ws.receive_from()))
        await ws.send_to(text_data=chunk(b"\0\0" * 1600, previous_text="context"))
        await ws.send_to(text_data=chunk(b"\0\0" * 1600, previous_text="again"))
        replies.append(json.loads(await ws.receive_from()))
        await ws.disconnect()
        return replies

    replies = async_to_sync(scenario)()
    kinds = [r["message_type"] for r in replies]
    assert kinds == ["input_error"] * 5 + ["chunk_size_exceeded", "input_error"]
    assert "16-bit" in replies[3]["error"] and "does not match" in replies[4]["error"]
    assert "only allowed with the first chunk" in replies[6]["error"]


@pytest.mark.parametrize("query", ["model_id=gpt", "audio_format=mp3", "commit_strategy=never",
                                   "vad_threshold=2", "include_timestamps=maybe"])  # fmt: skip
def test_bad_session_options_are_refused(key, query):
    async def scenario():
        ws = socket(query, key)
        await ws.connect()
        message = json.loads(await ws.receive_from(timeout=SESSION_OPENS))
        await ws.disconnect()
        return message

    assert async_to_sync(scenario)()["message_type"] == "invalid_request"
    assert not UsageEvent.objects.filter(status=UsageStatus.RESERVED).exists()


def test_a_spent_budget_is_quota_exceeded(on_elevenlabs, member):
    raw = services.api_key_create(workspace=on_elevenlabs, user=member, name="x").raw
    Budget.objects.create(workspace=on_elevenlabs, user=member, limit_credits=Decimal(1))

    async def scenario():
        ws = socket("", raw)
        await ws.connect()
        message = json.loads(await ws.receive_from(timeout=SESSION_OPENS))
        await ws.disconnect()
        return message

    message = async_to_sync(scenario)()
    assert message["message_type"] == "quota_exceeded" and "budget" in message["error"]
    assert not UsageEvent.objects.exists()


def test_other_formats_are_resampled_to_16_khz(speech):
    pcm, _ = speech
    samples = np.frombuffer(pcm, dtype="<i2")
    eight = samples[::2].astype("<i2").tobytes()
    back = np.frombuffer(to_pcm16k(eight, "pcm_8000"), dtype="<i2")
    assert abs(len(back) - len(samples)) <= 2
    ulaw = to_pcm16k(bytes([0x00] * 10 + [0xFF] * 10 + [0x80] * 10), "ulaw_8000")
    values = np.frombuffer(ulaw, dtype="<i2")
    assert len(values) == 60
    assert (values[0], values[30], values[-1]) == (-32124, 0, 32124)  # G.711 μ-law extremes


# --- The official SDK -----------------------------------------------------------------------


@pytest.mark.slow
def test_the_sdk_realtime_client_transcribes_through_v1(daphne_server, key, speech):
    from elevenlabs.client import AsyncElevenLabs
    from elevenlabs.realtime.connection import RealtimeEvents
    from elevenlabs.realtime.scribe import AudioFormat, CommitStrategy

    pcm, said = speech

    async def scenario():
        client = AsyncElevenLabs(base_url=daphne_server.url, api_key=key)
        events = []
        committed = asyncio.Event()
        connection = await client.speech_to_text.realtime.connect(
            {"model_id": "scribe_v2_realtime", "audio_format": AudioFormat.PCM_16000,
             "sample_rate": 16000, "commit_strategy": CommitStrategy.MANUAL,
             "language_code": "en"}
        )  # fmt: skip

        def on_committed(data):
            events.append(data)
            committed.set()

        connection.on(RealtimeEvents.COMMITTED_TRANSCRIPT, on_committed)
        connection.on(RealtimeEvents.PARTIAL_TRANSCRIPT, events.append)
        for start in range(0, len(pcm), FRAME):
            await connection.send(
                {"audio_base_64": base64.b64encode(pcm[start : start + FRAME]).decode()}
            )
        await connection.commit()
        await asyncio.wait_for(committed.wait(), timeout=60)
        await connection.close()
        return events

    events = asyncio.run(scenario())
    text = " ".join(e["text"] for e in events if e["message_type"] == "committed_transcript")
    assert wer(said, text) <= 0.2, text
    assert any(e["message_type"] == "partial_transcript" for e in events)


def test_a_session_that_outlives_its_reservation_is_still_charged(key, member, speech):
    """The sweeper releases the reservation mid-session (as after CHORUS_RESERVATION_TTL_SECONDS):
    the seconds are charged on a late row, once."""
    from datetime import timedelta

    from apps.billing.services import reservations_sweep

    pcm, _ = speech

    async def scenario():
        ws = socket("", key)
        assert (await ws.connect(timeout=60))[0]
        # The reservation exists once the session has started: the local engine may first
        # take a while to open (a model to load, a loaded machine), so wait for that message.
        started = json.loads(await ws.receive_from(timeout=60))
        assert started["message_type"] == "session_started", started
        await ws.send_to(text_data=chunk(pcm[: 10 * FRAME]))
        await drain(ws, [], 0.3)
        from channels.db import database_sync_to_async

        sweep = database_sync_to_async(reservations_sweep)
        released = await sweep(older_than=timedelta(microseconds=1))
        await ws.disconnect(timeout=60)  # after the chunk, which the engine may take a while on
        return released

    assert async_to_sync(scenario)() == 1
    rows = list(UsageEvent.objects.order_by("pk").values_list("status", "idempotency_key"))
    assert [status for status, _ in rows] == [UsageStatus.FAILED, UsageStatus.SETTLED]
    assert rows[1][1] == rows[0][1] + ":late"
    late = UsageEvent.objects.get(status=UsageStatus.SETTLED)
    assert late.units == pytest.approx(Decimal(1 / 3600), abs=Decimal("0.001"))
    assert late.user_id == member.pk


def test_a_session_stops_when_the_next_minute_would_exceed_the_budget(
    on_elevenlabs, member, monkeypatch
):
    """A budget with room for two minutes: the third minute is refused mid-session.

    The ElevenLabs engine's realtime session is never opened here: the engine call is
    replaced by a silent stand-in at its seam, so only the metering is exercised."""
    from apps.engines.elevenlabs.client import ElevenLabsEngine

    raw = services.api_key_create(workspace=on_elevenlabs, user=member, name="x").raw
    rate_per_hour = 1273  # the default stt_realtime rate (credits per hour)
    Budget.objects.create(workspace=on_elevenlabs, user=member,
                          limit_credits=Decimal(rate_per_hour * 2.5 / 60))  # fmt: skip

    class Quiet:
        def send_audio(self, pcm):
            return []

        def commit(self):
            return []

        def close(self):
            return []

    monkeypatch.setattr(ElevenLabsEngine, "stt_realtime", lambda self, **options: Quiet())

    async def scenario():
        ws = socket("", raw)
        await ws.connect()
        await ws.receive_from(timeout=SESSION_OPENS)
        second = b"\0\0" * 16000
        for _ in range(200):
            await ws.send_to(text_data=chunk(second))
            if not await ws.receive_nothing(timeout=0.01):
                message = json.loads(await ws.receive_from())
                closed = await ws.receive_output(timeout=5)
                await ws.disconnect()  # the consumer settles what it received
                return message, _, closed

    message, seconds, closed = async_to_sync(scenario)()
    assert message["message_type"] == "quota_exceeded" and "another minute" in message["error"]
    assert closed["type"] == "websocket.close"
    assert 60 < seconds <= 125  # refused within a minute of the budget's end
    [event] = UsageEvent.objects.all()
    assert event.status == UsageStatus.SETTLED
    assert event.credits <= Decimal(rate_per_hour * 2.5 / 60)


def test_a_session_the_sweeper_settled_on_its_recorded_seconds_is_charged_only_the_rest(
    on_elevenlabs, member, monkeypatch
):
    """The sweeper takes a session for dead and charges the seconds it had recorded; the
    session goes on: at its end only the seconds after those are charged (``…:late``)."""
    from datetime import timedelta

    from channels.db import database_sync_to_async

    from apps.billing.services import reservations_sweep
    from apps.engines.elevenlabs.client import ElevenLabsEngine

    raw = services.api_key_create(workspace=on_elevenlabs, user=member, name="x").raw

    class Quiet:
        def send_audio(self, pcm):
            return []

        def close(self):
            return []

    monkeypatch.setattr(ElevenLabsEngine, "stt_realtime", lambda self, **options: Quiet())

    async def scenario():
        ws = socket("", raw)
        await ws.connect()
        await ws.receive_from(timeout=SESSION_OPENS)
        await ws.send_to(text_data=chunk(b"\0\0" * 16000 * 9))  # 9 s, recorded
        await ws.receive_nothing(timeout=0.2)
        swept = await database_sync_to_async(reservations_sweep)(
            older_than=timedelta(microseconds=1)
        )
        await ws.send_to(text_data=chunk(b"\0\0" * 16000 * 9))  # 18 s in all
        await ws.receive_nothing(timeout=0.2)
        await ws.disconnect()
        return swept

    assert async_to_sync(scenario)() == 1
    swept, late = UsageEvent.objects.order_by("pk")
    assert (swept.status, swept.flagged, swept.units) == (
        UsageStatus.SETTLED,
        True,
        Decimal("0.003"),  # 9 s in hours
    )
    assert late.idempotency_key == swept.idempotency_key + ":late"
    assert (late.status, late.units) == (UsageStatus.SETTLED, Decimal("0.002"))  # 18 s: 0.005


def test_a_failure_in_chorus_ends_the_session_with_4500_settled_and_the_engine_closed(
    on_elevenlabs, member, monkeypatch
):
    from apps.engines.elevenlabs.client import ElevenLabsEngine

    raw = services.api_key_create(workspace=on_elevenlabs, user=member, name="x").raw
    closed = []

    class Broken:
        def send_audio(self, pcm):
            if len(closed) == 0 and pcm[:2] == b"\1\0":
                raise RuntimeError("a bug")
            return []

        def close(self):
            closed.append(True)
            return []

    monkeypatch.setattr(ElevenLabsEngine, "stt_realtime", lambda self, **options: Broken())

    async def scenario():
        ws = socket("", raw)
        await ws.connect()
        await ws.receive_from(timeout=SESSION_OPENS)
        await ws.send_to(text_data=chunk(b"\0\0" * 16000 * 4))  # 4 s, taken
        await ws.send_to(text_data=chunk(b"\1\0" * 16000 * 2))  # 2 s: the engine call raises
        error = json.loads(await ws.receive_from(timeout=5))
        close = await ws.receive_output(timeout=5)
        await ws.disconnect()
        return error, close

    error, close = async_to_sync(scenario)()
    assert error["message_type"] == "error" and "failed" in error["error"]
    assert close == {"type": "websocket.close", "code": 4500}
    assert closed == [True]
    [event] = UsageEvent.objects.all()  # the 6 s received: 0.002 hours
    assert (event.status, event.units) == (UsageStatus.SETTLED, Decimal("0.002"))
