"""Members page: roles, removal, last-owner protection, audit entries, htmx both ways."""

import pytest
from django.urls import reverse

from apps.workspaces.models import AuditEntry, Membership, Role
from tests.conftest import HTMX
from tests.factories import add_member, make_user


def _membership(workspace, user):
    return Membership.objects.get(workspace=workspace, user=user)


def test_members_page_lists_everyone_with_their_role(client_as, viewer, member, workspace):
    response = client_as(viewer).get(reverse("workspaces:members"))
    body = response.content.decode()
    assert response.status_code == 200
    for email in ["owner@example.com", "member@example.com", "viewer@example.com"]:
        assert email in body
    assert "Invite a teammate" not in body  # viewers cannot invite


def test_a_manager_changes_a_role_and_it_is_audited(client_as, manager, member, workspace):
    target = _membership(workspace, member)
    response = client_as(manager).post(
        reverse("workspaces:member_role", args=[target.pk]), {"role": "viewer"}
    )
    assert response.status_code == 303
    target.refresh_from_db()
    assert target.role == Role.VIEWER
    entry = AuditEntry.objects.get(action="member.role_changed")
    assert entry.actor == manager
    assert entry.target == "member@example.com"
    assert entry.data == {"from": "member", "to": "viewer"}
    assert entry.ip_address == "127.0.0.1"


def test_role_change_with_htmx_returns_the_table_partial(client_as, owner, member, workspace):
    target = _membership(workspace, member)
    response = client_as(owner, **HTMX).post(
        reverse("workspaces:member_role", args=[target.pk]), {"role": "manager", "confirm": "1"}
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body
    assert 'id="member-table"' in body
    assert "is now manager" in body


def test_an_unknown_role_is_a_clear_400_with_htmx(client_as, owner, member, workspace):
    target = _membership(workspace, member)
    response = client_as(owner, **HTMX).post(
        reverse("workspaces:member_role", args=[target.pk]), {"role": "emperor"}
    )
    assert response.status_code == 400
    assert "Choose one of the roles" in response.content.decode()
    target.refresh_from_db()
    assert target.role == Role.MEMBER


def test_the_last_owner_cannot_be_demoted(client_as, owner, workspace):
    mine = _membership(workspace, owner)
    response = client_as(owner, **HTMX).post(
        reverse("workspaces:member_role", args=[mine.pk]), {"role": "member"}
    )
    assert response.status_code == 400
    assert "last owner" in response.content.decode()
    mine.refresh_from_db()
    assert mine.role == Role.OWNER
    assert not AuditEntry.objects.filter(action="member.role_changed").exists()


def test_the_last_owner_cannot_leave_or_be_removed(client_as, owner, workspace):
    client = client_as(owner)
    response = client.post(reverse("workspaces:leave"), follow=True)
    assert "last owner" in response.content.decode()
    assert Membership.objects.filter(workspace=workspace, user=owner).exists()


def test_an_owner_can_be_demoted_once_there_is_another(client_as, owner, workspace):
    second = make_user("second@example.com")
    add_member(workspace, second, Role.OWNER)
    mine = _membership(workspace, owner)
    response = client_as(second).post(
        reverse("workspaces:member_role", args=[mine.pk]), {"role": "manager"}
    )
    assert response.status_code == 303
    mine.refresh_from_db()
    assert mine.role == Role.MANAGER


def test_a_manager_cannot_touch_an_owner_or_make_one(client_as, manager, member, owner, workspace):
    client = client_as(manager, **HTMX)
    owner_ms = _membership(workspace, owner)
    response = client.post(reverse("workspaces:member_remove", args=[owner_ms.pk]))
    assert response.status_code == 400
    assert "Only an owner" in response.content.decode()
    response = client.post(
        reverse("workspaces:member_role", args=[_membership(workspace, member).pk]),
        {"role": "owner"},
    )
    assert response.status_code == 400
    assert _membership(workspace, member).role == Role.MEMBER
    assert Membership.objects.filter(pk=owner_ms.pk).exists()


def test_a_manager_removes_a_member_and_it_is_audited(client_as, manager, member, workspace):
    target = _membership(workspace, member)
    response = client_as(manager).post(reverse("workspaces:member_remove", args=[target.pk]))
    assert response.status_code == 303
    assert not Membership.objects.filter(pk=target.pk).exists()
    entry = AuditEntry.objects.get(action="member.removed")
    assert (entry.actor, entry.target) == (manager, "member@example.com")


def test_a_member_can_leave(client_as, member, workspace):
    response = client_as(member).post(reverse("workspaces:leave"))
    assert response.status_code == 303
    assert not Membership.objects.filter(workspace=workspace, user=member).exists()
    assert AuditEntry.objects.filter(action="member.left", target="member@example.com").exists()


def test_switching_workspace_changes_what_pages_show(client_as, owner, workspace):
    from tests.factories import make_workspace

    other = make_workspace("Second studio", owner=owner)
    client = client_as(owner)
    assert "Acme audio" in client.get(reverse("workspaces:home")).content.decode()
    response = client.post(reverse("workspaces:switch"), {"workspace": other.pk})
    assert response.status_code == 303
    assert "<h1>Second studio</h1>" in client.get(reverse("workspaces:home")).content.decode()


def test_switching_to_a_foreign_workspace_is_refused(client_as, owner, workspace, outsider):
    foreign = Membership.objects.get(user=outsider).workspace
    client = client_as(owner)
    client.post(reverse("workspaces:switch"), {"workspace": foreign.pk})
    client.post(reverse("workspaces:switch"), {"workspace": "not-a-number"})
    assert "<h1>Acme audio</h1>" in client.get(reverse("workspaces:home")).content.decode()


def test_someone_without_a_workspace_is_asked_to_create_one(client_as, db, settings):
    settings.CHORUS_WORKSPACE_CREATION = "anyone"  # staff only by default (test_creation.py)
    lonely = make_user("lonely@example.com")
    client = client_as(lonely)
    response = client.get(reverse("workspaces:home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("workspaces:create")
    page = client.get(reverse("workspaces:create")).content.decode()
    assert "not in any workspace yet" in page
    response = client.post(reverse("workspaces:create"), {"name": "  "})
    assert response.status_code == 400
    response = client.post(reverse("workspaces:create"), {"name": "Lonely's studio ✨"})
    assert response.status_code == 303
    membership = Membership.objects.get(user=lonely)
    assert membership.role == Role.OWNER
    assert membership.workspace.name == "Lonely's studio ✨"


def test_audit_log_search_and_htmx_partial(client_as, owner, member, workspace):
    client = client_as(owner)
    client.post(
        reverse("workspaces:member_role", args=[_membership(workspace, member).pk]),
        {"role": "viewer"},
    )
    page = client.get(reverse("workspaces:audit")).content.decode()
    assert "Changed the role of member@example.com from member to viewer" in page
    assert "member.role_changed" not in page
    partial = client_as(owner, **HTMX).get(reverse("workspaces:audit"), {"q": "nothing-like-it"})
    body = partial.content.decode()
    assert "<html" not in body
    assert "Nothing matches" in body


def test_settings_rename_is_audited_and_validated(client_as, owner, workspace):
    client = client_as(owner)
    assert client.post(reverse("workspaces:settings"), {"name": ""}).status_code == 400
    assert client.post(reverse("workspaces:settings"), {"name": "Acme voices"}).status_code == 303
    workspace.refresh_from_db()
    assert workspace.name == "Acme voices"
    entry = AuditEntry.objects.get(action="workspace.renamed")
    assert entry.data == {"from": "Acme audio", "to": "Acme voices"}


@pytest.mark.parametrize("value", ["²", "9" * 40, "", "-1", "1e3"])
def test_odd_workspace_ids_in_the_switcher_are_refused_not_a_500(
    client_as, owner, workspace, value
):
    response = client_as(owner).post(reverse("workspaces:switch"), {"workspace": value})
    assert response.status_code == 303


def test_an_audit_search_with_a_nul_byte_is_refused_not_a_500(client_as, owner, workspace):
    # PostgreSQL cannot take a NUL: refused for every page (tests/test_bad_input.py).
    assert client_as(owner).get(reverse("workspaces:audit"), {"q": "a\x00b"}).status_code == 400
