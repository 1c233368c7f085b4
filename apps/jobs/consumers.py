"""Websocket relay of one job's progress to the browser (group ``job.<id>``)."""

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import InMemoryChannelLayer

from apps.workspaces.models import Membership
from studio_site.sockets import CLOSE_FAILED, CLOSE_FORBIDDEN, SocketEnding, json_object

from .models import Job

POLL_SECONDS = 0.25
log = logging.getLogger(__name__)


@database_sync_to_async
def _job_event_for(user, job_id: int) -> dict | None:
    """The job's state if ``user`` belongs to its workspace, else None."""
    job = Job.objects.filter(pk=job_id).first()
    if (
        job is None
        or not Membership.objects.filter(workspace_id=job.workspace_id, user=user).exists()
    ):
        return None
    return job.as_event()


class JobProgressConsumer(SocketEnding, AsyncJsonWebsocketConsumer):
    """Sends the job's state on connect and every change after it.

    Workers push changes through the channel layer. With the embedded in-memory layer a
    worker (another process) cannot reach this one, so the consumer reads the row itself
    every quarter second instead: the browser sees live progress either way. It closes with
    ``studio_site.sockets``' codes: 4403 when access is gone, 4500 when reading fails.
    """

    poll_task: asyncio.Task | None = None

    async def connect(self):
        user = self.scope.get("user")
        try:
            self.job_id = int(self.scope["url_route"]["kwargs"]["job_id"])
        except (KeyError, ValueError):
            await self.close()
            return
        if user is None or not user.is_authenticated:
            await self.close()
            return
        if await _job_event_for(user, self.job_id) is None:
            await self.close()  # unknown job or not a member: refused before accept
            return
        self.group_name = f"job.{self.job_id}"
        # Join first, then read: a push that lands in between is not lost.
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()
        event = await _job_event_for(user, self.job_id)
        if event is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.last_event = event
        await self.send_json(event)
        if isinstance(self.channel_layer, InMemoryChannelLayer) and not event["finished"]:
            self.poll_task = asyncio.create_task(self._poll())

    async def ending(self):
        """Stop polling (unless the poll itself is ending the socket) and leave the group."""
        if self.poll_task is not None and self.poll_task is not asyncio.current_task():
            self.poll_task.cancel()
        if hasattr(self, "group_name"):
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        """Clients only listen; a ping gets the current state back. Anything else (binary,
        not JSON, nested too deep) is ignored: it must not end the socket."""
        content = json_object(text_data)
        if content is not None and content.get("type") == "ping":
            await self._refresh()

    async def job_update(self, message):
        """Group message from a worker or a web process: re-check access, relay the row.

        The row, not the pushed payload, is sent: pushes can arrive out of order.
        """
        await self._refresh()

    async def _refresh(self) -> bool:
        event = await _job_event_for(self.scope["user"], self.job_id)
        if event is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return False
        if event != self.last_event:
            self.last_event = event
            await self.send_json(event)
        return not event["finished"]

    async def _poll(self):
        try:
            while await self._refresh():
                await asyncio.sleep(POLL_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database went away: the page falls back to polling
            log.warning("job %s: polling for progress failed", self.job_id, exc_info=True)
            await self.close(code=CLOSE_FAILED)
