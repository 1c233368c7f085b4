"""The /v1 API's JSON bodies fit ElevenLabs' OpenAPI response schemas (required fields, types)."""

import json
from decimal import Decimal

import pytest
from django.test import Client

from apps.billing.models import Budget, UsageEvent, UsageStatus
from apps.engines.base import TTSRequest
from apps.gateway import services

from .openapi_check import assert_matches, problems, response_schema

VOICE = "local-joe"


@pytest.fixture
def client_with_key(workspace, member):
    issued = services.api_key_create(workspace=workspace, user=member, name="Spec")
    return Client(HTTP_XI_API_KEY=issued.raw)


def test_the_checker_finds_a_missing_required_field_and_a_wrong_type():
    schema = response_schema("/v1/voices/{voice_id}")
    assert problems({"voice_id": "v", "name": "n"}, schema)  # category, labels … missing
    body = {
        "voice_id": "v",
        "name": 5,
        "category": "premade",
        "labels": {},
        "available_for_tiers": [],
        "high_quality_base_model_ids": [],
    }
    assert problems(body, schema) == ["$.name: int 5 is not string"]
    body["name"] = "Joe"
    assert problems(body, schema) == []
    assert problems({**body, "category": "mystery"}, schema)  # not in the enum


@pytest.mark.parametrize(
    "url,spec_path",
    [
        ("/v1/models", "/v1/models"),
        ("/v1/voices", "/v1/voices"),
        ("/v2/voices?page_size=3", "/v2/voices"),
        (f"/v1/voices/{VOICE}", "/v1/voices/{voice_id}"),
        ("/v1/user", "/v1/user"),
        ("/v1/user/subscription", "/v1/user/subscription"),
    ],
)
def test_get_bodies_match_their_200_schemas(client_with_key, url, spec_path):
    response = client_with_key.get(url)
    assert response.status_code == 200, response.content
    assert_matches(response.json(), spec_path)


def test_a_budgeted_members_subscription_matches_too(client_with_key, workspace, member):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(1234))
    body = client_with_key.get("/v1/user/subscription").json()
    assert_matches(body, "/v1/user/subscription")
    assert body["character_limit"] == 1234


def test_the_with_timestamps_body_matches_its_schema(client_with_key):
    response = client_with_key.post(
        f"/v1/text-to-speech/{VOICE}/with-timestamps",
        {"text": "Hello, world."},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert_matches(response.json(), "/v1/text-to-speech/{voice_id}/with-timestamps", "post")


# The stream is asynchronous (served by ASGI); the synchronous test client drains it anyway.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
def test_each_streamed_timestamp_line_matches_its_schema(client_with_key):
    text = "One sentence. And another one."
    response = client_with_key.post(
        f"/v1/text-to-speech/{VOICE}/stream/with-timestamps",
        {"text": text},
        content_type="application/json",
    )
    assert response.status_code == 200
    lines = [line for line in b"".join(response).split(b"\n") if line.strip()]
    assert lines
    for line in lines:
        assert_matches(
            json.loads(line), "/v1/text-to-speech/{voice_id}/stream/with-timestamps", "post"
        )
    event = UsageEvent.objects.get()
    assert (event.status, event.units) == (UsageStatus.SETTLED, len(text))


def test_error_bodies_match_the_validation_error_schema(client_with_key):
    response = client_with_key.post(
        f"/v1/text-to-speech/{VOICE}", {"model_id": 3}, content_type="application/json"
    )
    assert response.status_code == 422
    assert_matches(response.json(), "/v1/text-to-speech/{voice_id}", "post", "422")


def test_history_and_dubbing_bodies_match_their_schemas(client_with_key, workspace, member):
    from apps.engines.local.engine import local_engine
    from apps.history.services import generation_save
    from apps.projects.services import dubbing_create

    clip = generation_save(
        workspace=workspace,
        user=member,
        kind="tts",
        engine="local",
        audio=b"not really audio",
        content_type="audio/mpeg",
        recipe={"output_format": "mp3_44100_128"},
        voice_id=VOICE,
        text="Hello.",
    )
    speech = local_engine().tts(TTSRequest(text="A short line to dub.", voice_id=VOICE)).audio
    dub = dubbing_create(
        workspace=workspace, user=member, media=speech, filename="line.mp3", target_lang="en"
    )
    for url, spec_path in [
        ("/v1/history", "/v1/history"),
        (f"/v1/history/{clip.history_item_id}", "/v1/history/{history_item_id}"),
        ("/v1/dubbing", "/v1/dubbing"),
        (f"/v1/dubbing/{dub.dubbing_id}", "/v1/dubbing/{dubbing_id}"),
    ]:
        response = client_with_key.get(url)
        assert response.status_code == 200, response.content
        assert_matches(response.json(), spec_path)
    assert response.json()["status"] == "dubbing"
