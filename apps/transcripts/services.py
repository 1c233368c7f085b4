"""Batch transcription: an upload becomes a ``Transcript`` and a job that transcribes it through
the metered engine; then the team reads, edits and exports it.

Every upload to transcribe, from the studio's form or ``/v1/speech-to-text``, passes one check
(``upload_check``) before anything is kept or reserved: its options (key terms by ElevenLabs'
rule, the language code), its size, that it decodes as sound, and its length from its header
within ``MAX_SECONDS``. The file is read where Django spooled it, never whole into memory. Its
estimated seconds are reserved in the same transaction that creates the transcript and its
job, so a spent budget refuses the upload whole. The job settles on the length the engine
heard, in the same transaction that stores the words: a transcript is never kept unpaid, nor
paid and lost.
"""

import contextlib
import os
import uuid

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.billing.rates import units_for
from apps.billing.services import BudgetExceeded, rate_for, usage_estimate
from apps.engines.base import STTRequest
from apps.generation.caller import Caller
from apps.generation.engine import engine_for
from apps.generation.jobs import errors_recorded, job_reserve, job_waits
from apps.generation.media import transcribe_in_job
from apps.generation.uploads import (  # noqa: F401  (MAX_LENGTH_SHOWN, language_checked: read here)
    MAX_LENGTH_SHOWN,
    MEDIA_TYPES,
    MODEL_ID,
    Options,
    UploadRefused,
    language_checked,
    media_content_type,
    upload_check,
)
from apps.jobs.services import TransientJobError, job_cancel, job_start
from apps.workspaces.services import ActionRefused

from . import document
from .models import Transcript, TranscriptStatus


def transcribe_estimate(*, workspace, user, seconds: float):
    engine = engine_for(workspace)
    unit = rate_for(workspace, "stt", MODEL_ID, engine.name).unit
    return usage_estimate(
        workspace=workspace,
        user=user,
        capability="stt",
        engine=engine.name,
        model_id=MODEL_ID,
        units=units_for(unit, seconds=seconds),
    )


def ledger_key(transcript: Transcript) -> str:
    return f"transcript:{transcript.uid}"


def transcript_start(*, workspace, user, upload, title: str, options: Options) -> Transcript:
    """Keep the upload as a transcript, reserve its estimate and queue the job.

    The upload is checked first (``upload_check``, with the studio's silence rule), and its
    name must end in one of ``MEDIA_TYPES``: the page plays it back with the type chosen from
    that extension. It is then stored by moving Django's temporary file into place (or
    copying it by chunks), never through memory.
    """
    name = os.path.basename(upload.name or "") or "the file"
    if os.path.splitext(name)[1].lower() not in MEDIA_TYPES:
        kinds = ", ".join(t.lstrip(".") for t in MEDIA_TYPES)
        raise UploadRefused(f"{name} is not a file Chorus transcribes: use {kinds}.")
    checked = upload_check(upload=upload, options=options, silence=True)
    seconds = checked.seconds
    filename = checked.filename[:255]  # the name judged above: it has a media extension
    title = (
        " ".join((title or "").split())[:200]
        or os.path.splitext(filename)[0][:200]
        or "Untitled recording"
    )
    engine = engine_for(workspace)
    transcript = Transcript(
        workspace=workspace,
        created_by=user,
        uid=uuid.uuid4().hex,
        title=title,
        filename=filename,
        content_type=media_content_type(filename),
        size_bytes=checked.size,
        duration_seconds=round(seconds, 3),
        options=checked.options.as_dict(),
        engine=engine.name,
    )
    unit = rate_for(workspace, "stt", MODEL_ID, engine.name).unit
    wait = job_waits(
        workspace=workspace,
        user=user,
        capability="stt",
        engine_name=engine.name,
        model_id=MODEL_ID,
        units=units_for(unit, seconds=seconds),
    )
    try:
        with transaction.atomic():
            # The upload itself, not a copy: storage moves a spooled upload into place.
            transcript.media.save(transcript.filename or "media", upload, save=False)
            transcript.save()
            job = job_start(
                waiting=wait is not None,
                workspace=workspace,
                kind="transcribe",
                created_by=user,
                params={"transcript": transcript.pk},
                subject_type="transcript",
                subject_id=transcript.pk,
                message="Waiting for a worker to transcribe",
                subject=transcript.title,
                inputs={
                    "file": transcript.filename,
                    "seconds": transcript.duration_seconds,
                    "language": transcript.options.get("language_code"),
                },
                result_url=reverse("transcripts:detail", args=[transcript.pk]),
            )
            job_reserve(
                caller=Caller(
                    workspace=workspace,
                    user=user,
                    source=UsageSource.UI,
                    purpose=("transcript", transcript.uid),
                ),
                engine_name=engine.name,
                capability="stt",
                model_id=MODEL_ID,
                units=units_for(unit, seconds=seconds),
                key=ledger_key(transcript),
                job=job,
                wait=wait,
            )
            transcript.job = job
            transcript.save(update_fields=["job"])
    except BudgetExceeded as exc:
        _remove_file(transcript)
        raise ActionRefused(str(exc)) from exc
    except BaseException:
        _remove_file(transcript)
        raise
    return transcript


def _remove_file(transcript: Transcript) -> None:
    if transcript.media.name:
        with contextlib.suppress(OSError):
            transcript.media.storage.delete(transcript.media.name)


def _request(transcript: Transcript, media) -> STTRequest:
    options = transcript.options or {}
    detect = ["all"] if options.get("detect_entities") else None
    redact = ["pii"] if options.get("redact_pii") else None
    return STTRequest(
        audio=media,
        filename=transcript.filename or "media",
        model_id=MODEL_ID,
        language_code=options.get("language_code"),
        tag_audio_events=bool(options.get("tag_audio_events", True)),
        num_speakers=options.get("num_speakers"),
        diarize=bool(options.get("diarize")),
        keyterms=list(options.get("keyterms") or []),
        no_verbatim=bool(options.get("no_verbatim")),
        entity_detection=detect,
        entity_redaction=redact,
    )


def transcribe_run(*, job, progress) -> dict:
    """Job runner: transcribe the upload with the engine, keep the words, settle the ledger."""
    transcript = Transcript.objects.filter(
        pk=job.params["transcript"], workspace=job.workspace
    ).first()
    if transcript is None:  # deleted meanwhile (its reservation was released then)
        return {"deleted": True}
    if transcript.status == TranscriptStatus.READY:
        return {"transcript": transcript.pk}  # an earlier run finished, then its worker died
    Transcript.objects.filter(pk=transcript.pk).update(status=TranscriptStatus.RUNNING, error="")
    workspace = transcript.workspace
    media = None
    try:
        progress(5, "Reading the recording")
        media = transcript.media.open("rb")  # the engine reads it as it goes, never whole
        request = _request(transcript, media)
        request.progress = lambda share: progress(
            10 + int(80 * min(max(share, 0.0), 1.0)), f"Transcribing ({int(share * 100)} %)"
        )
        words = []

        def keep(result, engine_name, event) -> None:
            words[:] = document.paragraphed(document.clean_words(result.words))
            Transcript.objects.filter(pk=transcript.pk).update(
                status=TranscriptStatus.READY,
                engine=engine_name,
                language_code=result.language_code or "",
                language_probability=result.language_probability,
                words=words,
                text=document.full_text(words),
                entities=[
                    {
                        "text": e.text,
                        "entity_type": e.entity_type,
                        "start_char": e.start_char,
                        "end_char": e.end_char,
                    }
                    for e in result.entities
                ],  # fmt: skip
                request_id=event.request_id,
                error="",
            )

        with errors_recorded(job):
            caller = Caller(
                workspace=workspace,
                user=transcript.created_by,
                source=UsageSource.UI,
                purpose=("transcript", transcript.uid),
            )
            _result, heard = transcribe_in_job(
                caller=caller,
                job=job,
                request=request,
                seconds=transcript.duration_seconds,
                ledger_key=ledger_key(transcript),
                keep=keep,
                progress=progress,
            )
    except TransientJobError as exc:
        if job.retries < settings.CHORUS_JOB_MAX_RETRIES:  # the job is tried again
            Transcript.objects.filter(pk=transcript.pk).update(
                status=TranscriptStatus.QUEUED, error=f"Trying again: {exc}"[:2000]
            )
        else:
            Transcript.objects.filter(pk=transcript.pk).update(
                status=TranscriptStatus.FAILED, error=str(exc)[:2000]
            )
        raise
    except BaseException as exc:
        Transcript.objects.filter(pk=transcript.pk).update(
            status=TranscriptStatus.FAILED, error=str(exc)[:2000] or type(exc).__name__
        )
        raise
    finally:
        if media is not None:
            media.close()
    return {"transcript": transcript.pk, "seconds": heard, "words": len(words)}


# --- Edits ---------------------------------------------------------------------------------


def _save_words(transcript: Transcript, words: list[dict], **more) -> Transcript:
    transcript.words = words
    transcript.text = document.full_text(words)
    transcript.edited_at = timezone.now()
    for name, value in more.items():
        setattr(transcript, name, value)
    transcript.save(update_fields=["words", "text", "edited_at", *more])
    return transcript


def _editable(transcript: Transcript) -> None:
    if transcript.status != TranscriptStatus.READY:
        raise ActionRefused("The transcript can be edited once it is ready.")


def _edit(transcript: Transcript, change) -> Transcript:
    _editable(transcript)
    try:
        with transaction.atomic():
            locked = Transcript.objects.select_for_update().get(pk=transcript.pk)
            return _save_words(locked, change(locked.words))
    except document.EditRefused as exc:
        raise ActionRefused(str(exc)) from exc


def paragraph_edit(*, transcript: Transcript, number: int, text: str) -> Transcript:
    return _edit(transcript, lambda words: document.edit_paragraph(words, number, text))


def paragraph_reassign(*, transcript: Transcript, number: int, speaker_id: str) -> Transcript:
    return _edit(transcript, lambda words: document.reassign_paragraph(words, number, speaker_id))


def paragraph_split(*, transcript: Transcript, number: int, at: int) -> Transcript:
    return _edit(transcript, lambda words: document.split_paragraph(words, number, at))


def paragraph_merge(*, transcript: Transcript, number: int) -> Transcript:
    return _edit(transcript, lambda words: document.merge_paragraph(words, number))


def speaker_rename(*, transcript: Transcript, speaker_id: str, name: str) -> Transcript:
    _editable(transcript)
    if speaker_id not in speaker_ids(transcript):
        raise ActionRefused("Choose one of the transcript's speakers.")
    try:
        speakers = document.rename_speaker(transcript.speakers or {}, speaker_id, name)
    except document.EditRefused as exc:
        raise ActionRefused(str(exc)) from exc
    transcript.speakers = speakers
    transcript.edited_at = timezone.now()
    transcript.save(update_fields=["speakers", "edited_at"])
    return transcript


def speaker_ids(transcript: Transcript) -> list[str]:
    seen = dict.fromkeys(w.get("speaker_id") for w in transcript.words if w.get("speaker_id"))
    return list(seen)


def transcript_delete(*, transcript: Transcript) -> None:
    """Delete it and its recording; a job still on it is cancelled and its credit released."""
    from apps.billing.services import meter_refund
    from apps.jobs.models import FINISHED

    if transcript.job is not None and transcript.job.status not in FINISHED:
        job_cancel(job=transcript.job)
    for event in UsageEvent.objects.filter(
        idempotency_key=ledger_key(transcript), status=UsageStatus.RESERVED
    ):
        meter_refund(event=event, note="the transcript was deleted before it was made")
    name = transcript.media.name
    storage = transcript.media.storage
    transcript.delete()
    if name:
        with contextlib.suppress(OSError):
            storage.delete(name)


def search(transcript: Transcript, query: str) -> set[int]:
    """Positions of the words that match ``query`` (every word of it, in order)."""
    needle = [t.lower() for t in (query or "").split() if t.strip()]
    if not needle:
        return set()
    words = transcript.words
    tokens = [w["text"].lower().strip(".,;:!?\"'()") for w in words]
    found: set[int] = set()
    for i in range(len(tokens) - len(needle) + 1):
        if all(needle[k].strip(".,;:!?\"'()") in tokens[i + k] for k in range(len(needle))):
            found.update(range(i, i + len(needle)))
    return found
