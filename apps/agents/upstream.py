"""An agent's copy at the provider, for workspaces on the ElevenLabs engine.

The provider's agent (``Agent.upstream_agent_id``) is made from the Chorus configuration with
the official ``/v1/convai/agents`` field names only, and brought up to date lazily: when a
conversation starts and the copy is older than the agent's current version
(``Agent.upstream_version``). An edit therefore never fails because the provider is down; the
next conversation says so instead. Deleting an agent deletes its copy, best effort.

What does not travel: the knowledge documents (their ids are Chorus's; the provider's
knowledge base has its own documents) and an LLM the provider does not offer (Chorus's own
model: the provider's default is used).
"""

from __future__ import annotations

import logging

from django.db import transaction

from apps.engines.base import EngineError, InvalidRequest

from .config import AgentConfig
from .llms import PROVIDER_LLMS
from .models import Agent

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


def upstream_config(config: AgentConfig) -> dict:
    """``conversation_config`` for the provider, official names only (no knowledge base, no
    ``silence_before_answer_ms``: the silence is sent as ``turn_eagerness``)."""
    data = config.conversation_config()
    data["asr"] = {"user_input_audio_format": AUDIO_FORMAT}
    data["tts"]["agent_output_audio_format"] = AUDIO_FORMAT
    data["turn"] = {"turn_eagerness": data["turn"]["turn_eagerness"]}
    prompt = data["agent"]["prompt"]
    del prompt["knowledge_base"]
    if config.llm not in PROVIDER_LLMS:
        del prompt["llm"]
    if config.max_tokens == -1:
        del prompt["max_tokens"]
    if not config.voice_id:
        del data["tts"]["voice_id"]
    return data


def _body(agent: Agent) -> dict:
    config = AgentConfig.from_dict(agent.version.config if agent.version else None)
    return {
        "name": agent.name,
        "conversation_config": upstream_config(config),
        "platform_settings": {"overrides": ALLOWED_OVERRIDES},
        "tags": list(agent.tags or []),
    }


def agent_upstream_sync(*, agent: Agent, engine) -> str:
    """The provider's id of ``agent``'s copy, made or brought up to the current version
    first (``EngineError`` when the provider refuses or cannot be reached). The agent's row is
    locked meanwhile, so two conversations starting at once make one copy."""
    with transaction.atomic():
        locked = (
            Agent.objects.select_for_update(of=("self",)).select_related("version").get(pk=agent.pk)
        )
        number = locked.version.number if locked.version else 0
        if locked.upstream_agent_id and locked.upstream_version >= number:
            return locked.upstream_agent_id
        body = _body(locked)
        upstream_id = locked.upstream_agent_id
        if upstream_id:
            try:
                engine.convai_agent_update(upstream_id, **body)
            except InvalidRequest as exc:
                if exc.upstream_status != 404:
                    raise
                upstream_id = ""  # deleted at the provider: made again
        if not upstream_id:
            upstream_id = engine.convai_agent_create(**body)
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
