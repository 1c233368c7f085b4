"""The local engine's speech: every voice speaks, seeds reproduce bytes, timings and streaming."""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from apps.engines import audio
from apps.engines.base import InvalidRequest, TTSRequest, VoiceSettings
from apps.engines.local import tts

ROOT = Path(__file__).resolve().parents[2]
SENTENCE = "The quick brown fox jumps over the lazy dog."
THREE_SENTENCES = (
    "Welcome back to Chorus, where your whole team shares one voice studio. "
    "Today we will look at three ways to make a narration sound natural. "
    "Please remember to save your project before you close the window."
)


def request(text=SENTENCE, voice_id="local-joe", **kwargs) -> TTSRequest:
    kwargs.setdefault("output_format", "pcm_22050")
    return TTSRequest(text=text, voice_id=voice_id, **kwargs)


def samples_of(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def active_dbfs(samples: np.ndarray) -> float:
    return 20 * np.log10(tts._active_rms(samples))


def assert_alignment_covers(alignment, text: str, duration: float) -> None:
    starts = alignment.character_start_times_seconds
    ends = alignment.character_end_times_seconds
    assert "".join(alignment.characters) == text
    assert len(starts) == len(ends) == len(text)
    assert all(a <= b for a, b in zip(starts, starts[1:], strict=False))
    assert all(a <= b for a, b in zip(ends, ends[1:], strict=False))
    assert all(s <= e for s, e in zip(starts, ends, strict=True))
    assert starts[0] >= 0
    assert abs(ends[-1] - duration) <= 0.05 * duration
    assert all(isinstance(t, float) for t in starts + ends)


# --- Voices -----------------------------------------------------------------------------


def test_the_catalogue_lists_the_piper_voice_and_espeak_voices_in_several_languages():
    voices = tts.list_voices()
    ids = [voice.voice_id for voice in voices]
    assert ids[0] == tts.DEFAULT_VOICE_ID == "local-joe"
    assert len(ids) == len(set(ids)) >= 9
    assert {voice.labels["language"] for voice in voices} >= {"en", "de", "fr", "es", "it", "pt"}
    joe = voices[0]
    assert joe.labels["gender"] == "male" and joe.labels["accent"] == "american"
    assert joe.recipe == {"backend": "piper", "language": "en", "model": "en_US-joe-medium"}
    for voice in voices:
        assert voice.engine == "local" and voice.category == "premade"
        assert voice.recipe["backend"] in ("piper", "espeak")
        assert {"gender", "age", "accent", "language", "descriptive"} <= voice.labels.keys()


@pytest.mark.parametrize("voice", tts.LOCAL_VOICES, ids=lambda voice: voice.voice_id)
def test_every_local_voice_speaks_its_preview_at_the_normalised_level(voice):
    result = tts.synthesize(request(voice.preview_text, voice.voice_id, seed=1))
    samples = samples_of(result.audio)
    assert result.duration_secs == pytest.approx(samples.size / 22050)
    assert 1.5 < result.duration_secs < 8.0
    assert np.abs(samples).max() < 1.0  # no clipping
    assert active_dbfs(samples) == pytest.approx(-20.0, abs=2.5)
    assert result.characters == len(voice.preview_text)


def test_the_default_output_is_an_mp3_that_decodes_to_the_stated_duration():
    result = tts.synthesize(TTSRequest(text=SENTENCE, voice_id="local-espeak-en-us", seed=3))
    assert result.output_format == "mp3_44100_128"
    assert result.content_type == "audio/mpeg"
    decoded = audio.decode_to_pcm16k(result.audio, filename="speech.mp3")
    assert decoded.size / 16000 == pytest.approx(result.duration_secs, abs=0.1)
    assert result.info.engine == "local"
    assert result.info.character_cost == 0.0
    assert len(result.info.request_id) == 32 and int(result.info.request_id, 16) >= 0


@pytest.mark.parametrize(
    "model_id",
    ["eleven_multilingual_v2", "eleven_flash_v2_5", "eleven_turbo_v2", "eleven_v3", "local"],
)
def test_elevenlabs_model_ids_are_accepted_and_echoed(model_id):
    result = tts.synthesize(request("Hi.", "local-espeak-en-us", model_id=model_id, seed=1))
    assert result.info.model_id == model_id
    assert result.duration_secs > 0.2


# --- Seeds ------------------------------------------------------------------------------


@pytest.mark.parametrize("voice_id", ["local-joe", "local-espeak-en-us-whisper"])
def test_the_same_seed_gives_the_same_bytes(voice_id):
    first = tts.synthesize(request(voice_id=voice_id, seed=1234, output_format="mp3_44100_128"))
    tts.synthesize(request("Something else in between.", voice_id, seed=99))
    second = tts.synthesize(request(voice_id=voice_id, seed=1234, output_format="mp3_44100_128"))
    assert first.audio == second.audio


def test_different_seeds_give_piper_different_takes():
    first = tts.synthesize(request(seed=1))
    second = tts.synthesize(request(seed=2))
    assert first.audio != second.audio


_CHILD = """
import hashlib
from apps.engines.base import TTSRequest
from apps.engines.local import tts
for voice_id in ("local-joe", "local-espeak-en-us-whisper"):
    result = tts.synthesize(TTSRequest(text=%r, voice_id=voice_id, seed=77))
    print(hashlib.sha256(result.audio).hexdigest())
"""


def test_the_same_seed_gives_the_same_bytes_in_separate_processes():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD % SENTENCE],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(out.split())
    here = [
        hashlib.sha256(
            tts.synthesize(TTSRequest(text=SENTENCE, voice_id=voice_id, seed=77)).audio
        ).hexdigest()
        for voice_id in ("local-joe", "local-espeak-en-us-whisper")
    ]
    assert outputs[0] == outputs[1] == here


# --- Voice settings and recipes ---------------------------------------------------------


@pytest.mark.parametrize("voice_id", ["local-joe", "local-espeak-fr-f2"])
def test_a_faster_speed_gives_shorter_audio(voice_id):
    slow = tts.synthesize(
        request(voice_id=voice_id, seed=5, voice_settings=VoiceSettings(speed=0.8))
    )
    fast = tts.synthesize(
        request(voice_id=voice_id, seed=5, voice_settings=VoiceSettings(speed=1.2))
    )
    assert fast.duration_secs < 0.95 * slow.duration_secs


def test_stability_changes_the_take():
    steady = tts.synthesize(request(seed=5, voice_settings=VoiceSettings(stability=1.0)))
    loose = tts.synthesize(request(seed=5, voice_settings=VoiceSettings(stability=0.0)))
    assert steady.audio != loose.audio


def _f0(samples: np.ndarray) -> float:
    """Median pitch of the voiced 46 ms frames, by autocorrelation."""
    pitches = []
    for start in range(0, samples.size - 1024, 512):
        frame = samples[start : start + 1024]
        if np.sqrt(np.mean(frame**2)) < 0.03:
            continue
        corr = np.correlate(frame, frame, "full")[1023:]
        low, high = 22050 // 400, 22050 // 60
        lag = low + int(np.argmax(corr[low:high]))
        if corr[lag] > 0.3 * corr[0]:
            pitches.append(22050 / lag)
    return float(np.median(pitches))


@pytest.mark.parametrize("base_voice_id", ["local-joe", "local-espeak-en-us"])
def test_a_recipe_raises_the_pitch_and_keeps_the_duration(base_voice_id):
    plain = tts.synthesize(request(voice_id=base_voice_id, seed=8))
    recipe = {"base_voice_id": base_voice_id, "pitch_semitones": 4, "loudness_db": -6}
    higher = tts.synthesize(request(voice_id="generated-abc", voice_recipe=recipe, seed=8))
    ratio = _f0(samples_of(higher.audio)) / _f0(samples_of(plain.audio))
    assert 1.12 < ratio < 1.45  # four semitones up is 1.26
    assert higher.duration_secs == pytest.approx(plain.duration_secs, rel=0.2)
    louder = active_dbfs(samples_of(plain.audio)) - active_dbfs(samples_of(higher.audio))
    assert louder == pytest.approx(6, abs=2)
    assert_alignment_covers(higher.alignment, SENTENCE, higher.duration_secs)


def test_a_recipe_can_name_any_espeak_voice():
    recipe = {"espeak_voice": "de+m3", "rate": 1.3}
    result = tts.synthesize(request("Guten Morgen.", "designed-1", voice_recipe=recipe, seed=1))
    assert result.duration_secs > 0.3


def test_an_espeak_voice_speaks_the_requested_language():
    english = tts.synthesize(request("Hallo Welt.", "local-espeak-en-us-f3", seed=1))
    german = tts.synthesize(request("Hallo Welt.", "local-espeak-en-us-f3", language_code="de"))
    assert english.audio != german.audio


# --- Timestamps -------------------------------------------------------------------------


TRICKY = "  Hello, world! I paid $4.50 for 123 apples — really?\nYes: Dr. Smith did.  "


@pytest.mark.parametrize("voice_id", ["local-joe", "local-espeak-en-gb-f3"])
@pytest.mark.parametrize("text", [TRICKY, "No full stop at the end", "你好 😀"])
def test_the_alignment_times_every_character_up_to_the_end_of_the_audio(voice_id, text):
    result = tts.synthesize(request(text, voice_id, seed=3))
    assert_alignment_covers(result.alignment, text, result.duration_secs)
    assert result.normalized_alignment == result.alignment


@pytest.mark.parametrize("voice_id", ["local-joe", "local-espeak-en-gb-f3"])
def test_the_alignment_follows_the_words_in_order(voice_id):
    text = TRICKY
    result = tts.synthesize(request(text, voice_id, seed=3))
    starts = dict(
        zip(range(len(text)), result.alignment.character_start_times_seconds, strict=True)
    )
    assert starts[text.index("world")] < starts[text.index("apples")] < starts[text.index("Yes")]


def test_piper_word_times_follow_the_spoken_phonemes():
    text = "Go. Then wait a moment, extraordinarily patiently."
    result = tts.synthesize(request(text, seed=4))
    starts = result.alignment.character_start_times_seconds
    ends = result.alignment.character_end_times_seconds
    go = ends[1] - starts[0]
    long_word = ends[text.index(",") - 1] - starts[text.index("moment")]
    adverb = ends[len(text) - 2] - starts[text.index("extraordinarily")]
    assert go < long_word < adverb


# --- Streaming --------------------------------------------------------------------------


def test_streaming_sends_the_first_audio_long_before_the_whole_text_is_spoken():
    tts.synthesize(request("Warm up.", seed=1))
    started = time.perf_counter()
    stream = tts.synthesize_stream(request(THREE_SENTENCES, seed=9, output_format="mp3_44100_128"))
    chunks = iter(stream)
    first = next(chunks)
    first_after = time.perf_counter() - started
    rest = list(chunks)
    total = time.perf_counter() - started
    assert first.audio
    assert first_after < 0.5 * total
    assert stream.info.latency_ms is not None and stream.info.latency_ms <= first_after * 1000
    assert stream.delivered_bytes == len(first.audio) + sum(len(c.audio) for c in rest)


@pytest.mark.parametrize("voice_id", ["local-joe", "local-espeak-es-m2"])
def test_streamed_pcm_and_timestamps_match_the_whole_synthesis(voice_id):
    whole = tts.synthesize(request(THREE_SENTENCES, voice_id, seed=11))
    chunks = list(tts.synthesize_stream(request(THREE_SENTENCES, voice_id, seed=11), True))
    assert len(chunks) >= 3
    assert b"".join(chunk.audio for chunk in chunks) == whole.audio
    streamed = [chunk.alignment for chunk in chunks if chunk.alignment]
    assert [c for a in streamed for c in a.characters] == list(THREE_SENTENCES)
    starts = [t for a in streamed for t in a.character_start_times_seconds]
    assert starts == whole.alignment.character_start_times_seconds


def test_a_stream_without_timestamps_carries_no_alignment():
    chunks = list(tts.synthesize_stream(request("One. Two.", "local-espeak-en-us", seed=1)))
    assert chunks and all(chunk.alignment is None for chunk in chunks)


# --- Bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"voice_id": "21m00Tcm4TlvDq8ikWAM"}, "voice_id", "does not exist in the local engine"),
        ({"text": ""}, "text", "empty"),
        ({"text": " \n\t "}, "text", "empty"),
        ({"text": "?! ..."}, "text", "nothing to speak"),
        ({"text": "a" * 10_001}, "text", "max_character_limit_exceeded"),
        ({"output_format": "mp3_1_1"}, "output_format", "Unknown output_format"),
        ({"voice_settings": VoiceSettings(speed=2.0)}, "voice_settings", "speed must be between"),
        ({"voice_settings": VoiceSettings(stability=1.5)}, "voice_settings", "stability"),
        ({"seed": -1}, "seed", "seed must be an integer"),
        ({"seed": 2**32}, "seed", "seed must be an integer"),
        ({"voice_recipe": {"pitch_semitones": 30}}, "voice_recipe", "between -12 and 12"),
        ({"voice_recipe": {"base_voice_id": "nope"}}, "voice_recipe", "does not exist"),
        ({"voice_recipe": {"espeak_voice": "xx-nowhere"}}, "voice_recipe", "no voice"),
        ({"voice_recipe": {"espeak_voice": "en+nonsense"}}, "voice_recipe", "no voice"),
        ({"voice_recipe": "loud"}, "voice_recipe", "must be an object"),
        ({"voice_id": "local-espeak-en-us", "language_code": "x!"}, "language_code", "not a"),
    ],
)
def test_bad_input_raises_a_typed_error_on_its_field(changes, field, words):
    fields = {"text": SENTENCE, "voice_id": "local-joe", **changes}
    with pytest.raises(InvalidRequest) as raised:
        tts.synthesize(TTSRequest(**fields))
    assert raised.value.fields == {field: [raised.value.message]}
    assert words in raised.value.message
    with pytest.raises(InvalidRequest):
        tts.synthesize_stream(TTSRequest(**fields))


def test_the_unknown_voice_message_names_the_local_voices():
    with pytest.raises(InvalidRequest) as raised:
        tts.synthesize(request(voice_id="rachel"))
    assert raised.value.message.startswith("Voice 'rachel' does not exist in the local engine.")
    assert "local-joe" in raised.value.message


def test_ten_thousand_characters_are_within_the_limit():
    plan = tts._plan(request("word " * 2000, "local-espeak-en-us"))
    assert len(plan.text) == 10_000
    assert all(end - start <= 400 for start, end in plan.clauses)


def test_clauses_tile_the_text_at_sentence_and_clause_ends():
    text = "One. Two! Three? Four; five: six\nseven " + "long part, " * 30
    spans = tts.split_clauses(text)
    assert "".join(text[s:e] for s, e in spans) == text
    assert [text[s:e] for s, e in spans][:7] == [
        "One. ",
        "Two! ",
        "Three? ",
        "Four; ",
        "five: ",
        "six\n",
        "seven long part, long part, long part, long part, ",
    ]
    assert all(e - s <= 400 for s, e in spans)
