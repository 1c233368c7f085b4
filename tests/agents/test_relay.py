"""Conversations on the ElevenLabs engine (``RelaySession``) and the agent's copy at the provider.

The happy path runs against a real Chorus (Daphne on the local engine, on the test database):
this workspace's engine is ElevenLabs with that Chorus's URL and a personal key of another
workspace there, so the agent is created there over HTTP and the conversation relayed to its
``/v1/convai/conversation`` socket, where the local engine hears the question, a stand-in
LLM (a tiny SSE server) answers and the local TTS speaks. Faults are injected at the network
edge only: an ``httpx.MockTransport`` for the provider's HTTP calls and a scripted socket
(127.0.0.1) for its conversation WebSocket."""

import base64
import json
import logging
import threading
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from websockets.sync.server import serve

from apps.agents import recordings, services
from apps.agents.models import (
    Agent,
    AgentVersion,
    Conversation,
    ConversationStatus,
    KnowledgeDocument,
)
from apps.agents.relay import RelaySession, session_open
from apps.agents.session import AgentSession
from apps.agents.upstream import agent_upstream_sync, document_upstream
from apps.billing.models import Budget, UsageEvent, UsageStatus
from apps.engines.base import InvalidRequest
from apps.engines.elevenlabs import ElevenLabsEngine
from apps.engines.elevenlabs.egress import EgressPolicy
from apps.generation.caller import Caller
from apps.generation.conversation import SLICE, ConversationMeter
from apps.workspaces.services import engine_settings_update
from tests.agents.test_session import make_agent, office, question_pcm, silence  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)
KEY = "sk_relay_test_5c4b3a2f1e_secret"
CHUNK = 3200


def tone(seconds: float, amplitude: int = 8000) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    return (np.sin(2 * np.pi * 220 * t) * amplitude).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def audio_of(events) -> bytes:
    return b"".join(base64.b64decode(e["audio_event"]["audio_base_64"]) for e in events
                    if e["type"] == "audio")  # fmt: skip


def of_type(events, kind) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def until(session, events: list, test, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while not test(events):
        assert time.monotonic() < deadline, [e["type"] for e in events]
        events += session.wait(0.1)
    return events


def feed(session, pcm: bytes) -> list[dict]:
    events = []
    for offset in range(0, len(pcm), CHUNK):
        events += session.feed(pcm[offset : offset + CHUNK])
    return events


_OPEN: list = []


@pytest.fixture(autouse=True)
def sessions_ended():
    yield
    while _OPEN:
        _OPEN.pop().end("the test ended")


@pytest.fixture
def agent(workspace, member, voices, office):  # noqa: F811
    return make_agent(workspace, member, voices, office)


@pytest.fixture
def on_elevenlabs(workspace, owner):
    engine_settings_update(workspace=workspace, actor=owner, kind="elevenlabs", api_key=KEY)


# --- The provider at the network edge -------------------------------------------------------


def refusal(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"detail": {"status": code, "message": message}})


class Provider:
    """The provider's HTTP API as a MockTransport handler: agents made, patched and deleted
    (recorded), signed URLs to ``ws_url``; ``refuse`` answers every call with that response."""

    def __init__(self, ws_url: str = ""):
        self.ws_url = ws_url
        self.calls: list[tuple[str, str, object]] = []
        self.agents: set[str] = set()
        self.documents: dict[str, dict] = {}  # knowledge base: id → the text body sent
        self.made = 0
        self.refuse: httpx.Response | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, request.url.path, body))
        if self.refuse is not None:
            r = self.refuse
            return httpx.Response(r.status_code, headers=r.headers, content=r.content)
        path = request.url.path
        if path.startswith("/v1/convai/knowledge-base/"):
            return self.knowledge_base(request, path.rsplit("/", 1)[-1], body)
        if path in ("/v1/convai/agents/create", "/v1/convai/agents/agent_up_1") and any(
            entry["id"] not in self.documents
            for entry in body["conversation_config"]["agent"]["prompt"]["knowledge_base"]
        ):
            return refusal(400, "invalid_parameters", "No such document.")
        if path == "/v1/convai/agents/create":
            self.made += 1
            agent_id = f"agent_up_{self.made}"
            self.agents.add(agent_id)
            return httpx.Response(200, json={"agent_id": agent_id})
        if path == "/v1/convai/conversation/get-signed-url":
            return httpx.Response(200, json={"signed_url": self.ws_url})
        agent_id = path.rsplit("/", 1)[-1]
        if agent_id not in self.agents:
            return httpx.Response(404, json={"detail": {"status": "agent_not_found",
                                                        "message": "No such agent."}})  # fmt: skip
        if request.method == "DELETE":
            self.agents.discard(agent_id)
            return httpx.Response(204)
        return httpx.Response(200, json={"agent_id": agent_id})

    def knowledge_base(self, request: httpx.Request, last: str, body) -> httpx.Response:
        if request.method == "POST" and last == "text":
            document_id = f"kb_up_{len(self.documents) + 1}"
            self.documents[document_id] = body
            return httpx.Response(200, json={"id": document_id, "name": body.get("name", "")})
        if last not in self.documents:
            return refusal(404, "document_not_found", "No such document.")
        if request.method == "DELETE":
            del self.documents[last]
            return httpx.Response(200, json={})
        return httpx.Response(200, json={"id": last, "type": "text", **self.documents[last]})

    def engine(self, base_url: str = "https://api.elevenlabs.io") -> ElevenLabsEngine:
        return ElevenLabsEngine(
            KEY,
            base_url,
            workspace="acme",
            transport=httpx.MockTransport(self),
            sleep=lambda _: None,
            egress=EgressPolicy(allow_loopback=True),
        )

    def of(self, method: str) -> list:
        return [c for c in self.calls if c[0] == method and "signed-url" not in c[1]]


@contextmanager
def scripted(handler):
    """A scripted conversation socket on 127.0.0.1; yields its signed URL."""
    quiet = logging.getLogger("tests.relay_upstream")
    quiet.setLevel(logging.WARNING)
    server = serve(handler, "127.0.0.1", 0, logger=quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/v1/convai/conversation?token=t"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def send(ws, kind: str, **inner):
    ws.send(json.dumps({"type": kind, **inner}))


def send_audio(ws, pcm: bytes, first_id: int) -> int:
    for offset in range(0, len(pcm), 8000):
        send(ws, "audio", audio_event={
            "audio_base_64": base64.b64encode(pcm[offset:offset + 8000]).decode(),
            "event_id": first_id})  # fmt: skip
        first_id += 1
    return first_id


def metadata(ws, fmt="pcm_16000"):
    send(ws, "conversation_initiation_metadata", conversation_initiation_metadata_event={
        "conversation_id": "conv_upstream_1", "agent_output_audio_format": fmt,
        "user_input_audio_format": "pcm_16000"})  # fmt: skip


class Upstream:
    """A scripted provider conversation: greets, answers after 1 s of user audio, barges in
    on request, records what Chorus sent."""

    def __init__(self, *, answer="We open at nine.", then=None):
        self.received: list[dict] = []
        self.answer, self.then = answer, then
        self.audio = bytearray()

    def __call__(self, ws):
        self.received.append(json.loads(ws.recv()))
        metadata(ws)
        send(ws, "agent_response", agent_response_event={"agent_response": "Hello there."})
        next_id = send_audio(ws, tone(0.5), 1)
        send(ws, "ping", ping_event={"event_id": 41, "ping_ms": 5})
        answered = False
        for raw in ws:
            message = json.loads(raw)
            self.received.append(message)
            if "user_audio_chunk" in message:
                self.audio += base64.b64decode(message["user_audio_chunk"])
            if len(self.audio) >= 32000 and not answered:
                answered = True
                send(ws, "user_transcript",
                     user_transcription_event={"user_transcript": "When do you open?"})  # fmt: skip
                send(ws, "client_tool_call", client_tool_call={
                    "tool_name": "lookup", "tool_call_id": "call_1", "parameters": {}})  # fmt: skip
                next_id = send_audio(ws, tone(1.0), next_id)
                send(ws, "agent_response", agent_response_event={"agent_response": self.answer})
                if self.then is not None:
                    self.then(ws, next_id)
                    return


def relay_of(agent, member, engine, **kwargs) -> RelaySession:
    session = RelaySession(caller=Caller(workspace=agent.workspace, user=member), agent=agent,
                           engine=engine, **kwargs)  # fmt: skip
    _OPEN.append(session)
    return session


# --- Scripted provider ------------------------------------------------------------------------


def test_a_relayed_conversation_translates_records_and_meters_everything(
    agent, member, on_elevenlabs, media, caplog
):
    caplog.set_level(logging.DEBUG)
    upstream = Upstream()
    with scripted(upstream) as url:
        provider = Provider(url)
        session = relay_of(agent, member, provider.engine())
        events = session.start(dynamic_variables={"name": "Ada"})
        meta = events[0]["conversation_initiation_metadata_event"]
        assert meta == {
            "conversation_id": session.conversation.conversation_id,
            "agent_output_audio_format": "pcm_16000",
            "user_input_audio_format": "pcm_16000",
        }
        events = until(session, events, lambda ev: len(audio_of(ev)) >= len(tone(0.5)))
        user = silence(0.3) + tone(0.9, 3000) + silence(0.3)
        events += feed(session, user)
        events = until(session, events, lambda ev: len(of_type(ev, "agent_response")) == 2)
        events = until(session, events, lambda ev: len(audio_of(ev)) >= len(tone(1.5)))
        time.sleep(0.3)  # the pong and the tool result reach the provider
        conversation = session.end("the user hung up")

    assert [e["agent_response_event"]["agent_response"] for e in of_type(events, "agent_response")
            ] == ["Hello there.", "We open at nine."]  # fmt: skip
    assert of_type(events, "user_transcript")[0]["user_transcription_event"] == {
        "user_transcript": "When do you open?"
    }
    heard = audio_of(events)
    assert heard == tone(0.5) + tone(1.0)  # decoded, in order, nothing lost
    ids = [e["audio_event"]["event_id"] for e in of_type(events, "audio")]
    assert ids == list(range(1, len(ids) + 1))
    assert not of_type(events, "error")
    # What Chorus sent the provider: the initiation data first, the user's audio, a pong for
    # its ping, and a refusal for the client tool call.
    initiation = upstream.received[0]
    assert initiation == {"type": "conversation_initiation_client_data",
                          "conversation_config_override": {},
                          "dynamic_variables": {"name": "Ada"}}  # fmt: skip
    assert {"type": "pong", "event_id": 41} in upstream.received
    (tool,) = [m for m in upstream.received if m.get("type") == "client_tool_result"]
    assert (tool["tool_call_id"], tool["is_error"]) == ("call_1", True)
    assert bytes(upstream.audio) == user
    # The agent was made at the provider once, with the official names.
    [(_, kb_path, _), (_, path, body)] = provider.of("POST")
    assert (kb_path, path) == ("/v1/convai/knowledge-base/text", "/v1/convai/agents/create")
    config = body["conversation_config"]
    assert config["tts"]["agent_output_audio_format"] == "pcm_16000"
    assert config["asr"] == {"user_input_audio_format": "pcm_16000"}
    assert config["turn"] == {"turn_eagerness": "eager"}
    assert "llm" not in config["agent"]["prompt"]
    # The agent's knowledge went first, as the provider's own document, and is referred to.
    assert config["agent"]["prompt"]["knowledge_base"] == [
        {"type": "text", "name": "Office", "id": "kb_up_1", "usage_mode": "auto"}
    ]
    assert provider.documents["kb_up_1"]["text"].startswith("The Chorus office opens at 9 am")
    assert config["agent"]["prompt"]["prompt"] == "You are the front desk of Chorus."
    assert body["platform_settings"]["overrides"]["conversation_config_override"]["tts"] == {
        "voice_id": True
    }
    agent.refresh_from_db()
    assert (agent.upstream_agent_id, agent.upstream_version) == ("agent_up_1", 1)

    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.DONE
    assert (conversation.engine, conversation.upstream_conversation_id) == (
        "elevenlabs",
        "conv_upstream_1",
    )
    turns = list(conversation.turns.order_by("position"))
    assert [(t.role, t.text) for t in turns] == [
        ("agent", "Hello there."),
        ("user", "When do you open?"),
        ("agent", "We open at nine."),
    ]
    assert turns[0].started_seconds == 0 and turns[0].ended_seconds == pytest.approx(0.5)
    assert 0.25 <= turns[1].started_seconds <= 0.35  # where the user's speech began
    assert turns[1].ended_seconds <= turns[2].started_seconds < turns[2].ended_seconds
    assert conversation.user_audio and conversation.agent_audio
    assert recordings.has_recording(conversation)
    mixed = b"".join(recordings.recording_chunks(conversation))
    assert mixed[:3] == b"ID3" or mixed[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xe3")
    # One ledger row, charged on ElevenLabs: the user's audio, the agent's text, tokens.
    assert conversation.stt_seconds == pytest.approx(len(user) / 32000, abs=0.01)
    assert conversation.tts_characters == len("Hello there.") + len("We open at nine.")
    assert conversation.llm_tokens > 0
    row = UsageEvent.objects.get(pk=conversation.usage_event_id)
    assert (row.capability, row.engine, row.status) == ("agent", "elevenlabs", UsageStatus.SETTLED)
    assert row.credits > 0
    for record in caplog.records:
        assert KEY not in record.getMessage() and KEY not in repr(record.__dict__)
    assert KEY not in json.dumps(events)


def test_a_barge_in_at_the_provider_cuts_the_turn_and_drops_its_queued_audio(
    agent, member, on_elevenlabs, media
):
    def barge(ws, next_id):
        time.sleep(0.3)
        cut = send_audio(ws, tone(2.0), next_id)
        send(ws, "interruption", interruption_event={"event_id": cut - 1})
        send_audio(ws, tone(0.5), next_id)  # late audio of the cut turn: dropped
        send(ws, "agent_response_correction", agent_response_correction_event={
            "original_agent_response": "We open at nine. Sundays we rest.",
            "corrected_agent_response": "We open at"})  # fmt: skip
        for _ in ws:
            pass

    with scripted(Upstream(answer="We open at nine. Sundays we rest.", then=barge)) as url:
        session = relay_of(agent, member, Provider(url).engine())
        events = session.start()
        events += feed(session, silence(1.2))
        events = until(session, events, lambda ev: of_type(ev, "agent_response_correction"))
        conversation = session.end("bye")
    (interruption,) = of_type(events, "interruption")
    last_audio = of_type(events, "audio")[-1]["audio_event"]["event_id"]
    assert interruption["interruption_event"]["event_id"] >= last_audio
    assert len(audio_of(events)) < len(tone(0.5) + tone(1.0) + tone(2.0) + tone(0.5))
    turns = list(conversation.turns.order_by("position"))
    assert [(t.role, t.interrupted) for t in turns] == [("agent", False), ("user", False),
                                                        ("agent", True)]  # fmt: skip
    assert turns[2].text == "We open at"


def test_a_provider_that_refuses_the_agent_ends_the_start_with_a_clear_fatal_error(
    agent, member, on_elevenlabs, media, caplog
):
    caplog.set_level(logging.DEBUG)
    provider = Provider()
    provider.refuse = httpx.Response(
        401, json={"detail": {"status": "invalid_api_key", "message": "Invalid API key."}}
    )
    session = relay_of(agent, member, provider.engine())
    events = session.start()
    refusal = "ElevenLabs refused the conversation: Invalid API key."
    assert events == [{"type": "error", "error_event": {"message": refusal, "fatal": True}}]
    assert session.ended
    conversation = Conversation.objects.get(pk=session.conversation.pk)
    assert conversation.status == ConversationStatus.FAILED
    assert conversation.end_reason == "ElevenLabs refused the conversation: Invalid API key."
    row = UsageEvent.objects.get(pk=conversation.usage_event_id)
    assert row.status == UsageStatus.REFUNDED and row.credits == 0  # the reservation released
    assert session.end() == session.conversation  # ending again changes nothing
    for record in caplog.records:
        assert KEY not in record.getMessage() and KEY not in repr(record.__dict__)


def test_a_provider_that_is_down_fails_the_start_after_retries(agent, member, on_elevenlabs, media):
    provider = Provider()
    provider.refuse = httpx.Response(500, text="upstream connect error")
    session = relay_of(agent, member, provider.engine())
    events = session.start()
    message = events[-1]["error_event"]["message"]
    assert events[-1]["error_event"]["fatal"] and "upstream connect error" in message
    assert session.conversation.status == ConversationStatus.FAILED
    row = UsageEvent.objects.get(pk=session.conversation.usage_event_id)
    assert row.status == UsageStatus.REFUNDED


def test_a_socket_cut_mid_conversation_ends_it_with_a_fatal_error_and_saves_it(
    agent, member, on_elevenlabs, media
):
    def cut(ws):
        ws.recv()
        metadata(ws)
        send(ws, "agent_response", agent_response_event={"agent_response": "Hello."})
        send_audio(ws, tone(0.3), 1)
        time.sleep(0.3)
        ws.socket.close()

    with scripted(cut) as url:
        session = relay_of(agent, member, Provider(url).engine())
        events = session.start()
        events = until(session, events, lambda ev: session.ended)
    events += session.poll()
    fatal = [e for e in of_type(events, "error") if e["error_event"]["fatal"]]
    assert fatal[0]["error_event"]["message"] == (
        "The conversation ended at ElevenLabs: The connection to ElevenLabs was lost."
    )
    conversation = Conversation.objects.get(pk=session.conversation.pk)
    assert conversation.status == ConversationStatus.FAILED
    assert list(conversation.turns.values_list("text", flat=True)) == ["Hello."]
    assert conversation.agent_audio


def test_a_spent_budget_ends_the_relayed_conversation_and_keeps_what_was_said(
    agent, member, workspace, on_elevenlabs, media
):
    caller = Caller(workspace=workspace, user=member)
    meter = ConversationMeter(caller=caller, engine_name="elevenlabs")
    Budget.objects.create(workspace=workspace, user=member, limit_credits=meter.units(SLICE) + 5)
    with scripted(Upstream()) as url:
        session = relay_of(agent, member, Provider(url).engine(), meter=meter)
        events = session.start()
        events = until(session, events, lambda ev: len(audio_of(ev)) >= len(tone(0.5)))
        events += feed(session, tone(1.2, 3000) + silence(4.0))
        events = until(session, events, lambda ev: session.ended)
    events += session.poll()
    fatal = [e for e in of_type(events, "error") if e["error_event"]["fatal"]]
    assert "is spent" in fatal[0]["error_event"]["message"]
    conversation = Conversation.objects.get(pk=session.conversation.pk)
    assert conversation.status == ConversationStatus.DONE and "is spent" in conversation.end_reason
    assert [t.role for t in conversation.turns.order_by("position")][:2] == ["agent", "user"]
    assert UsageEvent.objects.get(pk=conversation.usage_event_id).status == UsageStatus.SETTLED


def test_the_copy_at_the_provider_is_made_once_updated_after_an_edit_and_made_again_if_gone(
    agent, member
):
    provider = Provider()
    engine = provider.engine()
    assert agent_upstream_sync(agent=agent, engine=engine) == "agent_up_1"
    assert agent_upstream_sync(agent=agent, engine=engine) == "agent_up_1"
    assert len(provider.of("POST")) == 2 and provider.of("PATCH") == []  # document, agent
    provider.refuse = httpx.Response(503, text="down")
    config = services.agent_config(agent).with_changes(prompt="You are the night desk.")
    edited = services.agent_update(agent=agent, user=member, config=config)  # never calls it
    assert edited.version.number == 2 and len(provider.calls) == 2
    provider.refuse = None
    assert agent_upstream_sync(agent=edited, engine=engine) == "agent_up_1"
    [(_, path, body)] = provider.of("PATCH")
    assert path == "/v1/convai/agents/agent_up_1"
    assert body["conversation_config"]["agent"]["prompt"]["prompt"] == "You are the night desk."
    assert Agent.objects.get(pk=agent.pk).upstream_version == 2
    provider.agents.clear()  # deleted at the provider
    edited = services.agent_update(agent=edited, user=member, config=config.with_changes(
        prompt="You are the day desk."))  # fmt: skip
    assert agent_upstream_sync(agent=edited, engine=engine) == "agent_up_2"


def test_every_kind_of_document_travels_as_its_text_once_and_an_edit_changes_the_references(
    workspace,
    member,
    voices,
    office,  # noqa: F811
    media,
):
    from apps.agents import knowledge
    from tests.agents.test_knowledge import make_docx, make_pdf

    pdf = knowledge.document_add_file(workspace=workspace, user=member, filename="hours.pdf",
                                      data=make_pdf(["Saturdays we open at ten."]))  # fmt: skip
    docx = knowledge.document_add_file(workspace=workspace, user=member, filename="returns.docx",
                                       data=make_docx())  # fmt: skip
    first = make_agent(workspace, member, voices, office)
    config = services.agent_config(first).with_changes(
        knowledge=[pdf.document_id, docx.document_id, office.document_id]
    )
    second = services.agent_create(workspace=workspace, user=member, name="Returns", config=config)
    provider = Provider()
    engine = provider.engine()
    assert agent_upstream_sync(agent=first, engine=engine) == "agent_up_1"
    assert agent_upstream_sync(agent=second, engine=engine) == "agent_up_2"
    # Three documents uploaded once each (the office's is shared), with their extracted text.
    assert provider.of("POST")[:1] + provider.of("POST")[2:4] == [
        ("POST", "/v1/convai/knowledge-base/text", {"text": office.text, "name": "Office"}),
        ("POST", "/v1/convai/knowledge-base/text", {"text": pdf.text, "name": "hours"}),
        ("POST", "/v1/convai/knowledge-base/text", {"text": docx.text, "name": "returns"}),
    ]
    assert "Saturdays we open at ten." in pdf.text and "thirty days" in docx.text
    assert len(provider.documents) == 3
    ids = {d.name: (d.upstream_document_id, d.upstream_base_url)
           for d in KnowledgeDocument.objects.all()}  # fmt: skip
    assert ids == {"Office": ("kb_up_1", "https://api.elevenlabs.io"),
                   "hours": ("kb_up_2", "https://api.elevenlabs.io"),
                   "returns": ("kb_up_3", "https://api.elevenlabs.io")}  # fmt: skip
    made = provider.of("POST")[-1][2]["conversation_config"]["agent"]["prompt"]["knowledge_base"]
    assert made == [
        {"type": "text", "name": "hours", "id": "kb_up_2", "usage_mode": "auto"},
        {"type": "text", "name": "returns", "id": "kb_up_3", "usage_mode": "auto"},
        {"type": "text", "name": "Office", "id": "kb_up_1", "usage_mode": "auto"},
    ]
    # An edit that drops documents sends the shorter list (none: an empty one), uploads none.
    edited = services.agent_update(agent=second, user=member, config=config.with_changes(
        knowledge=[docx.document_id]))  # fmt: skip
    agent_upstream_sync(agent=edited, engine=engine)
    emptied = services.agent_update(agent=first, user=member, config=config.with_changes(
        knowledge=[]))  # fmt: skip
    agent_upstream_sync(agent=emptied, engine=engine)
    (_, _, patch_second), (_, _, patch_first) = provider.of("PATCH")
    assert [e["id"] for e in patch_second["conversation_config"]["agent"]["prompt"][
        "knowledge_base"]] == ["kb_up_3"]  # fmt: skip
    assert patch_first["conversation_config"]["agent"]["prompt"]["knowledge_base"] == []
    assert len(provider.of("POST")) == 5
    # Another API (a new base URL): the documents are uploaded there again.
    again = services.agent_update(agent=edited, user=member, config=config)
    other = Provider()
    agent_upstream_sync(agent=again, engine=other.engine("http://127.0.0.1:9"))
    assert len(other.documents) == 3
    assert KnowledgeDocument.objects.get(pk=office.pk).upstream_base_url == "http://127.0.0.1:9"


def test_a_document_lost_at_the_provider_is_uploaded_again_and_the_agent_call_made_once_more(
    agent,
    member,
    office,  # noqa: F811
):
    provider = Provider()
    engine = provider.engine()
    agent_upstream_sync(agent=agent, engine=engine)
    provider.documents.clear()  # deleted in the provider's dashboard
    edited = services.agent_update(agent=agent, user=member, config=services.agent_config(
        agent).with_changes(prompt="You are the night desk."))  # fmt: skip
    assert agent_upstream_sync(agent=edited, engine=engine) == "agent_up_1"
    assert list(provider.documents) == ["kb_up_1"]  # the new copy, the same text
    assert provider.documents["kb_up_1"]["text"] == office.text
    refused, patched = provider.of("PATCH")
    assert patched[2]["conversation_config"]["agent"]["prompt"]["knowledge_base"][0]["id"] == (
        "kb_up_1"
    )
    assert KnowledgeDocument.objects.get(pk=office.pk).upstream_document_id == "kb_up_1"
    # A refusal for another reason is not retried and uploads nothing.
    provider.refuse = httpx.Response(400, json={"detail": {"status": "invalid_parameters",
                                                           "message": "Bad voice."}})  # fmt: skip
    again = services.agent_update(agent=edited, user=member, config=services.agent_config(
        edited).with_changes(prompt="You are the day desk."))  # fmt: skip
    calls = len(provider.calls)
    with pytest.raises(InvalidRequest, match="Bad voice"):
        agent_upstream_sync(agent=again, engine=engine)
    assert [c[0] for c in provider.calls[calls:]] == ["PATCH", "GET"]


def test_deleting_a_document_deletes_its_copy_at_the_provider_best_effort(
    workspace,
    member,
    owner,
    office,  # noqa: F811
    caplog,
):
    from apps.agents import knowledge

    provider = Provider()
    engine_settings_update(workspace=workspace, actor=owner, kind="elevenlabs", api_key=KEY,
                           base_url="http://127.0.0.1:9")  # fmt: skip
    engine = provider.engine("http://127.0.0.1:9")
    document_upstream(document=office, engine=engine)
    assert list(provider.documents) == ["kb_up_1"]
    with caplog.at_level(logging.WARNING, logger="apps.agents.upstream"):
        knowledge.document_delete(document=office)  # nothing listens there: logged
    assert "knowledge copy kb_up_1 left at the provider" in caplog.text
    assert KEY not in caplog.text
    # A copy at another API than the workspace's engine now: left there, said so.
    other = knowledge.document_add_text(workspace=workspace, user=member, name="Two",
                                        text="Parking is free after six.")  # fmt: skip
    document_upstream(document=other, engine=provider.engine())
    with caplog.at_level(logging.WARNING, logger="apps.agents.upstream"):
        knowledge.document_delete(document=other)
    assert "knowledge copy kb_up_2 left at https://api.elevenlabs.io" in caplog.text
    assert len(provider.calls) == 2  # the two uploads: no delete went anywhere else
    # Deleted there through the workspace's engine: the live test below, against a Chorus.


def test_deleting_an_agent_deletes_its_copy_best_effort(agent, member, workspace, owner, caplog):
    engine_settings_update(workspace=workspace, actor=owner, kind="elevenlabs", api_key=KEY,
                           base_url="http://127.0.0.1:9")  # fmt: skip
    Agent.objects.filter(pk=agent.pk).update(upstream_agent_id="agent_up_9", upstream_version=1)
    agent.refresh_from_db()
    with caplog.at_level(logging.WARNING, logger="apps.agents.upstream"):
        services.agent_delete(agent=agent)  # nothing listens there: logged, not raised
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert "agent copy agent_up_9 left at the provider" in caplog.text
    assert KEY not in caplog.text


def test_session_open_picks_the_session_by_the_workspaces_engine(agent, member, workspace, owner):
    caller = Caller(workspace=workspace, user=member)
    assert isinstance(session_open(caller=caller, agent=agent), AgentSession)
    engine_settings_update(workspace=workspace, actor=owner, kind="elevenlabs", api_key=KEY)
    assert isinstance(session_open(caller=caller, agent=agent), RelaySession)


# --- Against a real Chorus ------------------------------------------------------------------


ANSWER = "The office opens at 9 am."


@pytest.fixture
def llm_server():
    from tests.agents.test_talk_consumer import start_llm_server

    httpd = start_llm_server()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def live_env(live_env, llm_server, tmp_path):
    """The Chorus upstream answers with the stand-in LLM and writes media of its own."""
    live_env["CHORUS_AGENT_LLM_URL"] = f"http://127.0.0.1:{llm_server.server_port}/v1"
    live_env["MEDIA_ROOT"] = str(tmp_path / "upstream-media")
    return live_env


@pytest.mark.slow
def test_a_conversation_relayed_to_a_chorus_upstream_is_heard_and_saved(
    daphne_server, agent, member, workspace, owner, outsider, media, caplog, client_as,
    llm_server, question_pcm,  # noqa: F811
):  # fmt: skip
    """Upstream: Chorus on the local engine (the outsider's workspace there); here:
    ``workspace`` on ElevenLabs at its URL with its key."""
    from apps.agents import knowledge
    from apps.gateway import services as gateway
    from apps.voices import services as voice_services

    caplog.set_level(logging.DEBUG)
    there = outsider.memberships.get().workspace
    voice_services.library_sync(workspace=there)
    key = gateway.api_key_create(workspace=there, user=outsider, name="Upstream").raw
    engine_settings_update(workspace=workspace, actor=owner, kind="elevenlabs", api_key=key,
                           base_url=daphne_server.url)  # fmt: skip
    caller = Caller(workspace=workspace, user=member)
    session = session_open(caller=caller, agent=agent)
    assert isinstance(session, RelaySession)
    _OPEN.append(session)
    events = session.start()
    assert events[0]["type"] == "conversation_initiation_metadata"
    upstream = Agent.objects.get(workspace=there)
    agent.refresh_from_db()
    assert agent.upstream_agent_id == upstream.agent_id and agent.upstream_version == 1
    assert upstream.version.config["prompt"] == "You are the front desk of Chorus."
    # The agent's knowledge went first: the upstream's own document, with the same text.
    document = KnowledgeDocument.objects.get(workspace=workspace)
    copy = KnowledgeDocument.objects.get(workspace=there)
    assert (copy.text, copy.name, copy.kind) == (document.text, "Office", "text")
    assert upstream.version.config["knowledge"] == [copy.document_id]
    document.refresh_from_db()
    assert (document.upstream_document_id, document.upstream_base_url) == (
        copy.document_id, daphne_server.url.rstrip("/"))  # fmt: skip
    events = until(session, events, lambda ev: of_type(ev, "agent_response"), timeout=120)
    events += feed(session, silence(1.0) + question_pcm + silence(2.0))
    events = until(session, events, lambda ev: any(
        e["agent_response_event"]["agent_response"] == ANSWER
        for e in of_type(ev, "agent_response")), timeout=120)  # fmt: skip
    time.sleep(1.5)  # the rest of the answer's audio
    events += session.poll()
    conversation = session.end("the user hung up")

    said = of_type(events, "user_transcript")[0]["user_transcription_event"]["user_transcript"]
    assert "office" in said.lower()
    # The upstream answered from that knowledge: its LLM was given the document's text.
    prompts = [json.dumps(request["messages"]) for request in llm_server.requests]
    assert any("closes at 5 pm" in prompt for prompt in prompts), prompts
    heard = audio_of(events)
    assert rms(heard) > 300 and len(heard) > 2 * 32000  # the greeting and the answer, spoken
    conversation.refresh_from_db()
    assert (conversation.status, conversation.engine) == (ConversationStatus.DONE, "elevenlabs")
    there_conversation = Conversation.objects.get(workspace=there)
    assert conversation.upstream_conversation_id == there_conversation.conversation_id
    roles = [t.role for t in conversation.turns.order_by("position")]
    assert roles == ["agent", "user", "agent"]
    assert conversation.turns.order_by("position").last().text == ANSWER
    assert conversation.user_audio and conversation.agent_audio
    assert b"".join(recordings.recording_chunks(conversation))
    assert UsageEvent.objects.get(pk=conversation.usage_event_id).engine == "elevenlabs"

    # An edit makes version 2; the next conversation brings the copy up to date, no new one.
    config = services.agent_config(agent).with_changes(first_message="Good day, Chorus here.")
    agent = services.agent_update(agent=agent, user=member, config=config)
    second = session_open(caller=caller, agent=agent)
    _OPEN.append(second)
    events = second.start()
    events = until(second, events, lambda ev: of_type(ev, "agent_response"), timeout=120)
    assert of_type(events, "agent_response")[0]["agent_response_event"]["agent_response"] == (
        "Good day, Chorus here."
    )
    second.end("done")
    assert Agent.objects.filter(workspace=there).count() == 1
    assert AgentVersion.objects.filter(agent=upstream).count() == 2
    assert Agent.objects.get(pk=agent.pk).upstream_version == 2

    page = client_as(member).get(f"/agents/conversations/{conversation.conversation_id}/")
    services.agent_delete(agent=agent)
    assert not Agent.objects.filter(workspace=there).exists()  # deleted upstream too
    knowledge.document_delete(document=document)  # and the document's copy with the document
    assert not KnowledgeDocument.objects.filter(workspace=there).exists()
    for record in caplog.records:
        assert key not in record.getMessage() and key not in repr(record.__dict__)
    assert key not in json.dumps(events) and key.encode() not in page.content
    assert key not in daphne_server.proc.output()
