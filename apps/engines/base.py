"""The engine interface: plain dataclasses in and out, typed errors, one method per capability.

Engines know nothing of Django: services translate models to these dataclasses and back.
Every result carries a ``CallInfo`` with the provider's request id and cost when known.
A capability an engine lacks raises ``NotSupported`` with a reason people can read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

# --- Errors -----------------------------------------------------------------------------


class EngineError(Exception):
    """Base of every engine error. ``message`` is safe to show to people."""

    status_code = 500
    code = "engine_error"

    def __init__(self, message: str, *, request_id: str | None = None, upstream_status=None):
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.upstream_status = upstream_status


class NotSupported(EngineError):
    """This engine cannot do this; ``message`` says why (shown to users as is)."""

    status_code = 400
    code = "not_supported"


class InvalidRequest(EngineError):
    """Bad input. ``fields`` maps a request field to its messages (``"__all__"`` for general)."""

    status_code = 422
    code = "invalid_request"

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.fields = fields or {}

    @classmethod
    def for_field(cls, name: str, message: str) -> InvalidRequest:
        return cls(message, fields={name: [message]})


class AuthenticationFailed(EngineError):
    status_code = 401
    code = "authentication_failed"


class QuotaExceeded(EngineError):
    status_code = 429
    code = "quota_exceeded"


class RateLimited(EngineError):
    """Too many requests or concurrent requests, or the provider is busy; try again later."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class UpstreamUnavailable(EngineError):
    """The provider did not answer, or answered with a server error, after retries."""

    status_code = 503
    code = "upstream_unavailable"


# --- Output formats ---------------------------------------------------------------------

MP3_FORMATS = (
    "mp3_22050_32",
    "mp3_24000_48",
    "mp3_44100_32",
    "mp3_44100_64",
    "mp3_44100_96",
    "mp3_44100_128",
    "mp3_44100_192",
)
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_FORMATS = tuple(f"opus_48000_{b}" for b in (32, 64, 96, 128, 192))
OUTPUT_FORMATS = (
    *MP3_FORMATS,
    *(f"pcm_{r}" for r in PCM_RATES),
    *(f"wav_{r}" for r in PCM_RATES),
    "ulaw_8000",
    "alaw_8000",
    *OPUS_FORMATS,
)
DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"

CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "ulaw": "audio/basic",
    "alaw": "audio/basic",
    "opus": "audio/ogg",
}


@dataclass(frozen=True)
class OutputFormat:
    """A parsed ``output_format`` such as ``mp3_44100_128``: codec, sample rate, bitrate."""

    name: str
    codec: str  # mp3, pcm, wav, ulaw, alaw, opus
    sample_rate: int
    bitrate_kbps: int | None

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.codec]

    @property
    def extension(self) -> str:
        return {"pcm": "pcm", "ulaw": "ulaw", "alaw": "alaw", "opus": "ogg"}.get(
            self.codec, self.codec
        )

    @classmethod
    def parse(cls, value: str | None) -> OutputFormat:
        name = value or DEFAULT_OUTPUT_FORMAT
        if name not in OUTPUT_FORMATS:
            raise InvalidRequest.for_field(
                "output_format",
                f"Unknown output_format {name!r}. Use one of: {', '.join(OUTPUT_FORMATS)}.",
            )
        parts = name.split("_")
        bitrate = int(parts[2]) if len(parts) > 2 else None
        return cls(name=name, codec=parts[0], sample_rate=int(parts[1]), bitrate_kbps=bitrate)


# --- Common -----------------------------------------------------------------------------


@dataclass
class CallInfo:
    """What the provider said about one call (headers), and how the call went."""

    request_id: str | None = None
    character_cost: float | None = None  # credits charged upstream, when reported
    history_item_id: str | None = None
    current_concurrent_requests: int | None = None
    maximum_concurrent_requests: int | None = None
    attempts: int = 1
    latency_ms: float | None = None
    engine: str = ""
    model_id: str | None = None


@dataclass
class AudioResult:
    """Audio bytes in a given output format (sound effects, music, previews, dubs)."""

    audio: bytes
    output_format: str
    content_type: str
    duration_secs: float | None = None
    info: CallInfo = field(default_factory=CallInfo)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. song_id, recipe


# --- Text to speech ---------------------------------------------------------------------


@dataclass
class VoiceSettings:
    stability: float = 0.5
    similarity_boost: float = 0.75
    style: float = 0.0
    use_speaker_boost: bool = True
    speed: float = 1.0


@dataclass
class TTSRequest:
    text: str
    voice_id: str
    model_id: str = "eleven_multilingual_v2"
    voice_settings: VoiceSettings | None = None
    output_format: str = DEFAULT_OUTPUT_FORMAT
    seed: int | None = None
    language_code: str | None = None
    previous_text: str | None = None
    next_text: str | None = None
    apply_text_normalization: str = "auto"
    # A designed or cloned voice of the local engine is a recipe the voices app stores and
    # hands over with each request (the engine keeps no state of its own).
    voice_recipe: dict[str, Any] | None = None
    # Pronunciation rules (``apps.engines.pronunciation.PronunciationRule``) applied to this
    # render: alias rules respell the text, phoneme rules say a word as given phonemes.
    pronunciation_rules: tuple = ()


@dataclass
class Alignment:
    characters: list[str]
    character_start_times_seconds: list[float]
    character_end_times_seconds: list[float]


@dataclass
class TTSResult:
    audio: bytes
    output_format: str
    content_type: str
    characters: int  # billable characters (len of the input text)
    duration_secs: float | None = None
    alignment: Alignment | None = None
    normalized_alignment: Alignment | None = None
    info: CallInfo = field(default_factory=CallInfo)


@dataclass
class TTSChunk:
    """One piece of a streamed TTS response; ``alignment`` covers this chunk's characters."""

    audio: bytes
    alignment: Alignment | None = None
    normalized_alignment: Alignment | None = None


class TTSStream:
    """A streamed synthesis: iterate for chunks; ``info`` is filled once the call started.

    ``close()`` stops the synthesis (a client that disconnected); ``delivered_bytes`` tells
    how much audio reached the caller, for settling what a partial stream costs.
    """

    def __init__(self, chunks: Iterator[TTSChunk], *, info: CallInfo, output_format: str):
        self._chunks = chunks
        self.info = info
        self.output_format = output_format
        self.delivered_bytes = 0
        self.closed = False

    def __iter__(self) -> Iterator[TTSChunk]:
        finished = False
        try:
            for chunk in self._chunks:
                if self.closed:
                    break
                self.delivered_bytes += len(chunk.audio)
                yield chunk
            finished = True
        finally:
            # A caller that stopped reading (break, disconnect, exception) stops the synthesis
            # and releases its connection, without having to call close() itself.
            if not finished and not self.closed:
                self.close()

    def close(self) -> None:
        self.closed = True
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


# --- Speech to text ---------------------------------------------------------------------


# ElevenLabs' rule for ``keyterms`` (the API reference of /v1/speech-to-text), which every
# engine and every caller applies through ``keyterms_checked``.
MAX_KEYTERMS = 1000
KEYTERM_MAX_CHARS = 49  # "less than 50 characters"
KEYTERM_MAX_WORDS = 5
KEYTERM_FORBIDDEN = "<>{}[]\\"


def keyterms_checked(keyterms: list[str] | None) -> list[str]:
    """Key terms as ElevenLabs takes them, or ``InvalidRequest`` on ``keyterms``: at most
    1000, each non-empty, under 50 characters and at most 5 words once its spaces are
    normalised, none of ``< > { } [ ] \\``. Returns them normalised (spaces collapsed),
    duplicates dropped."""
    terms = [" ".join(str(t).split()) for t in (keyterms or [])]
    errors: list[str] = []
    if len(terms) > MAX_KEYTERMS:
        errors.append(f"Use at most {MAX_KEYTERMS} key terms ({len(terms)} given).")
    for term in terms:
        if not term:
            errors.append("A key term cannot be empty.")
        elif len(term) > KEYTERM_MAX_CHARS:
            errors.append(
                f"A key term has fewer than {KEYTERM_MAX_CHARS + 1} characters: "
                f"“{term[:30]}…” has {len(term)}."
            )
        elif len(term.split()) > KEYTERM_MAX_WORDS:
            errors.append(f"A key term has at most {KEYTERM_MAX_WORDS} words: “{term}”.")
        elif any(c in KEYTERM_FORBIDDEN for c in term):
            errors.append(f"Key terms cannot contain < > {{ }} [ ] or \\: “{term}”.")
        if len(errors) >= 10:  # enough to act on
            break
    if errors:
        raise InvalidRequest(errors[0], fields={"keyterms": errors})
    return list(dict.fromkeys(terms))


@dataclass
class STTRequest:
    # The upload: its bytes, a path to it, or an open binary file (read, seekable); engines
    # read a path or a file as they go, never whole into memory.
    audio: bytes | str | os.PathLike | BinaryIO
    filename: str = "audio"
    model_id: str = "scribe_v1"
    language_code: str | None = None
    tag_audio_events: bool = True
    num_speakers: int | None = None
    timestamps_granularity: str = "word"  # none | word | character
    diarize: bool = False
    keyterms: list[str] = field(default_factory=list)
    no_verbatim: bool = False
    entity_detection: list[str] | None = None  # categories or entity types, or ["all"]
    entity_redaction: list[str] | None = None
    entity_redaction_mode: str = "enumerated_entity_type"
    temperature: float | None = None
    seed: int | None = None
    file_format: str = "other"  # or pcm_s16le_16
    # Called with the share done (0..1) by engines that work in steps (the local engine
    # transcribes long recordings in chunks); never sent anywhere.
    progress: Callable[[float], None] | None = field(default=None, repr=False, compare=False)


@dataclass
class Word:
    text: str
    start: float | None
    end: float | None
    type: str = "word"  # word | spacing | audio_event
    speaker_id: str | None = None
    logprob: float = 0.0
    characters: list[dict[str, Any]] | None = None


@dataclass
class Entity:
    text: str
    entity_type: str  # e.g. email_address, phone_number, credit_card, iban, address
    start_char: int
    end_char: int


@dataclass
class Transcript:
    language_code: str
    language_probability: float
    text: str
    words: list[Word]
    audio_duration_secs: float
    entities: list[Entity] = field(default_factory=list)
    transcription_id: str | None = None
    info: CallInfo = field(default_factory=CallInfo)


@dataclass
class RealtimeEvent:
    """``partial_transcript``, ``committed_transcript``, ``committed_transcript_with_timestamps``
    or ``error``; times are seconds from the start of the session's audio."""

    message_type: str
    text: str = ""
    words: list[Word] = field(default_factory=list)
    start: float | None = None
    end: float | None = None
    error: str | None = None


class RealtimeSTTSession:
    """Takes 16 kHz mono s16le PCM chunks, yields partial then committed transcripts."""

    sample_rate = 16000

    def send_audio(self, pcm: bytes) -> list[RealtimeEvent]:
        raise NotImplementedError

    def commit(self) -> list[RealtimeEvent]:
        raise NotImplementedError

    def close(self) -> list[RealtimeEvent]:
        return []


# --- Voices -----------------------------------------------------------------------------


@dataclass
class Voice:
    voice_id: str
    name: str
    category: str = "premade"  # premade | cloned | generated | professional
    labels: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    preview_url: str | None = None
    settings: VoiceSettings | None = None
    engine: str = ""
    recipe: dict[str, Any] | None = None  # local engine: how to render this voice
    created_at_unix: int | None = None


@dataclass
class VoiceQuery:
    search: str | None = None
    page_size: int = 10
    next_page_token: str | None = None
    category: str | None = None
    sort: str | None = None  # created_at_unix | name
    sort_direction: str | None = None  # asc | desc


@dataclass
class VoicePage:
    voices: list[Voice]
    has_more: bool
    total_count: int
    next_page_token: str | None = None
    info: CallInfo = field(default_factory=CallInfo)


@dataclass
class CloneRequest:
    name: str
    # (filename, its bytes or an open binary file, read as it goes)
    samples: list[tuple[str, bytes | BinaryIO]]
    description: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    remove_background_noise: bool = False


@dataclass
class DesignRequest:
    voice_description: str
    text: str | None = None
    auto_generate_text: bool = False
    model_id: str = "eleven_multilingual_ttv_v2"
    guidance_scale: float = 5.0
    loudness: float = 0.5
    seed: int | None = None
    output_format: str = DEFAULT_OUTPUT_FORMAT


@dataclass
class DesignPreview:
    generated_voice_id: str
    audio: bytes
    media_type: str
    duration_secs: float
    language: str | None = None
    recipe: dict[str, Any] | None = None


@dataclass
class DesignResult:
    previews: list[DesignPreview]
    text: str
    info: CallInfo = field(default_factory=CallInfo)


@dataclass
class SaveDesignRequest:
    generated_voice_id: str
    voice_name: str
    voice_description: str
    labels: dict[str, str] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None  # local engine: the preview's recipe


# --- Sound, music, dubbing --------------------------------------------------------------


@dataclass
class SoundRequest:
    text: str
    duration_seconds: float | None = None  # 0.5..30; None: chosen from the prompt
    prompt_influence: float = 0.3
    loop: bool = False
    output_format: str = DEFAULT_OUTPUT_FORMAT
    seed: int | None = None
    model_id: str = "eleven_text_to_sound_v2"


@dataclass
class MusicRequest:
    prompt: str
    music_length_ms: int | None = None  # 3,000..600,000
    output_format: str = DEFAULT_OUTPUT_FORMAT
    seed: int | None = None
    force_instrumental: bool = False
    model_id: str = "music_v1"


@dataclass
class DubbingRequest:
    audio: bytes
    filename: str
    target_lang: str
    source_lang: str = "auto"
    num_speakers: int = 0
    name: str | None = None


@dataclass
class DubbingStatus:
    dubbing_id: str
    name: str
    status: str  # dubbing | dubbed | failed
    target_languages: list[str]
    source_language: str | None = None
    expected_duration_sec: float | None = None
    error: str | None = None
    info: CallInfo = field(default_factory=CallInfo)


# --- Account ----------------------------------------------------------------------------


@dataclass
class ModelInfo:
    model_id: str
    name: str
    can_do_text_to_speech: bool = True
    can_do_voice_conversion: bool = False
    can_use_style: bool = True
    can_use_speaker_boost: bool = True
    maximum_text_length_per_request: int = 10_000
    languages: list[dict[str, str]] = field(default_factory=list)
    description: str = ""
    token_cost_factor: float = 1.0


@dataclass
class Subscription:
    tier: str
    character_count: int
    character_limit: int
    next_character_count_reset_unix: int | None = None
    status: str = "active"
    currency: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    info: CallInfo = field(default_factory=CallInfo)


@dataclass
class UserInfo:
    user_id: str
    subscription: Subscription
    first_name: str | None = None
    info: CallInfo = field(default_factory=CallInfo)


@dataclass
class HistoryItem:
    history_item_id: str
    voice_id: str | None
    voice_name: str | None
    text: str | None
    date_unix: int
    model_id: str | None = None
    character_count_change_from: int = 0
    character_count_change_to: int = 0
    content_type: str | None = None
    state: str | None = None
    request_id: str | None = None  # the ``request-id`` the generating call answered with
    source: str | None = None  # TTS, STS, Projects, Dubbing…


@dataclass
class HistoryPage:
    items: list[HistoryItem]
    has_more: bool
    last_history_item_id: str | None = None
    info: CallInfo = field(default_factory=CallInfo)


@dataclass
class UsageStats:
    """``GET /v1/usage/character-stats``: a time axis (Unix milliseconds, the start of each
    bucket) and one series per breakdown key, each as long as the axis."""

    time: list[int]
    usage: dict[str, list[float]]
    info: CallInfo = field(default_factory=CallInfo)


# --- The interface ----------------------------------------------------------------------


class Engine:
    """One provider of every capability. Methods an engine lacks raise ``NotSupported``.

    Implementations load their models once per process and reuse them; nothing heavy happens
    per request beyond the work itself.
    """

    name = "engine"
    label = "Engine"

    def _unsupported(self, what: str):
        raise NotSupported(f"The {self.label} engine cannot {what}.")

    # Text to speech
    def tts(self, request: TTSRequest, *, with_timestamps: bool = False) -> TTSResult:
        self._unsupported("speak text")

    def tts_stream(self, request: TTSRequest, *, with_timestamps: bool = False) -> TTSStream:
        self._unsupported("stream speech")

    # Speech to text
    def stt(self, request: STTRequest) -> Transcript:
        self._unsupported("transcribe audio")

    def stt_realtime(self, *, language_code: str | None = None, **options) -> RealtimeSTTSession:
        self._unsupported("transcribe live audio")

    # Voices
    def voices(self, query: VoiceQuery) -> VoicePage:
        self._unsupported("list voices")

    def voice(self, voice_id: str) -> Voice:
        self._unsupported("look up a voice")

    def voice_delete(self, voice_id: str) -> None:
        self._unsupported("delete voices")

    def voice_clone(self, request: CloneRequest) -> Voice:
        self._unsupported("clone voices")

    def voice_design(self, request: DesignRequest) -> DesignResult:
        self._unsupported("design voices")

    def voice_design_save(self, request: SaveDesignRequest) -> Voice:
        self._unsupported("save designed voices")

    def voice_design_stream(self, generated_voice_id: str, *, recipe=None) -> Iterator[bytes]:
        self._unsupported("stream voice previews")

    # Sound, music, dubbing
    def sound_effect(self, request: SoundRequest) -> AudioResult:
        self._unsupported("generate sound effects")

    def music(self, request: MusicRequest) -> AudioResult:
        self._unsupported("compose music")

    def dubbing_start(self, request: DubbingRequest) -> DubbingStatus:
        self._unsupported("dub audio")

    def dubbing_status(self, dubbing_id: str) -> DubbingStatus:
        self._unsupported("dub audio")

    def dubbing_audio(self, dubbing_id: str, language_code: str) -> AudioResult:
        self._unsupported("dub audio")

    def dubbing_transcript(self, dubbing_id: str, language_code: str, fmt: str = "srt") -> str:
        self._unsupported("dub audio")

    # Account
    def models(self) -> list[ModelInfo]:
        self._unsupported("list models")

    def user(self) -> UserInfo:
        self._unsupported("describe the account")

    def subscription(self) -> Subscription:
        self._unsupported("describe the subscription")

    def history(self, *, page_size: int = 100, start_after: str | None = None) -> HistoryPage:
        self._unsupported("list history")

    # Conversational AI: the provider's own agents (``conversation_config`` and the other
    # bodies are the official JSON of ``/v1/convai/agents``)
    def convai_agent_create(
        self, *, name: str, conversation_config: dict, platform_settings: dict | None = None,
        tags: list[str] | None = None,
    ) -> str:  # fmt: skip
        self._unsupported("run voice agents")

    def convai_agent_update(
        self, agent_id: str, *, name: str | None = None, conversation_config: dict | None = None,
        platform_settings: dict | None = None, tags: list[str] | None = None,
    ) -> None:  # fmt: skip
        self._unsupported("run voice agents")

    def convai_agent_delete(self, agent_id: str) -> None:
        self._unsupported("run voice agents")

    def convai_knowledge_base_create_text(self, *, text: str, name: str | None = None) -> str:
        self._unsupported("run voice agents")

    def convai_knowledge_base_get(self, documentation_id: str) -> dict:
        self._unsupported("run voice agents")

    def convai_knowledge_base_delete(self, documentation_id: str, *, force: bool = False) -> None:
        self._unsupported("run voice agents")

    def convai_conversation(self, agent_id: str, *, initiation: dict):
        """An open conversation with the provider's agent (``elevenlabs.convai.ConvaiSocket``)."""
        self._unsupported("run voice agents")
