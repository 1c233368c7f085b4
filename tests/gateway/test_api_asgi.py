"""Which /v1 requests the lean ASGI path serves (the streaming TTS views), and which not.

The lean path itself is exercised over a real Daphne by the SDK, fault and concurrency-cap
tests (streams read to the end, cut off by the client, and over the member's cap).
"""

import pytest

from apps.gateway.asgi import is_api, lean_match


@pytest.mark.parametrize(
    "path",
    ["/v1/text-to-speech/abc/stream", "/v1/text-to-speech/abc/stream/with-timestamps"],
)
def test_the_streaming_speech_views_are_lean(path):
    match = lean_match({"type": "http", "path": path})
    assert match is not None and match.kwargs == {"voice_id": "abc"}


@pytest.mark.parametrize(
    "path",
    ["/v1/text-to-speech/abc", "/v1/voices", "/v1/no-such-thing", "/healthz", "/history/"],
)
def test_other_paths_take_django_s_handler(path):
    assert lean_match({"type": "http", "path": path}) is None


def test_websockets_are_never_lean():
    scope = {"type": "websocket", "path": "/v1/text-to-speech/abc/stream"}
    assert lean_match(scope) is None and not is_api(scope)
