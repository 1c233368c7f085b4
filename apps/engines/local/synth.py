"""Local sound effects and music: seeded procedural synthesis driven by the prompt's words.

Nothing here is a trained model: the prompt is read for words that name sounds, adjectives
and musical terms, and numpy renders them from noise, oscillators and envelopes. Results are
drafts (``extra["draft"] is True``) that give a scene's shape and timing offline; the
ElevenLabs engine renders the real thing.

Sound effects (``sound_effect``)
    Words pick *layers* (``extra["layers"]``, as ``"name:variant"`` where one applies):
    rain, wind, whoosh, click (clock, typing), beep (alarm, buzzer), footsteps, crowd,
    thunder, water (stream, drip, splash, bubbles, pouring, waterfall), ocean, fire, knock,
    bell (chime, doorbell, church bell, gong), engine (car, hum, fan, machine), applause,
    birds, crickets, explosion (impact, slam, gunshot, crash), laser, heartbeat, siren, phone
    ring, creak and static. "storm", "forest", "traffic" and "night" are scenes of several
    layers. A prompt that names none of them gets a gentle noise ``texture`` whose band
    depends on its words.
    Adjectives just before a sound word shape that layer ("heavy rain and distant thunder"),
    the others shape them all: soft/loud (level and density), distant/close (low-pass,
    reverb), high/low (pitch and brightness), fast/slow, big/small, short/long. Materials
    ("tin roof", "wooden door", "gravel") and places ("hall", "cave", "room") change the
    sounds and their reverb. Numbers count events ("three knocks", "a single beep"); a
    plural or "-ing" form repeats them through the sound.
    ``duration_seconds`` (0.5..30) is honoured to the sample. Without it the length comes
    from "N seconds" in the prompt, else from the sounds (a beep 1 s, a texture 5 s),
    "short" (1 s) and "long" (10 s).
    ``prompt_influence`` (0..1) is how much the words dominate: under the layers lies a
    neutral room-tone bed at ``0.3 * (1 - influence) ** 2`` of their level, and adjectives
    act ``0.6 + 0.8 * influence`` times as strongly.
    ``loop``: the sound is rendered longer by a crossfade length (up to 0.5 s) and that tail
    is crossfaded (equal power) into the head, so the last sample runs into the first as
    smoothly as any two neighbours; no fades are applied at the ends.
    Loudness: -18 dBFS RMS over the active parts (+4 dB loud, -6 dB soft, -3 dB distant),
    then a soft limiter keeps peaks under -1 dBFS.

Music (``music``)
    Tempo from "120 bpm" or words (slow, chill, upbeat, fast, genres such as house or drum
    and bass); key from "in A minor", "F# major", "in Eb", else mood words (happy → major,
    sad/dark → minor) and the seed; instruments from words (piano, bass, drums, pad,
    strings, pluck/guitar, bells, synth lead), joined by the genre's band unless the prompt
    says "only" or "solo"; "no drums" removes one; with none named, the genre's band.
    A seeded composer writes a chord progression (a second one for B sections), a bass line,
    a drum pattern (kick, snare or clap, hats; fills every eighth bar; 3/4 for a waltz) and
    a melody in four-bar phrases that A sections repeat; an intro, breakdowns and the final
    tonic chord appear when the piece is long enough. Instruments are wavetable and additive
    voices with envelopes, rendered once per pitch and length and placed on the timeline,
    with a convolution reverb on the melodic instruments. ``music_length_ms``
    (3,000..600,000) is honoured to the sample; without it the length comes from "a
    10 second jingle" or "2 minutes" in the prompt (clamped to the range), else 30 s. The
    end fades out over up to 3 s. Loudness: -16 dBFS RMS, soft limiter under -1 dBFS.
    Output is always instrumental (``force_instrumental`` is accepted; lyrics are not sung).

Both render mono float32 at 44.1 kHz and encode it with ``audio.encode`` into the request's
``output_format`` (music also takes ``"auto"``, the API's default, as MP3 44.1 kHz 128k).
The same request and seed give the same bytes; without a seed one is drawn and reported in
``extra["seed"]``. Rendering is vectorised (short-time spectra for noises, FFT convolution
and ``bincount`` for swarms of events, cached notes for music): a 30 s effect renders in about
0.3 to 1 s, ten minutes of music in about 2 s (before encoding).
"""

from __future__ import annotations

import math
import re
import secrets
import time
import unicodedata
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from apps.engines import audio, base

SAMPLE_RATE = 44_100
SR = SAMPLE_RATE

SFX_DURATION_RANGE = (0.5, 30.0)
SFX_MAX_TEXT = 1_000
SFX_MAX_SEED = 4_294_967_295
MUSIC_LENGTH_RANGE_MS = (3_000, 600_000)
MUSIC_DEFAULT_MS = 30_000
MUSIC_MAX_PROMPT = 4_100
MUSIC_MAX_SEED = 2_147_483_647

SFX_TARGET_DBFS = -18.0
MUSIC_TARGET_DBFS = -16.0
_LIMIT_KNEE = 0.5
_LIMIT_CEILING = 0.891  # -1 dBFS: room for an MP3 decoder's overshoot

# Short-time spectra for shaped noise: 46 ms frames, 4x overlap.
_FRAME = 2048
_HOP = _FRAME // 4
_FREQS = np.fft.rfftfreq(_FRAME, 1 / SR)
_LOG_FREQS = np.log2(np.maximum(_FREQS, 20.0))
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_FRAME) / _FRAME)).astype(np.float32)
_TABLE = 2048  # wavetable length


# --- Requests ---------------------------------------------------------------------------


def _number(value, field_name: str, label: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise base.InvalidRequest.for_field(field_name, f"{label} must be a number.")
    if not low <= value <= high:
        raise base.InvalidRequest.for_field(
            field_name, f"{label} must be between {low:g} and {high:g} (got {value:g})."
        )
    return float(value)


def _seed(value, high: int) -> int:
    if value is None:
        return secrets.randbelow(high + 1)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise base.InvalidRequest.for_field(
            "seed", f"seed must be an integer between 0 and {high} (got {value!r})."
        )
    return value


def _prompt(value, field_name: str, limit: int, what: str) -> str:
    text = value if isinstance(value, str) else ""
    if not text.strip():
        raise base.InvalidRequest.for_field(
            field_name, f"The {field_name} is empty: describe the {what} to generate."
        )
    if len(text) > limit:
        raise base.InvalidRequest.for_field(
            field_name,
            f"The {field_name} is {len(text):,} characters long; the limit is {limit:,}.",
        )
    return text


def _info(model_id: str | None, started: float) -> base.CallInfo:
    return base.CallInfo(
        request_id=uuid.uuid4().hex,
        character_cost=0.0,
        engine="local",
        model_id=model_id,
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def _rng(seed: int, *keys) -> np.random.Generator:
    """A generator for one part of a rendering: parts stay stable when others change."""
    return np.random.default_rng([seed, *(zlib.crc32(str(key).encode()) for key in keys)])


def _words(text: str) -> str:
    """Lower-case words joined by single spaces: what the vocabularies match against."""
    plain = unicodedata.normalize("NFKD", text.lower().replace("’", "'"))
    plain = "".join(ch for ch in plain if not unicodedata.combining(ch))  # café → cafe
    return " ".join(re.findall(r"[a-z0-9#♯♭']+", plain))


def _find(pattern: str, text: str):
    return re.finditer(rf"(?<![a-z0-9'])(?:{pattern})(?![a-z0-9'])", text)


# --- Signal helpers ---------------------------------------------------------------------


def _fast_len(size: int) -> int:
    power = 1 << max(0, (size - 1).bit_length())
    for candidate in (power * 9 // 16, power * 5 // 8, power * 3 // 4, power * 7 // 8):
        if candidate >= size:
            return candidate
    return power


def _times(n: int) -> np.ndarray:
    return np.arange(n) / SR


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _active_rms(x: np.ndarray, block: int = 2048) -> float:
    """RMS of the blocks within 20 dB of the loudest: the level of what is heard."""
    count = x.size // block
    if count < 2:
        return _rms(x)
    energy = np.mean(np.square(x[: count * block].reshape(count, block), dtype=np.float64), 1)
    return float(np.sqrt(np.mean(energy[energy >= energy.max() * 0.01])))


def _normalised(x: np.ndarray) -> np.ndarray:
    level = _active_rms(x)
    return x / level if level > 1e-12 else x


def _response(freqs, lo=None, hi=None, tilt=0.0, order=2) -> np.ndarray:
    """Zero-phase Butterworth-like magnitude: high-pass at lo, low-pass at hi, dB/octave tilt."""
    f = np.maximum(freqs, 1.0)
    out = np.ones_like(f)
    if lo:
        out /= np.sqrt(1 + (lo / f) ** (2 * order))
    if hi:
        out /= np.sqrt(1 + (f / hi) ** (2 * order))
    if tilt:
        out *= (np.maximum(f, 20.0) / 1000.0) ** (tilt / 6.0206)
    return out


def _filter(x, lo=None, hi=None, tilt=0.0, order=2) -> np.ndarray:
    """Filter by FFT, zero-padded so the ends do not wrap into each other."""
    size = _fast_len(x.size + min(x.size, 8192))
    freqs = np.fft.rfftfreq(size, 1 / SR)
    return np.fft.irfft(np.fft.rfft(x, size) * _response(freqs, lo, hi, tilt, order), size)[
        : x.size
    ]


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``kernel``, cut to the length of ``x``."""
    size = _fast_len(x.size + kernel.size - 1)
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(kernel, size), size)[: x.size]


def _convolve_long(x: np.ndarray, kernel: np.ndarray, block: int = 1 << 17) -> np.ndarray:
    """Overlap-add convolution for long float32 buffers (minutes of music)."""
    size = _fast_len(block + kernel.size - 1)
    spectrum = np.fft.rfft(kernel, size)
    out = np.zeros(x.size + kernel.size, np.float32)
    for start in range(0, x.size, block):
        segment = x[start : start + block]
        y = np.fft.irfft(np.fft.rfft(segment, size) * spectrum, size)
        out[start : start + segment.size + kernel.size - 1] += y[: segment.size + kernel.size - 1]
    return out[: x.size]


def _scatter(n: int, onsets, amps, which, kernels: list[np.ndarray]) -> np.ndarray:
    """Kernel ``which[i]`` at sample ``onsets[i]`` with gain ``amps[i]``: one FFT per kernel."""
    onsets = np.asarray(onsets, np.int64)
    keep = (onsets >= 0) & (onsets < n)
    onsets, amps, which = onsets[keep], np.asarray(amps)[keep], np.asarray(which)[keep]
    if not onsets.size:
        return np.zeros(n)
    longest = max(k.size for k in kernels)
    size = _fast_len(n + longest)
    total = np.zeros(size // 2 + 1, np.complex128)
    for index, kernel in enumerate(kernels):
        chosen = which == index
        if not chosen.any():
            continue
        impulses = np.bincount(onsets[chosen], weights=amps[chosen], minlength=n)
        total += np.fft.rfft(impulses, size) * np.fft.rfft(kernel, size)
    return np.fft.irfft(total, size)[:n]


def _overlay(n: int, onsets, grains: np.ndarray) -> np.ndarray:
    """Row ``i`` of ``grains`` added at sample ``onsets[i]`` (many short events at once)."""
    if not len(onsets):
        return np.zeros(n)
    index = np.asarray(onsets, np.int64)[:, None] + np.arange(grains.shape[1])
    keep = (index >= 0) & (index < n)
    return np.bincount(index[keep], weights=grains[keep], minlength=n)[:n]


def _add(out: np.ndarray, start: int, signal: np.ndarray, gain: float = 1.0) -> None:
    if start >= out.size or start + signal.size <= 0:
        return
    skip = max(0, -start)
    end = min(out.size, start + signal.size)
    out[start + skip : end] += gain * signal[skip : end - start]


def _wander(rng: np.random.Generator, times: np.ndarray, rate: float) -> np.ndarray:
    """Smooth random motion (about unit variance) with ``rate`` new values a second."""
    if not times.size:
        return times.copy()
    first, last = float(times[0]), float(times[-1])
    knots = rng.standard_normal(int((last - first) * rate) + 3)
    position = (times - first) * rate
    index = np.minimum(position.astype(np.int64), knots.size - 2)
    weight = 0.5 - 0.5 * np.cos(np.pi * (position - index))
    return knots[index] * (1 - weight) + knots[index + 1] * weight


def _frame_times(n: int) -> np.ndarray:
    return (np.arange(n // _HOP + 2) - 1) * _HOP / SR


def _spectral_noise(rng: np.random.Generator, n: int, shape: np.ndarray) -> np.ndarray:
    """Noise whose short-time magnitude follows ``shape`` (frames x bins, or bins).

    Frame ``i`` is centred at ``_frame_times(n)[i]``; random complex spectra are weighted and
    overlap-added, so a shape that changes from frame to frame sweeps, swells and gusts.
    """
    frames = n // _HOP + 2
    if shape.ndim == 1:
        shape = np.broadcast_to(shape, (frames, shape.size))
    spectrum = np.empty((frames, _FREQS.size), np.complex64)
    spectrum.real = rng.standard_normal((frames, _FREQS.size), dtype=np.float32)
    spectrum.imag = rng.standard_normal((frames, _FREQS.size), dtype=np.float32)
    spectrum *= shape.astype(np.float32)
    blocks = (np.fft.irfft(spectrum, _FRAME, axis=1).astype(np.float32) * _WINDOW).reshape(
        frames, 4, _HOP
    )
    out = np.zeros((frames + 3, _HOP), np.float32)
    for part in range(4):
        out[part : part + frames] += blocks[:, part]
    return out.reshape(-1)[3 * _HOP : 3 * _HOP + n].astype(np.float64)


def _band(lo=None, hi=None, tilt=0.0, order=2) -> np.ndarray:
    return _response(_FREQS, lo, hi, tilt, order)


def _bump(centre_hz, width_octaves) -> np.ndarray:
    """A band around ``centre_hz`` (a number or one per frame), Gaussian in octaves."""
    centre = np.log2(np.asarray(centre_hz, np.float64))
    if centre.ndim:
        centre = centre[:, None]
    return np.exp(-0.5 * ((_LOG_FREQS - centre) / width_octaves) ** 2)


def _noise_burst(rng, seconds, tau, lo, hi, attack=0.0005) -> np.ndarray:
    t = _times(max(int(seconds * SR), 32))
    shape = np.exp(-t / tau) * np.minimum(1.0, t / max(attack, 1e-6))
    return _filter(rng.standard_normal(t.size) * shape, lo, hi)


def _partials(t, freq, ratios, amps, decays, rng) -> np.ndarray:
    out = np.zeros(t.size)
    for ratio, amp, decay in zip(ratios, amps, decays, strict=True):
        if freq * ratio < SR * 0.45:
            phase = rng.uniform(0, 2 * np.pi)
            out += amp * np.sin(2 * np.pi * freq * ratio * t + phase) * np.exp(-t / decay)
    return out


def _table(amps) -> np.ndarray:
    """One period of a waveform from harmonic amplitudes, with a wrap-around sample."""
    spectrum = np.zeros(_TABLE // 2 + 1, np.complex128)
    amps = np.asarray(amps, np.float64)[: _TABLE // 2 - 1]
    spectrum[1 : amps.size + 1] = -1j * amps
    table = np.fft.irfft(spectrum, _TABLE) * (_TABLE / 2)
    return np.append(table, table[0])


def _osc(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Read a wavetable at ``cycles`` (the phase in periods), interpolating linearly."""
    position = (cycles % 1.0) * _TABLE
    index = position.astype(np.int64)
    frac = position - index
    return table[index] * (1 - frac) + table[index + 1] * frac


def _saw_amps(freq, brightness_hz=4000.0, limit=64) -> np.ndarray:
    count = max(1, min(limit, int(SR * 0.45 / freq)))
    k = np.arange(1, count + 1)
    return (1.0 / k) / np.sqrt(1 + (k * freq / brightness_hz) ** 2)


def _soft_limit(x: np.ndarray, knee=_LIMIT_KNEE, ceiling=_LIMIT_CEILING) -> np.ndarray:
    """Leave samples under ``knee``; above it a tanh curve approaches ``ceiling``."""
    magnitude = np.abs(x)
    over = magnitude > knee
    if over.any():
        room = ceiling - knee
        x = x.copy()
        x[over] = np.sign(x[over]) * (knee + room * np.tanh((magnitude[over] - knee) / room))
    return x


def _reverb_ir(rng, seconds: float, bright: float = 0.0) -> np.ndarray:
    """A diffuse room: decaying noise whose highs die first, after a short pre-delay."""
    t = _times(int(seconds * SR))
    noise = rng.standard_normal(t.size)
    cut = 3500 * 2**bright
    low = _filter(noise, None, cut) * np.exp(-6.9 * t / seconds)
    high = _filter(noise, cut, None) * np.exp(-6.9 * t / (seconds * 0.45))
    ir = np.concatenate([np.zeros(int(0.012 * SR)), low + high])
    return ir / np.sqrt(np.sum(ir**2))


def _fades(x: np.ndarray, fade_in: float, fade_out: float) -> np.ndarray:
    head = min(int(fade_in * SR), x.size // 2)
    tail = min(int(fade_out * SR), x.size // 2)
    if head:
        x[:head] *= 0.5 - 0.5 * np.cos(np.pi * (np.arange(head) + 0.5) / head)
    if tail:
        x[-tail:] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(tail) + 0.5) / tail)
    return x


# --- Sound effects: reading the prompt ----------------------------------------------------


@dataclass
class _Mods:
    """What adjectives ask of a layer. Additive fields, except ``density`` (a factor)."""

    gain: float = 0.0  # dB (layer-local adjectives only; global ones set the target)
    density: float = 1.0
    distance: float = 0.0  # -1 close .. 1 far
    bright: float = 0.0
    pitch: float = 0.0  # about octaves
    length: float = 0.0
    speed: float = 0.0
    size: float = 0.0

    def plus(self, other: _Mods) -> _Mods:
        return _Mods(
            gain=float(np.clip(self.gain + other.gain, -24.0, 12.0)),
            # Repeated adjectives ("heavy heavy heavy rain") must not explode event counts.
            density=float(np.clip(self.density * other.density, 0.25, 4.0)),
            distance=self.distance + other.distance,
            bright=self.bright + other.bright,
            pitch=self.pitch + other.pitch,
            length=self.length + other.length,
            speed=self.speed + other.speed,
            size=self.size + other.size,
        )

    def scaled(self, factor: float) -> _Mods:
        return _Mods(
            gain=float(np.clip(self.gain * factor, -24.0, 12.0)),
            density=float(np.clip(self.density**factor, 0.25, 4.0)),
            distance=float(np.clip(self.distance * factor, -1.5, 1.5)),
            bright=float(np.clip(self.bright * factor, -1.5, 1.5)),
            pitch=float(np.clip(self.pitch * factor, -1.5, 1.5)),
            length=self.length,
            speed=float(np.clip(self.speed * factor, -1.5, 1.5)),
            size=float(np.clip(self.size * factor, -1.5, 1.5)),
        )


@dataclass
class _Scene:
    metal: float = 0.0
    wood: float = 0.0
    space: float = 0.0  # 0 dry .. 1 a large hall
    surface: str = ""  # crunch | hard
    seconds: float | None = None  # "5 seconds" in the prompt


@dataclass
class _Layer:
    name: str
    variant: str = ""
    gain_db: float = 0.0
    mods: _Mods = field(default_factory=_Mods)
    count: int | None = None
    repeat: bool = False
    position: int = 0  # token index of the word that asked for it


_ADJECTIVES: tuple[tuple[str, _Mods], ...] = (
    (
        r"soft|softly|quiet|quietly|gentle|gently|faint|subtle|light|lightly|delicate|mild|"
        r"calm|peaceful|tiny drops",
        _Mods(gain=-6, density=0.5, size=-0.3),
    ),
    (
        r"loud|heavy|heavily|intense|strong|powerful|huge|massive|big|violent|hard|torrential|"
        r"roaring|deafening|epic|raging|thunderous|enormous",
        _Mods(gain=4, density=2.0, size=1),
    ),
    (
        r"distant|far|faraway|far away|muffled|remote|outside|next room|through a wall|"
        r"in the distance",
        _Mods(distance=1),
    ),
    (r"close|closeup|close up|near|nearby|crisp|clear|detailed|intimate", _Mods(distance=-1)),
    (
        r"high|higher|high pitched|bright|sharp|shrill|squeaky|tiny|small|little|thin|tinny|"
        r"piercing",
        _Mods(pitch=1, bright=0.5, size=-1),
    ),
    (
        r"low|lower|low pitched|deep|dark|bassy|booming|rumbling|large|giant|warm",
        _Mods(pitch=-1, bright=-0.5, size=1),
    ),
    (r"short|brief|quick|single|sudden|one shot|momentary", _Mods(length=-1)),
    (
        r"long|longer|continuous|constant|steady|ambient|ambience|background|endless|"
        r"sustained|lingering|extended",
        _Mods(length=1),
    ),
    (r"fast|rapid|rapidly|frantic|hurried|racing|speeding", _Mods(speed=1)),
    (r"slow|slowly|lazy|leisurely", _Mods(speed=-1)),
)

_SCENE_WORDS: tuple[tuple[str, str], ...] = (
    (r"metal|metallic|tin|steel|iron|corrugated|aluminium|aluminum|car roof|tent", "metal"),
    (r"wood|wooden|oak|timber|floorboards?", "wood"),
    (
        r"hall|cathedral|church|cave|tunnel|warehouse|stairwell|echo\w*|reverb\w*|cavern|"
        r"canyon|hangar|gym|parking garage",
        "big",
    ),
    (r"room|indoors?|inside|corridor|hallway|kitchen|office|bathroom|house|apartment", "room"),
    (r"gravel|snow|leaves|grass|dirt|sand|forest floor|mud", "crunch"),
    (r"heels|tiles?|marble|concrete|stone|pavement|sidewalk|floor", "hard"),
)

# Word patterns and the layers they ask for: (layer, gain dB, variant). Earlier entries win
# where patterns overlap ("door bell" is a doorbell, not a knock and a bell).
_VOCABULARY: tuple[tuple[str, tuple[tuple[str, float, str], ...]], ...] = (
    (
        r"thunder ?storms?|storms?|stormy|tempest",
        (("rain", 0, ""), ("wind", -8, ""), ("thunder", -2, "")),
    ),
    (
        r"white noise|pink noise|tv static|radio static|static|hiss\w*|vinyl\w*|radio",
        (("static", 0, ""),),
    ),
    (r"door ?bells?", (("bell", 0, "doorbell"),)),
    (r"church bells?|bell tower|tolling|tolls?", (("bell", 0, "church"),)),
    (r"wind chimes?|chimes?|chiming", (("bell", 0, "chime"),)),
    (r"gongs?", (("bell", 0, "gong"),)),
    (r"bells?|dings?|dinging|ding dong", (("bell", 0, ""),)),
    (r"phones? ring\w*|phones?|telephones?|ringing|ringtone|rings?", (("ring", 0, ""),)),
    (r"sirens?|police car|ambulance", (("siren", 0, ""),)),
    (r"lasers?|zaps?|zapping|blasters?|phasers?|pew", (("laser", 0, ""),)),
    (r"heart ?beats?|heart", (("heartbeat", 0, ""),)),
    (
        r"doors? (?:creak\w*|squeak\w*|open\w*)|creak\w* doors?|squeak\w* doors?|"
        r"(?:opening|open) (?:a |the )?doors?|creak\w*|squeak\w*",
        (("creak", 0, ""),),
    ),
    (
        r"doors? (?:clos\w*|shut\w*)|(?:closing|shutting) (?:a |the )?doors?",
        (("explosion", 0, "slam"),),
    ),
    (r"door (?:slam\w*|bang\w*)|slams?|slamming|slammed", (("explosion", 0, "slam"),)),
    (r"knock\w*|door|doors|rapping|tapping", (("knock", 0, ""),)),
    (r"gun ?shots?|gunfire|shots?|guns?|pistol|rifle", (("explosion", 0, "gunshot"),)),
    (r"glass|shatter\w*|smash\w*|crash\w*", (("explosion", 0, "crash"),)),
    (r"explo\w*|blasts?|booms?|bombs?|detonation|fireworks?", (("explosion", 0, ""),)),
    (
        r"impacts?|hits?|thuds?|thump\w*|punch\w*|bang\w*|collision|punches",
        (("explosion", 0, "impact"),),
    ),
    (r"thunder\w*|lightning", (("thunder", 0, ""),)),
    (r"rain\w*|drizzl\w*|downpour|showers?", (("rain", 0, ""),)),
    (r"howl\w*", (("wind", 0, "howl"),)),
    (r"wind|winds|windy|breeze\w*|gusts?|gusty|gale|blizzard", (("wind", 0, ""),)),
    (
        r"whoosh\w*|swoosh\w*|woosh\w*|swish\w*|swoop\w*|fly ?by|flyby|zoom\w*|transitions?|"
        r"swing|swings|swipes?",
        (("whoosh", 0, ""),),
    ),
    (r"alarm clocks?|alarms?|alert", (("beep", 0, "alarm"),)),
    (r"clocks?|tick ?tock|ticking|ticks?", (("click", 0, "clock"),)),
    (r"typing|keyboards?|keystrokes?|typewriter", (("click", 0, "typing"),)),
    (r"click\w*|switch\w*|mouse|buttons?|snaps?", (("click", 0, ""),)),
    (r"buzzers?", (("beep", 0, "buzzer"),)),
    (r"beep\w*|bleep\w*|blips?|pings?|notification|microwave|timer|tones?", (("beep", 0, ""),)),
    (r"running|jogging|run|sprint\w*", (("footsteps", 0, "run"),)),
    (r"foot ?steps?|steps|walk\w*|stomp\w*|stride|pacing", (("footsteps", 0, ""),)),
    (r"applau\w*|clap\w*|ovation", (("applause", 0, ""),)),
    (r"cheer\w*", (("applause", -3, ""), ("crowd", 0, "cheer"))),
    (
        r"crowds?|murmur\w*|chatter\w*|people|audience|restaurant|cafe|café|coffee shop|"
        r"talking|voices|party|babble|market|pub|bar|conversations?|walla|chat",
        (("crowd", 0, ""),),
    ),
    (r"waterfall|rapids", (("water", 0, "waterfall"),)),
    (r"drip\w*|drops of water|water drops?|leak\w*", (("water", 0, "drip"),)),
    (r"splash\w*|dive|diving", (("water", 0, "splash"),)),
    (r"bubbl\w*|boiling|boil\w*", (("water", 0, "bubble"),)),
    (r"pour\w*|faucet|tap water|sink", (("water", 0, "pour"),)),
    (r"water|streams?|rivers?|brook|creek|babbl\w*|fountain|trickl\w*", (("water", 0, ""),)),
    (r"oceans?|sea|seaside|waves?|surf|beach|shore|tide", (("ocean", 0, ""),)),
    (
        r"fire\w*|crackl\w*|campfire|fireplace|burn\w*|flames?|bonfire|torch|embers?",
        (("fire", 0, ""),),
    ),
    (
        r"traffic|highway|road|street|city",
        (("engine", 0, "car"), ("whoosh", -8, "traffic"), ("crowd", -16, "")),
    ),
    (
        r"engines?|motor\w*|cars?|trucks?|vehicles?|idl\w*|revs?|revving|motorcycle|bus",
        (("engine", 0, "car"),),
    ),
    (r"fans?|air condition\w*|ventilat\w*|hvac|vents?", (("engine", 0, "fan"),)),
    (r"machine\w*|generator|factory|mechanical", (("engine", 0, "machine"),)),
    (
        r"drone|spaceship|sci ?fi|starship|hum|hums|humming|electric\w*|transformer|fridge|"
        r"refrigerator|neon|buzz\w*|power line",
        (("engine", 0, "hum"),),
    ),
    (
        r"birds?|chirp\w*|tweet\w*|birdsong|songbirds?|sparrows?|robins?|dawn chorus",
        (("birds", 0, ""),),
    ),
    (r"forest|woods|jungle|park|garden|countryside|meadow", (("birds", -2, ""), ("wind", -12, ""))),
    (r"night|crickets?|insects?|cicadas?", (("crickets", 0, ""), ("wind", -16, ""))),
)

_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "single": 1, "once": 1, "lone": 1,
    "two": 2, "double": 2, "twice": 2, "couple": 2, "pair": 2,
    "three": 3, "triple": 3, "thrice": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}  # fmt: skip
# Layers whose events can be counted; "a knock" still knocks three times.
_COUNTED = {"beep", "click", "knock", "bell", "explosion", "whoosh", "laser", "thunder", "ring"}
_ARTICLE_IS_ONE = _COUNTED - {"knock"}


def _read_sound_prompt(text: str, influence: float) -> tuple[list[_Layer], _Mods, _Scene]:
    words = _words(text)
    tokens = words.split(" ") if words else []
    consumed: set[int] = set()
    layers: list[_Layer] = []

    def token_span(match) -> range:
        first = words[: match.start()].count(" ")
        return range(first, first + match.group(0).count(" ") + 1)

    for pattern, asks in _VOCABULARY:
        for match in _find(pattern, words):
            span = token_span(match)
            if consumed.intersection(span):
                continue
            consumed.update(span)
            last = tokens[span[-1]]
            repeat = last.endswith("ing") or (last.endswith("s") and not last.endswith("ss"))
            for name, gain, variant in asks:
                if any(layer.name == name for layer in layers):
                    continue  # "wind howling" is one wind, howling
                layers.append(
                    _Layer(name, variant, gain, count=None, repeat=repeat, position=span[0])
                )

    # Adjectives: right before a sound word they shape that layer, elsewhere all of them.
    local: dict[int, _Mods] = {}
    global_mods = _Mods()
    starts = {layer.position for layer in layers}
    for pattern, mods in _ADJECTIVES:
        for match in _find(pattern, words):
            span = token_span(match)
            target = next(
                (
                    s
                    for s in range(span[-1] + 1, span[-1] + 3)
                    if s in starts and all(t not in consumed for t in range(span[-1] + 1, s))
                ),
                None,
            )
            if target is None:
                global_mods = global_mods.plus(mods)
            else:  # the length is the whole sound's, whichever word it stands before
                global_mods = global_mods.plus(_Mods(length=mods.length))
                local[target] = local.get(target, _Mods()).plus(replace(mods, length=0.0))

    factor = 0.6 + 0.8 * influence
    for layer in layers:
        count = _count_before(tokens, layer.position, layer.name)
        if count is not None:
            layer.count, layer.repeat = count, False
        own = local.get(layer.position, _Mods())
        layer.gain_db += own.gain * factor
        layer.mods = global_mods.plus(replace(own, gain=0.0)).scaled(factor)

    scene = _Scene()
    for pattern, kind in _SCENE_WORDS:
        if next(_find(pattern, words), None) is None:
            continue
        if kind == "metal":
            scene.metal = 1.0
        elif kind == "wood":
            scene.wood = 1.0
        elif kind == "big":
            scene.space = max(scene.space, 1.0)
        elif kind == "room":
            scene.space = max(scene.space, 0.4)
        else:
            scene.surface = scene.surface or kind
    seconds = re.search(r"(\d+(?:\.\d+)?)\s*(?:-\s*)?(seconds?|secs?|s|minutes?|mins?)\b", words)
    if seconds:
        value = float(seconds.group(1)) * (60 if seconds.group(2).startswith("m") else 1)
        scene.seconds = value
    elif re.search(r"\bhalf a second\b", words):
        scene.seconds = 0.5
    return layers, global_mods.scaled(factor), scene


def _count_before(tokens: list[str], position: int, name: str) -> int | None:
    if name not in _COUNTED:
        return None
    for index in range(position - 1, max(-1, position - 4), -1):
        word = tokens[index]
        if word.isdigit() and 0 < int(word) <= 50:
            return int(word)
        if word in _NUMBERS:
            if word in ("a", "an") and name not in _ARTICLE_IS_ONE:
                return None
            return _NUMBERS[word]
    return None


def _natural_seconds(layer: _Layer) -> float:
    """How long a layer wants to be heard, when the request leaves the length open."""
    count = layer.count
    name, variant = layer.name, layer.variant
    if name == "knock":
        return (count or 3) * 0.22 + 0.8
    if name == "beep":
        if variant == "alarm" or layer.repeat:
            return 4.0
        return 1.5 if variant == "buzzer" else (count or 1) * 0.35 + 0.6
    if name == "click":
        if variant or layer.repeat:
            return 4.0
        return (count or 1) * 0.25 + 0.5
    if name == "bell":
        per = {"church": 2.4, "gong": 5.0, "doorbell": 2.5, "chime": 6.0}.get(variant, 1.5)
        return per if variant == "chime" else per * (count or 1) + 1.5
    if name == "explosion":
        per = {"impact": 0.6, "slam": 0.8, "gunshot": 0.6, "crash": 2.0}.get(variant, 2.5)
        tail = {"impact": 0.9, "slam": 0.9, "gunshot": 1.8, "crash": 1.5}.get(variant, 3.5)
        return per * ((count or 1) - 1) + tail
    if name == "whoosh":
        return 4.0 if layer.repeat else max(1.5, (count or 1) * 1.1 + 0.4)
    if name == "laser":
        return 3.0 if layer.repeat else (count or 1) * 0.35 + 0.6
    if name == "thunder":
        return 7.0 if (count or 1) == 1 else 5.0 * count
    if name == "ring":
        return 6.0
    if name == "creak":
        return 2.5
    if name == "ocean":
        return 10.0
    if name == "footsteps":
        return 4.0
    return 5.0


def _choose_seconds(layers: list[_Layer], mods: _Mods, scene: _Scene, loop: bool) -> float:
    low, high = SFX_DURATION_RANGE
    if scene.seconds is not None:
        return float(np.clip(round(scene.seconds, 2), low, high))
    seconds = max((_natural_seconds(layer) for layer in layers), default=5.0)
    counted = any(layer.count and layer.count > 1 for layer in layers)
    if mods.length < 0 and not counted:
        seconds = min(seconds, 1.0)
    elif mods.length > 0:
        seconds = max(seconds, 10.0)
    if loop:
        seconds = max(seconds, 2.0)
    return float(np.clip(math.ceil(seconds * 10 - 1e-9) / 10, low, high))


# --- Sound effects: layers ----------------------------------------------------------------


@dataclass
class _Ctx:
    rng: np.random.Generator
    n: int  # samples to render: the request's length plus a loop's crossfade
    span: int  # the request's length in samples: where events are placed
    mods: _Mods
    scene: _Scene
    variant: str
    count: int | None
    repeat: bool

    @property
    def seconds(self) -> float:
        return self.span / SR


def _starts(c: _Ctx, gap: float, first: float = 0.08, single: int = 1, jitter=0.0) -> np.ndarray:
    """Where a layer's events start (samples): its count, or repeated through the sound."""
    if c.count is not None:
        count = c.count
    elif c.repeat:
        count = max(1, int((c.n / SR - first) / gap) + 1)
    else:
        count = single
    times = first + gap * np.arange(count)
    if jitter:
        times = times + c.rng.uniform(-jitter, jitter, count) * gap
    times = times[times < max(c.n / SR - 0.05, first + 1e-3)]
    return np.maximum(0, (times * SR).astype(np.int64))


def _rain(c: _Ctx) -> np.ndarray:
    rng, m, n = c.rng, c.mods, c.n
    t = _times(n)
    hiss = _filter(rng.standard_normal(n), 450 * 2 ** (0.6 * m.bright), 15000, tilt=-2.5)
    hiss = _normalised(hiss * (1 + 0.2 * _wander(rng, t, 0.3)))
    rate = 110 * m.density
    count = rng.poisson(rate * n / SR)
    onsets = rng.integers(0, n, count)
    amps = np.minimum(rng.pareto(2.5, count) + 0.15, 5.0) * rng.choice((-1.0, 1.0), count)
    which = rng.integers(0, 6, count)
    kernels = []
    for _ in range(6):
        if c.scene.metal:
            kt = _times(int(0.18 * SR))
            kernel = _partials(
                kt,
                rng.uniform(900, 3200) * 2 ** (0.4 * m.pitch),
                (1.0, 1.58, 2.37, 3.9),
                (1.0, 0.6, 0.4, 0.2),
                (0.05, 0.04, 0.028, 0.018),
                rng,
            )
            kernel[: int(0.01 * SR)] += 0.8 * _noise_burst(rng, 0.01, 0.0008, 2000, 12000)
        else:
            kt = _times(int(0.02 * SR))
            kernel = _noise_burst(rng, 0.02, rng.uniform(0.0005, 0.0015), 1500, 12000)
            kernel += (
                0.6
                * np.sin(2 * np.pi * rng.uniform(1800, 5000) * kt)
                * np.exp(-kt / rng.uniform(0.002, 0.006))
            )
        kernels.append(kernel / (np.max(np.abs(kernel)) or 1))
    drops = _normalised(_scatter(n, onsets, amps, which, kernels))
    drop_level = (0.7 + 0.7 * c.scene.metal) * min(1.6, 0.6 + 0.4 * m.density)
    return 0.8 * hiss + drop_level * drops


def _wind(c: _Ctx) -> np.ndarray:
    rng, m = c.rng, c.mods
    ft = _frame_times(c.n)
    howl = c.variant == "howl"
    centre = (700 if howl else 420) * 2 ** (0.7 * m.pitch + 0.4 * m.bright)
    centre = centre * 2 ** ((0.6 if howl else 0.8) * _wander(rng, ft, 0.2 if howl else 0.12))
    gust = 0.15 + 0.85 / (1 + np.exp(-1.8 * _wander(rng, ft, 0.25) - 0.4 * np.log2(m.density)))
    shape = _bump(centre, 0.3 if howl else 0.9) * gust[:, None]
    shape += 0.35 * _band(35, 250) * (gust**2)[:, None]
    return _spectral_noise(rng, c.n, shape)


def _whoosh(c: _Ctx) -> np.ndarray:
    rng, m = c.rng, c.mods
    ft = _frame_times(c.n)
    length = float(np.clip(1.0 / 1.5**m.speed * 2 ** (0.3 * m.size), 0.25, c.seconds * 0.95))
    if c.variant == "traffic":
        times = np.cumsum(rng.uniform(1.5, 5.0, int(c.n / SR / 1.5) + 2)) - 2.0
        lengths = rng.uniform(1.5, 3.5, times.size)
    elif c.count is None and not c.repeat:
        times, lengths = np.array([(c.seconds - length) / 2]), np.array([length])
    else:
        times = _starts(c, length * 1.25, first=0.05) / SR
        lengths = np.full(times.size, length)
    amp = np.zeros(ft.size)
    centre = np.full(ft.size, 300.0)
    for start, size in zip(times, lengths, strict=True):
        u = np.clip((ft - start) / size, 0, 1)
        env = np.where((ft > start) & (ft < start + size), np.sin(np.pi * u**0.75) ** 2, 0.0)
        louder = env > amp
        centre = np.where(louder, 260 * 2 ** (3.0 * env + 0.8 * m.pitch), centre)
        amp = np.maximum(amp, env)
    shape = _bump(centre, 0.8) * amp[:, None] + 0.3 * _band(60, 400) * amp[:, None] ** 2
    return _spectral_noise(rng, c.n, shape)


def _click(c: _Ctx) -> np.ndarray:
    rng, m = c.rng, c.mods
    pitch = 2 ** (0.5 * m.pitch)
    if c.variant == "clock":
        period = 1.0 / 1.5**m.speed
        if c.count is not None:
            onsets = _starts(c, period, first=0.1)
        else:
            onsets = (np.arange(0.1, c.n / SR, period) * SR).astype(np.int64)
        which = np.arange(onsets.size) % 2
        amps = np.ones(onsets.size)
    elif c.variant == "typing":
        gaps = rng.gamma(2.0, 0.06 / 1.4**m.speed, int(c.n / SR * 20) + 4)
        pauses = rng.random(gaps.size) < 0.06
        gaps = gaps + pauses * rng.uniform(0.3, 0.9, gaps.size)
        onsets = ((0.05 + np.cumsum(gaps)) * SR).astype(np.int64)
        onsets = onsets[onsets < c.n]
        which = rng.integers(0, 4, onsets.size)
        amps = rng.uniform(0.5, 1.0, onsets.size)
    else:
        onsets = _starts(c, 0.22 / 1.3**m.speed, first=0.05, jitter=0.05)
        which = rng.integers(0, 4, onsets.size)
        amps = rng.uniform(0.85, 1.0, onsets.size)
    kernels = []
    for index in range(4):
        kt = _times(int(0.03 * SR))
        if c.variant == "clock":
            freq = (3200 if index % 2 == 0 else 2500) * pitch
            kernel = np.sin(2 * np.pi * freq * kt) * np.exp(-kt / 0.006)
            kernel += 0.5 * np.sin(2 * np.pi * 900 * pitch * kt) * np.exp(-kt / 0.01)
        else:
            freq = rng.uniform(2500, 4500) * pitch
            kernel = 0.6 * np.sin(2 * np.pi * freq * kt) * np.exp(-kt / rng.uniform(0.002, 0.005))
            if c.variant == "typing":
                kernel += 0.5 * np.sin(2 * np.pi * rng.uniform(500, 900) * kt) * np.exp(-kt / 0.01)
        kernel += _noise_burst(rng, 0.03, rng.uniform(0.0004, 0.001), 1500, 14000)
        kernels.append(kernel / np.max(np.abs(kernel)))
    return _scatter(c.n, onsets, amps, which, kernels)


def _tone(freq: float, seconds: float, harmonics=(1.0, 0.08), edge=0.004) -> np.ndarray:
    t = _times(max(int(seconds * SR), 8))
    out = sum(a * np.sin(2 * np.pi * freq * (k + 1) * t) for k, a in enumerate(harmonics))
    return _fades(out, edge, edge)


def _beep(c: _Ctx) -> np.ndarray:
    m = c.mods
    out = np.zeros(c.n)
    freq = 1000 * 2**m.pitch
    if c.variant == "alarm":
        pattern = np.arange(0.05, c.n / SR, 1.0 / 1.3**m.speed)
        for start in pattern:
            for k in range(4):
                _add(out, int((start + k * 0.12) * SR), _tone(freq * 1.2, 0.07))
        return out
    if c.variant == "buzzer":
        k = np.arange(1, 16, 2)
        harmonics = np.zeros(15)
        harmonics[k - 1] = 1.0 / k
        note = _tone(180 * 2 ** (0.5 * m.pitch), 0.8 if m.length >= 0 else 0.4, harmonics, 0.01)
        for start in _starts(c, 1.2, first=0.1):
            _add(out, int(start), note)
        return out
    seconds = 0.5 if m.length > 0 else 0.15
    note = _tone(freq, seconds)
    for start in _starts(c, (seconds + 0.2) / 1.2**m.speed, first=0.1):
        _add(out, int(start), note)
    return out


def _footsteps(c: _Ctx) -> np.ndarray:
    rng, m = c.rng, c.mods
    gap = (0.32 if c.variant == "run" else 0.55) / 1.25**m.speed
    onsets = _starts(replace(c, repeat=True), gap, first=0.12, jitter=0.04)
    amps = np.where(np.arange(onsets.size) % 2, 0.85, 1.0) * rng.uniform(0.85, 1.1, onsets.size)
    kernels = []
    for _ in range(4):
        kt = _times(int(0.35 * SR))
        freq = 75 * 2 ** (0.4 * m.pitch) * rng.uniform(0.9, 1.1)
        glide = freq * (1 + 0.6 * np.exp(-kt / 0.012))
        kernel = 0.9 * np.sin(2 * np.pi * np.cumsum(glide) / SR) * np.exp(-kt / 0.045)
        kernel[: int(0.12 * SR)] += 0.5 * _noise_burst(rng, 0.12, 0.025, 250, 3500)
        toe = int(rng.uniform(0.06, 0.09) * SR)
        kernel[toe : toe + int(0.08 * SR)] += 0.3 * _noise_burst(rng, 0.08, 0.015, 300, 4000)
        if c.scene.surface == "crunch":
            grains = (rng.uniform(0, 0.16, 40) * SR).astype(np.int64)
            burst = _noise_burst(rng, 0.004, 0.0008, 1200, 9000)
            for at, amp in zip(grains, rng.uniform(0.2, 0.7, grains.size), strict=True):
                _add(kernel, int(at), burst, amp)
        elif c.scene.surface == "hard" or c.scene.wood:
            kernel[: int(0.03 * SR)] += 0.8 * _noise_burst(rng, 0.03, 0.004, 1800, 10000)
        kernels.append(kernel / np.max(np.abs(kernel)))
    return _scatter(c.n, onsets, amps, rng.integers(0, 4, onsets.size), kernels)


_VOWELS = (
    (730, 1090, 2440),
    (530, 1840, 2480),
    (270, 2290, 3010),
    (570, 840, 2410),
    (300, 870, 2240),
    (660, 1720, 2410),
)
_SPEAKERS = ((1.0, 115.0), (1.17, 210.0), (1.3, 260.0))  # formant scale, pitch


def _crowd_templates() -> np.ndarray:
    """Power spectra of each vowel for each kind of speaker: (speakers x vowels, bins)."""
    f = _FREQS
    rows = []
    for scale, pitch in _SPEAKERS:
        comb = 0.25 + 0.75 * (0.5 + 0.5 * np.cos(2 * np.pi * f / pitch)) ** 6
        source = (comb + 0.1) / np.sqrt(1 + (f / 600) ** 2) * _response(f, pitch * 0.8, None)
        for formants in _VOWELS:
            envelope = sum(
                amp * np.exp(-0.5 * ((f - formant * scale) / (50 + 0.05 * formant)) ** 2)
                for formant, amp in zip(formants, (1.0, 0.7, 0.35), strict=True)
            )
            rows.append((source * (envelope + 0.02)) ** 2)
    return np.array(rows)


def _crowd(c: _Ctx) -> np.ndarray:
    rng, m = c.rng, c.mods
    ft = _frame_times(c.n)
    cheer = c.variant == "cheer"
    voices = int(np.clip(round(14 * m.density**0.8 * (1.6 if cheer else 1)), 4, 60))
    weights = np.zeros((ft.size, len(_SPEAKERS) * len(_VOWELS)))
    rows = np.arange(ft.size)
    for _ in range(voices):
        speaker = rng.integers(0, 3)
        level = rng.uniform(0.15, 1.0) ** 2
        rate = rng.uniform(1.5, 2.5) if cheer else rng.uniform(3.5, 5.5) * 1.15**m.speed
        turns = int(ft[-1] / 0.2) + 4
        talk, pause = rng.uniform(0.8, 3.5, turns), rng.uniform(0.2, 1.5, turns)
        marks = np.cumsum(np.where(np.arange(turns) % 2 == 0, talk, pause))
        marks -= rng.uniform(0, marks[1])
        talking = (np.searchsorted(marks, ft) % 2 == 0) if not cheer else np.ones(ft.size, bool)
        position = ft * rate + rng.uniform(0, 1)
        syllable = np.floor(position).astype(np.int64)
        syllable -= syllable.min()
        choices = (0, 1, 3) if cheer else tuple(range(len(_VOWELS)))
        vowel = rng.choice(choices, syllable.max() + 1)[syllable]
        loud = rng.uniform(0.4, 1.0, syllable.max() + 1)[syllable]
        envelope = np.sin(np.pi * (position % 1.0)) ** 2 * loud * talking
        weights[rows, speaker * len(_VOWELS) + vowel] += level * envelope**2
    swell = 1.0
    if cheer:
        swell = np.interp(ft, [0, 0.6, max(c.seconds * 0.7, 0.7), c.seconds + 1], [0.3, 1, 1, 0.4])
    power = weights @ _crowd_templates()
    shape = np.sqrt(power + 0.002 * power.mean()) * np.asarray(swell)[..., None]
    return _spectral_noise(rng, c.n, shape)


def _thunder(c: _Ctx) -> np.ndarray:
    rng, m = c.rng, c.mods
    ft = _frame_times(c.n)
    size = 2 ** (0.5 * m.size)
    if c.count is not None or c.repeat:
        starts = _starts(c, 5.5, first=0.15, jitter=0.3) / SR
    else:
        starts = np.array([0.15 if c.seconds < 4 else rng.uniform(0.1, 0.25) * c.seconds])
    rumble = np.zeros(ft.size)
    crack = np.zeros(ft.size)
    crack_level = float(np.clip(0.9 - 0.9 * m.distance, 0.0, 1.4))
    for start in starts:
        for _ in range(rng.integers(3, 7)):
            at = start + rng.uniform(0, 2.0 * size) ** 1.3
            u = np.maximum(ft - at, 0)
            attack, decay = rng.uniform(0.05, 0.4), rng.uniform(0.6, 2.2) * size
            rumble += rng.uniform(0.4, 1.0) * (1 - np.exp(-u / attack)) * np.exp(-u / decay)
        u = np.maximum(ft - start, 0)
        crack += (ft >= start) * np.exp(-u / 0.12) * crack_level
    low = _band(22, 320 * 2 ** (0.5 * m.bright), tilt=-3.0)
    shape = rumble[:, None] * low + crack[:, None] * _band(300, 9000) * 0.5
    return _spectral_noise(rng, c.n, shape)


def _bubbles(rng, n, onsets, f_lo, f_hi, tau_lo, tau_hi, amps=None) -> np.ndarray:
    count = len(onsets)
    t = _times(int(0.06 * SR))[None, :]
    f0 = rng.uniform(f_lo, f_hi, count)[:, None]
    tau = rng.uniform(tau_lo, tau_hi, count)[:, None]
    sigma = rng.uniform(8, 40, count)[:, None]
    grains = np.sin(2 * np.pi * f0 * (t + sigma * t**2 / 2)) * np.exp(-t / tau)
    grains *= np.minimum(1, t / 0.0005)
    if amps is None:
        amps = rng.uniform(0.2, 1.0, count)
    return _overlay(n, onsets, grains * np.asarray(amps)[:, None])


def _water(c: _Ctx) -> np.ndarray:
    rng, m, n = c.rng, c.mods, c.n
    ft = _frame_times(n)
    pitch = 2 ** (0.5 * m.pitch)
    if c.variant == "drip":
        onsets = _starts(replace(c, repeat=c.count is None), 0.7 / 1.3**m.speed, 0.1, jitter=0.3)
        plops = _bubbles(rng, n, onsets, 900 * pitch, 1800 * pitch, 0.015, 0.03)
        return plops + 0.3 * _convolve(plops, _reverb_ir(rng, 0.6)[: int(0.6 * SR)])
    if c.variant == "splash":
        out = np.zeros(n)
        burst = _noise_burst(rng, 1.2, 0.25 * 2 ** (0.5 * m.size), 300, 10000, attack=0.01)
        _add(out, int(0.05 * SR), burst)
        count = int(60 * m.density)
        onsets = (0.05 + rng.exponential(0.35, count)) * SR
        out += 0.4 * _bubbles(rng, n, onsets.astype(np.int64), 500, 2500, 0.005, 0.02)
        return out
    bands = np.geomspace(300, 6000, 8) * pitch
    if c.variant == "waterfall":
        shape = _band(80, 12000, tilt=-1.0) * (1 + 0.15 * _wander(rng, ft, 1.0))[:, None]
        rate, f_lo, f_hi = 40, 300, 1500
    elif c.variant == "bubble":
        shape = _band(60, 900, tilt=-3.0) * (1 + 0.3 * _wander(rng, ft, 3.0))[:, None] * 0.5
        rate, f_lo, f_hi = 60, 200 * pitch, 700 * pitch
    else:
        gains = np.exp(0.8 * np.stack([_wander(rng, ft, 12.0) for _ in bands], axis=1))
        templates = np.stack([_bump(b, 0.35) for b in bands])
        shape = gains @ templates * _band(250, 7000)
        if c.variant == "pour":
            rising = 350 * 2 ** (1.6 * np.clip(ft / max(c.seconds, 0.5), 0, 1)) * pitch
            shape += 2.0 * _bump(rising, 0.15)
        rate, f_lo, f_hi = 30, 500 * pitch, 2500 * pitch
    base_noise = _normalised(_spectral_noise(rng, n, shape))
    count = rng.poisson(rate * m.density * n / SR)
    onsets = rng.integers(0, n, count)
    bubbles = _bubbles(rng, n, onsets, f_lo, f_hi, 0.004, 0.02)
    return base_noise + 0.8 * _normalised(bubbles)


def _ocean(c: _Ctx) -> np.ndarray:
    rng, m = c.rng, c.mods
    ft = _frame_times(c.n)
    low = np.full(ft.size, 0.08)
    wash = np.full(ft.size, 0.06)
    at = -rng.uniform(0, 8)
    while at < ft[-1]:
        period = rng.uniform(6, 10) / 1.2**m.speed
        u = ft - at
        rise = 0.45 * period
        swell = np.where((u > 0) & (u < rise), np.sin(0.5 * np.pi * u / rise) ** 2, 0.0)
        after = np.where(u >= rise, np.exp(-(u - rise) / (0.3 * period)), 0.0)
        size = rng.uniform(0.6, 1.0)
        low += size * (0.6 * swell + after)
        wash += size * (0.25 * swell**3 + after * (1 - np.exp(-(u - rise).clip(0) / 0.15)))
        at += period
    shape = low[:, None] * _band(40, 500) + wash[:, None] * _band(
        400, 9000 * 2 ** (0.5 * m.bright), tilt=-2.0
    )
    return _spectral_noise(rng, c.n, shape)


def _fire(c: _Ctx) -> np.ndarray:
    rng, m, n = c.rng, c.mods, c.n
    ft = _frame_times(n)
    roar = _band(40, 700, tilt=-3.0) * (1 + 0.35 * _wander(rng, ft, 2.5))[:, None]
    hiss = 0.05 * _band(2500, 12000) * (1 + 0.5 * _wander(rng, ft, 4.0))[:, None]
    bed = _normalised(_spectral_noise(rng, n, roar + hiss))
    parents = rng.uniform(0, n / SR, rng.poisson(2.5 * m.density * n / SR))
    children = rng.integers(1, 9, parents.size)
    times = np.repeat(parents, children) + rng.exponential(0.03, children.sum())
    onsets = (times * SR).astype(np.int64)
    count = onsets.size
    t = _times(int(0.02 * SR))[None, :]
    taus = rng.uniform(0.0002, 0.001, count)[:, None]
    grains = np.diff(rng.standard_normal((count, t.size + 1)), axis=1) * np.exp(-t / taus)
    pops = rng.random(count) < 0.15
    freqs = rng.uniform(250, 900, count)[:, None]
    grains[pops] = (np.sin(2 * np.pi * freqs * t) * np.exp(-t / 0.006))[pops] * 2
    amps = np.minimum(rng.pareto(2.0, count) + 0.1, 6.0)
    crackles = _overlay(n, onsets, grains * amps[:, None])
    return 0.7 * bed + 0.9 * _normalised(crackles)


def _knock(c: _Ctx) -> np.ndarray:
    rng, m = c.rng, c.mods
    gap = 0.2 / 1.2**m.speed
    if c.repeat and c.count is None:
        groups = np.arange(0.1, c.n / SR - 0.5, 1.6)
        times = (groups[:, None] + gap * np.arange(3)).ravel()
        onsets = (times * SR).astype(np.int64)
    else:
        onsets = _starts(replace(c, count=c.count or 3), gap, first=0.1, jitter=0.06)
    if c.scene.metal:
        ratios, decays = (1.0, 2.69, 4.5, 6.5), (0.25, 0.15, 0.09, 0.05)
        base_freq = 420.0
    else:
        ratios, decays = (1.0, 2.0, 3.6, 5.9, 9.5), (0.06, 0.05, 0.035, 0.025, 0.015)
        base_freq = 95.0
    kernels = []
    for _ in range(3):
        kt = _times(int(0.4 * SR))
        freq = base_freq * 2 ** (0.3 * m.pitch) * rng.uniform(0.97, 1.03)
        kernel = _partials(kt, freq, ratios, (1.0, 0.8, 0.6, 0.4, 0.25)[: len(ratios)], decays, rng)
        kernel[: int(0.01 * SR)] += 0.5 * _noise_burst(rng, 0.01, 0.0015, 800, 6000)
        kernel *= np.minimum(1, kt / 0.0005)
        kernels.append(kernel / np.max(np.abs(kernel)))
    amps = rng.uniform(0.85, 1.05, onsets.size)
    out = _scatter(c.n, onsets, amps, rng.integers(0, 3, onsets.size), kernels)
    return out + 0.15 * _convolve(out, _reverb_ir(rng, 0.4))


_BELL = (
    (0.5, 1.0, 1.183, 1.506, 2.0, 2.514, 2.662, 3.011, 4.166),
    (0.35, 1.0, 0.6, 0.4, 0.5, 0.25, 0.2, 0.15, 0.1),
    (2.0, 1.2, 1.0, 0.8, 0.6, 0.45, 0.4, 0.35, 0.25),
)


def _bell(c: _Ctx) -> np.ndarray:
    rng, m, n = c.rng, c.mods, c.n
    out = np.zeros(n)
    pitch = 2**m.pitch
    size = 2 ** (0.5 * m.size)
    if c.variant == "chime":
        notes = np.array([1568.0, 1760.0, 2093.0, 2349.0, 2637.0, 3136.0]) * pitch
        times = np.cumsum(rng.exponential(0.35 / m.density, int(n / SR * 6 * m.density) + 4))
        for at in times[times < n / SR]:
            t = _times(int(2.5 * SR))
            note = _partials(
                t, rng.choice(notes), (1.0, 2.76, 5.4), (1.0, 0.3, 0.1), (1.8, 0.5, 0.15), rng
            )
            _add(out, int(at * SR), note, rng.uniform(0.3, 1.0))
        return out
    if c.variant == "doorbell":
        for start in _starts(c, 2.0, first=0.1):
            for offset, freq in ((0.0, 659.3), (0.55, 523.3)):
                t = _times(int(1.8 * SR))
                note = _partials(
                    t,
                    freq * pitch,
                    (1.0, 2.0, 3.0, 4.2),
                    (1.0, 0.4, 0.2, 0.1),
                    (1.2, 0.6, 0.3, 0.15),
                    rng,
                )
                _add(out, int(start + offset * SR), note)
        return out
    if c.variant == "gong":
        for start in _starts(c, 5.0, first=0.05):
            t = _times(min(n, int(7 * SR)))
            ratios = (1.0, 1.48, 1.89, 2.4, 2.9, 3.5, 4.1, 4.9, 5.7)
            note = _partials(
                t,
                110 * pitch,
                ratios,
                np.geomspace(1, 0.15, 9),
                np.geomspace(6.0, 1.5, 9) * size,
                rng,
            )
            note *= 1 - 0.7 * np.exp(-t / 0.15)
            _add(out, int(start), note)
        return out
    church = c.variant == "church"
    freq = (196.0 if church else 880.0) * pitch / (size if church else size**0.5)
    decay = (4.5 if church else 1.6) * size
    gap = 2.4 if church else 1.2
    count = c.count if c.count is not None else (3 if church and c.repeat else None)
    for start in _starts(replace(c, count=count), gap / 1.2**m.speed, first=0.05):
        t = _times(min(n, int(decay * 3 * SR)))
        ratios = np.array(_BELL[0]) * rng.uniform(0.998, 1.002, len(_BELL[0]))
        note = _partials(t, freq, ratios, _BELL[1], np.array(_BELL[2]) * decay / 1.2, rng)
        _add(out, int(start), note * np.minimum(1, t / 0.001))
    return out


def _engine(c: _Ctx) -> np.ndarray:
    rng, m, n = c.rng, c.mods, c.n
    t = _times(n)
    if c.variant == "fan":
        ft = _frame_times(n)
        shape = _band(120, 5000, tilt=-3.0) * (1 + 0.05 * _wander(rng, ft, 0.5))[:, None]
        air = _normalised(_spectral_noise(rng, n, shape))
        blade = 95 * 2 ** (0.5 * m.pitch) * (1 + 0.01 * _wander(rng, t, 0.3))
        tone = _osc(_table([1.0, 0.3, 0.15]), np.cumsum(blade) / SR)
        return air + 0.25 * tone
    if c.variant == "hum":
        mains = rng.choice((50.0, 60.0)) * 2 ** round(m.pitch)
        amps = np.array([1.0, 0.5, 0.7, 0.25, 0.35, 0.12, 0.2, 0.08, 0.1, 0.05, 0.06, 0.04])
        amps = np.concatenate([amps, 0.03 * np.ones(18)]) * (1 + 0.3 * m.bright)
        freq = mains * (1 + 0.0005 * _wander(rng, t, 0.5))
        hum = _osc(_table(amps[: int(SR * 0.45 / mains)]), np.cumsum(freq) / SR)
        hum *= 1 + 0.08 * _wander(rng, t, 0.7)
        return hum + 0.04 * _normalised(_filter(rng.standard_normal(n), 100, 6000)) * _rms(hum)
    base_freq = (50.0 if c.variant == "machine" else 32.0) * 2 ** (0.5 * m.pitch - 0.3 * m.size)
    freq = base_freq * (1 + 0.03 * _wander(rng, t, 0.5) + 0.25 * max(m.speed, 0))
    phase = np.cumsum(freq) / SR
    amps = (np.arange(1, 41) ** -0.7) * rng.uniform(0.6, 1.0, 40)
    tone = _osc(_table(amps[: int(SR * 0.3 / base_freq)]), phase)
    rough = 1 + 0.3 * _normalised(_filter(rng.standard_normal(n), None, 60))
    body = _normalised(_filter(rng.standard_normal(n), 80, 1200)) * (
        0.6 + 0.4 * np.sin(2 * np.pi * phase)
    )
    out = _normalised(tone * rough) + 0.5 * body
    if c.variant == "machine":
        onsets = (np.arange(0.1, n / SR, 0.5) * SR).astype(np.int64)
        kernel = _partials(
            _times(int(0.1 * SR)), 1300, (1.0, 2.4, 3.9), (1, 0.5, 0.3), (0.02, 0.015, 0.01), rng
        )
        out += 0.5 * _scatter(n, onsets, np.ones(onsets.size), np.zeros(onsets.size), [kernel])
    return out


def _applause(c: _Ctx) -> np.ndarray:
    rng, m, n = c.rng, c.mods, c.n
    rate = 70 * m.density
    times = np.sort(rng.uniform(0, n / SR, rng.poisson(rate * n / SR)))
    span = c.seconds
    envelope = np.interp(times, [0, min(0.5, span / 4), span * 0.65, span], [0.25, 1, 1, 0.15])
    if c.repeat or c.span < c.n:  # looping or long applause: steady
        envelope = np.ones(times.size)
    times = times[rng.random(times.size) < envelope]
    length = int(0.02 * SR)
    t = _times(length)
    bank = np.stack(
        [
            _filter(rng.standard_normal(length), f * 0.7, f * 1.6)
            * np.exp(-t / rng.uniform(0.004, 0.012))
            for f in rng.uniform(700, 2500, 24) * 2 ** (0.3 * m.pitch)
        ]
    )
    bank /= np.max(np.abs(bank), axis=1, keepdims=True)
    grains = bank[rng.integers(0, 24, times.size)] * rng.uniform(0.3, 1.0, times.size)[:, None]
    return _overlay(n, (times * SR).astype(np.int64), grains)


def _birds(c: _Ctx) -> np.ndarray:
    rng, m, n = c.rng, c.mods, c.n
    out = np.zeros(n)
    for _ in range(int(np.clip(round(2 + 2 * m.density), 1, 8))):
        base_freq = rng.uniform(2500, 5500) * 2 ** (0.4 * m.pitch)
        note_len = rng.uniform(0.04, 0.12)
        notes = int(rng.integers(2, 8))
        slope = rng.uniform(-0.7, 0.7)
        trill = rng.random() < 0.3
        gap = rng.uniform(1.5, 5.0) / 1.2**m.speed
        level = rng.uniform(0.3, 1.0)
        at = rng.uniform(0, min(gap, n / SR * 0.5))
        while at < n / SR:
            pieces = []
            for index in range(notes * (3 if trill else 1)):
                length = note_len * (0.4 if trill else rng.uniform(0.7, 1.3))
                u = np.linspace(0, 1, max(int(length * SR), 8))
                start = base_freq * (1 + 0.15 * np.sin(index * 1.7)) * rng.uniform(0.95, 1.05)
                freq = start * 2 ** (slope * u) * (1 + 0.04 * np.sin(2 * np.pi * 45 * u * length))
                phase = 2 * np.pi * np.cumsum(freq) / SR
                pieces.append(np.sin(phase) * np.sin(np.pi * u) ** 2 + 0.12 * np.sin(2 * phase))
                pieces.append(np.zeros(int(rng.uniform(0.01, 0.05 if trill else 0.08) * SR)))
            _add(out, int(at * SR), np.concatenate(pieces), level)
            at += gap * rng.uniform(0.7, 1.4)
    return out


def _crickets(c: _Ctx) -> np.ndarray:
    rng, m, n = c.rng, c.mods, c.n
    t = _times(n)
    out = np.zeros(n)
    for _ in range(int(np.clip(round(4 * m.density), 1, 10))):
        period = rng.uniform(0.4, 1.0)
        pulse = rng.uniform(0.012, 0.02)
        pulses = int(rng.integers(2, 6))
        local = (t + rng.uniform(0, period)) % period / (2 * pulse)
        gate = (local < pulses) & (local % 1.0 < 0.5)
        shape = np.where(gate, np.sin(np.pi * 2 * (local % 1.0)) ** 2, 0.0)
        freq = rng.uniform(3800, 5200) * 2 ** (0.3 * m.pitch)
        out += rng.uniform(0.2, 1.0) * shape * np.sin(2 * np.pi * freq * t)
    return out


def _explosion_hit(rng, variant: str, m: _Mods, seconds: float) -> np.ndarray:
    size = 2 ** (0.6 * m.size)
    t = _times(max(int(seconds * SR), 64))
    out = np.zeros(t.size)

    def sine_drop(start_hz, end_hz, fall, decay):
        freq = end_hz + (start_hz - end_hz) * np.exp(-t / fall)
        return np.sin(2 * np.pi * np.cumsum(freq) / SR) * np.exp(-t / decay)

    def put(signal, gain=1.0, at=0.0):
        _add(out, int(at * SR), signal, gain)

    if variant in ("impact", "slam", "crash"):
        out += 1.2 * sine_drop(125 * 2 ** (0.4 * m.pitch), 50, 0.03, 0.16 * size)
        put(_noise_burst(rng, 0.05, 0.004, 800, 8000), 0.8)
        put(_noise_burst(rng, 0.2, 0.05, 100, 1000), 0.6)
        if variant == "slam":
            out += _partials(t, 110, (1.0, 2.1, 3.7), (0.6, 0.4, 0.2), (0.12, 0.09, 0.05), rng)
            put(_noise_burst(rng, 0.6, 0.15, 200, 3000), 0.12, 0.02)
        if variant == "crash":
            for at in np.minimum(rng.exponential(0.15, int(70 * size)), seconds * 0.8):
                length = rng.uniform(0.05, 0.3)
                freq = rng.uniform(2500, 9000)
                ping = _partials(
                    _times(int(length * SR)),
                    freq,
                    (1.0, rng.uniform(1.3, 2.7)),
                    (1.0, 0.5),
                    (length / 3, length / 5),
                    rng,
                )
                put(ping, rng.uniform(0.1, 0.5) * np.exp(-at / 0.4), at)
        return out
    if variant == "gunshot":
        put(_noise_burst(rng, 0.1, 0.008, 400, 12000, attack=0.0002), 2.0)
        put(_noise_burst(rng, 0.4, 0.06, 100, 2000), 0.8)
        out += 0.8 * sine_drop(90, 55, 0.02, 0.12)
        put(_noise_burst(rng, 2.0, 0.5, 200, 3000, attack=0.03), 0.12, 0.05)
        return out
    put(_noise_burst(rng, 1.0, 0.12 * size, 150, 9000 * 2 ** (0.5 * m.bright), 0.002), 1.0)
    out += 1.6 * sine_drop(100, 32 * 2 ** (0.3 * m.pitch), 0.15, 0.9 * size)
    rumble = _filter(rng.standard_normal(t.size), 20, 220) * np.exp(-t / (1.4 * size))
    out += 0.8 * _normalised(rumble) * (1 + 0.3 * _wander(rng, t, 6.0)) * 0.4
    for at in 0.15 + rng.exponential(0.6, 30):
        if at < seconds - 0.05:
            put(
                _noise_burst(rng, 0.01, rng.uniform(0.001, 0.004), 1000, 8000),
                0.15 * np.exp(-at / 0.8),
                at,
            )
    return out


def _explosion(c: _Ctx) -> np.ndarray:
    m = c.mods
    out = np.zeros(c.n)
    gap = {"impact": 0.6, "slam": 0.8, "gunshot": 0.5, "crash": 2.0}.get(c.variant, 2.5)
    tail = {"impact": 1.0, "slam": 1.0, "gunshot": 2.5, "crash": 2.0}.get(c.variant, 5.0)
    for start in _starts(c, gap / 1.2**m.speed, first=0.05, jitter=0.1 if c.repeat else 0):
        seconds = min(tail * 2 ** (0.5 * m.size), (c.n - start) / SR)
        _add(out, int(start), _explosion_hit(c.rng, c.variant, m, seconds))
    return out


def _laser(c: _Ctx) -> np.ndarray:
    m = c.mods
    out = np.zeros(c.n)
    length = 0.3 / 1.2**m.speed
    t = _times(int(length * SR))
    freq = 2600 * 2**m.pitch * (180 / 2600) ** (t / length)
    phase = np.cumsum(freq) / SR
    shot = (np.sin(2 * np.pi * phase) + 0.3 * np.sin(6 * np.pi * phase)) * np.exp(-t / 0.12)
    shot = _fades(shot, 0.002, 0.01)
    for start in _starts(c, length + 0.05, first=0.05):
        _add(out, int(start), shot)
    return out


def _heartbeat(c: _Ctx) -> np.ndarray:
    m, rng = c.mods, c.rng
    period = 60 / (70 * 1.25**m.speed)
    t = _times(int(0.25 * SR))
    freq = 50 * (1 + 0.8 * np.exp(-t / 0.02))
    thump = np.sin(2 * np.pi * np.cumsum(freq) / SR) * np.exp(-t / 0.06) * np.minimum(1, t / 0.004)
    thump += 0.1 * _filter(rng.standard_normal(t.size), None, 200) * np.exp(-t / 0.04)
    onsets = (np.arange(0.1, c.n / SR, period) * SR).astype(np.int64)
    lub_dub = np.concatenate([onsets, onsets + int(0.28 * period * SR)])
    amps = np.concatenate([np.ones(onsets.size), 0.7 * np.ones(onsets.size)])
    return _scatter(c.n, lub_dub, amps, np.zeros(lub_dub.size), [thump])


def _siren(c: _Ctx) -> np.ndarray:
    m, t = c.mods, _times(c.n)
    cycle = 4.5 / 1.5**m.speed
    freq = (650 + 650 * (0.5 - 0.5 * np.cos(2 * np.pi * t / cycle))) * 2 ** (0.5 * m.pitch)
    phase = np.cumsum(freq) / SR
    return _osc(_table([1.0, 0.5, 0.3, 0.2, 0.1]), phase)


def _ring(c: _Ctx) -> np.ndarray:
    t = _times(c.n)
    tone = np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t)
    tone *= 1 + 0.4 * np.sign(np.sin(2 * np.pi * 20 * t))  # the bell-like warble of a ringer
    gate = ((t - 0.1) % 6.0 < 2.0) & (t >= 0.1)
    smooth = np.convolve(gate.astype(np.float64), np.hanning(441) / np.hanning(441).sum(), "same")
    return tone * smooth


def _creak(c: _Ctx) -> np.ndarray:
    rng, m, n = c.rng, c.mods, c.n
    out = np.zeros(n)
    length = min(1.8 / 1.3**m.speed, c.seconds)
    for start in _starts(c, length + 0.4, first=0.1):
        t = _times(int(length * SR))
        rate = np.interp(t / length, [0, 0.3, 0.7, 1], [30, 95, 60, 40]) * 2 ** (0.5 * m.pitch)
        rate *= 1 + 0.15 * rng.standard_normal(t.size).cumsum() / np.sqrt(np.arange(1, t.size + 1))
        cycles = np.cumsum(rate) / SR
        pulses = np.flatnonzero(np.diff(np.floor(cycles)) > 0)
        env = np.sin(np.pi * t / length) ** 0.5
        train = np.zeros(t.size)
        train[pulses] = env[pulses] * rng.uniform(0.5, 1.0, pulses.size)
        ratios, base_freq = ((1.0, 2.3, 3.9), 900.0) if c.scene.metal else ((1.0, 2.0, 3.6), 350.0)
        body = _partials(
            _times(int(0.05 * SR)), base_freq, ratios, (1.0, 0.6, 0.3), (0.015, 0.01, 0.006), rng
        )
        _add(out, int(start), _convolve(train, body))
    return out


def _static(c: _Ctx) -> np.ndarray:
    rng, m, n = c.rng, c.mods, c.n
    t = _times(n)
    hiss = _filter(rng.standard_normal(n), 150, 11000 * 2 ** (0.5 * m.bright), tilt=-1.0)
    hiss = _normalised(hiss) * (1 + 0.1 * _wander(rng, t, 2.0))
    onsets = rng.integers(0, n, rng.poisson(15 * m.density * n / SR))
    grain = _filter(rng.standard_normal((onsets.size, 64)).ravel(), 500, 8000).reshape(-1, 64)
    crackle = _overlay(n, onsets, grain * np.exp(-np.arange(64) / 12) * 3)
    return hiss + crackle


def _texture(c: _Ctx, centre: float = 700.0) -> np.ndarray:
    """A gentle noise bed: a band around ``centre`` that drifts and swells slowly."""
    rng, m = c.rng, c.mods
    ft = _frame_times(c.n)
    centre = centre * 2 ** (1.2 * m.pitch + 0.5 * m.bright)
    drift = centre * 2 ** (0.4 * _wander(rng, ft, 0.15))
    swell = 1 + 0.3 * _wander(rng, ft, 0.2)
    shape = (_bump(drift, 1.4) + 0.15 * _band(60, 8000, tilt=-3.0)) * swell[:, None]
    if m.length < 0:
        shape *= np.sin(np.pi * np.clip(ft / max(c.seconds, 0.1), 0, 1))[:, None] ** 0.7
    return _spectral_noise(rng, c.n, shape)


_GENERATORS: dict[str, Callable[[_Ctx], np.ndarray]] = {
    "rain": _rain,
    "wind": _wind,
    "whoosh": _whoosh,
    "click": _click,
    "beep": _beep,
    "footsteps": _footsteps,
    "crowd": _crowd,
    "thunder": _thunder,
    "water": _water,
    "ocean": _ocean,
    "fire": _fire,
    "knock": _knock,
    "bell": _bell,
    "engine": _engine,
    "applause": _applause,
    "birds": _birds,
    "crickets": _crickets,
    "explosion": _explosion,
    "laser": _laser,
    "heartbeat": _heartbeat,
    "siren": _siren,
    "ring": _ring,
    "creak": _creak,
    "static": _static,
}


def _shaped(x: np.ndarray, m: _Mods) -> np.ndarray:
    """Distance darkens (and close brightens) a layer; brightness tilts it."""
    distance = float(np.clip(m.distance, -1.5, 1.5))
    if distance <= 0 and abs(m.bright) < 0.05:
        return x
    hi = 16000 / 2 ** (3 * distance) if distance > 0 else None
    tilt = 1.5 * float(np.clip(m.bright, -1.5, 1.5)) + max(-distance, 0.0)
    return _filter(x, None, hi, tilt=tilt)


@dataclass
class _SoundPlan:
    text: str
    seconds: float
    seed: int
    influence: float
    loop: bool
    output: base.OutputFormat
    layers: list[_Layer]
    mods: _Mods
    scene: _Scene
    model_id: str | None


def _sound_plan(request: base.SoundRequest) -> _SoundPlan:
    text = _prompt(request.text, "text", SFX_MAX_TEXT, "sound")
    influence = _number(request.prompt_influence, "prompt_influence", "prompt_influence", 0, 1)
    output = base.OutputFormat.parse(request.output_format)
    loop = bool(request.loop)
    seed = _seed(request.seed, SFX_MAX_SEED)
    layers, mods, scene = _read_sound_prompt(text, influence)
    if request.duration_seconds is None:
        seconds = _choose_seconds(layers, mods, scene, loop)
    else:
        low, high = SFX_DURATION_RANGE
        seconds = _number(
            request.duration_seconds, "duration_seconds", "duration_seconds", low, high
        )
    return _SoundPlan(
        text, seconds, seed, influence, loop, output, layers, mods, scene, request.model_id
    )


def _render_sound(plan: _SoundPlan) -> tuple[np.ndarray, list[str]]:
    span = int(round(plan.seconds * SR))
    crossfade = min(int(0.5 * SR), span // 3) if plan.loop else 0
    n = span + crossfade
    mix = np.zeros(n)
    names: list[str] = []
    for index, layer in enumerate(plan.layers):
        ctx = _Ctx(
            rng=_rng(plan.seed, "layer", index, layer.name, layer.variant),
            n=n,
            span=span,
            mods=layer.mods,
            scene=plan.scene,
            variant=layer.variant,
            count=layer.count,
            repeat=layer.repeat or plan.loop and layer.count is None,
        )
        signal = _shaped(_normalised(_GENERATORS[layer.name](ctx)), layer.mods)
        mix += _normalised(signal) * 10 ** (layer.gain_db / 20)
        names.append(layer.name if not layer.variant else f"{layer.name}:{layer.variant}")

    neutral = _Ctx(_rng(plan.seed, "texture"), n, span, _Mods(), plan.scene, "", None, False)
    if not plan.layers:
        # Unknown words still shape the sound: their letters choose the band's centre.
        centre = 250 * 2 ** (3.0 * (zlib.crc32(_words(plan.text).encode()) % 1000) / 1000)
        texture = _texture(replace(neutral, mods=plan.mods), centre)
        mix = _shaped(_normalised(texture), plan.mods)
        names.append("texture")
    elif plan.influence < 1:
        level = 0.3 * (1 - plan.influence) ** 2 * _active_rms(mix)
        mix += _normalised(_texture(neutral, 500.0)) * level
        names.append("texture")

    distance = max(
        plan.mods.distance, max((layer.mods.distance for layer in plan.layers), default=0.0)
    )
    space = plan.scene.space
    wet = 0.06 + 0.4 * space + 0.25 * max(distance, 0)
    seconds = 0.35 + 2.2 * space + 0.6 * max(distance, 0)
    ir = _reverb_ir(_rng(plan.seed, "room"), seconds, bright=-0.5 * max(distance, 0))
    mix = mix * (1 - 0.4 * wet) + _normalised(_convolve(mix, ir)) * _active_rms(mix) * wet

    if plan.loop:
        head = np.arange(crossfade)
        angle = 0.5 * np.pi * (head + 0.5) / crossfade
        looped = mix[:span].copy()
        looped[:crossfade] = mix[:crossfade] * np.sin(angle) + mix[span:] * np.cos(angle)
        mix = looped

    level_db = SFX_TARGET_DBFS + float(np.clip(plan.mods.gain, -12, 6))
    level_db -= 3 * max(plan.mods.distance, 0)
    active = _active_rms(mix)
    gain = 10 ** (level_db / 20) / active if active > 1e-12 else 0.0
    peak = float(np.max(np.abs(mix))) * gain
    if peak > 1.6:  # an impulsive sound: limit it, not crush it
        gain *= 1.6 / peak
    out = _soft_limit(mix * gain)
    if not plan.loop:
        out = _fades(out, 0.003, min(0.15, plan.seconds / 8))
    return out.astype(np.float32), names


def render_sound_samples(request: base.SoundRequest) -> tuple[np.ndarray, dict]:
    """A sound effect's float32 samples at ``SAMPLE_RATE`` and what was made of the prompt."""
    plan = _sound_plan(request)
    samples, names = _render_sound(plan)
    return samples, _sound_extra(plan, names)


def _sound_extra(plan: _SoundPlan, names: list[str]) -> dict:
    return {
        "engine": "local",
        "draft": True,
        "seed": plan.seed,
        "layers": names,
        "duration_seconds": plan.seconds,
        "loop": plan.loop,
        "prompt_influence": plan.influence,
        "sample_rate": SR,
    }


def sound_effect(request: base.SoundRequest) -> base.AudioResult:
    """Render a sound effect from its prompt and encode it in the request's format."""
    started = time.perf_counter()
    plan = _sound_plan(request)
    samples, names = _render_sound(plan)
    data = audio.encode(samples, SR, plan.output.name)
    return base.AudioResult(
        audio=data,
        output_format=plan.output.name,
        content_type=plan.output.content_type,
        duration_secs=audio.duration_of(samples, SR),
        info=_info(plan.model_id, started),
        extra=_sound_extra(plan, names),
    )


# --- Music: reading the prompt ------------------------------------------------------------

_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_PITCH_CLASS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_PROGRESSIONS = {
    False: ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 3), (5, 3, 0, 4), (0, 3, 5, 4), (3, 4, 0, 5)),
    True: ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 5, 4), (0, 5, 3, 4), (5, 6, 0, 0)),
}
_INSTRUMENTS: tuple[tuple[str, str], ...] = (
    ("piano", r"pianos?|keys|rhodes|electric piano|keyboards?"),
    ("bass", r"bass|basses|bassline|basslines|sub ?bass|808s?|double bass"),
    ("drums", r"drums?|beats?|percussion|kicks?|snares?|hi ?hats?|drum ?machine|breakbeats?|"
              r"groove"),
    ("pad", r"pads?|synth pads?|choir|atmosphere|organ|ambient pad|synth chords"),
    ("strings", r"strings?|violins?|cellos?|orchestra\w*|viola|string section"),
    ("pluck", r"plucks?|plucked|guitars?|harp|arps?|arpeggi\w*|ukulele|banjo|mandolin|kalimba"),
    ("bells", r"bells?|glockenspiel|music ?box|celesta|chimes?|vibraphone|marimba|xylophone"),
    ("lead", r"leads?|synths?|synthesizers?|synth lead|melody|melodic|whistl\w*|flutes?|"
             r"chiptune|8 ?bit|saxophone|sax|trumpet"),
)  # fmt: skip
# Genre words: (pattern, tempo range, instruments, drum style, swing, sevenths, minor bias).
_GENRES: tuple[tuple[str, tuple[int, int], tuple[str, ...], str, float, bool, float], ...] = (
    (r"drum (?:and|n|&) bass|dnb|jungle|breakbeat", (170, 176), ("drums", "bass", "pad"),
     "dnb", 0.0, False, 0.7),
    (r"lo ?fi|hip ?hop|boom ?bap|chillhop", (78, 92), ("piano", "bass", "drums"), "hiphop",
     0.14, True, 0.5),
    (r"house|techno|edm|dance|club|disco|trance", (120, 128), ("drums", "bass", "pad", "pluck"),
     "four", 0.0, False, 0.5),
    (r"synthwave|retro|80s|chiptune|8 ?bit|video game|arcade|outrun",
     (100, 118), ("drums", "bass", "pad", "lead"), "rock", 0.0, False, 0.6),
    (r"cinematic|epic|orchestral|trailer|film score|soundtrack|heroic",
     (80, 100), ("strings", "bass", "drums", "piano"), "half", 0.0, False, 0.7),
    (r"ambient|meditation|meditative|drone|sleep|spa|relaxation|new age",
     (60, 75), ("pad", "bells", "piano"), "half", 0.0, True, 0.4),
    (r"jazz\w*|swing|bossa", (100, 140), ("piano", "bass", "drums"), "rock", 0.2, True, 0.4),
    (r"waltz", (84, 100), ("piano", "strings", "bass"), "waltz", 0.0, False, 0.4),
    (r"rock|punk|indie|grunge|metal", (110, 150), ("drums", "bass", "pluck", "lead"), "rock",
     0.0, False, 0.5),
    (r"jingle|corporate|advert\w*|commercial|pop|ukulele|children|kids",
     (108, 124), ("drums", "bass", "piano", "pluck", "bells"), "rock", 0.0, False, 0.15),
    (r"folk|acoustic|country", (90, 115), ("pluck", "bass", "drums"), "rock", 0.0, False, 0.4),
)  # fmt: skip
_TEMPO_WORDS: tuple[tuple[str, tuple[int, int]], ...] = (
    (r"very slow|largo|funeral", (52, 62)),
    (r"very fast|frantic|hyper|breakneck", (160, 180)),
    (r"slow|slowly|ballad|calm|relaxing|relaxed|gentle|peaceful|sleepy|tender|lullaby",
     (64, 80)),
    (r"chill|chilled|laid ?back|mellow|lazy|easy", (78, 92)),
    (r"moderate|medium|walking|steady", (96, 110)),
    (r"upbeat|happy|groovy|funky|bouncy|cheerful|playful|fun", (112, 126)),
    (r"fast|energetic|driving|action|intense|exciting|uptempo|up tempo|aggressive|chase",
     (132, 150)),
)  # fmt: skip
_MOODS: tuple[tuple[str, bool], ...] = (
    (r"happy|joyful|joyous|cheerful|uplifting|bright|sunny|playful|fun|triumphant|hopeful|"
     r"romantic|optimistic|celebrat\w*|festive|heroic|positive|warm", False),
    (r"sad|melanchol\w*|dark|moody|somber|sombre|gloomy|tense|suspense\w*|scary|horror|eerie|"
     r"mysterious|ominous|angry|lonely|tragic|haunting|sinister|dramatic|noir|serious", True),
)  # fmt: skip
_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "ten": 10,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "forty five": 45,
    "sixty": 60,
    "ninety": 90,
    "a": 1,
    "an": 1,
    "half a": 0.5,
}


@dataclass
class _Song:
    tempo: float
    beats: int  # per bar
    tonic: int  # pitch class
    minor: bool
    mood: str
    genre: str
    instruments: tuple[str, ...]
    style: str  # drum pattern
    swing: float
    sevenths: bool
    progression_a: tuple[int, ...]
    progression_b: tuple[int, ...]
    melody: str | None  # the instrument that plays it

    @property
    def key(self) -> str:
        return f"{_NOTE_NAMES[self.tonic]} {'minor' if self.minor else 'major'}"


def _read_music_length(words: str) -> float | None:
    """Seconds asked for in the prompt ("a 10 second jingle", "2 minutes", "1:30")."""
    clock = re.search(r"\b(\d{1,2}):([0-5]\d)\b", words)
    if clock:
        return int(clock.group(1)) * 60 + int(clock.group(2))
    number = r"(\d+(?:\.\d+)?|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + ")"
    match = re.search(number + r"\s*(?:-\s*)?(seconds?|secs?|minutes?|mins?)\b", words)
    if not match:
        return None
    raw = match.group(1)
    value = float(raw) if raw[0].isdigit() else float(_NUMBER_WORDS[raw])
    return value * (60 if match.group(2).startswith("m") else 1)


def _read_key(text: str, words: str) -> tuple[int | None, bool | None]:
    accidental = r"(#|♯|b|♭|\s+sharp|\s+flat)?"
    mode = r"(major|minor|maj|min|m)\b"
    match = re.search(rf"\b([a-gA-G]){accidental}\s*{mode}", text)
    if not match:
        # "in A", "key of Eb": a capital letter (or one after "key of"), no mode.
        match = re.search(rf"\b(?:in|key of|key)\s+([A-G]){accidental}(?![a-z])()", text)
        if not match:
            match = re.search(rf"\bkey of\s+([a-g]){accidental}(?![a-z])()", text)
    if not match:
        return None, None
    letter, sign, mode_word = match.group(1), (match.group(2) or "").strip(), match.group(3)
    if letter.islower() and not mode_word and "key" not in match.group(0):
        return None, None
    pitch = _PITCH_CLASS[letter.lower()]
    if sign in ("#", "♯", "sharp"):
        pitch += 1
    elif sign in ("b", "♭", "flat"):
        pitch -= 1
    minor = None
    if mode_word:
        minor = mode_word.lower() in ("minor", "min", "m")
    return pitch % 12, minor


def _read_song(prompt: str, seed: int) -> _Song:
    words = _words(prompt)
    rng = _rng(seed, "song")

    genre = None
    for entry in _GENRES:
        match = next(_find(entry[0], words), None)
        if match is not None:
            genre = (match.group(0), *entry[1:])
            break

    # Tempo: a number of bpm, else words, else the genre, else somewhere in between.
    tempo = None
    bpm = re.search(r"(\d{2,3}(?:\.\d+)?)\s*(?:bpm|beats per minute|beats a minute)", words)
    bpm = bpm or re.search(r"\btempo (?:of )?(\d{2,3}(?:\.\d+)?)\b", words)
    if bpm:
        tempo = float(np.clip(float(bpm.group(1)), 40, 240))
    else:
        for pattern, (low, high) in _TEMPO_WORDS:
            if next(_find(pattern, words), None) is not None:
                tempo = float(rng.integers(low, high + 1))
                break
    if tempo is None:
        low, high = genre[1] if genre else (92, 118)
        tempo = float(rng.integers(low, high + 1))

    mood, minor = "neutral", None
    first = len(words) + 1
    for pattern, is_minor in _MOODS:
        match = next(_find(pattern, words), None)
        if match is not None and match.start() < first:
            first, mood, minor = match.start(), match.group(0), is_minor
    tonic, key_minor = _read_key(prompt, words)
    if key_minor is not None:
        minor = key_minor
    if minor is None:
        minor = bool(rng.random() < (genre[6] if genre else 0.45))
    if tonic is None:
        tonic = int(rng.integers(0, 12))

    found: list[tuple[int, str]] = []
    excluded: set[str] = set()
    for name, pattern in _INSTRUMENTS:
        for match in _find(pattern, words):
            before = words[: match.start()].split(" ")[-3:]
            if {"no", "without", "minus", "except", "not", "zero"}.intersection(before):
                excluded.add(name)
            elif name not in (n for _, n in found):
                found.append((match.start(), name))
    if re.search(r"\b(?:drumless|beatless|no percussion)\b", words):
        excluded.add("drums")
    mentioned = [name for _, name in sorted(found)]
    if mentioned and re.search(r"\b(?:solo|only|just|alone|unaccompanied)\b", words):
        instruments = mentioned
    elif mentioned and genre:  # "a house track with a lead": the genre's band, and a lead
        instruments = mentioned + [name for name in genre[2] if name not in mentioned]
    elif mentioned == ["drums"]:  # "a chill beat" still has something over the drums
        instruments = ["drums", "bass", "piano"]
    elif mentioned:
        instruments = mentioned
    elif genre:
        instruments = list(genre[2])
    else:
        instruments = ["piano", "bass", "drums", "pad"]
    instruments = [name for name in instruments if name not in excluded]
    if not instruments:
        instruments = ["piano"]

    style = genre[3] if genre else "rock"
    beats = 3 if style == "waltz" or re.search(r"\b3 ?4\b|\bthree four\b", words) else 4
    if beats == 3:
        style = "waltz"
    melody = next(
        (name for name in ("lead", "bells", "piano", "pluck", "strings") if name in instruments),
        None,
    )
    progressions = _PROGRESSIONS[minor]
    if genre and "jazz" in genre[0]:
        progressions = ((1, 4, 0, 0), (0, 5, 1, 4), (2, 5, 1, 4))
    choice = rng.permutation(len(progressions))
    return _Song(
        tempo=tempo,
        beats=beats,
        tonic=tonic,
        minor=minor,
        mood=mood,
        genre=genre[0] if genre else "",
        instruments=tuple(instruments),
        style=style,
        swing=genre[4] if genre else 0.0,
        sevenths=genre[5] if genre else False,
        progression_a=progressions[choice[0]],
        progression_b=progressions[choice[1 % len(choice)]],
        melody=melody,
    )


# --- Music: composing -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Note:
    step: float  # in sixteenths from the start
    instrument: str
    midi: int
    steps: float  # length in sixteenths
    velocity: float


_DRUM_PATTERNS = {
    "rock": {"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
    "four": {"kick": "x...x...x...x...", "clap": "....x.......x...", "open": "..x...x...x...x.",
             "hat": "x.x.x.x.x.x.x.x."},
    "hiphop": {"kick": "x......x..x.....", "snare": "....x.......x...",
               "hat": "x.x.x.x.x.x.x.x."},
    "half": {"kick": "x.........x.....", "snare": "........x.......",
             "hat": "x.x.x.x.x.x.x.x."},
    "dnb": {"kick": "x.........x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
    "waltz": {"kick": "x...........", "snare": "....x...x...", "hat": "x.x.x.x.x.x."},
}  # fmt: skip
_RHYTHMS = {
    4: ((4, 4, 4, 4), (2, 2, 4, 4, 4), (4, 2, 2, 8), (6, 2, 4, 4), (2, 2, 2, 2, 8), (4, 4, 8),
        (3, 3, 2, 8), (2, 2, 4, 2, 2, 4), (8, 4, 4), (4, 2, 2, 4, 4)),
    3: ((4, 4, 4), (6, 2, 4), (2, 2, 4, 4), (8, 4), (4, 2, 2, 4)),
}  # fmt: skip
_ENDINGS = {4: ((4, 4, 8), (8, 8), (4, 12), (16,)), 3: ((4, 8), (12,), (8, 4))}


def _chord(song: _Song, degree: int) -> list[int]:
    scale = _MINOR if song.minor else _MAJOR
    tones = [scale[(degree + step) % 7] + 12 * ((degree + step) // 7) for step in (0, 2, 4)]
    if song.sevenths:
        tones.append(scale[(degree + 6) % 7] + 12 * ((degree + 6) // 7))
    if song.minor and degree == 4:  # the dominant's leading tone, as in harmonic minor
        tones[1] += 1
    return [(song.tonic + tone) % 12 for tone in tones]


def _numeral(song: _Song, degree: int) -> str:
    names = ("I", "II", "III", "IV", "V", "VI", "VII")
    root, third = _chord(song, degree)[:2]
    name = names[degree]
    return name if (third - root) % 12 == 4 else name.lower()


def _voicing(pitches: list[int], low: int) -> list[int]:
    return sorted(low + (pc - low) % 12 for pc in pitches)


def _phrase(rng, song: _Song, chords: list[list[int]], low: int, answer: bool) -> list[tuple]:
    """Four bars of melody: (step in phrase, steps, midi or None for a rest)."""
    scale = _MINOR if song.minor else _MAJOR
    pitches = [p for p in range(low, low + 20) if (p - song.tonic) % 12 in scale]
    bar = song.beats * 4
    notes = []
    current = pitches[len(pitches) // 3]
    for index, chord in enumerate(chords):
        last = index == len(chords) - 1
        rhythms = _ENDINGS[song.beats] if last else _RHYTHMS[song.beats]
        rhythm = rhythms[rng.integers(len(rhythms))]
        step = 0
        for position, length in enumerate(rhythm):
            strong = step % 4 == 0
            final = last and position == len(rhythm) - 1
            candidates = [p for p in pitches if p % 12 in chord] if strong or final else pitches
            if final and answer:
                candidates = [p for p in pitches if p % 12 == chord[0]] or candidates
            # Mostly stepwise through the scale, with a few leaps; back inwards at the edges.
            move = int(
                rng.choice((-3, -2, -1, 1, 2, 3, 0), p=(0.07, 0.17, 0.28, 0.26, 0.13, 0.05, 0.04))
            )
            index_now = pitches.index(current) if current in pitches else len(pitches) // 2
            if not 2 <= index_now + move < len(pitches) - 2:
                move = -move
            target = pitches[int(np.clip(index_now + move, 0, len(pitches) - 1))]
            best = min(candidates, key=lambda p, t=target: (abs(p - t), p))
            if best == current and move and len(candidates) > 1:
                best = min(
                    (p for p in candidates if p != current), key=lambda p, t=target: (abs(p - t), p)
                )
            current = best
            rest = not final and position > 0 and rng.random() < 0.08
            notes.append((index * bar + step, length, None if rest else best))
            step += length
    return notes


def _compose(song: _Song, bars: int, seed: int) -> list[_Note]:
    rng = _rng(seed, "compose")
    bar = song.beats * 4
    has = set(song.instruments)
    intro = 2 if bars >= 12 and len(has - {"drums"}) else 0
    notes: list[_Note] = []
    phrases: dict[tuple[str, bool], list[tuple]] = {}
    melody_low = 60 + (song.tonic + 12 - 60 % 12) % 12
    melody_low = melody_low - 12 if melody_low > 64 else melody_low
    drums = _DRUM_PATTERNS[song.style]

    def add(step, instrument, midi, steps, velocity):
        notes.append(_Note(step, instrument, int(midi), steps, float(velocity)))

    for index in range(bars):
        start = index * bar
        body = index - intro
        block, within = divmod(max(body, 0), 8)
        section = "intro" if body < 0 else ("B" if block % 2 else "A")
        if bars >= 48 and block % 4 == 3:
            section = "break"
        ending = bars >= 4 and index == bars - 1
        progression = song.progression_b if section == "B" else song.progression_a
        degree = 0 if ending else progression[within % 4]
        chord = _chord(song, degree)
        human = rng.uniform(0.9, 1.05, 64)

        # Chords.
        if "pad" in has:
            for pitch in _voicing(chord, 52):
                add(start, "pad", pitch, bar, 0.9)
        if "strings" in has:
            for pitch in _voicing(chord, 55):
                add(start, "strings", pitch, bar, 0.9)
        if "piano" in has:
            low = _voicing(chord[:1], 43)[0]
            add(start, "piano", low, bar, 0.8)
            voiced = _voicing(chord, 55)
            if ending:
                for pitch in voiced:
                    add(start, "piano", pitch, bar, 0.7)
            elif song.tempo < 96 or song.melody == "piano":
                for k in range(bar // 2):
                    pitch = voiced[(k if k < 4 else 6 - k) % len(voiced)]
                    add(start + 2 * k, "piano", pitch + 12 * (k == 3), 2, 0.55 * human[k])
            else:
                for at in (0, 6, 8, 14) if song.beats == 4 else (0, 4, 8):
                    for pitch in voiced:
                        add(start + at, "piano", pitch, 2 if at % 4 else 4, 0.6 * human[at])
        if "pluck" in has and (section in ("A", "B") or not intro) and not ending:
            voiced = _voicing(chord, 57) + [p + 12 for p in _voicing(chord, 57)]
            step_len = 2 if song.tempo >= 100 else 1
            for k in range(bar // step_len):
                pitch = voiced[(k * 2 + (k // 4)) % len(voiced)]
                add(start + k * step_len, "pluck", pitch, step_len * 1.5, 0.7 * human[k])
        if "bells" in has and song.melody != "bells" and section in ("A", "B", "break"):
            for at in (0, 6, 10) if song.beats == 4 else (0, 6):
                add(
                    start + at,
                    "bells",
                    _voicing([chord[int(rng.integers(len(chord)))]], 72)[0],
                    4,
                    0.5 * human[at],
                )

        # Bass.
        if "bass" in has and (section in ("A", "B") or ending):
            root = _voicing(chord[:1], 33)[0]
            fifth = _voicing(chord[2:3], root)[0]
            next_root = _voicing(_chord(song, progression[(within + 1) % 4])[:1], 33)[0]
            if ending:
                pattern = [(0, bar, root)]
            elif song.style == "four":
                pattern = [(at, 2, root) for at in (2, 6, 10, 14)]
            elif song.style == "hiphop":
                pattern = [(0, 6, root), (7, 3, root), (10, 6, fifth)]
            elif song.style in ("half", "dnb"):
                pattern = [(0, 10, root), (10, 6, root if song.style == "dnb" else fifth)]
            elif song.style == "waltz":
                pattern = [(0, 4, root), (4, 4, fifth), (8, 4, fifth)]
            else:
                pattern = [(at, 2, root) for at in range(0, 14, 2)]
                pattern.append((14, 2, next_root + (1 if next_root < root else -1)))
            for at, length, pitch in pattern:
                add(start + at, "bass", pitch, length, (1.0 if at % 4 == 0 else 0.8) * human[at])

        # Drums.
        if "drums" in has and (section in ("A", "B") or ending):
            if ending:
                add(start, "kick", 0, 1, 1.0)
                add(start, "crash", 0, 1, 0.8)
            else:
                for instrument, pattern in drums.items():
                    for at, mark in enumerate(pattern):
                        if mark != "x" or (within == 7 and at >= 12 and instrument != "kick"):
                            continue
                        accent = 1.0 if at % 4 == 0 else 0.75
                        add(start + at, instrument, 0, 1, accent * human[at])
                if within == 7 and song.beats == 4:
                    for at in range(12, 16):
                        add(start + at, "snare", 0, 1, 0.5 + 0.12 * (at - 12))
                if within == 0 and (block > 0 or intro):
                    add(start, "crash", 0, 1, 0.7)

        # Melody, in four-bar phrases: the first answers, the second closes on the tonic.
        if song.melody and section in ("A", "B") and not ending:
            phrase_key = (section, within >= 4)
            if within % 4 == 0 and phrase_key not in phrases:
                chords = [_chord(song, progression[(within + k) % 4]) for k in range(4)]
                phrases[phrase_key] = _phrase(
                    _rng(seed, "melody", *phrase_key), song, chords, melody_low, within >= 4
                )
            phrase = phrases.get(phrase_key, [])
            offset = (within % 4) * bar
            for at, length, pitch in phrase:
                if pitch is not None and offset <= at < offset + bar:
                    add(
                        start + at - offset,
                        song.melody,
                        pitch + (12 if song.melody == "bells" else 0),
                        length,
                        0.9 * human[int(at) % 64],
                    )
    return notes


# --- Music: instruments ---------------------------------------------------------------------


def _midi_hz(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _envelope(t, attack, length, release, decay=None, sustain=1.0) -> np.ndarray:
    """Attack, an optional decay to ``sustain``, then a release after ``length`` seconds."""
    env = np.minimum(1.0, t / max(attack, 1e-4))
    if decay:
        env = env * (sustain + (1 - sustain) * np.exp(-np.maximum(t - attack, 0) / decay))
    after = np.maximum(t - length, 0)
    return env * np.exp(-after / max(release, 1e-4))


def _note_sound(instrument: str, midi: int, seconds: float, rng) -> np.ndarray:
    freq = _midi_hz(midi)
    if instrument == "kick":
        t = _times(int(0.45 * SR))
        sweep = 48 + 110 * np.exp(-t / 0.035)
        body = np.sin(2 * np.pi * np.cumsum(sweep) / SR) * np.exp(-t / 0.22)
        body[: int(0.004 * SR)] += 0.3 * _noise_burst(rng, 0.004, 0.001, 1000, 8000)
        return body * np.minimum(1, t / 0.001)
    if instrument == "snare":
        t = _times(int(0.3 * SR))
        tone = (np.sin(2 * np.pi * 185 * t) + 0.5 * np.sin(2 * np.pi * 330 * t)) * np.exp(-t / 0.05)
        return 0.5 * tone + _noise_burst(rng, 0.3, 0.09, 1000, 9000) * 2.5
    if instrument == "clap":
        t = _times(int(0.3 * SR))
        hits = sum(
            np.roll(np.exp(-t / 0.006), int(k * 0.011 * SR)) * (t >= k * 0.011) for k in range(3)
        )
        shape = hits + 0.7 * np.exp(-np.maximum(t - 0.022, 0) / 0.11) * (t >= 0.022)
        return _filter(rng.standard_normal(t.size) * shape, 900, 3500) * 1.5
    if instrument in ("hat", "open"):
        length = 0.35 if instrument == "open" else 0.08
        return _noise_burst(rng, length, 0.12 if instrument == "open" else 0.018, 7000, 16000)
    if instrument == "crash":
        return _noise_burst(rng, 2.0, 0.7, 4000, 15000, attack=0.002)

    t_len = seconds
    if instrument == "piano":
        rel = 0.25
        t = _times(int((t_len + rel) * SR))
        decay = float(np.clip(3.0 * (261.6 / freq) ** 0.6, 0.6, 6.0))
        cycles = freq * t + rng.uniform(0, 1)
        out = np.zeros(t.size)
        groups = ((1, 3, 1.0), (3, 7, 0.45), (7, 13, 0.2))
        k = np.arange(1, 13)
        amps = k**-1.3 * (1 + 0.25 * (k == 2))
        for first, last, speed in groups:
            selection = np.zeros(12)
            selection[first - 1 : last - 1] = amps[first - 1 : last - 1]
            selection = selection[: max(1, int(SR * 0.45 / freq))]
            out += _osc(_table(selection), cycles) * np.exp(-t / (decay * speed))
        out[: int(0.01 * SR)] += 0.02 * _noise_burst(rng, 0.01, 0.003, 400, 4000)
        return out * _envelope(t, 0.002, t_len, 0.07)
    if instrument == "bass":
        t = _times(int((t_len + 0.05) * SR))
        cycles = freq * t
        bright = _osc(_table(_saw_amps(freq, 1500, 12)), cycles)
        dark = _osc(_table([1.0, 0.25]), cycles)
        mix = np.exp(-t / 0.12)
        out = mix * bright + (1 - mix) * dark * 0.9
        return out * _envelope(t, 0.004, t_len, 0.035, decay=1.2, sustain=0.7)
    if instrument in ("pad", "strings"):
        release = 0.6
        t = _times(int((t_len + release) * SR))
        table = _table(_saw_amps(freq, 1800 if instrument == "pad" else 2600, 16))
        out = np.zeros(t.size)
        for cents in (-7.0, 0.0, 6.0):
            detuned = freq * 2 ** (cents / 1200)
            if instrument == "strings":
                vibrato = 1 + 0.003 * np.sin(2 * np.pi * 5.2 * t) * np.minimum(1, t / 0.5)
                cycles = np.cumsum(detuned * vibrato) / SR + rng.uniform(0, 1)
            else:
                cycles = detuned * t + rng.uniform(0, 1)
            out += _osc(table, cycles)
        attack = min(0.35 if instrument == "pad" else 0.25, t_len * 0.4)
        return out / 3 * _envelope(t, attack, t_len, release / 3)
    if instrument == "pluck":
        t = _times(int((t_len + 0.4) * SR))
        cycles = freq * t
        k = np.arange(1, 17)
        amps = k**-1.1 * np.abs(np.sin(np.pi * k * 0.2)) + 1e-3
        bright = _osc(_table(amps[: max(1, int(SR * 0.45 / freq))]), cycles)
        dark = _osc(_table([1.0, 0.3]), cycles)
        fade = np.exp(-t / 0.08)
        decay = 0.9 * (220 / freq) ** 0.3
        return (
            (fade * bright + (1 - fade) * dark)
            * np.exp(-t / decay)
            * _envelope(t, 0.002, t_len, 0.1)
        )
    if instrument == "bells":
        t = _times(int((t_len + 1.2) * SR))
        return _partials(
            t, freq, (1.0, 2.756, 5.404, 8.933), (1.0, 0.35, 0.15, 0.08), (1.4, 0.45, 0.2, 0.1), rng
        ) * np.minimum(1, t / 0.001)
    # lead: a band-limited square with delayed vibrato
    t = _times(int((t_len + 0.08) * SR))
    k = np.arange(1, 20)
    amps = np.where(k % 2, 1.0 / k, 0.0) / np.sqrt(1 + (k * freq / 3000) ** 2)
    vibrato = 1 + 0.005 * np.sin(2 * np.pi * 5.5 * t) * np.clip((t - 0.15) / 0.2, 0, 1)
    cycles = np.cumsum(freq * vibrato) / SR
    out = _osc(_table(amps[: max(1, int(SR * 0.45 / freq))]), cycles)
    return out * _envelope(t, 0.008, t_len, 0.06, decay=0.15, sustain=0.8)


_LEVELS = {
    "kick": 0.9,
    "snare": 0.35,
    "clap": 0.4,
    "hat": 0.3,
    "open": 0.2,
    "crash": 0.12,
    "bass": 0.42,
    "pad": 0.1,
    "strings": 0.1,
    "piano": 0.2,
    "pluck": 0.16,
    "bells": 0.12,
    "lead": 0.16,
}
_REVERB_SEND = {
    "pad": 0.4,
    "strings": 0.45,
    "piano": 0.25,
    "pluck": 0.3,
    "bells": 0.5,
    "lead": 0.3,
    "snare": 0.12,
    "clap": 0.15,
}


def _render_song(song: _Song, n: int, seed: int) -> np.ndarray:
    step_seconds = 60.0 / song.tempo / 4
    bars = int(math.ceil(n / (step_seconds * song.beats * 4 * SR)))
    notes = _compose(song, max(bars, 1), seed)
    tail = int(3 * SR)
    dry = np.zeros(n + tail, np.float32)
    wet = np.zeros(n + tail, np.float32)
    cache: dict[tuple[str, int, int], np.ndarray] = {}
    melody_boost = 1.8
    for note in notes:
        swing = song.swing * step_seconds if int(note.step) % 2 == 1 else 0.0
        start = int(round((note.step * step_seconds + swing) * SR))
        if start >= n:
            continue
        length = int(round(note.steps * step_seconds * SR))
        key = (note.instrument, note.midi, length)
        sound = cache.get(key)
        if sound is None:
            rng = _rng(seed, "voice", *key)
            sound = _note_sound(note.instrument, note.midi, length / SR, rng).astype(np.float32)
            cache[key] = sound
        level = _LEVELS[note.instrument] * note.velocity
        if note.instrument == song.melody and note.midi >= 60 and note.steps < 16:
            level *= melody_boost if note.instrument != "piano" else 1.3
        _add(dry, start, sound, level)
        send = _REVERB_SEND.get(note.instrument)
        if send:
            _add(wet, start, sound, level * send)
    ir = _reverb_ir(_rng(seed, "hall"), 1.8).astype(np.float32)
    mix = dry + _convolve_long(wet, ir) * 0.9
    return mix[:n]


@dataclass
class _MusicPlan:
    prompt: str
    length_ms: int
    seed: int
    output: base.OutputFormat
    song: _Song
    model_id: str | None


def _music_plan(request: base.MusicRequest) -> _MusicPlan:
    prompt = _prompt(request.prompt, "prompt", MUSIC_MAX_PROMPT, "music")
    name = request.output_format
    output = base.OutputFormat.parse(base.DEFAULT_OUTPUT_FORMAT if name == "auto" else name)
    seed = _seed(request.seed, MUSIC_MAX_SEED)
    low, high = MUSIC_LENGTH_RANGE_MS
    if request.music_length_ms is None:
        seconds = _read_music_length(_words(prompt))
        length_ms = MUSIC_DEFAULT_MS if seconds is None else int(round(seconds * 1000))
        length_ms = int(np.clip(length_ms, low, high))
    else:
        length_ms = int(
            round(_number(request.music_length_ms, "music_length_ms", "music_length_ms", low, high))
        )
    return _MusicPlan(prompt, length_ms, seed, output, _read_song(prompt, seed), request.model_id)


def _render_music(plan: _MusicPlan) -> np.ndarray:
    n = int(round(plan.length_ms * SR / 1000))
    mix = _render_song(plan.song, n, plan.seed).astype(np.float32)
    level = _rms(mix)
    if level > 1e-9:
        mix *= np.float32(10 ** (MUSIC_TARGET_DBFS / 20) / level)
    mix = _soft_limit(mix)
    fade_out = min(3.0, max(0.3, plan.length_ms / 1000 * 0.08))
    return _fades(mix, 0.005, fade_out).astype(np.float32)


def _music_extra(plan: _MusicPlan) -> dict:
    song = plan.song
    return {
        "engine": "local",
        "draft": True,
        "seed": plan.seed,
        "tempo": round(song.tempo, 1),
        "key": song.key,
        "time_signature": f"{song.beats}/4",
        "instruments": list(song.instruments),
        "mood": song.mood,
        "genre": song.genre,
        "progression": [_numeral(song, degree) for degree in song.progression_a],
        "music_length_ms": plan.length_ms,
        "instrumental": True,
        "sample_rate": SR,
    }


def render_music_samples(request: base.MusicRequest) -> tuple[np.ndarray, dict]:
    """A piece's float32 samples at ``SAMPLE_RATE`` and what was made of the prompt."""
    plan = _music_plan(request)
    return _render_music(plan), _music_extra(plan)


def music(request: base.MusicRequest) -> base.AudioResult:
    """Compose and render a piece from its prompt and encode it in the request's format."""
    started = time.perf_counter()
    plan = _music_plan(request)
    samples = _render_music(plan)
    data = audio.encode(samples, SR, plan.output.name)
    return base.AudioResult(
        audio=data,
        output_format=plan.output.name,
        content_type=plan.output.content_type,
        duration_secs=audio.duration_of(samples, SR),
        info=_info(plan.model_id, started),
        extra=_music_extra(plan),
    )
