"""Blocking conversation work off the event loop, on threads of the agents' own.

Opening, starting and ending a session block for seconds (models loading, the first message
spoken, the provider's socket opened with retries, the LLM's last answer joined, files
written). Through ``database_sync_to_async`` that work would run on asgiref's one
process-wide thread, which every other socket's authentication also waits for: one member's
End would freeze every socket of the process. Here it runs on a pool of its own, and each call
closes the database connections it opened (a pool thread lives on).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.db import connections

MAX_THREADS = 64  # conversations starting, ending or waiting for events at the same time
_executor = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="agent-session")


def _closing(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()  # this thread's own

    return run


async def in_thread(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the agents' pool (its database connections closed after)."""
    return await sync_to_async(_closing(fn), thread_sensitive=False, executor=_executor)(
        *args, **kwargs
    )


async def waiting(fn, *args, **kwargs):
    """``fn`` on the agents' pool without touching the database (a session's ``wait``)."""
    return await sync_to_async(fn, thread_sensitive=False, executor=_executor)(*args, **kwargs)
