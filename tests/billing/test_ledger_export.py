"""The ledger in the workspace export: every row of the workspace, whatever its state, as
CSV that reads back to the database's values."""

import csv
import io
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings as site_settings
from django.core.files.storage import default_storage

from apps.billing.models import UsageEvent, UsageStatus
from apps.jobs.models import Job
from apps.workspaces.services import workspace_export_run

PROVIDER = "apps.billing.export.export_sections"


def _row(workspace, user, status, credits, at):
    event = UsageEvent.objects.create(
        workspace=workspace,
        user=user,
        source="ui",
        capability="tts",
        engine="local",
        model_id="piper",
        voice_id="local-joe",
        project="prj_1",
        unit="character",
        estimated_units=Decimal(credits),
        units=Decimal(credits) if status == UsageStatus.SETTLED else None,
        estimated_credits=Decimal(credits),
        credits=Decimal(credits) if status == UsageStatus.SETTLED else None,
        shadow_credits=Decimal(credits) * 2,
        request_id=uuid.uuid4().hex,
        idempotency_key=uuid.uuid4().hex,
        status=status,
        note="a note, with a comma",
    )
    UsageEvent.objects.filter(pk=event.pk).update(created_at=at)
    return event


def test_the_export_holds_every_ledger_row_of_the_workspace(
    settings, owner, member, workspace, outsider
):
    assert PROVIDER in site_settings.CHORUS_EXPORT_SECTIONS  # the real list, once
    settings.CHORUS_EXPORT_SECTIONS = site_settings.CHORUS_EXPORT_SECTIONS
    start = datetime(2025, 1, 1, 8, tzinfo=UTC)
    ours = [
        _row(workspace, member, status, n + 1.5, start + timedelta(days=n))
        for n, status in enumerate(UsageStatus.values)
    ]
    _row(outsider.memberships.get().workspace, outsider, UsageStatus.SETTLED, 99, start)

    job = Job.objects.create(workspace=workspace, kind="workspace_export", created_by=owner)
    result = workspace_export_run(job=job, progress=lambda *a: None)
    with default_storage.open(result["file"]) as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    rows = list(csv.DictReader(io.StringIO(archive.read("billing/ledger.csv").decode())))

    assert [int(r["id"]) for r in rows] == [e.pk for e in ours]
    for row, event in zip(rows, ours, strict=True):
        event.refresh_from_db()
        assert row["status"] == event.status and row["member"] == "member@example.com"
        assert datetime.fromisoformat(row["created_at_utc"]) == event.created_at
        assert Decimal(row["estimated_credits"]) == event.estimated_credits
        assert row["credits"] == ("" if event.credits is None else str(event.credits))
        assert Decimal(row["shadow_credits"]) == event.shadow_credits
        assert (row["project"], row["note"]) == ("prj_1", "a note, with a comma")


def test_an_empty_ledger_exports_its_header(settings, owner, workspace):
    settings.CHORUS_EXPORT_SECTIONS = [PROVIDER]
    job = Job.objects.create(workspace=workspace, kind="workspace_export", created_by=owner)
    result = workspace_export_run(job=job, progress=lambda *a: None)
    with default_storage.open(result["file"]) as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    header = archive.read("billing/ledger.csv").decode().splitlines()
    assert (
        header[0].startswith("id,created_at_utc,finished_at_utc,status,member") and len(header) == 1
    )


def test_caller_chosen_text_that_a_spreadsheet_would_run_is_quoted(settings, owner, workspace):
    settings.CHORUS_EXPORT_SECTIONS = [PROVIDER]
    event = _row(workspace, owner, UsageStatus.SETTLED, 3, datetime(2025, 1, 1, tzinfo=UTC))
    UsageEvent.objects.filter(pk=event.pk).update(voice_id="=HYPERLINK(1)", note="@SUM(A1)")
    job = Job.objects.create(workspace=workspace, kind="workspace_export", created_by=owner)
    result = workspace_export_run(job=job, progress=lambda *a: None)
    with default_storage.open(result["file"]) as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    (row,) = csv.DictReader(io.StringIO(archive.read("billing/ledger.csv").decode()))
    assert (row["voice_id"], row["note"]) == ("'=HYPERLINK(1)", "'@SUM(A1)")
    assert row["capability"] == "tts" and row["project"] == "prj_1"
    assert result["size"] == default_storage.size(result["file"]) > 0
