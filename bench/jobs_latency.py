"""How fast background jobs start and how fast their progress reaches a browser socket.

Starts a real Daphne server and a real Celery worker on the configured database and broker
(embedded defaults in a throwaway folder unless DATABASE_URL / REDIS_URL are set), runs
workspace-export jobs one after another while a websocket client watches each, and prints:

- queue wait: job row created → a worker marked it running
- run time: running → succeeded (a small workspace export)
- push latency: the worker wrote "succeeded" → the websocket client received it

    .venv/bin/python bench/jobs_latency.py [--jobs 30]
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if not os.environ.get("DATABASE_URL"):
    os.environ.setdefault("CHORUS_VAR_DIR", tempfile.mkdtemp(prefix="chorus-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")
os.environ.setdefault("CHORUS_QUEUE", f"chorus-bench-{os.getpid()}")
os.environ.setdefault("CHORUS_CHANNEL_PREFIX", f"chorus-bench-{os.getpid()}")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from apps.jobs import services  # noqa: E402
from apps.jobs.models import Job  # noqa: E402
from apps.workspaces.models import User, Workspace  # noqa: E402
from apps.workspaces.services import workspace_create  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def spawn(args):
    return subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    user = User.objects.create_user(email=f"bench-{os.getpid()}@example.com", password="x" * 12)
    workspace = workspace_create(name=f"Bench {os.getpid()}", owner=user)
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    port = free_port()
    py = sys.executable
    web = spawn([py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                 "studio_site.asgi:application"])  # fmt: skip
    worker = spawn([py, "-m", "celery", "-A", "studio_site", "worker", "--pool", "solo",
                    "--without-mingle", "--without-gossip", "--loglevel", "WARNING"])  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("Daphne did not start") from None
                time.sleep(0.2)

        waits, runs, pushes = [], [], []
        for n in range(args.jobs + 1):  # the first job warms the worker up and is not counted
            job = Job.objects.create(
                workspace=workspace, kind="workspace_export", created_by=user,
                celery_task_id=f"bench-{os.getpid()}-{n}",
            )  # fmt: skip
            with connect(
                f"ws://127.0.0.1:{port}/ws/jobs/{job.pk}/",
                additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
            ) as ws:
                json.loads(ws.recv(timeout=10))
                services._enqueue(job)
                while True:
                    event = json.loads(ws.recv(timeout=60))
                    if event["finished"]:
                        received = datetime.now(UTC)
                        break
            job.refresh_from_db()
            if job.status != "succeeded":
                raise SystemExit(f"job {job.pk} ended {job.status}: {job.error}")
            if n == 0:
                continue
            waits.append((job.started_at - job.created_at).total_seconds() * 1000)
            runs.append((job.finished_at - job.started_at).total_seconds() * 1000)
            pushes.append((received - job.finished_at).total_seconds() * 1000)
    finally:
        for proc in (web, worker):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        Workspace.objects.filter(pk=workspace.pk).delete()
        user.delete()

    broker = "redis" if settings.REDIS_URL else "filesystem (embedded)"
    layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"jobs: {len(runs)}  database: {db}  broker: {broker}  channel layer: {layer}")
    for name, values in (("queue wait", waits), ("run time", runs), ("push latency", pushes)):
        print(
            f"{name:>13}: p50 {statistics.median(values):7.1f} ms   "
            f"p95 {pct(values, 95):7.1f} ms   max {max(values):7.1f} ms"
        )


if __name__ == "__main__":
    main()
