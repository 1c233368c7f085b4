"""Text of any length on the Speech page: split at sentences into parts the model takes at
once, each part its own metered core call and History clip, the parts of a streamed take
played back to back, one file for the whole take, and a budget spent midway.

The local engine speaks slowly on a busy test machine, so the model's limit per request is
patched low (``short_parts``): the same code runs as for a 25,000-character text and a
10,000-character limit, on a few hundred characters."""

import io
import re
import time
from decimal import Decimal

import av
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import cache
from django.urls import reverse

from apps.billing.models import UsageEvent, UsageStatus
from apps.billing.services import BudgetExceeded
from apps.engines.local import engine as local_engine
from apps.generation import speech as core_speech
from apps.generation.text_parts import joined, split_spans, split_text, split_with_gaps
from apps.history.models import Generation
from apps.speech import services
from apps.speech.take_audio import mp3_audio_start
from tests.conftest import HTMX

from .test_page import GENERATE, PAGE, form_data

# --- The splitter ---------------------------------------------------------------------------


def words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_parts_end_at_sentences_and_hold_as_many_as_fit():
    text = "One short sentence. Another one here! A question? Yes. " * 3
    assert split_text(text, 40) == [
        "One short sentence. Another one here!",
        "A question? Yes. One short sentence.",
        "Another one here! A question? Yes.",
        "One short sentence. Another one here!",
        "A question? Yes.",
    ]
    assert split_text(text, 1000) == [text.strip()]  # within the limit: one part


def test_a_sentence_longer_than_the_limit_is_cut_at_a_clause_else_a_space_never_mid_word():
    sentence = (
        "This sentence runs on and on, through a first clause; then a second one: with more "
        "words than a part may hold and no full stop for a long while"
    )
    parts = split_text(sentence + ". Then a short one.", 60)
    assert all(0 < len(part) <= 60 for part in parts)
    assert parts[0] == "This sentence runs on and on, through a first clause;"
    assert parts[1] == "then a second one:"  # the last clause end before the limit
    source_words = set(sentence.replace(",", "").replace(";", "").replace(":", "").split())
    for part in parts[2:-1]:  # cut at spaces: whole words only
        assert all(word.strip(",;:.") in source_words for word in part.split())
    assert words(" ".join(parts)) == words(sentence + ". Then a short one.")
    # One "word" longer than the limit (a URL) is the only thing cut where the limit falls.
    assert split_text("See " + "x" * 25 + " now.", 10) == ["See", "xxxxxxxxxx", "xxxxxxxxxx", (
        "xxxxx now."
    )]  # fmt: skip


def test_unicode_text_splits_at_its_own_full_stops_and_keeps_paragraphs():
    text = (
        "Zoë sagt: „Grüß Gott!“ Ça va? 你好。今天天气很好！我们走吧。\n\n"
        "Καλημέρα. Новый абзац… Конец."
    )
    parts = split_with_gaps(text, 14)
    assert parts == [
        ("", "Zoë sagt:"),  # a sentence over the limit: cut after its clause
        (" ", "„Grüß Gott!“"),
        (" ", "Ça va? 你好。"),
        ("", "今天天气很好！我们走吧。"),  # Chinese full stops end sentences without a space
        ("\n\n", "Καλημέρα."),  # the paragraph break is kept as the gap
        (" ", "Новый абзац…"),
        (" ", "Конец."),
    ]
    assert joined(parts) == text  # nothing lost, nothing added


@pytest.mark.parametrize("limit", [1, 7, 50, 300, 10_000])
def test_parts_are_never_empty_and_joined_are_the_text(limit):
    text = (
        "  Leading space.  Two  spaces inside. \n\n\nA paragraph — with a dash; and more, "
        "much more… “Quoted!” she said.   (Brackets.) Last words without a stop  "
    ) * 4
    spans = split_spans(text, limit)
    parts = split_text(text, limit)
    assert parts and all(part and part == part.strip() and len(part) <= limit for part in parts)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # in order
    assert words(joined(split_with_gaps(text, limit))) == words(text)
    if limit >= len("paragraph"):  # no word longer than a part: parts hold whole words
        assert words(" ".join(parts)) == words(text)
    else:  # a word longer than a part is the only thing cut inside
        assert re.sub(r"\s+", "", "".join(parts)) == re.sub(r"\s+", "", text)


def test_a_25000_character_text_is_split_into_parts_of_the_models_limit():
    text = " ".join(f"This is sentence {n}, spoken by the local engine." for n in range(600))
    assert len(text) > 25_000
    parts = split_text(text, 10_000)
    assert len(parts) == 3 and all(len(part) <= 10_000 for part in parts)
    assert all(part.endswith(".") for part in parts)
    assert words(" ".join(parts)) == words(text)
    assert split_text("", 100) == [] and split_text(" \n ", 100) == []


# --- Takes in parts on the local engine -----------------------------------------------------


@pytest.fixture
def short_parts(monkeypatch):
    """The local engine's models take ``limit`` characters a request (default 200)."""

    def patch(limit=200):
        monkeypatch.setattr(local_engine, "MAX_TEXT", limit)
        cache.clear()  # the page's list of models
        return limit

    yield patch
    cache.clear()


def long_text(sentences: int) -> str:
    return " ".join(
        f"Sentence {n} of a long text by Zoë, spoken part after part." for n in range(sentences)
    )


def token_of(response) -> str:
    return response.text.split("/speech/takes/")[1].split("/")[0]


def seconds_of(audio: bytes) -> float:
    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate


def stored(clip) -> bytes:
    with clip.file.open("rb") as handle:
        return handle.read()


def body(response) -> bytes:
    if response.streaming and response.is_async:  # a take as it is made

        async def read():
            return b"".join([chunk async for chunk in response])

        return async_to_sync(read)()
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def test_a_long_take_streams_its_parts_back_to_back_each_its_own_call_and_clip(
    client_as, member, owner, viewer, outsider, voice, short_parts
):
    limit = short_parts(200)
    text = long_text(11)  # about 650 characters: 4 parts
    parts = split_text(text, limit)
    assert len(parts) >= 3
    client = client_as(member, **HTMX)
    page = client_as(member).get(PAGE, {"text": text}).text
    estimated = -(-len(text) // limit)  # the page's estimate: at least this many parts
    assert f"<span data-parts>· in <span data-parts-n>{estimated}</span> parts" in page
    assert "Up to 200,000 characters" in page  # the cap is said on the page
    response = client.post(GENERATE, form_data(voice, text=text, output_format="mp3_22050_32"))
    assert response.status_code == 200
    assert f"in {len(parts)} parts" in response.text
    token = token_of(response)
    streamed = client.get(reverse("speech:take_stream", args=[token]))
    assert streamed.status_code == 200 and streamed["Content-Type"] == "audio/mpeg"

    async def read():
        chunks, events_at_first = [], None
        async for chunk in streamed:
            if events_at_first is None:  # the first audio is sent ...
                events_at_first = await sync_to_async(UsageEvent.objects.count)()
            chunks.append(chunk)
        return chunks, events_at_first

    chunks, events_at_first = async_to_sync(read)()
    # ... before any later part was even started: its call is reserved only after.
    assert events_at_first == 1
    audio = b"".join(chunks)

    events = list(UsageEvent.objects.order_by("pk"))
    assert len(events) == len(parts)  # one ledger row per part, the member's own
    assert all(e.status == UsageStatus.SETTLED and e.user == member for e in events)
    assert [e.units for e in events] == [len(part) for part in parts]
    assert {(e.purpose_type, e.purpose_id) for e in events} == {("speech", token)}
    clips = sorted(Generation.objects.all(), key=lambda c: c.recipe["take"]["part"])
    assert len(clips) == len(parts) and all(c.complete for c in clips)
    assert [c.recipe["take"] for c in clips][0] == {"id": token, "part": 1, "parts": len(parts)}
    assert {c.recipe["take"]["id"] for c in clips} == {token}
    assert [c.recipe["text"] for c in clips] == parts
    assert clips[1].recipe["previous_text"] == parts[0]  # the engine hears the text around
    assert clips[1].recipe["next_text"] == parts[2]
    assert [c.usage_event for c in clips] == events
    # The stream is the parts' audio back to back.
    assert audio == b"".join(stored(c) for c in clips)

    done = client.get(reverse("speech:take", args=[token]))
    take_url = reverse("speech:take_audio", args=[clips[0].pk])
    assert done.status_code == 200 and take_url in done.text
    assert f"{len(parts)} of {len(parts)} parts" in done.text and "cut short" not in done.text

    # One file for the whole take, from any of its parts; as long as the parts together.
    whole = client_as(member).get(reverse("speech:take_audio", args=[clips[-1].pk]))
    assert whole.status_code == 200 and whole["Content-Type"] == "audio/mpeg"
    data = body(whole)
    total = sum(seconds_of(stored(c)) for c in clips)
    assert abs(seconds_of(data) - total) < 0.2 and total > 10
    assert int(whole["Content-Length"]) == len(data)
    ranged = client_as(member).get(take_url, HTTP_RANGE="bytes=100-199")
    assert ranged.status_code == 206 and body(ranged) == data[100:200]
    assert ranged["Content-Range"] == f"bytes 100-199/{len(data)}"
    download = client_as(viewer).get(take_url, {"download": "1"})
    assert download.status_code == 200 and "attachment" in download["Content-Disposition"]
    assert body(download) == data
    assert client_as(owner).get(take_url).status_code == 200
    assert client_as(outsider).get(take_url).status_code == 404

    # "Use these settings again" from any part: the whole take's text.
    again = client_as(member).get(PAGE, {"from": clips[2].pk}).text
    box = again.split("data-speech-text")[1].split(">", 1)[1].split("</textarea>")[0]
    assert words(box) == words(text)
    assert take_url in again


def test_a_long_wav_take_made_whole_is_one_wav_of_all_its_parts(
    client_as, member, voice, short_parts
):
    short_parts(120)
    text = long_text(5)
    parts = split_text(text, 120)
    assert len(parts) >= 3
    response = client_as(member).post(
        GENERATE, form_data(voice, text=text, output_format="wav_16000")
    )
    assert response.status_code == 303
    clips = sorted(Generation.objects.all(), key=lambda c: c.recipe["take"]["part"])
    assert len(clips) == len(parts) == UsageEvent.objects.count()
    assert len({c.recipe["take"]["id"] for c in clips}) == 1
    assert response["Location"] == f"{PAGE}?from={clips[0].pk}"
    whole = client_as(member).get(reverse("speech:take_audio", args=[clips[1].pk]))
    data = body(whole)
    assert whole["Content-Type"] == "audio/wav" and data[:4] == b"RIFF"
    total = sum(seconds_of(stored(c)) for c in clips)
    assert abs(seconds_of(data) - total) < 0.01
    # The header states the length of all the samples.
    assert int.from_bytes(data[40:44], "little") == len(data) - 44


def test_an_mp3_take_made_whole_leaves_out_each_parts_length_header(
    client_as, member, voice, short_parts
):
    short_parts(80)
    text = long_text(2)
    response = client_as(member, **{}).post(GENERATE, form_data(voice, text=text))
    assert response.status_code == 303
    clips = sorted(Generation.objects.all(), key=lambda c: c.recipe["take"]["part"])
    assert len(clips) >= 2
    data = body(client_as(member).get(reverse("speech:take_audio", args=[clips[0].pk])))
    # A part made whole starts with a frame stating its own length (Xing/Info): a player
    # would take it for the whole take's; the combined file has none.
    assert any(mp3_audio_start(stored(c)) > 0 for c in clips)
    assert mp3_audio_start(data) == 0 and b"Xing" not in data[:400] and b"Info" not in data[:400]
    total = sum(seconds_of(stored(c)) for c in clips)
    assert abs(seconds_of(data) - total) < 0.2


def test_an_opus_take_is_decoded_and_made_one_ogg_stream(client_as, member, voice, short_parts):
    short_parts(80)
    text = long_text(2)
    response = client_as(member).post(
        GENERATE, form_data(voice, text=text, output_format="opus_48000_64")
    )
    assert response.status_code == 303
    clips = sorted(Generation.objects.all(), key=lambda c: c.recipe["take"]["part"])
    assert len(clips) >= 2
    whole = client_as(member).get(reverse("speech:take_audio", args=[clips[0].pk]))
    data = body(whole)
    assert whole["Content-Type"].startswith("audio/ogg") and data[:4] == b"OggS"
    assert data.count(b"OpusHead") == 1  # one stream, not the parts' streams chained
    total = sum(seconds_of(stored(c)) for c in clips)
    assert abs(seconds_of(data) - total) < 0.1


def spend_the_budget_after(monkeypatch, calls: int):
    """The member's budget is spent (elsewhere, meanwhile) once ``calls`` parts were made."""
    original = core_speech._speech_meter
    made = []

    def meter(caller, engine, request):
        if len(made) >= calls:
            raise BudgetExceeded(
                "Mia Member's budget of 100 credits", needed=Decimal(60), left=Decimal(0)
            )
        made.append(request.text)
        return original(caller, engine, request)

    monkeypatch.setattr(core_speech, "_speech_meter", meter)
    return made


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "made-whole"])
def test_a_budget_spent_midway_keeps_the_parts_made_and_says_where_it_stopped(
    client_as, member, voice, short_parts, monkeypatch, streamed
):
    short_parts(100)
    text = long_text(5)
    parts = split_text(text, 100)
    assert len(parts) >= 3
    made = spend_the_budget_after(monkeypatch, 2)
    if streamed:
        client = client_as(member, **HTMX)
        token = token_of(client.post(GENERATE, form_data(voice, text=text)))
        audio = body(client.get(reverse("speech:take_stream", args=[token])))
        shown = client.get(reverse("speech:take", args=[token]))
        assert shown.status_code == 200
        shown = shown.text
    else:
        response = client_as(member).post(GENERATE, form_data(voice, text=text))
        assert response.status_code == 303
        shown = client_as(member).get(response["Location"]).text
        audio = None
    assert made == parts[:2]
    clips = sorted(Generation.objects.all(), key=lambda c: c.recipe["take"]["part"])
    assert [c.recipe["text"] for c in clips] == parts[:2]  # the parts made are kept
    assert all(c.complete for c in clips)
    if audio is not None:
        assert audio == b"".join(stored(c) for c in clips)
    events = UsageEvent.objects.all()
    assert len(events) == 2 and all(e.status == UsageStatus.SETTLED for e in events)
    assert sum(e.units for e in events) == len(parts[0]) + len(parts[1])  # none for the rest
    message = shown.replace("&#x27;", "'")
    assert f"Stopped after 2 parts of {len(parts)}:" in message
    assert "Mia Member's budget of 100 credits is spent" in message
    assert "nothing was charged for the rest" in message
    assert f"2 of {len(parts)} parts" in message


def test_a_listener_who_leaves_ends_the_take_no_further_part_is_made(member, voice, short_parts):
    short_parts(150)
    text = long_text(8)
    parts = split_text(text, 150)
    assert len(parts) >= 3
    recipe = services.TakeRecipe(text=text, voice_id=voice.voice_id)
    stream = services.take_stream(
        workspace=voice.workspace, user=member, recipe=recipe, token="left-early"
    )

    async def listen_then_leave():
        chunks = aiter(stream)
        await anext(chunks)
        await anext(chunks)
        await chunks.aclose()

    async_to_sync(listen_then_leave)()
    stream.close()  # Django closes the response as well: nothing more happens
    time.sleep(0.1)
    event = UsageEvent.objects.get()  # only the first part's call
    assert event.status == UsageStatus.SETTLED and 0 < event.units < len(parts[0])
    clip = Generation.objects.get()
    assert clip.complete is False and clip.recipe["take"]["part"] == 1
    assert "the listener left" in clip.recipe["take"]["stopped"]
    take = services.take_found(workspace=voice.workspace, user=member, token="left-early")
    assert take is not None and take.over and not take.complete


def test_a_take_of_another_workspace_is_not_found(client_as, outsider, member, voice, short_parts):
    short_parts(80)
    response = client_as(member).post(GENERATE, form_data(voice, text=long_text(2)))
    assert response.status_code == 303
    clip = Generation.objects.first()
    url = reverse("speech:take_audio", args=[clip.pk])
    assert client_as(outsider).get(url).status_code == 404
    assert client_as(outsider).get(PAGE, {"from": clip.pk}).status_code == 404
    assert client_as(member).post(url).status_code == 405
    assert client_as(member).get(reverse("speech:take_audio", args=[999999])).status_code == 404


def test_a_text_over_the_cap_is_a_clear_400(client_as, member, voice):
    text = "Word. " * 40_000  # 240,000 characters
    for headers in ({}, HTMX):
        response = client_as(member, **headers).post(GENERATE, form_data(voice, text=text))
        assert response.status_code == 400
        assert "A take speaks at most 200,000 characters: split the text" in response.text
    assert not UsageEvent.objects.exists() and not Generation.objects.exists()
