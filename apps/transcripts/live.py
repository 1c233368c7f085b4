"""Live captions: a browser microphone streamed over a websocket to the engine's realtime
session, the committed lines kept as they come, and a transcript saved on Stop.

A live session is a ``Transcript`` with ``source="live"``, running while the microphone is
on. Its audio (16 kHz mono s16le, as the browser sends it) is appended to a file as it
arrives, so a dropped socket loses nothing: the page reconnects to the same session, the
committed lines come back, and new audio continues the same recording (a fresh engine
session, its times offset by what was already recorded). Stop turns the recording into a WAV
of the transcript and meters its seconds (``stt_realtime``) as the member's.
"""

import os
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from apps.billing.models import UsageSource
from apps.billing.rates import units_for
from apps.billing.services import BudgetExceeded, metered, rate_for, usage_estimate
from apps.engines import audio
from apps.engines.base import EngineError
from apps.workspaces.services import ActionRefused, engine_for

from . import document
from .models import Transcript, TranscriptStatus
from .services import language_checked

RATE = 16000
BYTES_PER_SECOND = RATE * 2
MAX_FRAME_BYTES = 2 * BYTES_PER_SECOND  # the engine takes at most 2 s a chunk
MODEL_ID = "scribe_realtime"
ESTIMATE_SECONDS = 60


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
    """A new live session, refused up front when the member's budget has no room left."""
    engine = engine_for(workspace)
    estimate = usage_estimate(
        workspace=workspace,
        user=user,
        capability="stt_realtime",
        engine=engine.name,
        model_id=MODEL_ID,
        units=units_for(
            rate_for(workspace, "stt_realtime", MODEL_ID, engine.name).unit,
            seconds=ESTIMATE_SECONDS,
        ),
    )
    if estimate.blocked_by:
        raise ActionRefused(f"A minute of live captions would exceed {estimate.blocked_by}.")
    language = language_checked(language_code)
    stamp = timezone.localtime().strftime("%b %-d, %H:%M")
    return Transcript.objects.create(
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


def append_audio(transcript: Transcript, pcm: bytes) -> float:
    """Keep a frame of the recording; how many seconds are recorded with it."""
    path = pcm_path(transcript)
    with open(path, "ab") as handle:
        handle.write(pcm)
        return handle.tell() / BYTES_PER_SECOND


def next_minute_refusal(transcript: Transcript) -> str | None:
    """Why another minute of captions would exceed a budget (the session then stops), or None."""
    engine = engine_for(transcript.workspace)
    estimate = usage_estimate(
        workspace=transcript.workspace,
        user=transcript.created_by,
        capability="stt_realtime",
        engine=engine.name,
        model_id=MODEL_ID,
        units=units_for(
            rate_for(transcript.workspace, "stt_realtime", MODEL_ID, engine.name).unit,
            seconds=recorded_seconds(transcript) + ESTIMATE_SECONDS,
        ),
    )
    if estimate.blocked_by:
        return f"Stopped and saved: another minute would exceed {estimate.blocked_by}."
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
    """Stop: the recording becomes the transcript's WAV, its seconds are metered."""
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
                idempotency_key=f"live:{transcript.uid}",
                purpose=("transcript", transcript.uid),
            ) as meter,
            transaction.atomic(),
        ):
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
            meter.settle(units=units_for(unit, seconds=seconds))
    except BudgetExceeded as exc:
        Transcript.objects.filter(pk=transcript.pk).update(
            status=TranscriptStatus.FAILED, error=f"Not saved: {exc}"
        )
        raise ActionRefused(str(exc)) from exc
    if os.path.exists(path):
        os.remove(path)
    transcript.refresh_from_db()
    return transcript
