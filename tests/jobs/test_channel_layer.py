"""The Redis channel layer keeps an idle consumer alive: a message that comes after more than
channels_redis' 5 s blocking pop still arrives (redis-py 8 reads with a 5 s socket timeout by
default, which raced the pop and killed idle sockets with a TimeoutError)."""

import asyncio
import os

import pytest
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from tests.conftest import IN_CI

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_url():
    url = os.environ.get("REDIS_URL")
    if not url:
        if IN_CI:
            pytest.fail("CI runs the tests with REDIS_URL set (.ci/run)")
        pytest.skip("REDIS_URL is not set: the embedded setup has no Redis channel layer")
    return url


def test_an_idle_receive_outlives_the_blocking_pop(redis_url):
    layer = RedisChannelLayer(
        hosts=[{"address": redis_url, **settings.CHANNEL_REDIS_OPTIONS}],
        prefix=f"chorus-test-{os.getpid()}",
    )

    async def scenario():
        channel = await layer.new_channel()

        async def later():
            await asyncio.sleep(6.5)  # past the 5 s pop and the old 5 s socket timeout
            await layer.send(channel, {"type": "late.message"})

        sender = asyncio.create_task(later())
        message = await asyncio.wait_for(layer.receive(channel), timeout=20)
        await sender
        await layer.flush()
        return message

    assert asyncio.run(scenario()) == {"type": "late.message"}
