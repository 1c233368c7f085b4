"""Websocket routes of every app."""

from apps.agents.routing import websocket_urlpatterns as agents_ws
from apps.jobs.routing import websocket_urlpatterns as jobs_ws
from apps.transcripts.routing import websocket_urlpatterns as transcripts_ws

websocket_urlpatterns = [*jobs_ws, *transcripts_ws, *agents_ws]


def _api_patterns():
    from django.urls import path
    from django.utils import timezone

    from apps.agents.consumers import AgentConversationConsumer
    from apps.gateway.realtime import RealtimeTranscriptionConsumer

    def convai_caller(raw_key, signature):
        """The ``Caller`` of a conversation socket: a personal key's, or the key (still
        active, its member still a member) a signed URL was made with. Personal keys are the
        gateway's, a layer above the agents app, so the consumer is handed this."""
        from apps.gateway.models import ApiKey
        from apps.gateway.services import (
            ApiRefused,
            KeyRejected,
            _api_key_look_up,
            api_key_check,
            caller_of,
        )

        if signature is None:
            return caller_of(api_key_check(raw=raw_key, scope="tts"))
        key = (
            ApiKey.objects.filter(
                pk=signature["api_key_id"],
                workspace_id=signature["workspace_id"],
                user_id=signature["user_id"],
            )
            .values_list("key_hash", flat=True)
            .first()
        )
        if key is None:
            raise ApiRefused(401, "invalid_api_key", "The signed URL's API key is gone.")
        try:
            api_key = _api_key_look_up(key)
        except KeyRejected as exc:
            raise ApiRefused(exc.status, exc.code, exc.message) from exc
        if api_key.expires_at is not None and api_key.expires_at <= timezone.now():
            raise ApiRefused(401, "invalid_api_key", "The signed URL's API key has expired.")
        return caller_of(api_key)

    class ConvaiConsumer(AgentConversationConsumer):
        authenticate = staticmethod(convai_caller)

    return [
        path("v1/speech-to-text/realtime", RealtimeTranscriptionConsumer.as_asgi()),
        path(
            "v1/convai/conversation",
            ConvaiConsumer.as_asgi(),
        ),
    ]


api_websocket_urlpatterns = _api_patterns()
