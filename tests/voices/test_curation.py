"""One voice's page and its curation: approval workflow, notes, tags, collections, history.

Role matrix: viewers read; members propose and write notes; managers review and manage tags
and collections; another workspace's voice is a 404 for everything.
"""

import pytest
from django.urls import reverse

from apps.voices import services
from apps.voices.models import Approval, Collection, LibraryVoice, Tag, VoiceChange, VoiceNote
from apps.workspaces.services import ActionRefused


@pytest.fixture
def voice(workspace):
    return LibraryVoice.objects.create(
        workspace=workspace, engine="local", voice_id="v-ada", name="Ada",
        labels={"gender": "female", "accent": "british"}, gender="female", accent="british",
    )  # fmt: skip


@pytest.fixture
def foreign_voice(outsider):
    return LibraryVoice.objects.create(
        workspace=outsider.memberships.first().workspace, engine="local", voice_id="v-far",
        name="Far",
    )  # fmt: skip


def detail(voice):
    return reverse("voices:detail", args=[voice.pk])


@pytest.mark.parametrize("role", ["owner", "manager", "member", "viewer"])
def test_everyone_in_the_workspace_reads_the_voice_page(voice, client_as, request, role):
    response = client_as(request.getfixturevalue(role)).get(detail(voice))
    assert response.status_code == 200
    assert (
        "Ada" in response.text and "v-ada" in response.text and "<dd>British</dd>" in response.text
    )


def test_another_workspace_s_voice_is_a_404_for_reading_and_every_action(
    foreign_voice, client_as, owner, workspace
):
    client = client_as(owner)
    assert client.get(detail(foreign_voice)).status_code == 404
    pk = foreign_voice.pk
    for name in ("propose", "review", "note_add", "tag_add", "collection_add", "favourite"):
        assert client.post(reverse(f"voices:{name}", args=[pk]), {"name": "x"}).status_code == 404
    assert not VoiceChange.objects.exists()


# --- Approval workflow --------------------------------------------------------------------


def test_a_member_proposes_and_a_manager_approves(voice, client_as, member, manager):
    response = client_as(member).post(reverse("voices:propose", args=[voice.pk]))
    assert response.status_code == 303
    voice.refresh_from_db()
    assert (voice.approval, voice.approval_by) == (Approval.PROPOSED, member)
    page = client_as(manager).get(detail(voice)).text
    assert 'value="approve"' in page  # the manager sees the review form
    assert 'value="approve"' not in client_as(member).get(detail(voice)).text
    response = client_as(manager).post(
        reverse("voices:review", args=[voice.pk]), {"decision": "approve"}
    )
    assert response.status_code == 303
    voice.refresh_from_db()
    assert (voice.approval, voice.approval_by) == (Approval.APPROVED, manager)
    actions = list(voice.changes.order_by("pk").values_list("action", flat=True))
    assert actions == ["proposed for production", "approved"]


def test_a_rejection_needs_a_reason_and_shows_it(voice, client_as, member, manager):
    services.voice_propose(voice=voice, actor=member)
    url = reverse("voices:review", args=[voice.pk])
    refused = client_as(manager).post(url, {"decision": "reject", "reason": "  "})
    assert refused.status_code == 400 and "Say why" in refused.text
    voice.refresh_from_db()
    assert voice.approval == Approval.PROPOSED  # unchanged
    client_as(manager).post(url, {"decision": "reject", "reason": "Too breathy for ads"})
    voice.refresh_from_db()
    assert (voice.approval, voice.approval_reason) == (Approval.REJECTED, "Too breathy for ads")
    assert "Too breathy for ads" in client_as(member).get(detail(voice)).text
    # A rejected voice may be proposed again.
    services.voice_propose(voice=voice, actor=member)


def test_review_and_proposal_refusals(voice, member, manager, workspace):
    with pytest.raises(ActionRefused, match="propose it first"):
        services.voice_review(voice=voice, actor=manager, approve=True)
    services.voice_propose(voice=voice, actor=member)
    with pytest.raises(ActionRefused, match="already waiting"):
        services.voice_propose(voice=voice, actor=member)
    services.voice_review(voice=voice, actor=manager, approve=True)
    with pytest.raises(ActionRefused, match="already approved"):
        services.voice_propose(voice=voice, actor=member)
    gone = LibraryVoice.objects.create(
        workspace=workspace, engine="local", voice_id="v-gone", name="Gone",
        withdrawn_at="2026-01-01T00:00:00Z",
    )  # fmt: skip
    with pytest.raises(ActionRefused, match="withdrawn"):
        services.voice_propose(voice=gone, actor=member)


@pytest.mark.parametrize(
    ("role", "propose", "review"),
    [("owner", 303, 303), ("manager", 303, 303), ("member", 303, 403), ("viewer", 403, 403)],
)
def test_who_may_propose_and_review(voice, client_as, request, member, role, propose, review):
    client = client_as(request.getfixturevalue(role))
    assert client.post(reverse("voices:propose", args=[voice.pk])).status_code == propose
    LibraryVoice.objects.filter(pk=voice.pk).update(approval=Approval.PROPOSED)
    response = client.post(reverse("voices:review", args=[voice.pk]), {"decision": "approve"})
    assert response.status_code == review


# --- Notes, tags, collections -------------------------------------------------------------


def test_a_member_adds_a_note_with_author_and_time(voice, client_as, member, viewer):
    url = reverse("voices:note_add", args=[voice.pk])
    assert client_as(member).post(url, {"text": "Great for calm explainers ✨"}).status_code == 303
    note = VoiceNote.objects.get()
    assert (note.author, note.text) == (member, "Great for calm explainers ✨")
    page = client_as(viewer).get(detail(voice)).text
    assert "Great for calm explainers ✨" in page and "Mia Member" in page
    assert client_as(viewer).post(url, {"text": "nope"}).status_code == 403


@pytest.mark.parametrize("text", ["", "   ", "x" * (services.NOTE_MAX + 1)])
def test_an_empty_or_huge_note_is_refused_and_nothing_is_saved(voice, client_as, member, text):
    response = client_as(member).post(reverse("voices:note_add", args=[voice.pk]), {"text": text})
    assert response.status_code == 400
    assert "note" in response.text.lower()
    assert not VoiceNote.objects.exists() and not VoiceChange.objects.exists()


@pytest.mark.parametrize(("role", "status"), [("owner", 303), ("manager", 303),
                                              ("member", 403), ("viewer", 403)])  # fmt: skip
def test_managers_tag_and_collect(voice, client_as, request, role, status):
    client = client_as(request.getfixturevalue(role))
    tagged = client.post(reverse("voices:tag_add", args=[voice.pk]), {"name": " Warm  tone "})
    collected = client.post(
        reverse("voices:collection_add", args=[voice.pk]), {"name": "Audiobook narrators"}
    )
    assert (tagged.status_code, collected.status_code) == (status, status)
    if status == 303:
        assert [t.name for t in voice.tags.all()] == ["Warm tone"]
        assert [c.name for c in voice.collections.all()] == ["Audiobook narrators"]
    else:
        assert not Tag.objects.exists() and not Collection.objects.exists()


def test_tags_and_collections_are_removed_and_the_history_says_so(voice, client_as, manager):
    client = client_as(manager)
    client.post(reverse("voices:tag_add", args=[voice.pk]), {"name": "warm"})
    client.post(reverse("voices:tag_add", args=[voice.pk]), {"name": "warm"})  # once only
    client.post(reverse("voices:collection_add", args=[voice.pk]), {"name": "Ads"})
    tag, collection = Tag.objects.get(), Collection.objects.get()
    assert collection.created_by == manager
    client.post(reverse("voices:tag_remove", args=[voice.pk, tag.pk]))
    client.post(reverse("voices:collection_remove", args=[voice.pk, collection.pk]))
    assert not voice.tags.exists() and not voice.collections.exists()
    assert Tag.objects.filter(pk=tag.pk).exists()  # the team's tag stays for other voices
    actions = list(voice.changes.order_by("pk").values_list("action", "detail"))
    assert actions == [
        ("tagged", "warm"),
        ("added to collection", "Ads"),
        ("untagged", "warm"),
        ("removed from collection", "Ads"),
    ]
    page = client.get(detail(voice)).text
    assert "Removed from collection" in page and "Untagged" in page


def test_an_empty_tag_name_is_refused(voice, client_as, manager):
    response = client_as(manager).post(reverse("voices:tag_add", args=[voice.pk]), {"name": " "})
    assert response.status_code == 400 and "needs a name" in response.text
    assert not Tag.objects.exists()


def test_a_foreign_tag_cannot_be_removed_through_this_workspace(
    voice, client_as, manager, outsider
):
    far_tag = Tag.objects.create(workspace=outsider.memberships.first().workspace, name="far")
    response = client_as(manager).post(reverse("voices:tag_remove", args=[voice.pk, far_tag.pk]))
    assert response.status_code == 404
