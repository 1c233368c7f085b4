"""The /v1 API's refusals in ElevenLabs' shapes, and what a refused call leaves in the ledger."""

import io
import json
import threading
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import pytest
from django.test import Client
from django.utils import timezone

from apps.billing.models import Budget, UsageEvent, UsageSource, UsageStatus
from apps.billing.services import metered
from apps.engines.base import (
    AuthenticationFailed,
    InvalidRequest,
    NotSupported,
    QuotaExceeded,
    RateLimited,
    UpstreamUnavailable,
)
from apps.gateway import services
from apps.gateway.models import ApiKey
from apps.workspaces.services import engine_settings_update

VOICE = "local-joe"
TTS = f"/v1/text-to-speech/{VOICE}"
SHAPE_A = {"type", "code", "message", "status", "request_id"}


@pytest.fixture
def issued(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="Script")


def post(raw, path=TTS, body=None, *, content_type="application/json", data=None, **headers):
    if raw is not None:
        headers["HTTP_XI_API_KEY"] = raw
    payload = data if data is not None else json.dumps(body if body is not None else {})
    return Client().post(path, payload, content_type=content_type, **headers)


def get(raw, path, **query):
    headers = {"HTTP_XI_API_KEY": raw} if raw is not None else {}
    return Client().get(path, query, **headers)


def detail_of(response) -> dict:
    detail = response.json()["detail"]
    assert isinstance(detail, dict), detail
    assert set(detail) >= SHAPE_A, detail
    assert detail["status"] == detail["code"]
    assert detail["request_id"] == response["request-id"]
    return detail


def errors_of(response) -> list[dict]:
    assert response.status_code == 422, response.content
    errors = response.json()["detail"]
    assert isinstance(errors, list) and errors
    for error in errors:
        assert {"loc", "msg", "type"} <= set(error)
    assert response["request-id"]
    return errors


def on_elevenlabs(workspace, owner, base_url="http://127.0.0.1:9"):
    """The workspace's engine becomes ElevenLabs (at ``base_url``): calls cost credits."""
    engine_settings_update(
        workspace=workspace, actor=owner, kind="elevenlabs", api_key="sk-test", base_url=base_url
    )


# --- Keys and scopes ----------------------------------------------------------------------


def test_a_call_without_a_key_is_refused_with_needs_authorization(workspace):
    response = post(None, body={"text": "Hello"})
    assert response.status_code == 401
    detail = detail_of(response)
    assert (detail["type"], detail["code"]) == ("authentication_error", "needs_authorization")


def test_an_unknown_key_is_refused_as_invalid(workspace):
    response = post("chorus_not-a-real-key", body={"text": "Hello"})
    assert response.status_code == 401
    assert detail_of(response)["code"] == "invalid_api_key"


def test_a_revoked_key_is_refused(issued, member):
    services.api_key_revoke(api_key=issued.api_key, actor=member)
    response = post(issued.raw, body={"text": "Hello"})
    assert response.status_code == 401
    detail = detail_of(response)
    assert detail["code"] == "invalid_api_key" and "revoked" in detail["message"]


def test_an_expired_key_is_refused(issued):
    ApiKey.objects.filter(pk=issued.api_key.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    response = get(issued.raw, "/v1/voices")
    assert response.status_code == 401
    assert "expired" in detail_of(response)["message"]


def test_a_key_without_the_scope_is_forbidden_and_one_with_it_passes(workspace, member):
    voices_only = services.api_key_create(
        workspace=workspace, user=member, name="Voices", scopes=["voices"]
    )
    for response in (
        post(voices_only.raw, body={"text": "Hello"}),
        get(voices_only.raw, "/v1/models"),
        get(voices_only.raw, "/v1/user/subscription"),
    ):
        assert response.status_code == 403
        detail = detail_of(response)
        assert (detail["type"], detail["code"]) == ("authorization_error", "missing_permissions")
    assert get(voices_only.raw, "/v1/voices").status_code == 200
    assert UsageEvent.objects.count() == 0


def test_the_wrong_method_is_a_405_in_the_error_shape(issued):
    response = get(issued.raw, TTS)
    assert response.status_code == 405
    assert detail_of(response)["code"] == "method_not_allowed"
    assert response["Allow"] == "POST"


# --- Validation (422, FastAPI's list shape) ------------------------------------------------


def test_a_body_without_text_is_a_422_naming_the_field(issued):
    errors = errors_of(post(issued.raw, body={"model_id": "eleven_multilingual_v2"}))
    assert errors == [{"type": "missing", "loc": ["body", "text"], "msg": "Field required"}]


def test_wrong_types_are_each_reported_where_they_are(issued):
    body = {
        "text": 5,
        "seed": "seven",
        "voice_settings": {"stability": 2, "use_speaker_boost": "yes"},
        "apply_text_normalization": "sometimes",
        "previous_request_ids": ["a", 3],
    }
    errors = errors_of(post(issued.raw, body=body))
    by_loc = {tuple(e["loc"]): e["type"] for e in errors}
    assert by_loc == {
        ("body", "text"): "string_type",
        ("body", "seed"): "int_type",
        ("body", "voice_settings", "stability"): "less_than_equal",
        ("body", "voice_settings", "use_speaker_boost"): "bool_type",
        ("body", "apply_text_normalization"): "enum",
        ("body", "previous_request_ids", 1): "string_type",
    }
    assert UsageEvent.objects.count() == 0


def test_malformed_json_is_a_422_json_invalid(issued):
    errors = errors_of(post(issued.raw, data='{"text": "Hello",'))
    assert errors[0]["type"] == "json_invalid" and errors[0]["loc"][0] == "body"


@pytest.mark.parametrize(
    "payload,content_type",
    [
        ("text=Hello", "application/x-www-form-urlencoded"),
        ("Hello", "text/plain"),
        ('["Hello"]', "application/json"),
        ("", "application/json"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_422(issued, payload, content_type):
    errors = errors_of(post(issued.raw, data=payload, content_type=content_type))
    assert errors[0]["loc"] == ["body"]
    assert errors[0]["type"] in ("model_attributes_type", "missing")


@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text_is_a_422_not_a_call(issued, text):
    errors = errors_of(post(issued.raw, body={"text": text}))
    assert errors[0]["loc"] == ["body", "text"]
    assert UsageEvent.objects.count() == 0


def test_text_with_nothing_to_speak_is_a_422_from_the_engine_and_refunded(issued):
    errors = errors_of(post(issued.raw, body={"text": "... !!"}))
    assert errors[0]["loc"] == ["body", "text"]
    assert list(UsageEvent.objects.values_list("status", flat=True)) == [UsageStatus.REFUNDED]


@pytest.mark.parametrize("text", ["nul \u0000 inside", "a lone \ud800 surrogate"])
def test_text_that_is_not_text_is_a_422_not_a_crash(issued, text):
    errors = errors_of(post(issued.raw, data=json.dumps({"text": text})))
    assert [(e["loc"], e["type"]) for e in errors] == [(["body", "text"], "string_unicode")]


def test_a_nan_is_refused_and_the_error_body_stays_strict_json(issued):
    response = post(issued.raw, data='{"text": "Hi", "voice_settings": {"stability": NaN}}')
    errors = errors_of(response)
    assert errors == [
        {
            "type": "float_type",
            "loc": ["body", "voice_settings", "stability"],
            "msg": "Input should be a valid number",
        }
    ]
    json.loads(response.content, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


def test_a_body_over_the_upload_limit_is_a_413(issued, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post(issued.raw, body={"text": "a" * 2000})
    assert response.status_code == 413
    assert detail_of(response)["code"] == "payload_too_large"


def test_bad_query_values_are_422_in_the_query(issued):
    response = post(
        issued.raw,
        path=f"{TTS}?enable_logging=maybe&optimize_streaming_latency=fast",
        body={"text": "Hello"},
    )
    locs = [e["loc"] for e in errors_of(response)]
    assert locs == [["query", "enable_logging"], ["query", "optimize_streaming_latency"]]


def test_v2_voices_rejects_a_page_size_over_100_and_an_unknown_sort(issued):
    locs = [e["loc"] for e in errors_of(get(issued.raw, "/v2/voices", page_size=500, sort="x"))]
    assert locs == [["query", "page_size"], ["query", "sort"]]


def test_v2_voices_rejects_a_page_token_it_never_gave(issued):
    errors = errors_of(get(issued.raw, "/v2/voices", next_page_token="not-a-token"))
    assert [e["loc"] for e in errors] == [["query", "next_page_token"]]


# --- Bad requests (400) and missing things --------------------------------------------------


def test_an_unknown_voice_is_a_400_voice_not_found_and_the_reservation_is_refunded(issued):
    response = post(issued.raw, path="/v1/text-to-speech/no-such-voice", body={"text": "Hello"})
    assert response.status_code == 400
    detail = detail_of(response)
    assert (detail["code"], detail["param"]) == ("voice_not_found", "voice_id")
    event = UsageEvent.objects.get()
    assert event.status == UsageStatus.REFUNDED
    assert detail["request_id"] == event.request_id


def test_an_unknown_voice_on_get_is_a_404(issued):
    response = get(issued.raw, "/v1/voices/no-such-voice")
    assert response.status_code == 404
    assert detail_of(response)["code"] == "voice_not_found"


@pytest.mark.parametrize(
    "path,output_format",
    [
        (TTS, "mp3_44100_999"),
        (TTS, "flac_44100"),
        (f"{TTS}/stream", "wav_22050"),
        (f"{TTS}/stream/with-timestamps", "wav_44100"),
    ],
)
def test_a_bad_output_format_is_a_400_before_anything_is_reserved(issued, path, output_format):
    response = post(issued.raw, path=f"{path}?output_format={output_format}", body={"text": "Hi"})
    assert response.status_code == 400
    detail = detail_of(response)
    assert (detail["code"], detail["param"]) == ("invalid_output_format", "output_format")
    assert UsageEvent.objects.count() == 0


# --- Budgets and caps (429) -------------------------------------------------------------------


def test_a_spent_budget_is_a_429_quota_exceeded_naming_it_and_the_ledger_is_unchanged(
    workspace, owner, member, issued
):
    on_elevenlabs(workspace, owner)
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(100))
    with metered(
        workspace=workspace,
        user=member,
        capability="tts",
        engine="elevenlabs",
        model_id="eleven_multilingual_v2",
        units=95,
    ) as meter:
        meter.settle(units=95)
    before = list(UsageEvent.objects.values_list("pk", "status", "credits"))

    response = post(issued.raw, body={"text": "Ten chars!"})

    assert response.status_code == 429
    detail = detail_of(response)
    assert (detail["code"], detail["type"]) == ("quota_exceeded", "rate_limit_error")
    assert "Mia Member's budget of 100 credits" in detail["message"]
    assert list(UsageEvent.objects.values_list("pk", "status", "credits")) == before


def test_a_keys_monthly_cap_is_a_429_naming_the_cap(workspace, owner, member):
    on_elevenlabs(workspace, owner)
    capped = services.api_key_create(
        workspace=workspace, user=member, name="Capped", monthly_cap=Decimal(5)
    )
    response = post(capped.raw, body={"text": "More than five credits"})
    assert response.status_code == 429
    assert "This API key's monthly cap of 5 credits" in detail_of(response)["message"]
    assert UsageEvent.objects.count() == 0


# --- Engine errors --------------------------------------------------------------------------


class _Busy(BaseHTTPRequestHandler):
    """An upstream that is always at its concurrency limit (and asks for a long wait)."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps(
            {"detail": {"status": "too_many_concurrent_requests", "message": "Too many."}}
        ).encode()
        self.send_response(429)
        self.send_header("content-type", "application/json")
        self.send_header("retry-after", "120")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_busy_upstream_is_a_429_too_many_concurrent_requests_and_refunded(
    workspace, owner, issued
):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        on_elevenlabs(workspace, owner, base_url=f"http://127.0.0.1:{server.server_port}")
        response = post(issued.raw, body={"text": "Hello there"})
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 429
    detail = detail_of(response)
    assert detail["code"] == "too_many_concurrent_requests"
    assert response["retry-after"] == "120"
    assert UsageEvent.objects.get().status == UsageStatus.REFUNDED


@pytest.mark.parametrize(
    "error,status,code",
    [
        (NotSupported("The local engine cannot stream speech."), 400, "not_supported"),
        (RateLimited("Busy.", retry_after=3), 429, "too_many_concurrent_requests"),
        (QuotaExceeded("The upstream quota is spent."), 429, "quota_exceeded"),
        (UpstreamUnavailable("ElevenLabs did not answer."), 503, "upstream_unavailable"),
        (AuthenticationFailed("Invalid API key."), 503, "authentication_failed"),
        (InvalidRequest.for_field("voice_id", "No such voice."), 400, "voice_not_found"),
        (InvalidRequest.for_field("output_format", "No."), 400, "invalid_output_format"),
    ],
)
def test_engine_errors_become_the_apis_statuses_and_codes(error, status, code):
    translated = services.engine_errors_as_api(request_id="r1")
    with pytest.raises(services.ApiRefused) as caught, translated:
        raise error
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.request_id == "r1"
    assert caught.value.message


def test_engine_field_errors_become_a_422_list():
    with pytest.raises(services.ApiInvalid) as caught, services.engine_errors_as_api():
        raise InvalidRequest("Bad.", fields={"voice_settings": ["Speed is 0.7..1.2."]})
    assert caught.value.errors == [
        {"type": "value_error", "loc": ["body", "voice_settings"], "msg": "Speed is 0.7..1.2."}
    ]


# --- What works ---------------------------------------------------------------------------------


def test_unicode_text_is_spoken_and_metered_as_the_keys_member(issued, member):
    text = "Grüße aus Köln — 世界, ça va? 🎉"
    response = post(issued.raw, body={"text": text, "model_id": "eleven_multilingual_v2"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "audio/mpeg"
    with av.open(io.BytesIO(response.content)) as container:
        assert container.format.name == "mp3"
        assert sum(frame.samples for frame in container.decode(audio=0)) > 0
    event = UsageEvent.objects.get()
    assert (event.status, event.source, event.api_key_id) == (
        UsageStatus.SETTLED,
        UsageSource.API,
        issued.api_key.pk,
    )
    assert (event.user, event.units, event.voice_id) == (member, len(text), VOICE)
    assert response["request-id"] == event.request_id
    assert response["character-cost"] == "0"  # the local engine is free
    assert float(response["x-chorus-overhead-ms"]) >= 0


def test_every_response_carries_a_request_id(issued):
    responses = [
        post(None, body={"text": "Hi"}),
        post(issued.raw, body={}),
        post(issued.raw, path=f"{TTS}?output_format=nope", body={"text": "Hi"}),
        get(issued.raw, "/v1/voices"),
        get(issued.raw, "/v2/voices"),
        get(issued.raw, f"/v1/voices/{VOICE}"),
        get(issued.raw, "/v1/models"),
        get(issued.raw, "/v1/user"),
        get(issued.raw, "/v1/user/subscription"),
    ]
    ids = [r["request-id"] for r in responses]
    assert all(len(i) == 32 for i in ids) and len(set(ids)) == len(ids)
