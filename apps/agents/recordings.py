"""A conversation's recording as one file to listen to: both sides mixed, encoded as it is read.

A conversation keeps each side's audio (``Conversation.user_audio``, ``agent_audio``) as a
track from the conversation's start (silence where that side is quiet), in any format FFmpeg
reads, or raw 16 kHz 16-bit PCM when the file name ends in ``.pcm``. Played together they are
the call as it sounded; ``recording_chunks`` mixes them (or takes the one there is) window by
window, so a two-hour call is never decoded whole.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from apps.engines.audio import PCM16K_RATE, Pcm16kReader, RawPcm16kReader, StreamEncoder

RECORDING_FORMAT = "mp3_44100_128"
RECORDING_CONTENT_TYPE = "audio/mpeg"
MAX_RECORDING_SECONDS = 3 * 3600.0  # longer than any agent's maximum length
WINDOW = 10.0  # seconds decoded at a time per side


def recording_sides(conversation) -> list:
    """The stored audio files of the conversation (user's first), those that exist."""
    return [f for f in (conversation.user_audio, conversation.agent_audio) if f]


def has_recording(conversation) -> bool:
    return bool(recording_sides(conversation))


def _reader(handle, name: str):
    if name.lower().endswith(".pcm"):
        return RawPcm16kReader(handle, max_seconds=MAX_RECORDING_SECONDS)
    return Pcm16kReader(handle, filename=name.rsplit("/", 1)[-1], max_seconds=MAX_RECORDING_SECONDS)


def _mixed(streams: list[Iterator[np.ndarray]]) -> Iterator[np.ndarray]:
    """The sum of several 16 kHz sample streams, as long as the longest (clipped later by
    the encoder)."""
    held = [np.zeros(0, dtype=np.float32) for _ in streams]
    live = [True] * len(streams)
    while any(live) or any(h.size for h in held):
        for i, stream in enumerate(streams):
            if live[i] and held[i].size < WINDOW * PCM16K_RATE:
                part = next(stream, None)
                if part is None:
                    live[i] = False
                else:
                    held[i] = np.concatenate([held[i], part])
        # Mix what every still-running side has; a finished side adds nothing.
        ready = [h.size for i, h in enumerate(held) if live[i]]
        size = min(ready) if ready else max(h.size for h in held)
        if size == 0:
            continue
        out = np.zeros(size, dtype=np.float32)
        for i, h in enumerate(held):
            take = h[:size]
            out[: take.size] += take
            held[i] = h[take.size :]
        yield out


def recording_chunks(conversation) -> Iterator[bytes]:
    """The conversation's recording as MP3 bytes, a few seconds at a time (nothing when it
    has no audio; check ``has_recording`` first)."""
    sides = recording_sides(conversation)
    if not sides:
        return
    handles, readers = [], []
    try:
        for field in sides:
            handle = field.storage.open(field.name, "rb")
            handles.append(handle)
            readers.append(_reader(handle, field.name).__enter__())
        encoder = StreamEncoder(RECORDING_FORMAT, PCM16K_RATE)
        for samples in _mixed([r.windows(WINDOW) for r in readers]):
            data = encoder.feed(samples)
            if data:
                yield data
        yield encoder.finish()
    finally:
        for reader in readers:
            reader.__exit__(None, None, None)
        for handle in handles:
            handle.close()
