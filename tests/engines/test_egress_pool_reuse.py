"""The engine's connection pools reuse connections as httpcore's do (issue 13 made their
bookkeeping linear): a kept-alive connection is reused, one the server hung up on is not,
surplus idle connections are closed, and concurrent requests each get a connection."""

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from apps.engines.elevenlabs.egress import AsyncGuardedTransport, GuardedTransport

from .test_egress_pool import HOST, POLICY, lookups, upstream  # noqa: F401 (fixtures)


class _HangsUp(BaseHTTPRequestHandler):
    """Answers with keep-alive, then hangs up without saying so (no ``Connection: close``)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def hangs_up():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HangsUp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def test_an_idle_connection_the_server_hung_up_on_is_not_reused(hangs_up, lookups):  # noqa: F811
    url = f"http://{HOST}:{hangs_up}/v1/user"
    with httpx.Client(transport=GuardedTransport(POLICY)) as client:
        for count in (1, 2, 3):
            assert client.get(url).text == "ok"
            time.sleep(0.05)  # the server's close reaches the socket
            assert lookups["count"] == count  # each request on a new connection


def test_concurrent_requests_each_get_a_connection_then_reuse_them(upstream, lookups):  # noqa: F811
    url = f"http://{HOST}:{upstream}/v1/user"
    transport = AsyncGuardedTransport(POLICY)

    async def run():
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                replies = await asyncio.gather(*(client.get(url) for _ in range(6)))
                assert [r.status_code for r in replies] == [200] * 6
            return len(transport._pool.connections)

    held = asyncio.run(run())
    assert 1 <= held <= 6
    assert lookups["count"] <= 6  # the later rounds reused the first round's connections


def test_surplus_idle_connections_are_closed(upstream, lookups):  # noqa: F811
    url = f"http://{HOST}:{upstream}/v1/user"
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=1)
    transport = AsyncGuardedTransport(POLICY, limits=limits)

    async def run():
        async with httpx.AsyncClient(transport=transport) as client:
            replies = await asyncio.gather(*(client.get(url) for _ in range(4)))
            assert [r.status_code for r in replies] == [200] * 4
            await client.get(url)  # the pool's bookkeeping runs again
            return len(transport._pool.connections)

    assert asyncio.run(run()) <= 1


def test_a_full_pool_makes_requests_wait_for_a_connection(upstream, lookups):  # noqa: F811
    url = f"http://{HOST}:{upstream}/v1/user"
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    transport = AsyncGuardedTransport(POLICY, limits=limits)

    async def run():
        async with httpx.AsyncClient(transport=transport) as client:
            replies = await asyncio.gather(*(client.get(url) for _ in range(8)))
            return [r.status_code for r in replies]

    assert asyncio.run(run()) == [200] * 8
    assert lookups["count"] <= 2
