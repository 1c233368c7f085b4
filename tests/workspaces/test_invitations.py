"""Invitations: sending, accepting (new and existing accounts) and every way a link goes bad."""

import re
from datetime import timedelta

import pytest
from django.core import mail, signing
from django.urls import reverse
from django.utils import timezone

from apps.workspaces import services
from apps.workspaces.models import AuditEntry, Invitation, Membership, Role, User
from tests.conftest import HTMX
from tests.factories import PASSWORD, make_user


def _invite(client, email="new@example.com", role="member"):
    return client.post(reverse("workspaces:invite"), {"email": email, "role": role})


def _link_from(response) -> str:
    match = re.search(r'value="(http://testserver/invite/[^"]+)"', response.content.decode())
    assert match, "the invitation link is shown to the inviter"
    return match.group(1).replace("http://testserver", "")


def test_inviting_emails_a_link_and_shows_it_once(
    client_as, manager, workspace, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = _invite(client_as(manager, **HTMX), "New@Example.com", "viewer")
    assert response.status_code == 200
    assert "<html" not in response.content.decode()
    link = _link_from(response)
    invitation = Invitation.objects.get()
    assert invitation.email == "new@example.com"
    assert invitation.role == Role.VIEWER
    assert link.split("/")[2] not in invitation.token_hash  # only a hash is stored
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["new@example.com"]
    assert link in mail.outbox[0].body
    assert AuditEntry.objects.filter(action="invitation.created", target="new@example.com").exists()
    # The link is not shown again on the next visit.
    page = client_as(manager).get(reverse("workspaces:members")).content.decode()
    assert link not in page


def test_a_new_person_accepts_by_creating_an_account(client_as, manager, workspace):
    link = _link_from(_invite(client_as(manager, **HTMX)))
    guest = client_as(None)
    page = guest.get(link)
    assert page.status_code == 200
    assert "Create account and join" in page.content.decode()
    response = guest.post(link, {"name": "Nia New", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 303
    user = User.objects.get(email="new@example.com")
    assert Membership.objects.get(user=user, workspace=workspace).role == Role.MEMBER
    assert guest.get(reverse("workspaces:home")).status_code == 200  # signed in
    # Single use: the same link now says so, clearly.
    again = client_as(None).get(link)
    assert again.status_code == 410
    assert "already used" in again.content.decode()


def test_signup_errors_are_shown_next_to_the_fields(client_as, manager, workspace):
    link = _link_from(_invite(client_as(manager, **HTMX)))
    response = client_as(None).post(link, {"password1": "short", "password2": "other"})
    body = response.content.decode()
    assert response.status_code == 400
    assert "differ" in body
    assert not User.objects.filter(email="new@example.com").exists()
    assert Invitation.objects.get().state == "pending"


def test_an_existing_account_signs_in_then_joins(client_as, manager, workspace):
    existing = make_user("new@example.com")
    link = _link_from(_invite(client_as(manager, **HTMX)))
    page = client_as(None).get(link).content.decode()
    assert "Sign in to accept" in page
    client = client_as(existing)
    assert "Join Acme audio" in client.get(link).content.decode()
    assert client.post(link).status_code == 303
    assert Membership.objects.get(user=existing, workspace=workspace).role == Role.MEMBER


def test_a_mismatched_account_gets_a_clear_page(client_as, manager, member, workspace):
    link = _link_from(_invite(client_as(manager, **HTMX)))
    response = client_as(member).post(link)
    assert response.status_code == 400
    assert "for someone else" in response.content.decode()
    assert Invitation.objects.get().state == "pending"


@pytest.mark.parametrize("change", ["expired", "revoked"])
def test_expired_and_revoked_links_get_a_clear_page(client_as, manager, workspace, change):
    link = _link_from(_invite(client_as(manager, **HTMX)))
    invitation = Invitation.objects.get()
    if change == "expired":
        invitation.expires_at = timezone.now() - timedelta(seconds=1)
    else:
        invitation.revoked_at = timezone.now()
    invitation.save()
    for client in (client_as(None), client_as(make_user("new@example.com"))):
        response = client.get(link)
        assert response.status_code == 410
        assert f'data-invitation-problem="{change}"' in response.content.decode()
        assert client.post(link, {}).status_code == 410
    assert Membership.objects.filter(workspace=workspace).count() == 2


@pytest.mark.parametrize(
    "token",
    ["garbage", "a" * 300, "%E2%9C%A8", signing.dumps([999999, "nonce"], salt="chorus.invitation")],
    # The signed token carries a time: ids by position, so every xdist worker collects alike.
    ids=["garbage", "too-long", "unicode", "unknown-invitation"],
)
def test_tampered_or_unknown_links_are_a_400_not_a_500(client_as, db, token):
    response = client_as(None).get(f"/invite/{token}/")
    assert response.status_code == 400
    assert "not valid" in response.content.decode()


def test_a_signature_with_the_wrong_nonce_is_refused(client_as, manager, workspace):
    _invite(client_as(manager, **HTMX))
    invitation = Invitation.objects.get()
    forged = signing.dumps([invitation.pk, "guessed"], salt="chorus.invitation", compress=True)
    assert client_as(None).get(f"/invite/{forged}/").status_code == 400


def test_reinviting_replaces_the_pending_link(client_as, manager, workspace):
    client = client_as(manager, **HTMX)
    first = _link_from(_invite(client))
    second = _link_from(_invite(client))
    assert first != second
    assert client_as(None).get(first).status_code == 410
    assert client_as(None).get(second).status_code == 200


def test_inviting_a_current_member_is_refused(client_as, manager, member, workspace):
    response = _invite(client_as(manager, **HTMX), "member@example.com")
    assert response.status_code == 400
    assert "already a member" in response.content.decode()
    assert not Invitation.objects.exists()


def test_only_owners_invite_owners(client_as, manager, owner, workspace):
    response = _invite(client_as(manager, **HTMX), "boss@example.com", "owner")
    assert response.status_code == 400
    assert not Invitation.objects.exists()
    response = _invite(client_as(owner, **HTMX), "boss@example.com", "owner")
    assert response.status_code == 200
    assert Invitation.objects.get().role == Role.OWNER


def test_a_bad_email_is_a_field_error(client_as, manager, workspace):
    response = _invite(client_as(manager), "not an email")
    assert response.status_code == 400
    assert "valid email" in response.content.decode().lower()


def test_revoking_is_audited_and_twice_is_refused(client_as, manager, workspace):
    _invite(client_as(manager, **HTMX))
    invitation = Invitation.objects.get()
    client = client_as(manager)
    url = reverse("workspaces:invitation_revoke", args=[invitation.pk])
    assert client.post(url, {"confirm": "1"}).status_code == 303
    invitation.refresh_from_db()
    assert invitation.state == "revoked"
    assert AuditEntry.objects.filter(action="invitation.revoked").count() == 1
    page = client.post(url, {"confirm": "1"}, follow=True).content.decode()
    assert "already revoked" in page
    assert AuditEntry.objects.filter(action="invitation.revoked").count() == 1


def test_accepting_twice_in_a_race_makes_one_membership(db, manager, workspace):
    issued = services.invitation_create(
        workspace=workspace,
        email="new@example.com",
        role="member",
        inviter_membership=Membership.objects.get(user=manager),
        base_url="http://testserver/",
    )
    user = make_user("new@example.com")
    services.invitation_accept(token=issued.token, user=user)
    with pytest.raises(services.InvitationInvalid) as exc:
        services.invitation_accept(token=issued.token, user=user)
    assert exc.value.reason == "used"
    assert Membership.objects.filter(user=user).count() == 1
