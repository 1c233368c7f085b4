"""The floor under the gateway benchmark: the least a Daphne + httpx proxy can do.

An ASGI app with no Django, no key check, no database and no ledger: it reads the request,
sends it to the upstream (``FLOOR_UPSTREAM``, with ``FLOOR_UPSTREAM_KEY``) on one shared
``httpx.AsyncClient`` and passes the streamed reply through chunk by chunk. Served by Daphne
like Chorus, it shows what the stack Chorus is built on (Daphne for ASGI, httpx for the
ElevenLabs client) costs by itself; ``gateway_overhead.py`` runs it as a third target.

    FLOOR_UPSTREAM=http://127.0.0.1:18600 FLOOR_UPSTREAM_KEY=... \\
        daphne -b 127.0.0.1 -p 18700 passthrough_floor:app
"""

import os

import httpx

_client: httpx.AsyncClient | None = None


async def _body(receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def app(scope, receive, send):
    global _client
    if scope["type"] != "http":
        return
    body = await _body(receive)
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if _client is None:
        _client = httpx.AsyncClient(base_url=os.environ["FLOOR_UPSTREAM"], timeout=30)
    headers = {"xi-api-key": os.environ["FLOOR_UPSTREAM_KEY"], "content-type": "application/json"}
    async with _client.stream("POST", scope["path"], content=body, headers=headers) as reply:
        content_type = reply.headers.get("content-type", "application/octet-stream").encode()
        await send(
            {
                "type": "http.response.start",
                "status": reply.status_code,
                "headers": [(b"content-type", content_type)],
            }
        )
        async for chunk in reply.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
