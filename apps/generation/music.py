"""Music: compose for a ``Caller`` in a job, metered exactly across the job's retries, the
clip kept as a ``Generation`` and the charge settled in one transaction."""

from apps.billing.rates import units_for
from apps.billing.services import rate_for
from apps.engines.base import MusicRequest
from apps.history.models import GenerationKind
from apps.history.services import kept_together

from .caller import Caller
from .engine import engine_of
from .jobs import job_metered, settled_with
from .metering import clip_keep

MUSIC_DEFAULT_MS = 30_000  # reserved when no length is asked for (the engine then chooses)


def music_units(*, workspace, engine_name: str, request: MusicRequest, seconds=None):
    """What a composition is billed: its length (or the default), and its prompt."""
    unit = rate_for(workspace, "music", request.model_id, engine_name).unit
    if seconds is None:
        seconds = (request.music_length_ms or MUSIC_DEFAULT_MS) / 1000
    return units_for(unit, seconds=seconds, characters=len(request.prompt))


def compose(
    *,
    caller: Caller,
    job,
    request: MusicRequest,
    ledger_key: str,
    history_item_id: str,
    requested_format: str,
):
    """Compose ``request`` with the caller's engine in ``job``: ``(Generation, UsageEvent)``.

    Metered under ``ledger_key`` (the reservation the job's start made, taken over here) as
    the caller's; the clip, stored under ``history_item_id``, and its charge are kept
    together: never a kept clip without its charge, or the reverse.
    """
    workspace = caller.workspace
    engine = engine_of(caller)
    with job_metered(
        job=job,
        key=ledger_key,
        purpose=caller.purpose,
        project=caller.project,
        workspace=workspace,
        user=caller.user,
        capability="music",
        engine=engine.name,
        model_id=request.model_id,
        units=music_units(workspace=workspace, engine_name=engine.name, request=request),
        source=caller.source,
        api_key_id=caller.key_id,
        api_key_cap=caller.key_cap,
    ) as meter:
        result = engine.music(request)
        seconds = result.duration_secs or (request.music_length_ms or MUSIC_DEFAULT_MS) / 1000
        recipe = {
            "prompt": request.prompt,
            "music_length_ms": request.music_length_ms,
            "model_id": request.model_id,
            "seed": request.seed,
            "force_instrumental": request.force_instrumental,
            "output_format": result.output_format,
            "requested_output_format": requested_format,
            "engine": result.extra,
            "job_id": job.pk,
        }
        with kept_together() as saved:
            generation = clip_keep(
                caller,
                kind=GenerationKind.MUSIC,
                engine=engine.name,
                audio=result.audio,
                content_type=result.content_type,
                recipe=recipe,
                model_id=request.model_id,
                text=request.prompt,
                duration_seconds=seconds,
                usage_event=meter.event,
                history_item_id=history_item_id,
            )
            saved.append(generation)
            event = settled_with(
                meter,
                generation,
                units=units_for(meter.event.unit, seconds=seconds, characters=len(request.prompt)),
                info=result.info,
            )
    return generation, event
