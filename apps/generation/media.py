"""The core beyond speech: transcription, sound effects, voice design and cloning.

Each service checks what it can before anything is reserved (the audio decodes, the preview
belongs to the workspace), meters the engine call as the caller's, keeps every generated
clip as a ``Generation`` before the call is settled, and raises the core's refusals
(``ApiRefused``, ``ApiInvalid``). Keeping the voices made here (the workspace's rows, their
settings) is ``voices``' part: it calls ``design_save`` and ``clone`` and keeps the result.
"""

import logging
from dataclasses import dataclass, replace
from decimal import Decimal

from django.core.files.base import ContentFile, File

from apps.billing.rates import units_for
from apps.billing.services import BudgetExceeded
from apps.engines import audio
from apps.engines.base import (
    CloneRequest,
    DesignRequest,
    InvalidRequest,
    OutputFormat,
    SaveDesignRequest,
    SoundRequest,
    STTRequest,
    Transcript,
    Voice,
)
from apps.history.models import Generation, GenerationKind
from apps.history.services import kept_together

from .caller import Caller
from .engine import engine_of as _engine
from .errors import ApiInvalid, ApiRefused, budget_refused, engine_errors_as_api
from .metering import clip_keep, metered_for, unit_of
from .uploads import Options, UploadRefused, UploadTooLong, upload_check

log = logging.getLogger(__name__)

# Uploads are held in memory while the engine works on them; these bound what one call takes.
MAX_UPLOAD_BYTES = 200 * 1024 * 1024  # the whole request (files and fields)
MAX_SAMPLE_BYTES = 50 * 1024 * 1024  # one clone sample
MAX_SAMPLES = 25
# What a reservation assumes when the length is not known before the call (sound effects
# and previews have at most this many seconds); settling uses the real length.
ESTIMATED_CLIP_SECONDS = 30.0
DESIGN_FORMAT_DEFAULT = "mp3_44100_192"


def engine_of(caller: Caller):
    """The caller's engine; one that cannot be built (an unreadable key) as a refusal."""
    with engine_errors_as_api():
        return _engine(caller)


@dataclass(frozen=True)
class Metered:
    """What every metered answer carries: its ledger row's request id and cost."""

    request_id: str
    credits: Decimal


def _metered(event) -> Metered:
    return Metered(request_id=event.request_id, credits=event.credits or Decimal(0))


# --- Speech to text -------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcription:
    transcript: Transcript
    usage: Metered


def _upload_checked(request: STTRequest) -> tuple[STTRequest, float]:
    """The studio's own check of an upload to transcribe (``transcripts.services.
    upload_check``): the request with its options normalised and how long it plays, or the
    API's refusal: a 400 ``invalid_parameters`` on ``file`` for a recording over the longest
    length, else a 422 on the field at fault (the message is the studio's)."""
    source = request.audio
    if isinstance(source, bytes | bytearray | memoryview):
        upload = ContentFile(bytes(source), name=request.filename)
    elif isinstance(source, File):
        upload = source
    else:  # an open binary file
        upload = File(source, name=request.filename)
    options = Options(
        language_code=request.language_code,
        diarize=request.diarize,
        num_speakers=request.num_speakers,
        keyterms=list(request.keyterms),
    )
    try:
        checked = upload_check(
            upload=upload,
            options=options,
            max_bytes=MAX_UPLOAD_BYTES,
            file_format=request.file_format,
        )
    except UploadTooLong as exc:
        raise ApiRefused(
            400, "invalid_parameters", str(exc), kind="validation_error", param=exc.field
        ) from exc
    except UploadRefused as exc:
        raise ApiInvalid.one(["body", exc.field], str(exc)) from exc
    request = replace(
        request,
        language_code=checked.options.language_code,
        keyterms=checked.options.keyterms,
    )
    return request, checked.seconds


def transcribe(*, caller: Caller, request: STTRequest) -> Transcription:
    """Transcribe an upload with the workspace's engine, metered by its length (``stt``).

    The upload passes the studio's check before anything is reserved (``_upload_checked``),
    so a file that is not audio, too long, or sent with key terms the engine refuses costs
    nothing and leaves no ledger row; the call settles on the length the engine heard. The
    file is read from disk by the engine as it goes.
    """
    request, seconds = _upload_checked(request)
    engine = engine_of(caller)
    unit = unit_of(caller, engine, "stt", request.model_id)
    try:
        with metered_for(
            caller,
            engine,
            capability="stt",
            model_id=request.model_id,
            units=units_for(unit, seconds=seconds),
        ) as meter:
            with engine_errors_as_api(request_id=meter.event.request_id):
                transcript = engine.stt(request)
            heard = transcript.audio_duration_secs or seconds
            event = meter.settle(units=units_for(unit, seconds=heard), info=transcript.info)
    except BudgetExceeded as exc:
        raise budget_refused(exc) from exc
    return Transcription(transcript=transcript, usage=_metered(event))


# --- Sound effects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    audio: bytes
    content_type: str
    history_item_id: str
    usage: Metered


def sound(*, caller: Caller, request: SoundRequest) -> Clip:
    """A sound effect from a prompt, kept as a ``Generation`` (``sound``) and metered."""
    with engine_errors_as_api():
        fmt = OutputFormat.parse(request.output_format)
    engine = engine_of(caller)
    unit = unit_of(caller, engine, "sound_effect", request.model_id)
    estimate = request.duration_seconds or ESTIMATED_CLIP_SECONDS
    try:
        with metered_for(
            caller,
            engine,
            capability="sound_effect",
            model_id=request.model_id,
            units=units_for(unit, seconds=estimate, characters=len(request.text)),
        ) as meter:
            with engine_errors_as_api(request_id=meter.event.request_id):
                result = engine.sound_effect(request)
            made = result.extra or {}
            recipe = {
                "text": request.text,
                "duration_seconds": request.duration_seconds,
                "prompt_influence": request.prompt_influence,
                "loop": request.loop,
                "model_id": request.model_id,
                "output_format": fmt.name,
                # The seed the engine used (it picks one when none was asked for).
                "seed": made.get("seed", request.seed),
                "requested_seed": request.seed,
                "engine": engine.name,
                "engine_recipe": made,
            }
            seconds = result.duration_secs or request.duration_seconds or 0.0
            with kept_together() as saved:
                generation = clip_keep(
                    caller,
                    kind=GenerationKind.SOUND,
                    engine=engine.name,
                    audio=result.audio,
                    content_type=result.content_type or fmt.content_type,
                    recipe=recipe,
                    model_id=request.model_id,
                    text=request.text,
                    duration_seconds=result.duration_secs,
                    usage_event=meter.event,
                )
                saved.append(generation)
                event = meter.settle(
                    units=units_for(unit, seconds=seconds, characters=len(request.text)),
                    info=result.info,
                )
    except BudgetExceeded as exc:
        raise budget_refused(exc) from exc
    return Clip(
        audio=result.audio,
        content_type=result.content_type or fmt.content_type,
        history_item_id=generation.history_item_id,
        usage=_metered(event),
    )


# --- Voice design -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DesignInput:
    """A design call as the client sent it; ``options`` are the fields the engine does not
    take (kept in the recipe so the previews can be traced back to the whole request)."""

    request: DesignRequest
    stream_previews: bool = False
    options: dict | None = None


@dataclass(frozen=True)
class DesignedPreview:
    generated_voice_id: str
    audio: bytes
    media_type: str
    duration_secs: float
    language: str | None
    history_item_id: str


@dataclass(frozen=True)
class Design:
    previews: list[DesignedPreview]
    text: str
    usage: Metered


def design(*, caller: Caller, design: DesignInput) -> Design:
    """Previews of a described voice, each kept as a ``design_preview`` Generation.

    The recipe of each preview holds the whole request, the seed used, the preview's
    ``generated_voice_id`` and the engine's own recipe for it, which is what saving and
    streaming the preview later need (in any process).
    """
    request = design.request
    with engine_errors_as_api():
        fmt = OutputFormat.parse(request.output_format)
    if fmt.codec == "wav":
        raise ApiRefused(
            400,
            "invalid_output_format",
            f"Voice previews are not made as {fmt.name}: use pcm_{fmt.sample_rate} (the same "
            "samples without the WAV header) or an mp3, opus, ulaw or alaw format.",
            kind="validation_error",
            param="output_format",
        )
    engine = engine_of(caller)
    unit = unit_of(caller, engine, "voice_design", request.model_id)
    try:
        with metered_for(
            caller,
            engine,
            capability="voice_design",
            model_id=request.model_id,
            units=units_for(unit, seconds=3 * ESTIMATED_CLIP_SECONDS),
        ) as meter:
            with engine_errors_as_api(request_id=meter.event.request_id):
                result = engine.voice_design(request)
            if not result.previews:
                raise ApiRefused(
                    502,
                    "no_previews",
                    "The engine made no previews for this description; try again.",
                    kind="service_unavailable",
                    request_id=meter.event.request_id,
                )
            asked = {
                "voice_description": request.voice_description,
                "model_id": request.model_id,
                "text": request.text,
                "auto_generate_text": request.auto_generate_text,
                "guidance_scale": request.guidance_scale,
                "loudness": request.loudness,
                "requested_seed": request.seed,
                "output_format": fmt.name,
                "stream_previews": design.stream_previews,
                **(design.options or {}),
            }
            previews = []
            with kept_together() as saved:
                for index, preview in enumerate(result.previews):
                    engine_recipe = preview.recipe
                    recipe = {
                        **asked,
                        "seed": (engine_recipe or {}).get("seed", request.seed),
                        "generated_voice_id": preview.generated_voice_id,
                        "preview_index": index,
                        "preview_text": result.text,
                        "language": preview.language,
                        "engine": engine.name,
                        "engine_recipe": engine_recipe,
                    }
                    generation = clip_keep(
                        caller,
                        kind=GenerationKind.DESIGN_PREVIEW,
                        engine=engine.name,
                        audio=preview.audio,
                        content_type=preview.media_type or fmt.content_type,
                        recipe=recipe,
                        model_id=request.model_id,
                        voice_id=preview.generated_voice_id,
                        text=result.text,
                        duration_seconds=preview.duration_secs,
                        usage_event=meter.event,
                    )
                    saved.append(generation)
                    previews.append(
                        DesignedPreview(
                            generated_voice_id=preview.generated_voice_id,
                            audio=preview.audio,
                            media_type=preview.media_type or fmt.content_type,
                            duration_secs=float(preview.duration_secs or 0.0),
                            language=preview.language,
                            history_item_id=generation.history_item_id,
                        )
                    )
                seconds = sum(p.duration_secs for p in previews)
                event = meter.settle(units=units_for(unit, seconds=seconds), info=result.info)
    except BudgetExceeded as exc:
        raise budget_refused(exc) from exc
    return Design(previews=previews, text=result.text, usage=_metered(event))


def _preview(caller: Caller, generated_voice_id: str) -> Generation:
    """The stored preview of this id in the key's workspace; anything else is a 404."""
    found = (
        Generation.objects.filter(
            workspace=caller.workspace,
            kind=GenerationKind.DESIGN_PREVIEW,
            voice_id=generated_voice_id,  # a preview's Generation carries its id here
        )
        .order_by("-created_at", "-id")
        .first()
    )
    if found is None:
        raise ApiRefused(
            404,
            "voice_not_found",
            f"No voice preview '{generated_voice_id}' was designed in this workspace. "
            "Design previews with POST /v1/text-to-voice/design and use one of their "
            "generated_voice_id values.",
            kind="not_found",
            param="generated_voice_id",
        )
    return found


def design_save(
    *,
    caller: Caller,
    generated_voice_id: str,
    voice_name: str,
    voice_description: str,
    labels: dict[str, str],
) -> Voice:
    """Make a preview of this workspace a voice in the engine (``POST /v1/text-to-voice``);
    ``voices.services_made.design_save`` keeps it as the workspace's.

    Not metered: the preview was paid for when it was designed, and saving makes no audio.
    """
    preview = _preview(caller, generated_voice_id)
    engine = engine_of(caller)
    if preview.engine != engine.name:
        raise ApiRefused(
            400,
            "engine_changed",
            f"This preview was made by the {preview.engine} engine and the workspace now "
            f"uses the {engine.name} engine: design the voice again.",
            param="generated_voice_id",
        )
    with engine_errors_as_api():
        voice = engine.voice_design_save(
            SaveDesignRequest(
                generated_voice_id=generated_voice_id,
                voice_name=voice_name,
                voice_description=voice_description,
                labels=dict(labels),
                recipe=preview.recipe.get("engine_recipe"),
            )
        )
    return voice


@dataclass
class PreviewStream:
    """A stored preview's audio, streamed by the engine; iterate asynchronously (ASGI)."""

    chunks: object
    content_type: str = "audio/mpeg"

    def _next(self):
        try:
            return next(self.chunks)
        except StopIteration:
            return None

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()

    async def __aiter__(self):
        from asgiref.sync import sync_to_async

        try:
            while True:
                chunk = await sync_to_async(self._next)()
                if chunk is None:
                    break
                if chunk:
                    yield chunk
        finally:
            await sync_to_async(self.close)()


def design_stream(*, caller: Caller, generated_voice_id: str) -> PreviewStream:
    """The audio of a preview of this workspace, made again from its stored recipe.

    Not metered: it replays a preview the design call paid for.
    """
    preview = _preview(caller, generated_voice_id)
    engine = engine_of(caller)
    with engine_errors_as_api(voice_status=404):
        chunks = engine.voice_design_stream(
            generated_voice_id, recipe=preview.recipe.get("engine_recipe")
        )
    return PreviewStream(chunks=iter(chunks))


@dataclass(frozen=True)
class Sample:
    """An uploaded sample: its bytes, or the uploaded file itself (read where Django spooled
    it, never whole into memory)."""

    filename: str
    data: bytes | File


def samples_checked(samples: list[Sample]) -> tuple[list[tuple[str, bytes]], float]:
    """Every sample decodes as audio (422 on ``files[i]`` otherwise): the pairs the engine
    takes and how long they play together."""
    if not 1 <= len(samples) <= MAX_SAMPLES:
        raise ApiInvalid.one(
            ["body", "files"],
            f"Upload 1 to {MAX_SAMPLES} audio samples (got {len(samples)}).",
        )
    errors = []
    seconds = 0.0
    for index, sample in enumerate(samples):
        try:
            seconds += audio.probe_duration(sample.data, sample.filename)
        except InvalidRequest as exc:
            message = (exc.fields.get("file") or [exc.message])[0]
            errors.append({"type": "value_error", "loc": ["body", "files", index], "msg": message})
    if errors:
        raise ApiInvalid(errors)
    return [(s.filename, s.data) for s in samples], seconds


def clone(
    *, caller: Caller, engine, request: CloneRequest, seconds: float, voice_id: str = ""
) -> Voice:
    """An engine clone, metered as ``voice_clone`` (per call, or by the samples' length);
    ``voices.services_made`` keeps it as the workspace's (``seconds``: from
    ``samples_checked``; ``voice_id``: the voice re-sampled, when it exists already)."""
    unit = unit_of(caller, engine, "voice_clone", "")
    units = units_for(unit, seconds=seconds)
    try:
        with metered_for(
            caller, engine, capability="voice_clone", model_id="", units=units, voice_id=voice_id
        ) as meter:
            with engine_errors_as_api(request_id=meter.event.request_id):
                voice = engine.voice_clone(request)
            meter.settle(units=units, info=None)
    except BudgetExceeded as exc:
        raise budget_refused(exc) from exc
    return voice


def transcribe_in_job(
    *, caller: Caller, job, request: STTRequest, seconds: float, ledger_key: str, keep, progress
):
    """Transcribe an upload in ``job`` (the batch transcripts), metered by its length under
    ``ledger_key`` exactly across the job's retries: the reservation made with the upload is
    taken over and settled on the length the engine heard, in the transaction in which
    ``keep(result, engine_name, event)`` keeps the words. Returns ``(result, heard)``."""
    from django.db import transaction

    from .jobs import job_metered

    engine = _engine(caller)
    unit = unit_of(caller, engine, "stt", request.model_id)
    with job_metered(
        job=job,
        key=ledger_key,
        purpose=caller.purpose,
        project=caller.project,
        workspace=caller.workspace,
        user=caller.user,
        capability="stt",
        engine=engine.name,
        model_id=request.model_id,
        units=units_for(unit, seconds=seconds),
        source=caller.source,
    ) as meter:
        progress(10, "Transcribing")
        result = engine.stt(request)
        progress(92, "Keeping the transcript")
        heard = result.audio_duration_secs or seconds
        with transaction.atomic():
            keep(result, engine.name, meter.event)
            meter.settle(units=units_for(unit, seconds=heard), info=result.info)
    return result, heard
