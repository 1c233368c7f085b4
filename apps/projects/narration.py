"""Narration projects: scripts in, chapters of blocks, takes rendered through the core.

A project is made from an imported script (``importers``). Each block is rendered as a
*take*: one core ``speak`` call, metered as the member's, kept as a ``history.Generation``
with its recipe. A *draft* runs on the local engine (free); a *final* on the workspace's
engine. A block is *stale* when what a render would send differs from what its chosen take
was made from. Renders run as jobs; a render whose estimate is above the workspace's
approval threshold waits for a manager first.
"""

import hashlib
import json
import logging
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Count, Max, Q, Sum
from django.urls import reverse
from django.utils import timezone

from apps.billing.services import notify, usage_estimate
from apps.engines.local.tts import DEFAULT_VOICE_ID, LOCAL_VOICES, find_voice
from apps.engines.pronunciation import PronunciationRule, rules_fingerprint, rules_from_json
from apps.generation.caller import Caller
from apps.generation.engine import engine_for
from apps.generation.errors import ApiRefused
from apps.generation.speech import SpeechInput, speak
from apps.history.models import Generation
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import job_cancel, job_start
from apps.voices.models import LibraryVoice
from apps.workspaces.models import ROLE_RANK, EngineKind, Membership, Role
from apps.workspaces.services import ActionRefused

from .importers import BLOCK_MAX_CHARS, ImportedChapter, ImportedScript
from .models import (
    Block,
    Chapter,
    Project,
    ProjectSettings,
    Render,
    RenderScope,
    RenderState,
    Speaker,
    Take,
)
from .threads import render_threads

log = logging.getLogger(__name__)

DEFAULT_MODEL = "eleven_multilingual_v2"
RENDER_FORMAT = "mp3_44100_128"
CONTEXT_CHARACTERS = 500  # of the neighbouring blocks, sent as previous_text / next_text
RENDER_JOB = "project_render"
NAME_MAX = 200


class ProjectRefused(ActionRefused):
    """A project action that cannot be done; the message says why, for the person."""


# --- Voices -------------------------------------------------------------------------------


def library_voices(*, workspace) -> dict[str, LibraryVoice]:
    """The workspace's usable library voices on its engine and the local engine, by id."""
    engine = engine_for(workspace).name
    rows = LibraryVoice.objects.filter(
        workspace=workspace, engine__in={engine, EngineKind.LOCAL}, withdrawn_at__isnull=True
    )
    found: dict[str, LibraryVoice] = {}
    for row in rows:
        # The workspace's engine wins where a voice id is on both.
        if row.voice_id not in found or row.engine == engine:
            found[row.voice_id] = row
    return found


def library_voice_names(*, workspace) -> dict[str, str]:
    """The names of ``library_voices`` by id (one light query: what pages that show a
    block's voice need)."""
    engine = engine_for(workspace).name
    rows = (
        LibraryVoice.objects.filter(
            workspace=workspace, engine__in={engine, EngineKind.LOCAL}, withdrawn_at__isnull=True
        )
        .order_by()
        .values_list("voice_id", "name", "engine")
    )
    names: dict[str, str] = {}
    for voice_id, name, voice_engine in rows:
        if voice_id not in names or voice_engine == engine:
            names[voice_id] = name
    return names


def voice_checked(*, workspace, voice_id: str, field: str = "Voice") -> str:
    """``voice_id`` if the workspace's library has it, else a refusal that says so."""
    voice_id = (voice_id or "").strip()
    if not voice_id:
        raise ProjectRefused(f"{field}: choose a voice.")
    engine = engine_for(workspace).name
    exists = LibraryVoice.objects.filter(
        workspace=workspace,
        voice_id=voice_id,
        engine__in={engine, EngineKind.LOCAL},
        withdrawn_at__isnull=True,
    ).exists()
    if not exists:
        raise ProjectRefused(
            f"{field}: the voice {voice_id!r} is not in this workspace's library. "
            "Pick one from the list."
        )
    return voice_id


def draft_voice(*, voice_id: str, voice: LibraryVoice | None) -> str:
    """The local engine's voice for a draft of ``voice_id``: the voice itself when the local
    engine speaks it (its own voices and the workspace's designs on it), else a local
    stand-in of the same gender."""
    if find_voice(voice_id) is not None or (voice is not None and voice.engine == "local"):
        return voice_id
    gender = (voice.gender if voice is not None else "").lower()
    if gender:
        for local in LOCAL_VOICES:
            if str(local.labels.get("gender", "")).lower() == gender:
                return local.voice_id
    return DEFAULT_VOICE_ID


# --- Creating a project ---------------------------------------------------------------------


def _name(value: str, *, what: str = "Name") -> str:
    value = " ".join((value or "").split())
    if not value:
        raise ProjectRefused(f"{what}: give it a name.")
    if len(value) > NAME_MAX:
        raise ProjectRefused(f"{what}: at most {NAME_MAX} characters ({len(value)} given).")
    return value


def _model(model_id: str) -> str:
    model_id = (model_id or "").strip() or DEFAULT_MODEL
    if len(model_id) > 80:
        raise ProjectRefused("Model: the model id is too long.")
    return model_id


@transaction.atomic
def project_create(
    *,
    workspace,
    user,
    script: ImportedScript,
    name: str = "",
    default_voice_id: str,
    model_id: str = "",
    author: str = "",
    language: str = "",
    description: str = "",
    source: str = "ui",
    filename: str = "",
) -> Project:
    """A project with the script's chapters and blocks, all in one transaction."""
    voice_id = voice_checked(workspace=workspace, voice_id=default_voice_id, field="Default voice")
    project = Project.objects.create(
        workspace=workspace,
        created_by=user,
        name=_name(name or script.title or filename or "Untitled project"),
        author=(author or script.author or "")[:200],
        language=(language or script.language or "")[:16],
        description=description or "",
        default_voice_id=voice_id,
        default_model_id=_model(model_id),
        source=source,
        source_filename=(filename or "")[:255],
    )
    chapters_add(project=project, chapters=script.chapters)
    return project


def chapters_add(*, project: Project, chapters, after: int | None = None) -> list[Chapter]:
    """Append imported chapters (with their blocks) to ``project``."""
    start = project.chapters.aggregate(last=Max("position"))["last"] if after is None else after
    start = -1 if start is None else start
    made = Chapter.objects.bulk_create(
        [
            Chapter(
                workspace_id=project.workspace_id,
                project=project,
                name=(chapter.title or f"Chapter {start + 2 + index}")[:200],
                position=start + 1 + index,
            )
            for index, chapter in enumerate(chapters)
        ]
    )
    blocks = []
    for chapter, imported in zip(made, chapters, strict=True):
        for position, text in enumerate(imported.blocks):
            blocks.append(
                Block(
                    workspace_id=project.workspace_id,
                    chapter=chapter,
                    position=position,
                    text=text,
                )
            )
    Block.objects.bulk_create(blocks, batch_size=500)
    return made


def chapter_add(*, project: Project, name: str, text: str = "") -> Chapter:
    from .importers import ImportRefused, import_text

    blocks: tuple[str, ...] = ()
    if text.strip():
        try:
            script = import_text(text, fmt="txt")
        except ImportRefused as exc:
            raise ProjectRefused(str(exc)) from exc
        blocks = tuple(block for chapter in script.chapters for block in chapter.blocks)
    with transaction.atomic():
        (chapter,) = chapters_add(
            project=project, chapters=[ImportedChapter(title=_name(name), blocks=blocks)]
        )
    return chapter


# --- Who speaks a block ---------------------------------------------------------------------


def block_voice(block: Block, *, project: Project, chapter: Chapter) -> str:
    """The block's own voice, else its speaker's, else its chapter's, else the project's."""
    if block.voice_id:
        return block.voice_id
    if block.speaker_id is not None and block.speaker is not None:
        return block.speaker.voice_id
    return chapter.voice_id or project.default_voice_id


def project_rules(project: Project) -> tuple[PronunciationRule, ...]:
    """The rules of the dictionaries attached to the project, in the order attached."""
    rules: list[PronunciationRule] = []
    for dictionary in project.dictionaries.order_by("id"):
        rules.extend(rules_from_json(dictionary.rules))
    return tuple(rules)


# json.dumps(recipe, sort_keys=True, ensure_ascii=False), without building an encoder per call
# (a 300-block chapter signs every block on each page view).
_RECIPE_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode


def block_signature(
    block: Block, *, project: Project, chapter: Chapter, rules_print: str, draft: bool
) -> str:
    """A digest of everything a render of ``block`` sends: a take made from another is stale."""
    recipe = {
        "text": block.text,
        "voice": block_voice(block, project=project, chapter=chapter),
        "model": block.model_id or project.default_model_id,
        "settings": block.voice_settings or {},
        "seed": block.seed,
        "rules": rules_print,
        "draft": draft,
    }
    encoded = _RECIPE_JSON(recipe).encode()
    return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True)
class BlockState:
    block: Block
    voice_id: str
    stale: bool  # its chosen take was made from something else (or it has none)
    chosen: Take | None


def chapter_states(
    chapter: Chapter, *, project: Project, blocks=None, rules_print: str | None = None
) -> list[BlockState]:
    """Each block of ``chapter`` with its voice and whether it is stale (a constant number of
    queries, however many blocks)."""
    if rules_print is None:
        rules_print = rules_fingerprint(project_rules(project))
    if blocks is None:
        blocks = list(
            chapter.blocks.select_related("speaker", "chosen", "chosen__generation").order_by(
                "position", "id"
            )
        )
    states = []
    for block in blocks:
        chosen = block.chosen
        stale = chosen is None or chosen.signature != block_signature(
            block, project=project, chapter=chapter, rules_print=rules_print, draft=chosen.draft
        )
        states.append(
            BlockState(
                block=block,
                voice_id=block_voice(block, project=project, chapter=chapter),
                stale=stale,
                chosen=chosen,
            )
        )
    return states


# --- Editing blocks -------------------------------------------------------------------------


def _text(value: str) -> str:
    text = "\n".join(" ".join(line.split()) for line in (value or "").strip().splitlines())
    text = "\n".join(line for line in text.split("\n") if line)
    if not text:
        raise ProjectRefused("Text: a block needs words; delete the block instead.")
    if len(text) > BLOCK_MAX_CHARS:
        raise ProjectRefused(
            f"Text: a block holds at most {BLOCK_MAX_CHARS:,} characters "
            f"({len(text):,} given). Split it into two blocks."
        )
    return text


_UNSET = object()
SETTING_NAMES = ("stability", "similarity_boost", "style", "speed", "use_speaker_boost")


def _voice_settings(value) -> dict | None:
    if not value:
        return None
    if not isinstance(value, dict):
        raise ProjectRefused("Voice settings: expected named values.")
    clean: dict = {}
    for name, raw in value.items():
        if name not in SETTING_NAMES:
            raise ProjectRefused(f"Voice settings: {name!r} is not a voice setting.")
        if raw in (None, ""):
            continue
        if name == "use_speaker_boost":
            clean[name] = bool(raw)
            continue
        try:
            number = float(raw)
        except (TypeError, ValueError) as exc:
            raise ProjectRefused(f"Voice settings: {name} must be a number.") from exc
        low, high = (0.7, 1.2) if name == "speed" else (0.0, 1.0)
        if not low <= number <= high:
            raise ProjectRefused(f"Voice settings: {name} must be between {low} and {high}.")
        clean[name] = number
    return clean or None


def block_update(
    block: Block,
    *,
    text=_UNSET,
    voice_id=_UNSET,
    speaker=_UNSET,
    model_id=_UNSET,
    voice_settings=_UNSET,
    seed=_UNSET,
    locked=_UNSET,
) -> Block:
    """Change what a block says or how; only the arguments given change."""
    fields = []
    workspace = block.workspace
    if text is not _UNSET:
        block.text = _text(text)
        fields.append("text")
    if voice_id is not _UNSET:
        block.voice_id = voice_checked(workspace=workspace, voice_id=voice_id) if voice_id else ""
        fields.append("voice_id")
    if speaker is not _UNSET:
        if speaker is not None and speaker.project_id != block.chapter.project_id:
            raise ProjectRefused("Speaker: that speaker belongs to another project.")
        block.speaker = speaker
        fields.append("speaker")
    if model_id is not _UNSET:
        block.model_id = _model(model_id) if model_id else ""
        fields.append("model_id")
    if voice_settings is not _UNSET:
        block.voice_settings = _voice_settings(voice_settings)
        fields.append("voice_settings")
    if seed is not _UNSET:
        if seed not in (None, ""):
            try:
                seed = int(seed)
            except (TypeError, ValueError) as exc:
                raise ProjectRefused("Seed: a whole number from 0 to 4294967295.") from exc
            if not 0 <= seed <= 4_294_967_295:
                raise ProjectRefused("Seed: a whole number from 0 to 4294967295.")
        block.seed = None if seed in (None, "") else seed
        fields.append("seed")
    if locked is not _UNSET:
        block.locked = bool(locked)
        fields.append("locked")
    if fields:
        block.save(update_fields=[*fields, "updated_at"])
        _touch(block.chapter)
    return block


def _touch(chapter: Chapter) -> None:
    now = timezone.now()
    Chapter.objects.filter(pk=chapter.pk).update(updated_at=now)
    Project.objects.filter(pk=chapter.project_id).update(updated_at=now)


def _renumber(chapter: Chapter, ordered: list[int]) -> None:
    """Write positions 0..n-1 in the order of ``ordered`` (block pks)."""
    blocks = list(Block.objects.filter(chapter=chapter, pk__in=ordered))
    by_pk = {block.pk: block for block in blocks}
    for position, pk in enumerate(ordered):
        by_pk[pk].position = position
    Block.objects.bulk_update(blocks, ["position"], batch_size=500)


def _order(chapter: Chapter) -> list[int]:
    return list(chapter.blocks.order_by("position", "id").values_list("pk", flat=True))


@transaction.atomic
def block_insert(*, chapter: Chapter, text: str, after: Block | None = None) -> Block:
    order = _order(chapter)
    block = Block.objects.create(
        workspace_id=chapter.workspace_id, chapter=chapter, text=_text(text), position=0
    )
    index = order.index(after.pk) + 1 if after is not None and after.pk in order else len(order)
    order.insert(index, block.pk)
    _renumber(chapter, order)
    _touch(chapter)
    block.refresh_from_db()
    return block


@transaction.atomic
def block_split(block: Block, *, at: int) -> tuple[Block, Block]:
    """Split ``block`` at character ``at``: the second half becomes a new block after it,
    with the same voice, speaker, model, settings and seed."""
    text = block.text
    if not isinstance(at, int) or not 0 < at < len(text):
        raise ProjectRefused("Split: put the cursor inside the text, not at an end.")
    first, second = text[:at].strip(), text[at:].strip()
    if not first or not second:
        raise ProjectRefused("Split: both halves need words.")
    order = _order(block.chapter)
    block.text = first
    block.save(update_fields=["text", "updated_at"])
    new = Block.objects.create(
        workspace_id=block.workspace_id,
        chapter=block.chapter,
        text=second,
        voice_id=block.voice_id,
        speaker=block.speaker,
        model_id=block.model_id,
        voice_settings=block.voice_settings,
        seed=block.seed,
        position=0,
    )
    order.insert(order.index(block.pk) + 1, new.pk)
    _renumber(block.chapter, order)
    _touch(block.chapter)
    new.refresh_from_db()
    return block, new


@transaction.atomic
def block_merge(block: Block) -> Block:
    """Merge the block after ``block`` into it (its text appended); the other is deleted."""
    order = _order(block.chapter)
    index = order.index(block.pk)
    if index + 1 >= len(order):
        raise ProjectRefused("Merge: this is the chapter's last block; there is none after it.")
    other = Block.objects.get(pk=order[index + 1])
    if block.locked or other.locked:
        raise ProjectRefused("Merge: unlock both blocks first.")
    merged = f"{block.text} {other.text}"
    if len(merged) > BLOCK_MAX_CHARS:
        raise ProjectRefused(
            f"Merge: together they would hold {len(merged):,} characters; a block holds at "
            f"most {BLOCK_MAX_CHARS:,}."
        )
    block.text = merged
    block.save(update_fields=["text", "updated_at"])
    other.delete()
    order.pop(index + 1)
    _renumber(block.chapter, order)
    _touch(block.chapter)
    return block


@transaction.atomic
def block_move(block: Block, *, to: int) -> Block:
    """Move ``block`` to position ``to`` (0-based, clamped) in its chapter."""
    order = _order(block.chapter)
    order.remove(block.pk)
    to = max(0, min(int(to), len(order)))
    order.insert(to, block.pk)
    _renumber(block.chapter, order)
    _touch(block.chapter)
    block.refresh_from_db()
    return block


@transaction.atomic
def block_delete(block: Block) -> None:
    chapter = block.chapter
    if block.locked:
        raise ProjectRefused("Delete: the block is locked; unlock it first.")
    block.delete()
    _renumber(chapter, _order(chapter))
    _touch(chapter)


def chapter_update(chapter: Chapter, *, name=_UNSET, voice_id=_UNSET) -> Chapter:
    fields = []
    if name is not _UNSET:
        chapter.name = _name(name, what="Chapter name")
        fields.append("name")
    if voice_id is not _UNSET:
        chapter.voice_id = (
            voice_checked(workspace=chapter.workspace, voice_id=voice_id) if voice_id else ""
        )
        fields.append("voice_id")
    if fields:
        chapter.save(update_fields=[*fields, "updated_at"])
        _touch(chapter)
    return chapter


@transaction.atomic
def chapter_move(chapter: Chapter, *, to: int) -> None:
    order = list(chapter.project.chapters.order_by("position", "id").values_list("pk", flat=True))
    order.remove(chapter.pk)
    order.insert(max(0, min(int(to), len(order))), chapter.pk)
    for position, pk in enumerate(order):
        Chapter.objects.filter(pk=pk).update(position=position)


@transaction.atomic
def chapter_delete(chapter: Chapter) -> None:
    if chapter.blocks.filter(locked=True).exists():
        raise ProjectRefused("Delete: the chapter has locked blocks; unlock them first.")
    project = chapter.project
    chapter.delete()
    order = list(project.chapters.order_by("position", "id").values_list("pk", flat=True))
    for position, pk in enumerate(order):
        Chapter.objects.filter(pk=pk).update(position=position)


def speaker_save(*, project: Project, name: str, voice_id: str, speaker=None) -> Speaker:
    """Create a speaker, or rename / re-voice one: every block pointing to it follows."""
    name = _name(name, what="Speaker name")[:100]
    voice_id = voice_checked(workspace=project.workspace, voice_id=voice_id)
    clash = project.speakers.filter(name__iexact=name)
    if speaker is not None:
        clash = clash.exclude(pk=speaker.pk)
    if clash.exists():
        raise ProjectRefused(f"Speaker name: {name!r} is already a speaker of this project.")
    if speaker is None:
        return Speaker.objects.create(
            workspace_id=project.workspace_id, project=project, name=name, voice_id=voice_id
        )
    speaker.name, speaker.voice_id = name, voice_id
    speaker.save(update_fields=["name", "voice_id"])
    Project.objects.filter(pk=project.pk).update(updated_at=timezone.now())
    return speaker


def project_update(
    project: Project,
    *,
    name=_UNSET,
    author=_UNSET,
    language=_UNSET,
    default_voice_id=_UNSET,
    default_model_id=_UNSET,
    description=_UNSET,
) -> Project:
    fields = []
    if name is not _UNSET:
        project.name = _name(name)
        fields.append("name")
    if author is not _UNSET:
        project.author = (author or "").strip()[:200]
        fields.append("author")
    if language is not _UNSET:
        project.language = (language or "").strip()[:16]
        fields.append("language")
    if default_voice_id is not _UNSET:
        project.default_voice_id = voice_checked(
            workspace=project.workspace, voice_id=default_voice_id, field="Default voice"
        )
        fields.append("default_voice_id")
    if default_model_id is not _UNSET:
        project.default_model_id = _model(default_model_id)
        fields.append("default_model_id")
    if description is not _UNSET:
        project.description = description or ""
        fields.append("description")
    if fields:
        project.save(update_fields=[*fields, "updated_at"])
    return project


# --- Renders --------------------------------------------------------------------------------


def project_threshold(workspace) -> Decimal | None:
    row = ProjectSettings.objects.filter(workspace=workspace).first()
    return row.approval_threshold if row is not None else None


def threshold_set(*, workspace, threshold) -> ProjectSettings:
    if threshold not in (None, ""):
        try:
            threshold = Decimal(str(threshold))
        except ArithmeticError as exc:
            raise ProjectRefused("Approval threshold: a number of credits.") from exc
        if not threshold.is_finite() or threshold < 0:
            raise ProjectRefused("Approval threshold: a number of credits, 0 or more.")
    row, _ = ProjectSettings.objects.update_or_create(
        workspace=workspace,
        defaults={"approval_threshold": None if threshold in (None, "") else threshold},
    )
    return row


def _ordered_blocks(project: Project, scope: str, target) -> list[Block]:
    blocks = Block.objects.filter(chapter__project=project).select_related(
        "speaker", "chosen", "chapter"
    )
    if scope == RenderScope.BLOCK:
        blocks = blocks.filter(pk=target.pk)
    elif scope == RenderScope.CHAPTER:
        blocks = blocks.filter(chapter=target)
    return list(blocks.order_by("chapter__position", "chapter_id", "position", "id"))


def render_targets(
    *, project: Project, scope: str, target=None, draft: bool, only_stale: bool = True
) -> list[Block]:
    """The blocks a render of ``scope`` makes a take of: never locked ones; for a chapter or
    the project, only those without a chosen take of this kind or stale; one block asked
    for by name is rendered again (a new take to compare)."""
    return render_targets_by_mode(
        project=project, scope=scope, target=target, modes=(draft,), only_stale=only_stale
    )[draft]


def render_targets_by_mode(
    *, project: Project, scope: str, target=None, modes=(True, False), only_stale: bool = True
) -> dict[bool, list[Block]]:
    """``render_targets`` for each of ``modes`` (draft True, final False), the blocks read
    and signed once: the render panel shows both estimates."""
    rules_print = rules_fingerprint(project_rules(project))
    chosen: dict[bool, list[Block]] = {draft: [] for draft in modes}
    for block in _ordered_blocks(project, scope, target):
        if block.locked:
            continue
        if scope == RenderScope.BLOCK or not only_stale:
            for blocks in chosen.values():
                blocks.append(block)
            continue
        take = block.chosen
        signed = take is not None and take.signature == block_signature(
            block,
            project=project,
            chapter=block.chapter,
            rules_print=rules_print,
            draft=take.draft,
        )
        for draft, blocks in chosen.items():
            # A final take serves a draft render too.
            if not (signed and (draft or not take.draft)):
                blocks.append(block)
    return chosen


def _model_of(block: Block, project: Project) -> str:
    return block.model_id or project.default_model_id


def render_estimate(*, workspace, user, project: Project, blocks: list[Block], draft: bool):
    """What rendering ``blocks`` costs (characters × the rate card) and what is left."""
    characters = sum(len(block.text) for block in blocks)
    models = {_model_of(block, project) for block in blocks} or {project.default_model_id}
    engine = EngineKind.LOCAL if draft else engine_for(workspace).name
    estimates = [
        usage_estimate(
            workspace=workspace,
            user=user,
            capability="tts",
            engine=engine,
            model_id=model,
            units=sum(len(b.text) for b in blocks if _model_of(b, project) == model),
        )
        for model in sorted(models)
    ]
    first = estimates[0]
    credits = sum((estimate.credits for estimate in estimates), Decimal(0))
    blocked = None
    if first.member_left is not None and credits > first.member_left:
        blocked = "your budget"
    elif first.workspace_left is not None and credits > first.workspace_left:
        blocked = "the workspace's credits"
    blocked = blocked or next((e.blocked_by for e in estimates if e.blocked_by), None)
    return RenderEstimate(
        blocks=len(blocks),
        characters=characters,
        credits=credits,
        member_left=first.member_left,
        workspace_left=first.workspace_left,
        blocked_by=blocked,
        draft=draft,
    )


@dataclass(frozen=True)
class RenderEstimate:
    blocks: int
    characters: int
    credits: Decimal
    member_left: Decimal | None
    workspace_left: Decimal | None
    blocked_by: str | None
    draft: bool


def _is_manager(membership) -> bool:
    return membership is not None and ROLE_RANK[Role(membership.role)] >= ROLE_RANK[Role.MANAGER]


def render_request(
    *,
    workspace,
    user,
    membership,
    project: Project,
    scope: str,
    target=None,
    draft: bool,
    source: str = "ui",
    api_key_id: int | None = None,
    api_key_cap=None,
    only_stale: bool = True,
    snapshot: bool = False,
) -> Render:
    """Ask for a render: refused when there is nothing to render or the budget would not
    cover it; waiting for a manager when a final render is above the approval threshold
    (a manager's own renders never wait); else a job starts."""
    blocks = render_targets(
        project=project, scope=scope, target=target, draft=draft, only_stale=only_stale
    )
    if not blocks:
        raise ProjectRefused(
            "Nothing to render: every block here is up to date or locked. Change a block, "
            "or render one block to make another take of it."
        )
    estimate = render_estimate(
        workspace=workspace, user=user, project=project, blocks=blocks, draft=draft
    )
    if estimate.blocked_by:
        raise ProjectRefused(
            f"This render needs {estimate.credits:,.0f} credits "
            f"({estimate.characters:,} characters) and {estimate.blocked_by} would not cover "
            "it. Render fewer blocks, or ask a manager for more credits."
        )
    threshold = project_threshold(workspace)
    waits = (
        not draft
        and threshold is not None
        and estimate.credits > threshold
        and not _is_manager(membership)
    )
    target_id = "" if target is None else target.public_id
    with transaction.atomic():
        render = Render.objects.create(
            workspace=workspace,
            project=project,
            scope=scope,
            scope_id=target_id,
            draft=draft,
            block_ids=[block.pk for block in blocks],
            characters=estimate.characters,
            credits_estimate=estimate.credits,
            requested_by=user,
            source=source,
            api_key_id=api_key_id,
            api_key_cap=api_key_cap,
            snapshot=snapshot,
            state=RenderState.WAITING if waits else RenderState.QUEUED,
        )
        if not waits:
            _render_start(render, project=project)
        else:
            who = getattr(user, "display_name", "") or "A member"
            notify(
                workspace=workspace,
                users=_managers(workspace),
                text=(
                    f"{who} asks for a final render of {project.name} (about "
                    f"{estimate.credits:,.0f} credits): it waits for your approval."
                ),
                url=reverse("projects:approvals"),
            )
    return render


def _managers(workspace) -> list:
    rows = Membership.objects.filter(workspace=workspace, role__in=[Role.OWNER, Role.MANAGER])
    return [row.user for row in rows.select_related("user")]


def _render_subject(render: Render, project: Project) -> str:
    what = {"project": "", "chapter": "chapter", "block": "block"}[render.scope]
    kind = "Draft" if render.draft else "Final"
    return f"{kind} render of {project.name}" + (f" ({what})" if what else "")


def _render_start(render: Render, *, project: Project) -> Job:
    job = job_start(
        workspace=render.workspace,
        kind=RENDER_JOB,
        created_by=render.requested_by,
        params={"render": render.pk},
        subject_type="project",
        subject_id=project.public_id,
        message="Waiting for a worker",
        subject=_render_subject(render, project),
        inputs={"blocks": len(render.block_ids), "characters": render.characters},
        result_url=reverse("projects:detail", args=[project.public_id]),
    )
    render.job = job
    render.state = RenderState.QUEUED
    render.save(update_fields=["job", "state"])
    return job


def render_decide(*, render: Render, user, membership, approve: bool, reason: str = "") -> Render:
    """A manager approves a waiting render (its job starts) or refuses it with a reason."""
    if not _is_manager(membership):
        raise ProjectRefused("Only managers and owners approve renders.")
    reason = " ".join((reason or "").split())[:500]
    with transaction.atomic():
        render = Render.objects.select_for_update().get(pk=render.pk)
        if render.state != RenderState.WAITING:
            raise ProjectRefused("This render was already decided.")
        if not approve and not reason:
            raise ProjectRefused("Reason: say why the render is refused; the member reads it.")
        render.decided_by, render.decided_at, render.reason = user, timezone.now(), reason
        if approve:
            render.save(update_fields=["decided_by", "decided_at", "reason"])
            _render_start(render, project=render.project)
        else:
            render.state = RenderState.REFUSED
            render.save(update_fields=["decided_by", "decided_at", "reason", "state"])
        # Whoever asked is told, wherever the decision was taken (the page, the API).
        what = f"{'draft' if render.draft else 'final'} render of {render.project.name}"
        who = getattr(user, "display_name", "") or "A manager"
        notify(
            workspace=render.workspace,
            users=[render.requested_by],
            text=(
                f"{who} approved the {what}: it renders now."
                if approve
                else f"{who} refused the {what}: {reason}"
            ),
            url=reverse("projects:detail", args=[render.project.public_id]),
        )
    return render


def render_cancel(render: Render) -> Render:
    """Stop a render: a waiting one is withdrawn; a running one stops after its current
    block, keeping every take made."""
    if render.state == RenderState.WAITING:
        render.state = RenderState.REFUSED
        render.reason = "Withdrawn by the member who asked for it."
        render.save(update_fields=["state", "reason"])
    elif render.job is not None and render.job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        job_cancel(job=render.job)
    return render


def approvals_waiting(workspace):
    return Render.objects.filter(workspace=workspace, state=RenderState.WAITING)


def _tail(text: str | None) -> str | None:
    return text[-CONTEXT_CHARACTERS:] if text else None


def _head(text: str | None) -> str | None:
    return text[:CONTEXT_CHARACTERS] if text else None


def render_run(*, job: Job, progress) -> dict:
    """Job runner: a take of every block of the render, in order; each its own core call.

    A block that already has a take of this render (an earlier run of the job) is skipped,
    and a clip an earlier run kept but did not record as a take is adopted, so a retried
    job never pays twice. A cancelled job stops after its current block: every take made
    is kept. A spent budget stops it with what was made kept.
    """
    render = Render.objects.select_related("project", "requested_by").get(pk=job.params["render"])
    project = render.project
    workspace = job.workspace
    rules = project_rules(project)
    rules_print = rules_fingerprint(rules)
    blocks = {
        block.pk: block
        for block in Block.objects.filter(pk__in=render.block_ids).select_related(
            "speaker", "chapter"
        )
    }
    ordered = [blocks[pk] for pk in render.block_ids if pk in blocks]
    done = set(Take.objects.filter(render=render).values_list("block_id", flat=True))
    voices = library_voices(workspace=workspace)
    caller_base = {
        "workspace": workspace,
        "user": render.requested_by,
        "source": render.source,
        "key_id": render.api_key_id,
        "key_cap": render.api_key_cap,
        "draft": render.draft,
        "engine_kind": EngineKind.LOCAL if render.draft else "",
    }
    todo = [block for block in ordered if block.pk not in done and not block.locked]
    total = len(ordered)
    context = _RenderContext(
        render=render,
        project=project,
        rules=rules,
        rules_print=rules_print,
        voices=voices,
        caller_base=caller_base,
        total=total,
        dictionaries=tuple(
            project.dictionaries.order_by("id").values_list("public_id", "version_id")
        ),
    )
    progress(1, f"Rendering {total - len(todo)} of {total} blocks")
    made = _rendered_in_pool(
        context, todo, first=total - len(todo), threads=render_threads(), progress=progress
    )
    if render.snapshot:
        from .exports import snapshot_make

        snapshot_make(render=render, progress=progress)
    return {"render": render.pk, "takes": made, "blocks": total}


@dataclass(frozen=True)
class _RenderContext:
    render: Render
    project: Project
    rules: tuple
    rules_print: str
    voices: dict
    caller_base: dict
    total: int
    dictionaries: tuple = ()  # (public id, version id) of each dictionary applied


def _rendered_in_pool(context: _RenderContext, todo: list[Block], *, first, threads, progress):
    """Render ``todo`` with up to ``threads`` blocks at once, in order of submission; the
    takes count. Progress after each block; a cancelled job (``progress`` raises) or a
    failed block stops new blocks, lets those under way finish (their takes are kept) and
    raises."""
    if threads <= 1 or len(todo) <= 1:
        for count, block in enumerate(todo, start=1):
            _render_block(context, block, made=count - 1)
            progress(
                max(1, int(99 * (first + count) / context.total)),
                f"Rendered {first + count} of {context.total} blocks",
            )
        return len(todo)

    def one(block: Block, made: int) -> None:
        try:
            _render_block(context, block, made=made)
        finally:
            connection.close()  # this thread's own connection

    made = 0
    queue = iter(todo)
    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render") as pool:
        running = set()
        for block in queue:
            running.add(pool.submit(one, block, made))
            if len(running) >= threads:
                break
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                error = future.exception()
                if error is not None:
                    failure = failure or error
                    continue
                made += 1
                if failure is None:
                    try:
                        progress(
                            max(1, int(99 * (first + made) / context.total)),
                            f"Rendered {first + made} of {context.total} blocks",
                        )
                    except BaseException as exc:  # cancelled or superseded: stop here
                        failure = exc
            if failure is None:
                for block in queue:
                    running.add(pool.submit(one, block, made))
                    if len(running) >= threads:
                        break
    if failure is not None:
        raise failure
    return made


def _render_block(context: _RenderContext, block: Block, *, made: int) -> Take:
    """One block's take: its core call (or the clip an earlier run kept), recorded as a take
    and chosen, in one transaction."""
    render, project = context.render, context.project
    workspace = render.workspace
    chapter = block.chapter
    neighbours = _neighbours(block)
    voice_id = block_voice(block, project=project, chapter=chapter)
    spoken_voice = (
        draft_voice(voice_id=voice_id, voice=context.voices.get(voice_id))
        if render.draft
        else voice_id
    )
    signature = block_signature(
        block, project=project, chapter=chapter, rules_print=context.rules_print, draft=render.draft
    )
    extra = {
        "project": project.public_id,
        "chapter": chapter.public_id,
        "block": block.public_id,
        "project_render": render.pk,
        "draft": render.draft,
    }
    if context.dictionaries:
        extra["pronunciation_dictionaries"] = [
            {"pronunciation_dictionary_id": public_id, "version_id": version_id}
            for public_id, version_id in context.dictionaries
        ]
    if spoken_voice != voice_id:
        extra["draft_stand_in_for"] = voice_id
    generation = Generation.objects.filter(
        workspace=workspace,
        recipe__project_render=render.pk,
        recipe__block=block.public_id,
    ).first()
    if generation is None:
        caller = Caller(
            purpose=("project_block", block.public_id),
            project=project.public_id,
            **context.caller_base,
        )
        try:
            spoken = speak(
                caller=caller,
                speech=SpeechInput(
                    voice_id=spoken_voice,
                    text=block.text,
                    model_id=_model_of(block, project),
                    voice_settings=block.voice_settings,
                    output_format=RENDER_FORMAT,
                    seed=block.seed,
                    language_code=project.language or None,
                    previous_text=_tail(neighbours[0]),
                    next_text=_head(neighbours[1]),
                    recipe_extra=extra,
                    pronunciation_rules=context.rules,
                ),
            )
        except ApiRefused as exc:
            if exc.status == 429:
                raise ProjectRefused(
                    f"Stopped after {made} of {context.total} blocks: {exc.message} The "
                    "takes made are kept."
                ) from exc
            raise ProjectRefused(
                f"A block could not be rendered ({block.text[:40]!r}…): {exc.message} "
                "The takes made before it are kept."
            ) from exc
        generation = Generation.objects.select_related("usage_event").get(
            workspace=workspace, request_id=spoken.request_id
        )
    with transaction.atomic():
        take = Take.objects.create(
            workspace=workspace,
            block=block,
            generation=generation,
            draft=render.draft,
            signature=signature,
            render=render,
            user=render.requested_by,
            credits=(
                generation.usage_event.credits
                if generation.usage_event_id and generation.usage_event.credits
                else 0
            ),
        )
        Block.objects.filter(pk=block.pk).update(chosen=take)
    return take


def _neighbours(block: Block) -> tuple[str | None, str | None]:
    before = (
        Block.objects.filter(chapter_id=block.chapter_id, position__lt=block.position)
        .order_by("-position", "-id")
        .values_list("text", flat=True)
        .first()
    )
    after = (
        Block.objects.filter(chapter_id=block.chapter_id, position__gt=block.position)
        .order_by("position", "id")
        .values_list("text", flat=True)
        .first()
    )
    return before, after


def take_choose(take: Take) -> Take:
    if take.block.locked:
        raise ProjectRefused("Choose: the block is locked; unlock it to choose another take.")
    Block.objects.filter(pk=take.block_id).update(chosen=take, updated_at=timezone.now())
    return take


# --- The regeneration ratio -----------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    takes: int  # final takes rendered
    blocks: int  # blocks with a final take
    drafts: int

    @property
    def ratio(self) -> float | None:
        return round(self.takes / self.blocks, 2) if self.blocks else None


def regeneration(takes) -> Ratio:
    """Final takes rendered ÷ blocks with a final take over ``takes`` (a Take queryset):
    the seed's budget rule (1.75×) measured; drafts, free, are counted apart."""
    row = takes.aggregate(
        takes=Count("pk", filter=Q(draft=False)),
        blocks=Count("block", filter=Q(draft=False), distinct=True),
        drafts=Count("pk", filter=Q(draft=True)),
    )
    return Ratio(takes=row["takes"], blocks=row["blocks"], drafts=row["drafts"])


def regeneration_by(takes, field: str) -> list[dict]:
    """The ratio grouped by ``field`` (``block__chapter``, ``user``, ``block__chapter__project``),
    for the project page and billing analytics."""
    rows = (
        takes.values(field)
        .annotate(
            takes=Count("pk", filter=Q(draft=False)),
            blocks=Count("block", filter=Q(draft=False), distinct=True),
            drafts=Count("pk", filter=Q(draft=True)),
            credits=Sum("credits"),
        )
        .order_by(field)
    )
    out = []
    for row in rows:
        row["ratio"] = round(row["takes"] / row["blocks"], 2) if row["blocks"] else None
        out.append(row)
    return out


def project_takes(project: Project):
    return Take.objects.filter(block__chapter__project=project)


# --- What the project pages show ------------------------------------------------------------


def projects_summarised(projects):
    """``projects`` (a Project queryset) with what the list shows, one query for a page:
    ``chapters_n``, ``blocks_n``, ``chosen_n`` (blocks with a chosen take), ``drafts_n`` /
    ``finals_n`` (chosen takes of each kind), ``final_takes_n`` and ``final_blocks_n`` (the
    regeneration ratio's parts)."""
    from django.db.models import IntegerField, OuterRef, Subquery
    from django.db.models.functions import Coalesce

    def counted(queryset, group: str, field: str = "pk", distinct: bool = False):
        return Coalesce(
            Subquery(
                queryset.order_by()
                .values(group)
                .annotate(n=Count(field, distinct=distinct))
                .values("n")[:1],
                output_field=IntegerField(),
            ),
            0,
        )

    blocks = Block.objects.filter(chapter__project=OuterRef("pk"))
    takes = Take.objects.filter(block__chapter__project=OuterRef("pk"), draft=False)
    return projects.annotate(
        chapters_n=counted(Chapter.objects.filter(project=OuterRef("pk")), "project"),
        blocks_n=counted(blocks, "chapter__project"),
        chosen_n=counted(blocks.filter(chosen__isnull=False), "chapter__project"),
        drafts_n=counted(blocks.filter(chosen__draft=True), "chapter__project"),
        finals_n=counted(blocks.filter(chosen__draft=False), "chapter__project"),
        final_takes_n=counted(takes, "block__chapter__project"),
        final_blocks_n=counted(takes, "block__chapter__project", "block", distinct=True),
    )


@dataclass(frozen=True)
class ChapterSummary:
    chapter: Chapter
    blocks: int
    stale: int  # blocks without a chosen take, or whose chosen take is out of date
    locked: int
    drafts: int  # blocks whose chosen take is a draft
    finals: int
    seconds: float  # the chosen takes, end to end


def project_chapters(project: Project) -> list[ChapterSummary]:
    """Each chapter of ``project`` with its blocks, stale, drafts and finals and the length
    of its chosen takes (a constant number of queries, however many chapters)."""
    rules_print = rules_fingerprint(project_rules(project))
    chapters = list(project.chapters.order_by("position", "id"))
    by_chapter: dict[int, list[Block]] = {chapter.pk: [] for chapter in chapters}
    blocks = (
        Block.objects.filter(chapter__project=project)
        .select_related("speaker", "chosen", "chosen__generation")
        .order_by("position", "id")
    )
    for block in blocks:
        by_chapter[block.chapter_id].append(block)
    out = []
    for chapter in chapters:
        states = chapter_states(
            chapter, project=project, blocks=by_chapter[chapter.pk], rules_print=rules_print
        )
        chosen = [state.chosen for state in states if state.chosen is not None]
        out.append(
            ChapterSummary(
                chapter=chapter,
                blocks=len(states),
                stale=sum(1 for state in states if state.stale),
                locked=sum(1 for state in states if state.block.locked),
                drafts=sum(1 for take in chosen if take.draft),
                finals=sum(1 for take in chosen if not take.draft),
                seconds=sum(take.generation.duration_seconds or 0 for take in chosen),
            )
        )
    return out


def project_renders(project: Project, *, limit: int = 10):
    """The project's latest renders (with their job and who asked and decided)."""
    return (
        Render.objects.filter(project=project)
        .select_related("job", "requested_by", "decided_by")
        .order_by("-created_at", "-id")[:limit]
    )


def render_active(render: Render) -> bool:
    """Whether ``render`` still waits or runs (the page keeps watching it)."""
    if render.state == RenderState.WAITING:
        return True
    return (
        render.state == RenderState.QUEUED
        and render.job is not None
        and render.job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    )
