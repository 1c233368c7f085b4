"""Websocket routes of every app."""

from apps.jobs.routing import websocket_urlpatterns as jobs_ws

websocket_urlpatterns = [*jobs_ws]
