"""Local voice design (recipes from descriptions, reproducible) and approximate cloning."""

import io

import numpy as np
import pytest

from apps.engines import audio, base
from apps.engines.local import design
from apps.engines.local.engine import local_engine

DESCRIPTION = "A deep, slow British man with a calm voice, perfect for audiobooks."


def _design(**kwargs):
    fields = {"voice_description": DESCRIPTION, "seed": 7, "auto_generate_text": True}
    return local_engine().voice_design(base.DesignRequest(**{**fields, **kwargs}))


def test_the_description_is_read_for_gender_pace_pitch_and_accent():
    found = design.describe(DESCRIPTION)
    assert (found.gender, found.accent, found.espeak_language) == ("male", "british", "en-gb-x-rp")
    assert found.pitch_semitones < 0 and found.rate < 1
    female = design.describe("An energetic young woman with a bright, high Scottish voice")
    assert (female.gender, female.age, female.accent) == ("female", "young", "scottish")
    assert female.pitch_semitones > 0 and female.rate > 1


def test_three_previews_that_differ_and_reproduce_exactly():
    first = _design()
    again = _design()
    assert len(first.previews) == 3
    assert [p.audio for p in first.previews] == [p.audio for p in again.previews]
    assert len({p.audio for p in first.previews}) == 3
    assert len({p.generated_voice_id for p in first.previews}) == 3
    assert first.text == again.text and len(first.text) >= 100
    for preview in first.previews:
        assert preview.media_type == "audio/mpeg" and preview.duration_secs > 3
        assert preview.recipe["seed"] == 7 and preview.recipe["description"] == DESCRIPTION


def test_another_seed_gives_other_previews():
    assert _design(seed=8).previews[1].audio != _design(seed=7).previews[1].audio


def test_higher_guidance_stays_closer_to_the_description():
    target = design.describe(DESCRIPTION).pitch_semitones

    def spread(guidance):
        previews = [_design(seed=seed, guidance_scale=guidance).previews for seed in range(4)]
        return np.mean([abs(p.recipe["pitch_semitones"] - target) for ps in previews for p in ps])

    assert spread(100) < spread(0)


def test_a_saved_design_speaks_with_its_recipe():
    preview = _design().previews[0]
    voice = local_engine().voice_design_save(
        base.SaveDesignRequest(
            generated_voice_id=preview.generated_voice_id,
            voice_name="Narrator",
            voice_description=DESCRIPTION,
        )
    )
    assert voice.category == "generated" and voice.recipe["seed"] == 7
    result = local_engine().tts(
        base.TTSRequest(text="Chapter one.", voice_id=voice.voice_id, voice_recipe=voice.recipe)
    )
    assert result.duration_secs > 0.5
    streamed = b"".join(local_engine().voice_design_stream(preview.generated_voice_id))
    assert len(streamed) > 10_000


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"voice_description": "too short"}, "voice_description"),
        ({"voice_description": "x" * 1001}, "voice_description"),
        ({"text": "short text", "auto_generate_text": False}, "text"),
        ({"guidance_scale": 101}, "guidance_scale"),
        ({"loudness": 2}, "loudness"),
        ({"seed": -1}, "seed"),
        ({"output_format": "mp3_1_1"}, "output_format"),
    ],
)
def test_bad_design_inputs_name_the_field(fields, field):
    with pytest.raises(base.InvalidRequest) as exc:
        _design(**fields)
    assert field in exc.value.fields


def test_an_unknown_preview_cannot_be_saved():
    with pytest.raises(base.InvalidRequest, match="generate it again"):
        local_engine().voice_design_save(
            base.SaveDesignRequest(
                generated_voice_id="local-gen-nope", voice_name="x", voice_description="y" * 20
            )
        )


def _speech(voice_id: str, text: str, **recipe) -> bytes:
    result = local_engine().tts(
        base.TTSRequest(
            text=text,
            voice_id=voice_id,
            output_format="wav_16000",
            seed=3,
            voice_recipe=recipe or None,
        )
    )
    return result.audio


def test_a_clone_follows_the_samples_pitch_and_is_labelled_approximate():
    text = "I record this sample so the studio can learn how my voice sounds today."
    low = local_engine().voice_clone(
        base.CloneRequest(name="Low", samples=[("a.wav", _speech("local-joe", text))])
    )
    high = local_engine().voice_clone(
        base.CloneRequest(name="High", samples=[("b.wav", _speech("local-espeak-en-us-f3", text))])
    )
    assert low.recipe["base_voice_id"] == "local-joe"
    assert high.recipe["base_voice_id"] == "local-espeak-en-us-f3"
    assert abs(low.recipe["pitch_semitones"]) < 2.5  # it is Joe: close to Joe's own pitch
    assert high.recipe["measured"]["f0_hz"] > low.recipe["measured"]["f0_hz"] * 1.3
    for voice in (low, high):
        assert voice.category == "cloned"
        assert voice.labels["clone"] == "approximate (local)"
        assert "approximate (local)" in voice.description


def test_a_clone_of_a_raised_voice_measures_the_raise():
    text = "Counting slowly from one to ten, one two three four five six seven eight nine ten."
    plain = design.estimate_f0(audio.decode_to_pcm16k(_speech("local-espeak-en-us", text)))
    raised = design.estimate_f0(
        audio.decode_to_pcm16k(_speech("local-espeak-en-us", text, pitch_semitones=5))
    )
    assert 3.0 < 12 * np.log2(raised / plain) < 7.0


@pytest.mark.parametrize(
    "samples,message",
    [
        ([], "Upload 1 to 25 samples"),
        ([("a.wav", b"")] * 26, "Upload 1 to 25 samples"),
        ([("empty.wav", b"")], "empty"),
        ([("junk.mp3", b"not audio at all" * 50)], "could not be decoded"),
    ],
)
def test_bad_samples_are_refused_with_a_clear_message(samples, message):
    with pytest.raises(base.InvalidRequest, match=message) as exc:
        local_engine().voice_clone(base.CloneRequest(name="X", samples=samples))
    assert exc.value.fields


def test_silence_is_not_a_voice():
    buffer = io.BytesIO(audio.encode(np.zeros(48000, dtype=np.float32), 16000, "wav_16000"))
    with pytest.raises(base.InvalidRequest, match="No voice"):
        local_engine().voice_clone(
            base.CloneRequest(name="Quiet", samples=[("silence.wav", buffer.getvalue())])
        )
