"""The agent pages: the list, a new agent and its edit (each edit a new version), an agent (its
configuration, versions and conversations), a conversation (transcript and both sides' audio)
and the workspace's knowledge documents.

Views are thin: ``services`` and ``knowledge`` do the work; a refusal is a 400 with the page and
each message next to its field. Talking to an agent arrives with the live audio path (a
Channels consumer); the agent page holds its place.
"""

from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.core.exceptions import RequestDataTooBig
from django.core.paginator import Paginator
from django.db.models import Count, Max
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.billing.models import UsageEvent
from apps.history.views import stored_audio_response
from apps.voices.models import LibraryVoice
from apps.voices.picker import speech_models, speech_voices
from apps.workspaces.access import changed, get_scoped, has_role, scoped, workspace_view
from apps.workspaces.models import Role

from . import knowledge, services
from .config import AgentConfig
from .forms import AgentForm, DocumentFileForm, DocumentTextForm
from .models import Agent, AgentVersion, Conversation, KnowledgeDocument

PAGE_SIZE = 25
AUDIO_TYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "webm": "audio/webm",
    "m4a": "audio/mp4",
    "flac": "audio/flac",
}
# The configuration's fields as the agent page and the version history name them.
FIELD_LABELS = {
    "prompt": "System prompt",
    "first_message": "First message",
    "language": "Language",
    "voice_id": "Voice",
    "tts_model_id": "Speech model",
    "stability": "Stability",
    "similarity_boost": "Similarity",
    "speed": "Speed",
    "llm": "LLM",
    "temperature": "Temperature",
    "max_tokens": "Maximum tokens",
    "knowledge": "Knowledge",
    "dynamic_variables": "Dynamic variables",
    "silence_ms": "Silence before answering",
    "interruptible": "User may interrupt",
    "max_duration_seconds": "Maximum length",
}
SHOWN_MAX = 300  # characters of a long value in the list of changes


def _agent(request, agent_id: str) -> Agent:
    return get_scoped(
        request, Agent.objects.select_related("version", "created_by"), agent_id=agent_id
    )


def _detail_url(agent: Agent) -> str:
    return reverse("agents:detail", args=[agent.agent_id])


def _voice_names(workspace) -> dict[str, str]:
    return dict(LibraryVoice.objects.filter(workspace=workspace).values_list("voice_id", "name"))


def _document_names(workspace) -> dict[str, str]:
    return dict(
        KnowledgeDocument.objects.filter(workspace=workspace).values_list("document_id", "name")
    )


def _shown(config: AgentConfig, voices: dict, documents: dict) -> list[tuple[str, str]]:
    """The configuration as (label, value) rows, in words."""
    return [(FIELD_LABELS[name], _value(name, getattr(config, name), voices, documents))
            for name in FIELD_LABELS]  # fmt: skip


def _value(name: str, value, voices: dict, documents: dict) -> str:
    if name == "voice_id":
        return f"{voices[value]} ({value})" if value in voices else (value or "—")
    if name == "knowledge":
        return ", ".join(documents.get(d, f"{d} (deleted)") for d in value or []) or "None"
    if name == "dynamic_variables":
        return ", ".join(f"{k} = {v}" if v else k for k, v in (value or {}).items()) or "None"
    if name == "interruptible":
        return "Yes" if value else "No"
    if name == "silence_ms":
        return f"{value} ms"
    if name == "max_duration_seconds":
        return f"{value} s"
    if name == "max_tokens" and value == -1:
        return "The model's limit"
    if value is None or value == "":
        return "—" if name != "first_message" else "None (the agent waits for the user)"
    return str(value)


def changes_between(old: dict | None, new: dict, voices=None, documents=None) -> list[dict]:
    """The fields whose values differ from ``old`` to ``new`` (stored configurations), each
    with both values in words (long ones cut); ``old`` None: the first version."""
    if old is None:
        return []
    before, after = AgentConfig.from_dict(old), AgentConfig.from_dict(new)
    voices, documents = voices or {}, documents or {}
    rows = []
    for name, label in FIELD_LABELS.items():
        if getattr(before, name) != getattr(after, name):
            was = _value(name, getattr(before, name), voices, documents)
            now = _value(name, getattr(after, name), voices, documents)
            rows.append(
                {
                    "field": name,
                    "label": label,
                    "before": was if len(was) <= SHOWN_MAX else was[: SHOWN_MAX - 1] + "…",
                    "after": now if len(now) <= SHOWN_MAX else now[: SHOWN_MAX - 1] + "…",
                }
            )
    return rows


# --- The list -------------------------------------------------------------------------------


@workspace_view()
@require_GET
def agent_list(request):
    agents = (
        scoped(request, Agent)
        .select_related("version")
        .annotate(conversations_n=Count("conversations"), last_at=Max("conversations__started_at"))
    )
    query = request.GET.get("q", "").strip()
    if query:
        agents = agents.filter(name__icontains=query)
    page = Paginator(agents.order_by("name", "id"), PAGE_SIZE).get_page(request.GET.get("page"))
    voices = _voice_names(request.workspace)
    rows = []
    for agent in page.object_list:
        config = services.agent_config(agent)
        rows.append(
            {
                "agent": agent,
                "config": config,
                "voice": voices.get(config.voice_id, config.voice_id or "—"),
                "version": agent.version.number if agent.version else 0,
                "last_at": agent.last_at or agent.last_conversation_at,
            }
        )
    return render(
        request,
        "agents/list.html",
        {"page": page, "rows": rows, "q": query, "can_edit": has_role(request, Role.MEMBER)},
    )


# --- New and edit ---------------------------------------------------------------------------


def _form(request, *, data=None, initial=None, current: AgentConfig) -> AgentForm:
    voices = speech_voices(workspace=request.workspace, user=request.user,
                           include=current.voice_id)  # fmt: skip
    models = speech_models(workspace=request.workspace, user=request.user)
    documents = scoped(request, KnowledgeDocument).order_by("name", "id")
    return AgentForm(
        data,
        initial=initial,
        voices=voices,
        models=models,
        llms=services.llms_offered(),
        documents=documents,
        current=current,
    )


def _form_page(request, form: AgentForm, *, agent: Agent | None = None, status: int = 200):
    config = AgentConfig(
        prompt=str(form["prompt"].value() or ""),
        first_message=str(form["first_message"].value() or ""),
    )
    return render(
        request,
        "agents/edit.html",
        {
            "form": form,
            "agent": agent,
            "voices": form.voices,
            "variables_used": config.variables_used(),
            "documents_n": len(form.fields["knowledge"].choices),
        },
        status=status,
    )


def _posted(request):
    try:
        return request.POST
    except RequestDataTooBig:
        return None


@workspace_view(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def agent_new(request):
    """The form; POST creates the agent and its version 1."""
    base = AgentConfig()
    if request.method == "GET":
        form = _form(request, current=base, initial=AgentForm.initial_of("", base))
        form.initial["voice_id"] = services.default_voice(request.workspace, base.language)
        return _form_page(request, form)
    form = _form(request, data=_posted(request) or {}, current=base)
    if form.is_valid():
        try:
            agent = services.agent_create(
                workspace=request.workspace,
                user=request.user,
                name=form.cleaned_data["name"],
                config=form.config(base),
            )
        except services.AgentRefused as exc:
            form.refused(exc.errors)
        else:
            return changed(request, _detail_url(agent), f"“{agent.name}” is ready (version 1).")
    return _form_page(request, form, status=400)


@workspace_view(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def agent_edit(request, agent_id: str):
    """The form with the current configuration; a changed one is saved as the next version."""
    agent = _agent(request, agent_id)
    current = services.agent_config(agent)
    if request.method == "GET":
        form = _form(request, current=current, initial=AgentForm.initial_of(agent.name, current))
        return _form_page(request, form, agent=agent)
    form = _form(request, data=_posted(request) or {}, current=current)
    if form.is_valid():
        before = agent.version_id
        try:
            agent = services.agent_update(
                agent=agent,
                user=request.user,
                name=form.cleaned_data["name"],
                config=form.config(current),
                note=form.cleaned_data["note"],
            )
        except services.AgentRefused as exc:
            form.refused(exc.errors)
        else:
            if agent.version_id != before:
                message = f"Saved as version {agent.version.number}."
            else:
                message = "Saved. The configuration did not change, so no new version."
            return changed(request, _detail_url(agent), message)
    return _form_page(request, form, agent=agent, status=400)


# --- An agent -------------------------------------------------------------------------------


def _credits(workspace, conversations) -> dict[int, Decimal]:
    ids = [c.usage_event_id for c in conversations if c.usage_event_id]
    if not ids:
        return {}
    rows = UsageEvent.objects.filter(workspace=workspace, pk__in=ids).values_list(
        "pk", "credits", "estimated_credits"
    )
    return {pk: credits if credits is not None else estimated for pk, credits, estimated in rows}


def _conversation_rows(request, conversations) -> list[dict]:
    conversations = list(conversations)
    credits = _credits(request.workspace, conversations)
    return [{"conversation": c, "credits": credits.get(c.usage_event_id)} for c in conversations]


@workspace_view()
@require_GET
def agent_detail(request, agent_id: str):
    agent = _agent(request, agent_id)
    config = services.agent_config(agent)
    voices = _voice_names(request.workspace)
    documents = _document_names(request.workspace)
    versions = list(agent.versions.select_related("created_by").order_by("-number"))
    conversations = (
        Conversation.objects.filter(workspace=request.workspace, agent=agent)
        .select_related("user")
        .annotate(turns_n=Count("turns"))
        .order_by("-started_at", "-id")
    )
    page = Paginator(conversations, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "agents/detail.html",
        {
            "agent": agent,
            "config": config,
            "shown": _shown(config, voices, documents),
            "variables_used": config.variables_used(),
            "versions": versions,
            "page": page,
            "conversations": _conversation_rows(request, page.object_list),
            "can_edit": has_role(request, Role.MEMBER),
        },
    )


@workspace_view()
@require_GET
def agent_version(request, agent_id: str, number: int):
    """One version, read-only, with what changed from the one before."""
    agent = _agent(request, agent_id)
    version = agent.versions.select_related("created_by").filter(number=number).first()
    if version is None:
        raise Http404("This agent has no such version.")
    previous = (
        AgentVersion.objects.filter(agent=agent, number__lt=number).order_by("-number").first()
    )
    voices = _voice_names(request.workspace)
    documents = _document_names(request.workspace)
    config = AgentConfig.from_dict(version.config)
    return render(
        request,
        "agents/version.html",
        {
            "agent": agent,
            "version": version,
            "previous": previous,
            "shown": _shown(config, voices, documents),
            "changes": changes_between(
                previous.config if previous else None, version.config, voices, documents
            ),
            "is_current": agent.version_id == version.pk,
        },
    )


@workspace_view(Role.MEMBER)
@require_POST
def agent_delete(request, agent_id: str):
    agent = _agent(request, agent_id)
    name = agent.name
    services.agent_delete(agent=agent)
    return changed(
        request,
        reverse("agents:list"),
        f"Deleted “{name}”. Its conversations are kept, under its name.",
    )


# --- A conversation -------------------------------------------------------------------------


def _conversation(request, conversation_id: str) -> Conversation:
    return get_scoped(
        request,
        Conversation.objects.select_related("agent", "user", "version"),
        conversation_id=conversation_id,
    )


@workspace_view()
@require_GET
def conversation_detail(request, conversation_id: str):
    conversation = _conversation(request, conversation_id)
    credits = _credits(request.workspace, [conversation]).get(conversation.usage_event_id)
    return render(
        request,
        "agents/conversation.html",
        {
            "conversation": conversation,
            "turns": list(conversation.turns.order_by("position")),
            "credits": credits,
            "version_exists": conversation.agent_id is not None
            and conversation.version_id is not None,
        },
    )


@workspace_view()
@require_GET
def conversation_audio(request, conversation_id: str, side: str):
    """One side's recording (``user`` or ``agent``), whole or the byte range asked for."""
    if side not in ("user", "agent"):
        raise Http404("A conversation has a user side and an agent side.")
    conversation = _conversation(request, conversation_id)
    stored = conversation.user_audio if side == "user" else conversation.agent_audio
    if not stored:
        raise Http404("This side of the conversation was not recorded.")
    extension = stored.name.rsplit(".", 1)[-1].lower() if "." in stored.name else ""
    return stored_audio_response(
        request,
        storage=stored.storage,
        name=stored.name,
        content_type=AUDIO_TYPES.get(extension, "application/octet-stream"),
        filename=f"{conversation.conversation_id}-{side}.{extension or 'audio'}",
    )


# --- Knowledge ------------------------------------------------------------------------------


def _knowledge_page(request, *, text_form=None, file_form=None, error="", status=200):
    documents = (
        scoped(request, KnowledgeDocument)
        .select_related("created_by")
        .annotate(chunks_n=Count("chunks"))
        .order_by("name", "id")
    )
    used = knowledge.documents_in_use(request.workspace)
    context = {
        "rows": [{"document": d, "agents": used.get(d.document_id, [])} for d in documents],
        "text_form": text_form or DocumentTextForm(prefix="text"),
        "file_form": file_form or DocumentFileForm(prefix="file"),
        "error": error,
        "can_edit": has_role(request, Role.MEMBER),
        "max_mb": knowledge.MAX_FILE_BYTES // (1024 * 1024),
    }
    template = "agents/knowledge.html#knowledge" if request.htmx else "agents/knowledge.html"
    return render(request, template, context, status=status)


@workspace_view()
@require_GET
def knowledge_list(request):
    return _knowledge_page(request)


def _knowledgechanged(request, message: str):
    messages.success(request, message)
    if request.htmx:
        return _knowledge_page(request)
    return HttpResponseRedirect(reverse("agents:knowledge"), status=303)


@workspace_view(Role.MEMBER)
@require_POST
def knowledge_add(request):
    """A document from typed text (``kind=text``) or an uploaded file (``kind=file``)."""
    try:
        data, files = request.POST, request.FILES
    except RequestDataTooBig:
        return _knowledge_page(
            request,
            error=f"That is too much to send in a form: files are at most "
            f"{knowledge.MAX_FILE_BYTES // (1024 * 1024)} MB.",
            status=400,
        )
    if data.get("kind") == "file":
        form = DocumentFileForm(data, files, prefix="file")
        if form.is_valid():
            upload = form.cleaned_data["file"]
            if upload.size > knowledge.MAX_FILE_BYTES:
                form.add_error(
                    "file",
                    f"This file is {upload.size / (1024 * 1024):.1f} MB; a knowledge file is at "
                    f"most {knowledge.MAX_FILE_BYTES // (1024 * 1024)} MB.",
                )
            else:
                try:
                    document = knowledge.document_add_file(
                        workspace=request.workspace,
                        user=request.user,
                        filename=upload.name or "",
                        data=upload.read(),
                        name=form.cleaned_data["name"],
                    )
                except knowledge.KnowledgeRefused as exc:
                    form.add_error(exc.field if exc.field in form.fields else "file", str(exc))
                else:
                    return _knowledgechanged(request, _added(document))
        return _knowledge_page(request, file_form=form, status=400)
    form = DocumentTextForm(data, prefix="text")
    if form.is_valid():
        try:
            document = knowledge.document_add_text(
                workspace=request.workspace,
                user=request.user,
                name=form.cleaned_data["name"],
                text=form.cleaned_data["text"],
            )
        except knowledge.KnowledgeRefused as exc:
            form.add_error(exc.field if exc.field in form.fields else "text", str(exc))
        else:
            return _knowledgechanged(request, _added(document))
    return _knowledge_page(request, text_form=form, status=400)


def _added(document: KnowledgeDocument) -> str:
    chunks = document.chunks.count()
    return (
        f"Added “{document.name}”: {len(document.text):,} characters in {chunks} "
        f"passage{'s' if chunks != 1 else ''}."
    )


def _document(request, document_id: str) -> KnowledgeDocument:
    return get_scoped(
        request, KnowledgeDocument.objects.select_related("created_by"), document_id=document_id
    )


@workspace_view()
@require_GET
def knowledge_document(request, document_id: str):
    """A document's extracted text, its passages and the agents that use it."""
    document = _document(request, document_id)
    return render(
        request,
        "agents/document.html",
        {
            "document": document,
            "chunks": list(document.chunks.order_by("position")),
            "agents": knowledge.agents_using(document),
            "can_edit": has_role(request, Role.MEMBER),
        },
    )


@workspace_view(Role.MEMBER)
@require_POST
def knowledge_delete(request, document_id: str):
    document = _document(request, document_id)
    try:
        knowledge.document_delete(document=document)
    except knowledge.KnowledgeRefused as exc:
        return _knowledge_page(request, error=str(exc), status=409)
    return _knowledgechanged(request, f"Deleted “{document.name}”.")
