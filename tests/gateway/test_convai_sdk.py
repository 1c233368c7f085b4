"""The official ElevenLabs SDK's ``conversational_ai`` calls (only ``base_url`` and ``api_key``
set) against a real Daphne on the local engine: create an agent, read it, list it, edit it
into a second version, get a conversation's signed URL, list and read the conversation,
delete both; and the SDK's errors for what is not there."""

import pytest
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError

from apps.agents.models import Agent, AgentVersion, Conversation
from apps.agents.signing import convai_signature_read
from apps.billing.models import UsageEvent
from apps.gateway import services
from apps.voices import services as voice_services

pytestmark = pytest.mark.slow

VOICE = "local-joe"


@pytest.fixture
def issued(workspace, member):
    voice_services.library_sync(workspace=workspace)
    return services.api_key_create(workspace=workspace, user=member, name="SDK agents")


@pytest.fixture
def sdk(daphne_server, issued):
    return ElevenLabs(base_url=daphne_server.url, api_key=issued.raw)


def test_sdk_creates_reads_lists_edits_and_deletes_an_agent(sdk, daphne_server, member):
    agents = sdk.conversational_ai.agents
    made = agents.create(
        name="Umbrella seller",
        tags=["shop"],
        conversation_config={
            "agent": {
                "first_message": "Hi! Need an umbrella?",
                "language": "en",
                "prompt": {"prompt": "You sell umbrellas.", "llm": "gpt-4o-mini"},
            },
            "tts": {"voice_id": VOICE},
        },
    )
    agent_id = made.agent_id
    assert agent_id.startswith("agent_")

    got = agents.get(agent_id)
    assert (got.name, got.tags, got.version_id) == ("Umbrella seller", ["shop"], "1")
    assert got.conversation_config.agent.prompt.prompt == "You sell umbrellas."
    assert got.conversation_config.agent.first_message == "Hi! Need an umbrella?"
    assert got.conversation_config.tts.voice_id == VOICE
    assert got.metadata.created_at_unix_secs > 0
    assert got.access_info.is_creator is True

    page = agents.list(page_size=10)
    assert [a.agent_id for a in page.agents] == [agent_id]
    assert page.has_more is False
    assert page.agents[0].access_info.creator_email == member.email

    edited = agents.update(
        agent_id,
        name="Boot seller",
        conversation_config={"agent": {"prompt": {"prompt": "You sell boots."}}},
    )
    assert (edited.name, edited.version_id) == ("Boot seller", "2")
    assert edited.conversation_config.agent.prompt.prompt == "You sell boots."
    assert edited.conversation_config.agent.first_message == "Hi! Need an umbrella?"
    assert AgentVersion.objects.filter(agent__agent_id=agent_id).count() == 2

    conversations = sdk.conversational_ai.conversations
    signed = conversations.get_signed_url(agent_id=agent_id, include_conversation_id=True)
    host = daphne_server.url.removeprefix("http://")
    prefix = f"ws://{host}/v1/convai/conversation?agent_id={agent_id}&conversation_signature="
    assert signed.signed_url.startswith(prefix)
    token = convai_signature_read(signed.signed_url.removeprefix(prefix))
    talk = Conversation.objects.get()
    assert (token["agent_id"], token["user_id"], token["conversation_id"]) == (
        agent_id,
        member.pk,
        talk.conversation_id,
    )

    listed = conversations.list(agent_id=agent_id)
    assert [c.conversation_id for c in listed.conversations] == [talk.conversation_id]
    one = conversations.get(talk.conversation_id)
    assert (one.agent_id, one.status, one.transcript, one.has_audio) == (
        agent_id,
        "in-progress",
        [],
        False,
    )
    with pytest.raises(ApiError) as no_audio:
        b"".join(conversations.audio.get(talk.conversation_id))
    assert no_audio.value.status_code == 404

    conversations.delete(talk.conversation_id)
    assert not Conversation.objects.exists()
    agents.delete(agent_id)
    assert not Agent.objects.exists()
    with pytest.raises(ApiError) as gone:
        agents.get(agent_id)
    assert gone.value.status_code == 404
    assert gone.value.body["detail"]["code"] == "agent_not_found"
    assert not UsageEvent.objects.exists()


def test_sdk_sees_a_refused_configuration_as_a_400(sdk):
    with pytest.raises(ApiError) as refused:
        sdk.conversational_ai.agents.create(
            conversation_config={"tts": {"voice_id": "no-such-voice"}}
        )
    assert refused.value.status_code == 400
    assert refused.value.body["detail"]["code"] == "voice_not_found"
    assert not Agent.objects.exists()


def test_sdk_reads_an_agent_on_chorus_s_own_llm(sdk):
    """``chorus-local`` is outside the spec's LLM enum; the SDK still reads the agent."""
    agent_id = sdk.conversational_ai.agents.create(conversation_config={}).agent_id
    got = sdk.conversational_ai.agents.get(agent_id)
    assert got.conversation_config.agent.prompt.llm == "chorus-local"
    assert got.name == "Untitled agent"
