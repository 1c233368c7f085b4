"""Project work reaches the ledger and the rollup under its project: block renders and cues
(real renders and real audio on the local engine, with their shadow cost)."""

from decimal import Decimal

import pytest
from django.db.models import Sum

from apps.billing.models import SpendRollup, UsageEvent, UsageStatus
from apps.billing.rollup import rollup_rebuild
from apps.billing.services import credits_for, rate_for
from apps.jobs.models import JobStatus
from apps.projects import cues, narration
from apps.projects.models import Block
from apps.voices import services as voice_services
from apps.voices.models import LibraryVoice
from apps.workspaces.models import Membership
from tests.projects.conftest import make_script, run_job


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def project(workspace, member):
    voice_services.library_sync(workspace=workspace)  # the local engine's voices
    voice = LibraryVoice.objects.get(workspace=workspace, voice_id="local-joe")
    return narration.project_create(
        workspace=workspace, user=member, script=make_script(), default_voice_id=voice.voice_id
    )


def _rollup_of(project) -> dict:
    return SpendRollup.objects.filter(project=project.public_id).aggregate(
        events=Sum("events"), credits=Sum("credits"), shadow=Sum("shadow_credits")
    )


def test_a_draft_render_records_each_block_under_its_project_with_its_shadow_cost(project, member):
    asked = narration.render_request(
        workspace=project.workspace,
        user=member,
        membership=Membership.objects.get(workspace=project.workspace, user=member),
        project=project,
        scope="project",
        target=None,
        draft=True,
    )
    job = run_job(asked.job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    events = list(UsageEvent.objects.filter(workspace=project.workspace))
    blocks = Block.objects.filter(chapter__project=project)
    assert len(events) == blocks.count() == 5
    assert {(e.project, e.engine, e.status, e.credits) for e in events} == {
        (project.public_id, "local", UsageStatus.SETTLED, Decimal(0))
    }
    for event in events:  # each block's characters at the ElevenLabs rate of its model
        rate = rate_for(project.workspace, "tts", event.model_id, "elevenlabs")
        assert event.shadow_credits == credits_for(rate, event.units) > 0
    shadow = sum(e.shadow_credits for e in events)
    assert _rollup_of(project) == {"events": 5, "credits": Decimal(0), "shadow": shadow}
    rows = SpendRollup.objects.values_list("hour", "voice_id", "events", "shadow_credits")
    live = set(rows)
    rollup_rebuild(workspace=project.workspace)
    assert set(rows.all()) == live


def test_cues_are_reserved_and_settled_under_their_project(workspace, member, project):
    sound = cues.cue_start(
        workspace=workspace, user=member, project=project, kind="sound",
        prompt="a heavy door creaks open", duration_seconds=2.5,
        block=Block.objects.filter(chapter__project=project).first(), placement="under",
        volume_db=-6, seed=11,
    )  # fmt: skip
    music = cues.cue_start(
        workspace=workspace, user=member, project=project, kind="music",
        prompt="slow warm strings", duration_seconds=4,
    )  # fmt: skip
    reserved = list(UsageEvent.objects.filter(workspace=workspace))
    assert {(e.project, e.status) for e in reserved} == {(project.public_id, UsageStatus.RESERVED)}
    for cue in (sound, music):
        job = run_job(cue.job)
        assert job.status == JobStatus.SUCCEEDED, job.error
    settled = UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED)
    assert {(e.capability, e.project) for e in settled} == {
        ("sound_effect", project.public_id),
        ("music", project.public_id),
    }
    sound_row = settled.get(capability="sound_effect")
    assert sound_row.shadow_credits == Decimal(200)  # one generation at the default rate
    music_row = settled.get(capability="music")
    assert music_row.shadow_credits == credits_for(
        rate_for(workspace, "music", music_row.model_id, "elevenlabs"), music_row.units
    )
    assert _rollup_of(project) == {
        "events": 2,
        "credits": Decimal(0),
        "shadow": sound_row.shadow_credits + music_row.shadow_credits,
    }
