"""The ElevenLabs engine: every capability of base.Engine over the real HTTP API with httpx.

One ``httpx.Client`` per engine, reused for every call. Every call goes through the same retry
policy (retry.py), turns error bodies into typed errors (errors.py), fills a ``CallInfo`` from
the response headers, and writes exactly one log line to ``chorus.engines.elevenlabs`` (INFO,
or WARNING when it failed). A successful reply is only logged once it has been mapped: a body
that is not the shape the API documents (a list where an object belongs, a ``null`` in an
alignment) becomes ``UpstreamUnavailable("ElevenLabs returned an unexpected response: ...")``,
logged as the call's error, rather than a ``TypeError`` deep in a view.

The API key is sent as ``xi-api-key`` and never logged: log lines carry no headers and no URLs
with secrets, and httpx itself never logs headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import mimetypes
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from apps.engines import pronunciation
from apps.engines.base import (
    AudioResult,
    CallInfo,
    CloneRequest,
    DesignRequest,
    DesignResult,
    DubbingRequest,
    DubbingStatus,
    Engine,
    EngineError,
    HistoryPage,
    InvalidRequest,
    ModelInfo,
    MusicRequest,
    OutputFormat,
    RealtimeSTTSession,
    SaveDesignRequest,
    SoundRequest,
    STTRequest,
    Subscription,
    Transcript,
    TTSChunk,
    TTSRequest,
    TTSResult,
    TTSStream,
    UpstreamUnavailable,
    UsageStats,
    UserInfo,
    Voice,
    VoicePage,
    VoiceQuery,
)

from . import mapping
from .egress import EgressPolicy, EgressRefused, GuardedTransport
from .retry import RetryPolicy, Verdict, judge, retryable_exception

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=60.0, pool=10.0)
LOGGER_NAME = "chorus.engines.elevenlabs"
logger = logging.getLogger(LOGGER_NAME)

T = TypeVar("T")
_END: Any = object()
# What reading a reply of the wrong shape raises: turned into UpstreamUnavailable.
MAPPING_ERRORS = (TypeError, ValueError, AttributeError, KeyError)
MAX_DETAIL = 200


def chorus_version() -> str:
    try:
        return importlib.metadata.version("chorus")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def user_agent() -> str:
    return f"chorus/{chorus_version()}"


def log_call(
    *,
    workspace: str,
    capability: str,
    method: str,
    path: str,
    status: int | None,
    attempts: int,
    latency_ms: float,
    request_id: str | None,
    error: EngineError | None = None,
    level: int | None = None,
    **more: Any,
) -> None:
    """The one log line of a call. Never give it headers, bodies or full URLs.

    INFO, or WARNING when the call failed (``error``); ``level`` overrides that. Nothing is
    built when the logger would drop the line (a server logging warnings only).
    """
    if level is None:
        level = logging.WARNING if error is not None else logging.INFO
    if not logger.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "workspace": workspace,
        "capability": capability,
        "method": method,
        "path": path,
        "status": status,
        "attempts": attempts,
        "latency_ms": round(latency_ms, 1),
        "request_id": request_id,
    }
    if error is not None:
        fields["error"] = error.code
    fields.update(more)
    text = " ".join(f"{key}={value}" for key, value in fields.items())
    logger.log(
        level,
        "elevenlabs call %s",
        text,
        extra=fields,
    )


def output_format(name: str | None, *, allow_wav: bool = True) -> OutputFormat:
    fmt = OutputFormat.parse(name)
    if fmt.codec == "wav" and not allow_wav:
        raise InvalidRequest.for_field(
            "output_format", "ElevenLabs cannot stream WAV; choose an mp3, pcm or opus format."
        )
    return fmt


def unexpected(
    reason: BaseException | str, *, request_id: str | None = None, upstream_status=None
) -> UpstreamUnavailable:
    """The error for a reply that is not the shape the API documents."""
    detail = str(reason) or type(reason).__name__
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + "…"
    return UpstreamUnavailable(
        f"ElevenLabs returned an unexpected response: {detail}",
        request_id=request_id,
        upstream_status=upstream_status,
    )


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def expect(data: Any, kind: type) -> Any:
    """``data`` if it is a ``kind`` (dict or list); otherwise a TypeError saying what it was."""
    if not isinstance(data, kind):
        wanted = "a JSON object" if kind is dict else "a JSON list"
        raise TypeError(f"expected {wanted}, got {_kind(data)}.")
    return data


def _segment(value: str) -> str:
    """A path segment from user input: quoted so it cannot climb to another endpoint."""
    if not value:
        raise InvalidRequest("An id is required.", fields={"__all__": ["An id is required."]})
    return quote(str(value), safe="")


@dataclass
class _Call:
    capability: str
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, Any] | None = None
    files: Any = None
    model_id: str | None = None
    # False for calls that create something: not retried once they may have reached the
    # server (see retry.py).
    idempotent: bool = True

    def query(self) -> dict[str, Any] | None:
        if not self.params:
            return None
        return {k: v for k, v in self.params.items() if v is not None}


class _Stream(Generic[T]):
    """An open streamed response: iterate for items as they arrive; ``close()`` ends it.

    It was retried (if need be) until its first item arrived; from then on a broken connection
    surfaces as ``UpstreamUnavailable`` to the caller, never as a silent retry that would
    repeat audio the caller already has. Whatever ends it (the last item, ``close()``, an
    error, or an interruption such as ``GeneratorExit``, ``asyncio.CancelledError`` or Celery's
    ``SoftTimeLimitExceeded``) closes the HTTP response and logs its one line.
    """

    def __init__(self, engine, call, response, iterator, first, info, started, size):
        self._engine = engine
        self._call = call
        self._response: httpx.Response = response
        self._iterator: Iterator[T] = iterator
        self._pending: list[T] = [] if first is _END else [first]
        self.info: CallInfo = info
        self._started = started
        self._size: Callable[[T], int] = size
        self.delivered_bytes = 0
        self._done = False

    def __iter__(self) -> _Stream[T]:
        return self

    def __next__(self) -> T:
        if self._pending:
            item = self._pending.pop()
        elif self._done:
            raise StopIteration
        else:
            try:
                item = next(self._iterator)
            except StopIteration:
                self._finish("complete")
                raise
            except httpx.RequestError as exc:
                error = UpstreamUnavailable(
                    f"The ElevenLabs stream broke off after {self.delivered_bytes} bytes.",
                    request_id=self.info.request_id,
                )
                self._finish("broken", error)
                raise error from exc
            except EngineError as error:
                self._finish("broken", error)
                raise
            except MAPPING_ERRORS as exc:
                error = unexpected(
                    exc, request_id=self.info.request_id, upstream_status=self._response.status_code
                )
                self._finish("broken", error)
                raise error from exc
            except BaseException as exc:  # interrupted: close, log, and let it through
                self._finish("aborted", level=logging.WARNING, interrupted=type(exc).__name__)
                raise
        self.delivered_bytes += self._size(item)
        return item

    def close(self) -> None:
        self._finish("closed")

    def _finish(self, outcome: str, error: EngineError | None = None, **more: Any) -> None:
        if self._done:
            return
        self._done = True
        self._pending.clear()
        try:
            _close_iterator(self._iterator)
            self._response.close()
        finally:
            self._engine._log(
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


def _close_iterator(iterator: Any) -> None:
    """Close a generator left part-way (it may hold the response's line reader open)."""
    close = getattr(iterator, "close", None)
    if close is None:
        return
    # A generator running in another frame cannot be closed from here: nothing to do.
    with contextlib.suppress(RuntimeError, ValueError):
        close()


def _audio_size(item: bytes) -> int:
    return len(item)


def _chunk_size(item: TTSChunk) -> int:
    return len(item.audio)


def timestamp_line(line: str, request_id: str | None = None) -> TTSChunk | None:
    """One line of ``/stream/with-timestamps`` (None for a blank line); a line that is not
    JSON, not an object, or not the documented shape raises ``UpstreamUnavailable``."""
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise UpstreamUnavailable(
            "ElevenLabs sent an unreadable stream line.", request_id=request_id
        ) from exc
    try:
        return mapping.timestamp_chunk(expect(data, dict))
    except MAPPING_ERRORS as exc:
        raise unexpected(exc, request_id=request_id) from exc


def _ndjson_chunks(response: httpx.Response) -> Iterator[TTSChunk]:
    request_id = response.headers.get("request-id")
    for line in response.iter_lines():
        chunk = timestamp_line(line, request_id)
        if chunk is not None:
            yield chunk


def _audio_chunks(response: httpx.Response) -> Iterator[TTSChunk]:
    for piece in response.iter_bytes():
        yield TTSChunk(audio=piece)


class ElevenLabsEngine(Engine):
    """The ElevenLabs API behind the Engine interface (API notes: shared/docs/ELEVENLABS-API.md).

    ``egress`` says where the engine may connect (egress.py): every request and realtime
    socket goes to a resolved and checked address; the default is the official hosts only.
    Redirects are never followed: a 3xx answer is an error.

    ``transport``, ``sleep`` and ``rng`` exist for tests: inject faults at the network edge
    with an ``httpx.MockTransport`` and record the backoff delays instead of sleeping (an
    injected transport is the whole network, so the egress check is its business).
    """

    name = "elevenlabs"
    label = "ElevenLabs"

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        workspace: str = "",
        timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        max_server_delay: float = 60.0,
        egress: EgressPolicy | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.workspace = workspace
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.egress = egress or EgressPolicy()
        self._api_key = api_key
        self._sleep = sleep
        self._policy = RetryPolicy(
            max_retries=max_retries, rng=rng, max_server_delay=max_server_delay
        )
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"xi-api-key": api_key, "User-Agent": user_agent()},
            timeout=self.timeout,
            transport=transport or GuardedTransport(self.egress),
            follow_redirects=False,
        )
        self._max_retries = max_retries
        self._max_server_delay = max_server_delay
        # Async callers (the gateway's streams) get an async client per event loop; an
        # engine built with a test transport has none, so its callers use the sync path.
        self.streams_async = transport is None
        self._async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # Pronunciation dictionaries uploaded for rules: fingerprint → (id, version_id).
        self._dictionaries: dict[str, tuple[str, str]] = {}
        self._dictionary_locks: dict[str, threading.Lock] = {}
        self._dictionaries_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"<ElevenLabsEngine {self.base_url} workspace={self.workspace!r}>"

    def close(self) -> None:
        self._client.close()
        for loop, client in list(self._async_clients.items()):
            if not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(client.aclose(), loop)
        self._async_clients.clear()

    async def tts_stream_async(self, request: TTSRequest, *, with_timestamps: bool = False):
        """``tts_stream`` for async callers: chunks arrive on the event loop, no thread hops.

        Same wire format, retries and errors (``aio.AsyncElevenLabsClient``); returns an
        ``AsyncTTSStream`` (``async for``, ``await aclose()``).
        """
        from .aio import AsyncElevenLabsClient

        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = AsyncElevenLabsClient(
                self._api_key,
                self.base_url,
                workspace=self.workspace,
                timeout=self.timeout,
                max_retries=self._max_retries,
                rng=self._policy.rng,
                max_server_delay=self._max_server_delay,
                egress=self.egress,
            )
            self._async_clients[loop] = client
        locators = None
        if request.pronunciation_rules:
            locators = await asyncio.to_thread(self._locators, request)
        return await client.tts_stream(request, with_timestamps=with_timestamps, locators=locators)

    def __enter__(self) -> ElevenLabsEngine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- The call machinery -------------------------------------------------------------

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

    def _judge(self, call: _Call, attempt: int, *, response=None, exc=None) -> Verdict:
        if exc is not None:
            return judge(
                self._policy,
                attempt,
                exc=exc,
                retryable_exc=retryable_exception(exc, idempotent=call.idempotent),
                idempotent=call.idempotent,
            )
        return judge(
            self._policy,
            attempt,
            status=response.status_code,
            headers=response.headers,
            body=response.content,
            reason=response.reason_phrase,
            idempotent=call.idempotent,
        )

    def _give_up(self, call, attempt, started, response, verdict) -> None:
        error = verdict.error
        self._log(
            call,
            response.status_code if response is not None else None,
            attempt,
            started,
            error.request_id,
            error,
        )
        raise error

    def _send(self, call: _Call) -> tuple[httpx.Response, CallInfo, float]:
        """Send a call, retrying per the policy: the successful response, read in full, its
        ``CallInfo`` and when the call started. Logs failures; success is logged by ``_call``."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            response = None
            try:
                response = self._client.request(
                    call.method,
                    call.path,
                    params=call.query(),
                    json=call.json,
                    data=call.data,
                    files=call.files,
                )
            except httpx.RequestError as exc:
                verdict = self._judge(call, attempt, exc=exc)
            except EgressRefused as error:  # the address is refused: nothing was sent
                self._log(call, None, attempt, started, None, error)
                raise
            else:
                if response.is_success:
                    info = mapping.call_info(
                        response.headers,
                        attempts=attempt,
                        latency_ms=(time.monotonic() - started) * 1000,
                        model_id=call.model_id,
                    )
                    return response, info, started
                verdict = self._judge(call, attempt, response=response)
            if not verdict.retry:
                self._give_up(call, attempt, started, response, verdict)
            self._sleep(verdict.delay)

    def _call(self, call: _Call, read: Callable[[httpx.Response, CallInfo], T]) -> T:
        """Send a call and map its reply with ``read``; logs the call's one line either way.

        A reply ``read`` cannot map (a ``TypeError``, ``ValueError``, ``AttributeError`` or
        ``KeyError``: the body is not the documented shape) is ``UpstreamUnavailable``.
        """
        response, info, started = self._send(call)
        try:
            result = read(response, info)
        except EngineError as error:
            self._log(call, response.status_code, info.attempts, started, info.request_id, error)
            raise
        except MAPPING_ERRORS as exc:
            error = unexpected(
                exc, request_id=info.request_id, upstream_status=response.status_code
            )
            self._log(call, response.status_code, info.attempts, started, info.request_id, error)
            raise error from exc
        self._log(call, response.status_code, info.attempts, started, info.request_id)
        return result

    def _request(self, call: _Call) -> tuple[httpx.Response, CallInfo]:
        """Send a call: the successful response, read in full, and its ``CallInfo``."""
        return self._call(call, lambda response, info: (response, info))

    def _json(
        self,
        call: _Call,
        read: Callable[[Any, CallInfo], T],
        *,
        kind: type = dict,
    ) -> T:
        """Send a call whose reply is JSON of ``kind`` (dict or list) and map it with ``read``."""

        def parse(response: httpx.Response, info: CallInfo) -> T:
            if not response.content:
                data = kind()
            else:
                try:
                    data = response.json()
                except ValueError as exc:
                    raise UpstreamUnavailable(
                        "ElevenLabs sent a response that is not JSON.",
                        request_id=info.request_id,
                        upstream_status=response.status_code,
                    ) from exc
            return read(expect(data, kind), info)

        return self._call(call, parse)

    def _stream(
        self,
        call: _Call,
        items: Callable[[httpx.Response], Iterator[T]],
        size: Callable[[T], int],
    ) -> _Stream[T]:
        """Open a streamed call, retrying until its first item arrives.

        The response is closed on any way out but a returned stream, interruptions included.
        """
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            response = None
            try:
                request = self._client.build_request(
                    call.method,
                    call.path,
                    params=call.query(),
                    json=call.json,
                    data=call.data,
                    files=call.files,
                )
                response = self._client.send(request, stream=True)
                if response.is_success:
                    iterator = items(response)
                    try:
                        first = next(iterator, _END)
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
                    return _Stream(self, call, response, iterator, first, info, started, size)
                response.read()
                response.close()
                verdict = self._judge(call, attempt, response=response)
            except httpx.RequestError as exc:
                if response is not None:
                    response.close()
                verdict = self._judge(call, attempt, exc=exc)
            except EngineError as error:  # e.g. an unreadable first line
                if response is not None:
                    response.close()
                status = getattr(response, "status_code", None)
                self._log(call, status, attempt, started, error.request_id, error)
                raise
            except BaseException as exc:  # interrupted: close, log, and let it through
                if response is not None:
                    response.close()
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
                self._give_up(call, attempt, started, response, verdict)
            self._sleep(verdict.delay)

    # --- Text to speech -----------------------------------------------------------------

    def tts(self, request: TTSRequest, *, with_timestamps: bool = False) -> TTSResult:
        """Speak text in one response; with timestamps the result carries the alignment."""
        fmt = output_format(request.output_format)
        path = f"/v1/text-to-speech/{_segment(request.voice_id)}"
        call = _Call(
            "tts",
            "POST",
            path + ("/with-timestamps" if with_timestamps else ""),
            params={"output_format": fmt.name},
            json=mapping.tts_body(request, self._locators(request)),
            model_id=request.model_id,
        )
        if with_timestamps:

            def read_timestamps(data: dict[str, Any], info: CallInfo) -> TTSResult:
                chunk = mapping.timestamp_chunk(data)
                ends = chunk.alignment.character_end_times_seconds if chunk.alignment else []
                return TTSResult(
                    audio=chunk.audio,
                    output_format=fmt.name,
                    content_type=fmt.content_type,
                    characters=len(request.text),
                    duration_secs=max(ends) if ends else mapping.audio_duration(chunk.audio, fmt),
                    alignment=chunk.alignment,
                    normalized_alignment=chunk.normalized_alignment,
                    info=info,
                )

            return self._json(call, read_timestamps)

        def read_audio(response: httpx.Response, info: CallInfo) -> TTSResult:
            return TTSResult(
                audio=response.content,
                output_format=fmt.name,
                content_type=fmt.content_type,
                characters=len(request.text),
                duration_secs=mapping.audio_duration(response.content, fmt),
                info=info,
            )

        return self._call(call, read_audio)

    def tts_stream(self, request: TTSRequest, *, with_timestamps: bool = False) -> TTSStream:
        """Stream speech as it is synthesised: ``/stream``, or ``/stream/with-timestamps``
        (newline-delimited JSON, each line audio plus the alignment of its characters)."""
        fmt = output_format(request.output_format, allow_wav=False)
        path = f"/v1/text-to-speech/{_segment(request.voice_id)}/stream"
        call = _Call(
            "tts_stream",
            "POST",
            path + ("/with-timestamps" if with_timestamps else ""),
            params={"output_format": fmt.name},
            json=mapping.tts_body(request, self._locators(request)),
            model_id=request.model_id,
        )
        stream = self._stream(
            call, _ndjson_chunks if with_timestamps else _audio_chunks, _chunk_size
        )
        return TTSStream(stream, info=stream.info, output_format=fmt.name)

    # --- Pronunciation dictionaries -----------------------------------------------------

    def _locators(self, request: TTSRequest) -> list[dict] | None:
        """The request's rules as ``pronunciation_dictionary_locators``: uploaded once per
        set of rules (``add-from-rules``) and remembered by this engine."""
        if not request.pronunciation_rules:
            return None
        try:
            rules = pronunciation.rules_checked(request.pronunciation_rules)
        except pronunciation.PronunciationInvalid as exc:
            raise InvalidRequest.for_field("pronunciation_rules", str(exc)) from None
        fingerprint = pronunciation.rules_fingerprint(rules)
        with self._dictionaries_lock:
            found = self._dictionaries.get(fingerprint)
            lock = self._dictionary_locks.setdefault(fingerprint, threading.Lock())
        if found is None:
            with lock:  # one upload per set of rules, however many calls wait for it
                found = self._dictionaries.get(fingerprint)
                if found is None:
                    found = self._dictionary_upload(rules, fingerprint)
                    with self._dictionaries_lock:
                        if len(self._dictionaries) >= 1000:
                            self._dictionaries.clear()
                        self._dictionaries[fingerprint] = found
                        self._dictionary_locks.pop(fingerprint, None)
        dictionary_id, version_id = found
        return [{"pronunciation_dictionary_id": dictionary_id, "version_id": version_id}]

    def _dictionary_upload(self, rules, fingerprint: str) -> tuple[str, str]:
        call = _Call(
            "pronunciation_dictionary_add",
            "POST",
            "/v1/pronunciation-dictionaries/add-from-rules",
            json={
                "name": f"chorus-{fingerprint[:12]}",
                "description": "Pronunciation rules of a Chorus workspace",
                "rules": pronunciation.rules_to_json(rules),
            },
            idempotent=False,
        )

        def read(data: dict[str, Any], info: CallInfo) -> tuple[str, str]:
            dictionary_id, version_id = data.get("id"), data.get("version_id")
            if not isinstance(dictionary_id, str) or not dictionary_id:
                raise UpstreamUnavailable(
                    "ElevenLabs did not say which pronunciation dictionary it created.",
                    request_id=info.request_id,
                )
            if not isinstance(version_id, str) or not version_id:
                raise UpstreamUnavailable(
                    "ElevenLabs did not say which version of the pronunciation dictionary "
                    "it created.",
                    request_id=info.request_id,
                )
            return dictionary_id, version_id

        return self._json(call, read)

    # --- Speech to text -----------------------------------------------------------------

    def stt(self, request: STTRequest) -> Transcript:
        mime = mimetypes.guess_type(request.filename)[0] or "application/octet-stream"
        call = _Call(
            "stt",
            "POST",
            "/v1/speech-to-text",
            data=mapping.stt_form(request),
            files={"file": (request.filename or "audio", request.audio, mime)},
            model_id=request.model_id,
        )
        return self._json(call, mapping.transcript)

    def stt_realtime(self, *, language_code: str | None = None, **options) -> RealtimeSTTSession:
        """A live transcription session over the realtime WebSocket (see realtime.py)."""
        from .realtime import connect  # websockets is only needed by this capability

        return connect(
            api_key=self._api_key,
            base_url=self.base_url,
            workspace=self.workspace,
            policy=self._policy,
            sleep=self._sleep,
            egress=self.egress,
            open_timeout=self.timeout.connect,
            language_code=language_code,
            **options,
        )

    # --- Voices -------------------------------------------------------------------------

    def voices(self, query: VoiceQuery) -> VoicePage:
        call = _Call(
            "voices",
            "GET",
            "/v2/voices",
            params={
                "search": query.search or None,
                "page_size": query.page_size,
                "next_page_token": query.next_page_token,
                "category": query.category,
                "sort": query.sort,
                "sort_direction": query.sort_direction,
                "include_total_count": "true",
            },
        )

        def read(data: dict[str, Any], info: CallInfo) -> VoicePage:
            voices = [mapping.voice(v) for v in data.get("voices") or []]
            return VoicePage(
                voices=voices,
                has_more=bool(data.get("has_more")),
                total_count=int(data.get("total_count") or len(voices)),
                next_page_token=data.get("next_page_token"),
                info=info,
            )

        return self._json(call, read)

    def voice(self, voice_id: str) -> Voice:
        call = _Call("voice", "GET", f"/v1/voices/{_segment(voice_id)}")
        return self._json(call, lambda data, _: mapping.voice(data))

    def voice_delete(self, voice_id: str) -> None:
        self._request(_Call("voice_delete", "DELETE", f"/v1/voices/{_segment(voice_id)}"))

    def voice_clone(self, request: CloneRequest) -> Voice:
        """Instant voice cloning: ``files`` repeated, ``labels`` as a JSON string."""
        if not request.samples:
            raise InvalidRequest.for_field("samples", "Add at least one audio sample.")
        form: dict[str, Any] = {
            "name": request.name,
            "labels": json.dumps(request.labels or {}),
            "remove_background_noise": mapping.form_bool(request.remove_background_noise),
        }
        if request.description:
            form["description"] = request.description
        files = [
            ("files", (name, content, mimetypes.guess_type(name)[0] or "application/octet-stream"))
            for name, content in request.samples
        ]
        call = _Call(
            "voice_clone", "POST", "/v1/voices/add", data=form, files=files, idempotent=False
        )

        def read(data: dict[str, Any], _: CallInfo) -> Voice:
            return Voice(
                voice_id=str(data.get("voice_id", "")),
                name=request.name,
                category="cloned",
                labels=dict(request.labels),
                description=request.description,
                engine=self.name,
            )

        return self._json(call, read)

    def voice_design(self, request: DesignRequest) -> DesignResult:
        fmt = output_format(request.output_format, allow_wav=False)
        body: dict[str, Any] = {
            "voice_description": request.voice_description,
            "model_id": request.model_id,
            "auto_generate_text": request.auto_generate_text,
            "guidance_scale": request.guidance_scale,
            "loudness": request.loudness,
        }
        if request.text is not None:
            body["text"] = request.text
        if request.seed is not None:
            body["seed"] = request.seed
        call = _Call(
            "voice_design",
            "POST",
            "/v1/text-to-voice/design",
            params={"output_format": fmt.name},
            json=body,
            model_id=request.model_id,
        )

        def read(data: dict[str, Any], info: CallInfo) -> DesignResult:
            return DesignResult(
                previews=[mapping.design_preview(p) for p in data.get("previews") or []],
                text=str(data.get("text") or request.text or ""),
                info=info,
            )

        return self._json(call, read)

    def voice_design_save(self, request: SaveDesignRequest) -> Voice:
        body: dict[str, Any] = {
            "voice_name": request.voice_name,
            "voice_description": request.voice_description,
            "generated_voice_id": request.generated_voice_id,
        }
        if request.labels:
            body["labels"] = dict(request.labels)
        call = _Call("voice_design_save", "POST", "/v1/text-to-voice", json=body, idempotent=False)
        return self._json(call, lambda data, _: mapping.voice(data))

    def voice_design_stream(self, generated_voice_id: str, *, recipe=None) -> Iterator[bytes]:
        """The audio of a designed preview, streamed; ``close()`` the iterator to stop early."""
        path = f"/v1/text-to-voice/{_segment(generated_voice_id)}/stream"
        return self._stream(
            _Call("voice_design_stream", "GET", path),
            lambda response: response.iter_bytes(),
            _audio_size,
        )

    # --- Sound, music, dubbing ----------------------------------------------------------

    def sound_effect(self, request: SoundRequest) -> AudioResult:
        fmt = output_format(request.output_format)
        body: dict[str, Any] = {
            "text": request.text,
            "loop": request.loop,
            "prompt_influence": request.prompt_influence,
            "model_id": request.model_id,
        }
        if request.duration_seconds is not None:
            body["duration_seconds"] = request.duration_seconds
        if request.seed is not None:
            body["seed"] = request.seed
        call = _Call(
            "sound_effect",
            "POST",
            "/v1/sound-generation",
            params={"output_format": fmt.name},
            json=body,
            model_id=request.model_id,
        )

        def read(response: httpx.Response, info: CallInfo) -> AudioResult:
            return AudioResult(
                audio=response.content,
                output_format=fmt.name,
                content_type=fmt.content_type,
                duration_secs=request.duration_seconds
                or mapping.audio_duration(response.content, fmt),
                info=info,
            )

        return self._call(call, read)

    def music(self, request: MusicRequest) -> AudioResult:
        fmt = output_format(request.output_format)
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "model_id": request.model_id,
            "force_instrumental": request.force_instrumental,
        }
        if request.music_length_ms is not None:
            body["music_length_ms"] = request.music_length_ms
        if request.seed is not None:
            body["seed"] = request.seed
        call = _Call(
            "music",
            "POST",
            "/v1/music",
            params={"output_format": fmt.name},
            json=body,
            model_id=request.model_id,
        )

        def read(response: httpx.Response, info: CallInfo) -> AudioResult:
            song_id = response.headers.get("song-id")
            return AudioResult(
                audio=response.content,
                output_format=fmt.name,
                content_type=fmt.content_type,
                duration_secs=(request.music_length_ms / 1000)
                if request.music_length_ms
                else mapping.audio_duration(response.content, fmt),
                info=info,
                extra={"song_id": song_id} if song_id else {},
            )

        return self._call(call, read)

    def dubbing_start(self, request: DubbingRequest) -> DubbingStatus:
        form: dict[str, Any] = {
            "target_lang": request.target_lang,
            "source_lang": request.source_lang,
            "num_speakers": str(request.num_speakers),
        }
        if request.name:
            form["name"] = request.name
        mime = mimetypes.guess_type(request.filename)[0] or "application/octet-stream"
        call = _Call(
            "dubbing_start",
            "POST",
            "/v1/dubbing",
            data=form,
            files={"file": (request.filename, request.audio, mime)},
            idempotent=False,
        )

        def read(data: dict[str, Any], info: CallInfo) -> DubbingStatus:
            return DubbingStatus(
                dubbing_id=str(data.get("dubbing_id", "")),
                name=request.name or request.filename,
                status="dubbing",
                target_languages=[request.target_lang],
                source_language=request.source_lang,
                expected_duration_sec=mapping.opt_float(data.get("expected_duration_sec")),
                info=info,
            )

        return self._json(call, read)

    def dubbing_status(self, dubbing_id: str) -> DubbingStatus:
        call = _Call("dubbing_status", "GET", f"/v1/dubbing/{_segment(dubbing_id)}")
        return self._json(call, mapping.dubbing_status)

    def dubbing_audio(self, dubbing_id: str, language_code: str) -> AudioResult:
        path = f"/v1/dubbing/{_segment(dubbing_id)}/audio/{_segment(language_code)}"

        def read(response: httpx.Response, info: CallInfo) -> AudioResult:
            content_type = response.headers.get("content-type", "audio/mpeg")
            content_type = content_type.split(";")[0].strip()
            return AudioResult(
                audio=response.content,
                output_format="mp4" if content_type == "video/mp4" else "mp3",
                content_type=content_type,
                info=info,
            )

        return self._call(_Call("dubbing_audio", "GET", path), read)

    def dubbing_transcript(self, dubbing_id: str, language_code: str, fmt: str = "srt") -> str:
        if fmt not in ("srt", "webvtt", "json"):
            raise InvalidRequest.for_field("format", "Choose srt, webvtt or json.")
        path = f"/v1/dubbing/{_segment(dubbing_id)}/transcript/{_segment(language_code)}"
        call = _Call("dubbing_transcript", "GET", path, params={"format_type": fmt})
        return self._call(call, lambda response, _: response.text)

    # --- Account ------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return self._json(
            _Call("models", "GET", "/v1/models"),
            lambda data, _: [mapping.model(m) for m in data if isinstance(m, dict)],
            kind=list,
        )

    def user(self) -> UserInfo:
        return self._json(_Call("user", "GET", "/v1/user"), mapping.user)

    def subscription(self) -> Subscription:
        call = _Call("subscription", "GET", "/v1/user/subscription")
        return self._json(call, mapping.subscription)

    def history(
        self,
        *,
        page_size: int = 100,
        start_after: str | None = None,
        date_after_unix: int | None = None,
        date_before_unix: int | None = None,
        sort_direction: str | None = None,
    ) -> HistoryPage:
        """One page of the account's history; ``date_after_unix`` is inclusive,
        ``date_before_unix`` exclusive (seconds)."""
        call = _Call(
            "history",
            "GET",
            "/v1/history",
            params={
                "page_size": page_size,
                "start_after_history_item_id": start_after,
                "date_after_unix": date_after_unix,
                "date_before_unix": date_before_unix,
                "sort_direction": sort_direction,
            },
        )
        return self._json(call, mapping.history_page)

    def usage_characters(
        self,
        *,
        start_unix_ms: int,
        end_unix_ms: int,
        metric: str = "credits",
        aggregation_interval: str = "day",
        breakdown_type: str = "none",
        include_workspace_metrics: bool = False,
    ) -> UsageStats:
        """``GET /v1/usage/character-stats``: the account's usage over a window (Unix
        milliseconds) per bucket, as the provider bills it (reconciliation reads this)."""
        call = _Call(
            "usage",
            "GET",
            "/v1/usage/character-stats",
            params={
                "start_unix": start_unix_ms,
                "end_unix": end_unix_ms,
                "metric": metric,
                "aggregation_interval": aggregation_interval,
                "breakdown_type": breakdown_type,
                "include_workspace_metrics": "true" if include_workspace_metrics else None,
            },
        )
        return self._json(call, mapping.usage_stats)

    # --- Conversational AI (agents) -----------------------------------------------------

    def convai_agent_create(
        self, *, name: str, conversation_config: dict, platform_settings: dict | None = None,
        tags: list[str] | None = None,
    ) -> str:  # fmt: skip
        """``POST /v1/convai/agents/create``: the new agent's id."""
        body: dict[str, Any] = {"conversation_config": conversation_config, "name": name}
        if platform_settings is not None:
            body["platform_settings"] = platform_settings
        if tags is not None:
            body["tags"] = list(tags)
        call = _Call("convai_agent_create", "POST", "/v1/convai/agents/create", json=body,
                     idempotent=False)  # fmt: skip

        def read(data: dict[str, Any], info: CallInfo) -> str:
            agent_id = data.get("agent_id")
            if not isinstance(agent_id, str) or not agent_id:
                raise UpstreamUnavailable(
                    "ElevenLabs did not say which agent it created.", request_id=info.request_id
                )
            return agent_id

        return self._json(call, read)

    def convai_agent_update(
        self, agent_id: str, *, name: str | None = None, conversation_config: dict | None = None,
        platform_settings: dict | None = None, tags: list[str] | None = None,
    ) -> None:  # fmt: skip
        """``PATCH /v1/convai/agents/{agent_id}`` with the parts given."""
        body: dict[str, Any] = {}
        for key, value in (("name", name), ("conversation_config", conversation_config),
                           ("platform_settings", platform_settings), ("tags", tags)):  # fmt: skip
            if value is not None:
                body[key] = value
        path = f"/v1/convai/agents/{_segment(agent_id)}"
        self._json(_Call("convai_agent_update", "PATCH", path, json=body), lambda data, _: None)

    def convai_agent_delete(self, agent_id: str) -> None:
        path = f"/v1/convai/agents/{_segment(agent_id)}"
        self._request(_Call("convai_agent_delete", "DELETE", path))

    def convai_knowledge_base_create_text(self, *, text: str, name: str | None = None) -> str:
        """``POST /v1/convai/knowledge-base/text``: a knowledge base document of ``text``; its
        id (what ``conversation_config.agent.prompt.knowledge_base`` refers to)."""
        body: dict[str, Any] = {"text": text}
        if name:
            body["name"] = name
        call = _Call("convai_knowledge_base_create_text", "POST",
                     "/v1/convai/knowledge-base/text", json=body, idempotent=False)  # fmt: skip

        def read(data: dict[str, Any], info: CallInfo) -> str:
            document_id = data.get("id")
            if not isinstance(document_id, str) or not document_id:
                raise UpstreamUnavailable(
                    "ElevenLabs did not say which knowledge base document it created.",
                    request_id=info.request_id,
                )
            return document_id

        return self._json(call, read)

    def convai_knowledge_base_get(self, documentation_id: str) -> dict:
        """``GET /v1/convai/knowledge-base/{documentation_id}``: the document as the API
        describes it (``InvalidRequest`` with ``upstream_status`` 404 when it is gone)."""
        path = f"/v1/convai/knowledge-base/{_segment(documentation_id)}"
        return self._json(_Call("convai_knowledge_base_get", "GET", path), lambda data, _: data)

    def convai_knowledge_base_delete(self, documentation_id: str, *, force: bool = False) -> None:
        """``DELETE /v1/convai/knowledge-base/{documentation_id}`` (``force``: even while
        agents use it; the provider takes it out of them)."""
        path = f"/v1/convai/knowledge-base/{_segment(documentation_id)}"
        params = {"force": "true"} if force else None
        self._request(_Call("convai_knowledge_base_delete", "DELETE", path, params=params))

    def convai_signed_url(self, agent_id: str) -> str:
        """``GET /v1/convai/conversation/get-signed-url``: the conversation socket's address
        with a single-use token (a secret: never log it)."""
        call = _Call(
            "convai_signed_url",
            "GET",
            "/v1/convai/conversation/get-signed-url",
            params={"agent_id": agent_id},
        )

        def read(data: dict[str, Any], info: CallInfo) -> str:
            url = data.get("signed_url")
            if not isinstance(url, str) or not url:
                raise UpstreamUnavailable(
                    "ElevenLabs returned no signed URL for the conversation.",
                    request_id=info.request_id,
                )
            return url

        return self._json(call, read)

    def convai_conversation(self, agent_id: str, *, initiation: dict):
        """A conversation with the provider's agent over its WebSocket (see convai.py): a
        ``ConvaiSocket`` whose ``metadata`` is the conversation's initiation metadata."""
        from .convai import connect

        return connect(
            signed_url=lambda: self.convai_signed_url(agent_id),
            workspace=self.workspace,
            policy=self._policy,
            sleep=self._sleep,
            initiation=initiation,
            egress=self.egress,
            open_timeout=self.timeout.connect,
        )
