"""Live captions over the real ASGI application: a WAV streamed in 100 ms frames gets
partials, then committed text that matches what was said; Stop saves a transcript with the
recording, metered by seconds; a dropped socket resumes the same session; garbage frames
get an error and the session goes on; viewers watch but cannot caption."""

import json
import os

import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from apps.billing.models import UsageEvent, UsageStatus
from apps.transcripts import live
from apps.transcripts.models import Transcript, TranscriptStatus
from studio_site.asgi import application
from tests.conftest import wait_until
from tests.engines.test_local_stt import human_recordings, silence, wer
from tests.jobs.test_consumers import _headers
from tests.transcripts.test_batch import samples_of

pytestmark = pytest.mark.django_db(transaction=True)
FRAME = 3200  # 100 ms of 16 kHz 16-bit mono
OPEN_TIMEOUT = 60  # the local engine may load its models before a session opens


@pytest.fixture(autouse=True)
def media(settings, tmp_path, request):
    settings.MEDIA_ROOT = tmp_path / "media"
    if "live_env" in request.fixturenames:  # a Daphne of the test keeps its files there too
        request.getfixturevalue("live_env")["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)


@pytest.fixture(scope="module")
def speech():
    """Two LibriVox utterances with pauses, as 16 kHz s16le PCM, and what they say."""
    pieces, said = [], []
    for wav, text in human_recordings()[:2]:
        pieces += [samples_of(wav), silence(1.2)]
        said.append(text)
    pcm = (np.clip(np.concatenate(pieces), -1, 1) * 32767).astype("<i2").tobytes()
    return pcm, " ".join(said)


def connect(path, headers):
    """A socket to ``path`` with ``headers`` (made with ``_headers(user)`` outside the event
    loop: signing a session in touches the database)."""
    return WebsocketCommunicator(application, path, headers=headers)


async def opened(communicator) -> dict:
    """Connect, and wait for the session's first message: its engine session is open then,
    which on a loaded machine can take far longer than the communicator's default 1 s."""
    assert (await communicator.connect(timeout=OPEN_TIMEOUT))[0]
    message = json.loads(await communicator.receive_from(timeout=OPEN_TIMEOUT))
    assert message["type"] == "session", message
    return message


async def drain(communicator, into: list, wait: float = 0.001):
    while not await communicator.receive_nothing(timeout=wait):
        into.append(json.loads(await communicator.receive_from()))


async def stream(communicator, pcm: bytes, into: list):
    for start in range(0, len(pcm), FRAME):
        await communicator.send_to(bytes_data=pcm[start : start + FRAME])
        await drain(communicator, into)


def test_streamed_speech_gets_partials_then_committed_text_and_stop_saves_it(
    workspace, member, viewer, speech
):
    pcm, said = speech
    session = live.live_start(workspace=workspace, user=member)
    path = f"/ws/transcripts/live/{session.pk}/"
    member, viewer = _headers(member), _headers(viewer)

    async def scenario():
        mic = connect(path, member)
        watcher = connect(f"{path}watch/", viewer)
        assert (await mic.connect())[0] and (await watcher.connect())[0]
        got, seen = [], []
        await drain(watcher, seen, 0.2)
        await stream(mic, pcm, got)
        await mic.send_to(text_data=json.dumps({"type": "stop"}))
        while not any(m["type"] == "saved" for m in got):
            got.append(json.loads(await mic.receive_from(timeout=30)))
        await drain(watcher, seen, 0.5)
        await mic.disconnect()
        await watcher.disconnect()
        return got, seen

    got, seen = async_to_sync(scenario)()
    kinds = [m["type"] for m in got]
    assert kinds[0] == "session" and got[0]["committed"] == []
    assert "partial" in kinds and "committed" in kinds
    assert kinds.index("partial") < kinds.index("committed")
    committed = " ".join(m["text"] for m in got if m["type"] == "committed")
    assert wer(said, committed) <= 0.2, committed
    assert kinds[-1] == "saved"
    # The watcher saw the same committed lines.
    assert [m["text"] for m in seen if m["type"] == "committed"] == [
        m["text"] for m in got if m["type"] == "committed"
    ]
    transcript = Transcript.objects.get(pk=session.pk)
    assert transcript.status == TranscriptStatus.READY and transcript.source == "live"
    assert transcript.duration_seconds == pytest.approx(len(pcm) / 32000, abs=0.01)
    assert transcript.media.read()[:4] == b"RIFF"
    assert wer(said, transcript.text) <= 0.2
    [event] = UsageEvent.objects.all()
    assert (event.capability, event.status) == ("stt_realtime", UsageStatus.SETTLED)
    assert event.user_id == transcript.created_by_id
    assert event.purpose_id == transcript.uid


def test_a_dropped_socket_resumes_the_same_session_without_losing_committed_text(
    workspace, member, speech
):
    pcm, said = speech
    half = (len(pcm) // 2) // FRAME * FRAME
    session = live.live_start(workspace=workspace, user=member)
    path = f"/ws/transcripts/live/{session.pk}/"
    member = _headers(member)

    async def scenario():
        first = connect(path, member)
        got = [await opened(first)]
        await stream(first, pcm[:half], got)
        await first.send_to(text_data=json.dumps({"type": "commit"}))
        # The network drops. The socket takes its messages in order, so the commit is answered
        # first (Whisper may take seconds on a loaded machine): wait for the end, then read
        # everything the socket was sent.
        await first.disconnect(timeout=OPEN_TIMEOUT)
        await drain(first, got)
        second = connect(path, member)
        again = [await opened(second)]
        await stream(second, pcm[half:], again)
        await second.send_to(text_data=json.dumps({"type": "stop"}))
        while not any(m["type"] == "saved" for m in again):
            again.append(json.loads(await second.receive_from(timeout=30)))
        await second.disconnect()
        return got, again

    got, again = async_to_sync(scenario)()
    before = [m["text"] for m in got if m["type"] == "committed"]
    assert before
    assert again[0]["type"] == "session" and again[0]["recorded"] == pytest.approx(half / 32000)
    assert " ".join(line["text"] for line in again[0]["committed"]) == " ".join(before)
    transcript = Transcript.objects.get(pk=session.pk)
    assert transcript.duration_seconds == pytest.approx(len(pcm) / 32000, abs=0.01)
    assert wer(said, transcript.text) <= 0.25
    starts = [w["start"] for w in transcript.words]
    assert starts == sorted(starts) and starts[-1] > half / 32000  # the second half offset


def test_garbage_frames_get_an_error_and_the_session_goes_on(workspace, member, speech):
    session = live.live_start(workspace=workspace, user=member)
    member = _headers(member)

    async def scenario():
        mic = connect(f"/ws/transcripts/live/{session.pk}/", member)
        got = [await opened(mic)]
        for frame in (b"\x01\x02\x03", b"\0" * 70_000):
            await mic.send_to(bytes_data=frame)
            got.append(json.loads(await mic.receive_from()))
        await mic.send_to(text_data="not json")
        got.append(json.loads(await mic.receive_from()))
        await mic.send_to(text_data=json.dumps({"type": "dance"}))
        got.append(json.loads(await mic.receive_from()))
        await mic.send_to(bytes_data=speech[0][:FRAME])  # still works
        quiet = await mic.receive_nothing(timeout=0.5)  # silence: no error, no caption
        await mic.disconnect()
        return got, quiet

    got, quiet = async_to_sync(scenario)()
    assert quiet  # the valid frame after the garbage was taken without complaint
    errors = [m["message"] for m in got if m["type"] == "error"]
    assert len(errors) == 4
    assert "even number of bytes" in errors[0] and "at most 2 s" in errors[1]
    assert "JSON" in errors[2] and "dance" in errors[3]
    assert live.recorded_seconds(Transcript.objects.get(pk=session.pk)) == pytest.approx(0.1)


def test_only_members_caption_viewers_watch_and_outsiders_get_nothing(
    workspace, member, viewer, outsider
):
    session = live.live_start(workspace=workspace, user=member)
    path = f"/ws/transcripts/live/{session.pk}/"
    viewer, outsider, nobody = _headers(viewer), _headers(outsider), _headers(None)

    async def connected(path, user):
        communicator = connect(path, user)
        ok, _ = await communicator.connect()
        await communicator.disconnect()
        return ok

    async def scenario():
        return (
            await connected(path, viewer),
            await connected(f"{path}watch/", viewer),
            await connected(path, outsider),
            await connected(f"{path}watch/", outsider),
            await connected(path, nobody),
        )

    assert async_to_sync(scenario)() == (False, True, False, False, False)


def test_an_ended_session_cannot_be_reopened(workspace, member):
    session = live.live_start(workspace=workspace, user=member)
    live.live_finish(transcript=session)
    member = _headers(member)

    async def scenario():
        mic = connect(f"/ws/transcripts/live/{session.pk}/", member)
        await mic.connect()
        message = json.loads(await mic.receive_from())
        await mic.disconnect()
        return message

    assert async_to_sync(scenario)()["message"] == "This session has ended."


def test_frame_checks():
    assert "empty" in live.frame_problem(b"")
    assert live.frame_problem(b"\0\0" * 1600) is None


def test_only_the_creator_uses_the_microphone_and_nothing_counts_after_stop(
    workspace, member, owner, speech
):
    pcm, _ = speech
    session = live.live_start(workspace=workspace, user=member)
    path = f"/ws/transcripts/live/{session.pk}/"
    mine, teammate = _headers(member), _headers(owner)

    async def scenario():
        other = connect(path, teammate)
        refused = not (await other.connect(timeout=OPEN_TIMEOUT))[0]
        mic = connect(path, mine)
        await opened(mic)
        await stream(mic, pcm[: 20 * FRAME], [])
        second = connect(path, mine)  # a reconnect racing the first socket
        await opened(second)
        await mic.send_to(text_data=json.dumps({"type": "stop"}))
        got = []
        while not any(m["type"] == "saved" for m in got):
            got.append(json.loads(await mic.receive_from(timeout=OPEN_TIMEOUT)))
        # The other socket hears it (after the 20 frames, which the engine may be slow on).
        told = json.loads(await second.receive_from(timeout=OPEN_TIMEOUT))
        closed = await second.receive_output(timeout=OPEN_TIMEOUT)
        await second.disconnect(timeout=OPEN_TIMEOUT)
        await mic.disconnect(timeout=OPEN_TIMEOUT)
        return refused, told, closed

    refused, told, closed = async_to_sync(scenario)()
    assert refused and told["type"] == "saved" and closed["type"] == "websocket.close"
    transcript = Transcript.objects.get(pk=session.pk)
    assert transcript.status == TranscriptStatus.READY
    assert transcript.duration_seconds == pytest.approx(2.0, abs=0.01)  # 20 frames, not one
    assert transcript.media.size == 44 + 20 * FRAME
    assert UsageEvent.objects.filter(status=UsageStatus.SETTLED).count() == 1
    assert not os.path.exists(live.pcm_path(transcript))  # no stray audio after Stop


@pytest.mark.slow
def test_on_a_real_daphne_deeply_nested_json_is_an_error_and_every_ending_closes_the_engine(
    live_env, daphne_server, workspace, owner, member, settings
):
    """On the ElevenLabs engine (a stand-in on a local port): 100,000 nested ``[`` used to
    crash the socket (1011) and leave its engine session open; it is an error message now,
    the session goes on, and the engine's connection closes when the socket does."""
    from websockets.sync.client import connect as ws_connect

    from tests.conftest import session_cookie_for
    from tests.gateway.test_api_realtime_endings import SECOND, FakeRealtime, on_fake

    assert live_env["MEDIA_ROOT"] == str(settings.MEDIA_ROOT)
    with FakeRealtime() as fake:
        on_fake(workspace, owner, fake)
        session = live.live_start(workspace=workspace, user=member)
        cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie_for(member)}"
        url = f"ws://127.0.0.1:{daphne_server.port}/ws/transcripts/live/{session.pk}/"
        headers = {"Cookie": cookie, "Origin": "http://localhost"}
        with ws_connect(url, additional_headers=headers, max_size=None) as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "session"
            ws.send("[" * 100_000)
            error = json.loads(ws.recv(timeout=30))
            ws.send(SECOND)
            ws.send(json.dumps({"type": "commit"}))
            committed = json.loads(ws.recv(timeout=30))
            ws.close()
            code = ws.protocol.close_rcvd.code
        wait_until(lambda: fake.open == 0, timeout=10, what="the engine's session to be closed")
    assert (error["type"], error["message"]) == ("error", "Text frames are JSON messages.")
    assert (committed["type"], committed["text"]) == ("committed", "hello")
    assert code == 1000  # the client's close, answered: never 1011
    assert fake.audio_bytes == len(SECOND)
    transcript = Transcript.objects.get(pk=session.pk)
    assert transcript.status == TranscriptStatus.RUNNING  # resumable: Stop meters it
    assert live.recorded_seconds(transcript) == pytest.approx(1.0)
    assert "Traceback" not in daphne_server.proc.output(), daphne_server.proc.output()
