"""Starting, running, reporting, cancelling, retrying and sweeping background jobs."""

import logging
import uuid
from datetime import timedelta

from asgiref.sync import async_to_sync
from celery import current_app
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone
from django.utils.module_loading import import_string

from .models import Job, JobStatus

# Sent (inside the refusal's transaction) when a waiting job is refused, by a manager or by a
# budget spent since it was asked for: the app whose row the job works on marks it (a
# transcript that would otherwise wait forever). ``job``: the refused job.
job_refused = Signal()

JOB_TASK = "jobs.run"  # the one task that runs every kind of job (``tasks.job_run``)

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a running job when someone cancelled it; the runner just stops."""


class TransientJobError(Exception):
    """A failure worth retrying later (an upstream that is busy or briefly unreachable)."""


class JobSuperseded(Exception):
    """This run of the job is no longer the current attempt (a retry or the sweeper took over)."""


# Errors that a job is retried for automatically, with backoff.
TRANSIENT_ERRORS = (TransientJobError, ConnectionError, TimeoutError)


def job_runner(kind: str):
    """The function that does the work of ``kind`` (from ``settings.CHORUS_JOB_KINDS``)."""
    try:
        return import_string(settings.CHORUS_JOB_KINDS[kind])
    except KeyError as exc:
        raise ValueError(f"Unknown job kind {kind!r}.") from exc


def job_push(job: Job) -> None:
    """Send the job's state to browsers watching it. Best effort: the row is the truth."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            job.group_name, {"type": "job.update", "job": job.as_event()}
        )
    except Exception:  # a push that fails must never fail the job itself
        log.warning("could not push progress of job %s", job.pk, exc_info=True)


def _enqueue(job: Job) -> None:
    """Send the job's task; if the broker cannot take it, the job fails with the reason."""
    try:
        # By name: the task (``tasks.job_run``) calls these services, not the other way.
        current_app.send_task(JOB_TASK, args=[job.pk, job.attempt], task_id=job.celery_task_id)
    except Exception as exc:
        log.exception("could not enqueue job %s", job.pk)
        now = timezone.now()
        Job.objects.filter(pk=job.pk, attempt=job.attempt, status=JobStatus.QUEUED).update(
            status=JobStatus.FAILED,
            finished_at=now,
            updated_at=now,
            message="Failed",
            error=f"The job could not be queued (the broker did not answer: "
            f"{exc.__class__.__name__}). Retry it once the studio is healthy again.",
        )


@transaction.atomic
def job_start(
    *,
    workspace,
    kind: str,
    created_by=None,
    params: dict | None = None,
    subject_type: str = "",
    subject_id: str = "",
    message: str = "Waiting for a worker",
    subject: str = "",
    inputs: dict | None = None,
    result_url: str = "",
    waiting: bool = False,
) -> Job:
    """Create the job row and enqueue it once the surrounding transaction commits.

    ``waiting``: the job waits for a manager's approval instead (status ``waiting``, nothing
    enqueued); ``job_release`` queues it, ``job_refuse`` cancels it.

    ``subject`` names what the job is about in people's words ("Interview with Ana"),
    ``inputs`` what it was given (``file``, ``seconds``, ``language``, ``target_language``,
    ``prompt``) and ``result_url`` the page where what it makes will be: the Jobs pages and
    Home show jobs by them, and link a finished job to its result.
    """
    job_runner(kind)  # unknown kinds fail here, in the request, not later in a worker
    job = Job.objects.create(
        subject=" ".join((subject or "").split())[:200],
        inputs={k: v for k, v in (inputs or {}).items() if v not in (None, "")},
        result_url=result_url[:300],
        workspace=workspace,
        created_by=created_by,
        kind=kind,
        params=params or {},
        subject_type=subject_type,
        subject_id=str(subject_id),
        status=JobStatus.WAITING if waiting else JobStatus.QUEUED,
        message=WAITING_MESSAGE if waiting else message,
        celery_task_id=str(uuid.uuid4()),
    )
    if not waiting:
        transaction.on_commit(lambda: _enqueue(job))
    return job


WAITING_MESSAGE = "Waiting for a manager's approval"


class JobNotWaiting(ValueError):
    """The job was decided already (approved, refused, withdrawn): nothing to decide."""


def _decided(job: Job, *, by, decision: str, reason: str = "") -> dict:
    return {
        **job.params,
        "approval": {
            **job.approval,
            "decision": decision,
            "reason": reason,
            "decided_by": getattr(by, "pk", None),
            "decided_at": timezone.now().isoformat(),
        },
    }


def _waiting_locked(job: Job) -> Job:
    locked = Job.objects.select_for_update().filter(pk=job.pk).first()
    if locked is None or locked.status != JobStatus.WAITING:
        state = "gone" if locked is None else locked.get_status_display().lower()
        raise JobNotWaiting(f"This job no longer waits for approval (it is {state}).")
    return locked


def job_release(*, job: Job, by=None) -> Job:
    """A waiting job approved: queued now, enqueued once the transaction commits.

    Whoever approves reserves its credits first, in the same transaction (see
    ``generation.jobs.job_approve``). ``JobNotWaiting`` when it was decided already.
    """
    with transaction.atomic():
        job = _waiting_locked(job)
        job.params = _decided(job, by=by, decision="approved")
        job.status = JobStatus.QUEUED
        job.message = "Waiting for a worker"
        job.save(update_fields=["params", "status", "message", "updated_at"])
        transaction.on_commit(lambda: _enqueue(job))
    job_push(job)
    return job


def job_refuse(*, job: Job, reason: str, by=None) -> Job:
    """A waiting job refused: cancelled, the reason as its message (what the member reads).
    ``JobNotWaiting`` when it was decided already; a refused job cannot be retried."""
    reason = " ".join((reason or "").split())
    if not reason:
        raise ValueError("Reason: say why the job is refused; the member reads it.")
    with transaction.atomic():
        job = _waiting_locked(job)
        now = timezone.now()
        job.params = _decided(job, by=by, decision="refused", reason=reason[:500])
        job.status = JobStatus.CANCELLED
        job.message = f"Refused: {reason}"[:300]
        job.finished_at = now
        job.save(update_fields=["params", "status", "message", "finished_at", "updated_at"])
        job_refused.send(sender=Job, job=job)
    job_push(job)
    return job


def job_claim(*, job_id: int, attempt: int) -> Job | None:
    """Mark a queued job running for this attempt; None when it is gone, finished or superseded."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, attempt=attempt, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=now, heartbeat_at=now, message="Started"
    )
    if not claimed:
        return None
    job = Job.objects.select_related("workspace", "created_by").get(pk=job_id)
    job_push(job)
    return job


def _current(job_id: int, attempt: int):
    return Job.objects.filter(pk=job_id, attempt=attempt, status=JobStatus.RUNNING)


def job_progress(*, job: Job, percent: int, message: str = "") -> None:
    """Record progress of a running job (0–100) and push it; raises if it was cancelled."""
    percent = max(0, min(100, int(percent)))
    now = timezone.now()
    updated = _current(job.pk, job.attempt).update(
        progress=percent, message=message[:300], heartbeat_at=now, updated_at=now
    )
    if not updated:
        state = Job.objects.filter(pk=job.pk).values_list("status", "attempt").first()
        if state and state[0] == JobStatus.CANCELLED and state[1] == job.attempt:
            raise JobCancelled()
        raise JobSuperseded()
    job.progress, job.message = percent, message[:300]
    job_push(job)


def job_heartbeat(*, job: Job) -> bool:
    """Tell the sweeper this run is alive; False once it is no longer the current run."""
    return bool(_current(job.pk, job.attempt).update(heartbeat_at=timezone.now()))


def _finish(job: Job, *, status: str, **fields) -> bool:
    now = timezone.now()
    updated = _current(job.pk, job.attempt).update(
        status=status, finished_at=now, heartbeat_at=now, updated_at=now, **fields
    )
    if updated:
        job.refresh_from_db()
        job_push(job)
    return bool(updated)


def job_succeed(*, job: Job, result: dict) -> bool:
    return _finish(
        job, status=JobStatus.SUCCEEDED, progress=100, message="Done", result=result or {}
    )


def job_fail(*, job: Job, error: str) -> bool:
    return _finish(job, status=JobStatus.FAILED, error=error[:5000], message="Failed")


def job_requeue_for_retry(*, job: Job, error: str, delay: float) -> bool:
    """Put a running job back in the queue after a transient error (the task re-sends it)."""
    updated = _current(job.pk, job.attempt).update(
        status=JobStatus.QUEUED,
        retries=job.retries + 1,
        message=f"Retrying in {delay:.0f} s after a temporary error: {error}"[:300],
        updated_at=timezone.now(),
    )
    if updated:
        job.refresh_from_db()
        job_push(job)
    return bool(updated)


def job_cancel(*, job: Job) -> Job:
    """Stop a waiting, queued or running job. A running job stops at its next progress
    report; a waiting one is withdrawn (it never reserved anything)."""
    now = timezone.now()
    updated = Job.objects.filter(
        pk=job.pk, status__in=[JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING]
    ).update(status=JobStatus.CANCELLED, finished_at=now, message="Cancelled", updated_at=now)
    job.refresh_from_db()
    if updated:
        job_push(job)
    return job


def job_retry(*, job: Job) -> Job:
    """Start a failed or cancelled job again, as a new attempt."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if not job.can_retry:
            if job.approval and job.approval.get("decision") != "approved":
                raise ValueError(
                    "No manager approved this job, so it cannot be retried: ask for it again."
                )
            raise ValueError(f"A {job.get_status_display().lower()} job cannot be retried.")
        job.attempt += 1
        job.retries = 0
        job.status = JobStatus.QUEUED
        job.progress = 0
        job.message = "Waiting for a worker"
        job.error = ""
        job.result = {}
        job.started_at = job.finished_at = job.heartbeat_at = None
        job.celery_task_id = str(uuid.uuid4())
        job.save()
        transaction.on_commit(lambda: _enqueue(job))
    job_push(job)
    return job


def job_sweep_stale(*, now=None) -> int:
    """Fail running jobs whose worker stopped sending heartbeats (it died or was killed).

    Waiting jobs are never touched: they wait for a person, however long."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.CHORUS_JOB_STALE_SECONDS)
    stale = list(Job.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=cutoff))
    count = 0
    for job in stale:
        updated = Job.objects.filter(
            pk=job.pk, attempt=job.attempt, status=JobStatus.RUNNING, heartbeat_at__lt=cutoff
        ).update(
            status=JobStatus.FAILED,
            finished_at=now,
            updated_at=now,
            message="Failed",
            error=(
                "The worker running this job stopped responding (it was restarted or "
                "crashed). Nothing was lost: retry the job to run it again."
            ),
        )
        if updated:
            count += 1
            job.refresh_from_db()
            job_push(job)
            log.warning("job %s failed by the sweeper: no heartbeat since %s", job.pk, cutoff)
            if job.kind in settings.CHORUS_JOB_RESUME_KINDS and (
                job.attempt <= settings.CHORUS_JOB_MAX_RETRIES
            ):
                # Jobs started through the API have nobody to press Retry: run them again.
                job_retry(job=job)
                log.warning("job %s (%s) re-queued as attempt %s", job.pk, job.kind, job.attempt)
    return count
