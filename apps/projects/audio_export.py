"""The audio of a project export: chapters assembled from chosen takes and cues, loudness
measured (ITU-R BS.1770-4) and normalised, checked against a profile's rules, and written as
one MP3 (ID3v2.4 chapter frames), WAV or M4B (AAC with chapter markers), or a ZIP of chapters.

A library: no Django, no database. It works a chapter at a time, so a long project never sits
whole in memory: ``chapter_assemble`` decodes one chapter's takes (kept as 16-bit while they
wait, then one float32 array), ``normalised`` and ``compliance`` take that array, and the
writers encode each chapter as it comes and drop it. Decoding goes through the engines' audio
helpers (PyAV, never a system ``ffmpeg``).

Every mistake in what is handed over (an undecodable take, a cue at a block that is not in
the chapter, an unknown format) raises ``ExportAudioError`` with a message people can act on.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

from apps.engines import audio
from apps.engines.base import OUTPUT_FORMATS, InvalidRequest

SAMPLE_RATE = 44_100
# A take longer than this is refused (a block's take is minutes long at most)...
MAX_PIECE_SECONDS = 3600.0
# ...and so is a chapter: 3 h of float32 mono at 44.1 kHz is 1.9 GB.
MAX_CHAPTER_SECONDS = 3 * 3600.0
# An "under" cue cut off at the chapter's end fades out over this long, not with a click.
CUT_FADE_SECONDS = 0.05
# Levels below this (digital silence) are reported as this, so every figure is a finite number.
SILENCE_DB = -120.0
# The limiter aims this far under a profile's peak ceiling: MP3 and AAC encoding add a little.
LIMITER_MARGIN_DB = 0.5
LIMITER_ATTACK_S = 0.005  # time to pull the gain from 1 to 0 (a lookahead ramp)
LIMITER_RELEASE_S = 0.1  # time to let it back from 0 to 1
AUDIOBOOK_RMS_DB = -20.0  # where the audiobook profile puts the RMS (ACX asks -23..-18)
NOISE_WINDOW_S = 0.5  # the noise floor is the RMS of the quietest window this long
MP3_BITRATE_KBPS = 192  # ACX: 192 kbps CBR MP3 at 44.1 kHz
AAC_BITRATE_KBPS = 96
FORMATS = ("mp3", "wav", "m4b")
TAG_NAMES = ("title", "author", "album", "language", "comment")
_RAW_CODECS = {"pcm": "pcm_s16le", "ulaw": "pcm_mulaw", "alaw": "pcm_alaw"}
_ENCODE_CHUNK = SAMPLE_RATE * 10
_WAV_MAX_DATA = 0xFFFFFFFF - 36


class ExportAudioError(ValueError):
    """What is wrong with the audio handed to an export; ``message`` is safe to show."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# --- Inputs and outputs -----------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One chosen take of a block.

    ``audio`` is the stored file (bytes or a path) in any format FFmpeg reads (MP3, WAV, Ogg
    Opus...). Raw audio states no rate, so raw takes need ``output_format`` (the history
    row's ``recipe["output_format"]``, e.g. ``"pcm_22050"``); containers need none. Pieces of
    one long block split in parts share its ``key`` and must follow each other.
    """

    key: str
    audio: audio.AudioSource
    pause_after_ms: int = 300
    output_format: str = ""


@dataclass(frozen=True)
class CuePlacement:
    """A sound or music cue at a block: ``"after"`` it (inserted, later blocks move on) or
    ``"under"`` it (mixed in from the block's start; nothing moves, and what runs past the
    chapter's end is cut with a short fade). ``volume_db`` is the gain applied to the cue."""

    key: str
    audio: audio.AudioSource
    block_key: str
    mode: str
    volume_db: float = 0.0
    output_format: str = ""


@dataclass(frozen=True)
class TimelineEntry:
    kind: str  # "block" | "cue"
    key: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Profile:
    name: str
    target_lufs: float | None
    rms_range_db: tuple[float, float] | None
    peak_max_db: float
    noise_floor_max_db: float | None
    max_duration_s: float | None = None


PROFILES = {
    "lufs16": Profile("−16 LUFS", -16.0, None, -1.0, None),
    # ACX: RMS -23..-18 dB, peaks at most -3 dB, noise floor at most -60 dB, files up to 120 min.
    "audiobook": Profile("Audiobook (ACX)", None, (-23.0, -18.0), -3.0, -60.0, 120 * 60.0),
}


@dataclass(frozen=True)
class ChapterAudio:
    """One chapter of an export: its title and its mono float32 samples at ``SAMPLE_RATE``.

    ``samples`` is an array, or a function that returns one: the writers call it when they
    reach the chapter (once) and drop the array after encoding it, so with functions (or a
    generator of chapters) only one chapter is in memory at a time.
    """

    title: str
    samples: np.ndarray | Callable[[], np.ndarray]

    def load(self) -> np.ndarray:
        samples = self.samples() if callable(self.samples) else self.samples
        array = np.asarray(samples, dtype=np.float32)
        if array.ndim != 1:
            raise ExportAudioError(
                f"Chapter {self.title!r}: expected mono samples (a 1-D array), "
                f"got shape {array.shape}."
            )
        return array


# --- Decoding ---------------------------------------------------------------------------


def decode_mono(
    source: audio.AudioSource, *, output_format: str = "", max_seconds: float = MAX_PIECE_SECONDS
) -> np.ndarray:
    """Any stored take or cue as mono float32 samples at ``SAMPLE_RATE``."""
    return audio.samples_from_pcm16(_decoded_pcm16(source, output_format, max_seconds).tobytes())


def _decoded_pcm16(source, output_format: str, max_seconds: float) -> np.ndarray:
    """Mono int16 samples at ``SAMPLE_RATE`` (half the memory of float32 while they wait)."""
    ceiling = int((max_seconds + audio.DURATION_TOLERANCE_SECONDS) * SAMPLE_RATE)
    parts: list[np.ndarray] = []
    decoded = 0
    for part in _pcm16_parts(source, output_format):
        decoded += part.size
        if decoded > ceiling:
            raise InvalidRequest.for_field(
                "file", f"The audio is longer than the {audio.format_duration(max_seconds)} limit."
            )
        parts.append(part)
    if not decoded:
        raise InvalidRequest.for_field("file", "No sound could be decoded from the audio.")
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _pcm16_parts(source, output_format: str) -> Iterator[np.ndarray]:
    codec = output_format.split("_")[0] if output_format else ""
    if output_format and output_format not in OUTPUT_FORMATS:
        raise InvalidRequest.for_field("file", f"Unknown audio format {output_format!r}.")
    if codec in _RAW_CODECS:
        rate = int(output_format.split("_")[1])
        yield from _raw_parts(source, _RAW_CODECS[codec], rate)
        return
    # A container says what it holds: the engines' reader opens it (demuxers allowed for
    # uploads only, bad packets skipped) and frames are resampled here to 44.1 kHz.
    with audio._open_input(source, "") as opened:
        stream = audio._audio_stream(opened.container, "")
        frames = audio._decoded_frames(opened.container, stream, "")
        yield from _resampled(frames)


def _raw_parts(source, codec_name: str, rate: int) -> Iterator[np.ndarray]:
    codec = av.CodecContext.create(codec_name, "r")
    codec.sample_rate = rate
    codec.layout = "mono"

    def frames():
        with audio._binary(source) as (handle, _size):
            pending = b""
            while data := handle.read(1 << 20):
                data = pending + data
                usable = len(data) - len(data) % (2 if codec_name == "pcm_s16le" else 1)
                data, pending = data[:usable], data[usable:]
                yield from codec.decode(av.Packet(data))
            if pending:
                raise InvalidRequest.for_field(
                    "file", "16-bit PCM audio must have an even number of bytes (2 per sample)."
                )

    yield from _resampled(frames())


def _resampled(frames: Iterable[av.AudioFrame]) -> Iterator[np.ndarray]:
    resampler = None
    shape = None
    for frame in frames:
        frame_shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if frame_shape != shape:  # a stream may change rate or layout midway
            if resampler is not None:
                yield from _arrays(resampler.resample(None))
            # s16 output makes swresample normalise its downmix (stereo: the mean, no clip).
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            shape = frame_shape
        frame.pts = None
        yield from _arrays(resampler.resample(frame))
    if resampler is not None:
        yield from _arrays(resampler.resample(None))


def _arrays(frames) -> Iterator[np.ndarray]:
    for out in frames or ():
        if out is not None and out.samples:
            yield out.to_ndarray().reshape(-1)


def _decoded(what: str, source, output_format: str, max_seconds: float) -> np.ndarray:
    try:
        return _decoded_pcm16(source, output_format, max_seconds)
    except InvalidRequest as exc:
        raise ExportAudioError(f"{what}: {exc.message}") from None
    except (av.FFmpegError, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise ExportAudioError(f"{what}: the audio could not be decoded ({exc}).") from None


# --- Assembly ---------------------------------------------------------------------------


def chapter_assemble(
    pieces: Sequence[Piece], cues: Sequence[CuePlacement] = ()
) -> tuple[np.ndarray, list[TimelineEntry]]:
    """One chapter's takes back to back, with its cues; mono float32 at ``SAMPLE_RATE``.

    Every take is followed by its ``pause_after_ms`` of silence (the last one too, so the
    chapters of a file are apart). The parts of a block (pieces sharing its key, one after
    another) make one ``"block"`` entry from the start of the first to the end of the last.
    An ``"after"`` cue starts where its block's pause ends and is followed by the same pause;
    several follow each other in the order given. An ``"under"`` cue starts with its block.
    The timeline lists blocks and cues in the order they start; times are exact to a sample.
    """
    if not pieces:
        raise ExportAudioError("A chapter needs at least one take.")
    runs: list[list[Piece]] = []
    for piece in pieces:
        if piece.pause_after_ms < 0:
            raise ExportAudioError(f"Block {piece.key}: the pause after it cannot be negative.")
        if runs and runs[-1][0].key == piece.key:
            runs[-1].append(piece)
        elif any(run[0].key == piece.key for run in runs):
            raise ExportAudioError(
                f"Block {piece.key} appears twice in the chapter; its parts must follow each other."
            )
        else:
            runs.append([piece])
    keys = {run[0].key for run in runs}
    for cue in cues:
        if cue.mode not in ("after", "under"):
            raise ExportAudioError(f"Cue {cue.key}: mode must be 'after' or 'under'.")
        if cue.block_key not in keys:
            raise ExportAudioError(
                f"Cue {cue.key} is placed at block {cue.block_key}, which is not in this chapter."
            )

    limit = MAX_CHAPTER_SECONDS
    decoded = [
        _decoded(f"The take of block {piece.key}", piece.audio, piece.output_format, limit)
        for piece in pieces
    ]
    cue_audio = [_decoded(f"Cue {cue.key}", cue.audio, cue.output_format, limit) for cue in cues]

    placed: list[tuple[int, np.ndarray, float]] = []  # (start, int16 samples, gain)
    entries: list[tuple[int, int, str, str]] = []  # (start, end, kind, key) in samples
    under: list[tuple[int, np.ndarray, float, str]] = []
    cursor = 0
    index = 0
    for run in runs:
        block_start = cursor
        for position, piece in enumerate(run):
            samples = decoded[index]
            decoded[index] = None  # held once, by ``placed``
            index += 1
            placed.append((cursor, samples, 1.0))
            cursor += samples.size
            block_end = cursor
            if position < len(run) - 1:
                cursor += _samples_of_ms(piece.pause_after_ms)
        pause = _samples_of_ms(run[-1].pause_after_ms)
        cursor += pause
        block_key = run[0].key
        entries.append((block_start, block_end, "block", block_key))
        for cue, samples in zip(cues, cue_audio, strict=True):
            if cue.block_key != block_key:
                continue
            gain = _gain(cue.volume_db)
            if cue.mode == "under":
                under.append((block_start, samples, gain, cue.key))
                continue
            placed.append((cursor, samples, gain))
            entries.append((cursor, cursor + samples.size, "cue", cue.key))
            cursor += samples.size + pause
        if cursor > MAX_CHAPTER_SECONDS * SAMPLE_RATE:
            raise ExportAudioError(
                f"The chapter is longer than {audio.format_duration(MAX_CHAPTER_SECONDS)}; "
                "split it in shorter chapters."
            )
    cue_audio.clear()

    total = cursor
    out = np.zeros(total, dtype=np.float32)
    while placed:
        start, samples, gain = placed.pop(0)
        out[start : start + samples.size] += _floats(samples, gain)
    for start, samples, gain, key in under:
        length = min(samples.size, total - start)
        mix = _floats(samples[:length], gain)
        if length < samples.size:
            fade = min(length, int(CUT_FADE_SECONDS * SAMPLE_RATE))
            if fade:
                mix[length - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        out[start : start + length] += mix
        entries.append((start, start + length, "cue", key))
    entries.sort(key=lambda entry: (entry[0], entry[2] != "block"))
    timeline = [
        TimelineEntry(kind, key, start / SAMPLE_RATE, end / SAMPLE_RATE)
        for start, end, kind, key in entries
    ]
    return out, timeline


def _samples_of_ms(ms: int) -> int:
    return round(ms * SAMPLE_RATE / 1000)


def _gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def _floats(pcm16: np.ndarray, gain: float) -> np.ndarray:
    return pcm16.astype(np.float32) * np.float32(gain / 32768.0)


# --- Loudness (ITU-R BS.1770-4) ---------------------------------------------------------

# The K-weighting filter's two stages as analog prototypes (the standard gives only their
# 48 kHz biquads; these parameters reproduce them and give the biquads at any rate through
# the bilinear transform): a high shelf of about +4 dB and the RLB high-pass.
_SHELF_GAIN_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_SHELF_FC = 1681.974450955533
_HIGHPASS_Q = 0.5003270373253953
_HIGHPASS_FC = 38.13547087613982
_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0
_FILTER_BLOCK = 4096


def k_weighting(sample_rate: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The two K-weighting biquads ``((b, a), (b, a))`` at ``sample_rate``."""
    k = math.tan(math.pi * _SHELF_FC / sample_rate)
    vh = 10.0 ** (_SHELF_GAIN_DB / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / _SHELF_Q + k * k
    shelf_b = np.array(
        [vh + vb * k / _SHELF_Q + k * k, 2.0 * (k * k - vh), vh - vb * k / _SHELF_Q + k * k]
    )
    shelf_a = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / _SHELF_Q + k * k])
    shelf = (shelf_b / a0, shelf_a / a0)
    k = math.tan(math.pi * _HIGHPASS_FC / sample_rate)
    a0 = 1.0 + k / _HIGHPASS_Q + k * k
    high_b = np.array([1.0, -2.0, 1.0])
    high_a = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / _HIGHPASS_Q + k * k]) / a0
    return shelf, (high_b, high_a)


class _Biquad:
    """A biquad run over chunks (its state carries from one to the next), in float64.

    numpy has no IIR filter, and a loop per sample is far too slow, so each block of
    ``_FILTER_BLOCK`` samples is solved exactly: the recursive part's response to the block
    (an FFT convolution with its impulse response, which within a block is exact) plus its
    response to the two outputs carried in, propagated from block to block.
    """

    def __init__(self, b: np.ndarray, a: np.ndarray):
        self.b = np.asarray(b, dtype=np.float64) / a[0]
        self.a1, self.a2 = float(a[1] / a[0]), float(a[2] / a[0])
        h = _impulse_response(self.a1, self.a2, _FILTER_BLOCK)
        self._h_spectrum = np.fft.rfft(h, 2 * _FILTER_BLOCK)
        shifted = np.concatenate(([0.0], h[:-1]))
        self._from_y1 = -self.a1 * h - self.a2 * shifted  # response to y[-1] = 1
        self._from_y2 = -self.a2 * h  # response to y[-2] = 1
        self.x1 = self.x2 = self.y1 = self.y2 = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        n = x.size
        if not n:
            return x
        previous = np.concatenate(([self.x2, self.x1], x))
        w = self.b[0] * x + self.b[1] * previous[1:-1] + self.b[2] * previous[:-2]
        self.x1, self.x2 = float(previous[-1]), float(previous[-2])
        blocks = -(-n // _FILTER_BLOCK)
        padded = np.zeros(blocks * _FILTER_BLOCK)
        padded[:n] = w
        padded = padded.reshape(blocks, _FILTER_BLOCK)
        spectrum = np.fft.rfft(padded, 2 * _FILTER_BLOCK, axis=1) * self._h_spectrum
        zero_state = np.fft.irfft(spectrum, 2 * _FILTER_BLOCK, axis=1)[:, :_FILTER_BLOCK]
        y1s, y2s = np.empty(blocks), np.empty(blocks)
        y1, y2 = self.y1, self.y2
        g1, g2 = self._from_y1, self._from_y2
        for i in range(blocks):
            y1s[i], y2s[i] = y1, y2
            last, before = zero_state[i, -1], zero_state[i, -2]
            y1, y2 = last + y1 * g1[-1] + y2 * g2[-1], before + y1 * g1[-2] + y2 * g2[-2]
        zero_state += y1s[:, None] * g1 + y2s[:, None] * g2
        y = zero_state.reshape(-1)[:n]
        # With one sample in, the sample before it is the last of the previous chunk.
        self.y1, self.y2 = float(y[-1]), float(y[-2]) if n > 1 else self.y1
        return y


@lru_cache(maxsize=16)
def _impulse_response(a1: float, a2: float, n: int) -> np.ndarray:
    h = np.zeros(n)
    h[0] = 1.0
    if n > 1:
        h[1] = -a1
    for i in range(2, n):
        h[i] = -a1 * h[i - 1] - a2 * h[i - 2]
    return h


def integrated_loudness(samples: np.ndarray, sr: int) -> float:
    """Integrated loudness of mono samples in LUFS (ITU-R BS.1770-4): K-weighted, 400 ms
    blocks overlapping by 75 %, gated at -70 LUFS and then 10 LU under the ungated mean.
    ``-inf`` when no block passes (silence, or under 400 ms of audio)."""
    energies = _block_energies(samples, sr)
    if not energies.size:
        return float("-inf")
    loudness = -0.691 + 10.0 * np.log10(np.maximum(energies, 1e-300))
    kept = energies[loudness > _ABSOLUTE_GATE_LUFS]
    if not kept.size:
        return float("-inf")
    relative = -0.691 + 10.0 * math.log10(kept.mean()) + _RELATIVE_GATE_LU
    kept = energies[(loudness > _ABSOLUTE_GATE_LUFS) & (loudness > relative)]
    return -0.691 + 10.0 * math.log10(kept.mean())


def _block_energies(samples: np.ndarray, sr: int) -> np.ndarray:
    """Mean square of the K-weighted signal in each 400 ms block (a 100 ms hop)."""
    samples = np.asarray(samples).reshape(-1)
    step = round(sr * 0.1)
    (shelf_b, shelf_a), (high_b, high_a) = k_weighting(sr)
    shelf, high = _Biquad(shelf_b, shelf_a), _Biquad(high_b, high_a)
    chunk = step * 60
    steps = []
    for start in range(0, samples.size, chunk):
        weighted = high(shelf(samples[start : start + chunk]))
        whole = weighted.size // step * step  # only the last chunk has a partial step
        steps.append(np.square(weighted[:whole]).reshape(-1, step).sum(axis=1))
    step_sums = np.concatenate(steps) if steps else np.zeros(0)
    if step_sums.size < 4:
        return np.zeros(0)
    windows = np.lib.stride_tricks.sliding_window_view(step_sums, 4)
    return windows.sum(axis=1) / (4 * step)


# --- Levels -----------------------------------------------------------------------------


def rms_db(samples: np.ndarray) -> float:
    """RMS of the whole signal in dBFS (a full-scale sine reads -3 dB), at least -120."""
    array = np.asarray(samples, dtype=np.float32)
    if not array.size:
        return SILENCE_DB
    return _power_db(float(np.dot(array, array)) / array.size)


def peak_db(samples: np.ndarray) -> float:
    """Sample peak in dBFS, at least -120."""
    array = np.asarray(samples)
    if not array.size:
        return SILENCE_DB
    return _amplitude_db(float(np.abs(array).max()))


def noise_floor_db(samples: np.ndarray, sr: int) -> float:
    """The RMS of the quietest 500 ms of the signal (windows on a 100 ms hop), in dBFS."""
    array = np.asarray(samples, dtype=np.float32)
    step = round(sr * 0.1)
    per_window = round(NOISE_WINDOW_S / 0.1)
    count = array.size // step
    if count < per_window:
        return rms_db(array)
    sums = (
        np.square(array[: count * step], dtype=np.float32)
        .reshape(count, step)
        .sum(axis=1, dtype=np.float64)
    )
    windows = np.lib.stride_tricks.sliding_window_view(sums, per_window).sum(axis=1)
    return _power_db(float(windows.min()) / (per_window * step))


def _power_db(power: float) -> float:
    return max(10.0 * math.log10(power), SILENCE_DB) if power > 0 else SILENCE_DB


def _amplitude_db(amplitude: float) -> float:
    return max(20.0 * math.log10(amplitude), SILENCE_DB) if amplitude > 0 else SILENCE_DB


# --- Normalisation ----------------------------------------------------------------------


def normalised(samples: np.ndarray, sr: int, profile: Profile) -> np.ndarray:
    """A copy of one chapter brought to ``profile``: a gain to its loudness target (or, for
    an RMS range, to its middle, -20 dB), then a lookahead peak limiter under its peak
    ceiling. With a noise-floor rule, silences whose noise is above it are turned down
    (a gentle expander that opens ahead of speech and holds, so words are untouched).
    Silence comes back unchanged."""
    out = np.array(samples, dtype=np.float32).reshape(-1)
    ceiling = _gain(profile.peak_max_db - LIMITER_MARGIN_DB)
    if profile.target_lufs is None and profile.rms_range_db is None:
        return _limited(out, ceiling, sr)

    def level(x):
        if profile.target_lufs is not None:
            return integrated_loudness(x, sr)
        return rms_db(x) if rms_db(x) > SILENCE_DB else float("-inf")

    target = profile.target_lufs if profile.target_lufs is not None else AUDIOBOOK_RMS_DB
    measured = level(out)
    if not math.isfinite(measured):
        return out
    out *= np.float32(_gain(target - measured))
    floor_max = profile.noise_floor_max_db
    if floor_max is not None and noise_floor_db(out, sr) > floor_max:
        out = _expanded(out, sr, floor_max)
    # The limiter takes a little loudness away: measure again and make it up (each pass
    # changes less; three are plenty).
    for _ in range(3):
        out = _limited(out, ceiling, sr)
        measured = level(out)
        if not math.isfinite(measured) or abs(target - measured) < 0.05:
            break
        out *= np.float32(_gain(target - measured))
    return _limited(out, ceiling, sr)


def _limited(samples: np.ndarray, ceiling: float, sr: int) -> np.ndarray:
    """Peaks pulled under ``ceiling`` by a gain that ramps down ahead of each peak (linear,
    ``LIMITER_ATTACK_S`` for full scale) and back up after it (``LIMITER_RELEASE_S``).

    The gain never exceeds what each sample needs (``ceiling / |x|``): it is the lowest of
    the needed gains each carried by a ramp, computed as a running minimum both ways.
    """
    magnitude = np.abs(samples)
    if not magnitude.size or magnitude.max() <= ceiling:
        return samples
    needed = np.ones(samples.size, dtype=np.float64)
    over = magnitude > ceiling
    needed[over] = ceiling / magnitude[over]
    attack = 1.0 / (LIMITER_ATTACK_S * sr)
    release = 1.0 / (LIMITER_RELEASE_S * sr)
    gain = _ramped(needed[::-1], attack)[::-1]
    gain = _ramped(gain, release)
    return (samples * gain).astype(np.float32)


def _ramped(needed: np.ndarray, rate: float) -> np.ndarray:
    """``y[n] = min(needed[n], y[n-1] + rate)``: a running minimum with a linear climb."""
    out = np.empty_like(needed)
    carried = 1.0
    chunk = 1 << 20
    for start in range(0, needed.size, chunk):
        part = needed[start : start + chunk]
        ramp = rate * np.arange(part.size, dtype=np.float64)
        climbed = np.minimum.accumulate(part - ramp) + ramp
        climbed = np.minimum(climbed, carried + rate + ramp)
        out[start : start + part.size] = climbed
        carried = float(climbed[-1])
    return out


# The expander: 10 ms frames under (floor + 8 dB) are silence; silence closer than 150 ms to
# a louder frame stays open, and the gain moves over 50 ms.
_GATE_FRAME_S = 0.01
_GATE_OPEN_ABOVE_FLOOR_DB = 8.0
_GATE_HOLD_S = 0.15
_GATE_SMOOTH_S = 0.05
_GATE_MAX_CUT_DB = 40.0
_GATE_UNDER_RULE_DB = 6.0


def _expanded(samples: np.ndarray, sr: int, floor_max_db: float) -> np.ndarray:
    floor = noise_floor_db(samples, sr)
    cut = min(floor - (floor_max_db - _GATE_UNDER_RULE_DB), _GATE_MAX_CUT_DB)
    if cut <= 0:
        return samples
    frame = round(sr * _GATE_FRAME_S)
    count = -(-samples.size // frame)
    padded = np.zeros(count * frame, dtype=np.float32)
    padded[: samples.size] = samples
    power = np.square(padded).reshape(count, frame).mean(axis=1, dtype=np.float64)
    threshold = 10.0 ** ((floor + _GATE_OPEN_ABOVE_FLOOR_DB) / 10.0)
    loud = (power > threshold).astype(np.int64)
    hold = round(_GATE_HOLD_S / _GATE_FRAME_S)
    near = np.convolve(loud, np.ones(2 * hold + 1, dtype=np.int64), mode="same") > 0
    frame_gain = np.where(near, 1.0, _gain(-cut))
    smooth = max(round(_GATE_SMOOTH_S / _GATE_FRAME_S), 1)
    edges = np.concatenate(
        (np.full(smooth, frame_gain[0]), frame_gain, np.full(smooth, frame_gain[-1]))
    )
    frame_gain = np.convolve(edges, np.ones(smooth) / smooth, mode="same")[smooth:-smooth]
    centres = (np.arange(count) + 0.5) * frame
    gain = np.interp(np.arange(samples.size), centres, frame_gain).astype(np.float32)
    return samples * gain


# --- Compliance -------------------------------------------------------------------------


def compliance(samples: np.ndarray, sr: int, profile: Profile) -> list[dict]:
    """The profile's rules measured on one chapter (or file), and its duration:
    ``[{"rule", "value", "unit", "passes"}, ...]``; values are finite (silence reads -120)."""
    results = []
    if profile.target_lufs is not None:
        lufs = integrated_loudness(samples, sr)
        value = max(lufs, SILENCE_DB)
        results.append(
            _rule(
                f"Loudness {_signed(profile.target_lufs)} LUFS ±1",
                value,
                "LUFS",
                abs(value - profile.target_lufs) <= 1.0,
            )
        )
    if profile.rms_range_db is not None:
        low, high = profile.rms_range_db
        value = rms_db(samples)
        results.append(
            _rule(f"RMS {_signed(low)}…{_signed(high)} dB", value, "dB", low <= value <= high)
        )
    peak = peak_db(samples)
    results.append(
        _rule(f"Peak ≤ {_signed(profile.peak_max_db)} dB", peak, "dB", peak <= profile.peak_max_db)
    )
    if profile.noise_floor_max_db is not None:
        floor = noise_floor_db(samples, sr)
        results.append(
            _rule(
                f"Noise floor ≤ {_signed(profile.noise_floor_max_db)} dB",
                floor,
                "dB",
                floor <= profile.noise_floor_max_db,
            )
        )
    seconds = np.asarray(samples).size / sr
    if profile.max_duration_s is not None:
        label = f"Duration ≤ {audio.format_duration(profile.max_duration_s)}"
        passes = 0 < seconds <= profile.max_duration_s
    else:
        label, passes = "Duration", seconds > 0
    results.append(_rule(label, seconds, "s", passes))
    return results


def _rule(rule: str, value: float, unit: str, passes: bool) -> dict:
    return {"rule": rule, "value": round(float(value), 2), "unit": unit, "passes": bool(passes)}


def _signed(value: float) -> str:
    text = f"{value:g}"
    return "−" + text[1:] if text.startswith("-") else text


# --- Writing ----------------------------------------------------------------------------

# ISO 639-1 to ISO 639-2/T, for ID3 TLAN and the MP4 stream language.
_LANGUAGES = {
    "ar": "ara", "cs": "ces", "da": "dan", "de": "deu", "el": "ell", "en": "eng",
    "es": "spa", "fi": "fin", "fr": "fra", "hi": "hin", "hu": "hun", "id": "ind",
    "it": "ita", "ja": "jpn", "ko": "kor", "nl": "nld", "no": "nor", "pl": "pol",
    "pt": "por", "ro": "ron", "ru": "rus", "sv": "swe", "tr": "tur", "uk": "ukr",
    "vi": "vie", "zh": "zho",
}  # fmt: skip


def export_write(
    chapters: Iterable[ChapterAudio],
    fmt: str,
    out: str | os.PathLike,
    *,
    tags: dict | None = None,
    bitrate_kbps: int | None = None,
) -> list[dict]:
    """Write every chapter, in order, into one file at ``out``; returns the chapter marks
    ``[{"title", "start_s", "end_s"}, ...]``.

    ``mp3``: CBR MP3 (192 kbps) with a LAME header (exact length) and an ID3v2.4 tag: TIT2,
    TPE1, TALB, TLAN, COMM, a CTOC and one CHAP per chapter. ``m4b``: AAC in MP4 (brand M4B)
    with Nero and QuickTime chapters and iTunes tags. ``wav``: 16-bit PCM mono; its chapters
    are only in the return value. ``tags`` may hold title, author, album, language (ISO 639
    code) and comment. A failed export leaves no file behind.
    """
    fmt = _checked_format(fmt)
    tags = _checked_tags(tags)
    path = Path(out)
    try:
        writer = _WRITERS[fmt](path, bitrate_kbps)
        try:
            marks = []
            position = 0
            for chapter in chapters:
                samples = chapter.load()
                writer.feed(samples)
                marks.append(
                    {
                        "title": chapter.title,
                        "start_s": position / SAMPLE_RATE,
                        "end_s": (position + samples.size) / SAMPLE_RATE,
                    }
                )
                position += samples.size
                del samples
            if not marks:
                raise ExportAudioError("An export needs at least one chapter.")
            writer.finish(marks, tags)
        finally:
            writer.close()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return marks


def zip_write(
    chapters: Iterable[ChapterAudio],
    fmt: str,
    out: str | os.PathLike,
    *,
    tags: dict | None = None,
    bitrate_kbps: int | None = None,
) -> list[str]:
    """A ZIP at ``out`` with one file per chapter, ``"01 - Title.mp3"``, in order; returns
    the names. Each file is written to a temporary file next to ``out`` and streamed into the
    archive, so neither a chapter's file nor the archive is ever held in memory. Each file is
    tagged with its chapter's title, the album (``album``, else ``title``) and its number."""
    fmt = _checked_format(fmt)
    tags = _checked_tags(tags)
    chapters = list(chapters)  # the titles, to number the files; samples load one at a time
    if not chapters:
        raise ExportAudioError("An export needs at least one chapter.")
    width = max(2, len(str(len(chapters))))
    path = Path(out)
    names = []
    compression = zipfile.ZIP_DEFLATED if fmt == "wav" else zipfile.ZIP_STORED
    try:
        with (
            tempfile.TemporaryDirectory(dir=path.parent) as scratch,
            zipfile.ZipFile(path, "w", compression=compression, allowZip64=True) as archive,
        ):
            for number, chapter in enumerate(chapters, start=1):
                name = f"{number:0{width}d} - {_file_title(chapter.title, number)}.{fmt}"
                one = Path(scratch) / f"chapter.{fmt}"
                file_tags = {
                    **tags,
                    "title": chapter.title,
                    "album": tags.get("album") or tags.get("title", ""),
                    "track": str(number),
                }
                export_write([chapter], fmt, one, tags=file_tags, bitrate_kbps=bitrate_kbps)
                archive.write(one, name)
                one.unlink()
                names.append(name)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return names


def _checked_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportAudioError(f"Unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}.")
    return fmt


def _checked_tags(tags: dict | None) -> dict:
    tags = dict(tags or {})
    unknown = set(tags) - set(TAG_NAMES) - {"track"}
    if unknown:
        raise ExportAudioError(
            f"Unknown tags: {', '.join(sorted(unknown))}. Use: {', '.join(TAG_NAMES)}."
        )
    return {key: str(value) for key, value in tags.items() if value not in (None, "")}


def _file_title(title: str, number: int) -> str:
    cleaned = re.sub(r'[\x00-\x1f<>:"/\\|?*]+', " ", title)
    cleaned = re.sub(r"\s+", " ", cleaned).strip(" .")
    return cleaned[:80].rstrip(" .") or f"Chapter {number}"


def _language(tags: dict) -> str | None:
    code = tags.get("language", "").strip().lower().replace("_", "-").split("-")[0]
    if len(code) == 3:
        return code
    return _LANGUAGES.get(code)


def _frames(samples: np.ndarray, start: int) -> Iterator[av.AudioFrame]:
    """Clipped float32 frames of ``_ENCODE_CHUNK`` samples with their time stamps."""
    for offset in range(0, samples.size, _ENCODE_CHUNK):
        part = np.clip(samples[offset : offset + _ENCODE_CHUNK], -1.0, 1.0)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(part.reshape(1, -1)), format="flt", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = Fraction(1, SAMPLE_RATE)
        frame.pts = start + offset
        yield frame


class _EncodedWriter:
    """MP3 or AAC encoded by PyAV straight into a file on disk (seekable, so the muxer can
    write the exact length: the LAME header of an MP3, the moov of an MP4). The engines'
    ``StreamEncoder`` writes to memory, which an export of hours cannot afford."""

    muxer = ""
    codec = ""
    default_kbps = 0
    options: dict = {}

    def __init__(self, path: Path, bitrate_kbps: int | None):
        self.path = path
        self.samples = 0
        self.container = av.open(
            str(self._target()), mode="w", format=self.muxer, container_options=self.options
        )
        self.stream = self.container.add_stream(self.codec, rate=SAMPLE_RATE, layout="mono")
        self.stream.bit_rate = (bitrate_kbps or self.default_kbps) * 1000

    def _target(self) -> Path:
        return self.path

    def feed(self, samples: np.ndarray) -> None:
        for frame in _frames(samples, self.samples):
            self.container.mux(self.stream.encode(frame))
        self.samples += samples.size

    def _close_audio(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()
        self.container = None

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None


class _Mp3Writer(_EncodedWriter):
    muxer = "mp3"
    codec = "libmp3lame"
    default_kbps = MP3_BITRATE_KBPS
    options = {"id3v2_version": "0"}  # the tag is written afterwards, with the chapters

    def finish(self, marks: list[dict], tags: dict) -> None:
        from mutagen.id3 import (
            CHAP,
            COMM,
            CTOC,
            ID3,
            TALB,
            TIT2,
            TLAN,
            TPE1,
            TRCK,
            CTOCFlags,
        )

        self._close_audio()
        id3 = ID3()
        utf8 = 3
        if tags.get("title"):
            id3.add(TIT2(encoding=utf8, text=[tags["title"]]))
        if tags.get("author"):
            id3.add(TPE1(encoding=utf8, text=[tags["author"]]))
        album = tags.get("album") or tags.get("title")
        if album:
            id3.add(TALB(encoding=utf8, text=[album]))
        if tags.get("track"):
            id3.add(TRCK(encoding=utf8, text=[tags["track"]]))
        language = _language(tags)
        if language:
            id3.add(TLAN(encoding=utf8, text=[language]))
        if tags.get("comment"):
            id3.add(COMM(encoding=utf8, lang=language or "XXX", desc="", text=[tags["comment"]]))
        ids = [f"chp{index}" for index in range(len(marks))]
        id3.add(
            CTOC(
                element_id="toc",
                flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
                child_element_ids=ids,
                sub_frames=[TIT2(encoding=utf8, text=["Chapters"])],
            )
        )
        for element_id, mark in zip(ids, marks, strict=True):
            id3.add(
                CHAP(
                    element_id=element_id,
                    start_time=round(mark["start_s"] * 1000),
                    end_time=round(mark["end_s"] * 1000),
                    start_offset=0xFFFFFFFF,
                    end_offset=0xFFFFFFFF,
                    sub_frames=[TIT2(encoding=utf8, text=[mark["title"]])],
                )
            )
        id3.save(str(self.path), v2_version=4)


class _M4bWriter(_EncodedWriter):
    """AAC encoded to a scratch MP4 first; the chapters are known only at the end, and the
    MP4 muxer must have them before its header, so the packets are then copied (not
    re-encoded) into the final file with the chapters and tags."""

    muxer = "ipod"
    codec = "aac"
    default_kbps = AAC_BITRATE_KBPS

    def _target(self) -> Path:
        handle, name = tempfile.mkstemp(suffix=".m4a", dir=self.path.parent)
        os.close(handle)
        self.scratch = Path(name)
        return self.scratch

    def finish(self, marks: list[dict], tags: dict) -> None:
        self._close_audio()
        millis = Fraction(1, 1000)
        with av.open(str(self.scratch)) as source:
            options = {"brand": "M4B ", "movflags": "+faststart"}
            with av.open(str(self.path), "w", format="ipod", container_options=options) as target:
                stream_in = source.streams.audio[0]
                stream_out = target.add_stream_from_template(stream_in)
                language = _language(tags)
                if language:
                    stream_out.metadata["language"] = language
                target.set_chapters(
                    [
                        {
                            "id": index + 1,
                            "start": round(mark["start_s"] * 1000),
                            "end": round(mark["end_s"] * 1000),
                            "time_base": millis,
                            "metadata": {"title": mark["title"]},
                        }
                        for index, mark in enumerate(marks)
                    ]
                )
                names = {"title": "title", "author": "artist", "comment": "comment"}
                for key, name in names.items():
                    if tags.get(key):
                        target.metadata[name] = tags[key]
                if tags.get("author"):
                    target.metadata["album_artist"] = tags["author"]
                album = tags.get("album") or tags.get("title")
                if album:
                    target.metadata["album"] = album
                if tags.get("track"):
                    target.metadata["track"] = tags["track"]
                target.metadata["genre"] = "Audiobook"
                for packet in source.demux(stream_in):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    packet.stream = stream_out
                    target.mux(packet)

    def close(self) -> None:
        super().close()
        self.scratch.unlink(missing_ok=True)


class _WavWriter:
    """16-bit PCM mono; the header is written again at the end with the real sizes."""

    def __init__(self, path: Path, bitrate_kbps: int | None):
        self.handle = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.handle.write(audio.wav_header(SAMPLE_RATE, 0))
        self.data_bytes = 0

    def feed(self, samples: np.ndarray) -> None:
        self.data_bytes += samples.size * 2
        if self.data_bytes > _WAV_MAX_DATA:
            raise ExportAudioError(
                "A WAV file holds at most 6.7 hours of this audio; export MP3 or M4B, or a ZIP "
                "of chapters."
            )
        for offset in range(0, samples.size, _ENCODE_CHUNK):
            self.handle.write(audio.pcm16k_bytes(samples[offset : offset + _ENCODE_CHUNK]))

    def finish(self, marks: list[dict], tags: dict) -> None:
        self.handle.seek(0)
        self.handle.write(audio.wav_header(SAMPLE_RATE, self.data_bytes))

    def close(self) -> None:
        self.handle.close()


_WRITERS = {"mp3": _Mp3Writer, "m4b": _M4bWriter, "wav": _WavWriter}
