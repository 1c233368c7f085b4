"""Async ElevenLabs client for async callers (consumers, the gateway): streamed TTS only.

Same wire format, retry policy, error mapping and one-log-line-per-call as ``ElevenLabsEngine``;
the sleep between attempts is awaited instead of blocking. A stream ended in any way (its last
chunk, ``aclose()``, an error, a cancelled task) closes its HTTP response and logs once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    MAPPING_ERRORS,
    _Call,
    _segment,
    log_call,
    output_format,
    timestamp_line,
    unexpected,
    user_agent,
)
from .egress import AsyncGuardedTransport, EgressPolicy
from .retry import RetryPolicy, judge, retryable_exception

URL_CACHE_SIZE = 1024  # stream URLs kept parsed (one per voice and output format)


async def _audio_chunks(response: httpx.Response) -> AsyncIterator[TTSChunk]:
    async for piece in response.aiter_bytes():
        yield TTSChunk(audio=piece)


async def _ndjson_chunks(response: httpx.Response) -> AsyncIterator[TTSChunk]:
    request_id = response.headers.get("request-id")
    async for line in response.aiter_lines():
        chunk = timestamp_line(line, request_id)
        if chunk is not None:
            yield chunk


async def _close_iterator(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    # A generator running elsewhere cannot be closed from here: nothing to do.
    with contextlib.suppress(RuntimeError, ValueError):
        await aclose()


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
            except MAPPING_ERRORS as exc:
                error = unexpected(
                    exc, request_id=self.info.request_id, upstream_status=self._response.status_code
                )
                await self._finish("broken", error)
                raise error from exc
            except BaseException as exc:  # cancelled or interrupted: close, log, let it through
                await self._finish("aborted", level=logging.WARNING, interrupted=type(exc).__name__)
                raise
        self.delivered_bytes += len(chunk.audio)
        return chunk

    async def aclose(self) -> None:
        await self._finish("closed")

    async def _finish(self, outcome: str, error: EngineError | None = None, **more: Any) -> None:
        if self.closed:
            return
        self.closed = True
        self._pending.clear()
        try:
            await _close_iterator(self._iterator)
            await self._response.aclose()
        finally:
            self._client._log(
                self._call,
                self._response.status_code,
                self.info.attempts,
                self._started,
                self.info.request_id,
                error,
                outcome=outcome,
                bytes=self.delivered_bytes,
                **more,
            )


class AsyncElevenLabsClient:
    """One ``httpx.AsyncClient`` per instance; ``tts_stream`` is the only capability.

    Connects only where ``egress`` allows (egress.py), never following redirects, like
    ``ElevenLabsEngine``; an injected ``transport`` (tests) is the whole network.
    """

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
        egress: EgressPolicy | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.workspace = workspace
        self._sleep = sleep
        self._policy = RetryPolicy(
            max_retries=max_retries, rng=rng, max_server_delay=max_server_delay
        )
        self._urls: dict[tuple[str, str], httpx.URL] = {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"xi-api-key": api_key, "User-Agent": user_agent()},
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            transport=transport or AsyncGuardedTransport(egress or EgressPolicy()),
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never show the key
        return f"<AsyncElevenLabsClient {self.base_url} workspace={self.workspace!r}>"

    def _url(self, path: str, output_format: str) -> httpx.URL:
        """The stream's absolute URL, parsed once per voice and format (httpx parses a URL
        again for the base URL, the path and the query: a good share of a request's CPU)."""
        key = (path, output_format)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            base = self._client.base_url
            url = base.copy_with(raw_path=base.raw_path.rstrip(b"/") + path.encode("ascii"))
            url = url.copy_merge_params({"output_format": output_format})
            self._urls[key] = url
        return url

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
        self,
        request: TTSRequest,
        *,
        with_timestamps: bool = False,
        locators: list[dict] | None = None,
    ) -> AsyncTTSStream:
        """Open a streamed synthesis, retried (per retry.py) until its first bytes arrive.

        ``locators``: the request's pronunciation dictionaries, uploaded by the engine."""
        fmt = output_format(request.output_format, allow_wav=False)
        path = f"/v1/text-to-speech/{_segment(request.voice_id)}/stream"
        call = _Call(
            "tts_stream",
            "POST",
            path + ("/with-timestamps" if with_timestamps else ""),
            params={"output_format": fmt.name},
            json=mapping.tts_body(request, locators),
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
                    call.method, self._url(call.path, fmt.name), json=call.json
                )
                response = await self._client.send(built, stream=True)
                if response.is_success:
                    iterator = items(response)
                    try:
                        first = await anext(iterator, _END)
                    except MAPPING_ERRORS as exc:
                        raise unexpected(
                            exc,
                            request_id=response.headers.get("request-id"),
                            upstream_status=response.status_code,
                        ) from exc
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
                    idempotent=call.idempotent,
                )
            except httpx.RequestError as exc:
                if response is not None:
                    await response.aclose()
                verdict = judge(
                    self._policy,
                    attempt,
                    exc=exc,
                    retryable_exc=retryable_exception(exc, idempotent=call.idempotent),
                    idempotent=call.idempotent,
                )
            except EngineError as error:  # e.g. an unreadable first line
                if response is not None:
                    await response.aclose()
                status = getattr(response, "status_code", None)
                self._log(call, status, attempt, started, error.request_id, error)
                raise
            except BaseException as exc:  # cancelled or interrupted: close, log, let it through
                if response is not None:
                    await response.aclose()
                status = getattr(response, "status_code", None)
                self._log(
                    call,
                    status,
                    attempt,
                    started,
                    None,
                    level=logging.WARNING,
                    outcome="aborted",
                    interrupted=type(exc).__name__,
                )
                raise
            if not verdict.retry:
                error = verdict.error
                status = response.status_code if response is not None else None
                self._log(call, status, attempt, started, error.request_id, error)
                raise error
            await self._sleep(verdict.delay)
