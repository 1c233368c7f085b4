"""Audio in and out of the engines: decode any upload to 16 kHz mono, encode the output formats.

Everything goes through PyAV (FFmpeg bundled in the ``av`` wheel), never a system ``ffmpeg``.
Decoding errors become ``InvalidRequest`` on the ``file`` field with a message people can act
on; no PyAV exception leaves this module. Encoding produces exactly the ElevenLabs
``output_format`` values of ``base.OUTPUT_FORMATS``, whole (``encode``) or chunk by chunk
(``StreamEncoder``).
"""

from __future__ import annotations

import errno
import io
import math
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

from .base import InvalidRequest, OutputFormat

PCM16K_RATE = 16_000
# Without a caller's limit, decoding still stops here: 4 h of 16 kHz float32 is about 1 GB.
MAX_DECODE_SECONDS = 4 * 3600.0
# Encoder padding and rounding: a file this much over the limit still counts as within it.
DURATION_TOLERANCE_SECONDS = 1.0
# A file that states its length is timed (and reserved for) by it: decoding stops this share
# past it (plus the tolerance), so a header that understates cannot buy hours for seconds.
STATED_LENGTH_SLACK = 0.10
# Bad packets are skipped (as players do) until there are this many.
MAX_BAD_PACKETS = 50
# Ogg pages are flushed at least this often (µs), so streamed Opus reaches people promptly.
OGG_PAGE_DURATION_US = 100_000

# Demuxers an upload may use. Playlists and the like (hls, concat, dash, image sequences)
# would open other files or URLs, so they are never probed.
ALLOWED_DEMUXERS = (
    "aac,ac3,aiff,amr,amrnb,amrwb,ape,asf,au,avi,caf,dts,eac3,flac,flv,loas,matroska,"
    "mov,mp3,mpeg,mpegts,ogg,tta,w64,wav,wv"
)

_AV_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, RuntimeError)
_STREAM_CODECS = {"mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus")}
_RAW_CODECS = {"pcm": "pcm_s16le", "wav": "pcm_s16le", "ulaw": "pcm_mulaw", "alaw": "pcm_alaw"}


# --- Decoding ---------------------------------------------------------------------------

# What an upload may be: its bytes, a path to it on disk, or an open binary file (an
# uploaded file, a stored file). Paths and files are read as they are decoded, never whole.
AudioSource = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO
# Windows of decoded audio hold this many seconds (1.9 MB of float32 at 16 kHz).
WINDOW_SECONDS = 30.0


class Pcm16kReader:
    """An upload decoded to 16 kHz mono float32 in [-1, 1] as it is read, a window at a time.

    Use it as a context manager; ``windows()`` yields arrays of ``WINDOW_SECONDS`` (the last
    one shorter), so memory stays bounded whatever the length. The duration the file states
    (``declared_seconds``, None when it states none) is checked against ``max_seconds`` on
    entering, and the decoded length as decoding goes: headers lie, and a small file that
    expands to hours stops at the limit (``InvalidRequest`` on ``file``).
    """

    def __init__(
        self, source: AudioSource, *, filename: str = "", max_seconds: float | None = None
    ):
        self.filename = filename
        self.limit = MAX_DECODE_SECONDS if max_seconds is None else max_seconds
        self.ceiling = int((self.limit + DURATION_TOLERANCE_SECONDS) * PCM16K_RATE)
        self.declared_seconds: float | None = None
        self.decoded = 0  # samples at 16 kHz so far
        self._header_lies_past: int | None = None  # the ceiling the stated length sets
        self._source = source
        self._opened = None
        self._input = None

    def __enter__(self) -> Pcm16kReader:
        self._opened = _open_input(self._source, self.filename)
        self._input = self._opened.__enter__()
        try:
            self._stream = _audio_stream(self._input.container, self.filename)
            self.declared_seconds = _declared_duration(self._input.container, self._stream)
            if self.declared_seconds is not None and (
                self.declared_seconds > self.limit + DURATION_TOLERANCE_SECONDS
            ):
                raise _too_long(self.declared_seconds, self.limit, exact=True)
            if self.declared_seconds is not None:
                stated = self.declared_seconds * (1 + STATED_LENGTH_SLACK)
                stated_ceiling = int((stated + DURATION_TOLERANCE_SECONDS) * PCM16K_RATE)
                if stated_ceiling < self.ceiling:
                    self.ceiling, self._header_lies_past = stated_ceiling, stated_ceiling
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _over(self, *, exact: bool) -> InvalidRequest:
        """Why decoding stopped past the ceiling: the header lied, or the file is too long."""
        seconds = self.decoded / PCM16K_RATE
        if self._header_lies_past is not None:
            return InvalidRequest.for_field(
                "file",
                f"{_label(self.filename)} plays longer than its header says "
                f"({format_duration(self.declared_seconds)}): it may be damaged. Re-encode it "
                "and upload it again.",
            )
        return _too_long(seconds, self.limit, exact=exact)

    def __exit__(self, *exc) -> None:
        if self._opened is not None:
            opened, self._opened = self._opened, None
            opened.__exit__(None, None, None)

    @property
    def share_read(self) -> float:
        """How far through the file decoding is (0..1): by time when the file states its
        length, else by bytes read."""
        if self.declared_seconds:
            return min(self.decoded / PCM16K_RATE / self.declared_seconds, 1.0)
        return self._input.share_read() if self._input is not None else 0.0

    def windows(self, seconds: float | None = None) -> Iterator[np.ndarray]:
        """The audio, ``seconds`` (``WINDOW_SECONDS``) at a time (the last window shorter)."""
        size = max(int((seconds or WINDOW_SECONDS) * PCM16K_RATE), 1)
        pending: list[np.ndarray] = []
        held = 0
        for part in self._parts():
            pending.append(part)
            held += part.size
            while held >= size:
                joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield _floats(joined[:size])
                rest = joined[size:]
                pending, held = ([rest] if rest.size else []), rest.size
        if held:
            yield _floats(np.concatenate(pending))

    def _parts(self) -> Iterator[np.ndarray]:
        """int16 samples at 16 kHz as they are decoded and resampled."""
        filename = self.filename
        resampler: av.AudioResampler | None = None
        shape: tuple | None = None
        for frame in _decoded_frames(self._input.container, self._stream, filename):
            frame_shape = (frame.format.name, frame.layout.name, frame.sample_rate)
            if frame_shape != shape:  # a stream may change rate or layout midway
                if resampler is not None:
                    yield from self._counted(_resample(resampler, None, filename))
                # s16 output makes swresample normalise its downmix: stereo becomes the
                # mean of the channels instead of a sum that clips.
                resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM16K_RATE)
                shape = frame_shape
            yield from self._counted(_resample(resampler, frame, filename))
            if self.decoded > self.ceiling:
                raise self._over(exact=False)
        if resampler is not None:
            yield from self._counted(_resample(resampler, None, filename))
        if self.decoded == 0:
            raise InvalidRequest.for_field(
                "file",
                f"{_label(filename)} has an audio track, but no sound could be decoded from it.",
            )
        if self.decoded > self.ceiling:
            raise self._over(exact=True)

    def _counted(self, frames) -> Iterator[np.ndarray]:
        for out in frames:
            if out is None:  # a pass-through resampler "flushes" with None
                continue
            chunk = out.to_ndarray().reshape(-1)
            self.decoded += chunk.size
            yield chunk


def _floats(pcm: np.ndarray) -> np.ndarray:
    samples = pcm.astype(np.float32)
    samples /= np.float32(32768.0)
    return samples


def decode_to_pcm16k(
    source: AudioSource, *, filename: str = "", max_seconds: float | None = None
) -> np.ndarray:
    """Decode an audio or video file to 16 kHz mono float32 samples in [-1, 1], whole.

    Reads whatever FFmpeg reads among ``ALLOWED_DEMUXERS`` (MP3, WAV, FLAC, Ogg and WebM
    Opus, M4A/AAC, the audio track of MP4/MOV/MKV...). A file longer than ``max_seconds``
    is refused, from its header when it states a duration and otherwise as soon as decoding
    passes the limit, so a small file that expands to hours is never decoded whole. For long
    recordings use ``Pcm16kReader``, which holds one window at a time.
    """
    with Pcm16kReader(source, filename=filename, max_seconds=max_seconds) as reader:
        windows = list(reader.windows())
    return windows[0] if len(windows) == 1 else np.concatenate(windows)


def probe_duration(source: AudioSource, filename: str = "") -> float:
    """Duration of an upload's audio in seconds: from its header, else by decoding it (a
    frame at a time, nothing kept).

    Decoding stops past ``MAX_DECODE_SECONDS``: what it returns then is a lower bound, and
    already more than any limit.
    """
    with _open_input(source, filename) as opened:
        container = opened.container
        stream = _audio_stream(container, filename)
        declared = _declared_duration(container, stream)
        if declared is not None:
            return declared
        seconds = 0.0
        for frame in _decoded_frames(container, stream, filename):
            seconds += frame.samples / frame.sample_rate
            if seconds > MAX_DECODE_SECONDS + DURATION_TOLERANCE_SECONDS:
                break
    if seconds == 0:
        raise InvalidRequest.for_field(
            "file", f"{_label(filename)} has an audio track, but no sound could be decoded from it."
        )
    return seconds


def _label(filename: str) -> str:
    name = os.path.basename(filename or "")
    if not name:
        return "The file"
    return repr(name if len(name) <= 80 else name[:77] + "...")


def _reason(exc: Exception) -> str:
    if isinstance(exc, av.InvalidDataError):
        return "it is not in a known audio or video format"
    if isinstance(exc, EOFError):
        return "it ends too early (the file may be cut off)"
    if isinstance(exc, av.FFmpegError):
        text = exc.strerror or str(exc)
    else:
        text = str(exc) or type(exc).__name__
    text = text.strip().rstrip(".")
    return text[:1].lower() + text[1:]


def _undecodable(filename: str, exc: Exception | str) -> InvalidRequest:
    reason = exc if isinstance(exc, str) else _reason(exc)
    return InvalidRequest.for_field(
        "file", f"{_label(filename)} could not be decoded as audio or video: {reason}."
    )


class _Input:
    """An opened upload: its container, and how much of the file has been read."""

    def __init__(self, container, handle, size: int):
        self.container, self._handle, self._size = container, handle, size

    def share_read(self) -> float:
        try:
            return min(self._handle.tell() / self._size, 1.0) if self._size else 0.0
        except (OSError, ValueError):
            return 0.0


@contextmanager
def _binary(source: AudioSource) -> Iterator[tuple[BinaryIO, int]]:
    """An upload (bytes, a path or a binary file) as a binary file at its start, and its size
    in bytes (-1 when it cannot seek); a path is opened here and closed on leaving."""
    close: BinaryIO | None = None
    if isinstance(source, bytes | bytearray | memoryview):
        handle: BinaryIO = io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        handle = close = open(source, "rb")  # noqa: SIM115 (closed below)
    else:
        handle = source
    try:
        try:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(0)
        except (OSError, ValueError, AttributeError):
            size = -1
        yield handle, size
    finally:
        if close is not None:
            close.close()


@contextmanager
def _open_input(source: AudioSource, filename: str) -> Iterator[_Input]:
    """Open an upload for reading (bytes, a path or a binary file), or explain why it cannot
    be. Files are handed to FFmpeg as Python file objects, so no URL or protocol in a name
    is ever opened; an unseekable one is read as a stream."""
    with _binary(source) as (handle, size):
        if size == 0:
            raise InvalidRequest.for_field("file", f"{_label(filename)} is empty.")
        try:
            container = av.open(
                handle, mode="r", container_options={"format_whitelist": ALLOWED_DEMUXERS}
            )
        except av.ArgumentError as exc:
            if exc.errno == errno.EINVAL:  # FFmpeg recognised a format that is not on the list
                raise _undecodable(filename, "it is not an audio or video format") from None
            raise _undecodable(filename, exc) from None
        except _AV_ERRORS as exc:
            raise _undecodable(filename, exc) from None
        try:
            yield _Input(container, handle, max(size, 0))
        finally:
            container.close()


def _audio_stream(container, filename: str):
    if not container.streams.audio:
        if container.streams.video:
            raise InvalidRequest.for_field("file", f"{_label(filename)} has no audio track.")
        raise _undecodable(filename, "it contains no audio or video")
    try:
        stream = container.streams.best("audio") or container.streams.audio[0]
    except _AV_ERRORS:
        stream = container.streams.audio[0]
    if stream.codec_context is None:
        raise _undecodable(filename, "its audio codec is not supported")
    return stream


def _declared_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def _decoded_frames(container, stream, filename: str) -> Iterator[av.AudioFrame]:
    """Frames of one audio stream; bad packets are skipped, too many of them is an error."""
    bad = 0
    decoded_any = False
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except _AV_ERRORS as exc:
            # A cut-off file ends early; one that never yields audio is not audio.
            if decoded_any:
                return
            raise _undecodable(filename, exc) from None
        try:
            frames = packet.decode()
        except _AV_ERRORS as exc:
            bad += 1
            if bad > MAX_BAD_PACKETS:
                raise _undecodable(filename, exc) from None
            continue
        for frame in frames:
            if frame.samples:
                decoded_any = True
                yield frame


def _resample(resampler: av.AudioResampler, frame, filename: str) -> list:
    try:
        return resampler.resample(frame)
    except _AV_ERRORS as exc:
        raise _undecodable(filename, exc) from None


def _too_long(seconds: float, limit: float, *, exact: bool) -> InvalidRequest:
    if exact:
        message = (
            f"The audio is {format_duration(seconds, round_up=True)} long; "
            f"the limit is {format_duration(limit)}."
        )
    else:
        message = f"The audio is longer than the {format_duration(limit)} limit."
    return InvalidRequest.for_field("file", message)


def format_duration(seconds: float, *, round_up: bool = False) -> str:
    """``"3 h 2 min"``, ``"45 min"``, ``"1 min 30 s"``, ``"2.5 s"``: a length people read.

    ``round_up`` rounds to the shown unit upwards, so a length just over a limit never reads
    as equal to it.
    """
    rounding = math.ceil if round_up else round
    if seconds < 60:
        value = math.ceil(seconds * 10) / 10 if round_up else round(seconds, 1)
        return f"{value:g} s"
    if seconds < 3600:
        total = int(rounding(seconds))
        minutes, secs = divmod(total, 60)
        if minutes == 60:
            return "1 h"
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    total = int(rounding(seconds / 60))
    hours, minutes = divmod(total, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


# --- Raw samples ------------------------------------------------------------------------


class RawPcm16kReader:
    """Raw 16 kHz mono little-endian 16-bit PCM (bytes, a path or a binary file) read a
    window at a time, with ``Pcm16kReader``'s interface. Its length comes from its size, so
    ``max_seconds`` is checked before anything is read."""

    def __init__(
        self, source: AudioSource, *, max_seconds: float | None = None, field: str = "file"
    ):
        self.limit = MAX_DECODE_SECONDS if max_seconds is None else max_seconds
        self.field = field
        self.declared_seconds: float | None = None
        self.decoded = 0
        self._source = source
        self._opened = None
        self._handle: BinaryIO | None = None

    def __enter__(self) -> RawPcm16kReader:
        self._opened = _binary(self._source)
        self._handle, size = self._opened.__enter__()
        try:
            if size < 0:
                raise InvalidRequest.for_field(
                    self.field, "16-bit PCM audio must be sent as a file, not a stream."
                )
            if size % 2:
                raise InvalidRequest.for_field(
                    self.field, "16-bit PCM audio must have an even number of bytes (2 per sample)."
                )
            self.declared_seconds = size / 2 / PCM16K_RATE
            if self.declared_seconds > self.limit + DURATION_TOLERANCE_SECONDS:
                raise InvalidRequest.for_field(
                    self.field, _too_long(self.declared_seconds, self.limit, exact=True).message
                )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._opened is not None:
            opened, self._opened = self._opened, None
            opened.__exit__(None, None, None)
        self._handle = None

    @property
    def share_read(self) -> float:
        if not self.declared_seconds:
            return 0.0
        return min(self.decoded / PCM16K_RATE / self.declared_seconds, 1.0)

    def windows(self, seconds: float | None = None) -> Iterator[np.ndarray]:
        size = max(int((seconds or WINDOW_SECONDS) * PCM16K_RATE), 1) * 2
        while True:
            data = self._handle.read(size)
            if not data:
                return
            samples = samples_from_pcm16(data, field=self.field)
            self.decoded += samples.size
            yield samples


def samples_from_pcm16(data: bytes, *, field: str = "audio") -> np.ndarray:
    """Little-endian signed 16-bit PCM to float32 samples in [-1, 1)."""
    if len(data) % 2:
        raise InvalidRequest.for_field(
            field, "16-bit PCM audio must have an even number of bytes (2 per sample)."
        )
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)


def pcm16k_bytes(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] to little-endian signed 16-bit PCM (values outside clip)."""
    scaled = np.round(_mono(samples) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


def duration_of(samples: np.ndarray, rate: int) -> float:
    """Seconds of audio in ``samples`` at ``rate`` samples per second."""
    return len(samples) / rate


def _mono(samples: np.ndarray) -> np.ndarray:
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(f"Expected mono samples (a 1-D array), got shape {array.shape}.")
    return np.clip(np.nan_to_num(array), -1.0, 1.0)


# --- Encoding ---------------------------------------------------------------------------


def encode(samples: np.ndarray, sample_rate: int, output_format: str) -> bytes:
    """Encode float32 mono samples into one complete file of an ElevenLabs ``output_format``.

    Unlike the concatenated output of ``StreamEncoder``, the WAV header states the real
    length and an MP3 starts with a Xing/LAME frame (exact duration, gapless playback).
    """
    encoder = _FileEncoder(output_format, sample_rate)
    return encoder.feed(samples) + encoder.finish()


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """A 44-byte RIFF header for 16-bit mono PCM; ``None`` (a stream) gives 0xFFFFFFFF sizes."""
    data_size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff_size = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        sample_rate,
        sample_rate * 2,
        2,
        16,
        b"data",
        data_size,
    )


class _Drain:
    """A write-only, unseekable file that hands over what was written so far."""

    def __init__(self):
        self._buffer = bytearray()

    def write(self, data) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


class StreamEncoder:
    """Encode float32 mono samples chunk by chunk into an ElevenLabs ``output_format``.

    ``feed`` returns the bytes ready so far and ``finish`` the rest; all of them concatenated
    are one valid stream: MP3 frames, Ogg Opus pages, raw PCM/μ-law/A-law, or a WAV whose
    header gives 0xFFFFFFFF sizes (the length is unknown when it is sent; players read to
    the end). Samples outside [-1, 1] are clipped.
    """

    _whole_file = False

    def __init__(self, output_format: str, input_rate: int):
        if input_rate <= 0:
            raise ValueError(f"input_rate must be positive, got {input_rate}.")
        self.format = OutputFormat.parse(output_format)
        self.input_rate = int(input_rate)
        self.samples_in = 0
        self._time_base = Fraction(1, self.input_rate)
        self._finished = False
        self._parts: list[bytes] = []
        codec = self.format.codec
        if codec in _STREAM_CODECS:
            muxer, encoder = _STREAM_CODECS[codec]
            self._sink = io.BytesIO() if self._whole_file else _Drain()
            options = {"id3v2_version": "0"} if muxer == "mp3" else {}
            if muxer == "ogg":
                options["page_duration"] = str(OGG_PAGE_DURATION_US)
            self._container = av.open(self._sink, mode="w", format=muxer, container_options=options)
            self._stream = self._container.add_stream(
                encoder,
                rate=self.format.sample_rate,
                layout="mono",
                # Plain VBR Opus overshoots its bitrate by half on tonal sound; the format's
                # name promises a bitrate.
                options={"vbr": "constrained"} if encoder == "libopus" else None,
            )
            self._stream.bit_rate = self.format.bitrate_kbps * 1000
            # Writes the header now, so even a stream with no audio is a valid file.
            self._container.start_encoding()
            self._codec = None
        else:
            self._container = None
            self._codec = av.CodecContext.create(_RAW_CODECS[codec], "w")
            self._codec.sample_rate = self.format.sample_rate
            self._codec.layout = "mono"
            self._codec.format = "s16"
        self._pending_header = codec == "wav" and not self._whole_file

    def feed(self, samples: np.ndarray) -> bytes:
        """Encode more samples (at ``input_rate``); returns the bytes ready so far."""
        if self._finished:
            raise RuntimeError("This encoder has finished.")
        array = _mono(samples)
        if not array.size:
            return self._keep(self._header())
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(array.reshape(1, -1)), format="flt", layout="mono"
        )
        frame.sample_rate = self.input_rate
        frame.time_base = self._time_base
        frame.pts = self.samples_in
        self.samples_in += array.size
        return self._keep(self._header() + self._encode(frame))

    def finish(self) -> bytes:
        """Flush the encoder; returns the last bytes. The encoder cannot be fed afterwards."""
        if self._finished:
            return b""
        self._finished = True
        out = self._header() + self._encode(None)
        if self._container is not None:
            self._container.close()
            if self._whole_file:
                return self._sink.getvalue()
            return out + self._sink.take()
        if not self._whole_file:
            return out
        data = b"".join(self._parts) + out
        if self.format.codec == "wav":
            return wav_header(self.format.sample_rate, len(data)) + data
        return data

    def close(self) -> None:
        """Stop without finishing (the listener left); what was encoded is dropped."""
        if not self._finished:
            self._finished = True
            if self._container is not None:
                self._container.close()

    def _keep(self, data: bytes) -> bytes:
        if self._whole_file and self._container is None:
            self._parts.append(data)
            return b""
        return data

    def _header(self) -> bytes:
        if not self._pending_header:
            return b""
        self._pending_header = False
        return wav_header(self.format.sample_rate)

    def _encode(self, frame: av.AudioFrame | None) -> bytes:
        if self._container is not None:
            self._container.mux(self._stream.encode(frame))
            return b"" if self._whole_file else self._sink.take()
        return b"".join(bytes(packet) for packet in self._codec.encode(frame))


class _FileEncoder(StreamEncoder):
    """A ``StreamEncoder`` that writes one seekable file and returns it all from ``finish``."""

    _whole_file = True
