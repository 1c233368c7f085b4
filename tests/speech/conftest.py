"""Fixtures the speech tests share: a media folder of their own, the local engine's voice,
and the gateway's ElevenLabs network edge."""

import pytest

from apps.voices import services as voice_services
from apps.voices.models import LibraryVoice
from tests.gateway.test_api_faults import on_elevenlabs, upstream  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def voice(workspace):
    voice_services.library_sync(workspace=workspace)  # the local engine's voices
    return LibraryVoice.objects.get(workspace=workspace, voice_id="local-joe")
