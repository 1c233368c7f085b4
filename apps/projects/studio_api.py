"""What ``/v1/studio/projects`` needs on top of ``narration``: the official content JSON in and
out, projects and chapters in the official response shapes, converting (a final render that
leaves a snapshot) and the snapshots' audio.

Every function takes the ``Caller`` of a personal key (its workspace, member, role, key id and
cap) and raises ``ApiRefused`` / ``ApiInvalid`` in the API's shapes, so the gateway's views
only parse and render. Another workspace's project, chapter or snapshot is a 404, exactly as
an unknown id is.

The official content is chapters of blocks of *nodes*, each node a text in a voice. A Chorus
block has one text and one voice, so each node becomes one block, and each block is read
back as a content block of one node. A node's voice is kept on its block only when it is
not the project's default voice, so changing the default re-voices the rest.
"""

import io
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import PurePosixPath

from django.db import transaction
from django.db.models import Case, F, Sum, Value, When
from django.utils import timezone

from apps.billing.models import UsageEvent, UsageStatus
from apps.billing.services import period_start, plan_for
from apps.generation.caller import Caller
from apps.generation.errors import ApiInvalid, ApiRefused
from apps.jobs.models import JobStatus
from apps.workspaces.models import ROLE_RANK, Role

from . import narration
from .importers import BLOCK_MAX_CHARS, ImportedScript, ImportRefused, import_file
from .models import (
    Block,
    Chapter,
    Export,
    ExportFormat,
    Project,
    Render,
    RenderScope,
    RenderState,
)
from .narration import ProjectRefused

NODE_TYPE = "tts_node"
SUB_TYPES = ("p", "h1", "h2", "h3")
MAX_CHAPTERS = 1_000
MAX_BLOCKS = 20_000  # in one content JSON
ACTIVE_JOB = (JobStatus.QUEUED, JobStatus.RUNNING)


# --- Looking rows up ---------------------------------------------------------------------------


def _not_found(what: str, code: str, value: str) -> ApiRefused:
    return ApiRefused(404, code, f"There is no {what} {value!r}.", kind="not_found")


def project_of(*, caller: Caller, project_id: str) -> Project:
    """The workspace's project of ``project_id`` (the official id); else a 404."""
    found = Project.objects.filter(workspace=caller.workspace, public_id=project_id).first()
    if found is None:
        raise _not_found("project", "project_not_found", project_id)
    return found


def chapter_of(*, project: Project, chapter_id: str) -> Chapter:
    found = Chapter.objects.filter(project=project, public_id=chapter_id).first()
    if found is None:
        raise _not_found("chapter", "chapter_not_found", chapter_id)
    return found


def _snapshots(project: Project, chapter: Chapter | None):
    """The finished MP3 exports of the project (``chapter`` None) or of one chapter."""
    rows = Export.objects.filter(project=project, format=ExportFormat.MP3).exclude(file="")
    rows = rows.filter(chapter=chapter) if chapter is not None else rows.filter(chapter=None)
    return rows.order_by("-created_at", "-id")


def snapshot_of(*, project: Project, snapshot_id: str, chapter: Chapter | None = None) -> Export:
    found = _snapshots(project, chapter).filter(public_id=snapshot_id).first()
    if found is None:
        raise _not_found("snapshot", "snapshot_not_found", snapshot_id)
    return found


def _writable(caller: Caller) -> None:
    """Members and above change projects (a viewer's key is refused before this, at auth)."""
    membership = caller.membership
    if membership is None or ROLE_RANK[Role(membership.role)] < ROLE_RANK[Role.MEMBER]:
        raise ApiRefused(
            403,
            "permission_denied",
            "Viewers can read projects but not change them.",
            kind="authorization_error",
        )


def _refused(exc: ProjectRefused, *, code: str = "invalid_parameters", param=None) -> ApiRefused:
    return ApiRefused(400, code, str(exc), param=param)


# --- Content JSON in ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentNode:
    text: str
    voice_id: str
    block_id: str | None = None  # an existing block of the chapter it updates


@dataclass(frozen=True)
class ContentChapter:
    name: str
    nodes: tuple[ContentNode, ...]


def _type_error(errors: list, loc: list, expected: str) -> None:
    errors.append({"type": f"{expected}_type", "loc": loc, "msg": f"Input should be a {expected}"})


def _node_text(value: str, errors: list, loc: list) -> str | None:
    text = "\n".join(" ".join(line.split()) for line in value.strip().splitlines())
    text = "\n".join(line for line in text.split("\n") if line)
    if not text:
        errors.append({"type": "value_error", "loc": loc, "msg": "The text is empty."})
        return None
    if "\x00" in text:
        errors.append({"type": "string_unicode", "loc": loc, "msg": "The text holds NUL."})
        return None
    if len(text) > BLOCK_MAX_CHARS:
        errors.append(
            {
                "type": "string_too_long",
                "loc": loc,
                "msg": f"A node holds at most {BLOCK_MAX_CHARS:,} characters ({len(text):,} "
                "given): split it into several nodes or blocks.",
            }
        )
        return None
    return text


def content_blocks(blocks, *, loc: list, errors: list) -> tuple[ContentNode, ...]:
    """``ChapterContentInputModel.blocks``: each node of each block, in order."""
    if not isinstance(blocks, list):
        _type_error(errors, loc, "list")
        return ()
    nodes: list[ContentNode] = []
    for b, block in enumerate(blocks):
        where = [*loc, b]
        if not isinstance(block, dict):
            _type_error(errors, where, "dictionary")
            continue
        sub_type = block.get("sub_type")
        if sub_type is not None and sub_type not in SUB_TYPES:
            errors.append(
                {
                    "type": "enum",
                    "loc": [*where, "sub_type"],
                    "msg": f"Input should be {', '.join(repr(s) for s in SUB_TYPES)}",
                }
            )
        block_id = block.get("block_id")
        if block_id is not None and not isinstance(block_id, str):
            _type_error(errors, [*where, "block_id"], "string")
            block_id = None
        items = block.get("nodes")
        if items is None:
            errors.append({"type": "missing", "loc": [*where, "nodes"], "msg": "Field required"})
            continue
        if not isinstance(items, list):
            _type_error(errors, [*where, "nodes"], "list")
            continue
        for n, node in enumerate(items):
            at = [*where, "nodes", n]
            if not isinstance(node, dict):
                _type_error(errors, at, "dictionary")
                continue
            kind, text, voice_id = node.get("type"), node.get("text"), node.get("voice_id")
            for name, value in (("type", kind), ("text", text), ("voice_id", voice_id)):
                if value is None:
                    errors.append({"type": "missing", "loc": [*at, name], "msg": "Field required"})
                elif not isinstance(value, str):
                    _type_error(errors, [*at, name], "string")
            if not all(isinstance(v, str) for v in (kind, text, voice_id)):
                continue
            if kind != NODE_TYPE:
                errors.append(
                    {
                        "type": "literal_error",
                        "loc": [*at, "type"],
                        "msg": "Input should be 'tts_node'",
                    }
                )
                continue
            clean = _node_text(text, errors, [*at, "text"])
            if clean is None:
                continue
            # The block id names the first node's block; further nodes become new blocks.
            nodes.append(ContentNode(text=clean, voice_id=voice_id.strip(), block_id=block_id))
            block_id = None
        if len(nodes) > MAX_BLOCKS:
            errors.append(
                {"type": "too_long", "loc": loc, "msg": f"At most {MAX_BLOCKS:,} nodes in all"}
            )
            break
    return tuple(nodes)


def content_from_json(value, *, field: str = "from_content_json") -> tuple[ContentChapter, ...]:
    """``from_content_json`` (already decoded): a list of ``{name, blocks}``; else a 422."""
    errors: list[dict] = []
    loc = ["body", field]
    if not isinstance(value, list):
        raise ApiInvalid.one(
            loc,
            'Input should be a JSON list of chapters: [{"name": "Chapter 1", "blocks": '
            '[{"sub_type": "p", "nodes": [{"type": "tts_node", "voice_id": "…", "text": "…"}]}]}]',
            "list_type",
        )
    if len(value) > MAX_CHAPTERS:
        raise ApiInvalid.one(loc, f"At most {MAX_CHAPTERS:,} chapters", "too_long")
    chapters = []
    for c, raw in enumerate(value):
        if not isinstance(raw, dict):
            _type_error(errors, [*loc, c], "dictionary")
            continue
        name = raw.get("name")
        if name is None:
            errors.append({"type": "missing", "loc": [*loc, c, "name"], "msg": "Field required"})
        elif not isinstance(name, str):
            _type_error(errors, [*loc, c, "name"], "string")
        elif not name.strip() or "\x00" in name:
            errors.append(
                {"type": "value_error", "loc": [*loc, c, "name"], "msg": "A chapter needs a name."}
            )
        nodes = content_blocks(raw.get("blocks") or [], loc=[*loc, c, "blocks"], errors=errors)
        chapters.append(ContentChapter(name=name if isinstance(name, str) else "", nodes=nodes))
    if errors:
        raise ApiInvalid(errors)
    return tuple(chapters)


def _script_of_document(name: str, data: bytes, content_type: str) -> ImportedScript:
    try:
        return import_file(name=name, data=data, content_type=content_type)
    except ImportRefused as exc:
        raise ApiRefused(400, "invalid_document", str(exc), param="from_document") from exc


def _content_of_script(script: ImportedScript, voice_id: str) -> tuple[ContentChapter, ...]:
    return tuple(
        ContentChapter(
            name=chapter.title or f"Chapter {index + 1}",
            nodes=tuple(ContentNode(text=text, voice_id=voice_id) for text in chapter.blocks),
        )
        for index, chapter in enumerate(script.chapters)
    )


def _voices_checked(workspace, voice_ids, *, param: str) -> None:
    library = narration.library_voices(workspace=workspace)
    for voice_id in dict.fromkeys(voice_ids):
        if voice_id not in library:
            raise ApiRefused(
                400,
                "voice_not_found",
                f"The voice {voice_id!r} is not in this workspace's voice library "
                "(GET /v1/voices lists them).",
                param=param,
            )


def _chapters_write(project: Project, chapters: tuple[ContentChapter, ...], start: int) -> None:
    made = Chapter.objects.bulk_create(
        [
            Chapter(
                workspace_id=project.workspace_id,
                project=project,
                name=" ".join(chapter.name.split())[: narration.NAME_MAX]
                or f"Chapter {start + index + 1}",
                position=start + index,
            )
            for index, chapter in enumerate(chapters)
        ]
    )
    Block.objects.bulk_create(
        [
            Block(
                workspace_id=project.workspace_id,
                chapter=row,
                position=position,
                text=node.text,
                voice_id="" if node.voice_id == project.default_voice_id else node.voice_id,
            )
            for row, chapter in zip(made, chapters, strict=True)
            for position, node in enumerate(chapter.nodes)
        ],
        batch_size=500,
    )


# --- Projects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    name: str
    data: bytes
    content_type: str = ""


def project_add(
    *,
    caller: Caller,
    name: str,
    default_title_voice_id: str | None = None,
    default_paragraph_voice_id: str | None = None,
    default_model_id: str | None = None,
    content: tuple[ContentChapter, ...] | None = None,
    document: Document | None = None,
    author: str | None = None,
    title: str | None = None,
    description: str | None = None,
    language: str | None = None,
    auto_convert: bool = False,
) -> Project:
    """A project, blank or from content JSON or a document; free (converting is metered).

    The default voice is the paragraph voice, else the title voice, else the first node's.
    Every voice must be in the workspace's library (400 ``voice_not_found``).
    """
    _writable(caller)
    if content is not None and document is not None:
        raise ApiRefused(
            400,
            "invalid_parameters",
            "Send either from_content_json or from_document, not both.",
            param="from_document",
        )
    workspace = caller.workspace
    default = default_paragraph_voice_id or default_title_voice_id
    if not default and content:
        default = next((node.voice_id for c in content for node in c.nodes), None)
    if not default:
        raise ApiRefused(
            400,
            "invalid_parameters",
            "default_paragraph_voice_id: choose the project's voice (GET /v1/voices lists them).",
            param="default_paragraph_voice_id",
        )
    for param, voice_id in (
        ("default_paragraph_voice_id", default_paragraph_voice_id),
        ("default_title_voice_id", default_title_voice_id),
    ):
        if voice_id:
            _voices_checked(workspace, [voice_id], param=param)
    _voices_checked(workspace, [default], param="default_paragraph_voice_id")
    if content:
        nodes = (node.voice_id for c in content for node in c.nodes)
        _voices_checked(workspace, nodes, param="from_content_json")
    script = ImportedScript(title="", author="", language="", chapters=())
    filename = ""
    if document is not None:
        script = _script_of_document(document.name, document.data, document.content_type)
        filename = document.name
    try:
        with transaction.atomic():
            project = narration.project_create(
                workspace=workspace,
                user=caller.user,
                script=ImportedScript(
                    title=script.title, author=script.author, language=script.language, chapters=()
                ),
                name=name,
                default_voice_id=default,
                model_id=default_model_id or "",
                author=author or "",
                language=language or "",
                description=description or "",
                source="api",
                filename=filename,
            )
            chapters = content or ()
            if document is not None:
                chapters = _content_of_script(script, project.default_voice_id)
            _chapters_write(project, chapters, start=0)
    except ProjectRefused as exc:
        raise _refused(exc) from exc
    if auto_convert and Block.objects.filter(chapter__project=project).exists():
        convert(caller=caller, project=project)
    return project


def project_content_replace(
    *,
    caller: Caller,
    project: Project,
    content: tuple[ContentChapter, ...] | None = None,
    document: Document | None = None,
    auto_convert: bool = False,
) -> Project:
    """The project's chapters become the content (or the document's); its takes go with the
    blocks they were made for (their clips stay in History). Refused with locked blocks."""
    _writable(caller)
    if (content is None) == (document is None):
        raise ApiRefused(
            400,
            "invalid_parameters",
            "Send the new content as from_content_json or from_document (one of them).",
            param="from_content_json",
        )
    if Block.objects.filter(chapter__project=project, locked=True).exists():
        raise ApiRefused(
            400,
            "project_locked",
            "The project has locked blocks: unlock them before replacing its content.",
        )
    if content is not None:
        nodes = (node.voice_id for c in content for node in c.nodes)
        _voices_checked(project.workspace, nodes, param="from_content_json")
    else:
        script = _script_of_document(document.name, document.data, document.content_type)
        content = _content_of_script(script, project.default_voice_id)
    with transaction.atomic():
        project.chapters.all().delete()
        _chapters_write(project, content, start=0)
        project.save(update_fields=["updated_at"])
    if auto_convert and Block.objects.filter(chapter__project=project).exists():
        convert(caller=caller, project=project)
    return project


def project_edit(
    *,
    caller: Caller,
    project: Project,
    name: str,
    default_title_voice_id: str,
    default_paragraph_voice_id: str,
    author: str | None = None,
) -> Project:
    _writable(caller)
    _voices_checked(project.workspace, [default_title_voice_id], param="default_title_voice_id")
    _voices_checked(
        project.workspace, [default_paragraph_voice_id], param="default_paragraph_voice_id"
    )
    changes = {"name": name, "default_voice_id": default_paragraph_voice_id}
    if author is not None:
        changes["author"] = author
    try:
        return narration.project_update(project, **changes)
    except ProjectRefused as exc:
        raise _refused(exc) from exc


def project_remove(*, caller: Caller, project: Project) -> None:
    """Delete a project: its creator or a manager. Its running renders stop first; the clips
    its takes made stay in History (they were paid for)."""
    _writable(caller)
    manager = ROLE_RANK[Role(caller.membership.role)] >= ROLE_RANK[Role.MANAGER]
    if not manager and project.created_by_id != getattr(caller.user, "pk", None):
        raise ApiRefused(
            403,
            "permission_denied",
            "Only whoever created this project, or a manager, can delete it.",
            kind="authorization_error",
        )
    for render in Render.objects.filter(project=project).select_related("job"):
        narration.render_cancel(render)
    project.delete()


# --- Chapters ----------------------------------------------------------------------------------


def chapter_add(*, caller: Caller, project: Project, name: str) -> Chapter:
    _writable(caller)
    try:
        return narration.chapter_add(project=project, name=name)
    except ProjectRefused as exc:
        raise _refused(exc, param="name") from exc


def chapter_edit(
    *,
    caller: Caller,
    chapter: Chapter,
    name: str | None = None,
    content: tuple[ContentNode, ...] | None = None,
) -> Chapter:
    """Rename the chapter and/or replace its content. A node naming one of the chapter's
    blocks updates that block (a block whose text and voice are unchanged keeps its takes);
    blocks not named are deleted, nodes without a block id are new blocks."""
    _writable(caller)
    project = chapter.project
    if content is not None:
        nodes = (node.voice_id for node in content)
        _voices_checked(project.workspace, nodes, param="content")
    try:
        with transaction.atomic():
            if name is not None:
                narration.chapter_update(chapter, name=name)
            if content is not None:
                _chapter_content_write(chapter, project, content)
    except ProjectRefused as exc:
        raise _refused(exc) from exc
    return chapter


def _chapter_content_write(chapter: Chapter, project: Project, content) -> None:
    existing = {block.public_id: block for block in chapter.blocks.all()}
    kept: set[str] = set()
    ordered: list[Block] = []
    for node in content:
        voice_id = "" if node.voice_id == project.default_voice_id else node.voice_id
        block = existing.get(node.block_id) if node.block_id else None
        if block is not None and block.public_id not in kept:
            kept.add(block.public_id)
            if (block.text, block.voice_id) != (node.text, voice_id):
                if block.locked:
                    raise ProjectRefused(
                        f"Block {block.public_id} is locked: unlock it before changing it."
                    )
                block.text, block.voice_id = node.text, voice_id
                block.save(update_fields=["text", "voice_id", "updated_at"])
            ordered.append(block)
            continue
        ordered.append(
            Block.objects.create(
                workspace_id=chapter.workspace_id,
                chapter=chapter,
                position=0,
                text=node.text,
                voice_id=voice_id,
            )
        )
    dropped = [b for public_id, b in existing.items() if public_id not in kept]
    locked = [b.public_id for b in dropped if b.locked]
    if locked:
        raise ProjectRefused(f"Block {locked[0]} is locked: unlock it before removing it.")
    Block.objects.filter(pk__in=[b.pk for b in dropped]).delete()
    for position, block in enumerate(ordered):
        block.position = position
    Block.objects.bulk_update(ordered, ["position"], batch_size=500)
    Chapter.objects.filter(pk=chapter.pk).update(updated_at=timezone.now())
    project.save(update_fields=["updated_at"])


def chapter_remove(*, caller: Caller, chapter: Chapter) -> None:
    _writable(caller)
    try:
        narration.chapter_delete(chapter)
    except ProjectRefused as exc:
        raise _refused(exc) from exc


# --- Converting --------------------------------------------------------------------------------


def key_left(caller: Caller) -> Decimal | None:
    """What is left of the caller's key's monthly cap (None: no key or no cap): what the
    ledger charged to the key this period, settled or reserved, as the core counts it."""
    if caller.key_id is None or caller.key_cap is None:
        return None
    start = period_start(plan_for(caller.workspace))
    charge = Case(
        When(status=UsageStatus.SETTLED, then=F("credits")),
        When(status=UsageStatus.RESERVED, then=F("estimated_credits")),
        default=Value(Decimal(0)),
    )
    used = UsageEvent.objects.filter(
        workspace=caller.workspace, api_key_id=caller.key_id, created_at__gte=start
    ).aggregate(total=Sum(charge))["total"] or Decimal(0)
    return Decimal(caller.key_cap) - used


def convert(*, caller: Caller, project: Project, chapter: Chapter | None = None) -> Render:
    """Render the project's (or the chapter's) blocks that have no up-to-date final take, on
    the workspace's engine, metered as the key's member with the key's id; the render leaves
    a snapshot (``Render.snapshot``). Refused (429) when the budget or the key's cap would
    not cover the estimate; above the approval threshold it waits for a manager."""
    _writable(caller)
    scope = RenderScope.CHAPTER if chapter is not None else RenderScope.PROJECT
    blocks = narration.render_targets(project=project, scope=scope, target=chapter, draft=False)
    if not blocks:
        what = "chapter" if chapter is not None else "project"
        raise ApiRefused(
            400,
            "nothing_to_convert",
            f"Every block of this {what} is already converted (or locked): its latest "
            "snapshot has the audio. Change a block to convert it again.",
        )
    estimate = narration.render_estimate(
        workspace=caller.workspace, user=caller.user, project=project, blocks=blocks, draft=False
    )
    left = key_left(caller)
    blocked = estimate.blocked_by
    if blocked is None and left is not None and estimate.credits > left:
        blocked = f"this API key's monthly cap ({left:,.0f} credits left)"
    if blocked:
        raise ApiRefused(
            429,
            "quota_exceeded",
            f"Converting needs {estimate.credits:,.0f} credits ({estimate.characters:,} "
            f"characters) and {blocked} would not cover it.",
            kind="rate_limit_error",
        )
    try:
        with transaction.atomic():
            render = narration.render_request(
                workspace=caller.workspace,
                user=caller.user,
                membership=caller.membership,
                project=project,
                scope=scope,
                target=chapter,
                draft=False,
                source="api",
                api_key_id=caller.key_id,
                api_key_cap=caller.key_cap,
                snapshot=True,
            )
    except ProjectRefused as exc:
        raise _refused(exc) from exc
    return render


# --- Reading: the official shapes --------------------------------------------------------------


def _unix(moment) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


@dataclass(frozen=True)
class _Activity:
    """The project's renders as states: converting, waiting, last finished, last error."""

    active: list  # final renders queued or running: (render, job)
    waiting: bool
    finished: list  # final renders whose job succeeded, newest first
    failed: list  # final renders whose job failed, newest first


def _activity(project: Project) -> _Activity:
    renders = list(
        Render.objects.filter(project=project, draft=False)
        .select_related("job")
        .order_by("-created_at", "-id")[:200]
    )
    active, finished, failed, waiting = [], [], [], False
    for render in renders:
        job = render.job
        if render.state == RenderState.WAITING:
            waiting = True
        elif job is not None and job.status in ACTIVE_JOB:
            active.append(render)
        elif job is not None and job.status == JobStatus.SUCCEEDED:
            finished.append(render)
        elif job is not None and job.status == JobStatus.FAILED:
            failed.append(render)
    return _Activity(active=active, waiting=waiting, finished=finished, failed=failed)


def _covers(render: Render, chapter: Chapter) -> bool:
    if render.scope == RenderScope.PROJECT:
        return True
    if render.scope == RenderScope.CHAPTER:
        return render.scope_id == chapter.public_id
    return Block.objects.filter(chapter=chapter, public_id=render.scope_id).exists()


def project_state(activity: _Activity) -> str:
    if activity.active:
        return "converting"
    if activity.waiting:
        return "in_queue"
    return "default"


def project_json(project: Project, *, activity: _Activity | None = None) -> dict:
    """``ProjectResponseModel``."""
    activity = activity or _activity(project)
    last = activity.finished[0].job.finished_at if activity.finished else None
    has_snapshot = _snapshots(project, None).exists()
    voice = project.default_voice_id
    return {
        "project_id": project.public_id,
        "name": project.name,
        "create_date_unix": _unix(project.created_at),
        "created_by_user_id": str(project.created_by_id) if project.created_by_id else None,
        "default_title_voice_ref_id": voice,
        "default_paragraph_voice_ref_id": voice,
        "default_title_voice_id": voice,
        "default_paragraph_voice_id": voice,
        "default_model_id": project.default_model_id,
        "last_conversion_date_unix": _unix(last),
        "can_be_downloaded": has_snapshot,
        "title": project.name,
        "author": project.author or None,
        "description": project.description or None,
        "genres": [],
        "cover_image_url": None,
        "target_audience": None,
        "language": project.language or None,
        "content_type": None,
        "original_publication_date": None,
        "mature_content": None,
        "isbn_number": None,
        "volume_normalization": False,
        "state": project_state(activity),
        "access_level": "admin",
        "fiction": None,
        "quality_check_on": False,
        "quality_check_on_when_bulk_convert": False,
        "creation_meta": {"creation_progress": 1.0, "status": "finished", "type": "blank"},
        "source_type": "book" if project.source_filename else "blank",
        "chapters_enabled": True,
        "captions_enabled": False,
        "caption_style": None,
        "caption_style_template_overrides": None,
        "public_share_id": None,
        "aspect_ratio": None,
        "agent_settings": None,
    }


def projects_json(*, caller: Caller) -> list[dict]:
    """``GetProjectsResponseModel.projects``: the workspace's projects, latest change first."""
    rows = Project.objects.filter(workspace=caller.workspace).order_by("-updated_at", "-id")
    return [project_json(project) for project in rows]


def chapter_json(
    chapter: Chapter,
    *,
    project: Project,
    activity: _Activity | None = None,
    rules_print: str | None = None,
    content: bool = False,
) -> dict:
    """``ChapterResponseModel`` (``ChapterWithContentResponseModel`` with ``content``)."""
    activity = activity or _activity(project)
    states = narration.chapter_states(chapter, project=project, rules_print=rules_print)
    converted = [s for s in states if not s.stale and s.chosen is not None and not s.chosen.draft]
    left = [s for s in states if s not in converted]
    running = next((r for r in activity.active if _covers(r, chapter)), None)
    finished = next((r for r in activity.finished if _covers(r, chapter)), None)
    failed = next((r for r in activity.failed if _covers(r, chapter)), None)
    error = None
    if failed is not None and (finished is None or failed.created_at > finished.created_at):
        error = failed.job.error or "The conversion failed."
    body = {
        "chapter_id": chapter.public_id,
        "name": chapter.name,
        "last_conversion_date_unix": _unix(finished.job.finished_at) if finished else None,
        "conversion_progress": (running.job.progress / 100) if running is not None else None,
        "can_be_downloaded": _snapshots(project, chapter).exists() or bool(states and not left),
        "state": "converting" if running is not None else "default",
        "has_video": False,
        "has_visual_content": False,
        "voice_ids": list(dict.fromkeys(s.voice_id for s in states)),
        "statistics": {
            "characters_unconverted": sum(len(s.block.text) for s in left),
            "characters_converted": sum(len(s.block.text) for s in converted),
            "paragraphs_converted": len(converted),
            "paragraphs_unconverted": len(left),
        },
        "last_conversion_error": error,
    }
    if content:
        body["content"] = {
            "blocks": [
                {
                    "block_id": s.block.public_id,
                    "nodes": [
                        {
                            "type": NODE_TYPE,
                            "project_voice_ref_id": s.voice_id,
                            "voice_id": s.voice_id,
                            "text": s.block.text,
                        }
                    ],
                }
                for s in states
            ]
        }
    return body


def chapters_json(project: Project) -> list[dict]:
    from apps.engines.pronunciation import rules_fingerprint

    activity = _activity(project)
    rules_print = rules_fingerprint(narration.project_rules(project))
    return [
        chapter_json(chapter, project=project, activity=activity, rules_print=rules_print)
        for chapter in project.chapters.order_by("position", "id")
    ]


def project_extended_json(project: Project) -> dict:
    """``ProjectExtendedResponseModel``: the project with its chapters, voices and
    pronunciation dictionaries."""
    activity = _activity(project)
    body = project_json(project, activity=activity)
    chapters = chapters_json(project)
    voice_ids = dict.fromkeys(
        [project.default_voice_id, *(v for c in chapters for v in c["voice_ids"])]
    )
    dictionaries = list(project.dictionaries.order_by("id"))
    body.update(
        quality_preset="standard",
        chapters=chapters,
        pronunciation_dictionary_versions=[
            {
                "version_id": d.version_id,
                "version_rules_num": d.version_rules_num,
                "pronunciation_dictionary_id": d.public_id,
                "dictionary_name": d.name,
                "version_name": d.version_id,
                "permission_on_resource": "admin",
                "created_by": str(d.created_by_id or ""),
                "creation_time_unix": _unix(d.updated_at),
                "archived_time_unix": None,
            }
            for d in dictionaries
        ],
        pronunciation_dictionary_locators=[
            {"pronunciation_dictionary_id": d.public_id, "version_id": d.version_id}
            for d in dictionaries
        ],
        apply_text_normalization="auto",
        experimental={},
        assets=[],
        voices=[
            {
                "project_voice_ref_id": voice_id,
                "voice_id": voice_id,
                "alias": voice_id,
                "stability": 0.5,
                "similarity_boost": 0.75,
                "style": 0.0,
                "is_pinned": voice_id == project.default_voice_id,
                "use_speaker_boost": True,
                "volume_gain": 0.0,
                "speed": 1.0,
            }
            for voice_id in voice_ids
        ],
        base_voices=None,
        publishing_read=None,
    )
    return body


def snapshot_json(export: Export, *, extended: bool = False) -> dict:
    """``ProjectSnapshotResponseModel`` / ``ChapterSnapshotResponseModel`` (with
    ``extended``, their extended models: no character alignments are kept)."""
    body = {
        "project_id": export.project.public_id,
        "created_at_unix": _unix(export.finished_at or export.created_at),
        "name": export.name or f"{export.project.name} ({export.created_at:%Y-%m-%d %H:%M})",
    }
    if export.chapter_id is not None:
        body = {
            "chapter_snapshot_id": export.public_id,
            "chapter_id": export.chapter.public_id,
            **body,
        }
    else:
        body = {
            "project_snapshot_id": export.public_id,
            **body,
            "audio_upload": None,
            "zip_upload": None,
        }
    if extended:
        body["character_alignments"] = []
        if export.chapter_id is None:
            body["audio_duration_secs"] = float(export.duration_seconds or 0.0)
    return body


def snapshots_json(project: Project, chapter: Chapter | None = None) -> list[dict]:
    rows = _snapshots(project, chapter).select_related("project", "chapter")
    return [snapshot_json(export) for export in rows]


# --- Snapshot audio ----------------------------------------------------------------------------


def snapshot_file(export: Export):
    """The snapshot's MP3, opened for reading (the caller closes it)."""
    try:
        return export.file.open("rb")
    except FileNotFoundError as exc:
        raise ApiRefused(
            404, "snapshot_not_found", "The snapshot's audio file is gone.", kind="not_found"
        ) from exc


def snapshot_archive(export: Export) -> bytes:
    """A ZIP of the audio of every take the snapshot used (its report's takes), else of the
    chosen takes of its blocks now: ``NN Chapter/NNN.mp3``."""
    from apps.history.models import Generation

    takes = export.report.get("takes") if isinstance(export.report, dict) else None
    blocks = Block.objects.filter(chapter__project=export.project).select_related(
        "chapter", "chosen__generation"
    )
    if export.chapter_id is not None:
        blocks = blocks.filter(chapter_id=export.chapter_id)
    blocks = list(blocks.order_by("chapter__position", "chapter_id", "position", "id"))
    by_block = {}
    if isinstance(takes, list) and takes:
        ids = [t.get("history_item_id") for t in takes if isinstance(t, dict)]
        found = {
            g.history_item_id: g
            for g in Generation.objects.filter(
                workspace_id=export.workspace_id, history_item_id__in=[i for i in ids if i]
            )
        }
        for take in takes:
            if isinstance(take, dict) and take.get("history_item_id") in found:
                by_block[take.get("block")] = found[take["history_item_id"]]
    buffer = io.BytesIO()
    written = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for block in blocks:
            generation = by_block.get(block.public_id)
            if generation is None and block.chosen is not None:
                generation = block.chosen.generation
            if generation is None or not generation.file:
                continue
            folder = f"{block.chapter.position + 1:02d} {_safe(block.chapter.name)}"
            suffix = PurePosixPath(generation.file.name).suffix or ".mp3"
            try:
                with generation.file.open("rb") as handle:
                    archive.writestr(f"{folder}/{block.position + 1:03d}{suffix}", handle.read())
            except FileNotFoundError:
                continue
            written += 1
    if not written:
        raise ApiRefused(
            404, "snapshot_not_found", "The takes of this snapshot are gone.", kind="not_found"
        )
    return buffer.getvalue()


def _safe(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in " -_." else "_" for c in name).strip(" .")
    return cleaned[:60] or "Chapter"
