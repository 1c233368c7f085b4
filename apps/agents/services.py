"""Agents as team assets: create, edit (each edit a new version), delete; the LLMs offered.

Every page and ``/v1/convai`` call goes through these functions, so the checks are the same
everywhere: the configuration (``config.config_checked``), the voice (in the workspace's
library, on its engine or the local one), the knowledge documents (the workspace's own).
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from apps.engines.local.tts import DEFAULT_VOICE_ID
from apps.generation.engine import engine_for
from apps.voices.models import LibraryVoice
from apps.workspaces.models import EngineKind

from .config import LOCAL_LLM, AgentConfig, AgentConfigError, config_checked
from .llms import PROVIDER_LLMS
from .models import Agent, AgentVersion, KnowledgeDocument

NAME_MAX = 200


class AgentRefused(ValueError):
    """A refused change, with a message per field (``errors``) for forms and the API."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def llms_offered() -> list[str]:
    """The LLM names an agent may use: Chorus's offline model, the models of the configured
    OpenAI-compatible endpoint (``CHORUS_AGENT_LLM_MODELS``), and the provider's names (on
    the local engine those run on the endpoint when it serves them, else the offline model;
    the agent page says which)."""
    configured = list(getattr(settings, "CHORUS_AGENT_LLM_MODELS", []) or [])
    return [LOCAL_LLM, *[m for m in configured if m != LOCAL_LLM], *PROVIDER_LLMS]


def _voice_checked(workspace, voice_id: str) -> str | None:
    """An error message, or None when the library has the voice (or none is chosen yet)."""
    if not voice_id:
        return None
    engine = engine_for(workspace).name
    found = LibraryVoice.objects.filter(
        workspace=workspace,
        voice_id=voice_id,
        engine__in={engine, EngineKind.LOCAL},
        withdrawn_at__isnull=True,
    ).exists()
    if not found:
        return f"the voice {voice_id!r} is not in this workspace's library; pick one from it"
    return None


def default_voice(workspace, language: str = "en") -> str:
    """A new agent's voice: on the workspace's engine when it is not local, else the local
    engine's default voice; among the rest, one that speaks ``language``; then by name."""
    engine = engine_for(workspace).name
    voices = LibraryVoice.objects.filter(
        workspace=workspace, engine__in={engine, EngineKind.LOCAL}, withdrawn_at__isnull=True
    )
    if engine == EngineKind.LOCAL and voices.filter(voice_id=DEFAULT_VOICE_ID).exists():
        return DEFAULT_VOICE_ID
    for speaks in (voices.filter(language__istartswith=language.split("-")[0]), voices):
        found = (
            speaks.order_by("-engine", "name")  # the workspace's engine first when not local
            .values_list("voice_id", flat=True)
            .first()
        )
        if found:
            return found
    return ""


def config_for(workspace, config: AgentConfig) -> AgentConfig:
    """``config`` checked for ``workspace`` (``AgentRefused`` with every problem)."""
    documents = set(
        KnowledgeDocument.objects.filter(workspace=workspace).values_list("document_id", flat=True)
    )
    errors: dict[str, str] = {}
    try:
        config = config_checked(config, llms=llms_offered(), documents=documents)
    except AgentConfigError as exc:
        errors.update(exc.errors)
    if "voice_id" not in errors:
        voice_error = _voice_checked(workspace, config.voice_id)
        if voice_error:
            errors["voice_id"] = voice_error
    if errors:
        raise AgentRefused(errors)
    return config


def _name_checked(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise AgentRefused({"name": "give the agent a name"})
    name = " ".join(name.split())
    if len(name) > NAME_MAX:
        raise AgentRefused({"name": f"at most {NAME_MAX} characters"})
    return name


@transaction.atomic
def agent_create(
    *, workspace, user, name: str, config: AgentConfig | None = None, tags=None
) -> Agent:
    """A new agent and its version 1. Without a voice the library's first voice is used."""
    name = _name_checked(name)
    config = config or AgentConfig()
    if not config.voice_id:
        config = config.with_changes(voice_id=default_voice(workspace))
    config = config_for(workspace, config)
    agent = Agent.objects.create(
        workspace=workspace, name=name, created_by=user, tags=list(tags or [])
    )
    version = AgentVersion.objects.create(
        agent=agent, number=1, config=config.as_dict(), created_by=user, note="Created"
    )
    agent.version = version
    agent.save(update_fields=["version", "updated_at"])
    return agent


def agent_config(agent: Agent) -> AgentConfig:
    """The agent's current configuration (its defaults where it has no version)."""
    return AgentConfig.from_dict(agent.version.config if agent.version else None)


@transaction.atomic
def agent_update(
    *, agent: Agent, user, name: str | None = None, config: AgentConfig | None = None,
    tags=None, note: str = "",
) -> Agent:  # fmt: skip
    """Rename, retag and/or reconfigure ``agent``. A changed configuration is written as the
    next version (the previous one is kept, and the conversations that ran on it keep
    pointing at it); an unchanged one writes nothing."""
    agent = Agent.objects.select_for_update(of=("self",)).select_related("version").get(pk=agent.pk)
    fields = []
    if name is not None:
        agent.name = _name_checked(name)
        fields.append("name")
    if tags is not None:
        agent.tags = list(tags)
        fields.append("tags")
    if config is not None:
        config = config_for(agent.workspace, config)
        if config.as_dict() != (agent.version.config if agent.version else None):
            last = agent.versions.order_by("-number").values_list("number", flat=True).first()
            agent.version = AgentVersion.objects.create(
                agent=agent,
                number=(last or 0) + 1,
                config=config.as_dict(),
                created_by=user,
                note=note[:200],
            )
            fields.append("version")
    if fields:
        agent.save(update_fields=[*fields, "updated_at"])
    return agent


def agent_delete(*, agent: Agent) -> None:
    """Delete the agent and its versions; its conversations stay (with the agent's name).
    Its copy at the provider (ElevenLabs engine) is deleted too, best effort, once committed."""
    workspace, upstream_id = agent.workspace, agent.upstream_agent_id
    agent.delete()
    if upstream_id:
        from .upstream import agent_upstream_delete

        transaction.on_commit(
            lambda: agent_upstream_delete(workspace=workspace, upstream_agent_id=upstream_id)
        )
