"""An agent's configuration: its stored form and the API's ``conversation_config`` both round
trip, each bad field has its own message, dynamic variables are found and filled, and an edit
writes a new version only when the configuration changed, keeping the old ones."""

import pytest

from apps.agents import services
from apps.agents.config import (
    LOCAL_LLM,
    AgentConfig,
    AgentConfigError,
    config_checked,
    eagerness_of,
)
from apps.agents.llms import PROVIDER_LLMS
from apps.agents.models import AgentVersion
from tests.gateway.openapi_check import problems, spec

FULL = AgentConfig(
    prompt="You are {{ agent_name }}, helping {{customer}}.",
    first_message="Hi {{customer}}!",
    language="pt-BR",
    voice_id="local-joe",
    tts_model_id="eleven_turbo_v2_5",
    stability=0.4,
    similarity_boost=0.8,
    speed=1.1,
    llm="gpt-4o-mini",
    temperature=0.7,
    max_tokens=300,
    knowledge=["doc1", "doc2"],
    dynamic_variables={"customer": "friend", "agent_name": "Ada"},
    silence_ms=1200,
    interruptible=False,
    max_duration_seconds=900,
)


def test_the_stored_form_round_trips():
    assert AgentConfig.from_dict(FULL.as_dict()) == FULL
    assert AgentConfig.from_dict(None) == AgentConfig()
    # Keys an older or newer Chorus wrote are ignored.
    assert AgentConfig.from_dict({**FULL.as_dict(), "retired": 1}) == FULL


def test_the_api_shape_round_trips():
    shape = FULL.conversation_config()
    assert AgentConfig.from_conversation_config(shape) == FULL
    assert shape["agent"]["prompt"]["knowledge_base"][0] == {
        "type": "file", "id": "doc1", "usage_mode": "auto",
    }  # fmt: skip
    assert "interruption" not in shape["conversation"]["client_events"]
    assert shape["turn"]["turn_eagerness"] == "patient"
    assert "interruption" in AgentConfig().conversation_config()["conversation"]["client_events"]


def test_the_api_shape_matches_the_official_schema():
    schema = {"$ref": "#/components/schemas/ConversationalConfigAPIModel-Output"}
    # Knowledge items need their documents' names (the spec requires ``name``), which only
    # the caller that reads the database can add; everything else is in the spec's shape.
    shape = FULL.conversation_config()
    for item in shape["agent"]["prompt"]["knowledge_base"]:
        item["name"] = f"Document {item['id']}"
    assert problems(shape, schema) == []


def test_a_partial_update_keeps_what_it_does_not_name():
    changed = AgentConfig.from_conversation_config(
        {"agent": {"prompt": {"temperature": 0.1}}, "turn": {"turn_eagerness": "eager"}}, FULL
    )
    assert changed == FULL.with_changes(temperature=0.1, silence_ms=400)
    assert eagerness_of(400) == "eager" and eagerness_of(700) == "normal"


@pytest.mark.parametrize(
    "data,key",
    [
        ({"agent": []}, "agent"),
        ({"agent": {"prompt": "text"}}, "agent.prompt"),
        ({"conversation": {"client_events": "audio"}}, "conversation.client_events"),
        ({"agent": {"prompt": {"knowledge_base": [{"name": "x"}]}}}, "agent.prompt.knowledge_base"),
    ],
)
def test_a_wrong_api_shape_names_where(data, key):
    with pytest.raises(AgentConfigError) as refused:
        AgentConfig.from_conversation_config(data)
    assert key in refused.value.errors


@pytest.mark.parametrize(
    "changes,field,message",
    [
        ({"prompt": "  "}, "prompt", "must not be empty"),
        ({"prompt": "x" * 20_001}, "prompt", "at most 20,000 characters"),
        ({"first_message": "x" * 2_001}, "first_message", "at most 2,000"),
        ({"first_message": "a\x00b"}, "first_message", "NUL"),
        ({"language": "english"}, "language", "ISO 639-1"),
        ({"tts_model_id": ""}, "tts_model_id", "must not be empty"),
        ({"llm": "gpt-99"}, "llm", "is not offered here"),
        ({"temperature": 3}, "temperature", "between 0 and 2"),
        ({"temperature": "hot"}, "temperature", "must be a number"),
        ({"max_tokens": 0}, "max_tokens", "-1 (the model's limit) or 1 to 4096"),
        ({"max_tokens": 1.5}, "max_tokens", "whole number"),
        ({"silence_ms": 100}, "silence_ms", "between 200 and 5000"),
        ({"max_duration_seconds": 5}, "max_duration_seconds", "between 10 and 7200"),
        ({"speed": 2.0}, "speed", "between 0.7 and 1.2"),
        ({"stability": -1}, "stability", "between 0 and 1"),
        ({"interruptible": "yes"}, "interruptible", "true or false"),
        ({"knowledge": "doc1"}, "knowledge", "list of document ids"),
        ({"knowledge": ["nope"]}, "knowledge", "no such document"),
        ({"dynamic_variables": {"1st": "x"}}, "dynamic_variables", "letters, digits and _"),
        ({"dynamic_variables": ["x"]}, "dynamic_variables", "name → default"),
        ({"dynamic_variables": {"a": "x" * 1001}}, "dynamic_variables", "1,000 characters"),
    ],
)
def test_each_bad_field_has_its_own_message(changes, field, message):
    bad = FULL.with_changes(**changes)
    with pytest.raises(AgentConfigError) as refused:
        config_checked(bad, llms=[LOCAL_LLM, "gpt-4o-mini"], documents={"doc1", "doc2"})
    assert set(refused.value.errors) == {field}
    assert message in refused.value.errors[field]


def test_every_bad_field_is_named_at_once():
    bad = FULL.with_changes(prompt="", temperature=9, silence_ms=1)
    with pytest.raises(AgentConfigError) as refused:
        config_checked(bad)
    assert set(refused.value.errors) == {"prompt", "temperature", "silence_ms"}


def test_variables_used_and_filled():
    assert FULL.variables_used() == ["agent_name", "customer"]
    assert FULL.filled() == ("You are Ada, helping friend.", "Hi friend!")
    assert FULL.filled({"customer": "Bo", "unused": 1}) == ("You are Ada, helping Bo.", "Hi Bo!")
    plain = AgentConfig(prompt="Hello {{ who }}", first_message="")
    assert plain.filled() == ("Hello {{ who }}", "")  # unknown names stay as written


def test_the_offline_model_is_offered_first_and_the_provider_names_match_the_spec(settings):
    settings.CHORUS_AGENT_LLM_MODELS = ["llama3.2:1b"]
    offered = services.llms_offered()
    assert offered[:2] == [LOCAL_LLM, "llama3.2:1b"]
    assert list(PROVIDER_LLMS) == spec()["components"]["schemas"]["LLM"]["enum"]


# --- Versions --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_edit_writes_a_new_version_only_when_the_configuration_changed(
    workspace, member, owner, agent, document
):
    first = agent.version
    same = services.agent_config(agent)
    services.agent_update(agent=agent, user=owner, name="Front desk 2", config=same, note="x")
    agent.refresh_from_db()
    assert agent.version_id == first.pk and agent.name == "Front desk 2"
    assert agent.versions.count() == 1

    changed = same.with_changes(temperature=0.9, knowledge=[])
    services.agent_update(agent=agent, user=owner, config=changed, note="Warmer, no documents")
    agent.refresh_from_db()
    assert agent.version.number == 2
    assert agent.version.created_by == owner and agent.version.note == "Warmer, no documents"
    assert services.agent_config(agent) == changed
    old = AgentVersion.objects.get(pk=first.pk)  # kept as it was
    assert old.number == 1 and AgentConfig.from_dict(old.config) == same
    assert old.config["knowledge"] == [document.document_id]


@pytest.mark.django_db
def test_a_refused_edit_writes_nothing(workspace, owner, agent):
    bad = services.agent_config(agent).with_changes(voice_id="not-in-the-library", llm="nope")
    with pytest.raises(services.AgentRefused) as refused:
        services.agent_update(agent=agent, user=owner, name="Renamed", config=bad)
    assert set(refused.value.errors) == {"voice_id", "llm"}
    agent.refresh_from_db()
    assert agent.name == "Front desk" and agent.versions.count() == 1
