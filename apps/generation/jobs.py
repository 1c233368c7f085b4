"""Metered calls made by background jobs, exact across the job's retries, and the failures
a job hands to whoever waits for it (``/v1`` rebuilds them as the API's errors).

A job's call reserves under an idempotency key derived from the job (``job_metered``): a retry
takes over the row an earlier run left open, settles what a lost run paid for without charging
again, and refunds only when the job fails for good.
"""

from contextlib import contextmanager

from django.conf import settings

from apps.billing.models import UsageEvent, UsageStatus
from apps.billing.services import BudgetExceeded, meter_charge_late, meter_refund, metered
from apps.engines.base import EngineError, RateLimited, UpstreamUnavailable
from apps.jobs.models import Job
from apps.jobs.services import TRANSIENT_ERRORS, JobSuperseded, TransientJobError

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


def job_reserve(*, caller, engine_name: str, capability: str, units, key: str, model_id=""):
    """Reserve a job's estimated units as the caller's, under the idempotency ``key`` the job
    will meter with (``job_metered`` takes the reservation over when the job runs). Made in
    the transaction that creates the job: ``BudgetExceeded`` refuses the job whole."""
    from apps.billing.services import meter_reserve

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
