"""The ElevenLabs-compatible Studio projects endpoints (``/v1/studio/projects…``).

Each view checks the key (``api_view``), reads the official form or JSON body (unknown
fields are ignored, as ElevenLabs does; a malformed body is a 422 in FastAPI's list shape),
calls one service of ``apps.projects.studio_api`` with the key's ``Caller`` and writes the
official response. Creating and editing are free; converting renders the blocks through the
core, metered as the key's member (see ``studio_api.convert``).
"""

from django.http import FileResponse, HttpResponse, JsonResponse

from apps.projects import studio_api as studio
from apps.projects.importers import MAX_UPLOAD_BYTES

from .api import _Fields, _json_body, api_view, json_decode
from .api_media import _Form
from .services import ApiInvalid, ApiRefused, caller_of

SCOPE = "tts"  # converting is text to speech; a key limited to other scopes cannot use Studio
READ_WRITE = ("GET", "POST")
OK = {"status": "ok"}


def _content(form: _Form, errors: list) -> tuple | None:
    """``from_content_json``: the official chapters list, JSON-encoded in a form field."""
    raw = form.raw("from_content_json")
    if raw is None or raw.strip() in ("", "null"):
        return None
    try:
        value = json_decode(raw)
    except ValueError as exc:
        errors.append(
            {
                "type": "json_invalid",
                "loc": ["body", "from_content_json"],
                "msg": f"Input should be a JSON list of chapters: {exc}",
            }
        )
        return None
    try:
        return studio.content_from_json(value)
    except ApiInvalid as exc:
        errors.extend(exc.errors)
        return None


def _document(form: _Form) -> studio.Document | None:
    uploads = form.file_parts("from_document", required=False, most_bytes=MAX_UPLOAD_BYTES)
    if not uploads:
        return None
    upload = uploads[0]
    return studio.Document(
        name=upload.name or "upload",
        data=upload.read(),
        content_type=getattr(upload, "content_type", "") or "",
    )


def _from_url_refused(form: _Form) -> None:
    if form.raw("from_url"):
        raise ApiRefused(
            400,
            "not_supported",
            "from_url is not supported by Chorus: Chorus does not fetch web pages. Send the "
            "text as from_content_json or the file as from_document.",
            param="from_url",
        )


def _project_json(project) -> JsonResponse:
    return JsonResponse({"project": studio.project_json(project)})


# --- Projects -----------------------------------------------------------------------------------


@api_view(scope=SCOPE, methods=READ_WRITE)
def projects(request, api_key):
    """``GET /v1/studio/projects``: the workspace's projects; ``POST`` creates one (a form)."""
    caller = caller_of(api_key)
    if request.method == "GET":
        return JsonResponse({"projects": studio.projects_json(caller=caller)})
    errors: list[dict] = []
    form = _Form(request, errors)
    name = form.text("name", required=True, most=200)
    if isinstance(name, str) and not name.strip():
        errors.append({"type": "value_error", "loc": ["body", "name"], "msg": "Name is empty."})
    fields = {
        key: form.text(key, most=most)
        for key, most in (
            ("default_title_voice_id", 80),
            ("default_paragraph_voice_id", 80),
            ("default_model_id", 80),
            ("author", 200),
            ("title", 200),
            ("description", 5000),
            ("language", 16),
        )
    }
    auto_convert = form.boolean("auto_convert", default=False)
    for flag in ("mature_content", "acx_volume_normalization", "volume_normalization"):
        form.boolean(flag)  # accepted; they change nothing in Chorus
    content = _content(form, errors)
    document = _document(form)
    if errors:
        raise ApiInvalid(errors)
    _from_url_refused(form)
    project = studio.project_add(
        caller=caller,
        name=name,
        content=content,
        document=document,
        auto_convert=bool(auto_convert),
        **fields,
    )
    return _project_json(project)


@api_view(scope=SCOPE, methods=("GET", "POST", "DELETE"))
def project(request, api_key, project_id):
    """``GET /v1/studio/projects/{id}`` (with chapters), ``POST`` edits it (JSON),
    ``DELETE`` removes it."""
    caller = caller_of(api_key)
    found = studio.project_of(caller=caller, project_id=project_id)
    if request.method == "GET":
        return JsonResponse(studio.project_extended_json(found))
    if request.method == "DELETE":
        studio.project_remove(caller=caller, project=found)
        return JsonResponse(OK)
    errors: list[dict] = []
    body = _Fields(_json_body(request), ["body"], errors)
    name = body.get("name", "string", required=True)
    title_voice = body.get("default_title_voice_id", "string", required=True)
    paragraph_voice = body.get("default_paragraph_voice_id", "string", required=True)
    author = body.get("author", "string")
    for name_ in ("title", "isbn_number"):
        body.get(name_, "string")
    body.get("volume_normalization", "boolean")
    if errors:
        raise ApiInvalid(errors)
    edited = studio.project_edit(
        caller=caller,
        project=found,
        name=name,
        default_title_voice_id=title_voice,
        default_paragraph_voice_id=paragraph_voice,
        author=author,
    )
    return _project_json(edited)


@api_view(scope=SCOPE, methods=("POST",))
def project_content(request, api_key, project_id):
    """``POST /v1/studio/projects/{id}/content``: replace the chapters (a form)."""
    caller = caller_of(api_key)
    found = studio.project_of(caller=caller, project_id=project_id)
    errors: list[dict] = []
    form = _Form(request, errors)
    auto_convert = form.boolean("auto_convert", default=False)
    content = _content(form, errors)
    document = _document(form)
    if errors:
        raise ApiInvalid(errors)
    _from_url_refused(form)
    edited = studio.project_content_replace(
        caller=caller,
        project=found,
        content=content,
        document=document,
        auto_convert=bool(auto_convert),
    )
    return _project_json(edited)


@api_view(scope=SCOPE, methods=("POST",), capped=True)
def project_convert(request, api_key, project_id):
    """``POST /v1/studio/projects/{id}/convert``: start converting (a job); poll the project's
    ``state`` and its snapshots."""
    caller = caller_of(api_key)
    found = studio.project_of(caller=caller, project_id=project_id)
    studio.convert(caller=caller, project=found)
    return JsonResponse(OK)


# --- Snapshots ----------------------------------------------------------------------------------


def _convert_to_mpeg(request) -> None:
    """The stream body: ``{"convert_to_mpeg": bool}``, or no JSON at all (the audio is MP3
    either way)."""
    main = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (main == "application/json" or main.endswith("+json")) or not request.body.strip():
        return
    errors: list[dict] = []
    _Fields(_json_body(request), ["body"], errors).get("convert_to_mpeg", "boolean")
    if errors:
        raise ApiInvalid(errors)


def _audio(export) -> FileResponse:
    handle = studio.snapshot_file(export)
    response = FileResponse(handle, content_type="audio/mpeg")
    response["Cache-Control"] = "no-store"
    return response


@api_view(scope=SCOPE)
def project_snapshots(request, api_key, project_id):
    found = studio.project_of(caller=caller_of(api_key), project_id=project_id)
    return JsonResponse({"snapshots": studio.snapshots_json(found)})


@api_view(scope=SCOPE)
def project_snapshot(request, api_key, project_id, project_snapshot_id):
    found = studio.project_of(caller=caller_of(api_key), project_id=project_id)
    export = studio.snapshot_of(project=found, snapshot_id=project_snapshot_id)
    return JsonResponse(studio.snapshot_json(export, extended=True))


@api_view(scope=SCOPE, methods=("POST",))
def project_snapshot_stream(request, api_key, project_id, project_snapshot_id):
    found = studio.project_of(caller=caller_of(api_key), project_id=project_id)
    export = studio.snapshot_of(project=found, snapshot_id=project_snapshot_id)
    _convert_to_mpeg(request)
    return _audio(export)


@api_view(scope=SCOPE, methods=("POST",))
def project_snapshot_archive(request, api_key, project_id, project_snapshot_id):
    found = studio.project_of(caller=caller_of(api_key), project_id=project_id)
    export = studio.snapshot_of(project=found, snapshot_id=project_snapshot_id)
    response = HttpResponse(studio.snapshot_archive(export), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{export.public_id}.zip"'
    return response


# --- Chapters -----------------------------------------------------------------------------------


def _chapter_body(chapter, project) -> JsonResponse:
    return JsonResponse({"chapter": studio.chapter_json(chapter, project=project, content=True)})


@api_view(scope=SCOPE, methods=READ_WRITE)
def chapters(request, api_key, project_id):
    """``GET …/chapters``: the project's chapters; ``POST`` adds one (JSON ``name``)."""
    caller = caller_of(api_key)
    found = studio.project_of(caller=caller, project_id=project_id)
    if request.method == "GET":
        return JsonResponse({"chapters": studio.chapters_json(found)})
    errors: list[dict] = []
    body = _Fields(_json_body(request), ["body"], errors)
    name = body.get("name", "string", required=True)
    if errors:
        raise ApiInvalid(errors)
    if body.data.get("from_url"):
        raise ApiRefused(
            400,
            "not_supported",
            "from_url is not supported by Chorus: add the chapter, then send its content "
            "to POST /v1/studio/projects/{project_id}/chapters/{chapter_id}.",
            param="from_url",
        )
    chapter = studio.chapter_add(caller=caller, project=found, name=name)
    return _chapter_body(chapter, found)


@api_view(scope=SCOPE, methods=("GET", "POST", "DELETE"))
def chapter(request, api_key, project_id, chapter_id):
    """``GET …/chapters/{id}`` (with its content), ``POST`` edits its name and/or content,
    ``DELETE`` removes it."""
    caller = caller_of(api_key)
    found = studio.project_of(caller=caller, project_id=project_id)
    row = studio.chapter_of(project=found, chapter_id=chapter_id)
    if request.method == "GET":
        return JsonResponse(studio.chapter_json(row, project=found, content=True))
    if request.method == "DELETE":
        studio.chapter_remove(caller=caller, chapter=row)
        return JsonResponse(OK)
    errors: list[dict] = []
    body = _Fields(_json_body(request), ["body"], errors)
    name = body.get("name", "string")
    raw_content = body.get("content", "object")
    content = None
    if raw_content is not None:
        blocks = raw_content.get("blocks")
        if blocks is None:
            errors.append(
                {"type": "missing", "loc": ["body", "content", "blocks"], "msg": "Field required"}
            )
        else:
            content = studio.content_blocks(
                blocks, loc=["body", "content", "blocks"], errors=errors
            )
    if errors:
        raise ApiInvalid(errors)
    studio.chapter_edit(caller=caller, chapter=row, name=name, content=content)
    row.refresh_from_db()
    return _chapter_body(row, found)


@api_view(scope=SCOPE, methods=("POST",), capped=True)
def chapter_convert(request, api_key, project_id, chapter_id):
    caller = caller_of(api_key)
    found = studio.project_of(caller=caller, project_id=project_id)
    row = studio.chapter_of(project=found, chapter_id=chapter_id)
    studio.convert(caller=caller, project=found, chapter=row)
    return JsonResponse(OK)


@api_view(scope=SCOPE)
def chapter_snapshots(request, api_key, project_id, chapter_id):
    found = studio.project_of(caller=caller_of(api_key), project_id=project_id)
    row = studio.chapter_of(project=found, chapter_id=chapter_id)
    return JsonResponse({"snapshots": studio.snapshots_json(found, row)})


@api_view(scope=SCOPE)
def chapter_snapshot(request, api_key, project_id, chapter_id, chapter_snapshot_id):
    found = studio.project_of(caller=caller_of(api_key), project_id=project_id)
    row = studio.chapter_of(project=found, chapter_id=chapter_id)
    export = studio.snapshot_of(project=found, snapshot_id=chapter_snapshot_id, chapter=row)
    return JsonResponse(studio.snapshot_json(export, extended=True))


@api_view(scope=SCOPE, methods=("POST",))
def chapter_snapshot_stream(request, api_key, project_id, chapter_id, chapter_snapshot_id):
    found = studio.project_of(caller=caller_of(api_key), project_id=project_id)
    row = studio.chapter_of(project=found, chapter_id=chapter_id)
    export = studio.snapshot_of(project=found, snapshot_id=chapter_snapshot_id, chapter=row)
    _convert_to_mpeg(request)
    return _audio(export)
