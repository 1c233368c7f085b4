"""Audio no faster than real time: a client may not send minutes of audio in a second (the
session would hold it all, and meter it, before hearing any of it)."""

from __future__ import annotations

import time

BYTES_PER_SECOND = 32000  # 16 kHz mono s16le
SLACK_SECONDS = 5.0  # what a client may be ahead of the clock (a burst after a stall)
TOO_FAST = (
    "Audio is arriving faster than real time: the extra was dropped. Stream the microphone "
    "as it records."
)


class AudioPace:
    """``take(n)``: whether ``n`` more bytes keep the client within ``SLACK_SECONDS`` of the
    wall clock since it started sending."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.began: float | None = None
        self.bytes = 0
        self.told_at = -1e9

    def take(self, size: int) -> bool:
        now = self.clock()
        if self.began is None:
            self.began = now
        allowed = (now - self.began + SLACK_SECONDS) * BYTES_PER_SECOND
        if self.bytes + size > allowed:
            return False
        self.bytes += size
        return True

    def tell(self) -> bool:
        """Whether to say so now (at most once every 5 s)."""
        now = self.clock()
        if now - self.told_at < 5.0:
            return False
        self.told_at = now
        return True
