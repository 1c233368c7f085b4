"""Speech: text to speech for a ``Caller``, whole or streamed, metered and kept.

The workspace's engine speaks; the voice is applied first (``voice_rules``: the recipe and
stored settings of the workspace's voice, consent, the approved-voices rule); the call is
metered as the caller's; the audio is kept as a ``Generation`` before the call is settled.
"""

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from decimal import Decimal

from asgiref.sync import async_to_sync

from apps.billing.services import BudgetExceeded
from apps.engines.base import EngineError, OutputFormat, TTSRequest, VoiceSettings
from apps.history.services import kept_together

from .caller import Caller
from .engine import engine_of
from .errors import ApiRefused, budget_refused, engine_errors_as_api
from .metering import clip_keep, metered_for
from .threads import thread_hop
from .voice_rules import voice_apply

log = logging.getLogger(__name__)

SPEECH_CHARACTERS_PER_SECOND = 15  # typical read speech: sizes a stream cut off before its end


# --- Speech ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechInput:
    """A text-to-speech call as the client sent it (validated for types by the view)."""

    voice_id: str
    text: str
    model_id: str = "eleven_multilingual_v2"
    voice_settings: dict | None = None  # only the fields the client set
    output_format: str | None = None
    seed: int | None = None
    language_code: str | None = None
    previous_text: str | None = None
    next_text: str | None = None
    apply_text_normalization: str = "auto"
    # ``apps.engines.pronunciation.PronunciationRule``s applied to the render.
    pronunciation_rules: tuple = ()
    # Kept in the clip's recipe beside the call's own parameters (a page's context, such as
    # the take a part belongs to); never sent to the engine.
    recipe_extra: dict | None = None


@dataclass(frozen=True)
class Speech:
    """A finished synthesis: the audio, its timings when asked for, and its ledger row."""

    audio: bytes
    content_type: str
    alignment: object | None
    normalized_alignment: object | None
    request_id: str
    credits: Decimal
    engine_ms: float


def _speech_request(speech: SpeechInput, *, streaming: bool) -> tuple[TTSRequest, OutputFormat]:
    with engine_errors_as_api():
        fmt = OutputFormat.parse(speech.output_format)
    if streaming and fmt.codec == "wav":
        raise ApiRefused(
            400,
            "invalid_output_format",
            f"{fmt.name} cannot be streamed: use pcm_{fmt.sample_rate} (the same samples, "
            "without the WAV header) or a non-streaming endpoint.",
            kind="validation_error",
            param="output_format",
        )
    settings = None
    if speech.voice_settings:
        given = {k: v for k, v in speech.voice_settings.items() if v is not None}
        settings = VoiceSettings(**given)
    request = TTSRequest(
        text=speech.text,
        voice_id=speech.voice_id,
        model_id=speech.model_id,
        voice_settings=settings,
        output_format=fmt.name,
        seed=speech.seed,
        language_code=speech.language_code,
        previous_text=speech.previous_text,
        next_text=speech.next_text,
        apply_text_normalization=speech.apply_text_normalization,
        pronunciation_rules=tuple(speech.pronunciation_rules),
    )
    return request, fmt


def _speech_meter(caller: Caller, engine, request: TTSRequest):
    return metered_for(
        caller,
        engine,
        capability="tts",
        model_id=request.model_id,
        units=len(request.text),
        voice_id=request.voice_id,
    )


def _voice_apply(caller: Caller, engine, request: TTSRequest, speech: SpeechInput) -> str:
    """The workspace's recipe and stored settings of the voice, its consent and the
    approved-voices rule (``voice_rules``); the voice's name, kept with the clip."""
    return voice_apply(
        workspace=caller.workspace,
        engine=engine,
        request=request,
        given=speech.voice_settings,
        final=not caller.draft,
    )


def speak(*, caller: Caller, speech: SpeechInput, with_timestamps: bool = False) -> Speech:
    """Speak ``speech`` with the workspace's engine, metered as the caller's.

    A budget or cap that refuses it raises 429 ``quota_exceeded`` before anything is
    reserved; an engine error is refunded and raised as the API reports it.
    """
    request, fmt = _speech_request(speech, streaming=False)
    with engine_errors_as_api():
        engine = engine_of(caller)
    voice_name = _voice_apply(caller, engine, request, speech)
    event = None
    try:
        with _speech_meter(caller, engine, request) as meter:
            event = meter.event
            with engine_errors_as_api(request_id=event.request_id):
                started = time.perf_counter()
                result = engine.tts(request, with_timestamps=with_timestamps)
                engine_ms = (time.perf_counter() - started) * 1000
            # Kept and settled together, before the client gets it: a client that times out
            # loses nothing it paid for.
            with kept_together() as saved:
                saved.append(
                    clip_keep(
                        caller,
                        kind="tts",
                        engine=engine.name,
                        audio=result.audio,
                        content_type=result.content_type or fmt.content_type,
                        recipe=speech_recipe(request, streamed=False, extra=speech.recipe_extra),
                        model_id=request.model_id,
                        voice_id=request.voice_id,
                        voice_name=voice_name,
                        text=request.text,
                        duration_seconds=audio_seconds(fmt, len(result.audio)),
                        usage_event=meter.event,
                    )
                )
                event = meter.settle(units=result.characters, info=result.info)
    except BudgetExceeded as exc:
        raise budget_refused(exc) from exc
    return Speech(
        audio=result.audio,
        content_type=result.content_type or fmt.content_type,
        alignment=result.alignment,
        normalized_alignment=result.normalized_alignment,
        request_id=event.request_id,
        credits=event.credits or Decimal(0),
        engine_ms=engine_ms,
    )


@dataclass
class PendingStream:
    """A streamed synthesis reserved and ready to open (see ``speak_stream_prepare``)."""

    caller: Caller
    engine: object
    request: TTSRequest
    fmt: OutputFormat
    meter: object
    exits: ExitStack  # holds the reservation: closing it refunds what was not settled
    encode: Callable[[object], bytes]
    with_timestamps: bool
    recipe_extra: dict | None = None
    voice_name: str = ""

    @property
    def streams_async(self) -> bool:
        return bool(getattr(self.engine, "streams_async", False))

    def _served(self, stream, *, engine_ms: float, is_async: bool) -> "SpeechStream":
        return SpeechStream(
            stream=stream,
            meter=self.meter,
            exits=self.exits,
            characters=len(self.request.text),
            fmt=self.fmt,
            encode=self.encode,
            engine_ms=engine_ms,
            is_async=is_async,
            keep=self._keep,
        )

    def _keep(self, audio: bytes, *, complete: bool, event) -> None:
        speech_keep(self, audio, complete=complete, event=event)

    def _release(self, exc: BaseException) -> None:
        """Refund the reservation, noting why the stream could not be opened."""
        self.exits.__exit__(type(exc), exc, exc.__traceback__)

    def open(self) -> "SpeechStream":
        """Open the engine stream here (sync); on failure the reservation is refunded."""
        try:
            with engine_errors_as_api(request_id=self.meter.event.request_id):
                started = time.perf_counter()
                stream = self.engine.tts_stream(self.request, with_timestamps=self.with_timestamps)
                engine_ms = (time.perf_counter() - started) * 1000
        except BaseException as exc:
            self._release(exc)
            raise
        return self._served(stream, engine_ms=engine_ms, is_async=False)

    async def open_async(self) -> "SpeechStream":
        """Open the engine's async stream on the event loop (``streams_async`` engines)."""
        try:
            with engine_errors_as_api(request_id=self.meter.event.request_id):
                started = time.perf_counter()
                stream = await self.engine.tts_stream_async(
                    self.request, with_timestamps=self.with_timestamps
                )
                engine_ms = (time.perf_counter() - started) * 1000
        except BaseException as exc:
            await thread_hop(self._release)(exc)
            raise
        return self._served(stream, engine_ms=engine_ms, is_async=True)


def speak_stream_prepare(
    *,
    caller: Caller,
    speech: SpeechInput,
    encode: Callable[[object], bytes],
    with_timestamps: bool = False,
) -> PendingStream:
    """Check and reserve a streamed synthesis (429 ``quota_exceeded`` when a budget refuses)."""
    request, fmt = _speech_request(speech, streaming=True)
    with engine_errors_as_api():
        engine = engine_of(caller)
    voice_name = _voice_apply(caller, engine, request, speech)
    try:
        with ExitStack() as exits:
            meter = exits.enter_context(_speech_meter(caller, engine, request))
            return PendingStream(
                caller=caller,
                engine=engine,
                request=request,
                fmt=fmt,
                meter=meter,
                exits=exits.pop_all(),  # the stream settles and closes the reservation
                encode=encode,
                with_timestamps=with_timestamps,
                recipe_extra=speech.recipe_extra,
                voice_name=voice_name,
            )
    except BudgetExceeded as exc:
        raise budget_refused(exc) from exc


def speak_stream(
    *,
    caller: Caller,
    speech: SpeechInput,
    encode: Callable[[object], bytes],
    with_timestamps: bool = False,
) -> "SpeechStream":
    """Start a metered streamed synthesis; ``encode`` turns each engine chunk into bytes.

    The reservation (checked against every budget) is made and the engine stream opened
    before this returns, so refusals and bad input are proper error responses; what the
    stream costs is settled when it ends (see ``SpeechStream``).
    """
    return speak_stream_prepare(
        caller=caller, speech=speech, encode=encode, with_timestamps=with_timestamps
    ).open()


def speech_keep(pending, audio: bytes, *, complete: bool, event) -> None:
    """Keep streamed speech as a ``Generation`` (what was delivered, with its recipe)."""
    if not audio:
        return
    request = pending.request
    try:
        clip_keep(
            pending.caller,
            kind="tts",
            engine=pending.engine.name,
            audio=audio,
            content_type=pending.fmt.content_type,
            recipe=speech_recipe(request, streamed=True, extra=pending.recipe_extra),
            model_id=request.model_id,
            voice_id=request.voice_id,
            voice_name=pending.voice_name,
            text=request.text,
            duration_seconds=audio_seconds(pending.fmt, len(audio)),
            usage_event=event,
            complete=complete,
        )
    except Exception:  # the client has its audio already; losing the copy is logged
        log.exception("keeping the streamed speech of %s failed", event.request_id)


def speech_recipe(request: TTSRequest, *, streamed: bool, extra: dict | None = None) -> dict:
    """Every parameter of a synthesis, as kept with its ``Generation`` (and ``extra``, the
    caller's context, under keys of its own: the call's parameters win)."""
    recipe = {
        **(extra or {}),
        "text": request.text,
        "voice_id": request.voice_id,
        "model_id": request.model_id,
        "output_format": request.output_format,
        "seed": request.seed,
        "language_code": request.language_code,
        "previous_text": request.previous_text,
        "next_text": request.next_text,
        "apply_text_normalization": request.apply_text_normalization,
        "voice_settings": (
            asdict(request.voice_settings) if request.voice_settings is not None else None
        ),
        "streamed": streamed,
    }
    return recipe


class SpeechStream:
    """An engine stream served to an HTTP client, settled exactly once however it ends.

    Iterated asynchronously (ASGI). An async engine stream (the ElevenLabs engine) is read
    on the event loop itself; a sync one (the local engine, which computes the audio) is
    pulled a chunk at a time in a hop to a thread (``asgi.thread_hop``), so a synthesis never
    blocks the loop; the hops follow one another, so the generator is never driven by two
    threads at once. When the response ends —
    complete, an engine error midway, or a client that went away — the engine stream is
    closed and the reservation settled with the delivered share of the characters (or
    refunded when no audio went out), and the delivered audio is kept as a ``Generation``.
    That runs from the iterator's ``finally`` (so before the response's last message) and,
    for a disconnect that cancels the response while a chunk is being sent, from Django's
    ``response.close()``; a second call does nothing. ``after_close`` callables (the
    member's concurrency slot) run at the end of ``close``, in the same hop.

    The delivered share: a stream that ended is the whole text; one cut short counts the
    characters of the alignments already sent when chunks carry them, else the characters
    the audio sent would hold at ``SPEECH_CHARACTERS_PER_SECOND`` (never more than the text).
    A chunk counts as delivered once the server has taken it (the iterator was resumed).
    """

    def __init__(
        self,
        *,
        stream,
        meter,
        exits: ExitStack,
        characters: int,
        fmt: OutputFormat,
        encode: Callable[[object], bytes],
        engine_ms: float,
        is_async: bool = False,
        keep: Callable | None = None,
    ):
        self._stream = stream
        self._is_async = is_async
        self._chunks = stream if is_async else iter(stream)
        self._meter = meter
        self._exits = exits
        self._characters = characters
        self._fmt = fmt
        self._encode = encode
        self._keep = keep
        self._audio: list[bytes] = []
        self.engine_ms = engine_ms
        self.request_id: str = meter.event.request_id
        self.estimated_credits: Decimal = meter.event.estimated_credits
        self.content_type = fmt.content_type
        self.ended = False  # the engine yielded everything
        self.closed = False
        self.delivered_bytes = 0
        self.delivered_characters = 0  # from chunk alignments, when present
        self.after_close: list[Callable[[], None]] = []

    def _next(self):
        try:
            return next(self._chunks)
        except StopIteration:
            self.ended = True
        except EngineError as exc:
            log.warning("stream %s broke off: %s", self.request_id, exc.message)
        return None

    async def _anext(self):
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self.ended = True
        except EngineError as exc:
            log.warning("stream %s broke off: %s", self.request_id, exc.message)
        return None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                if self._is_async:
                    chunk = await self._anext()
                else:
                    chunk = await thread_hop(self._next)()
                if chunk is None:
                    break
                yield self._encode(chunk)
                self.delivered_bytes += len(chunk.audio)
                self._audio.append(chunk.audio)
                if chunk.alignment is not None:
                    self.delivered_characters += len(chunk.alignment.characters)
        finally:
            # Settled before the response's last message: a client that has the whole
            # stream finds it in the ledger and its history.
            if not self.closed:
                if self._is_async and not self.ended:
                    try:
                        await self._stream.aclose()
                    except Exception:
                        log.exception("closing the engine stream of %s failed", self.request_id)
                await thread_hop(self.close)()

    def delivered_units(self) -> int:
        if self.ended:
            return self._characters
        if self.delivered_characters:
            return min(self._characters, self.delivered_characters)
        seconds = audio_seconds(self._fmt, self.delivered_bytes)
        return min(self._characters, math.ceil(seconds * SPEECH_CHARACTERS_PER_SECOND))

    def close(self) -> None:
        """Stop the synthesis if it still runs, then settle (or refund) the reservation."""
        if self.closed:
            return
        self.closed = True
        try:
            if not self.ended and not self._is_async:
                self._stream.close()
            elif not self.ended and not self._stream.closed:
                async_to_sync(self._stream.aclose)()
        except Exception:
            log.exception("closing the engine stream of %s failed", self.request_id)
        try:
            if self.delivered_bytes or self.delivered_characters:
                event = self._meter.settle(units=self.delivered_units(), info=self._stream.info)
                if self._keep is not None:
                    self._keep(b"".join(self._audio), complete=self.ended, event=event)
        finally:
            try:
                self._exits.close()  # metering: refunds what was not settled
            finally:
                for after in self.after_close:
                    after()


def audio_seconds(fmt: OutputFormat, size: int) -> float:
    """How long ``size`` bytes of audio in ``fmt`` play (headers and framing ignored)."""
    if fmt.codec in ("pcm", "wav"):
        return size / (2 * fmt.sample_rate)
    if fmt.codec in ("ulaw", "alaw"):
        return size / fmt.sample_rate
    return size * 8 / ((fmt.bitrate_kbps or 128) * 1000)
