"""Live captions over websockets: the microphone's socket and the watchers' socket.

``LiveCaptionConsumer`` (``/ws/transcripts/live/<id>/``): a member of the session's
workspace sends binary frames of 16 kHz mono s16le audio (about every 100 ms); each is kept
and relayed to the engine's realtime session in a worker thread, and the engine's events come
back as JSON: ``{"type": "partial", "text"}`` (grey, replaced as it firms up) and
``{"type": "committed", "text", "start", "end"}``. A text frame ``{"type": "stop"}`` commits,
saves the transcript and answers ``{"type": "saved", "url"}``. Garbage gets ``{"type":
"error", "message"}`` and the session goes on. On (re)connect the committed lines so far are
sent first (``{"type": "session", "committed": [...], "recorded": seconds}``).

Both end through ``studio_site.sockets.SocketEnding`` and close with its codes: 1000 after
Stop; 4401/4403 (before ``accept``: an HTTP 403) for someone signed out or not allowed;
4402 when the budget refuses the next minute or the save; 4409 for a session that has
ended; 4502 when the engine fails; 4500 when Chorus does. The page reconnects on none of
the 4xxx codes. However the microphone's socket ends, its engine session is closed and the
seconds received are recorded on the session's reservation; the audio is already kept on
disk, and Stop (or a later socket) meters it. While connected, the socket records them every
few seconds of audio and, quiet or not, every ``live.heartbeat_seconds()``: a session that no
socket has recorded for ``CHORUS_LIVE_ABANDON_SECONDS`` was left, and ``live.live_sweep``
saves and charges it as Stop would (a socket that comes back then gets 4409).

``LiveWatchConsumer`` (``…/watch/``): anyone in the workspace (viewers too) receives the same
partial and committed events, relayed through the channel layer group ``live.<id>``.
"""

import asyncio
import json
import logging

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import reverse

from apps.workspaces.models import ROLE_RANK, Membership, Role
from apps.workspaces.services import ActionRefused
from studio_site.sockets import (
    CLOSE_ENDED,
    CLOSE_ENGINE,
    CLOSE_FAILED,
    CLOSE_FORBIDDEN,
    CLOSE_NORMAL,
    CLOSE_QUOTA,
    CLOSE_UNAUTHENTICATED,
    SocketEnding,
    json_object,
)

from . import live
from .models import Transcript, TranscriptStatus

log = logging.getLogger(__name__)


@database_sync_to_async
def _session_for(user, pk: int, *, role: str) -> Transcript | None:
    """The running live session ``pk`` if ``user`` has ``role`` in its workspace."""
    transcript = Transcript.objects.filter(pk=pk, source="live").select_related("workspace").first()
    if transcript is None:
        return None
    membership = Membership.objects.filter(workspace_id=transcript.workspace_id, user=user).first()
    if membership is None or ROLE_RANK[Role(membership.role)] < ROLE_RANK[Role(role)]:
        return None
    return transcript


async def _admitted(consumer, role: str) -> Transcript | None:
    """The session of the consumer's URL if its user has ``role`` in its workspace; else the
    socket is closed (4401 signed out, 4403 not allowed) and None."""
    user = consumer.scope.get("user")
    if user is None or not user.is_authenticated:
        await consumer.close(code=CLOSE_UNAUTHENTICATED)
        return None
    consumer.pk = int(consumer.scope["url_route"]["kwargs"]["pk"])
    transcript = await _session_for(user, consumer.pk, role=role)
    if transcript is None:
        await consumer.close(code=CLOSE_FORBIDDEN)
    return transcript


class LiveCaptionConsumer(SocketEnding, AsyncWebsocketConsumer):
    """The microphone of a live session: audio in, captions out, Stop saves."""

    engine_session = None
    offset = 0.0
    stopped = False
    allowed_seconds = 0.0
    usage = None  # the session's reservation, where the seconds received are recorded
    seconds = 0.0  # recorded so far (this socket's audio included)
    recorded = 0.0  # as last recorded on the reservation
    heartbeat = None

    async def connect(self):
        transcript = await _admitted(self, Role.MEMBER)
        if transcript is None:
            return
        if transcript.created_by_id != self.scope["user"].pk:
            await self.close(code=CLOSE_FORBIDDEN)  # the microphone is its creator's; others watch
            return
        await self.accept()
        if transcript.status != TranscriptStatus.RUNNING:
            await self._end(CLOSE_ENDED, "This session has ended.")
            return
        self.transcript = transcript
        self.offset = await sync_to_async(live.recorded_seconds)(transcript)
        self.allowed_seconds = self.seconds = self.offset
        try:
            self.usage = await database_sync_to_async(live.live_reservation)(transcript=transcript)
        except ActionRefused as exc:
            await self._end(CLOSE_QUOTA, str(exc))
            return
        await self._record()  # here again: the sweep leaves the session alone
        try:
            engine = await database_sync_to_async(live.session_engine)(transcript)
            self.engine_session = await sync_to_async(live.engine_session, thread_sensitive=False)(
                engine, transcript
            )
        except live.EngineStopped as exc:
            await self._end(CLOSE_ENGINE, str(exc))
            return
        # In the session's group too: a Stop from another socket of this session ends this one.
        await self.channel_layer.group_add(live.group_name(self.pk), self.channel_name)
        self.heartbeat = asyncio.create_task(self._heartbeat())
        lines = await database_sync_to_async(self._committed)()
        await self._send({"type": "session", "committed": lines, "recorded": self.offset})

    async def _record(self) -> bool:
        """Record the seconds received on the reservation (the socket is alive); whether the
        session still runs. A failed write (a locked SQLite) is logged: the next one counts."""
        self.recorded = self.seconds
        try:
            return await database_sync_to_async(live.live_progress)(
                transcript=self.transcript, event=self.usage, seconds=self.seconds
            )
        except Exception:
            log.warning("live session %s: recording its progress failed", self.pk, exc_info=True)
            return True

    async def _heartbeat(self):
        """While connected, quiet or not: the sweep must not take the session for left. A
        session ended elsewhere (the sweep, on another server) ends this socket."""
        try:
            while not self.ended:
                await asyncio.sleep(live.heartbeat_seconds())
                if not await self._record() and not (self.stopped or self.ended):
                    await self._end(CLOSE_ENDED, "This session has ended.")
        except Exception:  # the socket goes on; only its heartbeat stopped
            log.exception("live session %s: its heartbeat failed", self.pk)

    async def live_event(self, message):
        """The session's group: only another socket's Stop matters here."""
        if message.get("origin") != self.channel_name and message["event"]["type"] == "saved":
            self.stopped = True
            await self._send(message["event"])
            await self.close(code=CLOSE_NORMAL)

    async def _end(self, code: int, message: str):
        """Tell the page why, and close with a code that stops its reconnecting."""
        await self._send({"type": "error", "message": message})
        await self.close(code=code)

    async def _engine(self, call, *args):
        """An engine call in a worker thread; its errors end the socket, with a message."""
        try:
            return await sync_to_async(call, thread_sensitive=False)(*args)
        except live.EngineStopped as exc:
            await self._end(CLOSE_ENGINE, str(exc))
            return None

    def _committed(self):
        self.transcript.refresh_from_db()
        return live.committed_lines(self.transcript)

    async def ending(self):
        """Leave the session's group, record the seconds received (from now on the session
        waits for a socket for ``CHORUS_LIVE_ABANDON_SECONDS``) and close the engine's
        session (the audio is on disk)."""
        heartbeat, self.heartbeat = self.heartbeat, None
        if heartbeat is not None and heartbeat is not asyncio.current_task():
            heartbeat.cancel()
        if hasattr(self, "transcript"):
            await self.channel_layer.group_discard(live.group_name(self.pk), self.channel_name)
        if self.usage is not None and not self.stopped:
            await self._record()
        if self.engine_session is not None:
            session, self.engine_session = self.engine_session, None
            try:
                await sync_to_async(session.close, thread_sensitive=False)()
            except live.EngineStopped:
                log.info("live session %s: the engine failed while closing", self.pk)

    async def failed(self, exc):
        await self._end(CLOSE_FAILED, "Live captions failed in Chorus: reload the page.")

    async def receive(self, text_data=None, bytes_data=None):
        if self.stopped or self.engine_session is None:
            return  # after Stop (or a refused engine): nothing more reaches the transcript
        if bytes_data is not None:
            await self._audio(bytes_data)
            return
        message = json_object(text_data)
        if message is None:
            await self._send({"type": "error", "message": "Text frames are JSON messages."})
            return
        kind = message.get("type")
        if kind == "stop":
            await self._stop()
        elif kind == "commit":
            await self._relay(await self._engine(self.engine_session.commit) or [])
        else:
            await self._send({"type": "error", "message": f"Unknown message type {kind!r}."})

    async def _audio(self, pcm: bytes):
        problem = live.frame_problem(pcm)
        if problem:
            await self._send({"type": "error", "message": problem})
            return
        recorded = await sync_to_async(live.append_audio, thread_sensitive=False)(
            self.transcript, pcm
        )
        if recorded > self.allowed_seconds:  # each new minute: is there budget for it?
            refusal = await database_sync_to_async(live.next_minute_refusal)(self.transcript)
            if refusal:
                await self._send({"type": "error", "message": refusal})
                await self._stop()
                return
            self.allowed_seconds = recorded + live.ESTIMATE_SECONDS
        self.seconds = recorded
        if recorded - self.recorded >= live.PROGRESS_SECONDS:
            await self._record()
        events = await self._engine(self.engine_session.send_audio, pcm)
        if events:
            await self._relay(events)

    async def _relay(self, events):
        for event in events:
            if event.message_type == "partial_transcript":
                await self._broadcast({"type": "partial", "text": event.text})
            elif event.message_type == "committed_transcript_with_timestamps":
                line = await database_sync_to_async(live.commit_words)(
                    self.pk, event.words, self.offset
                )
                if line:
                    await self._broadcast(
                        {"type": "committed", "text": live.document.join_words(line),
                         "start": line[0]["start"], "end": line[-1]["end"]}
                    )  # fmt: skip
            elif event.message_type == "error":
                await self._send({"type": "error", "message": event.error or event.text})

    async def _stop(self):
        if self.stopped:
            return
        self.stopped = True
        if self.engine_session is not None:
            await self._relay(await self._engine(self.engine_session.commit) or [])
        try:
            transcript = await database_sync_to_async(live.live_finish)(transcript=self.transcript)
        except ActionRefused as exc:
            await self._end(CLOSE_QUOTA, str(exc))
            return
        url = reverse("transcripts:detail", args=[transcript.pk])
        await self._broadcast({"type": "saved", "url": url})
        await self.close(code=CLOSE_NORMAL)

    async def _broadcast(self, message: dict):
        await self._send(message)
        await self.channel_layer.group_send(
            live.group_name(self.pk),
            {"type": "live.event", "event": message, "origin": self.channel_name},
        )

    async def _send(self, message: dict):
        await self.send(text_data=json.dumps(message, ensure_ascii=False))


class LiveWatchConsumer(SocketEnding, AsyncWebsocketConsumer):
    """A read-only view of a live session's captions (viewers included)."""

    async def connect(self):
        if await _admitted(self, Role.VIEWER) is None:
            return
        await self.channel_layer.group_add(live.group_name(self.pk), self.channel_name)
        await self.accept()
        lines = await database_sync_to_async(lambda: live.committed_lines(
            Transcript.objects.get(pk=self.pk)))()  # fmt: skip
        await self.send(text_data=json.dumps({"type": "session", "committed": lines}))

    async def ending(self):
        if hasattr(self, "pk"):
            await self.channel_layer.group_discard(live.group_name(self.pk), self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        pass  # watchers only listen

    async def live_event(self, message):
        await self.send(text_data=json.dumps(message["event"], ensure_ascii=False))
