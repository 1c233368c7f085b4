"""Music and dubbing as background jobs: start (credits reserved first), run, read, delete.

Both run as ``jobs.Job`` rows on a Celery worker. Whoever starts one reserves its estimated
credits in the same transaction that creates the job, so a spent budget refuses the request
before anything exists. The job then calls the engine through ``billing.metered`` under an
idempotency key derived from the job (music) or the dub (dubbing), stores the audio as a
``history.Generation`` and settles the ledger row in one database transaction: a clip is
never kept unpaid, and a paid clip is never lost.
"""

import logging
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import reduce
from operator import or_

from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import Truncator

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.billing.rates import units_for
from apps.billing.services import (
    meter_refund,
    rate_for,
)
from apps.engines.base import (
    DEFAULT_OUTPUT_FORMAT,
    MusicRequest,
)
from apps.generation.caller import Caller
from apps.generation.dubbing import DubOrder, dub
from apps.generation.engine import engine_for
from apps.generation.jobs import errors_recorded, job_reserve, job_waits
from apps.generation.music import MUSIC_DEFAULT_MS, compose
from apps.history.models import Generation, new_history_id
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import (
    job_cancel,
    job_start,
)

from .models import Dubbing, DubbingStatus

log = logging.getLogger(__name__)

DUBBING_SECONDS_PER_SECOND = 0.5  # expected_duration_sec per second of media (local engine)


def _source(job: Job) -> str:
    return job.params.get("source") or UsageSource.JOB


def _cap(raw) -> Decimal | None:
    return Decimal(raw) if raw not in (None, "") else None


# --- Music ---------------------------------------------------------------------------------


def music_ledger_key(job: Job) -> str:
    return f"music:job:{job.pk}"


def music_start(
    *,
    workspace,
    user,
    prompt: str,
    music_length_ms: int | None = None,
    model_id: str = "music_v1",
    seed: int | None = None,
    force_instrumental: bool = False,
    output_format: str = "auto",
    source: str = UsageSource.UI,
    api_key_id: int | None = None,
    api_key_cap: Decimal | None = None,
    extra_params: dict | None = None,
) -> Job:
    """Queue a music job, its credits reserved first (``BudgetExceeded`` refuses it whole).

    The clip's history id is chosen now and kept in the job, so whoever waits knows where
    the music will be even before it exists.
    """
    engine = engine_for(workspace)
    params = {
        "prompt": prompt,
        "music_length_ms": music_length_ms,
        "model_id": model_id,
        "seed": seed,
        "force_instrumental": force_instrumental,
        "output_format": output_format,
        "history_item_id": new_history_id(),
        "source": source,
        "api_key_id": api_key_id,
        "api_key_cap": str(api_key_cap) if api_key_cap is not None else None,
        **(extra_params or {}),
    }
    unit = rate_for(workspace, "music", model_id, engine.name).unit
    seconds = (music_length_ms or MUSIC_DEFAULT_MS) / 1000
    units = units_for(unit, seconds=seconds, characters=len(prompt))
    wait = job_waits(
        workspace=workspace,
        user=user,
        capability="music",
        engine_name=engine.name,
        model_id=model_id,
        units=units,
        source=source,
    )
    with transaction.atomic():
        job = job_start(
            waiting=wait is not None,
            workspace=workspace,
            kind="music",
            created_by=user,
            params=params,
            subject_type="generation",
            subject_id=params["history_item_id"],
            subject=Truncator(" ".join(prompt.split())).chars(80),
            inputs={"prompt": prompt, "seconds": seconds},
        )
        job_reserve(
            caller=Caller(
                workspace=workspace,
                user=user,
                source=source,
                key_id=api_key_id,
                key_cap=api_key_cap,
                purpose=("job", str(job.pk)),
            ),
            engine_name=engine.name,
            capability="music",
            model_id=model_id,
            units=units,
            key=music_ledger_key(job),
            job=job,
            wait=wait,
        )
    return job


def music_run(*, job: Job, progress) -> dict:
    """Job runner: compose the music, store it as a Generation and settle its ledger row."""
    params = job.params
    history_item_id = params["history_item_id"]
    stored = Generation.objects.filter(history_item_id=history_item_id).first()
    if stored is not None:  # an earlier run stored (and so settled) it, then died
        return {"history_item_id": stored.history_item_id, "request_id": stored.request_id}
    workspace = job.workspace
    requested_format = params.get("output_format") or "auto"
    request = MusicRequest(
        prompt=params["prompt"],
        music_length_ms=params.get("music_length_ms"),
        # "auto" is Chorus's default format on every engine (the ElevenLabs client takes
        # only explicit formats).
        output_format=DEFAULT_OUTPUT_FORMAT if requested_format == "auto" else requested_format,
        seed=params.get("seed"),
        force_instrumental=bool(params.get("force_instrumental")),
        model_id=params.get("model_id") or "music_v1",
    )
    progress(5, "Composing")
    with errors_recorded(job):
        caller = Caller(
            workspace=workspace,
            user=job.created_by,
            source=_source(job),
            key_id=params.get("api_key_id"),
            key_cap=_cap(params.get("api_key_cap")),
            purpose=("job", str(job.pk)),
        )
        generation, event = compose(
            caller=caller,
            job=job,
            request=request,
            ledger_key=music_ledger_key(job),
            history_item_id=history_item_id,
            requested_format=requested_format,
        )
    return {"history_item_id": generation.history_item_id, "request_id": event.request_id}


# --- Dubbing -------------------------------------------------------------------------------


def dubbing_ledger_key(dubbing: Dubbing) -> str:
    return f"dubbing:{dubbing.dubbing_id}"


def _clean_filename(filename: str) -> str:
    name = os.path.basename((filename or "").replace("\\", "/")) or "upload"
    return name[-100:]


def dubbing_create(
    *,
    workspace,
    user,
    media: bytes,
    filename: str,
    content_type: str = "",
    target_lang: str,
    source_lang: str = "auto",
    num_speakers: int = 0,
    name: str | None = None,
    source: str = UsageSource.UI,
    api_key_id: int | None = None,
    api_key_cap: Decimal | None = None,
) -> Dubbing:
    """Keep the upload, reserve its minutes and queue the dubbing job.

    The file is read first (``InvalidRequest`` on ``file`` when it is no audio or video), so
    its length is what the reservation counts. ``BudgetExceeded`` refuses the dub before
    anything is kept.
    """
    from apps.engines import audio as codecs

    filename = _clean_filename(filename)
    duration = codecs.probe_duration(media, filename)
    engine = engine_for(workspace)
    dubbing = Dubbing(
        workspace=workspace,
        user=user,
        source=source,
        api_key_id=api_key_id,
        name=(name or "").strip()[:200] or filename,
        source_lang=(source_lang or "auto")[:16],
        target_lang=target_lang[:16],
        num_speakers=num_speakers,
        source_filename=filename,
        source_content_type=(content_type or "application/octet-stream")[:100],
        source_duration_seconds=duration,
        engine=engine.name,
        history_item_id=new_history_id(),
    )
    unit = rate_for(workspace, "dubbing", "", engine.name).unit
    units = units_for(unit, seconds=duration)
    wait = job_waits(
        workspace=workspace,
        user=user,
        capability="dubbing",
        engine_name=engine.name,
        units=units,
        source=source,
    )
    dubbing.source_file.save(filename, ContentFile(media), save=False)
    try:
        with transaction.atomic():
            dubbing.save()
            dubbing.job = job_start(
                waiting=wait is not None,
                workspace=workspace,
                kind="dubbing",
                created_by=user,
                params={
                    "dubbing": dubbing.pk,
                    "api_key_cap": str(api_key_cap) if api_key_cap is not None else None,
                },
                subject_type="dubbing",
                subject_id=dubbing.dubbing_id,
                subject=dubbing.name,
                inputs={
                    "file": dubbing.source_filename,
                    "seconds": dubbing.source_duration_seconds,
                    "language": "" if dubbing.source_lang == "auto" else dubbing.source_lang,
                    "target_language": dubbing.target_lang,
                },
            )
            dubbing.save(update_fields=["job"])
            job_reserve(
                caller=Caller(
                    workspace=workspace,
                    user=user,
                    source=source,
                    key_id=api_key_id,
                    key_cap=api_key_cap,
                    purpose=("dubbing", dubbing.dubbing_id),
                ),
                engine_name=engine.name,
                capability="dubbing",
                units=units,
                key=dubbing_ledger_key(dubbing),
                job=dubbing.job,
                wait=wait,
            )
    except BaseException:
        dubbing.source_file.delete(save=False)
        raise
    return dubbing


def dubbing_expected_seconds(dubbing: Dubbing) -> float:
    return round(5 + dubbing.source_duration_seconds * DUBBING_SECONDS_PER_SECOND, 1)


_SRT_TIME = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{3})")


def _spoken_text(srt: str) -> str:
    """The words of an SRT transcript, without numbers, times and speaker tags."""
    return " ".join(u["text"] for u in transcript_utterances(srt))


def dubbing_run(*, job: Job, progress) -> dict:
    """Job runner: dub the upload, then keep the audio (a ``dub`` Generation) and the
    transcripts durably and settle the minutes, all in one transaction."""
    dubbing = Dubbing.objects.select_related("workspace", "user").filter(
        pk=job.params.get("dubbing")
    )
    dubbing = dubbing.first()
    if dubbing is None:
        return {"deleted": True}  # deleted before the job ran: nothing to do, nothing charged
    if dubbing.dubbed_at is not None:
        return {"dubbing_id": dubbing.dubbing_id, "history_item_id": dubbing.history_item_id}
    workspace = dubbing.workspace
    progress(5, "Reading the media")

    def media() -> bytes:
        with dubbing.source_file.open("rb") as handle:
            return handle.read()

    def started(engine_dubbing_id: str) -> None:
        Dubbing.objects.filter(pk=dubbing.pk).update(
            engine_dubbing_id=engine_dubbing_id[:120], engine=engine_name
        )

    def kept(result, generation) -> None:
        Dubbing.objects.filter(pk=dubbing.pk).update(
            generation=generation,
            transcript_srt=result.srt,
            transcript_webvtt=result.webvtt,
            source_language=result.source_language,
            dubbed_at=timezone.now(),
        )

    with errors_recorded(job):
        engine_name = engine_for(workspace).name
        caller = Caller(
            workspace=workspace,
            user=dubbing.user,
            source=dubbing.source or _source(job),
            key_id=dubbing.api_key_id,
            key_cap=_cap(job.params.get("api_key_cap")),
            purpose=("dubbing", dubbing.dubbing_id),
        )
        order = DubOrder(
            media=media,
            filename=dubbing.source_filename,
            target_lang=dubbing.target_lang,
            source_lang=dubbing.source_lang,
            num_speakers=dubbing.num_speakers,
            name=dubbing.name,
            seconds=dubbing.source_duration_seconds,
            history_item_id=dubbing.history_item_id,
            resume_id=(dubbing.engine_dubbing_id if dubbing.engine == engine_name else ""),
            started=started,
            recipe={
                "dubbing_id": dubbing.dubbing_id,
                "name": dubbing.name,
                "source_lang": dubbing.source_lang,
                "target_lang": dubbing.target_lang,
                "num_speakers": dubbing.num_speakers,
                "source_file": dubbing.source_file.name,
                "source_duration_seconds": dubbing.source_duration_seconds,
            },
            kept=kept,
        )
        generation, _event = dub(
            caller=caller,
            job=job,
            order=order,
            ledger_key=dubbing_ledger_key(dubbing),
            spoken_text=_spoken_text,
            progress=progress,
        )
    return {"dubbing_id": dubbing.dubbing_id, "history_item_id": generation.history_item_id}


# --- Reading and deleting dubs ---------------------------------------------------------------


def dubbings_visible(*, workspace):
    """Every dub of the workspace (dubs are team projects), with their jobs."""
    return Dubbing.objects.filter(workspace=workspace).select_related("job", "generation")


class DubbingCursorUnknown(ValueError):
    """The ``cursor`` of a dubbing list names no dub of the workspace."""


@dataclass(frozen=True)
class DubbingPage:
    dubs: list[Dubbing]
    has_more: bool
    next_cursor: str | None


_STATUS_FILTERS = {
    DubbingStatus.DUBBED: Q(dubbed_at__isnull=False),
    DubbingStatus.FAILED: Q(dubbed_at__isnull=True)
    & (Q(job__isnull=True) | Q(job__status__in=[JobStatus.FAILED, JobStatus.CANCELLED])),
    DubbingStatus.DUBBING: Q(dubbed_at__isnull=True)
    & Q(job__status__in=[JobStatus.QUEUED, JobStatus.RUNNING]),
}


def dubbing_page(
    *,
    workspace,
    user,
    cursor: str | None = None,
    page_size: int = 100,
    statuses: list[str] | None = None,
    target_languages: list[str] | None = None,
    sources: list[str] | None = None,
    filter_by_creator: str = "all",
    order_by: str = "created_at",
    descending: bool = True,
) -> DubbingPage:
    """One page of the workspace's dubs; ``cursor`` is the last dub of the previous page.

    ``statuses`` keeps dubs in any of them (dubbing, dubbed, failed; an empty list keeps
    none), ``target_languages`` those dubbed into any of these codes, ``sources`` those
    started from the studio (ui) or the API (api).
    """
    dubs = dubbings_visible(workspace=workspace)
    if statuses is not None:
        dubs = dubs.filter(reduce(or_, (_STATUS_FILTERS[s] for s in statuses), Q(pk__in=[])))
    if target_languages:
        dubs = dubs.filter(target_lang__in=target_languages)
    if sources:
        dubs = dubs.filter(source__in=sources)
    if filter_by_creator == "personal":
        dubs = dubs.filter(user=user)
    elif filter_by_creator == "others":
        dubs = dubs.exclude(user=user)
    field = "name" if order_by == "name" else "created_at"
    if cursor:
        anchor = (
            Dubbing.objects.filter(workspace=workspace, dubbing_id=cursor)
            .values(field, "id")
            .first()
        )
        if anchor is None:
            raise DubbingCursorUnknown(f"There is no dub {cursor!r} to continue after.")
        op = "lt" if descending else "gt"
        dubs = dubs.filter(
            Q(**{f"{field}__{op}": anchor[field]})
            | Q(**{field: anchor[field], f"id__{op}": anchor["id"]})
        )
    sign = "-" if descending else ""
    rows = list(dubs.order_by(f"{sign}{field}", f"{sign}id")[: page_size + 1])
    page = rows[:page_size]
    more = len(rows) > page_size
    return DubbingPage(dubs=page, has_more=more, next_cursor=page[-1].dubbing_id if more else None)


def dubbing_can_delete(*, dubbing: Dubbing, user, membership) -> bool:
    """Owners and managers delete any dub; members their own."""
    if membership is None or membership.workspace_id != dubbing.workspace_id:
        return False
    return membership.can_manage or (membership.can_create and dubbing.user_id == user.pk)


def dubbing_delete(*, dubbing: Dubbing) -> None:
    """Stop the dub if it still runs and remove it with its upload.

    The dubbed audio, once made, stays in History (it was paid for); delete it there.
    """
    if dubbing.job is not None and dubbing.job.can_cancel:
        never_ran = dubbing.job.status == JobStatus.QUEUED
        job_cancel(job=dubbing.job)
        if never_ran:  # no run will settle or refund its reservation: release it now
            for event in UsageEvent.objects.filter(
                purpose_type="dubbing",
                purpose_id=dubbing.dubbing_id,
                status=UsageStatus.RESERVED,
            ):
                meter_refund(event=event, note="The dub was deleted before it started.")
    file_name = dubbing.source_file.name
    storage = dubbing.source_file.storage
    dubbing.delete()
    if file_name:
        try:
            storage.delete(file_name)
        except OSError:
            log.warning("could not delete the upload of dub %s", file_name, exc_info=True)


def transcript_utterances(srt: str) -> list[dict]:
    """An SRT transcript as ElevenLabs' utterances (``[speaker_N]`` tags become speakers)."""
    utterances = []
    for block in re.split(r"\n\s*\n", srt.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue
        times = _SRT_TIME.findall(lines[timing])
        if len(times) != 2:
            continue
        start, end = (
            int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms in times
        )
        text = " ".join(lines[timing + 1 :])
        speaker = "unknown"
        tagged = re.match(r"\[([^\]]+)\]\s*(.*)", text)
        if tagged:
            speaker, text = tagged.group(1), tagged.group(2)
        utterances.append(
            {"text": text, "speaker_id": speaker, "start_s": start, "end_s": end, "words": []}
        )
    return utterances
