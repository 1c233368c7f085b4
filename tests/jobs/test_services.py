"""Job services: claiming, progress, finishing, cancel, retry and the stale-job sweeper."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.jobs import services
from apps.jobs.models import Job, JobStatus
from apps.jobs.tasks import job_run


@pytest.fixture
def job(workspace, owner):
    return Job.objects.create(
        workspace=workspace, kind="test_sleep", created_by=owner, params={"steps": 2}
    )


def test_starting_an_unknown_kind_fails_in_the_request(workspace):
    with pytest.raises(ValueError, match="Unknown job kind"):
        services.job_start(workspace=workspace, kind="nope")
    assert not Job.objects.exists()


def test_a_job_is_enqueued_only_when_its_transaction_commits(
    workspace, owner, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(services, "_enqueue", lambda job: sent.append(job.pk))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = services.job_start(workspace=workspace, kind="workspace_export", created_by=owner)
    assert sent == [] and len(callbacks) == 1
    callbacks[0]()
    assert sent == [job.pk]
    assert job.status == JobStatus.QUEUED and job.celery_task_id


def test_claim_progress_and_success(job):
    claimed = services.job_claim(job_id=job.pk, attempt=1)
    assert claimed.status == JobStatus.RUNNING and claimed.started_at
    services.job_progress(job=claimed, percent=140, message="x" * 400)
    job.refresh_from_db()
    assert job.progress == 100 and len(job.message) == 300
    assert services.job_succeed(job=claimed, result={"ok": True})
    job.refresh_from_db()
    assert (job.status, job.result, job.progress) == (JobStatus.SUCCEEDED, {"ok": True}, 100)
    assert job.is_finished and job.finished_at


def test_a_job_is_claimed_once(job):
    assert services.job_claim(job_id=job.pk, attempt=1)
    assert services.job_claim(job_id=job.pk, attempt=1) is None
    assert services.job_claim(job_id=job.pk, attempt=2) is None  # not the current attempt
    assert services.job_claim(job_id=987654, attempt=1) is None  # gone


def test_cancel_stops_a_running_job_at_its_next_report(job):
    running = services.job_claim(job_id=job.pk, attempt=1)
    services.job_cancel(job=job)
    with pytest.raises(services.JobCancelled):
        services.job_progress(job=running, percent=50)
    assert not services.job_succeed(job=running, result={})
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


def test_a_cancelled_queued_job_never_runs(job):
    services.job_cancel(job=job)
    job_run(job.pk, 1)  # the task, called in-process: it finds nothing to run
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.started_at is None


def test_the_task_records_success_and_failure(workspace, owner):
    good = Job.objects.create(
        workspace=workspace, kind="test_sleep", params={"steps": 2, "step_seconds": 0}
    )
    bad = Job.objects.create(workspace=workspace, kind="test_broken")
    job_run(good.pk, 1)
    job_run(bad.pk, 1)
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.status, good.result) == (JobStatus.SUCCEEDED, {"steps": 2})
    assert bad.status == JobStatus.FAILED
    assert bad.error == "the input file is corrupt"


def test_retry_makes_a_new_attempt(job, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(services, "_enqueue", lambda job: None)
    with pytest.raises(ValueError):
        services.job_retry(job=job)  # queued jobs cannot be retried
    running = services.job_claim(job_id=job.pk, attempt=1)
    services.job_fail(job=running, error="boom")
    with django_capture_on_commit_callbacks(execute=True):
        retried = services.job_retry(job=job)
    assert (retried.attempt, retried.status, retried.error, retried.progress) == (
        2,
        JobStatus.QUEUED,
        "",
        0,
    )
    assert retried.celery_task_id != running.celery_task_id
    # The first attempt's late reports no longer count.
    with pytest.raises(services.JobSuperseded):
        services.job_progress(job=running, percent=80)
    assert not services.job_succeed(job=running, result={})


def test_the_sweeper_fails_only_stale_running_jobs(workspace, settings):
    settings.CHORUS_JOB_STALE_SECONDS = 60
    old = timezone.now() - timedelta(seconds=120)
    stale = Job.objects.create(
        workspace=workspace, kind="test_sleep", status=JobStatus.RUNNING, heartbeat_at=old
    )
    fresh = Job.objects.create(
        workspace=workspace,
        kind="test_sleep",
        status=JobStatus.RUNNING,
        heartbeat_at=timezone.now(),
    )
    queued = Job.objects.create(workspace=workspace, kind="test_sleep")
    assert services.job_sweep_stale() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    queued.refresh_from_db()
    assert stale.status == JobStatus.FAILED and "stopped responding" in stale.error
    assert stale.can_retry
    assert (fresh.status, queued.status) == (JobStatus.RUNNING, JobStatus.QUEUED)
