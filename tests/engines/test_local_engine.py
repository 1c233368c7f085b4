"""The local engine through the engine interface: real audio in and out, every capability."""

import io
import re

import av
import numpy as np
import pytest

from apps.engines import audio, base
from apps.engines.local.engine import ELEVENLABS_TTS_MODELS, local_engine

SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Please send the final report to the team before Friday afternoon.",
    "Our new studio records podcasts, audiobooks and radio adverts.",
    "She counted seven boats sailing slowly across the quiet harbour.",
    "Turn left at the second traffic light and park behind the library.",
]


def _words(text: str) -> list[str]:
    text = text.lower().replace("harbor", "harbour").replace("favorite", "favourite")
    return re.findall(r"[a-z0-9']+", text)


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            prev, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, prev + (ref[i - 1] != hyp[j - 1])),
            )
    return row[len(hyp)] / max(1, len(ref))


@pytest.fixture(scope="module")
def engine():
    return local_engine()


@pytest.mark.parametrize("voice_id", ["local-joe", "local-espeak-en-us"])
def test_what_it_says_it_hears_back(engine, voice_id):
    """TTS → STT round trip over a set of sentences: WER ≤ 10 %."""
    errors = []
    for index, sentence in enumerate(SENTENCES):
        speech = engine.tts(
            base.TTSRequest(
                text=sentence, voice_id=voice_id, seed=index, output_format="mp3_44100_128"
            )
        )
        heard = engine.stt(base.STTRequest(audio=speech.audio, filename="s.mp3"))
        errors.append(wer(sentence, heard.text))
        assert heard.audio_duration_secs == pytest.approx(speech.duration_secs, abs=0.15)
    assert np.mean(errors) <= 0.10, errors


def _decoded_rate_and_seconds(data: bytes, fmt: base.OutputFormat) -> tuple[str, int, float]:
    if fmt.codec in {"pcm", "ulaw", "alaw"}:
        per_sample = 2 if fmt.codec == "pcm" else 1
        return fmt.codec, fmt.sample_rate, len(data) / per_sample / fmt.sample_rate
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = sum(frame.samples for frame in container.decode(stream))
        return (
            stream.codec_context.name,
            stream.codec_context.sample_rate,
            frames / (stream.codec_context.sample_rate),
        )


@pytest.mark.parametrize("name", base.OUTPUT_FORMATS)
def test_every_output_format_decodes_with_its_codec_and_rate(engine, name):
    result = engine.tts(
        base.TTSRequest(
            text="Testing one two three.", voice_id="local-espeak-en-us", output_format=name, seed=1
        )
    )
    fmt = base.OutputFormat.parse(name)
    codec, rate, seconds = _decoded_rate_and_seconds(result.audio, fmt)
    expected = {"mp3": ("mp3", "mp3float"), "wav": ("pcm_s16le",), "opus": ("opus", "libopus")}
    assert codec in expected.get(fmt.codec, (fmt.codec,))
    assert rate == fmt.sample_rate
    assert seconds == pytest.approx(result.duration_secs, abs=0.08)
    assert result.content_type == fmt.content_type and result.characters == 22


def test_elevenlabs_model_ids_are_accepted(engine):
    ids = {model.model_id for model in engine.models()}
    assert set(ELEVENLABS_TTS_MODELS) <= ids
    result = engine.tts(
        base.TTSRequest(
            text="Hello there.", voice_id="local-joe", model_id="eleven_flash_v2_5", seed=1
        )
    )
    assert result.info.engine == "local" and result.info.character_cost == 0.0
    assert result.info.request_id


def test_voices_are_searchable_and_paged(engine):
    first = engine.voices(base.VoiceQuery(page_size=4))
    assert first.total_count >= 10 and len(first.voices) == 4 and first.has_more
    second = engine.voices(base.VoiceQuery(page_size=4, next_page_token=first.next_page_token))
    assert not {v.voice_id for v in first.voices} & {v.voice_id for v in second.voices}
    german = engine.voices(base.VoiceQuery(search="german"))
    assert [v.voice_id for v in german.voices] == ["local-espeak-de-m3"]
    assert engine.voice("local-joe").labels["gender"] == "male"


def test_sound_and_music_honour_duration_and_seed_through_the_engine(engine):
    sound = engine.sound_effect(
        base.SoundRequest(text="rain on a tin roof", duration_seconds=2.5, seed=4)
    )
    again = engine.sound_effect(
        base.SoundRequest(text="rain on a tin roof", duration_seconds=2.5, seed=4)
    )
    assert sound.audio == again.audio and sound.extra["draft"] is True
    assert audio.probe_duration(sound.audio) == pytest.approx(2.5, rel=0.02)
    song = engine.music(
        base.MusicRequest(prompt="upbeat pop with drums, 120 bpm", music_length_ms=6000, seed=1)
    )
    assert audio.probe_duration(song.audio) == pytest.approx(6.0, rel=0.02)
    assert song.info.engine == "local" and song.info.character_cost == 0.0


def test_models_load_once_per_process(engine):
    from apps.engines.local import stt, tts

    engine.tts(base.TTSRequest(text="One.", voice_id="local-joe", seed=1))
    engine.stt(base.STTRequest(audio=SILENCE, filename="s.wav"))
    piper, whisper = tts._piper(), stt.whisper_model("tiny")
    engine.tts(base.TTSRequest(text="Two.", voice_id="local-joe", seed=2))
    engine.stt(base.STTRequest(audio=SILENCE, filename="s.wav"))
    assert tts._piper() is piper and stt.whisper_model("tiny") is whisper


TURNS = [
    ("local-joe", "Welcome to the show. Today we talk about gardens."),
    ("local-espeak-en-us-f3", "Thank you for having me. I love gardens very much."),
    ("local-joe", "Tell us about your favourite flower."),
    ("local-espeak-en-us-f3", "It has to be the sunflower, because it follows the sun."),
]


def _dialogue(engine) -> tuple[bytes, float]:
    parts = []
    for voice, text in TURNS:
        result = engine.tts(
            base.TTSRequest(text=text, voice_id=voice, seed=1, output_format="wav_16000")
        )
        parts += [audio.decode_to_pcm16k(result.audio), np.zeros(8000, np.float32)]
    samples = np.concatenate(parts)
    return audio.encode(samples, 16000, "wav_16000"), len(samples) / 16000


def test_dubbing_revoices_each_speaker_in_place(engine):
    source, seconds = _dialogue(engine)
    status = engine.dubbing_start(
        base.DubbingRequest(audio=source, filename="talk.wav", target_lang="en")
    )
    assert status.status == "dubbed" and status.target_languages == ["en"]
    assert engine.dubbing_status(status.dubbing_id).status == "dubbed"
    dubbed = engine.dubbing_audio(status.dubbing_id, "en")
    assert audio.probe_duration(dubbed.audio) == pytest.approx(seconds, abs=0.1)
    assert len(set(dubbed.extra["voices"].values())) == 2
    srt = engine.dubbing_transcript(status.dubbing_id, "en")
    assert srt.count("[speaker_0]") == 2 and srt.count("[speaker_1]") == 2
    assert "sunflower" in srt.lower()
    heard = engine.stt(base.STTRequest(audio=dubbed.audio, filename="dub.mp3"))
    spoken = " ".join(text for _voice, text in TURNS)
    assert wer(spoken, heard.text) <= 0.2  # the dub says the same words


def test_dubbing_into_another_language_is_not_supported(engine):
    source, _ = _dialogue(engine)
    with pytest.raises(base.NotSupported, match="cannot translate"):
        engine.dubbing_start(base.DubbingRequest(audio=source, filename="t.wav", target_lang="de"))


SILENCE = audio.encode(np.zeros(32000, np.float32), 16000, "wav_16000")


@pytest.mark.parametrize(
    "call,error,field",
    [
        (
            lambda e: e.tts(base.TTSRequest(text="  ", voice_id="local-joe")),
            base.InvalidRequest,
            "text",
        ),
        (
            lambda e: e.tts(base.TTSRequest(text="a" * 10_001, voice_id="local-joe")),
            base.InvalidRequest,
            "text",
        ),
        (
            lambda e: e.tts(base.TTSRequest(text="Hi", voice_id="nobody")),
            base.InvalidRequest,
            "voice_id",
        ),
        (
            lambda e: e.tts(
                base.TTSRequest(text="Hi", voice_id="local-joe", output_format="mp3_1")
            ),
            base.InvalidRequest,
            "output_format",
        ),
        (
            lambda e: e.stt(base.STTRequest(audio=b"garbage" * 30, filename="x.mp3")),
            base.InvalidRequest,
            "file",
        ),
        (
            lambda e: e.stt(base.STTRequest(audio=b"", filename="x.wav")),
            base.InvalidRequest,
            "file",
        ),
        (
            lambda e: e.stt(base.STTRequest(audio=SILENCE, language_code="de")),
            base.NotSupported,
            None,
        ),
        (lambda e: e.voice("nobody"), base.InvalidRequest, "voice_id"),
        (
            lambda e: e.voice_design(base.DesignRequest(voice_description="too short")),
            base.InvalidRequest,
            "voice_description",
        ),
        (
            lambda e: e.voice_clone(base.CloneRequest(name="x", samples=[("a.mp3", b"junk")])),
            base.InvalidRequest,
            "file",
        ),
        (
            lambda e: e.dubbing_start(
                base.DubbingRequest(audio=b"junk", filename="a.mp4", target_lang="en")
            ),
            base.InvalidRequest,
            "file",
        ),
        (
            lambda e: e.dubbing_start(
                base.DubbingRequest(audio=SILENCE, filename="a.wav", target_lang="en")
            ),
            base.InvalidRequest,
            "file",
        ),
        (lambda e: e.dubbing_status("local-dub-nope"), base.InvalidRequest, "dubbing_id"),
        (lambda e: e.history(), base.NotSupported, None),
        (
            lambda e: e.tts(base.TTSRequest(text="Hi\x00there", voice_id="local-joe")),
            base.InvalidRequest,
            "text",
        ),
        (
            lambda e: e.tts(
                base.TTSRequest(text="Hallo", voice_id="local-joe", language_code="de")
            ),
            base.NotSupported,
            None,
        ),
        (lambda e: e.sound_effect(base.SoundRequest(text="")), base.InvalidRequest, "text"),
        (
            lambda e: e.sound_effect(base.SoundRequest(text="rain", duration_seconds=31)),
            base.InvalidRequest,
            "duration_seconds",
        ),
        (
            lambda e: e.music(base.MusicRequest(prompt="calm piano", music_length_ms=1000)),
            base.InvalidRequest,
            "music_length_ms",
        ),
    ],
)
def test_bad_input_gets_the_typed_error_with_a_clear_message(engine, call, error, field):
    with pytest.raises(error) as exc:
        call(engine)
    assert exc.value.message and len(exc.value.message) > 10
    if field:
        assert field in exc.value.fields, exc.value.fields


def test_leaving_a_stream_early_closes_it(engine):
    stream = engine.tts_stream(
        base.TTSRequest(
            text="One sentence. Another sentence. And a third one.", voice_id="local-joe"
        )
    )
    for _chunk in stream:
        break
    assert stream.closed
    assert stream.delivered_bytes > 0
