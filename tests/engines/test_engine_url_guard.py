"""The ElevenLabs engine's egress guard: allowed hosts at save time, checked addresses at connect
time (DNS rebinding included), no redirects followed — over HTTP, streams and the realtime socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from websockets.sync.server import serve

from apps.engines.base import TTSRequest, UpstreamUnavailable
from apps.engines.elevenlabs import AsyncElevenLabsClient, ElevenLabsEngine
from apps.engines.elevenlabs.egress import EgressPolicy, EgressRefused, GuardedTransport

KEY = "sk_test_0123456789abcdef"
OFFICIAL = "api.elevenlabs.io"
PUBLIC_IP = "93.184.216.34"
DEFAULT = EgressPolicy()
LOOPBACK = EgressPolicy(allow_loopback=True)


@pytest.fixture
def dns(monkeypatch):
    """``dns[name] = [addresses]``: what ``getaddrinfo`` answers for ``name`` from now on (other
    names resolve as usual). Change an entry between calls to rebind a name."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host in answers:
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port or 0),
                )
                for a in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers


@contextmanager
def listener():
    """A TCP socket on 127.0.0.1 that only counts the connections made to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(0.3)

        def connections() -> int:
            count = 0
            while True:
                try:
                    conn, _ = sock.accept()
                except (TimeoutError, OSError):
                    return count
                conn.close()
                count += 1

        yield sock.getsockname()[1], connections


# --- Save time: the base URL itself ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://localhost:8000",
        "http://app.localhost",
        "http://[::1]:8000",
        "https://[::ffff:127.0.0.1]",
        "https://10.0.0.5",
        "https://192.168.1.10",
        "https://169.254.169.254/latest/meta-data",
        "https://evil.example",
        "https://api.elevenlabs.io.evil.example",
        "http://api.elevenlabs.io",
        "https://user:secret@api.elevenlabs.io",
        "https://api.elevenlabs.io@evil.example",
        "https://api.elevenlabs.io/?next=x",
        "ftp://api.elevenlabs.io",
    ],
)
def test_the_default_policy_refuses_a_base_url_off_the_allow_list(url):
    assert DEFAULT.url_problem(url), url


@pytest.mark.parametrize(
    "url",
    [
        "https://api.elevenlabs.io",
        "https://API.ElevenLabs.io/",
        "https://api.eu.residency.elevenlabs.io",
        "https://api.us.elevenlabs.io",
    ],
)
def test_the_official_hosts_are_allowed_over_https(url):
    assert DEFAULT.url_problem(url) is None


def test_refusals_name_the_allowed_hosts():
    assert "api.elevenlabs.io" in DEFAULT.url_problem("https://evil.example")
    assert "https://" in DEFAULT.url_problem("http://api.elevenlabs.io")


def test_loopback_over_http_only_when_the_administrator_allows_it():
    for url in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"):
        assert LOOPBACK.url_problem(url) is None, url
    # Still nothing else off the list: the private network and the metadata address.
    assert LOOPBACK.url_problem("https://10.0.0.5")
    assert LOOPBACK.url_problem("http://169.254.169.254")


# --- Connect time: the addresses a host resolves to ------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "::ffff:127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "fc00::1",
        "fe80::1",
        "169.254.169.254",
        "::ffff:169.254.169.254",
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",  # noqa: S104 (an address to refuse, not one to bind)
        "::",
        "240.0.0.1",
        "2002:7f00:1::",  # 6to4 for 127.0.0.1
        "64:ff9b::7f00:1",  # NAT64 for 127.0.0.1
    ],
)
def test_addresses_off_the_internet_are_refused_by_default(address):
    assert DEFAULT.address_problem(address), address


@pytest.mark.parametrize("address", [PUBLIC_IP, "8.8.8.8", "2606:4700:4700::1111"])
def test_internet_addresses_are_allowed(address):
    assert DEFAULT.address_problem(address) is None


def test_the_private_network_is_an_opt_in_but_link_local_never_is():
    private = EgressPolicy(allow_private=True)
    assert private.address_problem("10.1.2.3") is None
    assert private.address_problem("fd12::1") is None
    assert private.address_problem("127.0.0.1")
    assert private.address_problem("169.254.169.254")
    assert LOOPBACK.address_problem("127.0.0.1") is None
    assert LOOPBACK.address_problem("::ffff:127.0.0.1") is None
    assert LOOPBACK.address_problem("10.1.2.3")


def test_an_allowed_host_that_resolves_to_loopback_is_never_connected_to(dns):
    """Saved while it resolved elsewhere (the form does not resolve), rebound to 127.0.0.1:
    refused when the engine connects, and nothing reaches the loopback port."""
    with listener() as (port, connections):
        url = f"https://{OFFICIAL}:{port}"
        assert DEFAULT.url_problem(url) is None  # what the form accepted
        dns[OFFICIAL] = ["127.0.0.1"]
        engine = ElevenLabsEngine(KEY, url, sleep=lambda _: None)
        with pytest.raises(EgressRefused, match="on this server") as caught:
            engine.user()
        assert caught.value.status_code == 503
        assert caught.value.code == "engine_address_refused"
        engine.close()
        assert connections() == 0


def test_every_address_of_a_host_is_checked(dns):
    dns[OFFICIAL] = [PUBLIC_IP, "10.0.0.7"]
    with pytest.raises(EgressRefused, match="private-network"):
        DEFAULT.resolve(OFFICIAL, 443)


def test_a_host_off_the_list_is_refused_at_connect_time_too():
    """A base URL stored before the allow-list existed (or straight into the database)."""
    engine = ElevenLabsEngine(KEY, "https://intranet.example", sleep=lambda _: None)
    with pytest.raises(EgressRefused, match="not on this server's list"):
        engine.user()
    engine.close()


def test_the_request_is_pinned_to_the_checked_address_and_rechecked_each_time(dns):
    seen: list[tuple[str, str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(
            (request.url.host, request.headers["host"], request.extensions.get("sni_hostname"))
        )
        return httpx.Response(200, json={"ok": True})

    transport = GuardedTransport(DEFAULT, inner=httpx.MockTransport(answer))
    client = httpx.Client(base_url=f"https://{OFFICIAL}", transport=transport)
    dns[OFFICIAL] = [PUBLIC_IP]
    assert client.get("/v1/user").status_code == 200
    # Sent to the address that was checked; TLS still checks the certificate for the name.
    assert seen == [(PUBLIC_IP, OFFICIAL, OFFICIAL)]
    dns[OFFICIAL] = ["169.254.169.254"]  # rebound after the first request
    with pytest.raises(EgressRefused, match="link-local"):
        client.get("/v1/user")
    assert len(seen) == 1
    client.close()


class _Answers(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = json.dumps({"path": self.path, "host": self.headers["host"]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_pinned_request_goes_over_a_real_socket_with_its_host_header():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://localhost:{server.server_port}"
        with httpx.Client(transport=GuardedTransport(LOOPBACK)) as client:
            reply = client.get(url + "/v1/user").json()
        with (
            httpx.Client(transport=GuardedTransport(DEFAULT)) as client,
            pytest.raises(EgressRefused),
        ):
            client.get(url + "/v1/user")
    finally:
        server.shutdown()
        server.server_close()
    assert reply == {"path": "/v1/user", "host": f"localhost:{server.server_port}"}


def test_the_async_client_checks_addresses_too(dns):
    dns[OFFICIAL] = ["127.0.0.1"]

    async def run():
        async with AsyncElevenLabsClient(KEY, f"https://{OFFICIAL}") as client:
            await client.tts_stream(TTSRequest(text="Hello", voice_id="v1"))

    with pytest.raises(EgressRefused):
        asyncio.run(run())


# --- Redirects ----------------------------------------------------------------------------


def _redirect(calls: list):
    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(
            302,
            headers={"location": "http://169.254.169.254/latest/meta-data/"},
            text="INTERNAL-BODY-0451",
        )

    return answer


def test_a_redirect_is_an_error_never_followed():
    calls: list[str] = []
    engine = ElevenLabsEngine(
        KEY, transport=httpx.MockTransport(_redirect(calls)), sleep=lambda _: None
    )
    with pytest.raises(UpstreamUnavailable, match="redirect") as caught:
        engine.user()
    assert "INTERNAL-BODY-0451" not in caught.value.message
    with pytest.raises(UpstreamUnavailable, match="redirect"):
        engine.tts_stream(TTSRequest(text="Hello", voice_id="v1"))
    engine.close()
    assert calls == [
        "https://api.elevenlabs.io/v1/user",
        "https://api.elevenlabs.io/v1/text-to-speech/v1/stream?output_format=mp3_44100_128",
    ]


def test_the_async_client_does_not_follow_redirects_either():
    calls: list[str] = []

    async def run():
        async with AsyncElevenLabsClient(
            KEY, transport=httpx.MockTransport(_redirect(calls)), sleep=asyncio.sleep
        ) as client:
            await client.tts_stream(TTSRequest(text="Hello", voice_id="v1"))

    with pytest.raises(UpstreamUnavailable, match="redirect"):
        asyncio.run(run())
    assert len(calls) == 1


# --- The realtime socket ------------------------------------------------------------------


def test_the_realtime_socket_is_checked_before_it_connects(dns):
    with listener() as (port, connections):
        dns[OFFICIAL] = ["127.0.0.1"]
        engine = ElevenLabsEngine(KEY, f"https://{OFFICIAL}:{port}", sleep=lambda _: None)
        with pytest.raises(EgressRefused):
            engine.stt_realtime()
        engine.close()
        assert connections() == 0


def test_a_realtime_redirect_is_not_followed():
    followed = []

    def elsewhere(ws):
        followed.append(True)

    def redirect(connection, request):
        response = connection.respond(302, "INTERNAL-BODY-0451")
        response.headers["Location"] = f"ws://127.0.0.1:{target.socket.getsockname()[1]}/x"
        return response

    target = serve(elsewhere, "127.0.0.1", 0)
    server = serve(lambda ws: None, "127.0.0.1", 0, process_request=redirect)
    for running in (target, server):
        threading.Thread(target=running.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        engine = ElevenLabsEngine(KEY, url, sleep=lambda _: None, egress=LOOPBACK)
        with pytest.raises(UpstreamUnavailable, match="redirect") as caught:
            engine.stt_realtime()
        engine.close()
    finally:
        for running in (target, server):
            running.shutdown()
    assert "INTERNAL-BODY-0451" not in caught.value.message
    assert followed == []
