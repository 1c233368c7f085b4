"""An agent's copy at the provider, for workspaces on the ElevenLabs engine.

The provider's agent (``Agent.upstream_agent_id``) is made from the Chorus configuration with
the official ``/v1/convai/agents`` field names only, and brought up to date lazily: when a
conversation starts and the copy is older than the agent's current version
(``Agent.upstream_version``). An edit therefore never fails because the provider is down; the
next conversation says so instead. Deleting an agent deletes its copy, best effort.

The agent's knowledge travels as the provider's own documents: before the agent is made or
updated there, each of its documents without a copy at this provider (``KnowledgeDocument.
upstream_document_id``, and ``upstream_base_url``: the API that holds it) is uploaded as text
(``POST /v1/convai/knowledge-base/text``: the extracted text, so a PDF or DOCX travels too),
its id kept, and the agent's ``prompt.knowledge_base`` refers to those copies (``type`` text).
Documents never change once written, so a copy stays good until the document is deleted
(``document_upstream_delete``, best effort) or the provider loses it: when the provider
refuses the agent and a copy is gone there (404), the copy is uploaded again and the call
made once more.

What does not travel: an LLM the provider does not offer (Chorus's own model: the
provider's default is used).
"""

from __future__ import annotations

import logging

from django.db import transaction

from apps.engines.base import EngineError, InvalidRequest

from .config import AgentConfig
from .llms import PROVIDER_LLMS
from .models import Agent, KnowledgeDocument

log = logging.getLogger(__name__)

AUDIO_FORMAT = "pcm_16000"
# What a conversation may override at its start (``conversation_initiation_client_data``):
# the provider refuses overrides an agent does not allow.
ALLOWED_OVERRIDES = {
    "conversation_config_override": {
        "agent": {"prompt": {"prompt": True}, "first_message": True, "language": True},
        "tts": {"voice_id": True},
    }
}


def upstream_config(config: AgentConfig, knowledge_base: list[dict] | None = None) -> dict:
    """``conversation_config`` for the provider, official names only: ``knowledge_base`` is the
    provider's documents (``knowledge_locators``), never Chorus's ids; no
    ``silence_before_answer_ms`` (the silence is sent as ``turn_eagerness``)."""
    data = config.conversation_config()
    data["asr"] = {"user_input_audio_format": AUDIO_FORMAT}
    data["tts"]["agent_output_audio_format"] = AUDIO_FORMAT
    data["turn"] = {"turn_eagerness": data["turn"]["turn_eagerness"]}
    prompt = data["agent"]["prompt"]
    prompt["knowledge_base"] = list(knowledge_base or [])
    if config.llm not in PROVIDER_LLMS:
        del prompt["llm"]
    if config.max_tokens == -1:
        del prompt["max_tokens"]
    if not config.voice_id:
        del data["tts"]["voice_id"]
    return data


# --- Knowledge documents -----------------------------------------------------------------


def _base_url(engine) -> str:
    return getattr(engine, "base_url", "") or ""


def _has_copy(document: KnowledgeDocument, engine) -> bool:
    return bool(document.upstream_document_id) and document.upstream_base_url == _base_url(engine)


def document_upstream(*, document: KnowledgeDocument, engine, stale: str = "") -> str:
    """The provider's id of ``document``'s copy, uploaded first when it has none at this
    provider (or when its copy is ``stale``: gone there). The row is locked meanwhile and the
    id saved at once, so two agents sharing a document upload it once."""
    with transaction.atomic():
        locked = KnowledgeDocument.objects.select_for_update().get(pk=document.pk)
        if _has_copy(locked, engine) and locked.upstream_document_id != stale:
            upstream_id = locked.upstream_document_id
        else:
            upstream_id = engine.convai_knowledge_base_create_text(
                text=locked.text, name=locked.name
            )
            locked.upstream_document_id, locked.upstream_base_url = upstream_id, _base_url(engine)
            locked.save(update_fields=["upstream_document_id", "upstream_base_url"])
    document.upstream_document_id, document.upstream_base_url = upstream_id, _base_url(engine)
    return upstream_id


def _documents(agent: Agent, config: AgentConfig) -> list[KnowledgeDocument]:
    """The agent's knowledge documents, in the configuration's order (a deleted one skipped)."""
    found = {
        d.document_id: d
        for d in KnowledgeDocument.objects.filter(
            workspace_id=agent.workspace_id, document_id__in=config.knowledge
        )
    }
    return [found[i] for i in dict.fromkeys(config.knowledge) if i in found]


def knowledge_locators(documents: list[KnowledgeDocument], engine) -> list[dict]:
    """``prompt.knowledge_base`` at the provider (``KnowledgeBaseLocator``), each document
    uploaded first where it has no copy there yet."""
    return [
        {
            "type": "text",
            "name": document.name,
            "id": document_upstream(document=document, engine=engine),
            "usage_mode": "auto",
        }
        for document in documents
    ]


def _gone(documents: list[KnowledgeDocument], engine) -> list[KnowledgeDocument]:
    """The documents whose copy the provider no longer has (it answers 404 for it)."""
    gone = []
    for document in documents:
        try:
            engine.convai_knowledge_base_get(document.upstream_document_id)
        except InvalidRequest as exc:
            if exc.upstream_status == 404:
                gone.append(document)
    return gone


def document_upstream_delete(*, workspace, upstream_document_id: str, upstream_base_url: str):
    """Delete a deleted document's copy at the provider, best effort (logged, never raised):
    only where the workspace's engine is still the API that holds it. Whether it is gone."""
    from apps.generation.engine import engine_for

    try:
        engine = engine_for(workspace)
        if _base_url(engine) != upstream_base_url:
            log.warning(
                "knowledge copy %s left at %s: the workspace's engine is elsewhere now",
                upstream_document_id,
                upstream_base_url,
            )
            return False
        engine.convai_knowledge_base_delete(upstream_document_id, force=True)
    except EngineError as exc:
        if getattr(exc, "upstream_status", None) == 404:
            return True
        log.warning(
            "knowledge copy %s left at the provider (%s): %s",
            upstream_document_id,
            exc.code,
            exc.message,
        )
        return False
    except Exception:  # the workspace itself is being deleted, …: best effort
        log.warning("knowledge copy %s left at the provider", upstream_document_id, exc_info=True)
        return False
    return True


def document_deleted(sender, instance: KnowledgeDocument, **kwargs) -> None:
    """``post_delete`` of a ``KnowledgeDocument``: its copy at the provider goes too, once
    the deletion is committed (connected in ``AgentsConfig.ready``)."""
    if not instance.upstream_document_id:
        return
    workspace_id, upstream_id = instance.workspace_id, instance.upstream_document_id
    base_url = instance.upstream_base_url

    def delete():
        from apps.workspaces.models import Workspace

        workspace = Workspace.objects.filter(pk=workspace_id).first()
        if workspace is None:
            log.warning("knowledge copy %s left at the provider: workspace gone", upstream_id)
            return
        document_upstream_delete(
            workspace=workspace, upstream_document_id=upstream_id, upstream_base_url=base_url
        )

    transaction.on_commit(delete)


# --- The agent ----------------------------------------------------------------------------


def _config_of(agent: Agent) -> AgentConfig:
    return AgentConfig.from_dict(agent.version.config if agent.version else None)


def _body(agent: Agent, knowledge_base: list[dict]) -> dict:
    return {
        "name": agent.name,
        "conversation_config": upstream_config(_config_of(agent), knowledge_base),
        "platform_settings": {"overrides": ALLOWED_OVERRIDES},
        "tags": list(agent.tags or []),
    }


def _put(engine, upstream_id: str, body: dict) -> str:
    """Update the provider's agent ``upstream_id`` (made again when it is gone there), or
    make it: its id."""
    if upstream_id:
        try:
            engine.convai_agent_update(upstream_id, **body)
            return upstream_id
        except InvalidRequest as exc:
            if exc.upstream_status != 404:
                raise
            # deleted at the provider: made again
    return engine.convai_agent_create(**body)


def agent_upstream_sync(*, agent: Agent, engine) -> str:
    """The provider's id of ``agent``'s copy, made or brought up to the current version
    first, its knowledge documents uploaded before (``EngineError`` when the provider
    refuses or cannot be reached). The agent's row is locked meanwhile, so two conversations
    starting at once make one copy."""
    current = Agent.objects.select_related("version").get(pk=agent.pk)
    number = current.version.number if current.version else 0
    if not (current.upstream_agent_id and current.upstream_version >= number):
        # Uploaded (and their ids committed) before the agent's lock: a refused agent
        # leaves no copy behind unrecorded.
        knowledge_locators(_documents(current, _config_of(current)), engine)
    with transaction.atomic():
        locked = (
            Agent.objects.select_for_update(of=("self",)).select_related("version").get(pk=agent.pk)
        )
        number = locked.version.number if locked.version else 0
        if locked.upstream_agent_id and locked.upstream_version >= number:
            return locked.upstream_agent_id
        documents = _documents(locked, _config_of(locked))
        body = _body(locked, knowledge_locators(documents, engine))
        try:
            upstream_id = _put(engine, locked.upstream_agent_id, body)
        except InvalidRequest:
            gone = _gone(documents, engine) if documents else []
            if not gone:
                raise
            for document in gone:  # lost at the provider: uploaded again, then once more
                document_upstream(
                    document=document, engine=engine, stale=document.upstream_document_id
                )
            body = _body(locked, knowledge_locators(documents, engine))
            upstream_id = _put(engine, locked.upstream_agent_id, body)
        locked.upstream_agent_id, locked.upstream_version = upstream_id, number
        locked.save(update_fields=["upstream_agent_id", "upstream_version"])
    agent.upstream_agent_id, agent.upstream_version = upstream_id, number
    return upstream_id


def agent_upstream_delete(*, workspace, upstream_agent_id: str) -> bool:
    """Delete an agent's copy at the provider, best effort (a failure is logged, never
    raised: the agent is gone from Chorus either way). Whether it is gone there."""
    from apps.generation.engine import engine_for

    try:
        engine = engine_for(workspace)
        engine.convai_agent_delete(upstream_agent_id)
    except EngineError as exc:
        if getattr(exc, "upstream_status", None) == 404:
            return True
        log.warning(
            "agent copy %s left at the provider (%s): %s", upstream_agent_id, exc.code, exc.message
        )
        return False
    return True
