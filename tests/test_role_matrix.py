"""Every view × every role: who is allowed, who gets 403, who gets 404, and wrong methods."""

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from apps.jobs.models import Job, JobStatus
from apps.workspaces.models import ROLE_RANK, Invitation, Membership, Role

from .conftest import HTMX

RANK = {"owner": 3, "manager": 2, "member": 1, "viewer": 0}


@pytest.fixture
def cast(owner, manager, member, viewer, outsider, workspace):
    return {
        "owner": owner,
        "manager": manager,
        "member": member,
        "viewer": viewer,
        "outsider": outsider,
    }


@pytest.fixture
def things(workspace, member, viewer, owner):
    """Objects of ``workspace`` the object views act on."""
    queued = Job.objects.create(workspace=workspace, kind="workspace_export", created_by=member)
    failed = Job.objects.create(
        workspace=workspace, kind="workspace_export", created_by=member, status=JobStatus.FAILED
    )
    path = default_storage.save(f"exports/{workspace.pk}/t/export.zip", ContentFile(b"PK\x05\x06"))
    done = Job.objects.create(
        workspace=workspace,
        kind="workspace_export",
        created_by=owner,
        status=JobStatus.SUCCEEDED,
        result={"file": path, "filename": "export.zip"},
    )
    invitation = Invitation.objects.create(
        workspace=workspace, email="new@example.com", role=Role.MEMBER, token_hash="x" * 64
    )
    from apps.billing.models import RateCard

    rate = RateCard.objects.create(
        workspace=workspace, capability="tts", model_id="", unit="character", credits_per_unit=1
    )
    from apps.history.services import generation_save

    generation = generation_save(
        workspace=workspace,
        user=member,
        kind="tts",
        engine="local",
        audio=b"ID3 not really audio",
        content_type="audio/mpeg",
        recipe={"text": "Hi"},
        text="Hi",
    )
    return {
        "rate": rate,
        "generation": generation,
        "queued": queued,
        "failed": failed,
        "done": done,
        "invitation": invitation,
        "viewer_membership": Membership.objects.get(workspace=workspace, user=viewer),
    }


# (url name, object key or None, method, POST data, minimum role)
VIEWS = [
    ("workspaces:home", None, "get", None, Role.VIEWER),
    ("workspaces:members", None, "get", None, Role.VIEWER),
    ("workspaces:audit", None, "get", None, Role.MANAGER),
    ("workspaces:settings", None, "get", None, Role.OWNER),
    ("workspaces:settings", None, "post", {"name": "Renamed"}, Role.OWNER),
    ("workspaces:export", None, "post", {}, Role.OWNER),
    ("workspaces:engine", None, "get", None, Role.OWNER),
    ("workspaces:engine", None, "post", {"kind": "local"}, Role.OWNER),
    ("workspaces:engine_test", None, "post", {}, Role.OWNER),
    ("workspaces:invite", None, "post", {"email": "x@example.com", "role": "member"}, Role.MANAGER),
    ("workspaces:member_role", "viewer_membership", "post", {"role": "member"}, Role.MANAGER),
    ("workspaces:member_remove", "viewer_membership", "post", {}, Role.MANAGER),
    ("workspaces:invitation_revoke", "invitation", "post", {}, Role.MANAGER),
    ("jobs:list", None, "get", None, Role.VIEWER),
    ("jobs:detail", "queued", "get", None, Role.VIEWER),
    ("jobs:cancel", "queued", "post", {}, Role.MEMBER),
    ("jobs:retry", "failed", "post", {}, Role.MEMBER),
    ("jobs:download", "done", "get", None, Role.OWNER),
    ("billing:usage", None, "get", None, Role.VIEWER),
    ("billing:plan", None, "get", None, Role.MANAGER),
    ("billing:plan", None, "post", {"budget_period": "month"}, Role.OWNER),
    ("billing:plan_sync", None, "post", {}, Role.MANAGER),
    ("billing:budgets", None, "get", None, Role.VIEWER),
    ("billing:budget_set", "viewer_membership", "post", {"limit_credits": "100"}, Role.MANAGER),
    ("billing:rates", None, "get", None, Role.VIEWER),
    (
        "billing:rates",
        None,
        "post",
        {"capability": "tts", "unit": "character", "credits_per_unit": "0.5"},
        Role.OWNER,
    ),
    ("billing:rate_reset", "rate", "post", {}, Role.OWNER),
    ("billing:notifications", None, "get", None, Role.VIEWER),
    ("history:list", None, "get", None, Role.VIEWER),
    ("history:audio", "generation", "get", None, Role.VIEWER),
    # A member's own clip: its author (a member) or a manager may delete it.
    ("history:delete", "generation", "post", {}, Role.MEMBER),
    ("speech:page", None, "get", None, Role.VIEWER),
    # The whole take a clip is a part of: as History's clips, viewers may listen.
    ("speech:take_audio", "generation", "get", None, Role.VIEWER),
]

ROLES = ["owner", "manager", "member", "viewer", "outsider"]


def _url(name, key, things):
    return reverse(name, args=[things[key].pk]) if key else reverse(name)


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "name,key,method,data,minimum", VIEWS, ids=[f"{v[0]}-{v[2]}" for v in VIEWS]
)
def test_each_role_gets_the_right_answer(
    client_as, cast, things, workspace, name, key, method, data, minimum, role, htmx
):
    before = {
        "members": workspace.memberships.count(),
        "invitations": workspace.invitations.count(),
        "jobs": workspace.jobs.count(),
    }
    client = client_as(cast[role], **(HTMX if htmx else {}))
    url = _url(name, key, things)
    response = getattr(client, method)(url, data) if method == "post" else client.get(url)
    if role == "outsider":
        if key:
            assert response.status_code == 404, response.content[:300]
        else:
            # Not an object of ``workspace``: the outsider acts in their own workspace and
            # must never see or change this one's people or data.
            assert response.status_code < 500
            body = response.content.decode()
            assert "Acme audio" not in body
            assert "member@example.com" not in body
            workspace.refresh_from_db()
            assert workspace.name == "Acme audio"
            assert workspace.memberships.count() == before["members"]
            assert workspace.invitations.count() == before["invitations"]
            assert workspace.jobs.count() == before["jobs"]
        return
    if RANK[role] >= ROLE_RANK[Role(minimum)]:
        assert response.status_code in {200, 204, 302, 303}, (role, response.status_code)
        if response.status_code in {302, 303}:  # a success, not a bounce to sign-in
            assert not response["Location"].startswith(reverse("login"))
            assert response["Location"] != reverse("workspaces:create")
    else:
        assert response.status_code == 403, (role, response.status_code)


@pytest.mark.parametrize(
    "name,key,method,data,minimum", VIEWS, ids=[f"{v[0]}-{v[2]}" for v in VIEWS]
)
def test_anonymous_is_sent_to_sign_in(client_as, things, name, key, method, data, minimum):
    url = _url(name, key, things)
    client = client_as(None)
    response = client.post(url, data or {}) if method == "post" else client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# Settings pages take GET and POST; their other methods are checked on their own below.
TWO_METHODS = {
    "workspaces:settings",
    "workspaces:engine",
    "billing:plan",
    "billing:rates",
    "billing:notifications",
}
ONE_METHOD = [v for v in VIEWS if v[0] not in TWO_METHODS]


@pytest.mark.parametrize(
    "name,key,method,data,minimum", ONE_METHOD, ids=[f"{v[0]}-{v[2]}" for v in ONE_METHOD]
)
def test_the_wrong_method_is_rejected(client_as, owner, things, name, key, method, data, minimum):
    url = _url(name, key, things)
    client = client_as(owner)
    response = client.get(url) if method == "post" else client.post(url, {})
    assert response.status_code == 405


def test_settings_pages_reject_put_and_delete(client_as, owner, workspace):
    client = client_as(owner)
    for name in sorted(TWO_METHODS):
        assert client.put(reverse(name)).status_code == 405
        assert client.delete(reverse(name)).status_code == 405


def test_a_member_cannot_cancel_a_teammates_job(client_as, member, workspace, owner):
    job = Job.objects.create(workspace=workspace, kind="workspace_export", created_by=owner)
    response = client_as(member).post(reverse("jobs:cancel", args=[job.pk]))
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def test_a_malformed_or_foreign_id_is_a_404(client_as, owner, workspace, outsider):
    foreign = Job.objects.create(
        workspace=Membership.objects.get(user=outsider).workspace, kind="workspace_export"
    )
    client = client_as(owner)
    assert client.get(reverse("jobs:detail", args=[foreign.pk])).status_code == 404
    assert client.get(reverse("jobs:detail", args=[999999])).status_code == 404
