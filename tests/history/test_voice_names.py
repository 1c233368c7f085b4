"""Every speech clip records the voice that made it, as the library names it, and History
shows it (whether made by a page, a streamed take or the /v1 API)."""

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from apps.generation.caller import Caller
from apps.generation.speech import SpeechInput, speak, speak_stream
from apps.history.models import Generation
from apps.voices import services as voice_services
from apps.voices.models import LibraryVoice

pytestmark = pytest.mark.django_db


@pytest.fixture
def joe(workspace):
    voice_services.library_sync(workspace=workspace)
    joe = LibraryVoice.objects.get(workspace=workspace, voice_id="local-joe")
    joe.name = "Joe the Narrator"
    joe.save(update_fields=["name"])
    return joe


def test_a_spoken_clip_keeps_its_voice_name_and_history_shows_it(workspace, member, joe, client_as):
    speech = speak(
        caller=Caller(workspace=workspace, user=member),
        speech=SpeechInput(voice_id="local-joe", text="Names matter."),
    )
    clip = Generation.objects.get(request_id=speech.request_id)
    assert clip.voice_name == "Joe the Narrator"
    page = client_as(member).get(reverse("history:list")).content.decode()
    voice_url = reverse("voices:detail", args=[joe.pk])
    assert f'<a href="{voice_url}" data-voice-link>Joe the Narrator</a>' in page


def test_a_streamed_clip_keeps_its_voice_name_too(workspace, member, joe):
    stream = speak_stream(
        caller=Caller(workspace=workspace, user=member),
        speech=SpeechInput(voice_id="local-joe", text="Streamed, and still named."),
        encode=lambda chunk: chunk.audio,
    )

    async def drain():
        return b"".join([chunk async for chunk in stream])

    assert async_to_sync(drain)()
    stream.close()
    clip = Generation.objects.get(request_id=stream.request_id)
    assert clip.voice_name == "Joe the Narrator"


def test_a_voice_the_library_does_not_hold_leaves_the_name_empty(workspace, member):
    LibraryVoice.objects.filter(workspace=workspace).delete()
    speech = speak(
        caller=Caller(workspace=workspace, user=member),
        speech=SpeechInput(voice_id="local-joe", text="Nobody synced me."),
    )
    clip = Generation.objects.get(request_id=speech.request_id)
    assert (clip.voice_id, clip.voice_name) == ("local-joe", "")
