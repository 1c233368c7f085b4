"""Who may use each project page: viewers read, members create and render, managers approve
and set the threshold; another workspace's project is a 404; anonymous people sign in."""

import pytest
from django.urls import reverse

from apps.projects.models import Render, RenderState

pytestmark = pytest.mark.django_db

ROLES = ("owner", "manager", "member", "viewer")
RANK = {"viewer": 0, "member": 1, "manager": 2, "owner": 3}


@pytest.fixture
def waiting(project, member):
    return Render.objects.create(
        workspace=project.workspace,
        project=project,
        scope="project",
        draft=False,
        block_ids=[],
        requested_by=member,
        state=RenderState.WAITING,
    )


def views(project, waiting):
    """(method, url, weakest role, is it about one object) for every view of the pages."""
    pid = project.public_id
    chapter = project.chapters.first().public_id
    return [
        ("get", reverse("projects:list"), "viewer", False),
        ("get", reverse("projects:new"), "member", False),
        ("post", reverse("projects:new"), "member", False),
        ("get", reverse("projects:detail", args=[pid]), "viewer", True),
        ("get", reverse("projects:renders", args=[pid]), "viewer", True),
        ("post", reverse("projects:edit", args=[pid]), "member", True),
        ("post", reverse("projects:chapter_add", args=[pid]), "member", True),
        ("post", reverse("projects:chapter_move", args=[pid, chapter]), "member", True),
        ("post", reverse("projects:chapter_delete", args=[pid, chapter]), "member", True),
        ("post", reverse("projects:speaker_save", args=[pid]), "member", True),
        ("post", reverse("projects:render", args=[pid]), "member", True),
        ("post", reverse("projects:render_cancel", args=[waiting.pk]), "member", True),
        ("get", reverse("projects:approvals"), "manager", False),
        ("post", reverse("projects:threshold"), "manager", False),
        ("post", reverse("projects:render_decide", args=[waiting.pk]), "manager", True),
        ("post", reverse("projects:delete", args=[pid]), "member", True),
    ]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reaches_what_its_role_allows(
    request, client_as, role, owner, manager, member, viewer, project, waiting
):
    user = request.getfixturevalue(role)
    client = client_as(user)
    for method, url, weakest, _ in views(project, waiting):
        response = getattr(client, method)(url)
        if RANK[role] >= RANK[weakest]:
            assert response.status_code in (200, 303, 400), (role, method, url, response)
        else:
            assert response.status_code == 403, (role, method, url, response.status_code)


def test_a_viewer_s_posts_change_nothing(client_as, viewer, project, waiting):
    client = client_as(viewer)
    for method, url, _, _ in views(project, waiting):
        if method == "post":
            assert (
                client.post(url, {"name": "X", "confirm": "1", "approve": "1"}).status_code == 403
            )
    waiting.refresh_from_db()
    assert waiting.state == RenderState.WAITING
    assert project.chapters.count() == 2
    project.refresh_from_db()
    assert project.name == "Harbour tales"


def test_another_workspace_s_objects_are_not_found(client_as, outsider, project, waiting):
    client = client_as(outsider)
    for method, url, _weakest, one in views(project, waiting):
        response = getattr(client, method)(url)
        if one:
            assert response.status_code == 404, (method, url, response.status_code)
    waiting.refresh_from_db()
    assert waiting.state == RenderState.WAITING
    assert client.get(reverse("projects:list")).content.decode().count("Harbour tales") == 0


def test_a_member_deletes_only_a_project_they_created(client_as, manager, member, project):
    from tests.factories import add_member, make_user

    other = make_user("other@example.com")
    add_member(project.workspace, other, "member")
    url = reverse("projects:delete", args=[project.public_id])
    assert client_as(other).post(url).status_code == 403
    assert client_as(manager).post(url).status_code == 303


def test_anonymous_people_are_sent_to_sign_in(client_as, project, waiting):
    client = client_as(None)
    for method, url, _, _ in views(project, waiting):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "login" in response["Location"], url
