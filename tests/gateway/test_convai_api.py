"""``/v1/convai…`` through Django's test client: agents (create, list by cursor, get, edit into
versions, delete), the signed URL and its token, the recorded conversations and their audio;
bodies against the official spec's schemas, refusals in the API's shapes with nothing
written, workspace isolation, roles and scopes, and no ledger row for any of it."""

import io
import json
import math
import time
import wave
from datetime import timedelta
from decimal import Decimal

import av
import numpy as np
import pytest
from django.core import signing as django_signing
from django.core.files.base import ContentFile
from django.test import Client
from django.utils import timezone

from apps.agents import services as agents
from apps.agents.config import AgentConfig
from apps.agents.models import (
    Agent,
    AgentVersion,
    Conversation,
    ConversationTurn,
    KnowledgeDocument,
)
from apps.agents.signing import SALT, convai_signature_make, convai_signature_read
from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.gateway import services
from apps.voices import services as voice_services
from apps.workspaces.models import Membership, Role
from apps.workspaces.services import ActionRefused
from tests.factories import add_member, make_user

from .openapi_check import assert_matches, problems, response_schema

SHAPE_A = {"type", "code", "message", "status", "request_id"}
A = "/v1/convai/agents"
C = "/v1/convai/conversations"
SIGNED = "/v1/convai/conversation/get-signed-url"
VOICE, OTHER = "local-joe", "local-espeak-en-us-f3"
LLM = "gpt-4o-mini"  # one of the spec's LLM names (Chorus's own "chorus-local" is not)


def config(**agent_fields) -> dict:
    prompt = {"prompt": "You sell umbrellas.", "llm": LLM, **agent_fields.pop("prompt", {})}
    return {
        "agent": {"first_message": "Hi! Need an umbrella?", "language": "en", "prompt": prompt,
                  **agent_fields},
        "tts": {"voice_id": VOICE},
    }  # fmt: skip


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def voices(workspace):
    voice_services.library_sync(workspace=workspace)  # the local engine's voices
    return workspace


@pytest.fixture
def issued(voices, member):
    return services.api_key_create(workspace=voices, user=member, name="Agents")


@pytest.fixture
def api(issued):
    return Client(HTTP_XI_API_KEY=issued.raw)


@pytest.fixture
def outsider_api(outsider):
    workspace = Membership.objects.get(user=outsider).workspace
    voice_services.library_sync(workspace=workspace)
    return Client(HTTP_XI_API_KEY=services.api_key_create(workspace=workspace, user=outsider,
                                                          name="Theirs").raw)  # fmt: skip


def send(api, method: str, path: str, body=None, *, raw: str | None = None):
    data = raw if raw is not None else ("" if body is None else json.dumps(body))
    return api.generic(method, path, data, content_type="application/json")


def create(api, **body):
    body.setdefault("conversation_config", config())
    body.setdefault("name", "Umbrella seller")
    response = send(api, "POST", f"{A}/create", body)
    assert response.status_code == 200, response.content
    assert_matches(response.json(), f"{A}/create", "post")
    return response.json()["agent_id"]


def detail_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    detail = response.json()["detail"]
    assert isinstance(detail, dict) and set(detail) >= SHAPE_A, detail
    assert detail["status"] == detail["code"]
    return detail


def locs(response) -> list:
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    return [error["loc"] for error in detail]


def nothing_written():
    assert not Agent.objects.exists() and not AgentVersion.objects.exists()


# --- Creating and reading agents ------------------------------------------------------------


def test_an_agent_made_through_the_api_reads_back_in_the_official_shape(api, member, voices):
    agent_id = create(api, tags=["Support", "Ünïcode ☂"])
    row = Agent.objects.get(agent_id=agent_id)
    assert (row.workspace, row.created_by, row.tags) == (voices, member, ["Support", "Ünïcode ☂"])
    assert row.version.number == 1
    assert AgentConfig.from_dict(row.version.config).prompt == "You sell umbrellas."

    got = api.get(f"{A}/{agent_id}")
    assert got.status_code == 200, got.content
    body = got.json()
    assert_matches(body, f"{A}/{{agent_id}}")
    assert (body["agent_id"], body["name"], body["version_id"]) == (
        agent_id,
        "Umbrella seller",
        "1",
    )
    agent = body["conversation_config"]["agent"]
    assert agent["prompt"]["prompt"] == "You sell umbrellas."
    assert agent["prompt"]["llm"] == LLM
    assert agent["first_message"] == "Hi! Need an umbrella?"
    assert body["conversation_config"]["tts"]["voice_id"] == VOICE
    assert body["metadata"]["created_at_unix_secs"] == int(row.created_at.timestamp())
    assert (body["platform_settings"], body["phone_numbers"]) == ({}, [])
    assert body["access_info"]["is_creator"] is True
    assert body["access_info"]["creator_email"] == member.email
    assert body["access_info"]["role"] == "editor"  # a member; owners and managers: admin


def test_chorus_s_own_llm_is_the_one_value_outside_the_spec_s_enum(api):
    agent_id = create(api, conversation_config={"agent": {"prompt": {"prompt": "Hi."}}})
    body = api.get(f"{A}/{agent_id}").json()
    assert body["conversation_config"]["agent"]["prompt"]["llm"] == "chorus-local"
    found = problems(body, response_schema(f"{A}/{{agent_id}}"))
    assert len(found) == 1 and "$.conversation_config.agent.prompt.llm" in found[0], found


def test_without_a_name_or_a_voice_the_agent_gets_defaults(api, voices):
    response = send(api, "POST", f"{A}/create", {"conversation_config": {}})
    assert response.status_code == 200, response.content
    row = Agent.objects.get(agent_id=response.json()["agent_id"])
    assert row.name == "Untitled agent"
    assert AgentConfig.from_dict(row.version.config).voice_id == agents.default_voice(voices)


def test_unknown_fields_and_platform_settings_are_ignored(api):
    agent_id = create(
        api,
        platform_settings={"widget": {"variant": "full"}},
        workflow={"nodes": {}, "edges": {}},
        conversation_config={**config(), "vad": {"background_voice_detection": True}},
        something_else=[1, 2],
    )
    assert api.get(f"{A}/{agent_id}").json()["platform_settings"] == {}


def test_a_unicode_agent_round_trips_exactly(api):
    prompt = "Tu es un vendeur de parapluies ☂. 日本語で答えて。 Ελληνικά, עברית, emoji 🌧️"
    agent_id = create(
        api, name="Parapluies ☂ 雨", conversation_config=config(prompt={"prompt": prompt})
    )
    body = api.get(f"{A}/{agent_id}").json()
    assert body["name"] == "Parapluies ☂ 雨"
    assert body["conversation_config"]["agent"]["prompt"]["prompt"] == prompt


def test_knowledge_documents_of_the_workspace_are_named_in_the_agent(api, voices):
    doc = KnowledgeDocument.objects.create(
        workspace=voices, name="Price list", kind="text", text="Umbrellas cost 12 euros."
    )
    kb = [{"type": "text", "id": doc.document_id, "name": "whatever the client says"}]
    agent_id = create(api, conversation_config=config(prompt={"knowledge_base": kb}))
    body = api.get(f"{A}/{agent_id}").json()
    assert_matches(body, f"{A}/{{agent_id}}")
    [entry] = body["conversation_config"]["agent"]["prompt"]["knowledge_base"]
    assert (entry["id"], entry["name"]) == (doc.document_id, "Price list")


# --- Refusals: the right shape, nothing written -------------------------------------------------


def test_a_body_without_conversation_config_is_a_422(api):
    assert locs(send(api, "POST", f"{A}/create", {"name": "No config"})) == [
        ["body", "conversation_config"]
    ]
    assert locs(send(api, "POST", f"{A}/create")) == [["body"]]
    assert locs(send(api, "POST", f"{A}/create", raw="{not json")) == [["body", 1]]
    assert locs(send(api, "POST", f"{A}/create", raw="[1]")) == [["body"]]
    nothing_written()


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"conversation_config": []}, ["body", "conversation_config"]),
        ({"conversation_config": "x"}, ["body", "conversation_config"]),
        ({"conversation_config": {}, "name": 7}, ["body", "name"]),
        ({"conversation_config": {}, "tags": "a,b"}, ["body", "tags"]),
        ({"conversation_config": {}, "tags": ["ok", 3]}, ["body", "tags", 1]),
        ({"conversation_config": {}, "tags": ["x" * 101]}, ["body", "tags", 0]),
        ({"conversation_config": {"agent": []}}, ["body", "conversation_config", "agent"]),
        (
            {"conversation_config": {"agent": {"prompt": "just text"}}},
            ["body", "conversation_config", "agent", "prompt"],
        ),
        (
            {"conversation_config": {"agent": {"prompt": {"knowledge_base": ["id1"]}}}},
            ["body", "conversation_config", "agent", "prompt", "knowledge_base"],
        ),
    ],
)
def test_wrong_types_are_422s_at_their_place(api, body, loc):
    assert loc in locs(send(api, "POST", f"{A}/create", body))
    nothing_written()


@pytest.mark.parametrize(
    ("agent_fields", "param", "words"),
    [
        ({"prompt": {"prompt": "x" * 30_000}}, "agent.prompt.prompt", "at most 20,000"),
        ({"prompt": {"prompt": "   "}}, "agent.prompt.prompt", "must not be empty"),
        ({"prompt": {"temperature": 9}}, "agent.prompt.temperature", "between 0 and 2"),
        ({"prompt": {"temperature": "hot"}}, "agent.prompt.temperature", "must be a number"),
        ({"prompt": {"llm": "no-such-llm"}}, "agent.prompt.llm", "not offered here"),
        ({"prompt": {"knowledge_base": [{"id": "nope", "name": "n", "type": "file"}]}},
         "agent.prompt.knowledge_base", "no such document"),
        ({"language": "english"}, "agent.language", "ISO 639-1"),
    ],
)  # fmt: skip
def test_a_configuration_the_agents_app_refuses_is_a_400_naming_the_field(
    api, agent_fields, param, words
):
    response = send(api, "POST", f"{A}/create", {"conversation_config": config(**agent_fields)})
    detail = detail_of(response, 400)
    assert detail["code"] == "invalid_parameters"
    assert detail["param"] == f"conversation_config.{param}"
    assert words in detail["message"]
    nothing_written()


def test_an_unknown_voice_is_voice_not_found(api, outsider_api):
    body = {"conversation_config": {"tts": {"voice_id": "no-such-voice"}}}
    detail = detail_of(send(api, "POST", f"{A}/create", body), 400)
    assert detail["code"] == "voice_not_found"
    assert detail["param"] == "conversation_config.tts.voice_id"
    assert "no-such-voice" in detail["message"]
    nothing_written()


def test_every_refused_field_is_named_at_once(api):
    cfg = config(prompt={"prompt": "", "temperature": 5})
    cfg["tts"] = {"voice_id": "nope", "speed": 3}
    message = detail_of(send(api, "POST", f"{A}/create", {"conversation_config": cfg}), 400)[
        "message"
    ]
    for path in ("agent.prompt.prompt", "agent.prompt.temperature", "tts.speed"):
        assert f"conversation_config.{path}" in message
    nothing_written()


@pytest.mark.parametrize(
    "raw",
    [
        '{"conversation_config": {"agent": {"prompt": {"prompt": "a\\u0000b"}}}}',
        '{"conversation_config": {}, "name": "a\\u0000b"}',
        '{"conversation_config": {}, "tags": ["a\\u0000"]}',
        '{"conversation_config": {"agent": {"dynamic_variables": {"dynamic_variable_placeholders":'
        ' {"who": "x\\u0000"}}}}}',
        '{"conversation_config": {"agent": {"first_message": "\\ud800"}}}',
        '{"conversation_config": {"agent": {"\\u0000": 1}}}',
    ],
)
def test_nul_characters_and_lone_surrogates_are_refused_anywhere(api, raw):
    response = send(api, "POST", f"{A}/create", raw=raw)
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["type"] == "string_unicode"
    nothing_written()


def test_it_rejects_a_get_on_create_and_a_put_on_an_agent(api):
    detail = detail_of(api.get(f"{A}/create"), 405)
    assert detail["code"] == "method_not_allowed"
    agent_id = create(api)
    assert detail_of(send(api, "PUT", f"{A}/{agent_id}", {}), 405)["code"] == "method_not_allowed"


# --- Listing ------------------------------------------------------------------------------------


def test_agents_are_listed_newest_first_page_by_page(api):
    made = [create(api, name=f"Agent {i}") for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        query = {"page_size": 2, **({"cursor": cursor} if cursor else {})}
        body = api.get(A, query).json()
        assert_matches(body, A)
        seen += [a["agent_id"] for a in body["agents"]]
        pages += 1
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        cursor = body["next_cursor"]
    assert pages == 3
    assert seen == made[::-1]
    first = api.get(A).json()["agents"][0]
    assert first["name"] == "Agent 4" and first["archived"] is False
    assert first["last_call_time_unix_secs"] is None


def test_search_and_archived_filter_the_list(api):
    create(api, name="Umbrella seller")
    create(api, name="Raincoat seller")
    names = [a["name"] for a in api.get(A, {"search": "umbrELLA"}).json()["agents"]]
    assert names == ["Umbrella seller"]
    assert api.get(A, {"archived": "true"}).json()["agents"] == []
    assert len(api.get(A, {"archived": "false"}).json()["agents"]) == 2


def test_a_bad_page_size_or_cursor_is_refused(api):
    assert locs(api.get(A, {"page_size": 0})) == [["query", "page_size"]]
    assert locs(api.get(A, {"page_size": 101})) == [["query", "page_size"]]
    assert locs(api.get(A, {"page_size": "many"})) == [["query", "page_size"]]
    detail = detail_of(api.get(A, {"cursor": "agent_nope"}), 400)
    assert detail["param"] == "cursor"


# --- Editing: versions --------------------------------------------------------------------------


def test_a_patch_merges_onto_the_current_configuration_as_version_2(api, member):
    agent_id = create(api)
    patch = {"conversation_config": {"agent": {"prompt": {"prompt": "You sell boots now."}}},
             "version_description": "Boots"}  # fmt: skip
    response = send(api, "PATCH", f"{A}/{agent_id}", patch)
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, f"{A}/{{agent_id}}", "patch")
    assert body["version_id"] == "2"
    cfg = body["conversation_config"]
    assert cfg["agent"]["prompt"]["prompt"] == "You sell boots now."
    assert cfg["agent"]["prompt"]["llm"] == LLM  # kept from version 1
    assert cfg["agent"]["first_message"] == "Hi! Need an umbrella?"
    assert cfg["tts"]["voice_id"] == VOICE
    row = Agent.objects.get(agent_id=agent_id)
    assert [(v.number, v.note, v.created_by) for v in row.versions.order_by("number")][1] == (
        2,
        "Boots",
        member,
    )
    assert api.get(f"{A}/{agent_id}").json()["version_id"] == "2"
    old = api.get(f"{A}/{agent_id}", {"version_id": "1"}).json()
    assert old["conversation_config"]["agent"]["prompt"]["prompt"] == "You sell umbrellas."
    assert old["version_id"] == "1"
    assert detail_of(api.get(f"{A}/{agent_id}", {"version_id": "9"}), 404)["code"] == (
        "version_not_found"
    )
    assert detail_of(api.get(f"{A}/{agent_id}", {"version_id": "v1"}), 404)


def test_an_unchanged_patch_writes_no_version(api):
    agent_id = create(api)
    same = {"conversation_config": {"agent": {"prompt": {"prompt": "You sell umbrellas."}}}}
    for body in (same, {}, None, {"name": "Umbrella seller"}, {"tags": ["a"]}):
        response = send(api, "PATCH", f"{A}/{agent_id}", body)
        assert response.status_code == 200, response.content
        assert response.json()["version_id"] == "1"
    assert AgentVersion.objects.count() == 1
    assert Agent.objects.get().tags == ["a"]


def test_a_patch_renames_and_retags_without_a_version(api):
    agent_id = create(api)
    body = send(api, "PATCH", f"{A}/{agent_id}", {"name": "Boots", "tags": ["shoes"]}).json()
    assert (body["name"], body["tags"], body["version_id"]) == ("Boots", ["shoes"], "1")


def test_a_refused_patch_changes_nothing(api):
    agent_id = create(api)
    before = Agent.objects.get()
    for body, status in (
        ({"conversation_config": {"tts": {"voice_id": "nope"}}, "name": "Renamed"}, 400),
        ({"conversation_config": {"agent": {"prompt": {"prompt": "y" * 30_000}}}}, 400),
        ({"conversation_config": [], "name": "Renamed"}, 422),
        ({"name": "a\x00b"}, 422),
        ({"name": "   "}, 400),
    ):
        assert send(api, "PATCH", f"{A}/{agent_id}", body).status_code == status
    after = Agent.objects.get()
    assert (after.name, after.version_id, after.updated_at) == (
        before.name,
        before.version_id,
        before.updated_at,
    )
    assert AgentVersion.objects.count() == 1


def test_deleting_an_agent_keeps_its_conversations(api, member, voices):
    agent_id = create(api)
    row = Agent.objects.get()
    talk = Conversation.objects.create(
        workspace=voices, agent=row, agent_name=row.name, user=member, engine="local"
    )
    response = send(api, "DELETE", f"{A}/{agent_id}")
    assert response.status_code == 204
    assert detail_of(api.get(f"{A}/{agent_id}"), 404)["code"] == "agent_not_found"
    assert detail_of(send(api, "DELETE", f"{A}/{agent_id}"), 404)
    talk.refresh_from_db()
    assert (talk.agent, talk.agent_name) == (None, "Umbrella seller")
    got = api.get(f"{C}/{talk.conversation_id}").json()
    assert (got["agent_id"], got["agent_name"]) == ("", "Umbrella seller")


# --- Workspaces, roles, scopes ------------------------------------------------------------------


def test_another_workspace_s_agent_is_not_found_for_every_method(api, outsider_api):
    theirs = create(outsider_api, conversation_config={})
    for method, body in (("GET", None), ("PATCH", {"name": "Mine now"}), ("DELETE", None)):
        detail = detail_of(send(api, method, f"{A}/{theirs}", body), 404)
        assert detail["code"] == "agent_not_found"
    assert detail_of(api.get(SIGNED, {"agent_id": theirs}), 404)["code"] == "agent_not_found"
    assert api.get(A).json()["agents"] == []
    assert Agent.objects.get(agent_id=theirs).name == "Umbrella seller"


def test_a_teammate_sees_and_edits_the_workspace_s_agents(api, voices, owner, manager):
    agent_id = create(api)
    for user, role in ((owner, "admin"), (manager, "admin")):
        mate = Client(HTTP_XI_API_KEY=services.api_key_create(workspace=voices, user=user,
                                                              name="Mate").raw)  # fmt: skip
        body = mate.get(f"{A}/{agent_id}").json()
        assert body["access_info"]["is_creator"] is False
        assert body["access_info"]["role"] == role
        assert [a["agent_id"] for a in mate.get(A).json()["agents"]] == [agent_id]
    assert send(mate, "PATCH", f"{A}/{agent_id}", {"name": "By the manager"}).status_code == 200


def test_a_viewer_cannot_hold_a_key_and_a_demoted_member_s_key_stops_working(
    api, voices, viewer, member
):
    with pytest.raises(ActionRefused):
        services.api_key_create(workspace=voices, user=viewer, name="Nope")
    agent_id = create(api)
    Membership.objects.filter(workspace=voices, user=member).update(role=Role.VIEWER)
    services.known_keys_forget()
    for response in (
        api.get(A),
        api.get(f"{A}/{agent_id}"),
        send(api, "DELETE", f"{A}/{agent_id}"),
    ):
        assert detail_of(response, 401)["code"] == "invalid_api_key"
    assert Agent.objects.filter(agent_id=agent_id).exists()


def test_no_key_is_a_401_and_a_key_without_the_scope_is_a_403(voices, member):
    assert detail_of(Client().get(A), 401)["code"] == "needs_authorization"
    stt_only = services.api_key_create(workspace=voices, user=member, name="STT", scopes=["stt"])
    client = Client(HTTP_XI_API_KEY=stt_only.raw)
    for path in (A, f"{A}/agent_x", SIGNED, C):
        assert detail_of(client.get(path), 403)["code"] == "missing_permissions"
    assert detail_of(send(client, "POST", f"{A}/create", {"conversation_config": {}}), 403)
    nothing_written()


# --- Signed URLs --------------------------------------------------------------------------------


def test_a_signed_url_points_at_this_host_with_a_token_that_reads_back(api, issued, member):
    agent_id = create(api)
    response = api.get(SIGNED, {"agent_id": agent_id})
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, SIGNED)
    assert set(body) == {"signed_url"}
    url = body["signed_url"]
    prefix = f"ws://testserver/v1/convai/conversation?agent_id={agent_id}&conversation_signature="
    assert url.startswith(prefix)
    token = url.removeprefix(prefix)
    assert "&" not in token and "%" not in token  # URL-safe as it is
    assert convai_signature_read(token) == {
        "agent_id": agent_id,
        "workspace_id": issued.api_key.workspace_id,
        "user_id": member.pk,
        "api_key_id": issued.api_key.pk,
        "conversation_id": None,
    }
    assert not Conversation.objects.exists()  # none until someone talks
    # Asked for again at once (the same second): another token, since each is good once.
    again = api.get(SIGNED, {"agent_id": agent_id}).json()["signed_url"]
    assert again.removeprefix(prefix) != token


def test_with_include_conversation_id_the_conversation_is_made_and_signed(api, issued, member):
    agent_id = create(api)
    body = api.get(SIGNED, {"agent_id": agent_id, "include_conversation_id": "true"}).json()
    talk = Conversation.objects.get()
    assert body["conversation_id"] == talk.conversation_id
    token = body["signed_url"].split("conversation_signature=")[1]
    assert convai_signature_read(token)["conversation_id"] == talk.conversation_id
    assert (talk.user, talk.source, talk.api_key_id, talk.engine) == (
        member,
        "api",
        issued.api_key.pk,
        "local",
    )
    assert (talk.agent.agent_id, talk.agent_name, talk.version_number) == (
        agent_id,
        "Umbrella seller",
        1,
    )
    assert talk.status == "in-progress"


def test_the_legacy_path_and_https_give_a_wss_url(api):
    agent_id = create(api)
    body = api.get(
        "/v1/convai/conversation/get_signed_url", {"agent_id": agent_id}, secure=True
    ).json()
    assert body["signed_url"].startswith("wss://testserver/v1/convai/conversation?")


def test_a_signed_url_needs_an_agent_of_the_workspace(api):
    assert locs(api.get(SIGNED)) == [["query", "agent_id"]]
    assert detail_of(api.get(SIGNED, {"agent_id": "agent_nope"}), 404)["code"] == (
        "agent_not_found"
    )
    agent_id = create(api)
    assert locs(api.get(SIGNED, {"agent_id": agent_id, "include_conversation_id": "maybe"}))
    assert not Conversation.objects.exists()


def test_a_token_expires_after_15_minutes(monkeypatch):
    token = convai_signature_make(agent_id="agent_x", workspace_id=1, user_id=2, api_key_id=3)
    now = time.time()

    class Later:
        @staticmethod
        def time():
            return now + 14 * 60

    monkeypatch.setattr(django_signing, "time", Later)
    assert convai_signature_read(token)["agent_id"] == "agent_x"
    Later.time = staticmethod(lambda: now + 15 * 60 + 2)
    assert convai_signature_read(token) is None


def test_an_altered_or_foreign_token_reads_as_none():
    token = convai_signature_make(
        agent_id="agent_x", workspace_id=1, user_id=2, api_key_id=3, conversation_id="conv_y"
    )
    assert convai_signature_read(token)["conversation_id"] == "conv_y"
    payload, stamp, mac = token.rsplit(".", 2)
    forged = django_signing.TimestampSigner(salt="another").sign_object({"a": "agent_z"})
    for bad in (
        f"{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{stamp}.{mac}",
        f"{payload}.{stamp}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        token + "x",
        forged,
        "." + token,
        "",
        None,
        "a.b.c",
        token.replace(".", ":"),
    ):
        assert convai_signature_read(bad) is None, bad
    # Signed with this salt but not an agent's token (only SECRET_KEY holders can).
    assert (
        convai_signature_read(django_signing.TimestampSigner(salt=SALT, sep=".").sign_object([1]))
        is None
    )


def test_the_token_endpoint_makes_a_conversation(api):
    agent_id = create(api)
    response = api.get("/v1/convai/conversation/token", {"agent_id": agent_id})
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, "/v1/convai/conversation/token")
    talk = Conversation.objects.get()
    assert body["conversation_id"] == talk.conversation_id
    assert convai_signature_read(body["token"])["conversation_id"] == talk.conversation_id


# --- Conversations ------------------------------------------------------------------------------


def talk(agent, user, *, minutes_ago: float = 0, status="done", turns=(), **fields):
    conversation = Conversation.objects.create(
        workspace=agent.workspace,
        agent=agent,
        agent_name=agent.name,
        version=agent.version,
        version_number=agent.version.number,
        user=user,
        engine="local",
        status=status,
        **fields,
    )
    Conversation.objects.filter(pk=conversation.pk).update(
        started_at=timezone.now() - timedelta(minutes=minutes_ago)
    )
    for i, (role, text, at, interrupted) in enumerate(turns):
        ConversationTurn.objects.create(
            conversation=conversation, position=i, role=role, text=text,
            started_seconds=at, ended_seconds=at + 1, interrupted=interrupted,
        )  # fmt: skip
    conversation.refresh_from_db()
    return conversation


@pytest.fixture
def agent_row(api):
    return Agent.objects.get(agent_id=create(api))


def test_conversations_list_the_member_s_own_newest_first_by_cursor(api, agent_row, member, voices):
    mine = [talk(agent_row, member, minutes_ago=10 - i) for i in range(5)]
    teammate = make_user("mate@example.com")
    add_member(voices, teammate, Role.MEMBER)
    talk(agent_row, teammate)  # a teammate's: not the key's member's
    seen, cursor = [], None
    while True:
        body = api.get(C, {"page_size": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert_matches(body, C)
        seen += [c["conversation_id"] for c in body["conversations"]]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        cursor = body["next_cursor"]
    assert seen == [c.conversation_id for c in mine[::-1]]
    assert detail_of(api.get(C, {"cursor": "conv_nope"}), 400)["param"] == "cursor"


def test_a_conversation_summary_has_the_spec_s_fields(api, agent_row, member):
    done = talk(agent_row, member, duration_seconds=42.6, end_reason="The user hung up.",
                turns=[("agent", "Hi!", 0, False), ("user", "Hello", 2, False)])  # fmt: skip
    talk(agent_row, member, status="failed", minutes_ago=1)
    talk(agent_row, member, status="in-progress", minutes_ago=2)
    rows = api.get(C).json()["conversations"]
    assert [(r["status"], r["call_successful"]) for r in rows] == [
        ("done", "success"),
        ("failed", "failure"),
        ("in-progress", "unknown"),
    ]
    first = rows[0]
    assert first == {
        "agent_id": agent_row.agent_id,
        "agent_name": "Umbrella seller",
        "version_id": "1",
        "conversation_id": done.conversation_id,
        "start_time_unix_secs": int(done.started_at.timestamp()),
        "call_duration_secs": 43,
        "message_count": 2,
        "status": "done",
        "termination_reason": "The user hung up.",
        "call_successful": "success",
        "tag_ids": [],
    }


def test_conversations_filter_by_agent_and_start_time(api, agent_row, member, voices):
    other = agents.agent_create(workspace=voices, user=member, name="Other")
    old = talk(agent_row, member, minutes_ago=120)
    new = talk(agent_row, member, minutes_ago=1)
    elsewhere = talk(other, member, minutes_ago=5)

    def ids(**query):
        return [c["conversation_id"] for c in api.get(C, query).json()["conversations"]]

    assert ids(agent_id=agent_row.agent_id) == [new.conversation_id, old.conversation_id]
    assert ids(agent_id=other.agent_id) == [elsewhere.conversation_id]
    assert ids(agent_id="agent_nope") == []
    cut = int((timezone.now() - timedelta(minutes=60)).timestamp())
    assert ids(call_start_after_unix=cut) == [new.conversation_id, elsewhere.conversation_id]
    assert ids(call_start_before_unix=cut) == [old.conversation_id]
    assert locs(api.get(C, {"call_start_before_unix": "soon"})) == [
        ["query", "call_start_before_unix"]
    ]


def test_a_conversation_reads_with_its_transcript_and_cost(api, agent_row, member, voices, issued):
    event = UsageEvent.objects.create(
        workspace=voices, user=member, api_key_id=issued.api_key.pk, source=UsageSource.API,
        capability="agent", engine="local", unit="call", estimated_units=Decimal(1),
        units=Decimal(1), estimated_credits=Decimal("50"), credits=Decimal("12.2"),
        request_id="r1", idempotency_key="r1", status=UsageStatus.SETTLED,
    )  # fmt: skip
    found = talk(
        agent_row, member, duration_seconds=30, usage_event_id=event.pk,
        dynamic_variables={"customer": "Ann"}, end_reason="Ended by the user.",
        turns=[("agent", "Hi Ann!", 0.4, True), ("user", "Umbrellas? ☂", 3.9, False)],
    )  # fmt: skip
    response = api.get(f"{C}/{found.conversation_id}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, f"{C}/{{conversation_id}}")
    assert body["transcript"] == [
        {"role": "agent", "message": "Hi Ann!", "time_in_call_secs": 0, "interrupted": True,
         "tool_calls": [], "tool_results": []},
        {"role": "user", "message": "Umbrellas? ☂", "time_in_call_secs": 3, "interrupted": False,
         "tool_calls": [], "tool_results": []},
    ]  # fmt: skip
    meta = body["metadata"]
    assert (meta["call_duration_secs"], meta["cost"], meta["termination_reason"]) == (
        30,
        math.ceil(Decimal("12.2")),
        "Ended by the user.",
    )
    assert body["conversation_initiation_client_data"]["dynamic_variables"] == {"customer": "Ann"}
    assert (body["has_audio"], body["has_user_audio"], body["has_response_audio"]) == (
        False,
        False,
        False,
    )
    assert (body["user_id"], body["version_id"], body["agent_id"]) == (
        str(member.pk),
        "1",
        agent_row.agent_id,
    )
    assert talk(agent_row, member).usage_event_id is None
    fresh = api.get(f"{C}/{Conversation.objects.filter(usage_event_id=None).get().conversation_id}")
    assert fresh.json()["metadata"]["cost"] is None


def test_someone_else_s_conversation_is_not_found(api, agent_row, voices, owner, outsider):
    mate_talk = talk(agent_row, owner)  # the owner's, in the same workspace
    their_ws = Membership.objects.get(user=outsider).workspace
    their_agent = agents.agent_create(workspace=their_ws, user=outsider, name="Theirs")
    their_talk = talk(their_agent, outsider)
    for conversation in (mate_talk, their_talk):
        cid = conversation.conversation_id
        for response in (
            api.get(f"{C}/{cid}"),
            api.get(f"{C}/{cid}/audio"),
            send(api, "DELETE", f"{C}/{cid}"),
        ):
            assert detail_of(response, 404)["code"] == "conversation_not_found"
    assert api.get(C).json()["conversations"] == []
    assert Conversation.objects.count() == 2


def wav_bytes(seconds: float, hz: float, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples.tobytes())
    return out.getvalue()


def decoded(audio: bytes) -> tuple[float, np.ndarray]:
    with av.open(io.BytesIO(audio)) as container:
        assert "mp3" in container.format.name.split(",")
        stream = container.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    samples = np.concatenate(frames)
    return len(samples) / rate, samples


def audio_of(response) -> bytes:
    assert response.status_code == 200, response.content
    assert response["content-type"] == "audio/mpeg"
    return b"".join(response.streaming_content)


def test_the_audio_is_both_sides_mixed_as_mp3(api, agent_row, member):
    found = talk(agent_row, member)
    found.user_audio.save("user.wav", ContentFile(wav_bytes(1.0, 300)), save=False)
    found.agent_audio.save("agent.wav", ContentFile(wav_bytes(2.5, 700)), save=False)
    found.save()
    assert api.get(f"{C}/{found.conversation_id}").json()["has_audio"] is True
    seconds, samples = decoded(audio_of(api.get(f"{C}/{found.conversation_id}/audio")))
    assert 2.4 < seconds < 2.8  # as long as the longer side
    rate = len(samples) / seconds
    first, last = samples[: int(0.9 * rate)], samples[int(1.3 * rate) : int(2.3 * rate)]
    spectrum = np.abs(np.fft.rfft(first))
    freqs = np.fft.rfftfreq(first.size, 1 / rate)
    # Both tones in the first second (mixed), only the agent's afterwards.
    assert spectrum[np.abs(freqs - 300) < 20].max() > 0.2 * spectrum.max()
    assert spectrum[np.abs(freqs - 700) < 20].max() > 0.2 * spectrum.max()
    later = np.abs(np.fft.rfft(last))
    later_freqs = np.fft.rfftfreq(last.size, 1 / rate)
    assert later[np.abs(later_freqs - 300) < 20].max() < 0.05 * later.max()


def test_one_side_alone_is_served_and_raw_pcm_is_read(api, agent_row, member):
    found = talk(agent_row, member)
    pcm = wav_bytes(1.5, 500)[44:]
    found.agent_audio.save("agent.pcm", ContentFile(pcm))
    seconds, _ = decoded(audio_of(api.get(f"{C}/{found.conversation_id}/audio")))
    assert 1.4 < seconds < 1.8


def test_no_audio_is_a_404_in_the_api_s_shape(api, agent_row, member):
    found = talk(agent_row, member)
    detail = detail_of(api.get(f"{C}/{found.conversation_id}/audio"), 404)
    assert detail["code"] == "conversation_audio_not_found"


def test_deleting_a_conversation_removes_its_turns_and_audio(api, agent_row, member):
    found = talk(agent_row, member, turns=[("user", "Hi", 0, False)])
    found.user_audio.save("user.wav", ContentFile(wav_bytes(0.5, 300)))
    path = found.user_audio.path
    response = send(api, "DELETE", f"{C}/{found.conversation_id}")
    assert response.status_code == 200 and response.json() == {}
    assert not Conversation.objects.exists() and not ConversationTurn.objects.exists()
    import os

    assert not os.path.exists(path)
    assert detail_of(api.get(f"{C}/{found.conversation_id}"), 404)


# --- Metering -----------------------------------------------------------------------------------


def test_no_call_here_writes_a_ledger_row(api, agent_row, member):
    found = talk(agent_row, member)
    agent_id = agent_row.agent_id
    for method, path, body in (
        ("GET", A, None),
        ("GET", f"{A}/{agent_id}", None),
        ("PATCH", f"{A}/{agent_id}", {"conversation_config": config(first_message="Yo")}),
        ("GET", f"{SIGNED}?agent_id={agent_id}&include_conversation_id=true", None),
        ("GET", f"/v1/convai/conversation/token?agent_id={agent_id}", None),
        ("GET", C, None),
        ("GET", f"{C}/{found.conversation_id}", None),
        ("DELETE", f"{C}/{found.conversation_id}", None),
        ("DELETE", f"{A}/{agent_id}", None),
    ):
        assert send(api, method, path, body).status_code in (200, 204), (method, path)
    assert not UsageEvent.objects.exists()
