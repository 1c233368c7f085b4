"""Who may use each agent page: viewers list, open and listen; members create, edit, delete
and add knowledge; another workspace's ids are 404; anonymous people sign in."""

import pytest
from django.urls import reverse

from apps.agents.models import Agent, KnowledgeDocument

pytestmark = pytest.mark.django_db

ROLES = ("owner", "manager", "member", "viewer")
RANK = {"viewer": 0, "member": 1, "manager": 2, "owner": 3}


def views(agent, conversation, document):
    """(method, url, weakest role, is it about one object) for every agent page."""
    aid, cid, did = agent.agent_id, conversation.conversation_id, document.document_id
    return [
        ("get", reverse("agents:list"), "viewer", False),
        ("get", reverse("agents:new"), "member", False),
        ("post", reverse("agents:new"), "member", False),
        ("get", reverse("agents:detail", args=[aid]), "viewer", True),
        ("get", reverse("agents:version", args=[aid, 1]), "viewer", True),
        ("get", reverse("agents:edit", args=[aid]), "member", True),
        ("post", reverse("agents:edit", args=[aid]), "member", True),
        ("get", reverse("agents:conversation", args=[cid]), "viewer", True),
        ("get", reverse("agents:conversation_audio", args=[cid, "user"]), "viewer", True),
        ("get", reverse("agents:conversation_audio", args=[cid, "agent"]), "viewer", True),
        ("get", reverse("agents:knowledge"), "viewer", False),
        ("post", reverse("agents:knowledge_add"), "member", False),
        ("get", reverse("agents:document", args=[did]), "viewer", True),
        ("post", reverse("agents:knowledge_delete", args=[did]), "member", True),
        ("post", reverse("agents:delete", args=[aid]), "member", True),  # last: it deletes
    ]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reaches_what_its_role_allows(
    request, client_as, role, owner, manager, member, viewer, agent, conversation, document
):
    client = client_as(request.getfixturevalue(role))
    for method, url, weakest, _ in views(agent, conversation, document):
        response = getattr(client, method)(url)
        if RANK[role] >= RANK[weakest]:
            # 400: an empty form; 409: the document is in the agent's knowledge.
            assert response.status_code in (200, 303, 400, 409), (role, method, url, response)
        else:
            assert response.status_code == 403, (role, method, url, response.status_code)
    if RANK[role] >= RANK["member"]:
        assert not Agent.objects.filter(pk=agent.pk).exists()


def test_a_viewer_s_posts_change_nothing(client_as, viewer, agent, conversation, document):
    client = client_as(viewer)
    for method, url, _, _ in views(agent, conversation, document):
        if method == "post":
            data = {"name": "X", "prompt": "Changed", "kind": "text", "text": "Some words."}
            assert client.post(url, data).status_code == 403, url
    assert Agent.objects.filter(pk=agent.pk, name="Front desk").exists()
    assert agent.versions.count() == 1
    assert KnowledgeDocument.objects.filter(workspace=agent.workspace).count() == 1


def test_a_viewer_is_told_that_members_talk(client_as, viewer, agent):
    body = client_as(viewer).get(reverse("agents:detail", args=[agent.agent_id])).content.decode()
    assert "members talk" in body
    assert reverse("agents:edit", args=[agent.agent_id]) not in body
    assert reverse("agents:delete", args=[agent.agent_id]) not in body


def test_another_workspace_s_objects_are_not_found(client_as, outsider, agent, conversation,
                                                   document):  # fmt: skip
    client = client_as(outsider)
    for method, url, _weakest, one in views(agent, conversation, document):
        response = getattr(client, method)(url)
        if one:
            assert response.status_code == 404, (method, url, response.status_code)
    assert Agent.objects.filter(pk=agent.pk).exists()
    assert KnowledgeDocument.objects.filter(pk=document.pk).exists()
    for name in ("agents:list", "agents:knowledge"):
        body = client.get(reverse(name)).content.decode()
        assert "Front desk" not in body and "Opening hours" not in body


def test_anonymous_people_are_sent_to_sign_in(client_as, agent, conversation, document):
    client = client_as(None)
    for method, url, _, _ in views(agent, conversation, document):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "login" in response["Location"], url


def test_the_wrong_method_is_rejected(client_as, owner, agent, conversation, document):
    client = client_as(owner)
    two = {reverse("agents:new"), reverse("agents:edit", args=[agent.agent_id])}
    for method, url, _, _ in views(agent, conversation, document):
        if url in two:
            assert client.put(url).status_code == 405, url
        elif method == "post":
            assert client.get(url).status_code == 405, url
        else:
            assert client.post(url).status_code == 405, url


def test_malformed_and_unknown_ids_are_404(client_as, member, agent, conversation):
    client = client_as(member)
    for url in (
        reverse("agents:detail", args=["agent_nope"]),
        reverse("agents:version", args=[agent.agent_id, 99]),
        reverse("agents:conversation", args=["conv_nope"]),
        reverse("agents:conversation_audio", args=[conversation.conversation_id, "both"]),
        reverse("agents:document", args=["x" * 20]),
    ):
        assert client.get(url).status_code == 404, url
