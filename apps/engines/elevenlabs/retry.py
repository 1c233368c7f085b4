"""The one retry policy every ElevenLabs call goes through (HTTP, streams, the realtime socket).

A failed attempt is judged by ``judge()``: it says whether to try again, how long to wait first,
and which typed error to raise when the answer is no.

- Retried: 429 (too many requests or concurrent requests, system busy, or a 429 whose body we
  cannot read), 408, 409, 5xx, and connection errors and timeouts.
- Never retried: quota errors (``quota_exceeded``, on 401, 429 or 400), and any other 4xx.
- The wait is the server's when it gives one (``retry-after-ms``, ``Retry-After`` in seconds or
  as an HTTP date, ``x-ratelimit-reset`` as seconds or a Unix time), otherwise exponential
  backoff with full jitter: ``rng() * min(max_delay, base_delay * 2**retry)``.
- A server asking for a wait longer than ``max_server_delay`` is not waited for: the caller gets
  ``RateLimited(retry_after=...)`` at once, so a web request does not hang for minutes.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from apps.engines.base import EngineError, RateLimited, UpstreamUnavailable

from .errors import is_quota, parse_error, to_engine_error

RETRYABLE_STATUSES = frozenset({408, 409, 429})
# A value this large in x-ratelimit-reset is a Unix time, not a number of seconds.
UNIX_TIME_THRESHOLD = 1_000_000_000


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


def server_delay(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, from the retry headers; None when it says nothing."""
    if not headers:
        return None
    now = time.time() if now is None else now
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - now)
    value = headers.get("x-ratelimit-reset")
    if value is not None:
        try:
            reset = float(value)
        except ValueError:
            return None
        return max(0.0, reset - now) if reset >= UNIX_TIME_THRESHOLD else max(0.0, reset)
    return None


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
    now: float | None = None,
) -> Verdict:
    """Judge failed attempt number ``attempt`` (1-based): an error status, or an exception."""
    wait: float | None = None
    if exc is not None or status is None:
        error: EngineError = UpstreamUnavailable(_describe(exc))
        retryable = retryable_exc
    else:
        upstream = parse_error(status, body, headers, reason)
        wait = server_delay(headers, now=now)
        retryable = not is_quota(upstream) and (status in RETRYABLE_STATUSES or status >= 500)
        hint = wait if wait is not None else policy.ceiling(attempt - 1)
        error = to_engine_error(upstream, retry_after=hint if status == 429 else wait)

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
