"""The History page: the team's clips with who, when, text, cost and a player; filters, pages,
seekable audio, and deleting by the author or a manager."""

from decimal import Decimal

import pytest
from django.urls import reverse

from apps.billing import services as billing
from apps.history.models import Generation
from apps.history.services import generation_save
from tests.conftest import HTMX

AUDIO = bytes(range(256)) * 40  # 10,240 bytes whose every offset is recognisable


def clip(workspace, user, *, kind="tts", text="Hello there.", credits=None, source="ui"):
    event = None
    if credits is not None:
        engine = "elevenlabs" if credits else "local"  # the local engine is free
        with billing.metered(
            workspace=workspace, user=user, capability="tts", engine=engine, units=credits
        ) as meter:
            event = meter.settle(units=credits)
    return generation_save(
        workspace=workspace,
        user=user,
        kind=kind,
        engine="elevenlabs" if credits else "local",
        audio=AUDIO,
        content_type="audio/mpeg",
        recipe={"text": text},
        source=source,
        model_id="eleven_v3" if kind == "tts" else "",
        voice_name="Joe" if kind == "tts" else "",
        text=text,
        duration_seconds=2.5,
        usage_event=event,
    )


def rows(body: str) -> int:
    return body.count("data-history-item=")


def test_the_page_lists_kind_who_when_text_cost_and_a_player(
    client_as, viewer, workspace, member, owner
):
    spoken = clip(workspace, member, text="Welcome to the show.", credits=Decimal(20), source="api")
    music = clip(workspace, owner, kind="music", text="calm piano", credits=0)

    response = client_as(viewer).get(reverse("history:list"))

    assert response.status_code == 200
    body = response.content.decode()
    assert rows(body) == 2
    assert body.index(music.history_item_id) < body.index(spoken.history_item_id)  # newest first
    assert "Welcome to the show." in body and "calm piano" in body
    assert "Mia Member" in body and "Olive Owner" in body and "API" in body
    assert "20 credits" in body and "free" in body
    assert "Speech" in body and "Music" in body and "Eleven v3" in body and "eleven_v3" not in body
    for generation in (spoken, music):
        src = reverse("history:audio", args=[generation.pk])
        assert f'<audio controls preload="none" src="{src}"' in body
    assert "Delete" not in body.split('id="history-table"')[1]  # a viewer deletes nothing


def test_an_empty_history_says_what_the_page_is_for(client_as, member, workspace):
    body = client_as(member).get(reverse("history:list")).content.decode()
    assert "No clips yet" in body and rows(body) == 0


def test_the_kind_filter_and_htmx_return_only_the_table(client_as, member, workspace):
    clip(workspace, member, text="Spoken")
    clip(workspace, member, kind="dub", text="Dubbed")
    client = client_as(member, **HTMX)

    response = client.get(reverse("history:list"), {"kind": "dub"})

    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert body.lstrip().startswith('<div id="history-table">')
    assert rows(body) == 1 and "Dubbed" in body and "Spoken" not in body
    bad = client_as(member).get(reverse("history:list"), {"kind": "nonsense"})
    full = bad.content.decode()
    assert bad.status_code == 400 and "Select a valid choice" in full  # said beside the menu
    assert "<html" in full and rows(full) == 2  # an unknown kind filters nothing


def test_long_histories_are_paged(client_as, member, workspace):
    for n in range(27):
        clip(workspace, member, text=f"Clip number {n}.")
    first = client_as(member).get(reverse("history:list")).content.decode()
    assert rows(first) == 25 and "Page 1 of 2" in first and "Clip number 26." in first
    second = client_as(member).get(reverse("history:list"), {"page": 2}).content.decode()
    assert rows(second) == 2 and "Clip number 0." in second


def test_audio_is_served_whole_and_by_byte_range(client_as, viewer, workspace, member):
    generation = clip(workspace, member)
    url = reverse("history:audio", args=[generation.pk])
    client = client_as(viewer)

    whole = client.get(url)
    assert whole.status_code == 200 and b"".join(whole.streaming_content) == AUDIO
    assert (whole["Content-Type"], whole["Accept-Ranges"]) == ("audio/mpeg", "bytes")

    part = client.get(url, HTTP_RANGE="bytes=1000-1999")
    assert part.status_code == 206 and part.content == AUDIO[1000:2000]
    assert part["Content-Range"] == f"bytes 1000-1999/{len(AUDIO)}"
    tail = client.get(url, HTTP_RANGE="bytes=-100")
    assert tail.status_code == 206 and tail.content == AUDIO[-100:]
    beyond = client.get(url, HTTP_RANGE=f"bytes={len(AUDIO)}-")
    assert beyond.status_code == 416 and beyond["Content-Range"] == f"bytes */{len(AUDIO)}"

    download = client.get(url, {"download": "1"})
    assert download["Content-Disposition"].startswith("attachment;")
    assert f"tts-{generation.history_item_id}.mp3" in download["Content-Disposition"]


def test_the_author_deletes_their_clip_and_its_file(client_as, member, workspace):
    generation = clip(workspace, member, credits=Decimal(5))
    storage, name = generation.file.storage, generation.file.name

    response = client_as(member).post(reverse("history:delete", args=[generation.pk]))

    assert response.status_code == 303 and response["Location"] == reverse("history:list")
    assert not Generation.objects.exists() and not storage.exists(name)
    assert generation.usage_event.status == "settled"  # the ledger keeps what it cost


def test_a_member_cannot_delete_a_teammates_clip_but_a_manager_can(
    client_as, member, manager, owner, workspace
):
    generation = clip(workspace, owner)
    url = reverse("history:delete", args=[generation.pk])
    assert client_as(member).post(url).status_code == 403
    assert Generation.objects.filter(pk=generation.pk).exists()
    page = client_as(member).get(reverse("history:list")).content.decode()
    assert reverse("history:delete", args=[generation.pk]) not in page

    response = client_as(manager, **HTMX).post(url, {"kind": "tts", "page": "1"})
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body and 'id="history-table"' in body
    assert "No clips match these filters" in body
    assert not Generation.objects.filter(pk=generation.pk).exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_viewers_cannot_delete_and_outsiders_see_nothing(
    client_as, viewer, outsider, member, workspace, method
):
    generation = clip(workspace, member)
    delete = reverse("history:delete", args=[generation.pk])
    audio = reverse("history:audio", args=[generation.pk])
    if method == "post":
        assert client_as(viewer).post(delete).status_code == 403
        assert client_as(outsider).post(delete).status_code == 404
    else:
        assert client_as(outsider).get(audio).status_code == 404
        body = client_as(outsider).get(reverse("history:list")).content.decode()
        assert rows(body) == 0 and "Hello there." not in body
    assert Generation.objects.filter(pk=generation.pk).exists()
