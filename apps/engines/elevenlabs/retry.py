"""The one retry policy every ElevenLabs call goes through (HTTP, streams, the realtime socket).

A failed attempt is judged by ``judge()``: it says whether to try again, how long to wait first,
and which typed error to raise when the answer is no.

- Retried: 429 (too many requests or concurrent requests, system busy, or a 429 whose body we
  cannot read), 408, 409, 5xx, and connection errors and timeouts.
- Never retried: quota errors (``quota_exceeded``, on 401, 429 or 400), and any other 4xx.
- Calls that create something (``idempotent=False``: adding a cloned voice, starting a dub,
  saving a designed voice) are only retried when the server cannot have acted on them: a
  connection that was never made (``httpx.ConnectError``, ``ConnectTimeout``, ``PoolTimeout``:
  nothing was sent) and a 429 (refused before any work). After a read timeout, a broken
  connection, a 5xx, a 408 or a 409 the request may have gone through, and a retry could
  create a second voice or dub (and charge for it twice), so the caller gets the error, with
  a note to check before trying again.
- The wait is the server's when it gives one (``retry-after-ms``, ``Retry-After`` in seconds or
  as an HTTP date, ``x-ratelimit-reset`` as seconds or a Unix time), otherwise exponential
  backoff with full jitter: ``rng() * min(max_delay, base_delay * 2**retry)``. A header value
  that is not a finite, non-negative number (``inf``, ``nan``, ``-1``) is ignored.
- A server asking for a wait longer than ``max_server_delay`` is not waited for: the caller gets
  ``RateLimited(retry_after=...)`` at once, so a web request does not hang for minutes.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from apps.engines.base import EngineError, RateLimited, UpstreamUnavailable

from .errors import is_quota, parse_error, to_engine_error

RETRYABLE_STATUSES = frozenset({408, 409, 429})
# A value this large in x-ratelimit-reset is a Unix time, not a number of seconds.
UNIX_TIME_THRESHOLD = 1_000_000_000
# Failures that happen before a request is sent: safe to retry even for calls that create.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
MAY_HAVE_GONE_THROUGH = " The request may have gone through: check before trying again."


@dataclass
class RetryPolicy:
    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_server_delay: float = 60.0
    rng: Callable[[], float] = field(default=random.random)

    def backoff(self, retry: int) -> float:
        """Full-jitter delay before retry number ``retry`` (0 for the first retry)."""
        return self.rng() * self.ceiling(retry)

    def ceiling(self, retry: int) -> float:
        return min(self.max_delay, self.base_delay * 2**retry)


@dataclass
class Verdict:
    retry: bool
    error: EngineError
    delay: float = 0.0


def _seconds(value: str) -> float | None:
    """A header's number, or None when it is not a finite, non-negative number."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def server_delay(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, from the retry headers; None when it says nothing.

    Values that are not finite, non-negative numbers are ignored, as if the header were absent.
    """
    if not headers:
        return None
    now = time.time() if now is None else now
    value = headers.get("retry-after-ms")
    if value is not None:
        millis = _seconds(value)
        if millis is not None:
            return millis / 1000
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        seconds = _seconds(value)
        if seconds is not None:
            return seconds
        try:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - now)
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    value = headers.get("x-ratelimit-reset")
    if value is not None:
        reset = _seconds(value)
        if reset is None:
            return None
        return max(0.0, reset - now) if reset >= UNIX_TIME_THRESHOLD else reset
    return None


def retryable_exception(exc: BaseException, *, idempotent: bool = True) -> bool:
    """Whether an httpx exception may be retried: any transport error for an idempotent call,
    only one from before the request was sent for a call that creates something."""
    if not idempotent:
        return isinstance(exc, NOT_SENT_ERRORS)
    return isinstance(exc, httpx.TransportError)


def judge(
    policy: RetryPolicy,
    attempt: int,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | str = b"",
    reason: str = "",
    exc: BaseException | None = None,
    retryable_exc: bool = True,
    idempotent: bool = True,
    now: float | None = None,
) -> Verdict:
    """Judge failed attempt number ``attempt`` (1-based): an error status, or an exception.

    ``idempotent=False`` marks a call that creates something: its error statuses are only
    retried on 429 (the caller decides ``retryable_exc`` with ``retryable_exception``).
    """
    wait: float | None = None
    if exc is not None or status is None:
        error: EngineError = UpstreamUnavailable(_describe(exc))
        retryable = retryable_exc
        may_have_gone_through = not idempotent and not isinstance(exc, NOT_SENT_ERRORS)
    else:
        upstream = parse_error(status, body, headers, reason)
        wait = server_delay(headers, now=now)
        # A call that creates something is only retried when the server refused it unread.
        retryable = not is_quota(upstream) and (
            (status in RETRYABLE_STATUSES or status >= 500) if idempotent else status == 429
        )
        hint = wait if wait is not None else policy.ceiling(attempt - 1)
        error = to_engine_error(upstream, retry_after=hint if status == 429 else wait)
        may_have_gone_through = not idempotent and (status in (408, 409) or status >= 500)
    if may_have_gone_through:
        error.message += MAY_HAVE_GONE_THROUGH
        error.args = (error.message,)

    if not retryable or attempt > policy.max_retries:
        return Verdict(retry=False, error=error)
    if wait is not None:
        if wait > policy.max_server_delay:
            if not isinstance(error, RateLimited):
                error = RateLimited(
                    error.message,
                    retry_after=wait,
                    request_id=error.request_id,
                    upstream_status=error.upstream_status,
                )
            return Verdict(retry=False, error=error)
        return Verdict(retry=True, error=error, delay=wait)
    return Verdict(retry=True, error=error, delay=policy.backoff(attempt - 1))


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return "ElevenLabs did not answer in time. Try again in a moment."
    return "Could not reach ElevenLabs. Try again in a moment."
