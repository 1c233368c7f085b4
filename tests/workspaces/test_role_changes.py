"""Role changes are explicit: a Save per row, a confirmation before a promotion to manager or
owner, an Undo right after; invitation revokes ask first too."""

from datetime import timedelta

import pytest
from django.urls import reverse

from apps.workspaces.models import AuditEntry, Invitation, Membership, Role
from tests.conftest import HTMX
from tests.factories import add_member, make_user


def _ms(workspace, user):
    return Membership.objects.get(workspace=workspace, user=user)


def _role_url(ms):
    return reverse("workspaces:member_role", args=[ms.pk])


def _undo_url(ms):
    return reverse("workspaces:member_role_undo", args=[ms.pk])


# --- The page ---------------------------------------------------------------------------


def test_the_role_select_saves_only_with_its_save_button(client_as, owner, member, workspace):
    body = client_as(owner).get(reverse("workspaces:members")).content.decode()
    form = body.split("data-role-form")[1].split("</form>")[0]
    assert 'hx-trigger="change"' not in body
    assert "hx-trigger" not in form
    assert "<noscript>" not in form
    assert ">Save<" in form


def test_viewers_are_told_who_invites(client_as, viewer, workspace):
    body = client_as(viewer).get(reverse("workspaces:members")).content.decode()
    assert "Only owners and managers invite people" in body


def test_an_empty_invitation_list_says_what_to_do(client_as, manager, workspace):
    body = client_as(manager).get(reverse("workspaces:members")).content.decode()
    assert "No invitations yet" in body and "Invite a teammate with the form above" in body


# --- Promotions ask first ----------------------------------------------------------------


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_promotion_without_confirmation_changes_nothing(
    client_as, owner, member, workspace, htmx
):
    target = _ms(workspace, member)
    response = client_as(owner, **(HTMX if htmx else {})).post(
        _role_url(target), {"role": "manager"}
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert ("<html" in body) is not htmx
    assert "data-confirm-role" in body
    assert "Make Mia Member a manager?" in body
    assert 'name="confirm" value="1"' in body
    target.refresh_from_db()
    assert target.role == Role.MEMBER
    assert not AuditEntry.objects.filter(action="member.role_changed").exists()


def test_a_promotion_to_owner_asks_too(client_as, owner, member, workspace):
    target = _ms(workspace, member)
    body = client_as(owner).post(_role_url(target), {"role": "owner"}).content.decode()
    assert "Make Mia Member an owner?" in body
    target.refresh_from_db()
    assert target.role == Role.MEMBER


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_confirmed_promotion_is_saved_and_offers_undo(client_as, owner, member, workspace, htmx):
    target = _ms(workspace, member)
    client = client_as(owner, **(HTMX if htmx else {}))
    response = client.post(_role_url(target), {"role": "manager", "confirm": "1"})
    target.refresh_from_db()
    assert target.role == Role.MANAGER
    entry = AuditEntry.objects.get(action="member.role_changed")
    if htmx:
        assert response.status_code == 200
        body = response.content.decode()
    else:
        assert response.status_code == 303
        body = client_as(owner).get(response["Location"]).content.decode()  # other session
        assert "data-undo" not in body  # the offer belongs to the session that made the change
        body = client.get(response["Location"]).content.decode()
    assert "member@example.com is now manager." in body
    assert "data-undo" in body and f'name="change" value="{entry.pk}"' in body
    if not htmx:  # shown once, like a message
        assert "data-undo" not in client.get(reverse("workspaces:members")).content.decode()


def test_a_demotion_saves_without_asking(client_as, manager, member, workspace):
    target = _ms(workspace, member)
    response = client_as(manager).post(_role_url(target), {"role": "viewer"})
    assert response.status_code == 303
    target.refresh_from_db()
    assert target.role == Role.VIEWER


def test_a_refused_promotion_is_refused_before_asking(client_as, manager, member, workspace):
    target = _ms(workspace, member)
    response = client_as(manager, **HTMX).post(_role_url(target), {"role": "owner"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Only an owner" in body and "data-confirm-role" not in body


def test_the_last_owner_cannot_be_demoted_even_confirmed(client_as, owner, workspace):
    mine = _ms(workspace, owner)
    response = client_as(owner, **HTMX).post(_role_url(mine), {"role": "member", "confirm": "1"})
    assert response.status_code == 400
    assert "last owner" in response.content.decode()
    mine.refresh_from_db()
    assert mine.role == Role.OWNER


# --- Undo --------------------------------------------------------------------------------


def _change(client, ms, role):
    client.post(_role_url(ms), {"role": role, "confirm": "1"})
    return AuditEntry.objects.filter(action="member.role_changed").latest("id")


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_undo_restores_the_previous_role_and_is_audited(client_as, owner, member, workspace, htmx):
    target = _ms(workspace, member)
    entry = _change(client_as(owner), target, "manager")
    response = client_as(owner, **(HTMX if htmx else {})).post(
        _undo_url(target), {"change": entry.pk}
    )
    assert response.status_code == (200 if htmx else 303)
    target.refresh_from_db()
    assert target.role == Role.MEMBER
    restored = AuditEntry.objects.get(action="member.role_restored")
    assert restored.actor == owner and restored.target == "member@example.com"
    assert restored.data == {"from": "manager", "to": "member", "undoes": entry.pk}
    if htmx:
        assert "is member again" in response.content.decode()
    # Once only.
    again = client_as(owner, **HTMX).post(_undo_url(target), {"change": entry.pk})
    assert again.status_code == 400
    assert "can no longer be undone" in again.content.decode()


def test_undo_is_refused_after_another_change(client_as, owner, member, workspace):
    target = _ms(workspace, member)
    client = client_as(owner, **HTMX)
    entry = _change(client, target, "manager")
    _change(client, target, "viewer")
    response = client.post(_undo_url(target), {"change": entry.pk})
    assert response.status_code == 400
    assert "changed again" in response.content.decode()
    target.refresh_from_db()
    assert target.role == Role.VIEWER


def test_undo_is_refused_to_someone_else_and_after_the_window(
    client_as, owner, manager, member, workspace
):
    target = _ms(workspace, member)
    entry = _change(client_as(owner), target, "viewer")
    response = client_as(manager, **HTMX).post(_undo_url(target), {"change": entry.pk})
    assert response.status_code == 400
    AuditEntry.objects.filter(pk=entry.pk).update(created_at=entry.created_at - timedelta(hours=1))
    response = client_as(owner, **HTMX).post(_undo_url(target), {"change": entry.pk})
    assert response.status_code == 400
    target.refresh_from_db()
    assert target.role == Role.VIEWER


def test_undo_of_another_members_change_is_refused(client_as, owner, member, viewer, workspace):
    entry = _change(client_as(owner), _ms(workspace, member), "viewer")
    other = _ms(workspace, viewer)
    response = client_as(owner, **HTMX).post(_undo_url(other), {"change": entry.pk})
    assert response.status_code == 400
    other.refresh_from_db()
    assert other.role == Role.VIEWER


@pytest.mark.parametrize("change", ["", "abc", "-1", "99999999999999999999999"])
def test_a_bad_undo_value_is_a_clear_400(client_as, owner, member, workspace, change):
    response = client_as(owner, **HTMX).post(_undo_url(_ms(workspace, member)), {"change": change})
    assert response.status_code == 400
    assert "can no longer be undone" in response.content.decode()


@pytest.mark.parametrize("role", ["owner", "manager", "member", "viewer", "outsider"])
def test_the_undo_role_matrix(client_as, owner, manager, member, viewer, outsider, workspace, role):
    cast = {"owner": owner, "manager": manager, "member": member, "viewer": viewer}
    cast["outsider"] = outsider
    target = _ms(workspace, viewer if role != "viewer" else member)
    previous = target.role
    entry = _change(client_as(owner), target, "manager")
    response = client_as(cast[role]).post(_undo_url(target), {"change": entry.pk})
    target.refresh_from_db()
    if role == "owner":
        assert response.status_code == 303
        assert target.role == previous
    elif role == "manager":  # not the author of the change
        assert response.status_code == 303  # redirect with the refusal as a message
        assert target.role == Role.MANAGER
    elif role == "outsider":
        assert response.status_code == 404
        assert target.role == Role.MANAGER
    else:
        assert response.status_code == 403
        assert target.role == Role.MANAGER


def test_undo_rejects_get(client_as, owner, member, workspace):
    assert client_as(owner).get(_undo_url(_ms(workspace, member))).status_code == 405


# --- Role matrix of saving ----------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "manager", "member", "viewer", "outsider"])
def test_who_may_save_a_role(client_as, owner, manager, member, viewer, outsider, workspace, role):
    cast = {"owner": owner, "manager": manager, "member": member, "viewer": viewer}
    cast["outsider"] = outsider
    extra = make_user("extra@example.com")
    target = add_member(workspace, extra, Role.VIEWER)
    response = client_as(cast[role]).post(_role_url(target), {"role": "member"})
    target.refresh_from_db()
    if role in {"owner", "manager"}:
        assert response.status_code == 303
        assert target.role == Role.MEMBER
    else:
        assert response.status_code == (404 if role == "outsider" else 403)
        assert target.role == Role.VIEWER


# --- Invitation revoke asks first ---------------------------------------------------------


def _invitation(workspace, manager):
    return Invitation.objects.create(
        workspace=workspace,
        email="new@example.com",
        role=Role.MEMBER,
        token_hash="x" * 64,
        invited_by=manager,
    )


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_revoking_an_invitation_asks_first(client_as, manager, workspace, htmx):
    invitation = _invitation(workspace, manager)
    url = reverse("workspaces:invitation_revoke", args=[invitation.pk])
    client = client_as(manager, **(HTMX if htmx else {}))
    response = client.post(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert ("<html" in body) is not htmx
    assert "Withdraw the invitation for new@example.com?" in body
    invitation.refresh_from_db()
    assert invitation.state == "pending"
    response = client.post(url, {"confirm": "1"})
    assert response.status_code == (200 if htmx else 303)
    invitation.refresh_from_db()
    assert invitation.state == "revoked"
    if htmx:
        assert 'id="invite"' in response.content.decode()
        assert "Invitation for new@example.com revoked." in response.content.decode()
    assert AuditEntry.objects.filter(action="invitation.revoked").count() == 1


def test_the_invitation_list_shows_human_states_and_dates(client_as, manager, workspace):
    _invitation(workspace, manager)
    body = client_as(manager).get(reverse("workspaces:members")).content.decode()
    row = body.split('id="invitation-')[1].split("</li>")[0]
    assert ">Pending<" in row
    assert "ago" not in row and "UTC" not in body
