"""Live sessions that are never stopped: a session reserves a minute when it starts, its
sockets record the seconds received on that reservation while connected (and once more when
they go), and a session no socket has recorded for its reconnect window is saved and charged
by the sweep through Stop's own service; a page that comes back later gets 4409."""

import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from apps.billing.models import Budget, UsageEvent, UsageStatus
from apps.billing.services import reservations_sweep
from apps.transcripts import live, tasks
from apps.transcripts.models import Transcript, TranscriptStatus
from apps.workspaces.services import ActionRefused, engine_settings_update
from tests.conftest import session_cookie_for, wait_until
from tests.gateway.test_api_realtime_endings import SECOND, FakeRealtime, credits_for, on_fake

pytestmark = pytest.mark.django_db(transaction=True)
WINDOW = 6  # seconds a session waits for its page: the Daphne's heartbeat is every 1.5 s


@pytest.fixture(autouse=True)
def media(settings, tmp_path, request):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CHORUS_LIVE_ABANDON_SECONDS = WINDOW
    if "live_env" in request.fixturenames:  # the test's Daphne keeps its files there too
        env = request.getfixturevalue("live_env")
        env.update(MEDIA_ROOT=str(settings.MEDIA_ROOT), CHORUS_LIVE_ABANDON_SECONDS=str(WINDOW))


@pytest.fixture
def on_elevenlabs(workspace, owner):
    """The workspace on the ElevenLabs engine (priced; never called by these tests)."""
    engine_settings_update(
        workspace=workspace, actor=owner, kind="elevenlabs", api_key="sk_unused",
        base_url="http://127.0.0.1:9",
    )  # fmt: skip
    return workspace


def socket(server, user, pk: int):
    """The microphone's socket of session ``pk`` on a real server, signed in as ``user``."""
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={session_cookie_for(user)}"
    headers = {"Cookie": cookie, "Origin": "http://localhost"}
    url = f"ws://127.0.0.1:{server.port}/ws/transcripts/live/{pk}/"
    return ws_connect(url, additional_headers=headers, open_timeout=30, max_size=None)


def until_closed(ws) -> tuple[list[dict], int | None]:
    """The messages until the server closes the socket, and its close code."""
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout=30)))
    except ConnectionClosed as exc:
        return messages, exc.rcvd.code if exc.rcvd else None


def test_a_session_reserves_a_minute_when_it_starts_and_a_spent_budget_keeps_nothing(
    on_elevenlabs, member
):
    Budget.objects.create(workspace=on_elevenlabs, user=member, limit_credits=Decimal(1))
    with pytest.raises(ActionRefused, match="A minute of live captions would exceed"):
        live.live_start(workspace=on_elevenlabs, user=member)
    assert not Transcript.objects.exists() and not UsageEvent.objects.exists()
    Budget.objects.filter(user=member).update(limit_credits=Decimal(100))
    session = live.live_start(workspace=on_elevenlabs, user=member)
    [event] = UsageEvent.objects.all()
    assert (event.status, event.idempotency_key) == (UsageStatus.RESERVED, f"live:{session.uid}")
    assert event.estimated_units == Decimal("0.017")  # a minute, in hours
    assert (event.user_id, event.purpose_id) == (member.pk, session.uid)


def test_the_sweep_waits_for_the_reconnect_window_after_the_last_record(workspace, member):
    session = live.live_start(workspace=workspace, user=member)
    live.append_audio(session, SECOND * 2)
    live.live_progress(transcript=session, event=live.live_reservation(transcript=session),
                       seconds=2)  # fmt: skip
    assert live.live_sweep() == 0  # recorded just now: the page may come back
    assert Transcript.objects.get(pk=session.pk).status == TranscriptStatus.RUNNING
    assert live.live_sweep(older_than=timedelta(microseconds=1)) == 1
    transcript = Transcript.objects.get(pk=session.pk)
    assert (transcript.status, transcript.duration_seconds) == (TranscriptStatus.READY, 2.0)
    [event] = UsageEvent.objects.all()
    assert (event.status, event.flagged) == (UsageStatus.SETTLED, False)
    assert live.live_sweep(older_than=timedelta(microseconds=1)) == 0  # once


def test_a_session_whose_reservation_the_billing_sweeper_closed_first_is_charged_the_rest(
    on_elevenlabs, member
):
    """The billing sweeper settled the reservation on the 18 s last recorded; the sweep saves
    the 36 s recorded, and the 18 s more are charged on a row of their own, once."""
    session = live.live_start(workspace=on_elevenlabs, user=member)
    live.append_audio(session, SECOND * 36)
    event = live.live_reservation(transcript=session)
    live.live_progress(transcript=session, event=event, seconds=18)
    assert reservations_sweep(older_than=timedelta(microseconds=1)) == 1
    assert live.live_sweep(older_than=timedelta(microseconds=1)) == 1
    swept, late = UsageEvent.objects.order_by("pk")
    assert (swept.status, swept.flagged, swept.units) == (
        UsageStatus.SETTLED,
        True,
        Decimal("0.005"),
    )
    assert (late.status, late.units, late.idempotency_key) == (
        UsageStatus.SETTLED,
        Decimal("0.005"),
        f"live:{session.uid}:late",
    )
    assert Transcript.objects.get(pk=session.pk).duration_seconds == 36.0


@pytest.mark.slow
def test_on_a_real_daphne_a_session_left_without_stop_is_saved_and_charged_what_it_received(
    live_env, daphne_server, workspace, owner, member
):
    """36 s of audio and a committed line, then the socket drops and nobody comes back: once
    the reconnect window has passed, the sweep saves the line and the recording and charges
    the 36 s; a page that reconnects after that is told the session ended (4409)."""
    with FakeRealtime() as fake:
        on_fake(workspace, owner, fake)
        session = live.live_start(workspace=workspace, user=member)
        with socket(daphne_server, member, session.pk) as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "session"
            for _ in range(18):
                ws.send(SECOND * 2)  # the most a frame may carry
            ws.send(json.dumps({"type": "commit"}))
            committed = json.loads(ws.recv(timeout=30))
        wait_until(lambda: fake.open == 0, timeout=30, what="the socket's ending")
        event = UsageEvent.objects.get()
        assert event.status == UsageStatus.RESERVED
        assert event.units_so_far == Decimal("0.010")  # 36 s, recorded as the socket went
        assert live.live_sweep(older_than=timedelta(minutes=5)) == 0  # within the window
        ended = wait_until(tasks.live_sweep, timeout=60, what="the sweep to end the session")
        with socket(daphne_server, member, session.pk) as ws:
            messages, code = until_closed(ws)
    assert committed == {"type": "committed", "text": "hello", "start": 0.1, "end": 0.4}
    assert ended == 1
    transcript = Transcript.objects.get(pk=session.pk)
    assert (transcript.status, transcript.text) == (TranscriptStatus.READY, "hello")
    assert transcript.duration_seconds == 36.0
    assert transcript.media.size == 44 + 36 * len(SECOND)
    event.refresh_from_db()
    assert (event.status, event.units, event.flagged) == (
        UsageStatus.SETTLED,
        Decimal("0.010"),
        False,
    )
    assert event.credits == credits_for(36)
    assert UsageEvent.objects.count() == 1
    assert messages == [{"type": "error", "message": "This session has ended."}]
    assert code == 4409
    assert fake.audio_bytes == 36 * len(SECOND)
    assert "Traceback" not in daphne_server.proc.output(), daphne_server.proc.output()


@pytest.mark.slow
def test_on_a_real_daphne_a_connected_session_is_not_swept_even_when_quiet(
    live_env, daphne_server, workspace, owner, member
):
    """No audio for longer than the window, but the socket is there: the sweeps leave the
    session alone, and Stop then saves and charges it as usual."""
    with FakeRealtime() as fake:
        on_fake(workspace, owner, fake)
        session = live.live_start(workspace=workspace, user=member)
        with socket(daphne_server, member, session.pk) as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "session"
            ws.send(SECOND * 2)
            time.sleep(WINDOW + 2)
            swept = live.live_sweep(), reservations_sweep(older_than=timedelta(seconds=WINDOW))
            running = Transcript.objects.get(pk=session.pk).status
            ws.send(json.dumps({"type": "stop"}))
            messages, code = until_closed(ws)
    assert swept == (0, 0)
    assert running == TranscriptStatus.RUNNING
    assert messages[-1]["type"] == "saved" and code == 1000
    [event] = UsageEvent.objects.all()
    assert (event.status, event.flagged, event.credits) == (
        UsageStatus.SETTLED,
        False,
        credits_for(2),
    )
    assert Transcript.objects.get(pk=session.pk).duration_seconds == 2.0


def test_a_reconnect_window_as_long_as_the_reservation_ttl_is_refused_at_start(tmp_path):
    """The session's reservation must outlive the wait for its page, or the billing sweeper
    would close it first."""
    from tests.test_settings import _load_settings

    env = {"CHORUS_VAR_DIR": str(tmp_path), "CHORUS_RESERVATION_TTL_SECONDS": "600"}
    refused = _load_settings({**env, "CHORUS_LIVE_ABANDON_SECONDS": "600"})
    assert refused.returncode != 0
    assert "CHORUS_LIVE_ABANDON_SECONDS must be shorter" in refused.stderr
    ok = _load_settings({**env, "CHORUS_LIVE_ABANDON_SECONDS": "599"})
    assert ok.returncode == 0, ok.stderr
