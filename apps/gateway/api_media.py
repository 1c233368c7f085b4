"""The /v1 API's media endpoints: speech to text, sound effects, voice design, voice changes.

Like ``api``: each view checks the key (``api_view``), turns the multipart form or JSON body
into plain values (422 in FastAPI's list shape when it cannot), calls one service of
``services_media`` and writes ElevenLabs' response shape.
"""

import base64
import math

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError

from apps.engines.base import DesignRequest, SoundRequest, STTRequest, VoiceSettings
from apps.generation import media

from . import responses, services_media
from .api import (
    _TYPE_ERRORS,
    FALSE,
    MAX_SEED,
    TRUE,
    JsonTooDeep,
    _Fields,
    _json_body,
    _query_bool,
    api_view,
    json_decode,
    unreadable_refusal,
)
from .services import ApiInvalid, ApiRefused
from .services_media import Sample

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
INT32_MAX = 2_147_483_647  # the largest seed of STT and voice design
DESIGN_MODELS = ("eleven_multilingual_ttv_v2", "eleven_ttv_v3")
DESCRIPTION_LENGTH = (20, 1000)
PREVIEW_TEXT_LENGTH = (100, 1000)
SPEED_RANGE = (0.7, 1.2)
LABEL_LIMIT = 50  # labels per voice


def _too_big(what: str, limit: int) -> ApiRefused:
    return ApiRefused(
        413,
        "payload_too_large",
        f"{what} is too large: send at most {limit:,} bytes ({limit // (1024 * 1024)} MB).",
    )


def _length(errors: list, loc: list, value, low: int | None, high: int | None) -> None:
    """FastAPI's string length errors for ``value`` (when it is a string)."""
    if not isinstance(value, str):
        return
    if low is not None and len(value) < low:
        errors.append(
            {
                "type": "string_too_short",
                "loc": loc,
                "msg": f"String should have at least {low} characters",
                "input": value,
            }
        )
    elif high is not None and len(value) > high:
        errors.append(
            {
                "type": "string_too_long",
                "loc": loc,
                "msg": f"String should have at most {high} characters",
            }
        )


def _blank(errors: list, loc: list, value, what: str) -> None:
    if isinstance(value, str) and not value.strip():
        errors.append({"type": "value_error", "loc": loc, "msg": f"{what} is empty."})


def _labels(errors: list, loc: list, value) -> dict[str, str] | None:
    """Labels as an object of strings, or that object as a JSON string; null is none.

    Null values inside are dropped (the SDK types them ``Dict[str, Optional[str]]``).
    """
    if isinstance(value, str):
        if value.strip() in ("", "null"):
            return None
        try:
            value = json_decode(value)
        except ValueError as exc:
            msg = 'Labels must be a JSON object such as {"accent": "british"}'
            if isinstance(exc, JsonTooDeep):
                msg = f"{msg} ({exc})"
            errors.append({"type": "json_invalid", "loc": loc, "msg": msg})
            return None
    if value is None:
        return None
    if not isinstance(value, dict):
        code, msg = _TYPE_ERRORS["object"]
        errors.append({"type": code, "loc": loc, "msg": msg})
        return None
    labels: dict[str, str] = {}
    for key, item in value.items():
        if item is None:
            continue
        if not isinstance(item, str) or "\x00" in item or "\x00" in key:
            code, msg = _TYPE_ERRORS["string"]
            errors.append({"type": code, "loc": [*loc, key], "msg": msg})
            continue
        labels[key] = item
    if len(labels) > LABEL_LIMIT:
        errors.append(
            {"type": "too_long", "loc": loc, "msg": f"At most {LABEL_LIMIT} labels are allowed"}
        )
    return labels


# --- Multipart forms ------------------------------------------------------------------------


class _Form:
    """Reads typed fields of a multipart (or urlencoded) body, collecting FastAPI-style errors.

    Values come as text: booleans as ``true``/``false``, numbers as digits. A field sent
    empty counts as not sent. The whole request is refused (413) past the upload limit
    before its body is parsed.
    """

    def __init__(self, request, errors: list):
        content_type = request.headers.get("content-type", "")
        main = content_type.split(";")[0].strip().lower()
        if main not in FORM_TYPES:
            raise ApiInvalid.one(
                ["body"],
                "Send this request as multipart/form-data (the fields and the audio files), "
                f"not {main[:100] or 'a body without a content type'}.",
                "model_attributes_type",
            )
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > media.MAX_UPLOAD_BYTES:
            raise _too_big("The request", media.MAX_UPLOAD_BYTES)
        try:
            self.data, self.files = request.POST, request.FILES
        except RequestDataTooBig as exc:
            raise ApiRefused(
                413,
                "payload_too_large",
                "The form's text fields are too large (files do not count towards this limit).",
            ) from exc
        except (
            MultiPartParserError,
            TooManyFieldsSent,
            TooManyFilesSent,
            UnreadablePostError,
        ) as exc:  # 400, as for every API view (see ``api._refusal``)
            raise unreadable_refusal(exc) from exc
        self.errors = errors

    def _error(self, name, kind, msg, **extra):
        self.errors.append({"type": kind, "loc": ["body", name], "msg": msg, **extra})

    def raw(self, name: str) -> str | None:
        values = self.data.getlist(name)
        if name in self.files and not values:
            self._error(name, "string_type", "Input should be a valid string, not a file")
            return None
        value = values[-1] if values else None
        if value and "\x00" in value:  # every field's text, JSON or number is read here
            self._error(name, "string_unicode", "Input should be text: it holds NUL characters")
            return None
        return None if value == "" else value

    def text(self, name, *, required=False, default=None, choices=None, most=None):
        value = self.raw(name)
        if value is None:
            refused = any(e["loc"] == ["body", name] for e in self.errors)  # (NUL, a file)
            if required and name not in self.files and not refused:
                self._error(name, "missing", "Field required")
            return default
        if choices is not None and value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            self._error(name, "enum", f"Input should be {allowed}", input=value)
            return default
        if most is not None and len(value) > most:
            self._error(name, "string_too_long", f"String should have at most {most} characters")
            return default
        return value

    def boolean(self, name, *, default=None):
        value = self.raw(name)
        if value is None:
            return default
        if value.strip().lower() in TRUE:
            return True
        if value.strip().lower() in FALSE:
            return False
        self._error(
            name,
            "bool_parsing",
            "Input should be a valid boolean, unable to interpret input",
            input=value[:200],
        )
        return default

    def number(self, name, *, integer=False, low=None, high=None):
        value = self.raw(name)
        if value is None:
            return None
        try:
            number = int(value.strip()) if integer else float(value.strip())
        except ValueError:
            kind = "int_parsing" if integer else "float_parsing"
            what = "an integer" if integer else "a number"
            self._error(name, kind, f"Input should be a valid {what}", input=value[:200])
            return None
        if not math.isfinite(number):
            self._error(name, "finite_number", "Input should be a finite number")
            return None
        if low is not None and number < low:
            self._error(
                name, "greater_than_equal", f"Input should be greater than or equal to {low}"
            )
            return None
        if high is not None and number > high:
            self._error(name, "less_than_equal", f"Input should be less than or equal to {high}")
            return None
        return number

    def json(self, name):
        """A JSON-encoded field (the SDK sends ``null`` when unset); not JSON: the text."""
        value = self.raw(name)
        if value is None or value.strip() == "null":
            return None
        try:
            return json_decode(value)
        except JsonTooDeep as exc:
            self._error(name, "json_invalid", f"{exc}: send a flatter value.")
            return None
        except ValueError:
            return value

    def strings(self, name) -> list[str]:
        """Repeated fields (SDK 2.78) or one JSON array (older SDKs)."""
        values = [v for v in self.data.getlist(name) if v != ""]
        if len(values) == 1 and values[0].lstrip().startswith("["):
            try:
                parsed = json_decode(values[0])
            except JsonTooDeep as exc:
                self._error(name, "json_invalid", f"{exc}: send a list of strings.")
                return []
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                values = parsed
        for index, value in enumerate(values):
            if not isinstance(value, str) or "\x00" in value:
                self.errors.append(
                    {
                        "type": "string_type",
                        "loc": ["body", name, index],
                        "msg": "Input should be a valid string",
                    }
                )
        return [v for v in values if isinstance(v, str)]

    def uploads(self, name, *, required: bool, most_bytes: int) -> list[Sample]:
        """The file parts called ``name`` as samples, unread (each at most ``most_bytes``)."""
        return [
            Sample(filename=upload.name or "upload", data=upload)
            for upload in self.file_parts(name, required=required, most_bytes=most_bytes)
        ]

    def file_parts(self, name, *, required: bool, most_bytes: int) -> list:
        """The file parts called ``name`` as Django holds them (spooled to disk past
        ``FILE_UPLOAD_MAX_MEMORY_SIZE``), unread; each at most ``most_bytes``."""
        uploads = self.files.getlist(name)
        if not uploads:
            if self.data.getlist(name):
                self._error(
                    name,
                    "value_error",
                    "Expected a file upload, received text: send the audio as a file part",
                )
            elif required:
                self._error(name, "missing", "Field required")
            return []
        total = sum(upload.size or 0 for upload in uploads)
        if total > media.MAX_UPLOAD_BYTES:
            raise _too_big("The uploaded audio", media.MAX_UPLOAD_BYTES)
        for upload in uploads:
            if (upload.size or 0) > most_bytes:
                raise _too_big(f"The file {upload.name!r}", most_bytes)
        return uploads


def _entities(form: _Form, name: str) -> list[str] | None:
    """``entity_detection`` / ``entity_redaction``: a value or a list, JSON-encoded or not."""
    value = form.json(name)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    form._error(name, "value_error", "Input should be a string or a list of strings")
    return None


def _unsupported(param: str, message: str) -> ApiRefused:
    return ApiRefused(400, "not_supported", message, param=param)


# --- Speech to text -------------------------------------------------------------------------


def transcript_json(transcript) -> dict:
    """``SpeechToTextChunkResponseModel``."""
    return {
        "language_code": transcript.language_code,
        "language_probability": transcript.language_probability,
        "text": transcript.text,
        "words": [
            {
                "text": word.text,
                "start": word.start,
                "end": word.end,
                "type": word.type,
                "speaker_id": word.speaker_id,
                "logprob": word.logprob,
                "characters": (
                    [
                        {"text": c.get("text", ""), "start": c.get("start"), "end": c.get("end")}
                        for c in word.characters
                    ]
                    if word.characters is not None
                    else None
                ),
            }
            for word in transcript.words
        ],
        "channel_index": None,
        "additional_formats": None,
        "transcription_id": transcript.transcription_id,
        "entities": [
            {
                "text": e.text,
                "entity_type": e.entity_type,
                "start_char": e.start_char,
                "end_char": e.end_char,
            }
            for e in transcript.entities
        ]
        or None,
        "audio_duration_secs": transcript.audio_duration_secs,
    }


def _usage_headers(response, usage):
    response["request-id"] = usage.request_id
    response["character-cost"] = f"{usage.credits.normalize():f}"
    return response


@api_view(scope="stt", methods=("POST",), capped=True)
def speech_to_text(request, api_key):
    """``POST /v1/speech-to-text``: transcribe an uploaded file (URLs are not fetched)."""
    errors: list[dict] = []
    _query_bool(request, "enable_logging", errors)  # accepted; Chorus keeps no audio logs
    form = _Form(request, errors)
    for name in ("cloud_storage_url", "source_url"):
        if form.raw(name) is not None:
            raise _unsupported(
                name,
                f"Chorus does not fetch audio from URLs ({name}): download the file and "
                "upload it as the multipart part 'file'.",
            )
    if form.boolean("webhook", default=False):
        raise _unsupported(
            "webhook",
            "Chorus answers transcriptions in the response; it does not call webhooks. "
            "Send webhook=false (or leave it out).",
        )
    if form.boolean("use_multi_channel", default=False):
        raise _unsupported(
            "use_multi_channel",
            "Chorus transcribes the mix of all channels; multichannel transcription is not "
            "available. Leave use_multi_channel out.",
        )
    if form.json("additional_formats"):
        raise _unsupported(
            "additional_formats",
            "Chorus returns the JSON transcript only; build SRT, TXT or other exports from "
            "its words and timings.",
        )
    if form.text("transcript_edit"):
        raise _unsupported("transcript_edit", "Chorus cannot apply transcript_edit.")
    model_id = form.text("model_id", required=True, most=80)
    files = form.file_parts("file", required=True, most_bytes=media.MAX_UPLOAD_BYTES)
    if len(files) > 1:
        errors.append(
            {"type": "value_error", "loc": ["body", "file"], "msg": "Send one file, not several"}
        )
    seed = form.number("seed", integer=True, low=0, high=INT32_MAX)
    stt = {
        "model_id": model_id or "",
        "language_code": form.text("language_code", most=16),
        "tag_audio_events": form.boolean("tag_audio_events", default=True),
        "num_speakers": form.number("num_speakers", integer=True, low=1, high=32),
        "timestamps_granularity": form.text(
            "timestamps_granularity", default="word", choices=("none", "word", "character")
        ),
        "diarize": form.boolean("diarize", default=False),
        "keyterms": form.strings("keyterms"),
        "no_verbatim": form.boolean("no_verbatim", default=False),
        "entity_detection": _entities(form, "entity_detection"),
        "entity_redaction": _entities(form, "entity_redaction"),
        "entity_redaction_mode": form.text(
            "entity_redaction_mode", default="enumerated_entity_type", most=40
        ),
        "temperature": form.number("temperature", low=0, high=2),
        "seed": seed,
        "file_format": form.text("file_format", default="other", choices=("pcm_s16le_16", "other")),
    }
    # Accepted and checked, without effect on the local transcription.
    form.number("diarization_threshold", low=0.1, high=0.4)
    form.text("multichannel_output_style", choices=("separate", "combined"))
    form.text("numbers_format", choices=("digits", "words"))
    form.strings("secondary_language_codes")
    for name in ("use_speaker_library", "detect_speaker_roles"):
        form.boolean(name)
    if errors:
        raise ApiInvalid(errors)
    upload = files[0]  # read from where Django spooled it, never whole into memory
    result = services_media.api_transcribe(
        api_key=api_key, request=STTRequest(audio=upload, filename=upload.name or "upload", **stt)
    )
    return _usage_headers(JsonResponse(transcript_json(result.transcript)), result.usage)


# --- Sound effects ----------------------------------------------------------------------------


@api_view(scope="sound", methods=("POST",), capped=True)
def sound_generation(request, api_key):
    """``POST /v1/sound-generation``: a sound effect from a text prompt, as audio bytes."""
    errors: list[dict] = []
    _query_bool(request, "enable_logging", errors)
    body = _Fields(_json_body(request), ["body"], errors)
    text = body.get("text", "string", required=True)
    _blank(errors, ["body", "text"], text, "The prompt")
    sound = SoundRequest(
        text=text or "",
        loop=body.get("loop", "boolean", default=False),
        duration_seconds=body.get("duration_seconds", "number", low=0.5, high=30),
        prompt_influence=body.get("prompt_influence", "number", default=0.3, low=0, high=1),
        model_id=body.get("model_id", "string", default="eleven_text_to_sound_v2"),
        seed=body.get("seed", "integer", low=0, high=MAX_SEED),
        output_format=request.GET.get("output_format") or "mp3_44100_128",
    )
    if errors:
        raise ApiInvalid(errors)
    clip = services_media.api_sound(api_key=api_key, request=sound)
    response = HttpResponse(clip.audio, content_type=clip.content_type)
    response["history-item-id"] = clip.history_item_id
    return _usage_headers(response, clip.usage)


# --- Voice design -----------------------------------------------------------------------------


@api_view(scope="voice_design", methods=("POST",), capped=True)
def voice_design(request, api_key):
    """``POST /v1/text-to-voice/design`` (and the older ``…/create-previews``): previews."""
    errors: list[dict] = []
    body = _Fields(_json_body(request), ["body"], errors)
    description = body.get("voice_description", "string", required=True)
    _length(errors, ["body", "voice_description"], description, *DESCRIPTION_LENGTH)
    text = body.get("text", "string")
    auto_text = body.get("auto_generate_text", "boolean", default=False)
    if not auto_text:
        _length(errors, ["body", "text"], text, *PREVIEW_TEXT_LENGTH)
    if body.get("reference_audio_base64", "string"):
        raise _unsupported(
            "reference_audio_base64", "Chorus designs voices from the description only."
        )
    design = DesignRequest(
        voice_description=description or "",
        text=text,
        auto_generate_text=auto_text,
        model_id=body.get(
            "model_id", "string", default="eleven_multilingual_ttv_v2", choices=DESIGN_MODELS
        ),
        guidance_scale=body.get("guidance_scale", "number", default=5.0, low=0, high=100),
        loudness=body.get("loudness", "number", default=0.5, low=-1, high=1),
        seed=body.get("seed", "integer", low=0, high=INT32_MAX),
        output_format=request.GET.get("output_format") or services_media.DESIGN_FORMAT_DEFAULT,
    )
    options = {
        "should_enhance": body.get("should_enhance", "boolean", default=False),
        "quality": body.get("quality", "number", low=-1, high=1),
        "prompt_strength": body.get("prompt_strength", "number", low=0, high=1),
        "remixing_session_id": body.get("remixing_session_id", "string"),
        "remixing_session_iteration_id": body.get("remixing_session_iteration_id", "string"),
    }
    stream_previews = body.get("stream_previews", "boolean", default=False)
    if errors:
        raise ApiInvalid(errors)
    result = services_media.api_voice_design(
        api_key=api_key,
        design=services_media.DesignInput(
            request=design, stream_previews=stream_previews, options=options
        ),
    )
    previews = [
        {
            # With stream_previews only the ids go out; the audio comes from …/stream.
            "audio_base_64": "" if stream_previews else base64.b64encode(p.audio).decode("ascii"),
            "generated_voice_id": p.generated_voice_id,
            "media_type": p.media_type,
            "duration_secs": p.duration_secs,
            "language": p.language,
        }
        for p in result.previews
    ]
    response = JsonResponse({"previews": previews, "text": result.text})
    return _usage_headers(response, result.usage)


@api_view(scope="voice_design", methods=("POST",))
def voice_design_save(request, api_key):
    """``POST /v1/text-to-voice``: a preview of this workspace becomes a voice."""
    errors: list[dict] = []
    body = _Fields(_json_body(request), ["body"], errors)
    name = body.get("voice_name", "string", required=True)
    _blank(errors, ["body", "voice_name"], name, "The voice name")
    _length(errors, ["body", "voice_name"], name, None, 100)
    description = body.get("voice_description", "string", required=True)
    _length(errors, ["body", "voice_description"], description, *DESCRIPTION_LENGTH)
    generated_voice_id = body.get("generated_voice_id", "string", required=True)
    _blank(errors, ["body", "generated_voice_id"], generated_voice_id, "generated_voice_id")
    labels = _labels(errors, ["body", "labels"], body.data.get("labels"))
    body.strings("played_not_selected_voice_ids", most=100)
    if errors:
        raise ApiInvalid(errors)
    voice = services_media.api_voice_design_save(
        api_key=api_key,
        generated_voice_id=generated_voice_id,
        voice_name=name.strip(),
        voice_description=description,
        labels=labels or {},
    )
    return JsonResponse(responses.voice_json(voice))


@api_view(scope="voice_design")
def voice_design_stream(request, api_key, generated_voice_id):
    """``GET /v1/text-to-voice/{generated_voice_id}/stream``: a preview's audio."""
    stream = services_media.api_voice_design_stream(
        api_key=api_key, generated_voice_id=generated_voice_id
    )
    response = StreamingHttpResponse(stream, content_type=stream.content_type)
    response["Cache-Control"] = "no-store"
    return response


# --- Voices -----------------------------------------------------------------------------------


def _voice_form(request, *, files_required: bool):
    errors: list[dict] = []
    form = _Form(request, errors)
    name = form.text("name", required=True, most=100)
    _blank(errors, ["body", "name"], name, "The voice name")
    values = {
        "name": (name or "").strip(),
        "description": form.text("description", most=1000),
        "labels": _labels(errors, ["body", "labels"], form.raw("labels")),
        "remove_background_noise": form.boolean("remove_background_noise", default=False),
        "samples": form.uploads(
            "files", required=files_required, most_bytes=media.MAX_SAMPLE_BYTES
        ),
    }
    form.boolean("moderate_metadata")
    if errors:
        raise ApiInvalid(errors)
    return values


@api_view(scope="voices", methods=("POST",), capped=True)
def voice_add(request, api_key):
    """``POST /v1/voices/add``: an instant voice clone from uploaded samples."""
    voice = services_media.api_voice_clone(
        api_key=api_key, **_voice_form(request, files_required=True)
    )
    return JsonResponse({"voice_id": voice.voice_id, "requires_verification": False})


@api_view(scope="voices", methods=("POST",))
def voice_edit(request, api_key, voice_id):
    """``POST /v1/voices/{voice_id}/edit``: name, description, labels, more samples."""
    services_media.api_voice_edit(
        api_key=api_key, voice_id=voice_id, **_voice_form(request, files_required=False)
    )
    return JsonResponse({"status": "ok"})


@api_view(scope="voices")
def voice_settings_default(request, api_key):
    """``GET /v1/voices/settings/default``: the settings a voice has until changed."""
    return JsonResponse(responses.settings_json(VoiceSettings()))


def _settings_update(request, api_key, voice_id):
    errors: list[dict] = []
    body = _Fields(_json_body(request), ["body"], errors)
    values = {
        "stability": body.get("stability", "number", low=0, high=1),
        "similarity_boost": body.get("similarity_boost", "number", low=0, high=1),
        "style": body.get("style", "number"),
        "use_speaker_boost": body.get("use_speaker_boost", "boolean"),
        "speed": body.get("speed", "number", low=SPEED_RANGE[0], high=SPEED_RANGE[1]),
    }
    if errors:
        raise ApiInvalid(errors)
    services_media.api_voice_settings_update(api_key=api_key, voice_id=voice_id, values=values)
    return JsonResponse({"status": "ok"})


@api_view(scope="voices", methods=("GET", "POST"))
def voice_settings(request, api_key, voice_id):
    """``GET /v1/voices/{voice_id}/settings``; ``POST`` stores new ones (as ``…/edit``)."""
    if request.method == "POST":
        return _settings_update(request, api_key, voice_id)
    found = services_media.api_voice_settings(api_key=api_key, voice_id=voice_id)
    return JsonResponse(responses.settings_json(found))


@api_view(scope="voices", methods=("POST",))
def voice_settings_edit(request, api_key, voice_id):
    """``POST /v1/voices/{voice_id}/settings/edit`` (the SDK's path): store settings."""
    return _settings_update(request, api_key, voice_id)
