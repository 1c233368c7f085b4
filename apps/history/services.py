"""Keep generated audio: one ``Generation`` per clip, written before the client gets it."""

import logging
import os
import shutil
import zipfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

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


# --- The History page ------------------------------------------------------------------------


def history_search(
    generations,
    *,
    q: str = "",
    kind: str = "",
    voice: str = "",
    member: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    item: str = "",
    take: str = "",
):
    """``generations`` (a workspace's, already scoped) narrowed by the page's filters:
    ``q`` in the text of the recipe or the voice's name, a kind, a voice id, a member, the
    moments ``since`` (included) and ``until`` (excluded), one history item, the parts of
    one take."""
    if q:
        generations = generations.filter(Q(text__icontains=q) | Q(voice_name__icontains=q))
    if kind:
        generations = generations.filter(kind=kind)
    if voice:
        generations = generations.filter(voice_id=voice)
    if member is not None:
        generations = generations.filter(user_id=member)
    if since is not None:
        generations = generations.filter(created_at__gte=since)
    if until is not None:
        generations = generations.filter(created_at__lt=until)
    if item:
        generations = generations.filter(history_item_id=item)
    if take:
        generations = generations.filter(kind=GenerationKind.TTS, recipe__take__id=take)
    return generations


def history_voices(*, workspace, limit: int = 300) -> list[tuple[str, str]]:
    """The voices the workspace's clips were made with, as ``(voice_id, name)`` by name
    (design previews' voices are not voices of the library yet, so they are left out)."""
    rows = (
        Generation.objects.filter(workspace=workspace)
        .exclude(voice_id="")
        .exclude(kind=GenerationKind.DESIGN_PREVIEW)
        .order_by("voice_name", "voice_id")
        .values_list("voice_id", "voice_name")
        .distinct()[:limit]
    )
    seen, voices = set(), []
    for voice_id, name in rows:
        if voice_id not in seen:
            seen.add(voice_id)
            voices.append((voice_id, name or voice_id))
    return voices


# Where a clip's voice and design are shown: the apps above history (the voice library)
# install a provider at start-up, ``(workspace, generations) -> {generation pk: links}``,
# the links being any of ``voice_url``, ``design_url`` and ``design_name``.
ClipLinks = Callable[..., dict[int, dict]]
_clip_link_providers: list[ClipLinks] = []


def clip_links_install(provider: ClipLinks) -> None:
    """Add a provider of clip links (once, however often it is installed)."""
    if provider not in _clip_link_providers:
        _clip_link_providers.append(provider)


def clip_links(*, workspace, generations: list[Generation]) -> dict[int, dict]:
    """The links of each clip, by primary key, from every installed provider."""
    links: dict[int, dict] = {}
    for provider in _clip_link_providers:
        for pk, found in (provider(workspace=workspace, generations=generations) or {}).items():
            links.setdefault(pk, {}).update(found)
    return links


def design_group_key(generation: Generation) -> str:
    """What the previews of one design share: the call that made them."""
    if generation.request_id:
        return f"request:{generation.request_id}"
    if generation.usage_event_id:
        return f"event:{generation.usage_event_id}"
    return f"clip:{generation.pk}"


def take_mark(generation: Generation) -> dict | None:
    """The mark of a part of a speech take made in parts (``recipe["take"]``: its ``id``, its
    ``part`` and how many ``parts`` the text was split into); ``None`` for a clip alone (a
    take in one part, any other kind, a clip made before takes had parts)."""
    recipe = generation.recipe if isinstance(generation.recipe, dict) else {}
    take = recipe.get("take")
    if generation.kind != GenerationKind.TTS or not isinstance(take, dict):
        return None
    token, parts, part = take.get("id"), take.get("parts"), take.get("part")
    if not isinstance(token, str) or not token or not isinstance(parts, int) or parts < 2:
        return None
    if not isinstance(part, int) or part < 1:
        return None
    return take


def history_takes(*, workspace, generations: Iterable[Generation]) -> dict[str, dict]:
    """The whole takes the clips of ``generations`` are parts of, by take id: every part the
    workspace keeps (not only those on the page), for the take's heading: its first part,
    how many parts were made of how many, the total duration and cost, and why it stopped."""
    tokens = {mark["id"] for g in generations if (mark := take_mark(g)) is not None}
    if not tokens:
        return {}
    parts: dict[str, list[Generation]] = {}
    found = Generation.objects.filter(
        workspace=workspace, kind=GenerationKind.TTS, recipe__take__id__in=sorted(tokens)
    ).select_related("user", "usage_event")
    for generation in found:
        mark = take_mark(generation)
        if mark is not None and mark["id"] in tokens:
            parts.setdefault(mark["id"], []).append(generation)
    takes: dict[str, dict] = {}
    for token, clips in parts.items():
        clips.sort(key=lambda g: (g.recipe["take"]["part"], g.pk))
        events = [g.usage_event for g in clips if g.usage_event is not None]
        stopped = next(
            (str(note) for g in reversed(clips) if (note := g.recipe["take"].get("stopped"))), ""
        )
        takes[token] = {
            "id": token,
            "first": clips[0],
            "parts": max(g.recipe["take"]["parts"] for g in clips),
            "made": len(clips),
            "seconds": sum(g.duration_seconds or 0 for g in clips),
            "cost": sum((e.charged for e in events), Decimal(0)) if events else None,
            "stopped": stopped,
            "complete": all(g.complete for g in clips),
        }
    return takes


def history_entries(
    generations: Iterable[Generation], links: dict[int, dict], takes: dict[str, dict] | None = None
) -> list[dict]:
    """The page's rows: each clip alone, except a design's previews, which are one entry
    (``{"design": ..., "previews": [...]}``) named after the design, in the order made, and
    the parts of a take in parts (``takes``, from ``history_takes``), which are one entry
    (``{"take": ..., "clips": [...]}``) headed by the whole take, its parts in their order.

    A take's entry holds the parts among ``generations`` only (a search that found one
    part, a page that ends within the take): ``shown`` says how many, against ``made``."""
    entries: list[dict] = []
    groups: dict[str, dict] = {}
    take_groups: dict[str, dict] = {}
    takes = takes or {}
    for generation in generations:
        generation.links = links.get(generation.pk, {})
        mark = take_mark(generation)
        if mark is not None and mark["id"] in takes:
            group = take_groups.get(mark["id"])
            if group is None:
                group = {**takes[mark["id"]], "take": True, "clips": []}
                take_groups[mark["id"]] = group
                entries.append(group)
            generation.part = mark["part"]
            generation.parts = group["parts"]
            group["clips"].append(generation)
            continue
        if generation.kind != GenerationKind.DESIGN_PREVIEW:
            entries.append({"clip": generation})
            continue
        key = design_group_key(generation)
        group = groups.get(key)
        if group is None:
            name = generation.links.get("design_name") or (generation.recipe or {}).get(
                "voice_description"
            )
            group = {
                "key": key,
                "name": name or "Voice design",
                "url": generation.links.get("design_url", ""),
                "first": generation,
                "previews": [],
            }
            groups[key] = group
            entries.append(group)
        group["previews"].append(generation)
    for group in take_groups.values():
        group["clips"].sort(key=lambda g: (g.part, g.pk))
        group["shown"] = len(group["clips"])
    for group in groups.values():
        group["previews"].sort(key=lambda g: (g.recipe or {}).get("preview_index", 0))
        for index, preview in enumerate(group["previews"]):
            number = (preview.recipe or {}).get("preview_index", index)
            number = number if isinstance(number, int) and 0 <= number < 8 else index
            preview.letter = "ABCDEFGH"[number] if number < 8 else str(number + 1)
    return entries


def _arcname(generation: Generation, taken: set[str]) -> str:
    """A clip's file name in a ZIP: when, kind, voice and its id, never the same twice."""
    stamp = timezone.localtime(generation.created_at).strftime("%Y-%m-%d_%H%M%S")
    extension = EXTENSIONS.get(generation.content_type.split(";")[0].strip(), "bin")
    parts = [
        stamp,
        generation.kind,
        slugify(generation.voice_name)[:40],
        generation.history_item_id,
    ]
    name = "-".join(p for p in parts if p) + f".{extension}"
    while name in taken:
        name = f"{generation.pk}-{name}"
    taken.add(name)
    return name


def generations_zip(*, generations: Iterable[Generation], out) -> list[Generation]:
    """Write the clips' files into a ZIP on ``out`` (a file opened for writing), copied in
    chunks, never a whole selection in memory; returns the clips whose file is missing (they
    are named in ``missing.txt`` inside the ZIP instead)."""
    missing, taken = [], set()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for generation in generations:
            storage, name = generation.file.storage, generation.file.name
            if not name or not storage.exists(name):
                missing.append(generation)
                continue
            with (
                storage.open(name, "rb") as source,
                archive.open(_arcname(generation, taken), "w", force_zip64=True) as target,
            ):
                shutil.copyfileobj(source, target, 1024 * 1024)
        if missing:
            archive.writestr(
                "missing.txt",
                "These clips have no audio file any more:\n"
                + "".join(f"{g.history_item_id}\n" for g in missing),
            )
    return missing


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
