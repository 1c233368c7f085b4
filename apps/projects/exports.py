"""Exports of a narration project: a chapter or the whole project as one MP3, WAV or M4B file
(or a ZIP of chapter MP3s), loudness-normalised to a profile, with a compliance report per
chapter and the recipe of every take it used.

``export_start`` checks what is asked (every block in scope has a chosen take; something is
in scope; a known format and profile), creates the ``Export`` row and its job (kind
``project_export``). The job (``export_run``) works a chapter at a time, never the whole
project in memory: the chapter's chosen takes and placed cues are assembled, normalised and
measured (``audio_export``), and the writer encodes it into a temporary file before the next
chapter is read. The finished file is then kept in ``Export.file``; a cancelled or failed job
keeps no file.

``snapshot_make`` is the same export (MP3, −16 LUFS) made inside a ``/v1`` convert's render
job once its takes are made: ``/v1/studio/projects`` lists it as a snapshot.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.core.files import File
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from apps.jobs.models import Job, JobStatus
from apps.jobs.services import job_cancel, job_start

from .audio_export import (
    PROFILES,
    SAMPLE_RATE,
    ChapterAudio,
    CuePlacement,
    ExportAudioError,
    Piece,
    chapter_assemble,
    compliance,
    export_write,
    normalised,
    zip_write,
)
from .models import Block, Chapter, Cue, Export, ExportFormat, Project, RenderScope
from .narration import ProjectRefused

EXPORT_JOB = "project_export"
PAUSE_MS = 300  # of silence after every take (and every cue placed after a block)
ZIP_MEMBER_FORMAT = "mp3"  # a ZIP of chapters holds one MP3 per chapter
CONTENT_TYPES = {
    ExportFormat.MP3: "audio/mpeg",
    ExportFormat.WAV: "audio/wav",
    ExportFormat.M4B: "audio/mp4",
    ExportFormat.ZIP: "application/zip",
}
PROFILE_HELP = {
    "lufs16": "−16 LUFS, peaks under −1 dB: podcasts, video and the web.",
    "audiobook": (
        "Audiobook (ACX): RMS −23 to −18 dB, peaks under −3 dB, noise floor under −60 dB, "
        "files up to 2 hours."
    ),
}
_RAW_CODECS = ("pcm", "ulaw", "alaw")
# Silence around each chapter, by profile: ACX asks for 0.5-1 s of room tone before a
# chapter and 1-5 s after it (the noise floor is measured there, on 500 ms of quiet).
EDGES_S = {"audiobook": (0.75, 2.0)}  # (before, after: the last take's pause included)


# --- What is in scope ----------------------------------------------------------------------


@dataclass
class ChapterPlan:
    """One chapter of an export as it stands: its blocks in order, and which lack a take."""

    chapter: Chapter
    number: int  # 1-based, in the project's order
    blocks: list[Block] = field(default_factory=list)
    seconds: float = 0.0  # the chosen takes, their pauses and the cues placed after blocks

    @property
    def missing(self) -> list[int]:
        """Positions (1-based, in the chapter) of the blocks without a chosen take."""
        return [index for index, block in enumerate(self.blocks, 1) if block.chosen_id is None]


@dataclass(frozen=True)
class ExportEstimate:
    """What an export of the project (or one chapter) would hold, before it is asked for."""

    chapters: list[ChapterPlan]
    blocks: int
    missing: int
    seconds: float

    @property
    def ready(self) -> bool:
        return self.blocks > 0 and not self.missing


def export_plans(*, project: Project, chapter: Chapter | None = None) -> list[ChapterPlan]:
    """The chapters an export of ``project`` (or of ``chapter``) covers, in order, each with
    its blocks (their chosen take and its generation loaded) and its estimated length; three
    queries whatever the size of the project."""
    chapters = list(project.chapters.all())
    plans = {
        row.pk: ChapterPlan(chapter=row, number=number)
        for number, row in enumerate(chapters, 1)
        if chapter is None or row.pk == chapter.pk
    }
    blocks = (
        Block.objects.filter(chapter_id__in=plans)
        .select_related("chosen__generation")
        .order_by("position", "id")
    )
    for block in blocks:
        plan = plans[block.chapter_id]
        block.chapter = plan.chapter  # the row already read (no query per block)
        plan.blocks.append(block)
        if block.chosen_id is not None:
            plan.seconds += (block.chosen.generation.duration_seconds or 0.0) + PAUSE_MS / 1000
    after = Cue.objects.filter(
        project=project,
        block__chapter_id__in=plans,
        generation__isnull=False,
        placement="after",
    ).values_list("block__chapter_id", "generation__duration_seconds")
    for chapter_id, seconds in after:
        plans[chapter_id].seconds += (seconds or 0.0) + PAUSE_MS / 1000
    return list(plans.values())


def export_estimate(*, project: Project, chapter: Chapter | None = None) -> ExportEstimate:
    plans = export_plans(project=project, chapter=chapter)
    return ExportEstimate(
        chapters=plans,
        blocks=sum(len(plan.blocks) for plan in plans),
        missing=sum(len(plan.missing) for plan in plans),
        seconds=sum(plan.seconds for plan in plans),
    )


def _listed(numbers: list[int]) -> str:
    words = [str(number) for number in numbers[:12]]
    if len(numbers) > 12:
        return ", ".join(words) + f" and {len(numbers) - 12} more"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _ready(plans: list[ChapterPlan], *, chapter: Chapter | None) -> list[ChapterPlan]:
    """The plans worth exporting (chapters with blocks); refused, naming every chapter and
    block at fault, when a block has no take or nothing is left."""
    problems = []
    for plan in plans:
        missing = plan.missing
        if missing:
            blocks = "block" if len(missing) == 1 else "blocks"
            problems.append(
                f"Chapter {plan.number} “{plan.chapter.name}” has {len(missing)} {blocks} "
                f"without a take ({blocks} {_listed(missing)}): render them first."
            )
    if problems:
        raise ProjectRefused(" ".join(problems))
    kept = [plan for plan in plans if plan.blocks]
    if not kept:
        if chapter is not None:
            raise ProjectRefused(
                f"Nothing to export: chapter “{chapter.name}” has no blocks. Add text to it first."
            )
        raise ProjectRefused("Nothing to export: this project has no blocks yet.")
    return kept


# --- Starting -------------------------------------------------------------------------------


def _checked(fmt: str, profile: str) -> tuple[str, str]:
    if fmt not in ExportFormat.values:
        raise ProjectRefused("Format: choose MP3, WAV, M4B or a ZIP of chapters.")
    if profile not in PROFILES:
        raise ProjectRefused("Loudness: choose −16 LUFS or the audiobook profile.")
    return fmt, profile


def _subject(export: Export) -> str:
    what = export.project.name + (f" · {export.chapter.name}" if export.chapter_id else "")
    return f"{export.format.upper()} export of {what}"


def export_start(
    *,
    workspace,
    user,
    project: Project,
    chapter: Chapter | None = None,
    fmt: str = ExportFormat.MP3,
    profile: str = "lufs16",
) -> Export:
    """Ask for an export of ``project`` (or one of its chapters): the row and its job, in one
    transaction. Refused, with what to do, when a block in scope has no chosen take, when
    nothing is in scope, or for an unknown format or profile."""
    fmt, profile = _checked(fmt, profile)
    if project.workspace_id != workspace.pk:
        raise ProjectRefused("This project is not in this workspace.")
    if chapter is not None and chapter.project_id != project.pk:
        raise ProjectRefused("Chapter: that chapter is not in this project.")
    plans = _ready(export_plans(project=project, chapter=chapter), chapter=chapter)
    before_s, after_s = EDGES_S.get(profile, (0.0, 0.0))
    seconds = sum(plan.seconds + before_s + max(0.0, after_s - PAUSE_MS / 1000) for plan in plans)
    with transaction.atomic():
        export = Export.objects.create(
            workspace=workspace,
            project=project,
            chapter=chapter,
            name=project.name + (f" · {chapter.name}" if chapter is not None else ""),
            format=fmt,
            profile=profile,
            created_by=user,
        )
        export.job = job_start(
            workspace=workspace,
            kind=EXPORT_JOB,
            created_by=user,
            params={"export": export.pk},
            subject_type="project",
            subject_id=project.public_id,
            subject=_subject(export),
            inputs={
                "format": ExportFormat(fmt).label,
                "profile": PROFILES[profile].name,
                "chapters": len(plans),
                "seconds": round(seconds, 1),
            },
            result_url=reverse("projects:exports", args=[project.public_id]),
        )
        export.save(update_fields=["job"])
    return export


# --- Making the file ------------------------------------------------------------------------


def _source(file) -> tuple[object, Callable[[], None]]:
    """What the audio library reads a stored file from: its path where the storage has one,
    else an open handle (closed by the returned function)."""
    try:
        return file.storage.path(file.name), lambda: None
    except NotImplementedError:
        handle = file.storage.open(file.name, "rb")
        return handle, handle.close


def _raw_format(generation) -> str:
    """The recipe's output format when the stored audio is raw (it states no rate)."""
    fmt = str((generation.recipe or {}).get("output_format") or "")
    return fmt if fmt.split("_")[0] in _RAW_CODECS else ""


def _chapter_audio(plan: ChapterPlan, cues: list[Cue]) -> tuple:
    """One chapter assembled (mono float32 at 44.1 kHz) with its timeline."""
    closers: list[Callable[[], None]] = []
    try:
        pieces = []
        for block in plan.blocks:
            generation = block.chosen.generation
            if not generation.file:
                raise ProjectRefused(
                    f"Chapter {plan.number} “{plan.chapter.name}”: the take of block "
                    f"{plan.blocks.index(block) + 1} has no audio; render it again."
                )
            audio, close = _source(generation.file)
            closers.append(close)
            pieces.append(
                Piece(
                    key=block.public_id,
                    audio=audio,
                    pause_after_ms=PAUSE_MS,
                    output_format=_raw_format(generation),
                )
            )
        placements = []
        for cue in cues:
            audio, close = _source(cue.generation.file)
            closers.append(close)
            placements.append(
                CuePlacement(
                    key=f"cue-{cue.pk}",
                    audio=audio,
                    block_key=cue.block.public_id,
                    mode=cue.placement,
                    volume_db=cue.volume_db,
                    output_format=_raw_format(cue.generation),
                )
            )
        try:
            return chapter_assemble(pieces, placements)
        except ExportAudioError as exc:
            raise ProjectRefused(
                f"Chapter {plan.number} “{plan.chapter.name}”: {exc.message}"
            ) from None
    except FileNotFoundError:
        raise ProjectRefused(
            f"Chapter {plan.number} “{plan.chapter.name}”: the audio of a take or a cue is "
            "missing from storage; render the chapter again."
        ) from None
    finally:
        for close in closers:
            close()


def _cues_of(project: Project, plans: list[ChapterPlan]) -> dict[int, list[Cue]]:
    by_chapter: dict[int, list[Cue]] = {plan.chapter.pk: [] for plan in plans}
    rows = (
        Cue.objects.filter(
            project=project, block__chapter_id__in=by_chapter, generation__isnull=False
        )
        .select_related("generation", "block")
        .order_by("created_at", "id")
    )
    for cue in rows:
        by_chapter[cue.block.chapter_id].append(cue)
    return by_chapter


def export_filename(export: Export) -> str:
    """``<project>-<chapter>.<ext>`` (``<project>.<ext>`` for the whole project)."""
    parts = [slugify(export.project.name) or "project"]
    if export.chapter_id is not None:
        parts.append(slugify(export.chapter.name) or "chapter")
    return "-".join(parts)[:120] + f".{export.format}"


def _tags(export: Export) -> dict:
    project = export.project
    return {
        "title": export.chapter.name if export.chapter_id else project.name,
        "author": project.author,
        "album": project.name,
        "language": project.language,
        "comment": "Made in Chorus",
    }


def _export_make(export: Export, *, step: Callable[[int, int, str], None]) -> Export:
    """Make the file of ``export`` and keep it with its report. ``step(done, total, message)``
    is called before each chapter and before the file is kept; it may raise to stop (a
    cancelled job), and then no file is left anywhere."""
    project = export.project
    plans = _ready(export_plans(project=project, chapter=export.chapter), chapter=export.chapter)
    cues = _cues_of(project, plans)
    profile = PROFILES[export.profile]
    total = len(plans)
    entries: list[dict] = []
    zipped = export.format == ExportFormat.ZIP
    position = [0]  # samples into the file where the next chapter starts

    def chapter_audio(index: int, plan: ChapterPlan) -> ChapterAudio:
        def load():
            step(index, total, f"Chapter {index + 1} of {total}: {plan.chapter.name}")
            assembled, timeline = _chapter_audio(plan, cues[plan.chapter.pk])
            assembled, lead = _edged(assembled, export.profile)
            samples = normalised(assembled, SAMPLE_RATE, profile)
            del assembled
            offset = 0 if zipped else position[0]  # a ZIP's chapters are files of their own
            entries.append(
                {
                    **_chapter_report(
                        plan, cues[plan.chapter.pk], timeline, (offset + lead) / SAMPLE_RATE
                    ),
                    "start_s": round(offset / SAMPLE_RATE, 3),
                    "end_s": round((offset + samples.size) / SAMPLE_RATE, 3),
                    "compliance": compliance(samples, SAMPLE_RATE, profile),
                }
            )
            position[0] += samples.size
            return samples

        return ChapterAudio(plan.chapter.name, load)

    chapters = [chapter_audio(index, plan) for index, plan in enumerate(plans)]
    with tempfile.TemporaryDirectory(prefix="chorus-export-") as scratch:
        out = Path(scratch) / f"export.{export.format}"
        files = None
        try:
            if zipped:
                files = zip_write(chapters, ZIP_MEMBER_FORMAT, out, tags=_tags(export))
            else:
                export_write(chapters, export.format, out, tags=_tags(export))
        except ExportAudioError as exc:
            raise ProjectRefused(f"The export could not be made: {exc.message}") from None
        if files is not None:
            for entry, name in zip(entries, files, strict=True):
                entry["file"] = name
        step(total, total, "Keeping the file")
        report = {
            "format": export.format,
            "profile": export.profile,
            "profile_name": profile.name,
            "chapters": entries,
            "passes": all(rule["passes"] for entry in entries for rule in entry["compliance"]),
            # Flat, for /v1 snapshot archives: the take each block was heard from.
            "takes": [
                {"block": b["block"], "take": b["take"], "history_item_id": b["generation"]}
                for entry in entries
                for b in entry["blocks"]
            ],
        }
        size = out.stat().st_size
        with out.open("rb") as handle:
            export.file.save(export_filename(export), File(handle), save=False)
    finished = timezone.now()
    duration = round(position[0] / SAMPLE_RATE, 3)
    try:
        updated = Export.objects.filter(pk=export.pk).update(
            file=export.file.name,
            size_bytes=size,
            duration_seconds=duration,
            report=report,
            finished_at=finished,
        )
        if not updated:
            raise ProjectRefused("The export was deleted while it was being made.")
        step(total, total, "Done")  # cancelled meanwhile: the file goes
    except BaseException:
        export.file.storage.delete(export.file.name)
        Export.objects.filter(pk=export.pk).update(
            file="", size_bytes=0, duration_seconds=None, report={}, finished_at=None
        )
        export.file.name = ""
        raise
    export.size_bytes, export.duration_seconds = size, duration
    export.report, export.finished_at = report, finished
    return export


def _edged(samples, profile: str):
    """The chapter with the profile's silence before and after it, and the samples added
    before (the timeline moves on by them)."""
    before_s, after_s = EDGES_S.get(profile, (0.0, 0.0))
    before = round(before_s * SAMPLE_RATE)
    after = max(0, round((after_s - PAUSE_MS / 1000) * SAMPLE_RATE))
    if not before and not after:
        return samples, 0
    return np.pad(samples, (before, after)), before


def _chapter_report(plan: ChapterPlan, cues: list[Cue], timeline, offset: float) -> dict:
    times = {(entry.kind, entry.key): entry for entry in timeline}

    def at(kind: str, key: str) -> dict:
        entry = times.get((kind, key))
        if entry is None:
            return {}
        return {
            "start_s": round(offset + entry.start_s, 3),
            "end_s": round(offset + entry.end_s, 3),
        }

    return {
        "chapter": plan.chapter.public_id,
        "title": plan.chapter.name,
        "blocks": [
            {
                "block": block.public_id,
                "take": block.chosen_id,
                "generation": block.chosen.generation.history_item_id,
                "draft": block.chosen.draft,
                "recipe": block.chosen.generation.recipe,
                **at("block", block.public_id),
            }
            for block in plan.blocks
        ],
        "cues": [
            {
                "cue": cue.pk,
                "kind": cue.kind,
                "prompt": cue.prompt,
                "block": cue.block.public_id,
                "placement": cue.placement,
                "volume_db": cue.volume_db,
                "generation": cue.generation.history_item_id,
                "recipe": cue.generation.recipe,
                **at("cue", f"cue-{cue.pk}"),
            }
            for cue in cues
        ],
    }


def export_run(*, job: Job, progress) -> dict:
    """Job runner of ``project_export``: the export's file, a chapter at a time, progress
    after each; a cancelled job stops at the next chapter and keeps no file."""
    export = (
        Export.objects.select_related("project", "chapter")
        .filter(pk=job.params.get("export"), workspace=job.workspace)
        .first()
    )
    if export is None:
        return {"export": None}  # deleted before it ran
    if not export.file:
        progress(1, "Gathering the takes")

        def step(done: int, total: int, message: str) -> None:
            progress(1 + int(97 * done / max(total, 1)), message)

        _export_make(export, step=step)
    return {
        "export": export.public_id,
        "format": export.format,
        "size_bytes": export.size_bytes,
        "duration_seconds": export.duration_seconds,
        "passes": bool(export.report.get("passes")),
    }


# --- Snapshots (/v1 convert) ----------------------------------------------------------------


def snapshot_make(*, render, progress) -> Export:
    """After a ``/v1`` convert's takes are made: an MP3 export (−16 LUFS) of the render's
    project or chapter, made here, inside the render's job, and named like the official
    API's snapshots ("<project name> <timestamp>"). A failure keeps the takes and no
    snapshot; a retried job that already made its snapshot gets that one back."""
    project = render.project
    chapter = None
    if render.scope == RenderScope.CHAPTER:
        chapter = Chapter.objects.filter(project=project, public_id=render.scope_id).first()
        if chapter is None:
            raise ProjectRefused("The takes are kept, but the chapter was deleted: no snapshot.")
    elif render.scope == RenderScope.BLOCK:
        block = Block.objects.filter(chapter__project=project, public_id=render.scope_id).first()
        chapter = block.chapter if block is not None else None
    if render.job_id is not None:
        made = Export.objects.filter(job_id=render.job_id).exclude(file="").first()
        if made is not None:
            return made
    export = Export.objects.create(
        workspace=render.workspace,
        project=project,
        chapter=chapter,
        name=f"{project.name} {timezone.now():%Y-%m-%d %H:%M:%S}",
        format=ExportFormat.MP3,
        profile="lufs16",
        job_id=render.job_id,
        created_by=render.requested_by,
    )
    export.project, export.chapter = project, chapter

    def step(done: int, total: int, message: str) -> None:
        progress(99, f"Snapshot: {message}")

    try:
        _export_make(export, step=step)
    except ProjectRefused as exc:
        export.delete()
        raise ProjectRefused(f"The takes are kept, but no snapshot was made: {exc}") from None
    except BaseException:
        export.delete()
        raise
    return export


# --- Reading and deleting -------------------------------------------------------------------


def project_exports(project: Project, *, chapter: Chapter | None = None, limit: int | None = None):
    rows = Export.objects.filter(project=project).select_related("job", "chapter", "project")
    if chapter is not None:
        rows = rows.filter(chapter=chapter)
    rows = rows.order_by("-created_at", "-id")
    return rows[:limit] if limit else rows


def export_active(export: Export) -> bool:
    return export.job is not None and export.job.status in (JobStatus.QUEUED, JobStatus.RUNNING)


def export_delete(export: Export) -> None:
    """Remove an export: its job is cancelled if it still runs, its file deleted."""
    if export_active(export):
        job_cancel(job=export.job)
    name = export.file.name if export.file else ""
    storage = export.file.storage
    export.delete()
    if name:
        transaction.on_commit(lambda: storage.delete(name))
