"""Talking to an agent in the browser: the studio's socket ``/ws/agents/<agent_id>/talk/``.

A member (or manager, owner) of the agent's workspace opens it signed in (the session cookie);
the consumer starts the workspace engine's session (``relay.session_open``: an ``AgentSession``
on the local engine, a ``RelaySession`` to the provider on ElevenLabs) and relays both ways:

- browser → server: binary frames of 16 kHz mono s16le microphone PCM (about every 100 ms),
  fed to the session; text frames are JSON controls: ``{"type": "end"}`` ends and saves the
  conversation, ``{"type": "mute", "on": true|false}`` replaces the microphone's frames with
  silence of the same length (the conversation's clock, which is the user's audio, runs on).
- server → browser: the session's events as JSON text frames in the official AsyncAPI shapes
  (``conversation_initiation_metadata``, ``user_transcript``, ``tentative_user_transcript``,
  ``agent_response``, ``agent_response_correction``, ``interruption``, ``error``) **except
  ``audio``**: agent audio comes as binary frames of raw PCM, 16 kHz mono s16le (100 ms
  each), in order with the text frames, so an ``interruption`` frame tells the page to drop
  whatever it still has queued. After ``end``: ``{"type": "saved", "conversation_id", "url"}``
  and a close with 1000.

Refusals (``studio_site.sockets`` codes): signed out → 4401 before ``accept``; an agent that
does not exist or is in another workspace → 4403 before ``accept`` (an HTTP 403, nothing said
about the agent); a viewer → accepted, told why (``error``), closed with 4403; a spent budget at
the start → ``error`` then 4402 (the conversation is saved as failed); the session ending
itself (budget, maximum length, a failed worker) → its fatal ``error`` event, then 4409.

Threading (``AgentSession``'s contract): ``start`` and ``end`` run on the agents' own threads
(``threads.in_thread``, never asgiref's one thread that every socket's sign-in waits for);
``feed`` never blocks and runs on the loop; a pump task waits for the session's events on
that pool too (``wait`` with a short timeout) and sends them.
However the socket ends (End, the browser leaving, a failure), ``ending`` ends the session and
saves the conversation — except a dropped socket. Microphone audio arriving faster than real
time (more than 5 s ahead of the clock) is dropped with an ``error`` (``pace.AudioPace``).

A dropped socket (closed with a code other than 1000, or 1001 when the page is left) keeps its
conversation running for ``RESUME_SECONDS``, detached: the agent finishes what it was saying
into the session's queue. A socket opened with ``?resume=<conversation_id>`` by the same member,
for the same agent, within that time takes it over: ``{"type": "resumed", "conversation_id"}``,
then every event and audio frame produced while it was down, then the conversation goes on. A
resume may also come before the server noticed the old socket was gone (a half-open connection):
the old socket, still attached, hands the conversation over and is closed (4409, "went on in
another connection"). Past that time the conversation is ended and saved ("the connection
dropped"). A resume that finds nothing (too late, another member's, another process's) gets an
``error`` event and 4409. Detached conversations live in this process's memory: with several
Daphne processes a reconnect reaches its conversation only when the proxy sends it to the same
process (sticky sessions); otherwise it is told it cannot resume.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import connections
from django.urls import reverse

from apps.billing.services import BudgetExceeded
from apps.generation.caller import Caller
from apps.workspaces.models import ROLE_RANK, Membership, Role
from studio_site.sockets import (
    CLOSE_ENDED,
    CLOSE_FAILED,
    CLOSE_FORBIDDEN,
    CLOSE_NORMAL,
    CLOSE_QUOTA,
    CLOSE_UNAUTHENTICATED,
    SocketEnding,
    json_object,
)

from .models import Agent
from .pace import TOO_FAST, AudioPace
from .relay import session_open
from .session import AgentSession
from .threads import in_thread, waiting

log = logging.getLogger(__name__)

WAIT_SECONDS = 0.2  # the pump's longest wait in a worker thread before it looks again
RESUME_SECONDS = 20.0  # how long a dropped socket's conversation waits for it to come back
DELIBERATE_CLOSES = {1000, 1001}  # the page ended or left: the conversation ends and is saved
DROPPED_REASON = "the connection dropped and did not come back"
CONTINUED_ELSEWHERE = "This conversation went on in another connection."
CANNOT_RESUME = (
    "This conversation can no longer be resumed (it ended, or waited too long for the "
    "connection): start a new one."
)
VIEWER_REFUSAL = (
    "Viewers cannot talk to agents: talking uses the workspace's credits. "
    "Ask an owner or manager for the member role."
)


@database_sync_to_async
def _agent_and_role(user, agent_id: str) -> tuple[Agent | None, Membership | None]:
    agent = Agent.objects.select_related("workspace", "version").filter(agent_id=agent_id).first()
    if agent is None:
        return None, None
    membership = Membership.objects.filter(workspace_id=agent.workspace_id, user=user).first()
    return agent, membership


@dataclass
class _Detached:
    session: AgentSession
    pace: AudioPace
    user_id: int
    agent_id: str
    timer: threading.Timer
    since: float


_detached: dict[str, _Detached] = {}
_detached_lock = threading.Lock()


def _detach(session: AgentSession, pace: AudioPace, *, user_id: int, agent_id: str) -> None:
    """Keep ``session`` for a socket that comes back within ``RESUME_SECONDS``; past that it
    is ended and saved (in the timer's thread)."""
    conversation_id = session.conversation.conversation_id

    def expire():
        with _detached_lock:
            entry = _detached.get(conversation_id)
            if entry is None or entry.session is not session:
                return  # taken over
            del _detached[conversation_id]
        try:
            session.end(DROPPED_REASON)
        except Exception:
            log.exception("agent talk: ending a dropped conversation failed")
        finally:
            connections.close_all()  # this thread's own

    timer = threading.Timer(RESUME_SECONDS, expire)
    timer.daemon = True
    with _detached_lock:
        _detached[conversation_id] = _Detached(
            session, pace, user_id, agent_id, timer, time.monotonic()
        )
    timer.start()


def _take_over(conversation_id: str, *, user_id: int, agent_id: str):
    """The detached session of ``conversation_id`` and its audio pace, when it is this
    member's, with this agent, and still running; None otherwise."""
    with _detached_lock:
        entry = _detached.get(conversation_id)
        if entry is None or entry.user_id != user_id or entry.agent_id != agent_id:
            return None
        del _detached[conversation_id]
    entry.timer.cancel()
    if entry.session.ended:
        return None
    return entry.session, entry.pace


# The sockets holding a conversation now, by its id (this process's): a resume that arrives
# before the server noticed the old socket was gone (a half-open connection: Wi-Fi roaming, a
# laptop waking) takes the conversation over from it.
_attached: dict[str, AgentTalkConsumer] = {}


class AgentTalkConsumer(SocketEnding, AsyncWebsocketConsumer):
    """The browser's microphone and speaker for one conversation with an agent."""

    # It talks to its own session only: no channel-layer subscription (no Redis connection
    # blocked in a receive per socket, nothing to cancel when it ends).
    channel_layer_alias = None

    session: AgentSession | None = None
    pump: asyncio.Task | None = None
    muted = False
    live = False  # the session has started: the microphone's frames go to it
    pace: AudioPace | None = None
    handed_over = False  # a resuming socket took the conversation: leave it running
    dropped = False  # the client went without saying goodbye: keep the conversation a while
    finished = False  # the conversation was ended and saved through this socket

    # Tests swap in a stand-in LLM (``AgentSession``'s ``llm``); None: the configured one.
    llm = None

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        agent_id = self.scope["url_route"]["kwargs"]["agent_id"]
        agent, membership = await _agent_and_role(user, agent_id)
        if agent is None or membership is None:
            await self.close(code=CLOSE_FORBIDDEN)  # unknown or another workspace's
            return
        await self.accept()
        if ROLE_RANK[Role(membership.role)] < ROLE_RANK[Role.MEMBER]:
            await self._end(CLOSE_FORBIDDEN, VIEWER_REFUSAL)
            return
        resume = _query_one(self.scope, "resume")
        if resume is not None:
            await self._resume(resume, user=user, agent=agent)
            return
        caller = Caller(workspace=agent.workspace, user=user, membership=membership)
        # Kept before it starts: if the socket goes while it opens, ``ending`` ends it (after
        # the start, which it waits for) and nothing is left open.
        session = self.session = await in_thread(
            session_open, caller=caller, agent=agent, llm=self.llm
        )
        try:
            events = await in_thread(session.start)
        except BudgetExceeded as exc:
            await self._end(CLOSE_QUOTA, str(exc))
            return
        self.live, self.pace = True, AudioPace()
        if session.conversation is not None:
            _attached[session.conversation.conversation_id] = self
        await self._relay(events)
        self.pump = asyncio.create_task(self._pump())

    async def _resume(self, conversation_id: str, *, user, agent):
        taken = _take_over(conversation_id, user_id=user.pk, agent_id=agent.agent_id)
        old = _attached.get(conversation_id)
        if (
            taken is None
            and old is not None
            and old is not self
            and old.holds(user_id=user.pk, agent_id=agent.agent_id)
        ):
            taken = await old.hand_over()
        if taken is None:
            await self._end(CLOSE_ENDED, CANNOT_RESUME)
            return
        (self.session, self.pace), self.live = taken, True
        _attached[conversation_id] = self
        await self._send({"type": "resumed", "conversation_id": conversation_id})
        await self._relay(self.session.poll())  # what it said while the socket was down
        self.pump = asyncio.create_task(self._pump())

    def holds(self, *, user_id: int, agent_id: str) -> bool:
        session = self.session
        return (
            self.live
            and not self.finished
            and session is not None
            and not session.ended
            and self.scope["user"].pk == user_id
            and session.agent.agent_id == agent_id
        )

    async def hand_over(self):
        """Give this socket's conversation to a socket resuming it (this one is stale): the
        session and its pace."""
        self.handed_over, self.live = True, False
        await self._stop_pump()
        taken = (self.session, self.pace)
        self.session = None
        self._forget()
        with contextlib.suppress(Exception):  # it may be gone already
            await self._end(CLOSE_ENDED, CONTINUED_ELSEWHERE)
        return taken

    def _forget(self):
        for conversation_id, consumer in list(_attached.items()):
            if consumer is self:
                del _attached[conversation_id]

    async def websocket_disconnect(self, message):
        self.dropped = message.get("code") not in DELIBERATE_CLOSES
        await super().websocket_disconnect(message)

    async def _pump(self):
        """The session's events as they come, waited for in a worker thread."""
        session = self.session
        try:
            while not self.ended:
                events = await waiting(session.wait, WAIT_SECONDS)
                if self.ended:
                    return
                await self._relay(events)
                if session.ended and not self.finished:
                    await self._relay(session.poll())
                    await self.close(code=CLOSE_ENDED)  # its fatal error said why
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("agent talk: relaying the session's events failed")
            if not self.ended:
                await self._end(CLOSE_FAILED, "The conversation failed in Chorus: reload the page.")

    async def _relay(self, events):
        for event in events:
            if event.get("type") == "audio":
                pcm = base64.b64decode(event["audio_event"]["audio_base_64"])
                await self.send(bytes_data=pcm)
            else:
                await self._send(event)

    async def receive(self, text_data=None, bytes_data=None):
        session = self.session
        if not self.live or self.finished:
            return
        if bytes_data is not None:
            if not self.pace.take(len(bytes_data)):
                if self.pace.tell():
                    await self._send(_error(TOO_FAST))
                return
            pcm = bytes(len(bytes_data)) if self.muted else bytes_data
            await self._relay(session.feed(pcm))
            return
        message = json_object(text_data)
        if message is None:
            await self._send(_error("Text frames are JSON messages."))
            return
        kind = message.get("type")
        if kind == "end":
            await self._finish()
        elif kind == "mute":
            self.muted = bool(message.get("on", True))
        else:
            await self._send(_error(f"Unknown message type {kind!r}."))

    async def _finish(self):
        """End and save the conversation, tell the page where it is, close."""
        self.finished = True
        await self._stop_pump()
        conversation = await in_thread(self.session.end, "the user ended it")
        await self._send(
            {
                "type": "saved",
                "conversation_id": conversation.conversation_id,
                "url": reverse("agents:conversation", args=[conversation.conversation_id]),
            }
        )
        await self.close(code=CLOSE_NORMAL)

    async def _stop_pump(self):
        pump, self.pump = self.pump, None
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()
            # Wait for it without taking its outcome (its failures were logged where they
            # happened) and without swallowing a cancellation of this task.
            await asyncio.wait([pump])

    async def ending(self):
        """However the socket ends: the session is ended and the conversation saved."""
        await self._stop_pump()
        self._forget()
        session = self.session
        if session is None or session.ended:
            return
        if self.dropped and self.live and not self.finished:
            user = self.scope["user"]
            _detach(session, self.pace, user_id=user.pk, agent_id=session.agent.agent_id)
            return
        await in_thread(session.end, "the browser left the conversation")

    async def failed(self, exc):
        await self._end(CLOSE_FAILED, "The conversation failed in Chorus: reload the page.")

    async def _end(self, code: int, message: str):
        await self._send(_error(message, fatal=True))
        await self.close(code=code)

    async def _send(self, message: dict):
        await self.send(text_data=json.dumps(message, ensure_ascii=False))


def _error(message: str, *, fatal: bool = False) -> dict:
    return {"type": "error", "error_event": {"message": message, "fatal": fatal}}


def _query_one(scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[-1][:64] if values else None
