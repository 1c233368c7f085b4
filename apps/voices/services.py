"""The voice library: syncing the engine's voices in, finding voices, and curating them.

Views and jobs call these; each takes the workspace explicitly, so every row stays scoped.
"""

from dataclasses import dataclass, field

from django.core.paginator import Page, Paginator
from django.db import transaction
from django.db.models import CharField, Exists, F, OuterRef, Q, Value
from django.utils import timezone

from apps.engines.base import Voice, VoiceQuery
from apps.generation.engine import engine_for
from apps.jobs.models import Job
from apps.workspaces.services import ActionRefused

from .models import (
    LABELS,
    Approval,
    Collection,
    Favourite,
    LibraryFacets,
    LibraryVoice,
    Tag,
    VoiceChange,
    VoiceNote,
    VoiceSource,
)
from .services_preview import preview_available

PAGE_SIZE = 24
SYNC_PAGE_SIZE = 100
SYNC_MAX_PAGES = 500  # 50,000 voices: a runaway paging token stops here
# What a sync writes over; the team's own fields (tags, approval, notes…) are never touched.
SYNCED_FIELDS = ("name", "category", "source", "labels", "description", "preview_url", *LABELS)
SORTS = {
    "name": ("name", "pk"),
    "newest": ("-created_at", "-pk"),
    "most_used": ("-use_count", "name", "pk"),
    "recent": ("-last_used_at", "name", "pk"),
}


# --- Sync from the engine -----------------------------------------------------------------


def _source_of(voice: Voice) -> str:
    if voice.category == "cloned":
        return VoiceSource.CLONED
    if voice.category == "generated":
        return VoiceSource.DESIGNED
    return VoiceSource.ENGINE


def _fields_of(voice: Voice) -> dict:
    labels = {str(k): str(v) for k, v in (voice.labels or {}).items()}
    row = {
        "name": (voice.name or voice.voice_id)[:200],
        "category": voice.category or "premade",
        "source": _source_of(voice),
        "labels": labels,
        "description": voice.description or "",
    }
    # An engine that gives no preview (the local engine's designs) keeps the one the studio
    # set (the saved design preview).
    if voice.preview_url:
        row["preview_url"] = voice.preview_url[:500]
    limits = {"gender": 40, "age": 40, "accent": 60, "language": 40, "use_case": 60}
    for label in LABELS:
        row[label] = labels.get(label, "")[: limits.get(label, 60)]
    return row


def workspace_made_voices(workspace, engine) -> list[Voice]:
    """Voices made through ``/v1`` that the engine keeps no list of (the local engine's
    designs and clones live as the workspace's ``ApiVoice`` rows): part of what it offers."""
    from .models import ApiVoice
    from .services_made import ENGINES_LISTING_API_VOICES, voice_of_row

    if engine.name not in ENGINES_LISTING_API_VOICES:
        return []
    rows = ApiVoice.objects.filter(workspace=workspace, engine=engine.name).order_by("pk")
    return [voice_of_row(row, record=None) for row in rows if row.recipe is not None]


def api_voice_kept(*, sender=None, instance=None, **_signal) -> None:
    """A voice made or edited through ``/v1`` is in the library at once (no sync needed)."""
    voice = Voice(
        voice_id=instance.voice_id,
        name=instance.name,
        category=instance.category or "generated",
        labels=dict(instance.labels or {}),
        description=instance.description or None,
    )
    values = _fields_of(voice)
    LibraryVoice.objects.update_or_create(
        workspace_id=instance.workspace_id,
        engine=instance.engine,
        voice_id=instance.voice_id,
        defaults={**values, "withdrawn_at": None, "synced_at": timezone.now()},
    )


def api_voice_deleted(*, sender=None, instance=None, **_signal) -> None:
    """Deleted through ``/v1``: flagged withdrawn in the library, never silently deleted.

    (Also reached by cascades, such as a workspace's deletion: a plain update, no history.)
    """
    LibraryVoice.objects.filter(
        workspace_id=instance.workspace_id,
        engine=instance.engine,
        voice_id=instance.voice_id,
        withdrawn_at__isnull=True,
    ).update(withdrawn_at=timezone.now())


def library_voice_withdraw(*, workspace, engine: str, voice_id: str, actor) -> None:
    """``actor`` deleted the voice from the engine (``DELETE /v1/voices/{id}``): its library
    row is kept, flagged withdrawn, with a line in its history naming who deleted it. Also
    for voices the workspace keeps no ``ApiVoice`` of (an ElevenLabs account's own)."""
    rows = LibraryVoice.objects.filter(
        workspace=workspace, engine=engine, voice_id=voice_id, withdrawn_at__isnull=True
    )
    for voice in rows:
        voice.withdrawn_at = timezone.now()
        voice.save(update_fields=["withdrawn_at"])
        _changed(voice, actor, "deleted", "Deleted through the API; kept here as withdrawn")


def voice_can_change(*, workspace, voice_id: str, user, membership=None) -> bool:
    """Who may rename, re-sample, set up or delete a voice of the workspace.

    Owners and managers change any voice; members the voices they made (cloned or designed,
    in the studio or through ``/v1``); viewers none. A voice nobody in the workspace made
    (the engine's own) changes for the whole team, so it is the managers'.
    """
    from apps.workspaces.models import Membership

    from .models import ApiVoice

    if membership is None:
        membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None or membership.workspace_id != workspace.pk:
        return False
    if membership.can_manage:
        return True
    made_by = (
        ApiVoice.objects.filter(workspace=workspace, voice_id=voice_id)
        .values_list("created_by_id", flat=True)
        .first()
    )
    return membership.can_create and made_by is not None and made_by == user.pk


def engine_voices(engine, progress=None) -> list[Voice]:
    """Every voice the engine lists, page after page (``progress(percent, message)``)."""
    voices: list[Voice] = []
    token = None
    for number in range(1, SYNC_MAX_PAGES + 1):
        page = engine.voices(VoiceQuery(page_size=SYNC_PAGE_SIZE, next_page_token=token))
        voices.extend(page.voices)
        if progress is not None:
            share = len(voices) / max(page.total_count or len(voices), 1)
            progress(5 + int(75 * min(share, 1.0)), f"Read {len(voices)} voices (page {number})")
        token = page.next_page_token
        if not page.has_more or not token:
            break
    return voices


@dataclass
class SyncResult:
    added: int = 0
    updated: int = 0
    withdrawn: list[str] = field(default_factory=list)  # names of voices gone upstream
    returned: int = 0  # withdrawn before, listed again now

    def as_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "withdrawn": self.withdrawn,
            "returned": self.returned,
        }


def library_sync(*, workspace, progress=None) -> SyncResult:
    """Bring the library in step with the workspace's engine.

    New voices are added, known ones updated (name, labels, description, preview; the team's
    tags, notes, approval and favourites stay). Voices of this engine the engine no longer
    lists are flagged withdrawn — kept, with what uses them — never deleted; one that comes
    back is unflagged.
    """
    from apps.workspaces.services import engine_settings_for

    from .services_sync import engine_config, library_synced

    config = engine_config(engine_settings_for(workspace))  # what this sync reads
    engine = engine_for(workspace)
    listed = engine_voices(engine, progress) + workspace_made_voices(workspace, engine)
    if progress is not None:
        progress(85, f"Saving {len(listed)} voices")
    now = timezone.now()
    result = SyncResult()
    with transaction.atomic():
        known = {
            row.voice_id: row
            for row in LibraryVoice.objects.select_for_update().filter(
                workspace=workspace, engine=engine.name
            )
        }
        seen: set[str] = set()
        new_rows, changed = [], []
        for voice in listed:
            if voice.voice_id in seen:
                continue
            seen.add(voice.voice_id)
            values = _fields_of(voice)
            row = known.get(voice.voice_id)
            if row is None:
                new_rows.append(
                    LibraryVoice(
                        workspace=workspace,
                        engine=engine.name,
                        voice_id=voice.voice_id,
                        synced_at=now,
                        **values,
                    )
                )
                continue
            if row.withdrawn_at is not None:
                row.withdrawn_at = None
                result.returned += 1
            for name, value in values.items():
                setattr(row, name, value)
            row.synced_at = now
            changed.append(row)
        LibraryVoice.objects.bulk_create(new_rows, batch_size=500)
        LibraryVoice.objects.bulk_update(
            changed, [*SYNCED_FIELDS, "synced_at", "withdrawn_at"], batch_size=500
        )
        gone = [row for vid, row in known.items() if vid not in seen and row.withdrawn_at is None]
        for row in gone:
            row.withdrawn_at = now
        LibraryVoice.objects.bulk_update(gone, ["withdrawn_at"], batch_size=500)
        facets_refresh(workspace)
        library_synced(workspace=workspace, engine=engine.name, config=config)
    result.added, result.updated = len(new_rows), len(changed)
    result.withdrawn = sorted(row.name for row in gone)
    if progress is not None:
        progress(100, f"{result.added} added, {result.updated} updated, "
                      f"{len(result.withdrawn)} withdrawn")  # fmt: skip
    return result


def library_sync_run(*, job: Job, progress) -> dict:
    """Job runner of ``voices_sync``."""
    progress(2, "Asking the engine for its voices")
    return library_sync(workspace=job.workspace, progress=progress).as_dict()


# --- Finding voices -----------------------------------------------------------------------


@dataclass
class LibraryFilters:
    q: str = ""
    gender: str = ""
    age: str = ""
    accent: str = ""
    language: str = ""
    use_case: str = ""
    descriptive: str = ""
    category: str = ""
    engine: str = ""
    approval: str = ""
    tag: int | None = None
    collection: int | None = None
    favourites: bool = False
    withdrawn: bool = False  # include withdrawn voices
    sort: str = "name"

    @classmethod
    def from_query(cls, data) -> "LibraryFilters":
        """From a request's GET: unknown or malformed values are ignored, never an error."""

        def text(name, most=100):
            return (data.get(name) or "").strip()[:most]

        def number(name):
            raw = text(name)
            return int(raw) if raw.isdigit() and len(raw) < 12 else None

        sort = text("sort")
        approval = text("approval")
        return cls(
            q=text("q", 200),
            **{label: text(label) for label in LABELS},
            category=text("category"),
            engine=text("engine"),
            approval=approval if approval in Approval.values else "",
            tag=number("tag"),
            collection=number("collection"),
            favourites=data.get("favourites") in ("1", "on", "true"),
            withdrawn=data.get("withdrawn") in ("1", "on", "true"),
            sort=sort if sort in SORTS else "name",
        )

    def as_query(self) -> dict:
        """The non-default filters, for links that keep them (pages, sorting)."""
        out = {}
        for name, value in self.__dict__.items():
            if name == "sort":
                if value != "name":
                    out[name] = value
            elif value is True:
                out[name] = "1"
            elif value not in ("", None, False):
                out[name] = value
        return out


def library_voices(*, workspace, user, filters: LibraryFilters):
    """The workspace's voices matching ``filters``, sorted, each with ``is_favourite``."""
    voices = LibraryVoice.objects.filter(workspace=workspace)
    if not filters.withdrawn:
        voices = voices.filter(withdrawn_at__isnull=True)
    if filters.q:
        voices = voices.filter(
            Q(name__icontains=filters.q)
            | Q(description__icontains=filters.q)
            | Q(voice_id=filters.q)
            | Q(descriptive__icontains=filters.q)
        )
    for label in LABELS:
        value = getattr(filters, label)
        if value:
            voices = voices.filter(**{f"{label}__iexact": value})
    for name in ("category", "engine", "approval"):
        value = getattr(filters, name)
        if value:
            voices = voices.filter(**{name: value})
    if filters.tag is not None:
        voices = voices.filter(tags__id=filters.tag)
    if filters.collection is not None:
        voices = voices.filter(collections__id=filters.collection)
    favourite = Favourite.objects.filter(user=user, voice=OuterRef("pk"))
    voices = voices.annotate(is_favourite=Exists(favourite))
    if filters.favourites:
        voices = voices.filter(is_favourite=True)
    order = SORTS[filters.sort]
    if filters.sort == "recent":
        voices = voices.order_by(F("last_used_at").desc(nulls_last=True), *order[1:])
    else:
        voices = voices.order_by(*order)
    return voices


FACETS = (*LABELS, "category", "engine")


def _facet_values(workspace):
    """``(facet, value)`` for every distinct value of each label, category and engine: one
    query (a UNION of per-column DISTINCTs, a few dozen rows however many voices)."""
    voices = LibraryVoice.objects.filter(workspace=workspace)
    parts = [
        voices.annotate(facet=Value(name, output_field=CharField()), value=F(name))
        .values_list("facet", "value")
        .distinct()
        .order_by()
        for name in FACETS
    ]
    return parts[0].union(*parts[1:], all=True)


def facets_compute(workspace) -> dict[str, list[str]]:
    """Each facet's values, one entry per value whatever its case (the filters ignore case:
    "British" and "british" are one accent), sorted."""
    found: dict[str, dict[str, str]] = {name: {} for name in FACETS}
    for name, value in _facet_values(workspace):
        if value:
            seen = found[name].setdefault(value.lower(), value)
            found[name][value.lower()] = min(seen, value)
    return {name: [values[k] for k in sorted(values)] for name, values in found.items()}


def facets_refresh(workspace) -> dict[str, list[str]]:
    values = facets_compute(workspace)
    LibraryFacets.objects.update_or_create(workspace=workspace, defaults={"values": values})
    return values


def library_facets(workspace) -> dict[str, list[str]]:
    """The stored facets (one query), rebuilt when a change dropped them."""
    row = LibraryFacets.objects.filter(workspace=workspace).first()
    if row is None:
        return facets_refresh(workspace)
    return {name: list(row.values.get(name, [])) for name in FACETS}


def facets_drop(*, sender=None, instance=None, update_fields=None, **_signal) -> None:
    """A voice was added, deleted or had a facet changed: its workspace's facets are worked
    out again on the next view. (Saving only other fields, such as an approval, keeps them.)"""
    if update_fields is not None and not set(update_fields) & set(FACETS):
        return
    LibraryFacets.objects.filter(workspace_id=instance.workspace_id).delete()


class _LibraryPaginator(Paginator):
    """Reads a page's voices by their ids, the ids found first (in the same query).

    To reach page 200 the database skips 4,776 voices in order: sorting whole rows for that
    can spill to disk; sorting ids and names (or reading them off an index) does not.
    """

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        ids = self.object_list.values("pk")[bottom:top]
        return self._get_page(self.object_list.filter(pk__in=ids), number, self)


def label_text(labels: dict) -> str:
    """A voice's labels in words, in the library's order: "Female · Middle-aged · British"."""
    from studio_site.format import label_of, language_of

    words = []
    for name in LABELS:
        value = str((labels or {}).get(name) or "")
        if value:
            words.append(language_of(value) if name == "language" else label_of(value))
    return " · ".join(words)


@dataclass
class LibraryPage:
    page: Page
    filters: LibraryFilters
    facets: dict[str, list[str]]
    tags: list[Tag]
    collections: list[Collection]
    engines: list[str]


def library_page(*, workspace, user, filters: LibraryFilters, page_number) -> LibraryPage:
    """One page of the library with what its filter menus offer, in a fixed number of queries.

    Count, page (with favourites), the page's tag links, the stored label values on offer, the
    workspace's tags and its collections: six, whatever the filters and however many voices
    (five when the page is empty).
    """
    voices = library_voices(workspace=workspace, user=user, filters=filters)
    page = _LibraryPaginator(voices, PAGE_SIZE).get_page(page_number)
    tags = list(Tag.objects.filter(workspace=workspace))
    # The cards' tags are the workspace's (already read for the menu): only the links are read,
    # not the tags again for each page as a prefetch would (same order: the tags' names).
    position = {tag.pk: (index, tag) for index, tag in enumerate(tags)}
    tagged: dict[int, list[tuple[int, Tag]]] = {}
    if page.object_list:
        links = LibraryVoice.tags.through.objects.filter(
            libraryvoice_id__in=[voice.pk for voice in page.object_list]
        ).values_list("libraryvoice_id", "tag_id")
        for voice_id, tag_id in links:
            if tag_id in position:
                tagged.setdefault(voice_id, []).append(position[tag_id])
    for voice in page.object_list:  # evaluated here, not in the template
        voice.tag_list = [tag for _, tag in sorted(tagged.get(voice.pk, ()))]
        voice.label_text = label_text(voice.labels)
        voice.has_preview = preview_available(voice)
    ordered = library_facets(workspace)
    engines = ordered.pop("engine", [])
    return LibraryPage(
        page=page,
        filters=filters,
        facets=ordered,
        tags=tags,
        collections=list(Collection.objects.filter(workspace=workspace)),
        engines=engines,
    )


# --- Curation -----------------------------------------------------------------------------


def favourite_toggle(*, voice: LibraryVoice, user) -> bool:
    """Star or unstar ``voice`` for ``user``; True when it is a favourite now."""
    deleted, _ = Favourite.objects.filter(voice=voice, user=user).delete()
    if deleted:
        return False
    Favourite.objects.get_or_create(voice=voice, user=user)
    return True


def _changed(voice: LibraryVoice, actor, action: str, detail: str = "") -> None:
    VoiceChange.objects.create(voice=voice, actor=actor, action=action, detail=detail[:500])


def _clean_name(name: str, most: int, what: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise ActionRefused(f"A {what} needs a name.")
    if len(name) > most:
        raise ActionRefused(f"A {what} name has at most {most} characters.")
    return name


def _membership(voice, relation, item, *, add: bool, actor, action: str) -> None:
    """Put ``item`` in (or take it out of) one of the voice's sets, noting a real change."""
    manager = getattr(voice, relation)
    if manager.filter(pk=item.pk).exists() != add:
        (manager.add if add else manager.remove)(item)
        _changed(voice, actor, action, item.name)


@transaction.atomic
def tag_add(*, voice: LibraryVoice, name: str, actor=None) -> Tag:
    tag, _ = Tag.objects.get_or_create(workspace=voice.workspace, name=_clean_name(name, 50, "tag"))
    _membership(voice, "tags", tag, add=True, actor=actor, action="tagged")
    return tag


@transaction.atomic
def tag_remove(*, voice: LibraryVoice, tag: Tag, actor=None) -> None:
    _membership(voice, "tags", tag, add=False, actor=actor, action="untagged")


@transaction.atomic
def collection_add(*, voice: LibraryVoice, name: str, actor=None) -> Collection:
    collection, _ = Collection.objects.get_or_create(
        workspace=voice.workspace,
        name=_clean_name(name, 100, "collection"),
        defaults={"created_by": actor},
    )
    _membership(voice, "collections", collection, add=True, actor=actor,
                action="added to collection")  # fmt: skip
    return collection


@transaction.atomic
def collection_remove(*, voice: LibraryVoice, collection: Collection, actor=None) -> None:
    _membership(voice, "collections", collection, add=False, actor=actor,
                action="removed from collection")  # fmt: skip


NOTE_MAX = 2000


@transaction.atomic
def note_add(*, voice: LibraryVoice, author, text: str) -> VoiceNote:
    text = (text or "").strip()
    if not text:
        raise ActionRefused("A note needs some text.")
    if len(text) > NOTE_MAX:
        raise ActionRefused(f"A note has at most {NOTE_MAX} characters (this one has {len(text)}).")
    note = VoiceNote.objects.create(voice=voice, author=author, text=text)
    _changed(voice, author, "noted", text[:80])
    return note


def _locked(voice: LibraryVoice) -> LibraryVoice:
    return LibraryVoice.objects.select_for_update().get(pk=voice.pk)


@transaction.atomic
def voice_propose(*, voice: LibraryVoice, actor) -> LibraryVoice:
    """A member proposes the voice for production; a manager then reviews it."""
    voice = _locked(voice)
    if voice.withdrawn:
        raise ActionRefused("This voice was withdrawn by the engine: it cannot be proposed.")
    if voice.approval == Approval.PROPOSED:
        raise ActionRefused("This voice is already waiting for a manager's review.")
    if voice.approval == Approval.APPROVED:
        raise ActionRefused("This voice is already approved for production.")
    voice.approval, voice.approval_reason = Approval.PROPOSED, ""
    voice.approval_by, voice.approval_at = actor, timezone.now()
    voice.save(update_fields=["approval", "approval_reason", "approval_by", "approval_at"])
    _changed(voice, actor, "proposed for production")
    return voice


@transaction.atomic
def voice_review(*, voice: LibraryVoice, actor, approve: bool, reason: str = "") -> LibraryVoice:
    """A manager approves a proposed voice, or rejects it with a reason."""
    voice = _locked(voice)
    reason = " ".join((reason or "").split())[:500]
    if voice.approval != Approval.PROPOSED:
        raise ActionRefused("Only a proposed voice can be reviewed; propose it first.")
    if not approve and not reason:
        raise ActionRefused("Say why the voice is rejected: the member who proposed it reads it.")
    voice.approval = Approval.APPROVED if approve else Approval.REJECTED
    voice.approval_reason, voice.approval_by, voice.approval_at = reason, actor, timezone.now()
    voice.save(update_fields=["approval", "approval_reason", "approval_by", "approval_at"])
    _changed(voice, actor, "approved" if approve else "rejected", reason)
    return voice
