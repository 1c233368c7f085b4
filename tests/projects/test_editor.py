"""The chapter editor (apps/projects/views_editor.py): blocks with their states, every block
action on the real database, takes, refusals, the chapter player's queue, and a constant
number of queries however many blocks.

Takes are real: a draft render of the chapter runs as the job a worker runs (the local
engine speaks each block), and the queue's audio is decoded."""

import io
import json
import re
import time

import av
import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.engines.pronunciation import PronunciationRule
from apps.jobs.models import Job
from apps.jobs.tasks import job_run
from apps.projects import cues, dictionaries, narration
from apps.projects.importers import ImportedChapter
from apps.projects.models import Block, Chapter, RenderScope, Take
from apps.workspaces.models import Membership
from tests.conftest import HTMX
from tests.projects.conftest import run_job

pytestmark = pytest.mark.django_db


# --- Helpers ------------------------------------------------------------------------------


def chapter_url(project, chapter):
    return reverse("projects:chapter", args=[project.public_id, chapter.public_id])


def block_url(name, block, *extra):
    chapter = block.chapter
    return reverse(
        f"projects:{name}",
        args=[chapter.project.public_id, chapter.public_id, block.public_id, *extra],
    )


def first_chapter(project) -> Chapter:
    return project.chapters.order_by("position").first()


def blocks_of(chapter) -> list[Block]:
    return list(Block.objects.filter(chapter=chapter).order_by("position", "id"))


def snapshot(chapter):
    """Everything the editor can change, to prove a refusal changed nothing."""
    return [
        (
            b.public_id,
            b.position,
            b.text,
            b.voice_id,
            b.speaker_id,
            b.model_id,
            b.voice_settings,
            b.seed,
            b.locked,
            b.chosen_id,
        )
        for b in blocks_of(chapter)
    ]


def render(project, user, scope, target, *, draft=True):
    """A render of ``scope`` run in this process exactly as a worker runs it."""
    membership = Membership.objects.get(workspace=project.workspace, user=user)
    request = narration.render_request(
        workspace=project.workspace,
        user=user,
        membership=membership,
        project=project,
        scope=scope,
        target=target,
        draft=draft,
    )
    job = Job.objects.get(pk=request.job_id)
    job_run(job.pk, job.attempt)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return request


def states(body: str) -> dict[str, str]:
    """Block public id → the data-state of its badges, as the page shows them."""
    found = {}
    for match in re.finditer(
        r'<li id="block-([^"]+)" class="block-row[^"]*".*?data-state="([^"]+)"', body, re.S
    ):
        found[match.group(1)] = match.group(2)
    return found


def decoded_seconds_and_rms(data: bytes) -> tuple[float, float]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        pieces = [
            frame.to_ndarray().astype(np.float64).reshape(-1) for frame in container.decode(stream)
        ]
        rate = stream.codec_context.sample_rate
        channels = stream.codec_context.channels or 1
    samples = np.concatenate(pieces)
    if np.abs(samples).max() > 2:  # integer samples
        samples = samples / 32768.0
    return len(samples) / channels / rate, float(np.sqrt(np.mean(samples**2)))


@pytest.fixture
def rendered(project, member):
    """The first chapter rendered as drafts: every block has a chosen take."""
    chapter = first_chapter(project)
    render(project, member, RenderScope.CHAPTER, chapter)
    return chapter


@pytest.fixture
def editor(client_as, member):
    return client_as(member)


# --- The page -----------------------------------------------------------------------------


def test_the_editor_shows_every_block_with_its_state_and_plays_the_chosen_takes(
    editor, project, rendered, member, other_voice
):
    chapter = rendered
    one, two, three = blocks_of(chapter)
    narration.block_update(two, text="Nobody on the quay said a single word.")  # stale
    narration.block_update(three, locked=True)
    four = narration.block_insert(chapter=chapter, text="A fourth block, never rendered.")
    response = editor.get(chapter_url(project, chapter))
    assert response.status_code == 200
    body = response.content.decode()
    assert states(body) == {
        one.public_id: "draft",
        two.public_id: "stale",
        three.public_id: "draft locked",
        four.public_id: "none",
    }
    assert body.count('class="badge state-stale"') == 1
    assert "No take yet: the chapter player skips it." in body
    assert "1 block without a chosen take is skipped" in body

    # The chapter player's queue: the chosen takes in order, the block without one skipped.
    match = re.search(r'<script id="chapter-queue" type="application/json">(.*?)</script>', body)
    queue = json.loads(match.group(1))
    assert [item["block"] for item in queue] == [one.public_id, two.public_id, three.public_id]
    for item, block in zip(queue, (one, two, three), strict=True):
        block.refresh_from_db()
        assert item["url"] == reverse("history:audio", args=[block.chosen.generation_id])
        assert item["duration"] > 0.5
        audio = b"".join(editor.get(item["url"]).streaming_content)
        seconds, rms = decoded_seconds_and_rms(audio)
        assert abs(seconds - item["duration"]) < 0.3
        assert rms > 0.01  # speech, not silence
    # A ranged request (the player seeks) is served too.
    ranged = editor.get(queue[0]["url"], HTTP_RANGE="bytes=0-99")
    assert ranged.status_code == 206


def test_the_page_reads_cues_and_dictionaries_only_where_there_are_some(
    editor, workspace, member, project, rendered
):
    """The page skips the cue and dictionary reads when the chapter has no cue placed and the
    project no dictionary (``_chapter``'s two EXISTS): once there are some, it shows them."""
    chapter = rendered
    one, _two, three = blocks_of(chapter)
    url = chapter_url(project, chapter)

    def page():
        body = editor.get(url).content.decode()
        match = re.search(
            r'<script id="chapter-queue" type="application/json">(.*?)</script>', body
        )
        return body, json.loads(match.group(1))

    body, queue = page()
    assert [item["kind"] for item in queue] == ["take"] * 3
    assert set(states(body).values()) == {"draft"}
    with CaptureQueriesContext(connection) as without:
        editor.get(url)

    cue = cues.cue_start(
        workspace=workspace, user=member, project=project, kind="sound", prompt="a bell rings",
        duration_seconds=1.0,
    )  # fmt: skip
    assert run_job(cue.job).status == "succeeded"
    cue.refresh_from_db()
    cues.cue_place(cue, block=one, placement="after", volume_db=-6)
    body, queue = page()
    assert [(item["kind"], item["block"]) for item in queue] == [
        ("take", one.public_id),
        ("sound", one.public_id),
        ("take", _two.public_id),
        ("take", three.public_id),
    ]
    assert queue[1]["url"] == reverse("history:audio", args=[cue.generation_id])

    rule = PronunciationRule("boats", "alias", alias="ships")
    made = dictionaries.dictionary_create(
        workspace=workspace, user=member, name="Harbour", rules=[rule]
    )
    dictionaries.project_dictionaries_set(project, [made])
    body, _ = page()
    # Every block's take was signed without the dictionary: all stale now.
    assert set(states(body).values()) == {"stale"}
    with CaptureQueriesContext(connection) as with_both:
        editor.get(url)
    assert len(with_both) == len(without) + 2  # the cues and the dictionaries, read once each


def test_the_takes_list_compares_takes_and_choose_picks_one(editor, project, rendered, member):
    block = blocks_of(rendered)[0]
    first_take = Take.objects.get(block=block)
    render(project, member, RenderScope.BLOCK, block)  # a second take, now chosen
    block.refresh_from_db()
    second_take = block.chosen
    assert second_take != first_take

    response = editor.get(block_url("block_takes", block), **HTMX)
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body  # the partial alone
    assert body.count("<audio ") == 2
    assert body.count(">Choose</button>") == 1  # the other take
    assert "Mia Member" in body and "free" in body
    assert reverse("history:audio", args=[first_take.generation_id]) in body

    choose = block_url("take_choose", block, first_take.pk)
    response = editor.post(choose, **HTMX)
    assert response.status_code == 200
    block.refresh_from_db()
    assert block.chosen == first_take
    assert f'id="block-{block.public_id}"' in response.content.decode()
    # Without JavaScript: back to the block.
    response = editor.post(block_url("take_choose", block, second_take.pk))
    assert response.status_code == 303
    assert response["Location"].endswith(f"#block-{block.public_id}")
    block.refresh_from_db()
    assert block.chosen == second_take
    # A locked block keeps its take.
    narration.block_update(block, locked=True)
    response = editor.post(choose, **HTMX)
    assert response.status_code == 400
    assert "locked" in response.content.decode()
    block.refresh_from_db()
    assert block.chosen == second_take


# --- Actions change the database exactly ---------------------------------------------------


def test_split_at_the_cursor(editor, project):
    chapter = first_chapter(project)
    one, two, three = blocks_of(chapter)
    one.seed = 7
    one.save()
    response = editor.post(block_url("block_split", one), {"at": "9"}, **HTMX)
    assert response.status_code == 200
    assert response.content.decode().lstrip().startswith('<ol id="blocks"')
    after = blocks_of(chapter)
    assert [b.text for b in after] == [
        "The boats",
        "came in before dawn.",
        "Nobody on the quay said a word.",
        "Then the bell rang twice.",
    ]
    assert [b.position for b in after] == [0, 1, 2, 3]
    assert after[0].public_id == one.public_id and after[1].seed == 7
    # The text on screen (not yet saved) is split where the cursor is in it.
    response = editor.post(
        block_url("block_split", three), {"at": "4", "text": "Then, twice, the bell rang."}
    )
    assert response.status_code == 303
    assert [b.text for b in blocks_of(chapter)][-2:] == ["Then", ", twice, the bell rang."]


def test_merge_move_insert_delete_and_lock(editor, project):
    chapter = first_chapter(project)
    one, two, three = blocks_of(chapter)

    assert editor.post(block_url("block_merge", one), **HTMX).status_code == 200
    assert [b.text for b in blocks_of(chapter)] == [
        "The boats came in before dawn. Nobody on the quay said a word.",
        "Then the bell rang twice.",
    ]
    assert not Block.objects.filter(pk=two.pk).exists()
    one.refresh_from_db()

    assert editor.post(block_url("block_move", three), {"to": "0"}).status_code == 303
    assert [b.pk for b in blocks_of(chapter)] == [three.pk, one.pk]

    response = editor.post(block_url("block_insert", three), {"new_text": "  In between.  "})
    assert response.status_code == 303
    after = blocks_of(chapter)
    assert [b.text for b in after] == [three.text, "In between.", one.text]
    assert response["Location"].endswith(f"#block-{after[1].public_id}")
    end = reverse("projects:block_insert_end", args=[project.public_id, chapter.public_id])
    assert editor.post(end, {"new_text": "The end."}).status_code == 303
    assert blocks_of(chapter)[-1].text == "The end." and blocks_of(chapter)[-1].position == 3

    response = editor.post(block_url("block_save", one), {"lock": "1"}, **HTMX)
    assert response.status_code == 200
    assert 'data-state="none locked"' in response.content.decode()
    one.refresh_from_db()
    assert one.locked and one.text.startswith("The boats")

    new = after[1]
    assert editor.post(block_url("block_delete", new), **HTMX).status_code == 200
    assert not Block.objects.filter(pk=new.pk).exists()
    assert [b.position for b in blocks_of(chapter)] == [0, 1, 2]


def save_data(block, **changes):
    data = {
        "settings_shown": "1",
        "text": block.text,
        "voice_mode": "own" if block.voice_id else ("speaker" if block.speaker_id else "inherit"),
        "voice_id": block.voice_id,
        "speaker": block.speaker_id or "",
        "model_id": block.model_id,
        "seed": "" if block.seed is None else str(block.seed),
    }
    if block.voice_settings:
        data["own_settings"] = "1"
        data.update({k: str(v) for k, v in block.voice_settings.items()})
    data.update(changes)
    return data


def stale_ids(project, chapter) -> set[str]:
    return {
        s.block.public_id
        for s in narration.chapter_states(chapter, project=project)
        if s.stale and s.chosen is not None
    }


@pytest.mark.parametrize(
    "changes, field, value",
    [
        ({"voice_mode": "own", "voice_id": "OTHER"}, "voice_id", "OTHER"),
        (
            {
                "own_settings": "1",
                "stability": "0.3",
                "similarity_boost": "0.8",
                "style": "0.1",
                "speed": "1.1",
            },
            "voice_settings",
            {"stability": 0.3, "similarity_boost": 0.8, "style": 0.1, "speed": 1.1},
        ),
        ({"seed": "42"}, "seed", 42),
        ({"text": "The boats came in after dawn."}, "text", "The boats came in after dawn."),
        ({"model_id": "eleven_flash_v2_5"}, "model_id", "eleven_flash_v2_5"),
    ],
)
def test_a_change_saved_makes_the_chosen_take_stale(
    editor, project, rendered, other_voice, changes, field, value
):
    chapter = rendered
    one, two, _ = blocks_of(chapter)
    if changes.get("voice_id") == "OTHER":
        changes = {**changes, "voice_id": other_voice.voice_id}
        value = other_voice.voice_id
    assert stale_ids(project, chapter) == set()
    response = editor.post(block_url("block_save", one), save_data(one, **changes), **HTMX)
    assert response.status_code == 200, response.content.decode()
    assert 'data-state="stale"' in response.content.decode()
    one.refresh_from_db()
    assert getattr(one, field) == value
    assert stale_ids(project, chapter) == {one.public_id}
    # Saving a block unchanged keeps its take fresh.
    response = editor.post(block_url("block_save", two), save_data(two), **HTMX)
    assert response.status_code == 200
    assert stale_ids(project, chapter) == {one.public_id}


def test_the_settings_open_on_demand_and_a_text_alone_keeps_them(editor, project, other_voice):
    chapter = first_chapter(project)
    one, two, _ = blocks_of(chapter)
    narration.block_update(
        one, voice_id=other_voice.voice_id, voice_settings={"speed": 0.9}, seed=5
    )
    page = editor.get(chapter_url(project, chapter)).content.decode()
    assert 'name="voice_mode"' not in page  # (loaded when opened: the page stays light)
    response = editor.get(block_url("block_settings", one), **HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert 'value="own" checked' in body
    assert f'value="{other_voice.voice_id}"' in body
    assert 'name="speed" min="0.7" max="1.2" step="0.05" value="0.9"' in body
    assert 'name="seed" min="0" max="4294967295" value="5"' in body
    # Without JavaScript: the chapter with that block's settings open.
    response = editor.get(block_url("block_settings", one))
    assert response.status_code == 302
    page = editor.get(response["Location"]).content.decode()
    assert page.count('name="voice_mode" value="own"') == 1
    # Saving the text alone leaves the voice, settings and seed as they were.
    response = editor.post(block_url("block_save", one), {"text": "The boats came at dawn."})
    assert response.status_code == 303
    one.refresh_from_db()
    assert one.text == "The boats came at dawn."
    assert (one.voice_id, one.voice_settings, one.seed) == (other_voice.voice_id, {"speed": 0.9}, 5)


def test_a_speaker_voices_its_blocks_and_revoicing_it_makes_them_all_stale(
    editor, project, member, voice, other_voice
):
    chapter = first_chapter(project)
    one, two, three = blocks_of(chapter)
    alice = narration.speaker_save(project=project, name="Alice", voice_id=voice.voice_id)
    for block in (one, three):
        data = save_data(block, voice_mode="speaker", speaker=str(alice.pk))
        assert editor.post(block_url("block_save", block), data).status_code == 303
    one.refresh_from_db()
    assert one.speaker == alice and one.voice_id == ""
    render(project, member, RenderScope.CHAPTER, chapter)
    assert stale_ids(project, chapter) == set()
    narration.speaker_save(
        project=project, name="Alice", voice_id=other_voice.voice_id, speaker=alice
    )
    assert stale_ids(project, chapter) == {one.public_id, three.public_id}
    body = editor.get(chapter_url(project, chapter)).content.decode()
    assert states(body) == {
        one.public_id: "stale",
        two.public_id: "draft",
        three.public_id: "stale",
    }
    assert body.count(f"{other_voice.name} · Alice") == 2


def test_the_chapters_own_voice(editor, project, rendered, other_voice):
    chapter = rendered
    url = reverse("projects:chapter_save", args=[project.public_id, chapter.public_id])
    response = editor.post(
        url, {"name": "  The  harbour at dawn ", "voice_id": other_voice.voice_id}
    )
    assert response.status_code == 303
    chapter.refresh_from_db()
    assert chapter.name == "The harbour at dawn" and chapter.voice_id == other_voice.voice_id
    assert len(stale_ids(project, chapter)) == 3  # every inherited voice changed
    response = editor.post(url, {"name": chapter.name, "voice_id": "no-such-voice"}, **HTMX)
    assert response.status_code == 400
    assert "is not in this workspace" in response.content.decode()
    chapter.refresh_from_db()
    assert chapter.voice_id == other_voice.voice_id


# --- Refusals: 400 with the message by the block, nothing changed ---------------------------


@pytest.mark.parametrize(
    "action, data, message",
    [
        ("block_save", {"text": "   "}, "a block needs words"),
        ("block_save", {"text": "x" * 3000}, "at most 2,500 characters"),
        ("block_save", {"voice_mode": "own", "voice_id": "no-such-voice"}, "not in this workspace"),
        ("block_save", {"own_settings": "1", "speed": "3"}, "speed must be between 0.7 and 1.2"),
        ("block_save", {"own_settings": "1", "stability": "high"}, "stability must be a number"),
        ("block_save", {"seed": "-1"}, "Seed: a whole number"),
        ("block_save", {"voice_mode": "speaker", "speaker": ""}, "choose which speaker"),
        ("block_save", {"voice_mode": "speaker", "speaker": "999999"}, "one of this project"),
        ("block_save", {"voice_mode": "loud"}, "Voice: choose"),
        ("block_split", {"at": "0"}, "put the cursor inside the text"),
        ("block_split", {"at": "30"}, "put the cursor inside the text"),
        ("block_split", {"at": "middle"}, "Split: a whole number"),
        ("block_move", {"to": "up"}, "Move: a whole number"),
        ("block_insert", {"new_text": ""}, "a block needs words"),
    ],
)
@pytest.mark.parametrize("htmx", [True, False])
def test_bad_inputs_answer_400_with_the_message_and_change_nothing(
    editor, project, rendered, action, data, message, htmx
):
    chapter = rendered
    block = blocks_of(chapter)[0]  # "The boats came in before dawn." (30 characters)
    before = snapshot(chapter)
    posted = save_data(block, **data) if action == "block_save" else data
    response = editor.post(block_url(action, block), posted, **(HTMX if htmx else {}))
    assert response.status_code == 400
    body = response.content.decode()
    assert message in body
    assert re.search(
        r'<p class="error block-error" role="alert" id="block-' + block.public_id, body
    )
    if htmx:
        assert response["HX-Retarget"] == f"#block-{block.public_id}"
        assert "<html" not in body
    else:
        assert "<html" in body
    assert snapshot(chapter) == before


def test_merging_the_last_block_and_a_foreign_block_are_refused(editor, project, client_as, member):
    chapter = first_chapter(project)
    last = blocks_of(chapter)[-1]
    before = snapshot(chapter)
    response = editor.post(block_url("block_merge", last), **HTMX)
    assert response.status_code == 400
    assert "last block" in response.content.decode()
    assert snapshot(chapter) == before
    # A block of the other chapter in this chapter's URL: not found.
    other = blocks_of(project.chapters.order_by("position").last())[0]
    url = reverse(
        "projects:block_save", args=[project.public_id, chapter.public_id, other.public_id]
    )
    assert editor.post(url, {"text": "Taken over."}).status_code == 404
    other.refresh_from_db()
    assert other.text != "Taken over."


def test_move_and_the_keyboard_reordering_controls(editor, project):
    chapter = first_chapter(project)
    one, two, three = blocks_of(chapter)
    body = editor.get(chapter_url(project, chapter)).content.decode()
    # The first block cannot go up, the last cannot go down; each can go the other way.
    assert body.count('data-move="up"') == 2 and body.count('data-move="down"') == 2
    response = editor.post(block_url("block_move", two), {"to": "2"}, **HTMX)
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#blocks"
    assert [b.pk for b in blocks_of(chapter)] == [one.pk, three.pk, two.pk]
    assert editor.post(block_url("block_move", two), {"to": "99"}).status_code == 303
    assert [b.pk for b in blocks_of(chapter)] == [one.pk, three.pk, two.pk]


# --- A constant number of queries ----------------------------------------------------------


def chapter_of(project, member, count: int, generation) -> Chapter:
    texts = tuple(f"Sentence number {n} of this long chapter." for n in range(count))
    (chapter,) = narration.chapters_add(
        project=project, chapters=[ImportedChapter(title=f"{count} blocks", blocks=texts)]
    )
    speaker = narration.speaker_save(
        project=project, name=f"Voice {count}", voice_id=project.default_voice_id
    )
    blocks = blocks_of(chapter)
    rules = narration.rules_fingerprint(narration.project_rules(project))
    for n, block in enumerate(blocks):
        block.speaker = speaker if n % 3 == 0 else None
    Block.objects.bulk_update(blocks, ["speaker"])
    takes = Take.objects.bulk_create(
        [
            Take(
                workspace=project.workspace,
                block=block,
                generation=generation,
                draft=True,
                user=member,
                signature=narration.block_signature(
                    block, project=project, chapter=chapter, rules_print=rules, draft=True
                ),
            )
            for n, block in enumerate(blocks)
            if n % 5  # every fifth block without a take
        ]
    )
    by_block = {take.block_id: take for take in takes}
    for block in blocks:
        block.chosen = by_block.get(block.pk)
    Block.objects.bulk_update(blocks, ["chosen"])
    return chapter


def test_the_editor_makes_the_same_queries_for_20_and_300_blocks(editor, project, rendered, member):
    generation = blocks_of(rendered)[0].chosen.generation
    small = chapter_of(project, member, 20, generation)
    large = chapter_of(project, member, 300, generation)
    counts, seconds = {}, {}
    for chapter in (small, large):
        editor.get(chapter_url(project, chapter))  # (caches warm: models, sessions)
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = editor.get(chapter_url(project, chapter))
            seconds[chapter.pk] = time.perf_counter() - started
        assert response.status_code == 200
        counts[chapter.pk] = len(queries)
        body = response.content.decode()
        found = states(body)
        assert len(found) == len(blocks_of(chapter))
        assert list(found.values()).count("none") == len(blocks_of(chapter)) // 5 + (
            1 if len(blocks_of(chapter)) % 5 else 0
        )
        assert "stale" not in found.values()
    assert counts[small.pk] == counts[large.pk], counts
    print(
        f"queries {counts}; seconds 20 blocks {seconds[small.pk]:.3f}, 300 {seconds[large.pk]:.3f}"
    )


# --- Cues in the chapter player, and what loads when opened ---------------------------------


def test_the_chapter_player_queue_holds_the_placed_cues_after_or_under_their_block(
    editor, workspace, member, project, rendered
):
    from apps.projects import cues
    from tests.projects.conftest import run_job

    one, two, three = blocks_of(rendered)

    def made(**fields):
        cue = cues.cue_start(workspace=workspace, user=member, project=project, **fields)
        assert run_job(cue.job).status == "succeeded"
        cue.refresh_from_db()
        return cue

    bell = made(kind="sound", prompt="a bell rings", duration_seconds=1.5, block=two,
                placement="after", volume_db=-3)  # fmt: skip
    pad = made(kind="music", prompt="a soft pad", duration_seconds=3, block=one,
               placement="under", volume_db=-18)  # fmt: skip
    made(kind="sound", prompt="elsewhere", duration_seconds=1,
         block=blocks_of(project.chapters.order_by("position").last())[0])  # fmt: skip

    body = editor.get(chapter_url(project, rendered)).content.decode()
    match = re.search(r'<script id="chapter-queue" type="application/json">(.*?)</script>', body)
    queue = json.loads(match.group(1))
    assert [(item["kind"], item["block"]) for item in queue] == [
        ("take", one.public_id),
        ("music", one.public_id),  # under block 1
        ("take", two.public_id),
        ("sound", two.public_id),  # after block 2
        ("take", three.public_id),
    ]
    under, after = queue[1], queue[3]
    assert (under["cue"], under["placement"], under["volume_db"]) == (pad.pk, "under", -18.0)
    assert (after["cue"], after["placement"], after["volume_db"]) == (bell.pk, "after", -3.0)
    assert after["url"] == reverse("history:audio", args=[bell.generation_id])
    assert under["url"] == reverse("history:audio", args=[pad.generation_id])
    seconds, rms = decoded_seconds_and_rms(b"".join(editor.get(after["url"]).streaming_content))
    assert abs(seconds - after["duration"]) < 0.3 and rms > 0.001  # a real sound, decoded
    # The page lists them by their block, with a way to the cue list.
    assert f'after <a href="#block-{two.public_id}">block 2</a> · -3 dB' in body
    assert f'under <a href="#block-{one.public_id}">block 1</a> · -18 dB' in body
    assert reverse("projects:cues", args=[project.public_id]) in body


def test_the_chapters_voice_picker_and_render_panel_load_when_wanted(editor, project, other_voice):
    chapter = first_chapter(project)
    narration.chapter_update(chapter, voice_id=other_voice.voice_id)
    url = chapter_url(project, chapter)
    page = editor.get(url).content.decode()
    assert 'name="voice_id"' not in page  # (the picker loads when opened)
    voices = reverse("projects:chapter_voices", args=[project.public_id, chapter.public_id])
    assert f'hx-get="{voices}"' in page
    picker = editor.get(voices, **HTMX).content.decode()
    assert "<html" not in picker
    assert f'value="{other_voice.voice_id}" checked' in picker
    response = editor.get(voices)  # without JavaScript: the chapter with the picker open
    assert response.status_code == 302
    assert (
        f'value="{other_voice.voice_id}" checked'
        in editor.get(response["Location"]).content.decode()
    )
    # Renaming without opening the picker keeps the chapter's voice.
    save = reverse("projects:chapter_save", args=[project.public_id, chapter.public_id])
    assert editor.post(save, {"name": "Renamed"}).status_code == 303
    chapter.refresh_from_db()
    assert (chapter.name, chapter.voice_id) == ("Renamed", other_voice.voice_id)
    # The render panel (its estimates read the chapter again) loads after the page.
    match = re.search(r'id="render-panel-chapter-[^"]+" hx-get="([^"]+)" hx-trigger="load"', page)
    panel = editor.get(match.group(1).replace("&amp;", "&"), **HTMX)
    assert panel.status_code == 200
    assert f"render-panel-chapter-{chapter.public_id}" in panel.content.decode()
    assert "3 blocks" in panel.content.decode()
