"""Metered calls made by background jobs, exact across the job's retries, and the failures
a job hands to whoever waits for it (``/v1`` rebuilds them as the API's errors).

A job's call reserves under an idempotency key derived from the job (``job_metered``): a retry
takes over the row an earlier run left open, settles what a lost run paid for without charging
again, and refunds only when the job fails for good.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.billing.rates import CAPABILITIES
from apps.billing.services import (
    BudgetExceeded,
    credits_for,
    job_threshold,
    meter_charge_late,
    meter_refund,
    metered,
    notify,
    rate_for,
)
from apps.engines.base import EngineError, RateLimited, UpstreamUnavailable
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import (
    TRANSIENT_ERRORS,
    JobNotWaiting,
    JobSuperseded,
    TransientJobError,
    job_refuse,
    job_release,
)
from apps.workspaces.models import Membership, Role

from .caller import Caller
from .errors import ApiRefused

# --- Errors a job hands to whoever waits for it ---------------------------------------------


def _error_record(exc: BaseException) -> dict | None:
    """A JSON description of a failure, enough to rebuild it (see ``job_error``)."""
    if isinstance(exc, BudgetExceeded):
        return {"type": "BudgetExceeded", "message": str(exc)}
    if isinstance(exc, EngineError):
        return {
            "type": type(exc).__name__,
            "message": exc.message,
            "fields": getattr(exc, "fields", None) or {},
            "status_code": exc.status_code,
            "code": exc.code,
            "retry_after": getattr(exc, "retry_after", None),
        }
    return None


def job_error(job: Job) -> dict | None:
    """How a failed music or dubbing job failed, as ``_error_record`` wrote it (or None)."""
    return (job.result or {}).get("error")


@contextmanager
def errors_recorded(job: Job):
    """Keep the reason of a failure on the job row, and retry what is temporary upstream.

    ``jobs`` fails a job with the exception's text only; the API needs its kind (a budget is
    429, bad input 400…), so it is written into ``job.result`` first.
    """
    try:
        yield
    except (RateLimited, UpstreamUnavailable) as exc:
        _record(job, exc)
        raise TransientJobError(exc.message) from exc
    except (BudgetExceeded, EngineError) as exc:
        _record(job, exc)
        raise


def _record(job: Job, exc: BaseException) -> None:
    record = _error_record(exc)
    if record is not None:
        Job.objects.filter(pk=job.pk, attempt=job.attempt).update(result={"error": record})


# --- Metering that survives retries --------------------------------------------------------


def _ledger_key(key: str, purpose: tuple[str, str]) -> str:
    """The idempotency key this run meters under: the job's open or paid row if it has one.

    A row still ``reserved`` belongs to a run that died (or to the request that started the
    job): this run takes it over and settles it. A ``settled`` row means the work was paid:
    this run redoes what was lost and charges nothing more. Only when every earlier row was
    refunded or released (nothing charged) does a retry reserve afresh, as ``key:<n>``.
    """
    rows = list(
        UsageEvent.objects.filter(purpose_type=purpose[0], purpose_id=str(purpose[1]))
        .order_by("id")
        .values_list("idempotency_key", "status")
    )
    for existing, status in reversed(rows):
        if status in (UsageStatus.RESERVED, UsageStatus.SETTLED):
            return existing
    return key if not rows else f"{key}:{len(rows) + 1}"


def _will_be_retried(job: Job, exc: BaseException) -> bool:
    if isinstance(exc, JobSuperseded):
        return True  # another run of this job owns the reservation now
    transient = isinstance(exc, (*TRANSIENT_ERRORS, RateLimited, UpstreamUnavailable))
    return transient and job.retries < settings.CHORUS_JOB_MAX_RETRIES


class _JobMeter:
    """The ``Meter`` of a job's call, whose ``settle`` also covers a reservation released
    while the job ran (see ``settle``)."""

    def __init__(self, meter, *, reserve: dict):
        self.meter, self.reserve = meter, reserve

    @property
    def event(self) -> UsageEvent:
        return self.meter.event

    @property
    def replayed(self) -> bool:
        return self.meter.replayed

    @property
    def settled(self) -> bool:
        return self.meter.settled

    def settle(self, *, units, info=None) -> UsageEvent:
        """Settle the reservation; when the reservation sweeper released it first (a job
        that ran longer than ``CHORUS_RESERVATION_TTL_SECONDS``), the call did happen, so it
        is charged on a row of its own (``…:late``). A budget spent meanwhile refuses that
        charge: the clip is kept all the same, and the released row stays flagged."""
        event = self.meter.settle(units=units, info=info)
        if event.status == UsageStatus.SETTLED:
            return event
        late = meter_charge_late(
            event=event,
            units=units,
            api_key_cap=self.reserve.get("api_key_cap"),
            upstream_credits=getattr(info, "character_cost", None),
            upstream_request_id=getattr(info, "request_id", None),
        )
        return late or event


@contextmanager
def job_metered(*, job: Job, key: str, purpose: tuple[str, str], **reserve):
    """``billing.metered`` for a job's billable call, exact across the job's retries.

    ``metered`` itself refunds only reservations it made in this run; a row taken over
    from an earlier run (``replayed``) is refunded here when the call fails for good, and
    kept open when the job will be retried (the retry settles it).
    """
    idempotency_key = _ledger_key(key, purpose)
    with metered(idempotency_key=idempotency_key, purpose=purpose, **reserve) as meter:
        try:
            yield _JobMeter(meter, reserve=reserve)
        except BaseException as exc:
            if meter.replayed and not meter.settled and not _will_be_retried(job, exc):
                meter_refund(event=meter.event, note=f"{exc.__class__.__name__}: {exc}"[:300])
            raise


def settled_with(meter, generation, *, units, info=None):
    """Settle a job's ``meter`` for the clip it kept; a charge made late, on a row of its own
    (``_JobMeter.settle``), becomes the clip's ledger row. Returns the charged row."""
    event = meter.settle(units=units, info=info)
    if event.pk != generation.usage_event_id:
        generation.usage_event, generation.request_id = event, event.request_id
        generation.save(update_fields=["usage_event", "request_id"])
    return event


def job_reserve(
    *,
    caller,
    engine_name: str,
    capability: str,
    units,
    key: str,
    model_id="",
    job: Job | None = None,
    wait: "Wait | None" = None,
):
    """Reserve a job's estimated units as the caller's, under the idempotency ``key`` the job
    will meter with (``job_metered`` takes the reservation over when the job runs). Made in
    the transaction that creates the job: ``BudgetExceeded`` refuses the job whole.

    A ``job`` created waiting (``wait``, from ``job_waits``) reserves nothing now: what to
    reserve is kept in its params for ``job_approve`` (a reservation would be swept long
    before a manager decides), and the managers are told. Returns None then.
    """
    from apps.billing.services import meter_reserve

    if job is not None and job.status == JobStatus.WAITING:
        _hold(
            job,
            wait=wait,
            caller=caller,
            reserve={
                "engine_name": engine_name,
                "capability": capability,
                "model_id": model_id,
                "units": str(units),
                "key": key,
            },
        )
        return None
    return meter_reserve(
        workspace=caller.workspace,
        user=caller.user,
        capability=capability,
        engine=engine_name,
        model_id=model_id,
        units=units,
        source=caller.source,
        idempotency_key=key,
        api_key_id=caller.key_id,
        api_key_cap=caller.key_cap,
        purpose=caller.purpose,
        project=caller.project,
    )


# --- Jobs that wait for a manager's approval -------------------------------------------------
#
# A member's job whose estimate is above its capability's threshold (the spend settings'
# ``job_thresholds``) is created waiting: nothing reserved, nothing queued. A manager approves
# it (its credits are reserved then, and it is queued) or refuses it with a reason; either way
# whoever asked is told. A manager's own jobs never wait; nor do free ones (the local engine).


@dataclass(frozen=True)
class Wait:
    """Why a job waits: its estimate and the threshold it is above."""

    credits: Decimal
    threshold: Decimal


def _managers(workspace):
    rows = Membership.objects.filter(workspace=workspace, role__in=[Role.OWNER, Role.MANAGER])
    return [row.user for row in rows.select_related("user")]


def _is_manager(workspace, user) -> bool:
    if user is None:
        return False
    return Membership.objects.filter(
        workspace=workspace, user=user, role__in=[Role.OWNER, Role.MANAGER]
    ).exists()


def capability_label(capability: str) -> str:
    return CAPABILITIES.get(capability, capability.replace("_", " ").capitalize())


def job_waits(
    *,
    workspace,
    user,
    capability: str,
    engine_name: str,
    units,
    model_id: str = "",
    source: str = UsageSource.UI,
) -> Wait | None:
    """Whether a job must wait for a manager: its ``Wait`` when the estimate (the rate
    ``job_reserve`` will charge × ``units``) is above the capability's threshold and the
    asker is no manager; else None (the job reserves and starts at once).

    ``/v1`` callers (source api) wait for their answer inline and have nobody to wait for
    approval: they are refused instead, with a 403 ``approval_required`` (``ApiRefused``).
    """
    threshold = job_threshold(workspace, capability)
    if threshold is None:
        return None
    credits = credits_for(rate_for(workspace, capability, model_id, engine_name), units)
    if credits <= threshold or _is_manager(workspace, user):
        return None
    if source == UsageSource.API:
        raise ApiRefused(
            403,
            "approval_required",
            f"This call needs about {credits:,.0f} credits; in this workspace "
            f"{capability_label(capability).lower()} jobs above {threshold:,.0f} credits need "
            "a manager's approval. Ask for it in the Chorus studio, where it waits for a "
            "manager, or ask a manager to raise the threshold.",
            kind="authorization_error",
        )
    return Wait(credits=credits, threshold=threshold)


def _hold(job: Job, *, wait: Wait | None, caller, reserve: dict) -> None:
    """Keep what ``job_approve`` will reserve, and tell the managers a job waits."""
    if wait is None:  # created waiting without a reason: estimate it the same way
        rate = rate_for(
            caller.workspace, reserve["capability"], reserve["model_id"], reserve["engine_name"]
        )
        credits = credits_for(rate, reserve["units"])
        wait = Wait(
            credits=credits,
            threshold=job_threshold(caller.workspace, reserve["capability"]) or Decimal(0),
        )
    job.params = {
        **job.params,
        "approval": {
            "credits": str(wait.credits),
            "threshold": str(wait.threshold),
            "capability": reserve["capability"],
            "reserve": {
                **reserve,
                "source": caller.source,
                "key_id": caller.key_id,
                "key_cap": None if caller.key_cap is None else str(caller.key_cap),
                "purpose": list(caller.purpose) if caller.purpose else None,
                "project": caller.project,
            },
        },
    }
    Job.objects.filter(pk=job.pk).update(params=job.params)
    who = getattr(caller.user, "display_name", "") or "A member"
    notify(
        workspace=caller.workspace,
        users=_managers(caller.workspace),
        text=f"{who} asks for {job.title} (about {wait.credits:,.0f} credits, above the "
        f"{capability_label(reserve['capability']).lower()} threshold of "
        f"{wait.threshold:,.0f}): it waits for your approval.",
        url=reverse("projects:approvals"),
    )


def _reserve_held(job: Job) -> None:
    held = job.approval.get("reserve") or {}
    purpose = held.get("purpose")
    cap = held.get("key_cap")
    job_reserve(
        caller=Caller(
            workspace=job.workspace,
            user=job.created_by,
            source=held.get("source") or UsageSource.UI,
            key_id=held.get("key_id"),
            key_cap=None if cap in (None, "") else Decimal(cap),
            purpose=tuple(purpose) if purpose else None,
            project=held.get("project") or "",
        ),
        engine_name=held["engine_name"],
        capability=held["capability"],
        model_id=held.get("model_id") or "",
        units=Decimal(held["units"]),
        key=held["key"],
    )


def _tell_requester(job: Job, text: str) -> None:
    notify(
        workspace=job.workspace,
        users=[job.created_by],
        text=text,
        url=reverse("jobs:detail", args=[job.pk]),
    )


def job_approve(*, job: Job, by) -> Job:
    """A manager approves a waiting job: its credits are reserved now, then it is queued.

    A budget spent since it was asked for refuses it instead: the job is cancelled with the
    budget's message (``job.status`` says which happened). ``JobNotWaiting`` when it was
    decided already. Whoever asked is told either way.
    """
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",))
            .select_related("workspace", "created_by")
            .get(pk=job.pk)
        )
        if job.status != JobStatus.WAITING:
            raise JobNotWaiting(
                f"This job no longer waits for approval (it is {job.get_status_display().lower()})."
            )
        try:
            with transaction.atomic():
                _reserve_held(job)
        except BudgetExceeded as exc:
            job = job_refuse(job=job, reason=f"Approved, but {exc}", by=by)
            _tell_requester(job, f"{job.title} could not start: {exc}")
            return job
        job = job_release(job=job, by=by)
        who = getattr(by, "display_name", "") or "A manager"
        _tell_requester(job, f"{who} approved {job.title}: it runs now.")
    return job


def job_decline(*, job: Job, by, reason: str) -> Job:
    """A manager refuses a waiting job with a reason (``ValueError`` without one); whoever
    asked is told why. ``JobNotWaiting`` when it was decided already."""
    with transaction.atomic():
        job = job_refuse(job=job, reason=reason, by=by)
        who = getattr(by, "display_name", "") or "A manager"
        _tell_requester(job, f"{who} refused {job.title}: {job.approval.get('reason')}")
    return job


def jobs_waiting(workspace):
    """The workspace's jobs waiting for a manager's approval, oldest first."""
    return (
        Job.objects.filter(workspace=workspace, status=JobStatus.WAITING)
        .select_related("created_by")
        .order_by("created_at", "id")
    )
