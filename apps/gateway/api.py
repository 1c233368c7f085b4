"""The ElevenLabs-compatible HTTP API (``/v1``, ``/v2``): key auth, wire parsing, responses.

Each view checks the ``xi-api-key`` and its scope, turns the request into plain values (422
in FastAPI's list shape when it cannot), calls one service and writes ElevenLabs' response.
Refusals use ElevenLabs' error shape; every response carries a ``request-id``.
"""

import asyncio
import dataclasses
import functools
import json
import logging
import math
import time
import uuid

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from apps.projects.dictionaries import rules_for_locators
from apps.workspaces.bad_input import nul_in
from apps.workspaces.services import client_ip

from . import concurrency, responses, services, services_media
from .asgi import thread_hop
from .services import ApiInvalid, ApiRefused, SpeechInput

log = logging.getLogger(__name__)

MAX_SEED = 4_294_967_295
NORMALIZATION = ("auto", "on", "off")
VOICE_CATEGORIES = ("premade", "cloned", "generated", "professional")
VOICE_SORTS = ("created_at_unix", "name")
SORT_DIRECTIONS = ("asc", "desc")
TRUE, FALSE = ("true", "1", "yes", "on", "t", "y"), ("false", "0", "no", "off", "f", "n")


def unreadable_refusal(exc: Exception) -> ApiRefused | None:
    """ElevenLabs' refusal of a request Django could not parse, wherever the view first read
    ``request.POST``, ``FILES``, ``GET`` or ``body``; None for any other exception."""
    if isinstance(exc, RequestDataTooBig):
        return ApiRefused(
            413,
            "payload_too_large",
            "The request body is too large: send at most "
            f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes of form text or JSON.",
        )
    if isinstance(exc, MultiPartParserError | TooManyFieldsSent | TooManyFilesSent):
        return ApiRefused(
            400,
            "invalid_request_body",
            f"The request could not be read: {exc}. Send multipart/form-data as an HTTP "
            "client builds it (with its boundary in the content-type).",
        )
    if isinstance(exc, UnreadablePostError):
        return ApiRefused(400, "unreadable_body", "The request body was cut off.")
    return None


def _refusal(exc: Exception, *, request, request_id: str, methods) -> HttpResponse:
    """The ElevenLabs-shaped response for an exception raised while serving an API call."""
    exc = unreadable_refusal(exc) or exc
    if isinstance(exc, ApiRefused):
        response = responses.error_response(exc, request_id=request_id)
        if exc.status == 405:
            response["Allow"] = ", ".join(methods)
        return response
    if isinstance(exc, ApiInvalid):
        return responses.invalid_response(exc, request_id=request_id)
    log.error("the API failed on %s %s", request.method, request.path, exc_info=exc)
    return responses.error_response(
        ApiRefused(
            500,
            "internal_error",
            "Chorus failed on this request; the error is logged. Try again.",
            kind="internal_error",
        ),
        request_id=request_id,
    )


def _admit(request, api_key) -> None:
    """Take the member's concurrency slot for a capped call (429 when none is free)."""
    if not request.api_capped:
        return
    try:
        request.api_slot = concurrency.acquire(
            workspace_id=api_key.workspace_id, user_id=api_key.user_id
        )
    except concurrency.TooManyConcurrent as exc:
        request.api_slot = exc.slot  # its headers, with nothing to give back
        raise


def _request_check(request, methods) -> None:
    """The method is one the view takes (405); the path and query carry no NUL (400)."""
    if request.method not in methods:
        raise ApiRefused(
            405, "method_not_allowed", f"Use {' or '.join(methods)} for this endpoint."
        )
    # The site's check (``BadInputMiddleware``), which the API's handler does not run: NUL
    # characters in the path or query would reach the database (PostgreSQL refuses them).
    # Form and JSON fields are checked where they are read (``_Fields``, ``_Form``).
    where = nul_in(request, form=False)
    if where is not None:
        raise ApiRefused(
            400,
            "invalid_characters",
            f"There is a NUL character in {where}: remove it.",
            kind="validation_error",
        )


def api_view(
    *, scope: str, methods: tuple[str, ...] = ("GET",), capped: bool | tuple[str, ...] = False
):
    """Key auth (401), scope (403), method (405) and the error shapes around one API view.

    The view is called as ``view(request, api_key, **kwargs)``; ``request.api_started`` is
    when Chorus got the request (for the overhead header). An ``async def`` view is called
    as ``await view(request, **kwargs)`` and checks the key itself (in its one hop to a
    thread, with the rest of its database work): see ``speech_stream``.

    ``capped`` (True: every method; or the methods) puts the call under the member's cap on
    concurrent billable calls (429 ``too_many_concurrent_requests``, see ``concurrency``),
    taken after the key check and before the view reserves anything. An async view takes
    its slot itself with ``_admit`` right after its key check.
    """
    capped_methods = methods if capped is True else tuple(capped or ())

    def wrap(view):
        if asyncio.iscoroutinefunction(view):

            @csrf_exempt
            @functools.wraps(view)
            async def async_inner(request, **kwargs):
                request.api_started = time.perf_counter()
                request.api_scope = scope
                request.api_capped = request.method in capped_methods
                request.api_slot = None
                request_id = uuid.uuid4().hex
                try:
                    _request_check(request, methods)
                    response = await view(request, **kwargs)
                except Exception as exc:
                    response = _refusal(
                        exc, request=request, request_id=request_id, methods=methods
                    )
                except BaseException:  # cancelled (the client went away): no response
                    if request.api_slot is not None:
                        request.api_slot.release()
                    raise
                concurrency.attach(response, request.api_slot)
                if "request-id" not in response:
                    response["request-id"] = request_id
                return response

            # Served by ``asgi.ApiASGIHandler.handle_lean``: the view's database work is in
            # its own hops, each giving its connection back to the pool.
            async_inner.lean_asgi = True
            return async_inner

        @csrf_exempt
        @functools.wraps(view)
        def inner(request, **kwargs):
            request.api_started = time.perf_counter()
            request.api_capped = request.method in capped_methods
            request.api_slot = None
            request_id = uuid.uuid4().hex
            try:
                _request_check(request, methods)
                api_key = services.api_key_check(raw=request.headers.get("xi-api-key"), scope=scope)
                _admit(request, api_key)
                services.key_address_seen(api_key, client_ip(request))
                response = view(request, api_key, **kwargs)
            except Exception as exc:
                response = _refusal(exc, request=request, request_id=request_id, methods=methods)
            except BaseException:
                if request.api_slot is not None:
                    request.api_slot.release()
                raise
            concurrency.attach(response, request.api_slot)
            if "request-id" not in response:
                response["request-id"] = request_id
            return response

        return inner

    return wrap


# --- Wire parsing -------------------------------------------------------------------------

_TYPE_ERRORS = {
    "string": ("string_type", "Input should be a valid string"),
    "integer": ("int_type", "Input should be a valid integer"),
    "number": ("float_type", "Input should be a valid number"),
    "boolean": ("bool_type", "Input should be a valid boolean"),
    "object": ("dict_type", "Input should be a valid dictionary"),
    "array": ("list_type", "Input should be a valid list"),
}


def _is(kind: str, value) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and math.isfinite(value)
    if kind == "object":
        return isinstance(value, dict)
    return isinstance(value, list)


def _is_text(value: str) -> bool:
    """False for strings JSON can carry but text should not: NUL, lone surrogates."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Fields:
    """Reads typed fields of a JSON object, collecting FastAPI-style errors."""

    def __init__(self, data: dict, loc: list, errors: list):
        self.data, self.loc, self.errors = data, loc, errors

    def get(self, name, kind, *, required=False, default=None, choices=None, low=None, high=None):
        loc = [*self.loc, name]
        value = self.data.get(name)
        if value is None:  # absent, or null (clients send null for "not set")
            if required:
                self.errors.append({"type": "missing", "loc": loc, "msg": "Field required"})
            return default
        if not _is(kind, value):
            code, msg = _TYPE_ERRORS[kind]
            self.errors.append({"type": code, "loc": loc, "msg": msg, "input": value})
            return default
        if kind == "string" and not _is_text(value):
            self.errors.append(
                {
                    "type": "string_unicode",
                    "loc": loc,
                    "msg": "Input should be text: it holds NUL characters or unpaired surrogates",
                }
            )
            return default
        if kind == "integer":
            value = int(value)
        if choices is not None and value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            self.errors.append(
                {"type": "enum", "loc": loc, "msg": f"Input should be {allowed}", "input": value}
            )
            return default
        if low is not None and value < low:
            self.errors.append(
                {
                    "type": "greater_than_equal",
                    "loc": loc,
                    "msg": f"Input should be greater than or equal to {low}",
                    "input": value,
                }
            )
            return default
        if high is not None and value > high:
            self.errors.append(
                {
                    "type": "less_than_equal",
                    "loc": loc,
                    "msg": f"Input should be less than or equal to {high}",
                    "input": value,
                }
            )
            return default
        return value

    def strings(self, name, *, most: int):
        """An optional array of at most ``most`` strings."""
        items = self.get(name, "array")
        if items is None:
            return None
        if len(items) > most:
            self.errors.append(
                {
                    "type": "too_long",
                    "loc": [*self.loc, name],
                    "msg": f"List should have at most {most} items after validation",
                }
            )
        for i, item in enumerate(items):
            if not isinstance(item, str):
                code, msg = _TYPE_ERRORS["string"]
                self.errors.append(
                    {"type": code, "loc": [*self.loc, name, i], "msg": msg, "input": item}
                )
        return items


MAX_JSON_DEPTH = 64  # arrays and objects inside one another; real bodies use a handful


class JsonTooDeep(ValueError):
    """JSON nested deeper than ``MAX_JSON_DEPTH``."""


def _depth(value) -> int:
    """How deep arrays and objects nest in a parsed value (walked without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def json_decode(raw: str | bytes):
    """The value of a JSON text (a body, or a form field that carries JSON).

    The one way the API reads JSON: anything it cannot take raises ``ValueError`` with a
    message — invalid JSON (``json.JSONDecodeError``, with its position), bytes that are no
    UTF-8/16/32 text, and nesting deeper than ``MAX_JSON_DEPTH`` (``JsonTooDeep``; past a
    little below a thousand levels Python's parser itself stops with a RecursionError, a 500
    if it were let through).
    """
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
    too_deep = f"JSON nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects"
    try:
        value = json.loads(raw)
    except RecursionError as exc:
        raise JsonTooDeep(too_deep) from exc
    if _depth(value) > MAX_JSON_DEPTH:
        raise JsonTooDeep(too_deep)
    return value


def _json_body(request) -> dict:
    """The JSON object of the body, read the way FastAPI reads it."""
    content_type = request.headers.get("content-type", "")
    main = content_type.split(";")[0].strip().lower()
    if content_type and not (main == "application/json" or main.endswith("+json")):
        raise ApiInvalid.one(
            ["body"],
            "Input should be a valid dictionary or object to extract fields from: "
            "send JSON with content-type: application/json",
            "model_attributes_type",
        )
    try:
        raw = request.body
    except RequestDataTooBig as exc:
        raise ApiRefused(
            413,
            "payload_too_large",
            "The request body is too large: send at most "
            f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes.",
        ) from exc
    if not raw.strip():
        raise ApiInvalid.one(["body"], "Field required", "missing")
    try:
        data = json_decode(raw)
    except JsonTooDeep as exc:
        raise ApiInvalid.one(["body"], f"{exc}: send a flatter body.", "json_invalid") from exc
    except json.JSONDecodeError as exc:
        raise ApiInvalid.one(
            ["body", exc.pos], "JSON decode error", "json_invalid", ctx={"error": exc.msg}
        ) from exc
    except ValueError as exc:  # bytes that are not UTF-8/16/32 text
        raise ApiInvalid.one(
            ["body", 0], "JSON decode error", "json_invalid", ctx={"error": str(exc)}
        ) from exc
    if not isinstance(data, dict):
        raise ApiInvalid.one(
            ["body"],
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        )
    return data


def _query_bool(request, name: str, errors: list) -> bool | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    if raw.strip().lower() in TRUE:
        return True
    if raw.strip().lower() in FALSE:
        return False
    errors.append(
        {
            "type": "bool_parsing",
            "loc": ["query", name],
            "msg": "Input should be a valid boolean, unable to interpret input",
            "input": raw,
        }
    )
    return None


def _query_int(request, name: str, errors: list, *, low=None, high=None) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        errors.append(
            {
                "type": "int_parsing",
                "loc": ["query", name],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw,
            }
        )
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        errors.append(
            {
                "type": "value_error",
                "loc": ["query", name],
                "msg": f"Input should be between {low} and {high}",
                "input": raw,
            }
        )
        return None
    return value


def _query_choice(request, name: str, choices, errors: list) -> str | None:
    raw = request.GET.get(name) or None
    if raw is not None and raw not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        errors.append({"type": "enum", "loc": ["query", name], "msg": f"Input should be {allowed}"})
        return None
    return raw


def _speech_input(request, voice_id: str, api_key) -> SpeechInput:
    """The body and query of a text-to-speech call; unknown body fields are ignored. The
    ``pronunciation_dictionary_locators`` become the rules of the key's workspace's
    dictionaries (an unknown or foreign one: 404)."""
    errors: list[dict] = []
    _query_bool(request, "enable_logging", errors)  # accepted; Chorus keeps no audio logs
    _query_int(request, "optimize_streaming_latency", errors)  # deprecated upstream; no-op
    body = _Fields(_json_body(request), ["body"], errors)
    text = body.get("text", "string", required=True)
    if isinstance(text, str) and not text.strip():
        errors.append(
            {
                "type": "value_error",
                "loc": ["body", "text"],
                "msg": "Text is empty: send something to speak.",
                "input": text,
            }
        )
    voice_settings = None
    raw_settings = body.get("voice_settings", "object")
    if raw_settings is not None:
        vs = _Fields(raw_settings, ["body", "voice_settings"], errors)
        voice_settings = {
            "stability": vs.get("stability", "number", low=0, high=1),
            "similarity_boost": vs.get("similarity_boost", "number", low=0, high=1),
            "style": vs.get("style", "number"),
            "use_speaker_boost": vs.get("use_speaker_boost", "boolean"),
            "speed": vs.get("speed", "number"),
        }
    locators = body.get("pronunciation_dictionary_locators", "array")
    for i, locator in enumerate(locators or []):
        where = ["body", "pronunciation_dictionary_locators", i]
        if not isinstance(locator, dict):
            code, msg = _TYPE_ERRORS["object"]
            errors.append({"type": code, "loc": where, "msg": msg, "input": locator})
            continue
        _Fields(locator, where, errors).get("pronunciation_dictionary_id", "string", required=True)
        _Fields(locator, where, errors).get("version_id", "string")
    body.strings("previous_request_ids", most=3)
    body.strings("next_request_ids", most=3)
    body.get("use_pvc_as_ivc", "boolean")
    body.get("apply_language_text_normalization", "boolean")
    speech = SpeechInput(
        voice_id=voice_id,
        text=text or "",
        model_id=body.get("model_id", "string", default="eleven_multilingual_v2"),
        voice_settings=voice_settings,
        output_format=request.GET.get("output_format") or None,
        seed=body.get("seed", "integer", low=0, high=MAX_SEED),
        language_code=body.get("language_code", "string"),
        previous_text=body.get("previous_text", "string"),
        next_text=body.get("next_text", "string"),
        apply_text_normalization=body.get(
            "apply_text_normalization", "string", default="auto", choices=NORMALIZATION
        ),
    )
    if errors:
        raise ApiInvalid(errors)
    if locators:
        rules = rules_for_locators(api_key.workspace, locators)
        speech = dataclasses.replace(speech, pronunciation_rules=rules)
    return speech


# --- Text to speech -----------------------------------------------------------------------


def _speech_headers(response, request, *, request_id: str, credits, engine_ms: float):
    """``request-id`` (the ledger row), ``character-cost`` (credits) and Chorus's overhead.

    The overhead is the time since the request reached the view minus the time inside the
    engine; for a stream, up to the moment its headers go out (audio then passes through).
    """
    overhead = (time.perf_counter() - request.api_started) * 1000 - engine_ms
    response["request-id"] = request_id
    response["character-cost"] = f"{credits.normalize():f}"
    response["x-chorus-overhead-ms"] = f"{max(overhead, 0):.2f}"
    return response


@api_view(scope="tts", methods=("POST",), capped=True)
def speech(request, api_key, voice_id):
    """``POST /v1/text-to-speech/{voice_id}``: the whole audio in one body."""
    result = services.api_speech(api_key=api_key, speech=_speech_input(request, voice_id, api_key))
    response = HttpResponse(result.audio, content_type=result.content_type)
    return _speech_headers(
        response,
        request,
        request_id=result.request_id,
        credits=result.credits,
        engine_ms=result.engine_ms,
    )


@api_view(scope="tts", methods=("POST",), capped=True)
def speech_with_timestamps(request, api_key, voice_id):
    """``POST …/with-timestamps``: base64 audio with character start and end times."""
    result = services.api_speech(
        api_key=api_key, speech=_speech_input(request, voice_id, api_key), with_timestamps=True
    )
    body = responses.timestamps_json(result.audio, result.alignment, result.normalized_alignment)
    return _speech_headers(
        JsonResponse(body),
        request,
        request_id=result.request_id,
        credits=result.credits,
        engine_ms=result.engine_ms,
    )


async def _streamed(request, voice_id, *, with_timestamps: bool):
    """Check the key, parse and reserve in one hop to a thread; then stream.

    The ElevenLabs engine's stream is opened and read on the event loop (no thread hop per
    chunk); the local engine's is opened in the same thread as the checks.
    """
    encode = responses.timestamps_line if with_timestamps else responses.audio_bytes

    def prepare():
        api_key = services.api_key_check(
            raw=request.headers.get("xi-api-key"), scope=request.api_scope
        )
        _admit(request, api_key)
        services.key_address_seen(api_key, client_ip(request))
        pending = services.api_speech_stream_prepare(
            api_key=api_key,
            speech=_speech_input(request, voice_id, api_key),
            encode=encode,
            with_timestamps=with_timestamps,
        )
        return pending if pending.streams_async else pending.open()

    # The stream lasts far longer than this hop: its connection goes back to the pool at the
    # end of it (the settle takes one again) rather than being held until the response ends,
    # which would cap concurrent streams at the pool's size.
    prepared = await thread_hop(prepare)()
    if isinstance(prepared, services.PendingStream):
        stream = await prepared.open_async()
    else:
        stream = prepared
    if request.api_slot is not None:  # given back in the stream's settling hop
        stream.after_close.append(request.api_slot.release)
    content_type = "application/json" if with_timestamps else stream.content_type
    response = StreamingHttpResponse(stream, content_type=content_type)
    response.chorus_stream = stream
    response["Cache-Control"] = "no-store"
    return _speech_headers(
        response,
        request,
        request_id=stream.request_id,
        credits=stream.estimated_credits,
        engine_ms=stream.engine_ms,
    )


@api_view(scope="tts", methods=("POST",), capped=True)
async def speech_stream(request, voice_id):
    """``POST …/stream``: audio bytes passed on as the engine makes them.

    ``character-cost`` is the reservation (the stream's cost is settled when it ends).
    """
    return await _streamed(request, voice_id, with_timestamps=False)


@api_view(scope="tts", methods=("POST",), capped=True)
async def speech_stream_with_timestamps(request, voice_id):
    """``POST …/stream/with-timestamps``: one JSON object per line, audio and timings."""
    return await _streamed(request, voice_id, with_timestamps=True)


# --- Voices -------------------------------------------------------------------------------


@api_view(scope="voices")
def voices(request, api_key):
    """``GET /v1/voices``: every voice (``show_legacy`` is accepted and changes nothing)."""
    errors: list[dict] = []
    _query_bool(request, "show_legacy", errors)
    if errors:
        raise ApiInvalid(errors)
    return JsonResponse(responses.voices_json(services.api_voices_all(api_key=api_key)))


@api_view(scope="voices")
def voices_search(request, api_key):
    """``GET /v2/voices``: search, filter by category, sort and page through the voices."""
    errors: list[dict] = []
    page_size = _query_int(request, "page_size", errors, low=1, high=100)
    filters = {
        "search": request.GET.get("search") or None,
        "page_size": page_size or 10,
        "next_page_token": request.GET.get("next_page_token") or None,
        "category": _query_choice(request, "category", VOICE_CATEGORIES, errors),
        "sort": _query_choice(request, "sort", VOICE_SORTS, errors),
        "sort_direction": _query_choice(request, "sort_direction", SORT_DIRECTIONS, errors),
    }
    _query_bool(request, "include_total_count", errors)
    if errors:
        raise ApiInvalid(errors)
    page = services.api_voices_page(api_key=api_key, **filters)
    return JsonResponse(responses.voices_page_json(page))


@api_view(scope="voices", methods=("GET", "DELETE"))
def voice(request, api_key, voice_id):
    """``GET /v1/voices/{voice_id}`` (``with_settings`` is deprecated and ignored), with the
    workspace's stored settings; ``DELETE`` removes a voice the workspace made."""
    if request.method == "DELETE":
        services_media.api_voice_delete(api_key=api_key, voice_id=voice_id)
        return JsonResponse({"status": "ok"})
    found = services_media.api_voice_get(api_key=api_key, voice_id=voice_id)
    return JsonResponse(responses.voice_json(found))


# --- Models and the account ---------------------------------------------------------------


@api_view(scope="account")
def models(request, api_key):
    """``GET /v1/models``: a bare JSON array of the engine's models."""
    body = [responses.model_json(m, rate) for m, rate in services.api_models(api_key=api_key)]
    return JsonResponse(body, safe=False)


@api_view(scope="account")
def user(request, api_key):
    """``GET /v1/user``: the key's member, with their subscription (their budget)."""
    return JsonResponse(responses.user_json(services.api_account(api_key=api_key)))


@api_view(scope="account")
def subscription(request, api_key):
    """``GET /v1/user/subscription``: the key's member's credits (see ``api_account``)."""
    account = services.api_account(api_key=api_key)
    return JsonResponse(responses.subscription_json(account, extended=True))
