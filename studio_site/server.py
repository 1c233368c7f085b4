"""Chorus's web server: Daphne, with request bodies kept out of memory and judged early.

Run it as ``python -m studio_site.server`` with Daphne's own arguments (``make run``, the
Dockerfile and the tests do).

Plain Daphne serves HTTP through Twisted's ``http.Request``, which parses every
``multipart/form-data`` or form-encoded POST body in memory before the application runs,
and Daphne then copies the whole body into the application's queue. A 200 MiB POST without
a key cost the process ~12× its size before any authentication or size check (issue 12).
Here the same Daphne runs with a request class that:

- never parses a body: Django does, streaming file parts to disk with its upload handlers;
- judges a request when its headers are in, before any of its body is read
  (``request_admission``): a declared length over the route's limit (``CHORUS_BODY_LIMITS_MB``,
  else ``CHORUS_BODY_MAX_MB``) is answered 413, and a large upload without credentials is
  answered 401 (``/v1``) or 403 (the studio), as is one whose key or session is not a live
  one (looked up in a thread before the body is read); a body sent in chunks is counted as
  it comes and answered 413 as soon as it passes the limit. An answered body is read and
  dropped (never kept) for ``CHORUS_BODY_LINGER_SECONDS`` so the client can read the answer,
  then the connection is closed;
- keeps the body where Twisted spools it (a temporary file beyond 100 kB) and hands it to the
  application in ``BODY_CHUNK`` pieces as the application asks for them.
"""

import io
import json
import logging
import re
import sys
import uuid
from dataclasses import dataclass
from functools import lru_cache
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from importlib import import_module

from daphne import server as daphne_server
from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from django.conf import settings

log = logging.getLogger(__name__)

BODY_CHUNK = 64 * 1024
MB = 1024 * 1024
_BODY_SCOPE_KEY = "chorus.body_file"  # the request's spooled body, taken out of the scope
API_PREFIXES = ("/v1/", "/v2/")


@dataclass(frozen=True)
class EarlyAnswer:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Admission:
    limit: int  # bytes the body may have
    answer: EarlyAnswer | None = None  # set: answered now, the body is never kept
    verify: bool = False  # a large body: its key or session is looked up before it is read


@lru_cache(maxsize=1)
def _route_limits() -> tuple[tuple[re.Pattern, int], ...]:
    return tuple(
        (re.compile(pattern), int(megabytes * MB))
        for pattern, megabytes in settings.CHORUS_BODY_LIMITS_MB
    )


def _answer(path: str, status: int, code: str, message: str) -> EarlyAnswer:
    if path.startswith(API_PREFIXES):  # the official error shape, as the gateway answers
        detail = {
            "type": "authentication_error" if status == 401 else "invalid_request",
            "code": code,
            "message": message,
            "status": code,
            "request_id": uuid.uuid4().hex,
        }
        body = json.dumps({"detail": detail}).encode()
        return EarlyAnswer(status, "application/json", body)
    return EarlyAnswer(status, "text/plain; charset=utf-8", message.encode() + b"\n")


def _has_credentials(path: str, headers) -> bool:
    if path.startswith(API_PREFIXES):
        return bool(headers.get("xi-api-key"))
    return bool(_session_key(headers))


def _session_key(headers) -> str | None:
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get("cookie") or "")
    except CookieError:
        return None
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    return morsel.value if morsel else None


def _refusal(path: str) -> EarlyAnswer:
    if path.startswith(API_PREFIXES):
        message = "Missing API key: send it in xi-api-key."
        return _answer(path, 401, "needs_authorization", message)
    return _answer(path, 403, "forbidden", "Sign in before uploading.")


def credentials_valid(*, path: str, headers) -> bool:
    """Whether the key (``/v1``) or session (studio) of ``headers`` is a live one.

    Run in a worker thread, before a large body is read: a made-up key or cookie must not
    buy a 500 MB spool on disk. The app checks the request again in full (scope, role).
    """
    from django.contrib.sessions.backends.base import SessionBase
    from django.db import connection

    try:
        if path.startswith(API_PREFIXES):
            from apps.gateway.services import KeyRejected, api_key_authenticate

            try:
                api_key_authenticate(headers.get("xi-api-key"))
            except KeyRejected:
                return False
            return True
        engine = import_module(settings.SESSION_ENGINE)
        session: SessionBase = engine.SessionStore(_session_key(headers))
        return "_auth_user_id" in session.load()
    finally:
        connection.close()


def request_admission(*, path: str, headers, length: int | None) -> Admission:
    """How much body ``path`` may receive, and the answer when it must not be read at all.

    ``headers`` maps lower-case names to values; ``length`` is the declared Content-Length
    (``None`` for a chunked body). Decided from the request line and headers alone.
    """
    if (headers.get("upgrade") or "").lower() == "websocket" and length != 0:
        # Daphne hands the connection to its websocket protocol and never finishes this
        # request: a spooled body would stay open (a file on disk) for the process's life.
        message = "A websocket handshake has no body."
        return Admission(0, _answer(path, 400, "invalid_request", message))
    default = int(settings.CHORUS_BODY_MAX_MB * MB)
    limit = next((lim for pattern, lim in _route_limits() if pattern.match(path)), default)
    if length is not None and length > limit:
        return Admission(
            limit,
            _answer(
                path,
                413,
                "payload_too_large",
                f"The request body is too large for {path}: at most {limit // MB} MB.",
            ),
        )
    large = length is None or length > default
    if large and not _has_credentials(path, headers):
        return Admission(limit, _refusal(path))
    return Admission(limit, verify=large)


class _Discarded:
    """Where the body of an answered request goes: nowhere."""

    closed = False

    def write(self, data):
        pass

    def close(self):
        self.closed = True


class BodyGuardRequest(WebRequest):
    """Daphne's request without Twisted's form parsing, with early answers and a lazy body."""

    def __init__(self, *args, **kwargs):
        kwargs["parsePOSTFormSubmission"] = False
        self.body_file = None
        self._body_limit = None
        self._body_seen = 0
        self._answered = False
        self._hang_up_call = None
        super().__init__(*args, **kwargs)

    # Twisted calls this once the headers are in, before any body arrives.
    def gotLength(self, length):
        target = self.channel._command, self.channel._path  # the request line, parsed already
        path = target[1].split(b"?", 1)[0].decode("latin-1")
        headers = {
            name.decode("latin-1").lower(): values[-1].decode("latin-1")
            for name, values in self.requestHeaders.getAllRawHeaders()
        }
        if self.requestHeaders.hasHeader(b"upgrade"):  # the one Daphne acts on: the first
            headers["upgrade"] = self.requestHeaders.getRawHeaders(b"upgrade")[0].decode("latin-1")
        admission = request_admission(path=path, headers=headers, length=length)
        self._body_limit = admission.limit
        if admission.answer is not None:
            self._answer_now(admission.answer)
            return
        super().gotLength(length)
        if admission.verify:
            self._verify(path, headers)

    def _verify(self, path: str, headers: dict):
        """Read no more of the body until the key or session is known to be a live one."""
        from twisted.internet import threads

        transport = self.channel.transport
        transport.pauseProducing()

        def checked(valid: bool):
            if self.channel is None or self._answered:  # gone, or refused meanwhile
                return
            if not valid:
                self._answer_now(_refusal(path))
            transport.resumeProducing()

        def failed(failure):
            # The look-up itself failed (the database is away): the app answers as it can.
            log.warning("credential look-up failed: %s", failure.getErrorMessage())
            checked(True)

        deferred = threads.deferToThread(credentials_valid, path=path, headers=headers)
        deferred.addCallbacks(checked, failed)

    def handleContentChunk(self, data):
        if self._answered:
            return
        self._body_seen += len(data)
        if self._body_limit is not None and self._body_seen > self._body_limit:
            path = self.channel._path.split(b"?", 1)[0].decode("latin-1")
            limit_mb = self._body_limit // MB
            message = f"The request body is too large for {path}: at most {limit_mb} MB."
            self._answer_now(_answer(path, 413, "payload_too_large", message))
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._answered:  # the whole (dropped) body arrived: the answer went out long ago
            self._hang_up()
            return
        # Daphne copies ``self.content`` whole into the application's queue: give it an empty
        # one, and let ``ChorusServer`` hand the spooled body to the application piece by piece.
        self.body_file, self.content = self.content, io.BytesIO()
        self.body_file.seek(0)
        super().requestReceived(command, path, version)

    def _answer_now(self, answer: EarlyAnswer):
        from twisted.internet import reactor

        self._answered = True
        old = self.content
        self.content = _Discarded()
        if old is not None:
            old.close()
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        self.channel.persistent = False
        reason = HTTPStatus(answer.status).phrase.encode()
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (answer.status, reason, answer.content_type.encode(), len(answer.body))
        )
        self.channel.transport.write(head + answer.body)
        self._hang_up_call = reactor.callLater(settings.CHORUS_BODY_LINGER_SECONDS, self._hang_up)

    def _hang_up(self):
        if self._hang_up_call is not None and self._hang_up_call.active():
            self._hang_up_call.cancel()
        self._hang_up_call = None
        transport = getattr(self.channel, "transport", None) if self.channel else None
        if transport is not None:
            transport.loseConnection()

    def _close_body(self):
        if self.body_file is not None:
            self.body_file.close()

    def finish(self):
        super().finish()
        self._close_body()

    def connectionLost(self, reason):
        if self._hang_up_call is not None and self._hang_up_call.active():
            self._hang_up_call.cancel()
        super().connectionLost(reason)
        self._close_body()


class ChorusHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = BodyGuardRequest
        return protocol


class _BodyReceiver:
    """``receive`` for one HTTP request: its spooled body in pieces, then Daphne's queue."""

    def __init__(self, body_file, receive):
        self.body_file = body_file
        self.receive = receive

    async def __call__(self):
        if self.body_file is not None:
            try:
                chunk = self.body_file.read(BODY_CHUNK)  # a local temporary file: no wait
            except ValueError:  # closed: the connection went away
                self.body_file = None
                return {"type": "http.disconnect"}
            if chunk:
                return {"type": "http.request", "body": chunk, "more_body": True}
            self.body_file = None
        return await self.receive()  # Daphne's empty last piece, then the disconnect


def streamed_bodies(application):
    async def app(scope, receive, send):
        body_file = scope.pop(_BODY_SCOPE_KEY, None)
        if body_file is not None:
            receive = _BodyReceiver(body_file, receive)
        return await application(scope, receive, send)

    return app


class ChorusServer(daphne_server.Server):
    def __init__(self, application, **kwargs):
        super().__init__(streamed_bodies(application), **kwargs)

    def run(self):
        # ``Server.run`` builds its HTTP factory by this module-level name.
        daphne_server.HTTPFactory = ChorusHTTPFactory
        super().run()

    def create_application(self, protocol, scope):
        body_file = getattr(protocol, "body_file", None)
        if body_file is not None and scope.get("type") == "http":
            scope[_BODY_SCOPE_KEY] = body_file
        return super().create_application(protocol, scope)


class ChorusCommandLine(CommandLineInterface):
    server_class = ChorusServer


def main(argv=None):
    ChorusCommandLine().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
