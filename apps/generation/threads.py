"""Database work from async code (a stream served on the event loop), one hop at a time."""

import contextvars

from asgiref.sync import sync_to_async
from django import db

# True while a lean request is served (``gateway.asgi``): its hops go to the shared executor.
lean = contextvars.ContextVar("chorus_lean_request", default=False)


def thread_hop(func):
    """``sync_to_async(func)`` for a view's database work, giving the connection back after.

    Served lean (``gateway.asgi.ApiASGIHandler.handle_lean``), the hop goes to the shared
    executor (no per-request thread exists); served any other way (Django's handler, the
    test client), it is Django's usual thread-sensitive hop, which runs where the caller's
    connection (and a test's transaction) lives. Either way the hop closes its connection
    when done (back to the pool), unless a transaction is open there (a test's), so a stream
    that lasts seconds does not hold one between its hops.
    """

    def hop(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        finally:
            if not db.connection.in_atomic_block:
                db.connection.close()

    return sync_to_async(hop, thread_sensitive=not lean.get())
