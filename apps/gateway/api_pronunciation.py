"""The /v1 pronunciation dictionary endpoints (``/v1/pronunciation-dictionaries…``) and a
Studio project's dictionaries, in the official shapes, over ``apps.projects.dictionaries``.

A key sees its workspace's dictionaries (a team asset); another workspace's id is a 404.
"""

from contextlib import contextmanager

from django.http import HttpResponse, JsonResponse

from apps.projects import dictionaries
from apps.projects.models import Project
from apps.workspaces.models import Role

from .api import (
    _TYPE_ERRORS,
    _Fields,
    _json_body,
    _query_bool,
    _query_choice,
    _query_int,
    api_view,
    json_decode,
)
from .api_media import _Form
from .services import ApiInvalid, ApiRefused

SCOPE = "tts"  # dictionaries exist for speech; a key that may speak may manage them
SORT_DIRECTIONS = ("ascending", "descending", "ASCENDING", "DESCENDING", "asc", "desc")


@contextmanager
def _refusals():
    """A service's refusal as the API reports it (its status, code and message)."""
    try:
        yield
    except dictionaries.DictionaryRefused as exc:
        kind = "not_found" if exc.status == 404 else "invalid_request"
        raise ApiRefused(exc.status, exc.code, str(exc), kind=kind) from exc


def _permission(api_key) -> str:
    role = getattr(api_key.membership, "role", Role.MEMBER)
    return "admin" if role in (Role.OWNER, Role.MANAGER) else "editor"


def _unix(moment) -> int:
    return int(moment.timestamp())


def _metadata_json(dictionary, api_key) -> dict:
    """``GetPronunciationDictionaryMetadataResponseModel``."""
    return {
        "id": dictionary.public_id,
        "latest_version_id": dictionary.version_id,
        "latest_version_rules_num": dictionary.version_rules_num,
        "name": dictionary.name,
        "permission_on_resource": _permission(api_key),
        "created_by": str(dictionary.created_by_id or ""),
        "creation_time_unix": _unix(dictionary.created_at),
        "archived_time_unix": _unix(dictionary.updated_at) if dictionary.archived else None,
        "description": dictionary.description or None,
    }


def _added_json(dictionary, api_key) -> dict:
    """``AddPronunciationDictionaryResponseModel``."""
    return {
        "id": dictionary.public_id,
        "name": dictionary.name,
        "created_by": str(dictionary.created_by_id or ""),
        "creation_time_unix": _unix(dictionary.created_at),
        "version_id": dictionary.version_id,
        "version_rules_num": dictionary.version_rules_num,
        "description": dictionary.description or None,
        "permission_on_resource": _permission(api_key),
    }


def _rules_json(dictionary) -> dict:
    """``PronunciationDictionaryRulesResponseModel``."""
    return {
        "id": dictionary.public_id,
        "version_id": dictionary.version_id,
        "version_rules_num": dictionary.version_rules_num,
    }


def _body_rules(body: dict, errors: list) -> list | None:
    """The body's ``rules``: a list of objects (each checked by the service)."""
    rules = _Fields(body, ["body"], errors).get("rules", "array", required=True)
    for index, item in enumerate(rules or []):
        if not isinstance(item, dict):
            code, msg = _TYPE_ERRORS["object"]
            errors.append({"type": code, "loc": ["body", "rules", index], "msg": msg})
    return rules


@api_view(scope=SCOPE, methods=("POST",))
def add_from_rules(request, api_key):
    """``POST /v1/pronunciation-dictionaries/add-from-rules``."""
    errors: list[dict] = []
    body = _json_body(request)
    fields = _Fields(body, ["body"], errors)
    name = fields.get("name", "string", required=True)
    description = fields.get("description", "string")
    fields.get("workspace_access", "string")  # the workspace always shares its dictionaries
    rules = _body_rules(body, errors)
    if errors:
        raise ApiInvalid(errors)
    with _refusals():
        dictionary = dictionaries.dictionary_create(
            workspace=api_key.workspace,
            user=api_key.user,
            name=name,
            rules=rules,
            description=description or "",
        )
    return JsonResponse(_added_json(dictionary, api_key))


@api_view(scope=SCOPE, methods=("POST",))
def add_from_file(request, api_key):
    """``POST /v1/pronunciation-dictionaries/add-from-file`` (multipart: name, file, …)."""
    errors: list[dict] = []
    form = _Form(request, errors)
    name = form.text("name", required=True)
    description = form.text("description")
    form.text("workspace_access")
    upload = form.files.get("file")
    if errors:
        raise ApiInvalid(errors)
    if upload is None:
        raise ApiRefused(
            400, "invalid_file", "Send the lexicon as the multipart field 'file' (a .pls file)."
        )
    if upload.size > dictionaries.MAX_PLS_BYTES:  # refused before it is read
        raise ApiRefused(
            400,
            "file_too_large",
            f"The lexicon is {upload.size:,} bytes; a dictionary file may be at most "
            f"{dictionaries.MAX_PLS_BYTES // 1024:,} kB.",
        )
    data = upload.read()
    with _refusals():
        dictionary = dictionaries.dictionary_create_from_pls(
            workspace=api_key.workspace,
            user=api_key.user,
            name=name,
            data=data,
            description=description or "",
        )
    return JsonResponse(_added_json(dictionary, api_key))


@api_view(scope=SCOPE)
def dictionary_list(request, api_key):
    """``GET /v1/pronunciation-dictionaries``: cursor-paged, newest first by default."""
    errors: list[dict] = []
    page_size = _query_int(request, "page_size", errors, low=1, high=100)
    sort = _query_choice(request, "sort", dictionaries.SORTS, errors)
    direction = _query_choice(request, "sort_direction", SORT_DIRECTIONS, errors)
    include_archived = _query_bool(request, "include_archived", errors)
    if errors:
        raise ApiInvalid(errors)
    with _refusals():
        page = dictionaries.dictionaries_page(
            workspace=api_key.workspace,
            search=request.GET.get("search") or "",
            cursor=request.GET.get("cursor") or None,
            page_size=page_size or 30,
            sort=sort or "creation_time_unix",
            descending=(direction or "descending").lower().startswith("desc"),
            include_archived=True if include_archived is None else include_archived,
        )
    return JsonResponse(
        {
            "pronunciation_dictionaries": [_metadata_json(d, api_key) for d in page.items],
            "next_cursor": page.next_cursor,
            "has_more": page.has_more,
        }
    )


@api_view(scope=SCOPE, methods=("GET", "PATCH"))
def dictionary_item(request, api_key, dictionary_id):
    """``GET /v1/pronunciation-dictionaries/{id}`` (with its latest rules); ``PATCH``
    renames or archives it."""
    with _refusals():
        dictionary = dictionaries.dictionary_get(
            workspace=api_key.workspace, dictionary_id=dictionary_id
        )
    if request.method == "PATCH":
        errors: list[dict] = []
        body = _json_body(request) if request.body.strip() else {}
        fields = _Fields(body, ["body"], errors)
        archived = fields.get("archived", "boolean")
        name = fields.get("name", "string")
        description = fields.get("description", "string")
        if errors:
            raise ApiInvalid(errors)
        with _refusals():
            dictionary = dictionaries.dictionary_update(
                dictionary=dictionary, name=name, description=description, archived=archived
            )
        return JsonResponse(_metadata_json(dictionary, api_key))
    body = _metadata_json(dictionary, api_key)
    body["rules"] = dictionary.rules
    return JsonResponse(body)


def _rules_change(request, api_key, dictionary_id, change):
    with _refusals():
        dictionary = dictionaries.dictionary_get(
            workspace=api_key.workspace, dictionary_id=dictionary_id
        )
        dictionary = change(dictionary, _json_body(request))
    return JsonResponse(_rules_json(dictionary))


@api_view(scope=SCOPE, methods=("POST",))
def rules_add(request, api_key, dictionary_id):
    """``POST /v1/pronunciation-dictionaries/{id}/add-rules``: a rule for a string the
    dictionary has already replaces it."""

    def change(dictionary, body):
        errors: list[dict] = []
        rules = _body_rules(body, errors)
        if errors:
            raise ApiInvalid(errors)
        return dictionaries.dictionary_rules_add(dictionary=dictionary, rules=rules)

    return _rules_change(request, api_key, dictionary_id, change)


@api_view(scope=SCOPE, methods=("POST",))
def rules_remove(request, api_key, dictionary_id):
    """``POST /v1/pronunciation-dictionaries/{id}/remove-rules`` (``rule_strings``)."""

    def change(dictionary, body):
        errors: list[dict] = []
        strings = _Fields(body, ["body"], errors).strings("rule_strings", most=5000)
        if strings is None and not errors:
            missing = {"type": "missing", "loc": ["body", "rule_strings"], "msg": "Field required"}
            errors.append(missing)
        if errors:
            raise ApiInvalid(errors)
        return dictionaries.dictionary_rules_remove(dictionary=dictionary, strings=strings)

    return _rules_change(request, api_key, dictionary_id, change)


@api_view(scope=SCOPE, methods=("POST",))
def rules_set(request, api_key, dictionary_id):
    """``POST /v1/pronunciation-dictionaries/{id}/set-rules``: every rule replaced."""

    def change(dictionary, body):
        errors: list[dict] = []
        rules = _body_rules(body, errors)
        if errors:
            raise ApiInvalid(errors)
        return dictionaries.dictionary_rules_set(dictionary=dictionary, rules=rules)

    return _rules_change(request, api_key, dictionary_id, change)


@api_view(scope=SCOPE)
def download(request, api_key, dictionary_id, version_id):
    """``GET /v1/pronunciation-dictionaries/{id}/{version_id}/download``: that version's
    rules as a PLS 1.0 file."""
    with _refusals():
        dictionary = dictionaries.dictionary_get(
            workspace=api_key.workspace, dictionary_id=dictionary_id
        )
        filename, data = dictionaries.dictionary_pls(dictionary=dictionary, version_id=version_id)
    response = HttpResponse(data, content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- A Studio project's dictionaries ------------------------------------------------------


def _project_locators(body: dict, errors: list) -> list[dict]:
    """``pronunciation_dictionary_locators``: objects, or JSON strings of them (the spec's
    form-data spelling)."""
    items = _Fields(body, ["body"], errors).get(
        "pronunciation_dictionary_locators", "array", required=True
    )
    locators = []
    for index, item in enumerate(items or []):
        where = ["body", "pronunciation_dictionary_locators", index]
        if isinstance(item, str):
            try:
                item = json_decode(item)
            except ValueError:
                item = None
        if not isinstance(item, dict):
            code, msg = _TYPE_ERRORS["object"]
            errors.append({"type": code, "loc": where, "msg": msg})
            continue
        fields = _Fields(item, where, errors)
        dictionary_id = fields.get("pronunciation_dictionary_id", "string", required=True)
        version_id = fields.get("version_id", "string")
        locators.append({"pronunciation_dictionary_id": dictionary_id, "version_id": version_id})
    return locators


@api_view(scope=SCOPE, methods=("POST",))
def project_dictionaries(request, api_key, project_id):
    """``POST /v1/studio/projects/{project_id}/pronunciation-dictionaries``: the project's
    dictionaries become exactly these (a project applies each one's latest rules)."""
    project = Project.objects.filter(workspace=api_key.workspace, public_id=project_id).first()
    if project is None:
        raise ApiRefused(
            404,
            "project_not_found",
            f"There is no project {project_id!r} in this workspace.",
            kind="not_found",
        )
    errors: list[dict] = []
    body = _json_body(request)
    locators = _project_locators(body, errors)
    _Fields(body, ["body"], errors).get("invalidate_affected_text", "boolean")
    if errors:
        raise ApiInvalid(errors)
    # Every locator must name a dictionary (and version) of the workspace.
    step = dictionaries.MAX_LOCATORS
    for start in range(0, len(locators), step):
        dictionaries.rules_for_locators(api_key.workspace, locators[start : start + step])
    with _refusals():
        dictionaries.project_dictionaries_set(
            project, [locator["pronunciation_dictionary_id"] for locator in locators]
        )
    return JsonResponse({"status": "ok"})
