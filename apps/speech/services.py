"""Text to speech in the studio: the page's choices, a take's recipe, and making a take.

A take is one core call for the whole text (``generation.speech``): the engine speaks it
clause by clause, so a streamed take (MP3) starts playing after the first sentence while
the rest is made, and is metered and kept in History as one ``Generation`` when it ends.
"""

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal

from django.conf import settings

from apps.billing.services import Estimate, usage_estimate
from apps.engines.base import (
    DEFAULT_OUTPUT_FORMAT,
    MP3_FORMATS,
    OPUS_FORMATS,
    OutputFormat,
    TTSRequest,
    VoiceSettings,
)
from apps.generation.caller import Caller
from apps.generation.engine import engine_for
from apps.generation.errors import ApiInvalid, ApiRefused
from apps.generation.speech import SpeechInput, SpeechStream, speak, speak_stream
from apps.generation.text_parts import split_with_gaps
from apps.generation.threads import thread_hop
from apps.generation.voice_rules import voice_apply
from apps.history.models import Generation, GenerationKind
from apps.voices.picker import (  # noqa: F401  (the pages and tests of Speech use them here)
    DEFAULT_MODEL,
    PICKER_MAX,
    ModelChoice,
    VoiceChoice,
    last_voice,
    part_limit,
    speech_models,
    speech_voices,
    voice_default,
)
from apps.workspaces.services import ActionRefused
from studio_site.format import count_of

# Characters of one part of a take (one core call): the engines' limit of one request, or
# less where CHORUS_SPEECH_PART_MAX says so (the browser tests' takes in parts).
SPEECH_MAX = settings.CHORUS_SPEECH_PART_MAX
TAKE_MAX = 200_000  # characters of one take (split into parts the engine takes one by one)
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
        lefts = [n for n in (estimate.member_left, estimate.workspace_left) if n is not None]
        left = (
            f"only {count_of(max(min(lefts), 0), 'credit')} left" if lefts else "more than is left"
        )
        parts = len(take_parts(workspace=workspace, recipe=recipe))
        whole = f" (all {parts} parts of the text)" if parts > 1 else ""
        raise TakeTooDear(
            f"Not enough credits: this take needs {count_of(estimate.credits, 'credit')}"
            f"{whole}, {left} of {limit}. Shorten the text, or "
            "ask an owner or a manager for more."
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


def take_parts(*, workspace, recipe: TakeRecipe) -> list[tuple[str, str]]:
    """The take's text in parts the model takes in one request, each with the gap before it
    (see ``parts``): one part for a text within the limit."""
    return split_with_gaps(recipe.text, part_limit(workspace=workspace, model_id=recipe.model_id))


def _part_input(
    recipe: TakeRecipe, parts: list[tuple[str, str]], index: int, *, token: str
) -> SpeechInput:
    """The core call of part ``index``, with the text around it for a continuous voice; its
    clip's recipe names the take (kept with the clip in the same write)."""
    previous = parts[index - 1][1] if index > 0 else None
    following = parts[index + 1][1] if index + 1 < len(parts) else None
    take = {"id": token, "part": index + 1, "parts": len(parts)}
    if index > 0:
        take["gap"] = parts[index][0]
    return replace(
        recipe.speech_input(),
        text=parts[index][1],
        previous_text=_tail(previous),
        next_text=_head(following),
        recipe_extra={"take": take},
    )


CONTEXT_CHARACTERS = 500  # of the neighbouring parts, sent as previous_text / next_text


def _tail(text: str | None) -> str | None:
    if not text:
        return None
    if len(text) <= CONTEXT_CHARACTERS:
        return text
    cut = text[-CONTEXT_CHARACTERS:]
    return cut.split(" ", 1)[-1] if " " in cut else cut


def _head(text: str | None) -> str | None:
    if not text:
        return None
    if len(text) <= CONTEXT_CHARACTERS:
        return text
    cut = text[:CONTEXT_CHARACTERS]
    return cut.rsplit(" ", 1)[0] if " " in cut else cut


def _take_stop(*, workspace, token: str, message: str) -> None:
    """Note on the take's last clip why no more parts were made."""
    clips = _take_clips(workspace=workspace, token=token)
    if not clips:
        return
    last = clips[-1]
    take = (last.recipe or {}).get("take") or {"id": token, "part": len(clips)}
    last.recipe = {**(last.recipe or {}), "take": {**take, "stopped": message}}
    last.save(update_fields=["recipe"])


def _stopped_message(index: int, total: int, reason: str) -> str:
    made = count_of(index, "part")
    return (
        f"Stopped after {made} of {total}: {reason} The parts made are kept; nothing was "
        "charged for the rest."
    )


def take_make(*, workspace, user, recipe: TakeRecipe, membership=None) -> "Take":
    """Make a take whole, part after part (formats that do not stream, or a page without
    JavaScript). A refusal of the first part raises ``ActionRefused``; of a later part (a
    budget spent meanwhile) it ends the take there, noted on its last clip."""
    token = take_token()
    caller = take_caller(workspace=workspace, user=user, token=token, membership=membership)
    parts = take_parts(workspace=workspace, recipe=recipe)
    for index in range(len(parts)):
        try:
            speak(caller=caller, speech=_part_input(recipe, parts, index, token=token))
        except (ApiRefused, ApiInvalid) as exc:
            if index == 0:
                raise ActionRefused(str(exc)) from exc
            _take_stop(
                workspace=workspace,
                token=token,
                message=_stopped_message(index, len(parts), str(exc)),
            )
            break
    return take_of(workspace=workspace, token=token)


class TakeStream:
    """A streamed take: its parts' MP3 one after the other, as one stream.

    Each part is its own core call (reserved when it starts, settled and kept in History
    when it ends, as ``SpeechStream`` does), the next one opened once the last has ended. A
    refusal of a later part (a budget spent meanwhile) or an engine that broke off ends the
    take there, noted on its last clip; a listener who leaves ends it too: the part being
    made is settled for what was sent, and no further part is made.
    """

    def __init__(self, *, workspace, user, membership, recipe, token, parts, first):
        self._workspace = workspace
        self._user = user
        self._membership = membership
        self._recipe = recipe
        self._token = token
        self._parts = parts
        self._current: tuple[int, SpeechStream] | None = (0, first)
        self._made = 0  # parts ended and noted
        self._over = False
        self.content_type = first.content_type
        self.request_id = first.request_id

    def _open(self, index: int) -> SpeechStream | None:
        caller = take_caller(
            workspace=self._workspace,
            user=self._user,
            token=self._token,
            membership=self._membership,
        )
        try:
            return speak_stream(
                caller=caller,
                speech=_part_input(self._recipe, self._parts, index, token=self._token),
                encode=lambda chunk: chunk.audio,
            )
        except (ApiRefused, ApiInvalid) as exc:
            self._stop(_stopped_message(index, len(self._parts), str(exc)))
            return None

    def _part_over(self) -> bool:
        """Settle and note the part being made; whether it ran to its end."""
        if self._current is None:
            return False
        index, stream = self._current
        self._current = None
        stream.close()  # (nothing when its own stream ended it)
        self._made = index + 1
        return stream.ended

    def _stop(self, message: str) -> None:
        self._over = True
        _take_stop(workspace=self._workspace, token=self._token, message=message)

    def _next(self) -> SpeechStream | None:
        """After a part ended: the next part's stream, or ``None`` when the take is over."""
        index = self._made
        ran_out = not self._part_over()
        if ran_out:
            self._stop(
                _stopped_message(
                    index,
                    len(self._parts),
                    f"the engine broke off during part {index + 1} (kept as far as it went).",
                )
            )
            return None
        if self._made >= len(self._parts):
            self._over = True
            return None
        stream = self._open(self._made)
        if stream is not None:
            self._current = (self._made, stream)
        return stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = None
        try:
            while self._current is not None:
                chunks = aiter(self._current[1])
                async for chunk in chunks:
                    yield chunk
                chunks = None
                if await thread_hop(self._next)() is None:
                    break
        finally:
            if chunks is not None:  # the listener left: the part settles what was sent
                await chunks.aclose()
            await thread_hop(self.close)()

    def close(self) -> None:
        """End the take where it is (a listener who left): the part being made is settled
        for what was sent; no further part is made."""
        if self._over:
            return
        self._part_over()
        self._over = True
        if self._made < len(self._parts):
            _take_stop(
                workspace=self._workspace,
                token=self._token,
                message=_stopped_message(
                    self._made, len(self._parts), "the listener left before the take was over."
                ),
            )


def take_stream(*, workspace, user, recipe: TakeRecipe, token: str, membership=None) -> TakeStream:
    """Reserve and open a streamed take: MP3 bytes as the engine speaks each sentence, part
    after part. Its first part is opened here, so a refusal is a proper error response."""
    parts = take_parts(workspace=workspace, recipe=recipe)
    caller = take_caller(workspace=workspace, user=user, token=token, membership=membership)
    try:
        first = speak_stream(
            caller=caller,
            speech=_part_input(recipe, parts, 0, token=token),
            encode=lambda chunk: chunk.audio,
        )
    except (ApiRefused, ApiInvalid) as exc:
        raise ActionRefused(str(exc)) from exc
    return TakeStream(
        workspace=workspace,
        user=user,
        membership=membership,
        recipe=recipe,
        token=token,
        parts=parts,
        first=first,
    )


# --- A take once made -------------------------------------------------------------------------


@dataclass(frozen=True)
class Take:
    """A take as History keeps it: its clips (one per part, in order) and how it ended."""

    id: str
    clips: list
    parts: int  # as many as the text was split into (more than ``clips`` if it stopped)
    stopped: str = ""

    @property
    def first(self) -> Generation:
        return self.clips[0]

    @property
    def text(self) -> str:
        return "".join(
            ((clip.recipe.get("take") or {}).get("gap", " ") if n else "")
            + (clip.recipe.get("text") or clip.text)
            for n, clip in enumerate(self.clips)
        )

    @property
    def credits(self) -> Decimal:
        return sum(
            (clip.usage_event.credits or Decimal(0) for clip in self.clips if clip.usage_event),
            Decimal(0),
        )

    @property
    def seconds(self) -> float:
        return sum(clip.duration_seconds or 0 for clip in self.clips)

    @property
    def complete(self) -> bool:
        return len(self.clips) == self.parts and all(clip.complete for clip in self.clips)

    @property
    def over(self) -> bool:
        """Nothing more is coming: all parts made, or stopped (or cut short)."""
        return self.complete or bool(self.stopped) or not self.clips[-1].complete


def _take_clips(*, workspace, token: str, user=None) -> list:
    clips = Generation.objects.filter(
        workspace=workspace, kind=GenerationKind.TTS, recipe__take__id=token
    ).select_related("usage_event")
    if user is not None:
        clips = clips.filter(user=user)
    return sorted(clips, key=lambda clip: clip.recipe["take"].get("part") or 0)


def take_of(*, workspace, token: str, user=None) -> Take | None:
    """The take ``token`` of the workspace (of ``user`` only, when given); ``None`` until a
    part of it is kept."""
    clips = _take_clips(workspace=workspace, token=token, user=user)
    if not clips:
        return None
    last = clips[-1].recipe["take"]
    return Take(
        id=token,
        clips=clips,
        parts=int(last.get("parts") or len(clips)),
        stopped=str(last.get("stopped") or ""),
    )


def take_of_clip(clip: Generation) -> Take:
    """The take a History clip is a part of (a clip made before takes had parts: itself)."""
    token = (clip.recipe or {}).get("take", {}).get("id") if isinstance(clip.recipe, dict) else None
    take = take_of(workspace=clip.workspace, token=token) if token else None
    return take or Take(id="", clips=[clip], parts=1)


def take_found(*, workspace, user, token: str) -> Take | None:
    """The member's take ``token`` once it is over (all its parts made, or stopped)."""
    take = take_of(workspace=workspace, token=token, user=user)
    return take if take is not None and take.over else None


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
