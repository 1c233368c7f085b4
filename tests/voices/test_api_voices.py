"""Voices made through /v1 are in the library as they are made, stay through a sync (the
local engine keeps no list of them) and, deleted through /v1, are flagged withdrawn."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from apps.gateway import services as gateway
from apps.voices.models import LibraryVoice, VoiceSource
from apps.voices.services import library_sync
from tests.gateway.test_api_media import SENTENCE, spoken, upload


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def api(workspace, member):
    return Client(HTTP_XI_API_KEY=gateway.api_key_create(workspace=workspace, user=member,
                                                         name="Library").raw)  # fmt: skip


def test_a_clone_made_through_v1_is_in_the_library_kept_by_a_sync_and_withdrawn_on_delete(
    api, workspace, client_as, viewer
):
    response = api.post(
        "/v1/voices/add",
        {
            "name": "Zoë ✨",
            "files": [upload(spoken(SENTENCE + " " + SENTENCE))],
            "labels": json.dumps({"accent": "american", "gender": "male"}),
        },
    )
    assert response.status_code == 200, response.content
    voice_id = response.json()["voice_id"]
    row = LibraryVoice.objects.get(workspace=workspace, voice_id=voice_id)
    assert (row.name, row.category, row.source, row.engine) == (
        "Zoë ✨", "cloned", VoiceSource.CLONED, "local",
    )  # fmt: skip
    assert (row.gender, row.accent) == ("male", "american")
    page = client_as(viewer).get(reverse("voices:library"), {"category": "cloned"}).text
    assert "Zoë ✨" in page and voice_id in page

    result = library_sync(workspace=workspace)
    row.refresh_from_db()
    assert row.withdrawn_at is None and "Zoë ✨" not in result.withdrawn

    assert api.delete(f"/v1/voices/{voice_id}").status_code == 200
    row.refresh_from_db()
    assert row.withdrawn_at is not None  # kept, flagged
    assert "Zoë ✨" not in client_as(viewer).get(reverse("voices:library")).text


# --- Voices made in the studio, through the official SDK -------------------------------------


@pytest.fixture
def live_media(live_env, tmp_path, settings):
    """The server and the tests keep generated files in the same, temporary place."""
    live_env["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    return live_env


@pytest.mark.slow
def test_a_voice_designed_in_the_studio_is_listed_and_speaks_through_the_sdk(
    live_media, daphne_server, workspace, member
):
    import io

    import av
    from elevenlabs.client import ElevenLabs

    from apps.voices import services_design
    from tests.voices.test_design import recipe

    design = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    voice = services_design.design_save(design=design, preview=0, user=member, name="Studio Made")
    sdk = ElevenLabs(
        base_url=daphne_server.url,
        api_key=gateway.api_key_create(workspace=workspace, user=member, name="SDK").raw,
    )
    listed = sdk.voices.search(search="Studio Made").voices
    assert [(v.voice_id, v.name, v.category) for v in listed] == [
        (voice.voice_id, "Studio Made", "generated")
    ]
    audio = b"".join(sdk.text_to_speech.convert(voice.voice_id, text=SENTENCE))
    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        seconds = (
            sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate
        )
    assert seconds > 1.0
