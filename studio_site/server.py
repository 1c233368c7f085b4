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

Several processes on one port (``--processes N``, or ``CHORUS_WEB_PROCESSES``; ``auto`` is one
per CPU this process may use): one Daphne process runs Python on one core at a time, so a
busy server needs one per core. The parent binds the address once, one listening socket per
child with ``SO_REUSEPORT`` where the kernel spreads connections over them (Linux), else one
socket they all accept on, and starts the children with their socket as ``--fd``. It serves
nothing itself: it passes SIGTERM/SIGINT on to the children, restarts one that dies (after
it had started), and stops with the first child that fails to start. The children die with
it, even when it is killed outright (``PR_SET_PDEATHSIG`` on Linux).
"""

import argparse
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
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


ADOPTED = "chorus-adopted:"  # an endpoint: a listening socket handed down by the parent


def _server_endpoint(reactor, description: str):
    """Twisted's ``serverFromString``, plus ``chorus-adopted:fileno=N:family=F``.

    (Daphne's own ``--fd`` takes IPv4 sockets only: its plugin passes the family on as text.)
    """
    if description.startswith(ADOPTED):
        from twisted.internet.endpoints import AdoptedStreamServerEndpoint

        fields = dict(part.split("=", 1) for part in description[len(ADOPTED) :].split(":"))
        family = int(fields.get("family", socket.AF_INET))
        return AdoptedStreamServerEndpoint(reactor, int(fields["fileno"]), family)
    return _twisted_server_from_string(reactor, description)


_twisted_server_from_string = daphne_server.serverFromString


class ChorusServer(daphne_server.Server):
    def __init__(self, application, **kwargs):
        super().__init__(streamed_bodies(application), **kwargs)

    def run(self):
        # ``Server.run`` builds its HTTP factory and its endpoints by these module-level names.
        daphne_server.HTTPFactory = ChorusHTTPFactory
        daphne_server.serverFromString = _server_endpoint
        super().run()

    def create_application(self, protocol, scope):
        body_file = getattr(protocol, "body_file", None)
        if body_file is not None and scope.get("type") == "http":
            scope[_BODY_SCOPE_KEY] = body_file
        return super().create_application(protocol, scope)


# How long a busy thread keeps the GIL when another wants it (Python's default: 5 ms). The
# event loop is busy under load, and every database or Redis round trip of a request's
# worker-thread hop ends with that thread waiting for the GIL: at 5 ms a request's dozen
# round trips waited up to 60 ms, and the hops (not the CPUs) set the pace.
SWITCH_INTERVAL = 0.0005


class ChorusCommandLine(CommandLineInterface):
    server_class = ChorusServer

    def run(self, args):
        sys.setswitchinterval(SWITCH_INTERVAL)
        super().run(args)


# --- Several processes on one port ------------------------------------------------------------

PROCESSES_ENV = "CHORUS_WEB_PROCESSES"
LISTEN_BACKLOG = 1024
START_SECONDS = 15  # a child that exits sooner failed to start: the parent gives up
STOP_SECONDS = 30  # then SIGKILL (Daphne gives an application 10 s to close)


def process_count(value: str | None) -> int:
    """``--processes`` / ``CHORUS_WEB_PROCESSES``: a count, or ``auto`` (the CPUs this process
    may run on); unset: 1."""
    value = (value or "").strip().lower()
    if not value:
        return 1
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    try:
        count = int(value)
    except ValueError:
        raise SystemExit(
            f"{PROCESSES_ENV} / --processes: a number or auto, not {value!r}"
        ) from None
    if count < 1:
        raise SystemExit(f"{PROCESSES_ENV} / --processes: at least 1, not {count}")
    return count


def _split_args(argv: list[str]):
    """(processes, the rest of the arguments) from the command line."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--processes", default=None)
    known, rest = parser.parse_known_args(argv)
    value = known.processes if known.processes is not None else os.environ.get(PROCESSES_ENV)
    return process_count(value), rest


def _address_args(argv: list[str]):
    """(host, port, the other Daphne arguments) for the children of ``--processes``."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-b", "--bind", dest="host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=8000)
    known, rest = parser.parse_known_args(argv)
    for arg in rest:
        if arg.split("=", 1)[0] in ("-u", "--unix-socket", "--fd", "-e", "--endpoint"):
            raise SystemExit("--processes serves one TCP address (-b and -p), not " + arg)
    return known.host, known.port, rest


def _listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port`` with SO_REUSEPORT (the kernel spreads new
    connections over them), or one socket shared by every child where there is none."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    reuse_port = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
    sockets = []
    try:
        for _ in range(count if reuse_port else 1):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            if port == 0:  # the first one chose a free port: the others take the same
                port = sock.getsockname()[1]
                address = (address[0], port, *address[2:])
            sock.listen(LISTEN_BACKLOG)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the parent dies
    if os.getppid() == 1:  # the parent died before that took effect
        os._exit(1)


class Supervisor:
    """The parent of ``processes`` Daphne children sharing one address (see the module doc)."""

    def __init__(self, processes: int, host: str, port: int, daphne_args: list[str]):
        self.processes = processes
        self.host, self.port = host, port
        self.daphne_args = daphne_args
        self.children: list[subprocess.Popen | None] = [None] * processes
        self.started: list[float] = [0.0] * processes
        self.stopping = False
        self.sockets: list[socket.socket] = []

    def _spawn(self, index: int) -> None:
        sock = self.sockets[index % len(self.sockets)]
        endpoint = f"{ADOPTED}fileno={sock.fileno()}:family={int(sock.family)}"
        env = {**os.environ, PROCESSES_ENV: "1"}
        args = [sys.executable, "-m", "studio_site.server", "-e", endpoint, *self.daphne_args]
        self.children[index] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            args,
            env=env,
            pass_fds=(sock.fileno(),),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - this parent runs no threads
            process_group=0,  # signals to the parent's group reach the parent only
        )
        self.started[index] = time.monotonic()

    def _stop(self, signum=None, _frame=None) -> None:
        self.stopping = True

    def run(self) -> int:
        try:
            self.sockets = _listening_sockets(self.host, self.port, self.processes)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", self.host, self.port, exc)
            return 1
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        bound = self.sockets[0].getsockname()
        print(
            f"Chorus web server: {self.processes} Daphne processes on {bound[0]}:{bound[1]}"
            f" ({'SO_REUSEPORT' if len(self.sockets) > 1 else 'one shared socket'})",
            file=sys.stderr,
            flush=True,
        )
        status = 0
        try:
            for index in range(self.processes):
                self._spawn(index)
            while not self.stopping:
                time.sleep(0.2)
                for index, child in enumerate(self.children):
                    code = child.poll()
                    if code is None or self.stopping:
                        continue
                    if time.monotonic() - self.started[index] < START_SECONDS:
                        log.error("a web process exited with %s as it started: stopping", code)
                        status = code or 1
                        self.stopping = True
                        break
                    log.warning("web process %s exited with %s: restarting it", child.pid, code)
                    self._spawn(index)
        finally:
            self._stop_children()
            for sock in self.sockets:
                sock.close()
        return status

    def _stop_children(self) -> None:
        alive = [c for c in self.children if c is not None and c.poll() is None]
        for child in alive:
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for child in alive:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    processes, rest = _split_args(argv)
    if processes == 1:
        ChorusCommandLine().run(rest)
        return
    host, port, daphne_args = _address_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)-15s %(levelname)-8s %(message)s")
    sys.exit(Supervisor(processes, host, port, daphne_args).run())


if __name__ == "__main__":
    main()
