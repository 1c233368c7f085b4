"""Websocket URLs of live captions."""

from django.urls import path

from .consumers import LiveCaptionConsumer, LiveWatchConsumer

websocket_urlpatterns = [
    path("ws/transcripts/live/<int:pk>/", LiveCaptionConsumer.as_asgi()),
    path("ws/transcripts/live/<int:pk>/watch/", LiveWatchConsumer.as_asgi()),
]
