"""Live captions: a browser microphone streamed over a websocket to the engine's realtime
session, the committed lines kept as they come, and a transcript saved on Stop.

A live session is a ``Transcript`` with ``source="live"``, running while the microphone is
on. Its audio (16 kHz mono s16le, as the browser sends it) is appended to a file as it
arrives, so a dropped socket loses nothing: the page reconnects to the same session, the
committed lines come back, and new audio continues the same recording (a fresh engine
session, its times offset by what was already recorded). Stop turns the recording into a WAV
of the transcript and meters its seconds (``stt_realtime``) as the member's.

A session reserves a minute when it starts (``live_reservation``: a spent budget refuses it),
and Stop settles that reservation on the seconds recorded. While a socket is connected it
records the seconds received on the reservation (``live_progress``: every few seconds of
audio, and as a heartbeat while it is quiet, and once more when it goes), so the billing
sweeper never takes a running session for dead. A session with no socket and no audio for
longer than its reconnect window (``CHORUS_LIVE_ABANDON_SECONDS``) was left for good (the
page was closed): ``live_sweep`` saves it through Stop's own ``live_finish`` (the committed
text, the recording so far, its seconds charged), and a page that comes back later is told
that the session has ended.
"""

import logging
import os
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.billing.rates import units_for
from apps.billing.services import (
    BudgetExceeded,
    meter_charge_late,
    meter_progress,
    metered,
    rate_for,
)
from apps.engines import audio
from apps.engines.base import EngineError
from apps.generation.caller import Caller
from apps.generation.engine import engine_for
from apps.generation.live import LiveMeter
from apps.workspaces.services import ActionRefused

from . import document
from .models import Transcript, TranscriptStatus
from .services import language_checked

RATE = 16000
BYTES_PER_SECOND = RATE * 2
MAX_FRAME_BYTES = 2 * BYTES_PER_SECOND  # the engine takes at most 2 s a chunk
MODEL_ID = "scribe_realtime"
ESTIMATE_SECONDS = 60
PROGRESS_SECONDS = 5  # a socket records the seconds received every 5 s of audio

log = logging.getLogger(__name__)


class EngineStopped(ActionRefused):
    """The engine refused or ended a live session; the message says why."""


class LiveEngineSession:
    """The engine's realtime session for a live transcript, opened by ``engine_session``.

    Its calls block (speech recognition): make them from a worker thread. An engine error
    becomes ``EngineStopped``, so the consumer never deals with engines itself.
    """

    def __init__(self, session):
        self._session = session

    @staticmethod
    def _call(call, *args):
        try:
            return call(*args)
        except EngineError as exc:
            raise EngineStopped(f"The engine stopped: {exc.message}") from exc

    def send_audio(self, pcm: bytes):
        return self._call(self._session.send_audio, pcm)

    def commit(self):
        return self._call(self._session.commit)

    def close(self):
        return self._call(self._session.close)


def session_engine(transcript: Transcript):
    """The engine of the session's workspace (reads the database: call it from a DB thread)."""
    return engine_for(transcript.workspace)


def engine_session(engine, transcript: Transcript) -> LiveEngineSession:
    """Open the engine's realtime session (may load a model: call it from a worker thread)."""
    language = (transcript.options or {}).get("language_code")
    try:
        session = engine.stt_realtime(
            language_code=language, include_timestamps=True, commit_strategy="vad"
        )
    except EngineError as exc:
        raise EngineStopped(f"The engine refused the session: {exc.message}") from exc
    return LiveEngineSession(session)


def _pcm_name(transcript: Transcript) -> str:
    return f"transcripts/{transcript.workspace_id}/{transcript.uid}/live.pcm"


def pcm_path(transcript: Transcript) -> str:
    path = default_storage.path(_pcm_name(transcript))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def recorded_seconds(transcript: Transcript) -> float:
    path = pcm_path(transcript)
    return os.path.getsize(path) / BYTES_PER_SECOND if os.path.exists(path) else 0.0


def live_start(*, workspace, user, language_code: str | None = None) -> Transcript:
    """A new live session with a minute reserved, refused up front (nothing kept) when the
    member's budget has no room for that minute."""
    language = language_checked(language_code)
    engine = engine_for(workspace)
    stamp = timezone.localtime().strftime("%b %-d, %H:%M")
    with transaction.atomic():
        transcript = Transcript.objects.create(
            workspace=workspace,
            created_by=user,
            uid=uuid.uuid4().hex,
            title=f"Live captions, {stamp}",
            source="live",
            status=TranscriptStatus.RUNNING,
            options={"language_code": language},
            engine=engine.name,
            content_type="audio/wav",
            filename="live.wav",
        )
        live_reservation(transcript=transcript, engine_name=engine.name)
    return transcript


def usage_key(transcript: Transcript) -> str:
    """The idempotency key of the session's usage row: reserved at the start, settled by Stop."""
    return f"live:{transcript.uid}"


def _meter(transcript: Transcript, *, engine_name: str | None = None) -> LiveMeter:
    """The core's meter of the session: the member's own call (source ui), for the transcript."""
    workspace = transcript.workspace
    return LiveMeter(
        caller=Caller(
            workspace=workspace,
            user=transcript.created_by,
            source=UsageSource.UI,
            purpose=("transcript", transcript.uid),
        ),
        engine_name=engine_name or engine_for(workspace).name,
        model_id=MODEL_ID,
    )


def live_reservation(*, transcript: Transcript, engine_name: str | None = None) -> UsageEvent:
    """The session's usage row: the one reserved when it started, else (a session started
    before sessions reserved) a minute reserved now; ``ActionRefused`` when a budget has no
    room for that minute. Its estimate counts against the budgets until Stop settles it."""
    existing = UsageEvent.objects.filter(idempotency_key=usage_key(transcript)).first()
    if existing is not None:
        return existing
    meter = _meter(transcript, engine_name=engine_name)
    try:
        reservation = meter.reserve(idempotency_key=usage_key(transcript), seconds=ESTIMATE_SECONDS)
    except BudgetExceeded as exc:
        raise ActionRefused(f"A minute of live captions would exceed {exc.budget}.") from exc
    return reservation.event


def live_progress(*, transcript: Transcript, event: UsageEvent, seconds: float) -> bool:
    """A socket of the session is alive and ``seconds`` are recorded: noted on the session's
    reservation (``meter_progress``), so neither sweeper takes the session for left. Whether
    the session still runs (Stop, or the sweep, may have ended it from elsewhere)."""
    meter_progress(event=event, units=units_for(event.unit, seconds=seconds))
    return Transcript.objects.filter(pk=transcript.pk, status=TranscriptStatus.RUNNING).exists()


def heartbeat_seconds() -> float:
    """How often a connected socket says it is alive: well within the reconnect window."""
    return min(30.0, settings.CHORUS_LIVE_ABANDON_SECONDS / 4)


def append_audio(transcript: Transcript, pcm: bytes) -> float:
    """Keep a frame of the recording; how many seconds are recorded with it."""
    path = pcm_path(transcript)
    with open(path, "ab") as handle:
        handle.write(pcm)
        return handle.tell() / BYTES_PER_SECOND


def next_minute_refusal(transcript: Transcript) -> str | None:
    """Why another minute of captions would exceed a budget (the session then stops), or None.

    The session's open reservation counts that minute: the estimate adds what is recorded."""
    blocked_by = _meter(transcript).next_minute_blocked_by(recorded_seconds(transcript))
    if blocked_by:
        return f"Stopped and saved: another minute would exceed {blocked_by}."
    return None


def frame_problem(pcm: bytes) -> str | None:
    if not pcm:
        return "An audio frame was empty."
    if len(pcm) % 2:
        return "Audio frames are 16-bit PCM: an even number of bytes."
    if len(pcm) > MAX_FRAME_BYTES:
        return "Send at most 2 s of audio a frame."
    return None


def commit_words(transcript_pk: int, words: list, offset: float) -> list[dict]:
    """Append a committed line's words (times offset to the whole recording)."""
    line = document.clean_words(words)
    for word in line:
        for key in ("start", "end"):
            if word[key] is not None:
                word[key] = round(word[key] + offset, 3)
    with transaction.atomic():
        transcript = Transcript.objects.select_for_update().filter(pk=transcript_pk).first()
        if transcript is None or transcript.status != TranscriptStatus.RUNNING:
            return []  # deleted, or already stopped: the saved transcript stays as it is
        words_all = document.paragraphed([*transcript.words, *line])
        transcript.words = words_all
        transcript.text = document.full_text(words_all)
        transcript.save(update_fields=["words", "text", "updated_at"])
    return line


def committed_lines(transcript: Transcript) -> list[dict]:
    return [
        {"text": p.text, "start": p.start, "end": p.end}
        for p in document.paragraphs(transcript.words)
    ]


def live_finish(*, transcript: Transcript) -> Transcript:
    """Stop: the recording becomes the transcript's WAV, its seconds are metered (on the
    reservation made at the start; a session without one reserves them now)."""
    transcript.refresh_from_db()
    if transcript.status != TranscriptStatus.RUNNING or transcript.source != "live":
        return transcript
    path = pcm_path(transcript)
    pcm = b""
    if os.path.exists(path):
        with open(path, "rb") as handle:
            pcm = handle.read()
    seconds = len(pcm) / BYTES_PER_SECOND
    engine = engine_for(transcript.workspace)
    unit = rate_for(transcript.workspace, "stt_realtime", MODEL_ID, engine.name).unit
    wav = audio.wav_header(RATE, len(pcm)) + pcm
    try:
        with (
            metered(
                workspace=transcript.workspace,
                user=transcript.created_by,
                capability="stt_realtime",
                engine=engine.name,
                model_id=MODEL_ID,
                units=units_for(unit, seconds=seconds),
                source=UsageSource.UI,
                idempotency_key=usage_key(transcript),
                purpose=("transcript", transcript.uid),
            ) as meter,
            transaction.atomic(),
        ):
            unit = meter.event.unit  # the reservation's, made when the session started
            locked = Transcript.objects.select_for_update().get(pk=transcript.pk)
            if locked.status != TranscriptStatus.RUNNING:  # stopped from another socket
                meter.settle(units=units_for(unit, seconds=0))
                return locked
            locked.media.save("live.wav", ContentFile(wav), save=False)
            locked.size_bytes = len(wav)
            locked.duration_seconds = round(seconds, 3)
            locked.status = TranscriptStatus.READY
            locked.language_code = locked.language_code or (
                (locked.options or {}).get("language_code") or "en"
            )
            locked.request_id = meter.event.request_id
            locked.save()
            event = meter.settle(units=units_for(unit, seconds=seconds))
            _charge_the_rest(event=event, units=units_for(unit, seconds=seconds))
    except BudgetExceeded as exc:
        Transcript.objects.filter(pk=transcript.pk).update(
            status=TranscriptStatus.FAILED, error=f"Not saved: {exc}"
        )
        raise ActionRefused(str(exc)) from exc
    if os.path.exists(path):
        os.remove(path)
    transcript.refresh_from_db()
    return transcript


def _charge_the_rest(*, event: UsageEvent, units: Decimal) -> None:
    """The billing sweeper closed the session's reservation before Stop (failed at 0, or
    settled on the seconds last recorded): it is not settled twice, so what it lacks is
    charged on a row of its own (``…:late``), unless a budget is spent by then (logged and
    left unpaid: the recording was transcribed all the same)."""
    if event.flagged and units > 0:
        meter_charge_late(event=event, units=units)


def live_sweep(*, older_than: timedelta | None = None) -> int:
    """Save the live sessions that were left: no socket and no audio for longer than the
    reconnect window (``CHORUS_LIVE_ABANDON_SECONDS``, or ``older_than``), as when the browser
    was closed and never came back; how many were ended.

    Each goes through Stop's ``live_finish``: the committed text and the recording so far
    are saved, and the seconds received are charged on its reservation. A socket that still
    races in hears ``saved``; a page that reconnects later is refused with 4409.
    """
    if older_than is None:
        older_than = timedelta(seconds=settings.CHORUS_LIVE_ABANDON_SECONDS)
    cutoff = timezone.now() - older_than
    running = Transcript.objects.filter(
        source="live", status=TranscriptStatus.RUNNING, updated_at__lt=cutoff
    ).select_related("workspace", "created_by")
    ended = 0
    for transcript in running:
        if _last_seen(transcript) >= cutoff:
            continue  # a socket is connected, or left within the window
        try:
            transcript = live_finish(transcript=transcript)
        except ActionRefused as exc:  # a budget refused the save: failed, with the reason
            log.warning("live session %s was left; not saved: %s", transcript.pk, exc)
        except Exception:  # one session that cannot be saved must not stop the others
            log.exception("live session %s was left; saving it failed", transcript.pk)
            continue
        else:
            log.info("live session %s was left: saved and charged", transcript.pk)
            _push_saved(transcript)
        ended += 1
    return ended


def _last_seen(transcript: Transcript) -> datetime:
    """When the session last showed life: a socket's record on its open reservation (made
    at the start, while connected, and when it went), or a line committed."""
    event = UsageEvent.objects.filter(
        idempotency_key=usage_key(transcript), status=UsageStatus.RESERVED
    ).first()
    if event is None:
        return transcript.updated_at
    return max(transcript.updated_at, event.progress_at or event.created_at)


def group_name(pk: int) -> str:
    """The channel layer group of a session's sockets (the microphone's and the watchers')."""
    return f"live.{pk}"


def _push_saved(transcript: Transcript) -> None:
    """Tell the session's sockets it was saved. Best effort: the row is the truth."""
    layer = get_channel_layer()
    if layer is None:
        return
    url = reverse("transcripts:detail", args=[transcript.pk])
    try:
        async_to_sync(layer.group_send)(
            group_name(transcript.pk),
            {"type": "live.event", "event": {"type": "saved", "url": url}},
        )
    except Exception:
        log.warning("could not tell live session %s it was saved", transcript.pk, exc_info=True)
