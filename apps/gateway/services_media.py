"""The /v1 API beyond speech: transcription, sound effects, voice design and voices.

Each service checks what it can before anything is reserved (the audio decodes, the preview
belongs to the workspace), meters the engine call as the key's member (source api), keeps
every generated clip as a ``Generation`` before the call is settled, and raises the API's
errors (``ApiRefused``, ``ApiInvalid``). Voices made through the API are kept per workspace
(``ApiVoice``): the local engine holds no voices of its own, so their recipes live here.
"""

import logging
from dataclasses import dataclass, replace
from decimal import Decimal

from django.core.files.base import ContentFile, File
from django.db import transaction

from apps.billing.rates import units_for
from apps.billing.services import BudgetExceeded, rate_for
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
    TTSRequest,
    Voice,
    VoiceSettings,
)
from apps.history.models import Generation, GenerationKind
from apps.history.services import generation_save, kept_together

from .models import ApiKey, ApiVoice, VoiceSettingsRecord
from .services import (
    ApiInvalid,
    ApiRefused,
    _budget_refused,
    api_meter,
    api_voice,
    engine_errors_as_api,
    key_engine,
    usage_source,
)

log = logging.getLogger(__name__)

# Uploads are held in memory while the engine works on them; these bound what one call takes.
MAX_UPLOAD_BYTES = 200 * 1024 * 1024  # the whole request (files and fields)
MAX_SAMPLE_BYTES = 50 * 1024 * 1024  # one clone sample
MAX_SAMPLES = 25
# What a reservation assumes when the length is not known before the call (sound effects
# and previews have at most this many seconds); settling uses the real length.
ESTIMATED_CLIP_SECONDS = 30.0
DESIGN_FORMAT_DEFAULT = "mp3_44100_192"
SETTINGS_FIELDS = ("stability", "similarity_boost", "style", "use_speaker_boost", "speed")


def _engine_of(api_key: ApiKey):
    with engine_errors_as_api():
        return key_engine(api_key)


def _unit(api_key: ApiKey, engine, capability: str, model_id: str) -> str:
    return rate_for(api_key.workspace, capability, model_id or "", engine.name).unit


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
    from apps.transcripts.services import Options, UploadRefused, UploadTooLong, upload_check

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


def api_transcribe(*, api_key: ApiKey, request: STTRequest) -> Transcription:
    """Transcribe an upload with the workspace's engine, metered by its length (``stt``).

    The upload passes the studio's check before anything is reserved (``_upload_checked``),
    so a file that is not audio, too long, or sent with key terms the engine refuses costs
    nothing and leaves no ledger row; the call settles on the length the engine heard. The
    file is read from disk by the engine as it goes.
    """
    request, seconds = _upload_checked(request)
    engine = _engine_of(api_key)
    unit = _unit(api_key, engine, "stt", request.model_id)
    try:
        with api_meter(
            api_key,
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
        raise _budget_refused(exc) from exc
    return Transcription(transcript=transcript, usage=_metered(event))


# --- Sound effects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    audio: bytes
    content_type: str
    history_item_id: str
    usage: Metered


def api_sound(*, api_key: ApiKey, request: SoundRequest) -> Clip:
    """A sound effect from a prompt, kept as a ``Generation`` (``sound``) and metered."""
    with engine_errors_as_api():
        fmt = OutputFormat.parse(request.output_format)
    engine = _engine_of(api_key)
    unit = _unit(api_key, engine, "sound_effect", request.model_id)
    estimate = request.duration_seconds or ESTIMATED_CLIP_SECONDS
    try:
        with api_meter(
            api_key,
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
                generation = generation_save(
                    workspace=api_key.workspace,
                    user=api_key.user,
                    kind=GenerationKind.SOUND,
                    engine=engine.name,
                    audio=result.audio,
                    content_type=result.content_type or fmt.content_type,
                    recipe=recipe,
                    source=usage_source(api_key),
                    api_key_id=api_key.pk,
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
        raise _budget_refused(exc) from exc
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


def api_voice_design(*, api_key: ApiKey, design: DesignInput) -> Design:
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
    engine = _engine_of(api_key)
    unit = _unit(api_key, engine, "voice_design", request.model_id)
    try:
        with api_meter(
            api_key,
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
                    generation = generation_save(
                        workspace=api_key.workspace,
                        user=api_key.user,
                        kind=GenerationKind.DESIGN_PREVIEW,
                        engine=engine.name,
                        audio=preview.audio,
                        content_type=preview.media_type or fmt.content_type,
                        recipe=recipe,
                        source=usage_source(api_key),
                        api_key_id=api_key.pk,
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
        raise _budget_refused(exc) from exc
    return Design(previews=previews, text=result.text, usage=_metered(event))


def _preview(api_key: ApiKey, generated_voice_id: str) -> Generation:
    """The stored preview of this id in the key's workspace; anything else is a 404."""
    found = (
        Generation.objects.filter(
            workspace=api_key.workspace,
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


def api_voice_design_save(
    *,
    api_key: ApiKey,
    generated_voice_id: str,
    voice_name: str,
    voice_description: str,
    labels: dict[str, str],
) -> Voice:
    """Make a preview of this workspace a voice (``POST /v1/text-to-voice``).

    Not metered: the preview was paid for when it was designed, and saving makes no audio.
    """
    preview = _preview(api_key, generated_voice_id)
    engine = _engine_of(api_key)
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
    row = _voice_keep(
        api_key,
        engine,
        voice,
        category="generated",
        name=voice_name,
        description=voice_description,
        labels=labels,
    )
    return _voice_of(row, base=voice)


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


def api_voice_design_stream(*, api_key: ApiKey, generated_voice_id: str) -> PreviewStream:
    """The audio of a preview of this workspace, made again from its stored recipe.

    Not metered: it replays a preview the design call paid for.
    """
    preview = _preview(api_key, generated_voice_id)
    engine = _engine_of(api_key)
    with engine_errors_as_api(voice_status=404):
        chunks = engine.voice_design_stream(
            generated_voice_id, recipe=preview.recipe.get("engine_recipe")
        )
    return PreviewStream(chunks=iter(chunks))


# --- Voices -----------------------------------------------------------------------------------


def _stored(api_key: ApiKey, engine, voice_id: str) -> ApiVoice | None:
    return ApiVoice.objects.filter(
        workspace=api_key.workspace, voice_id=voice_id, engine=engine.name
    ).first()


def _voice_keep(api_key, engine, voice: Voice, *, category, name, description, labels):
    """Keep a voice made through the API, its maker the key's member. A voice kept already
    (the local engine gives a design saved again the same id) changes only for whoever may
    change it (403 otherwise) and keeps its maker."""
    existing = ApiVoice.objects.filter(workspace=api_key.workspace, voice_id=voice.voice_id)
    kept_name = existing.values_list("name", flat=True).first()
    if kept_name is not None:
        _change_check(api_key, replace(voice, name=kept_name))
    values = {
        "engine": engine.name,
        "name": name,
        "category": category,
        "description": description or "",
        "labels": dict(labels or {}),
        "recipe": voice.recipe,
    }
    row, _ = ApiVoice.objects.update_or_create(
        workspace=api_key.workspace,
        voice_id=voice.voice_id,
        defaults=values,
        create_defaults={**values, "created_by": api_key.user, "api_key_id": api_key.pk},
    )
    return row


def _settings_of(record: VoiceSettingsRecord | None, fallback: VoiceSettings | None):
    if record is None:
        return fallback or VoiceSettings()
    return VoiceSettings(**{name: getattr(record, name) for name in SETTINGS_FIELDS})


def _voice_of(row: ApiVoice, *, base: Voice | None = None) -> Voice:
    record = VoiceSettingsRecord.objects.filter(
        workspace_id=row.workspace_id, voice_id=row.voice_id
    ).first()
    return voice_of_row(row, record=record, base=base)


def voice_of_row(
    row: ApiVoice, *, record: VoiceSettingsRecord | None, base: Voice | None = None
) -> Voice:
    """A voice made through the API, as the engine would describe it, with ``record``'s
    settings (the workspace's stored settings for it, if any)."""
    voice = base or Voice(voice_id=row.voice_id, name=row.name)
    return replace(
        voice,
        name=row.name,
        category=row.category,
        labels=dict(row.labels or {}),
        description=row.description or None,
        settings=_settings_of(record, voice.settings),
        engine=row.engine,
        recipe=row.recipe,
        created_at_unix=int(row.created_at.timestamp()),
    )


def _voice_find(api_key: ApiKey, engine, voice_id: str) -> tuple[Voice, ApiVoice | None]:
    """A voice of the workspace (made through the API or the engine's own); else 404."""
    row = _stored(api_key, engine, voice_id)
    if row is not None and row.recipe is not None:
        return _voice_of(row), row
    with engine_errors_as_api(voice_status=404):
        voice = engine.voice(voice_id)
    return voice, row


def api_voice_get(*, api_key: ApiKey, voice_id: str) -> Voice:
    """One voice, with the workspace's stored settings for it (``GET /v1/voices/{id}``)."""
    engine = _engine_of(api_key)
    row = _stored(api_key, engine, voice_id)
    if row is not None and row.recipe is not None:
        return _voice_of(row)
    voice = api_voice(api_key=api_key, voice_id=voice_id)
    record = VoiceSettingsRecord.objects.filter(
        workspace=api_key.workspace, voice_id=voice_id
    ).first()
    return replace(voice, settings=_settings_of(record, voice.settings))


@dataclass(frozen=True)
class Sample:
    """An uploaded sample: its bytes, or the uploaded file itself (read where Django spooled
    it, never whole into memory)."""

    filename: str
    data: bytes | File


def _checked_samples(samples: list[Sample]) -> tuple[list[tuple[str, bytes]], float]:
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


def _clone(api_key, engine, request: CloneRequest, *, seconds: float, voice_id: str = "") -> Voice:
    """An engine clone, metered as ``voice_clone`` (per call, or by the samples' length)."""
    unit = _unit(api_key, engine, "voice_clone", "")
    units = units_for(unit, seconds=seconds)
    try:
        with api_meter(
            api_key, engine, capability="voice_clone", model_id="", units=units, voice_id=voice_id
        ) as meter:
            with engine_errors_as_api(request_id=meter.event.request_id):
                voice = engine.voice_clone(request)
            meter.settle(units=units, info=None)
    except BudgetExceeded as exc:
        raise _budget_refused(exc) from exc
    return voice


def api_voice_clone(
    *,
    api_key: ApiKey,
    name: str,
    samples: list[Sample],
    description: str | None = None,
    labels: dict[str, str] | None = None,
    remove_background_noise: bool = False,
) -> Voice:
    """Instant voice clone from uploaded samples (``POST /v1/voices/add``)."""
    pairs, seconds = _checked_samples(samples)
    engine = _engine_of(api_key)
    request = CloneRequest(
        name=name,
        samples=pairs,
        description=description,
        labels=dict(labels or {}),
        remove_background_noise=remove_background_noise,
    )
    voice = _clone(api_key, engine, request, seconds=seconds)
    row = _voice_keep(
        api_key,
        engine,
        voice,
        category="cloned",
        name=name,
        description=voice.description if voice.description is not None else description,
        labels=voice.labels or labels,
    )
    return _voice_of(row, base=voice)


def _refuse_builtin(voice: Voice, action: str) -> None:
    if voice.category == "premade":
        raise ApiRefused(
            400,
            "voice_not_editable" if action == "edit" else "cannot_delete_premade_voice",
            f"'{voice.name}' ({voice.voice_id}) is a premade voice of the engine: it cannot be "
            f"{'edited' if action == 'edit' else 'deleted'}. Only voices made in this "
            "workspace (clones, saved designs) can.",
            param="voice_id",
        )


def _change_check(api_key: ApiKey, voice: Voice) -> None:
    """The key's member may change this voice (``voices.services.voice_can_change``: its
    maker or a manager), or 403 in ElevenLabs' shape."""
    from apps.voices.services import voice_can_change

    if not voice_can_change(
        workspace=api_key.workspace,
        voice_id=voice.voice_id,
        user=api_key.user,
        membership=getattr(api_key, "membership", None),
    ):
        raise ApiRefused(
            403,
            "permission_denied",
            f"Only whoever made '{voice.name}' ({voice.voice_id}), or a manager, can edit it, "
            "change its settings or delete it. Ask a manager of the workspace.",
            kind="authorization_error",
            param="voice_id",
        )


def api_voice_edit(
    *,
    api_key: ApiKey,
    voice_id: str,
    name: str,
    description: str | None = None,
    labels: dict[str, str] | None = None,
    samples: list[Sample] | None = None,
    remove_background_noise: bool = False,
) -> Voice:
    """Rename, describe and label a voice made in this workspace (``…/{voice_id}/edit``).

    New samples on the local engine measure the clone's pitch and pace again from them
    (metered as a clone). Voices on the ElevenLabs engine live upstream, where Chorus
    cannot edit them yet: that is refused rather than changed only here.
    """
    engine = _engine_of(api_key)
    voice, row = _voice_find(api_key, engine, voice_id)
    _refuse_builtin(voice, "edit")
    _change_check(api_key, voice)
    if row is None or row.recipe is None:
        raise ApiRefused(
            400,
            "not_supported",
            f"Voice '{voice_id}' lives in the {engine.name} engine's account; Chorus cannot "
            "edit it through the API yet. Edit it there.",
            param="voice_id",
        )
    recipe = row.recipe
    if samples:
        pairs, seconds = _checked_samples(samples)
        measured = _clone(
            api_key,
            engine,
            CloneRequest(
                name=name,
                samples=pairs,
                labels=dict(labels or row.labels or {}),
                remove_background_noise=remove_background_noise,
            ),
            seconds=seconds,
            voice_id=voice_id,
        )
        recipe = measured.recipe or recipe
    row.name = name
    if description is not None:
        row.description = description
    if labels is not None:
        row.labels = dict(labels)
    row.recipe = recipe
    row.save()
    return _voice_of(row)


def api_voice_delete(*, api_key: ApiKey, voice_id: str) -> None:
    """Delete a voice of the workspace (``DELETE /v1/voices/{voice_id}``); premade ones and
    the local engine's built-in voices cannot be deleted (400), and only whoever made the
    voice or a manager may delete it (403). The library keeps it, flagged withdrawn."""
    from apps.voices.services import library_voice_withdraw

    engine = _engine_of(api_key)
    voice, row = _voice_find(api_key, engine, voice_id)
    _refuse_builtin(voice, "delete")
    _change_check(api_key, voice)
    if row is None or row.recipe is None:  # the voice lives upstream
        with engine_errors_as_api(voice_status=404):
            engine.voice_delete(voice_id)
    with transaction.atomic():
        library_voice_withdraw(
            workspace=api_key.workspace, engine=engine.name, voice_id=voice_id, actor=api_key.user
        )
        ApiVoice.objects.filter(workspace=api_key.workspace, voice_id=voice_id).delete()
        VoiceSettingsRecord.objects.filter(workspace=api_key.workspace, voice_id=voice_id).delete()


def api_voice_settings(*, api_key: ApiKey, voice_id: str) -> VoiceSettings:
    """The settings TTS uses for this voice in the workspace (stored, else the voice's)."""
    engine = _engine_of(api_key)
    voice, _row = _voice_find(api_key, engine, voice_id)
    record = VoiceSettingsRecord.objects.filter(
        workspace=api_key.workspace, voice_id=voice_id
    ).first()
    return _settings_of(record, voice.settings)


def api_voice_settings_update(*, api_key: ApiKey, voice_id: str, values: dict) -> VoiceSettings:
    """Store settings for a voice; fields not sent keep their current values. They are the
    whole team's, so only whoever made the voice or a manager may change them (403)."""
    engine = _engine_of(api_key)
    voice, _row = _voice_find(api_key, engine, voice_id)
    _change_check(api_key, voice)
    record = VoiceSettingsRecord.objects.filter(
        workspace=api_key.workspace, voice_id=voice_id
    ).first()
    current = _settings_of(record, voice.settings)
    merged = {name: getattr(current, name) for name in SETTINGS_FIELDS}
    merged.update({k: v for k, v in values.items() if k in SETTINGS_FIELDS and v is not None})
    VoiceSettingsRecord.objects.update_or_create(
        workspace=api_key.workspace,
        voice_id=voice_id,
        defaults=merged,
    )
    return VoiceSettings(**merged)


def speech_voice_apply(
    *, workspace, engine, request: TTSRequest, given: dict | None, final: bool = True
) -> None:
    """Fill a TTS request from what the workspace stored for its voice.

    - A voice made through the API on the local engine: its recipe (the engine keeps none).
    - A clone whose consent expired (``voices.services_clone``): refused with 403.
    - A final render (everything but the studio's try-outs) in a workspace that uses approved
      voices only: refused with 403 unless a manager approved the voice.
    - Stored settings: the base that the call's own ``voice_settings`` fields override.
    """
    made = (
        ApiVoice.objects.filter(workspace=workspace, voice_id=request.voice_id, engine=engine.name)
        .values_list("recipe", "category")
        .first()
    )
    if made is not None:
        recipe, category = made
        if category == "cloned":
            from apps.voices.services_clone import consent_refusal

            why = consent_refusal(
                workspace_id=workspace.pk, engine=engine.name, voice_id=request.voice_id
            )
            if why:
                raise ApiRefused(403, "voice_consent_expired", why, param="voice_id")
        if engine.name == "local" and request.voice_recipe is None and recipe:
            request.voice_recipe = recipe
    if final and workspace.require_approved_voices:
        from apps.voices.services_usage import voice_render_check
        from apps.workspaces.services import ActionRefused

        try:
            voice_render_check(workspace=workspace, engine=engine.name, voice_id=request.voice_id)
        except ActionRefused as exc:
            raise ApiRefused(403, "voice_not_approved", str(exc), param="voice_id") from exc
    record = VoiceSettingsRecord.objects.filter(
        workspace=workspace, voice_id=request.voice_id
    ).first()
    if record is not None:
        merged = {name: getattr(record, name) for name in SETTINGS_FIELDS}
        merged.update({k: v for k, v in (given or {}).items() if v is not None})
        request.voice_settings = VoiceSettings(**merged)
