"""The /v1 media endpoints in process: speech to text, sound effects, voice design, voice
changes; their refusals in ElevenLabs' shapes, their bodies against the OpenAPI schemas, and
what each call leaves in the ledger and in the history."""

import base64
import functools
import io
import json
from decimal import Decimal

import av
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.billing.models import Budget, UsageEvent, UsageSource, UsageStatus
from apps.billing.services import metered
from apps.engines.base import TTSRequest
from apps.engines.local import design as local_design
from apps.engines.local import tts as local_tts
from apps.gateway import services
from apps.generation import media as services_media
from apps.generation import metering
from apps.history.models import Generation, GenerationKind
from apps.voices.models import ApiVoice, VoiceSettingsRecord
from apps.workspaces.services import engine_settings_update
from tests.factories import make_user, make_workspace

from .openapi_check import assert_matches

VOICE = "local-joe"
SENTENCE = "The quick brown fox jumps over the lazy dog."
DESCRIPTION = "A calm middle-aged man with a deep, slow and warm voice, British accent."
PREVIEW_TEXT = (
    "Good evening, and welcome to the late show. Tonight we have a story about a lighthouse, "
    "a storm and a very patient cat."
)
SHAPE_A = {"type", "code", "message", "status", "request_id"}


# --- Helpers ------------------------------------------------------------------------------


@functools.cache
def spoken(text: str = SENTENCE, output_format: str = "wav_16000", voice: str = VOICE) -> bytes:
    """Speech made by the local engine (the same bytes every time: it is seeded)."""
    request = TTSRequest(text=text, voice_id=voice, output_format=output_format, seed=7)
    return local_tts.synthesize(request).audio


def seconds_of(audio: bytes) -> float:
    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def upload(data: bytes, name: str = "speech.wav", content_type: str = "audio/wav"):
    return SimpleUploadedFile(name, data, content_type=content_type)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def issued(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="Media")


@pytest.fixture
def api(issued):
    return Client(HTTP_XI_API_KEY=issued.raw)


@pytest.fixture
def stranger():
    """A key of another workspace, with its own member."""
    boss = make_user("stranger@example.com", name="Sam Stranger")
    elsewhere = make_workspace("Elsewhere Ltd", owner=boss)
    return Client(
        HTTP_XI_API_KEY=services.api_key_create(workspace=elsewhere, user=boss, name="S").raw
    )


def post_json(client, path, body, **extra):
    return client.post(path, json.dumps(body), content_type="application/json", **extra)


def detail_of(response) -> dict:
    detail = response.json()["detail"]
    assert isinstance(detail, dict), detail
    assert set(detail) >= SHAPE_A, detail
    assert detail["status"] == detail["code"]
    assert detail["request_id"] == response["request-id"]
    return detail


def errors_of(response) -> list[dict]:
    assert response.status_code == 422, response.content
    errors = response.json()["detail"]
    assert isinstance(errors, list) and errors
    for error in errors:
        assert {"loc", "msg", "type"} <= set(error)
    return errors


def locs_of(response) -> list[list]:
    return [e["loc"] for e in errors_of(response)]


def events() -> list[UsageEvent]:
    return list(UsageEvent.objects.order_by("id"))


def on_elevenlabs(workspace, owner):
    """Calls cost credits on ElevenLabs; its base URL is never reached (budgets refuse first)."""
    engine_settings_update(
        workspace=workspace,
        actor=owner,
        kind="elevenlabs",
        api_key="sk-test",
        base_url="http://127.0.0.1:9",
    )


@pytest.fixture
def spent(workspace, owner, member):
    """The member's budget of 100 credits is used up, on a workspace where calls cost."""
    on_elevenlabs(workspace, owner)
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(100))
    with metered(
        workspace=workspace, user=member, capability="tts", engine="elevenlabs", units=100
    ) as meter:
        meter.settle(units=100)
    return list(UsageEvent.objects.values_list("pk", "status", "credits"))


def assert_spent_refusal(response, spent) -> None:
    assert response.status_code == 429, response.content
    detail = detail_of(response)
    assert (detail["code"], detail["type"]) == ("quota_exceeded", "rate_limit_error")
    assert "Mia Member's budget of 100 credits" in detail["message"]
    assert list(UsageEvent.objects.values_list("pk", "status", "credits")) == spent
    assert not Generation.objects.exists()


def transcribe(api, data=None, **fields):
    form = {"model_id": "scribe_v1", **fields}
    if data is not None:
        form["file"] = upload(data)
    return api.post("/v1/speech-to-text", form)


# --- Speech to text ---------------------------------------------------------------------------


def test_an_upload_is_transcribed_in_elevenlabs_shape_and_metered_by_its_length(
    api, issued, member
):
    audio = spoken()
    response = transcribe(api, audio, timestamps_granularity="word")

    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, "/v1/speech-to-text", "post")
    words = [w["text"].strip(".,").lower() for w in body["words"] if w["type"] == "word"]
    assert words == ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
    assert body["language_code"] in ("en", "eng")
    assert body["text"].strip().lower().startswith("the quick brown fox")
    timed = [w for w in body["words"] if w["type"] == "word"]
    assert all(0 <= w["start"] <= w["end"] for w in timed) and timed[-1]["end"] > 1
    assert [w["start"] for w in timed] == sorted(w["start"] for w in timed)
    duration = seconds_of(audio)
    assert body["audio_duration_secs"] == pytest.approx(duration, abs=0.05)

    [event] = events()
    assert (event.status, event.source, event.capability, event.user, event.api_key_id) == (
        UsageStatus.SETTLED,
        UsageSource.API,
        "stt",
        member,
        issued.api_key.pk,
    )
    assert event.unit == "minute"
    assert float(event.units) == pytest.approx(duration / 60, abs=0.002)
    assert response["request-id"] == event.request_id
    assert response["character-cost"] == "0"  # the local engine is free


def test_character_timestamps_come_with_each_word(api):
    response = api.post(
        "/v1/speech-to-text",
        {
            "model_id": "scribe_v2",
            "timestamps_granularity": "character",
            "file": upload(spoken(), "Grüße – 世界.wav"),
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, "/v1/speech-to-text", "post")
    fox = next(w for w in body["words"] if w["text"].strip(".,").lower() == "fox")
    assert "".join(c["text"] for c in fox["characters"]).lower() == "fox"
    assert fox["characters"][0]["start"] == pytest.approx(fox["start"], abs=0.05)


def test_keyterms_come_as_repeated_fields_or_as_one_json_array(api):
    for keyterms in (["fox", "lazy dog"], json.dumps(["fox", "lazy dog"])):
        response = transcribe(api, spoken(), keyterms=keyterms)
        assert response.status_code == 200, response.content
    bad = transcribe(api, spoken(), keyterms=["fine", "not <ok>"])
    [error] = errors_of(bad)
    assert error["loc"] == ["body", "keyterms"]
    assert error["msg"] == "Key terms cannot contain < > { } [ ] or \\: “not <ok>”."
    # Refused before anything was reserved (the studio's check, before the engine's).
    assert [e.status for e in events()] == [UsageStatus.SETTLED] * 2


def test_raw_16_khz_pcm_is_read_when_file_format_says_so(api):
    pcm = spoken(output_format="pcm_16000")
    response = transcribe(api, pcm, file_format="pcm_s16le_16")
    assert response.status_code == 200, response.content
    assert "fox" in response.json()["text"].lower()
    [event] = events()
    assert float(event.units) == pytest.approx(len(pcm) / 32000 / 60, abs=0.002)


def test_a_missing_file_is_a_422_naming_it_and_nothing_is_reserved(api):
    assert locs_of(transcribe(api)) == [["body", "file"]]
    errors = errors_of(api.post("/v1/speech-to-text", {"file": upload(spoken())}))
    assert errors == [{"type": "missing", "loc": ["body", "model_id"], "msg": "Field required"}]
    assert events() == []


@pytest.mark.parametrize(
    "data,name,says",
    [
        (b"", "empty.wav", "is empty"),
        (b"\x13\x37" * 3000, "noise.mp3", "could not be decoded"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt garbage", "broken.wav", "could not be decoded"),
        (b"just some notes, not audio\n" * 20, "notes.txt", "could not be decoded"),
        (
            base64.b64decode(
                "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
            ),
            "pixel.png",
            "could not be decoded",
        ),
    ],
)
def test_a_file_that_is_not_audio_is_a_422_on_file_and_costs_nothing(api, data, name, says):
    response = api.post("/v1/speech-to-text", {"model_id": "scribe_v1", "file": upload(data, name)})
    [error] = errors_of(response)
    assert error["loc"] == ["body", "file"]
    assert says in error["msg"]
    assert events() == []


def test_a_multipart_body_that_cannot_be_parsed_is_a_400(api):
    response = api.generic(
        "POST", "/v1/speech-to-text", b"--x\r\nnot a part", content_type="multipart/form-data"
    )
    assert response.status_code == 400
    detail = detail_of(response)
    assert detail["code"] == "invalid_request_body" and "could not be read" in detail["message"]


def test_a_json_body_is_a_422_asking_for_multipart(api):
    response = post_json(api, "/v1/speech-to-text", {"model_id": "scribe_v1"})
    [error] = errors_of(response)
    assert error["loc"] == ["body"] and "multipart/form-data" in error["msg"]


def test_a_file_sent_as_text_is_a_422(api):
    response = api.post("/v1/speech-to-text", {"model_id": "scribe_v1", "file": "hello"})
    [error] = errors_of(response)
    assert error["loc"] == ["body", "file"] and "file part" in error["msg"]


@pytest.mark.parametrize("field", ["cloud_storage_url", "source_url"])
def test_urls_are_refused_because_chorus_does_not_fetch_them(api, field):
    response = api.post(
        "/v1/speech-to-text", {"model_id": "scribe_v1", field: "https://example.com/a.mp3"}
    )
    assert response.status_code == 400
    detail = detail_of(response)
    assert (detail["code"], detail["param"]) == ("not_supported", field)
    assert "upload" in detail["message"]
    assert events() == []


@pytest.mark.parametrize(
    "field,value",
    [
        ("webhook", "true"),
        ("use_multi_channel", "true"),
        ("additional_formats", '[{"format":"srt"}]'),
    ],
)
def test_options_chorus_cannot_honour_are_a_400_not_a_silent_no(api, field, value):
    response = transcribe(api, spoken(), **{field: value})
    assert response.status_code == 400
    assert detail_of(response)["param"] == field
    assert events() == []


def test_bad_form_values_are_each_reported_where_they_are(api):
    response = transcribe(
        api,
        spoken(),
        num_speakers="40",
        timestamps_granularity="sentence",
        diarize="maybe",
        temperature="hot",
        seed="-1",
        language_code="en\x00",
    )
    by_loc = {tuple(e["loc"]): e["type"] for e in errors_of(response)}
    assert by_loc == {
        ("body", "num_speakers"): "less_than_equal",
        ("body", "timestamps_granularity"): "enum",
        ("body", "diarize"): "bool_parsing",
        ("body", "temperature"): "float_parsing",
        ("body", "seed"): "greater_than_equal",
        ("body", "language_code"): "string_unicode",
    }
    assert events() == []


def test_an_upload_over_the_limit_is_a_413_before_it_is_read(api, monkeypatch):
    monkeypatch.setattr(services_media, "MAX_UPLOAD_BYTES", 10_000)
    response = transcribe(api, spoken())
    assert response.status_code == 413
    assert detail_of(response)["code"] == "payload_too_large"
    assert events() == []


def test_speech_to_text_with_a_spent_budget_is_a_429_and_the_ledger_is_unchanged(api, spent):
    assert_spent_refusal(transcribe(api, spoken()), spent)


# --- Sound effects ----------------------------------------------------------------------------


def sound(api, body, query=""):
    return post_json(api, f"/v1/sound-generation{query}", body)


def test_a_sound_effect_is_audio_of_the_asked_length_kept_with_its_recipe(api, issued, member):
    body = {"text": "A wooden door creaks open", "duration_seconds": 2.5, "seed": 42}
    response = sound(api, body)

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "audio/mpeg"
    assert seconds_of(response.content) == pytest.approx(2.5, abs=0.1)

    [event] = events()
    assert (event.status, event.source, event.capability, event.api_key_id) == (
        UsageStatus.SETTLED,
        UsageSource.API,
        "sound_effect",
        issued.api_key.pk,
    )
    assert response["request-id"] == event.request_id

    generation = Generation.objects.get()
    assert (generation.kind, generation.source, generation.user, generation.api_key_id) == (
        GenerationKind.SOUND,
        "api",
        member,
        issued.api_key.pk,
    )
    assert generation.usage_event == event
    assert response["history-item-id"] == generation.history_item_id
    with generation.file.open("rb") as stored:
        assert stored.read() == response.content
    assert generation.recipe["seed"] == 42
    assert {k: generation.recipe[k] for k in body} == body
    assert generation.recipe["model_id"] == "eleven_text_to_sound_v2"
    assert generation.recipe["output_format"] == "mp3_44100_128"
    assert generation.recipe["prompt_influence"] == 0.3
    assert generation.recipe["loop"] is False


def test_a_clip_that_cannot_be_kept_is_refunded_and_leaves_no_file(api, media, monkeypatch):
    def settle_fails(self, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("apps.billing.services.Meter.settle", settle_fails)
    response = sound(api, {"text": "A door slams", "duration_seconds": 1})
    assert response.status_code == 500
    assert detail_of(response)["code"] == "internal_error"
    assert [e.status for e in events()] == [UsageStatus.REFUNDED]
    assert not Generation.objects.exists()
    assert not [p for p in media.rglob("*") if p.is_file()]


def test_a_design_whose_third_preview_cannot_be_kept_keeps_none(api, media, monkeypatch):
    real = metering.generation_save
    calls = []

    def third_fails(**kwargs):
        calls.append(kwargs["voice_id"])
        if len(calls) == 3:
            raise OSError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(metering, "generation_save", third_fails)
    response = post_json(api, "/v1/text-to-voice/design", {"voice_description": DESCRIPTION})
    assert response.status_code == 500
    assert len(calls) == 3
    assert [e.status for e in events()] == [UsageStatus.REFUNDED]
    assert not Generation.objects.exists()
    assert not [p for p in media.rglob("*") if p.is_file()]


def test_the_stored_recipe_makes_the_same_sound_again(api):
    first = sound(api, {"text": "Rain on a tin roof", "duration_seconds": 1.0})
    recipe = Generation.objects.get().recipe
    again = sound(
        api,
        {
            "text": recipe["text"],
            "duration_seconds": recipe["duration_seconds"],
            "prompt_influence": recipe["prompt_influence"],
            "seed": recipe["seed"],  # chosen by the engine the first time
        },
        f"?output_format={recipe['output_format']}",
    )
    assert again.status_code == 200
    assert again.content == first.content


def test_a_sound_effect_in_wav(api):
    response = sound(
        api, {"text": "Glass breaking", "duration_seconds": 1}, "?output_format=wav_22050"
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "audio/wav"
    assert seconds_of(response.content) == pytest.approx(1.0, abs=0.05)
    assert Generation.objects.get().file.name.endswith(".wav")


def test_bad_sound_bodies_are_422_and_bad_formats_400_with_nothing_reserved(api):
    response = sound(api, {"duration_seconds": 31, "prompt_influence": 2, "loop": "yes"})
    assert set(map(tuple, locs_of(response))) == {
        ("body", "text"),
        ("body", "duration_seconds"),
        ("body", "prompt_influence"),
        ("body", "loop"),
    }
    assert locs_of(sound(api, {"text": "  "})) == [["body", "text"]]
    bad = sound(api, {"text": "Thunder"}, "?output_format=flac_44100")
    assert bad.status_code == 400
    assert detail_of(bad)["code"] == "invalid_output_format"
    assert events() == [] and not Generation.objects.exists()


def test_a_json_body_over_the_upload_limit_is_a_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = sound(api, {"text": "rain " * 400})
    assert response.status_code == 413
    assert detail_of(response)["code"] == "payload_too_large"
    assert events() == []


def test_a_sound_effect_with_a_spent_budget_is_a_429_and_nothing_is_kept(api, spent):
    assert_spent_refusal(sound(api, {"text": "Thunder"}), spent)


# --- Voice design -----------------------------------------------------------------------------


def designed(api, **extra):
    body = {"voice_description": DESCRIPTION, "text": PREVIEW_TEXT, "seed": 11, **extra}
    response = post_json(api, "/v1/text-to-voice/design", body)
    assert response.status_code == 200, response.content
    return response


def test_design_returns_previews_each_kept_as_a_generation_with_its_recipe(api, issued):
    response = designed(api)
    body = response.json()
    assert_matches(body, "/v1/text-to-voice/design", "post")
    assert body["text"] == PREVIEW_TEXT
    previews = body["previews"]
    assert len(previews) == 3
    assert len({p["generated_voice_id"] for p in previews}) == 3

    [event] = events()
    assert (event.status, event.capability, event.source) == (
        UsageStatus.SETTLED,
        "voice_design",
        UsageSource.API,
    )
    assert response["request-id"] == event.request_id
    kept = {g.recipe["generated_voice_id"]: g for g in Generation.objects.all()}
    assert set(kept) == {p["generated_voice_id"] for p in previews}
    for preview in previews:
        audio = base64.b64decode(preview["audio_base_64"])
        assert preview["media_type"] == "audio/mpeg"
        assert seconds_of(audio) == pytest.approx(preview["duration_secs"], abs=0.1)
        generation = kept[preview["generated_voice_id"]]
        assert generation.kind == GenerationKind.DESIGN_PREVIEW
        assert (generation.usage_event, generation.api_key_id) == (event, issued.api_key.pk)
        with generation.file.open("rb") as stored:
            assert stored.read() == audio
        recipe = generation.recipe
        assert (recipe["voice_description"], recipe["seed"], recipe["text"]) == (
            DESCRIPTION,
            11,
            PREVIEW_TEXT,
        )
        assert recipe["model_id"] == "eleven_multilingual_ttv_v2"
        assert recipe["output_format"] == "mp3_44100_192"
        assert recipe["engine_recipe"]["base_voice_id"].startswith("local-")
        assert recipe["engine_recipe"]["seed"] == 11


def test_a_preview_is_saved_and_spoken_from_its_stored_recipe_in_a_fresh_process(api, issued):
    preview = designed(api).json()["previews"][1]
    local_design._previews.clear()  # another process: the engine remembers nothing

    response = post_json(
        api,
        "/v1/text-to-voice",
        {
            "voice_name": "Narrator",
            "voice_description": DESCRIPTION,
            "generated_voice_id": preview["generated_voice_id"],
            "labels": {"accent": "british", "use_case": None},
        },
    )
    assert response.status_code == 200, response.content
    voice = response.json()
    assert_matches(voice, "/v1/text-to-voice", "post")
    assert (voice["name"], voice["category"], voice["labels"]) == (
        "Narrator",
        "generated",
        {"accent": "british"},
    )
    row = ApiVoice.objects.get(voice_id=voice["voice_id"])
    assert (
        row.recipe["base_voice_id"]
        == Generation.objects.get(recipe__generated_voice_id=preview["generated_voice_id"]).recipe[
            "engine_recipe"
        ]["base_voice_id"]
    )
    assert (row.created_by, row.api_key_id) == (issued.api_key.user, issued.api_key.pk)

    spoken_by_voice = post_json(
        api, f"/v1/text-to-speech/{voice['voice_id']}", {"text": "Hello there.", "seed": 3}
    )
    assert spoken_by_voice.status_code == 200, spoken_by_voice.content
    by_base = post_json(
        api,
        f"/v1/text-to-speech/{row.recipe['base_voice_id']}",
        {"text": "Hello there.", "seed": 3},
    )
    assert spoken_by_voice.content != by_base.content  # the recipe was applied

    fetched = api.get(f"/v1/voices/{voice['voice_id']}").json()
    assert (fetched["name"], fetched["category"]) == ("Narrator", "generated")


# The stream is asynchronous (served by ASGI); the synchronous test client drains it anyway.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
def test_a_preview_streams_again_from_its_stored_recipe(api):
    preview = designed(api).json()["previews"][0]
    local_design._previews.clear()
    response = api.get(f"/v1/text-to-voice/{preview['generated_voice_id']}/stream")
    assert response.status_code == 200
    assert response["Content-Type"] == "audio/mpeg"
    audio = b"".join(response)
    assert seconds_of(audio) == pytest.approx(preview["duration_secs"], abs=0.3)
    assert len(events()) == 1  # replaying a preview costs nothing more


def test_stream_previews_sends_only_ids_but_keeps_the_audio(api):
    previews = designed(api, stream_previews=True).json()["previews"]
    assert [p["audio_base_64"] for p in previews] == ["", "", ""]
    kept = {g.recipe["generated_voice_id"]: g for g in Generation.objects.all()}
    assert set(kept) == {p["generated_voice_id"] for p in previews}
    assert all(g.size_bytes > 1000 and g.file.size == g.size_bytes for g in kept.values())


@pytest.mark.parametrize("how", ["unknown", "foreign"])
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
def test_a_preview_id_of_no_or_another_workspace_is_a_404(api, stranger, how):
    if how == "foreign":
        generated_voice_id = designed(stranger).json()["previews"][0]["generated_voice_id"]
        assert Generation.objects.filter(recipe__generated_voice_id=generated_voice_id).exists()
    else:
        generated_voice_id = "local-gen-0123456789abcdef0123"
    save = post_json(
        api,
        "/v1/text-to-voice",
        {
            "voice_name": "Mine now",
            "voice_description": DESCRIPTION,
            "generated_voice_id": generated_voice_id,
        },
    )
    stream = api.get(f"/v1/text-to-voice/{generated_voice_id}/stream")
    for response in (save, stream):
        assert response.status_code == 404
        detail = detail_of(response)
        assert (detail["code"], detail["type"], detail["param"]) == (
            "voice_not_found",
            "not_found",
            "generated_voice_id",
        )
    assert not ApiVoice.objects.exists()


def test_bad_design_bodies_are_422_and_wav_is_a_400(api):
    response = post_json(
        api,
        "/v1/text-to-voice/design",
        {"voice_description": "too short", "text": "also short", "guidance_scale": 101},
    )
    by_loc = {tuple(e["loc"]): e["type"] for e in errors_of(response)}
    assert by_loc == {
        ("body", "voice_description"): "string_too_short",
        ("body", "text"): "string_too_short",
        ("body", "guidance_scale"): "less_than_equal",
    }
    wav = post_json(
        api, "/v1/text-to-voice/design?output_format=wav_16000", {"voice_description": DESCRIPTION}
    )
    assert wav.status_code == 400
    assert detail_of(wav)["param"] == "output_format"
    save = post_json(api, "/v1/text-to-voice", {"voice_name": "", "voice_description": "x"})
    assert set(map(tuple, locs_of(save))) == {
        ("body", "voice_name"),
        ("body", "voice_description"),
        ("body", "generated_voice_id"),
    }
    assert events() == [] and not Generation.objects.exists()


def test_design_with_a_spent_budget_is_a_429_and_nothing_is_kept(api, spent):
    response = post_json(api, "/v1/text-to-voice/design", {"voice_description": DESCRIPTION})
    assert_spent_refusal(response, spent)


# --- Voices: clone, edit, settings, delete ----------------------------------------------------


def clone(api, *files, name="My clone", **fields):
    samples = list(files) or [upload(spoken(SENTENCE + " " + SENTENCE))]
    return api.post("/v1/voices/add", {"name": name, "files": samples, **fields})


def test_a_clone_is_made_from_samples_kept_and_spoken(api, issued):
    wav = upload(spoken(SENTENCE + " " + SENTENCE), "one.wav")
    mp3 = upload(spoken("Pack my box with five dozen liquor jugs.", "mp3_44100_128"), "two.mp3")
    response = clone(
        api,
        wav,
        mp3,
        name="Zoë ✨",
        description="Read in the studio",
        labels=json.dumps({"accent": "american", "gender": "male"}),
        remove_background_noise="false",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, "/v1/voices/add", "post")
    assert body["requires_verification"] is False

    row = ApiVoice.objects.get()
    assert (row.voice_id, row.name, row.category) == (body["voice_id"], "Zoë ✨", "cloned")
    assert row.labels["accent"] == "american" and row.recipe["approximate"] is True
    [event] = events()
    assert (event.capability, event.status, event.source) == (
        "voice_clone",
        UsageStatus.SETTLED,
        UsageSource.API,
    )

    voice = api.get(f"/v1/voices/{body['voice_id']}").json()
    assert_matches(voice, "/v1/voices/{voice_id}")
    assert (voice["name"], voice["category"]) == ("Zoë ✨", "cloned")
    assert voice["description"].startswith("Read in the studio")
    speech = post_json(api, f"/v1/text-to-speech/{body['voice_id']}", {"text": "Testing."})
    assert speech.status_code == 200
    assert seconds_of(speech.content) > 0.3


def test_a_corrupt_sample_is_a_422_naming_which_and_nothing_is_made(api):
    good = upload(spoken(), "good.wav")
    bad = upload(b"\x00\x01" * 500, "bad.wav")
    [error] = errors_of(clone(api, good, bad))
    assert error["loc"] == ["body", "files", 1] and "bad.wav" in error["msg"]
    assert not ApiVoice.objects.exists() and events() == []


def test_clone_forms_without_what_they_need_are_422(api):
    missing = api.post("/v1/voices/add", {"name": "No files"})
    assert locs_of(missing) == [["body", "files"]]
    unnamed = api.post("/v1/voices/add", {"files": [upload(spoken())]})
    assert locs_of(unnamed) == [["body", "name"]]
    bad_labels = clone(api, labels="{not json")
    assert locs_of(bad_labels) == [["body", "labels"]]
    as_json = post_json(api, "/v1/voices/add", {"name": "JSON"})
    assert locs_of(as_json) == [["body"]]
    assert not ApiVoice.objects.exists() and events() == []


def test_form_text_over_the_field_limit_is_a_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = clone(api, description="long " * 400)
    assert response.status_code == 413
    assert detail_of(response)["code"] == "payload_too_large"
    assert not ApiVoice.objects.exists() and events() == []


def test_an_oversized_sample_is_a_413(api, monkeypatch):
    monkeypatch.setattr(services_media, "MAX_SAMPLE_BYTES", 1000)
    response = clone(api)
    assert response.status_code == 413
    assert "speech.wav" in detail_of(response)["message"]
    assert not ApiVoice.objects.exists()


def test_edit_renames_describes_and_relabels_a_clone(api):
    voice_id = clone(api).json()["voice_id"]
    response = api.post(
        f"/v1/voices/{voice_id}/edit",
        {"name": "Renamed", "description": "Warmer", "labels": '{"age": "old"}'},
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok"}
    assert_matches(response.json(), "/v1/voices/{voice_id}/edit", "post")
    voice = api.get(f"/v1/voices/{voice_id}").json()
    assert (voice["name"], voice["description"], voice["labels"]) == (
        "Renamed",
        "Warmer",
        {"age": "old"},
    )
    # "null" labels (what the SDK sends when none are given) keep the labels.
    api.post(f"/v1/voices/{voice_id}/edit", {"name": "Again", "labels": "null"})
    assert api.get(f"/v1/voices/{voice_id}").json()["labels"] == {"age": "old"}


def test_edit_with_new_samples_measures_the_voice_again(api):
    voice_id = clone(api).json()["voice_id"]
    before = ApiVoice.objects.get().recipe
    higher = upload(spoken("She sells sea shells by the sea shore.", voice="local-espeak-en-us-f3"))
    response = api.post(f"/v1/voices/{voice_id}/edit", {"name": "Higher", "files": [higher]})
    assert response.status_code == 200, response.content
    after = ApiVoice.objects.get().recipe
    assert after["measured"]["f0_hz"] > before["measured"]["f0_hz"]
    assert [e.capability for e in events()] == ["voice_clone", "voice_clone"]


def test_premade_voices_cannot_be_edited_or_deleted_and_unknown_ones_are_404(api):
    edit = api.post(f"/v1/voices/{VOICE}/edit", {"name": "Mine"})
    delete = api.delete(f"/v1/voices/{VOICE}")
    for response in (edit, delete):
        assert response.status_code == 400
        detail = detail_of(response)
        assert detail["param"] == "voice_id" and "premade" in detail["message"]
    assert api.get(f"/v1/voices/{VOICE}").status_code == 200
    for response in (
        api.post("/v1/voices/no-such-voice/edit", {"name": "X"}),
        api.delete("/v1/voices/no-such-voice"),
        api.get("/v1/voices/no-such-voice/settings"),
    ):
        assert response.status_code == 404
        assert detail_of(response)["code"] == "voice_not_found"


def test_delete_removes_a_clone_and_its_settings(api):
    voice_id = clone(api).json()["voice_id"]
    post_json(api, f"/v1/voices/{voice_id}/settings/edit", {"stability": 0.9})
    response = api.delete(f"/v1/voices/{voice_id}")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert_matches(response.json(), "/v1/voices/{voice_id}", "delete")
    assert not ApiVoice.objects.exists() and not VoiceSettingsRecord.objects.exists()
    assert api.get(f"/v1/voices/{voice_id}").status_code == 404
    gone = post_json(api, f"/v1/text-to-speech/{voice_id}", {"text": "Still there?"})
    assert gone.status_code == 400
    assert detail_of(gone)["code"] == "voice_not_found"


def test_another_workspace_cannot_see_edit_or_delete_a_clone(api, stranger):
    voice_id = clone(api).json()["voice_id"]
    for response in (
        stranger.get(f"/v1/voices/{voice_id}"),
        stranger.post(f"/v1/voices/{voice_id}/edit", {"name": "Stolen"}),
        stranger.delete(f"/v1/voices/{voice_id}"),
        post_json(stranger, f"/v1/voices/{voice_id}/settings/edit", {"stability": 0.1}),
    ):
        assert response.status_code == 404
    assert ApiVoice.objects.get().name == "My clone"
    assert not VoiceSettingsRecord.objects.exists()


@pytest.fixture
def managing(workspace, manager):
    """A manager's key: the settings of the engine's own voices are the managers' to set."""
    return Client(
        HTTP_XI_API_KEY=services.api_key_create(workspace=workspace, user=manager, name="M").raw
    )


def test_settings_default_get_and_update_on_both_paths(managing, stranger):
    api = managing
    default = api.get("/v1/voices/settings/default").json()
    assert_matches(default, "/v1/voices/settings/default")
    assert default == {
        "stability": 0.5,
        "similarity_boost": 0.75,
        "style": 0.0,
        "use_speaker_boost": True,
        "speed": 1.0,
    }
    assert api.get(f"/v1/voices/{VOICE}/settings").json() == default

    edit = post_json(api, f"/v1/voices/{VOICE}/settings/edit", {"stability": 0.2, "speed": 1.1})
    assert edit.json() == {"status": "ok"}
    assert_matches(edit.json(), "/v1/voices/{voice_id}/settings/edit", "post")
    short = post_json(api, f"/v1/voices/{VOICE}/settings", {"use_speaker_boost": False})
    assert short.json() == {"status": "ok"}

    stored = api.get(f"/v1/voices/{VOICE}/settings").json()
    assert_matches(stored, "/v1/voices/{voice_id}/settings")
    assert stored == {**default, "stability": 0.2, "speed": 1.1, "use_speaker_boost": False}
    assert api.get(f"/v1/voices/{VOICE}").json()["settings"] == stored
    # Stored per workspace: another one still has the defaults.
    assert stranger.get(f"/v1/voices/{VOICE}/settings").json() == default


def test_stored_settings_are_what_speech_uses_unless_the_call_sends_its_own(managing):
    api = managing

    def seconds(body):
        response = post_json(api, f"/v1/text-to-speech/{VOICE}", {"text": SENTENCE, **body})
        assert response.status_code == 200, response.content
        return seconds_of(response.content)

    normal = seconds({"seed": 5})
    post_json(api, f"/v1/voices/{VOICE}/settings/edit", {"speed": 0.7})
    slow = seconds({"seed": 5})
    overridden = seconds({"seed": 5, "voice_settings": {"speed": 1.0}})
    assert slow > normal * 1.2
    assert overridden == pytest.approx(normal, rel=0.02)


def test_bad_settings_are_422(api):
    response = post_json(
        api, f"/v1/voices/{VOICE}/settings/edit", {"stability": 2, "speed": 3, "style": "x"}
    )
    assert set(map(tuple, locs_of(response))) == {
        ("body", "stability"),
        ("body", "speed"),
        ("body", "style"),
    }
    assert not VoiceSettingsRecord.objects.exists()


# --- Keys, scopes and methods -----------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("post", "/v1/speech-to-text"),
        ("post", "/v1/sound-generation"),
        ("post", "/v1/text-to-voice/design"),
        ("post", "/v1/text-to-voice"),
        ("get", "/v1/text-to-voice/some-id/stream"),
        ("post", "/v1/voices/add"),
        ("post", f"/v1/voices/{VOICE}/edit"),
        ("get", "/v1/voices/settings/default"),
        ("get", f"/v1/voices/{VOICE}/settings"),
        ("post", f"/v1/voices/{VOICE}/settings/edit"),
        ("delete", f"/v1/voices/{VOICE}"),
    ],
)
def test_every_media_endpoint_needs_a_key_with_its_scope(workspace, member, method, path):
    anonymous = getattr(Client(), method)(path)
    assert anonymous.status_code == 401
    assert detail_of(anonymous)["code"] == "needs_authorization"
    tts_only = services.api_key_create(workspace=workspace, user=member, name="T", scopes=["tts"])
    forbidden = getattr(Client(HTTP_XI_API_KEY=tts_only.raw), method)(path)
    assert forbidden.status_code == 403
    assert detail_of(forbidden)["code"] == "missing_permissions"


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("get", "/v1/speech-to-text", "POST"),
        ("get", "/v1/sound-generation", "POST"),
        ("put", f"/v1/voices/{VOICE}/settings", "GET, POST"),
        ("post", f"/v1/voices/{VOICE}", "GET, DELETE"),
    ],
)
def test_the_wrong_method_is_a_405(api, method, path, allowed):
    response = getattr(api, method)(path)
    assert response.status_code == 405
    assert detail_of(response)["code"] == "method_not_allowed"
    assert response["Allow"] == allowed


def test_validation_errors_match_the_422_schema(api):
    response = api.post("/v1/speech-to-text", {"file": upload(spoken())})
    assert_matches(response.json(), "/v1/speech-to-text", "post", "422")
    response = post_json(api, "/v1/sound-generation", {})
    assert_matches(response.json(), "/v1/sound-generation", "post", "422")
