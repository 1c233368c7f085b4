"""The voice and model pickers of the pages that speak (Speech, Projects): the workspace's
library voices on its engine, each with its preview and stored settings, and the engine's
text-to-speech models with what a character costs on each."""

from dataclasses import asdict, dataclass
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.urls import reverse

from apps.billing.services import rate_for
from apps.engines.base import EngineError, VoiceSettings
from apps.generation.engine import engine_for
from apps.history.models import Generation, GenerationKind
from studio_site.format import label_of

from .models import LibraryVoice, VoiceSettingsRecord
from .services_preview import preview_available

SPEECH_MAX = settings.CHORUS_SPEECH_PART_MAX
DEFAULT_MODEL = "eleven_multilingual_v2"
PICKER_MAX = 300  # voices listed in the picker (favourites first)
MODELS_SECONDS = 600  # how long the engine's list of models is reused


@dataclass(frozen=True)
class VoiceChoice:
    voice_id: str
    name: str
    labels: list[str]
    preview_url: str
    settings: dict  # the workspace's stored settings for it, else the defaults
    favourite: bool = False


@dataclass(frozen=True)
class ModelChoice:
    model_id: str
    name: str
    credits_per_character: Decimal
    max_characters: int


def speech_voices(*, workspace, user, include: str = "") -> list[VoiceChoice]:
    """The voices of the workspace's library on its engine (favourites first, then by name),
    each with its preview and stored settings; ``include`` is listed even beyond the cap."""
    engine = engine_for(workspace).name
    rows = LibraryVoice.objects.filter(
        workspace=workspace, engine=engine, withdrawn_at__isnull=True
    )
    favourites = set(
        rows.filter(favourites__user=user).values_list("voice_id", flat=True)
        if user is not None
        else ()
    )
    chosen = list(rows.order_by("name", "pk")[:PICKER_MAX])
    if include and all(row.voice_id != include for row in chosen):
        chosen += list(rows.filter(voice_id=include))
    records = {
        record.voice_id: record
        for record in VoiceSettingsRecord.objects.filter(
            workspace=workspace, voice_id__in=[row.voice_id for row in chosen]
        )
    }
    choices = [
        VoiceChoice(
            voice_id=row.voice_id,
            name=row.name,
            labels=[
                str(value) for value in (row.gender, row.age, row.accent, row.use_case) if value
            ],
            # Every voice's preview through the library's one access-checked view (made once
            # for the local engine's voices, the upstream recording for ElevenLabs').
            preview_url=reverse("voices:preview", args=[row.pk]) if preview_available(row) else "",
            settings=_settings_of(records.get(row.voice_id)),
            favourite=row.voice_id in favourites,
        )
        for row in chosen
    ]
    choices.sort(key=lambda choice: (not choice.favourite, choice.name.lower()))
    return choices


def voice_default(voices: list[VoiceChoice], *, last: str = "") -> VoiceChoice | None:
    """The voice the form starts with: the member's last, else the first (favourites lead)."""
    for voice in voices:
        if voice.voice_id == last:
            return voice
    return voices[0] if voices else None


def last_voice(*, workspace, user) -> str:
    """The voice of the member's latest speech clip in the workspace ("" if none)."""
    return (
        Generation.objects.filter(workspace=workspace, user=user, kind=GenerationKind.TTS)
        .values_list("voice_id", flat=True)
        .first()
        or ""
    )


def _settings_of(record) -> dict:
    if record is None:
        return asdict(VoiceSettings())
    return {
        "stability": record.stability,
        "similarity_boost": record.similarity_boost,
        "style": record.style,
        "use_speaker_boost": record.use_speaker_boost,
        "speed": record.speed,
    }


MODELS_SECONDS = 600  # how long the engine's list of models is reused


def _tts_models(workspace) -> tuple[str, list]:
    """The engine's text-to-speech models (asked at most every ``MODELS_SECONDS``)."""
    engine = engine_for(workspace)
    key = f"speech-models:{workspace.pk}:{engine.name}"
    models = cache.get(key)
    if models is None:
        try:
            models = [model for model in engine.models() if model.can_do_text_to_speech]
        except EngineError:
            return engine.name, []  # the engine cannot list them now: its default still works
        cache.set(key, models, MODELS_SECONDS)
    return engine.name, models


def _model_name(model) -> str:
    """The model's name, in words where the engine names it by its id."""
    name = model.name or model.model_id
    if name.startswith(model.model_id):  # "eleven_v3 (local stand-in)" → "Eleven v3 (…)"
        name = label_of(model.model_id) + name[len(model.model_id) :]
    return name


def speech_models(*, workspace, user) -> list[ModelChoice]:
    """The engine's text-to-speech models with what a character costs on each (the rate
    card in force, as the ledger will charge it)."""
    engine, models = _tts_models(workspace)
    choices = [
        ModelChoice(
            model_id=model.model_id,
            name=_model_name(model),
            credits_per_character=rate_for(
                workspace, "tts", model.model_id, engine
            ).credits_per_unit,
            max_characters=min(model.maximum_text_length_per_request or SPEECH_MAX, SPEECH_MAX),
        )
        for model in models
    ]
    if not any(choice.model_id == DEFAULT_MODEL for choice in choices):
        choices.insert(
            0,
            ModelChoice(
                model_id=DEFAULT_MODEL,
                name=label_of(DEFAULT_MODEL),
                credits_per_character=rate_for(
                    workspace, "tts", DEFAULT_MODEL, engine
                ).credits_per_unit,
                max_characters=SPEECH_MAX,
            ),
        )
    return choices


def part_limit(*, workspace, model_id: str) -> int:
    """The characters of one part with ``model_id``: what the model takes in one request."""
    for model in _tts_models(workspace)[1]:
        if model.model_id == model_id:
            return min(model.maximum_text_length_per_request or SPEECH_MAX, SPEECH_MAX)
    return SPEECH_MAX
