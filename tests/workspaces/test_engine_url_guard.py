"""Settings → Engine cannot aim the server at itself or its network (SSRF): the base URL comes
from the administrator's allow-list, Test connection never shows what the upstream answered, and
a base URL stored some other way is refused when the engine connects, /v1 included."""

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.urls import reverse

from apps.gateway import services as gateway_services
from apps.generation import engine as engine_resolution
from apps.workspaces import services
from apps.workspaces.models import EngineSettings

from ..conftest import HTMX

KEY = "sk_live_0123456789abcdefWXYZ"
SECRET = "INTERNAL-SECRET-7f3a"
INTERNAL_AUDIO = b"ID3" + SECRET.encode()  # what an internal service would have handed back


def _save(client, **data):
    return client.post(reverse("workspaces:engine"), {"kind": "elevenlabs", **data})


@pytest.fixture
def no_loopback(settings):
    """The production default: the test settings allow loopback for the chained tests."""
    settings.CHORUS_ENGINE_ALLOW_LOOPBACK = False
    engine_resolution._engine_cache.clear()
    yield
    engine_resolution._engine_cache.clear()


class _Internal(BaseHTTPRequestHandler):
    """An internal service: answers every request with ``answer`` (status, type, body)."""

    answer = (200, "audio/mpeg", INTERNAL_AUDIO)
    requests: list[str] = []

    def _reply(self):
        self.requests.append(self.path)
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status, kind, body = self.answer
        self.send_response(status)
        self.send_header("content-type", kind)
        if 300 <= status < 400:
            self.send_header("location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply  # noqa: N815

    def log_message(self, *args):
        pass


@contextmanager
def internal_service(status=200, kind="audio/mpeg", body=INTERNAL_AUDIO):
    handler = type("Handler", (_Internal,), {"answer": (status, kind, body), "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler.requests
    finally:
        server.shutdown()
        server.server_close()


# --- Save time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:8000", "not allowed"),
        ("http://localhost:8000", "not allowed"),
        ("http://[::1]:8000", "not allowed"),
        ("https://10.0.0.5", "allows these API hosts only"),
        ("https://169.254.169.254/latest/meta-data", "allows these API hosts only"),
        ("https://internal.example", "allows these API hosts only"),
        ("http://api.elevenlabs.io", "Use an https:// address"),
        ("https://user:pw@api.elevenlabs.io", "user name and password"),
    ],
)
def test_the_form_refuses_a_base_url_off_the_allow_list(
    client_as, owner, workspace, no_loopback, url, message
):
    response = _save(client_as(owner), api_key=KEY, base_url=url)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not EngineSettings.objects.exists()


def test_the_refusal_names_the_allowed_hosts(client_as, owner, workspace, no_loopback):
    body = _save(client_as(owner), api_key=KEY, base_url="https://x.example").content.decode()
    assert "api.elevenlabs.io" in body and "api.eu.residency.elevenlabs.io" in body


def test_the_administrator_chooses_the_hosts(client_as, owner, workspace, no_loopback, settings):
    settings.CHORUS_ENGINE_ALLOWED_HOSTS = ["gateway.example.com"]
    client = client_as(owner)
    assert _save(client, api_key=KEY, base_url="https://api.us.elevenlabs.io").status_code == 400
    assert _save(client, api_key=KEY, base_url="https://gateway.example.com").status_code == 303
    # The host of the default base URL stays allowed.
    assert _save(client, api_key=KEY, base_url="https://api.elevenlabs.io").status_code == 303


def test_loopback_is_accepted_when_the_administrator_allows_it(client_as, owner, workspace):
    """The test settings opt in (as a chained instance does), over plain http too."""
    response = _save(client_as(owner), api_key=KEY, base_url="http://127.0.0.1:8123")
    assert response.status_code == 303
    assert EngineSettings.objects.get().base_url == "http://127.0.0.1:8123"


# --- Test connection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "body"),
    [
        (401, "application/json", json.dumps({"detail": {"status": "x", "message": SECRET}})),
        (500, "text/plain", SECRET),
        (404, "text/plain", f"<b>{SECRET}</b> not here"),
        (302, "text/plain", SECRET),
        (200, "text/html", f"<html><body>{SECRET}</body></html>"),
    ],
)
def test_test_connection_never_shows_the_upstream_body(
    client_as, owner, workspace, status, kind, body
):
    with internal_service(status, kind, body.encode()) as (url, requests):
        _save(client_as(owner), api_key=KEY, base_url=url)
        response = client_as(owner, **HTMX).post(reverse("workspaces:engine_test"))
        home = client_as(owner).get(reverse("workspaces:home")).content.decode()
    page = response.content.decode()
    assert requests, "the check reached the service"
    assert response.status_code == 200 and 'data-check="error"' in page
    assert f"HTTP {status}" in page
    assert SECRET not in page and SECRET not in home
    if status == 302:
        assert "redirect" in page


def test_test_connection_refuses_a_stored_loopback_url(client_as, owner, workspace, no_loopback):
    with internal_service() as (url, requests):
        services.engine_settings_update(
            workspace=workspace, actor=owner, kind="elevenlabs", api_key=KEY, base_url=url
        )
        page = client_as(owner, **HTMX).post(reverse("workspaces:engine_test")).content.decode()
    assert 'data-check="error"' in page and "does not connect" in page
    assert requests == []


# --- /v1 with a base URL stored around the form -----------------------------------------------


@pytest.mark.parametrize("endpoint", ["", "/stream"])
def test_v1_speech_is_refused_for_a_stored_loopback_url_not_proxied(
    owner, member, workspace, no_loopback, endpoint
):
    with internal_service() as (url, requests):
        services.engine_settings_update(
            workspace=workspace, actor=owner, kind="elevenlabs", api_key=KEY
        )
        EngineSettings.objects.filter(workspace=workspace).update(base_url=url)
        issued = gateway_services.api_key_create(workspace=workspace, user=member, name="Script")
        response = Client().post(
            f"/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM{endpoint}",
            json.dumps({"text": "Hello there"}),
            content_type="application/json",
            HTTP_XI_API_KEY=issued.raw,
        )
        body = _body(response)
    assert requests == []
    assert response.status_code == 503, body[:300]
    assert response["content-type"].startswith("application/json")
    detail = json.loads(body)["detail"]
    assert detail["code"] == "engine_address_refused"
    assert "does not connect" in detail["message"]
    assert SECRET.encode() not in body


def _body(response) -> bytes:
    if not response.streaming:
        return response.content

    async def drain():
        return b"".join([chunk async for chunk in response])

    return async_to_sync(drain)()
