"""A take's parts as one audio file.

- MP3: the parts' frames back to back (MP3 frames concatenate). A part's leading ID3 tag
  and Xing/Info frame are left out: that frame states the length of its own part, and a
  player would take it for the whole file's.
- WAV: one header for all the samples, then each part's data chunk.
- Opus (Ogg): decoded and encoded again as one Ogg stream, as it is sent (Ogg pages of two
  files do not make one playable file in every browser).

MP3 and WAV are byte ranges of the stored files (``Segment``), so a player may seek in the
whole take (HTTP Range); Opus is made as it is sent.
"""

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import av

from apps.engines.audio import StreamEncoder, wav_header
from apps.engines.base import OutputFormat

HEAD_BYTES = 64 * 1024  # read from the start of a part to find where its audio begins
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Segment:
    """Bytes of the whole file: ``data`` itself, or ``length`` bytes of a stored file."""

    data: bytes = b""
    name: str = ""
    offset: int = 0
    length: int = 0

    @property
    def size(self) -> int:
        return len(self.data) if not self.name else self.length


@dataclass(frozen=True)
class TakeAudio:
    content_type: str
    extension: str
    segments: list[Segment] | None  # None: made as it is sent (``chunks``)
    storage: object = None
    clips: tuple = ()
    output_format: str = ""

    @property
    def size(self) -> int | None:
        return None if self.segments is None else sum(s.size for s in self.segments)

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes from ``start`` to ``end`` (inclusive; the end when ``None``)."""
        if self.segments is None:
            yield from _reencoded(self.clips, self.output_format)
            return
        end = self.size - 1 if end is None else end
        position = 0
        for segment in self.segments:
            first, last = position, position + segment.size - 1
            position += segment.size
            if last < start or first > end:
                continue
            lo, hi = max(start, first) - first, min(end, last) - first + 1
            if not segment.name:
                yield segment.data[lo:hi]
                continue
            with self.storage.open(segment.name, "rb") as handle:
                handle.seek(segment.offset + lo)
                left = hi - lo
                while left > 0:
                    chunk = handle.read(min(CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    yield chunk


def take_audio(clips: list) -> TakeAudio:
    """The parts (History clips, in order) as one file."""
    first = clips[0]
    storage = first.file.storage
    name = (first.recipe or {}).get("output_format") or ""
    content_type = first.content_type.split(";")[0].strip()
    if content_type == "audio/mpeg":
        segments = [_mp3_segment(clip) for clip in clips]
        return TakeAudio("audio/mpeg", "mp3", segments, storage=storage)
    if content_type in ("audio/wav", "audio/x-wav", "audio/wave"):
        segments = _wav_segments(clips)
        if segments is not None:
            return TakeAudio("audio/wav", "wav", segments, storage=storage)
    try:
        fmt = OutputFormat.parse(name)
    except Exception:  # noqa: BLE001 (a recipe without a format the engines know)
        fmt = None
    if fmt is None or fmt.codec not in ("opus", "wav", "mp3"):
        if len(clips) == 1:  # whatever it is, one file is itself
            return TakeAudio(
                content_type,
                "bin",
                [Segment(name=first.file.name, length=first.file.size)],
                storage=storage,
            )
        fmt = OutputFormat.parse("opus_48000_64")
    return TakeAudio(
        fmt.content_type, fmt.extension, None, clips=tuple(clips), output_format=fmt.name
    )


def _head(clip) -> bytes:
    with clip.file.open("rb") as handle:
        return handle.read(HEAD_BYTES)


# --- MP3 ---------------------------------------------------------------------------------------

_MP3_BITRATES = {
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _frame_length(header: bytes) -> int | None:
    """The length of the MPEG layer III frame starting with these 4 bytes (None: no frame)."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3  # 3: MPEG 1, 2: MPEG 2, 0: MPEG 2.5
    layer = (header[1] >> 1) & 3  # 1: layer III
    if version == 1 or layer != 1:
        return None
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 3
    if bitrate_index in (0, 15) or rate_index == 3:
        return None
    bitrate = _MP3_BITRATES[(1 if version == 3 else 2, 3)][bitrate_index] * 1000
    rate = _MP3_RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    per_frame = 144 if version == 3 else 72
    return per_frame * bitrate // rate + padding


def mp3_audio_start(head: bytes) -> int:
    """Where the audio frames of an MP3 file start: past an ID3v2 tag and a Xing/Info/VBRI
    frame (0 when the head is not what it seems)."""
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        size = 0
        for byte in head[6:10]:
            size = (size << 7) | (byte & 0x7F)
        start = 10 + size + (10 if head[5] & 0x10 else 0)
        if start >= len(head):
            return 0
    length = _frame_length(head[start : start + 4])
    if length is None:
        return start
    frame = head[start : start + min(length, 200)]
    if b"Xing" in frame or b"Info" in frame or b"VBRI" in frame:
        return start + length
    return start


def _mp3_segment(clip) -> Segment:
    size = clip.file.size
    start = min(mp3_audio_start(_head(clip)), size)
    return Segment(name=clip.file.name, offset=start, length=size - start)


# --- WAV ---------------------------------------------------------------------------------------


def _wav_data(head: bytes, size: int) -> tuple[tuple, int, int] | None:
    """The fmt fields, and the offset and length of the data chunk of a 16-bit PCM WAV."""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position, fmt = 12, None
    while position + 8 <= len(head):
        chunk, length = (
            head[position : position + 4],
            struct.unpack("<I", head[position + 4 : position + 8])[0],
        )
        body = position + 8
        if chunk == b"fmt ":
            fmt = struct.unpack("<HHIIHH", head[body : body + 16])
        elif chunk == b"data":
            if fmt is None:
                return None
            return fmt, body, min(length, size - body)  # (a streamed WAV states 0xFFFFFFFF)
        position = body + length + (length & 1)
    return None


def _wav_segments(clips: list) -> list[Segment] | None:
    segments, first_fmt = [], None
    for clip in clips:
        found = _wav_data(_head(clip), clip.file.size)
        if found is None:
            return None
        fmt, offset, length = found
        codec, channels, rate, _, _, bits = fmt
        if codec != 1 or channels != 1 or bits != 16 or (first_fmt and first_fmt != fmt):
            return None  # not what one header can state for all: made again instead
        first_fmt = fmt
        segments.append(Segment(name=clip.file.name, offset=offset, length=length - length % 2))
    rate = first_fmt[2]
    header = wav_header(rate, sum(segment.length for segment in segments))
    return [Segment(data=header), *segments]


# --- Anything else: decoded and encoded again ------------------------------------------------


def _reencoded(clips, output_format: str) -> Iterator[bytes]:
    fmt = OutputFormat.parse(output_format)
    encoder = StreamEncoder(fmt.name, fmt.sample_rate)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=fmt.sample_rate)
    try:
        for clip in clips:
            with clip.file.open("rb") as handle, av.open(handle) as container:
                for frame in container.decode(audio=0):
                    frame.pts = None
                    for out in resampler.resample(frame):
                        data = encoder.feed(out.to_ndarray().reshape(-1))
                        if data:
                            yield data
        for out in resampler.resample(None):
            data = encoder.feed(out.to_ndarray().reshape(-1))
            if data:
                yield data
        yield encoder.finish()
    finally:
        encoder.close()
