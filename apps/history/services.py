"""Keep generated audio: one ``Generation`` per clip, written before the client gets it."""

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.db import transaction
from django.db.models import Q

from .models import Generation, GenerationKind

log = logging.getLogger(__name__)

EXTENSIONS = {
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/pcm": "pcm",
    "audio/basic": "ulaw",
    "audio/alaw": "alaw",
    "audio/ogg": "ogg",
    "audio/opus": "opus",
    "audio/webm": "webm",
    "audio/flac": "flac",
    "video/mp4": "mp4",
}


def generation_save(
    *,
    workspace,
    user,
    kind: str,
    engine: str,
    audio: bytes,
    content_type: str,
    recipe: dict,
    source: str = "ui",
    api_key_id: int | None = None,
    model_id: str = "",
    voice_id: str = "",
    voice_name: str = "",
    text: str = "",
    duration_seconds: float | None = None,
    usage_event=None,
    complete: bool = True,
    history_item_id: str | None = None,
) -> Generation:
    """Store ``audio`` and its recipe; the file is removed again if the row cannot be saved.

    ``history_item_id`` may be chosen in advance (a job that stores its clip under an id its
    caller already knows, so a retried job finds the clip instead of making a second one).
    """
    generation = Generation(
        workspace=workspace,
        user=user,
        kind=kind,
        source=source,
        api_key_id=api_key_id,
        engine=engine,
        model_id=model_id or "",
        voice_id=voice_id or "",
        voice_name=(voice_name or "")[:200],
        text=text or "",
        recipe=recipe,
        content_type=content_type,
        size_bytes=len(audio),
        duration_seconds=duration_seconds,
        usage_event=usage_event,
        request_id=getattr(usage_event, "request_id", "") or "",
        complete=complete,
    )
    if history_item_id:
        generation.history_item_id = history_item_id
    extension = EXTENSIONS.get(content_type.split(";")[0].strip(), "bin")
    if not _file_write(generation, f"{kind}.{extension}", audio):
        generation.file.save(f"{kind}.{extension}", ContentFile(audio), save=False)
    connection = transaction.get_connection()
    if connection.in_atomic_block:  # the caller's transaction (``kept_together``)
        try:
            with transaction.atomic():
                generation.save()
        except Exception:
            generation.file.delete(save=False)
            raise
        return generation
    # Outside a transaction (a stream's clip, kept after its settlement) the row is one INSERT
    # in autocommit, without the two round trips of a transaction around it; should a
    # ``post_save`` receiver then fail, the row is deleted again before the file.
    try:
        generation.save()
    except Exception:
        if generation.pk is not None and not generation._state.adding:
            try:
                Generation.objects.filter(pk=generation.pk).delete()
            except Exception:  # the row stays, so its file does too
                log.exception("removing generation %s after a failed save failed", generation.pk)
                raise
        generation.file.delete(save=False)
        raise
    return generation


_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _file_write(generation: Generation, filename: str, audio: bytes) -> bool:
    """Write a clip's file straight to the default file system storage, under the name the
    field would give it (a new folder per clip: ``generations/<workspace>/<item id>/``):
    what ``FieldFile.save`` does, without its name checks and file lock, which a new file
    in a new folder does not need. False (nothing written) when the storage is another or
    the name is taken (a clip stored again under an id chosen in advance): then the field
    saves it."""
    field = generation.file
    storage = field.storage
    # (``__class__``: the default storage is a lazy object standing for the real one.)
    if storage.__class__ is not FileSystemStorage or storage.directory_permissions_mode is not None:
        return False
    name = field.field.generate_filename(generation, filename)
    full_path = storage.path(name)
    os.makedirs(os.path.dirname(full_path), exist_ok=True)
    try:
        fd = os.open(full_path, _OPEN_FLAGS, 0o666)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(audio)
    except BaseException:
        os.unlink(full_path)
        raise
    if storage.file_permissions_mode is not None:
        os.chmod(full_path, storage.file_permissions_mode)
    same_group = getattr(storage, "_ensure_location_group_id", None)  # as the storage does
    if same_group is not None:
        same_group(full_path)
    field.name = name
    field._committed = True
    return True


@contextmanager
def kept_together():
    """One transaction for the clips of a call and its settlement: ``saved.append`` each
    ``Generation``; if the transaction rolls back, their files are removed too, so a clip is
    never kept unpaid, nor paid and lost."""
    saved: list[Generation] = []
    try:
        with transaction.atomic():
            yield saved
    except BaseException:
        for generation in saved:
            try:
                generation.file.delete(save=False)
            except Exception:
                log.exception("removing the file of an unsaved generation failed")
        raise


def generation_delete(*, generation: Generation) -> None:
    """Remove a clip and its file. Its ledger row stays: what was paid is never unrecorded."""
    file_name = generation.file.name
    storage = generation.file.storage
    generation.delete()
    if file_name:
        try:
            storage.delete(file_name)
        except OSError:  # the row is gone; a file left behind is only disk space
            log.warning("could not delete the file of generation %s", file_name, exc_info=True)


def generation_can_delete(*, generation: Generation, user, membership) -> bool:
    """Owners and managers delete any clip of the workspace; members their own."""
    if membership is None or membership.workspace_id != generation.workspace_id:
        return False
    if membership.can_manage:
        return True
    return membership.can_create and generation.user_id == user.pk


# --- What /v1/history serves ---------------------------------------------------------------

# ElevenLabs' ``source`` of a history item, by kind (music and sound effects have none there).
KIND_SOURCES = {
    GenerationKind.TTS: "TTS",
    GenerationKind.DUB: "Dubbing",
    GenerationKind.DESIGN_PREVIEW: "VoiceGeneration",
}
SOURCE_KINDS = {source: kind for kind, source in KIND_SOURCES.items()}
MAX_HISTORY_PAGE = 1000


class HistoryCursorUnknown(ValueError):
    """``start_after_history_item_id`` names no item the caller can see."""


@dataclass(frozen=True)
class HistoryPage:
    items: list[Generation]
    has_more: bool
    last_history_item_id: str | None
    scanned_until: int | None  # date_unix of the last item


def history_page(
    *,
    workspace,
    user,
    page_size: int = 100,
    start_after: str | None = None,
    voice_id: str | None = None,
    model_id: str | None = None,
    date_before_unix: int | None = None,
    date_after_unix: int | None = None,
    sort_direction: str = "desc",
    search: str | None = None,
    source: str | None = None,
) -> HistoryPage:
    """One page of ``user``'s clips in ``workspace``, newest first unless ``sort_direction``.

    The page is keyset-paginated: ``start_after`` is the last item of the previous page, so
    clips made while someone pages through are neither skipped nor repeated.
    """
    items = Generation.objects.filter(workspace=workspace, user=user)
    if voice_id:
        items = items.filter(voice_id=voice_id)
    if model_id:
        items = items.filter(model_id=model_id)
    if date_before_unix is not None:
        items = items.filter(created_at__lt=_from_unix(date_before_unix))
    if date_after_unix is not None:
        items = items.filter(created_at__gte=_from_unix(date_after_unix))
    if search:
        items = items.filter(text__icontains=search)
    if source:
        kind = SOURCE_KINDS.get(source)
        items = items.filter(kind=kind) if kind else items.none()
    ascending = sort_direction == "asc"
    if start_after:
        anchor = (
            Generation.objects.filter(workspace=workspace, user=user, history_item_id=start_after)
            .values("created_at", "id")
            .first()
        )
        if anchor is None:
            raise HistoryCursorUnknown(f"There is no history item {start_after!r}.")
        when, pk = anchor["created_at"], anchor["id"]
        if ascending:
            items = items.filter(Q(created_at__gt=when) | Q(created_at=when, id__gt=pk))
        else:
            items = items.filter(Q(created_at__lt=when) | Q(created_at=when, id__lt=pk))
    order = ["created_at", "id"] if ascending else ["-created_at", "-id"]
    size = max(1, min(MAX_HISTORY_PAGE, page_size))
    rows = list(items.select_related("usage_event").order_by(*order)[: size + 1])
    page, more = rows[:size], len(rows) > size
    last = page[-1] if page else None
    return HistoryPage(
        items=page,
        has_more=more,
        last_history_item_id=last.history_item_id if last else None,
        scanned_until=int(last.created_at.timestamp()) if last else None,
    )


def _from_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
