"""Proposed changes to the voice agents' pipeline, applied by monkeypatching in the bench's
server process only (``CHORUS_BENCH_PATCH=name,name``), so ``bench/agents.py`` can measure
each against Chorus as shipped. Nothing here is imported by Chorus itself.

- ``switch_1ms``: ``sys.setswitchinterval(0.001)``: a thread waiting for the GIL (the pump,
  the event loop, the listener) waits at most 1 ms for a busy Python thread (the LLM's
  decode loop, the TTS) instead of 5 ms.

Measured here and since applied in Chorus: ``whole_knowledge`` and ``stable_knowledge`` (the
system prompt the same every turn: ``AgentSession._messages``), ``whisper_ahead``
(``RealtimeSession`` transcribes during the end-of-turn silence) and ``barge_at_onset``
(``RealtimeSession.on_speech_start``).
"""

import sys


def switch_1ms():
    sys.setswitchinterval(0.001)


PATCHES = {
    "switch_1ms": switch_1ms,
}


def apply(name: str) -> None:
    PATCHES[name]()
