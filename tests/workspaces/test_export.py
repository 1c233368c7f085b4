"""Workspace export: the ZIP's contents, and who can start and download it."""

import io
import json
import zipfile

from django.core.files.storage import default_storage
from django.urls import reverse

from apps.jobs.models import Job, JobStatus
from apps.workspaces.models import AuditEntry
from apps.workspaces.services import workspace_export_run


def test_the_export_holds_members_roles_settings_and_audit(db, owner, member, viewer, workspace):
    AuditEntry.objects.create(workspace=workspace, actor=owner, action="test.action", target="t")
    job = Job.objects.create(workspace=workspace, kind="workspace_export", created_by=owner)
    seen = []
    result = workspace_export_run(job=job, progress=lambda p, m="": seen.append(p))
    assert seen == sorted(seen) and seen[-1] == 95
    with default_storage.open(result["file"]) as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    names = set(archive.namelist())
    assert {"workspace.json", "members.json", "invitations.json", "audit_log.json"} <= names
    members = json.loads(archive.read("members.json"))
    assert {(m["email"], m["role"]) for m in members} == {
        ("owner@example.com", "owner"),
        ("member@example.com", "member"),
        ("viewer@example.com", "viewer"),
    }
    assert json.loads(archive.read("workspace.json"))["name"] == "Acme audio"
    assert any(a["action"] == "test.action" for a in json.loads(archive.read("audit_log.json")))
    assert result["size"] == default_storage.size(result["file"])
    assert AuditEntry.objects.filter(action="workspace.exported").exists()


def test_the_owner_starts_an_export_job(client_as, owner, workspace):
    response = client_as(owner).post(reverse("workspaces:export"))
    job = Job.objects.get()
    assert response.status_code == 303
    assert response["Location"] == reverse("jobs:detail", args=[job.pk])
    assert (job.kind, job.status, job.created_by) == ("workspace_export", JobStatus.QUEUED, owner)
    page = client_as(owner).get(response["Location"]).content.decode()
    assert f'data-job-socket="/ws/jobs/{job.pk}/"' in page
    assert "<progress" in page
