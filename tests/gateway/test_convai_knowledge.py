"""``/v1/convai/knowledge-base``: documents from text and from files (the studio's checks),
read and deleted, referred to by agents through ``prompt.knowledge_base``; bodies against the
official spec, refusals in the API's shapes with nothing written, workspace isolation, keys
and scopes, no ledger row; and the official SDK's ``knowledge_base.documents`` calls against
a real Daphne."""

# ruff: noqa: F811 (the fixtures of test_convai_api, imported by name)
import json

import pytest
from django.test import Client

from apps.agents.models import Agent, AgentVersion, KnowledgeChunk, KnowledgeDocument
from apps.billing.models import UsageEvent
from apps.gateway import services
from apps.workspaces.models import Membership, Role
from tests.agents.test_knowledge import make_docx, make_pdf
from tests.gateway.test_convai_api import (  # noqa: F401
    A,
    api,
    config,
    create,
    detail_of,
    issued,
    locs,
    media,
    outsider_api,
    send,
    voices,
)

from .openapi_check import assert_matches

KB = "/v1/convai/knowledge-base"
FACT = "The Chorus office opens at 9 am and closes at 5 pm. Parking is behind the building."

pytestmark = pytest.mark.django_db


def add_text(api, **body):
    body.setdefault("text", FACT)
    response = send(api, "POST", f"{KB}/text", body)
    assert response.status_code == 200, response.content
    assert_matches(response.json(), f"{KB}/text", "post")
    return response.json()


def add_file(api, filename: str, data: bytes, **fields):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return api.post(f"{KB}/file", {"file": SimpleUploadedFile(filename, data), **fields})


def nothing_written():
    assert not KnowledgeDocument.objects.exists() and not KnowledgeChunk.objects.exists()


# --- Creating and reading -------------------------------------------------------------------


def test_a_text_document_is_added_read_back_and_not_metered(api, voices, member):
    made = add_text(api, name="Office")
    assert made == {"id": made["id"], "name": "Office", "folder_path": []}
    document = KnowledgeDocument.objects.get(document_id=made["id"])
    assert (document.workspace, document.created_by, document.kind) == (voices, member, "text")
    assert document.chunks.exists()
    response = api.get(f"{KB}/{made['id']}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert_matches(body, f"{KB}/{{documentation_id}}", "get")
    assert (body["type"], body["name"], body["id"]) == ("text", "Office", made["id"])
    assert "opens at 9 am" in body["extracted_inner_html"]
    assert body["metadata"]["size_bytes"] == len(FACT)
    assert body["access_info"]["is_creator"] is True
    assert "filename" not in body
    unnamed = add_text(api, text="  Returns are accepted within thirty days of delivery, with the "
                                 "receipt, at any of our shops.")  # fmt: skip
    assert unnamed["name"] == "Returns are accepted within thirty days of delivery, with…"
    html = send(api, "POST", f"{KB}/text", {"text": "a <b>bold</b> & claim", "name": "X"})
    got = api.get(f"{KB}/{html.json()['id']}").json()
    assert got["extracted_inner_html"] == "<p>a &lt;b&gt;bold&lt;/b&gt; &amp; claim</p>"
    assert not UsageEvent.objects.exists()  # adding knowledge costs nothing


@pytest.mark.parametrize(
    ("filename", "data", "fact"),
    [
        ("hours.pdf", make_pdf(["Saturdays we open at ten."]), "Saturdays we open at ten."),
        ("returns.docx", make_docx(), "thirty days"),
        ("faq.md", b"# FAQ\n\n**Parking** is behind the building.\n", "Parking is behind"),
    ],
)
def test_a_file_document_is_added_with_its_text_extracted(api, filename, data, fact):
    response = add_file(api, filename, data)
    assert response.status_code == 200, response.content
    made = response.json()
    assert_matches(made, f"{KB}/file", "post")
    assert made["name"] == filename.rsplit(".", 1)[0]
    body = api.get(f"{KB}/{made['id']}").json()
    assert_matches(body, f"{KB}/{{documentation_id}}", "get")
    assert (body["type"], body["filename"]) == ("file", filename)
    assert fact in body["extracted_inner_html"]
    assert fact in KnowledgeDocument.objects.get(document_id=made["id"]).text
    named = add_file(api, filename, data, name="Named")
    assert named.json()["name"] == "Named"


# --- Bad input --------------------------------------------------------------------------------


def test_bad_text_bodies_are_422s_or_400s_and_write_nothing(api):
    assert locs(send(api, "POST", f"{KB}/text", {})) == [["body", "text"]]
    assert locs(send(api, "POST", f"{KB}/text", {"text": 5, "name": []})) == [
        ["body", "text"],
        ["body", "name"],
    ]
    assert locs(send(api, "POST", f"{KB}/text", {"text": "x", "name": ""})) == [["body", "name"]]
    assert locs(send(api, "POST", f"{KB}/text", {"text": "a\x00b"})) == [["body", "text"]]
    assert send(api, "POST", f"{KB}/text", raw="{nope").status_code in (400, 422)
    empty = detail_of(send(api, "POST", f"{KB}/text", {"text": "  \n "}), 400)
    assert (empty["code"], empty["param"]) == ("invalid_parameters", "text")
    long = detail_of(send(api, "POST", f"{KB}/text", {"text": FACT, "name": "n" * 201}), 400)
    assert long["param"] == "name"
    folder = detail_of(send(api, "POST", f"{KB}/text", {"text": FACT, "parent_folder_id": "f1"}),
                       404)  # fmt: skip
    assert folder["code"] == "folder_not_found"
    nothing_written()


def test_bad_files_are_refused_as_the_studio_refuses_them_and_write_nothing(api, settings):
    junk = detail_of(add_file(api, "notes.txt", bytes(range(256)) * 40), 400)
    assert (junk["code"], junk["param"]) == ("invalid_parameters", "file")
    kind = detail_of(add_file(api, "tool.exe", b"MZ\x90\x00 binary"), 400)
    assert "TXT, Markdown" in kind["message"]
    fake = detail_of(add_file(api, "fake.pdf", b"not a pdf at all"), 400)
    assert fake["code"] == "invalid_parameters"
    empty = detail_of(add_file(api, "empty.txt", b""), 400)
    assert empty["code"] == "invalid_parameters"
    big = add_file(api, "big.txt", b"word " * (2 * 1024 * 1024 + 1))
    assert detail_of(big, 413)["code"] == "payload_too_large"
    assert locs(api.post(f"{KB}/file", {"name": "No file"})) == [["body", "file"]]
    as_json = send(api, "POST", f"{KB}/file", {"file": "text"})
    assert as_json.status_code == 422
    nothing_written()


# --- Agents refer to documents ----------------------------------------------------------------


def test_an_agent_refers_to_documents_by_id_and_a_used_document_is_deleted_only_with_force(api):
    text_doc = add_text(api, name="Office")["id"]
    file_doc = add_file(api, "hours.pdf", make_pdf(["Saturdays we open at ten."])).json()["id"]
    kb = [{"type": "text", "name": "Office", "id": text_doc, "usage_mode": "auto"},
          {"type": "file", "name": "hours", "id": file_doc}]  # fmt: skip
    agent_id = create(api, conversation_config=config(prompt={"knowledge_base": kb}))
    got = api.get(f"{A}/{agent_id}").json()
    assert got["conversation_config"]["agent"]["prompt"]["knowledge_base"] == [
        {"type": "text", "name": "Office", "id": text_doc, "usage_mode": "auto"},
        {"type": "file", "name": "hours", "id": file_doc, "usage_mode": "auto"},
    ]
    agent = Agent.objects.get(agent_id=agent_id)
    assert agent.version.config["knowledge"] == [text_doc, file_doc]

    used = detail_of(send(api, "DELETE", f"{KB}/{text_doc}"), 409)
    assert used["code"] == "document_in_use" and agent_id in used["message"]
    assert locs(send(api, "DELETE", f"{KB}/{text_doc}?force=maybe")) == [["query", "force"]]
    response = send(api, "DELETE", f"{KB}/{text_doc}?force=true")
    assert (response.status_code, response.json()) == (200, {})
    assert not KnowledgeDocument.objects.filter(document_id=text_doc).exists()
    agent.refresh_from_db()
    assert agent.version.number == 2 and agent.version.config["knowledge"] == [file_doc]
    assert AgentVersion.objects.get(agent=agent, number=1).config["knowledge"] == [
        text_doc, file_doc]  # fmt: skip
    assert detail_of(api.get(f"{KB}/{text_doc}"), 404)["code"] == "document_not_found"

    # Taken out through a PATCH, the other is deleted without force.
    emptied = {"conversation_config": {"agent": {"prompt": {"knowledge_base": []}}}}
    patch = send(api, "PATCH", f"{A}/{agent_id}", emptied)
    assert patch.status_code == 200, patch.content
    assert send(api, "DELETE", f"{KB}/{file_doc}").status_code == 200
    assert not KnowledgeDocument.objects.exists()
    unknown = [{"type": "text", "name": "X", "id": "no_such_document_1"}]
    refused = send(api, "POST", f"{A}/create", {"conversation_config": config(
        prompt={"knowledge_base": unknown})})  # fmt: skip
    detail = detail_of(refused, 400)
    assert detail["param"] == "conversation_config.agent.prompt.knowledge_base"


# --- Who may --------------------------------------------------------------------------------


def test_another_workspace_s_document_is_not_found_and_cannot_be_referred_to(api, outsider_api):
    theirs = add_text(outsider_api, name="Theirs")["id"]
    assert detail_of(api.get(f"{KB}/{theirs}"), 404)["code"] == "document_not_found"
    assert detail_of(send(api, "DELETE", f"{KB}/{theirs}?force=true"), 404)["code"] == (
        "document_not_found"
    )
    refused = send(api, "POST", f"{A}/create", {"conversation_config": config(
        prompt={"knowledge_base": [{"type": "text", "name": "T", "id": theirs}]})})  # fmt: skip
    assert detail_of(refused, 400)["code"] == "invalid_parameters"
    assert KnowledgeDocument.objects.filter(document_id=theirs).exists()


def test_a_viewer_holds_no_key_and_a_demoted_member_s_key_stops_working(
    api, voices, viewer, member
):
    from apps.workspaces.services import ActionRefused

    with pytest.raises(ActionRefused):
        services.api_key_create(workspace=voices, user=viewer, name="Nope")
    made = add_text(api, name="Office")["id"]
    Membership.objects.filter(workspace=voices, user=member).update(role=Role.VIEWER)
    services.known_keys_forget()
    for response in (
        send(api, "POST", f"{KB}/text", {"text": FACT}),
        add_file(api, "a.txt", b"Parking is free."),
        api.get(f"{KB}/{made}"),
        send(api, "DELETE", f"{KB}/{made}"),
    ):
        assert detail_of(response, 401)["code"] == "invalid_api_key"
    assert KnowledgeDocument.objects.count() == 1


def test_no_key_is_a_401_a_key_without_the_scope_a_403_and_a_wrong_method_a_405(voices, member):
    assert detail_of(Client().post(f"{KB}/text", {}), 401)["code"] == "needs_authorization"
    stt_only = services.api_key_create(workspace=voices, user=member, name="STT", scopes=["stt"])
    client = Client(HTTP_XI_API_KEY=stt_only.raw)
    assert detail_of(send(client, "POST", f"{KB}/text", {"text": FACT}), 403)["code"] == (
        "missing_permissions"
    )
    assert detail_of(client.get(f"{KB}/abc"), 403)["code"] == "missing_permissions"
    full = Client(HTTP_XI_API_KEY=services.api_key_create(workspace=voices, user=member,
                                                          name="All").raw)  # fmt: skip
    assert full.get(f"{KB}/text").status_code == 405
    assert send(full, "PUT", f"{KB}/abc").status_code == 405
    nothing_written()


# --- The official SDK -------------------------------------------------------------------------


@pytest.mark.slow
def test_the_sdk_adds_reads_and_deletes_documents(daphne_server, issued, tmp_path):  # noqa: F811
    from elevenlabs.client import ElevenLabs
    from elevenlabs.core.api_error import ApiError

    documents = ElevenLabs(base_url=daphne_server.url, api_key=issued.raw).conversational_ai.\
        knowledge_base.documents  # fmt: skip
    made = documents.create_from_text(text=FACT, name="Office")
    assert made.name == "Office"
    got = documents.get(made.id)
    assert (got.type, got.name, got.id) == ("text", "Office", made.id)
    assert "opens at 9 am" in got.extracted_inner_html
    path = tmp_path / "hours.pdf"
    path.write_bytes(make_pdf(["Saturdays we open at ten."]))
    with path.open("rb") as handle:
        filed = documents.create_from_file(file=handle, name="Hours")
    got = documents.get(filed.id)
    assert (got.type, got.filename) == ("file", "hours.pdf")
    assert "Saturdays we open at ten." in got.extracted_inner_html
    documents.delete(made.id)
    documents.delete(filed.id, force=True)
    with pytest.raises(ApiError) as gone:
        documents.get(made.id)
    assert gone.value.status_code == 404
    assert not KnowledgeDocument.objects.exists()
    assert json.dumps(UsageEvent.objects.count()) == "0"
