"""The ElevenLabs engine against scripted answers at the network edge (httpx.MockTransport).

No network and no database: each test scripts what ElevenLabs answers (statuses, headers,
bodies, broken connections) and checks what the engine sent, what it returned or raised,
how long it waited between attempts, and what it logged.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.parser
import email.policy
import email.utils
import io
import json
import logging
import random
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from websockets.sync.server import serve

from apps.engines.base import (
    AuthenticationFailed,
    CloneRequest,
    DesignRequest,
    DubbingRequest,
    InvalidRequest,
    MusicRequest,
    NotSupported,
    QuotaExceeded,
    RateLimited,
    SaveDesignRequest,
    SoundRequest,
    STTRequest,
    TTSRequest,
    UpstreamUnavailable,
    VoiceQuery,
    VoiceSettings,
)
from apps.engines.elevenlabs import AsyncElevenLabsClient, ElevenLabsEngine
from apps.engines.elevenlabs.egress import EgressPolicy
from apps.engines.elevenlabs.errors import parse_error
from apps.engines.elevenlabs.retry import RetryPolicy, server_delay

KEY = "sk_test_9f8e7d6c5b4a_super_secret"
LOGGER = "chorus.engines.elevenlabs"


# --- The scripted network edge ----------------------------------------------------------


class Script:
    """A MockTransport handler: answers in order (the last one repeats), records requests.

    An answer is an ``httpx.Response``, an exception to raise (a broken connection), or a
    callable taking the request.
    """

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, httpx.Response):
            return answer(request)
        if hasattr(answer, "_content"):  # a body held in memory: answer a fresh copy each time
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )
        return answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


class Body(httpx.SyncByteStream):
    """A response body that arrives piece by piece and can break off after ``fail_at`` pieces."""

    def __init__(self, *pieces: bytes, fail_at: int | None = None):
        self.pieces = pieces
        self.fail_at = fail_at
        self.produced = 0
        self.closed = False

    def __iter__(self):
        for index, piece in enumerate(self.pieces):
            if index == self.fail_at:
                raise httpx.ReadError("connection reset by peer")
            self.produced += 1
            yield piece
        if self.fail_at is not None and self.fail_at >= len(self.pieces):
            raise httpx.ReadError("connection reset by peer")

    def close(self):
        self.closed = True


def error(status: int, body=None, *, text: str | None = None, headers=None) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def shape_b(status: str, message: str) -> dict:
    return {"detail": {"status": status, "message": message}}


OK_AUDIO = httpx.Response(200, content=b"ID3-audio", headers={"request-id": "req_ok"})
BUSY = error(429, shape_b("system_busy", "The system is busy, try again."))
SERVER_ERROR = error(500, {"detail": {"status": "internal_error", "message": "Oops."}})


@pytest.fixture
def engine_for():
    """``engine_for(script, **options)`` → an engine whose network is the script; the delays
    it would have slept are in ``engine.sleeps``."""
    engines = []

    def make(script: Script, **options) -> ElevenLabsEngine:
        sleeps: list[float] = []
        options.setdefault("rng", lambda: 0.5)
        engine = ElevenLabsEngine(
            KEY,
            workspace="acme",
            transport=httpx.MockTransport(script),
            sleep=sleeps.append,
            **options,
        )
        engine.sleeps = sleeps
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def tts_request(**overrides) -> TTSRequest:
    fields = {"text": "Hello there.", "voice_id": "21m00Tcm4TlvDq8ikWAM"}
    fields.update(overrides)
    return TTSRequest(**fields)


def form_parts(request: httpx.Request) -> list[tuple[str, str | None, bytes]]:
    """(field name, filename, content) of each part of a multipart request, in order."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    return [
        (
            part.get_param("name", header="content-disposition"),
            part.get_filename(),
            part.get_payload(decode=True),
        )
        for part in message.iter_parts()
    ]


def form_fields(request: httpx.Request) -> list[tuple[str, str]]:
    return [(name, value.decode()) for name, filename, value in form_parts(request) if not filename]


# --- Retries and waits ------------------------------------------------------------------


def test_a_429_with_retry_after_seconds_is_retried_after_exactly_that_wait(engine_for):
    script = Script(
        error(
            429, shape_b("too_many_concurrent_requests", "Slow down."), headers={"Retry-After": "2"}
        ),
        OK_AUDIO,
    )
    engine = engine_for(script)

    result = engine.tts(tts_request())

    assert result.audio == b"ID3-audio"
    assert result.info.attempts == 2
    assert len(script.requests) == 2
    assert engine.sleeps == [2.0]


def test_retry_after_ms_is_honoured(engine_for):
    script = Script(error(429, None, text="", headers={"retry-after-ms": "1500"}), OK_AUDIO)
    engine = engine_for(script)

    assert engine.tts(tts_request()).info.attempts == 2
    assert engine.sleeps == [1.5]


def test_retry_after_as_an_http_date_is_honoured(engine_for):
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    script = Script(error(503, None, text="busy", headers={"Retry-After": when}), OK_AUDIO)
    engine = engine_for(script)

    engine.tts(tts_request())

    assert len(engine.sleeps) == 1
    assert 1.0 <= engine.sleeps[0] <= 3.0


def test_x_ratelimit_reset_is_honoured_as_seconds_or_a_unix_time():
    assert server_delay({"x-ratelimit-reset": "4"}) == 4.0
    assert server_delay({"x-ratelimit-reset": "1700000010"}, now=1_700_000_000) == 10.0
    assert server_delay({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert server_delay({}) is None


def test_system_busy_without_a_header_waits_a_jittered_backoff(engine_for):
    script = Script(BUSY, BUSY, BUSY, OK_AUDIO)
    engine = engine_for(script)  # rng() is 0.5: half of 0.5, 1 and 2 seconds

    assert engine.tts(tts_request()).info.attempts == 4
    assert engine.sleeps == [0.25, 0.5, 1.0]


def test_jittered_delays_stay_within_full_jitter_bounds(engine_for):
    script = Script(BUSY, BUSY, BUSY, OK_AUDIO)
    engine = engine_for(script, rng=random.Random(7).random)

    engine.tts(tts_request())

    policy = RetryPolicy()
    assert len(engine.sleeps) == 3
    for retry, delay in enumerate(engine.sleeps):
        assert 0 <= delay <= min(policy.max_delay, policy.base_delay * 2**retry)
    assert len(set(engine.sleeps)) == 3  # jittered, not a fixed schedule


def test_three_500s_then_a_200_succeed_on_the_fourth_attempt(engine_for):
    script = Script(SERVER_ERROR, SERVER_ERROR, SERVER_ERROR, OK_AUDIO)
    engine = engine_for(script)

    result = engine.tts(tts_request())

    assert result.info.attempts == 4
    assert len(engine.sleeps) == 3


def test_a_server_that_keeps_failing_is_upstream_unavailable_after_max_retries_plus_one(
    engine_for,
):
    script = Script(SERVER_ERROR)
    engine = engine_for(script, max_retries=3)

    with pytest.raises(UpstreamUnavailable) as raised:
        engine.tts(tts_request())

    assert len(script.requests) == 4
    assert raised.value.message == "Oops."
    assert raised.value.upstream_status == 500


def test_a_connect_timeout_then_success_is_retried(engine_for):
    script = Script(httpx.ConnectTimeout("timed out"), OK_AUDIO)
    engine = engine_for(script)

    assert engine.tts(tts_request()).info.attempts == 2


def test_connection_errors_that_never_end_are_upstream_unavailable(engine_for):
    script = Script(httpx.ConnectError("connection refused"))
    engine = engine_for(script, max_retries=2)

    with pytest.raises(UpstreamUnavailable, match="Could not reach ElevenLabs"):
        engine.voice("v1")
    assert len(script.requests) == 3


def test_429s_that_never_end_are_rate_limited_with_the_servers_wait(engine_for):
    script = Script(
        error(
            429, shape_b("too_many_concurrent_requests", "Too many."), headers={"retry-after": "1"}
        )
    )
    engine = engine_for(script, max_retries=1)

    with pytest.raises(RateLimited) as raised:
        engine.tts(tts_request())

    assert len(script.requests) == 2
    assert raised.value.retry_after == 1.0
    assert raised.value.message == "Too many."


def test_a_wait_longer_than_the_limit_is_not_slept_but_raised_at_once(engine_for):
    script = Script(
        error(429, shape_b("rate_limit_exceeded", "Later."), headers={"Retry-After": "3600"})
    )
    engine = engine_for(script)

    with pytest.raises(RateLimited) as raised:
        engine.tts(tts_request())

    assert raised.value.retry_after == 3600.0
    assert len(script.requests) == 1
    assert engine.sleeps == []


@pytest.mark.parametrize("status", [401, 429, 400])
def test_quota_exceeded_is_never_retried(engine_for, status):
    message = "This request exceeds your quota of 10000. You have 12 credits remaining."
    script = Script(error(status, shape_b("quota_exceeded", message)), OK_AUDIO)
    engine = engine_for(script)

    with pytest.raises(QuotaExceeded) as raised:
        engine.tts(tts_request())

    assert len(script.requests) == 1
    assert raised.value.message == message
    assert engine.sleeps == []


@pytest.mark.parametrize(
    ("status", "body", "expected", "message"),
    [
        (
            400,
            shape_b("max_character_limit_exceeded", "Text is too long."),
            InvalidRequest,
            "Text is too long.",
        ),
        (
            401,
            {
                "detail": {
                    "type": "authentication_error",
                    "code": "unauthorized",
                    "message": "Invalid API key",
                    "status": "invalid_api_key",
                    "request_id": "req_401",
                }
            },
            AuthenticationFailed,
            "Invalid API key",
        ),
        (
            403,
            shape_b("only_for_creator+", "Upgrade to Creator to use this."),
            NotSupported,
            "Upgrade to Creator to use this.",
        ),
        (
            404,
            shape_b("voice_not_found", "A voice with voice_id nope was not found."),
            InvalidRequest,
            "A voice with voice_id nope was not found.",
        ),
        (
            422,
            {"detail": [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]},
            InvalidRequest,
            "text: Field required",
        ),
    ],
)
def test_client_errors_are_not_retried_and_keep_the_upstream_message(
    engine_for, status, body, expected, message
):
    script = Script(error(status, body), OK_AUDIO)
    engine = engine_for(script)

    with pytest.raises(expected) as raised:
        engine.tts(tts_request())

    assert len(script.requests) == 1
    assert message in raised.value.message
    assert raised.value.upstream_status == status


def test_an_unknown_voice_points_at_the_voice_field(engine_for):
    engine = engine_for(Script(error(404, shape_b("voice_not_found", "Voice not found."))))

    with pytest.raises(InvalidRequest) as raised:
        engine.voice("nope")

    assert raised.value.fields == {"voice_id": ["Voice not found."]}


# --- Error body shapes ------------------------------------------------------------------


def test_error_shape_a_keeps_message_code_param_and_request_id():
    body = {
        "detail": {
            "type": "validation_error",
            "code": "invalid_parameters",
            "message": "The 'keyterms' parameter is only supported with scribe_v2.",
            "status": "invalid_parameters",
            "request_id": "3c807fc4",
            "param": "keyterms",
        }
    }
    parsed = parse_error(400, json.dumps(body).encode())

    assert parsed.message == "The 'keyterms' parameter is only supported with scribe_v2."
    assert parsed.code == "invalid_parameters"
    assert parsed.fields == {"keyterms": [parsed.message]}
    assert parsed.request_id == "3c807fc4"


def test_error_shape_a_on_the_wire_becomes_an_invalid_request_for_the_field(engine_for):
    body = {
        "detail": {"code": "invalid_parameters", "message": "Bad keyterms.", "param": "keyterms"}
    }
    engine = engine_for(Script(error(400, body)))

    with pytest.raises(InvalidRequest) as raised:
        engine.stt(STTRequest(audio=b"RIFF", keyterms=["x"]))

    assert raised.value.fields == {"keyterms": ["Bad keyterms."]}


def test_error_shape_b_keeps_its_legacy_status_as_the_code():
    parsed = parse_error(401, b'{"detail":{"status":"needs_authorization","message":"Add a key."}}')

    assert parsed.code == "needs_authorization"
    assert parsed.message == "Add a key."


def test_error_shape_c_gives_per_field_messages_named_by_the_last_loc_element(engine_for):
    body = {
        "detail": [
            {"loc": ["body", "voice_settings", "stability"], "msg": "must be <= 1", "type": "le"},
            {"loc": ["query", "output_format"], "msg": "not allowed", "type": "enum"},
            {
                "loc": ["body", "voice_settings", "stability"],
                "msg": "must be a number",
                "type": "x",
            },
        ]
    }
    engine = engine_for(Script(error(422, body)))

    with pytest.raises(InvalidRequest) as raised:
        engine.tts(tts_request())

    assert raised.value.fields == {
        "stability": ["must be <= 1", "must be a number"],
        "output_format": ["not allowed"],
    }
    assert "stability: must be <= 1" in raised.value.message


def test_error_shape_d_from_dubbing_keeps_code_and_message(engine_for):
    body = {"error": "dubbing_not_dubbed", "message": "The dub is still being made."}
    engine = engine_for(Script(error(425, body)))

    with pytest.raises(InvalidRequest, match="The dub is still being made."):
        engine.dubbing_audio("dub_1", "es")
    assert parse_error(425, json.dumps(body).encode()).code == "dubbing_not_dubbed"


def test_a_plain_text_502_is_read_as_its_text(engine_for):
    script = Script(error(502, text="upstream connect error or disconnect/reset before headers"))
    engine = engine_for(script, max_retries=0)

    with pytest.raises(UpstreamUnavailable) as raised:
        engine.models()

    assert raised.value.message == "upstream connect error or disconnect/reset before headers"
    assert len(script.requests) == 1


def test_an_html_error_page_is_not_shown_to_people():
    parsed = parse_error(
        502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", reason="Bad Gateway"
    )

    assert parsed.message == "ElevenLabs answered HTTP 502 Bad Gateway."


def test_a_429_without_a_readable_body_is_retried(engine_for):
    script = Script(error(429, text="Too Many Requests"), OK_AUDIO)
    engine = engine_for(script)

    assert engine.tts(tts_request()).info.attempts == 2


# --- What goes on the wire --------------------------------------------------------------


def test_every_request_carries_the_key_and_a_chorus_user_agent(engine_for):
    script = Script(OK_AUDIO)
    engine = engine_for(script)

    engine.tts(tts_request())

    assert script.last.headers["xi-api-key"] == KEY
    assert script.last.headers["user-agent"].startswith("chorus/")


def test_tts_sends_exactly_the_documented_body_and_output_format(engine_for):
    script = Script(OK_AUDIO)
    engine = engine_for(script)

    engine.tts(
        tts_request(
            model_id="eleven_flash_v2_5",
            voice_settings=VoiceSettings(stability=0.3, similarity_boost=0.8),
            output_format="pcm_16000",
            seed=42,
            language_code="de",
            previous_text="Before.",
        )
    )

    request = script.last
    assert request.method == "POST"
    assert request.url.path == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM"
    assert dict(request.url.params) == {"output_format": "pcm_16000"}
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "text": "Hello there.",
        "model_id": "eleven_flash_v2_5",
        "voice_settings": {
            "stability": 0.3,
            "similarity_boost": 0.8,
            "style": 0.0,
            "use_speaker_boost": True,
            "speed": 1.0,
        },
        "seed": 42,
        "language_code": "de",
        "previous_text": "Before.",
        "apply_text_normalization": "auto",
    }


def test_tts_leaves_unset_fields_out_and_reports_the_characters(engine_for):
    script = Script(OK_AUDIO)
    engine = engine_for(script)

    result = engine.tts(tts_request())

    assert json.loads(script.last.content) == {
        "text": "Hello there.",
        "model_id": "eleven_multilingual_v2",
        "apply_text_normalization": "auto",
    }
    assert dict(script.last.url.params) == {"output_format": "mp3_44100_128"}
    assert result.characters == len("Hello there.")
    assert result.content_type == "audio/mpeg"


def test_an_unknown_output_format_is_refused_before_any_call(engine_for):
    script = Script(OK_AUDIO)
    engine = engine_for(script)

    with pytest.raises(InvalidRequest) as raised:
        engine.tts(tts_request(output_format="flac_44100"))

    assert "output_format" in raised.value.fields
    assert script.requests == []


def test_a_voice_id_cannot_reach_another_endpoint(engine_for):
    script = Script(OK_AUDIO)
    engine = engine_for(script)

    engine.tts(tts_request(voice_id="../../v1/user"))

    assert script.last.url.raw_path.startswith(b"/v1/text-to-speech/..%2F..%2Fv1%2Fuser")


def test_call_info_captures_the_providers_headers(engine_for):
    headers = {
        "request-id": "req_123",
        "character-cost": "12",
        "history-item-id": "hist_9",
        "current-concurrent-requests": "2",
        "maximum-concurrent-requests": "5",
    }
    engine = engine_for(Script(httpx.Response(200, content=b"mp3", headers=headers)))

    info = engine.tts(tts_request(model_id="eleven_v3")).info

    assert info.request_id == "req_123"
    assert info.character_cost == 12.0
    assert info.history_item_id == "hist_9"
    assert info.current_concurrent_requests == 2
    assert info.maximum_concurrent_requests == 5
    assert info.attempts == 1
    assert info.engine == "elevenlabs"
    assert info.model_id == "eleven_v3"
    assert info.latency_ms is not None and info.latency_ms >= 0


def test_tts_with_timestamps_returns_audio_and_alignment(engine_for):
    body = {
        "audio_base64": base64.b64encode(b"PCMDATA").decode(),
        "alignment": {
            "characters": ["H", "i"],
            "character_start_times_seconds": [0.0, 0.1],
            "character_end_times_seconds": [0.1, 0.25],
        },
        "normalized_alignment": None,
    }
    script = Script(httpx.Response(200, json=body))
    engine = engine_for(script)

    result = engine.tts(tts_request(text="Hi"), with_timestamps=True)

    assert script.last.url.path.endswith("/with-timestamps")
    assert result.audio == b"PCMDATA"
    assert result.alignment.characters == ["H", "i"]
    assert result.duration_secs == 0.25
    assert result.normalized_alignment is None


def test_stt_sends_every_option_as_documented_multipart_fields(engine_for):
    body = {
        "language_code": "en",
        "language_probability": 0.98,
        "text": "Call me at 555.",
        "words": [
            {
                "text": "Call",
                "start": 0.0,
                "end": 0.3,
                "type": "word",
                "speaker_id": "speaker_0",
                "logprob": -0.1,
            },
            {"text": " ", "start": 0.3, "end": 0.35, "type": "spacing", "logprob": 0},
        ],
        "entities": [
            {"text": "555", "entity_type": "phone_number", "start_char": 11, "end_char": 14}
        ],
        "transcription_id": "tr_1",
        "audio_duration_secs": 1.5,
    }
    script = Script(httpx.Response(200, json=body))
    engine = engine_for(script)

    transcript = engine.stt(
        STTRequest(
            audio=b"RIFFdata",
            filename="call.wav",
            model_id="scribe_v2",
            language_code="en",
            tag_audio_events=False,
            num_speakers=2,
            diarize=True,
            keyterms=["Chorus", "ElevenLabs"],
            no_verbatim=True,
            entity_detection=["pii"],
            entity_redaction=["phone_number"],
            temperature=0.2,
            seed=7,
        )
    )

    request = script.last
    assert request.url.path == "/v1/speech-to-text"
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert sorted(form_fields(request)) == sorted(
        [
            ("model_id", "scribe_v2"),
            ("tag_audio_events", "false"),
            ("timestamps_granularity", "word"),
            ("diarize", "true"),
            ("file_format", "other"),
            ("language_code", "en"),
            ("num_speakers", "2"),
            ("keyterms", "Chorus"),
            ("keyterms", "ElevenLabs"),
            ("no_verbatim", "true"),
            ("entity_detection", '["pii"]'),
            ("entity_redaction", '["phone_number"]'),
            ("entity_redaction_mode", "enumerated_entity_type"),
            ("temperature", "0.2"),
            ("seed", "7"),
        ]
    )
    files = [
        (name, filename, content) for name, filename, content in form_parts(request) if filename
    ]
    assert files == [("file", "call.wav", b"RIFFdata")]
    assert transcript.text == "Call me at 555."
    assert transcript.words[0].speaker_id == "speaker_0"
    assert transcript.words[1].type == "spacing"
    assert transcript.entities[0].entity_type == "phone_number"
    assert transcript.audio_duration_secs == 1.5
    assert transcript.transcription_id == "tr_1"


def test_stt_with_defaults_sends_only_the_plain_fields(engine_for):
    script = Script(
        httpx.Response(
            200, json={"language_code": "en", "language_probability": 1, "text": "", "words": []}
        )
    )
    engine = engine_for(script)

    engine.stt(STTRequest(audio=b"x"))

    assert sorted(form_fields(script.last)) == [
        ("diarize", "false"),
        ("file_format", "other"),
        ("model_id", "scribe_v1"),
        ("tag_audio_events", "true"),
        ("timestamps_granularity", "word"),
    ]


def test_an_upload_given_as_a_file_is_sent_whole_again_when_the_call_is_retried(engine_for):
    """Uploads reach the engine as files on disk (not bytes): a retried call must send the
    file from its start, not from where the first attempt left it (an empty part)."""
    script = Script(
        error(429, None, text="", headers={"Retry-After": "1"}),
        httpx.Response(
            200, json={"language_code": "en", "language_probability": 1, "text": "", "words": []}
        ),
    )
    engine = engine_for(script)

    engine.stt(STTRequest(audio=io.BytesIO(b"RIFF-audio-bytes"), filename="a.wav"))

    sent = [[c for name, _f, c in form_parts(r) if name == "file"] for r in script.requests]
    assert sent == [[b"RIFF-audio-bytes"], [b"RIFF-audio-bytes"]]


def test_voice_clone_sends_repeated_files_and_labels_as_json(engine_for):
    script = Script(httpx.Response(200, json={"voice_id": "v_new", "requires_verification": False}))
    engine = engine_for(script)

    voice = engine.voice_clone(
        CloneRequest(
            name="Ada",
            samples=[("one.mp3", b"AAA"), ("two.wav", b"BBB")],
            description="Warm",
            labels={"accent": "british"},
        )
    )

    request = script.last
    assert request.url.path == "/v1/voices/add"
    parts = form_parts(request)
    assert [(n, f, c) for n, f, c in parts if f] == [
        ("files", "one.mp3", b"AAA"),
        ("files", "two.wav", b"BBB"),
    ]
    assert sorted(form_fields(request)) == [
        ("description", "Warm"),
        ("labels", '{"accent": "british"}'),
        ("name", "Ada"),
        ("remove_background_noise", "false"),
    ]
    assert (voice.voice_id, voice.category, voice.engine) == ("v_new", "cloned", "elevenlabs")


def test_voices_are_searched_on_v2_with_paging(engine_for):
    body = {
        "voices": [
            {
                "voice_id": "v1",
                "name": "Rachel",
                "category": "premade",
                "labels": {"accent": "american"},
                "preview_url": "https://example/p.mp3",
                "settings": {"stability": 0.4, "similarity_boost": 0.7},
                "created_at_unix": 1700000000,
            }
        ],
        "has_more": True,
        "total_count": 42,
        "next_page_token": "tok2",
    }
    script = Script(httpx.Response(200, json=body))
    engine = engine_for(script)

    page = engine.voices(
        VoiceQuery(
            search="rach",
            page_size=1,
            next_page_token="tok1",
            category="premade",
            sort="name",
            sort_direction="asc",
        )
    )

    assert script.last.url.path == "/v2/voices"
    assert dict(script.last.url.params) == {
        "search": "rach",
        "page_size": "1",
        "next_page_token": "tok1",
        "category": "premade",
        "sort": "name",
        "sort_direction": "asc",
        "include_total_count": "true",
    }
    assert (page.has_more, page.total_count, page.next_page_token) == (True, 42, "tok2")
    voice = page.voices[0]
    assert (voice.voice_id, voice.name, voice.labels) == ("v1", "Rachel", {"accent": "american"})
    assert voice.settings.stability == 0.4 and voice.settings.speed == 1.0
    assert voice.engine == "elevenlabs"


def test_voice_design_sends_the_brief_and_decodes_the_previews(engine_for):
    body = {
        "previews": [
            {
                "audio_base_64": base64.b64encode(b"preview-1").decode(),
                "generated_voice_id": "gen_1",
                "media_type": "audio/mpeg",
                "duration_secs": 4.2,
                "language": "en",
            }
        ],
        "text": "An auto-generated line.",
    }
    script = Script(httpx.Response(200, json=body))
    engine = engine_for(script)

    result = engine.voice_design(
        DesignRequest(
            voice_description="A calm narrator with a low voice.", auto_generate_text=True, seed=3
        )
    )

    assert script.last.url.path == "/v1/text-to-voice/design"
    assert dict(script.last.url.params) == {"output_format": "mp3_44100_128"}
    assert json.loads(script.last.content) == {
        "voice_description": "A calm narrator with a low voice.",
        "model_id": "eleven_multilingual_ttv_v2",
        "auto_generate_text": True,
        "guidance_scale": 5.0,
        "loudness": 0.5,
        "seed": 3,
    }
    preview = result.previews[0]
    assert (preview.generated_voice_id, preview.audio, preview.duration_secs) == (
        "gen_1",
        b"preview-1",
        4.2,
    )
    assert result.text == "An auto-generated line."


def test_a_designed_voice_is_saved_and_its_preview_streamed(engine_for):
    script = Script(
        httpx.Response(
            200, json={"voice_id": "v_saved", "name": "Calm", "category": "generated", "labels": {}}
        ),
        httpx.Response(200, stream=Body(b"aa", b"bb")),
    )
    engine = engine_for(script)

    voice = engine.voice_design_save(
        SaveDesignRequest(
            generated_voice_id="gen_1",
            voice_name="Calm",
            voice_description="A calm narrator with a low voice.",
            labels={"age": "old"},
        )
    )
    audio = b"".join(engine.voice_design_stream("gen_1"))

    save, stream = script.requests
    assert (save.method, save.url.path) == ("POST", "/v1/text-to-voice")
    assert json.loads(save.content) == {
        "voice_name": "Calm",
        "voice_description": "A calm narrator with a low voice.",
        "generated_voice_id": "gen_1",
        "labels": {"age": "old"},
    }
    assert (voice.voice_id, voice.category) == ("v_saved", "generated")
    assert (stream.method, stream.url.path) == ("GET", "/v1/text-to-voice/gen_1/stream")
    assert audio == b"aabb"


def test_sound_effects_report_their_character_cost(engine_for):
    script = Script(httpx.Response(200, content=b"boom", headers={"character-cost": "40"}))
    engine = engine_for(script)

    result = engine.sound_effect(
        SoundRequest(text="door slam", duration_seconds=2.0, output_format="mp3_44100_64")
    )

    assert script.last.url.path == "/v1/sound-generation"
    assert dict(script.last.url.params) == {"output_format": "mp3_44100_64"}
    assert json.loads(script.last.content) == {
        "text": "door slam",
        "loop": False,
        "prompt_influence": 0.3,
        "model_id": "eleven_text_to_sound_v2",
        "duration_seconds": 2.0,
    }
    assert (result.audio, result.duration_secs, result.info.character_cost) == (b"boom", 2.0, 40.0)


def test_music_keeps_the_song_id(engine_for):
    script = Script(httpx.Response(200, content=b"song", headers={"song-id": "song_7"}))
    engine = engine_for(script)

    result = engine.music(
        MusicRequest(prompt="lofi beat", music_length_ms=10_000, force_instrumental=True)
    )

    assert script.last.url.path == "/v1/music"
    assert json.loads(script.last.content) == {
        "prompt": "lofi beat",
        "model_id": "music_v1",
        "force_instrumental": True,
        "music_length_ms": 10000,
    }
    assert result.extra == {"song_id": "song_7"}
    assert result.duration_secs == 10.0


def test_dubbing_is_started_polled_and_downloaded(engine_for):
    script = Script(
        httpx.Response(200, json={"dubbing_id": "dub_1", "expected_duration_sec": 30}),
        httpx.Response(
            200,
            json={
                "dubbing_id": "dub_1",
                "name": "Talk",
                "status": "dubbed",
                "target_languages": ["es"],
                "source_language": "en",
                "error": None,
            },
        ),
        httpx.Response(200, content=b"dubbed-mp3", headers={"content-type": "audio/mpeg"}),
        httpx.Response(200, text="1\n00:00:00,000 --> 00:00:01,000\nHola\n"),
    )
    engine = engine_for(script)

    started = engine.dubbing_start(
        DubbingRequest(audio=b"MP3", filename="talk.mp3", target_lang="es", name="Talk")
    )
    status = engine.dubbing_status("dub_1")
    audio = engine.dubbing_audio("dub_1", "es")
    srt = engine.dubbing_transcript("dub_1", "es")

    start, poll, download, transcript = script.requests
    assert (start.method, start.url.path) == ("POST", "/v1/dubbing")
    assert sorted(form_fields(start)) == [
        ("name", "Talk"),
        ("num_speakers", "0"),
        ("source_lang", "auto"),
        ("target_lang", "es"),
    ]
    assert [(n, f) for n, f, _ in form_parts(start) if f] == [("file", "talk.mp3")]
    assert (started.dubbing_id, started.expected_duration_sec) == ("dub_1", 30.0)
    assert poll.url.path == "/v1/dubbing/dub_1"
    assert (status.status, status.target_languages, status.source_language) == (
        "dubbed",
        ["es"],
        "en",
    )
    assert download.url.path == "/v1/dubbing/dub_1/audio/es"
    assert (audio.audio, audio.content_type) == (b"dubbed-mp3", "audio/mpeg")
    assert transcript.url.path == "/v1/dubbing/dub_1/transcript/es"
    assert dict(transcript.url.params) == {"format_type": "srt"}
    assert "Hola" in srt


def test_account_calls_map_models_user_subscription_and_history(engine_for):
    subscription = {
        "tier": "creator",
        "character_count": 1200,
        "character_limit": 100000,
        "next_character_count_reset_unix": 1800000000,
        "status": "active",
        "currency": "usd",
    }
    script = Script(
        httpx.Response(
            200,
            json=[
                {
                    "model_id": "eleven_v3",
                    "name": "Eleven v3",
                    "can_do_text_to_speech": True,
                    "maximum_text_length_per_request": 3000,
                    "languages": [{"language_id": "en", "name": "English"}],
                    "token_cost_factor": 1.0,
                }
            ],
        ),
        httpx.Response(
            200, json={"user_id": "u1", "first_name": "Ada", "subscription": subscription}
        ),
        httpx.Response(200, json=subscription),
        httpx.Response(
            200,
            json={
                "history": [
                    {
                        "history_item_id": "h1",
                        "voice_id": "v1",
                        "voice_name": "Rachel",
                        "text": "Hi",
                        "date_unix": 1700000000,
                        "character_count_change_from": 10,
                        "character_count_change_to": 12,
                        "content_type": "audio/mpeg",
                        "state": "created",
                        "model_id": "eleven_v3",
                    }
                ],
                "last_history_item_id": "h1",
                "has_more": False,
            },
        ),
    )
    engine = engine_for(script)

    models = engine.models()
    user = engine.user()
    sub = engine.subscription()
    history = engine.history(page_size=1, start_after="h0")

    assert [r.url.path for r in script.requests] == [
        "/v1/models",
        "/v1/user",
        "/v1/user/subscription",
        "/v1/history",
    ]
    assert dict(script.requests[3].url.params) == {
        "page_size": "1",
        "start_after_history_item_id": "h0",
    }
    assert (models[0].model_id, models[0].maximum_text_length_per_request) == ("eleven_v3", 3000)
    assert models[0].languages == [{"language_id": "en", "name": "English"}]
    assert (user.user_id, user.first_name, user.subscription.tier) == ("u1", "Ada", "creator")
    assert (sub.character_count, sub.character_limit, sub.currency) == (1200, 100000, "usd")
    assert sub.raw["tier"] == "creator"
    item = history.items[0]
    assert (item.history_item_id, item.character_count_change_to, history.has_more) == (
        "h1",
        12,
        False,
    )


def test_a_voice_is_looked_up_and_deleted(engine_for):
    script = Script(
        httpx.Response(
            200,
            json={
                "voice_id": "v1",
                "name": "Rachel",
                "category": "cloned",
                "labels": {},
                "description": "Mine",
            },
        ),
        httpx.Response(200, json={"status": "ok"}),
    )
    engine = engine_for(script)

    voice = engine.voice("v1")
    engine.voice_delete("v1")

    assert [(r.method, r.url.path) for r in script.requests] == [
        ("GET", "/v1/voices/v1"),
        ("DELETE", "/v1/voices/v1"),
    ]
    assert (voice.name, voice.category, voice.description) == ("Rachel", "cloned", "Mine")


# --- Streams ----------------------------------------------------------------------------


def test_a_tts_stream_yields_audio_as_it_arrives_and_counts_what_was_delivered(engine_for):
    body = Body(b"one", b"two", b"three")
    script = Script(httpx.Response(200, stream=body, headers={"request-id": "req_s"}))
    engine = engine_for(script)

    stream = engine.tts_stream(tts_request())
    chunks = iter(stream)
    first = next(chunks)

    assert script.last.url.path == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream"
    assert first.audio == b"one"
    assert body.produced == 1  # nothing more was read before the caller asked for it
    assert [c.audio for c in chunks] == [b"two", b"three"]
    assert stream.delivered_bytes == len(b"onetwothree")
    assert stream.info.request_id == "req_s"
    assert body.closed


def test_closing_a_stream_closes_the_http_response(engine_for):
    body = Body(b"one", b"two", b"three")
    engine = engine_for(Script(httpx.Response(200, stream=body)))

    stream = engine.tts_stream(tts_request())
    next(iter(stream))
    stream.close()

    assert body.closed
    assert stream.closed
    assert body.produced == 1


def test_a_stream_with_timestamps_yields_audio_with_each_chunks_alignment(engine_for):
    lines = [
        {
            "audio_base64": base64.b64encode(b"aa").decode(),
            "alignment": {
                "characters": ["H"],
                "character_start_times_seconds": [0.0],
                "character_end_times_seconds": [0.1],
            },
        },
        {"audio_base64": base64.b64encode(b"bb").decode(), "alignment": None},
    ]
    payload = "\n".join(json.dumps(line) for line in lines).encode() + b"\n\n"
    script = Script(httpx.Response(200, stream=Body(payload[:30], payload[30:])))
    engine = engine_for(script)

    chunks = list(engine.tts_stream(tts_request(), with_timestamps=True))

    assert script.last.url.path.endswith("/stream/with-timestamps")
    assert [c.audio for c in chunks] == [b"aa", b"bb"]
    assert chunks[0].alignment.characters == ["H"]
    assert chunks[1].alignment is None


def test_a_stream_that_breaks_before_its_first_byte_is_retried(engine_for):
    script = Script(
        httpx.Response(200, stream=Body(b"never", fail_at=0)),
        httpx.Response(200, stream=Body(b"audio")),
    )
    engine = engine_for(script)

    stream = engine.tts_stream(tts_request())

    assert [c.audio for c in stream] == [b"audio"]
    assert stream.info.attempts == 2
    assert len(script.requests) == 2


def test_a_stream_that_breaks_after_its_first_byte_is_not_retried(engine_for):
    script = Script(httpx.Response(200, stream=Body(b"part-1", b"part-2", fail_at=1)), OK_AUDIO)
    engine = engine_for(script)

    stream = engine.tts_stream(tts_request())
    received = []
    with pytest.raises(UpstreamUnavailable, match="broke off after 6 bytes"):
        for chunk in stream:
            received.append(chunk.audio)

    assert received == [b"part-1"]
    assert stream.info.attempts == 1
    assert len(script.requests) == 1


def test_a_stream_refused_with_an_error_status_raises_the_typed_error(engine_for):
    script = Script(error(401, shape_b("invalid_api_key", "Invalid API key")))
    engine = engine_for(script)

    with pytest.raises(AuthenticationFailed, match="Invalid API key"):
        engine.tts_stream(tts_request())
    assert len(script.requests) == 1


def test_streams_cannot_ask_for_wav(engine_for):
    engine = engine_for(Script(OK_AUDIO))

    with pytest.raises(InvalidRequest):
        engine.tts_stream(tts_request(output_format="wav_44100"))


# --- Logging ----------------------------------------------------------------------------


def engine_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def test_the_api_key_appears_in_no_log_record_at_any_level(engine_for, caplog):
    caplog.set_level(logging.DEBUG)
    script = Script(
        SERVER_ERROR,
        httpx.ConnectError("refused"),
        OK_AUDIO,
        error(401, shape_b("invalid_api_key", "Invalid API key")),
        httpx.Response(200, stream=Body(b"a", b"b")),
    )
    engine = engine_for(script)

    engine.tts(tts_request())
    with pytest.raises(AuthenticationFailed):
        engine.voices(VoiceQuery())
    list(engine.tts_stream(tts_request()))

    assert caplog.records
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(record.__dict__)
    assert KEY not in repr(engine)


def test_each_call_logs_exactly_one_structured_line(engine_for, caplog):
    caplog.set_level(logging.DEBUG)
    script = Script(
        BUSY,
        httpx.Response(200, content=b"mp3", headers={"request-id": "req_1"}),
        error(404, shape_b("voice_not_found", "Voice not found.")),
        httpx.Response(200, stream=Body(b"a", b"b")),
    )
    engine = engine_for(script)

    engine.tts(tts_request())
    with pytest.raises(InvalidRequest):
        engine.voice("nope")
    list(engine.tts_stream(tts_request()))

    ok, failed, streamed = engine_records(caplog)
    assert ok.levelno == logging.INFO
    assert (ok.workspace, ok.capability, ok.method, ok.path) == (
        "acme",
        "tts",
        "POST",
        "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM",
    )
    assert (ok.status, ok.attempts, ok.request_id) == (200, 2, "req_1")
    assert ok.latency_ms >= 0
    assert "request_id=req_1" in ok.getMessage()
    assert failed.levelno == logging.WARNING
    assert (failed.capability, failed.status, failed.attempts, failed.error) == (
        "voice",
        404,
        1,
        "invalid_request",
    )
    assert (streamed.capability, streamed.outcome, streamed.bytes) == ("tts_stream", "complete", 2)


# --- Async TTS stream -------------------------------------------------------------------


def test_the_async_client_streams_tts_after_retrying_a_busy_answer():
    script = Script(
        BUSY, httpx.Response(200, content=b"async-audio", headers={"request-id": "req_a"})
    )
    sleeps: list[float] = []

    async def sleep(delay):
        sleeps.append(delay)

    async def run():
        async with AsyncElevenLabsClient(
            KEY, transport=httpx.MockTransport(script), sleep=sleep, rng=lambda: 0.5
        ) as client:
            stream = await client.tts_stream(tts_request(output_format="pcm_24000"))
            audio = b"".join([chunk.audio async for chunk in stream])
            return stream, audio

    stream, audio = asyncio.run(run())

    assert audio == b"async-audio"
    assert (stream.info.attempts, stream.info.request_id, stream.delivered_bytes) == (
        2,
        "req_a",
        11,
    )
    assert sleeps == [0.25]
    assert dict(script.last.url.params) == {"output_format": "pcm_24000"}
    assert script.last.headers["xi-api-key"] == KEY


def test_the_async_client_raises_quota_errors_without_retrying():
    script = Script(error(401, shape_b("quota_exceeded", "Out of credits.")))

    async def run():
        async with AsyncElevenLabsClient(KEY, transport=httpx.MockTransport(script)) as client:
            await client.tts_stream(tts_request())

    with pytest.raises(QuotaExceeded, match="Out of credits."):
        asyncio.run(run())
    assert len(script.requests) == 1


# --- Realtime speech to text ------------------------------------------------------------


# The realtime servers below listen on 127.0.0.1: the engines that talk to them allow loopback.
LOOPBACK = EgressPolicy(allow_loopback=True)


@contextmanager
def realtime_server(handler, process_request=None):
    """A scripted realtime STT endpoint on a local socket; yields its http:// base URL."""
    # The stand-in server logs what it receives (the key too); only the client is under test.
    quiet = logging.getLogger("tests.realtime_server")
    quiet.setLevel(logging.WARNING)
    server = serve(handler, "127.0.0.1", 0, process_request=process_request, logger=quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.socket.getsockname()[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_a_realtime_session_sends_pcm_and_returns_partial_then_committed_transcripts(caplog):
    caplog.set_level(logging.DEBUG)
    seen: dict = {"messages": []}

    def handler(ws):
        seen["path"] = ws.request.path
        seen["key"] = ws.request.headers.get("xi-api-key")
        ws.send(
            json.dumps({"message_type": "session_started", "session_id": "sess_1", "config": {}})
        )
        for raw in ws:
            message = json.loads(raw)
            seen["messages"].append(message)
            if message["commit"]:
                ws.send(json.dumps({"message_type": "committed_transcript", "text": "hello world"}))
                ws.send(
                    json.dumps(
                        {
                            "message_type": "committed_transcript_with_timestamps",
                            "text": "hello world",
                            "language_code": "en",
                            "words": [
                                {
                                    "text": "hello",
                                    "start": 0.1,
                                    "end": 0.4,
                                    "type": "word",
                                    "logprob": 0,
                                },
                                {
                                    "text": "world",
                                    "start": 0.5,
                                    "end": 0.9,
                                    "type": "word",
                                    "logprob": 0,
                                },
                            ],
                        }
                    )
                )
            else:
                ws.send(json.dumps({"message_type": "partial_transcript", "text": "hello"}))

    with realtime_server(handler) as base_url:
        engine = ElevenLabsEngine(KEY, base_url, workspace="acme", egress=LOOPBACK)
        session = engine.stt_realtime(
            language_code="en", include_timestamps=True, keyterms=["Chorus"]
        )
        events = session.send_audio(b"\x00\x01" * 160)
        events += session.commit()
        events += session.close()
        engine.close()

    assert seen["key"] == KEY
    assert seen["path"].startswith("/v1/speech-to-text/realtime?")
    assert "audio_format=pcm_16000" in seen["path"] and "commit_strategy=manual" in seen["path"]
    assert "include_timestamps=true" in seen["path"] and "keyterms=Chorus" in seen["path"]
    audio, commit = seen["messages"]
    assert audio == {
        "message_type": "input_audio_chunk",
        "audio_base_64": base64.b64encode(b"\x00\x01" * 160).decode(),
        "commit": False,
        "sample_rate": 16000,
    }
    assert (commit["commit"], commit["audio_base_64"]) == (True, "")
    kinds = [e.message_type for e in events]
    assert kinds == [
        "partial_transcript",
        "committed_transcript",
        "committed_transcript_with_timestamps",
    ]
    final = events[-1]
    assert (final.text, final.start, final.end) == ("hello world", 0.1, 0.9)
    assert [w.text for w in final.words] == ["hello", "world"]
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(record.__dict__)
    (line,) = engine_records(caplog)
    assert (line.capability, line.request_id, line.audio_bytes) == ("stt_realtime", "sess_1", 320)


def test_a_realtime_session_refused_for_a_bad_key_is_an_authentication_failure():
    def refuse(connection, request):
        return connection.respond(401, json.dumps(shape_b("invalid_api_key", "Invalid API key")))

    with realtime_server(lambda ws: None, process_request=refuse) as base_url:
        engine = ElevenLabsEngine(KEY, base_url, sleep=lambda _: None, egress=LOOPBACK)
        with pytest.raises(AuthenticationFailed, match="Invalid API key"):
            engine.stt_realtime()
        engine.close()


def test_a_realtime_error_message_at_start_becomes_a_typed_error():
    def handler(ws):
        ws.send(json.dumps({"message_type": "quota_exceeded", "error": "No credits left."}))

    with realtime_server(handler) as base_url:
        engine = ElevenLabsEngine(KEY, base_url, egress=LOOPBACK)
        with pytest.raises(QuotaExceeded, match="No credits left."):
            engine.stt_realtime()
        engine.close()


# --- Replies of the wrong shape ---------------------------------------------------------

UNEXPECTED = "ElevenLabs returned an unexpected response"


def alignment_with_a_null() -> dict:
    return {
        "audio_base64": base64.b64encode(b"PCM").decode(),
        "alignment": {
            "characters": ["H", "i"],
            "character_start_times_seconds": [0.0, None],
            "character_end_times_seconds": [0.1, 0.2],
        },
    }


@pytest.mark.parametrize(
    ("capability", "call", "body"),
    [
        ("voices", lambda e: e.voices(VoiceQuery()), [1]),
        ("voices", lambda e: e.voices(VoiceQuery()), {"voices": [1]}),
        ("voice", lambda e: e.voice("v1"), "a voice"),
        ("tts", lambda e: e.tts(tts_request(), with_timestamps=True), alignment_with_a_null()),
        ("tts", lambda e: e.tts(tts_request(), with_timestamps=True), [1]),
        ("stt", lambda e: e.stt(STTRequest(audio=b"RIFF")), {"words": [None]}),
        ("voice_clone", lambda e: e.voice_clone(CloneRequest("n", [("a.mp3", b"x")])), [1]),
        ("voice_design", lambda e: e.voice_design(DesignRequest("x")), {"previews": [1]}),
        ("dubbing_status", lambda e: e.dubbing_status("d1"), []),
        ("models", lambda e: e.models(), {"models": []}),
        ("user", lambda e: e.user(), {"subscription": [1]}),
        ("subscription", lambda e: e.subscription(), {"character_count": "many"}),
        ("history", lambda e: e.history(), {"history": ["item"]}),
    ],
)
def test_a_reply_of_the_wrong_shape_is_upstream_unavailable_and_logged_once(
    engine_for, caplog, capability, call, body
):
    caplog.set_level(logging.DEBUG)
    script = Script(httpx.Response(200, json=body, headers={"request-id": "req_bad"}))
    engine = engine_for(script)

    with pytest.raises(UpstreamUnavailable, match=UNEXPECTED) as raised:
        call(engine)

    assert raised.value.request_id == "req_bad"
    assert len(script.requests) == 1  # a reply that arrived is not retried
    (record,) = engine_records(caplog)
    assert record.levelno == logging.WARNING
    assert (record.capability, record.status, record.error) == (
        capability,
        200,
        "upstream_unavailable",
    )


def test_a_list_where_the_voices_page_belongs_says_what_arrived(engine_for):
    engine = engine_for(Script(httpx.Response(200, json=[1])))

    with pytest.raises(UpstreamUnavailable) as raised:
        engine.voices(VoiceQuery())

    assert raised.value.message == f"{UNEXPECTED}: expected a JSON object, got a list."


def test_a_list_line_in_the_middle_of_a_timestamped_stream_breaks_it_cleanly(engine_for, caplog):
    caplog.set_level(logging.DEBUG)
    good = {"audio_base64": base64.b64encode(b"aa").decode(), "alignment": None}
    body = Body(json.dumps(good).encode() + b"\n", b"[1]\n", b'{"audio_base64": ""}\n')
    script = Script(httpx.Response(200, stream=body, headers={"request-id": "req_nd"}))
    engine = engine_for(script)

    stream = engine.tts_stream(tts_request(), with_timestamps=True)
    received = []
    with pytest.raises(UpstreamUnavailable, match=UNEXPECTED) as raised:
        for chunk in stream:
            received.append(chunk.audio)

    assert received == [b"aa"]
    assert raised.value.request_id == "req_nd"
    assert body.closed
    (record,) = engine_records(caplog)
    assert (record.outcome, record.error, record.bytes) == ("broken", "upstream_unavailable", 2)


def test_a_timestamped_stream_whose_first_line_has_the_wrong_shape_is_closed_and_logged(
    engine_for, caplog
):
    caplog.set_level(logging.DEBUG)
    line = {"audio_base64": "", "alignment": {"character_end_times_seconds": [None]}}
    body = Body(json.dumps(line).encode() + b"\n")
    engine = engine_for(Script(httpx.Response(200, stream=body)))

    with pytest.raises(UpstreamUnavailable, match=UNEXPECTED):
        engine.tts_stream(tts_request(), with_timestamps=True)

    assert body.closed
    (record,) = engine_records(caplog)
    assert (record.status, record.error) == (200, "upstream_unavailable")


def test_the_async_client_breaks_a_stream_with_a_wrong_shaped_line_cleanly(caplog):
    caplog.set_level(logging.DEBUG)
    good = {"audio_base64": base64.b64encode(b"aa").decode()}
    body = AsyncBody(json.dumps(good).encode() + b"\n", b"[1]\n")
    script = Script(httpx.Response(200, stream=body))

    async def run():
        async with AsyncElevenLabsClient(KEY, transport=httpx.MockTransport(script)) as client:
            stream = await client.tts_stream(tts_request(), with_timestamps=True)
            received = []
            with pytest.raises(UpstreamUnavailable, match=UNEXPECTED):
                async for chunk in stream:
                    received.append(chunk.audio)
            return received

    assert asyncio.run(run()) == [b"aa"]
    assert body.closed
    (record,) = engine_records(caplog)
    assert (record.outcome, record.error) == ("broken", "upstream_unavailable")


# --- Streams that are interrupted -------------------------------------------------------


class SoftTimeLimitExceeded(BaseException):
    """Stands in for Celery's, raised from a signal into whatever the task is doing; a
    BaseException here, so only a handler that catches everything closes the response."""


class Interrupting(Body):
    """A body that raises ``exc`` (any BaseException) when piece ``at`` is asked for."""

    def __init__(self, *pieces: bytes, at: int, exc: BaseException):
        super().__init__(*pieces)
        self.at = at
        self.exc = exc

    def __iter__(self):
        for index, piece in enumerate(self.pieces):
            if index == self.at:
                raise self.exc
            self.produced += 1
            yield piece


class AsyncBody(httpx.AsyncByteStream):
    """An async body that arrives piece by piece; ``hang_at`` waits forever at that piece."""

    def __init__(self, *pieces: bytes, hang_at: int | None = None):
        self.pieces = pieces
        self.hang_at = hang_at
        self.closed = False

    async def __aiter__(self):
        for index, piece in enumerate(self.pieces):
            if index == self.hang_at:
                await asyncio.Event().wait()
            yield piece

    async def aclose(self):
        self.closed = True


def test_a_stream_interrupted_mid_way_closes_its_response_and_logs_once(engine_for, caplog):
    caplog.set_level(logging.DEBUG)
    body = Interrupting(b"one", b"two", at=1, exc=SoftTimeLimitExceeded())
    engine = engine_for(Script(httpx.Response(200, stream=body)))

    stream = engine.tts_stream(tts_request())
    chunks = iter(stream)
    assert next(chunks).audio == b"one"
    with pytest.raises(SoftTimeLimitExceeded):
        next(chunks)

    assert body.closed
    (record,) = engine_records(caplog)
    assert record.levelno == logging.WARNING
    assert (record.outcome, record.interrupted, record.bytes) == (
        "aborted",
        "SoftTimeLimitExceeded",
        3,
    )


@pytest.mark.parametrize("exc", [SoftTimeLimitExceeded(), KeyboardInterrupt(), RuntimeError("x")])
def test_a_stream_interrupted_before_its_first_byte_closes_its_response(engine_for, caplog, exc):
    caplog.set_level(logging.DEBUG)
    body = Interrupting(b"one", at=0, exc=exc)
    script = Script(httpx.Response(200, stream=body), OK_AUDIO)
    engine = engine_for(script)

    with pytest.raises(type(exc)):
        engine.voice_design_stream("gen_1")

    assert body.closed
    assert len(script.requests) == 1
    (record,) = engine_records(caplog)
    assert (record.outcome, record.interrupted) == ("aborted", type(exc).__name__)


def test_closing_a_tts_stream_early_closes_the_response_and_logs_what_was_delivered(
    engine_for, caplog
):
    caplog.set_level(logging.DEBUG)
    body = Body(b"one", b"two", b"three")
    engine = engine_for(Script(httpx.Response(200, stream=body)))

    stream = engine.tts_stream(tts_request())
    next(iter(stream))
    stream.close()

    assert body.closed
    assert list(stream) == []  # nothing more comes out of a closed stream
    (record,) = engine_records(caplog)
    assert record.levelno == logging.INFO
    assert (record.outcome, record.bytes) == ("closed", 3)
    assert stream.delivered_bytes == 3


def test_a_tts_stream_closed_before_it_was_read_delivers_nothing(engine_for, caplog):
    caplog.set_level(logging.DEBUG)
    body = Body(b"one", b"two")
    engine = engine_for(Script(httpx.Response(200, stream=body)))

    stream = engine.tts_stream(tts_request())
    stream.close()

    assert body.closed
    assert list(stream) == []
    (record,) = engine_records(caplog)
    assert (record.outcome, record.bytes) == ("closed", 0)


def test_the_async_client_closes_a_cancelled_stream_and_logs_once(caplog):
    caplog.set_level(logging.DEBUG)
    body = AsyncBody(b"one", b"two", hang_at=1)
    script = Script(httpx.Response(200, stream=body))

    async def run():
        async with AsyncElevenLabsClient(KEY, transport=httpx.MockTransport(script)) as client:
            stream = await client.tts_stream(tts_request())
            first = await anext(stream)
            task = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return first

    assert asyncio.run(run()).audio == b"one"
    assert body.closed
    (record,) = engine_records(caplog)
    assert (record.outcome, record.interrupted, record.bytes) == ("aborted", "CancelledError", 3)


def test_the_async_client_closes_a_stream_cancelled_before_its_first_byte(caplog):
    caplog.set_level(logging.DEBUG)
    body = AsyncBody(b"one", hang_at=0)
    script = Script(httpx.Response(200, stream=body))

    async def run():
        async with AsyncElevenLabsClient(KEY, transport=httpx.MockTransport(script)) as client:
            task = asyncio.ensure_future(client.tts_stream(tts_request()))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    assert body.closed
    (record,) = engine_records(caplog)
    assert (record.outcome, record.interrupted) == ("aborted", "CancelledError")


# --- Permissions, retry headers, closing --------------------------------------------------


def test_a_401_for_a_missing_permission_is_not_supported_not_an_auth_failure(engine_for):
    message = "The API key you used is missing the permission text_to_speech to execute this."
    script = Script(error(401, shape_b("missing_permissions", message)), OK_AUDIO)
    engine = engine_for(script)

    with pytest.raises(NotSupported) as raised:
        engine.tts(tts_request())

    assert raised.value.message == (
        f"Your ElevenLabs API key lacks a permission this needs: {message}"
    )
    assert raised.value.upstream_status == 401
    assert len(script.requests) == 1


def test_a_realtime_session_refused_for_a_missing_permission_is_not_supported():
    def refuse(connection, request):
        body = shape_b("missing_permissions", "Missing speech_to_text permission.")
        return connection.respond(401, json.dumps(body))

    with realtime_server(lambda ws: None, process_request=refuse) as base_url:
        engine = ElevenLabsEngine(KEY, base_url, sleep=lambda _: None, egress=LOOPBACK)
        with pytest.raises(NotSupported, match="lacks a permission"):
            engine.stt_realtime()
        engine.close()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after-ms": "nan"}, None),
        ({"retry-after-ms": "Infinity"}, None),
        ({"retry-after-ms": "-1"}, None),
        ({"retry-after-ms": "nan", "retry-after": "2"}, 2.0),
        ({"retry-after": "inf", "x-ratelimit-reset": "3"}, 3.0),
        ({"x-ratelimit-reset": "inf"}, None),
        ({"x-ratelimit-reset": "-3"}, None),
        ({"retry-after": "0"}, 0.0),
    ],
)
def test_server_delays_that_are_not_finite_non_negative_numbers_are_ignored(headers, expected):
    assert server_delay(headers, now=1_700_000_000) == expected


def test_a_429_asking_for_an_infinite_wait_gets_the_usual_backoff(engine_for):
    script = Script(
        error(429, shape_b("system_busy", "Busy."), headers={"Retry-After": "inf"}), OK_AUDIO
    )
    engine = engine_for(script)

    assert engine.tts(tts_request()).info.attempts == 2
    assert engine.sleeps == [0.25]


def test_closing_the_engine_closes_its_http_client(engine_for):
    engine = engine_for(Script(OK_AUDIO))
    engine.tts(tts_request())

    engine.close()

    assert engine._client.is_closed


# --- Calls that create something --------------------------------------------------------

CREATES = [
    ("/v1/voices/add", lambda e: e.voice_clone(CloneRequest("Mine", [("a.mp3", b"x")]))),
    ("/v1/dubbing", lambda e: e.dubbing_start(DubbingRequest(b"x", "a.mp4", "es"))),
    (
        "/v1/text-to-voice",
        lambda e: e.voice_design_save(SaveDesignRequest("gen_1", "Name", "A calm voice.")),
    ),
]
CREATED = httpx.Response(200, json={"voice_id": "v_new", "dubbing_id": "d_new"})


@pytest.mark.parametrize(("path", "create"), CREATES)
@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.WriteError("broken pipe"),
        SERVER_ERROR,
        error(502, text="Bad gateway"),
        error(408, shape_b("request_timeout", "Timed out.")),
        error(409, shape_b("conflict", "Conflict.")),
    ],
)
def test_a_create_that_may_have_reached_the_server_is_not_retried(
    engine_for, path, create, failure
):
    script = Script(failure, CREATED)
    engine = engine_for(script)

    with pytest.raises(UpstreamUnavailable, match="may have gone through"):
        create(engine)

    assert script.last.url.path == path
    assert len(script.requests) == 1
    assert engine.sleeps == []


@pytest.mark.parametrize(("path", "create"), CREATES)
@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("connect timed out"),
        error(429, shape_b("too_many_concurrent_requests", "Too many.")),
    ],
)
def test_a_create_refused_before_it_was_sent_or_read_is_retried(engine_for, path, create, failure):
    script = Script(failure, CREATED)
    engine = engine_for(script)

    create(engine)

    assert [r.url.path for r in script.requests] == [path, path]
    assert len(engine.sleeps) == 1


def test_a_create_out_of_quota_is_still_not_retried(engine_for):
    script = Script(error(429, shape_b("quota_exceeded", "No credits.")), CREATED)
    engine = engine_for(script)

    with pytest.raises(QuotaExceeded):
        engine.voice_clone(CloneRequest("Mine", [("a.mp3", b"x")]))
    assert len(script.requests) == 1


def test_reads_and_syntheses_are_still_retried_after_a_read_timeout(engine_for):
    script = Script(httpx.ReadTimeout("read timed out"), OK_AUDIO)
    engine = engine_for(script)

    assert engine.tts(tts_request()).info.attempts == 2
