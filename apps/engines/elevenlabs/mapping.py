"""ElevenLabs JSON in, base.py dataclasses out (and request dataclasses to wire fields).

Responses are read leniently, as the official SDK does: a missing optional field becomes the
dataclass default rather than an error.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from apps.engines.base import (
    Alignment,
    CallInfo,
    DesignPreview,
    DubbingStatus,
    Entity,
    HistoryItem,
    HistoryPage,
    ModelInfo,
    OutputFormat,
    STTRequest,
    Subscription,
    Transcript,
    TTSChunk,
    TTSRequest,
    UpstreamUnavailable,
    UsageStats,
    UserInfo,
    Voice,
    VoiceSettings,
    Word,
)

ENGINE = "elevenlabs"


# --- Headers ----------------------------------------------------------------------------


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def call_info(
    headers: Mapping[str, str], *, attempts: int, latency_ms: float, model_id: str | None
) -> CallInfo:
    """What the response headers say about the call (API notes §1.4)."""
    return CallInfo(
        request_id=headers.get("request-id"),
        character_cost=_float(headers.get("character-cost")),
        history_item_id=headers.get("history-item-id"),
        current_concurrent_requests=_int(headers.get("current-concurrent-requests")),
        maximum_concurrent_requests=_int(headers.get("maximum-concurrent-requests")),
        attempts=attempts,
        latency_ms=round(latency_ms, 1),
        engine=ENGINE,
        model_id=model_id,
    )


# --- Requests ---------------------------------------------------------------------------


def tts_body(request: TTSRequest, locators: list[dict] | None = None) -> dict[str, Any]:
    """The JSON body of the four TTS endpoints; unset optional fields are left out.

    ``locators``: the uploaded pronunciation dictionaries of the request's rules."""
    body: dict[str, Any] = {"text": request.text, "model_id": request.model_id}
    if request.voice_settings is not None:
        vs = request.voice_settings
        body["voice_settings"] = {
            "stability": vs.stability,
            "similarity_boost": vs.similarity_boost,
            "style": vs.style,
            "use_speaker_boost": vs.use_speaker_boost,
            "speed": vs.speed,
        }
    for name in ("seed", "language_code", "previous_text", "next_text"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    body["apply_text_normalization"] = request.apply_text_normalization
    if locators:
        body["pronunciation_dictionary_locators"] = locators
    return body


def form_bool(value: bool) -> str:
    return "true" if value else "false"


def stt_form(request: STTRequest) -> dict[str, Any]:
    """Multipart fields of ``POST /v1/speech-to-text`` (the file part is added by the caller).

    Booleans go as ``true``/``false``, keyterms as repeated fields, entity options JSON-encoded,
    as the current SDK sends them. ``no_verbatim`` is only sent when set, because older models
    reject it.
    """
    form: dict[str, Any] = {
        "model_id": request.model_id,
        "tag_audio_events": form_bool(request.tag_audio_events),
        "timestamps_granularity": request.timestamps_granularity,
        "diarize": form_bool(request.diarize),
        "file_format": request.file_format,
    }
    if request.language_code:
        form["language_code"] = request.language_code
    if request.num_speakers is not None:
        form["num_speakers"] = str(request.num_speakers)
    if request.keyterms:
        form["keyterms"] = list(request.keyterms)
    if request.no_verbatim:
        form["no_verbatim"] = "true"
    if request.entity_detection is not None:
        form["entity_detection"] = json.dumps(list(request.entity_detection))
    if request.entity_redaction is not None:
        form["entity_redaction"] = json.dumps(list(request.entity_redaction))
        form["entity_redaction_mode"] = request.entity_redaction_mode
    if request.temperature is not None:
        form["temperature"] = str(request.temperature)
    if request.seed is not None:
        form["seed"] = str(request.seed)
    return form


# --- Audio ------------------------------------------------------------------------------


def audio_duration(audio: bytes, fmt: OutputFormat) -> float | None:
    """Seconds of audio, exact for PCM-like formats, estimated for constant-bitrate MP3."""
    if not audio:
        return 0.0
    if fmt.codec == "pcm":
        return round(len(audio) / (2 * fmt.sample_rate), 3)
    if fmt.codec in ("ulaw", "alaw"):
        return round(len(audio) / fmt.sample_rate, 3)
    if fmt.codec == "wav":
        return round(max(0, len(audio) - 44) / (2 * fmt.sample_rate), 3)
    if fmt.codec == "mp3" and fmt.bitrate_kbps:
        return round(len(audio) * 8 / (fmt.bitrate_kbps * 1000), 3)
    return None


def alignment(data: Any) -> Alignment | None:
    if not isinstance(data, dict):
        return None
    return Alignment(
        characters=list(data.get("characters") or []),
        character_start_times_seconds=[
            float(t) for t in data.get("character_start_times_seconds") or []
        ],
        character_end_times_seconds=[
            float(t) for t in data.get("character_end_times_seconds") or []
        ],
    )


def decode_b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(value or "")
    except (ValueError, TypeError) as exc:
        raise UpstreamUnavailable(f"ElevenLabs sent unreadable {what} audio.") from exc


def timestamp_chunk(data: dict[str, Any]) -> TTSChunk:
    """One ``/with-timestamps`` object or ``/stream/with-timestamps`` line."""
    return TTSChunk(
        audio=decode_b64(data.get("audio_base64"), "speech"),
        alignment=alignment(data.get("alignment")),
        normalized_alignment=alignment(data.get("normalized_alignment")),
    )


def merge_alignments(parts: list[Alignment | None]) -> Alignment | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return Alignment(
        characters=[c for p in present for c in p.characters],
        character_start_times_seconds=[t for p in present for t in p.character_start_times_seconds],
        character_end_times_seconds=[t for p in present for t in p.character_end_times_seconds],
    )


# --- Voices -----------------------------------------------------------------------------


def voice_settings(data: Any) -> VoiceSettings | None:
    if not isinstance(data, dict):
        return None
    defaults = VoiceSettings()
    return VoiceSettings(
        stability=_num(data.get("stability"), defaults.stability),
        similarity_boost=_num(data.get("similarity_boost"), defaults.similarity_boost),
        style=_num(data.get("style"), defaults.style),
        use_speaker_boost=bool(data.get("use_speaker_boost", defaults.use_speaker_boost)),
        speed=_num(data.get("speed"), defaults.speed),
    )


def _num(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) else default


def voice(data: dict[str, Any]) -> Voice:
    labels = data.get("labels") or {}
    return Voice(
        voice_id=str(data.get("voice_id", "")),
        name=str(data.get("name") or ""),
        category=str(data.get("category") or "premade"),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        description=data.get("description"),
        preview_url=data.get("preview_url"),
        settings=voice_settings(data.get("settings")),
        engine=ENGINE,
        created_at_unix=data.get("created_at_unix"),
    )


def design_preview(data: dict[str, Any]) -> DesignPreview:
    return DesignPreview(
        generated_voice_id=str(data.get("generated_voice_id", "")),
        audio=decode_b64(data.get("audio_base_64"), "preview"),
        media_type=str(data.get("media_type") or "audio/mpeg"),
        duration_secs=float(data.get("duration_secs") or 0.0),
        language=data.get("language"),
    )


# --- Speech to text ---------------------------------------------------------------------


def word(data: dict[str, Any]) -> Word:
    return Word(
        text=str(data.get("text", "")),
        start=opt_float(data.get("start")),
        end=opt_float(data.get("end")),
        type=str(data.get("type") or "word"),
        speaker_id=data.get("speaker_id"),
        logprob=float(data.get("logprob") or 0.0),
        characters=data.get("characters"),
    )


def opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def transcript(data: dict[str, Any], info: CallInfo) -> Transcript:
    """A single-channel transcript; a multichannel one is joined channel after channel."""
    chunks = data.get("transcripts") if isinstance(data.get("transcripts"), list) else [data]
    first = chunks[0] if chunks else {}
    words = [word(w) for chunk in chunks for w in chunk.get("words") or []]
    entities = [
        Entity(
            text=str(e.get("text", "")),
            entity_type=str(e.get("entity_type", "")),
            start_char=int(e.get("start_char") or 0),
            end_char=int(e.get("end_char") or 0),
        )
        for chunk in chunks
        for e in chunk.get("entities") or []
    ]
    duration = data.get("audio_duration_secs")
    if duration is None:
        ends = [w.end for w in words if w.end is not None]
        duration = max(ends) if ends else 0.0
    return Transcript(
        language_code=str(first.get("language_code") or ""),
        language_probability=float(first.get("language_probability") or 0.0),
        text="\n".join(str(c.get("text", "")) for c in chunks),
        words=words,
        audio_duration_secs=float(duration),
        entities=entities,
        transcription_id=data.get("transcription_id") or first.get("transcription_id"),
        info=info,
    )


# --- Dubbing, account, history ----------------------------------------------------------


def dubbing_status(data: dict[str, Any], info: CallInfo) -> DubbingStatus:
    return DubbingStatus(
        dubbing_id=str(data.get("dubbing_id", "")),
        name=str(data.get("name") or ""),
        status=str(data.get("status") or ""),
        target_languages=list(data.get("target_languages") or []),
        source_language=data.get("source_language"),
        expected_duration_sec=opt_float(data.get("expected_duration_sec")),
        error=data.get("error"),
        info=info,
    )


def model(data: dict[str, Any]) -> ModelInfo:
    defaults = ModelInfo(model_id="", name="")
    return ModelInfo(
        model_id=str(data.get("model_id", "")),
        name=str(data.get("name") or data.get("model_id") or ""),
        can_do_text_to_speech=bool(data.get("can_do_text_to_speech", True)),
        can_do_voice_conversion=bool(data.get("can_do_voice_conversion", False)),
        can_use_style=bool(data.get("can_use_style", True)),
        can_use_speaker_boost=bool(data.get("can_use_speaker_boost", True)),
        maximum_text_length_per_request=int(
            data.get("maximum_text_length_per_request") or defaults.maximum_text_length_per_request
        ),
        languages=[
            {str(k): str(v) for k, v in lang.items()}
            for lang in data.get("languages") or []
            if isinstance(lang, dict)
        ],
        description=str(data.get("description") or ""),
        token_cost_factor=float(data.get("token_cost_factor") or 1.0),
    )


def subscription(data: dict[str, Any], info: CallInfo) -> Subscription:
    return Subscription(
        tier=str(data.get("tier") or ""),
        character_count=int(data.get("character_count") or 0),
        character_limit=int(data.get("character_limit") or 0),
        next_character_count_reset_unix=data.get("next_character_count_reset_unix"),
        status=str(data.get("status") or "active"),
        currency=data.get("currency"),
        raw=dict(data),
        info=info,
    )


def user(data: dict[str, Any], info: CallInfo) -> UserInfo:
    return UserInfo(
        user_id=str(data.get("user_id", "")),
        subscription=subscription(data.get("subscription") or {}, info),
        first_name=data.get("first_name"),
        info=info,
    )


def history_page(data: dict[str, Any], info: CallInfo) -> HistoryPage:
    items = [
        HistoryItem(
            history_item_id=str(item.get("history_item_id", "")),
            voice_id=item.get("voice_id"),
            voice_name=item.get("voice_name"),
            text=item.get("text"),
            date_unix=int(item.get("date_unix") or 0),
            model_id=item.get("model_id"),
            character_count_change_from=int(item.get("character_count_change_from") or 0),
            character_count_change_to=int(item.get("character_count_change_to") or 0),
            content_type=item.get("content_type"),
            state=item.get("state"),
            request_id=item.get("request_id") or None,
            source=item.get("source") or None,
        )
        for item in data.get("history") or []
    ]
    return HistoryPage(
        items=items,
        has_more=bool(data.get("has_more")),
        last_history_item_id=data.get("last_history_item_id"),
        info=info,
    )


def usage_stats(data: dict[str, Any], info: CallInfo) -> UsageStats:
    times = data.get("time")
    usage = data.get("usage")
    if not isinstance(times, list) or not isinstance(usage, dict):
        raise UpstreamUnavailable(
            "ElevenLabs sent usage stats without a time axis or usage series.",
            request_id=info.request_id,
        )
    return UsageStats(
        time=[int(t) for t in times],
        usage={
            str(name): [float(v or 0) for v in series]
            for name, series in usage.items()
            if isinstance(series, list)
        },
        info=info,
    )
