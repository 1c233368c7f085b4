"""One conversation with an agent on the local engine, without sockets: the loop a Channels
consumer (or the ``/v1`` WebSocket) drives.

    session = AgentSession(caller=caller, agent=agent)
    events = session.start(dynamic_variables={...})    # metadata, first message, its audio
    events = session.feed(pcm)                         # 16 kHz mono s16le, 20–100 ms a chunk
    events = session.poll()                            # what the workers produced since
    conversation = session.end("the user hung up")

Pipeline: user audio → the local engine's realtime STT (pocketsphinx partials, Silero VAD end
of utterance after the agent's ``silence_ms``, Whisper for the utterance, started during that
silence) → the agent's knowledge (whole in the system prompt when it is a few chunks; else
retrieval, BM25 ``knowledge.knowledge_search``, with the question) and the conversation so far
→ the LLM streamed (one ``llm.ChatSession`` a conversation: the prompt's start stays the same
turn to turn so the offline model's KV cache holds) → the answer cut into sentences (the first
one's first clause alone), each spoken as soon as it is complete with the local engine's
streaming TTS (``pcm_16000``) while the LLM still writes → ``audio`` events. Barge-in is
decided when the STT's VAD opens an utterance (``on_speech_start``).

Speculation: the STT's Whisper runs ahead during the end-of-turn silence (``on_ahead``); when
the agent is quiet, the responder starts the LLM on that guess right away (the same prompt
the commit would give, the same ``ChatSession``), its chunks held back: nothing is spoken,
emitted or metered. When the commit took that very guess (``last_commit_key``) and the prompt
is the same, the turn reads that stream (what it buffered first) instead of calling the LLM
again (``latency_ms["speculative"]``; ``llm`` then counts from the commit). Speech that
resumes, another guess or another commit cancels it; its call is waited for before the next
one (one call at a time) and the tokens it spent are metered.

Events are dicts in the shapes of the official AsyncAPI file (``conversation_initiation_
metadata``, ``user_transcript``, ``agent_response``, ``agent_response_correction``, ``audio``
with base64 PCM and a rising ``event_id``, ``interruption`` naming the last audio event of the
turn cut short). Chorus's own, outside that file: ``tentative_user_transcript`` (a partial, in
``tentative_user_transcription_event.user_transcript``) and ``error``
(``error_event.message``; ``error_event.fatal`` when the conversation ended).

Threading contract (a Channels consumer must never block its event loop):

- ``start`` and ``end`` block (database, model loading, the first message's synthesis, files):
  call them through ``database_sync_to_async``.
- ``feed`` and ``poll`` never block on the engine or the database: ``feed`` checks the chunk,
  appends it to the recording and queues it for the listener thread, and returns the events
  already produced; ``poll`` returns them too. ``wait(timeout)`` blocks up to ``timeout`` for
  the next events: call it from a worker thread (``sync_to_async(thread_sensitive=False)``),
  never on the loop. All three are safe from any thread.
- Two worker threads per session: the *listener* runs the STT (Whisper blocks 0.3–1 s at each
  end of utterance) and barge-in; it never touches the database. The *responder* runs each agent
  turn (retrieval and metering read the database on its own connection, closed when it stops;
  the LLM is pumped by a short-lived thread of its own so speech and generation overlap).
- The session ends itself (saved, events ``error`` with ``fatal``) when the budget is spent or
  the maximum duration is reached; ``ended`` then says so and ``end`` returns the saved row.

Clock: the conversation's time is the user's audio heard so far (a browser microphone streams
continuously, so it runs at real time): the user track is the audio as received; agent audio
is placed on its track at the user-clock time its turn began to play, back to back, and a
barge-in cuts it where the user's clock stood. The text "actually spoken" of a cut turn is the
share of its sentences' audio played by then (whole sentences, then the words of the current
one in proportion to its audio).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable

from django.db import connection

from apps.billing.services import BudgetExceeded
from apps.engines.base import TTSRequest, VoiceSettings
from apps.generation.caller import Caller
from apps.generation.conversation import ConversationMeter
from apps.generation.text_parts import split_text
from apps.generation.voice_rules import voice_apply

from .config import OFFLINE_MAX_TOKENS, AgentConfig
from .events import SessionEvents
from .knowledge import knowledge_search, knowledge_whole_if_few
from .models import Conversation, TurnRole
from .saving import error_event

log = logging.getLogger(__name__)

RATE = 16000
BYTES_PER_SECOND = RATE * 2
MAX_CHUNK_BYTES = 2 * BYTES_PER_SECOND  # the local engine takes at most 2 s a chunk
AUDIO_EVENT_BYTES = 3200  # agent audio is sent in 100 ms events (a barge-in drops the rest)
OUTPUT_FORMAT = "pcm_16000"
SENTENCE_LIMIT = 300  # a sentence longer than this is spoken in parts
PROGRESS_SECONDS = 5.0  # the responder records usage on the ledger row this often
KNOWLEDGE_CHUNKS = 3
HISTORY_TURNS = 12  # the turns before the question that the LLM sees
KNOWLEDGE_INTRO = (
    "\n\nAnswer from this knowledge when it helps (say so when it does not answer the question):\n"
)
_SENTENCE_END = re.compile(r"""[.!?…]+["'”’)\]]*\s""")
_CLAUSE_END = re.compile(r"""[,;:]["'”’)\]]*\s""")
FIRST_CLAUSE_WORDS = 4  # an answer's first clause is spoken alone when it has this many words


def _estimated_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


@dataclasses.dataclass
class _Turn:
    role: str
    text: str = ""
    started: float = 0.0  # seconds of conversation
    ended: float = 0.0
    interrupted: bool = False
    latency_ms: dict = dataclasses.field(default_factory=dict)
    # Agent turns: where their audio sits on the agent track, and each sentence's share.
    number: int = 0
    audio_start: int | None = None  # sample on the track of the first audio
    produced: int = 0  # samples produced
    sentences: list = dataclasses.field(default_factory=list)  # [(text, samples)]
    written: str = ""  # what the LLM wrote so far (the full answer once it finished)
    last_event_id: int = 0
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    done: bool = False


@dataclasses.dataclass
class _Speculation:
    """An LLM call started on the STT's guess (``on_ahead``), before the commit."""

    key: tuple
    text: str
    messages: list
    stream: _Pump | None = None
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    committed: bool = False  # the commit took its guess: only the responder ends it now


@dataclasses.dataclass(frozen=True)
class _Ahead:
    """A responder job: the STT guessed ``text`` for the utterance ``key`` (see module)."""

    text: str
    key: tuple


class AgentSession(SessionEvents):
    """One conversation of ``caller`` with ``agent`` on the local engine (see the module)."""

    def __init__(
        self,
        *,
        caller: Caller,
        agent,
        llm: Callable | None = None,
        engine=None,
        meter: ConversationMeter | None = None,
        partials: bool = True,
    ):
        super().__init__()
        self.caller, self.agent = caller, agent
        self._llm = llm
        self._engine = engine
        self.meter = meter
        self.partials = partials
        self.conversation: Conversation | None = None
        self.config: AgentConfig | None = None
        self.system_prompt = ""
        self._inbox: queue.Queue = queue.Queue()
        self._jobs: queue.Queue = queue.Queue()
        self._user = bytearray()  # the user track: every byte as received
        self._heard_to = 0  # samples of it the listener has processed: the conversation's clock
        self._agent = bytearray()  # the agent track, silence where the agent is quiet
        self._playback_end = 0  # sample where the agent's audio placed so far ends
        self._walls: collections.deque = collections.deque(maxlen=2000)  # (end sample, wall)
        self._turns: list[_Turn] = []
        self._speaking: _Turn | None = None  # the agent turn being produced or played
        self._event_id = 0
        self._turn_number = 0
        self._user_talking = False
        self._talking_over = False  # the current utterance began while the agent spoke
        self.stt = None
        self._knowledge_whole = _UNKNOWN  # knowledge_whole_if_few, once per conversation
        self.speculate = True  # start the LLM on the STT's guess (see the module)
        self._speculation: _Speculation | None = None  # live, or cancelled and not yet reaped
        self._committed_key = None  # the STT guess key of the last commit

    # --- Public ----------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Seconds of conversation: the user's audio heard (processed by the listener)."""
        return self._heard_to / RATE

    def start(
        self,
        *,
        conversation: Conversation | None = None,
        overrides: dict | None = None,
        dynamic_variables: dict | None = None,
    ) -> list[dict]:
        """Open the conversation (blocks: call it from a thread). Refusals raise before any
        audio: ``BudgetExceeded`` (the conversation is saved as failed with its message)."""
        with self._start_lock:
            if self._stopping.is_set():
                raise RuntimeError("The conversation was ended before it started.")
            try:
                return self._start(
                    conversation=conversation,
                    overrides=overrides,
                    dynamic_variables=dynamic_variables,
                )
            except BudgetExceeded:
                raise  # saved as failed already
            except Exception as exc:
                failure = exc
        # Anything else (a model that would not load, the database): nothing is left open
        # (the reservation released, the row saved as failed), then the error goes up.
        with contextlib.suppress(Exception):
            self._end("The conversation could not start in Chorus.", failed=True, wait=True)
        raise failure

    def _start(self, *, conversation, overrides, dynamic_variables) -> list[dict]:
        from apps.engines.local.engine import local_engine

        first_message = self._opened(conversation, overrides, dynamic_variables, engine="local")
        conversation = self.conversation
        config, caller = self.config, self.caller
        engine = self._engine = self._engine or local_engine()
        self._tts_template = self._voice_request(engine, config)
        if self.meter is None:
            self.meter = ConversationMeter(
                caller=dataclasses.replace(
                    caller, purpose=("conversation", conversation.conversation_id)
                ),
                engine_name=engine.name,
                voice_id=config.voice_id,
            )
        try:
            self.meter.reserve(idempotency_key=f"conversation:{conversation.conversation_id}")
        except BudgetExceeded as exc:
            self._save(reason=str(exc), failed=True)
            self._stopping.set()
            self._ended.set()
            raise
        conversation.usage_event_id = self.meter.reservation.event.pk
        conversation.save(update_fields=["usage_event_id"])
        silence = min(max(config.silence_ms / 1000, 0.3), 3.0)
        self.stt = engine.stt_realtime(
            language_code=config.language,
            commit_strategy="vad",
            vad_silence_threshold_secs=silence,
        )
        self.stt.on_speech_start = self._speech_started  # barge-in at the VAD onset
        if hasattr(self.stt, "on_ahead"):
            self.stt.on_ahead = self._guessed  # the LLM started during the silence
        self._emit(
            {
                "type": "conversation_initiation_metadata",
                "conversation_initiation_metadata_event": {
                    "conversation_id": conversation.conversation_id,
                    "agent_output_audio_format": OUTPUT_FORMAT,
                    "user_input_audio_format": OUTPUT_FORMAT,
                },
            }
        )
        if first_message.strip():
            turn = self._agent_turn()
            self._emit({"type": "agent_response", "agent_response_event": {
                "agent_response": first_message}})  # fmt: skip
            for sentence in self._sentences_of(first_message):
                self._speak(turn, sentence, {})
            self._turn_finished(turn)
        for name, target in (("listener", self._listen), ("responder", self._respond)):
            thread = threading.Thread(
                target=target, name=f"agent-{name}-{conversation.conversation_id}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self.poll()

    def feed(self, pcm) -> list[dict]:
        """User audio in (16 kHz mono s16le); the events produced so far out. Never blocks on
        the engine; bad input is an ``error`` event, never an exception."""
        if self.ended or self._stopping.is_set():
            return [*self.poll(), error_event("The conversation has ended.")]
        if not isinstance(pcm, bytes | bytearray | memoryview):
            return [*self.poll(), error_event("Audio chunks must be bytes of 16-bit PCM.")]
        pcm = bytes(pcm)
        if len(pcm) % 2:
            message = (
                "Audio must be 16 kHz mono 16-bit little-endian PCM: a chunk of "
                f"{len(pcm)} bytes is not a whole number of samples."
            )
            return [*self.poll(), error_event(message)]
        if len(pcm) > MAX_CHUNK_BYTES:
            message = f"Send at most 2 s of audio a chunk ({len(pcm):,} bytes given)."
            return [*self.poll(), error_event(message)]
        if pcm:
            with self._lock:
                self._user += pcm
                self._walls.append((len(self._user) // 2, time.perf_counter()))
            self.meter.add(stt_seconds=len(pcm) / BYTES_PER_SECOND)
            self._inbox.put(pcm)
        return self.poll()

    def idle(self) -> bool:
        """Nothing queued for the workers and no agent turn in production (tests, bench)."""
        with self._lock:
            producing = self._speaking is not None and not self._speaking.done
        return (
            self._inbox.unfinished_tasks == 0
            and self._jobs.unfinished_tasks == 0
            and (not producing)
        )

    def _end(self, reason: str, *, failed: bool, wait: bool) -> Conversation:
        # A worker ending the conversation gives way to a caller already ending it (who is
        # joining that worker): it never waits for the lock.
        if wait:
            with self._start_lock:  # a start under way finishes first (workers exist then)
                pass
        if not self._end_lock.acquire(blocking=wait):
            return self.conversation
        try:
            if self._ended.is_set():
                return self.conversation
            self._stopping.set()
            if self.conversation is None:  # ended before it started: nothing to save
                self._ended.set()
                return None
            with self._lock:
                if self._speaking is not None:
                    self._speaking.cancelled.set()
                if self._speculation is not None:
                    self._speculation.cancelled.set()
            self._inbox.put(None)
            self._jobs.put(None)
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(timeout=60)
            self._speculation_reap(wait=False)  # its tokens were spent: metered
            if self.stt is not None:
                with contextlib.suppress(Exception):
                    self.stt.close()
            conversation = self._save(reason=reason, failed=failed)
            self._ended.set()
            with self._ready:
                self._ready.notify_all()
            return conversation
        finally:
            self._end_lock.release()

    # --- The listener: STT, turn-taking, barge-in ------------------------------------------

    def _listen(self) -> None:
        try:
            while True:
                pcm = self._inbox.get()
                try:
                    if pcm is None or self._stopping.is_set():
                        return
                    self._heard(pcm)
                finally:
                    self._inbox.task_done()
        except Exception:
            log.exception("agent listener failed")
            if not self._stopping.is_set():
                self._end_soon("The conversation failed: speech recognition stopped.", failed=True)
        finally:
            connection.close()  # this thread's own (an ending saves from here)

    def _heard(self, pcm: bytes) -> None:
        config = self.config
        began = time.perf_counter()
        with self._lock:  # before the STT: a barge-in it tells of cuts at this chunk's end
            self._heard_to += len(pcm) // 2
        events = self.stt.send_audio(pcm)
        took = time.perf_counter() - began
        commit_key = getattr(self.stt, "last_commit_key", None)
        if not self.stt.speaking:
            self._user_talking = False
        for event in events:
            kind = event.message_type
            if kind == "error":
                self._emit(error_event(event.error or "Speech recognition failed."))
            elif kind == "partial_transcript" and self.partials:
                if not (self._talking_over and not config.interruptible):
                    self._emit({"type": "tentative_user_transcript",
                                "tentative_user_transcription_event": {
                                    "user_transcript": event.text}})  # fmt: skip
            elif kind == "committed_transcript" and event.text.strip():
                ignored = self._talking_over and not config.interruptible
                self._talking_over = False
                self._committed(event, None if ignored else commit_key)
                if not ignored:
                    self._utterance(event, began=began, took=took, key=commit_key)
        self._speculation_check()
        if self.now >= config.max_duration_seconds:
            self._end_soon(
                f"The conversation reached its maximum length of {config.max_duration_seconds} s.",
                failed=False,
            )

    def _speech_started(self, at: float = 0.0) -> None:
        """The STT's VAD opened an utterance (called inside ``send_audio``, before that
        chunk's partial): the user speaking over the agent interrupts it here."""
        if self._user_talking:
            return
        self._user_talking = True
        self._speculation_cancel()  # the user goes on: not the question it guessed
        self._talking_over = self._agent_speaking()
        if self._talking_over and self.config.interruptible:
            self._interrupt()

    def _guessed(self, text: str, key) -> None:
        """The STT's Whisper ran ahead (its worker thread): the responder may start the LLM."""
        text = " ".join(text.split())
        if text and self.speculate and not self._stopping.is_set():
            self._jobs.put(_Ahead(text, key))

    def _committed(self, event, key) -> None:
        """At a commit (listener): the speculation goes on only when it took the same guess."""
        text = " ".join(event.text.split())
        with self._lock:
            self._committed_key = key
            spec = self._speculation
            if spec is None or spec.committed:
                return
            if key is not None and spec.key == key and spec.text == text:
                spec.committed = True
            else:
                spec.cancelled.set()

    def _speculation_cancel(self) -> None:
        with self._lock:
            spec = self._speculation
            if spec is not None and not spec.committed:
                spec.cancelled.set()

    def _speculation_check(self) -> None:
        """Speech resumed inside the utterance (the STT dropped that guess): cancelled."""
        with self._lock:
            spec = self._speculation
            resumed = spec is not None and getattr(self.stt, "ahead_key", None) != spec.key
            if resumed and not spec.committed:
                spec.cancelled.set()

    def _utterance(self, event, *, began: float, took: float, key=None) -> None:
        text = " ".join(event.text.split())
        speech_end = max((event.end or 0) - getattr(self.stt, "TAIL_SECS", 0.25), event.start or 0)
        wall_end = self._wall_at(int(speech_end * RATE))
        with self._lock:
            self._turns.append(_Turn(TurnRole.USER, text, event.start or 0, event.end or 0))
        self._emit({"type": "user_transcript",
                    "user_transcription_event": {"user_transcript": text}})  # fmt: skip
        timing = {"speech_end": wall_end, "stt_start": began, "stt_ms": took * 1000,
                  "ahead_key": key}  # fmt: skip
        self._jobs.put((text, timing))

    def _wall_at(self, sample: int) -> float:
        with self._lock:
            for end, wall in self._walls:
                if end >= sample:
                    return wall
        return time.perf_counter()

    def _agent_speaking(self) -> bool:
        with self._lock:
            producing = self._speaking is not None and not self._speaking.done
            return producing or self._heard_to < self._playback_end

    def _interrupt(self) -> None:
        """The user spoke over the agent: its audio stops here, the turn keeps what was
        played (``interruption`` and ``agent_response_correction``)."""
        with self._lock:
            turn = self._speaking
            if turn is None or turn.cancelled.is_set():
                turn = self._last_agent_turn_playing()
                if turn is None:
                    return
            turn.cancelled.set()
            now = self._heard_to
            played = 0 if turn.audio_start is None else min(max(now - turn.audio_start, 0),
                                                            turn.produced)  # fmt: skip
            said = " ".join(text for text, _ in turn.sentences) or turn.text
            original = " ".join(turn.written.split()) or said
            spoken = _spoken_text(turn.sentences, played)
            turn.text, turn.interrupted = spoken, True
            turn.ended = (turn.audio_start + played) / RATE if turn.audio_start is not None else now
            if turn.audio_start is not None:
                cut = (turn.audio_start + played) * 2
                del self._agent[cut:]
                self._playback_end = turn.audio_start + played
            # Audio the consumer has not taken yet is never sent.
            kept = [(n, e) for n, e in self._out if not (n == turn.number and e["type"] == "audio")]
            self._out.clear()
            self._out.extend(kept)
        self._emit({"type": "interruption", "interruption_event": {"event_id": turn.last_event_id}})
        if original != spoken:
            self._emit({"type": "agent_response_correction",
                        "agent_response_correction_event": {
                            "original_agent_response": original,
                            "corrected_agent_response": spoken}})  # fmt: skip

    def _last_agent_turn_playing(self) -> _Turn | None:
        for turn in reversed(self._turns):
            if turn.role == TurnRole.AGENT:
                end = (turn.audio_start or 0) + turn.produced
                if not turn.interrupted and self._heard_to < end:
                    return turn
                return None
        return None

    # --- The responder: retrieval, LLM, TTS ----------------------------------------------

    def _respond(self) -> None:
        last_progress = time.monotonic()
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=PROGRESS_SECONDS)
                except queue.Empty:
                    if not self._stopping.is_set():
                        self.meter.progress()
                    last_progress = time.monotonic()
                    continue
                try:
                    if job is None or self._stopping.is_set():
                        return
                    if isinstance(job, _Ahead):
                        self._speculate(job)
                        continue
                    blocked = self.meter.blocked_by()
                    if blocked:
                        self._end_soon(blocked, failed=False)
                        return
                    self._reply(*job)
                    if time.monotonic() - last_progress >= PROGRESS_SECONDS:
                        self.meter.progress()
                        last_progress = time.monotonic()
                finally:
                    self._jobs.task_done()
        except Exception:
            log.exception("agent responder failed")
            if not self._stopping.is_set():
                self._end_soon("The conversation failed: the agent could not answer.", failed=True)
        finally:
            connection.close()  # this thread's own

    def _messages(self, question: str) -> list[dict]:
        """The LLM's prompt for ``question``. The system prompt and the turns before the
        question stay the same from turn to turn, so the offline LLM reuses its KV cache for
        them (it recomputes from the first token that differs): small knowledge (at most
        ``KNOWLEDGE_CHUNKS`` chunks) goes into the system prompt whole, in document order;
        from larger knowledge, the passages retrieved for this question go with the question
        itself, in the last message."""
        config = self.config
        system = self.system_prompt
        if self._knowledge_whole is _UNKNOWN:  # the documents do not change mid-call
            self._knowledge_whole = knowledge_whole_if_few(
                self.agent.workspace, config.knowledge, k=KNOWLEDGE_CHUNKS
            )
        whole, passages = self._knowledge_whole, []
        if whole:
            system += KNOWLEDGE_INTRO + "\n\n".join(chunk.text for chunk in whole)
        elif whole is None:
            found = knowledge_search(
                self.agent.workspace, config.knowledge, question, k=KNOWLEDGE_CHUNKS
            )
            passages = sorted(found, key=lambda chunk: (chunk.document_id, chunk.position))
        messages = [{"role": "system", "content": system}]
        with self._lock:
            history = [t for t in self._turns if t.text and t.role in TurnRole.values]
        if history and history[-1].role == TurnRole.USER and history[-1].text == question:
            history.pop()
        if len(history) > HISTORY_TURNS:
            # The oldest turns leave in blocks of half the window, not one a turn: the
            # history's start (and so the cached prefix) then changes only every few turns.
            step = max(HISTORY_TURNS // 2, 1)
            history = history[-(-(len(history) - HISTORY_TURNS) // step) * step :]
        for turn in history:
            role = "assistant" if turn.role == TurnRole.AGENT else "user"
            messages.append({"role": role, "content": turn.text})
        if passages:
            # In the question's own message (not a message of its own: some chat templates
            # want user and assistant turns to alternate), after the cached history.
            found = "\n\n".join(chunk.text for chunk in passages)
            question = f"{KNOWLEDGE_INTRO.strip()}\n{found}\n\nQuestion: {question}"
        messages.append({"role": "user", "content": question})
        return messages

    def _chat(self, messages: list[dict], cancelled: threading.Event) -> _Pump:
        """The LLM streamed for ``messages`` in a thread of its own."""
        if self._llm is None:  # one ChatSession a conversation (the offline model's KV cache)
            from .llm import ChatSession

            self._llm = ChatSession().stream
        config = self.config
        chunks = self._llm(
            messages,
            model=config.llm,
            temperature=config.temperature,
            max_tokens=self._max_tokens(),
        )
        return _Pump(chunks, cancelled)

    def _speculate(self, job: _Ahead) -> None:
        """Start the LLM on the STT's guess (responder), its chunks held in the pump."""
        self._speculation_reap(wait=True)  # an earlier one's call stops first
        if self._agent_speaking() or self.meter.blocked_by():
            return

        def current() -> bool:
            return (
                self._committed_key != job.key
                and getattr(self.stt, "ahead_key", None) == job.key
                and not self._stopping.is_set()
            )

        with self._lock:
            if not current():
                return
        spec = _Speculation(job.key, job.text, self._messages(job.text))
        with self._lock:  # the listener sees it from here on (commit, resumed speech)
            if not current() or self._agent_speaking():
                return
            self._speculation = spec
            spec.stream = self._chat(spec.messages, spec.cancelled)

    def _speculation_take(self, question: str, key, messages: list[dict]):
        """The speculation this commit can read, if any (taken: no longer cancellable by the
        listener except as the turn, through its ``cancelled``)."""
        with self._lock:
            spec = self._speculation
            if (
                spec is not None
                and spec.committed
                and not spec.cancelled.is_set()
                and key is not None
                and spec.key == key
                and spec.text == question
                and spec.messages == messages
            ):
                self._speculation = None
                return spec
        return None

    def _speculation_reap(self, *, wait: bool) -> None:
        """Cancel the speculation left, wait for its call to stop (``wait``: one LLM call at
        a time) and meter the tokens it spent."""
        with self._lock:
            spec, self._speculation = self._speculation, None
        if spec is None:
            return
        spec.cancelled.set()
        stream = spec.stream
        if stream is None:
            return
        if wait and not self._stopping.is_set():
            stream.join()
        written, tokens = "", None
        for chunk in stream.drain():
            written += getattr(chunk, "text", None) or ""
            counted = _tokens_of(chunk)
            if counted is not None:
                tokens = counted
        if tokens is None:
            tokens = sum(_estimated_tokens(m["content"]) for m in spec.messages)
            tokens += _estimated_tokens(written)
        self.meter.add(llm_tokens=tokens)

    def _reply(self, question: str, timing: dict) -> None:
        picked = time.perf_counter()
        messages = self._messages(question)
        retrieved = time.perf_counter()
        spec = self._speculation_take(question, timing.get("ahead_key"), messages)
        if spec is None:
            self._speculation_reap(wait=True)  # one LLM call at a time
        turn = self._agent_turn(cancelled=spec.cancelled if spec is not None else None)
        latency = {
            "stt": round(timing["stt_ms"]),
            "wait": round((timing["stt_start"] - timing["speech_end"]) * 1000),
            "retrieval": round((retrieved - picked) * 1000),
        }
        if spec is not None:
            stream = spec.stream  # started during the silence: what it buffered comes first
            latency["speculative"] = True
        else:
            stream = self._chat(messages, turn.cancelled)
        written, pending, tokens = "", "", None
        first_token = None
        first_part = True  # nothing of the answer handed to the TTS yet
        for chunk in stream:
            if turn.cancelled.is_set():
                break
            delta = getattr(chunk, "text", None) or ""
            counted = _tokens_of(chunk)
            if counted is not None:
                tokens = counted
            if not delta:
                continue
            if first_token is None:
                first_token = time.perf_counter()
                latency["llm"] = round((first_token - retrieved) * 1000)
            written += delta
            pending += delta
            turn.written = written
            sentences, pending = _complete_sentences(pending)
            if first_part:
                sentences, pending = _first_clause_cut(sentences, pending)
                first_part = not sentences
            for sentence in sentences:
                self._speak(turn, sentence, latency, timing)
                if turn.cancelled.is_set():
                    break
        if not self._stopping.is_set():  # ending: the LLM's thread is left to time out
            stream.join()  # one LLM call at a time (a ChatSession serves one turn at a time)
        if stream.error is not None:
            log.warning("agent LLM failed: %s", stream.error)
            self._emit(error_event(f"The agent's language model failed: {stream.error}"))
        if not turn.cancelled.is_set() and pending.strip():
            for sentence in self._sentences_of(pending):
                self._speak(turn, sentence, latency, timing)
        if tokens is None:
            tokens = sum(_estimated_tokens(m["content"]) for m in messages) + _estimated_tokens(
                written
            )
        self.meter.add(llm_tokens=tokens)
        if written.strip() and not turn.cancelled.is_set():
            self._emit({"type": "agent_response",
                        "agent_response_event": {"agent_response": " ".join(written.split())}},
                       turn.number)  # fmt: skip
        if "first_audio" in latency:
            latency["total"] = round((latency.pop("first_audio") - timing["speech_end"]) * 1000)
        turn.latency_ms = latency
        self._turn_finished(turn)

    def _max_tokens(self) -> int:
        """The agent's ``max_tokens``; on the offline model, an agent left at the default
        gets ``OFFLINE_MAX_TOKENS`` (see config)."""
        from .llm import LLMError, endpoint_url

        chosen = self.config.max_tokens
        if chosen != AgentConfig.max_tokens:
            return chosen
        try:
            offline = endpoint_url() is None
        except LLMError:
            offline = False  # a bad endpoint URL: the stream says so
        return OFFLINE_MAX_TOKENS if offline else chosen

    def _agent_turn(self, cancelled: threading.Event | None = None) -> _Turn:
        with self._lock:
            self._turn_number += 1
            turn = _Turn(TurnRole.AGENT, number=self._turn_number, started=self.now)
            if cancelled is not None:
                turn.cancelled = cancelled  # the speculation's: a barge-in stops its LLM
            self._turns.append(turn)
            self._speaking = turn
        return turn

    def _turn_finished(self, turn: _Turn) -> None:
        with self._lock:
            if not turn.interrupted:
                turn.text = " ".join(text for text, _ in turn.sentences)
                if turn.audio_start is not None:
                    turn.ended = (turn.audio_start + turn.produced) / RATE
            turn.done = True
            if turn.audio_start is None and turn in self._turns:
                self._turns.remove(turn)  # nothing was said (cut before any audio)

    def _sentences_of(self, text: str) -> list[str]:
        sentences, rest = _complete_sentences(text + " ")
        return [p for s in [*sentences, rest] if s.strip() for p in split_text(s, SENTENCE_LIMIT)]

    def _speak(self, turn: _Turn, sentence: str, latency: dict, timing: dict | None = None):
        """Speak one sentence of ``turn`` with the streaming TTS, as ``audio`` events."""
        for part in split_text(sentence, SENTENCE_LIMIT):
            if turn.cancelled.is_set():
                return
            request = dataclasses.replace(self._tts_template, text=part)
            began = time.perf_counter()
            stream = self._engine.tts_stream(request)
            self.meter.add(tts_characters=len(part))
            samples = 0
            with contextlib.closing(stream) if hasattr(stream, "close") else _null():
                for chunk in stream:
                    if turn.cancelled.is_set():
                        break
                    data = chunk.audio
                    if not data:
                        continue
                    if "tts" not in latency and timing is not None:
                        latency["tts"] = round((time.perf_counter() - began) * 1000)
                        latency["first_audio"] = time.perf_counter()
                    samples += self._place(turn, data)
            with self._lock:
                turn.sentences.append((part, samples))

    def _place(self, turn: _Turn, data: bytes) -> int:
        """Put agent audio on the track and queue it as ``audio`` events; its samples."""
        if len(data) % 2:
            data = data[:-1]
        with self._lock:
            if turn.cancelled.is_set():
                return 0
            if turn.audio_start is None:
                turn.audio_start = max(self._heard_to, self._playback_end)
                turn.started = turn.audio_start / RATE
                self._playback_end = turn.audio_start  # silence before it on the track
            at = self._playback_end * 2
            if len(self._agent) < at:
                self._agent += bytes(at - len(self._agent))
            del self._agent[at:]
            self._agent += data
            self._playback_end += len(data) // 2
            turn.produced += len(data) // 2
            for offset in range(0, len(data), AUDIO_EVENT_BYTES):
                self._event_id += 1
                turn.last_event_id = self._event_id
                piece = data[offset : offset + AUDIO_EVENT_BYTES]
                self._out.append((turn.number, {"type": "audio", "audio_event": {
                    "audio_base_64": base64.b64encode(piece).decode("ascii"),
                    "event_id": self._event_id}}))  # fmt: skip
            self._ready.notify_all()
        return len(data) // 2

    def _voice_request(self, engine, config: AgentConfig) -> TTSRequest:
        settings = {
            name: getattr(config, name)
            for name in ("stability", "similarity_boost", "speed")
            if getattr(config, name) is not None
        }
        request = TTSRequest(
            text="Hello.",
            voice_id=config.voice_id,
            model_id=config.tts_model_id,
            voice_settings=VoiceSettings(**settings) if settings else None,
            output_format=OUTPUT_FORMAT,
            language_code=config.language,
        )
        voice_apply(
            workspace=self.agent.workspace,
            engine=engine,
            request=request,
            given=settings or None,
            final=not self.caller.draft,
        )
        return request


class _Pump:
    """Iterate an LLM stream in a thread of its own, so speaking a sentence never holds up
    the next tokens; ``cancelled`` stops it at the next chunk. An LLM error ends the
    iteration and is kept in ``error``."""

    def __init__(self, chunks: Iterable, cancelled: threading.Event):
        self._queue: queue.Queue = queue.Queue()
        self._cancelled = cancelled
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(chunks,), daemon=True)
        self._thread.start()

    def _run(self, chunks) -> None:
        try:
            for chunk in chunks:
                if self._cancelled.is_set():
                    break
                self._queue.put(chunk)
        except Exception as exc:  # the LLMError of llm.py, or a broken endpoint
            self.error = exc
        finally:
            with contextlib.suppress(Exception):
                getattr(chunks, "close", lambda: None)()
            self._queue.put(_DONE)

    def join(self) -> None:
        self._thread.join(timeout=30)

    def drain(self) -> list:
        """The chunks queued and not yet read (never blocks)."""
        chunks = []
        while True:
            try:
                chunk = self._queue.get_nowait()
            except queue.Empty:
                return chunks
            if chunk is _DONE:
                return chunks
            chunks.append(chunk)

    def __iter__(self):
        while True:
            try:
                chunk = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._cancelled.is_set():  # an LLM that says nothing is not waited for
                    return
                continue
            if chunk is _DONE:
                return
            yield chunk


_DONE = object()
_UNKNOWN = object()


@contextlib.contextmanager
def _null():
    yield


def _tokens_of(chunk) -> int | None:
    """The token count an LLM chunk reports (prompt + completion), if any: ``llm.LLMChunk``
    has them on its last (``done``) chunk only."""
    if getattr(chunk, "done", True) is False:
        return None
    total = getattr(chunk, "total_tokens", None)
    if total is not None:
        return int(total)
    parts = [getattr(chunk, name, None) for name in ("prompt_tokens", "completion_tokens")]
    if all(p is None for p in parts):
        return None
    return sum(int(p or 0) for p in parts)


def _complete_sentences(text: str) -> tuple[list[str], str]:
    """The whole sentences at the start of ``text`` and what follows them."""
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    return sentences, text[start:]


def _first_clause_cut(sentences: list[str], rest: str) -> tuple[list[str], str]:
    """The first thing an answer says, spoken sooner: its first sentence (whole, or still
    being written) cut after its first clause (at ``,`` ``;`` ``:`` followed by a space) of at
    least ``FIRST_CLAUSE_WORDS`` words; the rest of it follows as a part of its own.
    ``sentences`` and ``rest`` as ``_complete_sentences`` gives them; unchanged when there is
    no such clause yet."""
    head = sentences[0] if sentences else rest
    for match in _CLAUSE_END.finditer(head):
        clause = head[: match.end()].strip()
        if len(clause.split()) >= FIRST_CLAUSE_WORDS:
            after = head[match.end() :]
            if sentences:
                return [clause, *([after.strip()] if after.strip() else []), *sentences[1:]], rest
            return [clause], after
    return sentences, rest


def _spoken_text(sentences: list[tuple[str, int]], played: int) -> str:
    """What was heard of ``sentences`` (text, samples) after ``played`` samples: the whole
    sentences played, then the words of the next in proportion to its audio played."""
    heard = []
    for text, samples in sentences:
        if played >= samples:
            heard.append(text)
            played -= samples
            continue
        if samples and played > 0:
            words = text.split()
            count = int(len(words) * played / samples)
            if count:
                heard.append(" ".join(words[:count]))
        break
    return " ".join(heard)
