"""Jobs say what they are about, what they were given and link to what they made (issue 14):
the list, the job page and Home name a job by its subject, never "Transcribe #10"."""

import io
import math
import struct
import wave
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from apps.jobs.models import Job, JobStatus
from apps.jobs.services import job_start
from apps.transcripts.models import Transcript
from tests.conftest import HTMX


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def tone_wav(seconds: float = 3.0, rate: int = 16000) -> bytes:
    """A plain 440 Hz tone: sound enough for the upload check, no system package needed."""
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * n / rate)))
        for n in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def test_job_start_keeps_the_subject_the_input_and_the_result_page(workspace, member):
    job = job_start(
        workspace=workspace,
        kind="transcribe",
        created_by=member,
        subject="  Interview   with Ana ",
        inputs={"file": "ana.wav", "seconds": 723.4, "language": "en", "prompt": None},
        result_url="/transcripts/9/",
    )
    job.refresh_from_db()
    assert job.subject == "Interview with Ana" and job.title == "Interview with Ana"
    assert job.inputs == {"file": "ana.wav", "seconds": 723.4, "language": "en"}
    assert job.result_link is None  # nothing to open until it succeeded
    job.status = JobStatus.SUCCEEDED
    assert job.result_link == ("/transcripts/9/", "Open the transcript")


def test_the_list_names_jobs_by_subject_with_their_input_and_result(client_as, viewer, workspace):
    done = Job.objects.create(
        workspace=workspace,
        kind="transcribe",
        status=JobStatus.SUCCEEDED,
        subject="Interview with Ana",
        inputs={"file": "ana.wav", "seconds": 723.4, "language": "en"},
        result_url="/transcripts/9/",
    )
    Job.objects.create(workspace=workspace, kind="transcribe", status=JobStatus.RUNNING)

    body = client_as(viewer).get(reverse("jobs:list")).content.decode()

    link = f'<a href="{reverse("jobs:detail", args=[done.pk])}" data-job-title>'
    assert f"{link}Interview with Ana</a>" in body and f"Transcribe #{done.pk}" not in body
    assert "ana.wav · 12:03 · English" in body  # one duration format, a language's name
    assert 'href="/transcripts/9/" data-job-result>Open the transcript</a>' in body
    assert body.count("data-job-result") == 1  # the running job has nothing to open yet
    assert "Transcription" in body  # a job without a subject is named by its kind


def test_the_job_page_says_what_it_was_given_how_long_it_took_and_links_the_result(
    client_as, viewer, workspace
):
    now = timezone.now()
    job = Job.objects.create(
        workspace=workspace,
        kind="dubbing",
        status=JobStatus.SUCCEEDED,
        subject="Product launch",
        inputs={"file": "launch.mp4", "seconds": 65, "target_language": "fr"},
        result={"history_item_id": "abcdefghij0123456789"},
        started_at=now - timedelta(seconds=3.87977),
        finished_at=now,
    )

    body = client_as(viewer).get(reverse("jobs:detail", args=[job.pk])).content.decode()

    assert "<h1>Product launch</h1>" in body
    assert "launch.mp4 · 1:05 · Language detected → French" in body
    assert "<dd data-job-took>0:04</dd>" in body and "0:00:03" not in body
    history = reverse("history:list") + "?item=abcdefghij0123456789"
    assert f'href="{history}" data-job-result>Listen to the dub</a>' in body


def test_an_export_links_its_download_and_a_failed_job_links_nothing(client_as, owner, workspace):
    export = Job.objects.create(
        workspace=workspace,
        kind="workspace_export",
        status=JobStatus.SUCCEEDED,
        subject="Export of Acme audio",
        result={"file": "exports/1/x.zip", "filename": "x.zip"},
    )
    failed = Job.objects.create(
        workspace=workspace,
        kind="music",
        status=JobStatus.FAILED,
        subject="calm piano",
        result={"history_item_id": "abc"},
    )
    assert export.result_link == (reverse("jobs:download", args=[export.pk]), "Download x.zip")
    assert failed.result_link is None
    body = client_as(owner, **HTMX).get(reverse("jobs:list")).content.decode()
    assert "Export of Acme audio" in body and "Download x.zip" in body


def test_an_outsider_sees_no_subject_of_another_workspace(client_as, outsider, workspace):
    job = Job.objects.create(workspace=workspace, kind="transcribe", subject="Secret interview")
    assert "Secret interview" not in client_as(outsider).get(reverse("jobs:list")).text
    assert client_as(outsider).get(reverse("jobs:detail", args=[job.pk])).status_code == 404


def test_a_transcription_job_is_named_after_its_transcript_and_links_to_it(
    client_as, member, workspace
):
    client_as(member).post(
        reverse("transcripts:new"),
        {
            "media": SimpleUploadedFile("ana.wav", tone_wav(), "audio/wav"),
            "title": "Interview with Ana",
            "language_code": "pt",
        },
    )
    transcript = Transcript.objects.get()
    job = Job.objects.get(pk=transcript.job_id)
    assert job.subject == "Interview with Ana"
    assert job.inputs["file"] == "ana.wav" and job.inputs["language"] == "pt"
    assert 2.5 < job.inputs["seconds"] < 3.5
    assert job.result_url == reverse("transcripts:detail", args=[transcript.pk])


def test_a_workspace_export_is_named_after_the_workspace(client_as, owner, workspace):
    client_as(owner).post(reverse("workspaces:export"))
    job = Job.objects.get(kind="workspace_export")
    assert job.title == "Export of Acme audio"
