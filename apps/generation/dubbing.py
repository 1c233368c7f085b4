"""Dubbing: dub a recording for a ``Caller`` in a job, metered by its length exactly across
the job's retries; the dubbed audio is kept as a ``Generation`` and the minutes are settled in
one transaction, with whatever the feature keeps beside it (``DubOrder.kept``)."""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from apps.billing.rates import units_for
from apps.billing.services import rate_for
from apps.engines.base import DubbingRequest, InvalidRequest
from apps.history.models import GenerationKind
from apps.history.services import kept_together

from .caller import Caller
from .engine import engine_of
from .jobs import job_metered, settled_with
from .metering import clip_keep

POLL_SECONDS = 5.0  # how often a job asks an engine that dubs remotely how far it is
MAX_WAIT_SECONDS = 3 * 3600.0  # a remote dub still unfinished after this has failed
DUBBED, FAILED = "dubbed", "failed"  # the engine's dub states that end the wait


class DubbingFailed(Exception):
    """The engine could not dub the recording (or did not finish it in time)."""


@dataclass(frozen=True)
class DubOrder:
    """What to dub, and where an earlier run of the job left it.

    - ``media``: reads the recording (only when the dub has to be started).
    - ``resume_id``: the engine's id of the dub an earlier run started on this engine ("").
    - ``started``: records the engine's id of a dub just started (so a retry resumes it).
    - ``recipe``: what the feature keeps in the Generation's recipe besides the engine's part.
    - ``kept``: keeps the feature's rows for the dub, in the transaction that keeps the audio.
    """

    media: Callable[[], bytes]
    filename: str
    target_lang: str
    source_lang: str
    num_speakers: int
    name: str
    seconds: float
    history_item_id: str
    resume_id: str
    started: Callable[[str], None]
    recipe: dict
    kept: Callable[["Dub", object], None]


@dataclass(frozen=True)
class Dub:
    """A finished dub: its audio, its transcripts and the language the engine heard."""

    engine_dubbing_id: str
    audio: object  # engines.base dubbed audio (audio, content_type, output_format, extra)
    srt: str
    webvtt: str
    source_language: str


def dubbing_units(*, workspace, engine_name: str, seconds: float):
    return units_for(rate_for(workspace, "dubbing", "", engine_name).unit, seconds=seconds)


def _engine_dub(engine, order: DubOrder, progress):
    """The engine's finished dub: resumed when the engine still has it, else started.

    Returns ``(status, info of the call that started it or None)``.
    """
    status = None
    if order.resume_id:
        try:
            status = engine.dubbing_status(order.resume_id)
        except InvalidRequest:  # unknown there (the local engine forgets dubs on restart)
            status = None
        if status is not None and status.status == FAILED:
            status = None  # a retry of a failed dub starts it again
    started_info = None
    if status is None:
        progress(10, "Dubbing")
        status = engine.dubbing_start(
            DubbingRequest(
                audio=order.media(),
                filename=order.filename or "upload",
                target_lang=order.target_lang,
                source_lang=order.source_lang or "auto",
                num_speakers=order.num_speakers,
                name=order.name,
            )
        )
        started_info = status.info
        order.started(status.dubbing_id)
    waited = 0.0
    while status.status not in (DUBBED, FAILED):
        if waited > MAX_WAIT_SECONDS:
            raise DubbingFailed("The engine did not finish the dub in time.")
        progress(min(85, 15 + int(waited / 10)), f"Dubbing ({status.status or 'in progress'})")
        time.sleep(POLL_SECONDS)
        waited += POLL_SECONDS
        status = engine.dubbing_status(status.dubbing_id)
    if status.status == FAILED:
        raise DubbingFailed(status.error or "The engine could not dub this file.")
    return status, started_info


def subtitles(text: str) -> str:
    """SRT or WebVTT text; a JSON string body (how the API and the SDK carry it) is decoded.

    An SRT file starts with a cue number and WebVTT with ``WEBVTT``: neither is ever a JSON
    string, so only a quoted body is changed.
    """
    if text.startswith('"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        if isinstance(decoded, str):
            return decoded
    return text


def _duration_of(media: bytes) -> float | None:
    from apps.engines import audio as codecs

    try:
        return codecs.probe_duration(media)
    except InvalidRequest:
        return None


def dub(
    *,
    caller: Caller,
    job,
    order: DubOrder,
    ledger_key: str,
    spoken_text: Callable[[str], str],
    progress,
):
    """Dub ``order`` with the caller's engine in ``job``: ``(Generation, UsageEvent)``.

    Metered under ``ledger_key`` (the reservation made when the dub was asked for, taken over
    here) by the recording's length; ``spoken_text`` turns the SRT into the clip's text.
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
        capability="dubbing",
        engine=engine.name,
        units=dubbing_units(workspace=workspace, engine_name=engine.name, seconds=order.seconds),
        source=caller.source,
        api_key_id=caller.key_id,
        api_key_cap=caller.key_cap,
    ) as meter:
        status, started_info = _engine_dub(engine, order, progress)
        dubbed = engine.dubbing_audio(status.dubbing_id, order.target_lang)
        srt = subtitles(engine.dubbing_transcript(status.dubbing_id, order.target_lang))
        webvtt = subtitles(
            engine.dubbing_transcript(status.dubbing_id, order.target_lang, "webvtt")
        )
        duration = _duration_of(dubbed.audio) or order.seconds
        recipe = {
            **order.recipe,
            "engine_dubbing_id": status.dubbing_id,
            "output_format": dubbed.output_format,
            "voices": dubbed.extra.get("voices"),
            "job_id": job.pk,
        }
        result = Dub(
            engine_dubbing_id=status.dubbing_id,
            audio=dubbed,
            srt=srt,
            webvtt=webvtt,
            source_language=(status.source_language or "")[:16],
        )
        with kept_together() as saved:
            generation = clip_keep(
                caller,
                kind=GenerationKind.DUB,
                engine=engine.name,
                audio=dubbed.audio,
                content_type=dubbed.content_type,
                recipe=recipe,
                text=spoken_text(srt),
                duration_seconds=duration,
                usage_event=meter.event,
                history_item_id=order.history_item_id,
            )
            saved.append(generation)
            order.kept(result, generation)
            event = settled_with(
                meter,
                generation,
                units=units_for(meter.event.unit, seconds=order.seconds),
                info=started_info or dubbed.info,
            )
    return generation, event
