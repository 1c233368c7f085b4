"""Talking to an agent in the browser: the studio's socket ``/ws/agents/<agent_id>/talk/``.

A member (or manager, owner) of the agent's workspace opens it signed in (the session cookie);
the consumer starts an ``AgentSession`` (local engine) and relays both ways:

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

Threading (``AgentSession``'s contract): ``start`` and ``end`` run through
``database_sync_to_async``; ``feed`` never blocks and runs on the loop; a pump task waits for
the session's events in a worker thread (``wait`` with a short timeout) and sends them.
However the socket ends (End, the browser leaving, a failure), ``ending`` ends the session and
saves the conversation. A dropped socket does not reconnect to the same conversation: a new
socket starts a new one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
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
from .session import AgentSession

log = logging.getLogger(__name__)

WAIT_SECONDS = 0.2  # the pump's longest wait in a worker thread before it looks again
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


class AgentTalkConsumer(SocketEnding, AsyncWebsocketConsumer):
    """The browser's microphone and speaker for one conversation with an agent."""

    # It talks to its own session only: no channel-layer subscription (no Redis connection
    # blocked in a receive per socket, nothing to cancel when it ends).
    channel_layer_alias = None

    session: AgentSession | None = None
    pump: asyncio.Task | None = None
    muted = False
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
        caller = Caller(workspace=agent.workspace, user=user, membership=membership)
        session = AgentSession(caller=caller, agent=agent, llm=self.llm)
        try:
            events = await database_sync_to_async(session.start)()
        except BudgetExceeded as exc:
            await self._end(CLOSE_QUOTA, str(exc))
            return
        self.session = session
        await self._relay(events)
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self):
        """The session's events as they come, waited for in a worker thread."""
        session = self.session
        wait = sync_to_async(session.wait, thread_sensitive=False)
        try:
            while not self.ended:
                events = await wait(WAIT_SECONDS)
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
        if session is None or self.finished:
            return
        if bytes_data is not None:
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
        conversation = await database_sync_to_async(self.session.end)("the user ended it")
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
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump  # its failures were logged where they happened

    async def ending(self):
        """However the socket ends: the session is ended and the conversation saved."""
        await self._stop_pump()
        session = self.session
        if session is not None and not session.ended:
            await database_sync_to_async(session.end)("the browser left the conversation")

    async def failed(self, exc):
        await self._end(CLOSE_FAILED, "The conversation failed in Chorus: reload the page.")

    async def _end(self, code: int, message: str):
        await self._send(_error(message, fatal=True))
        await self.close(code=code)

    async def _send(self, message: dict):
        await self.send(text_data=json.dumps(message, ensure_ascii=False))


def _error(message: str, *, fatal: bool = False) -> dict:
    return {"type": "error", "error_event": {"message": message, "fatal": fatal}}
