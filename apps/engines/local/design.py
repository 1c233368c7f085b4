"""Local voice design and approximate cloning: recipes over the local voices.

A *recipe* (see ``tts``: base voice, espeak voice, pitch in semitones, rate, variation,
loudness) is all the local engine needs to speak in a designed or cloned voice; the voices
app stores it and hands it back with every request.

Design: the description is read for gender, age, pitch, pace, accent and timbre words
(``describe``). Three previews are made: A follows the description, B and C are neighbours
(another variant of the same kind of voice, pitch and pace moved a little). How far B and C
(and A, a little) stray is set by ``guidance_scale``: at 0 they wander freely, at 100 they stay
on the description. Everything random is drawn from ``default_rng((seed, description,
preview))``, and speech itself is seeded, so the same inputs and seed give identical previews.

Clone: the samples' pitch (autocorrelation F0) and speaking rate (syllable-like energy peaks
per second of speech) are measured and a recipe is built over the nearest local voice. The
result is labelled "approximate (local)": it follows pitch and pace, not timbre.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from apps.engines import base

DESCRIPTION_RANGE = (20, 1000)
TEXT_RANGE = (100, 1000)
MAX_SEED = 2_147_483_647
MAX_SAMPLES = 25
MAX_SAMPLE_SECONDS = 600.0
ANALYSIS_SECONDS = 120
APPROXIMATE_LABEL = "approximate (local)"

_AUTO_TEXTS = (
    "Every great story starts with a voice you can trust. Mine is calm and clear, and it "
    "will carry your listeners from the first line to the very last word.",
    "Welcome back to the studio. Today we are going to walk through the plan step by step, "
    "so grab a coffee, get comfortable, and let's make something worth hearing.",
    "The wind picked up as the sun went down over the harbour, and somewhere beyond the "
    "lighthouse a bell rang out twice, as if to say that the night had only just begun.",
    "Thank you for calling. Your call matters to us, and a member of our team will be with "
    "you shortly. In the meantime, you can find answers to common questions on our website.",
)

# Words → attributes. Order matters only within a group (first match wins).
_GENDER = (
    ("female", r"\b(female|woman|women|girl|lady|feminine|she|her|mother|grandma)\b"),
    ("male", r"\b(male|man|men|boy|guy|gentleman|masculine|he|his|father|grandpa)\b"),
)
_AGE = (
    ("child", r"\b(child|kid|little|toddler)\b"),
    ("old", r"\b(old|elderly|aged|senior|grandpa|grandma|ancient|wise)\b"),
    ("young", r"\b(young|teen|teenage|youthful|student)\b"),
    ("middle_aged", r"\b(middle[- ]aged|mature|adult)\b"),
)
_PITCH = (
    (-4.0, r"\b(very deep|booming|bass)\b"),
    (-2.5, r"\b(deep|low|low-pitched|baritone|husky)\b"),
    (4.0, r"\b(squeaky|very high|shrill)\b"),
    (2.5, r"\b(high|high-pitched|bright|light|soprano)\b"),
)
_PACE = (
    (0.82, r"\b(very slow|slowly|slow|measured|deliberate|calm|relaxed)\b"),
    (1.18, r"\b(very fast|rapid|fast|quick|energetic|excited|hurried)\b"),
)
_ACCENT = (
    ("scottish", "en-gb-scotland", r"\bscottish\b"),
    ("caribbean", "en-029", r"\b(caribbean|jamaican)\b"),
    ("british", "en-gb-x-rp", r"\b(british|english accent|london|uk|received pronunciation)\b"),
    ("american", "en-us", r"\b(american|us accent|new york)\b"),
    ("german", "de", r"\bgerman\b"),
    ("french", "fr", r"\bfrench\b"),
    ("spanish", "es", r"\bspanish\b"),
    ("italian", "it", r"\bitalian\b"),
    ("brazilian", "pt-br", r"\b(brazilian|portuguese)\b"),
)
_TIMBRE = (
    ("whisper", r"\b(whisper|whispering|breathy|hushed|asmr)\b"),
    ("croak", r"\b(raspy|gravelly|croaky|hoarse|rough)\b"),
)
_LOUD = ((-4.0, r"\b(soft|quiet|gentle)\b"), (3.0, r"\b(loud|powerful|strong|booming)\b"))

# Variants of espeak voices by gender (preview neighbours).
_FEMALE_VARIANTS = ("f3", "f2", "f4", "f1", "f5")
_MALE_VARIANTS = ("m3", "m7", "m2", "m1", "m4")


@dataclass
class Description:
    """What a description asks for (absent attributes stay None)."""

    gender: str | None = None
    age: str | None = None
    pitch_semitones: float = 0.0
    rate: float = 1.0
    accent: str | None = None
    espeak_language: str | None = None
    timbre: str | None = None
    loudness_db: float = 0.0
    matched: list[str] = field(default_factory=list)


def _first(text: str, table):
    for *values, pattern in table:
        match = re.search(pattern, text)
        if match:
            return values, match.group(0)
    return None, None


def describe(description: str) -> Description:
    """Read a free-text description into the attributes a recipe can honour."""
    text = description.lower()
    found = Description()
    for attr, table in (("gender", _GENDER), ("age", _AGE), ("timbre", _TIMBRE)):
        values, word = _first(text, table)
        if values:
            setattr(found, attr, values[0])
            found.matched.append(word)
    for attr, table in (("pitch_semitones", _PITCH), ("rate", _PACE), ("loudness_db", _LOUD)):
        values, word = _first(text, table)
        if values:
            setattr(found, attr, float(values[0]))
            found.matched.append(word)
    values, word = _first(text, _ACCENT)
    if values:
        found.accent, found.espeak_language = values
        found.matched.append(word)
    # Age moves pitch and pace a little when the description did not say so itself.
    if found.age == "child":
        found.pitch_semitones = found.pitch_semitones or 5.0
    elif found.age == "old":
        found.rate = found.rate if found.rate != 1.0 else 0.9
        found.pitch_semitones = found.pitch_semitones or -1.0
    return found


def _validate_design(request: base.DesignRequest) -> str:
    desc = (request.voice_description or "").strip()
    low, high = DESCRIPTION_RANGE
    if not low <= len(desc) <= high:
        raise base.InvalidRequest.for_field(
            "voice_description",
            f"The voice description must be {low} to {high} characters long (it has {len(desc)}).",
        )
    if request.text is not None and not request.auto_generate_text:
        tlow, thigh = TEXT_RANGE
        if not tlow <= len(request.text.strip()) <= thigh:
            raise base.InvalidRequest.for_field(
                "text",
                f"The preview text must be {tlow} to {thigh} characters long "
                f"(it has {len(request.text.strip())}), or use auto_generate_text.",
            )
    if not 0 <= request.guidance_scale <= 100:
        raise base.InvalidRequest.for_field("guidance_scale", "guidance_scale must be 0..100.")
    if not -1 <= request.loudness <= 1:
        raise base.InvalidRequest.for_field("loudness", "loudness must be between -1 and 1.")
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise base.InvalidRequest.for_field("seed", f"seed must be 0..{MAX_SEED}.")
    base.OutputFormat.parse(request.output_format)
    return desc


def _variants(gender: str | None) -> tuple[str, ...]:
    if gender == "female":
        return _FEMALE_VARIANTS
    if gender == "male":
        return _MALE_VARIANTS
    return ("m3", "f3", "m7")


def _recipe_for(found: Description, index: int, rng, stray: float, loudness: float) -> dict:
    """Preview ``index`` (0 = A, the closest) for a description."""
    variants = _variants(found.gender)
    language = found.espeak_language or "en-us"
    english_plain = language in {"en-us"} and found.timbre is None
    recipe: dict[str, Any]
    if index == 0 and english_plain and found.gender in (None, "male") and found.age != "child":
        recipe = {"base_voice_id": "local-joe"}  # the natural neural voice when it fits
    else:
        variant = variants[index % len(variants)] if index else variants[0]
        suffix = found.timbre or variant
        recipe = {"base_voice_id": "local-espeak-en-us", "espeak_voice": f"{language}+{suffix}"}
    jitter = rng.normal(0.0, 1.0, size=3) * stray
    pitch = found.pitch_semitones + jitter[0] * (1.5 if index else 0.5)
    rate = found.rate * float(np.exp(jitter[1] * (0.08 if index else 0.03)))
    recipe.update(
        pitch_semitones=round(float(np.clip(pitch, -9.0, 9.0)), 2),
        rate=round(float(np.clip(rate, 0.6, 1.6)), 3),
        variation=round(float(np.clip(1.0 + jitter[2] * 0.3, 0.2, 2.0)), 3),
        loudness_db=round(float(np.clip(found.loudness_db + (loudness - 0.5) * 12, -20, 6)), 2),
        language=language.split("-")[0],
    )
    return recipe


def _generated_id(recipe: dict, text: str, seed: int) -> str:
    blob = repr((sorted(recipe.items()), text, seed)).encode()
    return "local-gen-" + hashlib.sha256(blob).hexdigest()[:20]


# Recently generated previews, so the preview stream endpoint can replay them by id.
_previews: OrderedDict[str, tuple[dict, str, int]] = OrderedDict()
_previews_lock = threading.Lock()
_PREVIEW_MEMORY = 512


def _remember(generated_id: str, recipe: dict, text: str, seed: int) -> None:
    with _previews_lock:
        _previews[generated_id] = (recipe, text, seed)
        _previews.move_to_end(generated_id)
        while len(_previews) > _PREVIEW_MEMORY:
            _previews.popitem(last=False)


def design(request: base.DesignRequest) -> base.DesignResult:
    """Three previews (A, B, C) for a description; identical for the same inputs and seed."""
    from . import tts

    desc = _validate_design(request)
    seed = (
        request.seed
        if request.seed is not None
        else int(np.random.default_rng().integers(MAX_SEED))
    )
    digest = int(hashlib.sha256(desc.encode()).hexdigest()[:8], 16)
    if request.text and not request.auto_generate_text:
        text = request.text.strip()
    else:
        text = _AUTO_TEXTS[(seed + digest) % len(_AUTO_TEXTS)]
    found = describe(desc)
    stray = 1.0 / (1.0 + request.guidance_scale / 5.0)  # 0 → 1, 5 → 0.5, 100 → ~0.05
    previews = []
    for index in range(3):
        rng = np.random.default_rng((seed, digest, index))
        recipe = _recipe_for(found, index, rng, stray, request.loudness)
        result = tts.synthesize(
            base.TTSRequest(
                text=text,
                voice_id=recipe["base_voice_id"],
                output_format=request.output_format,
                seed=seed,
                voice_recipe=recipe,
            )
        )
        generated_id = _generated_id(recipe, text, seed)
        _remember(generated_id, recipe, text, seed)
        previews.append(
            base.DesignPreview(
                generated_voice_id=generated_id,
                audio=result.audio,
                media_type=result.content_type,
                duration_secs=result.duration_secs or 0.0,
                language=recipe["language"],
                recipe={**recipe, "seed": seed, "description": desc, "text": text},
            )
        )
    info = base.CallInfo(
        request_id=uuid.uuid4().hex, character_cost=0.0, engine="local", model_id=request.model_id
    )
    return base.DesignResult(previews=previews, text=text, info=info)


def preview_recipe(generated_voice_id: str, recipe: dict | None = None) -> tuple[dict, str, int]:
    """The recipe, text and seed of a preview made in this process (or given by the caller)."""
    if recipe:
        seed = recipe.get("seed") or 0
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise base.InvalidRequest.for_field("recipe", "The recipe's seed is not valid.")
        return recipe, recipe.get("text") or _AUTO_TEXTS[0], seed
    with _previews_lock:
        found = _previews.get(generated_voice_id)
    if found is None:
        raise base.InvalidRequest.for_field(
            "generated_voice_id",
            f"No preview '{generated_voice_id}' is known to the local engine; generate it again.",
        )
    return found


def stream_preview(generated_voice_id: str, *, recipe: dict | None = None):
    """The preview's audio as an mp3 stream (what ``/text-to-voice/{id}/stream`` serves).

    Validation happens here, before anything is streamed; the chunks come from the iterator.
    """
    from . import tts

    found_recipe, text, seed = preview_recipe(generated_voice_id, recipe)
    stream = tts.synthesize_stream(
        base.TTSRequest(
            text=text,
            voice_id=found_recipe.get("base_voice_id", "local-joe"),
            seed=seed,
            voice_recipe=found_recipe,
        )
    )
    return (chunk.audio for chunk in stream)


def save(request: base.SaveDesignRequest) -> base.Voice:
    """The saved voice: its id is stable for the preview; the recipe travels with it."""
    recipe, _text, seed = preview_recipe(request.generated_voice_id, request.recipe)
    name = (request.voice_name or "").strip()
    if not name:
        raise base.InvalidRequest.for_field("voice_name", "A voice needs a name.")
    if len(name) > 100:
        raise base.InvalidRequest.for_field("voice_name", "Keep the name under 100 characters.")
    return base.Voice(
        voice_id="local-designed-" + request.generated_voice_id.removeprefix("local-gen-"),
        name=name,
        category="generated",
        labels=dict(request.labels),
        description=request.voice_description,
        engine="local",
        recipe={**recipe, "seed": seed},
    )


# --- Approximate cloning ----------------------------------------------------------------


def estimate_f0(samples: np.ndarray, rate: int = 16000) -> float | None:
    """Median fundamental frequency (Hz) of voiced 40 ms frames, by autocorrelation."""
    frame, hop = int(0.04 * rate), int(0.02 * rate)
    lo, hi = int(rate / 400), int(rate / 60)  # 60..400 Hz
    if len(samples) < frame:
        return None
    idx = np.arange(0, len(samples) - frame, hop)
    frames = np.stack([samples[i : i + frame] for i in idx]) * np.hanning(frame)
    energy = np.sqrt((frames**2).mean(axis=1))
    voiced = frames[energy > max(1e-4, np.percentile(energy, 60) * 0.5)]
    if not len(voiced):
        return None
    spectrum = np.fft.rfft(voiced, n=2 * frame, axis=1)
    ac = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frame]
    ac /= np.maximum(ac[:, :1], 1e-12)
    lags = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(len(ac)), lags]
    good = lags[strength > 0.3]
    if not len(good):
        return None
    return float(rate / np.median(good))


def estimate_syllable_rate(samples: np.ndarray, rate: int = 16000) -> float | None:
    """Syllable-like energy peaks per second of speech (about 4–6 for ordinary talk)."""
    hop = int(0.01 * rate)
    n = len(samples) // hop
    if n < 20:
        return None
    env = np.sqrt((samples[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
    env = np.convolve(env, np.hanning(9) / np.hanning(9).sum(), mode="same")
    threshold = max(1e-4, np.percentile(env, 50))
    speech = env > threshold * 0.5
    if speech.sum() < 20:
        return None
    peaks = (env[1:-1] > env[:-2]) & (env[1:-1] >= env[2:]) & (env[1:-1] > threshold)
    # Peaks closer than 100 ms belong to one syllable.
    positions = np.flatnonzero(peaks)
    kept = [p for i, p in enumerate(positions) if i == 0 or p - positions[i - 1] >= 10]
    return len(kept) / (speech.sum() * 0.01)


_reference: dict[str, tuple[float | None, float | None]] = {}
_reference_lock = threading.Lock()
_REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog while the band plays on."


def _reference_voice(voice_id: str, espeak_voice: str | None = None) -> tuple[float, float]:
    """F0 and syllable rate of a base voice, measured once per process."""
    from apps.engines import audio

    from . import tts

    key = f"{voice_id}|{espeak_voice}"
    with _reference_lock:
        if key not in _reference:
            recipe = {"base_voice_id": voice_id}
            if espeak_voice:
                recipe["espeak_voice"] = espeak_voice
            result = tts.synthesize(
                base.TTSRequest(
                    text=_REFERENCE_TEXT,
                    voice_id=voice_id,
                    output_format="wav_16000",
                    seed=0,
                    voice_recipe=recipe,
                )
            )
            samples = audio.decode_to_pcm16k(result.audio, filename="reference.wav")
            _reference[key] = (estimate_f0(samples), estimate_syllable_rate(samples))
        f0, syl = _reference[key]
    return f0 or 120.0, syl or 4.5


def clone(request: base.CloneRequest) -> base.Voice:
    """A recipe over the nearest local voice, from the samples' pitch and pace."""
    from apps.engines import audio

    name = (request.name or "").strip()
    if not name:
        raise base.InvalidRequest.for_field("name", "A cloned voice needs a name.")
    if not 1 <= len(request.samples) <= MAX_SAMPLES:
        raise base.InvalidRequest.for_field(
            "files", f"Upload 1 to {MAX_SAMPLES} samples (got {len(request.samples)})."
        )
    # Two minutes are plenty to measure pitch and pace: each sample is opened (its stated
    # length checked), but decoded, a window at a time, only until two minutes are gathered.
    wanted = ANALYSIS_SECONDS * 16000
    decoded: list[np.ndarray] = []
    held = 0
    for filename, data in request.samples:
        with (
            audio.Pcm16kReader(data, filename=filename, max_seconds=MAX_SAMPLE_SECONDS) as reader,
            contextlib.closing(reader.windows()) as windows,
        ):
            for window in windows:
                if held >= wanted:
                    break
                decoded.append(window[: wanted - held])
                held += len(decoded[-1])
    samples = np.concatenate(decoded) if decoded else np.zeros(0, dtype=np.float32)
    if len(samples) < 16000:
        raise base.InvalidRequest.for_field(
            "files", "The samples hold less than a second of audio; upload at least a few seconds."
        )
    f0 = estimate_f0(samples)
    syllables = estimate_syllable_rate(samples)
    if f0 is None:
        raise base.InvalidRequest.for_field(
            "files", "No voice could be heard in the samples (no pitched speech found)."
        )
    female = f0 >= 165.0
    if female:
        voice_id, espeak_voice = "local-espeak-en-us-f3", "en-us+f3"
    else:
        voice_id, espeak_voice = "local-joe", None
    ref_f0, ref_syl = _reference_voice(voice_id, espeak_voice)
    pitch = float(np.clip(12 * np.log2(f0 / ref_f0), -9, 9))
    pace = float(np.clip((syllables or ref_syl) / ref_syl, 0.6, 1.6))
    recipe = {
        "base_voice_id": voice_id,
        "pitch_semitones": round(pitch, 2),
        "rate": round(pace, 3),
        "variation": 1.0,
        "loudness_db": 0.0,
        "language": "en",
        "measured": {"f0_hz": round(f0, 1), "syllables_per_second": round(syllables or 0, 2)},
        "approximate": True,
    }
    if espeak_voice:
        recipe["espeak_voice"] = espeak_voice
    digest = hashlib.sha256(repr(sorted(recipe.items())).encode() + name.encode()).hexdigest()
    labels = {**request.labels, "clone": APPROXIMATE_LABEL}
    return base.Voice(
        voice_id="local-clone-" + digest[:20],
        name=name,
        category="cloned",
        labels=labels,
        description=(request.description or "") + f" [{APPROXIMATE_LABEL}]",
        engine="local",
        recipe=recipe,
    )
