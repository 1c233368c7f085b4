"""Websocket routes of every app."""

from apps.jobs.routing import websocket_urlpatterns as jobs_ws
from apps.transcripts.routing import websocket_urlpatterns as transcripts_ws

websocket_urlpatterns = [*jobs_ws, *transcripts_ws]
