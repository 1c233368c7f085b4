"""``/v1/speech-to-text/realtime``: ElevenLabs' realtime transcription WebSocket, served by the
workspace's engine and metered by seconds of audio per member.

Authentication is a personal key in the ``xi-api-key`` header or the ``token`` query (the
official SDK sends a token instead of the header when it has one). The query carries the
session's options (``model_id``, ``audio_format``, ``commit_strategy``, ``language_code``,
``include_timestamps``, ``keyterms``, the VAD settings…); ``session_started`` echoes them.
The client sends ``input_audio_chunk`` messages (``audio_base_64``, ``commit``,
``sample_rate``, ``previous_text`` on the first only); the server answers with
``partial_transcript``, ``committed_transcript`` and, with timestamps asked for,
``committed_transcript_with_timestamps``. Errors are ``{message_type, error}`` with
ElevenLabs' types (``auth_error``, ``quota_exceeded``, ``input_error``,
``chunk_size_exceeded``, ``transcriber_error``); bad input (anything that is not an
``input_audio_chunk`` object, JSON nested too deep included) leaves the session open, while
the other errors close it after the message, with the codes of ``studio_site.sockets``:
``invalid_request`` 4400, ``auth_error`` 4401 (4403 for a key without the scope),
``quota_exceeded`` 4402, an engine that refused the session 4502, a failure in Chorus 4500.

Audio in any of the accepted formats is turned into 16 kHz mono PCM here, so every engine
gets the same; a session reserves a minute when it starts (a spent budget refuses it), checks
the budget again at each new minute, records the seconds received every few seconds (so a
session whose process died is settled on them by the sweeper) and, however it ends, closes
the engine's session and settles on the seconds it received.
"""

import base64
import binascii
import json
import logging
import uuid
from urllib.parse import parse_qs

import numpy as np
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from apps.billing.services import BudgetExceeded
from apps.engines.base import EngineError
from apps.generation.live import RESERVED_SECONDS, LiveMeter, live_open
from studio_site.sockets import (
    CLOSE_BAD_REQUEST,
    CLOSE_ENGINE,
    CLOSE_FAILED,
    CLOSE_QUOTA,
    SocketEnding,
    json_object,
    refusal_code,
)

from .services import ApiRefused, api_key_check, caller_of, key_address_seen, key_engine

log = logging.getLogger(__name__)

MODELS = ("scribe_v2_realtime", "scribe_v2_realtime_turbo", "scribe_v1", "scribe_v2")
AUDIO_FORMATS = {
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
    "pcm_48000": 48000,
    "ulaw_8000": 8000,
}
RATE = 16000
PIECE_BYTES = RATE * 2  # the engine gets at most one second at a time
MAX_CHUNK_SECONDS = 10.0
PROGRESS_BYTES = 5 * RATE * 2  # the seconds received are recorded every 5 s of audio


class SessionRefused(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def _flag(values: dict, name: str, default: bool) -> bool:
    raw = values.get(name, [None])[-1]
    if raw is None:
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise SessionRefused("invalid_request", f"{name} must be true or false.")


def _number(values: dict, name: str, default, low, high, kind=float):
    raw = values.get(name, [None])[-1]
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SessionRefused("invalid_request", f"{name} must be a number.") from None
    if not low <= value <= high:
        raise SessionRefused("invalid_request", f"{name} must be from {low:g} to {high:g}.")
    return value


def session_config(query: str) -> dict:
    """The session's options from the query string, checked."""
    values = parse_qs(query, keep_blank_values=False)
    model_id = values.get("model_id", ["scribe_v2_realtime"])[-1]
    if model_id not in MODELS:
        raise SessionRefused("invalid_request", f"Unknown model_id {model_id!r}.")
    audio_format = values.get("audio_format", ["pcm_16000"])[-1]
    if audio_format not in AUDIO_FORMATS:
        raise SessionRefused(
            "invalid_request", f"audio_format is one of {', '.join(AUDIO_FORMATS)}."
        )
    commit_strategy = values.get("commit_strategy", ["manual"])[-1]
    if commit_strategy not in ("manual", "vad"):
        raise SessionRefused("invalid_request", "commit_strategy is manual or vad.")
    keyterms = values.get("keyterms", [])
    if len(keyterms) > 50 or any(len(t) > 50 for t in keyterms):
        raise SessionRefused("invalid_request", "Use at most 50 key terms of 50 characters.")
    language = values.get("language_code", [None])[-1] or None
    return {
        "sample_rate": AUDIO_FORMATS[audio_format],
        "audio_format": audio_format,
        "language_code": language,
        "commit_strategy": commit_strategy,
        "vad_silence_threshold_secs": _number(values, "vad_silence_threshold_secs", 1.5, 0.3, 3.0),
        "vad_threshold": _number(values, "vad_threshold", 0.4, 0.1, 0.9),
        "min_speech_duration_ms": _number(values, "min_speech_duration_ms", 100, 50, 2000, int),
        "min_silence_duration_ms": _number(values, "min_silence_duration_ms", 100, 50, 2000, int),
        "model_id": model_id,
        "enable_logging": _flag(values, "enable_logging", True),
        "include_timestamps": _flag(values, "include_timestamps", False),
        "include_language_detection": _flag(values, "include_language_detection", False),
        "keyterms": keyterms,
        "no_verbatim": _flag(values, "no_verbatim", False),
    }


_ULAW = None


def _ulaw_table() -> np.ndarray:
    global _ULAW
    if _ULAW is None:
        codes = ~np.arange(256, dtype=np.int32) & 0xFF
        sign = codes & 0x80
        exponent = (codes >> 4) & 0x07
        mantissa = codes & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        _ULAW = np.where(sign, -magnitude, magnitude).astype(np.int16)
    return _ULAW


def to_pcm16k(data: bytes, audio_format: str) -> bytes:
    """A chunk in ``audio_format`` as 16 kHz mono s16le (linear interpolation)."""
    if audio_format == "ulaw_8000":
        samples = _ulaw_table()[np.frombuffer(data, dtype=np.uint8)]
    else:
        if len(data) % 2:
            raise SessionRefused("input_error", "PCM audio chunks hold 16-bit samples.")
        samples = np.frombuffer(data, dtype="<i2")
    rate = AUDIO_FORMATS[audio_format]
    if rate == RATE or not len(samples):
        return samples.astype("<i2").tobytes()
    count = int(round(len(samples) * RATE / rate))
    positions = np.linspace(0, len(samples) - 1, count)
    resampled = np.interp(positions, np.arange(len(samples)), samples.astype(np.float32))
    return np.round(resampled).astype("<i2").tobytes()


def _word(word) -> dict:
    return {
        "text": word.text,
        "start": word.start,
        "end": word.end,
        "type": word.type,
        "speaker_id": word.speaker_id,
        "logprob": word.logprob,
        "characters": word.characters,
    }


class RealtimeTranscriptionConsumer(SocketEnding, AsyncWebsocketConsumer):
    """One realtime transcription session: key, budget and engine checked after ``accept``
    (refusals are ElevenLabs' error messages), then audio relayed to the engine.

    However it ends (the client hangs up, a refusal, a handler that failed), ``ending``
    closes the engine's session and settles the seconds received.
    """

    api_key = None
    engine_session = None
    meter = None
    received_bytes = 0
    recorded_bytes = 0  # the seconds received, as last recorded on the reservation
    allowed_bytes = int(RESERVED_SECONDS * RATE * 2)  # what the first reservation covers
    chunks = 0

    async def connect(self):
        await self.accept()
        try:
            self.config = session_config(self.scope.get("query_string", b"").decode("latin-1"))
            raw = self._key()
            self.api_key = await database_sync_to_async(api_key_check)(raw=raw, scope="stt")
            client = (self.scope.get("client") or [None])[0]
            await database_sync_to_async(key_address_seen)(self.api_key, client)
            self.meter = await database_sync_to_async(self._meter)()
            await database_sync_to_async(self.meter.reserve)()
            self.engine_session = await sync_to_async(self._open, thread_sensitive=False)()
        except SessionRefused as exc:
            await self._fail(exc.kind, exc.message, CLOSE_BAD_REQUEST)
            return
        except ApiRefused as exc:
            kind = "auth_error" if exc.status in (401, 403) else "quota_exceeded"
            await self._fail(kind, exc.message, refusal_code(exc.status))
            return
        except BudgetExceeded as exc:
            await self._fail("quota_exceeded", str(exc), CLOSE_QUOTA)
            return
        except EngineError as exc:
            await self._release(note=str(exc))
            await self._fail("invalid_request", exc.message, CLOSE_ENGINE)
            return
        self.session_id = uuid.uuid4().hex
        await self._send({"message_type": "session_started", "session_id": self.session_id,
                          "config": self.config})  # fmt: skip

    def _key(self) -> str | None:
        for name, value in self.scope.get("headers", []):
            if name.lower() == b"xi-api-key":
                return value.decode("latin-1")
        token = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("token")
        return token[-1] if token else None

    def _meter(self) -> LiveMeter:
        self.engine = key_engine(self.api_key)
        return LiveMeter(
            caller=caller_of(self.api_key),
            engine_name=self.engine.name,
            model_id=self.config["model_id"],
        )

    def _open(self):
        config = self.config
        return live_open(
            engine=self.engine,
            meter=self.meter,
            language_code=config["language_code"],
            commit_strategy=config["commit_strategy"],
            vad_silence_threshold_secs=config["vad_silence_threshold_secs"],
            vad_threshold=config["vad_threshold"],
            min_speech_duration_ms=config["min_speech_duration_ms"],
            include_timestamps=True,  # the words come either way; sent only when asked
            keyterms=config["keyterms"] or None,
            no_verbatim=config["no_verbatim"],
            sample_rate=RATE,
        )

    async def ending(self):
        """Close the engine's session and settle the seconds received (once)."""
        session, self.engine_session = self.engine_session, None
        if session is not None:
            try:
                await sync_to_async(session.close, thread_sensitive=False)()
            except Exception:  # the session is gone either way
                log.warning("closing a realtime session failed", exc_info=True)
        if self.meter is not None:
            await database_sync_to_async(self.meter.settle)(self.received_bytes / (RATE * 2))

    async def failed(self, exc):
        await self._fail("error", "The session failed in Chorus; start a new one.", CLOSE_FAILED)

    async def _release(self, *, note: str):
        if self.meter is not None:
            await database_sync_to_async(self.meter.release)(note=note)

    async def receive(self, text_data=None, bytes_data=None):
        if self.engine_session is None:
            return
        message = json_object(text_data)
        if message is None or message.get("message_type") != "input_audio_chunk":
            await self._error("input_error", "Send input_audio_chunk messages as JSON text.")
            return
        try:
            pcm = self._audio_of(message)
        except SessionRefused as exc:
            await self._error(exc.kind, exc.message)
            return
        received = self.received_bytes + len(pcm)
        if received > self.allowed_bytes:  # each new minute: budget for it?
            blocked_by = await database_sync_to_async(self.meter.next_minute_blocked_by)(
                received / (RATE * 2)
            )
            if blocked_by:  # this chunk is not transcribed, so not charged
                refusal = f"The session stopped: another minute would exceed {blocked_by}."
                await self._fail("quota_exceeded", refusal, CLOSE_QUOTA)
                return
            self.allowed_bytes = received + int(RESERVED_SECONDS * RATE * 2)
        self.chunks += 1
        self.received_bytes = received
        if received - self.recorded_bytes >= PROGRESS_BYTES:
            self.recorded_bytes = received
            await database_sync_to_async(self.meter.progress)(received / (RATE * 2))
        for start in range(0, len(pcm), PIECE_BYTES):
            events = await sync_to_async(self.engine_session.send_audio, thread_sensitive=False)(
                pcm[start : start + PIECE_BYTES]
            )
            await self._relay(events)
        if message.get("commit"):
            await self._relay(
                await sync_to_async(self.engine_session.commit, thread_sensitive=False)()
            )

    def _audio_of(self, message: dict) -> bytes:
        if message.get("previous_text") and self.chunks:
            raise SessionRefused(
                "input_error", "previous_text is only allowed with the first chunk."
            )
        raw = message.get("audio_base_64") or ""
        if not isinstance(raw, str):
            raise SessionRefused("input_error", "audio_base_64 must be a base64 string.")
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise SessionRefused("input_error", "audio_base_64 is not valid base64.") from None
        rate = message.get("sample_rate")
        if rate not in (None, self.config["sample_rate"]):
            raise SessionRefused(
                "input_error",
                f"sample_rate {rate} does not match the session's {self.config['audio_format']}.",
            )
        pcm = to_pcm16k(data, self.config["audio_format"])
        if len(pcm) > MAX_CHUNK_SECONDS * RATE * 2:
            raise SessionRefused(
                "chunk_size_exceeded", f"Send at most {MAX_CHUNK_SECONDS:g} s of audio a chunk."
            )
        return pcm

    async def _relay(self, events):
        for event in events:
            kind = event.message_type
            if kind in ("partial_transcript", "committed_transcript"):
                await self._send({"message_type": kind, "text": event.text})
            elif kind == "committed_transcript_with_timestamps":
                if self.config["include_timestamps"]:
                    await self._send({"message_type": kind, "text": event.text,
                                      "language_code": self.config["language_code"] or "en",
                                      "words": [_word(w) for w in event.words]})  # fmt: skip
            elif kind == "error":
                await self._error("transcriber_error", event.error or event.text)

    async def _error(self, kind: str, message: str):
        await self._send({"message_type": kind, "error": message})

    async def _fail(self, kind: str, message: str, code: int):
        """An error that ends the session: the message, then the close (see the codes above)."""
        await self._error(kind, message)
        await self.close(code=code)

    async def _send(self, message: dict):
        await self.send(text_data=json.dumps(message, ensure_ascii=False))
