"""Who may change a voice through /v1: its maker or a manager (``voice_can_change``).

A member's key cannot delete, rename or re-set the owner's approved, consented clone; the
owner's, the maker's and a manager's keys can; a viewer holds no working key; another
workspace's voice is a 404. A voice deleted by someone allowed stays in the library, flagged
withdrawn, with who deleted it in its history.
"""

import json

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from apps.gateway import services, services_media
from apps.gateway.services import ApiRefused
from apps.voices.models import ApiVoice, Approval, LibraryVoice, VoiceChange, VoiceSettingsRecord
from apps.voices.services import voice_can_change
from apps.workspaces.models import Membership, Role
from apps.workspaces.services import ActionRefused
from tests.factories import make_user, make_workspace
from tests.gateway.test_api_media import SENTENCE, VOICE, detail_of, spoken, upload


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def key_of(workspace, user):
    return services.api_key_create(workspace=workspace, user=user, name="Rights")


def client_of(workspace, user) -> Client:
    return Client(HTTP_XI_API_KEY=key_of(workspace, user).raw)


def post_json(client, path, body):
    return client.post(path, json.dumps(body), content_type="application/json")


def clone_by(client, name="Olive's voice") -> str:
    response = client.post(
        "/v1/voices/add", {"name": name, "files": [upload(spoken(SENTENCE + " " + SENTENCE))]}
    )
    assert response.status_code == 200, response.content
    return response.json()["voice_id"]


@pytest.fixture
def owners_voice(workspace, owner):
    """The owner's clone, approved for production (as in the issue)."""
    voice_id = clone_by(client_of(workspace, owner))
    LibraryVoice.objects.filter(voice_id=voice_id).update(approval=Approval.APPROVED)
    return voice_id


def changes(client, voice_id):
    """Every /v1 call that changes a voice, in the order a script would make them."""
    return [
        client.post(f"/v1/voices/{voice_id}/edit", {"name": "Mine now"}),
        post_json(client, f"/v1/voices/{voice_id}/settings/edit", {"stability": 0.1}),
        post_json(client, f"/v1/voices/{voice_id}/settings", {"speed": 1.2}),
        client.delete(f"/v1/voices/{voice_id}"),
    ]


def assert_untouched(voice_id):
    row = ApiVoice.objects.get(voice_id=voice_id)
    assert row.name == "Olive's voice"
    assert not VoiceSettingsRecord.objects.filter(voice_id=voice_id).exists()
    library = LibraryVoice.objects.get(voice_id=voice_id)
    assert (library.withdrawn_at, library.name, library.approval) == (
        None,
        "Olive's voice",
        Approval.APPROVED,
    )


def test_a_members_key_cannot_edit_set_up_or_delete_the_owners_voice(
    workspace, member, owners_voice
):
    for response in changes(client_of(workspace, member), owners_voice):
        assert response.status_code == 403, response.content
        detail = detail_of(response)
        assert (detail["status"], detail["type"], detail["param"]) == (
            "permission_denied",
            "authorization_error",
            "voice_id",
        )
        assert "or a manager" in detail["message"]
    assert_untouched(owners_voice)
    assert client_of(workspace, member).get(f"/v1/voices/{owners_voice}").status_code == 200


def test_the_rule_is_in_the_service_not_only_the_view(workspace, member, owners_voice):
    key = services.api_key_authenticate(key_of(workspace, member).raw)
    for call in (
        lambda: services_media.api_voice_delete(api_key=key, voice_id=owners_voice),
        lambda: services_media.api_voice_edit(api_key=key, voice_id=owners_voice, name="X"),
        lambda: services_media.api_voice_settings_update(
            api_key=key, voice_id=owners_voice, values={"stability": 0.0}
        ),
    ):
        with pytest.raises(ApiRefused) as refused:
            call()
        assert refused.value.status == 403
    assert_untouched(owners_voice)


def test_the_maker_changes_and_deletes_their_own_voice(workspace, member):
    api = client_of(workspace, member)
    voice_id = clone_by(api, name="Mia's voice")
    edit, settings, short, delete = changes(api, voice_id)
    assert [r.status_code for r in (edit, settings, short, delete)] == [200] * 4
    assert not ApiVoice.objects.filter(voice_id=voice_id).exists()
    library = LibraryVoice.objects.get(voice_id=voice_id)
    assert library.withdrawn_at is not None and library.name == "Mine now"


def test_the_owner_changes_their_own_voice(workspace, owner, owners_voice):
    response = client_of(workspace, owner).post(
        f"/v1/voices/{owners_voice}/edit", {"name": "Olive, renamed"}
    )
    assert response.status_code == 200
    assert ApiVoice.objects.get(voice_id=owners_voice).name == "Olive, renamed"


def test_a_manager_changes_and_deletes_anyones_voice_and_the_library_keeps_it_withdrawn(
    workspace, manager, owners_voice
):
    api = client_of(workspace, manager)
    edit, settings, short, delete = changes(api, owners_voice)
    assert [r.status_code for r in (edit, settings, short, delete)] == [200] * 4
    assert delete.json() == {"status": "ok"}
    assert not ApiVoice.objects.filter(voice_id=owners_voice).exists()
    library = LibraryVoice.objects.get(voice_id=owners_voice)
    assert library.withdrawn_at is not None
    deleted = VoiceChange.objects.get(voice=library, action="deleted")
    assert deleted.actor == manager
    assert api.get(f"/v1/voices/{owners_voice}").status_code == 404


def test_a_viewer_holds_no_working_key(workspace, viewer, member, owners_voice):
    with pytest.raises(ActionRefused):
        key_of(workspace, viewer)
    demoted = client_of(workspace, member)  # a key made while a member, then made a viewer
    Membership.objects.filter(workspace=workspace, user=member).update(role=Role.VIEWER)
    services.known_keys_forget()
    for response in changes(demoted, owners_voice):
        assert response.status_code == 401
        assert detail_of(response)["status"] == "invalid_api_key"
    assert_untouched(owners_voice)


def test_another_workspaces_voice_is_a_404_even_for_its_owner(owners_voice):
    boss = make_user("boss@example.com")
    elsewhere = make_workspace("Elsewhere Ltd", owner=boss)
    for response in changes(client_of(elsewhere, boss), owners_voice):
        assert response.status_code == 404
        assert detail_of(response)["status"] == "voice_not_found"
    assert_untouched(owners_voice)


def test_settings_of_the_engines_own_voices_are_the_managers(workspace, member, manager):
    refused = post_json(client_of(workspace, member), f"/v1/voices/{VOICE}/settings/edit",
                        {"stability": 0.2})  # fmt: skip
    assert refused.status_code == 403
    assert not VoiceSettingsRecord.objects.exists()
    allowed = post_json(client_of(workspace, manager), f"/v1/voices/{VOICE}/settings/edit",
                        {"stability": 0.2})  # fmt: skip
    assert allowed.status_code == 200
    assert VoiceSettingsRecord.objects.get(voice_id=VOICE).stability == 0.2


def test_the_rule_by_role(workspace, owner, manager, member, viewer, owners_voice):
    mine = clone_by(client_of(workspace, member), name="Mia's")
    allowed = {
        (who.email, voice): voice_can_change(workspace=workspace, voice_id=voice, user=who)
        for who in (owner, manager, member, viewer)
        for voice in (owners_voice, mine, VOICE)
    }
    assert [who for who, ok in allowed.items() if ok] == [
        (owner.email, owners_voice),
        (owner.email, mine),
        (owner.email, VOICE),
        (manager.email, owners_voice),
        (manager.email, mine),
        (manager.email, VOICE),
        (member.email, mine),
    ]
    outsider = make_user("out@example.com")
    assert not voice_can_change(workspace=workspace, voice_id=mine, user=outsider)


# --- A voice that lives in the ElevenLabs account -----------------------------------------------


def test_an_upstream_voice_deleted_by_a_manager_is_withdrawn_in_the_library(
    upstream, on_elevenlabs, manager, member
):
    voice = {"voice_id": "up-voice", "name": "Account voice", "category": "cloned", "labels": {}}
    script = upstream(
        httpx.Response(200, json=voice),
        httpx.Response(200, json=voice),
        httpx.Response(200, json={"status": "ok"}),
    )
    LibraryVoice.objects.create(
        workspace=on_elevenlabs,
        engine="elevenlabs",
        voice_id="up-voice",
        name="Account voice",
        category="cloned",
        synced_at=timezone.now(),
    )
    refused = client_of(on_elevenlabs, member).delete("/v1/voices/up-voice")
    assert refused.status_code == 403
    assert [r.method for r in script.requests] == ["GET"]  # nothing deleted upstream

    response = client_of(on_elevenlabs, manager).delete("/v1/voices/up-voice")
    assert response.status_code == 200, response.content
    assert [r.method for r in script.requests] == ["GET", "GET", "DELETE"]
    library = LibraryVoice.objects.get(voice_id="up-voice")
    assert library.withdrawn_at is not None
    assert VoiceChange.objects.get(voice=library, action="deleted").actor == manager
