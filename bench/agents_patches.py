"""Proposed changes to the voice agents' pipeline, applied by monkeypatching in the bench's
server process only (``CHORUS_BENCH_PATCH=name,name``), so ``bench/agents.py`` can measure
each against Chorus as shipped. Nothing here is imported by Chorus itself.

- ``whisper_ahead``: transcribe the utterance while the end-of-turn silence is still being
  waited for. Once the VAD has heard 96 ms of silence, Whisper starts in a worker thread on
  the utterance up to the silence (plus what of the tail has come), and the commit, when
  the silence lasted and so ends the same speech, takes that result instead of running
  Whisper itself (speech that resumes simply wastes the guess).
- ``barge_at_onset``: the session hears that the user started talking at the moment the VAD
  opens the utterance (inside ``send_audio``), not after ``send_audio`` returned, and that
  chunk's pocketsphinx partial waits for the next chunk: it is no longer in the way of the
  interruption (it holds the GIL, so it also held up the pump that sends the event).
- ``stable_knowledge``: the retrieved chunks go into the system prompt in document order, not
  score order: the same chunks give the same prompt, so the offline LLM's KV cache (reused
  up to the first token that differs) keeps the system prompt and the earlier turns instead
  of prefilling them again whenever the chunks' ranking changes.
- ``whole_knowledge``: knowledge of ``k`` chunks or fewer goes into the prompt whole (in
  document order) every turn, so the system prompt is the same from turn to turn even when a
  question matches only some of it (retrieval drops chunks that score 0).
- ``switch_1ms``: ``sys.setswitchinterval(0.001)``: a thread waiting for the GIL (the pump,
  the event loop, the listener) waits at most 1 ms for a busy Python thread (the LLM's
  decode loop, the TTS) instead of 5 ms.
"""

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

AHEAD_SILENCE = 3 * 512  # samples of silence (three VAD windows, 96 ms) before guessing


def whisper_ahead():
    from apps.engines.local import stt

    pool = ThreadPoolExecutor(1, thread_name_prefix="whisper-ahead")
    recognise = stt.recognise
    local = threading.local()  # the guess the listener's commit may take

    def recognise_taking_ahead(samples, **options):
        guess, local.guess = getattr(local, "guess", None), None
        if guess is not None:
            return guess.result()
        return recognise(samples, **options)

    finish = stt.RealtimeSession._finish

    def finish_taking(self, end, *, manual=False):
        ahead, self._ahead = getattr(self, "_ahead", None), None
        tail = int(self.TAIL_SECS * stt.SAMPLE_RATE)
        if ahead is not None and not manual and ahead[:2] == (self._utterance_start, end - tail):
            local.guess = ahead[2]  # the same speech: only trailing silence differs
        try:
            return finish(self, end, manual=manual)
        finally:
            local.guess = None

    step = stt.RealtimeSession._step

    def step_guessing(self, p, window_end):
        events = step(self, p, window_end)
        start = self._utterance_start
        if start is None or self.commit_strategy != "vad" or self._silence_run < AHEAD_SILENCE:
            return events
        silent_from = window_end - self._silence_run
        ahead = getattr(self, "_ahead", None)
        if ahead is not None and ahead[:2] == (start, silent_from):
            return events
        tail = int(self.TAIL_SECS * stt.SAMPLE_RATE)
        end = min(silent_from + tail, self._received)
        audio = self._buffer[start - self._buffer_start : end - self._buffer_start]
        if len(audio) < stt.MIN_AUDIO_SECS * stt.SAMPLE_RATE:
            return events
        options = {
            "kind": self.kind,
            "language": self.language,
            "keyterms": self.keyterms,
            "tag_audio_events": self.tag_audio_events,
            "no_verbatim": self.no_verbatim,
            "vad_filter": False,
        }
        samples = audio.astype(np.float32) / 32768.0
        self._ahead = (start, silent_from, pool.submit(recognise, samples, **options))
        return events

    stt.recognise = recognise_taking_ahead
    stt.RealtimeSession._finish = finish_taking
    stt.RealtimeSession._step = step_guessing


def barge_at_onset():
    from apps.agents.session import AgentSession
    from apps.engines.local import stt

    begin = stt.RealtimeSession._begin

    def begin_telling(self, start):
        begin(self, start)
        hook = getattr(self, "on_speech_start", None)
        if hook is not None:
            self._partials_later = True
            hook()

    partials = stt.RealtimeSession._partials

    def partials_later(self):
        # The chunk that opened the utterance: its partial comes with the next chunk, so
        # pocketsphinx (which holds the GIL ~90 ms on the pre-roll) does not delay the
        # interruption on its way to the socket.
        if getattr(self, "_partials_later", False):
            self._partials_later = False
            return []
        return partials(self)

    def speech_started(session):
        if session._user_talking:
            return
        session._user_talking = True
        session._talking_over = session._agent_speaking()
        if session._talking_over and session.config.interruptible:
            session._interrupt()

    start = AgentSession.start

    def start_hooking(self, *args, **kwargs):
        events = start(self, *args, **kwargs)
        self.stt.on_speech_start = lambda: speech_started(self)
        return events

    stt.RealtimeSession._begin = begin_telling
    stt.RealtimeSession._partials = partials_later
    AgentSession.start = start_hooking


def stable_knowledge():
    from apps.agents import session

    search = session.knowledge_search

    def search_in_document_order(*args, **kwargs):
        # The same chunks give the same system prompt, whatever their scores' order.
        return sorted(search(*args, **kwargs), key=lambda chunk: chunk.pk)

    session.knowledge_search = search_in_document_order


def whole_knowledge():
    from apps.agents import session
    from apps.agents.models import KnowledgeChunk

    search = session.knowledge_search

    def all_when_few(workspace, document_ids, query, k=3):
        # Knowledge of k chunks or fewer is the whole of it, every turn, in document order:
        # the system prompt never changes, so the LLM's cache keeps every earlier turn.
        chunks = KnowledgeChunk.objects.filter(
            document__workspace=workspace, document__document_id__in=list(document_ids)
        ).order_by("pk")
        if len(chunks[: k + 1]) <= k:
            return list(chunks)
        return sorted(search(workspace, document_ids, query, k=k), key=lambda c: c.pk)

    session.knowledge_search = all_when_few


def switch_1ms():
    sys.setswitchinterval(0.001)


PATCHES = {
    "whole_knowledge": whole_knowledge,
    "stable_knowledge": stable_knowledge,
    "whisper_ahead": whisper_ahead,
    "barge_at_onset": barge_at_onset,
    "switch_1ms": switch_1ms,
}


def apply(name: str) -> None:
    PATCHES[name]()
