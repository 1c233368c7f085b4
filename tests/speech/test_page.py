"""The Speech page: the form and its choices, the role matrix, bad input (a clear 4xx and
nothing written), a take made whole or streamed sentence by sentence (metered as the member's
own call, kept in History with its recipe), and "use these settings again" (``?from=``)."""

import io
import time
from decimal import Decimal

import av
import httpx
import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from apps.billing.models import Budget, UsageEvent, UsageSource, UsageStatus
from apps.history.models import Generation, GenerationKind
from apps.history.services import generation_save
from apps.speech import services
from apps.voices import services as voice_services
from apps.voices.models import Favourite, LibraryVoice, VoiceSettingsRecord, VoiceSource
from tests.conftest import HTMX

PAGE = reverse("speech:page")
GENERATE = reverse("speech:generate")


def form_data(voice, **changes):
    data = {
        "text": "Hello there, Zoë! This is the Speech page.",
        "voice_id": voice.voice_id,
        "model_id": "eleven_multilingual_v2",
        "output_format": "mp3_44100_128",
        "stability": "0.4",
        "similarity_boost": "0.8",
        "style": "0.1",
        "use_speaker_boost": "on",
        "speed": "1.05",
        "seed": "1234",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def seconds_of(audio: bytes) -> float:
    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate


def drain(response) -> list[tuple[float, bytes]]:
    """The chunks of a streamed response as an ASGI server reads them, with when each came."""

    async def read():
        return [(time.monotonic(), chunk) async for chunk in response]

    return async_to_sync(read)()


def nothing_written():
    return not Generation.objects.exists() and not UsageEvent.objects.exists()


# --- The page -------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "member"])
def test_members_see_the_form_with_the_voices_their_previews_and_settings(
    client_as, request, voice, who
):
    VoiceSettingsRecord.objects.create(
        workspace=voice.workspace, voice_id=voice.voice_id, stability=0.33, speed=1.1
    )
    user = request.getfixturevalue(who)
    Favourite.objects.create(user=user, voice=voice)  # favourites lead the list
    # A cloned voice saved without a recording has no preview, so no play button.
    silent = LibraryVoice.objects.filter(workspace=voice.workspace).exclude(pk=voice.pk).first()
    LibraryVoice.objects.filter(pk=silent.pk).update(source=VoiceSource.CLONED, preview_url="")
    response = client_as(user).get(PAGE)
    assert response.status_code == 200
    page = response.text
    assert 'action="/speech/generate/"' in page
    assert f'value="{voice.voice_id}" checked' in page
    # Every voice plays its preview through the library's view (the local engine's are made
    # there once); a voice with none (an upstream voice without a recording) has no button.
    assert f'data-preview="/voices/{voice.pk}/preview/"' in page
    assert "Play the preview of " + voice.name in page
    listed = LibraryVoice.objects.filter(workspace=voice.workspace)
    assert page.count("data-preview=") == listed.count() - 1 > 1
    assert f'data-preview="/voices/{silent.pk}/preview/"' not in page
    # The sliders start at the chosen voice's stored settings, with their values shown.
    assert 'type="range"' in page
    assert 'name="stability" value="0.33"' in page
    assert 'name="speed" value="1.1"' in page
    assert ">0.33</output>" in page
    assert "Reset to the voice's settings" in page
    assert "mp3_44100_128" in page and "MP3 · 44.1 kHz · 128 kbps" in page
    assert ">Eleven Multilingual v2 (local stand-in)</option>" in page
    assert "not playable" not in page
    form = page.split('id="speech-form"')[1].split("</form>")[0]
    assert " disabled" not in form and "only members can generate" not in page


def test_a_viewer_sees_the_page_with_the_form_disabled_and_why(client_as, viewer, voice):
    response = client_as(viewer).get(PAGE)
    assert response.status_code == 200
    assert "only members can generate speech" in response.text
    form = response.text.split('id="speech-form"')[1].split("</form>")[0]
    assert form.count('class="speech-fields" disabled') == 2
    assert 'type="submit" disabled>Generate speech' in form
    assert f'value="{voice.voice_id}" disabled' in form or " disabled required" in form


def test_a_viewer_cannot_generate(client_as, viewer, voice):
    for headers in ({}, HTMX):
        response = client_as(viewer, **headers).post(GENERATE, form_data(voice))
        assert response.status_code == 403
    assert nothing_written()


def test_the_page_needs_a_sign_in_and_generate_takes_only_post(client, client_as, member, voice):
    assert client.get(PAGE).status_code == 302
    assert client.post(GENERATE, form_data(voice)).status_code == 302
    assert client_as(member).get(GENERATE).status_code == 405
    assert nothing_written()


def test_an_empty_library_says_where_voices_come_from(client_as, member):
    response = client_as(member).get(PAGE)
    assert response.status_code == 200
    assert "No voices yet" in response.text and reverse("voices:library") in response.text


def test_the_estimate_is_characters_times_the_rate_and_what_is_left(
    client_as, member, voice, settings
):
    # A rate of 1 credit a character where the engine is not local: the estimate uses it.
    Budget.objects.create(workspace=voice.workspace, user=member, limit_credits=5000)
    estimate = services.speech_estimate(
        workspace=voice.workspace, user=member, model_id="eleven_multilingual_v2", characters=42
    )
    assert estimate.member_left == 5000
    page = client_as(member).get(PAGE).text
    assert "you have <span data-left>5,000</span> credits left" in page
    assert "data-estimate=" in page and "&quot;left&quot;: &quot;5000" in page


# --- Making a take --------------------------------------------------------------------------


def test_a_plain_post_makes_the_take_keeps_it_with_its_recipe_and_shows_it(
    client_as, member, voice
):
    client = client_as(member)
    response = client.post(GENERATE, form_data(voice))
    clip = Generation.objects.get()
    assert response.status_code == 303
    assert response["Location"] == f"{PAGE}?from={clip.pk}"
    assert (clip.kind, clip.voice_id, clip.user, clip.source) == (
        GenerationKind.TTS, voice.voice_id, member, "ui",
    )  # fmt: skip
    assert clip.text == "Hello there, Zoë! This is the Speech page."
    recipe = clip.recipe
    assert (recipe["model_id"], recipe["output_format"], recipe["seed"]) == (
        "eleven_multilingual_v2", "mp3_44100_128", 1234,
    )  # fmt: skip
    assert recipe["voice_settings"] == {
        "stability": 0.4, "similarity_boost": 0.8, "style": 0.1,
        "use_speaker_boost": True, "speed": 1.05,
    }  # fmt: skip
    assert seconds_of(clip.file.read()) > 1
    [event] = UsageEvent.objects.all()
    assert (event.capability, event.status, event.source, event.user, event.voice_id) == (
        "tts", UsageStatus.SETTLED, UsageSource.UI, member, voice.voice_id,
    )  # fmt: skip
    assert event.purpose_type == "speech" and clip.usage_event == event
    page = client.get(response["Location"]).text
    assert reverse("speech:take_audio", args=[clip.pk]) in page
    assert "Download" in page


def test_a_wav_take_with_htmx_is_made_whole_and_shown_in_the_player(client_as, owner, voice):
    response = client_as(owner, **HTMX).post(
        GENERATE, form_data(voice, output_format="wav_22050", seed="")
    )
    assert response.status_code == 200 and "<html" not in response.text
    clip = Generation.objects.get()
    assert clip.content_type == "audio/wav" and clip.recipe["seed"] is None
    assert reverse("speech:take_audio", args=[clip.pk]) in response.text
    assert "data-player" in response.text and " download" in response.text


def test_an_mp3_take_streams_sentence_by_sentence_then_is_kept_once(client_as, member, voice):
    text = " ".join(
        f"Sentence number {n} of a long text by Zoë, spoken as the rest is made."
        for n in range(1, 48)
    )
    assert len(text) >= 3000
    client = client_as(member, **HTMX)
    response = client.post(GENERATE, form_data(voice, text=text))
    assert response.status_code == 200 and "<html" not in response.text
    assert not UsageEvent.objects.exists()  # nothing reserved before the player asks
    token = response.text.split("/speech/takes/")[1].split("/")[0]
    stream_url = reverse("speech:take_stream", args=[token])
    take_url = reverse("speech:take", args=[token])
    assert f'src="{stream_url}"' in response.text
    assert f"Speaking {len(text):,} characters (estimate 0 credits)" in response.text
    assert client.get(take_url).status_code == 204  # not made yet

    started = time.monotonic()
    streamed = client.get(stream_url)
    assert streamed.status_code == 200 and streamed["Content-Type"] == "audio/mpeg"
    assert streamed.streaming
    reserved = UsageEvent.objects.get()
    assert reserved.status == UsageStatus.RESERVED  # made as it is sent
    chunks = drain(streamed)
    # The first audio came well before the whole was made: many chunks, spread out in time.
    assert len(chunks) > 5
    first, last = chunks[0][0] - started, chunks[-1][0] - started
    assert first < last / 2
    audio = b"".join(chunk for _, chunk in chunks)
    assert seconds_of(audio) > 60

    clip = Generation.objects.get()
    assert clip.complete and clip.file.read() == audio
    assert clip.text == text and clip.recipe["streamed"] is True
    assert clip.recipe["voice_settings"]["speed"] == 1.05 and clip.recipe["seed"] == 1234
    event = UsageEvent.objects.get()
    assert event.status == UsageStatus.SETTLED and event.units == len(text)
    assert (event.purpose_type, event.purpose_id) == ("speech", token)
    done = client.get(take_url)
    assert done.status_code == 200
    assert reverse("speech:take_audio", args=[clip.pk]) in done.text and "Download" in done.text
    # The token was used up: the stream is not made twice.
    assert client.get(stream_url).status_code == 404
    assert Generation.objects.count() == 1 and UsageEvent.objects.count() == 1


def test_an_abandoned_stream_is_settled_once_for_what_was_sent(member, voice):
    text = " ".join(f"Sentence {n} that nobody will hear to its end." for n in range(1, 30))
    recipe = services.TakeRecipe(text=text, voice_id=voice.voice_id)
    stream = services.take_stream(
        workspace=voice.workspace, user=member, recipe=recipe, token="left-early"
    )
    assert UsageEvent.objects.get().status == UsageStatus.RESERVED

    async def listen_then_leave():
        chunks = aiter(stream)
        await anext(chunks)
        await anext(chunks)  # the first chunk counts as delivered once the next is asked
        await chunks.aclose()  # the listener went away

    async_to_sync(listen_then_leave)()
    stream.close()  # Django closes the response as well: nothing more happens
    event = UsageEvent.objects.get()
    assert event.status == UsageStatus.SETTLED and 0 < event.units < len(text)
    assert (event.purpose_type, event.purpose_id) == ("speech", "left-early")
    clip = Generation.objects.get()
    assert clip.complete is False and len(clip.file.read()) > 0
    assert clip.recipe["text"] == text


def test_a_stream_of_another_workspace_or_member_is_not_found(client_as, member, owner, voice):
    token = client_as(member, **HTMX).post(GENERATE, form_data(voice)).text
    token = token.split("/speech/takes/")[1].split("/")[0]
    # The pending take lives in the member's session: another member cannot open it.
    assert client_as(owner).get(reverse("speech:take_stream", args=[token])).status_code == 404
    assert client_as(owner).get(reverse("speech:take", args=[token])).status_code == 204
    assert nothing_written()


# --- Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"text": "   "}, "Type the text to speak."),
        ({"text": None}, "Type the text to speak."),
        ({"text": "x " * 100_001}, "at most 200,000 characters: split the text"),
        ({"voice_id": "no-such-voice"}, "Choose a voice from the list"),
        ({"voice_id": None}, "Choose a voice."),
        ({"model_id": "gpt-4"}, "Choose one of the engine"),
        ({"output_format": "mp3_1_1"}, "Choose one of the output formats listed."),
        ({"output_format": "pcm_16000"}, "Choose one of the output formats listed."),
        ({"stability": "1.5"}, "The stability is a number from 0 to 1."),
        ({"similarity_boost": "-0.1"}, "The similarity is a number from 0 to 1."),
        ({"style": "loud"}, "The style exaggeration is a number from 0 to 1."),
        ({"speed": "2"}, "The speed is a number from 0.7 to 1.2."),
        ({"speed": "nan"}, "The speed is a number from 0.7 to 1.2."),
        ({"seed": "lucky"}, "The seed is a whole number"),
        ({"seed": "-1"}, "greater than or equal to 0"),
        ({"seed": "4294967296"}, "less than or equal to 4294967295"),
    ],
)
@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_bad_input_is_a_clear_400_and_nothing_is_written(
    client_as, member, voice, changes, message, htmx
):
    response = client_as(member, **(HTMX if htmx else {})).post(
        GENERATE, form_data(voice, **changes)
    )
    assert response.status_code == 400
    assert message in response.text.replace("&#x27;", "'")
    assert ("<html" in response.text) is not htmx
    if htmx:  # the form is redrawn in place, each message beside its field
        assert response["HX-Retarget"] == "#speech-form"
        assert response["HX-Reswap"] == "outerHTML"
        assert response.text.lstrip().startswith('<form id="speech-form"')
    assert nothing_written()


def test_a_voice_of_another_workspace_is_refused(client_as, outsider, voice):
    elsewhere = outsider.memberships.get().workspace
    voice_services.library_sync(workspace=elsewhere)
    LibraryVoice.objects.create(
        workspace=voice.workspace, engine="local", voice_id="made-in-acme", name="Acme's own"
    )
    response = client_as(outsider).post(GENERATE, form_data(voice, voice_id="made-in-acme"))
    assert response.status_code == 400 and "Choose a voice from the list" in response.text
    assert nothing_written()


def test_a_budget_that_refuses_the_take_says_so_and_reserves_nothing(
    client_as, member, voice, monkeypatch
):
    from apps.billing.services import Estimate

    def refused(**_):
        return Estimate(
            credits=Decimal(42), money=Decimal(0), unit="character", rate_source="test",
            member_left=Decimal(10), workspace_left=None,
            blocked_by="Mia Member's budget of 100 credits",
        )  # fmt: skip

    monkeypatch.setattr(services, "speech_estimate", refused)
    for headers in ({}, HTMX):
        response = client_as(member, **headers).post(GENERATE, form_data(voice))
        assert response.status_code == 429
        assert (
            "Not enough credits: this take needs 42 credits, only 10 credits left of Mia "
            "Member's budget of 100 credits."
        ) in response.text.replace("&#x27;", "'")
    assert nothing_written()


# --- Use these settings again -----------------------------------------------------------------


def test_from_a_history_clip_fills_the_form_with_its_recipe(client_as, member, owner, voice):
    client_as(member).post(
        GENERATE, form_data(voice, text="Again, with feeling.", speed="0.9", seed="77")
    )
    clip = Generation.objects.get()
    response = client_as(owner).get(f"{PAGE}?from={clip.pk}")
    assert response.status_code == 200
    page = response.text
    assert "\nAgain, with feeling.</textarea>" in page
    assert f'value="{voice.voice_id}" checked' in page
    assert 'name="speed" value="0.9"' in page and 'name="stability" value="0.4"' in page
    assert 'name="seed" value="77"' in page
    assert '<option value="mp3_44100_128" selected>' in page
    assert '<option value="eleven_multilingual_v2" selected>' in page
    assert "the recipe of the take made" in page


def test_from_a_clip_of_another_workspace_is_not_found(client_as, outsider, member, voice):
    client_as(member).post(GENERATE, form_data(voice))
    clip = Generation.objects.get()
    assert client_as(outsider).get(f"{PAGE}?from={clip.pk}").status_code == 404
    assert client_as(member).get(f"{PAGE}?from=nonsense").status_code == 404
    assert client_as(member).get(f"{PAGE}?from=999999").status_code == 404


def test_from_a_clip_that_is_no_speech_says_so(client_as, member, workspace):
    sound = generation_save(
        workspace=workspace, user=member, kind=GenerationKind.SOUND, engine="local",
        audio=b"ID3", content_type="audio/mpeg", recipe={"text": "rain"},
    )  # fmt: skip
    response = client_as(member).get(f"{PAGE}?from={sound.pk}")
    assert response.status_code == 400
    assert "This clip is a sound effect, not speech" in response.text


def test_a_viewer_may_open_a_recipe_but_not_generate_it(client_as, member, viewer, voice):
    client_as(member).post(GENERATE, form_data(voice))
    clip = Generation.objects.get()
    response = client_as(viewer).get(f"{PAGE}?from={clip.pk}")
    assert response.status_code == 200 and "only members can generate" in response.text


def test_another_workspace_has_its_own_library(client_as, outsider, voice):
    elsewhere = outsider.memberships.get().workspace
    assert elsewhere != voice.workspace
    page = client_as(outsider).get(PAGE).text
    assert "No voices yet" in page


# --- The estimate on an engine that charges ---------------------------------------------------


def test_the_estimate_follows_the_rate_card_and_a_budget_refuses_a_take_too_dear(
    on_elevenlabs, upstream, client_as, member
):
    from django.core.cache import cache

    cache.clear()
    models = [
        {"model_id": "eleven_multilingual_v2", "name": "Eleven Multilingual v2",
         "can_do_text_to_speech": True, "maximum_text_length_per_request": 10000},
        {"model_id": "eleven_v3", "name": "Eleven v3", "can_do_text_to_speech": True,
         "maximum_text_length_per_request": 3000},
    ]  # fmt: skip
    upstream(httpx.Response(200, json=models))
    workspace = on_elevenlabs
    voice = LibraryVoice.objects.create(
        workspace=workspace, engine="elevenlabs", voice_id="21m00Tcm4TlvDq8ikWAM", name="Rachel"
    )
    Budget.objects.create(workspace=workspace, user=member, limit_credits=100)
    page = client_as(member).get(PAGE).text
    # Rates per character for the page's script: 1 credit (v2), 2 credits (v3).
    assert "&quot;eleven_multilingual_v2&quot;: &quot;1" in page
    assert "&quot;eleven_v3&quot;: &quot;2" in page
    assert "you have <span data-left>100</span> credits left" in page

    client = client_as(member, **HTMX)
    dear = client.post(GENERATE, form_data(voice, text="x" * 60, model_id="eleven_v3"))
    assert dear.status_code == 429
    assert "this take needs 120 credits" in dear.text
    assert nothing_written()
    # Longer than the model takes at once: made in parts, and refused up front when the
    # whole text (all its parts) costs more than is left.
    long_text = "Short words here. " * 170  # 3,059 characters (stripped): 2 parts of 3,000
    too_dear = client.post(GENERATE, form_data(voice, text=long_text, model_id="eleven_v3"))
    assert too_dear.status_code == 429
    assert (
        "this take needs 6,118 credits (all 2 parts of the text), only 100 credits left of "
    ) in too_dear.text
    fine = client.post(GENERATE, form_data(voice, text="z" * 40))
    assert fine.status_code == 200
    assert "Speaking 40 characters (estimate 40 credits)" in fine.text
    assert nothing_written()  # reserved only when the player opens the stream


def test_the_workspace_voice_rules_refuse_a_take_before_anything_is_reserved(
    client_as, member, voice
):
    workspace = voice.workspace
    workspace.require_approved_voices = True
    workspace.save(update_fields=["require_approved_voices"])
    for headers in ({}, HTMX):
        response = client_as(member, **headers).post(GENERATE, form_data(voice))
        assert response.status_code == 400
        assert "uses only approved voices" in response.text
    assert nothing_written()


def test_a_viewer_cannot_open_a_take_or_its_stream(client_as, viewer, member, voice):
    token = client_as(member, **HTMX).post(GENERATE, form_data(voice)).text
    token = token.split("/speech/takes/")[1].split("/")[0]
    for name in ("speech:take_stream", "speech:take"):
        assert client_as(viewer).get(reverse(name, args=[token])).status_code == 403
    assert nothing_written()


def test_text_sent_from_home_fills_the_text_box(client_as, member, voice):
    page = client_as(member).get(PAGE, {"text": "Hello from the home page, Zoë."}).text
    assert "\nHello from the home page, Zoë.</textarea>" in page
    assert "<span data-chars>30 characters</span>" in page
