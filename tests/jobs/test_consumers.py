"""The job progress websocket, on the real ASGI application (auth, origin check, routing)."""

import asyncio

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings

from apps.jobs import services
from apps.jobs.models import Job, JobStatus
from studio_site.asgi import application
from tests.conftest import session_cookie_for

# Consumers reach the database from other threads: rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


def _headers(user=None, origin="http://localhost"):
    headers = [(b"origin", origin.encode())]
    if user is not None:
        cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie_for(user)}"
        headers.append((b"cookie", cookie.encode()))
    return headers


def _connect(job_id, headers):
    return WebsocketCommunicator(application, f"/ws/jobs/{job_id}/", headers=headers)


@pytest.fixture
def job(workspace, owner):
    return Job.objects.create(workspace=workspace, kind="test_sleep", created_by=owner)


def _refused(job_id, headers) -> bool:
    async def scenario():
        communicator = _connect(job_id, headers)
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return not connected

    return async_to_sync(scenario)()


def test_anonymous_visitors_are_refused(job):
    assert _refused(job.pk, _headers())


def test_outsiders_are_refused(job, outsider):
    assert _refused(job.pk, _headers(outsider))


def test_a_foreign_origin_is_refused(job, viewer):
    assert _refused(job.pk, _headers(viewer, origin="http://evil.example"))


def test_an_unknown_job_is_refused(job, viewer):
    assert _refused(987654, _headers(viewer))


def test_a_viewer_gets_the_state_then_every_push(job, viewer):
    headers = _headers(viewer)

    async def scenario():
        communicator = _connect(job.pk, headers)
        connected, _ = await communicator.connect()
        assert connected
        first = await communicator.receive_json_from(timeout=5)
        assert first == {
            "id": job.pk,
            "status": "queued",
            "progress": 0,
            "message": "",
            "error": "",
            "finished": False,
        }
        # A worker writes the row, then pushes; the consumer relays the row's state.
        await sync_to_async(
            lambda: Job.objects.filter(pk=job.pk).update(
                status=JobStatus.RUNNING, progress=40, message="Halfway"
            )
        )()
        layer = get_channel_layer()
        await layer.group_send(f"job.{job.pk}", {"type": "job.update", "job": {"stale": True}})
        event = await communicator.receive_json_from(timeout=5)
        assert (event["status"], event["progress"], event["message"]) == (
            "running",
            40,
            "Halfway",
        )
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_a_member_removed_meanwhile_is_disconnected(job, member, workspace):
    from apps.workspaces.models import Membership

    headers = _headers(member)

    async def scenario():
        communicator = _connect(job.pk, headers)
        assert (await communicator.connect())[0]
        await communicator.receive_json_from(timeout=5)
        await sync_to_async(Membership.objects.filter(user=member).delete)()
        await get_channel_layer().group_send(
            f"job.{job.pk}", {"type": "job.update", "job": {"progress": 50}}
        )
        message = await communicator.receive_output(timeout=5)
        assert message["type"] == "websocket.close"

    async_to_sync(scenario)()


def test_with_the_in_memory_layer_the_consumer_follows_the_row(job, viewer, settings):
    """Embedded mode: workers cannot reach this process's layer, so the consumer polls."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    headers = _headers(viewer)

    async def scenario():
        communicator = _connect(job.pk, headers)
        assert (await communicator.connect())[0]
        assert (await communicator.receive_json_from(timeout=5))["status"] == "queued"
        # Another process would do this; only the database changes, nothing is pushed.
        await sync_to_async(
            lambda: Job.objects.filter(pk=job.pk).update(
                status=JobStatus.RUNNING, progress=30, message="Working"
            )
        )()
        event = await communicator.receive_json_from(timeout=5)
        assert (event["status"], event["progress"]) == ("running", 30)
        await sync_to_async(
            lambda: Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, progress=100)
        )()
        event = await communicator.receive_json_from(timeout=5)
        assert event["finished"] is True
        await asyncio.sleep(0.1)
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_cancel_from_the_web_is_pushed(job, viewer, owner):
    headers = _headers(viewer)

    async def scenario():
        communicator = _connect(job.pk, headers)
        assert (await communicator.connect())[0]
        await communicator.receive_json_from(timeout=5)
        await sync_to_async(services.job_cancel)(job=job)
        event = await communicator.receive_json_from(timeout=5)
        assert (event["status"], event["finished"]) == ("cancelled", True)
        await communicator.disconnect()

    async_to_sync(scenario)()


@pytest.mark.slow
def test_on_a_real_daphne_frames_that_are_not_json_are_ignored_and_the_socket_lives_on(
    daphne_server, job, viewer
):
    """A listener's socket: text that is not JSON (nested 100,000 deep too) or a binary frame
    must not end it (it used to crash with 1011); the next change still arrives."""
    import json
    import time

    from websockets.sync.client import connect

    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie_for(viewer)}"
    url = f"ws://127.0.0.1:{daphne_server.port}/ws/jobs/{job.pk}/"
    with connect(url, additional_headers={"Cookie": cookie, "Origin": "http://localhost"}) as ws:
        assert json.loads(ws.recv(timeout=10))["status"] == "queued"
        for frame in ("not json", "[" * 100_000, b"\x00\x01", ""):
            ws.send(frame)
        time.sleep(1.5)  # Daphne looks for crashed consumers every second
        Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, progress=30)
        # A ping asks for the current state: answered only by a consumer that is still alive
        # (with Redis nothing polls, and this update pushes nothing to the group).
        ws.send(json.dumps({"type": "ping"}))
        event = json.loads(ws.recv(timeout=10))
        ws.close()
        code = ws.protocol.close_rcvd.code
    assert (event["status"], event["progress"]) == ("running", 30)
    assert code == 1000  # the client's close, answered: never 1011
    assert "Traceback" not in daphne_server.proc.output(), daphne_server.proc.output()
