"""How many blocks a project render speaks at once. No model is imported here: the Celery
worker reads it at start-up, before the apps are loaded (``studio_site/celery.py``)."""

import os

from django.conf import settings
from django.db import connection


def render_threads() -> int:
    """``CHORUS_PROJECT_RENDER_THREADS``, else one per core (at most 4; the local engine's
    synthesis leaves the interpreter lock while it computes), and one on SQLite, whose single
    writer would only make the others wait."""
    configured = getattr(settings, "CHORUS_PROJECT_RENDER_THREADS", 0)
    if configured:
        return max(1, int(configured))
    if connection.vendor == "sqlite":
        return 1
    return max(1, min(4, os.cpu_count() or 1))
