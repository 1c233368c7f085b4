"""Settings → Engine: the ElevenLabs key is encrypted at rest, never shown again, audited."""

import pytest
from django.urls import reverse

from apps.workspaces import crypto
from apps.workspaces.models import AuditEntry, EngineKind, EngineSettings

KEY = "sk_live_0123456789abcdefWXYZ"


def _save(client, **data):
    return client.post(reverse("workspaces:engine"), {"kind": "elevenlabs", **data})


def test_the_key_is_stored_encrypted_and_only_its_last_four_shown(client_as, owner, workspace):
    client = client_as(owner)
    assert (
        _save(client, api_key=KEY, base_url="https://api.eu.residency.elevenlabs.io").status_code
        == 303
    )
    row = EngineSettings.objects.get(workspace=workspace)
    assert row.kind == EngineKind.ELEVENLABS
    assert KEY not in row.api_key_encrypted
    assert crypto.decrypt(row.api_key_encrypted) == KEY
    assert row.api_key_last4 == "WXYZ"
    assert row.base_url == "https://api.eu.residency.elevenlabs.io"
    for url in (reverse("workspaces:engine"), reverse("workspaces:settings")):
        page = client.get(url).content.decode()
        assert KEY not in page and KEY[:-4] not in page
        assert "WXYZ" in page
    entry = AuditEntry.objects.get(action="engine.changed")
    assert entry.data["to"] == "elevenlabs" and entry.data["key_changed"] is True
    assert KEY not in str(entry.data)


def test_an_empty_key_keeps_the_stored_one(client_as, owner, workspace):
    client = client_as(owner)
    _save(client, api_key=KEY)
    assert _save(client, api_key="").status_code == 303
    row = EngineSettings.objects.get(workspace=workspace)
    assert crypto.decrypt(row.api_key_encrypted) == KEY
    assert AuditEntry.objects.filter(action="engine.changed").first().data["key_changed"] is False


def test_elevenlabs_without_a_key_is_a_field_error(client_as, owner, workspace):
    response = _save(client_as(owner))
    assert response.status_code == 400
    assert "needs an API key" in response.content.decode()
    assert not EngineSettings.objects.exists()


def test_bad_inputs_are_field_errors(client_as, owner, workspace):
    client = client_as(owner)
    for data, message in [
        ({"api_key": "short"}, "does not look like an API key"),
        ({"api_key": KEY, "base_url": "ftp://x.example"}, "Use an https:// address"),
        ({"api_key": KEY, "base_url": "http://api.example.com"}, "Use an https:// address"),
        ({"api_key": KEY, "kind": "mystery"}, "Select a valid choice"),
    ]:
        response = client.post(reverse("workspaces:engine"), {"kind": "elevenlabs", **data})
        assert response.status_code == 400, data
        assert message in response.content.decode(), data
    assert not EngineSettings.objects.exists()


def test_removing_the_key_returns_to_local(client_as, owner, workspace):
    client = client_as(owner)
    _save(client, api_key=KEY)
    response = client.post(reverse("workspaces:engine"), {"kind": "local", "remove_key": "on"})
    assert response.status_code == 303
    row = EngineSettings.objects.get(workspace=workspace)
    assert (row.kind, row.api_key_encrypted, row.api_key_last4) == ("local", "", "")


def test_a_key_encrypted_under_another_secret_is_reported_not_crashed(settings, db):
    token = crypto.encrypt(KEY)
    settings.SECRET_KEY = "rotated" * 8
    with pytest.raises(crypto.SecretUnreadable, match="Enter it again"):
        crypto.decrypt(token)


def test_test_connection_on_the_local_engine_answers(client_as, owner, workspace):
    from tests.conftest import HTMX

    response = client_as(owner, **HTMX).post(reverse("workspaces:engine_test"))
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert 'data-check="ok"' in body and "Local (offline)" in body
    home = client_as(owner).get(reverse("workspaces:home")).content.decode()
    assert 'data-engine="local"' in home and "data-engine-answers>" in home


def test_test_connection_reports_an_unreachable_elevenlabs(client_as, owner, workspace):
    """A real socket to a closed port: the page shows the error, nothing crashes."""
    from tests.conftest import HTMX, free_port

    client = client_as(owner)
    _save(client, api_key=KEY, base_url=f"http://127.0.0.1:{free_port()}")
    response = client_as(owner, **HTMX).post(reverse("workspaces:engine_test"))
    body = response.content.decode()
    assert response.status_code == 200
    assert 'data-check="error"' in body
    assert KEY not in body
    home = client.get(reverse("workspaces:home")).content.decode()
    assert 'data-engine-answers="no"' in home


def test_a_stored_key_is_not_sent_to_a_new_base_url_without_entering_it_again(
    client_as, owner, workspace
):
    client = client_as(owner)
    _save(client, api_key=KEY, base_url="https://api.elevenlabs.io")
    response = _save(client, base_url="https://api.us.elevenlabs.io")
    assert response.status_code == 400
    assert "Enter the API key again" in response.content.decode()
    assert EngineSettings.objects.get(workspace=workspace).base_url == "https://api.elevenlabs.io"
    assert _save(client, api_key=KEY, base_url="https://api.us.elevenlabs.io").status_code == 303


def test_an_unreadable_key_is_an_authentication_error_not_a_crash(owner, workspace, settings):
    from apps.engines.base import AuthenticationFailed
    from apps.generation.engine import engine_for
    from apps.workspaces import services

    services.engine_settings_update(
        workspace=workspace, actor=owner, kind="elevenlabs", api_key=KEY
    )
    settings.SECRET_KEY = "rotated" * 8
    with pytest.raises(AuthenticationFailed, match="Enter it again"):
        engine_for(workspace)
