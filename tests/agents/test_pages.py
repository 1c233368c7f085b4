"""The agent pages as a member uses them: the list and its empty state, a new agent and its
edits (errors next to their fields, a version per change), an agent's page with its versions
and conversations, an old version with what changed, a conversation's transcript and audio,
and deleting an agent (its conversations stay)."""

import html
import re

import pytest
from django.urls import reverse

from apps.agents import services
from apps.agents.models import Agent, Conversation
from tests.conftest import HTMX

pytestmark = pytest.mark.django_db


def form_data(agent_or_none=None, voice="", **changes) -> dict:
    config = services.agent_config(agent_or_none) if agent_or_none else None
    data = {
        "name": agent_or_none.name if agent_or_none else "Concierge",
        "prompt": config.prompt if config else "You answer questions about {{place}}.",
        "first_message": config.first_message if config else "Welcome to {{place}}!",
        "voice_id": config.voice_id if config else voice,
        "tts_model_id": config.tts_model_id if config else "eleven_multilingual_v2",
        "language": config.language if config else "en",
        "llm": config.llm if config else "chorus-local",
        "temperature": str(config.temperature) if config else "0.3",
        "max_tokens": str(config.max_tokens) if config else "160",
        "knowledge": config.knowledge if config else [],
        "dynamic_variables": "\n".join(f"{k} = {v}" for k, v in config.dynamic_variables.items())
        if config
        else "place = the museum",
        "silence_ms": str(config.silence_ms) if config else "700",
        "max_duration_seconds": str(config.max_duration_seconds) if config else "600",
        "note": "",
    }
    if not config or config.interruptible:
        data["interruptible"] = "on"
    data.update(changes)
    return data


def field_error(body: str, name: str) -> str:
    match = re.search(rf'id="id_{name}_error">(.*?)</div>', body, re.S)
    return html.unescape(match.group(1)) if match else ""


# --- The list --------------------------------------------------------------------------------


def test_the_empty_list_explains_agents_and_offers_one_to_members(client_as, member, viewer):
    body = client_as(member).get(reverse("agents:list")).content.decode()
    assert "No agents yet" in body and "An agent is a voice you talk to" in body
    assert reverse("agents:new") in body
    body = client_as(viewer).get(reverse("agents:list")).content.decode()
    assert "No agents yet" in body and reverse("agents:new") not in body


def test_the_list_shows_each_agent_s_voice_llm_version_and_conversations(
    client_as, viewer, agent, conversation
):
    body = client_as(viewer).get(reverse("agents:list")).content.decode()
    row = body.split(reverse("agents:detail", args=[agent.agent_id]), 1)[1].split("</tr>")[0]
    voice_name = agent.workspace.library_voices.get(
        voice_id=services.agent_config(agent).voice_id
    ).name
    assert voice_name in row and "chorus-local" in row and "v1" in row
    assert "<td>1</td>" in row  # one conversation
    assert "None yet" not in row


# --- New and edit ----------------------------------------------------------------------------


def test_the_new_form_has_every_setting_with_the_offline_model_first(
    client_as, member, voices, document
):
    body = client_as(member).get(reverse("agents:new")).content.decode()
    for name in ("name", "prompt", "first_message", "tts_model_id", "language", "llm",
                 "temperature", "max_tokens", "dynamic_variables", "silence_ms",
                 "interruptible", "max_duration_seconds"):  # fmt: skip
        assert f'name="{name}"' in body, name
    assert 'name="voice_id"' in body and "data-voice-picker" in body
    assert "Opening hours" in body and 'name="knowledge"' in body  # the documents to choose
    llm_select = body.split('name="llm"', 1)[1].split("</select>", 1)[0]
    assert re.findall(r'<option value="([^"]+)"', llm_select)[0] == "chorus-local"
    assert "runs on this Chorus server" in body


def test_a_member_creates_an_agent(client_as, member, voices, document):
    data = form_data(voice=voices[1], knowledge=[document.document_id])
    response = client_as(member).post(reverse("agents:new"), data)
    assert response.status_code == 303
    agent = Agent.objects.get(name="Concierge")
    assert response["Location"] == reverse("agents:detail", args=[agent.agent_id])
    config = services.agent_config(agent)
    assert config.voice_id == voices[1] and config.knowledge == [document.document_id]
    assert config.dynamic_variables == {"place": "the museum"}
    assert config.interruptible is True and agent.version.number == 1


def test_with_htmx_a_created_agent_is_a_client_redirect(client_as, member, voices):
    response = client_as(member, **HTMX).post(reverse("agents:new"), form_data(voice=voices[0]))
    agent = Agent.objects.get(name="Concierge")
    assert response["HX-Redirect"] == reverse("agents:detail", args=[agent.agent_id])


@pytest.mark.parametrize(
    "changes,field,message",
    [
        ({"name": ""}, "name", "required"),
        ({"temperature": "5"}, "temperature", "less than or equal to 2"),
        ({"silence_ms": "50"}, "silence_ms", "greater than or equal to 200"),
        ({"llm": "gpt-99"}, "llm", "Choose an LLM from the list"),
        ({"voice_id": "stolen"}, "voice_id", "not in this workspace's library"),
        ({"dynamic_variables": "good = 1\n2bad = x"}, "dynamic_variables", "Line 2"),
        ({"knowledge": ["someone-elses-doc"]}, "knowledge", "is not a document of this"),
        # Passes the form, refused by the service: its message goes next to its field too.
        ({"prompt": "   "}, "prompt", "Must not be empty"),
    ],
)
def test_each_error_is_shown_next_to_its_field_and_nothing_is_created(
    client_as, member, voices, changes, field, message
):
    response = client_as(member).post(reverse("agents:new"), form_data(voice=voices[0], **changes))
    body = response.content.decode()
    assert response.status_code == 400
    assert message in field_error(body, field)
    assert not Agent.objects.exists()


def test_the_edit_form_shows_the_variables_the_prompt_uses(client_as, member, agent):
    body = client_as(member).get(reverse("agents:edit", args=[agent.agent_id])).content.decode()
    assert "<code>{{customer_name}}</code>" in body
    assert "customer_name = friend" in body
    assert "writes version 2" in body


def test_an_edit_with_a_change_writes_version_2_and_one_without_writes_none(
    client_as, member, owner, agent
):
    url = reverse("agents:edit", args=[agent.agent_id])
    client = client_as(member)
    response = client.post(url, form_data(agent))
    assert response.status_code == 303
    assert agent.versions.count() == 1
    followed = client.get(response["Location"]).content.decode()
    assert "did not change, so no new version" in followed

    response = client.post(url, form_data(agent, temperature="0.9", note="Warmer answers"))
    assert response.status_code == 303
    agent.refresh_from_db()
    assert agent.version.number == 2 and agent.version.note == "Warmer answers"
    assert services.agent_config(agent).temperature == 0.9
    assert "Saved as version 2" in client.get(response["Location"]).content.decode()


# --- An agent, its versions and conversations -------------------------------------------------


def test_the_agent_page_shows_configuration_versions_conversations_and_talk_s_place(
    client_as, viewer, agent, conversation
):
    body = client_as(viewer).get(reverse("agents:detail", args=[agent.agent_id])).content.decode()
    assert "You help {{customer_name}} with the shop&#x27;s hours." in body
    assert "Opening hours" in body  # its knowledge, by name
    talk = re.search(r"<button[^>]*data-talk[^>]*>Talk</button>", body).group(0)
    assert "disabled" in talk
    assert "members talk, as talking uses the workspace" in body
    assert "data-talk-panel" not in body and "agent-talk.js" not in body
    conv_url = reverse("agents:conversation", args=[conversation.conversation_id])
    row = body.split(conv_url, 1)[1].split("</tr>", 1)[0]
    assert "Mia Member" in row and "0:12" in row and "<td>4</td>" in row and "v1" in row
    assert reverse("agents:version", args=[agent.agent_id, 1]) in body


def test_an_old_version_is_read_only_with_the_fields_that_changed(client_as, member, agent):
    client = client_as(member)
    client.post(
        reverse("agents:edit", args=[agent.agent_id]),
        form_data(agent, temperature="0.9", silence_ms="1000", note="Slower"),
    )
    body = client.get(reverse("agents:version", args=[agent.agent_id, 2])).content.decode()
    changed = re.findall(r'<tr data-field="([a-z_]+)">', body)
    assert changed == ["temperature", "silence_ms"]
    assert "<del" in body and "0.3" in body and "1000 ms" in body
    body = client.get(reverse("agents:version", args=[agent.agent_id, 1])).content.decode()
    assert "The first version" in body and "Read-only" in body
    assert "<form" not in body.split('id="changes-h"', 1)[1]


def test_a_conversation_shows_both_sides_with_times_and_the_interruption(
    client_as, viewer, conversation
):
    url = reverse("agents:conversation", args=[conversation.conversation_id])
    body = client_as(viewer).get(url).content.decode()
    turns = re.findall(r'data-role="(user|agent)"', body)
    assert turns == ["agent", "user", "agent", "user"]
    assert body.count("data-interrupted") == 1
    assert "0:05" in body  # the interrupted turn's start (4.9 s)
    for side in ("user", "agent"):
        src = reverse("agents:conversation_audio", args=[conversation.conversation_id, side])
        assert f'<audio controls preload="metadata" src="{src}"' in body


def test_conversation_audio_is_served_whole_and_by_range(client_as, viewer, conversation):
    client = client_as(viewer)
    url = reverse("agents:conversation_audio", args=[conversation.conversation_id, "agent"])
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "audio/wav"
    assert b"".join(response.streaming_content) == b"RIFF" + bytes(200)
    ranged = client.get(url, HTTP_RANGE="bytes=0-3")
    assert ranged.status_code == 206 and ranged.content == b"RIFF"
    assert ranged["Content-Range"] == "bytes 0-3/204"


def test_a_side_not_recorded_is_a_404(client_as, viewer, conversation):
    conversation.user_audio = ""
    conversation.save(update_fields=["user_audio"])
    url = reverse("agents:conversation_audio", args=[conversation.conversation_id, "user"])
    assert client_as(viewer).get(url).status_code == 404


def test_deleting_an_agent_keeps_its_conversations_under_its_name(
    client_as, member, agent, conversation
):
    response = client_as(member).post(reverse("agents:delete", args=[agent.agent_id]))
    assert response.status_code == 303 and response["Location"] == reverse("agents:list")
    assert not Agent.objects.filter(pk=agent.pk).exists()
    kept = Conversation.objects.get(pk=conversation.pk)
    assert kept.agent is None and kept.agent_name == "Front desk"
    url = reverse("agents:conversation", args=[conversation.conversation_id])
    body = client_as(member).get(url).content.decode()
    assert "Front desk" in body and "agent deleted" in body


def test_a_member_gets_the_talk_panel(client_as, member, agent):
    body = client_as(member).get(reverse("agents:detail", args=[agent.agent_id])).content.decode()
    opener = re.search(r"<button[^>]*data-talk-open[^>]*>Talk</button>", body).group(0)
    assert "disabled" not in opener and 'aria-controls="talk-panel"' in opener
    assert 'id="talk-panel"' in body and "js/agent-talk" in body
    assert f'data-socket="/ws/agents/{agent.agent_id}/talk/"' in body
