"""The local engine: every capability it has offline, behind the one engine interface.

Speech comes from ``tts`` (Piper and espeak-ng), transcription from ``stt`` (faster-whisper
and pocketsphinx). Models load once per process, on first use. ElevenLabs model ids are
accepted and mapped to the local default so code written for ElevenLabs runs unchanged.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

from apps.engines.base import (
    AudioResult,
    CallInfo,
    CloneRequest,
    DesignRequest,
    DesignResult,
    DubbingRequest,
    DubbingStatus,
    Engine,
    InvalidRequest,
    ModelInfo,
    MusicRequest,
    RealtimeSTTSession,
    SaveDesignRequest,
    SoundRequest,
    STTRequest,
    Subscription,
    Transcript,
    TTSRequest,
    TTSResult,
    TTSStream,
    UserInfo,
    Voice,
    VoicePage,
    VoiceQuery,
)

LOCAL_TTS_MODEL = "local_tts_v1"
LOCAL_STT_MODEL = "local_stt_v1"

# ElevenLabs ids that local runs map to its default, so SDK code works unchanged.
ELEVENLABS_TTS_MODELS = (
    "eleven_v3",
    "eleven_multilingual_v2",
    "eleven_flash_v2_5",
    "eleven_flash_v2",
    "eleven_turbo_v2_5",
    "eleven_turbo_v2",
    "eleven_multilingual_v1",
    "eleven_monolingual_v1",
)
MAX_TEXT = 10_000


class LocalEngine(Engine):
    name = "local"
    label = "local"

    # Text to speech
    def tts(self, request: TTSRequest, *, with_timestamps: bool = False) -> TTSResult:
        from . import tts

        return tts.synthesize(request, with_timestamps=with_timestamps)

    def tts_stream(self, request: TTSRequest, *, with_timestamps: bool = False) -> TTSStream:
        from . import tts

        return tts.synthesize_stream(request, with_timestamps=with_timestamps)

    # Speech to text
    def stt(self, request: STTRequest) -> Transcript:
        from . import stt

        return stt.transcribe(request)

    def stt_realtime(self, *, language_code: str | None = None, **options) -> RealtimeSTTSession:
        from . import stt

        return stt.RealtimeSession(language_code=language_code, **options)

    # Voices
    def _catalogue(self) -> list[Voice]:
        from . import tts

        return tts.list_voices()

    def voices(self, query: VoiceQuery) -> VoicePage:
        voices = self._catalogue()
        if query.search:
            needle = query.search.lower()
            voices = [
                v
                for v in voices
                if needle in v.name.lower()
                or needle in (v.description or "").lower()
                or any(needle in str(value).lower() for value in v.labels.values())
            ]
        if query.category:
            voices = [v for v in voices if v.category == query.category]
        if query.sort == "name":
            voices.sort(key=lambda v: v.name.lower(), reverse=query.sort_direction == "desc")
        size = max(1, min(100, query.page_size or 10))
        try:
            start = int(query.next_page_token or 0)
        except ValueError as exc:
            raise InvalidRequest.for_field("next_page_token", "Invalid page token.") from exc
        page = voices[start : start + size]
        more = start + size < len(voices)
        return VoicePage(
            voices=page,
            has_more=more,
            total_count=len(voices),
            next_page_token=str(start + size) if more else None,
            info=_info(),
        )

    def voice(self, voice_id: str) -> Voice:
        for voice in self._catalogue():
            if voice.voice_id == voice_id:
                return voice
        raise InvalidRequest.for_field(
            "voice_id", f"Voice '{voice_id}' does not exist in the local engine."
        )

    def voice_clone(self, request: CloneRequest) -> Voice:
        from . import design

        return design.clone(request)

    def voice_design(self, request: DesignRequest) -> DesignResult:
        from . import design

        return design.design(request)

    def voice_design_save(self, request: SaveDesignRequest) -> Voice:
        from . import design

        return design.save(request)

    def voice_design_stream(self, generated_voice_id: str, *, recipe=None) -> Iterator[bytes]:
        from . import design

        return design.stream_preview(generated_voice_id, recipe=recipe)

    # Sound and music
    def sound_effect(self, request: SoundRequest) -> AudioResult:
        from . import synth

        return synth.sound_effect(request)

    def music(self, request: MusicRequest) -> AudioResult:
        from . import synth

        return synth.music(request)

    # Dubbing (a re-voicing: the local engine cannot translate)
    def dubbing_start(self, request: DubbingRequest) -> DubbingStatus:
        from . import dubbing

        return dubbing.dub(request).status

    def dubbing_status(self, dubbing_id: str) -> DubbingStatus:
        from . import dubbing

        return dubbing.get(dubbing_id).status

    def dubbing_audio(self, dubbing_id: str, language_code: str) -> AudioResult:
        from . import dubbing

        found = dubbing.get(dubbing_id)
        if language_code.lower().split("-")[0] not in found.status.target_languages:
            raise InvalidRequest.for_field(
                "language_code", f"This dub has no {language_code!r} track."
            )
        return AudioResult(
            audio=found.audio,
            output_format="mp3_44100_128",
            content_type="audio/mpeg",
            info=_info(),
            extra={"voices": found.voices},
        )

    def dubbing_transcript(self, dubbing_id: str, language_code: str, fmt: str = "srt") -> str:
        from . import dubbing

        return dubbing.transcript(dubbing_id, language_code, fmt)

    # Account
    def models(self) -> list[ModelInfo]:
        languages = sorted({v.labels.get("language", "en") for v in self._catalogue()} | {"en"})
        langs = [{"language_id": code, "name": code} for code in languages]
        return [
            ModelInfo(
                model_id=LOCAL_TTS_MODEL,
                name="Local TTS (Piper + espeak-ng)",
                description="Offline speech on this server; ElevenLabs model ids map here.",
                maximum_text_length_per_request=MAX_TEXT,
                languages=langs,
                token_cost_factor=0.0,
            ),
            *(
                ModelInfo(
                    model_id=model_id,
                    name=f"{model_id} (local stand-in)",
                    description="Accepted for compatibility; rendered by the local engine.",
                    maximum_text_length_per_request=MAX_TEXT,
                    languages=langs,
                    token_cost_factor=0.0,
                )
                for model_id in ELEVENLABS_TTS_MODELS
            ),
        ]

    def subscription(self) -> Subscription:
        # A virtual plan: the local engine costs nothing. Billing (a later issue) makes its
        # limits configurable per workspace.
        return Subscription(
            tier="local",
            character_count=0,
            character_limit=0,
            next_character_count_reset_unix=None,
            status="active",
            info=_info(),
        )

    def user(self) -> UserInfo:
        return UserInfo(
            user_id="local", first_name="Local engine", subscription=self.subscription()
        )


def _info() -> CallInfo:
    return CallInfo(request_id=uuid.uuid4().hex, character_cost=0.0, engine="local")


_engine: LocalEngine | None = None
_lock = threading.Lock()


def local_engine() -> LocalEngine:
    """The process-wide local engine (its models load lazily, once)."""
    global _engine
    with _lock:
        if _engine is None:
            _engine = LocalEngine()
        return _engine
