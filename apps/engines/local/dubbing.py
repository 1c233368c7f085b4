"""Local dubbing: transcribe with speakers, then re-voice each segment with a local voice.

The local engine cannot translate: the target language must be the source language
(English, with Whisper tiny.en), which makes a *re-voicing* — the same words, timing and
speakers, spoken by local voices. Each speaker gets a voice near their measured pitch; each
segment is spoken, its rate adjusted to fit the segment's duration, and placed at the
segment's start. The original background is not kept (no source separation offline).

Dubs are kept in this process (``_store``) so status, audio and transcript can be fetched
by id; the apps that run dubbing as jobs store the results themselves.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from apps.engines import base

MAX_SECONDS = 3600.0
_SEGMENT_GAP = 0.6  # seconds of pause that split a speaker's words into two segments
_FEMALE_VOICES = ("local-espeak-en-us-f3", "local-espeak-en-gb-f3")
_MALE_VOICES = ("local-joe", "local-espeak-en-us", "local-espeak-en-us-croak")


@dataclass
class Segment:
    start: float
    end: float
    speaker_id: str
    text: str


@dataclass
class Dub:
    status: base.DubbingStatus
    audio: bytes
    segments: list[Segment]
    voices: dict[str, str]


_store: OrderedDict[str, Dub] = OrderedDict()
_lock = threading.Lock()
_KEEP = 8  # dubs kept in memory per process; the apps store results durably


def _language(code: str | None) -> str | None:
    if not code or code.lower() == "auto":
        return None
    return code.lower().split("-")[0]


def segments_from_words(words: list[base.Word]) -> list[Segment]:
    """Group consecutive words of one speaker into segments, split at long pauses."""
    segments: list[Segment] = []
    for word in words:
        if word.type != "word" or word.start is None or word.end is None:
            continue
        speaker = word.speaker_id or "speaker_0"
        last = segments[-1] if segments else None
        if last and last.speaker_id == speaker and word.start - last.end < _SEGMENT_GAP:
            last.end = word.end
            last.text = f"{last.text} {word.text.strip()}"
        else:
            segments.append(Segment(word.start, word.end, speaker, word.text.strip()))
    return segments


def _voices_for(samples: np.ndarray, segments: list[Segment]) -> dict[str, str]:
    """A local voice per speaker, female or male by the speaker's median pitch."""
    from .design import estimate_f0

    voices: dict[str, str] = {}
    female = male = 0
    for speaker in dict.fromkeys(s.speaker_id for s in segments):
        spans = [
            samples[int(s.start * 16000) : int(s.end * 16000)]
            for s in segments
            if s.speaker_id == speaker
        ]
        f0 = estimate_f0(np.concatenate(spans)) if spans else None
        if f0 is not None and f0 >= 165.0:
            voices[speaker] = _FEMALE_VOICES[female % len(_FEMALE_VOICES)]
            female += 1
        else:
            voices[speaker] = _MALE_VOICES[male % len(_MALE_VOICES)]
            male += 1
    return voices


def _fit(samples: np.ndarray, length: int) -> np.ndarray:
    """Exactly ``length`` samples: pad with silence or trim with a short fade."""
    if len(samples) >= length:
        out = samples[:length].copy()
        fade = min(len(out), 220)
        if fade:
            out[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        return out
    return np.concatenate([samples, np.zeros(length - len(samples), np.float32)])


def _speak(text: str, voice_id: str, seconds: float, seed: int) -> tuple[np.ndarray, int]:
    """The segment spoken, its rate fitted to ``seconds`` (within the engine's 0.5–2×)."""
    from . import tts

    first = tts.synthesize_samples(base.TTSRequest(text=text, voice_id=voice_id, seed=seed))
    natural = len(first.samples) / first.sample_rate
    ratio = natural / max(seconds, 0.05)
    if 0.95 <= ratio <= 1.05:
        return first.samples, first.sample_rate
    rate = float(np.clip(ratio, 0.5, 2.0))
    fitted = tts.synthesize_samples(
        base.TTSRequest(text=text, voice_id=voice_id, seed=seed, voice_recipe={"rate": rate})
    )
    return fitted.samples, fitted.sample_rate


def dub(request: base.DubbingRequest) -> Dub:
    """Re-voice the request's audio (see the module docstring) and keep it by id."""
    from apps.engines import audio

    from . import stt

    source = _language(request.source_lang)
    target = _language(request.target_lang)
    if not target:
        raise base.InvalidRequest.for_field("target_lang", "Choose the language to dub into.")
    kind, language = stt.choose_model(source)  # NotSupported for what it cannot hear
    spoken = source or language or "en"
    if target != spoken:
        raise base.NotSupported(
            f"The local engine cannot translate: it can re-voice {spoken} → {spoken} only, "
            f"not into {request.target_lang!r}. Use the ElevenLabs engine to dub into "
            "another language."
        )
    if request.num_speakers and not 0 <= request.num_speakers <= 32:
        raise base.InvalidRequest.for_field("num_speakers", "num_speakers must be 0..32.")
    samples = audio.decode_to_pcm16k(
        request.audio, filename=request.filename, max_seconds=MAX_SECONDS
    )
    transcript = stt.transcribe(
        base.STTRequest(
            audio=audio.pcm16k_bytes(samples),
            filename="dub.pcm",
            file_format="pcm_s16le_16",
            language_code=spoken,
            diarize=True,
            num_speakers=request.num_speakers or None,
            tag_audio_events=False,
        )
    )
    segments = segments_from_words(transcript.words)
    if not segments:
        raise base.InvalidRequest.for_field(
            "file", "No speech was found in the file: there is nothing to dub."
        )
    voices = _voices_for(samples, segments)
    out_rate = 22050
    timeline = np.zeros(int(len(samples) / 16000 * out_rate) + 1, np.float32)
    for index, segment in enumerate(segments):
        spoken_samples, rate = _speak(
            segment.text, voices[segment.speaker_id], segment.end - segment.start, seed=index
        )
        if rate != out_rate:
            raise RuntimeError(f"unexpected TTS sample rate {rate}")
        start = int(segment.start * out_rate)
        length = min(int((segment.end - segment.start) * out_rate), len(timeline) - start)
        if length > 0:
            timeline[start : start + length] += _fit(spoken_samples, length)
    np.clip(timeline, -1.0, 1.0, out=timeline)
    encoded = audio.encode(timeline, out_rate, "mp3_44100_128")
    dubbing_id = "local-dub-" + uuid.uuid4().hex[:20]
    status = base.DubbingStatus(
        dubbing_id=dubbing_id,
        name=request.name or request.filename or "Dub",
        status="dubbed",
        target_languages=[target],
        source_language=spoken,
        expected_duration_sec=0.0,
        info=base.CallInfo(request_id=uuid.uuid4().hex, character_cost=0.0, engine="local"),
    )
    result = Dub(status=status, audio=encoded, segments=segments, voices=voices)
    with _lock:
        _store[dubbing_id] = result
        while len(_store) > _KEEP:
            _store.popitem(last=False)
    return result


def get(dubbing_id: str) -> Dub:
    with _lock:
        found = _store.get(dubbing_id)
    if found is None:
        raise base.InvalidRequest.for_field(
            "dubbing_id", f"Dubbing '{dubbing_id}' is not known to the local engine."
        )
    return found


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def transcript(dubbing_id: str, language_code: str, fmt: str = "srt") -> str:
    """The dub's segments as SRT or WebVTT, with speakers."""
    found = get(dubbing_id)
    if _language(language_code) not in found.status.target_languages:
        raise base.InvalidRequest.for_field(
            "language_code", f"This dub has no {language_code!r} track."
        )
    if fmt not in ("srt", "webvtt"):
        raise base.InvalidRequest.for_field("format_type", "format_type is srt or webvtt.")
    sep = "," if fmt == "srt" else "."
    lines = [] if fmt == "srt" else ["WEBVTT", ""]
    for index, seg in enumerate(found.segments, start=1):
        if fmt == "srt":
            lines.append(str(index))
        lines.append(f"{_stamp(seg.start, sep)} --> {_stamp(seg.end, sep)}")
        lines.append(f"[{seg.speaker_id}] {seg.text}")
        lines.append("")
    return "\n".join(lines)
