"""The per-member cap on concurrent billable ``/v1`` calls (ElevenLabs' concurrency limit).

A member (a user in a workspace) may have at most ``CHORUS_API_MAX_CONCURRENT`` generation
calls in flight over the API (0: no cap). One more is refused with 429
``too_many_concurrent_requests`` before anything is reserved. Every response of a capped
call says ``current-concurrent-requests`` (calls in flight, this one included) and
``maximum-concurrent-requests``. A streaming response holds its slot until Django closes it
(the stream completed, failed or the client went away): see ``attach``.

The count lives where every process sees it — Redis when the default cache is Redis
(``REDIS_URL``), the in-process locmem cache otherwise, where the cap is per process — in one
counter key per member (named like a cache key), changed only by atomic increments and
decrements. A call costs two round trips, one to take its slot and one to give it back. On
Redis they go through one client per process: Django's ``caches`` makes a cache object, and
so a connection pool, per async context, which would be a new connection per API call.

The safety net is the key's expiry: the counter is created with a TTL of
``SLOT_TTL_SECONDS`` that later increments do not extend, so slots held by a process that
died (a restart mid-stream) are forgotten at the latest that long after the counter was
created. The price: calls still open when the counter expires are not counted in the next
one, and their releases there are clamped at zero, so for the rest of those calls the
member may run a few more than the cap. That is a bounded, self-healing under-count; a
per-slot key scheme would be exact but needs a round trip per possible slot.
"""

from __future__ import annotations

import contextlib
import functools

from django.conf import settings
from django.core.cache import caches

from .services import ApiRefused

SLOT_TTL_SECONDS = 900
KEY = "chorus:api-concurrency:{workspace}:{user}"

# Redis: take a slot (or see that none is free) and give one back, each in one round trip.
# KEYS[1] the counter; ARGV[1] the cap, ARGV[2] the TTL. A counter that somehow lost its TTL
# gets one back.
_ACQUIRE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return {0, n} end
n = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {1, n}
"""
_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('DECR', KEYS[1])
if n < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
return n
"""


def limit() -> int:
    """The cap on one member's concurrent billable calls (0: none)."""
    return settings.CHORUS_API_MAX_CONCURRENT


class Slot:
    """One admitted call's place under the cap; ``release`` gives it back (once)."""

    def __init__(self, key: str | None, current: int, maximum: int, ttl: int):
        self.key, self.current, self.maximum, self.ttl = key, current, maximum, ttl
        self.released = key is None

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        _release(self.key)

    def headers(self, response) -> None:
        if self.maximum:
            response["current-concurrent-requests"] = str(self.current)
            response["maximum-concurrent-requests"] = str(self.maximum)


class TooManyConcurrent(ApiRefused):
    """429 ``too_many_concurrent_requests``, carrying the counts for the headers."""

    def __init__(self, current: int, maximum: int):
        super().__init__(
            429,
            "too_many_concurrent_requests",
            f"Too many concurrent requests: this member may have at most {maximum} generation "
            f"calls in flight over the API and has {current}. Wait for one to finish, then "
            "try again.",
            kind="rate_limit_error",
        )
        self.slot = Slot(None, current, maximum, 0)


def acquire(*, workspace_id, user_id, maximum: int | None = None, ttl: int | None = None) -> Slot:
    """A slot for one call of this member, or ``TooManyConcurrent`` when all are taken.

    With no cap (``maximum`` 0) nothing is counted and the slot is a no-op.
    """
    maximum = limit() if maximum is None else maximum
    ttl = ttl or SLOT_TTL_SECONDS
    if maximum <= 0:
        return Slot(None, 0, 0, ttl)
    key = KEY.format(workspace=workspace_id, user=user_id)
    admitted, current = _acquire(key, maximum, ttl)
    if not admitted:
        raise TooManyConcurrent(current, maximum)
    return Slot(key, current, maximum, ttl)


def attach(response, slot: Slot | None) -> None:
    """Put the headers on ``response``; give the slot back now, or when a stream closes.

    Django calls a response's ``close()`` once it is done with it: after the last byte of a
    stream, after a failed one and after a client disconnect (ASGI and WSGI alike). Its
    closers are the hook (``_resource_closers``, where Django itself puts the stream's).
    """
    if slot is None:
        return
    slot.headers(response)
    if response.streaming and not slot.released:
        response._resource_closers.append(slot.release)
    else:
        slot.release()


# --- The counter ----------------------------------------------------------------------------


REDIS_BACKEND = "django.core.cache.backends.redis.RedisCache"


@functools.lru_cache(maxsize=8)
def _redis(location: str):
    """One client (one connection pool) per process and Redis URL, and the two scripts."""
    import redis

    client = redis.Redis.from_url(location)
    return client, client.register_script(_ACQUIRE), client.register_script(_RELEASE)


def _on_redis(key: str):
    """``(scripts, full key)`` when the default cache is Redis, else ``None``."""
    config = settings.CACHES["default"]
    if config["BACKEND"] != REDIS_BACKEND:
        return None
    location = config["LOCATION"]
    if not isinstance(location, str):
        location = location[0]
    full_key = f"{config.get('KEY_PREFIX', '')}:{config.get('VERSION', 1)}:{key}"
    return _redis(location.split(",")[0]), full_key


def _acquire(key: str, maximum: int, ttl: int) -> tuple[bool, int]:
    on_redis = _on_redis(key)
    if on_redis is not None:
        (_client, acquire_script, _release_script), full_key = on_redis
        admitted, current = acquire_script(keys=[full_key], args=[maximum, ttl])
        return bool(admitted), int(current)
    cache = caches["default"]
    current = _incr(cache, key, ttl)
    if current > maximum:
        _decr(cache, key)
        return False, current - 1
    return True, current


def _release(key: str) -> None:
    on_redis = _on_redis(key)
    if on_redis is not None:
        (_client, _acquire_script, release_script), full_key = on_redis
        release_script(keys=[full_key])
        return
    _decr(caches["default"], key)


def _incr(cache, key: str, ttl: int) -> int:
    """Increment, creating the counter (with its TTL) when it is missing or expired."""
    for _ in range(3):
        try:
            return cache.incr(key)
        except ValueError:
            if cache.add(key, 1, ttl):
                return 1
    return cache.incr(key)


def _decr(cache, key: str) -> None:
    """Decrement; a counter that expired meanwhile is left alone, and never goes below 0."""
    try:
        current = cache.decr(key)
    except ValueError:
        return
    if current < 0:
        with contextlib.suppress(ValueError):
            cache.incr(key, -current)
