"""Fixtures the agent tests share: a media folder of their own, the local engine's voices, a
knowledge document, an agent that uses it and a recorded conversation with it."""

import pytest
from django.core.files.base import ContentFile

from apps.agents import knowledge, services
from apps.agents.config import AgentConfig
from apps.agents.models import Conversation, ConversationTurn


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def voices(workspace):
    """The local engine's voices in the workspace's library; their ids."""
    from apps.voices import services as voice_services
    from apps.voices.models import LibraryVoice

    voice_services.library_sync(workspace=workspace)
    return list(
        LibraryVoice.objects.filter(workspace=workspace, engine="local")
        .order_by("voice_id")
        .values_list("voice_id", flat=True)
    )


@pytest.fixture
def document(workspace, member, media):
    return knowledge.document_add_text(
        workspace=workspace,
        user=member,
        name="Opening hours",
        text="The shop opens at nine and closes at six. On Sundays it is closed.",
    )


@pytest.fixture
def agent(workspace, member, voices, document):
    return services.agent_create(
        workspace=workspace,
        user=member,
        name="Front desk",
        config=AgentConfig(
            prompt="You help {{customer_name}} with the shop's hours.",
            voice_id=voices[0],
            knowledge=[document.document_id],
            dynamic_variables={"customer_name": "friend"},
        ),
    )


@pytest.fixture
def conversation(agent, member, media):
    """A finished conversation with both sides recorded and an interrupted agent turn."""
    conv = Conversation.objects.create(
        workspace=agent.workspace,
        agent=agent,
        agent_name=agent.name,
        version=agent.version,
        version_number=agent.version.number,
        user=member,
        engine="local",
        status="done",
        duration_seconds=12.4,
    )
    conv.user_audio.save("user.wav", ContentFile(b"RIFF" + bytes(100)), save=False)
    conv.agent_audio.save("agent.wav", ContentFile(b"RIFF" + bytes(200)), save=False)
    conv.save()
    for position, (role, text, start, end, cut) in enumerate(
        [
            ("agent", "Hello! How can I help you?", 0.0, 1.8, False),
            ("user", "When do you open on Sunday?", 2.5, 4.1, False),
            ("agent", "On Sundays the shop is closed, but on", 4.9, 6.0, True),
            ("user", "Thanks, bye.", 6.1, 7.0, False),
        ]
    ):
        ConversationTurn.objects.create(
            conversation=conv, position=position, role=role, text=text,
            started_seconds=start, ended_seconds=end, interrupted=cut,
        )  # fmt: skip
    return conv
