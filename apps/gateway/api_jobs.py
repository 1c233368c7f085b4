"""The ElevenLabs-compatible music and dubbing endpoints (``/v1/music…``, ``/v1/dubbing…``).

Both run as background jobs. Music waits for its job and answers with the audio (``/stream``
sends the stored file in chunks); dubbing answers at once with the dub's id, to be polled.
"""

from datetime import UTC

from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from apps.engines.base import OUTPUT_FORMATS
from apps.projects.services import dubbing_expected_seconds

from . import responses, services_jobs
from .api import _Fields, _json_body, _query_bool, _query_choice, _query_int, api_view
from .services import ApiInvalid, ApiRefused
from .services_jobs import DubbingInput, JobStillRunning, MusicInput

MUSIC_MODELS = ("music_v1", "music_v2", "music_v2_5")
MAX_MUSIC_SEED = 2_147_483_647
MAX_PROMPT = 4_100
# The spec's list, less what Chorus cannot encode (MP3 at 48 kHz) and WAV (not in the spec).
MUSIC_FORMATS = ("auto", *(f for f in OUTPUT_FORMATS if not f.startswith("wav_")))
SPEC_ONLY_MUSIC_FORMATS = tuple(f"mp3_48000_{b}" for b in (128, 192, 240, 320))
CHUNK_BYTES = 64 * 1024

DUB_STATUSES = ("dubbing", "dubbed", "failed")
# ``dubbing_statuses`` also names ElevenLabs' finer steps; in Chorus they are all "dubbing".
DUB_STATUS_ALIASES = {"queued": "dubbing", "preparing": "dubbing"}
DUB_CREATORS = ("personal", "others", "all")
DUB_ORDERS = ("created_at", "name")
DUB_DIRECTIONS = ("DESCENDING", "ASCENDING")
TRANSCRIPT_FORMATS = ("srt", "webvtt", "json")


# --- Music -----------------------------------------------------------------------------------


def _music_input(request) -> MusicInput:
    """The compose body and query; unsupported features are refused rather than ignored."""
    fmt = request.GET.get("output_format") or "auto"
    if fmt not in MUSIC_FORMATS:
        hint = " Chorus encodes MP3 at 44.1 kHz: use mp3_44100_192." * (
            fmt in SPEC_ONLY_MUSIC_FORMATS
        )
        raise ApiRefused(
            400,
            "invalid_output_format",
            f"Unknown output_format {fmt!r}.{hint} Use one of: {', '.join(MUSIC_FORMATS)}.",
            kind="validation_error",
            param="output_format",
        )
    errors: list[dict] = []
    _query_bool(request, "enable_logging", errors)  # accepted; Chorus keeps no request logs
    data = _json_body(request)
    body = _Fields(data, ["body"], errors)
    for name in ("composition_plan", "finetune_id", "music_prompt"):
        if data.get(name) is not None:
            raise ApiRefused(
                400,
                "unsupported_parameter",
                f"{name} is not supported by Chorus yet: describe the music in prompt.",
                param=name,
            )
    prompt = body.get("prompt", "string", required=True)
    if isinstance(prompt, str) and len(prompt) > MAX_PROMPT:
        errors.append(
            {
                "type": "string_too_long",
                "loc": ["body", "prompt"],
                "msg": f"String should have at most {MAX_PROMPT} characters",
            }
        )
    elif isinstance(prompt, str) and not prompt.strip():
        errors.append(
            {
                "type": "value_error",
                "loc": ["body", "prompt"],
                "msg": "The prompt is empty: describe the music to compose.",
            }
        )
    music = MusicInput(
        prompt=prompt or "",
        music_length_ms=body.get("music_length_ms", "integer", low=3_000, high=600_000),
        model_id=body.get("model_id", "string", default="music_v1", choices=MUSIC_MODELS),
        seed=body.get("seed", "integer", low=0, high=MAX_MUSIC_SEED),
        force_instrumental=body.get("force_instrumental", "boolean", default=False),
        output_format=fmt,
    )
    for flag in ("respect_sections_durations", "store_for_inpainting", "sign_with_c2pa"):
        body.get(flag, "boolean")  # accepted; they change nothing for a prompt-only piece
    if errors:
        raise ApiInvalid(errors)
    return music


def _music_headers(response, generation):
    """``song-id`` (the engine's, else the history id), ``history-item-id``, ``request-id``
    (the ledger row) and ``character-cost`` (the credits charged)."""
    song_id = ((generation.recipe or {}).get("engine") or {}).get("song_id")
    response["song-id"] = song_id or generation.history_item_id
    response["history-item-id"] = generation.history_item_id
    if generation.request_id:
        response["request-id"] = generation.request_id
    credits = services_jobs.credits_of(generation)
    response["character-cost"] = f"{credits.normalize():f}"
    return response


def _still_running(exc: JobStillRunning) -> JsonResponse:
    """The 504 body: ElevenLabs' error shape, plus where the music will be."""
    body = responses.error_body(exc, request_id=exc.request_id or "")
    body["detail"]["job_id"] = exc.job_id
    body["detail"]["history_item_id"] = exc.history_item_id
    response = JsonResponse(body, status=exc.status)
    response["retry-after"] = str(exc.retry_after)
    if exc.request_id:
        response["request-id"] = exc.request_id
    return response


def _read(generation) -> bytes:
    with generation.file.open("rb") as handle:
        return handle.read()


@api_view(scope="music", methods=("POST",), capped=True)
def music(request, api_key):
    """``POST /v1/music``: compose (a job, waited for) and answer with the whole audio."""
    try:
        generation = services_jobs.api_music(api_key=api_key, music=_music_input(request))
    except JobStillRunning as exc:
        return _still_running(exc)
    response = HttpResponse(_read(generation), content_type=generation.content_type)
    return _music_headers(response, generation)


class _FileChunks:
    """A stored file sent in chunks, read in the request's worker thread (never the loop)."""

    def __init__(self, generation):
        self.generation = generation

    async def __aiter__(self):
        handle = await sync_to_async(self.generation.file.storage.open)(
            self.generation.file.name, "rb"
        )
        try:
            while chunk := await sync_to_async(handle.read)(CHUNK_BYTES):
                yield chunk
        finally:
            await sync_to_async(handle.close)()


@api_view(scope="music", methods=("POST",), capped=True)
def music_stream(request, api_key):
    """``POST /v1/music/stream``: the same job; the stored audio is then sent in chunks."""
    try:
        generation = services_jobs.api_music(api_key=api_key, music=_music_input(request))
    except JobStillRunning as exc:
        return _still_running(exc)
    response = StreamingHttpResponse(_FileChunks(generation), content_type=generation.content_type)
    response["Cache-Control"] = "no-store"
    return _music_headers(response, generation)


# --- Dubbing -----------------------------------------------------------------------------------


def _form_int(request, name: str, errors: list, *, default=None, low=None):
    raw = request.POST.get(name)
    if raw is None or raw.strip() in ("", "null"):
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        errors.append(
            {
                "type": "int_parsing",
                "loc": ["body", name],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw,
            }
        )
        return default
    if low is not None and value < low:
        errors.append(
            {
                "type": "greater_than_equal",
                "loc": ["body", name],
                "msg": f"Input should be greater than or equal to {low}",
                "input": value,
            }
        )
        return default
    return value


def _form_text(request, name: str) -> str | None:
    raw = request.POST.get(name)
    if raw is None or raw.strip() in ("", "null"):
        return None
    if "\x00" in raw:  # PostgreSQL cannot store it (the dub's name, its languages)
        raise ApiInvalid.one(
            ["body", name], "Input should be text: it holds NUL characters", "string_unicode"
        )
    return raw.strip()


def _dubbing_input(request) -> DubbingInput:
    """The multipart form of ``POST /v1/dubbing``; what Chorus cannot do is refused plainly."""
    errors: list[dict] = []
    upload = request.FILES.get("file")
    for name in ("csv_file", "foreground_audio_file", "background_audio_file"):
        if name in request.FILES:
            raise ApiRefused(
                400,
                "unsupported_parameter",
                "Manual (CSV) dubbing is not supported by Chorus: send the media as file.",
                param=name,
            )
    if _form_text(request, "mode") == "manual":
        raise ApiRefused(
            400, "unsupported_parameter", "Chorus dubs in automatic mode only.", param="mode"
        )
    for name in ("start_time", "end_time"):
        if _form_text(request, name) is not None:
            raise ApiRefused(
                400,
                "unsupported_parameter",
                f"{name} is not supported by Chorus: trim the media before uploading it.",
                param=name,
            )
    if upload is None:
        if _form_text(request, "source_url"):
            raise ApiRefused(
                400,
                "unsupported_parameter",
                "Chorus does not fetch media from URLs: upload it as file.",
                param="source_url",
            )
        errors.append({"type": "missing", "loc": ["body", "file"], "msg": "Field required"})
    elif upload.size > services_jobs.MAX_DUB_UPLOAD_BYTES:
        raise ApiRefused(
            413,
            "payload_too_large",
            f"The file is too large: send at most {services_jobs.MAX_DUB_UPLOAD_BYTES:,} bytes.",
            param="file",
        )
    target_lang = _form_text(request, "target_lang")
    if target_lang is None:
        errors.append({"type": "missing", "loc": ["body", "target_lang"], "msg": "Field required"})
    num_speakers = _form_int(request, "num_speakers", errors, default=0, low=0)
    for flag in (
        "watermark",
        "highest_resolution",
        "drop_background_audio",
        "use_profanity_filter",
        "dubbing_studio",
        "disable_voice_cloning",
    ):
        raw = _form_text(request, flag)
        if raw is not None and raw.lower() not in ("true", "false", "1", "0"):
            errors.append(
                {
                    "type": "bool_parsing",
                    "loc": ["body", flag],
                    "msg": "Input should be a valid boolean, unable to interpret input",
                    "input": raw,
                }
            )
    if errors:
        raise ApiInvalid(errors)
    return DubbingInput(
        media=upload.read(),
        filename=upload.name or "upload",
        content_type=upload.content_type or "",
        target_lang=target_lang,
        source_lang=_form_text(request, "source_lang") or "auto",
        num_speakers=num_speakers,
        name=_form_text(request, "name"),
    )


def _created_at(dub) -> str:
    # ElevenLabs' form: ISO 8601 in UTC without an offset, e.g. 2025-07-15T14:49:41.149000.
    return dub.created_at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def _dub_json(dub) -> dict:
    """``DubbingMetadataResponse``; ``media_metadata`` describes the uploaded media."""
    source_language = dub.source_language or (
        dub.source_lang if dub.source_lang and dub.source_lang != "auto" else None
    )
    return {
        "dubbing_id": dub.dubbing_id,
        "name": dub.name,
        "status": str(dub.status),
        "source_language": source_language,
        "target_languages": [dub.target_lang],
        "editable": False,
        "created_at": _created_at(dub),
        "media_metadata": {
            "content_type": dub.source_content_type or "application/octet-stream",
            "duration": dub.source_duration_seconds,
        },
        "error": dub.error,
    }


def _list_query(request, name: str, choices, errors: list) -> list[str]:
    """A repeated query parameter (``?a=x&a=y``) whose values are among ``choices``."""
    values = [v for v in request.GET.getlist(name) if v]
    for value in values:
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            errors.append(
                {"type": "enum", "loc": ["query", name], "msg": f"Input should be {allowed}"}
            )
    return values


@api_view(scope="dubbing", methods=("GET", "POST"), capped=("POST",))
def dubbing(request, api_key):
    """``POST /v1/dubbing`` starts a dub (a job); ``GET /v1/dubbing`` lists the workspace's.

    Dubs are team projects: every member's key sees the workspace's dubs
    (``filter_by_creator`` narrows to ``personal`` or ``others``).
    """
    if request.method == "POST":
        dub = services_jobs.api_dubbing_create(api_key=api_key, dub=_dubbing_input(request))
        response = JsonResponse(
            {
                "dubbing_id": dub.dubbing_id,
                "expected_duration_sec": dubbing_expected_seconds(dub),
            }
        )
        request_id = services_jobs.dubbing_request_id(dub)
        if request_id:  # the ledger row, as for speech
            response["request-id"] = request_id
        return response
    errors: list[dict] = []
    page_size = _query_int(request, "page_size", errors, low=1, high=200)
    status = _query_choice(request, "dubbing_status", DUB_STATUSES, errors)
    statuses = _list_query(
        request, "dubbing_statuses", (*DUB_STATUSES, *DUB_STATUS_ALIASES), errors
    )
    # Accepted and checked; Chorus has one dubbing model, so it filters nothing.
    _list_query(request, "dubbing_models", ("dubbing_v1", "dubbing_v2"), errors)
    sources = _list_query(
        request, "creation_sources", ("flow_node", "dubbing_ui", "dubbing_api"), errors
    )
    creator = _query_choice(request, "filter_by_creator", DUB_CREATORS, errors) or "all"
    order_by = _query_choice(request, "order_by", DUB_ORDERS, errors) or "created_at"
    direction = _query_choice(request, "order_direction", DUB_DIRECTIONS, errors) or "DESCENDING"
    if errors:
        raise ApiInvalid(errors)
    wanted = {DUB_STATUS_ALIASES.get(s, s) for s in statuses} if statuses else None
    if status:
        wanted = {status} if wanted is None else wanted & {status}
    page = services_jobs.api_dubbing_page(
        api_key=api_key,
        cursor=request.GET.get("cursor") or None,
        page_size=page_size or 100,
        statuses=sorted(wanted) if wanted is not None else None,
        target_languages=[c for c in request.GET.getlist("target_language_codes") if c] or None,
        sources=[{"dubbing_ui": "ui", "dubbing_api": "api"}.get(s, s) for s in sources] or None,
        filter_by_creator=creator,
        order_by=order_by,
        descending=direction == "DESCENDING",
    )
    return JsonResponse(
        {
            "dubs": [_dub_json(d) for d in page.dubs],
            "next_cursor": page.next_cursor,
            "has_more": page.has_more,
        }
    )


@api_view(scope="dubbing", methods=("GET", "DELETE"))
def dubbing_item(request, api_key, dubbing_id):
    """``GET /v1/dubbing/{id}``: the dub's state; ``DELETE``: stop it and remove it."""
    if request.method == "DELETE":
        services_jobs.api_dubbing_delete(api_key=api_key, dubbing_id=dubbing_id)
        return JsonResponse({"status": "ok"})
    return JsonResponse(
        _dub_json(services_jobs.api_dubbing(api_key=api_key, dubbing_id=dubbing_id))
    )


@api_view(scope="dubbing")
def dubbing_audio(request, api_key, dubbing_id, language_code):
    """``GET /v1/dubbing/{id}/audio/{language_code}``: the dubbed audio (425 until done)."""
    generation = services_jobs.api_dubbing_audio(
        api_key=api_key, dubbing_id=dubbing_id, language_code=language_code
    )
    response = HttpResponse(_read(generation), content_type=generation.content_type)
    response["history-item-id"] = generation.history_item_id
    return response


def _transcript_response(request, transcript, format_type: str):
    """SRT and WebVTT as a JSON string (what the spec and the SDK read), or as plain text
    for a client that asks for ``text/plain`` only; the JSON format as an object."""
    if isinstance(transcript, dict):
        return JsonResponse(transcript)
    accept = request.headers.get("accept", "")
    if "text/plain" in accept and "json" not in accept:
        return HttpResponse(transcript, content_type="text/plain; charset=utf-8")
    return JsonResponse(transcript, safe=False)


@api_view(scope="dubbing")
def dubbing_transcript(request, api_key, dubbing_id, language_code):
    """``GET /v1/dubbing/{id}/transcript/{language_code}?format_type=srt|webvtt|json``."""
    errors: list[dict] = []
    format_type = _query_choice(request, "format_type", TRANSCRIPT_FORMATS, errors) or "srt"
    if errors:
        raise ApiInvalid(errors)
    transcript = services_jobs.api_dubbing_transcript(
        api_key=api_key,
        dubbing_id=dubbing_id,
        language_code=language_code,
        format_type=format_type,
    )
    return _transcript_response(request, transcript, format_type)


@api_view(scope="dubbing")
def dubbing_transcripts(request, api_key, dubbing_id, language_code, format_type):
    """``GET /v1/dubbing/{id}/transcripts/{language_code}/format/{format_type}``."""
    if format_type not in TRANSCRIPT_FORMATS:
        raise ApiInvalid(
            [
                {
                    "type": "enum",
                    "loc": ["path", "format_type"],
                    "msg": "Input should be 'srt', 'webvtt' or 'json'",
                    "input": format_type,
                }
            ]
        )
    transcript = services_jobs.api_dubbing_transcript(
        api_key=api_key,
        dubbing_id=dubbing_id,
        language_code=language_code,
        format_type=format_type,
    )
    body = {"transcript_format": format_type, "srt": None, "webvtt": None, "json": None}
    body[format_type] = transcript
    return JsonResponse(body)
