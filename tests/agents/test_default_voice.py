"""A new agent's voice when none is chosen: the local engine's default voice (an English
one), else a voice that speaks the agent's language, never the library's first by name (a
French voice once became every new English agent's)."""

import pytest

from apps.agents import services
from apps.engines.local.tts import DEFAULT_VOICE_ID
from apps.voices.models import LibraryVoice

pytestmark = pytest.mark.django_db


def test_a_new_agent_speaks_with_the_local_default_voice(workspace, member, voices):
    assert DEFAULT_VOICE_ID in voices
    agent = services.agent_create(workspace=workspace, user=member, name="Desk")
    assert agent.version.config["voice_id"] == DEFAULT_VOICE_ID


def test_without_the_default_voice_one_speaking_the_language_is_picked(workspace, voices):
    LibraryVoice.objects.filter(workspace=workspace, voice_id=DEFAULT_VOICE_ID).delete()
    english = services.default_voice(workspace, "en")
    assert LibraryVoice.objects.get(workspace=workspace, voice_id=english).language.startswith("en")
    german = services.default_voice(workspace, "de")
    assert LibraryVoice.objects.get(workspace=workspace, voice_id=german).language.startswith("de")


def test_the_new_agent_form_proposes_the_default_voice(client, member, voices):
    client.force_login(member)
    page = client.get("/agents/new/")
    assert page.status_code == 200
    assert page.context["form"].initial["voice_id"] == DEFAULT_VOICE_ID
