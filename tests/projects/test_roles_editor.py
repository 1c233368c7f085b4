"""Who may do what in the chapter editor: viewers read and listen, members edit; another
workspace's project, chapter, block or take is not found, and so is a block or a take of
another project (or chapter) named in this chapter's URLs."""

import pytest
from django.urls import reverse

from apps.history.services import generation_save
from apps.projects import narration
from apps.projects.models import Block, Take
from tests.conftest import HTMX
from tests.projects.conftest import make_script

pytestmark = pytest.mark.django_db


def make_take(block, user):
    """A take of ``block`` around a real History clip (a short WAV of a tone)."""
    import io
    import wave

    import numpy as np

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        tone = (0.3 * np.sin(np.linspace(0, 2 * np.pi * 440 * 0.5, 8000)) * 32767).astype("<i2")
        out.writeframes(tone.tobytes())
    generation = generation_save(
        workspace=block.workspace,
        user=user,
        kind="tts",
        engine="local",
        audio=buffer.getvalue(),
        content_type="audio/wav",
        recipe={"block": block.public_id},
        voice_id="local-joe",
        text=block.text,
        duration_seconds=0.5,
    )
    return Take.objects.create(
        workspace=block.workspace,
        block=block,
        generation=generation,
        draft=True,
        signature="made-elsewhere",
        user=user,
    )


def urls(project, chapter, block, take):
    p, c, b = project.public_id, chapter.public_id, block.public_id
    gets = {
        "chapter": reverse("projects:chapter", args=[p, c]),
        "block_takes": reverse("projects:block_takes", args=[p, c, b]),
    }
    posts = {
        "chapter_save": (reverse("projects:chapter_save", args=[p, c]), {"name": "Renamed"}),
        "block_save": (reverse("projects:block_save", args=[p, c, b]), {"text": "Changed."}),
        "block_split": (reverse("projects:block_split", args=[p, c, b]), {"at": "4"}),
        "block_merge": (reverse("projects:block_merge", args=[p, c, b]), {}),
        "block_move": (reverse("projects:block_move", args=[p, c, b]), {"to": "1"}),
        "block_insert": (reverse("projects:block_insert", args=[p, c, b]), {"new_text": "New."}),
        "block_insert_end": (
            reverse("projects:block_insert_end", args=[p, c]),
            {"new_text": "New."},
        ),
        "block_delete": (reverse("projects:block_delete", args=[p, c, b]), {}),
        "take_choose": (reverse("projects:take_choose", args=[p, c, b, take.pk]), {}),
    }
    return gets, posts


@pytest.fixture
def cast(project, member):
    chapter = project.chapters.order_by("position").first()
    block = Block.objects.filter(chapter=chapter).order_by("position").first()
    take = make_take(block, member)
    return project, chapter, block, take


def state(project):
    return sorted(
        Block.objects.filter(chapter__project=project).values_list(
            "public_id", "position", "text", "chosen_id"
        )
    ) + [tuple(project.chapters.values_list("name", flat=True))]


@pytest.mark.parametrize("who", ["owner", "manager", "member", "viewer"])
def test_every_role_reads_and_listens(client_as, request, cast, who):
    client = client_as(request.getfixturevalue(who))
    gets, _ = urls(*cast)
    for name, url in gets.items():
        assert client.get(url).status_code == 200, name
        assert client.get(url, **HTMX).status_code == 200, name
    body = client.get(gets["chapter"]).content.decode()
    take = cast[3]
    assert reverse("history:audio", args=[take.generation_id]) not in body  # not chosen yet
    narration.take_choose(take)
    body = client.get(gets["chapter"]).content.decode()
    audio = reverse("history:audio", args=[take.generation_id])
    assert audio in body
    assert client.get(audio).status_code == 200  # a viewer listens too
    editing = 'action="' + gets["chapter"] + "blocks/" in body
    assert editing == (who != "viewer")


@pytest.mark.parametrize(
    "name",
    [
        "chapter_save",
        "block_save",
        "block_split",
        "block_merge",
        "block_move",
        "block_insert",
        "block_insert_end",
        "block_delete",
        "take_choose",
    ],
)
def test_a_viewer_cannot_change_anything(client_as, viewer, cast, name):
    project = cast[0]
    _, posts = urls(*cast)
    before = state(project)
    url, data = posts[name]
    assert client_as(viewer).post(url, data).status_code == 403
    assert client_as(viewer).post(url, data, **HTMX).status_code == 403
    assert state(project) == before


@pytest.mark.parametrize(
    "name",
    [
        "chapter_save",
        "block_save",
        "block_split",
        "block_merge",
        "block_move",
        "block_insert",
        "block_insert_end",
        "block_delete",
        "take_choose",
    ],
)
def test_a_member_can(client_as, member, cast, name):
    project = cast[0]
    _, posts = urls(*cast)
    before = state(project)
    url, data = posts[name]
    response = client_as(member).post(url, data)
    assert response.status_code == 303, response.content.decode()[:500]
    assert state(project) != before


def test_an_anonymous_visitor_signs_in_first(client_as, cast):
    gets, posts = urls(*cast)
    assert client_as(None).get(gets["chapter"]).status_code == 302
    assert client_as(None).post(posts["block_save"][0], {"text": "x"}).status_code == 302


def test_another_workspaces_ids_are_not_found(client_as, outsider, cast):
    project = cast[0]
    gets, posts = urls(*cast)
    before = state(project)
    for url in gets.values():
        assert client_as(outsider).get(url).status_code == 404
    chapter = cast[1]
    voices = reverse("projects:chapter_voices", args=[project.public_id, chapter.public_id])
    assert client_as(outsider).get(voices, **HTMX).status_code == 404
    for url, data in posts.values():
        assert client_as(outsider).post(url, data).status_code == 404
    assert state(project) == before


def test_ids_of_another_project_in_this_projects_urls_are_not_found(
    client_as, member, owner, workspace, voice, cast
):
    project, chapter, block, take = cast
    other = narration.project_create(
        workspace=workspace, user=member, script=make_script(), default_voice_id=voice.voice_id
    )
    other_chapter = other.chapters.order_by("position").first()
    other_block = Block.objects.filter(chapter=other_chapter).order_by("position").first()
    other_take = make_take(other_block, member)
    later_chapter = project.chapters.order_by("position").last()
    client = client_as(member)
    before = state(project), state(other)
    block_names = {"block_takes", "block_save", "block_split", "block_merge", "block_move"}
    block_names |= {"block_insert", "block_delete", "take_choose"}
    everything = {"chapter", "chapter_save", "block_insert_end"} | block_names
    mixes = [  # (project, chapter, block, take) in one URL → the names that must be 404
        ((project, other_chapter, other_block, other_take), everything),  # another's chapter
        ((project, chapter, other_block, other_take), block_names),  # another project's block
        ((project, later_chapter, block, take), block_names),  # a block of another chapter
        ((project, chapter, block, other_take), {"take_choose"}),  # a take of another block
        ((other, chapter, block, take), everything),  # this chapter under another project
    ]
    for mix, missing in mixes:
        gets, posts = urls(*mix)
        for name, url in gets.items():
            if name in missing:
                assert client.get(url).status_code == 404, (name, mix)
        for name, (url, data) in posts.items():
            if name in missing:
                assert client.post(url, data).status_code == 404, (name, mix)
    assert (state(project), state(other)) == before


def test_the_block_settings_fields_are_for_members(client_as, viewer, member, cast):
    project, chapter, block, _ = cast
    url = reverse(
        "projects:block_settings", args=[project.public_id, chapter.public_id, block.public_id]
    )
    assert client_as(viewer).get(url, **HTMX).status_code == 403
    assert client_as(member).get(url, **HTMX).status_code == 200
    # So is the chapter's voice picker (loaded when opened).
    voices = reverse("projects:chapter_voices", args=[project.public_id, chapter.public_id])
    assert client_as(viewer).get(voices, **HTMX).status_code == 403
    assert client_as(member).get(voices, **HTMX).status_code == 200
