"""Async ElevenLabs client for async callers (consumers, the gateway): streamed TTS only.

Same wire format, retry policy, error mapping and one-log-line-per-call as ``ElevenLabsEngine``;
the sleep between attempts is awaited instead of blocking.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from apps.engines.base import (
    CallInfo,
    EngineError,
    TTSChunk,
    TTSRequest,
    UpstreamUnavailable,
)

from . import mapping
from .client import (
    _END,
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    _Call,
    _segment,
    log_call,
    output_format,
    user_agent,
)
from .retry import RetryPolicy, judge


async def _audio_chunks(response: httpx.Response) -> AsyncIterator[TTSChunk]:
    async for piece in response.aiter_bytes():
        yield TTSChunk(audio=piece)


async def _ndjson_chunks(response: httpx.Response) -> AsyncIterator[TTSChunk]:
    async for line in response.aiter_lines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise UpstreamUnavailable("ElevenLabs sent an unreadable stream line.") from exc
        yield mapping.timestamp_chunk(data)


class AsyncTTSStream:
    """Async counterpart of ``TTSStream``: ``async for chunk in stream``; ``await aclose()``."""

    def __init__(self, client, call, response, iterator, first, info, started, output_format):
        self._client = client
        self._call = call
        self._response: httpx.Response = response
        self._iterator: AsyncIterator[TTSChunk] = iterator
        self._pending: list[TTSChunk] = [] if first is _END else [first]
        self._started = started
        self.info: CallInfo = info
        self.output_format = output_format
        self.delivered_bytes = 0
        self.closed = False

    def __aiter__(self) -> AsyncTTSStream:
        return self

    async def __anext__(self) -> TTSChunk:
        if self._pending:
            chunk = self._pending.pop()
        elif self.closed:
            raise StopAsyncIteration
        else:
            try:
                chunk = await self._iterator.__anext__()
            except StopAsyncIteration:
                await self._finish("complete")
                raise
            except httpx.RequestError as exc:
                error = UpstreamUnavailable(
                    f"The ElevenLabs stream broke off after {self.delivered_bytes} bytes.",
                    request_id=self.info.request_id,
                )
                await self._finish("broken", error)
                raise error from exc
            except EngineError as error:
                await self._finish("broken", error)
                raise
        self.delivered_bytes += len(chunk.audio)
        return chunk

    async def aclose(self) -> None:
        await self._finish("closed")

    async def _finish(self, outcome: str, error: EngineError | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        await self._response.aclose()
        self._client._log(
            self._call,
            self._response.status_code,
            self.info.attempts,
            self._started,
            self.info.request_id,
            error,
            outcome=outcome,
            bytes=self.delivered_bytes,
        )


class AsyncElevenLabsClient:
    """One ``httpx.AsyncClient`` per instance; ``tts_stream`` is the only capability."""

    name = "elevenlabs"

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        workspace: str = "",
        timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        max_server_delay: float = 60.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.workspace = workspace
        self._sleep = sleep
        self._policy = RetryPolicy(
            max_retries=max_retries, rng=rng, max_server_delay=max_server_delay
        )
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"xi-api-key": api_key, "User-Agent": user_agent()},
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            transport=transport,
        )

    def __repr__(self) -> str:  # never show the key
        return f"<AsyncElevenLabsClient {self.base_url} workspace={self.workspace!r}>"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncElevenLabsClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    def _log(self, call, status, attempts, started, request_id, error=None, **more) -> None:
        log_call(
            workspace=self.workspace,
            capability=call.capability,
            method=call.method,
            path=call.path,
            status=status,
            attempts=attempts,
            latency_ms=(time.monotonic() - started) * 1000,
            request_id=request_id,
            error=error,
            **more,
        )

    async def tts_stream(
        self, request: TTSRequest, *, with_timestamps: bool = False
    ) -> AsyncTTSStream:
        """Open a streamed synthesis, retried (per retry.py) until its first bytes arrive."""
        fmt = output_format(request.output_format, allow_wav=False)
        path = f"/v1/text-to-speech/{_segment(request.voice_id)}/stream"
        call = _Call(
            "tts_stream",
            "POST",
            path + ("/with-timestamps" if with_timestamps else ""),
            params={"output_format": fmt.name},
            json=mapping.tts_body(request),
            model_id=request.model_id,
        )
        items = _ndjson_chunks if with_timestamps else _audio_chunks
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            response = None
            try:
                built = self._client.build_request(
                    call.method, call.path, params=call.query(), json=call.json
                )
                response = await self._client.send(built, stream=True)
                if response.is_success:
                    iterator = items(response)
                    first = await anext(iterator, _END)
                    info = mapping.call_info(
                        response.headers,
                        attempts=attempt,
                        latency_ms=(time.monotonic() - started) * 1000,
                        model_id=call.model_id,
                    )
                    return AsyncTTSStream(
                        self, call, response, iterator, first, info, started, fmt.name
                    )
                await response.aread()
                await response.aclose()
                verdict = judge(
                    self._policy,
                    attempt,
                    status=response.status_code,
                    headers=response.headers,
                    body=response.content,
                    reason=response.reason_phrase,
                )
            except httpx.RequestError as exc:
                if response is not None:
                    await response.aclose()
                verdict = judge(
                    self._policy,
                    attempt,
                    exc=exc,
                    retryable_exc=isinstance(exc, httpx.TransportError),
                )
            except EngineError as error:
                if response is not None:
                    await response.aclose()
                self._log(
                    call, getattr(response, "status_code", None), attempt, started, None, error
                )
                raise
            if not verdict.retry:
                error = verdict.error
                status = response.status_code if response is not None else None
                self._log(call, status, attempt, started, error.request_id, error)
                raise error
            await self._sleep(verdict.delay)
