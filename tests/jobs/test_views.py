"""Jobs pages: list and filter, the progress widget for htmx, cancel, retry, download."""

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from apps.jobs.models import Job, JobStatus
from tests.conftest import HTMX


def test_the_empty_jobs_page_tells_a_newcomer_what_it_is_for(client_as, owner, workspace):
    body = client_as(owner).get(reverse("jobs:list")).content.decode()
    assert "No jobs" in body
    assert "export this workspace" in body


def test_the_list_filters_by_status_and_htmx_gets_the_table(client_as, viewer, workspace):
    Job.objects.create(workspace=workspace, kind="workspace_export", status=JobStatus.FAILED)
    running = Job.objects.create(
        workspace=workspace, kind="workspace_export", status=JobStatus.RUNNING, progress=42
    )
    client = client_as(viewer, **HTMX)
    body = client.get(reverse("jobs:list"), {"status": "running"}).content.decode()
    assert "<html" not in body
    assert (
        f'href="{reverse("jobs:detail", args=[running.pk])}" data-job-title>Workspace export<'
        in body
    )
    assert "Failed" not in body
    assert 'value="42"' in body
    assert f'data-job-socket="/ws/jobs/{running.pk}/"' in body
    assert "every 3s" in body  # polling fallback while something is unfinished


def test_the_detail_partial_is_what_polling_fetches(client_as, viewer, workspace):
    job = Job.objects.create(
        workspace=workspace, kind="workspace_export", status=JobStatus.RUNNING, progress=7
    )
    body = client_as(viewer, **HTMX).get(reverse("jobs:detail", args=[job.pk])).content.decode()
    assert "<html" not in body
    assert body.strip().startswith(f'<div class="job-card" id="job-card-{job.pk}"')
    assert "Details" in body  # the facts refresh with the bar
    assert "every 2s[!this.dataset.live]" in body
    page = client_as(viewer).get(reverse("jobs:detail", args=[job.pk])).content.decode()
    assert "<html" in page and "Cancel job" not in page  # viewers cannot cancel


def test_a_finished_job_stops_polling_and_offers_the_file(client_as, owner, workspace):
    path = default_storage.save("exports/x/export.zip", ContentFile(b"zipbytes"))
    job = Job.objects.create(
        workspace=workspace,
        kind="workspace_export",
        status=JobStatus.SUCCEEDED,
        progress=100,
        result={"file": path, "filename": "export.zip", "size": 8},
    )
    body = client_as(owner, **HTMX).get(reverse("jobs:detail", args=[job.pk])).content.decode()
    assert "hx-trigger" not in body and "data-job-socket" not in body
    assert reverse("jobs:download", args=[job.pk]) in body
    response = client_as(owner).get(reverse("jobs:download", args=[job.pk]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"zipbytes"
    assert 'attachment; filename="export.zip"' in response["Content-Disposition"]


def test_a_job_without_a_file_has_nothing_to_download(client_as, owner, workspace):
    job = Job.objects.create(workspace=workspace, kind="workspace_export", status=JobStatus.FAILED)
    assert client_as(owner).get(reverse("jobs:download", args=[job.pk])).status_code == 404


def test_cancel_with_htmx_returns_the_updated_widget(client_as, member, workspace):
    job = Job.objects.create(workspace=workspace, kind="workspace_export", created_by=member)
    response = client_as(member, **HTMX).post(reverse("jobs:cancel", args=[job.pk]))
    assert response.status_code == 200
    assert "Cancelled" in response.content.decode()
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    again = client_as(member).post(reverse("jobs:cancel", args=[job.pk]), follow=True)
    assert "already cancelled" in again.content.decode()


def test_retry_of_a_running_job_is_refused_with_a_message(client_as, owner, workspace):
    job = Job.objects.create(workspace=workspace, kind="workspace_export", status=JobStatus.RUNNING)
    page = client_as(owner).post(reverse("jobs:retry", args=[job.pk]), follow=True)
    assert "cannot be retried" in page.content.decode()
    job.refresh_from_db()
    assert job.attempt == 1
