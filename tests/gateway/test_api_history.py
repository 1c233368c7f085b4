"""/v1/history: a personal key's clips (its member's Generations), paged, filtered, deleted."""

import json
import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.test import Client

from apps.billing import services as billing
from apps.billing.models import UsageEvent, UsageStatus
from apps.gateway import services
from apps.history.models import Generation
from apps.history.services import generation_save
from tests.factories import make_user, make_workspace

from .openapi_check import assert_matches

SHAPE_A = {"type", "code", "message", "status", "request_id"}


@pytest.fixture
def issued(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="History")


@pytest.fixture
def api(issued):
    return Client(HTTP_XI_API_KEY=issued.raw)


def clip(workspace, user, *, kind="tts", text="Hello there.", voice_id="local-joe", model_id="",
         credits=None, when=None, audio=None):  # fmt: skip
    """A stored clip; with ``credits``, paid through the ledger like a real call."""
    event = None
    if credits is not None:
        with billing.metered(
            workspace=workspace, user=user, capability="tts", engine="elevenlabs", units=credits
        ) as meter:
            event = meter.settle(units=credits)
    generation = generation_save(
        workspace=workspace,
        user=user,
        kind=kind,
        engine="local",
        audio=audio or f"audio of {text}".encode(),
        content_type="audio/mpeg",
        recipe={
            "text": text,
            "output_format": "mp3_44100_128",
            "voice_settings": {"stability": 0.3, "similarity_boost": 0.8},
        },
        source="api",
        model_id=model_id,
        voice_id=voice_id if kind == "tts" else "",
        voice_name="Joe" if kind == "tts" else "",
        text=text,
        usage_event=event,
    )
    if when is not None:
        Generation.objects.filter(pk=generation.pk).update(created_at=when)
        generation.refresh_from_db()
    return generation


def detail_of(response) -> dict:
    detail = response.json()["detail"]
    assert isinstance(detail, dict) and set(detail) >= SHAPE_A, detail
    return detail


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["history_item_id"] for item in response.json()["history"]]


def test_the_list_is_the_members_own_clips_newest_first_in_keyset_pages(
    api, workspace, member, owner
):
    mine = [clip(workspace, member, text=f"Line {n}") for n in range(5)]
    clip(workspace, owner, text="The owner's line")  # a teammate's: not in this key's history
    newest_first = [g.history_item_id for g in reversed(mine)]

    first = api.get("/v1/history", {"page_size": 2})
    body = first.json()
    assert_matches(body, "/v1/history")
    assert ids(first) == newest_first[:2]
    assert (body["has_more"], body["last_history_item_id"]) == (True, newest_first[1])
    assert body["scanned_until"] == int(mine[3].created_at.timestamp())
    second = api.get(
        "/v1/history", {"page_size": 2, "start_after_history_item_id": body["last_history_item_id"]}
    )
    assert ids(second) == newest_first[2:4]
    last = api.get("/v1/history", {"page_size": 2, "start_after_history_item_id": newest_first[3]})
    assert ids(last) == newest_first[4:] and last.json()["has_more"] is False
    assert ids(api.get("/v1/history", {"sort_direction": "asc"})) == newest_first[::-1]


def test_items_carry_elevenlabs_fields_and_their_cost(api, workspace, member):
    paid = clip(
        workspace, member, text="Costly words.", model_id="eleven_v3", credits=Decimal("13.5")
    )
    item = api.get(f"/v1/history/{paid.history_item_id}")
    assert item.status_code == 200
    body = item.json()
    assert_matches(body, "/v1/history/{history_item_id}")
    assert {k: body[k] for k in ("text", "voice_id", "voice_name", "model_id", "source")} == {
        "text": "Costly words.",
        "voice_id": "local-joe",
        "voice_name": "Joe",
        "model_id": "eleven_v3",
        "source": "TTS",
    }
    assert (body["character_count_change_from"], body["character_count_change_to"]) == (
        0,
        math.ceil(Decimal("13.5")),
    )
    assert body["request_id"] == paid.usage_event.request_id
    assert body["settings"] == {"stability": 0.3, "similarity_boost": 0.8}
    assert (body["content_type"], body["state"], body["output_format"]) == (
        "audio/mpeg",
        "created",
        "mp3_44100_128",
    )
    assert body["date_unix"] == int(paid.created_at.timestamp())
    audio = api.get(f"/v1/history/{paid.history_item_id}/audio")
    assert audio.status_code == 200 and audio["content-type"] == "audio/mpeg"
    assert audio.content == b"audio of Costly words."


def test_filters_narrow_the_list(api, workspace, member):
    old = clip(workspace, member, text="An old greeting", when=datetime(2026, 1, 10, tzinfo=UTC))
    tts = clip(workspace, member, text="Hello WORLD", model_id="eleven_v3")
    music = clip(workspace, member, kind="music", text="calm piano")
    dub = clip(workspace, member, kind="dub", text="dubbed words")

    assert ids(api.get("/v1/history", {"search": "world"})) == [tts.history_item_id]
    assert ids(api.get("/v1/history", {"model_id": "eleven_v3"})) == [tts.history_item_id]
    assert set(ids(api.get("/v1/history", {"voice_id": "local-joe"}))) == {
        tts.history_item_id,
        old.history_item_id,
    }
    assert set(ids(api.get("/v1/history", {"source": "TTS"}))) == {
        tts.history_item_id,
        old.history_item_id,
    }
    assert ids(api.get("/v1/history", {"source": "STS"})) == []
    cutoff = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
    assert ids(api.get("/v1/history", {"date_before_unix": cutoff})) == [old.history_item_id]
    after = ids(api.get("/v1/history", {"date_after_unix": cutoff}))
    assert after == [dub.history_item_id, music.history_item_id, tts.history_item_id]
    sources = {i["history_item_id"]: i["source"] for i in api.get("/v1/history").json()["history"]}
    assert (sources[music.history_item_id], sources[dub.history_item_id]) == (None, "Dubbing")


def test_bad_queries_are_422_and_an_unknown_cursor_is_a_400(api, workspace, member):
    bad = api.get("/v1/history", {"page_size": 0, "sort_direction": "up", "source": "Radio"})
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [
        ["query", "page_size"],
        ["query", "sort_direction"],
        ["query", "source"],
    ]
    cursor = api.get("/v1/history", {"start_after_history_item_id": "nope"})
    assert cursor.status_code == 400
    assert detail_of(cursor)["param"] == "start_after_history_item_id"


def test_unknown_teammates_and_foreign_items_are_404_and_left_alone(api, workspace, owner):
    teammate = clip(workspace, owner, text="Owner only")
    stranger = make_user("stranger@example.com")
    foreign = clip(make_workspace("Elsewhere", owner=stranger), stranger, text="Not yours")
    for history_item_id in (teammate.history_item_id, foreign.history_item_id, "missing"):
        for method, path in (
            ("get", f"/v1/history/{history_item_id}"),
            ("get", f"/v1/history/{history_item_id}/audio"),
            ("delete", f"/v1/history/{history_item_id}"),
        ):
            response = getattr(api, method)(path)
            assert response.status_code == 404, (method, path)
            assert detail_of(response)["code"] == "history_item_not_found"
    assert Generation.objects.count() == 2


def test_deleting_an_item_removes_it_and_its_file_but_not_its_ledger_row(api, workspace, member):
    paid = clip(workspace, member, text="Delete me", credits=Decimal(9))
    storage, name = paid.file.storage, paid.file.name
    assert storage.exists(name)

    response = api.delete(f"/v1/history/{paid.history_item_id}")

    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert_matches(response.json(), "/v1/history/{history_item_id}", "delete")
    assert not Generation.objects.exists() and not storage.exists(name)
    event = UsageEvent.objects.get()
    assert (event.status, event.credits) == (UsageStatus.SETTLED, Decimal(9))
    assert api.get(f"/v1/history/{paid.history_item_id}").status_code == 404


def test_a_key_without_the_history_scope_is_forbidden(workspace, member):
    tts_only = services.api_key_create(workspace=workspace, user=member, name="T", scopes=["tts"])
    response = Client(HTTP_XI_API_KEY=tts_only.raw).get("/v1/history")
    assert response.status_code == 403 and detail_of(response)["code"] == "missing_permissions"


@pytest.mark.slow
def test_sdk_history_lists_gets_plays_and_deletes_a_composed_piece(
    celery_worker, daphne_server, issued, member
):
    from elevenlabs.client import ElevenLabs
    from elevenlabs.core.api_error import ApiError

    sdk = ElevenLabs(base_url=daphne_server.url, api_key=issued.raw)
    with sdk.music.with_raw_response.compose(prompt="warm synth pads", music_length_ms=4000) as raw:
        history_item_id = raw.headers["history-item-id"]
        assert raw.headers["song-id"] == history_item_id
        audio = b"".join(raw.data)

    page = sdk.history.list(page_size=10)
    assert [i.history_item_id for i in page.history] == [history_item_id]
    assert page.has_more is False and page.last_history_item_id == history_item_id
    item = sdk.history.get(history_item_id)
    assert (item.text, item.content_type, item.state) == (
        "warm synth pads",
        "audio/mpeg",
        "created",
    )
    assert b"".join(sdk.history.get_audio(history_item_id)) == audio
    event = UsageEvent.objects.get()
    assert (event.status, event.capability, item.request_id) == (
        UsageStatus.SETTLED,
        "music",
        event.request_id,
    )

    assert sdk.history.delete(history_item_id).status == "ok"
    with pytest.raises(ApiError) as caught:
        sdk.history.get(history_item_id)
    assert caught.value.status_code == 404
    assert json.dumps(caught.value.body).count("history_item_not_found") == 2  # code and status
    assert UsageEvent.objects.get().status == UsageStatus.SETTLED
