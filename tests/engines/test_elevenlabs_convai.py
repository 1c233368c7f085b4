"""The ElevenLabs engine's Conversational AI calls against scripted answers at the network edge:
the agent calls (``/v1/convai/agents``: the documented bodies, typed errors, retries only where
safe), the signed URL, and the conversation socket (a scripted WebSocket on 127.0.0.1: the
initiation data sent first, pings answered, refusals and cuts as typed errors, the key and the
signed URL's token in no log record). The happy path runs against a real Chorus in
``tests/agents/test_relay.py``."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from websockets.sync.server import serve

from apps.engines.base import (
    AuthenticationFailed,
    InvalidRequest,
    QuotaExceeded,
    RateLimited,
    UpstreamUnavailable,
)
from apps.engines.elevenlabs import ElevenLabsEngine
from apps.engines.elevenlabs.convai import ConvaiEnded
from apps.engines.elevenlabs.egress import EgressPolicy, EgressRefused

KEY = "sk_test_convai_9f8e7d6c5b4a_secret"
TOKEN = "tok_single_use_7a6b5c"
LOOPBACK = EgressPolicy(allow_loopback=True)
INITIATION = {
    "type": "conversation_initiation_client_data",
    "conversation_config_override": {"agent": {"first_message": "Hi {{name}}"}},
    "dynamic_variables": {"name": "Ada"},
}


class Script:
    """A MockTransport handler answering in order (the last answer repeats); records requests."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


def engine_of(script: Script, **options) -> ElevenLabsEngine:
    engine = ElevenLabsEngine(
        KEY,
        "https://api.elevenlabs.io",
        workspace="acme",
        transport=httpx.MockTransport(script),
        sleep=options.pop("sleep", lambda _: None),
        egress=LOOPBACK,
        **options,
    )
    return engine


def detail(status: str, message: str) -> dict:
    return {"detail": {"status": status, "message": message}}


# --- Agents ---------------------------------------------------------------------------------


CONFIG = {"agent": {"prompt": {"prompt": "You sell umbrellas."}}, "tts": {"voice_id": "v1"}}


def test_an_agent_is_created_with_the_documented_body_and_its_id_returned():
    script = Script(httpx.Response(200, json={"agent_id": "agent_up_1"}))
    engine = engine_of(script)
    made = engine.convai_agent_create(
        name="Umbrellas", conversation_config=CONFIG, platform_settings={"a": 1}, tags=["shop"]
    )
    assert made == "agent_up_1"
    (request,) = script.requests
    assert (request.method, request.url.path) == ("POST", "/v1/convai/agents/create")
    assert request.headers["xi-api-key"] == KEY
    assert json.loads(request.content) == {
        "conversation_config": CONFIG,
        "name": "Umbrellas",
        "platform_settings": {"a": 1},
        "tags": ["shop"],
    }


def test_an_agent_update_patches_only_what_is_given_and_a_delete_deletes():
    script = Script(httpx.Response(200, json={"agent_id": "agent_up_1"}), httpx.Response(204))
    engine = engine_of(script)
    engine.convai_agent_update("agent_up_1", conversation_config=CONFIG)
    engine.convai_agent_delete("agent_up_1")
    patch, delete = script.requests
    assert (patch.method, patch.url.path) == ("PATCH", "/v1/convai/agents/agent_up_1")
    assert json.loads(patch.content) == {"conversation_config": CONFIG}
    assert (delete.method, delete.url.path) == ("DELETE", "/v1/convai/agents/agent_up_1")


def test_an_agent_id_cannot_reach_another_endpoint():
    script = Script(httpx.Response(204))
    engine_of(script).convai_agent_delete("../../v1/voices/x")
    assert script.requests[0].url.raw_path == b"/v1/convai/agents/..%2F..%2Fv1%2Fvoices%2Fx"


def test_a_create_is_retried_after_a_429_but_not_after_a_500():
    busy = httpx.Response(429, json=detail("too_many_concurrent_requests", "Busy."))
    script = Script(busy, httpx.Response(200, json={"agent_id": "agent_up_2"}))
    assert engine_of(script).convai_agent_create(name="A", conversation_config={}) == "agent_up_2"
    assert len(script.requests) == 2

    script = Script(httpx.Response(500, json=detail("internal_error", "Oops.")))
    with pytest.raises(UpstreamUnavailable, match="may have gone through"):
        engine_of(script).convai_agent_create(name="A", conversation_config={})
    assert len(script.requests) == 1  # a second try could make a second agent


def test_agent_call_refusals_are_typed_and_keep_the_providers_message():
    engine = engine_of(Script(httpx.Response(401, json=detail("invalid_api_key", "Bad key."))))
    with pytest.raises(AuthenticationFailed, match="Bad key."):
        engine.convai_agent_create(name="A", conversation_config={})
    engine = engine_of(Script(httpx.Response(404, json=detail("agent_not_found", "No agent."))))
    with pytest.raises(InvalidRequest) as missing:
        engine.convai_agent_update("agent_gone", name="B")
    assert missing.value.upstream_status == 404
    engine = engine_of(Script(httpx.Response(200, json={"nope": 1})))
    with pytest.raises(UpstreamUnavailable, match="did not say which agent"):
        engine.convai_agent_create(name="A", conversation_config={})


def test_a_timeout_on_an_update_is_retried_then_upstream_unavailable():
    script = Script(httpx.ReadTimeout("slow"))
    with pytest.raises(UpstreamUnavailable, match="did not answer in time"):
        engine_of(script).convai_agent_update("agent_up_1", name="B")
    assert len(script.requests) == 4  # an update is idempotent: retried three times


# --- The knowledge base -----------------------------------------------------------------------


def test_a_text_document_is_created_with_the_documented_body_and_its_id_returned():
    script = Script(
        httpx.Response(200, json={"id": "kb_up_1", "name": "Office", "folder_path": []})
    )
    made = engine_of(script).convai_knowledge_base_create_text(text="We open at 9.", name="Office")
    assert made == "kb_up_1"
    (request,) = script.requests
    assert (request.method, request.url.path) == ("POST", "/v1/convai/knowledge-base/text")
    assert request.headers["xi-api-key"] == KEY
    assert json.loads(request.content) == {"text": "We open at 9.", "name": "Office"}
    script = Script(httpx.Response(200, json={"id": "kb_up_2", "name": "We open"}))
    assert engine_of(script).convai_knowledge_base_create_text(text="We open.") == "kb_up_2"
    assert json.loads(script.requests[0].content) == {"text": "We open."}  # no name: none sent


def test_a_text_document_create_is_not_retried_after_a_500_and_needs_an_id_back():
    script = Script(httpx.Response(500, json=detail("internal_error", "Oops.")))
    with pytest.raises(UpstreamUnavailable, match="may have gone through"):
        engine_of(script).convai_knowledge_base_create_text(text="x", name="X")
    assert len(script.requests) == 1  # a second try could make a second document
    script = Script(httpx.Response(200, json={"name": "X"}))
    with pytest.raises(UpstreamUnavailable, match="did not say which knowledge base document"):
        engine_of(script).convai_knowledge_base_create_text(text="x", name="X")


def test_a_document_is_read_and_deleted_by_its_quoted_id_and_a_gone_one_is_a_404():
    script = Script(
        httpx.Response(200, json={"id": "kb_up_1", "type": "text", "name": "Office"}),
        httpx.Response(200, json={}),
        httpx.Response(200, json={}),
        httpx.Response(404, json=detail("document_not_found", "No such document.")),
    )
    engine = engine_of(script)
    assert engine.convai_knowledge_base_get("kb_up_1")["type"] == "text"
    engine.convai_knowledge_base_delete("kb_up_1")
    engine.convai_knowledge_base_delete("../agents/x", force=True)
    with pytest.raises(InvalidRequest) as gone:
        engine.convai_knowledge_base_get("kb_gone")
    assert gone.value.upstream_status == 404
    get, delete, forced, _ = script.requests
    assert (get.method, get.url.path) == ("GET", "/v1/convai/knowledge-base/kb_up_1")
    assert (delete.method, delete.url.path, delete.url.query) == (
        "DELETE", "/v1/convai/knowledge-base/kb_up_1", b"")  # fmt: skip
    assert forced.url.raw_path == b"/v1/convai/knowledge-base/..%2Fagents%2Fx?force=true"


def test_the_local_engine_has_no_knowledge_base_of_its_own():
    from apps.engines.base import NotSupported
    from apps.engines.local.engine import LocalEngine

    with pytest.raises(NotSupported):
        LocalEngine().convai_knowledge_base_create_text(text="x", name="X")


# --- The conversation socket ----------------------------------------------------------------


@contextmanager
def convai_server(handler, process_request=None):
    """A scripted conversation endpoint on a local socket; yields its ws:// signed URL."""
    quiet = logging.getLogger("tests.convai_server")
    quiet.setLevel(logging.WARNING)
    server = serve(handler, "127.0.0.1", 0, process_request=process_request, logger=quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.socket.getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/v1/convai/conversation?agent_id=agent_up_1&token={TOKEN}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def signed(url: str) -> Script:
    return Script(httpx.Response(200, json={"signed_url": url}))


def metadata(conversation_id="conv_up_1") -> str:
    return json.dumps(
        {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {
                "conversation_id": conversation_id,
                "agent_output_audio_format": "pcm_16000",
                "user_input_audio_format": "pcm_16000",
            },
        }
    )


def test_a_conversation_opens_with_the_initiation_data_answers_pings_and_relays(caplog):
    caplog.set_level(logging.DEBUG)
    seen: dict = {"messages": []}

    def handler(ws):
        seen["path"] = ws.request.path
        seen["key"] = ws.request.headers.get("xi-api-key")
        seen["messages"].append(json.loads(ws.recv()))
        ws.send(json.dumps({"type": "ping", "ping_event": {"event_id": 7, "ping_ms": 3}}))
        ws.send(metadata())
        seen["messages"].append(json.loads(ws.recv()))  # the pong
        ws.send(json.dumps({"type": "ping", "ping_event": {"event_id": 8}}))
        chunk = base64.b64encode(b"\x01\x00" * 4).decode()
        ws.send(
            json.dumps({"type": "audio", "audio_event": {"audio_base_64": chunk, "event_id": 1}})
        )
        for raw in ws:
            seen["messages"].append(json.loads(raw))

    with convai_server(handler) as url:
        script = signed(url)
        engine = engine_of(script)
        socket = engine.convai_conversation("agent_up_1", initiation=INITIATION)
        assert (socket.conversation_id, socket.metadata["agent_output_audio_format"]) == (
            "conv_up_1",
            "pcm_16000",
        )
        event = socket.receive(5)  # the ping before it was answered, not returned
        assert event["type"] == "audio"
        socket.send_audio(b"\x02\x00" * 8)
        assert socket.receive(0.2) is None
        socket.close()
        engine.close()
        time.sleep(0.2)

    request = script.requests[0]
    assert request.url.path == "/v1/convai/conversation/get-signed-url"
    assert request.url.params["agent_id"] == "agent_up_1"
    assert seen["key"] is None  # the key went to the HTTP call only
    assert seen["path"].endswith(f"token={TOKEN}")
    initiation, pong, pong2, audio = seen["messages"]
    assert initiation == INITIATION
    assert pong == {"type": "pong", "event_id": 7} and pong2 == {"type": "pong", "event_id": 8}
    assert audio == {"user_audio_chunk": base64.b64encode(b"\x02\x00" * 8).decode()}
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert KEY not in text and TOKEN not in text
    lines = [r for r in caplog.records if r.name == "chorus.engines.elevenlabs"]
    ws_line = [r for r in lines if getattr(r, "capability", "") == "convai"]
    assert len(ws_line) == 1 and ws_line[0].request_id == "conv_up_1"
    assert ws_line[0].audio_bytes == 16


def test_a_refused_handshake_is_retried_with_a_fresh_signed_url_then_typed():
    def refuse(connection, request):
        return connection.respond(401, json.dumps(detail("invalid_api_key", "Invalid API key")))

    with convai_server(lambda ws: None, process_request=refuse) as url:
        script = signed(url)
        with pytest.raises(AuthenticationFailed, match="Invalid API key"):
            engine_of(script).convai_conversation("agent_up_1", initiation=INITIATION)
    assert len(script.requests) == 1  # a 401 is not retried

    calls = []

    def busy_once(connection, request):
        calls.append(request.path)
        if len(calls) == 1:
            return connection.respond(503, "busy")
        return None

    def handler(ws):
        ws.recv()
        ws.send(metadata())
        ws.recv()

    with convai_server(handler, process_request=busy_once) as url:
        script = signed(url)
        socket = engine_of(script).convai_conversation("agent_up_1", initiation=INITIATION)
        socket.close()
    assert len(script.requests) == 2 and len(calls) == 2  # a new signed URL for the retry


@pytest.mark.parametrize(
    ("code", "kind"),
    [(4401, AuthenticationFailed), (4402, QuotaExceeded), (4429, RateLimited),
     (4404, InvalidRequest), (1011, UpstreamUnavailable)],
)  # fmt: skip
def test_an_error_then_a_close_before_the_metadata_is_a_typed_error_with_its_message(code, kind):
    def handler(ws):
        ws.recv()
        ws.send(json.dumps({"type": "error", "error_event": {
            "message": "Agent agent_up_1 says no.", "fatal": True}}))  # fmt: skip
        ws.close(code, "closing")

    with convai_server(handler) as url, pytest.raises(kind, match="Agent agent_up_1 says no."):
        engine_of(signed(url)).convai_conversation("agent_up_1", initiation=INITIATION)


def test_no_metadata_in_time_is_upstream_unavailable():
    def handler(ws):
        ws.recv()
        time.sleep(1.5)

    with convai_server(handler) as url:
        engine = engine_of(signed(url))
        from apps.engines.elevenlabs import convai

        with pytest.raises(UpstreamUnavailable, match="did not start the conversation in time"):
            convai.connect(
                signed_url=lambda: engine.convai_signed_url("agent_up_1"),
                workspace="acme",
                policy=engine._policy,
                sleep=lambda _: None,
                initiation=INITIATION,
                egress=LOOPBACK,
                metadata_timeout=0.5,
            )


def test_a_signed_url_to_a_host_the_engine_may_not_reach_is_refused():
    script = signed(f"wss://169.254.169.254/v1/convai/conversation?token={TOKEN}")
    with pytest.raises(EgressRefused, match="169.254.169.254 is not on") as refused:
        engine_of(script).convai_conversation("agent_up_1", initiation=INITIATION)
    assert TOKEN not in str(refused.value)


def test_a_cut_socket_is_convai_ended_and_a_normal_close_says_so():
    def cut(ws):
        ws.recv()
        ws.send(metadata())
        ws.socket.close()  # no close frame: the connection is lost

    with convai_server(cut) as url:
        socket = engine_of(signed(url)).convai_conversation("agent_up_1", initiation=INITIATION)
        with pytest.raises(ConvaiEnded) as ended:
            socket.receive(5)
        socket.close()
    assert not ended.value.normal and "lost" in ended.value.message

    def done(ws):
        ws.recv()
        ws.send(metadata())
        ws.close(1000, "The conversation reached its maximum length of 60 s.")

    with convai_server(done) as url:
        socket = engine_of(signed(url)).convai_conversation("agent_up_1", initiation=INITIATION)
        with pytest.raises(ConvaiEnded) as ended:
            socket.receive(5)
        socket.close()
    assert ended.value.normal and "maximum length" in ended.value.message


def test_a_socket_that_cannot_open_for_another_reason_keeps_the_signed_url_out_of_logs(
    monkeypatch, caplog
):
    """The websockets library's errors may quote the URL it was given (the single-use token
    in its query): such an error becomes a typed one that names only its kind."""
    from apps.engines.elevenlabs import convai

    def broken(url, **options):
        raise ValueError(f"cannot connect to {url}")

    monkeypatch.setattr(convai, "ws_connect", broken)
    caplog.set_level(logging.DEBUG)
    with convai_server(lambda ws: None) as url, pytest.raises(UpstreamUnavailable) as failed:
        engine_of(signed(url)).convai_conversation("agent_up_1", initiation=INITIATION)
    assert TOKEN not in str(failed.value) and failed.value.__cause__ is None
    assert "ValueError" in str(failed.value)
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
