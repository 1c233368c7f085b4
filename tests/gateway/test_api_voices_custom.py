"""Voices a workspace made through the API (clones, saved designs) in the voice lists of the
local engine: /v1/voices, /v2/voices (search, category, sort, pages) and /v1/voices/{id},
never another workspace's."""

import json

import pytest
from django.test import Client

from apps.engines.local import tts as local_tts
from apps.gateway import services
from tests.factories import make_user, make_workspace

from .openapi_check import assert_matches
from .test_api_media import DESCRIPTION, PREVIEW_TEXT, SENTENCE, spoken, upload

CATALOGUE = {voice.voice_id: voice for voice in local_tts.list_voices()}


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def api(workspace, member):
    return Client(
        HTTP_XI_API_KEY=services.api_key_create(workspace=workspace, user=member, name="V").raw
    )


@pytest.fixture
def stranger(db):
    """A key of another workspace, with its own member."""
    boss = make_user("stranger@example.com", name="Sam Stranger")
    elsewhere = make_workspace("Elsewhere Ltd", owner=boss)
    return Client(
        HTTP_XI_API_KEY=services.api_key_create(workspace=elsewhere, user=boss, name="S").raw
    )


def clone(api, name: str, **labels) -> str:
    response = api.post(
        "/v1/voices/add",
        {
            "name": name,
            "description": "Recorded on the pier",
            "labels": json.dumps(labels),
            "files": [upload(spoken(SENTENCE + " " + SENTENCE))],
        },
    )
    assert response.status_code == 200, response.content
    return response.json()["voice_id"]


def design_saved(api, name: str) -> str:
    designed = api.post(
        "/v1/text-to-voice/design",
        json.dumps({"voice_description": DESCRIPTION, "text": PREVIEW_TEXT, "seed": 11}),
        content_type="application/json",
    )
    assert designed.status_code == 200, designed.content
    preview = designed.json()["previews"][0]["generated_voice_id"]
    saved = api.post(
        "/v1/text-to-voice",
        json.dumps(
            {"voice_name": name, "voice_description": DESCRIPTION, "generated_voice_id": preview}
        ),
        content_type="application/json",
    )
    assert saved.status_code == 200, saved.content
    return saved.json()["voice_id"]


def listed(api) -> dict[str, dict]:
    response = api.get("/v1/voices")
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, "/v1/voices")
    return {voice["voice_id"]: voice for voice in body["voices"]}


def searched(api, **query) -> dict:
    response = api.get("/v2/voices", query)
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, "/v2/voices")
    return body


def key_of(api):
    return services.api_key_authenticate(api.defaults["HTTP_XI_API_KEY"])


def ids(body: dict) -> list[str]:
    return [voice["voice_id"] for voice in body["voices"]]


def test_a_clone_made_through_the_api_is_listed_searched_and_fetched(api):
    assert set(listed(api)) == set(CATALOGUE)
    made = clone(api, "Harbour Master", accent="scottish")

    every = listed(api)
    assert set(every) == set(CATALOGUE) | {made}
    assert (every[made]["name"], every[made]["category"]) == ("Harbour Master", "cloned")
    assert every[made]["labels"]["accent"] == "scottish"

    assert ids(searched(api, search="harbour")) == [made]  # by name, in any case
    assert ids(searched(api, search="SCOTTISH")) == [made]  # by a label's value
    assert ids(searched(api, search="on the pier")) == [made]  # by its description
    assert ids(searched(api, search="joe")) == ["local-joe"]
    assert ids(searched(api, category="cloned")) == [made]
    premade = searched(api, category="premade", page_size=100)
    assert set(ids(premade)) == set(CATALOGUE) and premade["total_count"] == len(CATALOGUE)
    first = searched(api)  # the engine's voices first, then the workspace's
    assert (first["total_count"], first["has_more"]) == (len(CATALOGUE) + 1, True)
    assert ids(first) == list(CATALOGUE)[:10]

    response = api.get(f"/v1/voices/{made}")
    assert response.status_code == 200, response.content
    voice = response.json()
    assert_matches(voice, "/v1/voices/{voice_id}")
    assert (voice["voice_id"], voice["name"], voice["category"]) == (
        made,
        "Harbour Master",
        "cloned",
    )
    assert services.api_voice(api_key=key_of(api), voice_id=made).name == "Harbour Master"


def test_clones_and_saved_designs_are_sorted_and_paged_with_the_engine_s_voices(api):
    cloned = clone(api, "Aaron Clone")
    generated = design_saved(api, "Zelda Design")

    every = listed(api)
    assert every[generated]["category"] == "generated"
    assert ids(searched(api, category="generated")) == [generated]

    names, token, pages = [], None, 0
    while True:
        query = {"page_size": 3, "sort": "name", "sort_direction": "asc"}
        page = searched(api, **query, **({"next_page_token": token} if token else {}))
        assert page["total_count"] == len(CATALOGUE) + 2
        names += [voice["name"] for voice in page["voices"]]
        pages += 1
        token = page["next_page_token"]
        if not page["has_more"]:
            assert token is None
            break
    assert pages == -(-(len(CATALOGUE) + 2) // 3)
    assert names == sorted(names, key=str.lower) and len(set(names)) == len(CATALOGUE) + 2
    assert (names[0], names[-1]) == ("Aaron Clone", "Zelda Design")

    backwards = searched(api, sort="name", sort_direction="desc", page_size=100)
    assert [voice["name"] for voice in backwards["voices"]] == names[::-1]
    newest = searched(api, sort="created_at_unix", sort_direction="desc", page_size=2)
    assert set(ids(newest)) == {cloned, generated}  # the engine's voices have no date


def test_another_workspace_s_voices_never_appear(api, stranger):
    ours = clone(api, "Our Voice")
    theirs = clone(stranger, "Their Voice")

    assert ours in listed(api) and theirs not in listed(api)
    assert theirs in listed(stranger) and ours not in listed(stranger)
    assert ids(searched(api, search="voice", category="cloned")) == [ours]
    assert ids(searched(stranger, search="voice", category="cloned")) == [theirs]
    assert searched(api, page_size=100)["total_count"] == len(CATALOGUE) + 1
    missing = api.get(f"/v1/voices/{theirs}")
    assert missing.status_code == 404, missing.content
    assert missing.json()["detail"]["status"] == "voice_not_found"


def test_a_page_token_that_is_not_an_offset_is_a_422(api):
    for token in ("abc", "-3"):
        response = api.get("/v2/voices", {"next_page_token": token})
        assert response.status_code == 422, response.content
        assert [e["loc"] for e in response.json()["detail"]] == [["query", "next_page_token"]]
