"""The ElevenLabs-compatible Conversational AI endpoints (``/v1/convai…``): agents, the signed
URL of a conversation's WebSocket, and the recorded conversations.

Each view checks the key (``api_view``), reads the official JSON body or query (a malformed
one is a 422 in FastAPI's list shape; unknown fields are ignored, as ElevenLabs does), calls
``apps.agents.services`` or ``services_convai`` and writes the official response. A
configuration the agents app refuses (an unknown voice or knowledge document, a prompt too
long) is a 400 ``invalid_parameters`` naming every field by its ``conversation_config`` path.
None of these calls is metered: talking is, on the WebSocket.

Keys belong to members and above (a viewer cannot hold one), so every key may create, edit
and delete its workspace's agents; another workspace's agent or conversation is a 404.
"""

import html
import math
from urllib.parse import urlencode

from django.core.exceptions import DisallowedHost
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from apps.agents import recordings
from apps.agents import services as agents
from apps.agents.config import AgentConfig, AgentConfigError
from apps.agents.knowledge import MAX_FILE_BYTES
from apps.agents.models import AgentVersion, KnowledgeDocument, KnowledgeKind
from apps.agents.signing import convai_signature_make
from apps.workspaces.models import Role

from . import services_convai as convai
from .api import _Fields, _is_text, _json_body, _query_bool, _query_int, api_view
from .api_media import _Form
from .services import ApiInvalid, ApiRefused

# There is no convai scope among a key's scopes: agents speak, so a key limited to other
# capabilities than text to speech cannot use them (as with Studio).
SCOPE = "tts"
MAX_UNIX = 253_402_300_799
TAGS_MOST, TAG_LENGTH = 50, 100
UNTITLED = "Untitled agent"

# Where each field of ``AgentConfig`` is in the API's ``conversation_config``.
CONFIG_PATHS = {
    "prompt": "agent.prompt.prompt",
    "llm": "agent.prompt.llm",
    "temperature": "agent.prompt.temperature",
    "max_tokens": "agent.prompt.max_tokens",
    "knowledge": "agent.prompt.knowledge_base",
    "first_message": "agent.first_message",
    "language": "agent.language",
    "dynamic_variables": "agent.dynamic_variables.dynamic_variable_placeholders",
    "voice_id": "tts.voice_id",
    "tts_model_id": "tts.model_id",
    "stability": "tts.stability",
    "similarity_boost": "tts.similarity_boost",
    "speed": "tts.speed",
    "silence_ms": "turn.silence_before_answer_ms",
    "interruptible": "conversation.client_events",
    "max_duration_seconds": "conversation.max_duration_seconds",
}


# --- Reading bodies ---------------------------------------------------------------------------


def _text_errors(value, loc: list, errors: list) -> None:
    """A 422 error for each string (or object key) of ``value`` that is not text: NUL
    characters or lone surrogates, which PostgreSQL refuses in JSON and text alike."""
    stack = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not _is_text(item):
                errors.append(
                    {
                        "type": "string_unicode",
                        "loc": where,
                        "msg": "Input should be text: it holds NUL characters or unpaired "
                        "surrogates",
                    }
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, where))
                stack.append((child, [*where, key]))
        elif isinstance(item, list):
            stack.extend((child, [*where, i]) for i, child in enumerate(item))


def _body(request, *, required: bool) -> dict:
    if not required and not request.body.strip():
        return {}
    data = _json_body(request)
    errors: list[dict] = []
    _text_errors(data, ["body"], errors)
    if errors:
        raise ApiInvalid(errors)
    return data


def _tags(body: _Fields) -> list[str] | None:
    tags = body.strings("tags", most=TAGS_MOST)
    if tags is None:
        return None
    for i, tag in enumerate(tags):
        if isinstance(tag, str) and len(tag) > TAG_LENGTH:
            body.errors.append(
                {
                    "type": "string_too_long",
                    "loc": [*body.loc, "tags", i],
                    "msg": f"String should have at most {TAG_LENGTH} characters",
                }
            )
    return [" ".join(t.split()) for t in tags if isinstance(t, str)]


def _config(raw: dict, *, base: AgentConfig | None = None) -> AgentConfig:
    try:
        return AgentConfig.from_conversation_config(raw, base=base)
    except AgentConfigError as exc:
        raise ApiInvalid(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body", "conversation_config", *where.split(".")],
                    "msg": f"Input {message}",
                }
                for where, message in exc.errors.items()
            ]
        ) from exc


def _refused(exc: agents.AgentRefused) -> ApiRefused:
    """The agents app's refusal as a 400 naming each field where the API has it."""
    named = {
        (f"conversation_config.{CONFIG_PATHS[k]}" if k in CONFIG_PATHS else k): v
        for k, v in exc.errors.items()
    }
    only_voice = set(exc.errors) == {"voice_id"}
    return ApiRefused(
        400,
        "voice_not_found" if only_voice else "invalid_parameters",
        "; ".join(f"{where}: {message}" for where, message in named.items()),
        kind="validation_error",
        param=next(iter(named)),
    )


# --- Agents -------------------------------------------------------------------------------


def _unix(moment) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def _access_info(agent, api_key) -> dict:
    creator = agent.created_by
    role = api_key.membership.role if getattr(api_key, "membership", None) else Role.MEMBER
    return {
        "is_creator": creator is not None and creator.pk == api_key.user_id,
        "creator_name": creator.display_name if creator else "",
        "creator_email": creator.email if creator else "",
        "role": "admin" if role in (Role.OWNER, Role.MANAGER) else "editor",
        "anonymous_access_level_override": None,
        "access_source": "creator"
        if creator is not None and creator.pk == api_key.user_id
        else "workspace_default",
    }


def _summary_json(agent, api_key) -> dict:
    """``AgentSummaryResponseModel``."""
    return {
        "agent_id": agent.agent_id,
        "name": agent.name,
        "tags": list(agent.tags or []),
        "created_at_unix_secs": _unix(agent.created_at),
        "access_info": _access_info(agent, api_key),
        "last_call_time_unix_secs": _unix(agent.last_conversation_at),
        "archived": False,
    }


def _conversation_config(config: AgentConfig, workspace_id) -> dict:
    """The API's ``conversation_config``, each knowledge base entry with its document's name
    (the spec's ``KnowledgeBaseLocator`` requires one)."""
    data = config.conversation_config()
    entries = data["agent"]["prompt"]["knowledge_base"]
    if entries:
        names = dict(
            KnowledgeDocument.objects.filter(
                workspace_id=workspace_id, document_id__in=[e["id"] for e in entries]
            ).values_list("document_id", "name")
        )
        kinds = dict(
            KnowledgeDocument.objects.filter(
                workspace_id=workspace_id, document_id__in=[e["id"] for e in entries]
            ).values_list("document_id", "kind")
        )
        for entry in entries:
            entry["name"] = names.get(entry["id"], "")
            entry["type"] = "text" if kinds.get(entry["id"]) == KnowledgeKind.TEXT else "file"
    return data


def _agent_json(agent, api_key, version: AgentVersion | None = None) -> dict:
    """``GetAgentResponseModel``: ``version_id`` is the number of the version shown."""
    version = version or agent.version
    config = AgentConfig.from_dict(version.config if version else None)
    return {
        "agent_id": agent.agent_id,
        "name": agent.name,
        "conversation_config": _conversation_config(config, agent.workspace_id),
        "metadata": {
            "created_at_unix_secs": _unix(agent.created_at),
            "updated_at_unix_secs": _unix(agent.updated_at),
        },
        "platform_settings": {},
        "phone_numbers": [],
        "whatsapp_accounts": [],
        "access_info": _access_info(agent, api_key),
        "tags": list(agent.tags or []),
        "version_id": str(version.number) if version else None,
        "branch_id": None,
        "main_branch_id": None,
    }


@api_view(scope=SCOPE, methods=("POST",))
def agent_create(request, api_key):
    """``POST /v1/convai/agents/create``: a new agent (its version 1) from
    ``conversation_config``, ``name`` and ``tags``; ``platform_settings`` and ``workflow``
    are accepted and ignored."""
    data = _body(request, required=True)
    errors: list[dict] = []
    body = _Fields(data, ["body"], errors)
    raw = body.get("conversation_config", "object", required=True)
    name = body.get("name", "string")
    tags = _tags(body)
    body.get("platform_settings", "object")
    body.get("workflow", "object")
    if errors:
        raise ApiInvalid(errors)
    config = _config(raw)
    try:
        agent = agents.agent_create(
            workspace=api_key.workspace,
            user=api_key.user,
            name=name if name and name.strip() else UNTITLED,
            config=config,
            tags=tags,
        )
    except agents.AgentRefused as exc:
        raise _refused(exc) from exc
    return JsonResponse({"agent_id": agent.agent_id})


@api_view(scope=SCOPE)
def agent_list(request, api_key):
    """``GET /v1/convai/agents``: the workspace's agents, newest first, by cursor."""
    errors: list[dict] = []
    page_size = _query_int(request, "page_size", errors, low=1, high=convai.MAX_PAGE)
    archived = _query_bool(request, "archived", errors)
    if errors:
        raise ApiInvalid(errors)
    page = convai.api_agents_page(
        api_key=api_key,
        page_size=page_size or 30,
        search=request.GET.get("search") or None,
        cursor=request.GET.get("cursor") or None,
        archived=archived,
    )
    return JsonResponse(
        {
            "agents": [_summary_json(a, api_key) for a in page.items],
            "next_cursor": page.next_cursor,
            "has_more": page.has_more,
        }
    )


def _version_of(agent, version_id: str | None) -> AgentVersion | None:
    if not version_id:
        return None
    found = None
    if version_id.isdigit() and len(version_id) < 10:
        found = AgentVersion.objects.filter(agent=agent, number=int(version_id)).first()
    if found is None:
        raise ApiRefused(
            404,
            "version_not_found",
            f"The agent {agent.agent_id!r} has no version {version_id[:40]!r}: versions are "
            "numbered from 1 (version_id of GET /v1/convai/agents/{agent_id}).",
            kind="not_found",
        )
    return found


@api_view(scope=SCOPE, methods=("GET", "PATCH", "DELETE"))
def agent(request, api_key, agent_id):
    """``GET /v1/convai/agents/{id}`` (``version_id``: an earlier version), ``PATCH`` edits
    it (a changed configuration is its next version), ``DELETE`` removes it (its
    conversations stay)."""
    found = convai.api_agent(api_key=api_key, agent_id=agent_id)
    if request.method == "GET":
        version = _version_of(found, request.GET.get("version_id"))
        return JsonResponse(_agent_json(found, api_key, version))
    if request.method == "DELETE":
        agents.agent_delete(agent=found)
        return HttpResponse(status=204)
    data = _body(request, required=False)
    errors: list[dict] = []
    body = _Fields(data, ["body"], errors)
    raw = body.get("conversation_config", "object")
    name = body.get("name", "string")
    tags = _tags(body)
    note = body.get("version_description", "string")
    body.get("platform_settings", "object")
    body.get("workflow", "object")
    if errors:
        raise ApiInvalid(errors)
    config = _config(raw, base=agents.agent_config(found)) if raw is not None else None
    try:
        edited = agents.agent_update(
            agent=found,
            user=api_key.user,
            name=name,
            config=config,
            tags=tags,
            note=note or "Edited through the API",
        )
    except agents.AgentRefused as exc:
        raise _refused(exc) from exc
    edited.created_by = found.created_by
    return JsonResponse(_agent_json(edited, api_key))


# --- Signed URLs --------------------------------------------------------------------------


def _agent_of_query(request, api_key, errors: list):
    agent_id = request.GET.get("agent_id")
    if not agent_id:
        errors.append({"type": "missing", "loc": ["query", "agent_id"], "msg": "Field required"})
    if errors:
        raise ApiInvalid(errors)
    return convai.api_agent(api_key=api_key, agent_id=agent_id)


def _signature(api_key, agent, conversation=None) -> str:
    return convai_signature_make(
        agent_id=agent.agent_id,
        workspace_id=api_key.workspace_id,
        user_id=api_key.user_id,
        api_key_id=api_key.pk,
        conversation_id=conversation.conversation_id if conversation else None,
    )


@api_view(scope=SCOPE)
def conversation_signed_url(request, api_key):
    """``GET /v1/convai/conversation/get-signed-url``: the conversation WebSocket's address on
    this host with a token good for 15 minutes (``apps.agents.signing``); with
    ``include_conversation_id=true`` the conversation is made now and its id returned."""
    errors: list[dict] = []
    include = _query_bool(request, "include_conversation_id", errors)
    agent = _agent_of_query(request, api_key, errors)
    try:
        host = request.get_host()
    except DisallowedHost as exc:
        raise ApiRefused(400, "invalid_host", "The request's Host is not this site's.") from exc
    conversation = convai.api_conversation_start(api_key=api_key, agent=agent) if include else None
    query = urlencode(
        {
            "agent_id": agent.agent_id,
            "conversation_signature": _signature(api_key, agent, conversation),
        }
    )
    scheme = "wss" if request.is_secure() else "ws"
    body = {"signed_url": f"{scheme}://{host}/v1/convai/conversation?{query}"}
    if conversation is not None:
        body["conversation_id"] = conversation.conversation_id
    return JsonResponse(body)


@api_view(scope=SCOPE)
def conversation_token(request, api_key):
    """``GET /v1/convai/conversation/token``: a new conversation and its token (the
    signature a signed URL carries; Chorus has no WebRTC room, the WebSocket takes it)."""
    agent = _agent_of_query(request, api_key, [])
    conversation = convai.api_conversation_start(api_key=api_key, agent=agent)
    return JsonResponse(
        {
            "token": _signature(api_key, agent, conversation),
            "conversation_id": conversation.conversation_id,
        }
    )


# --- The knowledge base -------------------------------------------------------------------

DOCUMENT_NAME_MOST = 200


def _folder_refused(folder) -> None:
    if folder is not None:
        raise ApiRefused(
            404,
            "folder_not_found",
            "Chorus's knowledge base has no folders: leave parent_folder_id out.",
            kind="not_found",
        )


def _added_json(document) -> dict:
    """``AddKnowledgeBaseResponseModel``."""
    return {"id": document.document_id, "name": document.name, "folder_path": []}


def _document_json(document, api_key) -> dict:
    """``GetKnowledgeBaseTextResponseModel`` or ``…FileResponseModel``: the extracted text as
    HTML (escaped, a paragraph per blank-line-separated block)."""
    creator = document.created_by
    is_creator = creator is not None and creator.pk == api_key.user_id
    role = api_key.membership.role if getattr(api_key, "membership", None) else Role.MEMBER
    paragraphs = [p for p in document.text.split("\n\n") if p.strip()]
    body = {
        "id": document.document_id,
        "name": document.name,
        "metadata": {
            "created_at_unix_secs": _unix(document.created_at),
            "last_updated_at_unix_secs": _unix(document.created_at),
            "size_bytes": document.size_bytes,
        },
        "supported_usages": ["prompt", "auto"],
        "access_info": {
            "is_creator": is_creator,
            "creator_name": creator.display_name if creator else "",
            "creator_email": creator.email if creator else "",
            "role": "admin" if role in (Role.OWNER, Role.MANAGER) else "editor",
            "anonymous_access_level_override": None,
            "access_source": "creator" if is_creator else "workspace_default",
        },
        "folder_parent_id": None,
        "folder_path": [],
        "type": "text" if document.kind == KnowledgeKind.TEXT else "file",
        "extracted_inner_html": "".join(
            "<p>" + html.escape(p.strip()).replace("\n", "<br>") + "</p>" for p in paragraphs
        ),
        "content_format": "html",
    }
    if document.kind != KnowledgeKind.TEXT:
        body["filename"] = document.filename
    return body


@api_view(scope=SCOPE, methods=("POST",))
def knowledge_base_text(request, api_key):
    """``POST /v1/convai/knowledge-base/text``: a document of ``text`` (``name`` optional:
    its first words otherwise). Not metered."""
    data = _body(request, required=True)
    errors: list[dict] = []
    body = _Fields(data, ["body"], errors)
    text = body.get("text", "string", required=True)
    name = body.get("name", "string")
    folder = body.get("parent_folder_id", "string")
    if isinstance(name, str) and not name:
        errors.append({"type": "string_too_short", "loc": ["body", "name"],
                       "msg": "String should have at least 1 character"})  # fmt: skip
    if errors:
        raise ApiInvalid(errors)
    _folder_refused(folder)
    document = convai.api_document_add_text(api_key=api_key, text=text, name=name)
    return JsonResponse(_added_json(document))


@api_view(scope=SCOPE, methods=("POST",))
def knowledge_base_file(request, api_key):
    """``POST /v1/convai/knowledge-base/file`` (multipart: ``file``, ``name``): a document
    from a TXT, Markdown, PDF or DOCX file, checked as the studio's upload is. Not metered."""
    errors: list[dict] = []
    form = _Form(request, errors)
    uploads = form.file_parts("file", required=True, most_bytes=MAX_FILE_BYTES)
    name = form.text("name", most=DOCUMENT_NAME_MOST)
    folder = form.text("parent_folder_id")
    if len(uploads) > 1:
        errors.append({"type": "value_error", "loc": ["body", "file"],
                       "msg": "Send one file"})  # fmt: skip
    if errors:
        raise ApiInvalid(errors)
    _folder_refused(folder)
    upload = uploads[0]
    document = convai.api_document_add_file(
        api_key=api_key, filename=upload.name or "", data=upload.read(), name=name
    )
    return JsonResponse(_added_json(document))


@api_view(scope=SCOPE, methods=("GET", "DELETE"))
def knowledge_base_document(request, api_key, documentation_id):
    """``GET /v1/convai/knowledge-base/{documentation_id}``: the document and its text;
    ``DELETE`` removes it (``force=true``: even from the agents that use it)."""
    if request.method == "DELETE":
        errors: list[dict] = []
        force = _query_bool(request, "force", errors)
        if errors:
            raise ApiInvalid(errors)
        convai.api_document_delete(
            api_key=api_key, documentation_id=documentation_id, force=bool(force)
        )
        return JsonResponse({})
    found = convai.api_document(api_key=api_key, documentation_id=documentation_id)
    return JsonResponse(_document_json(found, api_key))


# --- Conversations ------------------------------------------------------------------------

CALL_SUCCESSFUL = {"done": "success", "failed": "failure"}


def _seconds(conversation) -> int:
    return int(round(conversation.duration_seconds or 0))


def _conversation_summary(conversation) -> dict:
    """``ConversationSummaryResponseModel``."""
    return {
        "agent_id": conversation.agent.agent_id if conversation.agent else "",
        "agent_name": conversation.agent_name,
        "version_id": str(conversation.version_number) if conversation.version_number else None,
        "conversation_id": conversation.conversation_id,
        "start_time_unix_secs": _unix(conversation.started_at),
        "call_duration_secs": _seconds(conversation),
        "message_count": conversation.message_count,
        "status": conversation.status,
        "termination_reason": conversation.end_reason,
        "call_successful": CALL_SUCCESSFUL.get(conversation.status, "unknown"),
        "tag_ids": [],
    }


def _turn_json(turn) -> dict:
    """``ConversationHistoryTranscriptResponseModel``."""
    return {
        "role": turn.role,
        "message": turn.text,
        "time_in_call_secs": int(turn.started_seconds),
        "interrupted": turn.interrupted,
        "tool_calls": [],
        "tool_results": [],
    }


def _conversation_json(conversation) -> dict:
    """``GetConversationResponseModel``: ``metadata.cost`` is the credits charged (whole
    credits, rounded up; null before the conversation is metered)."""
    credits = convai.conversation_credits(conversation)
    user_audio, agent_audio = bool(conversation.user_audio), bool(conversation.agent_audio)
    return {
        "agent_id": conversation.agent.agent_id if conversation.agent else "",
        "agent_name": conversation.agent_name,
        "status": conversation.status,
        "user_id": str(conversation.user_id) if conversation.user_id else None,
        "version_id": str(conversation.version_number) if conversation.version_number else None,
        "branch_id": None,
        "metadata": {
            "start_time_unix_secs": _unix(conversation.started_at),
            "call_duration_secs": _seconds(conversation),
            "cost": math.ceil(credits) if credits is not None else None,
            "cost_fiat": None,
            "termination_reason": conversation.end_reason,
            "text_only": False,
        },
        "conversation_initiation_client_data": {
            "conversation_config_override": conversation.overrides or {},
            "dynamic_variables": conversation.dynamic_variables or {},
        },
        "conversation_id": conversation.conversation_id,
        "has_audio": user_audio or agent_audio,
        "has_user_audio": user_audio,
        "has_response_audio": agent_audio,
        "has_auxiliary_audio": False,
        "transcript": [_turn_json(t) for t in conversation.turns.order_by("position")],
        "tag_ids": [],
    }


@api_view(scope=SCOPE)
def conversation_list(request, api_key):
    """``GET /v1/convai/conversations``: the member's conversations, newest first, by cursor
    (``agent_id``, ``call_start_before_unix`` and ``call_start_after_unix`` filter them)."""
    errors: list[dict] = []
    page_size = _query_int(request, "page_size", errors, low=1, high=convai.MAX_PAGE)
    before = _query_int(request, "call_start_before_unix", errors, low=0, high=MAX_UNIX)
    after = _query_int(request, "call_start_after_unix", errors, low=0, high=MAX_UNIX)
    if errors:
        raise ApiInvalid(errors)
    page = convai.api_conversations_page(
        api_key=api_key,
        page_size=page_size or 30,
        cursor=request.GET.get("cursor") or None,
        agent_id=request.GET.get("agent_id") or None,
        before_unix=before,
        after_unix=after,
    )
    return JsonResponse(
        {
            "conversations": [_conversation_summary(c) for c in page.items],
            "next_cursor": page.next_cursor,
            "has_more": page.has_more,
        }
    )


@api_view(scope=SCOPE, methods=("GET", "DELETE"))
def conversation(request, api_key, conversation_id):
    """``GET /v1/convai/conversations/{id}``: the transcript and metadata; ``DELETE`` removes
    the conversation and its audio."""
    if request.method == "DELETE":
        convai.api_conversation_delete(api_key=api_key, conversation_id=conversation_id)
        return JsonResponse({})
    found = convai.api_conversation(api_key=api_key, conversation_id=conversation_id)
    return JsonResponse(_conversation_json(found))


@api_view(scope=SCOPE)
def conversation_audio(request, api_key, conversation_id):
    """``GET /v1/convai/conversations/{id}/audio``: the call as it sounded (both sides mixed)
    as MP3, encoded as it is sent."""
    found = convai.api_conversation(api_key=api_key, conversation_id=conversation_id)
    if not recordings.has_recording(found):
        raise ApiRefused(
            404,
            "conversation_audio_not_found",
            f"The conversation {conversation_id!r} has no recorded audio.",
            kind="not_found",
        )
    response = StreamingHttpResponse(
        recordings.recording_chunks(found), content_type=recordings.RECORDING_CONTENT_TYPE
    )
    response["Content-Disposition"] = f'attachment; filename="{found.conversation_id}.mp3"'
    return response
