"""One conversation with an agent on the ElevenLabs engine: relayed server-side to the
provider's conversation WebSocket, behind the same interface as the local ``AgentSession``.

    session = session_open(caller=caller, agent=agent)   # AgentSession or RelaySession
    events = session.start(dynamic_variables={...})
    events = session.feed(pcm)                           # 16 kHz mono s16le
    events = session.poll()  /  session.wait(0.2)
    conversation = session.end("the user hung up")

``start`` brings the agent's copy at the provider up to date (``upstream.agent_upstream_sync``),
opens the conversation with the workspace's key (``engine.convai_conversation``: a signed URL
fetched with the key, so the key never reaches the browser, the socket or a log line), sends
``conversation_initiation_client_data`` with the overrides and dynamic variables, and waits for
the provider's metadata. Then the user's audio goes up as ``user_audio_chunk`` (a sender
thread), and a reader thread turns the provider's events into the session's: ``audio``
(re-numbered, in 100 ms events of base64 ``pcm_16000``), ``user_transcript``,
``tentative_user_transcript``, ``agent_response``, ``agent_response_correction``,
``interruption`` (naming the last audio event of the cut turn, whose queued audio is dropped)
and ``error`` (``fatal`` when the conversation ended). The provider's pings are answered by the
socket; a client tool call is answered with an error (Chorus agents have no client tools).

Everything is recorded as on the local engine: both sides' tracks (``recordings`` mixes them),
the turns with their times and interruptions, and one ledger row (``ConversationMeter``: STT
seconds of user audio sent, TTS characters of the agent's text, LLM tokens estimated from the
prompt, the conversation so far and the answer). The conversation ends itself with a fatal
``error`` when the budget is spent, the provider closes it, or its maximum length is passed.

A refusal at the start (the provider down, a bad key, a refused agent) is a fatal ``error``
event from ``start``: the conversation is saved as failed and its reservation released.

Threading: as ``AgentSession`` (``start``/``end`` block; ``feed``/``poll`` never do;
``wait`` blocks up to its timeout). The reader thread touches the database (metering, an
ending it decides) on its own connection, closed when it stops.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import queue
import threading
import time

import numpy as np
from django.db import connection

from apps.billing.services import BudgetExceeded
from apps.engines.base import EngineError
from apps.generation.caller import Caller
from apps.generation.conversation import ConversationMeter

from .config import AgentConfig
from .events import SessionEvents
from .models import Conversation, TurnRole
from .saving import error_event
from .upstream import AUDIO_FORMAT, agent_upstream_sync

log = logging.getLogger(__name__)

RATE = 16000
BYTES_PER_SECOND = RATE * 2
MAX_CHUNK_BYTES = 2 * BYTES_PER_SECOND
AUDIO_EVENT_BYTES = 3200
PROGRESS_SECONDS = 5.0
READ_SECONDS = 0.2  # the reader's longest wait for an event before it looks at the clock
SPEECH_RMS = 500.0  # a chunk of user audio louder than this is speech (a turn's start)
HISTORY_TURNS = 12
ENGINE = "elevenlabs"


def session_open(*, caller: Caller, agent, llm=None):
    """The session for a conversation of ``caller`` with ``agent`` on its workspace's engine:
    a ``RelaySession`` on ElevenLabs, else the local ``AgentSession`` (with ``llm``, a test's
    stand-in). Reads the workspace's engine settings: call it from a thread
    (``database_sync_to_async``), as ``start``."""
    from apps.generation.engine import engine_for

    from .session import AgentSession

    engine = engine_for(agent.workspace)
    if engine.name == ENGINE:
        return RelaySession(caller=caller, agent=agent, engine=engine)
    return AgentSession(caller=caller, agent=agent, llm=llm, engine=engine)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


@dataclasses.dataclass
class _Turn:
    role: str
    text: str = ""
    started: float = 0.0
    ended: float = 0.0
    interrupted: bool = False
    number: int = 0
    audio_start: int | None = None  # sample of the agent track where its audio begins
    produced: int = 0
    last_event_id: int = 0
    closed: bool = False  # an agent turn after which the user spoke: new audio is a new turn


class RelaySession(SessionEvents):
    """One conversation of ``caller`` with ``agent`` at the provider (see the module)."""

    def __init__(self, *, caller: Caller, agent, engine=None, meter=None, llm=None):
        super().__init__()
        self.caller, self.agent = caller, agent
        self._engine = engine
        self.meter: ConversationMeter | None = meter
        self.conversation: Conversation | None = None
        self.config: AgentConfig | None = None
        self.system_prompt = ""
        self.socket = None
        self._outbox: queue.Queue = queue.Queue()
        self._user = bytearray()
        self._agent = bytearray()
        self._playback_end = 0
        self._speech_start: int | None = None  # sample where the user's current speech began
        self._turns: list[_Turn] = []
        self._event_id = 0
        self._turn_number = 0
        self._cut_upto = -1  # the provider's audio event ids up to this were interrupted
        self._fatal = ""  # what the provider said before it closed

    # --- Public ----------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Seconds of conversation: the user's audio received."""
        with self._lock:
            return len(self._user) / BYTES_PER_SECOND

    def start(
        self,
        *,
        conversation: Conversation | None = None,
        overrides: dict | None = None,
        dynamic_variables: dict | None = None,
    ) -> list[dict]:
        """Open the conversation at the provider (blocks: call it from a thread).
        ``BudgetExceeded`` raises (saved as failed); a provider's refusal is a fatal
        ``error`` event (saved as failed, the reservation released)."""
        with self._start_lock:
            if self._stopping.is_set():
                raise RuntimeError("The conversation was ended before it started.")
            try:
                return self._start(conversation, overrides, dynamic_variables)
            except BudgetExceeded:
                raise
            except Exception as exc:
                failure = exc
        with contextlib.suppress(Exception):
            self._end("The conversation could not start in Chorus.", failed=True, wait=True)
        raise failure

    def _start(self, conversation, overrides, dynamic_variables) -> list[dict]:
        from apps.generation.engine import engine_for

        _ = self._opened(conversation, overrides, dynamic_variables, engine=ENGINE)
        agent, conversation = self.agent, self.conversation
        config, caller = self.config, self.caller
        try:
            engine = self._engine = self._engine or engine_for(agent.workspace)
        except EngineError as exc:  # the stored key cannot be read
            return self._refused(f"The workspace's engine cannot be used: {exc.message}")
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
        initiation = {
            "type": "conversation_initiation_client_data",
            "conversation_config_override": dict(overrides or {}),
            "dynamic_variables": dict(dynamic_variables or {}),
        }
        try:
            upstream_id = agent_upstream_sync(agent=agent, engine=engine)
            self.socket = engine.convai_conversation(upstream_id, initiation=initiation)
        except EngineError as exc:
            return self._refused(f"{engine.label} refused the conversation: {exc.message}")
        meta = self.socket.metadata
        formats = (meta.get("agent_output_audio_format"), meta.get("user_input_audio_format"))
        if any(f not in (None, AUDIO_FORMAT) for f in formats):
            self.socket.close()
            return self._refused(
                f"The agent at {engine.label} speaks {formats[0]} and listens to {formats[1]}; "
                f"Chorus relays {AUDIO_FORMAT} only."
            )
        conversation.upstream_conversation_id = self.socket.conversation_id[:64]
        conversation.save(update_fields=["upstream_conversation_id"])
        self._emit(
            {
                "type": "conversation_initiation_metadata",
                "conversation_initiation_metadata_event": {
                    "conversation_id": conversation.conversation_id,
                    "agent_output_audio_format": AUDIO_FORMAT,
                    "user_input_audio_format": AUDIO_FORMAT,
                },
            }
        )
        for name, target in (("reader", self._read), ("sender", self._send)):
            thread = threading.Thread(
                target=target, name=f"relay-{name}-{conversation.conversation_id}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self.poll()

    def _refused(self, message: str) -> list[dict]:
        """The provider refused the start: said, saved as failed, the reservation released."""
        if self.meter is not None:
            self.meter.release(note=message)
        self._emit(error_event(message, fatal=True))
        self._save(reason=message, failed=True)
        self._stopping.set()
        self._ended.set()
        return self.poll()

    def feed(self, pcm) -> list[dict]:
        """User audio in (16 kHz mono s16le); the events so far out. Never blocks."""
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
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
            loud = float(np.sqrt(np.mean(samples**2))) > SPEECH_RMS
            with self._lock:
                if loud and self._speech_start is None:
                    self._speech_start = len(self._user) // 2
                self._user += pcm
            self.meter.add(stt_seconds=len(pcm) / BYTES_PER_SECOND)
            self._outbox.put(pcm)
        return self.poll()

    def _end(self, reason: str, *, failed: bool, wait: bool) -> Conversation | None:
        if wait:
            with self._start_lock:
                pass
        if not self._end_lock.acquire(blocking=wait):
            return self.conversation
        try:
            if self._ended.is_set():
                return self.conversation
            self._stopping.set()
            self._outbox.put(None)
            if self.socket is not None:
                with contextlib.suppress(Exception):
                    self.socket.close()
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(timeout=30)
            conversation = self._save(reason=reason, failed=failed) if self.conversation else None
            self._ended.set()
            with self._ready:
                self._ready.notify_all()
            return conversation
        finally:
            self._end_lock.release()

    # --- The sender: user audio to the provider --------------------------------------------

    def _send(self) -> None:
        from apps.engines.elevenlabs.convai import ConvaiEnded

        while True:
            pcm = self._outbox.get()
            if pcm is None or self._stopping.is_set():
                return
            try:
                self.socket.send_audio(pcm)
            except ConvaiEnded:
                return  # the reader hears the close and ends the conversation
            except Exception:
                log.exception("relay sender failed")
                return

    # --- The reader: the provider's events -------------------------------------------------

    def _read(self) -> None:
        from apps.engines.elevenlabs.convai import ConvaiEnded

        last_progress = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    event = self.socket.receive(READ_SECONDS)
                except ConvaiEnded as exc:
                    if not self._stopping.is_set():
                        message = self._fatal or exc.message
                        self._end_soon(
                            f"The conversation ended at ElevenLabs: {message}",
                            failed=not exc.normal,
                        )
                    return
                if event is not None:
                    self._upstream(event)
                if self._stopping.is_set():
                    return
                if time.monotonic() - last_progress >= PROGRESS_SECONDS:
                    last_progress = time.monotonic()
                    self.meter.progress()
                    if self._budget_spent():
                        return
                limit = self.config.max_duration_seconds
                if self.now >= limit + 5:  # the provider ends it at its length; a backstop
                    self._end_soon(
                        f"The conversation reached its maximum length of {limit} s.", failed=False
                    )
                    return
        except Exception:
            log.exception("relay reader failed")
            if not self._stopping.is_set():
                self._end_soon(
                    "The conversation failed: the relay to ElevenLabs stopped.", failed=True
                )
        finally:
            connection.close()  # this thread's own

    def _budget_spent(self) -> bool:
        blocked = self.meter.blocked_by()
        if blocked:
            self._end_soon(blocked, failed=False)
            return True
        return False

    def _upstream(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "audio":
            self._audio(event.get("audio_event") or {})
        elif kind == "agent_response":
            text = str((event.get("agent_response_event") or {}).get("agent_response") or "")
            self._agent_response(" ".join(text.split()))
        elif kind == "agent_response_correction":
            inner = event.get("agent_response_correction_event") or {}
            corrected = " ".join(str(inner.get("corrected_agent_response") or "").split())
            with self._lock:
                turn = self._last(TurnRole.AGENT)
                if turn is not None:
                    turn.text = corrected
            self._emit({"type": "agent_response_correction",
                        "agent_response_correction_event": {
                            "original_agent_response": inner.get("original_agent_response", ""),
                            "corrected_agent_response": corrected}})  # fmt: skip
        elif kind == "user_transcript":
            text = str((event.get("user_transcription_event") or {}).get("user_transcript") or "")
            self._user_transcript(" ".join(text.split()))
        elif kind == "tentative_user_transcript":
            inner = event.get("tentative_user_transcription_event") or {}
            partial = str(inner.get("user_transcript") or "")
            self._emit(
                {
                    "type": "tentative_user_transcript",
                    "tentative_user_transcription_event": {"user_transcript": partial},
                }
            )
        elif kind == "interruption":
            upto = (event.get("interruption_event") or {}).get("event_id")
            self._interrupt(upto if isinstance(upto, int) else None)
        elif kind == "client_tool_call":
            call = event.get("client_tool_call") or {}
            self.socket.send({"type": "client_tool_result",
                              "tool_call_id": call.get("tool_call_id"),
                              "result": "Chorus agents have no client tools.",
                              "is_error": True})  # fmt: skip
        elif kind == "error":
            inner = event.get("error_event") or {}
            message = str(inner.get("message") or event.get("message") or "")
            if inner.get("fatal"):
                self._fatal = message  # the close follows: its ending says it
            elif message:
                self._emit(error_event(message))
        # vad_score, internal_tentative_agent_response, agent_chat_response_part, …: unused

    def _last(self, role: str) -> _Turn | None:
        for turn in reversed(self._turns):
            if turn.role == role:
                return turn
        return None

    def _open_agent_turn(self) -> _Turn:
        """The agent turn audio and text go to: the last one unless the user spoke since."""
        turn = self._turns[-1] if self._turns else None
        if turn is None or turn.role != TurnRole.AGENT or turn.closed:
            self._turn_number += 1
            turn = _Turn(TurnRole.AGENT, number=self._turn_number, started=self.now)
            self._turns.append(turn)
        return turn

    def _audio(self, inner: dict) -> None:
        upstream_id = inner.get("event_id")
        if isinstance(upstream_id, int) and upstream_id <= self._cut_upto:
            return  # audio of a turn the user interrupted
        try:
            data = base64.b64decode(inner.get("audio_base_64") or "", validate=True)
        except ValueError:
            self._emit(error_event("ElevenLabs sent audio that is not base64; it was skipped."))
            return
        if len(data) % 2:
            data = data[:-1]
        if not data:
            return
        with self._lock:
            turn = self._open_agent_turn()
            if turn.audio_start is None:
                turn.audio_start = max(len(self._user) // 2, self._playback_end)
                turn.started = turn.audio_start / RATE
                self._playback_end = turn.audio_start
            at = self._playback_end * 2
            if len(self._agent) < at:
                self._agent += bytes(at - len(self._agent))
            del self._agent[at:]
            self._agent += data
            self._playback_end += len(data) // 2
            turn.produced += len(data) // 2
            turn.ended = (turn.audio_start + turn.produced) / RATE
            for offset in range(0, len(data), AUDIO_EVENT_BYTES):
                self._event_id += 1
                turn.last_event_id = self._event_id
                piece = data[offset : offset + AUDIO_EVENT_BYTES]
                self._out.append((turn.number, {"type": "audio", "audio_event": {
                    "audio_base_64": base64.b64encode(piece).decode("ascii"),
                    "event_id": self._event_id}}))  # fmt: skip
            self._ready.notify_all()

    def _agent_response(self, text: str) -> None:
        with self._lock:
            turn = self._open_agent_turn()
            turn.text = f"{turn.text} {text}".strip() if turn.text else text
            answering = self._last(TurnRole.USER) is not None
            if answering:  # the first message needs no LLM
                history = [t.text for t in self._turns[-HISTORY_TURNS:] if t.text]
        self.meter.add(tts_characters=len(text))
        if answering:
            self.meter.add(
                llm_tokens=_tokens(self.system_prompt) + sum(_tokens(t) for t in history)
            )
        self._emit({"type": "agent_response", "agent_response_event": {"agent_response": text}})

    def _user_transcript(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            now = len(self._user) // 2
            start = self._speech_start if self._speech_start is not None else now
            self._speech_start = None
            for turn in self._turns:
                if turn.role == TurnRole.AGENT:
                    turn.closed = True
            self._turns.append(_Turn(TurnRole.USER, text, start / RATE, now / RATE))
        self._emit({"type": "user_transcript",
                    "user_transcription_event": {"user_transcript": text}})  # fmt: skip
        self._budget_spent()

    def _interrupt(self, upto: int | None) -> None:
        """The provider says the user spoke over the agent: its audio stops at the user's
        clock, queued audio of the turn is dropped, the turn keeps what was played."""
        with self._lock:
            if upto is not None:
                self._cut_upto = max(self._cut_upto, upto)
            turn = self._last(TurnRole.AGENT)
            if turn is None or turn.interrupted or turn.audio_start is None:
                return
            now = len(self._user) // 2
            played = min(max(now - turn.audio_start, 0), turn.produced)
            if turn.text and turn.produced:
                words = turn.text.split()
                turn.text = " ".join(words[: int(len(words) * played / turn.produced)])
            turn.interrupted, turn.closed = True, True
            turn.ended = (turn.audio_start + played) / RATE
            del self._agent[(turn.audio_start + played) * 2 :]
            self._playback_end = turn.audio_start + played
            kept = [(n, e) for n, e in self._out if not (n == turn.number and e["type"] == "audio")]
            self._out.clear()
            self._out.extend(kept)
        self._emit({"type": "interruption", "interruption_event": {"event_id": turn.last_event_id}})
