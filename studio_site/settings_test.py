"""Test settings: the real settings, with fast password hashing and a file-backed test DB.

Servers and workers that tests start in subprocesses use these settings too (they inherit the
environment set below), with ``DATABASE_URL`` pointing at the test database.
"""

import os
import tempfile
import uuid

# One queue, broker folder and channel prefix per test run, shared with the subprocesses the
# tests start (they inherit os.environ), so parallel runs and a running studio never mix.
_run = os.environ.setdefault("CHORUS_TEST_RUN", uuid.uuid4().hex[:10])
os.environ.setdefault("CHORUS_QUEUE", f"chorus-test-{_run}")
os.environ.setdefault("CHORUS_CHANNEL_PREFIX", f"chorus-test-{_run}")
os.environ.setdefault("CHORUS_CACHE_PREFIX", f"chorus-test-{_run}")
os.environ.setdefault(
    "CHORUS_BROKER_DIR", os.path.join(tempfile.gettempdir(), f"chorus-test-broker-{_run}")
)

from .settings import *  # noqa: E402, F403
from .settings import CHORUS_JOB_KINDS, DATABASE_URL, DATABASES, VAR_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

if not DATABASE_URL:
    # A file, not :memory:, so a Daphne server and a Celery worker started by the tests can
    # open the same test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-chorus.sqlite3")}

# Kinds used only by the tests (a slow job to kill, a flaky job to retry, a broken job).
CHORUS_JOB_KINDS = {
    **CHORUS_JOB_KINDS,
    "test_sleep": "tests.jobs.kinds.sleep_run",
    "test_flaky": "tests.jobs.kinds.flaky_run",
    "test_broken": "tests.jobs.kinds.broken_run",
}
