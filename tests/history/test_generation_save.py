"""``generation_save`` keeps a clip's file and row together (issue 13 made it cheaper): the
file is written where the field would put it, and outside a transaction (a stream's clip)
the row is one INSERT, removed again with the file if a ``post_save`` receiver fails."""

import pytest
from django.db import transaction
from django.db.models.signals import post_save

from apps.history.models import Generation
from apps.history.services import generation_save

from ..factories import make_user, make_workspace


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def save(workspace, user, **extra):
    return generation_save(
        workspace=workspace, user=user, kind="tts", engine="local", audio=b"ID3-audio",
        content_type="audio/mpeg", recipe={"text": "Hi"}, voice_id="v-1", text="Hi", **extra,
    )  # fmt: skip


def files(media):
    return sorted(p for p in media.rglob("*") if p.is_file())


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_clip_is_kept_with_its_file(media):
    user = make_user()
    workspace = make_workspace(owner=user)
    assert not transaction.get_connection().in_atomic_block
    clip = save(workspace, user)
    stored = Generation.objects.get(pk=clip.pk)
    assert stored.file.name == f"generations/{workspace.pk}/{clip.history_item_id}/tts.mp3"
    assert stored.file.read() == b"ID3-audio"
    assert files(media) == [media / stored.file.name]
    assert oct((media / stored.file.name).stat().st_mode & 0o777) == "0o640"


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_failing_receiver_leaves_neither_row_nor_file(media):
    user = make_user()
    workspace = make_workspace(owner=user)

    def fails(**_signal):
        raise RuntimeError("receiver failed")

    post_save.connect(fails, sender=Generation, dispatch_uid="test-fails")
    try:
        with pytest.raises(RuntimeError):
            save(workspace, user)
    finally:
        post_save.disconnect(dispatch_uid="test-fails", sender=Generation)
    assert not Generation.objects.exists()
    assert files(media) == []


def test_an_id_chosen_in_advance_that_is_taken_gets_another_file_name(workspace, owner, media):
    first = save(workspace, owner, history_item_id="chosen-id")
    Generation.objects.filter(pk=first.pk).update(history_item_id="moved")
    second = save(workspace, owner, history_item_id="chosen-id")
    assert second.file.name != first.file.name
    assert second.file.name.startswith(f"generations/{workspace.pk}/chosen-id/tts")
    assert len(files(media)) == 2
