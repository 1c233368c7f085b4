"""Routes of the ElevenLabs-compatible API; every one starts with ``v1/`` or ``v2/``."""

from django.urls import path

from . import api

urlpatterns = [
    path("v1/text-to-speech/<str:voice_id>", api.speech, name="api_tts"),
    path("v1/text-to-speech/<str:voice_id>/stream", api.speech_stream, name="api_tts_stream"),
    path(
        "v1/text-to-speech/<str:voice_id>/with-timestamps",
        api.speech_with_timestamps,
        name="api_tts_timestamps",
    ),
    path(
        "v1/text-to-speech/<str:voice_id>/stream/with-timestamps",
        api.speech_stream_with_timestamps,
        name="api_tts_stream_timestamps",
    ),
    path("v1/voices", api.voices, name="api_voices"),
    path("v1/voices/<str:voice_id>", api.voice, name="api_voice"),
    path("v2/voices", api.voices_search, name="api_voices_search"),
    path("v1/models", api.models, name="api_models"),
    path("v1/user", api.user, name="api_user"),
    path("v1/user/subscription", api.subscription, name="api_subscription"),
]
