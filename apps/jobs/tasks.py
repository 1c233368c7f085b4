"""Celery tasks: the one task that runs every kind of job, and the stale-job sweeper."""

import logging
import random
import threading

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections, connection

from . import services

log = logging.getLogger(__name__)


class _Heartbeat(threading.Thread):
    """Writes the job's heartbeat while a long step runs without reporting progress."""

    def __init__(self, job):
        super().__init__(daemon=True, name=f"job-{job.pk}-heartbeat")
        self.job = job
        self.stopped = threading.Event()

    def run(self):
        try:
            while not self.stopped.wait(settings.CHORUS_JOB_HEARTBEAT_SECONDS):
                try:
                    if not services.job_heartbeat(job=self.job):
                        return  # cancelled or superseded: nothing left to keep alive
                except Exception:  # one failed write (e.g. a locked SQLite) is not fatal
                    log.warning("heartbeat of job %s failed", self.job.pk, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()


class JobTask(Task):
    """Base class of job tasks: late acks, so a job's message is not lost with its worker."""

    acks_late = True
    reject_on_worker_lost = False  # a dead worker's job is failed by the sweeper, then retried
    ignore_result = True

    def run_job(self, job_id: int, attempt: int) -> None:
        job = services.job_claim(job_id=job_id, attempt=attempt)
        if job is None:
            log.info(
                "job %s attempt %s: nothing to run (gone, finished or superseded)", job_id, attempt
            )
            return
        heartbeat = _Heartbeat(job)
        heartbeat.start()

        def progress(percent: int, message: str = "") -> None:
            services.job_progress(job=job, percent=percent, message=message)

        try:
            result = services.job_runner(job.kind)(job=job, progress=progress)
        except (services.JobCancelled, services.JobSuperseded):
            log.info("job %s stopped: cancelled or superseded", job.pk)
        except services.TRANSIENT_ERRORS as exc:
            if job.retries < settings.CHORUS_JOB_MAX_RETRIES:
                # Exponential backoff with full jitter.
                cap = settings.CHORUS_JOB_RETRY_BASE_SECONDS * (2**job.retries)
                delay = random.uniform(cap / 2, cap)
                if services.job_requeue_for_retry(job=job, error=str(exc), delay=delay):
                    raise self.retry(
                        args=[job.pk, attempt], countdown=delay, max_retries=None
                    ) from exc
            else:
                services.job_fail(
                    job=job,
                    error=f"Gave up after {job.retries + 1} tries. Last error: {exc}",
                )
        except SoftTimeLimitExceeded:
            services.job_fail(job=job, error="The job took longer than the time limit allowed.")
        except Exception as exc:
            log.exception("job %s (%s) failed", job.pk, job.kind)
            services.job_fail(job=job, error=str(exc) or exc.__class__.__name__)
        else:
            services.job_succeed(job=job, result=result or {})
        finally:
            heartbeat.stopped.set()
            heartbeat.join(timeout=5)


@shared_task(bind=True, base=JobTask, name=services.JOB_TASK)
def job_run(self, job_id: int, attempt: int) -> None:
    """Run one attempt of a job (any kind) and record how it ended."""
    self.run_job(job_id, attempt)


@shared_task(name="jobs.sweep_stale", ignore_result=True)
def job_sweep_stale() -> int:
    """Periodic: fail jobs whose worker died so they do not stay "running" forever."""
    return services.job_sweep_stale()
