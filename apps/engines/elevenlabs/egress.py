"""Where the ElevenLabs client may connect: the administrator's allow-list, enforced per connection.

A workspace owner chooses the engine's base URL, so without a guard any signed-in person could
point the server at ``http://127.0.0.1:…``, a private network or a cloud metadata address and
read the answers back (SSRF). ``EgressPolicy`` is the guard:

- at save time (``url_problem``) the URL must name an allowed host over ``https`` (plain
  ``http`` only for this machine, and only when loopback is allowed), with no user name or
  password in it;
- at connect time, for every new connection and every realtime socket, the host is resolved
  (``getaddrinfo``) and *every* address it resolves to is checked (``address_problem``):
  loopback, private, shared, link-local, multicast, reserved and unspecified addresses, and
  IPv4-mapped, 6to4 and NAT64 forms of them, are refused unless the policy allows them. The
  connection is then made to the checked address, so a name that resolves elsewhere a moment
  later (DNS rebinding) cannot slip past.

``GuardedTransport`` / ``AsyncGuardedTransport`` do the connect-time part for httpx: their
connection pool opens its connections through ``GuardedNetworkBackend`` /
``AsyncGuardedNetworkBackend``, which resolve, check and connect to a checked address (the
URL, the ``Host`` header and TLS's server name stay the host's). A request on a kept-alive
connection, already made to a checked address, costs no lookup and no check. Given an inner
transport of its own (tests inject one: it is the whole network, with no connect step to
guard), a transport resolves, checks and pins each request to the checked address instead
(the ``sni_hostname`` extension keeps TLS verifying the certificate against the host name).
``checked_socket`` does it for the realtime websocket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpcore
import httpx

from apps.engines.base import EngineError

# The official API and its regional hosts (ELEVENLABS-API.md, "environments").
OFFICIAL_HOSTS = (
    "api.elevenlabs.io",
    "api.us.elevenlabs.io",
    "api.eu.residency.elevenlabs.io",
    "api.in.residency.elevenlabs.io",
    "api.sg.residency.elevenlabs.io",
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: not the internet either

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(EngineError):
    """The engine's address is not one this server may connect to (its administrator's rules).

    Not transient: a retry would be refused the same way, so nothing retries it.
    """

    status_code = 503
    code = "engine_address_refused"


def _host_name(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _ip(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(_host_name(host).split("%", 1)[0])
    except ValueError:
        return None


def _embedded_v4(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_local(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback address literal."""
    name = _host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    ip = _ip(name)
    return ip is not None and (_embedded_v4(ip) or ip).is_loopback


@dataclass(frozen=True)
class EgressPolicy:
    """Which hosts and kinds of address the engine may reach.

    ``allowed_hosts``: host names (lower case) a base URL may name. ``allow_loopback``: this
    machine (``localhost``, ``127.0.0.0/8``, ``::1``) may be named and reached, over plain
    http too; for tests and for a Chorus chained to another on the same machine.
    ``allow_private``: an allowed host may resolve to a private-network address (RFC 1918,
    unique-local IPv6, carrier-grade NAT). Link-local (``169.254.0.0/16``: cloud metadata),
    multicast, reserved and unspecified addresses are never reached.
    """

    allowed_hosts: frozenset[str] = field(default_factory=lambda: frozenset(OFFICIAL_HOSTS))
    allow_loopback: bool = False
    allow_private: bool = False

    @classmethod
    def build(
        cls, hosts: Iterable[str], *, allow_loopback: bool = False, allow_private: bool = False
    ) -> EgressPolicy:
        names = frozenset(_host_name(h) for h in hosts if h and h.strip())
        return cls(allowed_hosts=names, allow_loopback=allow_loopback, allow_private=allow_private)

    def allowed_list(self) -> str:
        return ", ".join(sorted(self.allowed_hosts)) or "none"

    # --- Save time -----------------------------------------------------------------------

    def url_problem(self, url: str) -> str | None:
        """Why ``url`` cannot be a base URL (a sentence for the form), or None when it can."""
        try:
            parts = urlsplit(url.strip())
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            return "This is not a valid address."
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            return "Leave the user name and password out of the address."
        host = parts.hostname or ""
        if not host:
            return "The address needs a host name."
        if parts.scheme not in ("http", "https"):
            return "Use an https:// address."
        if parts.query or parts.fragment:
            return "A base URL has no query string or fragment."
        if _is_local(host):
            if not self.allow_loopback:
                return (
                    "Addresses on this server (localhost, 127.0.0.1, ::1) are not allowed. "
                    f"Allowed hosts: {self.allowed_list()}."
                )
            return None
        if parts.scheme != "https":
            return (
                "Use an https:// address (plain http:// only for this machine, where the "
                "administrator allows it), so the key never travels in clear text."
            )
        if _host_name(host) not in self.allowed_hosts:
            return (
                f"This server's administrator allows these API hosts only: {self.allowed_list()}."
            )
        ip = _ip(host)
        problem = self.address_problem(ip) if ip is not None else None
        if problem:
            return f"{host} is {problem}, which this server does not connect to."
        return None

    # --- Connect time --------------------------------------------------------------------

    def address_problem(self, address: Address | str) -> str | None:
        """Why the engine may not connect to ``address``, or None when it may."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        ip = _embedded_v4(ip) or ip
        if ip.is_loopback:
            return None if self.allow_loopback else "an address on this server"
        if ip.is_link_local:
            return "a link-local address"
        if ip.is_multicast:
            return "a multicast address"
        if ip.is_unspecified:
            return "an unspecified address"
        if ip.is_reserved:
            return "a reserved address"
        if ip.is_global and not (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED):
            return None
        return None if self.allow_private else "a private-network address"

    def check_name(self, host: str) -> None:
        """Refuse a host off the allow-list (``EgressRefused``), before anything resolves it.

        Checked on every connection too: a base URL saved before the allow-list existed, or
        written to the database some other way, is refused here.
        """
        name = _host_name(host)
        if _is_local(name):
            if not self.allow_loopback:
                raise EgressRefused(_refusal(name, "an address on this server"))
        elif name not in self.allowed_hosts:
            raise EgressRefused(
                f"The engine's host {name} is not on this server's list of allowed API hosts "
                f"({self.allowed_list()}). An owner can change it under Settings → Engine."
            )

    def check_addresses(self, host: str, addresses: Iterable[str]) -> list[str]:
        """``addresses`` (what ``host`` resolved to), every one checked; raises
        ``EgressRefused`` when any of them is refused."""
        name = _host_name(host)
        checked = list(dict.fromkeys(addresses))
        if not checked:
            raise EgressRefused(f"The engine's host {name} did not resolve to any address.")
        for address in checked:
            problem = self.address_problem(address)
            if problem:
                raise EgressRefused(_refusal(name, problem))
        return checked

    def resolve(self, host: str, port: int) -> list[str]:
        """The checked addresses of ``host`` (blocking): its name, then every address."""
        self.check_name(host)
        literal = _ip(host)
        if literal is not None:
            return self.check_addresses(host, [str(literal)])
        try:
            infos = socket.getaddrinfo(_host_name(host), port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpx.ConnectError(f"Could not resolve the engine's host: {exc}") from exc
        return self.check_addresses(host, [info[4][0] for info in infos])

    async def aresolve(self, host: str, port: int) -> list[str]:
        """``resolve`` for async callers: the lookup runs off the event loop."""
        self.check_name(host)
        literal = _ip(host)
        if literal is not None:
            return self.check_addresses(host, [str(literal)])
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(_host_name(host), port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpx.ConnectError(f"Could not resolve the engine's host: {exc}") from exc
        return self.check_addresses(host, [info[4][0] for info in infos])


def _refusal(host: str, problem: str) -> str:
    return (
        f"The engine's host {host} resolves to {problem}, which this server does not connect "
        "to. An owner can change the base URL under Settings → Engine."
    )


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _pinned(request: httpx.Request, address: str) -> httpx.Request:
    """The request sent to ``address``: same Host header, TLS still checks the host name."""
    host = request.url.host
    request.url = request.url.copy_with(host=address)
    request.extensions = {**request.extensions, "sni_hostname": host}
    return request


# Connections kept open to the upstream: httpx keeps 20, so a process streaming more at once
# opened (and closed) a connection for every request past the 20th.
UPSTREAM_LIMITS = httpx.Limits(
    max_connections=512, max_keepalive_connections=256, keepalive_expiry=30.0
)


class GuardedNetworkBackend(httpcore.NetworkBackend):
    """httpcore's network for a connection pool: a TCP connection to a checked address only."""

    def __init__(self, policy: EgressPolicy, inner: httpcore.NetworkBackend | None = None):
        self.policy = policy
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self, host, port, timeout=None, local_address=None, socket_options=None
    ) -> httpcore.NetworkStream:
        try:
            addresses = self.policy.resolve(host, port)
        except httpx.ConnectError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        for index, address in enumerate(addresses):
            try:
                return self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                if index == len(addresses) - 1:
                    raise  # otherwise try the host's next address
        raise AssertionError("unreachable")  # pragma: no cover

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("The engine is reached over TCP only.")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class AsyncGuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """``GuardedNetworkBackend`` for async connection pools (the lookup runs off the loop)."""

    def __init__(self, policy: EgressPolicy, inner: httpcore.AsyncNetworkBackend | None = None):
        self.policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host, port, timeout=None, local_address=None, socket_options=None
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.policy.aresolve(host, port)
        except httpx.ConnectError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        for index, address in enumerate(addresses):
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                if index == len(addresses) - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("The engine is reached over TCP only.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _pool_options(limits: httpx.Limits) -> dict:
    # As httpx.HTTPTransport builds its pool, without proxies (their resolving is unchecked).
    return {
        "ssl_context": httpx.create_ssl_context(trust_env=False),
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
    }


class _LinearPool:
    """httpcore's pool bookkeeping, linear in its connections (a mixin for both pools).

    httpcore (1.0) runs ``_assign_requests_to_connections`` whenever a request starts or
    ends. There, for each idle connection it counts every connection again (quadratic in a
    busy pool) and it asks each connection whether it expired, which for an idle one polls
    its socket (did the server hang up?): with a few dozen streams in flight this was a fifth
    of a proxied stream's CPU. Here the same decisions are taken in one pass: a connection is
    reused only after it was checked (keep-alive not over, socket not hung up) right then;
    the other idle ones are checked, and closed if expired, at most once a second.
    """

    _SWEEP_EVERY = 1.0
    _next_sweep = 0.0

    def _assign_requests_to_connections(self):
        closing = []
        connections = self._connections
        now = time.monotonic()
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + self._SWEEP_EVERY
        for connection in list(connections):
            if connection.is_closed():
                connections.remove(connection)
            elif sweep and connection.is_idle() and connection.has_expired():
                connections.remove(connection)
                closing.append(connection)
        # Surplus idle connections, as httpcore decides it (while the pool holds more than
        # max_keepalive_connections, an idle one is closed).
        if len(connections) > self._max_keepalive_connections:
            for connection in [c for c in connections if c.is_idle()]:
                if len(connections) <= self._max_keepalive_connections:
                    break
                connections.remove(connection)
                closing.append(connection)
        for pool_request in [request for request in self._requests if request.is_queued()]:
            origin = pool_request.request.url.origin
            chosen = None
            for connection in list(connections):
                if not (connection.can_handle_request(origin) and connection.is_available()):
                    continue
                if connection.is_idle() and connection.has_expired():
                    connections.remove(connection)
                    closing.append(connection)
                    continue
                chosen = connection
                break
            if chosen is None:
                if len(connections) >= self._max_connections:
                    idle = next((c for c in connections if c.is_idle()), None)
                    if idle is None:
                        continue  # it waits for a connection to come free
                    connections.remove(idle)
                    closing.append(idle)
                chosen = self.create_connection(origin)
                connections.append(chosen)
            pool_request.assign_to_connection(chosen)
        return closing


class _ConnectionPool(_LinearPool, httpcore.ConnectionPool):
    pass


class _AsyncConnectionPool(_LinearPool, httpcore.AsyncConnectionPool):
    pass


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over a pool whose connections go to checked addresses only.

    It ignores proxy environment variables: a proxy would do its own resolving, unchecked.
    With an ``inner`` transport (tests), each request is resolved, checked and pinned.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        inner: httpx.BaseTransport | None = None,
        *,
        limits: httpx.Limits = UPSTREAM_LIMITS,
    ):
        # (httpx.HTTPTransport.__init__ only builds ``_pool``: built here with the backend.)
        self.policy = policy
        self._inner = inner
        self._pool = _ConnectionPool(
            network_backend=GuardedNetworkBackend(policy), **_pool_options(limits)
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            return super().handle_request(request)
        addresses = self.policy.resolve(request.url.host, _port(request.url))
        url = request.url
        for index, address in enumerate(addresses):
            try:
                return self._inner.handle_request(_pinned(request, address))
            except httpx.ConnectError:
                if index == len(addresses) - 1:
                    raise  # otherwise try the host's next address
            finally:
                request.url = url  # sent by now: the request shows the URL it was made for
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
        super().close()


class AsyncGuardedTransport(httpx.AsyncHTTPTransport):
    """``GuardedTransport`` for ``httpx.AsyncClient``."""

    def __init__(
        self,
        policy: EgressPolicy,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        limits: httpx.Limits = UPSTREAM_LIMITS,
    ):
        self.policy = policy
        self._inner = inner
        self._pool = _AsyncConnectionPool(
            network_backend=AsyncGuardedNetworkBackend(policy), **_pool_options(limits)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            return await super().handle_async_request(request)
        addresses = await self.policy.aresolve(request.url.host, _port(request.url))
        url = request.url
        for index, address in enumerate(addresses):
            try:
                return await self._inner.handle_async_request(_pinned(request, address))
            except httpx.ConnectError:
                if index == len(addresses) - 1:
                    raise
            finally:
                request.url = url
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
        await super().aclose()


def checked_socket(
    policy: EgressPolicy, host: str, port: int, *, timeout: float | None
) -> socket.socket:
    """A TCP socket connected to a checked address of ``host`` (for the realtime websocket)."""
    try:
        addresses = policy.resolve(host, port)
    except httpx.ConnectError as exc:
        raise OSError(str(exc)) from exc
    error: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            error = exc
        else:
            sock.settimeout(None)  # the timeout was for connecting; reads block as usual
            return sock
    assert error is not None
    raise error
