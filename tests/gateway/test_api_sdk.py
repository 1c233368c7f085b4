"""The official ElevenLabs SDK, with only ``base_url`` and ``api_key`` set, against a real
Daphne serving Chorus on the local engine: speech, voices, models, the account, refusals,
and what each call leaves in the ledger."""

import base64
import io
from datetime import UTC, datetime
from decimal import Decimal

import av
import httpx
import pytest
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError

from apps.billing import services as billing
from apps.billing.models import Budget, UsageEvent, UsageSource, UsageStatus
from apps.gateway import services
from apps.workspaces.services import engine_settings_update
from tests.conftest import wait_until

pytestmark = pytest.mark.slow

VOICE = "local-joe"
TEXT = "Hello from Chorus. This is the local engine speaking."


@pytest.fixture
def issued(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="SDK")


@pytest.fixture
def sdk(daphne_server, issued):
    return ElevenLabs(base_url=daphne_server.url, api_key=issued.raw)


def decoded_seconds(audio: bytes) -> float:
    """Decode ``audio`` with PyAV (FFmpeg): how long it plays."""
    with av.open(io.BytesIO(audio)) as container:
        assert container.format.name == "mp3"
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def api_events(issued) -> list[UsageEvent]:
    return list(UsageEvent.objects.filter(api_key_id=issued.api_key.pk).order_by("id"))


def assert_one_settled_api_event(issued, member, units: int) -> UsageEvent:
    [event] = api_events(issued)
    assert (event.status, event.source, event.user_id, event.units) == (
        UsageStatus.SETTLED,
        UsageSource.API,
        member.pk,
        units,
    )
    assert (event.capability, event.engine, event.voice_id) == ("tts", "local", VOICE)
    return event


# --- Text to speech -----------------------------------------------------------------------


def test_convert_returns_an_mp3_that_decodes_and_one_settled_usage_event(sdk, issued, member):
    audio = b"".join(
        sdk.text_to_speech.convert(VOICE, text=TEXT, model_id="eleven_multilingual_v2")
    )
    assert decoded_seconds(audio) > 1.5
    assert_one_settled_api_event(issued, member, len(TEXT))


def test_convert_with_raw_response_shows_the_ledgers_request_id_and_cost(sdk, issued):
    with sdk.text_to_speech.with_raw_response.convert(VOICE, text="Hi there.") as raw:
        headers = raw.headers
        b"".join(raw.data)
    [event] = api_events(issued)
    assert headers["request-id"] == event.request_id
    assert headers["character-cost"] == "0"
    assert float(headers["x-chorus-overhead-ms"]) >= 0


def test_stream_passes_audio_through_in_several_chunks(sdk, issued, member):
    text = " ".join([TEXT] * 4)
    chunks = [c for c in sdk.text_to_speech.stream(VOICE, text=text) if c]
    assert len(chunks) > 1
    assert decoded_seconds(b"".join(chunks)) > 4
    assert_one_settled_api_event(issued, member, len(text))


def test_convert_with_timestamps_aligns_every_character_of_the_text(sdk, issued, member):
    result = sdk.text_to_speech.convert_with_timestamps(VOICE, text=TEXT)
    audio = base64.b64decode(result.audio_base_64)
    seconds = decoded_seconds(audio)
    alignment = result.alignment
    assert "".join(alignment.characters) == TEXT
    starts, ends = alignment.character_start_times_seconds, alignment.character_end_times_seconds
    assert len(starts) == len(ends) == len(TEXT)
    assert starts == sorted(starts) and all(s <= e for s, e in zip(starts, ends, strict=True))
    assert ends[-1] == pytest.approx(seconds, abs=0.15)
    assert "".join(result.normalized_alignment.characters) == TEXT
    assert_one_settled_api_event(issued, member, len(TEXT))


def test_stream_with_timestamps_yields_chunks_whose_alignments_cover_the_text(sdk, issued, member):
    chunks = list(sdk.text_to_speech.stream_with_timestamps(VOICE, text=TEXT))
    assert len(chunks) > 1
    audio = b"".join(base64.b64decode(c.audio_base_64) for c in chunks)
    assert decoded_seconds(audio) > 1.5
    spoken = "".join("".join(c.alignment.characters) for c in chunks if c.alignment)
    assert spoken == TEXT
    assert_one_settled_api_event(issued, member, len(TEXT))


def test_a_pcm_output_format_returns_raw_16_bit_samples(sdk):
    audio = b"".join(sdk.text_to_speech.convert(VOICE, text="Hi.", output_format="pcm_16000"))
    assert len(audio) % 2 == 0 and len(audio) > 16000 * 2 * 0.2


# --- Voices, models, the account -----------------------------------------------------------


def test_voices_get_all_search_and_get(sdk):
    every = sdk.voices.get_all().voices
    assert VOICE in {v.voice_id for v in every}

    first = sdk.voices.search(page_size=3, sort="name", sort_direction="asc")
    assert (len(first.voices), first.has_more, first.total_count) == (3, True, len(every))
    rest = sdk.voices.search(page_size=100, next_page_token=first.next_page_token, sort="name")
    names = [v.name for v in first.voices + rest.voices]
    assert names == sorted(names, key=str.lower) and len(names) == len(every)
    assert [v.voice_id for v in sdk.voices.search(search="joe").voices] == [VOICE]

    joe = sdk.voices.get(VOICE)
    assert (joe.voice_id, joe.name, joe.category) == (VOICE, "Joe", "premade")
    assert joe.labels["gender"] == "male" and joe.settings.stability == 0.5


def test_models_list_has_the_elevenlabs_ids_with_chorus_rates(sdk):
    models = {m.model_id: m for m in sdk.models.list()}
    model = models["eleven_multilingual_v2"]
    assert model.can_do_text_to_speech and model.maximum_text_length_per_request > 0
    assert model.model_rates.character_cost_multiplier == 0  # the local engine is free
    assert model.languages


def test_user_and_subscription_show_the_members_budget_and_use(sdk, workspace, member):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(5000))
    with billing.metered(
        workspace=workspace,
        user=member,
        capability="tts",
        engine="elevenlabs",
        model_id="eleven_multilingual_v2",
        units=120,
    ) as meter:
        meter.settle(units=120)

    sub = sdk.user.subscription.get()
    assert (sub.character_limit, sub.character_count, sub.tier) == (5000, 120, "local")
    now = datetime.now(UTC)
    next_month = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    assert sub.next_character_count_reset_unix == int(next_month.timestamp())

    user = sdk.user.get()
    assert user.user_id == str(member.pk) and user.first_name == "Mia"
    assert user.subscription.character_limit == 5000 and user.seat_type == "workspace_member"


# --- Refusals ---------------------------------------------------------------------------------


def test_a_spent_budget_is_an_api_error_429_quota_exceeded_and_the_ledger_is_unchanged(
    sdk, workspace, owner, member
):
    # On ElevenLabs (never reached here: the budget refuses first) calls cost credits.
    engine_settings_update(
        workspace=workspace,
        actor=owner,
        kind="elevenlabs",
        api_key="sk-test",
        base_url="http://127.0.0.1:9",
    )
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(50))
    with billing.metered(
        workspace=workspace, user=member, capability="tts", engine="elevenlabs", units=50
    ) as meter:
        meter.settle(units=50)
    ledger = list(UsageEvent.objects.values_list("pk", "status", "credits"))

    with pytest.raises(ApiError) as caught:
        b"".join(sdk.text_to_speech.convert(VOICE, text=TEXT))

    assert caught.value.status_code == 429
    detail = caught.value.body["detail"]
    assert (detail["status"], detail["code"]) == ("quota_exceeded", "quota_exceeded")
    assert "Mia Member's budget of 50 credits" in detail["message"]
    assert list(UsageEvent.objects.values_list("pk", "status", "credits")) == ledger


def test_a_wrong_key_is_an_api_error_401(daphne_server, workspace):
    sdk = ElevenLabs(base_url=daphne_server.url, api_key="chorus_wrong")
    with pytest.raises(ApiError) as caught:
        sdk.voices.get_all()
    assert caught.value.status_code == 401
    assert caught.value.body["detail"]["status"] == "invalid_api_key"


# --- Streams read with plain httpx ---------------------------------------------------------------


def stream_speech(server, issued, text: str):
    """``POST …/stream`` with httpx; leaving the block closes the connection."""
    return httpx.stream(
        "POST",
        f"{server.url}/v1/text-to-speech/{VOICE}/stream",
        json={"text": text},
        headers={"xi-api-key": issued.raw},
        timeout=30,
    )


def test_a_client_that_disconnects_mid_stream_is_settled_for_what_it_got(daphne_server, issued):
    text = " ".join(f"Sentence number {i}, and it keeps going for a while." for i in range(30))
    with stream_speech(daphne_server, issued, text) as response:
        assert response.status_code == 200
        request_id = response.headers["request-id"]
        assert next(response.iter_raw())
    # Leaving the block closed the connection with most of the audio unread.

    def finished():
        event = UsageEvent.objects.get(request_id=request_id)
        return event if event.status != UsageStatus.RESERVED else None

    event = wait_until(finished, timeout=30, what="the cut-off stream to be settled")
    assert event.status == UsageStatus.SETTLED
    assert 0 < event.units < len(text)


def test_stream_audio_arrives_while_the_engine_is_still_speaking(daphne_server, issued):
    text = " ".join(f"Sentence {i} of a longer script, read aloud." for i in range(12))
    with stream_speech(daphne_server, issued, text) as response:
        chunks = response.iter_raw()
        received = len(next(chunks))
        # The first bytes are here and the call is still open: nothing was buffered.
        event = UsageEvent.objects.get(request_id=response.headers["request-id"])
        assert event.status == UsageStatus.RESERVED
        received += sum(len(chunk) for chunk in chunks)
    assert decoded_seconds_of_length(received) > 5

    def settled():
        event.refresh_from_db()
        return event.status == UsageStatus.SETTLED

    wait_until(settled, timeout=30, what="the finished stream to be settled")
    assert event.units == len(text)


def decoded_seconds_of_length(size: int) -> float:
    """Seconds of mp3_44100_128 audio in ``size`` bytes."""
    return size * 8 / 128_000
