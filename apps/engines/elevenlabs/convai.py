"""A conversation with a provider agent over ElevenLabs' conversation WebSocket (API notes §11,
the AsyncAPI file ``elevenlabs-asyncapi-convai-2025-08``), held server-side.

``connect()`` asks for a signed URL (``GET /v1/convai/conversation/get-signed-url`` with the
key, through the engine's HTTP machinery) and opens it, so the key itself never travels on the
socket and the signed URL (a single-use token) is never logged. A refused handshake, a broken
connection or a timeout before the socket opened is judged by the one retry policy, each try
with a fresh signed URL (a token may have been used up). Once open it sends
``conversation_initiation_client_data`` and waits for ``conversation_initiation_metadata``; an
``error`` message or a close instead is a typed error (the close code ``4000 + status`` that
Chorus sends, and ``1008`` policy closes, read as their HTTP status).

``ConvaiSocket.receive`` hands back the provider's events one at a time and answers its
``ping`` events itself (``pong`` with the same ``event_id``). The socket is opened by
``egress.checked_socket`` (a resolved and allowed address: the signed URL's host is checked
like the base URL's), and websockets logs to a logger pinned at INFO (it logs handshake
headers at DEBUG).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

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
    UpstreamUnavailable,
)

from .client import log_call, user_agent
from .egress import EgressPolicy, EgressRefused, checked_socket
from .realtime import _DIRECT, _refused_handshake, _ws_logger
from .retry import RetryPolicy, judge

PATH = "/v1/convai/conversation"
METADATA_TIMEOUT = 20.0  # the provider's first answer (it may speak the first message first)
# A close code 4000 + an HTTP status (Chorus's refusals) read as that status's error.
STATUS_ERRORS = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    402: QuotaExceeded,
    403: NotSupported,
    404: InvalidRequest,
    409: InvalidRequest,
    429: RateLimited,
}


class ConvaiEnded(UpstreamUnavailable):
    """The provider closed the conversation (``normal``: a 1000 close, its own ending)."""

    def __init__(self, message: str, *, code: int | None = None, normal: bool = False):
        super().__init__(message)
        self.close_code, self.normal = code, normal


def _closed_error(exc: ConnectionClosed, told: str = "") -> EngineError:
    """The typed error for a close before the conversation started."""
    code = exc.rcvd.code if exc.rcvd is not None else None
    reason = told or (exc.rcvd.reason if exc.rcvd is not None else "") or ""
    status = code - 4000 if code is not None and 4000 <= code < 5000 else None
    if code == 1008:
        status = 403
    message = reason or f"ElevenLabs closed the conversation (code {code})."
    kind = STATUS_ERRORS.get(status, UpstreamUnavailable) if status else UpstreamUnavailable
    if kind is InvalidRequest:
        return InvalidRequest(message, fields={"__all__": [message]}, upstream_status=status)
    return kind(message, upstream_status=status)


def connect(
    *,
    signed_url: Callable[[], str],
    workspace: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    initiation: dict[str, Any],
    egress: EgressPolicy | None = None,
    open_timeout: float | None = 10.0,
    metadata_timeout: float = METADATA_TIMEOUT,
) -> ConvaiSocket:
    """Open a conversation: ``signed_url()`` gives a fresh signed URL for each try (its own
    HTTP call, retried and logged by the engine); ``initiation`` is the
    ``conversation_initiation_client_data`` message sent first."""
    egress = egress or EgressPolicy()
    started = time.monotonic()

    def log(status, attempts, error=None, **more):
        log_call(
            workspace=workspace,
            capability="convai",
            method="WS",
            path=PATH,
            status=status,
            attempts=attempts,
            latency_ms=(time.monotonic() - started) * 1000,
            request_id=more.pop("conversation_id", None),
            error=error,
            **more,
        )

    attempt = 0
    while True:
        attempt += 1
        status = None
        url = signed_url()
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            error = UpstreamUnavailable("ElevenLabs returned a signed URL that is not a WebSocket.")
            log(None, attempt, error)
            raise error
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        try:
            sock = checked_socket(egress, parts.hostname, port, timeout=open_timeout)
            ws = ws_connect(
                url,
                sock=sock,
                user_agent_header=user_agent(),
                open_timeout=open_timeout,
                proxy=None,
                logger=_ws_logger,
                max_size=2**22,
                **_DIRECT,
            )
        except EgressRefused as error:
            log(None, attempt, error)
            raise
        except (InvalidStatus, ValueError) as exc:
            refused = _refused_handshake(exc)
            if refused is None:  # not a refusal: its text may hold the signed URL, not kept
                error = UpstreamUnavailable(
                    f"Chorus could not open ElevenLabs' conversation socket ({type(exc).__name__})."
                )
                log(None, attempt, error)
                raise error from None
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
            socket = ConvaiSocket(ws, on_end=functools.partial(log, 101, attempt))
            try:
                socket.open(initiation, timeout=metadata_timeout)
            except EngineError as error:
                socket.close(error=error)
                raise
            return socket
        if not verdict.retry:
            log(status, attempt, verdict.error)
            raise verdict.error
        sleep(verdict.delay)


class ConvaiSocket:
    """One open conversation: ``send_audio``/``send`` out, ``receive`` in, ``close``.

    Safe for one reading thread and any number of sending threads."""

    def __init__(self, ws: ClientConnection, *, on_end: Callable[..., None]):
        self._ws = ws
        self._on_end = on_end
        self._send_lock = threading.Lock()
        self.metadata: dict[str, Any] = {}
        self.conversation_id = ""
        self.audio_bytes_sent = 0
        self.audio_bytes_received = 0
        self.closed = False

    def open(self, initiation: dict[str, Any], *, timeout: float) -> None:
        """Send the initiation data, wait for the conversation's metadata (raises)."""
        try:
            self._ws.send(json.dumps(initiation))
        except ConnectionClosed as exc:
            raise _closed_error(exc) from exc
        deadline = time.monotonic() + timeout
        told = ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UpstreamUnavailable("ElevenLabs did not start the conversation in time.")
            try:
                message = self._ws.recv(timeout=left)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                raise _closed_error(exc, told) from exc
            event = _json(message)
            kind = event.get("type") if event else None
            if kind == "conversation_initiation_metadata":
                meta = event.get("conversation_initiation_metadata_event")
                self.metadata = meta if isinstance(meta, dict) else {}
                self.conversation_id = str(self.metadata.get("conversation_id") or "")
                return
            if kind == "ping":
                self._pong(event)
            elif kind == "error":
                told = _error_text(event) or told  # the close that follows says the status

    def send_audio(self, pcm: bytes) -> None:
        """User audio (the agent's ``user_input_audio_format``) as ``user_audio_chunk``."""
        self.send({"user_audio_chunk": base64.b64encode(pcm).decode("ascii")})
        self.audio_bytes_sent += len(pcm)

    def send(self, message: dict[str, Any]) -> None:
        """Send one message; a closed socket is ``ConvaiEnded``."""
        with self._send_lock:
            try:
                self._ws.send(json.dumps(message))
            except ConnectionClosed as exc:
                raise _ended(exc) from exc

    def receive(self, timeout: float | None) -> dict[str, Any] | None:
        """The next event (None after ``timeout`` seconds without one); pings are answered
        here and not returned. A close is ``ConvaiEnded`` with what the provider said."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            try:
                message = self._ws.recv(timeout=left)
            except TimeoutError:
                return None
            except ConnectionClosed as exc:
                raise _ended(exc) from exc
            event = _json(message)
            if event is None:
                continue
            if event.get("type") == "ping":
                self._pong(event)
                continue
            if event.get("type") == "audio":
                audio = (event.get("audio_event") or {}).get("audio_base_64") or ""
                self.audio_bytes_received += len(audio) * 3 // 4
            return event

    def close(self, *, error: EngineError | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self._ws.close()
        self._on_end(
            error=error,
            conversation_id=self.conversation_id or None,
            audio_bytes=self.audio_bytes_sent,
            agent_audio_bytes=self.audio_bytes_received,
        )

    def _pong(self, event: dict[str, Any]) -> None:
        ping = event.get("ping_event") if isinstance(event.get("ping_event"), dict) else {}
        with contextlib.suppress(ConvaiEnded):  # the next receive says so
            self.send({"type": "pong", "event_id": ping.get("event_id")})


def _json(raw: str | bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _error_text(event: dict[str, Any]) -> str:
    inner = event.get("error_event")
    if isinstance(inner, dict) and inner.get("message"):
        return str(inner["message"])
    return str(event.get("message") or "")


def _ended(exc: ConnectionClosed) -> ConvaiEnded:
    code = exc.rcvd.code if exc.rcvd is not None else None
    reason = exc.rcvd.reason if exc.rcvd is not None else ""
    normal = code == 1000
    if reason:
        message = reason
    elif normal:
        message = "The agent ended the conversation."
    else:
        message = "The connection to ElevenLabs was lost."
    return ConvaiEnded(message, code=code, normal=normal)
