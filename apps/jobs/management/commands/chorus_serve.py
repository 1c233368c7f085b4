"""Run the web server (Daphne: HTTP and websockets) and a Celery worker with beat, together.

Both run in the foreground; Ctrl-C (or SIGTERM) stops both cleanly. If one of them dies,
the other is stopped too, so the studio never runs half-alive.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run Daphne and a Celery worker (with beat) in the foreground; Ctrl-C stops both."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument(
            "--concurrency",
            default=os.environ.get("CHORUS_WORKER_CONCURRENCY", "2"),
            help="Celery worker processes (default 2).",
        )

    def handle(self, *args, host, port, concurrency, **options):
        python = sys.executable
        # Daphne with bodies kept out of memory and judged early (see studio_site.server).
        web = [python, "-m", "studio_site.server", "-b", host, "-p", str(port)]
        if settings.CHORUS_BEHIND_PROXY:
            # Only behind a proxy that sets them: otherwise any client could forge its address.
            web.append("--proxy-headers")
        web.append("studio_site.asgi:application")
        worker = [
            python,
            "-m",
            "celery",
            "-A",
            "studio_site",
            "worker",
            "--beat",
            "--loglevel",
            settings.LOG_LEVEL,
            "--concurrency",
            str(concurrency),
            "--schedule",
            settings.CELERY_BEAT_SCHEDULE_FILENAME,
        ]
        procs = {
            # Own sessions: this process decides when and how the children stop.
            "web": subprocess.Popen(web, start_new_session=True),
            "worker": subprocess.Popen(worker, start_new_session=True),
        }
        stopping = False

        def stop(signum=None, frame=None):
            nonlocal stopping
            if stopping:
                return
            stopping = True
            self.stdout.write("\nStopping the web server and the worker…")
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

        url = f"http://{host}:{port}/"
        ready = False
        exit_code = 0
        while True:
            finished = {name: p.poll() for name, p in procs.items() if p.poll() is not None}
            if finished and not stopping:
                name, code = next(iter(finished.items()))
                self.stderr.write(f"The {name} process exited with code {code}; stopping.")
                exit_code = code or 1
                stop()
            if stopping:
                break
            if not ready:
                ready = self._answers(url + "healthz")
                if ready:
                    self.stdout.write(f"Ready: {url}  (Ctrl-C stops the web server and worker)")
            time.sleep(0.5)

        deadline = time.monotonic() + 20
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.stdout.write("Stopped.")
        sys.exit(exit_code)

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback)
                return response.status == 200
        except OSError:
            return False
