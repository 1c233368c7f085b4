"""The Celery application: configured from Django settings (``CELERY_*``), tasks autodiscovered."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")

app = Celery("chorus")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _speak_side_by_side(**_):
    """A worker renders a project's blocks several at a time (``CHORUS_PROJECT_RENDER_THREADS``):
    then each local synthesis computes with its share of the cores rather than all of them,
    which gets more blocks done (bench/projects.py). An explicit setting wins."""
    from apps.engines.local.tts import TTS_THREADS_ENV
    from apps.projects.threads import render_threads

    threads = render_threads()
    if threads > 1:
        os.environ.setdefault(TTS_THREADS_ENV, str(max(1, (os.cpu_count() or 1) // threads)))
