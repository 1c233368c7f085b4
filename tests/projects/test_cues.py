"""Sound and music cues of a project: made as real jobs on the local engine, decoded, metered
once, refused whole when over budget or out of range, placed, fed to the chapter player, and
the role matrix of their pages."""

import io
from decimal import Decimal

import av
import pytest
from django.urls import reverse

from apps.billing.models import Budget, UsageEvent, UsageStatus
from apps.history.models import Generation
from apps.jobs import services as jobs
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import JobCancelled
from apps.projects import cues
from apps.projects.cues import CueRefused
from apps.projects.models import Block, Chapter, Cue
from apps.voices import services as voice_services
from tests.conftest import HTMX
from tests.factories import make_user, make_workspace

from .conftest import make_script, run_job


def decoded_seconds(generation: Generation) -> float:
    """How long the kept clip plays, decoded with PyAV (every frame, not the header)."""
    with generation.file.open("rb") as handle:
        data = handle.read()
    samples, rate = 0, None
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            samples += frame.samples
            rate = frame.sample_rate
    assert rate, "no audio decoded"
    return samples / rate


def blocks_of(project):
    return list(
        Block.objects.filter(chapter__project=project).order_by("chapter__position", "position")
    )


def ledger(cue):
    return list(
        UsageEvent.objects.filter(purpose_type="project_cue", purpose_id=str(cue.pk)).order_by("id")
    )


# --- Made for real, through the job machinery ----------------------------------------------


def test_a_sound_cue_is_made_by_its_job_kept_with_its_recipe_and_metered_once(
    workspace, member, project
):
    block = blocks_of(project)[1]
    cue = cues.cue_start(
        workspace=workspace,
        user=member,
        project=project,
        kind="sound",
        prompt="a heavy door creaks open",
        duration_seconds=2.5,
        block=block,
        placement="under",
        volume_db=-6,
        seed=11,
    )
    [reserved] = ledger(cue)
    assert reserved.status == UsageStatus.RESERVED and reserved.capability == "sound_effect"
    assert cue.job.kind == "project_cue" and cue.job.status == JobStatus.QUEUED

    job = run_job(cue.job)

    assert job.status == JobStatus.SUCCEEDED, job.error
    cue.refresh_from_db()
    generation = cue.generation
    assert generation is not None and generation.kind == "sound"
    assert abs(decoded_seconds(generation) - 2.5) <= 0.5
    recipe = generation.recipe
    assert recipe["prompt"] == "a heavy door creaks open"
    assert recipe["duration_seconds"] == 2.5
    assert recipe["seed"] == 11
    assert recipe["project"] == project.public_id and recipe["block"] == block.public_id
    assert recipe["cue"] == cue.pk
    # The start's reservation was released for the sound call, which is the one charged.
    rows = ledger(cue)
    assert [r.status for r in rows] == [UsageStatus.REFUNDED, UsageStatus.SETTLED]
    assert rows[1].credits == Decimal(0)  # the local engine is free
    assert generation.usage_event_id == rows[1].pk

    # A redelivered run (or a retry) adopts what was kept: nothing new, nothing charged.
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    Cue.objects.filter(pk=cue.pk).update(generation=None)
    job = run_job(jobs.job_retry(job=job))
    assert job.status == JobStatus.SUCCEEDED, job.error
    cue.refresh_from_db()
    assert cue.generation_id == generation.pk
    assert Generation.objects.filter(kind="sound").count() == 1
    assert len(ledger(cue)) == 2


def test_a_music_cue_takes_over_its_reservation_and_decodes_at_its_length(
    workspace, member, project
):
    cue = cues.cue_start(
        workspace=workspace,
        user=member,
        project=project,
        kind="music",
        prompt="slow warm strings",
        duration_seconds=4,
    )
    [reserved] = ledger(cue)
    job = run_job(cue.job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    cue.refresh_from_db()
    generation = cue.generation
    assert generation.kind == "music"
    assert abs(decoded_seconds(generation) - 4.0) <= 0.5
    assert generation.recipe["project"] == project.public_id
    assert generation.recipe["block"] is None
    assert generation.recipe["duration_seconds"] == 4.0
    assert generation.recipe["seed"] is not None  # the seed the engine chose, to remake it
    [event] = ledger(cue)  # the start's row, settled by the job: metered exactly once
    assert event.pk == reserved.pk and event.status == UsageStatus.SETTLED
    assert event.credits == Decimal(0) and generation.usage_event_id == event.pk
    assert abs(cue.duration_seconds - 4.0) <= 0.5


def test_a_job_cancelled_before_its_engine_call_keeps_nothing(workspace, member, project):
    cue = cues.cue_start(
        workspace=workspace, user=member, project=project, kind="music", prompt="drums",
        duration_seconds=3,
    )  # fmt: skip

    def cancelled(percent, message=""):
        raise JobCancelled()

    with pytest.raises(JobCancelled):
        cues.cue_run(job=cue.job, progress=cancelled)
    assert [e.status for e in ledger(cue)] == [UsageStatus.REFUNDED]
    assert not Generation.objects.exists()
    cue.refresh_from_db()
    assert cue.generation is None


def test_deleting_a_queued_cue_cancels_its_job_and_releases_its_credits(workspace, member, project):
    cue = cues.cue_start(
        workspace=workspace, user=member, project=project, kind="sound", prompt="rain",
        duration_seconds=1,
    )  # fmt: skip
    job, cue_id = cue.job, cue.pk
    cues.cue_delete(cue)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert not Cue.objects.filter(pk=cue_id).exists()
    assert [e.status for e in UsageEvent.objects.all()] == [UsageStatus.REFUNDED]
    assert run_job(job).status == JobStatus.CANCELLED  # a late message runs nothing
    assert not Generation.objects.exists()


# --- Estimates and budgets ------------------------------------------------------------------


def test_estimates_are_free_on_the_local_engine(workspace, member):
    estimate = cues.cue_estimate(workspace, member, "music", "piano", 60)
    assert estimate.credits == Decimal(0) and estimate.blocked_by is None


def test_a_budget_refuses_a_cue_that_does_not_fit_and_keeps_nothing(
    request, workspace, member, project, client_as
):
    request.getfixturevalue("on_elevenlabs")  # after the project: its rate card costs
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(300))
    sound = cues.cue_estimate(workspace, member, "sound", "a bell", 2)
    music = cues.cue_estimate(workspace, member, "music", "a long calm piano piece", 60)
    assert sound.credits == Decimal(200) and sound.blocked_by is None  # per generation
    assert music.credits == Decimal(1000) and "budget" in music.blocked_by  # a minute

    fits = cues.cue_start(
        workspace=workspace, user=member, project=project, kind="sound", prompt="a bell",
        duration_seconds=2,
    )  # fmt: skip
    assert [(e.status, e.estimated_credits) for e in ledger(fits)] == [
        (UsageStatus.RESERVED, Decimal(200))
    ]
    before = (Cue.objects.count(), Job.objects.count(), UsageEvent.objects.count())
    with pytest.raises(CueRefused) as refused:
        cues.cue_start(
            workspace=workspace, user=member, project=project, kind="music",
            prompt="a long calm piano piece", duration_seconds=60,
        )  # fmt: skip
    message = str(refused.value)
    assert "1,000 credits" in message and "Mia Member's budget" in message
    assert "100 left" in message
    assert (Cue.objects.count(), Job.objects.count(), UsageEvent.objects.count()) == before

    # The page says the same, next to the form, with a 400 and nothing made.
    response = client_as(member).post(
        reverse("projects:cue_create", args=[project.public_id]),
        {"kind": "music", "prompt": "a long calm piano piece", "duration_seconds": "60"},
    )
    assert response.status_code == 400
    assert "Mia Member&#x27;s budget" in response.content.decode()
    assert (Cue.objects.count(), Job.objects.count(), UsageEvent.objects.count()) == before


# --- Refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"prompt": "   "}, "prompt", "describe"),
        ({"prompt": "x" * 1001}, "prompt", "1,000"),
        ({"kind": "speech"}, "kind", "sound effect or music"),
        ({"duration_seconds": 0.2}, "duration_seconds", "0.5 to 30 seconds"),
        ({"duration_seconds": 31}, "duration_seconds", "0.5 to 30 seconds"),
        ({"kind": "music", "duration_seconds": 2}, "duration_seconds", "3 to 300 seconds"),
        ({"kind": "music", "duration_seconds": 301}, "duration_seconds", "3 to 300 seconds"),
        ({"duration_seconds": "nan"}, "duration_seconds", "number"),
        ({"seed": -1}, "seed", "0 to"),
        ({"volume_db": 7}, "volume_db", "+6 dB"),
        ({"volume_db": -41}, "volume_db", "-40 dB"),
        ({"placement": "before"}, "placement", "after the block or under it"),
    ],
)
def test_bad_input_is_refused_clearly_before_anything_is_kept(
    workspace, member, project, fields, field, words
):
    asked = {"kind": "sound", "prompt": "a bell", "duration_seconds": 2, **fields}
    with pytest.raises(CueRefused) as refused:
        cues.cue_start(workspace=workspace, user=member, project=project, **asked)
    assert refused.value.field == field and words in str(refused.value)
    assert not Cue.objects.exists() and not Job.objects.exists()
    assert not UsageEvent.objects.exists()


def test_a_block_of_another_project_is_refused(workspace, member, project, voice):
    from apps.projects.narration import project_create

    other = project_create(
        workspace=workspace, user=member, script=make_script(title="Other"),
        default_voice_id=voice.voice_id,
    )  # fmt: skip
    foreign = blocks_of(other)[0]
    with pytest.raises(CueRefused, match="not in this project"):
        cues.cue_start(
            workspace=workspace, user=member, project=project, kind="sound", prompt="a bell",
            duration_seconds=1, block=foreign,
        )  # fmt: skip
    assert not Cue.objects.exists() and not UsageEvent.objects.exists()


# --- Placement and the chapter player ------------------------------------------------------


def made_cue(workspace, member, project, **fields):
    asked = {"kind": "sound", "prompt": "a bell rings", "duration_seconds": 1.5, **fields}
    cue = cues.cue_start(workspace=workspace, user=member, project=project, **asked)
    assert run_job(cue.job).status == JobStatus.SUCCEEDED
    cue.refresh_from_db()
    return cue


def test_placing_a_cue_checks_block_placement_and_volume(workspace, member, project, voice):
    from apps.projects.narration import project_create

    cue = made_cue(workspace, member, project)
    block = blocks_of(project)[2]
    cues.cue_place(cue, block=block, placement="under", volume_db=-12.5)
    cue.refresh_from_db()
    assert (cue.block_id, cue.placement, cue.volume_db) == (block.pk, "under", -12.5)

    other = project_create(
        workspace=workspace, user=member, script=make_script(title="Other"),
        default_voice_id=voice.voice_id,
    )  # fmt: skip
    for kwargs, words in [
        ({"block": blocks_of(other)[0], "placement": "after", "volume_db": 0}, "not in this"),
        ({"block": block, "placement": "over", "volume_db": 0}, "Placement"),
        ({"block": block, "placement": "after", "volume_db": 6.5}, "Volume"),
        ({"block": block, "placement": "after", "volume_db": -40.5}, "Volume"),
        ({"block": block, "placement": "after", "volume_db": "loud"}, "Volume"),
    ]:
        with pytest.raises(CueRefused, match=words):
            cues.cue_place(Cue.objects.get(pk=cue.pk), **kwargs)
    cue.refresh_from_db()
    assert (cue.block_id, cue.placement, cue.volume_db) == (block.pk, "under", -12.5)
    cues.cue_place(cue, block=None, placement="after", volume_db=6)  # unplaced, loudest
    cue.refresh_from_db()
    assert (cue.block_id, cue.volume_db) == (None, 6)


def test_the_chapter_player_gets_the_cues_placed_in_its_chapter(workspace, member, project):
    first, second = Chapter.objects.filter(project=project).order_by("position")
    b1, b2, b3 = Block.objects.filter(chapter=first).order_by("position")
    [c1, _c2] = Block.objects.filter(chapter=second).order_by("position")
    late = made_cue(workspace, member, project, block=b3, placement="after", volume_db=-3)
    early = made_cue(
        workspace, member, project, kind="music", prompt="a soft pad", duration_seconds=3,
        block=b1, placement="under", volume_db=-18,
    )  # fmt: skip
    made_cue(workspace, member, project, block=c1)  # another chapter
    made_cue(workspace, member, project)  # not placed
    cues.cue_start(  # not made yet
        workspace=workspace, user=member, project=project, kind="sound", prompt="wind",
        duration_seconds=1, block=b2,
    )  # fmt: skip

    items = cues.cue_queue_items(first)

    assert [item["cue"] for item in items] == [early.pk, late.pk]
    assert items[0] == {
        "cue": early.pk,
        "kind": "music",
        "block": b1.public_id,
        "placement": "under",
        "url": reverse("history:audio", args=[early.generation_id]),
        "volume_db": -18.0,
        "duration": early.generation.duration_seconds,
    }
    assert abs(items[0]["duration"] - 3.0) <= 0.5
    assert items[1]["block"] == b3.public_id and items[1]["placement"] == "after"
    assert abs(items[1]["duration"] - 1.5) <= 0.5
    assert [item["block"] for item in cues.cue_queue_items(second)] == [c1.public_id]


# --- Pages: the role matrix, foreign ids, the forms -----------------------------------------


def urls(project, cue):
    p = project.public_id
    return {
        "list": ("get", reverse("projects:cues", args=[p]), {}),
        "estimate": ("get", reverse("projects:cue_estimate", args=[p]), {"kind": "sound"}),
        "progress": ("get", reverse("projects:cue_progress", args=[p, cue.pk]), {}),
        "create": (
            "post",
            reverse("projects:cue_create", args=[p]),
            {"kind": "sound", "prompt": "a bell", "duration_seconds": "1"},
        ),
        "place": (
            "post",
            reverse("projects:cue_place", args=[p, cue.pk]),
            {f"cue-{cue.pk}-placement": "after", f"cue-{cue.pk}-volume_db": "-3"},
        ),
        "delete": ("post", reverse("projects:cue_delete", args=[p, cue.pk]), {}),
    }


EXPECTED = {
    # who: list, estimate, progress, create, place, delete
    "anonymous": (302, 302, 302, 302, 302, 302),
    "outsider": (404, 404, 404, 404, 404, 404),
    "viewer": (200, 403, 200, 403, 403, 403),
    "member": (200, 200, 200, 302, 302, 302),
    "manager": (200, 200, 200, 302, 302, 302),
    "owner": (200, 200, 200, 302, 302, 302),
}


@pytest.mark.parametrize("who", list(EXPECTED))
def test_role_matrix(who, request, client_as, workspace, member, project):
    user = None if who == "anonymous" else request.getfixturevalue(who)
    client = client_as(user)
    for (name, (method, url, data)), expected in zip(
        urls(project, made_cue(workspace, member, project)).items(), EXPECTED[who], strict=True
    ):
        if name == "delete":  # a cue of its own, so the earlier rows still exist
            url = urls(project, made_cue(workspace, member, project))["delete"][1]
        response = getattr(client, method)(url, data)
        assert response.status_code == expected, (who, name, response.status_code)
        if who == "anonymous":
            assert reverse("login") in response["Location"]


def test_foreign_projects_and_cues_are_404(client_as, workspace, member, project, voice):
    from apps.projects.narration import project_create

    elsewhere_owner = make_user("else@example.com")
    elsewhere = make_workspace("Elsewhere", owner=elsewhere_owner)
    voice_services.library_sync(workspace=elsewhere)
    theirs = project_create(
        workspace=elsewhere, user=elsewhere_owner, script=make_script(title="Theirs"),
        default_voice_id=voice.voice_id,
    )  # fmt: skip
    their_cue = made_cue(elsewhere, elsewhere_owner, theirs)
    ours = project_create(
        workspace=workspace, user=member, script=make_script(title="Ours too"),
        default_voice_id=voice.voice_id,
    )  # fmt: skip
    cue_of_other_project = made_cue(workspace, member, ours)
    client = client_as(member)
    for method, url, data in urls(theirs, their_cue).values():
        assert getattr(client, method)(url, data).status_code == 404, url
    for name, (method, url, data) in urls(project, cue_of_other_project).items():
        if name in ("progress", "place", "delete"):
            assert getattr(client, method)(url, data).status_code == 404, url
    assert Cue.objects.filter(pk=cue_of_other_project.pk).exists()
    # A foreign block id in the placement form: a clear 400, the cue unchanged.
    cue = made_cue(workspace, member, project)
    response = client.post(
        reverse("projects:cue_place", args=[project.public_id, cue.pk]),
        {
            f"cue-{cue.pk}-block": blocks_of(ours)[0].public_id,
            f"cue-{cue.pk}-placement": "after",
            f"cue-{cue.pk}-volume_db": "0",
        },
        **HTMX,
    )
    assert response.status_code == 400
    assert "Block: that block is not in this project." in response.content.decode()
    cue.refresh_from_db()
    assert cue.block_id is None


def test_the_cues_page_makes_places_and_plays_a_cue(client_as, workspace, member, viewer, project):
    client = client_as(member)
    page = client.get(reverse("projects:cues", args=[project.public_id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="prompt"' in html and 'id="cue-estimate"' in html and "No cues yet" in html

    estimate = client.get(
        reverse("projects:cue_estimate", args=[project.public_id]),
        {"kind": "music", "duration_seconds": "500"},
        **HTMX,
    )
    assert "3 to 300 seconds" in estimate.content.decode()

    bad = client.post(
        reverse("projects:cue_create", args=[project.public_id]),
        {"kind": "sound", "prompt": "a bell", "duration_seconds": "45"},
    )
    assert bad.status_code == 400 and "0.5 to 30 seconds" in bad.content.decode()
    assert not Cue.objects.exists()

    made = client.post(
        reverse("projects:cue_create", args=[project.public_id]),
        {"kind": "sound", "prompt": "a bell", "duration_seconds": "1.5", "seed": "5"},
    )
    assert made.status_code == 302
    cue = Cue.objects.get()
    row = client.get(reverse("projects:cue_progress", args=[project.public_id, cue.pk]), **HTMX)
    assert "data-job-socket" in row.content.decode()  # still queued: the row polls
    run_job(cue.job)
    cue.refresh_from_db()
    block = blocks_of(project)[0]
    placed = client.post(
        reverse("projects:cue_place", args=[project.public_id, cue.pk]),
        {
            f"cue-{cue.pk}-block": block.public_id,
            f"cue-{cue.pk}-placement": "under",
            f"cue-{cue.pk}-volume_db": "-9",
        },
        **HTMX,
    )
    assert placed.status_code == 200
    cue.refresh_from_db()
    assert (cue.block_id, cue.placement, cue.volume_db) == (block.pk, "under", -9)
    audio = reverse("history:audio", args=[cue.generation_id])
    assert audio in placed.content.decode() and "data-job-socket" not in placed.content.decode()

    listen = client_as(viewer).get(reverse("projects:cues", args=[project.public_id]))
    html = listen.content.decode()
    assert audio in html and 'name="prompt"' not in html and "/place/" not in html
    assert client_as(viewer).get(audio).status_code == 200
