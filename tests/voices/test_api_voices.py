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
