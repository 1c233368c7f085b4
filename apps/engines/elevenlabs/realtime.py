"""Live transcription over ElevenLabs' realtime speech-to-text WebSocket (API notes §6).

``connect()`` opens ``/v1/speech-to-text/realtime`` (manual commits, 16 kHz s16le PCM), going
through the same retry policy as HTTP calls for the handshake, and waits for
``session_started``. The session then sends ``input_audio_chunk`` messages and hands back the
transcripts that have arrived. Once a session has started, upstream errors come back as
``error`` events rather than exceptions, so a live caption can show them and carry on.

The websockets library logs every handshake header at DEBUG, the API key included, so its
connections log to a logger of ours that is pinned at INFO.

The socket is opened by ``egress.checked_socket`` (a resolved and allowed address) and handed
to websockets, which therefore cannot follow a redirect: a 3xx handshake answer is an error,
like any other refused handshake.
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from apps.engines.base import (
    AuthenticationFailed,
    EngineError,
    InvalidRequest,
    NotSupported,
    QuotaExceeded,
    RateLimited,
    RealtimeEvent,
    RealtimeSTTSession,
    UpstreamUnavailable,
)

from . import mapping
from .client import log_call, user_agent
from .egress import EgressPolicy, EgressRefused, checked_socket
from .retry import RetryPolicy, judge

PATH = "/v1/speech-to-text/realtime"
DEFAULT_MODEL = "scribe_v2_realtime"
TRANSCRIPT_TYPES = ("partial_transcript", "committed_transcript")
ERROR_TYPES = {
    "error": UpstreamUnavailable,
    "auth_error": AuthenticationFailed,
    "quota_exceeded": QuotaExceeded,
    "commit_throttled": RateLimited,
    "unaccepted_terms": NotSupported,
    "unaccepted_terms_error": NotSupported,
    "rate_limited": RateLimited,
    "queue_overflow": RateLimited,
    "resource_exhausted": RateLimited,
    "session_time_limit_exceeded": InvalidRequest,
    "input_error": InvalidRequest,
    "invalid_request": InvalidRequest,
    "chunk_size_exceeded": InvalidRequest,
    "insufficient_audio_activity": InvalidRequest,
    "transcriber_error": UpstreamUnavailable,
}

# Connect directly (not as a context manager): the session outlives this call. Only newer
# websockets versions know the flag, and warn without it.
_DIRECT = {"legacy": True} if "legacy" in inspect.signature(ws_connect).parameters else {}

_ws_logger = logging.getLogger("chorus.engines.elevenlabs.websocket")
_ws_logger.setLevel(logging.INFO)  # websockets logs handshake headers (the key) at DEBUG


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return [_query_value(v) for v in value]
    return value


def realtime_url(base_url: str, params: dict[str, Any]) -> str:
    parts = urlsplit(base_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    query = urlencode(
        {k: _query_value(v) for k, v in params.items() if v is not None and v != []}, doseq=True
    )
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + PATH, query, ""))


def _refused_handshake(exc: Exception) -> InvalidStatus | None:
    """The refused handshake behind ``exc``: websockets reports a redirect it will not
    follow (it never does with a socket of ours) as a ``ValueError`` from the 3xx answer."""
    if isinstance(exc, InvalidStatus):
        return exc
    cause = exc.__cause__
    return cause if isinstance(exc, ValueError) and isinstance(cause, InvalidStatus) else None


def _error_from_message(message: dict[str, Any]) -> EngineError:
    kind = str(message.get("message_type"))
    text = str(message.get("error") or kind)
    return ERROR_TYPES.get(kind, UpstreamUnavailable)(text)


def connect(
    *,
    api_key: str,
    base_url: str,
    workspace: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    egress: EgressPolicy | None = None,
    open_timeout: float | None = 10.0,
    language_code: str | None = None,
    model_id: str = DEFAULT_MODEL,
    include_timestamps: bool = False,
    commit_timeout: float = 5.0,
    **options: Any,
) -> ElevenLabsRealtimeSession:
    """Open a realtime session; ``options`` are further query parameters (``keyterms``,
    ``no_verbatim``, ``vad_*``...), booleans and lists encoded as the API expects."""
    params = {
        "model_id": model_id,
        "audio_format": "pcm_16000",
        "commit_strategy": "manual",
        "language_code": language_code,
        "include_timestamps": include_timestamps,
        **options,
    }
    url = realtime_url(base_url, params)
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "wss" else 80)
    egress = egress or EgressPolicy()
    started = time.monotonic()

    def log(status, attempts, error=None, **more):
        log_call(
            workspace=workspace,
            capability="stt_realtime",
            method="WS",
            path=PATH,
            status=status,
            attempts=attempts,
            latency_ms=(time.monotonic() - started) * 1000,
            request_id=more.pop("session_id", None),
            error=error,
            **more,
        )

    attempt = 0
    while True:
        attempt += 1
        status = None
        try:
            sock = checked_socket(egress, host, port, timeout=open_timeout)
            ws = ws_connect(
                url,
                sock=sock,
                additional_headers={"xi-api-key": api_key},
                user_agent_header=user_agent(),
                open_timeout=open_timeout,
                proxy=None,
                logger=_ws_logger,
                **_DIRECT,
            )
        except EgressRefused as error:
            log(None, attempt, error)
            raise
        except (InvalidStatus, ValueError) as exc:
            refused = _refused_handshake(exc)
            if refused is None:
                raise
            response = refused.response
            status = response.status_code
            verdict = judge(
                policy,
                attempt,
                status=status,
                headers=response.headers,
                body=bytes(response.body or b""),
                reason=response.reason_phrase,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            verdict = judge(policy, attempt, exc=exc)
        else:
            try:
                first = json.loads(ws.recv(timeout=open_timeout))
            except (TimeoutError, ConnectionClosed, ValueError) as exc:
                ws.close()
                verdict = judge(policy, attempt, exc=exc)
            else:
                if first.get("message_type") in ERROR_TYPES:
                    ws.close()
                    error = _error_from_message(first)
                    log(101, attempt, error)
                    raise error
                session_id = first.get("session_id")
                return ElevenLabsRealtimeSession(
                    ws,
                    include_timestamps=include_timestamps,
                    commit_timeout=commit_timeout,
                    on_end=functools.partial(log, 101, attempt, session_id=session_id),
                    session_id=session_id,
                )
        if not verdict.retry:
            log(status, attempt, verdict.error)
            raise verdict.error
        sleep(verdict.delay)


class ElevenLabsRealtimeSession(RealtimeSTTSession):
    """One realtime session: ``send_audio`` and ``commit`` return the events that arrived."""

    sample_rate = 16000

    def __init__(
        self,
        ws: ClientConnection,
        *,
        include_timestamps: bool,
        commit_timeout: float,
        on_end: Callable[..., None],
        session_id: str | None = None,
    ):
        self._ws = ws
        self._final_type = (
            "committed_transcript_with_timestamps" if include_timestamps else "committed_transcript"
        )
        self._commit_timeout = commit_timeout
        self._on_end = on_end
        self.session_id = session_id
        self.audio_bytes = 0
        self.closed = False

    def send_audio(self, pcm: bytes) -> list[RealtimeEvent]:
        self.audio_bytes += len(pcm)
        events = self._send(pcm, commit=False)
        return events + self._receive(timeout=0)

    def commit(self) -> list[RealtimeEvent]:
        events = self._send(b"", commit=True)
        deadline = time.monotonic() + self._commit_timeout
        while not self.closed and not any(
            e.message_type in (self._final_type, "error") for e in events
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            events += self._receive(timeout=remaining, one=True)
        return events + self._receive(timeout=0)

    def close(self) -> list[RealtimeEvent]:
        if self.closed:
            return []
        events = self._receive(timeout=0)
        self._end()
        return events

    def _end(self, error: EngineError | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self._ws.close()
        self._on_end(error=error, audio_bytes=self.audio_bytes)

    def _send(self, pcm: bytes, *, commit: bool) -> list[RealtimeEvent]:
        if self.closed:
            return [RealtimeEvent("error", error="The live transcription session has ended.")]
        message = {
            "message_type": "input_audio_chunk",
            "audio_base_64": base64.b64encode(pcm).decode("ascii"),
            "commit": commit,
            "sample_rate": self.sample_rate,
        }
        try:
            self._ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            return self._lost(exc)
        return []

    def _receive(self, *, timeout: float, one: bool = False) -> list[RealtimeEvent]:
        events: list[RealtimeEvent] = []
        while not self.closed:
            try:
                raw = self._ws.recv(timeout=timeout)
            except TimeoutError:
                break
            except ConnectionClosed as exc:
                return events + self._lost(exc, seen=events)
            event = self._event(raw)
            if event is not None:
                events.append(event)
                if event.message_type == "error":
                    self._end(UpstreamUnavailable(event.error or "Live transcription failed."))
                    break
                if one:
                    break
            timeout = 0
        return events

    def _lost(self, exc: ConnectionClosed, seen=()) -> list[RealtimeEvent]:
        if any(e.message_type == "error" for e in seen):
            return []
        reason = exc.rcvd.reason if exc.rcvd is not None and exc.rcvd.reason else ""
        error = UpstreamUnavailable(
            f"The live transcription connection closed{': ' + reason if reason else ''}."
        )
        self._end(error)
        return [RealtimeEvent("error", error=error.message)]

    @staticmethod
    def _event(raw: str | bytes) -> RealtimeEvent | None:
        try:
            message = json.loads(raw)
        except ValueError:
            return None
        kind = message.get("message_type")
        if kind in TRANSCRIPT_TYPES:
            return RealtimeEvent(kind, text=str(message.get("text") or ""))
        if kind == "committed_transcript_with_timestamps":
            words = [mapping.word(w) for w in message.get("words") or []]
            starts = [w.start for w in words if w.start is not None]
            ends = [w.end for w in words if w.end is not None]
            return RealtimeEvent(
                kind,
                text=str(message.get("text") or ""),
                words=words,
                start=min(starts) if starts else None,
                end=max(ends) if ends else None,
            )
        if kind in ERROR_TYPES:
            return RealtimeEvent("error", error=str(message.get("error") or kind))
        return None  # session_started, warnings and events this session does not use
