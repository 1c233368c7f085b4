"""Who may create a workspace is a site setting: staff by default, anyone when the administrator
says so; everyone else joins by invitation."""

import pytest
from django.urls import reverse

from apps.workspaces import services
from apps.workspaces.models import Membership, Role, Workspace

from ..factories import PASSWORD, make_user

NEW = reverse("workspaces:create")


@pytest.fixture
def staff(db):
    user = make_user("staff@example.com")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def test_a_non_staff_person_cannot_create_a_workspace(client_as, owner, workspace):
    client = client_as(owner)
    page = client.get(NEW)
    assert page.status_code == 403
    assert "only site administrators create workspaces" in page.content.decode()
    response = client.post(NEW, {"name": "Side project"})
    assert response.status_code == 403
    assert not Workspace.objects.filter(name="Side project").exists()


def test_the_new_workspace_link_shows_only_to_those_who_may(client_as, owner, workspace, staff):
    home = client_as(owner).get(reverse("workspaces:home")).content.decode()
    assert NEW not in home
    Membership.objects.create(workspace=workspace, user=staff, role=Role.MEMBER)
    home = client_as(staff).get(reverse("workspaces:home")).content.decode()
    assert NEW in home


def test_someone_without_a_workspace_is_told_to_ask_for_an_invitation(client_as, db):
    client = client_as(make_user("lonely@example.com"))
    response = client.get(reverse("workspaces:home"))
    assert response["Location"] == NEW
    page = client.get(NEW)
    assert page.status_code == 403
    assert "invitation link" in page.content.decode()


def test_staff_create_workspaces(client_as, staff):
    response = client_as(staff).post(NEW, {"name": "Studio B"})
    assert response.status_code == 303
    membership = Membership.objects.get(user=staff)
    assert (membership.workspace.name, membership.role) == ("Studio B", Role.OWNER)


def test_the_setting_can_let_anyone_create_one(client_as, owner, workspace, settings):
    settings.CHORUS_WORKSPACE_CREATION = "anyone"
    client = client_as(owner)
    assert NEW in client.get(reverse("workspaces:home")).content.decode()
    assert client.post(NEW, {"name": "Side project"}).status_code == 303
    assert Workspace.objects.filter(name="Side project").exists()


def test_invited_people_still_join_by_invitation(client_as, manager, workspace):
    issued = services.invitation_create(
        workspace=workspace,
        email="new@example.com",
        role=Role.MEMBER,
        inviter_membership=Membership.objects.get(user=manager),
        base_url="http://testserver/",
    )
    guest = client_as()
    response = guest.post(
        reverse("invitation_accept", args=[issued.token]),
        {"name": "Nia New", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 303
    membership = Membership.objects.get(user__email="new@example.com")
    assert membership.workspace == workspace and not membership.user.is_staff
    home = guest.get(reverse("workspaces:home"))
    assert home.status_code == 200 and NEW not in home.content.decode()


def test_sign_in_and_demo_setup_are_unaffected(db):
    """``chorus_setup`` makes its administrator (staff) the demo workspace's owner."""
    demo = services.demo_bootstrap(email="admin@example.com", password=PASSWORD)
    assert demo.user.is_staff and services.workspace_creation_allowed(demo.user)
    assert Membership.objects.get(user=demo.user).workspace == demo.workspace
