"""Test settings: the real settings, with fast password hashing and a file-backed test DB.

Servers and workers that tests start in subprocesses use these settings too, with
``DATABASE_URL`` pointing at the test database.
"""

from .settings import *  # noqa: F403
from .settings import DATABASE_URL, DATABASES, VAR_DIR

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

if not DATABASE_URL:
    # A file, not :memory:, so a Daphne server and a Celery worker started by the tests can
    # open the same test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-chorus.sqlite3")}

# Kinds used only by the tests (a slow job to kill, a flaky job to retry).
CHORUS_JOB_KINDS = {
    **CHORUS_JOB_KINDS,  # noqa: F405
    "test_sleep": "tests.jobs.kinds.sleep_run",
    "test_flaky": "tests.jobs.kinds.flaky_run",
    "test_broken": "tests.jobs.kinds.broken_run",
}
