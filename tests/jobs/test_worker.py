"""Jobs on a real Celery worker over the configured broker, progress over a real Daphne socket."""

import io
import json
import signal
import time
import zipfile

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from websockets.sync.client import connect

from apps.jobs import services
from apps.jobs.models import Job, JobStatus
from tests.conftest import session_cookie_for, wait_until

pytestmark = pytest.mark.slow


def _wait_for_status(job, statuses, timeout=60):
    def check():
        job.refresh_from_db()
        return job.status in statuses

    wait_until(check, timeout=timeout, interval=0.1, what=f"job {job.pk} to be {statuses}")
    return job


def test_an_export_runs_on_a_real_worker(celery_worker, owner, member, workspace):
    job = services.job_start(workspace=workspace, kind="workspace_export", created_by=owner)
    _wait_for_status(job, {JobStatus.SUCCEEDED, JobStatus.FAILED})
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.progress == 100 and job.started_at and job.finished_at
    with default_storage.open(job.result["file"]) as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    emails = {m["email"] for m in json.loads(archive.read("members.json"))}
    assert emails == {"owner@example.com", "member@example.com"}


def test_progress_arrives_over_a_real_daphne_websocket(
    celery_worker, daphne_server, viewer, owner, workspace
):
    job = Job.objects.create(
        workspace=workspace,
        kind="test_sleep",
        created_by=owner,
        params={"steps": 6, "step_seconds": 0.3},
        celery_task_id="test-progress-socket",
    )
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie_for(viewer)}"
    ws_url = f"ws://127.0.0.1:{daphne_server.port}/ws/jobs/{job.pk}/"
    events = []
    with connect(
        ws_url, additional_headers={"Cookie": cookie, "Origin": daphne_server.url}
    ) as socket:
        events.append(json.loads(socket.recv(timeout=10)))
        services._enqueue(job)  # now the worker picks it up
        deadline = time.monotonic() + 60
        while not events[-1]["finished"] and time.monotonic() < deadline:
            events.append(json.loads(socket.recv(timeout=30)))
    assert events[0]["status"] == "queued"
    assert events[-1]["status"] == "succeeded" and events[-1]["progress"] == 100
    middle = [e["progress"] for e in events if e["status"] == "running" and 0 < e["progress"] < 100]
    assert len(middle) >= 2, events  # the bar moved, live
    assert middle == sorted(middle)
    assert any(e["message"].startswith("Step ") for e in events)


def test_a_socket_without_a_session_is_refused_by_daphne(daphne_server, workspace):
    job = Job.objects.create(workspace=workspace, kind="test_sleep")
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as exc:
        connect(
            f"ws://127.0.0.1:{daphne_server.port}/ws/jobs/{job.pk}/",
            additional_headers={"Origin": daphne_server.url},
        )
    assert exc.value.response.status_code == 403


def test_a_killed_worker_is_swept_and_the_retry_succeeds(start_worker, owner, workspace, settings):
    first = start_worker("doomed")
    job = services.job_start(
        workspace=workspace,
        kind="test_sleep",
        created_by=owner,
        params={"steps": 8, "step_seconds": 0.4},
    )

    def running_with_progress():
        job.refresh_from_db()
        return job.status == JobStatus.RUNNING and job.progress > 0

    wait_until(running_with_progress, timeout=60, what="the job to make progress")
    first.stop(signal.SIGKILL)  # the worker dies mid-job, as in an OOM kill
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING  # nobody told the database

    settings.CHORUS_JOB_STALE_SECONDS = 2
    time.sleep(2.5)
    assert services.job_sweep_stale() == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "stopped responding" in job.error

    start_worker("rescuer")
    services.job_retry(job=job)
    _wait_for_status(job, {JobStatus.SUCCEEDED, JobStatus.FAILED})
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempt == 2 and job.result == {"steps": 8}


def test_a_transient_error_is_retried_with_backoff(celery_worker, owner, workspace):
    job = services.job_start(
        workspace=workspace, kind="test_flaky", created_by=owner, params={"fail_times": 2}
    )
    _wait_for_status(job, {JobStatus.SUCCEEDED, JobStatus.FAILED})
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.retries == 2 and job.result == {"retries": 2}


def test_a_broken_job_fails_with_its_reason(celery_worker, owner, workspace):
    job = services.job_start(workspace=workspace, kind="test_broken", created_by=owner)
    _wait_for_status(job, {JobStatus.SUCCEEDED, JobStatus.FAILED})
    assert job.status == JobStatus.FAILED
    assert job.error == "the input file is corrupt"
    assert job.can_retry


def test_cancelling_a_running_job_stops_it_on_the_worker(celery_worker, owner, workspace):
    job = services.job_start(
        workspace=workspace, kind="test_sleep", params={"steps": 50, "step_seconds": 0.2}
    )

    def running():
        job.refresh_from_db()
        return job.status == JobStatus.RUNNING and job.progress > 0

    wait_until(running, timeout=60, what="the job to run")
    services.job_cancel(job=job)
    time.sleep(1)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.progress < 50  # it stopped at its next report
    # The worker is free again: the next job runs.
    nxt = services.job_start(
        workspace=workspace, kind="test_sleep", params={"steps": 1, "step_seconds": 0}
    )
    _wait_for_status(nxt, {JobStatus.SUCCEEDED})
