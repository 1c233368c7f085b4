"""Input that used to be a 500, refused with a 4xx that says why and with nothing written.

- A multipart body Django cannot parse (no boundary, a bad one): 400, on /v1 in ElevenLabs'
  error shape and on studio pages with a page that says so.
- JSON nested deeper than Python's parser recurses (in a body, or in the JSON-in-form fields
  ``labels``, ``keyterms``, ``entity_detection``): 422 naming the nesting (``json_decode``).
- NUL characters, which SQLite stores and PostgreSQL refuses with an error (a 500): refused in
  the address, the query and form fields of the studio (400, ``BadInputMiddleware``) and of
  /v1 (400 for the address and query, 422 on the form field).
"""

import json

import pytest
from django.test import Client
from django.urls import reverse

from apps.billing.models import UsageEvent
from apps.gateway import services
from apps.gateway.api import MAX_JSON_DEPTH, JsonTooDeep, json_decode
from apps.history.models import Generation
from apps.jobs.models import Job
from apps.projects.models import Dubbing
from apps.transcripts.models import Transcript
from apps.voices.models import ApiVoice, DesignVote, LibraryVoice, VoiceNote, VoiceSettingsRecord
from tests.gateway.test_api_media import VOICE, spoken, upload

DEEP = 100_000  # far past the ~1,000 levels at which Python's JSON parser gives up
SHAPE_A = {"type", "code", "message", "status", "request_id"}


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def api(workspace, member):
    return Client(
        HTTP_XI_API_KEY=services.api_key_create(workspace=workspace, user=member, name="B").raw
    )


def detail_of(response) -> dict:
    detail = response.json()["detail"]
    assert isinstance(detail, dict) and set(detail) >= SHAPE_A, detail
    assert detail["request_id"] == response["request-id"]
    return detail


def errors_of(response) -> list[dict]:
    assert response.status_code == 422, response.content[:500]
    return response.json()["detail"]


def assert_nothing_written():
    for model in (UsageEvent, Generation, Job, Dubbing, ApiVoice, VoiceSettingsRecord):
        assert not model.objects.exists(), model


# --- /v1: multipart bodies Django cannot parse -----------------------------------------------

FORM_ENDPOINTS = ["/v1/dubbing", "/v1/speech-to-text", "/v1/voices/add", f"/v1/voices/{VOICE}/edit"]
BAD_MULTIPART = [
    "multipart/form-data",  # no boundary at all
    "multipart/form-data; boundary=",  # an empty one
    "multipart/form-data; boundary=" + "b" * 300,  # longer than Django takes
]


@pytest.mark.parametrize("content_type", BAD_MULTIPART, ids=["none", "empty", "too-long"])
@pytest.mark.parametrize("path", FORM_ENDPOINTS)
def test_a_v1_multipart_body_without_a_usable_boundary_is_a_400(api, path, content_type):
    body = b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nA\r\n--x--\r\n'
    response = api.generic("POST", path, body, content_type=content_type)
    assert response.status_code == 400, response.content[:500]
    detail = detail_of(response)
    assert detail["status"] == "invalid_request_body"
    assert "could not be read" in detail["message"] and "boundary" in detail["message"]
    assert_nothing_written()


# --- /v1: JSON nested too deeply --------------------------------------------------------------

JSON_ENDPOINTS = [
    f"/v1/text-to-speech/{VOICE}",
    f"/v1/text-to-speech/{VOICE}/with-timestamps",
    f"/v1/text-to-speech/{VOICE}/stream",
    "/v1/sound-generation",
    "/v1/text-to-voice/design",
    "/v1/text-to-voice",
    "/v1/music",
    f"/v1/voices/{VOICE}/settings/edit",
]


@pytest.mark.parametrize("where", ["top", "inside"])
@pytest.mark.parametrize("path", JSON_ENDPOINTS)
def test_a_deeply_nested_json_body_is_a_422_naming_the_nesting(api, path, where):
    body = nested(DEEP)
    if where == "inside":
        body = f'{{"text": "Hi", "voice_settings": {body}}}'
    response = api.post(path, body, content_type="application/json")
    [error] = errors_of(response)
    assert error["type"] == "json_invalid" and error["loc"] == ["body"]
    assert f"deeper than {MAX_JSON_DEPTH} levels" in error["msg"]
    assert_nothing_written()


def test_deeply_nested_labels_are_a_422_on_labels(api):
    response = api.post(
        "/v1/voices/add",
        {"name": "Deep", "files": [upload(spoken())], "labels": nested(DEEP, "{}")},
    )
    [error] = [e for e in errors_of(response) if e["loc"] == ["body", "labels"]]
    assert "deeper than" in error["msg"]
    assert_nothing_written()


@pytest.mark.parametrize("field", ["keyterms", "entity_detection", "entity_redaction"])
def test_deeply_nested_json_in_transcription_fields_is_a_422_on_that_field(api, field):
    response = api.post(
        "/v1/speech-to-text",
        {"model_id": "scribe_v1", "file": upload(spoken()), field: nested(DEEP, '"x"')},
    )
    errors = [e for e in errors_of(response) if e["loc"][:2] == ["body", field]]
    assert errors and all(e["msg"] for e in errors)
    assert_nothing_written()


def test_json_decode_takes_64_levels_and_refuses_65():
    assert json_decode(nested(MAX_JSON_DEPTH)) == json.loads(nested(MAX_JSON_DEPTH))
    with pytest.raises(JsonTooDeep):
        json_decode(nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(JsonTooDeep):
        json_decode(nested(DEEP).encode("utf-16"))
    # Objects count as arrays do; nesting hidden between sibling subtrees is found too.
    with pytest.raises(JsonTooDeep):
        json_decode('{"a": ' * 40 + nested(25) + "}" * 40)
    sibling = nested(63, "")
    with pytest.raises(JsonTooDeep):
        json_decode(("[" + sibling + ",") * 100 + "1" + "]" * 100)
    with pytest.raises(JsonTooDeep):  # opened and never closed
        json_decode("[" * DEEP)
    # Brackets inside strings (escaped quotes too) are text, not nesting.
    text = json.dumps({"a": "[" * 500 + '\\"{' * 100})
    assert json_decode(text) == json.loads(text)
    with pytest.raises(json.JSONDecodeError):  # an unterminated string full of brackets
        json_decode('["' + "[" * 500)
    assert json_decode(b'{"b": [1, {"c": []}]}') == {"b": [1, {"c": []}]}
    with pytest.raises(json.JSONDecodeError):
        json_decode("{not json")
    with pytest.raises(ValueError):
        json_decode(b"\xff\xfe\xfd")


# --- /v1: NUL characters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v2/voices?search=a%00b",
        "/v1/voices/a%00b",
        "/v1/voices/a%00b/settings",
        "/v1/history?voice_id=%00",
        "/v1/dubbing/%00",
        "/v1/dubbing?dubbing_status=%00",
    ],
)
def test_a_nul_in_a_v1_address_or_query_is_a_400(api, path):
    response = api.get(path)
    assert response.status_code == 400, response.content[:500]
    detail = detail_of(response)
    assert detail["status"] == "invalid_characters" and "NUL" in detail["message"]


def test_a_nul_in_a_v1_form_field_is_a_422_on_that_field(api):
    response = api.post(
        "/v1/dubbing",
        {"file": upload(b"ID3" + b"\x00" * 100, "a.mp3"), "target_lang": "en", "name": "a\x00b"},
    )
    [error] = errors_of(response)
    assert (error["loc"], error["type"]) == (["body", "name"], "string_unicode")
    assert_nothing_written()


# --- Studio pages -----------------------------------------------------------------------------


@pytest.fixture
def voice(workspace):
    return LibraryVoice.objects.create(
        workspace=workspace, engine="local", voice_id="v-ada", name="Ada"
    )


def assert_refused_page(response, says: str, status: int = 400):
    assert response.status_code == status, response.content[:500]
    assert says in response.content.decode()


@pytest.mark.parametrize("content_type", BAD_MULTIPART, ids=["none", "empty", "too-long"])
def test_a_studio_form_without_a_usable_boundary_is_a_400_page_that_says_so(
    client_as, member, voice, content_type
):
    body = b'--x\r\nContent-Disposition: form-data; name="text"\r\n\r\nHello\r\n--x--\r\n'
    response = client_as(member).generic(
        "POST", reverse("voices:note_add", args=[voice.pk]), body, content_type=content_type
    )
    assert_refused_page(response, "could not be read")
    assert not VoiceNote.objects.exists()


def test_a_nul_in_a_voice_note_is_a_400(client_as, member, voice):
    response = client_as(member).post(
        reverse("voices:note_add", args=[voice.pk]), {"text": "Warm\x00 and clear"}
    )
    assert_refused_page(response, "NUL character")
    assert "field &#x27;text&#x27;" in response.content.decode()
    assert not VoiceNote.objects.exists()
    # The same note without it is taken.
    fine = client_as(member).post(
        reverse("voices:note_add", args=[voice.pk]), {"text": "Warm and clear"}
    )
    assert fine.status_code == 303 and VoiceNote.objects.get().text == "Warm and clear"


def test_a_nul_in_a_paragraph_edit_is_a_400(client_as, workspace, member):
    from tests.transcripts.test_editor import make_transcript

    transcript = make_transcript(workspace, member)
    before = transcript.text
    response = client_as(member).post(
        reverse("transcripts:paragraph_edit", args=[transcript.pk, 1]), {"text": "Hi\x00 there"}
    )
    assert_refused_page(response, "NUL character")
    transcript.refresh_from_db()
    assert transcript.text == before and transcript.edited_at is None


def test_a_nul_in_a_vote_question_is_a_400(client_as, workspace, member):
    from apps.voices import services_design
    from tests.voices.test_design import recipe

    design = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    response = client_as(member).post(
        reverse("voices:vote_open", args=[design.pk]), {"question": "Which\x00 one?"}
    )
    assert_refused_page(response, "NUL character")
    assert not DesignVote.objects.exists()


@pytest.mark.parametrize(
    "name", ["voices:library", "voices:designs", "transcripts:list", "workspaces:audit"]
)
def test_a_nul_in_a_search_is_a_400(client_as, owner, workspace, name):
    response = client_as(owner).get(reverse(name), {"q": "a\x00b"})
    assert_refused_page(response, "query parameter &#x27;q&#x27;")


def test_a_nul_in_a_transcript_search_or_the_address_is_a_400(client_as, workspace, member):
    from tests.transcripts.test_editor import make_transcript

    transcript = make_transcript(workspace, member)
    client = client_as(member)
    page = reverse("transcripts:detail", args=[transcript.pk])
    assert_refused_page(client.get(page, {"q": "budget\x00"}), "NUL character")
    assert_refused_page(client.get("/invite/abc%00def/"), "the address")
    assert client.get(page, {"q": "budget"}).status_code == 200
    assert Transcript.objects.count() == 1
