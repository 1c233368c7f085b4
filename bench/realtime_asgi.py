"""The ASGI application ``bench/realtime_relay.py`` serves for its relay measurement.

Chorus as shipped, except that live sessions get an engine session whose every audio frame
makes one partial at once, carrying in its text the moment (ns) it was made: the browser side
then times the relay alone (consumer → channel layer → websocket), not speech recognition.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio_site.settings")

import django  # noqa: E402

django.setup()

from apps.engines.base import RealtimeEvent  # noqa: E402
from apps.transcripts import live  # noqa: E402
from studio_site.asgi import application  # noqa: E402,F401 (what Daphne serves)


class StampingSession:
    def send_audio(self, pcm: bytes):
        return [RealtimeEvent("partial_transcript", text=str(time.time_ns()))]

    def commit(self):
        return []

    def close(self):
        return []


live.engine_session = lambda engine, transcript: live.LiveEngineSession(StampingSession())
