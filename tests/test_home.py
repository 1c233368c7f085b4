"""Home offers the next steps (issue 14): a quick speech box, recent clips, credits left (the
member's, and the workspace's for managers), shortcuts, jobs by their subject with a link to
their result, and empty states that say what each role can do."""

from decimal import Decimal

import pytest
from django.urls import reverse

from apps.billing import services as billing
from apps.billing.models import Budget, Plan
from apps.history.services import generation_save
from apps.jobs.models import Job, JobStatus
from tests.conftest import HTMX


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def spend(workspace, user, credits):
    with billing.metered(
        workspace=workspace, user=user, capability="tts", engine="elevenlabs", units=credits
    ) as meter:
        return meter.settle(units=credits)


def test_a_member_gets_a_quick_speech_box_that_goes_to_the_speech_page(
    client_as, member, workspace
):
    body = client_as(member).get(reverse("workspaces:home")).content.decode()
    speech = reverse("speech:page")
    assert f'<form method="get" action="{speech}" class="home-speak-form">' in body
    assert '<textarea id="home-speak-text" name="text"' in body
    for shortcut in ("voices:design_new", "transcripts:new", "speech:page"):
        assert f'href="{reverse(shortcut)}"' in body
    assert "Type a sentence in the box above to make the first one." in body  # no clips yet


def test_a_viewer_is_told_what_they_can_do_instead_of_a_box_they_cannot_use(
    client_as, viewer, workspace
):
    body = client_as(viewer).get(reverse("workspaces:home")).content.decode()
    assert "home-speak-form" not in body and "data-viewer-guide" in body
    assert "As a viewer you can listen to and download every clip" in body
    assert "Clips your team makes will be here to play." in body


def test_recent_clips_are_playable_newest_first(client_as, viewer, member, workspace):
    clips = [
        generation_save(
            workspace=workspace,
            user=member,
            kind="tts",
            engine="local",
            audio=b"x" * 100,
            content_type="audio/mpeg",
            recipe={},
            text=f"Clip {n}",
            voice_name="Rachel",
            duration_seconds=8.4,
        )  # fmt: skip
        for n in range(7)
    ]
    body = client_as(viewer).get(reverse("workspaces:home")).content.decode()
    section = body.split("data-home-clips")[1].split("</section>")[0]
    assert section.count("data-history-item=") == 5
    assert section.index("Clip 6") < section.index("Clip 5") and "Clip 1" not in section
    src = reverse("history:audio", args=[clips[-1].pk])
    assert f'<audio controls preload="none" src="{src}"' in section
    assert "0:08" in section and "Rachel" in section


def test_credits_left_for_the_member_and_for_managers_the_workspace(
    client_as, member, manager, workspace
):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(100))
    Plan.objects.update_or_create(workspace=workspace, defaults={"workspace_cap": Decimal(1000)})
    spend(workspace, member, Decimal(30))
    spend(workspace, manager, Decimal(200))

    mine = client_as(member).get(reverse("workspaces:home")).content.decode()
    assert (
        "<strong data-credits-left>70 credits</strong> left of your budget of 100 credits" in mine
    )
    assert "data-workspace-credits" not in mine  # a member sees their own credits only

    theirs = client_as(manager).get(reverse("workspaces:home")).content.decode()
    assert "You have no budget of your own: you have used 200 credits this period." in theirs
    assert "230 credits used this period, <strong>770 credits</strong> left of the cap" in theirs


def test_jobs_are_listed_by_subject_with_status_and_result(client_as, member, workspace):
    done = Job.objects.create(
        workspace=workspace, kind="transcribe", status=JobStatus.SUCCEEDED,
        subject="Interview with Ana", result_url="/transcripts/3/",
    )  # fmt: skip
    running = Job.objects.create(
        workspace=workspace, kind="dubbing", status=JobStatus.RUNNING, subject="Launch video"
    )
    body = client_as(member).get(reverse("workspaces:home")).content.decode()
    assert (
        f'href="{reverse("jobs:detail", args=[done.pk])}" data-job-title>Interview with Ana<'
        in body
    )
    assert (
        f'href="{reverse("jobs:detail", args=[running.pk])}" data-job-title>Launch video<' in body
    )
    assert f"Transcribe #{done.pk}" not in body and f"Transcription #{done.pk}</a>" not in body
    assert 'href="/transcripts/3/" data-job-result>Open the transcript</a>' in body
    partial = client_as(member, **HTMX).get(reverse("workspaces:home")).content.decode()
    assert "<html" not in partial and "Launch video" in partial  # the live card alone


def test_an_outsider_sees_only_their_own_workspace_on_home(client_as, outsider, member, workspace):
    Job.objects.create(workspace=workspace, kind="transcribe", subject="Secret interview")
    generation_save(
        workspace=workspace, user=member, kind="tts", engine="local", audio=b"x",
        content_type="audio/mpeg", recipe={}, text="Secret clip",
    )  # fmt: skip
    body = client_as(outsider).get(reverse("workspaces:home")).content.decode()
    assert "Secret interview" not in body and "Secret clip" not in body
    assert client_as(member).post(reverse("workspaces:home")).status_code == 405
