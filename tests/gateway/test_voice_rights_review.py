"""Saving a voice design again must not hand someone else's voice to the saver (issue 12,
item 4, found in review).

The local engine gives the voice saved from a preview an id that follows from the preview's
(``local-designed-…`` from ``local-gen-…``), and ``POST /v1/text-to-voice`` kept the voice
with ``update_or_create``: a member who saved the owner's saved design again renamed it and
became its maker, and could then delete it with the same key.
"""

import pytest

from apps.voices.models import ApiVoice
from tests.gateway.test_api_media import DESCRIPTION
from tests.gateway.test_voice_rights import client_of, post_json


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def save_design(client, generated_voice_id, name):
    return post_json(
        client,
        "/v1/text-to-voice",
        {
            "voice_name": name,
            "voice_description": DESCRIPTION,
            "generated_voice_id": generated_voice_id,
        },
    )


def test_a_member_cannot_take_over_the_owners_saved_design_by_saving_it_again(
    workspace, owner, member
):
    owners = client_of(workspace, owner)
    design = post_json(owners, "/v1/text-to-voice/design", {"voice_description": DESCRIPTION})
    assert design.status_code == 200, design.content
    generated = design.json()["previews"][0]["generated_voice_id"]
    saved = save_design(owners, generated, "Olive's narrator")
    assert saved.status_code == 200, saved.content
    voice_id = saved.json()["voice_id"]

    members = client_of(workspace, member)
    again = save_design(members, generated, "Mine now")
    assert again.status_code == 403, again.content
    row = ApiVoice.objects.get(voice_id=voice_id)
    assert (row.name, row.created_by_id) == ("Olive's narrator", owner.pk)
    assert members.delete(f"/v1/voices/{voice_id}").status_code == 403
    assert ApiVoice.objects.filter(voice_id=voice_id).exists()


def test_the_maker_may_save_their_design_again_and_stays_its_maker(workspace, owner, manager):
    managers = client_of(workspace, manager)
    design = post_json(managers, "/v1/text-to-voice/design", {"voice_description": DESCRIPTION})
    generated = design.json()["previews"][0]["generated_voice_id"]
    voice_id = save_design(managers, generated, "First").json()["voice_id"]
    assert save_design(client_of(workspace, owner), generated, "Second").status_code == 200
    row = ApiVoice.objects.get(voice_id=voice_id)
    assert (row.name, row.created_by_id) == ("Second", manager.pk)
