"""Renders of a project: takes through the core, drafts free on the local engine, finals at
the rate card, stale and locked blocks, the approval threshold, budgets, retries, cancelling,
the regeneration ratio and pronunciation rules heard in a render."""

import io
import re
from decimal import Decimal

import av
import pytest

from apps.billing.models import Budget, UsageEvent, UsageStatus
from apps.engines.base import STTRequest
from apps.engines.local.engine import local_engine
from apps.gateway import services as key_services
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import job_cancel
from apps.projects import narration
from apps.projects.models import (
    Block,
    PronunciationDictionary,
    Render,
    RenderScope,
    RenderState,
    Take,
)
from apps.voices.models import LibraryVoice
from apps.workspaces.models import Membership
from apps.workspaces.services import engine_settings_update
from tests.factories import add_member, make_user, make_workspace

from .conftest import make_script, run_job


def decoded_seconds(audio: bytes) -> float:
    with av.open(io.BytesIO(audio)) as container:
        assert "mp3" in container.format.name.split(",")
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def heard(audio: bytes) -> list[str]:
    text = local_engine().stt(STTRequest(audio=audio, filename="take.mp3")).text
    return re.findall(r"[a-z']+", text.lower())


def membership(workspace, user):
    return Membership.objects.get(workspace=workspace, user=user)


def render(project, user, *, draft=True, scope=RenderScope.PROJECT, target=None, **kwargs):
    return narration.render_request(
        workspace=project.workspace,
        user=user,
        membership=membership(project.workspace, user),
        project=project,
        scope=scope,
        target=target,
        draft=draft,
        **kwargs,
    )


def blocks_of(project):
    return list(
        Block.objects.filter(chapter__project=project).order_by("chapter__position", "position")
    )


def stale_flags(project):
    flags = []
    for chapter in project.chapters.order_by("position"):
        flags += [state.stale for state in narration.chapter_states(chapter, project=project)]
    return flags


# --- Drafts on the local engine -------------------------------------------------------------


def test_a_draft_render_makes_a_free_take_of_every_block_with_its_recipe(project, member):
    asked = render(project, member)
    assert asked.state == RenderState.QUEUED and asked.job is not None
    job = run_job(asked.job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result == {"render": asked.pk, "takes": 5, "blocks": 5}

    blocks = blocks_of(project)
    for index, block in enumerate(blocks):
        take = block.chosen
        assert take is not None and take.draft and take.render_id == asked.pk
        generation = take.generation
        assert generation.engine == "local" and generation.text == block.text
        assert decoded_seconds(generation.file.read()) > 0.8
        recipe = generation.recipe
        assert recipe["project"] == project.public_id and recipe["block"] == block.public_id
        assert recipe["draft"] is True
        # Continuity: the neighbours in the same chapter are sent as context.
        same = [b for b in blocks if b.chapter_id == block.chapter_id]
        position = same.index(block)
        if position > 0:
            assert recipe["previous_text"] == same[position - 1].text
        if position + 1 < len(same):
            assert recipe["next_text"] == same[position + 1].text
        assert index >= 0
    events = UsageEvent.objects.filter(workspace=project.workspace)
    assert events.count() == 5
    assert {(e.engine, e.status, e.credits, e.source) for e in events} == {
        ("local", UsageStatus.SETTLED, Decimal(0), "ui")
    }
    assert not any(stale_flags(project))
    with pytest.raises(narration.ProjectRefused, match="Nothing to render"):
        render(project, member)


def test_a_change_makes_a_block_stale_and_only_stale_unlocked_blocks_render_again(
    project, member, other_voice
):
    run_job(render(project, member).job)
    first, second, third, fourth, fifth = blocks_of(project)
    narration.block_update(first, text="The boats came in after dawn.")
    narration.block_update(second, seed=7)
    narration.block_update(third, voice_settings={"stability": 0.2})
    narration.block_update(third, locked=True)
    assert stale_flags(project) == [True, True, True, False, False]

    # A speaker re-voiced re-voices its blocks: both become stale with one change.
    speaker = narration.speaker_save(project=project, name="Guide", voice_id="local-joe")
    for block in (fourth, fifth):
        narration.block_update(block, speaker=speaker)
    assert stale_flags(project) == [True, True, True, False, False]  # same voice as before
    narration.speaker_save(
        project=project, name="Guide", voice_id=other_voice.voice_id, speaker=speaker
    )
    assert stale_flags(project) == [True, True, True, True, True]
    fourth.refresh_from_db()
    assert narration.block_voice(fourth, project=project, chapter=fourth.chapter) == (
        other_voice.voice_id
    )

    again = render(project, member)
    assert again.block_ids == [first.pk, second.pk, fourth.pk, fifth.pk]  # the locked one waits
    old_third_take = Block.objects.get(pk=third.pk).chosen_id
    run_job(again.job)
    assert Block.objects.get(pk=third.pk).chosen_id == old_third_take
    assert stale_flags(project) == [False, False, True, False, False]
    fourth.refresh_from_db()
    assert fourth.chosen.generation.voice_id == other_voice.voice_id
    assert Take.objects.filter(block=third).count() == 1


def test_one_block_renders_again_on_request_and_the_takes_can_be_chosen(project, member):
    block = blocks_of(project)[0]
    run_job(render(project, member, scope=RenderScope.BLOCK, target=block).job)
    first_take = Block.objects.get(pk=block.pk).chosen
    run_job(render(project, member, scope=RenderScope.BLOCK, target=block).job)
    block.refresh_from_db()
    assert block.chosen_id != first_take.pk
    assert block.takes.count() == 2
    narration.take_choose(first_take)
    block.refresh_from_db()
    assert block.chosen_id == first_take.pk
    narration.block_update(block, locked=True)
    with pytest.raises(narration.ProjectRefused, match="Nothing to render"):
        render(project, member, scope=RenderScope.BLOCK, target=block)


# --- Cancelling, retries ------------------------------------------------------------------


def test_cancelling_a_render_keeps_the_takes_made(project, member, monkeypatch):
    asked = render(project, member)
    real_speak = narration.speak
    calls = []

    def speak_then_cancel(**kwargs):
        calls.append(kwargs["speech"].text)
        result = real_speak(**kwargs)
        if len(calls) == 2:
            job_cancel(job=Job.objects.get(pk=asked.job_id))
        return result

    monkeypatch.setattr(narration, "speak", speak_then_cancel)
    job = run_job(asked.job)
    assert job.status == JobStatus.CANCELLED
    assert len(calls) == 2
    assert Take.objects.filter(render=asked).count() == 2
    assert [b.chosen_id is not None for b in blocks_of(project)] == [
        True,
        True,
        False,
        False,
        False,
    ]


def test_a_retried_render_adopts_the_clips_an_earlier_run_kept_and_pays_nothing_twice(
    project, member
):
    asked = render(project, member)
    job = run_job(asked.job)
    generations = {t.block_id: t.generation_id for t in Take.objects.filter(render=asked)}
    events = UsageEvent.objects.count()
    # The run died after keeping its clips but before recording them as takes.
    Block.objects.filter(chapter__project=project).update(chosen=None)
    Take.objects.filter(render=asked).delete()
    narration.render_run(job=job, progress=lambda *args: None)
    assert UsageEvent.objects.count() == events
    assert {t.block_id: t.generation_id for t in Take.objects.filter(render=asked)} == generations


# --- Finals, approvals and budgets on an engine that charges -----------------------------------


@pytest.fixture
def charged_project(on_elevenlabs, member, manager):
    workspace = on_elevenlabs
    LibraryVoice.objects.create(
        workspace=workspace, engine="elevenlabs", voice_id="21m00Tcm4TlvDq8ikWAM", name="Rachel"
    )
    return narration.project_create(
        workspace=workspace,
        user=member,
        script=make_script(),
        default_voice_id="21m00Tcm4TlvDq8ikWAM",
    )


def test_the_estimate_is_characters_times_the_rate_card_and_drafts_are_free(
    charged_project, member
):
    blocks = blocks_of(charged_project)
    characters = sum(len(b.text) for b in blocks)
    final = narration.render_estimate(
        workspace=charged_project.workspace,
        user=member,
        project=charged_project,
        blocks=blocks,
        draft=False,
    )
    assert (final.characters, final.credits) == (characters, Decimal(characters))
    draft = narration.render_estimate(
        workspace=charged_project.workspace,
        user=member,
        project=charged_project,
        blocks=blocks,
        draft=True,
    )
    assert draft.credits == 0


def test_a_final_render_above_the_threshold_waits_for_a_manager(
    charged_project, member, manager, owner
):
    workspace = charged_project.workspace
    narration.threshold_set(workspace=workspace, threshold="50")
    waiting = render(charged_project, member, draft=False)
    assert waiting.state == RenderState.WAITING and waiting.job is None
    assert list(narration.approvals_waiting(workspace)) == [waiting]
    assert waiting.credits_estimate == Decimal(waiting.characters)

    # Drafts never wait; a manager's own final does not either.
    assert render(charged_project, member, draft=True).state == RenderState.QUEUED
    assert render(charged_project, manager, draft=False).state == RenderState.QUEUED

    with pytest.raises(narration.ProjectRefused, match="Only managers"):
        narration.render_decide(
            render=waiting, user=member, membership=membership(workspace, member), approve=True
        )
    with pytest.raises(narration.ProjectRefused, match="say why"):
        narration.render_decide(
            render=waiting, user=manager, membership=membership(workspace, manager), approve=False
        )
    refused = narration.render_decide(
        render=waiting,
        user=manager,
        membership=membership(workspace, manager),
        approve=False,
        reason="Wait for the script review.",
    )
    assert (refused.state, refused.reason, refused.job) == (
        RenderState.REFUSED,
        "Wait for the script review.",
        None,
    )
    with pytest.raises(narration.ProjectRefused, match="already decided"):
        narration.render_decide(
            render=refused, user=owner, membership=membership(workspace, owner), approve=True
        )

    second = render(charged_project, member, draft=False)
    approved = narration.render_decide(
        render=second, user=owner, membership=membership(workspace, owner), approve=True
    )
    assert approved.state == RenderState.QUEUED and approved.job is not None
    assert approved.decided_by == owner
    # Below the threshold: no wait.
    narration.threshold_set(workspace=workspace, threshold="")
    assert render(charged_project, member, draft=False).state == RenderState.QUEUED


def test_a_render_the_budget_cannot_cover_is_refused_before_anything_exists(
    charged_project, member
):
    Budget.objects.create(workspace=charged_project.workspace, user=member, limit_credits=20)
    with pytest.raises(narration.ProjectRefused) as refused:
        render(charged_project, member, draft=False)
    assert "needs 147 credits (147 characters)" in str(refused.value)
    assert "your budget would not cover it" in str(refused.value)
    assert not Render.objects.exists() and not Job.objects.exists()
    # A draft is free, so the same budget lets it through.
    assert render(charged_project, member, draft=True).state == RenderState.QUEUED


@pytest.mark.slow
def test_finals_run_on_the_workspace_engine_through_a_chorus_upstream_and_drafts_locally(
    daphne_server, workspace, member
):
    """A front Chorus on the ElevenLabs engine whose upstream is this Chorus (local engine)
    over real sockets: a final render goes upstream and is charged what the provider reports
    (this upstream, on its local engine, reports 0); a draft never leaves the front."""
    upstream_key = key_services.api_key_create(workspace=workspace, user=member, name="Upstream")
    boss = make_user("boss@example.com", name="Bea Boss")
    front = make_workspace("Front office", owner=boss)
    writer = make_user("writer@example.com", name="Wren Writer")
    add_member(front, writer, "member")
    engine_settings_update(
        workspace=front,
        actor=boss,
        kind="elevenlabs",
        api_key=upstream_key.raw,
        base_url=daphne_server.url,
    )
    LibraryVoice.objects.create(
        workspace=front, engine="elevenlabs", voice_id="local-joe", name="Joe"
    )
    project = narration.project_create(
        workspace=front, user=writer, script=make_script(), default_voice_id="local-joe"
    )
    draft = render(project, writer, draft=True)
    assert run_job(draft.job).status == JobStatus.SUCCEEDED
    upstream_calls = UsageEvent.objects.filter(workspace=workspace).count()
    assert upstream_calls == 0  # drafts never reach the provider
    final = render(project, writer, draft=False)
    assert final.block_ids == [b.pk for b in blocks_of(project)]  # a draft is not a final
    job = run_job(final.job)
    assert job.status == JobStatus.SUCCEEDED, job.error

    events = UsageEvent.objects.filter(workspace=front).order_by("id")
    drafts = [e for e in events if e.engine == "local"]
    finals = [e for e in events if e.engine == "elevenlabs"]
    assert len(drafts) == len(finals) == 5
    texts = [b.text for b in blocks_of(project)]
    assert [e.units for e in finals] == [len(text) for text in texts]
    assert all(e.status == UsageStatus.SETTLED for e in events)
    back = list(UsageEvent.objects.filter(workspace=workspace).order_by("id"))
    assert [(e.engine, e.units) for e in back] == [("local", len(text)) for text in texts]
    assert [e.credits for e in finals] == [e.credits for e in back]  # what the provider said
    for block in blocks_of(project):
        assert not block.chosen.draft and decoded_seconds(block.chosen.generation.file.read()) > 0.8
    ratio = narration.regeneration(narration.project_takes(project))
    assert (ratio.takes, ratio.blocks, ratio.drafts, ratio.ratio) == (5, 5, 5, 1.0)
    # A final take serves drafts too: nothing is left to draft.
    assert narration.render_targets(project=project, scope=RenderScope.PROJECT, draft=True) == []


def test_a_final_render_is_charged_at_the_providers_rate_per_block_and_kept_on_each_take(
    charged_project, member, upstream
):
    from tests.gateway.test_api_faults import AUDIO, audio_reply

    texts = [b.text for b in blocks_of(charged_project)]
    upstream(*[audio_reply(f"up-{i}", str(len(text)), AUDIO) for i, text in enumerate(texts)])
    job = run_job(render(charged_project, member, draft=False).job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    takes = [b.chosen for b in blocks_of(charged_project)]
    assert [t.credits for t in takes] == [Decimal(len(text)) for text in texts]
    assert all(not t.draft and t.generation.engine == "elevenlabs" for t in takes)
    events = UsageEvent.objects.filter(workspace=charged_project.workspace)
    assert sum(e.credits for e in events) == sum(len(text) for text in texts)


def test_the_regeneration_ratio_by_project_chapter_and_member(project, member, manager):
    from apps.history.services import generation_save

    blocks = blocks_of(project)

    def take(block, user, draft):
        generation = generation_save(
            workspace=project.workspace,
            user=user,
            kind="tts",
            engine="local",
            audio=b"ID3",
            content_type="audio/mpeg",
            recipe={},
            text=block.text,
        )
        return Take.objects.create(
            workspace=project.workspace,
            block=block,
            generation=generation,
            draft=draft,
            signature="x",
            user=user,
        )

    take(blocks[0], member, False)
    take(blocks[0], member, False)
    take(blocks[0], manager, False)
    take(blocks[1], member, False)
    take(blocks[3], manager, False)
    take(blocks[3], manager, True)
    takes = narration.project_takes(project)
    whole = narration.regeneration(takes)
    assert (whole.takes, whole.blocks, whole.drafts, whole.ratio) == (5, 3, 1, 1.67)
    by_chapter = narration.regeneration_by(takes, "block__chapter")
    assert [(r["takes"], r["blocks"], r["ratio"]) for r in by_chapter] == [(4, 2, 2.0), (1, 1, 1.0)]
    by_member = {r["user"]: r for r in narration.regeneration_by(takes, "user")}
    assert (by_member[member.pk]["takes"], by_member[member.pk]["ratio"]) == (3, 1.5)
    assert (by_member[manager.pk]["takes"], by_member[manager.pk]["drafts"]) == (2, 1)


# --- Pronunciation ---------------------------------------------------------------------------


def test_a_dictionary_attached_to_the_project_is_heard_in_its_drafts(workspace, member, voice):
    project = narration.project_create(
        workspace=workspace,
        user=member,
        script=make_script((("One", ("Say hello to Chorus today.",)),)),
        default_voice_id=voice.voice_id,
    )
    run_job(render(project, member).job)
    before = blocks_of(project)[0].chosen
    assert "bananas" not in heard(before.generation.file.read())

    dictionary = PronunciationDictionary.objects.create(
        workspace=workspace,
        name="Brand names",
        rules=[{"type": "alias", "string_to_replace": "Chorus", "alias": "Bananas"}],
    )
    project.dictionaries.add(dictionary)
    assert stale_flags(project) == [True]  # the rules changed what a render sends
    run_job(render(project, member).job)
    after = blocks_of(project)[0].chosen
    assert after.pk != before.pk
    assert "bananas" in heard(after.generation.file.read())
    assert after.generation.text == "Say hello to Chorus today."  # the script is unchanged
    assert after.generation.recipe["pronunciation_dictionaries"] == [
        {"pronunciation_dictionary_id": dictionary.public_id, "version_id": dictionary.version_id}
    ]


@pytest.mark.django_db(transaction=True)
def test_a_render_speaks_blocks_side_by_side_and_keeps_every_take_in_place(
    project, member, settings
):
    settings.CHORUS_PROJECT_RENDER_THREADS = 2
    asked = render(project, member)
    seen = []
    job = Job.objects.get(pk=asked.job_id)
    result = narration.render_run(
        job=job, progress=lambda percent, message="": seen.append(percent)
    )
    assert result == {"render": asked.pk, "takes": 5, "blocks": 5}
    assert seen == sorted(seen) and seen[-1] == 99
    for block in blocks_of(project):
        assert block.chosen.generation.text == block.text
        assert block.chosen.render_id == asked.pk


def test_a_clip_deleted_from_history_takes_its_take_and_a_workspace_goes_whole(
    project, member, client_as
):
    from django.urls import reverse

    from apps.workspaces.models import Workspace

    run_job(render(project, member).job)
    block = blocks_of(project)[0]
    clip = block.chosen.generation
    response = client_as(member).post(reverse("history:delete", args=[clip.pk]))
    assert response.status_code in (200, 302, 303)
    block.refresh_from_db()
    assert block.chosen is None and not block.takes.exists()
    assert stale_flags(project)[0] is True
    Workspace.objects.filter(pk=project.workspace_id).delete()
    assert not Block.objects.exists() and not Take.objects.exists()
