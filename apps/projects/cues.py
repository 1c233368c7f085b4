"""Sound and music cues of a narration project: made as jobs, placed after or under a block.

A cue is one sound effect or piece of music made from a prompt, in the project's cue list.
``cue_start`` checks the request, creates the cue and its job (kind ``project_cue``) and
reserves the estimated credits as the member's, all in one transaction: a spent budget, an
empty prompt or a length out of range refuses it whole, nothing kept. The job (``cue_run``)
calls the core, ``generation.media.sound`` or ``generation.music.compose``, with a ``Caller``
whose purpose is ``("project_cue", <cue id>)``; the clip is a ``history.Generation`` whose
recipe also names the project, the block and the cue, and ``Cue.generation`` points to it.

Metering, exactly once across the job's retries:

- music: ``compose`` takes the start's reservation over (``generation.jobs.job_metered``
  under ``cue_ledger_key``) and settles it with the clip it keeps;
- sound: ``sound`` meters its own call (it takes no idempotency key), so the job releases the
  start's reservation just before calling it and the sound call's row is the one charged.

Either way a retried job first looks for a clip an earlier run kept (any ``Generation``
charged under the cue's purpose) and adopts it instead of paying again. A job cancelled
before its engine call keeps nothing and releases its reservation; a call already under way
finishes, and its clip, whole and paid for, is kept. ``cue_queue_items`` gives the chapter
player what to play where.
"""

import math
from dataclasses import dataclass

from django.db import transaction
from django.urls import reverse
from django.utils.text import Truncator

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.billing.rates import units_for
from apps.billing.services import BudgetExceeded, Estimate, meter_refund, rate_for, usage_estimate
from apps.engines.base import DEFAULT_OUTPUT_FORMAT, EngineError, MusicRequest, SoundRequest
from apps.generation.caller import Caller
from apps.generation.engine import engine_for
from apps.generation.errors import ApiInvalid, ApiRefused
from apps.generation.jobs import errors_recorded, job_reserve, job_waits
from apps.generation.media import sound
from apps.generation.music import compose
from apps.history.models import Generation, new_history_id
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import JobCancelled, TransientJobError, job_cancel, job_start

from .models import Block, Chapter, Cue, CueKind, CuePlacementMode, Project
from .narration import ProjectRefused

CUE_JOB = "project_cue"
PURPOSE = "project_cue"

# What a cue may last, in seconds (the engines take sound 0.5–30 s and music 3–600 s; a cue
# of music is kept to five minutes).
LENGTHS = {CueKind.SOUND: (0.5, 30.0), CueKind.MUSIC: (3.0, 300.0)}
DEFAULT_LENGTH = {CueKind.SOUND: 5.0, CueKind.MUSIC: 30.0}
VOLUME_RANGE = (-40.0, 6.0)  # dB, relative to the cue as made
PROMPT_MAX = Cue._meta.get_field("prompt").max_length
SEED_MAX = 4_294_967_295
CAPABILITY = {CueKind.SOUND: "sound_effect", CueKind.MUSIC: "music"}
MODEL = {CueKind.SOUND: SoundRequest(text="").model_id, CueKind.MUSIC: "music_v1"}
WHAT = {CueKind.SOUND: "sound effect", CueKind.MUSIC: "piece of music"}


class CueRefused(ProjectRefused):
    """A cue request that cannot be done; ``field`` names the form field at fault, if one."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


# --- Checks --------------------------------------------------------------------------------


def _kind(kind) -> str:
    if kind not in CueKind.values:
        raise CueRefused("Kind: choose a sound effect or music.", field="kind")
    return CueKind(kind)


def _prompt(prompt) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise CueRefused(
            "Prompt: describe the sound or music to make (for example “a door creaks open”).",
            field="prompt",
        )
    if len(prompt) > PROMPT_MAX:
        raise CueRefused(
            f"Prompt: at most {PROMPT_MAX:,} characters ({len(prompt):,} given).", field="prompt"
        )
    return prompt


def _number(value, *, field: str, label: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CueRefused(f"{label}: give a number.", field=field) from None
    if not math.isfinite(number):
        raise CueRefused(f"{label}: give a number.", field=field)
    return number


def _length(kind: str, seconds) -> float:
    low, high = LENGTHS[kind]
    if seconds in (None, ""):
        return DEFAULT_LENGTH[kind]
    seconds = _number(seconds, field="duration_seconds", label="Length")
    if not low <= seconds <= high:
        raise CueRefused(
            f"Length: a {WHAT[kind]} lasts {low:g} to {high:g} seconds ({seconds:g} asked).",
            field="duration_seconds",
        )
    return round(seconds, 2)


def _seed(seed) -> int | None:
    if seed in (None, ""):
        return None
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise CueRefused("Seed: a whole number, or leave it empty.", field="seed") from None
    if not 0 <= value <= SEED_MAX:
        raise CueRefused(f"Seed: a whole number from 0 to {SEED_MAX:,}.", field="seed")
    return value


def _volume(volume_db) -> float:
    volume = _number(volume_db, field="volume_db", label="Volume")
    low, high = VOLUME_RANGE
    if not low <= volume <= high:
        raise CueRefused(
            f"Volume: from {low:g} dB to +{high:g} dB ({volume:g} dB asked).", field="volume_db"
        )
    return round(volume, 1)


def _placement(placement) -> str:
    if placement not in CuePlacementMode.values:
        raise CueRefused("Placement: after the block or under it.", field="placement")
    return placement


def _block(block, *, project: Project) -> Block | None:
    if block is None:
        return None
    chapter = Chapter.objects.filter(pk=block.chapter_id).values("project_id").first()
    if (
        block.workspace_id != project.workspace_id
        or not chapter
        or (chapter["project_id"] != project.pk)
    ):
        raise CueRefused("Block: that block is not in this project.", field="block")
    return block


def _engine(workspace):
    try:
        return engine_for(workspace)
    except EngineError as exc:
        raise CueRefused(f"The workspace's engine cannot be used: {exc.message}") from exc


def _units(workspace, engine_name: str, kind: str, prompt: str, seconds: float):
    unit = rate_for(workspace, CAPABILITY[kind], MODEL[kind], engine_name).unit
    return units_for(unit, seconds=seconds, characters=len(prompt))


# --- Estimate and start --------------------------------------------------------------------


def cue_estimate(workspace, user, kind, prompt, duration_seconds) -> Estimate:
    """What a cue will cost on the workspace's engine, and what the member has left
    (``billing.services.Estimate``: credits, member_left, workspace_left, blocked_by).
    ``CueRefused`` for a kind or length that cannot be made; an empty prompt is estimated."""
    kind = _kind(kind)
    seconds = _length(kind, duration_seconds)
    prompt = (prompt or "").strip()
    engine = _engine(workspace)
    return usage_estimate(
        workspace=workspace,
        user=user,
        capability=CAPABILITY[kind],
        engine=engine.name,
        model_id=MODEL[kind],
        units=_units(workspace, engine.name, kind, prompt, seconds),
    )


def cue_ledger_key(cue: Cue) -> str:
    """The idempotency key of the credits reserved when the cue's job started."""
    return f"{PURPOSE}:{cue.pk}"


def cue_start(
    *,
    workspace,
    user,
    project: Project,
    kind,
    prompt,
    duration_seconds,
    block: Block | None = None,
    placement: str = CuePlacementMode.AFTER,
    volume_db=0.0,
    seed=None,
    source: str = UsageSource.UI,
) -> Cue:
    """A new cue of ``project`` and its job, the estimate reserved as ``user``'s.

    ``CueRefused`` (its text is for the member) when a field is wrong, the block is not in
    the project, or the budget does not cover it; then nothing is kept: no cue, no job, no
    ledger row.
    """
    if project.workspace_id != workspace.pk:
        raise CueRefused("That project is not in this workspace.")
    kind = _kind(kind)
    prompt = _prompt(prompt)
    seconds = _length(kind, duration_seconds)
    seed = _seed(seed)
    placement = _placement(placement)
    volume = _volume(volume_db)
    block = _block(block, project=project)
    engine = _engine(workspace)
    units = _units(workspace, engine.name, kind, prompt, seconds)
    wait = job_waits(
        workspace=workspace,
        user=user,
        capability=CAPABILITY[kind],
        engine_name=engine.name,
        model_id=MODEL[kind],
        units=units,
        source=source,
    )
    try:
        with transaction.atomic():
            cue = Cue.objects.create(
                workspace=workspace,
                project=project,
                kind=kind,
                prompt=prompt,
                duration_seconds=seconds,
                block=block,
                placement=placement,
                volume_db=volume,
                created_by=user,
            )
            cue.job = job_start(
                waiting=wait is not None,
                workspace=workspace,
                kind=CUE_JOB,
                created_by=user,
                params={
                    "cue": cue.pk,
                    "seed": seed,
                    "history_item_id": new_history_id(),
                    "source": source,
                },
                subject_type="project",
                subject_id=project.public_id,
                subject=Truncator(f"{cue.get_kind_display()}: {' '.join(prompt.split())}").chars(
                    80
                ),
                inputs={"prompt": prompt, "seconds": seconds},
                result_url=reverse("projects:cues", args=[project.public_id]),
            )
            cue.save(update_fields=["job"])
            job_reserve(
                caller=Caller(
                    workspace=workspace,
                    user=user,
                    source=source,
                    purpose=(PURPOSE, str(cue.pk)),
                    project=project.public_id,
                ),
                engine_name=engine.name,
                capability=CAPABILITY[kind],
                model_id=MODEL[kind],
                units=units,
                key=cue_ledger_key(cue),
                job=cue.job,
                wait=wait,
            )
    except BudgetExceeded as exc:
        raise CueRefused(
            f"This {WHAT[kind]} needs {exc.needed:,.0f} credits and {exc.budget} would not "
            f"cover it ({max(exc.left, 0):,.0f} left). Make it shorter, or ask a manager for "
            "more credits."
        ) from exc
    return cue


# --- The job -------------------------------------------------------------------------------


def _release(cue_id, note: str) -> None:
    """Release what is still reserved for the cue (its job will not use it)."""
    for event in UsageEvent.objects.filter(
        purpose_type=PURPOSE, purpose_id=str(cue_id), status=UsageStatus.RESERVED
    ):
        meter_refund(event=event, note=note)


def _kept_clip(cue: Cue) -> Generation | None:
    """The clip an earlier run of the job kept (and paid for) but did not give the cue."""
    return (
        Generation.objects.filter(
            workspace_id=cue.workspace_id,
            kind=cue.kind,
            usage_event__purpose_type=PURPOSE,
            usage_event__purpose_id=str(cue.pk),
        )
        .order_by("id")
        .first()
    )


def _caller(cue: Cue, params: dict) -> Caller:
    return Caller(
        workspace=cue.workspace,
        user=cue.created_by,
        source=params.get("source") or UsageSource.UI,
        purpose=(PURPOSE, str(cue.pk)),
        project=cue.project.public_id,
    )


def _refused(exc: ApiRefused) -> Exception:
    if exc.code == "too_many_concurrent_requests" or exc.status == 503:
        return TransientJobError(exc.message)  # retried with backoff by the job machinery
    return CueRefused(exc.message)


def _sound(cue: Cue, params: dict) -> Generation:
    # ``sound`` reserves for itself: the start's reservation is released just before.
    _release(cue.pk, note="Released for the sound effect call, which reserves its own.")
    try:
        clip = sound(
            caller=_caller(cue, params),
            request=SoundRequest(
                text=cue.prompt,
                duration_seconds=cue.duration_seconds,
                output_format=DEFAULT_OUTPUT_FORMAT,
                seed=params.get("seed"),
                model_id=MODEL[CueKind.SOUND],
            ),
        )
    except ApiRefused as exc:
        raise _refused(exc) from exc
    except ApiInvalid as exc:
        raise CueRefused(str(exc)) from exc
    return Generation.objects.get(history_item_id=clip.history_item_id)


def _music(cue: Cue, job: Job, params: dict) -> Generation:
    generation, _event = compose(
        caller=_caller(cue, params),
        job=job,
        request=MusicRequest(
            prompt=cue.prompt,
            music_length_ms=round(cue.duration_seconds * 1000),
            output_format=DEFAULT_OUTPUT_FORMAT,
            seed=params.get("seed"),
            force_instrumental=True,  # a cue plays beside the narration
            model_id=MODEL[CueKind.MUSIC],
        ),
        ledger_key=cue_ledger_key(cue),
        history_item_id=params["history_item_id"],
        requested_format="auto",
    )
    return generation


def _recipe(cue: Cue, generation: Generation, params: dict) -> dict:
    recipe = dict(generation.recipe or {})
    engine = recipe.get("engine") if isinstance(recipe.get("engine"), dict) else {}
    made_seed = recipe.get("seed") if recipe.get("seed") is not None else engine.get("seed")
    recipe.update(
        {
            "cue": cue.pk,
            "cue_kind": cue.kind,
            "prompt": cue.prompt,
            "duration_seconds": cue.duration_seconds,
            "seed": made_seed,
            "requested_seed": params.get("seed"),
            "project": cue.project.public_id,
            "block": cue.block.public_id if cue.block_id else None,
            "placement": cue.placement,
            "volume_db": cue.volume_db,
        }
    )
    return recipe


def cue_run(*, job: Job, progress) -> dict:
    """Job runner: make the cue's sound or music, keep it and give it to the cue."""
    params = job.params
    cue = (
        Cue.objects.select_related("project", "block", "workspace", "created_by")
        .filter(pk=params.get("cue"))
        .first()
    )
    if cue is None:  # deleted before it was made: nothing to make, nothing to charge
        _release(params.get("cue"), note="The cue was deleted before it was made.")
        return {"deleted": True}
    if cue.generation_id is not None:
        return {"cue": cue.pk, "generation": cue.generation_id}
    generation = _kept_clip(cue)
    if generation is None:
        try:
            progress(5, "Making the sound effect" if cue.kind == CueKind.SOUND else "Composing")
        except JobCancelled:
            _release(cue.pk, note="The cue's job was cancelled before it started.")
            raise
        with errors_recorded(job):
            if cue.kind == CueKind.SOUND:
                generation = _sound(cue, params)
            else:
                generation = _music(cue, job, params)
    with transaction.atomic():
        Generation.objects.filter(pk=generation.pk).update(recipe=_recipe(cue, generation, params))
        Cue.objects.filter(pk=cue.pk).update(
            generation=generation,
            duration_seconds=generation.duration_seconds or cue.duration_seconds,
        )
    return {
        "cue": cue.pk,
        "generation": generation.pk,
        "history_item_id": generation.history_item_id,
    }


# --- Placing, deleting, playing ------------------------------------------------------------


def cue_place(cue: Cue, *, block: Block | None, placement: str, volume_db) -> Cue:
    """Place ``cue`` after or under ``block`` (None: not placed) at ``volume_db``
    (−40…+6 dB). ``CueRefused`` for a block of another project or a value out of range."""
    project = Project.objects.get(pk=cue.project_id)
    cue.block = _block(block, project=project)
    cue.placement = _placement(placement)
    cue.volume_db = _volume(volume_db)
    cue.save(update_fields=["block", "placement", "volume_db"])
    return cue


def cue_delete(cue: Cue) -> None:
    """Remove ``cue`` from its project; its job is cancelled if it still runs.

    A job that never started gives back what it reserved; one that is running finishes its
    engine call (whose clip, paid for, stays in History) and finds the cue gone. A made
    clip stays in History either way.
    """
    job = cue.job
    running = False
    if job is not None:
        job.refresh_from_db(fields=["status"])
        running = job.status == JobStatus.RUNNING
        if job.status in (JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING):
            job = job_cancel(job=job)
            running = running and job.status != JobStatus.CANCELLED
    if not running:
        _release(cue.pk, note="The cue was deleted before it was made.")
    cue.delete()


def cue_queue_items(chapter: Chapter) -> list[dict]:
    """The cues the chapter player plays, in block order: ``{"cue", "kind", "block" (public
    id), "placement" ("after" | "under"), "url" (the History audio), "volume_db",
    "duration"}``; cues not yet made or not placed in this chapter are left out."""
    rows = (
        Cue.objects.filter(
            workspace_id=chapter.workspace_id,
            block__chapter_id=chapter.pk,
            generation__isnull=False,
        )
        .order_by("block__position", "block_id", "created_at", "id")
        .values_list(
            "pk",
            "kind",
            "block__public_id",
            "placement",
            "generation_id",
            "volume_db",
            "generation__duration_seconds",
            "duration_seconds",
        )
    )
    return [
        {
            "cue": pk,
            "kind": kind,
            "block": block,
            "placement": placement,
            "url": reverse("history:audio", args=[generation_id]),
            "volume_db": volume_db,
            "duration": made_seconds or asked_seconds,
        }
        for (
            pk,
            kind,
            block,
            placement,
            generation_id,
            volume_db,
            made_seconds,
            asked_seconds,
        ) in rows
    ]


# --- What the pages show -------------------------------------------------------------------


@dataclass(frozen=True)
class BlockChoice:
    value: str  # the block's public id
    label: str


def block_choices(project: Project) -> list[tuple[str, list[BlockChoice]]]:
    """The project's blocks to place a cue at, grouped by chapter (one query)."""
    groups: dict[int, tuple[str, list[BlockChoice]]] = {}
    rows = (
        Block.objects.filter(chapter__project=project)
        .order_by("chapter__position", "chapter_id", "position", "id")
        .values_list("chapter_id", "chapter__name", "public_id", "text")
    )
    for chapter_id, name, public_id, text in rows:
        group = groups.setdefault(chapter_id, (name or "Untitled chapter", []))
        words = Truncator(" ".join((text or "").split())).chars(60)
        group[1].append(BlockChoice(public_id, f"{len(group[1]) + 1}. {words}"))
    return list(groups.values())


def project_cues(project: Project, *, chapter: Chapter | None = None):
    """The cues of ``project`` (or those placed in ``chapter``), with their job, clip and
    block, oldest first."""
    cues = Cue.objects.filter(project=project).select_related(
        "job", "generation", "block", "block__chapter", "created_by"
    )
    if chapter is not None:
        cues = cues.filter(block__chapter=chapter)
    return cues.order_by("created_at", "id")
