"""Shared fixtures: the role cast of a workspace, clients signed in as each, and real servers.

``live_env`` describes how subprocesses reach the test database; ``celery_worker`` and
``daphne_server`` start a real Celery worker and a real Daphne server on it.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from apps.workspaces.models import Role

from .factories import add_member, make_user, make_workspace

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"


# --- The cast ---------------------------------------------------------------------------


@pytest.fixture
def owner(db):
    return make_user("owner@example.com", name="Olive Owner")


@pytest.fixture
def workspace(owner):
    return make_workspace("Acme audio", owner=owner)


@pytest.fixture
def manager(workspace):
    user = make_user("manager@example.com", name="Max Manager")
    add_member(workspace, user, Role.MANAGER)
    return user


@pytest.fixture
def member(workspace):
    user = make_user("member@example.com", name="Mia Member")
    add_member(workspace, user, Role.MEMBER)
    return user


@pytest.fixture
def viewer(workspace):
    user = make_user("viewer@example.com", name="Vic Viewer")
    add_member(workspace, user, Role.VIEWER)
    return user


@pytest.fixture
def outsider(db):
    """Someone with a workspace of their own, who is not in ``workspace``."""
    user = make_user("outsider@example.com", name="Otto Outsider")
    make_workspace("Elsewhere", owner=user)
    return user


@pytest.fixture
def client_as():
    """``client_as(user)`` → a test client signed in as ``user`` (None: anonymous)."""

    def make(user=None, **headers):
        client = Client(**headers)
        if user is not None:
            client.force_login(user)
        return client

    return make


HTMX = {"HTTP_HX_REQUEST": "true"}


# --- Real servers -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _db_url() -> str:
    """The URL of the test database as the subprocesses must open it."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    return f"postgres://{auth}@{s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture
def live_env(transactional_db):
    """Environment for subprocesses: test settings on the test database, quick heartbeats."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="studio_site.settings_test",
        DATABASE_URL=_db_url(),
        CHORUS_JOB_HEARTBEAT_SECONDS="0.5",
        CHORUS_JOB_RETRY_BASE_SECONDS="0.2",
        # Servers and workers reach fake upstreams and other instances on 127.0.0.1 (the test
        # settings opt in too; said here so a subprocess never depends on inheriting it).
        CHORUS_ENGINE_ALLOW_LOOPBACK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Proc:
    popen: subprocess.Popen
    log: Path

    def stop(self, sig=signal.SIGTERM, timeout=15) -> int | None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def spawn(args, *, env, log: Path) -> Proc:
    handle = log.open("wb")
    popen = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    return Proc(popen=popen, log=log)


def wait_until(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def start_worker(live_env, tmp_path):
    """``start_worker()`` → a real Celery worker process (solo pool) on the test broker."""
    procs = []

    def start(name: str = "worker") -> Proc:
        proc = spawn(
            [
                sys.executable, "-m", "celery", "-A", "studio_site", "worker",
                "--pool", "solo", "--loglevel", "INFO", "--without-mingle",
                "--without-gossip", "--hostname", f"{name}-{len(procs)}@%h",
            ],
            env=live_env,
            log=tmp_path / f"{name}-{len(procs)}.log",
        )  # fmt: skip
        procs.append(proc)
        wait_until(
            lambda: "ready." in proc.output() or proc.popen.poll() is not None,
            timeout=60,
            what="the Celery worker to start",
        )
        assert proc.popen.poll() is None, proc.output()
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def celery_worker(start_worker):
    return start_worker()


@dataclass
class LiveServer:
    url: str
    port: int
    proc: Proc


@pytest.fixture
def daphne_server(live_env, tmp_path):
    """A real Daphne server (HTTP + websockets) on the test database."""
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "studio_site.server", "-b", "127.0.0.1", "-p", str(port),
         "studio_site.asgi:application"],
        env=live_env,
        log=tmp_path / "daphne.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers():
        if proc.popen.poll() is not None:
            raise AssertionError(f"Daphne exited:\n{proc.output()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False

    wait_until(answers, timeout=60, interval=0.2, what="Daphne to answer /healthz")
    yield LiveServer(url=url, port=port, proc=proc)
    proc.stop()


def session_cookie_for(user) -> str:
    """A session cookie value that signs ``user`` in on a live server."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


# --- Order: the longest files first -------------------------------------------------------

# ``make test`` hands whole files to its workers (``--dist loadfile``) in collection order. A
# long file collected last runs alone at the end while the other worker idles; these run
# first instead (measured: each takes 60-120 s), then the other files that start servers,
# workers or a browser, then the rest — the short files fill in at the end.
LONGEST_FIRST = (
    "tests/gateway/test_schemathesis_fuzz.py",
    "tests/test_make_run.py",
    "tests/e2e/test_sidebar_walk.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        if path in LONGEST_FIRST:
            return LONGEST_FIRST.index(path)
        slow = item.get_closest_marker("slow") or item.get_closest_marker("e2e")
        return len(LONGEST_FIRST) + (0 if slow or path.startswith("tests/e2e/") else 1)

    # Whole files move together (a file's rank is its slowest item's), in their own order.
    ranks: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        ranks[path] = min(ranks.get(path, 99), rank(item))
    items.sort(key=lambda item: ranks[item.nodeid.split("::", 1)[0]])
