"""Music and dubbing for a ``Caller`` that waits for the answer (``/v1``): jobs, awaited.

Music runs as a job the request waits for (``job_wait``): a job that outlives
``CHORUS_API_JOB_WAIT_SECONDS`` is answered with a 504 naming the job and the history id its
clip will have, and keeps running. The official SDK retries a 5xx with the same request: a
repeat of a request whose wait ran out rejoins that job instead of paying for a second one.
"""

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.billing.models import UsageEvent
from apps.billing.services import BudgetExceeded
from apps.engines.base import (
    AuthenticationFailed,
    EngineError,
    InvalidRequest,
    NotSupported,
    QuotaExceeded,
    RateLimited,
    UpstreamUnavailable,
)
from apps.generation.caller import Caller
from apps.generation.errors import ApiRefused, engine_errors_as_api
from apps.generation.jobs import job_error
from apps.history.models import Generation
from apps.jobs.models import Job, JobStatus

from . import services as projects
from .models import Dubbing, DubbingStatus

WAIT_INTERVAL_SECONDS = 0.2
REJOIN_WINDOW = timedelta(hours=6)  # how long an abandoned music job can still be collected
RETRY_AFTER_SECONDS = 5  # what a 504 for a job still running asks the client to wait


def _quota(exc: BudgetExceeded) -> ApiRefused:
    return ApiRefused(429, "quota_exceeded", str(exc), kind="rate_limit_error")


def job_wait(job: Job, *, timeout: float) -> Job:
    """Poll the job's row until it finishes or ``timeout`` seconds pass; the row is the truth."""
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db(fields=["status", "result", "error", "progress", "message"])
        left = deadline - time.monotonic()
        if job.is_finished or left <= 0:
            return job
        time.sleep(min(WAIT_INTERVAL_SECONDS, left))


def _rebuilt(record: dict) -> Exception:
    """The failure a job recorded (``generation.jobs.job_error``), as the exception it was."""
    message = record.get("message") or "The engine failed."
    if record.get("type") == "BudgetExceeded":
        return ApiRefused(429, "quota_exceeded", message, kind="rate_limit_error")
    classes = (
        InvalidRequest,
        NotSupported,
        AuthenticationFailed,
        QuotaExceeded,
        UpstreamUnavailable,
    )
    by_name = {cls.__name__: cls for cls in classes}
    kind = record.get("type")
    if kind == "InvalidRequest":
        return InvalidRequest(message, fields=record.get("fields") or {})
    if kind == "RateLimited":
        return RateLimited(message, retry_after=record.get("retry_after"))
    if kind in by_name:
        return by_name[kind](message)
    exc = EngineError(message)
    exc.status_code = int(record.get("status_code") or 500)
    exc.code = record.get("code") or "engine_error"
    return exc


def raise_job_failure(job: Job, *, request_id: str | None) -> None:
    """Raise what a failed or cancelled job means for the request that waited for it."""
    if job.status == JobStatus.CANCELLED:
        raise ApiRefused(
            400,
            "generation_cancelled",
            f"Job {job.pk} was cancelled before it finished; nothing was charged for it.",
            request_id=request_id,
        )
    record = job_error(job)
    if record is None:
        raise ApiRefused(
            500,
            "generation_failed",
            f"Job {job.pk} failed: {job.error or 'no reason was given'}",
            kind="internal_error",
            request_id=request_id,
        )
    exc = _rebuilt(record)
    if isinstance(exc, ApiRefused):
        exc.request_id = request_id
        raise exc
    with engine_errors_as_api(request_id=request_id):
        raise exc


# --- Music ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MusicInput:
    """A compose request as the client sent it (validated by the view)."""

    prompt: str
    music_length_ms: int | None = None
    model_id: str = "music_v1"
    seed: int | None = None
    force_instrumental: bool = False
    output_format: str = "auto"


class JobStillRunning(ApiRefused):
    """504: the wait ran out; the job goes on and its clip will be ``history_item_id``."""

    def __init__(self, job: Job, *, request_id: str | None):
        history_item_id = job.params.get("history_item_id")
        super().__init__(
            504,
            "generation_timeout",
            f"The music is still being composed (job {job.pk}, {job.progress}% done). It "
            f"keeps running and is charged once: send the same request again to collect it, "
            f"or fetch /v1/history/{history_item_id}/audio once it is done.",
            kind="service_unavailable",
            request_id=request_id,
            retry_after=RETRY_AFTER_SECONDS,
        )
        self.job_id = job.pk
        self.history_item_id = history_item_id


def _fingerprint(caller: Caller, music: MusicInput) -> str:
    raw = json.dumps({"key": caller.key_id, **asdict(music)}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


def _abandoned_job(caller: Caller, fingerprint: str) -> Job | None:
    """The same key's identical request whose wait ran out, not yet collected."""
    return (
        Job.objects.filter(
            workspace=caller.workspace,
            kind="music",
            created_by=caller.user,
            params__fingerprint=fingerprint,
            params__abandoned=True,
            params__delivered=False,
            created_at__gte=timezone.now() - REJOIN_WINDOW,
        )
        .exclude(status__in=[JobStatus.FAILED, JobStatus.CANCELLED])
        .order_by("-id")
        .first()
    )


def _mark(job: Job, **flags) -> None:
    job.params = {**job.params, **flags}
    Job.objects.filter(pk=job.pk).update(params=job.params)


def _job_request_id(job: Job) -> str | None:
    return (
        UsageEvent.objects.filter(purpose_type="job", purpose_id=str(job.pk))
        .order_by("-id")
        .values_list("request_id", flat=True)
        .first()
    )


def music_compose(*, caller: Caller, music: MusicInput) -> Generation:
    """Compose as the caller (a job, metered with source api) and wait for the clip.

    Refusals: 429 ``quota_exceeded`` before any job exists; the engine's errors as the API
    reports them; 504 (``JobStillRunning``) when the wait runs out.
    """
    fingerprint = _fingerprint(caller, music)
    job = _abandoned_job(caller, fingerprint)
    if job is None:
        try:
            with engine_errors_as_api():
                job = projects.music_start(
                    workspace=caller.workspace,
                    user=caller.user,
                    prompt=music.prompt,
                    music_length_ms=music.music_length_ms,
                    model_id=music.model_id,
                    seed=music.seed,
                    force_instrumental=music.force_instrumental,
                    output_format=music.output_format,
                    source=caller.source,
                    api_key_id=caller.key_id,
                    api_key_cap=caller.key_cap,
                    extra_params={
                        "fingerprint": fingerprint,
                        "abandoned": False,
                        "delivered": False,
                    },
                )
        except BudgetExceeded as exc:
            raise _quota(exc) from exc
    job = job_wait(job, timeout=settings.CHORUS_API_JOB_WAIT_SECONDS)
    request_id = _job_request_id(job)
    if not job.is_finished:
        _mark(job, abandoned=True)
        raise JobStillRunning(job, request_id=request_id)
    if job.status != JobStatus.SUCCEEDED:
        raise_job_failure(job, request_id=request_id)
    generation = Generation.objects.filter(history_item_id=job.result.get("history_item_id"))
    generation = generation.select_related("usage_event").first()
    if generation is None:
        raise ApiRefused(
            404,
            "history_item_not_found",
            f"The music of job {job.pk} was deleted from the history before it was sent.",
            kind="not_found",
            request_id=request_id,
        )
    _mark(job, delivered=True)
    return generation


# --- Dubbing -------------------------------------------------------------------------------

MAX_DUB_UPLOAD_BYTES = 1024**3  # 1 GiB: longer media would not fit a dub's time limit anyway


@dataclass(frozen=True)
class DubbingInput:
    media: bytes
    filename: str
    content_type: str
    target_lang: str
    source_lang: str = "auto"
    num_speakers: int = 0
    name: str | None = None


def dubbing_start(*, caller: Caller, dub: DubbingInput) -> Dubbing:
    """Start a dub as the caller: the upload is read, kept, metered, queued."""
    try:
        with engine_errors_as_api():
            return projects.dubbing_create(
                workspace=caller.workspace,
                user=caller.user,
                media=dub.media,
                filename=dub.filename,
                content_type=dub.content_type,
                target_lang=dub.target_lang,
                source_lang=dub.source_lang,
                num_speakers=dub.num_speakers,
                name=dub.name,
                source=caller.source,
                api_key_id=caller.key_id,
                api_key_cap=caller.key_cap,
            )
    except BudgetExceeded as exc:
        raise _quota(exc) from exc


def dubbing_request_id(dub: Dubbing) -> str | None:
    """The ledger's request id of a dub (what ``request-id`` tells the caller)."""
    return (
        UsageEvent.objects.filter(purpose_type="dubbing", purpose_id=dub.dubbing_id)
        .order_by("-id")
        .values_list("request_id", flat=True)
        .first()
    )


def _not_found(dubbing_id: str) -> ApiRefused:
    return ApiRefused(
        404, "dubbing_not_found", f"There is no dub {dubbing_id!r}.", kind="not_found"
    )


def dubbing_of(*, caller: Caller, dubbing_id: str) -> Dubbing:
    """One dub of the key's workspace (another workspace's is a 404, like a missing one)."""
    dub = projects.dubbings_visible(workspace=caller.workspace).filter(dubbing_id=dubbing_id)
    found = dub.first()
    if found is None:
        raise _not_found(dubbing_id)
    return found


def dubbing_page(*, caller: Caller, **filters) -> projects.DubbingPage:
    try:
        return projects.dubbing_page(workspace=caller.workspace, user=caller.user, **filters)
    except projects.DubbingCursorUnknown as exc:
        raise ApiRefused(400, "invalid_cursor", str(exc), param="cursor") from exc


def dubbing_remove(*, caller: Caller, dubbing_id: str) -> None:
    dub = dubbing_of(caller=caller, dubbing_id=dubbing_id)
    if not projects.dubbing_can_delete(dubbing=dub, user=caller.user, membership=caller.membership):
        raise ApiRefused(
            403,
            "permission_denied",
            "Only whoever started this dub, or a manager, can delete it.",
            kind="authorization_error",
        )
    projects.dubbing_delete(dubbing=dub)


def _dubbed(caller: Caller, dubbing_id: str, language_code: str) -> Dubbing:
    """A finished dub with a track in ``language_code``; else 404 or 425 (not done yet)."""
    dub = dubbing_of(caller=caller, dubbing_id=dubbing_id)
    status = dub.status
    if status == DubbingStatus.DUBBING:
        raise ApiRefused(425, "dubbing_not_dubbed", "Dubbing has not finished yet.")
    if status == DubbingStatus.FAILED:
        raise ApiRefused(404, "dubbing_failed", f"This dub failed: {dub.error}", kind="not_found")
    wanted = language_code.lower().split("-")[0]
    if wanted != dub.target_lang.lower().split("-")[0]:
        raise ApiRefused(
            404,
            "dubbing_not_found",
            f"There is no dubbing for language {language_code}.",
            kind="not_found",
        )
    return dub


def dubbing_audio(*, caller: Caller, dubbing_id: str, language_code: str) -> Generation:
    dub = _dubbed(caller, dubbing_id, language_code)
    if dub.generation is None:
        raise ApiRefused(
            404,
            "dubbing_not_found",
            "The dubbed audio was deleted from the history.",
            kind="not_found",
        )
    return dub.generation


def dubbing_transcript(
    *, caller: Caller, dubbing_id: str, language_code: str, format_type: str
) -> str | dict:
    """The dub's transcript: SRT or WebVTT text, or ElevenLabs' JSON utterances."""
    if language_code == "source":
        raise ApiRefused(
            404,
            "transcript_not_found",
            "Chorus keeps the transcript of the dubbed language only; ask for it by its code.",
            kind="not_found",
        )
    dub = _dubbed(caller, dubbing_id, language_code)
    if format_type == "webvtt":
        return dub.transcript_webvtt
    if format_type == "json":
        return {
            "language": dub.target_lang,
            "utterances": projects.transcript_utterances(dub.transcript_srt),
        }
    return dub.transcript_srt
