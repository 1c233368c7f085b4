"""Agents and conversations as ``/v1/convai`` calls them: the key's workspace's agents and its
member's own conversations, looked up and paged with the API's errors; the conversation a
signed URL starts. Creating, editing and deleting agents is ``apps.agents.services``'.

Who sees what: a key sees every agent of its workspace (agents are team assets) and, as
``/v1/history`` does with clips, only its own member's conversations (made in the studio or
through any of their keys): ElevenLabs keeps one conversation history per account, and the
account behind a personal key is its member. The whole team's conversations are on the
agents' pages, where roles decide who may listen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import Count, Q

from apps.agents import knowledge
from apps.agents import services as agents
from apps.agents.models import Agent, Conversation, KnowledgeDocument
from apps.billing.models import UsageEvent
from apps.generation.engine import engine_of

from .models import ApiKey
from .services import ApiRefused, caller_of

MAX_PAGE = 100


@dataclass(frozen=True)
class Page:
    items: list
    next_cursor: str | None
    has_more: bool


def _not_found(code: str, message: str) -> ApiRefused:
    return ApiRefused(404, code, message, kind="not_found")


def _cursor_unknown(cursor: str) -> ApiRefused:
    shown = cursor if len(cursor) <= 80 else cursor[:80] + "…"
    return ApiRefused(
        400,
        "invalid_parameters",
        f"The cursor {shown!r} is not one this endpoint returned: pass next_cursor as it was "
        "given, or leave it out for the first page.",
        kind="validation_error",
        param="cursor",
    )


def _after(rows, anchor: dict | None, *, when: str):
    """``rows`` that come after ``anchor`` in newest-first order (keyset: time, then id)."""
    if anchor is None:
        return rows
    return rows.filter(
        Q(**{f"{when}__lt": anchor[when]}) | Q(**{when: anchor[when]}, id__lt=anchor["id"])
    )


def _paged(rows, size: int, id_field: str) -> Page:
    size = max(1, min(MAX_PAGE, size))
    found = list(rows[: size + 1])
    page, more = found[:size], len(found) > size
    return Page(
        items=page, next_cursor=getattr(page[-1], id_field) if more else None, has_more=more
    )


def _unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# --- Agents ---------------------------------------------------------------------------------


def api_agent(*, api_key: ApiKey, agent_id: str) -> Agent:
    """The workspace's agent ``agent_id`` (another workspace's is not found, like none)."""
    found = (
        Agent.objects.filter(workspace_id=api_key.workspace_id, agent_id=agent_id)
        .select_related("version", "created_by")
        .first()
    )
    if found is None:
        raise _not_found("agent_not_found", f"There is no agent {agent_id!r} in this workspace.")
    return found


def api_agents_page(
    *, api_key: ApiKey, page_size: int = 30, search: str | None = None, cursor: str | None = None,
    archived: bool | None = None,
) -> Page:  # fmt: skip
    """One page of the workspace's agents, newest first; ``cursor`` is the last agent id of
    the previous page. Chorus archives no agents: ``archived=true`` lists none."""
    rows = Agent.objects.filter(workspace_id=api_key.workspace_id)
    if archived:
        rows = rows.none()
    if search:
        rows = rows.filter(name__icontains=search)
    anchor = None
    if cursor:
        anchor = (
            Agent.objects.filter(workspace_id=api_key.workspace_id, agent_id=cursor)
            .values("created_at", "id")
            .first()
        )
        if anchor is None:
            raise _cursor_unknown(cursor)
    rows = _after(rows, anchor, when="created_at").select_related("created_by")
    return _paged(rows.order_by("-created_at", "-id"), page_size, "agent_id")


# --- The knowledge base ---------------------------------------------------------------------
# The workspace's knowledge documents (``apps.agents.knowledge``), which agents refer to by
# id in ``conversation_config.agent.prompt.knowledge_base``. Adding one is not metered.

NAME_FROM_TEXT = 60  # a document sent without a name is named after its first words


def _knowledge_refused(exc: knowledge.KnowledgeRefused, param: str) -> ApiRefused:
    return ApiRefused(400, "invalid_parameters", str(exc), kind="validation_error", param=param)


def api_document(*, api_key: ApiKey, documentation_id: str) -> KnowledgeDocument:
    """The workspace's knowledge document ``documentation_id`` (another workspace's is not
    found, like none)."""
    found = (
        KnowledgeDocument.objects.filter(
            workspace_id=api_key.workspace_id, document_id=documentation_id
        )
        .select_related("created_by")
        .first()
    )
    if found is None:
        raise _not_found(
            "document_not_found",
            f"There is no knowledge base document {documentation_id[:100]!r} in this workspace.",
        )
    return found


def _name_of(text: str) -> str:
    words = " ".join(text.split())
    if len(words) <= NAME_FROM_TEXT:
        return words
    return words[:NAME_FROM_TEXT].rsplit(" ", 1)[0] + "…"


def api_document_add_text(*, api_key: ApiKey, text: str, name: str | None) -> KnowledgeDocument:
    """A document of ``text`` (named after its first words when ``name`` is not given)."""
    try:
        return knowledge.document_add_text(
            workspace=api_key.workspace,
            user=api_key.user,
            name=name if name and name.strip() else (_name_of(text) or "Untitled document"),
            text=text,
        )
    except knowledge.KnowledgeRefused as exc:
        raise _knowledge_refused(exc, "name" if exc.field == "name" else "text") from exc


def api_document_add_file(
    *, api_key: ApiKey, filename: str, data: bytes, name: str | None
) -> KnowledgeDocument:
    """A document from an uploaded TXT, Markdown, PDF or DOCX (the studio's checks)."""
    try:
        return knowledge.document_add_file(
            workspace=api_key.workspace,
            user=api_key.user,
            filename=filename,
            data=data,
            name=name or "",
        )
    except knowledge.KnowledgeRefused as exc:
        raise _knowledge_refused(exc, "name" if exc.field == "name" else "file") from exc


@transaction.atomic
def api_document_delete(*, api_key: ApiKey, documentation_id: str, force: bool = False) -> None:
    """Delete the document. While agents use it: refused (409), unless ``force``, which
    takes it out of each of them first (a new version of each, as an edit would)."""
    document = api_document(api_key=api_key, documentation_id=documentation_id)
    users = knowledge.agents_using(document)
    if users and not force:
        names = ", ".join(repr(agent.agent_id) for agent in users[:10])
        raise ApiRefused(
            409,
            "document_in_use",
            f"The document {documentation_id!r} is in the knowledge base of the agents {names}: "
            "take it out of them first, or delete with force=true.",
        )
    for agent in users:
        config = agents.agent_config(agent)
        agents.agent_update(
            agent=agent,
            user=api_key.user,
            config=config.with_changes(
                knowledge=[d for d in config.knowledge if d != document.document_id]
            ),
            note=f"Knowledge document “{document.name[:80]}” deleted through the API",
        )
    try:
        knowledge.document_delete(document=document)
    except knowledge.KnowledgeRefused as exc:  # an agent took it up meanwhile
        raise ApiRefused(409, "document_in_use", str(exc)) from exc


# --- Conversations --------------------------------------------------------------------------


def _conversations(api_key: ApiKey):
    return Conversation.objects.filter(workspace_id=api_key.workspace_id, user_id=api_key.user_id)


def api_conversation(*, api_key: ApiKey, conversation_id: str) -> Conversation:
    """The key's member's conversation ``conversation_id`` (anyone else's: not found)."""
    found = (
        _conversations(api_key)
        .filter(conversation_id=conversation_id)
        .select_related("agent")
        .first()
    )
    if found is None:
        raise _not_found("conversation_not_found", f"There is no conversation {conversation_id!r}.")
    return found


def api_conversations_page(
    *, api_key: ApiKey, page_size: int = 30, cursor: str | None = None,
    agent_id: str | None = None, before_unix: int | None = None, after_unix: int | None = None,
) -> Page:  # fmt: skip
    """One page of the member's conversations, newest first (each with ``message_count``
    and its ``agent``); ``cursor`` is the last conversation id of the previous page. An
    ``agent_id`` of no agent here lists none (as a filter, not an error)."""
    rows = _conversations(api_key)
    if agent_id:
        rows = rows.filter(agent__agent_id=agent_id)
    if before_unix is not None:
        rows = rows.filter(started_at__lt=_unix(before_unix))
    if after_unix is not None:
        rows = rows.filter(started_at__gt=_unix(after_unix))
    anchor = None
    if cursor:
        anchor = (
            _conversations(api_key)
            .filter(conversation_id=cursor)
            .values("started_at", "id")
            .first()
        )
        if anchor is None:
            raise _cursor_unknown(cursor)
    rows = _after(rows, anchor, when="started_at")
    rows = rows.select_related("agent").annotate(message_count=Count("turns"))
    return _paged(rows.order_by("-started_at", "-id"), page_size, "conversation_id")


def conversation_credits(conversation: Conversation):
    """What the conversation was charged (its ledger row), or None before it was metered."""
    if conversation.usage_event_id is None:
        return None
    event = UsageEvent.objects.filter(pk=conversation.usage_event_id).first()
    return event.charged if event is not None else None


def api_conversation_delete(*, api_key: ApiKey, conversation_id: str) -> None:
    """Delete the member's conversation, its transcript and both sides' audio files (its
    ledger row stays: the credits were spent)."""
    conversation = api_conversation(api_key=api_key, conversation_id=conversation_id)
    files = [f for f in (conversation.user_audio, conversation.agent_audio) if f]
    conversation.delete()
    for field in files:
        field.storage.delete(field.name)


def api_conversation_start(*, api_key: ApiKey, agent: Agent) -> Conversation:
    """The conversation a signed URL (or a token) is made for, before anyone has talked:
    the agent's current version, the key's member and key, the workspace's engine."""
    return Conversation.objects.create(
        workspace_id=api_key.workspace_id,
        agent=agent,
        agent_name=agent.name,
        version=agent.version,
        version_number=agent.version.number if agent.version else 0,
        user_id=api_key.user_id,
        source="api",
        api_key_id=api_key.pk,
        engine=engine_of(caller_of(api_key)).name,
    )
