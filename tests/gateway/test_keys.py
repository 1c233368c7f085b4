"""Settings → API keys: who may list, create and revoke keys, the key shown once, the command."""

import re
from datetime import datetime, time, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from apps.gateway import services
from apps.gateway.models import SCOPES, ApiKey
from apps.workspaces.models import AuditEntry, Membership, Role
from tests.conftest import HTMX
from tests.factories import make_user

RANK = {"owner": 3, "manager": 2, "member": 1, "viewer": 0}
KEY_IN_PAGE = re.compile(r'<input[^>]*id="new-key"[^>]*value="(chorus_[^"]+)"')


@pytest.fixture
def cast(owner, manager, member, viewer, outsider, workspace):
    return {
        "owner": owner,
        "manager": manager,
        "member": member,
        "viewer": viewer,
        "outsider": outsider,
    }


def _issue(workspace, user, name="Script"):
    return services.api_key_create(workspace=workspace, user=user, name=name)


def _leftover_key(workspace, user):
    """A key made while ``user`` was still a member (viewers cannot be issued one now)."""
    return ApiKey.objects.create(
        workspace=workspace, user=user, name="Old", prefix="chorus_old", key_hash="v" * 64
    )


def _create(client, **data):
    return client.post(reverse("gateway:keys"), {"name": "Podcast script", **data})


def _raw_key(response) -> str:
    match = KEY_IN_PAGE.search(response.content.decode())
    assert match, "the new key is shown in a read-only input"
    return match.group(1)


# --- Roles --------------------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize("role", ["owner", "manager", "member", "viewer"])
def test_members_and_above_open_the_page_and_viewers_get_403(client_as, cast, role, htmx):
    response = client_as(cast[role], **(HTMX if htmx else {})).get(reverse("gateway:keys"))
    if RANK[role] >= RANK["member"]:
        assert response.status_code == 200
        assert ("<html" in response.content.decode()) is not htmx
    else:
        assert response.status_code == 403


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize("role", ["owner", "manager", "member", "viewer"])
def test_members_and_above_create_keys_and_viewers_get_403(client_as, cast, workspace, role, htmx):
    response = _create(client_as(cast[role], **(HTMX if htmx else {})))
    if RANK[role] >= RANK["member"]:
        assert response.status_code == 200
        assert ("<html" in response.content.decode()) is not htmx
        key = ApiKey.objects.get()
        assert (key.workspace, key.user) == (workspace, cast[role])
    else:
        assert response.status_code == 403
        assert not ApiKey.objects.exists()


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize("role", ["owner", "manager", "member"])
def test_members_and_above_revoke_their_own_key(client_as, cast, workspace, role, htmx):
    issued = _issue(workspace, cast[role])
    response = client_as(cast[role], **(HTMX if htmx else {})).post(
        reverse("gateway:revoke", args=[issued.api_key.pk])
    )
    if htmx:
        assert response.status_code == 200
        body = response.content.decode()
        assert "<html" not in body
        assert 'data-state="revoked"' in body
    else:
        assert response.status_code == 303
        assert response["Location"] == reverse("gateway:keys")
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is not None


def test_a_viewer_cannot_revoke_even_a_leftover_key_of_their_own(client_as, viewer, workspace):
    key = _leftover_key(workspace, viewer)
    response = client_as(viewer).post(reverse("gateway:revoke", args=[key.pk]))
    assert response.status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None


def test_an_outsider_gets_404_for_another_workspaces_key(client_as, outsider, member, workspace):
    issued = _issue(workspace, member, name="Acme secret script")
    client = client_as(outsider)
    assert client.post(reverse("gateway:revoke", args=[issued.api_key.pk])).status_code == 404
    assert client.post(reverse("gateway:revoke", args=[999999])).status_code == 404
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is None


def test_an_outsider_sees_and_creates_keys_only_in_their_own_workspace(
    client_as, outsider, member, workspace
):
    _issue(workspace, member, name="Acme secret script")
    client = client_as(outsider)
    body = client.get(reverse("gateway:keys")).content.decode()
    assert "Acme secret script" not in body
    assert "member@example.com" not in body
    assert _create(client, name="Mine").status_code == 200
    mine = ApiKey.objects.get(name="Mine")
    assert mine.workspace == Membership.objects.get(user=outsider).workspace
    assert workspace.api_keys.count() == 1


@pytest.mark.parametrize(
    "name,method",
    [("gateway:keys", "get"), ("gateway:keys", "post"), ("gateway:revoke", "post")],
)
def test_anonymous_is_sent_to_sign_in(client_as, member, workspace, name, method):
    issued = _issue(workspace, member)
    url = reverse(name, args=[issued.api_key.pk]) if name == "gateway:revoke" else reverse(name)
    response = getattr(client_as(None), method)(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is None


def test_the_wrong_method_is_rejected(client_as, member, workspace):
    issued = _issue(workspace, member)
    client = client_as(member)
    assert client.get(reverse("gateway:revoke", args=[issued.api_key.pk])).status_code == 405
    assert client.put(reverse("gateway:keys")).status_code == 405
    assert client.delete(reverse("gateway:keys")).status_code == 405
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is None


# --- The key, shown once ------------------------------------------------------------------


def test_a_plain_post_shows_the_new_key_once_on_the_full_page(client_as, member, workspace):
    response = _create(client_as(member))
    assert response.status_code == 200  # rendered, not redirected: the key is in no URL
    body = response.content.decode()
    assert "<html" in body
    raw = _raw_key(response)
    assert body.count(raw) == 1
    assert 'data-copy="new-key"' in body
    assert "no-store" in response["Cache-Control"]
    key = ApiKey.objects.get()
    assert key.key_hash == ApiKey.hash(raw)
    assert raw.startswith(key.prefix)
    assert services.api_key_authenticate(raw) == key


def test_an_htmx_post_shows_the_new_key_once_in_the_partial(client_as, member, workspace):
    response = _create(client_as(member, **HTMX))
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body
    assert 'id="api-keys"' in body
    raw = _raw_key(response)
    assert body.count(raw) == 1
    assert ApiKey.objects.get().key_hash == ApiKey.hash(raw)


def test_the_key_is_never_stored_nor_shown_again(client_as, member, workspace):
    client = client_as(member)
    raw = _raw_key(_create(client))
    key = ApiKey.objects.get()
    # Only the SHA-256 is stored: no column and no audit entry holds the key itself.
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert all(raw not in str(value) for value in row.values())
    assert key.key_hash == ApiKey.hash(raw)
    for entry in AuditEntry.objects.values():
        assert all(raw not in str(value) for value in entry.values())
    for headers in ({}, HTMX):
        page = client_as(member, **headers).get(reverse("gateway:keys")).content.decode()
        assert raw not in page
        assert 'id="new-key"' not in page
        assert f"{key.prefix}…" in page
        assert "Podcast script" in page


def test_a_new_key_takes_the_chosen_scopes_cap_and_expiry(client_as, member, workspace):
    day = timezone.localdate() + timedelta(days=30)
    response = _create(
        client_as(member),
        scopes=["tts", "voices"],
        monthly_cap="1000.5",
        expires_on=day.isoformat(),
    )
    assert response.status_code == 200
    key = ApiKey.objects.get()
    assert key.scopes == ["tts", "voices"]
    assert key.monthly_cap == Decimal("1000.5")
    assert key.expires_at == timezone.make_aware(datetime.combine(day, time.min))
    assert key.allows("tts") and not key.allows("music")
    row = response.content.decode().split(f'id="key-{key.pk}"')[1].split("</tr>")[0]
    assert SCOPES["tts"] in row and SCOPES["voices"] in row and SCOPES["music"] not in row
    assert "1,000.5 credits" in row


def test_a_key_without_scopes_may_do_everything(client_as, member, workspace):
    _create(client_as(member))
    key = ApiKey.objects.get()
    assert key.scopes == []
    assert key.monthly_cap is None and key.expires_at is None
    assert all(key.allows(scope) for scope in SCOPES)


# --- Who sees which keys ------------------------------------------------------------------


def test_members_see_only_their_own_keys(client_as, member, owner, manager, workspace):
    _issue(workspace, member, name="Mia's script")
    _issue(workspace, owner, name="Olive's script")
    _issue(workspace, manager, name="Max's script")
    body = client_as(member).get(reverse("gateway:keys")).content.decode()
    assert "Mia&#x27;s script" in body
    assert "Olive&#x27;s script" not in body
    assert "Max&#x27;s script" not in body
    assert "owner@example.com" not in body.split('id="api-keys"')[1]


@pytest.mark.parametrize("role", ["owner", "manager"])
def test_managers_and_owners_see_every_key_with_its_owner(
    client_as, cast, member, owner, workspace, role
):
    _issue(workspace, member, name="Mia's script")
    _issue(workspace, owner, name="Olive's script")
    body = client_as(cast[role]).get(reverse("gateway:keys")).content.decode()
    assert "Mia&#x27;s script" in body and "Olive&#x27;s script" in body
    assert ">Owner</th>" in body
    assert "member@example.com" in body


def test_a_member_cannot_revoke_a_teammates_key(client_as, member, owner, workspace):
    issued = _issue(workspace, owner)
    response = client_as(member).post(reverse("gateway:revoke", args=[issued.api_key.pk]))
    assert response.status_code == 403
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is None
    assert not AuditEntry.objects.filter(action="api_key.revoked").exists()


def test_a_manager_revokes_a_members_key_and_it_stops_working(
    client_as, manager, member, workspace
):
    issued = _issue(workspace, member)
    response = client_as(manager).post(reverse("gateway:revoke", args=[issued.api_key.pk]))
    assert response.status_code == 303
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is not None
    with pytest.raises(services.KeyRejected):
        services.api_key_authenticate(issued.raw)
    page = client_as(member).get(reverse("gateway:keys")).content.decode()
    assert 'data-state="revoked"' in page
    assert "revoked" in page


def test_the_list_tells_active_revoked_and_expired_keys_apart(client_as, member, workspace):
    active = _issue(workspace, member, name="Active").api_key
    revoked = _issue(workspace, member, name="Revoked").api_key
    services.api_key_revoke(api_key=revoked, actor=member)
    expired = _issue(workspace, member, name="Expired").api_key
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    body = client_as(member).get(reverse("gateway:keys")).content.decode()
    for key, state in ((active, "active"), (revoked, "revoked"), (expired, "expired")):
        row = body.split(f'id="key-{key.pk}"')[1].split("</tr>")[0]
        assert f'data-state="{state}"' in row
    # Only keys that are not yet revoked offer the button.
    assert reverse("gateway:revoke", args=[revoked.pk]) not in body
    assert reverse("gateway:revoke", args=[active.pk]) in body


def test_the_empty_page_says_what_keys_are_for(client_as, member, workspace):
    body = client_as(member).get(reverse("gateway:keys")).content.decode()
    assert "No API keys yet" in body
    assert "ElevenLabs-compatible endpoint" in body
    assert "base_url" in body and "api_key" in body
    assert 'base_url="http://testserver"' in body


# --- Bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize(
    "data,field,message",
    [
        ({"name": "   "}, "name", "Give the key a name"),
        ({"name": "x" * 101}, "name", "at most 100 characters"),
        ({"expires_on": "2000-01-01"}, "expires_on", "Pick a day in the future"),
        ({"expires_on": "today"}, "expires_on", "Enter a valid date"),
        ({"monthly_cap": "-1"}, "monthly_cap", "cannot be negative"),
        ({"monthly_cap": "lots"}, "monthly_cap", "Enter a number"),
        ({"scopes": ["tts", "admin"]}, "scopes", "Unknown capability “admin”"),
    ],
    ids=["empty-name", "long-name", "past-expiry", "bad-date", "negative-cap", "bad-cap", "scope"],
)
def test_bad_input_is_a_400_with_the_message_next_to_the_field(
    client_as, member, workspace, data, field, message, htmx
):
    response = _create(client_as(member, **(HTMX if htmx else {})), **data)
    assert response.status_code == 400
    body = response.content.decode()
    assert ("<html" in body) is not htmx
    assert message in body
    # The error list belongs to the field (Django ties it to the input's id).
    errors = re.search(rf'<div class="field-errors" id="id_{field}_error">(.*?)</div>', body, re.S)
    assert errors and message in errors.group(1)
    assert not ApiKey.objects.exists()
    assert 'id="new-key"' not in body
    assert not AuditEntry.objects.filter(action="api_key.created").exists()


def test_today_is_not_a_future_expiry(client_as, member, workspace):
    response = _create(client_as(member), expires_on=timezone.localdate().isoformat())
    assert response.status_code == 400
    assert not ApiKey.objects.exists()


# --- Audit --------------------------------------------------------------------------------


def test_creating_and_revoking_are_audited(client_as, member, manager, workspace):
    _create(client_as(member), scopes=["tts"], REMOTE_ADDR="203.0.113.9")
    key = ApiKey.objects.get()
    created = AuditEntry.objects.get(action="api_key.created")
    assert created.workspace == workspace
    assert created.actor == member
    assert key.prefix in created.target
    client_as(manager).post(reverse("gateway:revoke", args=[key.pk]))
    revoked = AuditEntry.objects.get(action="api_key.revoked")
    assert revoked.actor == manager
    assert key.prefix in revoked.target
    # Revoking twice changes nothing and records nothing more.
    client_as(manager).post(reverse("gateway:revoke", args=[key.pk]))
    assert AuditEntry.objects.filter(action="api_key.revoked").count() == 1


# --- The management command ---------------------------------------------------------------


def _command(*args):
    out, err = StringIO(), StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_prints_only_a_working_key(member, workspace):
    out, _ = _command(
        "--email", "Member@Example.com", "--workspace", workspace.slug, "--name", "CI",
        "--scopes", "tts,voices", "--cap", "1000",
    )  # fmt: skip
    raw = out.strip()
    assert out == raw + "\n"  # nothing else on stdout: scripts can capture it
    key = services.api_key_authenticate(raw)
    assert (key.user, key.workspace, key.name) == (member, workspace, "CI")
    assert key.scopes == ["tts", "voices"]
    assert key.monthly_cap == Decimal("1000")
    assert key.key_hash == ApiKey.hash(raw)
    assert AuditEntry.objects.filter(action="api_key.created", actor=member).exists()


@pytest.mark.parametrize(
    "who,slug,extra,message",
    [
        ("viewer@example.com", None, [], "viewer"),
        ("member@example.com", "no-such-place", [], "No workspace with the slug"),
        ("nobody@example.com", None, [], "No user with the e-mail"),
        ("stranger@example.com", None, [], "is not a member"),
        ("member@example.com", None, ["--scopes", "tts,admin"], "Unknown scopes: admin"),
        ("member@example.com", None, ["--cap", "-5"], "--cap"),
        ("member@example.com", None, ["--cap", "many"], "--cap must be a number"),
    ],
    ids=["viewer", "unknown-workspace", "unknown-user", "not-a-member", "scope", "cap", "nan"],
)
def test_the_command_fails_clearly(member, viewer, workspace, who, slug, extra, message):
    make_user("stranger@example.com")
    with pytest.raises(CommandError, match=message):
        _command("--email", who, "--workspace", slug or workspace.slug, "--name", "CI", *extra)
    assert not ApiKey.objects.exists()


# --- Admin --------------------------------------------------------------------------------


def test_the_admin_lists_keys_without_their_hash(client_as, member, workspace):
    issued = _issue(workspace, member, name="Admin-visible")
    staff = make_user("staff@example.com")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client = client_as(staff)
    listing = client.get(reverse("admin:gateway_apikey_changelist"))
    assert listing.status_code == 200
    assert "Admin-visible" in listing.content.decode()
    detail = client.get(reverse("admin:gateway_apikey_change", args=[issued.api_key.pk]))
    assert detail.status_code == 200
    assert issued.api_key.key_hash not in detail.content.decode()
    assert client.get(reverse("admin:gateway_apikey_add")).status_code == 403


def test_the_admin_action_revokes_with_an_audit_entry(client_as, member, workspace):
    issued = _issue(workspace, member)
    staff = make_user("staff@example.com")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    response = client_as(staff).post(
        reverse("admin:gateway_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [issued.api_key.pk]},
    )
    assert response.status_code == 302
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is not None
    assert AuditEntry.objects.filter(action="api_key.revoked", actor=staff).exists()


def test_a_role_change_to_viewer_locks_the_page(client_as, member, workspace):
    Membership.objects.filter(user=member, workspace=workspace).update(role=Role.VIEWER)
    assert client_as(member).get(reverse("gateway:keys")).status_code == 403
