"""Every voice can be heard: the local engine's voices get a preview made once (free, cached
on disk), studio voices keep theirs, ElevenLabs voices their upstream recording; anyone in
the workspace may listen, another workspace gets 404; each library card has a play button."""

import pytest
from django.urls import reverse

from apps.billing.models import UsageEvent
from apps.history.models import Generation
from apps.voices import services_preview
from apps.voices.models import LibraryVoice
from apps.voices.services import library_sync


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def synths(monkeypatch):
    """The local engine's speech calls made for previews, counted (the real engine speaks)."""
    calls = []
    real = services_preview._preview_engine

    class Counting:
        def tts(self, request, **kwargs):
            calls.append(request)
            return real().tts(request, **kwargs)

    monkeypatch.setattr(services_preview, "_preview_engine", Counting)
    return calls


@pytest.fixture
def premade(workspace):
    library_sync(workspace=workspace)
    return LibraryVoice.objects.get(workspace=workspace, voice_id="local-espeak-en-us")


def test_a_premade_voice_s_preview_is_made_once_free_and_kept_on_disk(
    premade, media, synths, client_as, member
):
    url = reverse("voices:preview", args=[premade.pk])
    first = client_as(member).get(url)
    assert first.status_code == 200
    assert first["Content-Type"] == "audio/mpeg"
    audio = b"".join(first.streaming_content)
    assert len(audio) > 1000 and (
        audio[:3] == b"ID3" or audio[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")
    )
    assert len(synths) == 1 and synths[0].voice_id == "local-espeak-en-us"
    stored = media / services_preview.preview_file_name(premade)
    assert stored.read_bytes() == audio
    # The second listen (anyone, a seek included) reads the file: no second synthesis.
    again = client_as(member).get(url, HTTP_RANGE="bytes=0-99")
    assert again.status_code == 206 and len(again.content) == 100
    assert len(synths) == 1
    # Free: no ledger row, no History clip, no use of the voice.
    assert UsageEvent.objects.count() == 0 and Generation.objects.count() == 0
    premade.refresh_from_db()
    assert premade.use_count == 0


def test_a_german_voice_says_its_sentence_in_german(workspace, media, synths, client_as, member):
    library_sync(workspace=workspace)
    klaus = LibraryVoice.objects.get(workspace=workspace, voice_id="local-espeak-de-m3")
    assert client_as(member).get(reverse("voices:preview", args=[klaus.pk])).status_code == 200
    assert synths[0].text == services_preview.PREVIEW_TEXTS["de"]


@pytest.mark.parametrize("role", ["owner", "member", "viewer"])
def test_everyone_in_the_workspace_may_listen(premade, media, synths, client_as, request, role):
    user = request.getfixturevalue(role)
    assert client_as(user).get(reverse("voices:preview", args=[premade.pk])).status_code == 200


def test_another_workspace_gets_404_and_nothing_is_made(
    premade, media, synths, client_as, outsider
):
    response = client_as(outsider).get(reverse("voices:preview", args=[premade.pk]))
    assert response.status_code == 404 and synths == []


def test_a_preview_is_read_only(premade, media, client_as, member):
    assert client_as(member).post(reverse("voices:preview", args=[premade.pk])).status_code == 405


def test_an_elevenlabs_voice_plays_its_upstream_recording_and_never_the_key(
    workspace, client_as, member, synths
):
    voice = LibraryVoice.objects.create(
        workspace=workspace, engine="elevenlabs", voice_id="21m00", name="Rachel",
        preview_url="https://storage.example.test/previews/21m00.mp3",
    )  # fmt: skip
    response = client_as(member).get(reverse("voices:preview", args=[voice.pk]))
    assert response.status_code == 302
    assert response["Location"] == "https://storage.example.test/previews/21m00.mp3"
    assert "xi-api-key" not in str(response.headers).lower() and synths == []
    # Its page plays that recording with the browser's own controls: a waveform would have
    # to read the audio from the other site, which its CORS headers do not allow.
    page = client_as(member).get(reverse("voices:detail", args=[voice.pk])).content.decode()
    assert "data-player data-player-plain" in page


def test_a_studio_voice_plays_the_preview_it_was_saved_with(workspace, client_as, member):
    voice = LibraryVoice.objects.create(
        workspace=workspace, engine="local", voice_id="design-1", name="Made here",
        source="designed", category="generated", preview_url="/history/7/audio/",
    )  # fmt: skip
    response = client_as(member).get(reverse("voices:preview", args=[voice.pk]))
    assert response.status_code == 302 and response["Location"] == "/history/7/audio/"


@pytest.mark.parametrize("url", ["", "http://plain.example/a.mp3", "//evil.example/a.mp3"])
def test_a_voice_without_a_usable_preview_is_404(workspace, client_as, member, url):
    voice = LibraryVoice.objects.create(
        workspace=workspace, engine="elevenlabs", voice_id="x", name="Quiet", preview_url=url
    )
    response = client_as(member).get(reverse("voices:preview", args=[voice.pk]))
    assert response.status_code == 404


def test_every_card_with_a_preview_has_a_play_button(workspace, client_as, member):
    library_sync(workspace=workspace)
    quiet = LibraryVoice.objects.create(
        workspace=workspace, engine="elevenlabs", voice_id="q", name="Quiet one"
    )
    page = client_as(member).get(reverse("voices:library")).content.decode()
    voices = LibraryVoice.objects.filter(workspace=workspace).exclude(pk=quiet.pk)
    assert voices.count() > 5
    for voice in voices:
        assert f'href="{reverse("voices:preview", args=[voice.pk])}" data-voice-preview' in page
        assert f'aria-label="Play the preview of {voice.name}"' in page
    assert reverse("voices:preview", args=[quiet.pk]) not in page
    assert "No preview" in page


def test_the_voice_page_plays_and_offers_the_preview_for_download(premade, client_as, viewer):
    page = client_as(viewer).get(reverse("voices:detail", args=[premade.pk])).content.decode()
    url = reverse("voices:preview", args=[premade.pk])
    assert f'src="{url}"' in page and f'href="{url}" download' in page
    assert "data-player-plain" not in page  # made here: the waveform player


def test_anonymous_is_sent_to_sign_in_and_nothing_is_made(premade, media, synths, client):
    response = client.get(reverse("voices:preview", args=[premade.pk]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert synths == []
