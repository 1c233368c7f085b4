"""Websocket URLs of the agents: talking to one in the browser."""

from django.urls import path

from .talk import AgentTalkConsumer

websocket_urlpatterns = [
    path("ws/agents/<str:agent_id>/talk/", AgentTalkConsumer.as_asgi()),
]
