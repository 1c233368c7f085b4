"""Text to speech in the studio: the page's choices, a take's recipe, and making a take.

A take is one core call for the whole text (``generation.speech``): the engine speaks it
clause by clause, so a streamed take (MP3) starts playing after the first sentence while
the rest is made, and is metered and kept in History as one ``Generation`` when it ends.
"""

import secrets
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from django.core.cache import cache

from apps.billing.services import Estimate, rate_for, usage_estimate
from apps.engines.base import (
    DEFAULT_OUTPUT_FORMAT,
    MP3_FORMATS,
    OPUS_FORMATS,
    EngineError,
    OutputFormat,
    TTSRequest,
    VoiceSettings,
)
from apps.generation.caller import Caller
from apps.generation.engine import engine_for
from apps.generation.errors import ApiInvalid, ApiRefused
from apps.generation.speech import SpeechInput, SpeechStream, speak, speak_stream
from apps.generation.voice_rules import voice_apply
from apps.history.models import Generation, GenerationKind
from apps.voices.models import LibraryVoice, VoiceSettingsRecord
from apps.workspaces.services import ActionRefused
from studio_site.format import count_of, label_of

SPEECH_MAX = 10_000  # characters of one take: the engines' limit of one request
DEFAULT_MODEL = "eleven_multilingual_v2"
PICKER_MAX = 300  # voices listed in the picker (favourites first)
TAKE_SECONDS = 15 * 60  # how long a take waits for its stream to be opened
TAKES_KEPT = 8  # pending takes remembered per session

# The formats the page offers: those a browser plays. MP3 streams; the others are made whole.
WAV_FORMATS = tuple(f"wav_{rate}" for rate in (16000, 22050, 24000, 44100, 48000))
FORMAT_GROUPS = (
    ("MP3: plays while the rest is made", MP3_FORMATS),
    ("Opus: plays when finished", OPUS_FORMATS),
    ("WAV: plays when finished", WAV_FORMATS),
)
PAGE_FORMATS = tuple(name for _, names in FORMAT_GROUPS for name in names)

# The sliders: field → (label, minimum, maximum, step, help).
SLIDERS = {
    "stability": (
        "Stability",
        0.0,
        1.0,
        0.01,
        "Lower: more expressive and varied; higher: steadier, can sound monotone.",
    ),
    "similarity_boost": (
        "Similarity",
        0.0,
        1.0,
        0.01,
        "How closely to keep to the original voice.",
    ),
    "style": ("Style exaggeration", 0.0, 1.0, 0.01, "Amplifies the voice's style; 0 is neutral."),
    "speed": ("Speed", 0.7, 1.2, 0.01, "1 is the voice's natural pace."),
}


def format_label(name: str) -> str:
    """``mp3_44100_128`` → ``MP3 · 44.1 kHz · 128 kbps``."""
    fmt = OutputFormat.parse(name)
    rate = f"{fmt.sample_rate / 1000:g} kHz"
    codec = {"mp3": "MP3", "opus": "Opus", "wav": "WAV"}.get(fmt.codec, fmt.codec.upper())
    if fmt.bitrate_kbps:
        return f"{codec} · {rate} · {fmt.bitrate_kbps} kbps"
    return f"{codec} · {rate}"


def streams(output_format: str) -> bool:
    """Whether a take in this format is played while it is made (MP3)."""
    return OutputFormat.parse(output_format).codec == "mp3"


# --- The page's choices ---------------------------------------------------------------------


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
            preview_url=row.preview_url,
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


def speech_estimate(*, workspace, user, model_id: str, characters: int) -> Estimate:
    """What speaking ``characters`` costs with ``model_id``, and what the member has left."""
    return usage_estimate(
        workspace=workspace,
        user=user,
        capability="tts",
        engine=engine_for(workspace).name,
        model_id=model_id,
        units=max(characters, 0),
    )


# --- A take ---------------------------------------------------------------------------------


class TakeTooDear(ActionRefused):
    """A budget (the member's, a cap, the plan) has not enough credits left for the take."""


@dataclass(frozen=True)
class TakeRecipe:
    """Everything a take is made from, as the page's form validated it."""

    text: str
    voice_id: str
    model_id: str = DEFAULT_MODEL
    output_format: str = DEFAULT_OUTPUT_FORMAT
    voice_settings: dict = field(default_factory=lambda: asdict(VoiceSettings()))
    seed: int | None = None

    def speech_input(self) -> SpeechInput:
        return SpeechInput(
            voice_id=self.voice_id,
            text=self.text,
            model_id=self.model_id,
            voice_settings=dict(self.voice_settings),
            output_format=self.output_format,
            seed=self.seed,
        )

    @property
    def streamed(self) -> bool:
        return streams(self.output_format)


def take_recipe_from(generation: Generation) -> TakeRecipe:
    """The recipe of a History clip, to make it again (``ActionRefused`` if it is no speech)."""
    if generation.kind != GenerationKind.TTS:
        raise ActionRefused(
            f"This clip is a {generation.get_kind_display().lower()}, not speech: only speech "
            "clips can be made again here."
        )
    recipe = generation.recipe or {}
    settings = asdict(VoiceSettings())
    settings.update(
        {
            key: value
            for key, value in (recipe.get("voice_settings") or {}).items()
            if key in settings
        }
    )
    output_format = recipe.get("output_format") or DEFAULT_OUTPUT_FORMAT
    return TakeRecipe(
        text=recipe.get("text") or generation.text,
        voice_id=recipe.get("voice_id") or generation.voice_id,
        model_id=recipe.get("model_id") or generation.model_id or DEFAULT_MODEL,
        output_format=output_format if output_format in PAGE_FORMATS else DEFAULT_OUTPUT_FORMAT,
        voice_settings=settings,
        seed=recipe.get("seed"),
    )


def take_caller(*, workspace, user, token: str, membership=None) -> Caller:
    """The member's own call from the Speech page (a final render, not a try-out)."""
    return Caller(
        workspace=workspace,
        user=user,
        source="ui",
        purpose=("speech", token),
        membership=membership,
    )


def take_check(*, workspace, user, recipe: TakeRecipe) -> Estimate:
    """Refuse now what the core would refuse when the take is made: a budget it exceeds, or
    a voice the workspace's rules do not allow (``ActionRefused``); else the estimate."""
    estimate = speech_estimate(
        workspace=workspace, user=user, model_id=recipe.model_id, characters=len(recipe.text)
    )
    if estimate.blocked_by:
        limit = estimate.blocked_by
        if limit.startswith(("The ", "This ")):
            limit = limit[0].lower() + limit[1:]
        raise TakeTooDear(
            f"Not enough credits: this take needs {count_of(estimate.credits, 'credit')}, more "
            f"than is left of {limit}. Shorten the text, or ask an owner or a manager for more."
        )
    engine = engine_for(workspace)
    request = TTSRequest(text=recipe.text, voice_id=recipe.voice_id, model_id=recipe.model_id)
    try:
        voice_apply(
            workspace=workspace,
            engine=engine,
            request=request,
            given=recipe.voice_settings,
            final=True,
        )
    except ApiRefused as exc:
        raise ActionRefused(exc.message) from exc
    return estimate


def take_make(*, workspace, user, recipe: TakeRecipe, membership=None) -> Generation:
    """Make a take whole (formats that do not stream, or a page without JavaScript)."""
    token = take_token()
    caller = take_caller(workspace=workspace, user=user, token=token, membership=membership)
    try:
        speech = speak(caller=caller, speech=recipe.speech_input())
    except (ApiRefused, ApiInvalid) as exc:
        raise ActionRefused(str(exc)) from exc
    return Generation.objects.get(workspace=workspace, request_id=speech.request_id)


def take_stream(
    *, workspace, user, recipe: TakeRecipe, token: str, membership=None
) -> SpeechStream:
    """Reserve and open a streamed take: MP3 bytes as the engine speaks each sentence. The
    stream is settled and kept in History once, however it ends (``SpeechStream``)."""
    caller = take_caller(workspace=workspace, user=user, token=token, membership=membership)
    try:
        return speak_stream(
            caller=caller, speech=recipe.speech_input(), encode=lambda chunk: chunk.audio
        )
    except (ApiRefused, ApiInvalid) as exc:
        raise ActionRefused(str(exc)) from exc


def take_found(*, workspace, user, token: str) -> Generation | None:
    """The clip a streamed take was kept as, once its stream has ended."""
    return (
        Generation.objects.filter(
            workspace=workspace,
            user=user,
            usage_event__purpose_type="speech",
            usage_event__purpose_id=token,
        )
        .select_related("usage_event")
        .first()
    )


# --- Pending takes (between the form's POST and the player's GET) ----------------------------


def take_token() -> str:
    return secrets.token_urlsafe(16)


SESSION_KEY = "speech_takes"


def take_remember(session, *, workspace_id: int, recipe: TakeRecipe) -> str:
    """Keep a validated recipe in the member's session until its stream is opened."""
    takes = _live(session.get(SESSION_KEY) or {})
    token = take_token()
    takes[token] = {"workspace": workspace_id, "at": time.time(), "recipe": asdict(recipe)}
    while len(takes) > TAKES_KEPT:
        takes.pop(min(takes, key=lambda key: takes[key]["at"]))
    session[SESSION_KEY] = takes
    return token


def take_recall(session, *, workspace_id: int, token: str) -> TakeRecipe | None:
    """The pending take ``token`` of this workspace, forgotten as it is recalled (a stream
    is opened once); ``None`` when there is none (played already, expired, another's)."""
    takes = _live(session.get(SESSION_KEY) or {})
    pending = takes.pop(token, None)
    session[SESSION_KEY] = takes
    if pending is None or pending.get("workspace") != workspace_id:
        return None
    return TakeRecipe(**pending["recipe"])


def _live(takes: dict) -> dict:
    now = time.time()
    return {
        key: value
        for key, value in takes.items()
        if isinstance(value, dict) and now - value.get("at", 0) < TAKE_SECONDS
    }


SESSION_FAILED = "speech_failed"


def take_failed_note(session, *, token: str, message: str) -> None:
    """Remember why a take's stream was refused, for the page that waits for it."""
    failed = dict(list((session.get(SESSION_FAILED) or {}).items())[-TAKES_KEPT:])
    failed[token] = message
    session[SESSION_FAILED] = failed


def take_failed(session, *, token: str) -> str:
    return (session.get(SESSION_FAILED) or {}).get(token, "")
