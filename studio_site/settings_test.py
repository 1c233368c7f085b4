"""Test settings: the real settings, with fast password hashing and a file-backed test DB.

Servers and workers that tests start in subprocesses use these settings too (they inherit the
environment set below), with ``DATABASE_URL`` pointing at the test database.
"""

import os
import tempfile
import uuid

# One queue, broker folder and channel prefix per test run, shared with the subprocesses the
# tests start (they inherit os.environ), so parallel runs and a running studio never mix.
# Each pytest-xdist worker is a run of its own: it inherits the controller's values, so it
# drops them once (the servers and workers it starts inherit its own, and keep them).
_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if os.environ.get("CHORUS_TEST_WORKER", "") != _xdist_worker:
    for _name in (
        "CHORUS_TEST_RUN",
        "CHORUS_QUEUE",
        "CHORUS_CHANNEL_PREFIX",
        "CHORUS_CACHE_PREFIX",
        "CHORUS_BROKER_DIR",
    ):
        os.environ.pop(_name, None)
    os.environ["CHORUS_TEST_WORKER"] = _xdist_worker
_run = os.environ.setdefault("CHORUS_TEST_RUN", uuid.uuid4().hex[:10] + _xdist_worker)
os.environ.setdefault("CHORUS_QUEUE", f"chorus-test-{_run}")
os.environ.setdefault("CHORUS_CHANNEL_PREFIX", f"chorus-test-{_run}")
os.environ.setdefault("CHORUS_CACHE_PREFIX", f"chorus-test-{_run}")
# The servers and workers the tests start run as a developer's would: DEBUG on (which also
# lets them use a generated SECRET_KEY and loopback hosts with DATABASE_URL set, as CI does).
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault(
    "CHORUS_BROKER_DIR", os.path.join(tempfile.gettempdir(), f"chorus-test-broker-{_run}")
)
# The tests chain Chorus to another Chorus, or to a fake upstream, on 127.0.0.1: they opt in
# to loopback engine addresses (off by default). Tests of the guard turn it off again.
os.environ.setdefault("CHORUS_ENGINE_ALLOW_LOOPBACK", "1")

from .settings import *  # noqa: E402, F403
from .settings import CHORUS_JOB_KINDS, DATABASE_URL, DATABASES, VAR_DIR  # noqa: E402

# In-process jobs run inside the test's transaction, which other threads cannot see: a
# project render speaks one block at a time here (a test that wants more asks for them).
CHORUS_PROJECT_RENDER_THREADS = 1

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

if not DATABASE_URL:
    # A file, not :memory:, so a Daphne server and a Celery worker started by the tests can
    # open the same test database. One file per run, so runs side by side never share one.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-chorus-{_run}.sqlite3")}

# Kinds used only by the tests (a slow job to kill, a flaky job to retry, a broken job).
CHORUS_JOB_KINDS = {
    **CHORUS_JOB_KINDS,
    "test_sleep": "tests.jobs.kinds.sleep_run",
    "test_flaky": "tests.jobs.kinds.flaky_run",
    "test_broken": "tests.jobs.kinds.broken_run",
}
