"""History (issue 14): the parts of a speech take made in parts are one group, headed by the
whole take (its start, how many parts, total duration and cost, its player and download,
"use these settings again"), each part under it as "Part n of N" with its own player."""

import io
import zipfile
from decimal import Decimal

import pytest
from django.urls import reverse

from apps.billing import services as billing
from apps.history.models import Generation
from apps.history.services import generation_save
from tests.conftest import HTMX

from .test_pages import rows


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def spoken(workspace, user, text, *, take=None, credits=None, kind="tts", seconds=8.4):
    """A clip as the Speech page keeps it; ``take``: the part's mark in its recipe."""
    event = None
    if credits is not None:
        with billing.metered(
            workspace=workspace, user=user, capability="tts", engine="elevenlabs", units=credits
        ) as meter:
            event = meter.settle(units=credits)
    recipe = {"text": text, "model_id": "eleven_v3"}
    if take is not None:
        recipe["take"] = take
    return generation_save(
        workspace=workspace,
        user=user,
        kind=kind,
        engine="elevenlabs",
        audio=f"audio of {text}".encode(),
        content_type="audio/mpeg",
        recipe=recipe,
        model_id="eleven_v3",
        voice_id="v-rachel",
        voice_name="Rachel",
        text=text,
        duration_seconds=seconds,
        usage_event=event,
    )


def make_take(workspace, user, texts, *, take_id="take-one", credits=(10, 20, 30)):
    """The parts of one take, made in order (part 1 first), each its own metered call."""
    parts = []
    for n, text in enumerate(texts, start=1):
        mark = {"id": take_id, "part": n, "parts": len(texts)}
        if n > 1:
            mark["gap"] = " "
        parts.append(spoken(workspace, user, text, take=mark, credits=Decimal(credits[n - 1])))
    return parts


TEXTS = [
    "Once upon a time there was a lighthouse.",
    "Its keeper counted the ships at night.",
    "One morning a whale swam into the harbour.",
]


def group_of(body: str, token: str) -> str:
    """The take's heading row and the part rows after it, up to the next group or the end."""
    start = body.index(f'data-take-group="{token}"')
    rest = body[start:]
    end = min(
        (i for i in (rest.find("data-take-group=", 1), rest.find("</tbody>")) if i > 0),
        default=len(rest),
    )
    return rest[:end]


def test_a_take_in_three_parts_is_one_group_with_the_whole_take_and_its_parts_in_order(
    client_as, viewer, member, workspace
):
    one, two, three = make_take(workspace, member, TEXTS)

    body = client_as(viewer).get(reverse("history:list")).content.decode()

    assert body.count("data-take-group=") == 1 and rows(body) == 3
    group = group_of(body, "take-one")
    heading = group.split("</tr>")[0]
    assert TEXTS[0] in heading  # headed by the take's start
    assert "3 parts" in heading
    assert "0:25" in heading  # 3 × 8.4 s in all, in the one clock format
    assert "60 credits" in heading  # 10 + 20 + 30, the whole take's cost
    whole = reverse("speech:take_audio", args=[one.pk])
    assert f'src="{whole}"' in heading and f'href="{whole}?download=1"' in heading
    speech = reverse("speech:page")
    assert f'href="{speech}?from={one.pk}" data-use-again' in heading
    assert body.count("data-use-again") == 1  # once for the take, not per part
    # Each part under it, in the take's order (though History lists the newest first),
    # with its own player and its own box to tick for a bulk action.
    spots = [group.index(f'data-history-item="{p.history_item_id}"') for p in (one, two, three)]
    assert spots == sorted(spots)
    assert group.index("Part 1 of 3") < group.index("Part 2 of 3") < group.index("Part 3 of 3")
    for part in (one, two, three):
        assert f'src="{reverse("history:audio", args=[part.pk])}"' in group
        assert f'name="ids" value="{part.pk}"' in group
    assert "data-take-continues" not in body  # every part is on the page


def test_another_workspace_s_take_parts_never_appear(client_as, member, outsider, workspace):
    ours = make_take(workspace, member, TEXTS)
    theirs_ws = outsider.memberships.first().workspace
    # Theirs, even under the same take id: never counted into ours, never shown to us.
    theirs = make_take(
        theirs_ws, outsider, ["Secret one.", "Secret two."], take_id="take-one", credits=(500, 700)
    )

    body = client_as(member).get(reverse("history:list")).content.decode()
    assert "Secret" not in body and rows(body) == 3
    heading = group_of(body, "take-one").split("</tr>")[0]
    assert "3 parts" in heading and "60 credits" in heading
    for clip in theirs:
        assert clip.history_item_id not in body

    seen = client_as(outsider).get(reverse("history:list") + "?take=take-one").content.decode()
    assert "Part 1 of 2" in seen and "Part 2 of 2" in seen and "1,200 credits" in seen
    assert TEXTS[0] not in seen and rows(seen) == 2
    for clip in ours:
        assert clip.history_item_id not in seen
        whole = reverse("speech:take_audio", args=[clip.pk])
        assert client_as(outsider).get(whole).status_code == 404


def test_a_search_that_finds_only_part_2_shows_the_take_s_heading_with_that_part(
    client_as, viewer, member, workspace
):
    one, two, three = make_take(workspace, member, TEXTS)
    spoken(workspace, member, "A clip of its own about a keeper.")

    response = client_as(viewer, **HTMX).get(reverse("history:list"), {"q": "counted the ships"})

    body = response.content.decode()
    assert response.status_code == 200 and rows(body) == 1
    heading = group_of(body, "take-one").split("</tr>")[0]
    assert TEXTS[0] in heading and "3 parts" in heading and "60 credits" in heading
    assert f'data-history-item="{two.history_item_id}"' in body and "Part 2 of 3" in body
    assert "Part 1 of 3" not in body and "Part 3 of 3" not in body
    # It says the take has more, and where to find all of it.
    assert "1 of 3 parts shown here" in body
    whole_take = reverse("history:list") + "?take=take-one"
    assert f'href="{whole_take}">Show the whole take</a>' in body

    everything = client_as(viewer).get(whole_take).content.decode()
    assert rows(everything) == 3 and "of its own" not in everything
    assert "Part 1 of 3" in everything and "Part 3 of 3" in everything


def test_a_take_split_by_the_pages_says_it_continues_on_each(client_as, viewer, member, workspace):
    one, two, three = make_take(workspace, member, TEXTS)
    for n in range(24):  # newer: the first page holds them and the take's last part
        spoken(workspace, member, f"Single clip {n}.")
    client = client_as(viewer)

    first = client.get(reverse("history:list")).content.decode()
    second = client.get(reverse("history:list"), {"page": 2}).content.decode()

    assert rows(first) == 25 and rows(second) == 2
    assert "Part 3 of 3" in first and "Part 1 of 3" not in first
    assert "1 of 3 parts shown here" in first
    assert "Part 1 of 3" in second and "Part 2 of 3" in second and "Part 3 of 3" not in second
    assert "2 of 3 parts shown here" in second
    for body in (first, second):  # each page heads its share with the whole take
        heading = group_of(body, "take-one").split("</tr>")[0]
        assert "3 parts" in heading and "60 credits" in heading and TEXTS[0] in heading


def test_single_clips_are_unchanged_beside_a_take(client_as, member, workspace):
    make_take(workspace, member, TEXTS[:2], credits=(10, 20))
    alone = spoken(
        workspace, member, "A take in one part.", take={"id": "t1", "part": 1, "parts": 1}
    )
    plain = spoken(workspace, member, "Made before takes had parts.")
    tune = spoken(workspace, member, "A calm tune.", kind="music")

    body = client_as(member).get(reverse("history:list")).content.decode()

    assert body.count("data-take-group=") == 1 and "Part 1 of 2" in body and "Part 2 of 2" in body
    speech = reverse("speech:page")
    for clip in (alone, plain, tune):
        row = body.split(f'data-history-item="{clip.history_item_id}"')[1].split("</tr>")[0]
        assert "Part " not in row and "Mia Member" in row and "<time" in row
        assert "Voice: <span data-voice-name>Rachel</span>" in row
    for clip in (alone, plain):
        assert f'href="{speech}?from={clip.pk}" data-use-again' in body
    assert f"?from={tune.pk}" not in body
    assert body.count("data-use-again") == 3  # the take once, and each single speech clip
    assert body.count('<span class="badge">Speech</span>') == 3  # the take and two clips


def test_parts_are_selected_one_by_one_for_a_bulk_download(client_as, viewer, member, workspace):
    one, two, three = make_take(workspace, member, TEXTS)
    page = client_as(viewer).get(reverse("history:list")).content.decode()
    group = group_of(page, "take-one")
    for part in (one, two, three):  # a box per part, under the take's heading
        assert f'form="history-bulk" name="ids" value="{part.pk}"' in group

    response = client_as(viewer).post(reverse("history:bulk_download"), {"ids": [one.pk, three.pk]})

    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = archive.namelist()
    assert len(names) == 2
    assert any(one.history_item_id in n for n in names)
    assert any(three.history_item_id in n for n in names)
    assert Generation.objects.filter(workspace=workspace).count() == 3


def test_an_unknown_or_overlong_take_filter_finds_nothing_and_never_fails(
    client_as, viewer, member, workspace
):
    make_take(workspace, member, TEXTS)
    client = client_as(viewer)
    for token in ("no-such-take", "x" * 5000):
        response = client.get(reverse("history:list"), {"take": token})
        body = response.content.decode()
        assert response.status_code == 200 and rows(body) == 0
        assert "No clips match these filters" in body
