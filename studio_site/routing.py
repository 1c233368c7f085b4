"""Websocket routes of every app."""

from apps.jobs.routing import websocket_urlpatterns as jobs_ws
from apps.transcripts.routing import websocket_urlpatterns as transcripts_ws

websocket_urlpatterns = [*jobs_ws, *transcripts_ws]


def _api_patterns():
    from django.urls import path

    from apps.gateway.realtime import RealtimeTranscriptionConsumer

    return [path("v1/speech-to-text/realtime", RealtimeTranscriptionConsumer.as_asgi())]


api_websocket_urlpatterns = _api_patterns()
