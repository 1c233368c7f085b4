"""``GET /healthz``: does the database, the broker and the channel layer answer?"""

import asyncio
import logging
import os
import time
from pathlib import Path

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_broker() -> None:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise RuntimeError(f"the broker folder {folder} is missing or not writable")
        return
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


async def _channel_roundtrip() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    name = await layer.new_channel("healthz.")
    await layer.send(name, {"type": "healthz.ping"})
    await asyncio.wait_for(layer.receive(name), timeout=2)


def _check_channel_layer() -> None:
    async_to_sync(_channel_roundtrip)()


log = logging.getLogger(__name__)

CHECKS = {
    "database": _check_database,
    "broker": _check_broker,
    "channel_layer": _check_channel_layer,
}


@never_cache
@require_GET
def healthz(request):
    report = {}
    healthy = True
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # any failure is the answer, not a 500
            healthy = False
            # The details (hosts, users) go to the log, not to anonymous callers.
            log.warning("healthz: %s check failed", name, exc_info=True)
            report[name] = {"ok": False, "error": f"{exc.__class__.__name__}: not answering"}
        else:
            report[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": report},
        status=200 if healthy else 503,
    )
