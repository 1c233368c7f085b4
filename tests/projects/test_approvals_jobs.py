"""Jobs above their capability's approval threshold wait for a manager (issue 16): a member's
sound effect or music that costs more than the spend settings' ``job_thresholds`` allow is
created waiting (nothing reserved, nothing queued), listed on the approvals page with the
renders, and a manager approves it (reserved then, and it runs) or refuses it with a reason;
whoever asked and the managers are told in-app. The workspace runs on the ElevenLabs engine
(free local-engine jobs never wait); the provider is faked at the network edge only."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.billing.models import Budget, Notification, SpendSettings, UsageEvent, UsageStatus
from apps.billing.services import reservations_sweep
from apps.engines.base import SoundRequest
from apps.generation.engine import engine_for
from apps.history.models import Generation
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import job_sweep_stale
from apps.projects import cues, narration
from apps.projects.models import RenderScope, RenderState
from apps.workspaces.models import Membership
from tests.gateway.test_api_faults import audio_reply
from tests.projects.conftest import run_job
from tests.projects.test_renders import charged_project  # noqa: F401 (a fixture)

SOUND_CREDITS = Decimal(200)  # a sound effect on the ElevenLabs rate card: per generation


@pytest.fixture
def charged(request, workspace, project):
    """The project's workspace on the ElevenLabs engine (after the project: its voices)."""
    request.getfixturevalue("on_elevenlabs")
    return project


def thresholds(workspace, **values):
    SpendSettings.objects.update_or_create(
        workspace=workspace, defaults={"job_thresholds": {k: str(v) for k, v in values.items()}}
    )


def sound_cue(project, user, *, prompt="a bell", seconds=2):
    return cues.cue_start(
        workspace=project.workspace,
        user=user,
        project=project,
        kind="sound",
        prompt=prompt,
        duration_seconds=seconds,
    )


def notices(user):
    return list(Notification.objects.filter(user=user).values_list("text", flat=True))


def decide(client, job, **data):
    return client.post(reverse("projects:job_decide", args=[job.pk]), data)


@pytest.fixture
def real_sound(outsider):
    """A real MP3 of a sound effect, made by the local engine (of the outsider's workspace,
    which runs on it): what the faked provider answers."""
    workspace = Membership.objects.get(user=outsider).workspace
    clip = engine_for(workspace).sound_effect(SoundRequest(text="a bell", duration_seconds=2))
    assert clip.audio[:3] == b"ID3" or clip.audio[:2] in (b"\xff\xfb", b"\xff\xf3")
    return clip.audio


# --- Waiting, approved, refused -------------------------------------------------------------


def test_a_members_sound_above_the_threshold_waits_then_runs_once_a_manager_approves(
    charged,
    workspace,
    owner,
    manager,
    member,
    client_as,
    upstream,
    real_sound,
    django_capture_on_commit_callbacks,
):
    upstream(audio_reply("up-1", "200", real_sound))  # what the provider will answer
    thresholds(workspace, sound_effect=150)
    with django_capture_on_commit_callbacks(execute=False) as started:
        cue = sound_cue(charged, member)
    job = cue.job
    job.refresh_from_db()
    assert job.status == JobStatus.WAITING and job.message == "Waiting for a manager's approval"
    assert started == []  # nothing enqueued
    assert not UsageEvent.objects.exists()  # nothing reserved while it waits
    assert job.approval["credits"] == "200.000" and job.approval["threshold"] == "150"
    # The managers are told; the member is not (yet).
    for boss in (owner, manager):
        assert any("200 credits" in text and "a bell" in text for text in notices(boss))
    assert notices(member) == []

    # Listed with the renders, counted in the top bar's badge.
    page = client_as(manager).get(reverse("projects:approvals"))
    assert page.status_code == 200 and page.context["approvals_waiting"] == 1
    html = page.content.decode()
    assert f'data-job="{job.pk}"' in html and "Mia Member" in html and "200 credits" in html
    assert reverse("projects:job_decide", args=[job.pk]) in html
    # The member's job page says it waits, and why.
    mine = client_as(member).get(reverse("jobs:detail", args=[job.pk])).content.decode()
    assert "Waiting for approval" in mine and "data-job-waiting" in mine

    with django_capture_on_commit_callbacks(execute=False) as released:
        response = decide(client_as(manager), job, approve="1")
    assert response.status_code == 303
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and len(released) == 1  # enqueued on commit
    assert job.approval["decision"] == "approved" and job.approval["decided_by"] == manager.pk
    [event] = UsageEvent.objects.all()
    assert (event.status, event.estimated_credits, event.user_id) == (
        UsageStatus.RESERVED,
        SOUND_CREDITS,
        member.pk,
    )
    assert any("approved" in text and "a bell" in text for text in notices(member))

    job = run_job(job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    cue.refresh_from_db()
    assert cue.generation is not None and Generation.objects.count() == 1
    # The sound call reserves for itself (the start's reservation is released for it): the
    # member pays the 200 credits once.
    settled = UsageEvent.objects.filter(status=UsageStatus.SETTLED)
    assert [(e.user_id, e.credits) for e in settled] == [(member.pk, SOUND_CREDITS)]
    event.refresh_from_db()
    assert event.status in (UsageStatus.SETTLED, UsageStatus.REFUNDED)
    assert client_as(manager).get(reverse("projects:approvals")).context["approvals_waiting"] == 0


def test_a_refused_job_is_cancelled_with_the_reason_and_the_member_is_told(
    charged, workspace, manager, member, client_as
):
    thresholds(workspace, sound_effect=150)
    job = sound_cue(charged, member).job
    response = decide(client_as(manager), job, approve="0", reason="  Use the  free draft. ")
    assert response.status_code == 303
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert job.message == "Refused: Use the free draft."
    assert job.approval["decision"] == "refused" and job.approval["reason"] == "Use the free draft."
    assert not UsageEvent.objects.exists()
    assert any("refused" in text and "Use the free draft." in text for text in notices(member))
    # No way round the decision: a refused job cannot be retried.
    assert not job.can_retry
    client_as(member).post(reverse("jobs:retry", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.attempt == 1
    # The decision is listed; the member's job page shows the reason.
    page = client_as(manager).get(reverse("projects:approvals")).content.decode()
    assert f'data-decided-job="{job.pk}"' in page and "Use the free draft." in page
    mine = client_as(member).get(reverse("jobs:detail", args=[job.pk])).content.decode()
    assert "Refused: Use the free draft." in mine


def test_a_member_withdraws_a_waiting_job(charged, workspace, member, client_as):
    thresholds(workspace, sound_effect=150)
    job = sound_cue(charged, member).job
    client_as(member).post(reverse("jobs:cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and not job.can_retry
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize(
    ("settings_", "who"),
    [
        ({"sound_effect": 250}, "member"),  # below the threshold
        ({"sound_effect": 200}, "member"),  # exactly at it: only above waits
        ({}, "member"),  # no threshold at all
        ({"music": 1}, "member"),  # a threshold for another capability
        ({"sound_effect": 150}, "manager"),  # a manager's own job never waits
        ({"sound_effect": 150}, "owner"),
    ],
)
def test_jobs_that_do_not_wait_reserve_and_queue_at_once(
    request, charged, workspace, settings_, who, django_capture_on_commit_callbacks
):
    thresholds(workspace, **settings_)
    user = request.getfixturevalue(who)
    with django_capture_on_commit_callbacks(execute=False) as started:
        job = sound_cue(charged, user).job
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and "approval" not in job.params
    assert len(started) == 1
    [event] = UsageEvent.objects.all()
    assert event.status == UsageStatus.RESERVED and event.estimated_credits == SOUND_CREDITS
    assert not Notification.objects.exists()


def test_free_jobs_on_the_local_engine_never_wait(workspace, member, project):
    thresholds(workspace, sound_effect=0)
    job = sound_cue(project, member).job
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED  # the local engine charges 0 credits


def test_a_budget_spent_between_the_request_and_the_approval_refuses_the_job(
    charged, workspace, manager, member, client_as
):
    thresholds(workspace, sound_effect=150)
    job = sound_cue(charged, member).job
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(100))
    boss = client_as(manager)
    response = decide(boss, job, approve="1")
    assert response.status_code == 303
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.message.startswith("Refused: Approved, but Mia Member's budget of 100 credits")
    assert "needs 200 credits and 100 are left" in job.message
    assert job.approval["decision"] == "refused"
    assert not UsageEvent.objects.exists()  # the refused reservation left nothing
    assert any("could not start" in text and "budget" in text for text in notices(member))
    followed = boss.get(response["Location"]).content.decode()
    assert "could not start" in followed


# --- The decide view: roles and bad input -----------------------------------------------------


@pytest.fixture
def waiting(charged, workspace, member):
    thresholds(workspace, sound_effect=150)
    return sound_cue(charged, member).job


@pytest.mark.parametrize(
    ("who", "status"),
    [("owner", 303), ("manager", 303), ("member", 403), ("viewer", 403), ("outsider", 404)],
)
def test_who_may_decide_a_waiting_job(request, waiting, client_as, who, status):
    user = request.getfixturevalue(who)
    response = decide(client_as(user), waiting, approve="0", reason="Not this month.")
    assert response.status_code == status
    waiting.refresh_from_db()
    expected = JobStatus.CANCELLED if status == 303 else JobStatus.WAITING
    assert waiting.status == expected


def test_anonymous_is_sent_to_sign_in(waiting, client_as):
    response = decide(client_as(None), waiting, approve="1")
    assert response.status_code == 302 and "login" in response["Location"]
    waiting.refresh_from_db()
    assert waiting.status == JobStatus.WAITING


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_the_approvals_page_is_for_managers(request, waiting, client_as, role):
    response = client_as(request.getfixturevalue(role)).get(reverse("projects:approvals"))
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"approve": "0"}, "Reason: say why the job is refused"),
        ({"approve": "0", "reason": "   "}, "Reason: say why the job is refused"),
        ({"approve": "maybe"}, "Approve or refuse."),
        ({}, "Approve or refuse."),
        ({"approve": "0", "reason": "x" * 501}, "500 characters at most"),
    ],
)
def test_bad_decisions_are_a_400_with_a_message(waiting, manager, client_as, data, words):
    response = decide(client_as(manager), waiting, **data)
    assert response.status_code == 400
    assert words in response.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == JobStatus.WAITING and not UsageEvent.objects.exists()


def test_a_decided_job_cannot_be_decided_again(waiting, manager, owner, client_as):
    assert decide(client_as(manager), waiting, approve="1").status_code == 303
    again = decide(client_as(owner), waiting, approve="0", reason="Too late.")
    assert again.status_code == 400
    assert "no longer waits for approval (it is queued)" in again.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == JobStatus.QUEUED and UsageEvent.objects.count() == 1


def test_a_job_of_another_workspace_or_none_at_all_is_a_404(waiting, outsider, client_as):
    # The outsider is the owner (a manager) of a workspace of their own.
    assert decide(client_as(outsider), waiting, approve="1").status_code == 404
    missing = client_as(outsider).post(
        reverse("projects:job_decide", args=[waiting.pk + 1000]), {"approve": "1"}
    )
    assert missing.status_code == 404
    assert (
        client_as(outsider).get(reverse("projects:job_decide", args=[waiting.pk])).status_code
        == 405
    )


# --- The sweepers ---------------------------------------------------------------------------


def test_the_sweepers_leave_a_waiting_job_alone(waiting):
    later = timezone.now() + timedelta(days=3)
    Job.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - timedelta(days=3))
    assert job_sweep_stale(now=later) == 0
    reservations_sweep(older_than=timedelta(seconds=0))
    waiting.refresh_from_db()
    assert waiting.status == JobStatus.WAITING and waiting.approval.get("decision") is None


# --- /v1 ------------------------------------------------------------------------------------


def test_v1_music_above_the_threshold_is_refused_with_a_clear_403(
    on_elevenlabs, workspace, member, client
):
    from apps.gateway import services as gateway

    issued = gateway.api_key_create(workspace=workspace, user=member, name="Music")
    thresholds(workspace, music=500)
    response = client.post(
        "/v1/music",
        data=json.dumps({"prompt": "a calm piano piece", "music_length_ms": 60000}),
        content_type="application/json",
        headers={"xi-api-key": issued.raw},
    )
    assert response.status_code == 403, response.content
    detail = response.json()["detail"]  # the official error shape
    assert (detail["type"], detail["code"]) == ("authorization_error", "approval_required")
    assert "about 1,000 credits" in detail["message"]
    assert "music jobs above 500 credits need a manager's approval" in detail["message"]
    assert not Job.objects.exists() and not UsageEvent.objects.exists()


# --- Renders: the requester is told ---------------------------------------------------------


def test_a_render_decision_notifies_whoever_asked(
    charged_project,  # noqa: F811
    workspace,
    manager,
    member,
    client_as,
):
    project = charged_project
    narration.threshold_set(workspace=workspace, threshold=1)
    made = narration.render_request(
        workspace=workspace,
        user=member,
        membership=Membership.objects.get(workspace=workspace, user=member),
        project=project,
        scope=RenderScope.PROJECT,
        draft=False,
    )
    assert made.state == RenderState.WAITING
    # The managers are told it waits (in-app, linking to the approvals).
    told = Notification.objects.get(user=manager)
    assert "asks for a final render of" in told.text and told.url == reverse("projects:approvals")
    assert not notices(member)
    page = client_as(manager).get(reverse("projects:approvals"))
    assert page.context["approvals_waiting"] == 1
    response = client_as(manager).post(
        reverse("projects:render_decide", args=[made.pk]),
        {"approve": "0", "reason": "Finish the edit first."},
    )
    assert response.status_code == 303
    assert any("refused" in text and "Finish the edit first." in text for text in notices(member))
    assert Notification.objects.get(user=member).url == reverse(
        "projects:detail", args=[project.public_id]
    )


def test_deleting_a_cue_whose_job_waits_withdraws_the_job(waiting, manager, client_as):
    cue = cues.Cue.objects.get(job=waiting)
    cues.cue_delete(cue)
    waiting.refresh_from_db()
    assert waiting.status == JobStatus.CANCELLED
    page = client_as(manager).get(reverse("projects:approvals"))
    assert page.context["approvals_waiting"] == 0


def test_a_refused_transcription_is_failed_with_the_reason_not_left_waiting(
    charged, workspace, manager, member, client_as
):
    """A transcript whose job a manager refuses says so (it no longer reads "Waiting"), and
    its Retry is refused with the reason: no way round the decision."""
    import io
    import wave

    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.transcripts.models import Transcript, TranscriptStatus

    thresholds(workspace, stt=1)  # 10 seconds of speech-to-text cost more than 1 credit
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(b"\x00\x10" * 16000 * 10)
    client = client_as(member)
    response = client.post(
        reverse("transcripts:new"),
        {"media": SimpleUploadedFile("call.wav", buffer.getvalue(), "audio/wav")},
    )
    assert response.status_code in (302, 303), response.content[:300]
    transcript = Transcript.objects.get(workspace=workspace)
    job = transcript.job
    assert job.status == JobStatus.WAITING and transcript.status == TranscriptStatus.QUEUED
    assert decide(client_as(manager), job, approve="0", reason="Too long").status_code == 303
    transcript.refresh_from_db()
    assert transcript.status == TranscriptStatus.FAILED
    assert transcript.error == "Refused: Too long"
    page = client.get(reverse("transcripts:detail", args=[transcript.pk])).content.decode()
    assert "Refused: Too long" in page
    retry = client.post(reverse("transcripts:retry", args=[transcript.pk]))
    assert retry.status_code == 400 and "No manager approved this job" in retry.content.decode()
    transcript.refresh_from_db()
    assert transcript.status == TranscriptStatus.FAILED and not UsageEvent.objects.exists()
