"""``/v1/convai/conversation``: ElevenLabs' conversation WebSocket, one session per
socket (the official AsyncAPI protocol, ``../shared/spec/elevenlabs-asyncapi-convai-2025-08``).

Authentication, checked after ``accept`` so a refusal can say why:

- a signed URL's token (``conversation_signature`` or ``token`` in the query,
  ``apps.agents.signing``): good once (the used ones are kept in the cache until they would
  have expired anyway) and only for the ``agent_id`` it was made for; the member and the key
  it was made with must still be good;
- or a personal key in the ``xi-api-key`` header or the ``xi_api_key`` query.

Both are resolved by ``authenticate`` (set by ``studio_site.routing``: personal keys are the
gateway's, a layer above this app): ``(raw_key, signature) -> Caller`` raising ``ApiRefused``.
An agent without either (a public agent) is not supported. Another workspace's agent is
``agent_not_found``. A refusal is an ``error`` event then a close with ``4000 +`` the HTTP
status of the same refusal (``studio_site.sockets``).

Protocol: the client may first send ``conversation_initiation_client_data`` (overrides of
``agent.prompt.prompt``, ``agent.first_message``, ``agent.language``, ``tts.voice_id``;
``dynamic_variables``); the conversation starts on it, on any other first message or after
``INIT_WAIT_SECONDS``. Then ``conversation_initiation_metadata`` and the session's events;
``user_audio_chunk`` (base64 PCM 16 kHz) goes to ``session.feed``; a ``ping`` every
``PING_SECONDS`` (the client answers ``pong``), whose ``ping_ms`` is the round trip of the last
ping answered (null until one is; the SDK reports it to ``callback_latency_measurement`` and
reads the key whenever that callback is set). A client that sends nothing at all, not even a
pong, for ``SILENT_CLIENT_SECONDS`` is taken as gone and the conversation ends with that
reason (Daphne's own WebSocket pings only find a dead connection; a client whose loop is stuck
still answers them). What Chorus does not do (client tools, text messages, contextual
updates) is an ``error`` event and the conversation goes on; garbage frames too. When the
session ends itself (its maximum length, a spent budget) or the socket's own wall-clock limit
is reached, the reason is sent and the socket closes with 1000 and that reason. However the
socket ends, the session is ended (and saved) in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.cache import cache

from apps.billing.services import BudgetExceeded
from apps.generation.errors import ApiRefused
from studio_site.sockets import (
    CLOSE_BAD_REQUEST,
    CLOSE_FAILED,
    CLOSE_NORMAL,
    CLOSE_QUOTA,
    SocketEnding,
    json_object,
    refusal_code,
)

from .config import AgentConfig, AgentConfigError
from .models import Agent
from .pace import TOO_FAST, AudioPace
from .relay import session_open
from .services import AgentRefused, config_for
from .session import MAX_CHUNK_BYTES, AgentSession
from .signing import SIGNATURE_MAX_AGE, convai_signature_read
from .threads import in_thread

log = logging.getLogger(__name__)

INIT_WAIT_SECONDS = 1.5  # how long the first message may take before the conversation starts
PING_SECONDS = 3.0
SILENT_CLIENT_SECONDS = 20.0  # no message, not even a pong, for this long: the client is gone
POLL_SECONDS = 0.01  # how often the session's events are looked for
MAX_AUDIO_BASE64 = (MAX_CHUNK_BYTES + 2) // 3 * 4  # 2 s of PCM, base64
MAX_FRAME_CHARS = 256 * 1024
USED_PREFIX = "convai:signature-used:"
# The conversation_config_override fields a client may set (the provider's defaults).
OVERRIDABLE = {
    "agent": {"prompt": {"prompt": None}, "first_message": None, "language": None},
    "tts": {"voice_id": None},
}
OVERRIDES_NEED_A_KEY = (
    "A signed URL cannot override the agent's configuration (its holder may be anyone): "
    "connect with the xi-api-key of a workspace member to override it."
)
IGNORED_OVERRIDES = {"text_only"}  # the SDK sends it without an audio interface
MAX_VARIABLES = 100


class ConversationRefused(Exception):
    def __init__(self, message: str, code: int = CLOSE_BAD_REQUEST):
        super().__init__(message)
        self.message, self.code = message, code


def _overrides_checked(data, allowed=OVERRIDABLE, where="conversation_config_override") -> dict:
    """The overrides a client may set, or ``ConversationRefused`` naming the first other."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConversationRefused(f"{where} must be an object.")
    kept = {}
    for key, value in data.items():
        if where == "conversation_config_override" and key in IGNORED_OVERRIDES:
            continue
        if key not in allowed:
            raise ConversationRefused(f"Overriding {where}.{key} is not allowed for this agent.")
        inner = allowed[key]
        kept[key] = (
            _overrides_checked(value, inner, f"{where}.{key}") if inner is not None else value
        )
    return kept


def _pruned(data: dict) -> dict:
    """``data`` without empty objects and nulls (``{"agent": {}}`` overrides nothing)."""
    kept = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _pruned(value)
        if value not in (None, {}):
            kept[key] = value
    return kept


def _variables_checked(data) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict) or len(data) > MAX_VARIABLES:
        raise ConversationRefused(
            f"dynamic_variables must be an object of at most {MAX_VARIABLES} values."
        )
    for name, value in data.items():
        if not isinstance(value, str | int | float | bool) or len(str(value)) > 1000:
            raise ConversationRefused(
                f"dynamic_variables.{name} must be a string, number or boolean (1,000 "
                "characters at most)."
            )
    return {name: str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in data.items()}  # fmt: skip


def _error_event(message: str, *, fatal: bool = False) -> dict:
    return {"type": "error", "error_event": {"message": message, "fatal": fatal}}


class AgentConversationConsumer(SocketEnding, AsyncWebsocketConsumer):
    """One conversation with an agent (see the module)."""

    # It talks to its own session only: no channel-layer subscription (no Redis connection
    # blocked in a receive per socket, nothing to cancel when it ends).
    channel_layer_alias = None

    # (raw personal key or None, signature payload or None) -> Caller; raises ApiRefused.
    authenticate = None
    caller = None
    agent = None
    session: AgentSession | None = None
    signed_conversation_id = None
    by_signature = False  # a signed URL's holder: maybe anyone the member gave it to
    started = False
    closing = False
    max_seconds = 0
    end_reason = "disconnected"
    ping_ms = None  # the round trip of the last ping answered

    async def connect(self):
        await self.accept()
        self.query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.starting = asyncio.Lock()
        self.sending = asyncio.Lock()
        self.tasks: list[asyncio.Task] = []
        self.opened = self.heard_at = time.monotonic()
        self.pace = AudioPace()  # audio no faster than real time
        self.pings: dict[int, float] = {}  # unanswered pings: event_id -> when sent
        try:
            await database_sync_to_async(self._authorize)()
        except ConversationRefused as exc:
            await self._fail(exc.message, exc.code)
            return
        except ApiRefused as exc:
            await self._fail(exc.message, refusal_code(exc.status))
            return
        self.tasks.append(asyncio.create_task(self._start_soon()))

    def _one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def _authorize(self) -> None:
        """Who is talking (``self.caller``) to which agent (``self.agent``); raises."""
        agent_id = self._one("agent_id")
        if not agent_id:
            raise ConversationRefused("agent_id is required in the query.")
        token = self._one("conversation_signature") or self._one("token")
        raw_key = None
        for name, value in self.scope.get("headers", []):
            if name.lower() == b"xi-api-key":
                raw_key = value.decode("latin-1")
        raw_key = raw_key or self._one("xi_api_key")
        signature = None
        if token:
            signature = convai_signature_read(token)
            if signature is None:
                raise ConversationRefused(
                    "The conversation signature is invalid or has expired: get a new signed "
                    "URL.", refusal_code(401))  # fmt: skip
            if signature["agent_id"] != agent_id:
                raise ConversationRefused(
                    "The conversation signature was made for another agent.", refusal_code(403)
                )
        elif not raw_key:
            raise ConversationRefused(
                "Public agents are not supported: connect with a signed URL "
                "(GET /v1/convai/conversation/get-signed-url) or an xi-api-key.",
                refusal_code(401),
            )
        if self.authenticate is None:
            raise ConversationRefused("Conversations are not served here.", CLOSE_FAILED)
        caller = self.authenticate(None if signature else raw_key, signature)
        agent = (
            Agent.objects.select_related("version", "workspace")
            .filter(workspace=caller.workspace, agent_id=agent_id)
            .first()
        )
        if agent is None:
            raise ConversationRefused(
                f"Agent {agent_id} was not found.", refusal_code(404)
            )  # (another workspace's agent too)
        if signature is not None:
            # Good once: the first socket that shows it uses it up.
            used = USED_PREFIX + hashlib.sha256(token.encode()).hexdigest()
            if not cache.add(used, 1, timeout=SIGNATURE_MAX_AGE + 60):
                raise ConversationRefused(
                    "This conversation signature was already used: get a new signed URL.",
                    refusal_code(401),
                )
            self.signed_conversation_id = signature.get("conversation_id")
            self.by_signature = True
        self.caller, self.agent = caller, agent

    # --- Starting ----------------------------------------------------------------------------

    async def _start_soon(self):
        await asyncio.sleep(INIT_WAIT_SECONDS)
        await self._start({})

    async def _start(self, message: dict) -> bool:
        """Start the conversation once (with the initiation message's overrides); False when
        it could not start (the socket is closing)."""
        async with self.starting:
            if self.started or self.closing:
                return self.started
            self.started = True
            try:
                overrides = _pruned(_overrides_checked(message.get("conversation_config_override")))
                if overrides and self.by_signature:
                    raise ConversationRefused(OVERRIDES_NEED_A_KEY, refusal_code(403))
                variables = _variables_checked(message.get("dynamic_variables"))
                session = await in_thread(session_open, caller=self.caller, agent=self.agent)
                self.session = session
                events = await in_thread(self._open, session, overrides, variables)
            except ConversationRefused as exc:
                self.session = None
                await self._fail(exc.message, exc.code)
                return False
            except BudgetExceeded as exc:
                self.session = None  # saved as failed by the session
                await self._fail(str(exc), CLOSE_QUOTA)
                return False
            except Exception:  # the engine's settings, a model, the database: say so and end
                log.exception("convai: the conversation could not start")
                self.session = None  # a session that failed to start ended itself
                await self._fail(
                    "The conversation could not start in Chorus; try again.", CLOSE_FAILED
                )
                return False
            await self._send_all(events)
            if session.ended:  # refused as it started (the provider): its fatal error said why
                told = _fatal_of(events)
                await self._finish(told or "The conversation has ended.", told=bool(told))
                return False
            self.tasks.append(asyncio.create_task(self._pump()))
            self.tasks.append(asyncio.create_task(self._pinger()))
            return True

    def _open(self, session: AgentSession, overrides: dict, variables: dict) -> list[dict]:
        from .models import Conversation, ConversationStatus

        agent = self.agent
        base = AgentConfig.from_dict(agent.version.config if agent.version else None)
        if overrides:
            try:
                config = AgentConfig.from_conversation_config(overrides, base=base)
            except AgentConfigError as exc:
                raise ConversationRefused(_problems(exc.errors)) from exc
            try:
                config_for(agent.workspace, config)
            except AgentRefused as exc:
                raise ConversationRefused(_problems(exc.errors)) from exc
        self.max_seconds = base.max_duration_seconds
        conversation = None
        if self.signed_conversation_id:
            conversation = Conversation.objects.filter(
                workspace=agent.workspace,
                agent=agent,
                conversation_id=self.signed_conversation_id,
                status=ConversationStatus.IN_PROGRESS,
                ended_at__isnull=True,
            ).first()
            if conversation is None:
                raise ConversationRefused("The signed URL's conversation has already ended.", 4409)
            conversation.dynamic_variables = variables
            conversation.overrides = overrides
            conversation.save(update_fields=["dynamic_variables", "overrides"])
        return session.start(
            conversation=conversation, overrides=overrides or None, dynamic_variables=variables
        )

    # --- Sending -------------------------------------------------------------------------------

    async def _pump(self):
        """The session's events to the client as they come; the end when the session ends
        itself or the wall-clock limit is reached."""
        session = self.session
        while not self.closing:
            async with self.sending:
                events = session.poll()
                await self._send_all(events)
            if session.ended:
                told = _fatal_of(events)
                await self._finish(told or "The conversation has ended.", told=bool(told))
                return
            if self.max_seconds and time.monotonic() - self.opened > self.max_seconds:
                await self._finish(
                    f"The conversation reached its maximum length of {self.max_seconds} s."
                )
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _pinger(self):
        event_id = 0
        self.heard_at = time.monotonic()  # silence counts from the first chance to answer
        while not self.closing:
            await asyncio.sleep(PING_SECONDS)
            if time.monotonic() - self.heard_at > SILENT_CLIENT_SECONDS:
                await self._finish(
                    f"The client sent nothing, not even a pong, for {SILENT_CLIENT_SECONDS:g} s."
                )
                return
            event_id += 1
            self.pings[event_id] = time.monotonic()
            for old in [e for e in self.pings if e <= event_id - 10]:
                del self.pings[old]  # never answered: no round trip to measure
            await self._send({"type": "ping", "ping_event": {
                "event_id": event_id, "ping_ms": self.ping_ms}})  # fmt: skip

    def _pong(self, event_id) -> None:
        sent = self.pings.pop(event_id, None) if isinstance(event_id, int) else None
        if sent is not None:  # at least 1 ms: the SDK reports no measurement of 0
            self.ping_ms = max(1, math.ceil((time.monotonic() - sent) * 1000))

    async def _send_all(self, events):
        for event in events:
            await self._send(event)

    async def _send(self, message: dict):
        if not self.closing or message.get("type") == "error":
            await self.send(text_data=json.dumps(message, ensure_ascii=False))

    async def _finish(self, reason: str, *, told: bool = False):
        """The conversation is over: its reason (unless the session ``told`` it already),
        then the close 1000 with it; the session is saved with that reason."""
        if self.closing:
            return
        self.end_reason = reason
        if not told:
            await self._send(_error_event(reason, fatal=True))
        await self._close(CLOSE_NORMAL, reason)

    async def _fail(self, message: str, code: int):
        await self._send(_error_event(message, fatal=True))
        await self._close(code, message)

    async def _close(self, code: int, reason: str):
        self.closing = True
        # A close reason is at most 123 bytes.
        await self.close(code=code, reason=reason.encode()[:123].decode("utf-8", "ignore"))

    # --- Receiving -----------------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self.closing:
            return
        self.heard_at = time.monotonic()
        if text_data is None or len(text_data) > MAX_FRAME_CHARS:
            await self._send(_error_event(
                f"Send JSON text messages of at most {MAX_FRAME_CHARS:,} characters."))  # fmt: skip
            return
        message = json_object(text_data)
        if message is None:
            await self._send(_error_event("Messages are JSON objects."))
            return
        kind = message.get("type")
        if not self.started:
            if not await self._start(
                message if kind == "conversation_initiation_client_data" else {}
            ):
                return
            if kind == "conversation_initiation_client_data":
                return
        if self.session is None:
            return
        if "user_audio_chunk" in message and kind in (None, "user_audio_chunk"):
            await self._audio(message["user_audio_chunk"])
        elif kind == "pong":
            self._pong(message.get("event_id"))
        elif kind in ("user_activity", "feedback"):
            pass  # nothing to do on the local engine
        elif kind == "conversation_initiation_client_data":
            await self._send(_error_event(
                "The conversation has already started: send conversation_initiation_client_"
                "data first."))  # fmt: skip
        elif kind == "client_tool_result":
            await self._send(_error_event(
                "This agent has no client tools: the tool result was ignored."))  # fmt: skip
        elif kind in ("user_message", "contextual_update", "multimodal_message"):
            await self._send(_error_event(
                f"{kind} is not supported by Chorus agents: send user_audio_chunk."))  # fmt: skip
        else:
            await self._send(_error_event(f"Unknown message type {str(kind)[:50]!r}."))

    async def _audio(self, raw):
        if not isinstance(raw, str):
            await self._send(_error_event("user_audio_chunk must be a base64 string."))
            return
        if len(raw) > MAX_AUDIO_BASE64:
            await self._send(_error_event("Send at most 2 s of audio a user_audio_chunk."))
            return
        try:
            pcm = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            await self._send(_error_event("user_audio_chunk is not valid base64."))
            return
        if not self.pace.take(len(pcm)):
            if self.pace.tell():
                await self._send(_error_event(TOO_FAST))
            return
        async with self.sending:
            await self._send_all(self.session.feed(pcm))

    # --- Ending --------------------------------------------------------------------------------

    async def ending(self):
        self.closing = True
        others = [task for task in self.tasks if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:  # nothing of this socket outlives it (their outcomes are not wanted)
            await asyncio.wait(others)
        session, self.session = self.session, None
        if session is not None:
            await in_thread(session.end, self.end_reason)

    async def failed(self, exc):
        await self._fail("The conversation failed in Chorus; start a new one.", CLOSE_FAILED)


def _problems(errors: dict) -> str:
    return "Invalid conversation_config_override: " + "; ".join(
        f"{name}: {problem}" for name, problem in errors.items()
    )


def _fatal_of(events) -> str | None:
    for event in reversed(events):
        if event.get("type") == "error" and event["error_event"].get("fatal"):
            return event["error_event"]["message"]
    return None
