"""The egress guard checks each new connection, not each request (issue 13).

The check sits where the connection pool opens a TCP connection (``GuardedNetworkBackend``):
requests on a kept-alive connection, which was made to a checked address, cost no lookup;
a new connection resolves and checks again, so a name rebound meanwhile is refused there.
"""

import asyncio
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from apps.engines.elevenlabs.egress import (
    AsyncGuardedTransport,
    EgressPolicy,
    EgressRefused,
    GuardedTransport,
)

HOST = "upstream.test"
POLICY = EgressPolicy.build([HOST], allow_loopback=True)


class _KeepAlive(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        body = self.headers["host"].encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


@pytest.fixture
def lookups(monkeypatch):
    """``lookups["answer"]``: where HOST resolves; ``lookups["count"]``: how often it was."""
    state = {"answer": "127.0.0.1", "count": 0}
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host == HOST:
            state["count"] += 1
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (state["answer"], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return state


def test_a_kept_alive_connection_costs_no_lookup_and_a_new_one_is_checked(upstream, lookups):
    url = f"http://{HOST}:{upstream}/v1/user"
    with httpx.Client(transport=GuardedTransport(POLICY)) as client:
        replies = [client.get(url).text for _ in range(3)]
        assert replies == [f"{HOST}:{upstream}"] * 3  # the Host header is the name's
        assert lookups["count"] == 1  # one connection, checked once
        lookups["answer"] = "169.254.169.254"  # rebound to the metadata address
        assert client.get(url).status_code == 200  # the connection made to 127.0.0.1
    with (
        httpx.Client(transport=GuardedTransport(POLICY)) as client,
        pytest.raises(EgressRefused, match="link-local"),
    ):
        client.get(url)  # a new connection: resolved and checked again
    assert lookups["count"] == 2


def test_the_async_pool_checks_each_new_connection_too(upstream, lookups):
    url = f"http://{HOST}:{upstream}/v1/user"

    async def run():
        async with httpx.AsyncClient(transport=AsyncGuardedTransport(POLICY)) as client:
            for _ in range(3):
                assert (await client.get(url)).status_code == 200
        assert lookups["count"] == 1
        lookups["answer"] = "10.0.0.7"
        async with httpx.AsyncClient(transport=AsyncGuardedTransport(POLICY)) as client:
            with pytest.raises(EgressRefused, match="private-network"):
                await client.get(url)

    asyncio.run(run())


def test_a_host_off_the_list_is_refused_before_any_lookup(upstream, lookups):
    with (
        httpx.Client(transport=GuardedTransport(EgressPolicy())) as client,
        pytest.raises(EgressRefused, match="not on this server's list"),
    ):
        client.get(f"http://{HOST}:{upstream}/v1/user")
    assert lookups["count"] == 0
