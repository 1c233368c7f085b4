"""The per-member cap on concurrent billable /v1 calls (``CHORUS_API_MAX_CONCURRENT``).

Over the cap a call is refused with 429 ``too_many_concurrent_requests`` before anything is
reserved; every response of a capped endpoint says ``current-concurrent-requests`` and
``maximum-concurrent-requests``; a stream holds its slot until it ends or the client goes
away. The counter itself (its TTL safety net, its clamp at zero) is tested on locmem and,
when a ``redis-server`` binary is at hand, on a real Redis.
"""

import os
import shutil
import subprocess
import time

import httpx
import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings

from apps.billing.models import UsageEvent
from apps.gateway import concurrency, services
from apps.workspaces.services import engine_settings_update
from tests.conftest import free_port, wait_until
from tests.gateway import test_api_faults as faults
from tests.gateway.test_api_faults import (
    AUDIO,
    UPSTREAM_KEY,
    FakeElevenLabs,
    audio_reply,
    body_of,
    post_speech,
)

# The faults module's fixtures: a workspace on the ElevenLabs engine, a scripted upstream.
upstream, on_elevenlabs, issued = faults.upstream, faults.on_elevenlabs, faults.issued

VOICE = "21m00Tcm4TlvDq8ikWAM"
TEXT = "Two at a time, please."


@pytest.fixture(autouse=True)
def _fresh_counters():
    caches["default"].clear()
    yield
    caches["default"].clear()


def hold(issued, n: int, maximum: int = 2) -> list[concurrency.Slot]:
    """``n`` slots of the key's member, as calls in flight elsewhere would hold them."""
    key = issued.api_key
    return [
        concurrency.acquire(workspace_id=key.workspace_id, user_id=key.user_id, maximum=maximum)
        for _ in range(n)
    ]


def assert_refused(response, *, current: int, maximum: int):
    assert response.status_code == 429
    detail = response.json()["detail"]
    assert (detail["type"], detail["code"], detail["status"]) == (
        "rate_limit_error",
        "too_many_concurrent_requests",
        "too_many_concurrent_requests",
    )
    assert f"at most {maximum} " in detail["message"]
    assert detail["request_id"] == response["request-id"]
    assert response["current-concurrent-requests"] == str(current)
    assert response["maximum-concurrent-requests"] == str(maximum)


# --- In process: the test client ---------------------------------------------------------


@override_settings(CHORUS_API_MAX_CONCURRENT=2)
def test_a_call_over_the_cap_is_refused_before_any_reservation_and_served_once_a_slot_frees(
    upstream, issued, client
):
    upstream(audio_reply("up-1", "22", AUDIO), audio_reply("up-2", "22", AUDIO))
    served = post_speech(client, issued, "")
    assert served.status_code == 200
    assert (served["current-concurrent-requests"], served["maximum-concurrent-requests"]) == (
        "1",
        "2",
    )
    assert UsageEvent.objects.count() == 1

    busy = hold(issued, 2)
    refused = post_speech(client, issued, "")
    assert_refused(refused, current=2, maximum=2)
    assert UsageEvent.objects.count() == 1  # no reservation, no refund: no row at all

    busy[0].release()
    again = post_speech(client, issued, "")
    assert again.status_code == 200
    assert again["current-concurrent-requests"] == "2"  # this call and the one still held
    assert UsageEvent.objects.count() == 2
    # A whole answer gives its slot back once made: only the one held here is still taken.
    hold(issued, 1)
    with pytest.raises(concurrency.TooManyConcurrent):
        hold(issued, 1)


@override_settings(CHORUS_API_MAX_CONCURRENT=2)
def test_a_stream_holds_its_slot_until_it_is_read_to_the_end(upstream, issued, client):
    upstream(audio_reply("up-1", "22", AUDIO[:100], AUDIO[100:]))
    hold(issued, 1)
    stream = post_speech(client, issued, "/stream")
    assert stream.status_code == 200 and stream.streaming
    assert stream["current-concurrent-requests"] == "2"
    with pytest.raises(concurrency.TooManyConcurrent):
        hold(issued, 1)  # the open stream holds the second slot
    assert body_of(stream) == AUDIO  # drained: Django closes the response
    assert hold(issued, 1)[0].current == 2


@override_settings(CHORUS_API_MAX_CONCURRENT=2)
def test_uncapped_endpoints_and_the_dubbing_list_carry_no_concurrency_headers(issued, client):
    hold(issued, 2)  # the member is at the cap, and that does not matter here
    for path in ("/v1/voices/settings/default", "/v1/user", "/v1/dubbing"):
        response = client.get(path, headers={"xi-api-key": issued.raw})
        assert response.status_code == 200, (path, response.content)
        assert "current-concurrent-requests" not in response
    refused = client.post("/v1/dubbing", headers={"xi-api-key": issued.raw})
    assert_refused(refused, current=2, maximum=2)


def test_a_cap_of_zero_counts_nothing_and_refuses_nothing(upstream, issued, client):
    upstream(audio_reply("up-1", "22", AUDIO))
    hold(issued, 2)
    with override_settings(CHORUS_API_MAX_CONCURRENT=2):
        assert_refused(post_speech(client, issued, ""), current=2, maximum=2)
    with override_settings(CHORUS_API_MAX_CONCURRENT=0):
        response = post_speech(client, issued, "")
    assert response.status_code == 200
    assert "current-concurrent-requests" not in response
    assert "maximum-concurrent-requests" not in response
    assert UsageEvent.objects.count() == 1


def test_the_cap_is_per_member(upstream, issued, workspace, owner, client):
    upstream(audio_reply("up-1", "22", AUDIO))
    hold(issued, 2)
    other = services.api_key_create(workspace=workspace, user=owner, name="Owner's")
    with override_settings(CHORUS_API_MAX_CONCURRENT=2):
        response = post_speech(client, other, "")
    assert response.status_code == 200
    assert response["current-concurrent-requests"] == "1"


# --- The counter --------------------------------------------------------------------------


def counter_checks():
    """Cap, release, TTL expiry and the clamp at zero, on whatever cache is configured."""
    take = lambda: concurrency.acquire(workspace_id=7, user_id=9, maximum=2, ttl=1)  # noqa: E731
    first, second = take(), take()
    assert (first.current, second.current) == (1, 2)
    with pytest.raises(concurrency.TooManyConcurrent) as refused:
        take()
    assert (refused.value.slot.current, refused.value.slot.maximum) == (2, 2)
    first.release()
    first.release()  # once only
    third = take()
    assert third.current == 2  # the refusal took nothing, the double release gave back one
    with pytest.raises(concurrency.TooManyConcurrent):
        take()
    # Slots whose holder died are forgotten when the counter expires.
    time.sleep(1.3)
    fresh = take()
    assert fresh.current == 1
    # Releases of slots from the expired counter never drive the new one below zero.
    second.release()
    third.release()
    fresh.release()
    assert [take().current, take().current] == [1, 2]
    with pytest.raises(concurrency.TooManyConcurrent):
        take()
    other_member = concurrency.acquire(workspace_id=7, user_id=10, maximum=2, ttl=1)
    assert other_member.current == 1


def test_the_counter_on_locmem():
    counter_checks()


@pytest.fixture
def redis_cache():
    binary = shutil.which("redis-server")
    if binary is None:  # CI has Redis (.ci/run starts it): a missing binary fails there
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed")
        pytest.skip("no redis-server binary")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"

    def up():
        try:
            import redis

            return redis.Redis.from_url(url).ping()
        except Exception:
            return False

    try:
        wait_until(up, timeout=10, what="redis-server to answer")
        backend = "django.core.cache.backends.redis.RedisCache"
        with override_settings(CACHES={"default": {"BACKEND": backend, "LOCATION": url}}):
            yield caches["default"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_counter_on_redis_is_one_round_trip_each_way_and_has_a_ttl(redis_cache):
    counter_checks()
    location = settings.CACHES["default"]["LOCATION"]
    client = concurrency._redis(location)[0]
    key = redis_cache.make_and_validate_key(concurrency.KEY.format(workspace=7, user=9))
    assert client.get(key) == b"2"
    assert 0 < client.ttl(key) <= 1  # never a counter without an expiry
    calls = []
    original = type(client).execute_command

    def counting(self, *args, **options):
        calls.append(args[0])
        return original(self, *args, **options)

    type(client).execute_command = counting
    try:
        for _ in range(3):
            slot = concurrency.acquire(workspace_id=1, user_id=1, maximum=5)
            slot.release()
    finally:
        type(client).execute_command = original
    assert calls == ["EVALSHA", "EVALSHA"] * 3
    # One client (one connection pool) per process, whatever async context asks.
    assert concurrency._redis(location)[0] is client
    assert client.connection_pool._created_connections <= 2


# --- A real Daphne, a slow upstream --------------------------------------------------------


@pytest.fixture
def capped_server(live_env, request):
    live_env["CHORUS_API_MAX_CONCURRENT"] = "2"
    return request.getfixturevalue("daphne_server")


@pytest.mark.slow
def test_two_open_streams_fill_a_cap_of_two_until_one_hangs_up_and_one_ends(
    capped_server, workspace, owner, member
):
    with FakeElevenLabs(chunks=25, chunk_bytes=4000, interval=0.2) as fake:
        engine_settings_update(
            workspace=workspace, actor=owner, kind="elevenlabs", api_key=UPSTREAM_KEY,
            base_url=fake.url,
        )  # fmt: skip
        issued = services.api_key_create(workspace=workspace, user=member, name="Capped")
        headers = {"xi-api-key": issued.raw}
        url = f"{capped_server.url}/v1/text-to-speech/{VOICE}"
        log = capped_server.proc.output

        def whole():
            return httpx.post(url, json={"text": TEXT}, headers=headers, timeout=30)

        with httpx.Client(timeout=30) as first_client, httpx.Client(timeout=30) as second_client:
            first = first_client.send(
                first_client.build_request("POST", f"{url}/stream", json={"text": TEXT},
                                           headers=headers),
                stream=True,
            )  # fmt: skip
            second = second_client.send(
                second_client.build_request("POST", f"{url}/stream", json={"text": TEXT},
                                            headers=headers),
                stream=True,
            )  # fmt: skip
            assert (first.status_code, second.status_code) == (200, 200), log()
            assert sorted(r.headers["current-concurrent-requests"] for r in (first, second)) == [
                "1",
                "2",
            ]
            assert {r.headers["maximum-concurrent-requests"] for r in (first, second)} == {"2"}
            assert UsageEvent.objects.count() == 2

            refused = whole()
            assert refused.status_code == 429, log()
            detail = refused.json()["detail"]
            assert (detail["code"], detail["status"], detail["type"]) == (
                "too_many_concurrent_requests",
                "too_many_concurrent_requests",
                "rate_limit_error",
            )
            assert "at most 2 " in detail["message"]
            assert refused.headers["current-concurrent-requests"] == "2"
            assert refused.headers["maximum-concurrent-requests"] == "2"
            assert UsageEvent.objects.count() == 2  # refused before any reservation
            assert len(fake.requests) == 2  # and never reached the provider

            # The first client hangs up mid-stream: its slot comes back.
            next(first.iter_raw())
            first.close()
            first_client.close()
            served = wait_until(
                lambda: (r := whole()).status_code == 200 and r,
                timeout=20,
                what="a slot to come back after the hang-up",
            )
            assert served.headers["current-concurrent-requests"] == "2"  # it + the 2nd stream
            assert served.content == fake.audio

            # The second stream is read to its end: its slot comes back too.
            assert len(b"".join(second.iter_raw())) == 25 * 4000
            second.close()

            def alone():
                r = whole()
                return r.status_code == 200 and r.headers["current-concurrent-requests"] == "1"

            wait_until(alone, timeout=20, what="the finished stream's slot to come back")
        # Every request that was refused reserved nothing: one row per call served.
        served_calls = len(fake.requests)
    assert UsageEvent.objects.count() == served_calls
