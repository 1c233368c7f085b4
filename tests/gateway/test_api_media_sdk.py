"""The official ElevenLabs SDK (only ``base_url`` and ``api_key`` set) against a real Daphne on
the local engine: speech to text, voice design, sound effects and voices, with what each call
leaves in the ledger and the history; then the same through a Chorus on the ElevenLabs engine
whose upstream is that Chorus."""

import base64
import io
import re
from decimal import Decimal
from pathlib import Path

import av
import pytest
from elevenlabs import VoiceSettings
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError

from apps.billing import services as billing
from apps.billing.models import Budget, UsageEvent, UsageSource, UsageStatus
from apps.gateway import services
from apps.history.models import Generation, GenerationKind
from apps.voices.models import ApiVoice
from apps.workspaces.services import engine_settings_update
from tests.factories import make_user, make_workspace

pytestmark = pytest.mark.slow

VOICE = "local-joe"
SENTENCE = "The quick brown fox jumps over the lazy dog."
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
DESCRIPTION = "A bright young woman with a quick, energetic voice and an American accent."
PREVIEW_TEXT = (
    "Welcome aboard! Today we will explore the harbour, taste the local bread and watch the "
    "boats come in as the sun goes down."
)


@pytest.fixture
def live_env(live_env, tmp_path, settings):
    """The server and the tests keep generated files in the same, temporary place."""
    media = tmp_path / "media"
    live_env["MEDIA_ROOT"] = str(media)
    settings.MEDIA_ROOT = media
    return live_env


@pytest.fixture
def issued(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="SDK media")


@pytest.fixture
def sdk(daphne_server, issued):
    return ElevenLabs(base_url=daphne_server.url, api_key=issued.raw)


def decoded_seconds(audio: bytes, container_format: str = "mp3") -> float:
    """Decode ``audio`` with PyAV (FFmpeg): how long it plays."""
    with av.open(io.BytesIO(audio)) as container:
        assert container_format in container.format.name.split(",")
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def api_events(issued) -> list[UsageEvent]:
    return list(UsageEvent.objects.filter(api_key_id=issued.api_key.pk).order_by("id"))


def assert_settled_api_events(issued, member, capabilities: list[str]) -> list[UsageEvent]:
    found = api_events(issued)
    assert [e.capability for e in found] == capabilities
    for event in found:
        assert (event.status, event.source, event.user_id, event.engine) == (
            UsageStatus.SETTLED,
            UsageSource.API,
            member.pk,
            "local",
        )
    return found


def assert_kept_with_file(generation: Generation, event: UsageEvent) -> bytes:
    path = Path(generation.file.path)
    assert path.is_file() and path.stat().st_size == generation.size_bytes > 1000
    assert generation.usage_event_id == event.pk
    assert (generation.source, generation.api_key_id) == ("api", event.api_key_id)
    return path.read_bytes()


# --- Speech to text -------------------------------------------------------------------------


def test_speech_to_text_hears_the_words_tts_just_said(sdk, issued, member):
    audio = b"".join(sdk.text_to_speech.convert(VOICE, text=SENTENCE, seed=1))
    result = sdk.speech_to_text.convert(
        model_id="scribe_v1",
        file=("speech.mp3", audio, "audio/mpeg"),
        language_code="en",
        tag_audio_events=False,
        timestamps_granularity="word",
        keyterms=["fox", "lazy dog"],
    )
    assert words_of(result.text) == WORDS
    spoken = [w for w in result.words if w.type == "word"]
    assert [words_of(w.text)[0] for w in spoken] == WORDS
    assert spoken[0].start < spoken[-1].end <= result.audio_duration_secs + 0.05
    assert result.audio_duration_secs == pytest.approx(decoded_seconds(audio), abs=0.1)
    tts, stt = assert_settled_api_events(issued, member, ["tts", "stt"])
    assert stt.unit == "minute"
    assert float(stt.units) == pytest.approx(result.audio_duration_secs / 60, abs=0.002)


def test_speech_to_text_refuses_what_it_cannot_read(sdk, issued):
    with pytest.raises(ApiError) as corrupt:
        sdk.speech_to_text.convert(model_id="scribe_v1", file=("a.mp3", b"\x01\x02" * 900))
    assert corrupt.value.status_code == 422
    assert corrupt.value.body["detail"][0]["loc"] == ["body", "file"]
    with pytest.raises(ApiError) as url:
        sdk.speech_to_text.convert(model_id="scribe_v1", cloud_storage_url="https://x.test/a.mp3")
    assert url.value.status_code == 400
    assert url.value.body["detail"]["param"] == "cloud_storage_url"
    assert api_events(issued) == []


# --- Voice design -------------------------------------------------------------------------------


def test_a_designed_voice_is_saved_and_speaks(sdk, issued, member):
    design = sdk.text_to_voice.design(voice_description=DESCRIPTION, text=PREVIEW_TEXT, seed=9)
    assert design.text == PREVIEW_TEXT and len(design.previews) == 3
    [event] = assert_settled_api_events(issued, member, ["voice_design"])
    previews = Generation.objects.filter(kind=GenerationKind.DESIGN_PREVIEW)
    kept = {g.recipe["generated_voice_id"]: g for g in previews}
    for preview in design.previews:
        audio = base64.b64decode(preview.audio_base_64)
        assert decoded_seconds(audio) == pytest.approx(preview.duration_secs, abs=0.1)
        generation = kept[preview.generated_voice_id]
        assert generation.kind == GenerationKind.DESIGN_PREVIEW
        assert assert_kept_with_file(generation, event) == audio
        assert generation.recipe["seed"] == 9
        assert generation.recipe["voice_description"] == DESCRIPTION
    event.refresh_from_db()
    assert event.status == UsageStatus.SETTLED

    chosen = design.previews[2]
    streamed = b"".join(sdk.text_to_voice.preview.stream(chosen.generated_voice_id))
    assert decoded_seconds(streamed) == pytest.approx(chosen.duration_secs, abs=0.3)

    voice = sdk.text_to_voice.create(
        voice_name="Harbour guide",
        voice_description=DESCRIPTION,
        generated_voice_id=chosen.generated_voice_id,
        labels={"use_case": "tours"},
    )
    assert (voice.name, voice.category, voice.labels) == (
        "Harbour guide",
        "generated",
        {"use_case": "tours"},
    )
    speech = b"".join(sdk.text_to_speech.convert(voice.voice_id, text="Next stop, the pier."))
    assert decoded_seconds(speech) > 0.8
    assert sdk.voices.get(voice.voice_id).name == "Harbour guide"
    assert_settled_api_events(issued, member, ["voice_design", "tts"])
    assert Generation.objects.filter(kind=GenerationKind.DESIGN_PREVIEW).count() == 3


def test_an_unknown_preview_id_is_an_api_error_404(sdk):
    with pytest.raises(ApiError) as caught:
        sdk.text_to_voice.create(
            voice_name="Ghost", voice_description=DESCRIPTION, generated_voice_id="nope"
        )
    assert caught.value.status_code == 404
    assert caught.value.body["detail"]["code"] == "voice_not_found"


# --- Sound effects ------------------------------------------------------------------------------


def test_a_sound_effect_decodes_to_the_asked_length_and_is_kept(sdk, issued, member):
    audio = b"".join(
        sdk.text_to_sound_effects.convert(
            text="Footsteps on gravel, slowly", duration_seconds=2.5, prompt_influence=0.6
        )
    )
    assert decoded_seconds(audio) == pytest.approx(2.5, abs=0.1)
    [event] = assert_settled_api_events(issued, member, ["sound_effect"])
    generation = Generation.objects.get()
    assert generation.kind == GenerationKind.SOUND
    assert assert_kept_with_file(generation, event) == audio
    assert generation.recipe["prompt_influence"] == 0.6
    assert generation.recipe["text"] == "Footsteps on gravel, slowly"
    assert isinstance(generation.recipe["seed"], int)


def test_a_spent_budget_refuses_sound_effects_with_429_and_keeps_the_ledger(
    sdk, workspace, owner, member
):
    engine_settings_update(
        workspace=workspace,
        actor=owner,
        kind="elevenlabs",
        api_key="sk-test",
        base_url="http://127.0.0.1:9",
    )
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(150))
    with billing.metered(
        workspace=workspace, user=member, capability="tts", engine="elevenlabs", units=100
    ) as meter:
        meter.settle(units=100)
    ledger = list(UsageEvent.objects.values_list("pk", "status", "credits"))
    with pytest.raises(ApiError) as caught:
        b"".join(sdk.text_to_sound_effects.convert(text="Thunder", duration_seconds=1))
    assert caught.value.status_code == 429
    assert caught.value.body["detail"]["code"] == "quota_exceeded"
    assert list(UsageEvent.objects.values_list("pk", "status", "credits")) == ledger
    assert not Generation.objects.exists()


# --- Voices: clone, edit, settings, delete ------------------------------------------------------


def test_a_clone_is_made_edited_set_spoken_and_deleted(sdk, issued, member):
    wav = b"".join(
        sdk.text_to_speech.convert(VOICE, text=f"{SENTENCE} {SENTENCE}", output_format="wav_22050")
    )
    mp3 = b"".join(sdk.text_to_speech.convert(VOICE, text="Pack my box with five dozen jugs."))
    added = sdk.voices.ivc.create(
        name="Studio clone",
        files=[("one.wav", wav, "audio/wav"), ("two.mp3", mp3, "audio/mpeg")],
        description="Two takes",
        labels={"accent": "american"},
    )
    assert added.requires_verification is False
    voice = sdk.voices.get(added.voice_id)
    assert (voice.name, voice.category, voice.labels["accent"]) == (
        "Studio clone",
        "cloned",
        "american",
    )

    assert sdk.voices.update(added.voice_id, name="Renamed clone").status == "ok"
    assert sdk.voices.get(added.voice_id).name == "Renamed clone"

    default = sdk.voices.settings.get_default()
    assert (default.stability, default.similarity_boost, default.speed) == (0.5, 0.75, 1.0)
    update = sdk.voices.settings.update(
        added.voice_id, request=VoiceSettings(stability=0.3, speed=1.1)
    )
    assert update.status == "ok"
    stored = sdk.voices.settings.get(added.voice_id)
    assert (stored.stability, stored.similarity_boost, stored.speed) == (0.3, 0.75, 1.1)

    speech = b"".join(sdk.text_to_speech.convert(added.voice_id, text="A cloned hello."))
    assert decoded_seconds(speech) > 0.5

    assert sdk.voices.delete(added.voice_id).status == "ok"
    with pytest.raises(ApiError) as gone:
        sdk.voices.get(added.voice_id)
    assert gone.value.status_code == 404
    with pytest.raises(ApiError) as premade:
        sdk.voices.delete(VOICE)
    assert premade.value.status_code == 400
    assert "premade" in premade.value.body["detail"]["message"]

    assert_settled_api_events(issued, member, ["tts", "tts", "voice_clone", "tts"])
    assert not ApiVoice.objects.exists()


# --- Chorus behind Chorus -------------------------------------------------------------------------


def test_a_chorus_on_the_elevenlabs_engine_uses_these_endpoints_upstream(
    daphne_server, workspace, member
):
    upstream_key = services.api_key_create(workspace=workspace, user=member, name="Upstream")
    boss = make_user("boss@example.com", name="Bea Boss")
    front = make_workspace("Front office", owner=boss)
    engine_settings_update(
        workspace=front,
        actor=boss,
        kind="elevenlabs",
        api_key=upstream_key.raw,
        base_url=daphne_server.url,
    )
    sdk = ElevenLabs(
        base_url=daphne_server.url,
        api_key=services.api_key_create(workspace=front, user=boss, name="Script").raw,
    )

    audio = b"".join(sdk.text_to_speech.convert(VOICE, text=SENTENCE, seed=1))
    heard = sdk.speech_to_text.convert(model_id="scribe_v1", file=("a.mp3", audio, "audio/mpeg"))
    assert words_of(heard.text) == WORDS

    effect = b"".join(sdk.text_to_sound_effects.convert(text="A bell rings", duration_seconds=1))
    assert decoded_seconds(effect) == pytest.approx(1.0, abs=0.1)

    design = sdk.text_to_voice.design(voice_description=DESCRIPTION, text=PREVIEW_TEXT, seed=2)
    chosen = design.previews[0]
    streamed = b"".join(sdk.text_to_voice.preview.stream(chosen.generated_voice_id))
    assert decoded_seconds(streamed) > 2
    voice = sdk.text_to_voice.create(
        voice_name="Relayed",
        voice_description=DESCRIPTION,
        generated_voice_id=chosen.generated_voice_id,
    )
    speech = b"".join(sdk.text_to_speech.convert(voice.voice_id, text="Two hops away."))
    assert decoded_seconds(speech) > 0.5

    clone = sdk.voices.ivc.create(name="Relayed clone", files=[("a.mp3", audio, "audio/mpeg")])
    assert sdk.voices.get(clone.voice_id).category == "cloned"
    assert sdk.voices.delete(clone.voice_id).status == "ok"

    front_events = UsageEvent.objects.filter(workspace=front).order_by("id")
    back_events = UsageEvent.objects.filter(workspace=workspace).order_by("id")
    capabilities = ["tts", "stt", "sound_effect", "voice_design", "tts", "voice_clone"]
    assert [(e.capability, e.engine, e.status) for e in front_events] == [
        (c, "elevenlabs", UsageStatus.SETTLED) for c in capabilities
    ]
    assert [(e.capability, e.engine, e.status) for e in back_events] == [
        (c, "local", UsageStatus.SETTLED) for c in capabilities
    ]
    # Both Choruses kept the sound and the previews, each in its own workspace.
    for place in (front, workspace):
        kept = Generation.objects.filter(workspace=place, kind__in=["design_preview", "sound"])
        assert sorted(kept.values_list("kind", flat=True)) == ["design_preview"] * 3 + ["sound"]
    # The front's voices live upstream (no recipe); the upstream holds the recipes.
    assert ApiVoice.objects.get(workspace=front).recipe is None
    assert ApiVoice.objects.get(workspace=workspace).recipe["base_voice_id"].startswith("local-")
