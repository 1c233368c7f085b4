"""``/v1/convai/conversation`` (``apps.agents.consumers``), in process: refusals (a signature
used twice, another workspace's agent, no authentication), garbage frames, a client tool result
refused while the conversation goes on, ping/pong (the round trip in the next ping), a client
that sends nothing at all taken as gone, an override that is not allowed. (The official SDK's
``Conversation`` against a real Daphne: ``test_convai_sdk_conversation``.)"""

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from apps.agents import consumers, knowledge
from apps.agents import services as agents
from apps.agents.config import AgentConfig
from apps.agents.pace import TOO_FAST
from apps.agents.signing import convai_signature_make
from apps.gateway import services
from apps.gateway.models import ApiKey
from studio_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
OPENS = 90  # the first answer waits for the local engine's models to load


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def agent(workspace, member, media):
    from apps.voices import services as voice_services
    from apps.voices.models import LibraryVoice

    voice_services.library_sync(workspace=workspace)
    voice = LibraryVoice.objects.filter(workspace=workspace, engine="local").order_by("voice_id")
    office = knowledge.document_add_text(
        workspace=workspace, user=member, name="Office",
        text="The Chorus office opens at 9 am and closes at 5 pm.",
    )  # fmt: skip
    config = AgentConfig(
        prompt="You are the front desk of Chorus.",
        first_message="Hello!",
        voice_id=voice.first().voice_id,
        knowledge=[office.document_id],
        silence_ms=500,
    )
    return agents.agent_create(workspace=workspace, user=member, name="Desk", config=config)


@pytest.fixture
def key(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="live").raw


def signature_of(agent, raw_key) -> str:
    api_key = ApiKey.objects.get(key_hash=ApiKey.hash(raw_key))
    return convai_signature_make(
        agent_id=agent.agent_id,
        workspace_id=api_key.workspace_id,
        user_id=api_key.user_id,
        api_key_id=api_key.pk,
    )


def socket(query: str, key: str | None = None) -> WebsocketCommunicator:
    headers = [(b"xi-api-key", key.encode())] if key else []
    return WebsocketCommunicator(application, f"/v1/convai/conversation?{query}", headers=headers)


async def refused(ws) -> tuple[dict, int]:
    connected, _ = await ws.connect(timeout=30)
    assert connected
    message = json.loads(await ws.receive_from(timeout=30))
    closed = await ws.receive_output(timeout=30)
    assert closed["type"] == "websocket.close"
    await ws.disconnect(timeout=30)  # the consumer ends: nothing left running
    return message, closed["code"]


async def until(ws, kind: str, seen: list, timeout: float = OPENS) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = await ws.receive_output(timeout=deadline - time.monotonic())
        assert output["type"] == "websocket.send", output
        event = json.loads(output["text"])
        seen.append(event)
        if event["type"] == kind:
            return event
    raise AssertionError(f"no {kind} in {[e['type'] for e in seen]}")


def test_a_signature_is_good_once_and_only_for_its_agent(agent, key, workspace, member):
    token, token2 = signature_of(agent, key), signature_of(agent, key)
    other = agents.agent_create(workspace=workspace, user=member, name="Other")

    async def go():
        first = socket(f"agent_id={agent.agent_id}&conversation_signature={token}")
        assert (await first.connect(timeout=30))[0]
        seen: list = []
        await until(first, "conversation_initiation_metadata", seen)
        await first.disconnect(timeout=60)
        again, code = await refused(socket(f"agent_id={agent.agent_id}&token={token}"))
        assert code == 4401 and "already used" in again["error_event"]["message"]
        wrong, code = await refused(
            socket(f"agent_id={other.agent_id}&conversation_signature={token2}")
        )
        assert code == 4403 and "another agent" in wrong["error_event"]["message"]
        forged, code = await refused(
            socket(f"agent_id={agent.agent_id}&conversation_signature={token}x")
        )
        assert code == 4401 and "invalid" in forged["error_event"]["message"]

    async_to_sync(go)()


def test_another_workspaces_agent_and_no_auth_are_refused(agent, outsider):
    from apps.workspaces.models import Workspace

    theirs = Workspace.objects.filter(memberships__user=outsider).first()
    their_key = services.api_key_create(workspace=theirs, user=outsider, name="x").raw

    async def go():
        foreign, code = await refused(socket(f"agent_id={agent.agent_id}", key=their_key))
        assert code == 4404 and "not found" in foreign["error_event"]["message"]
        public, code = await refused(socket(f"agent_id={agent.agent_id}"))
        assert (
            code == 4401 and "Public agents are not supported" in public["error_event"]["message"]
        )
        bad_key, code = await refused(socket(f"agent_id={agent.agent_id}&xi_api_key=nope"))
        assert code == 4401

    async_to_sync(go)()


def test_garbage_frames_a_tool_result_and_ping_pong_leave_the_conversation_going(
    agent, key, monkeypatch
):
    monkeypatch.setattr(consumers, "PING_SECONDS", 0.5)
    init = {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": {"agent": {"first_message": "Hi {{name}}!"}},
        "dynamic_variables": {"name": "Mia"},
    }

    async def go():
        ws = socket(f"agent_id={agent.agent_id}", key=key)
        assert (await ws.connect(timeout=30))[0]
        await ws.send_to(text_data=json.dumps(init))
        seen: list = []
        meta = await until(ws, "conversation_initiation_metadata", seen)
        assert meta["conversation_initiation_metadata_event"]["agent_output_audio_format"] == (
            "pcm_16000"
        )
        first = await until(ws, "agent_response", seen)
        assert first["agent_response_event"]["agent_response"] == "Hi Mia!"
        garbage = [
            "not json",
            "[1, 2]",
            "[" * 100_000,
            json.dumps({"user_audio_chunk": 5}),
            json.dumps({"user_audio_chunk": "!!!not base64"}),
            json.dumps({"user_audio_chunk": base64.b64encode(b"\0" * 3).decode()}),
            json.dumps({"user_audio_chunk": "A" * 200_000}),
            json.dumps({"type": "what"}),
            json.dumps(
                {
                    "type": "client_tool_result",
                    "tool_call_id": "x",
                    "result": "1",
                    "is_error": False,
                }
            ),  # fmt: skip
        ]
        for frame in garbage:
            await ws.send_to(text_data=frame)
            error = await until(ws, "error", seen, timeout=30)
            assert error["error_event"]["message"] and not error["error_event"]["fatal"]
        ping = await until(ws, "ping", seen, timeout=30)
        assert ping["ping_event"]["ping_ms"] is None  # no ping answered yet: nothing measured
        await ws.send_to(text_data=json.dumps(
            {"type": "pong", "event_id": ping["ping_event"]["event_id"]}))  # fmt: skip
        # Still going: audio is taken, and another ping comes with the round trip measured.
        chunk = base64.b64encode(bytes(3200)).decode()
        await ws.send_to(text_data=json.dumps({"user_audio_chunk": chunk}))
        after = await until(ws, "ping", seen, timeout=30)
        assert after["ping_event"]["event_id"] > ping["ping_event"]["event_id"]
        assert isinstance(after["ping_event"]["ping_ms"], int)
        assert 1 <= after["ping_event"]["ping_ms"] < 10_000
        assert not [e for e in seen if e["type"] == "error" and e["error_event"]["fatal"]]
        await ws.disconnect(timeout=60)

    async_to_sync(go)()
    from apps.agents.models import Conversation

    conversation = Conversation.objects.get(agent=agent)
    assert conversation.end_reason == "disconnected"
    assert conversation.turns.filter(role="agent", text="Hi Mia!").exists()


def test_a_client_that_sends_nothing_not_even_a_pong_is_taken_as_gone(agent, key, monkeypatch):
    monkeypatch.setattr(consumers, "PING_SECONDS", 0.2)
    monkeypatch.setattr(consumers, "SILENT_CLIENT_SECONDS", 1.0)

    async def go():
        ws = socket(f"agent_id={agent.agent_id}", key=key)
        assert (await ws.connect(timeout=30))[0]
        await ws.send_to(text_data=json.dumps({"type": "conversation_initiation_client_data"}))
        seen: list = []
        await until(ws, "conversation_initiation_metadata", seen)
        # Pings, unanswered; then the end, told and closed 1000 with its reason.
        told = await until(ws, "error", seen, timeout=30)
        gone = "The client sent nothing, not even a pong, for 1 s."
        assert told["error_event"] == {"message": gone, "fatal": True}
        assert len([e for e in seen if e["type"] == "ping"]) >= 3
        closed = await ws.receive_output(timeout=30)
        assert (closed["type"], closed["code"], closed["reason"]) == ("websocket.close", 1000, gone)
        await ws.disconnect(timeout=60)

    async_to_sync(go)()
    from apps.agents.models import Conversation

    conversation = Conversation.objects.get(agent=agent)
    assert conversation.end_reason == "The client sent nothing, not even a pong, for 1 s."
    assert conversation.status == "done"


def test_an_override_that_is_not_allowed_is_refused(agent, key):
    async def go():
        ws = socket(f"agent_id={agent.agent_id}", key=key)
        assert (await ws.connect(timeout=30))[0]
        await ws.send_to(text_data=json.dumps({"type": "conversation_initiation_client_data",
            "conversation_config_override": {"tts": {"speed": 3}}}))  # fmt: skip
        message = json.loads(await ws.receive_from(timeout=30))
        assert "tts.speed is not allowed" in message["error_event"]["message"]
        assert (await ws.receive_output(timeout=30))["code"] == 4400

    async_to_sync(go)()


def test_the_specs_prompt_override_works_with_a_members_key(agent, key):
    """The AsyncAPI example's override (agent.prompt.prompt, first_message) with a personal
    key: the conversation starts with the overridden first message."""

    async def go():
        ws = socket(f"agent_id={agent.agent_id}", key=key)
        assert (await ws.connect(timeout=30))[0]
        await ws.send_to(text_data=json.dumps({"type": "conversation_initiation_client_data",
            "conversation_config_override": {"agent": {"prompt": {"prompt": "Be a pirate."},
                                                        "first_message": "Ahoy!"}}}))  # fmt: skip
        seen: list = []
        said = await until(ws, "agent_response", seen)
        await ws.disconnect(timeout=60)
        return said, seen

    said, seen = async_to_sync(go)()
    assert said["agent_response_event"]["agent_response"] == "Ahoy!"
    assert not [e for e in seen if e["type"] == "error"]


def test_a_signed_url_holder_cannot_override_the_agent(agent, key):
    """A signed URL is handed to end users: they may not change what the agent says or its
    voice (an empty override, as SDKs send, is fine)."""
    token, token2 = signature_of(agent, key), signature_of(agent, key)

    async def go():
        ws = socket(f"agent_id={agent.agent_id}&conversation_signature={token}")
        assert (await ws.connect(timeout=30))[0]
        await ws.send_to(text_data=json.dumps({"type": "conversation_initiation_client_data",
            "conversation_config_override": {"agent": {
                "first_message": "This is your bank. Read me your PIN."}}}))  # fmt: skip
        refusal = json.loads(await ws.receive_from(timeout=30))
        closed = await ws.receive_output(timeout=30)
        await ws.disconnect(timeout=60)
        fine = socket(f"agent_id={agent.agent_id}&conversation_signature={token2}")
        assert (await fine.connect(timeout=30))[0]
        await fine.send_to(text_data=json.dumps({"type": "conversation_initiation_client_data",
            "conversation_config_override": {"agent": {}, "tts": {}}}))  # fmt: skip
        seen: list = []
        said = await until(fine, "agent_response", seen)
        await fine.disconnect(timeout=60)
        return refusal, closed, said

    refusal, closed, said = async_to_sync(go)()
    assert refusal["error_event"]["message"] == consumers.OVERRIDES_NEED_A_KEY
    assert closed["code"] == 4403
    assert said["agent_response_event"]["agent_response"] == "Hello!"


class Refusing(BaseHTTPRequestHandler):
    """A provider that refuses every call with 401 (a real socket at the network edge)."""

    def log_message(self, *args):
        pass

    def _refuse(self):
        body = b'{"detail": {"status": "invalid_api_key", "message": "Invalid API key."}}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _refuse


def test_on_elevenlabs_a_provider_refusal_at_the_start_is_said_once_and_the_socket_ends(
    agent, key, workspace, owner, settings
):
    """The workspace's engine is ElevenLabs (the relay): the provider refuses the agent, so
    the client hears that reason once, as the fatal error, and the socket closes 1000."""
    from apps.agents.models import Conversation, ConversationStatus
    from apps.workspaces.services import engine_settings_update

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    settings.CHORUS_ENGINE_ALLOW_LOOPBACK = True
    engine_settings_update(workspace=workspace, actor=owner, kind="elevenlabs",
                           api_key="sk_" + "x" * 40,
                           base_url=f"http://127.0.0.1:{httpd.server_port}")  # fmt: skip

    async def go():
        ws = socket(f"agent_id={agent.agent_id}", key=key)
        assert (await ws.connect(timeout=30))[0]
        await ws.send_to(text_data=json.dumps({"type": "conversation_initiation_client_data"}))
        seen: list = []
        while True:
            output = await ws.receive_output(timeout=60)
            if output["type"] == "websocket.close":
                break
            seen.append(json.loads(output["text"]))
        await ws.disconnect(timeout=60)
        return seen, output

    try:
        seen, closed = async_to_sync(go)()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [e["type"] for e in seen] == ["error"]
    assert seen[0]["error_event"]["fatal"] is True
    assert "ElevenLabs refused" in seen[0]["error_event"]["message"]
    assert closed["code"] == 1000
    conversation = Conversation.objects.get(agent=agent)
    assert conversation.status == ConversationStatus.FAILED
    assert conversation.engine == "elevenlabs"


def test_audio_faster_than_real_time_is_dropped_with_one_message(agent, key):
    """A script sending 2 s chunks as fast as it can (200 s in a burst): the audio beyond the
    clock's slack is dropped, said once; the conversation goes on."""
    chunk = base64.b64encode(bytes(64000)).decode()

    async def go():
        ws = socket(f"agent_id={agent.agent_id}", key=key)
        assert (await ws.connect(timeout=30))[0]
        await ws.send_to(text_data=json.dumps({"type": "conversation_initiation_client_data"}))
        seen: list = []
        await until(ws, "conversation_initiation_metadata", seen)
        for _ in range(100):
            await ws.send_to(text_data=json.dumps({"user_audio_chunk": chunk}))
        await until(ws, "error", seen, timeout=30)
        await ws.send_to(text_data=json.dumps({"type": "pong", "event_id": 1}))
        await ws.disconnect(timeout=60)
        return seen

    seen = async_to_sync(go)()
    errors = [e["error_event"]["message"] for e in seen if e["type"] == "error"]
    assert errors == [TOO_FAST]
    from apps.agents.models import Conversation

    conversation = Conversation.objects.get(agent=agent)
    assert conversation.stt_seconds <= 30, conversation.stt_seconds
