"""Who may use the export pages: viewers read, listen and download; members (and managers and
owners) export and delete; another workspace's project or export is a 404; anonymous people
sign in; wrong methods are 405; bad requests are a 400 with the reason."""

import io
import wave
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.urls import reverse

from apps.history.models import Generation
from apps.jobs.models import JobStatus
from apps.projects import exports
from apps.projects.models import Block, Export, Take
from apps.projects.views_exports import export_panel_context
from apps.voices import services as voice_services
from apps.workspaces.models import Membership
from tests.conftest import HTMX

from .conftest import make_script, run_job

pytestmark = pytest.mark.django_db

ROLES = ("owner", "manager", "member", "viewer")
RANK = {"viewer": 0, "member": 1, "manager": 2, "owner": 3}


def tone(seconds: float = 0.6, hz: float = 330.0) -> bytes:
    """A short WAV: stands in for a take where only the pages are under test."""
    t = np.arange(int(44_100 * seconds)) / 44_100
    pcm = (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(44_100)
        handle.writeframes(pcm.tobytes())
    return out.getvalue()


def give_takes(project, user, *, skip: int | None = None) -> None:
    """A chosen take (a stored WAV) for every block of ``project`` but the ``skip``-th."""
    blocks = Block.objects.filter(chapter__project=project).order_by(
        "chapter__position", "position"
    )
    for index, block in enumerate(blocks):
        if index == skip:
            continue
        generation = Generation.objects.create(
            workspace=project.workspace,
            user=user,
            kind="tts",
            engine="local",
            text=block.text,
            recipe={"text": block.text, "output_format": "wav_44100"},
            file=ContentFile(tone(), name="take.wav"),
            content_type="audio/wav",
            duration_seconds=0.6,
        )
        take = Take.objects.create(
            workspace=project.workspace,
            block=block,
            generation=generation,
            draft=True,
            signature="test",
            user=user,
        )
        Block.objects.filter(pk=block.pk).update(chosen=take)


@pytest.fixture
def ready(project, member):
    give_takes(project, member)
    return project


@pytest.fixture
def made(ready, member):
    """A finished WAV export of the project."""
    export = exports.export_start(workspace=ready.workspace, user=member, project=ready, fmt="wav")
    job = run_job(export.job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    export.refresh_from_db()
    return export


def views(project, export):
    pid, eid = project.public_id, export.public_id
    return [
        ("get", reverse("projects:exports", args=[pid]), "viewer"),
        ("post", reverse("projects:export_create", args=[pid]), "member"),
        ("get", reverse("projects:export_detail", args=[pid, eid]), "viewer"),
        ("get", reverse("projects:export_download", args=[pid, eid]), "viewer"),
        ("post", reverse("projects:export_delete", args=[pid, eid]), "member"),
    ]


def test_the_urls_are_where_the_pages_say():
    assert reverse("projects:exports", args=["p" * 20]) == f"/projects/{'p' * 20}/exports/"
    assert (
        reverse("projects:export_download", args=["p" * 20, "e" * 20])
        == f"/projects/{'p' * 20}/exports/{'e' * 20}/download/"
    )


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reaches_what_its_role_allows(request, client_as, role, ready, made):
    client = client_as(request.getfixturevalue(role))
    data = {"scope": "", "format": "mp3", "profile": "lufs16"}
    for method, url, weakest in views(ready, made):
        response = client.post(url, data) if method == "post" else client.get(url)
        if RANK[role] >= RANK[weakest]:
            assert response.status_code in (200, 302), (role, url, response.status_code)
        else:
            assert response.status_code == 403, (role, url, response.status_code)


def test_a_viewer_reads_listens_and_downloads_but_changes_nothing(client_as, viewer, ready, made):
    client = client_as(viewer)
    page = client.get(reverse("projects:exports", args=[ready.public_id]))
    body = page.content.decode()
    url = reverse("projects:export_download", args=[ready.public_id, made.public_id])
    assert page.status_code == 200
    assert f'src="{url}"' in body and f'href="{url}?download=1"' in body
    assert 'name="format"' not in body and "export_delete" not in body
    assert reverse("projects:export_delete", args=[ready.public_id, made.public_id]) not in body
    assert "Compliance report" in body and 'data-passes="yes"' in body

    listened = client.get(url, HTTP_RANGE="bytes=0-43")
    assert listened.status_code == 206 and listened.content[:4] == b"RIFF"
    assert listened["Content-Range"] == f"bytes 0-43/{made.size_bytes}"
    saved = client.get(url + "?download=1")
    assert saved.status_code == 200 and saved["Content-Type"] == "audio/wav"
    assert saved["Content-Disposition"] == 'attachment; filename="harbour-tales.wav"'
    row = client.get(
        reverse("projects:export_detail", args=[ready.public_id, made.public_id]), **HTMX
    )
    assert row.status_code == 200 and b"<html" not in row.content
    assert f'id="export-{made.public_id}"'.encode() in row.content

    create = reverse("projects:export_create", args=[ready.public_id])
    delete = reverse("projects:export_delete", args=[ready.public_id, made.public_id])
    assert client.post(create, {"format": "mp3", "profile": "lufs16"}).status_code == 403
    assert client.post(delete).status_code == 403
    assert Export.objects.filter(project=ready).count() == 1


def test_a_member_exports_as_a_job_and_sees_it_in_the_list(client_as, member, ready):
    client = client_as(member)
    chapter = ready.chapters.order_by("position").last()
    create = reverse("projects:export_create", args=[ready.public_id])
    answer = client.post(
        create, {"scope": chapter.public_id, "format": "m4b", "profile": "audiobook"}
    )
    export = Export.objects.get(project=ready)
    assert answer.status_code == 302
    assert answer["Location"] == (
        reverse("projects:exports", args=[ready.public_id]) + f"#export-{export.public_id}"
    )
    assert (export.chapter, export.format, export.profile) == (chapter, "m4b", "audiobook")
    assert export.job.kind == "project_export" and export.job.status == JobStatus.QUEUED
    page = client.get(reverse("projects:exports", args=[ready.public_id])).content.decode()
    assert f'data-job-socket="/ws/jobs/{export.job.pk}/"' in page

    # The panel of the chapter editor: htmx swaps the panel, fixed to its chapter.
    swapped = client.post(
        create,
        {
            "scope": chapter.public_id,
            "panel_chapter": chapter.public_id,
            "format": "mp3",
            "profile": "lufs16",
            "next": "/somewhere/",
        },
        **HTMX,
    )
    body = swapped.content.decode()
    assert swapped.status_code == 200 and "<html" not in body
    assert f'id="export-panel-{ready.public_id}-{chapter.public_id}"' in body
    assert "Exporting now" in body and body.count('class="card export"') == 2

    job = run_job(export.job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    export.refresh_from_db()
    assert export.file.name.endswith("harbour-tales-the-hill.m4b")
    row = client.get(reverse("projects:export_detail", args=[ready.public_id, export.public_id]))
    assert row.status_code == 302 and row["Location"].endswith(f"#export-{export.public_id}")


def test_bad_export_requests_are_a_400_with_the_reason(client_as, member, project, workspace):
    give_takes(project, member, skip=3)
    client = client_as(member)
    create = reverse("projects:export_create", args=[project.public_id])
    refused = client.post(create, {"scope": "", "format": "mp3", "profile": "lufs16"})
    assert refused.status_code == 400
    assert (
        "Chapter 2 “The hill” has 1 block without a take (block 1): render them first."
        in refused.content.decode()
    )
    htmx = client.post(create, {"scope": "", "format": "mp3", "profile": "lufs16"}, **HTMX)
    assert htmx.status_code == 400 and b"<html" not in htmx.content
    assert "has 1 block without a take" in htmx.content.decode()
    wrong = client.post(create, {"scope": "", "format": "ogg", "profile": "lufs16"})
    assert wrong.status_code == 400 and "Select a valid choice" in wrong.content.decode()
    foreign = client.post(create, {"scope": "x" * 20, "format": "mp3", "profile": "lufs16"})
    assert foreign.status_code == 400
    assert "that chapter is not in this project" in foreign.content.decode()
    assert not Export.objects.exists()


def test_a_member_deletes_an_export_with_its_file(
    client_as, member, ready, made, django_capture_on_commit_callbacks
):
    path = Path(made.file.path)
    assert path.exists()
    delete = reverse("projects:export_delete", args=[ready.public_id, made.public_id])
    with django_capture_on_commit_callbacks(execute=True):
        answer = client_as(member).post(delete)
    assert answer.status_code == 302
    assert not Export.objects.filter(pk=made.pk).exists() and not path.exists()
    # One still being made is cancelled; htmx removes only its row.
    running = exports.export_start(workspace=ready.workspace, user=member, project=ready)
    delete = reverse("projects:export_delete", args=[ready.public_id, running.public_id])
    answer = client_as(member).post(delete, **HTMX)
    assert answer.status_code == 200 and answer.content == b""
    running.job.refresh_from_db()
    assert running.job.status == JobStatus.CANCELLED
    assert not Export.objects.exists()


def test_wrong_methods_are_refused(client_as, member, ready, made):
    client = client_as(member)
    for method, url, _ in views(ready, made):
        wrong = client.get(url) if method == "post" else client.post(url)
        assert wrong.status_code == 405, url


def test_anonymous_people_are_sent_to_sign_in(client_as, ready, made):
    client = client_as(None)
    for method, url, _ in views(ready, made):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "/login" in response["Location"], url


def test_another_workspace_s_project_and_exports_are_not_found(
    client_as, outsider, member, ready, made
):
    client = client_as(outsider)
    for method, url, _ in views(ready, made):
        assert getattr(client, method)(url).status_code == 404, url
    # Their own project cannot reach our export either.
    from apps.projects.narration import project_create

    elsewhere = Membership.objects.get(user=outsider).workspace
    voice_services.library_sync(workspace=elsewhere)
    theirs = project_create(
        workspace=elsewhere,
        user=outsider,
        script=make_script(title="Elsewhere"),
        default_voice_id=ready.default_voice_id,
    )
    download = reverse("projects:export_download", args=[theirs.public_id, made.public_id])
    assert client.get(download).status_code == 404
    # And a member here cannot export their chapter through our project.
    foreign = theirs.chapters.first().public_id
    create = reverse("projects:export_create", args=[ready.public_id])
    answer = client_as(member).post(
        create, {"scope": foreign, "format": "mp3", "profile": "lufs16"}
    )
    assert answer.status_code == 400 and Export.objects.filter(project=theirs).count() == 0


def test_the_panel_included_in_the_chapter_editor_is_fixed_to_its_chapter(
    member, viewer, ready, made, workspace
):
    chapter = ready.chapters.order_by("position").first()
    for user, can_edit in ((member, True), (viewer, False)):
        request = RequestFactory().get(f"/projects/{ready.public_id}/chapters/{chapter.public_id}/")
        request.user = user
        request.workspace = workspace
        request.membership = Membership.objects.get(workspace=workspace, user=user)
        panel = export_panel_context(request, ready, chapter=chapter)
        html = render_to_string("projects/_export_panel.html", {"panel": panel}, request=request)
        assert f'id="export-panel-{ready.public_id}-{chapter.public_id}"' in html
        assert "Export this chapter" in html
        assert (f'name="scope" value="{chapter.public_id}"' in html) is can_edit
        assert ('name="next"' in html) is can_edit
        # The project's whole export is not this chapter's.
        assert made.public_id not in html and "No exports of this chapter yet" in html
