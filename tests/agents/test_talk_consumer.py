"""Talking to an agent over the studio's socket (``/ws/agents/<agent_id>/talk/``) through the
real ASGI application: a member streams a spoken question (the local engine's TTS, 16 kHz) in
100 ms frames and gets its transcript, the agent's answer as text and as binary PCM frames, and
End saves the conversation; a viewer is told why they cannot talk, an outsider and someone
signed out are refused before the socket opens; leaving saves too; garbage frames get an error
and the conversation goes on. The LLM is a tiny OpenAI-compatible SSE server (the network
edge), so the real client streams its answer."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from apps.agents import talk as talk_module
from apps.agents.models import Conversation, ConversationStatus
from apps.agents.pace import TOO_FAST
from studio_site.asgi import application
from tests.agents.test_session import make_agent, office, question_pcm, silence  # noqa: F401
from tests.jobs.test_consumers import _headers

pytestmark = pytest.mark.django_db(transaction=True)
FRAME = 3200  # 100 ms of 16 kHz 16-bit mono
OPEN_TIMEOUT = 90  # the local engine may load its models and speak the first message
ANSWER = "The office opens at 9 am."


class OfficeLLM(BaseHTTPRequestHandler):
    """``POST …/chat/completions``: the answer streamed as server-sent events, then usage."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        time.sleep(self.server.delay)  # a slow model: the answer is still to come
        events = [{"choices": [{"index": 0, "delta": {"content": word}}]}
                  for word in ANSWER.replace(" ", "  ").split("  ")]  # fmt: skip
        for event in events[:-1]:
            event["choices"][0]["delta"]["content"] += " "
        events.append({"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 8}})
        payload = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
        payload += b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def start_llm_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), OfficeLLM)
    httpd.daemon_threads = True
    httpd.requests = []
    httpd.delay = 0.0
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture
def llm_url(settings):
    httpd = start_llm_server()
    settings.CHORUS_AGENT_LLM_URL = f"http://127.0.0.1:{httpd.server_port}/v1"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def agent(workspace, member, voices, office):  # noqa: F811
    return make_agent(workspace, member, voices, office)


def path_of(agent) -> str:
    return f"/ws/agents/{agent.agent_id}/talk/"


class Talk:
    """A socket to the agent, with what came back sorted: JSON events and PCM bytes."""

    def __init__(self, agent, headers, query: str = ""):
        self.socket = WebsocketCommunicator(application, path_of(agent) + query, headers=headers)
        self.events: list[dict] = []
        self.audio = bytearray()
        self.audio_after_answer = 0  # bytes of PCM after the user's transcript
        self.closed: int | None = None

    async def receive(self, timeout: float) -> bool:
        message = await self.socket.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            self.closed = message.get("code")
            return False
        if message.get("bytes") is not None:
            self.audio += message["bytes"]
            if self.of_type("user_transcript"):
                self.audio_after_answer += len(message["bytes"])
        else:
            self.events.append(json.loads(message["text"]))
        return True

    async def drain(self):
        while not await self.socket.receive_nothing(timeout=0.01):
            if not await self.receive(1):
                return

    async def until(self, test, timeout: float = OPEN_TIMEOUT):
        import asyncio

        deadline = asyncio.get_running_loop().time() + timeout
        while not test(self):
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, [e["type"] for e in self.events]
            if not await self.receive(left):
                break

    def of_type(self, kind) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


def test_a_member_talks_hears_the_answer_and_end_saves_the_conversation(
    agent,
    member,
    question_pcm,  # noqa: F811
    llm_url,
):
    headers = _headers(member)

    async def scenario():
        talk = Talk(agent, headers)
        assert (await talk.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await talk.until(lambda t: t.of_type("agent_response") and len(t.audio) > 16000)
        assert talk.events[0]["type"] == "conversation_initiation_metadata"
        greeting = len(talk.audio)
        # Garbage: an odd-sized frame and a text frame that is no JSON; the talk goes on.
        await talk.socket.send_to(bytes_data=b"\x01\x02\x03")
        await talk.socket.send_to(text_data="hello?")
        await talk.until(lambda t: len(t.of_type("error")) >= 2, timeout=10)
        pcm = silence(1.0) + question_pcm + silence(1.5)
        for offset in range(0, len(pcm), FRAME):
            await talk.socket.send_to(bytes_data=pcm[offset : offset + FRAME])
            await talk.drain()
        await talk.until(
            lambda t: len(t.of_type("agent_response")) >= 2 and t.audio_after_answer > 32000
        )
        await talk.socket.send_to(text_data=json.dumps({"type": "end"}))
        await talk.until(lambda t: t.of_type("saved") or t.closed is not None)
        await talk.until(lambda t: t.closed is not None, timeout=30)
        return talk, greeting

    talk, greeting = async_to_sync(scenario)()
    assert greeting > 16000  # the first message was spoken
    errors = [e["error_event"]["message"] for e in talk.of_type("error")]
    assert any("whole number of samples" in m for m in errors), errors
    assert any("JSON" in m for m in errors), errors
    said = " ".join(e["user_transcription_event"]["user_transcript"]
                    for e in talk.of_type("user_transcript")).lower()  # fmt: skip
    assert "office" in said and "open" in said
    answer = talk.of_type("agent_response")[-1]["agent_response_event"]["agent_response"]
    assert answer == ANSWER
    assert "opens at 9 am" in llm_url.requests[0]["messages"][0]["content"]  # the knowledge
    assert talk.audio_after_answer > 32000 and len(talk.audio) % 2 == 0
    assert talk.closed == 1000
    saved = talk.of_type("saved")[0]
    conversation = Conversation.objects.get(conversation_id=saved["conversation_id"])
    assert saved["url"] == f"/agents/conversations/{conversation.conversation_id}/"
    assert conversation.status == ConversationStatus.DONE
    assert conversation.user == member and conversation.agent == agent
    assert conversation.end_reason == "the user ended it"
    turns = list(conversation.turns.order_by("position"))
    assert [t.role for t in turns] == ["agent", "user", "agent"]
    assert turns[2].text == ANSWER
    assert conversation.user_audio and conversation.agent_audio
    assert conversation.llm_tokens == 48


def test_leaving_the_page_ends_and_saves_the_conversation(agent, member, llm_url):
    headers = _headers(member)

    async def scenario():
        talk = Talk(agent, headers)
        assert (await talk.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await talk.until(lambda t: t.of_type("conversation_initiation_metadata"))
        await talk.socket.send_to(bytes_data=silence(0.5))
        await talk.socket.send_to(text_data=json.dumps({"type": "mute", "on": True}))
        await talk.socket.send_to(bytes_data=b"\x10\x20" * 1600)
        await talk.drain()
        await talk.socket.disconnect(timeout=60)

    async_to_sync(scenario)()
    conversation = Conversation.objects.get(agent=agent)
    assert conversation.status == ConversationStatus.DONE
    assert conversation.end_reason == "the browser left the conversation"
    conversation.user_audio.open("rb")
    try:
        recorded = conversation.user_audio.read()[44:]
    finally:
        conversation.user_audio.close()
    assert recorded == silence(0.5) + silence(0.1)  # muted: silence in place of the frame


def test_a_viewer_is_told_why_and_cannot_talk(agent, viewer):
    headers = _headers(viewer)

    async def scenario():
        talk = Talk(agent, headers)
        assert (await talk.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await talk.until(lambda t: t.closed is not None, timeout=10)
        return talk

    talk = async_to_sync(scenario)()
    assert talk.closed == 4403
    [error] = talk.of_type("error")
    assert error["error_event"]["message"].startswith("Viewers cannot talk to agents")
    assert not talk.audio and not Conversation.objects.exists()


@pytest.mark.parametrize("who", ["outsider", "nobody"])
def test_an_outsider_or_someone_signed_out_is_refused_before_the_socket_opens(agent, outsider, who):
    headers = _headers(outsider if who == "outsider" else None)

    async def scenario(path):
        socket = WebsocketCommunicator(application, path, headers=headers)
        result = await socket.connect(timeout=10)
        await socket.disconnect(timeout=60)
        return result

    assert async_to_sync(scenario)(path_of(agent)) == (
        False,
        4403 if who == "outsider" else 4401,
    )
    # An id that does not exist answers the same as another workspace's agent.
    if who == "outsider":
        assert async_to_sync(scenario)("/ws/agents/agent_nothere/talk/") == (False, 4403)
    assert not Conversation.objects.exists()


def test_a_socket_dropped_mid_turn_resumes_the_same_conversation_without_losing_the_answer(
    agent,
    member,
    question_pcm,  # noqa: F811
    llm_url,
):
    """The socket drops (1006) right after the user's question was heard, while the agent
    is answering; a socket opened with ``?resume=`` gets ``resumed``, then the answer (text and
    audio) produced meanwhile, and End saves one conversation with every turn."""
    headers = _headers(member)
    llm_url.delay = 2.0  # the drop comes before the answer

    async def scenario():
        first = Talk(agent, headers)
        assert (await first.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await first.until(lambda t: t.of_type("agent_response") and len(t.audio) > 16000)
        started = first.of_type("conversation_initiation_metadata")[0]
        conversation_id = started["conversation_initiation_metadata_event"]["conversation_id"]
        pcm = silence(1.0) + question_pcm + silence(1.5)
        for offset in range(0, len(pcm), FRAME):
            await first.socket.send_to(bytes_data=pcm[offset : offset + FRAME])
            await first.drain()
        await first.until(lambda t: t.of_type("user_transcript"))
        await first.socket.disconnect(code=1006, timeout=60)  # the network went, no goodbye

        again = Talk(agent, headers, f"?resume={conversation_id}")
        assert (await again.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await again.until(lambda t: t.of_type("agent_response") and len(t.audio) > 16000)
        await again.socket.send_to(text_data=json.dumps({"type": "end"}))
        await again.until(lambda t: t.closed is not None, timeout=60)
        return first, again, conversation_id

    first, again, conversation_id = async_to_sync(scenario)()
    assert again.events[0] == {"type": "resumed", "conversation_id": conversation_id}
    assert len(first.of_type("agent_response")) == 1  # the greeting only: then it dropped
    [answer] = again.of_type("agent_response")  # the answer, once, on the new socket
    assert answer["agent_response_event"]["agent_response"] == ANSWER
    assert again.closed == 1000
    assert again.of_type("saved")[0]["conversation_id"] == conversation_id
    conversation = Conversation.objects.get()  # one conversation, not two
    assert conversation.conversation_id == conversation_id
    assert conversation.status == ConversationStatus.DONE
    assert conversation.end_reason == "the user ended it"
    turns = list(conversation.turns.order_by("position"))
    assert [t.role for t in turns] == ["agent", "user", "agent"]
    assert turns[2].text == ANSWER


def test_a_dropped_conversation_resumes_only_for_its_member_and_is_saved_when_it_times_out(
    agent, member, owner, monkeypatch, llm_url
):
    monkeypatch.setattr(talk_module, "RESUME_SECONDS", 1.0)
    mine, owners = _headers(member), _headers(owner)

    async def scenario():
        first = Talk(agent, mine)
        assert (await first.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await first.until(lambda t: t.of_type("conversation_initiation_metadata"))
        conversation_id = first.events[0]["conversation_initiation_metadata_event"][
            "conversation_id"
        ]
        await first.socket.send_to(bytes_data=silence(0.3))
        await first.drain()
        await first.socket.disconnect(code=1006, timeout=60)
        # Another member of the workspace (here the owner) cannot take it over.
        stranger = Talk(agent, owners, f"?resume={conversation_id}")
        assert (await stranger.socket.connect(timeout=30))[0]
        await stranger.until(lambda t: t.closed is not None, timeout=30)
        await stranger.socket.disconnect(timeout=60)
        # Nor can anyone once it timed out.
        import asyncio

        await asyncio.sleep(1.5)
        late = Talk(agent, mine, f"?resume={conversation_id}")
        assert (await late.socket.connect(timeout=30))[0]
        await late.until(lambda t: t.closed is not None, timeout=30)
        await late.socket.disconnect(timeout=60)
        return stranger, late, conversation_id

    stranger, late, conversation_id = async_to_sync(scenario)()
    for refused in (stranger, late):
        assert refused.closed == 4409
        [error] = refused.of_type("error")
        assert error["error_event"]["message"] == talk_module.CANNOT_RESUME
        assert not refused.audio
    conversation = Conversation.objects.get(conversation_id=conversation_id)
    assert conversation.status == ConversationStatus.DONE
    assert conversation.end_reason == talk_module.DROPPED_REASON
    assert Conversation.objects.count() == 1


def test_one_members_slow_end_does_not_hold_up_anyone_elses_socket(
    agent,
    member,
    owner,
    question_pcm,  # noqa: F811
    llm_url,
    monkeypatch,
):
    """End takes a while (saving is made 6 s slow here: big files, a busy database);
    meanwhile another member's socket opens and starts at once (the end runs on the agents'
    own threads, not on the one thread every socket's sign-in and start would otherwise queue
    behind)."""
    import asyncio

    from apps.agents.session import AgentSession

    save = AgentSession._save

    def slow_save(self, **kwargs):
        time.sleep(6.0)
        return save(self, **kwargs)

    monkeypatch.setattr(AgentSession, "_save", slow_save)
    mine, theirs = _headers(member), _headers(owner)

    async def scenario():
        slow = Talk(agent, mine)
        assert (await slow.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await slow.until(lambda t: t.of_type("agent_response") and len(t.audio) > 16000)
        pcm = silence(1.0) + question_pcm + silence(1.5)
        for offset in range(0, len(pcm), FRAME):
            await slow.socket.send_to(bytes_data=pcm[offset : offset + FRAME])
            await slow.drain()
        await slow.until(lambda t: t.of_type("user_transcript"))
        await slow.socket.send_to(text_data=json.dumps({"type": "end"}))
        await asyncio.sleep(0.3)  # the end is under way, joining the answer
        loop = asyncio.get_running_loop()
        began = loop.time()
        other = Talk(agent, theirs)
        assert (await other.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await other.until(lambda t: t.of_type("conversation_initiation_metadata"))
        took = loop.time() - began
        saved_yet = bool(slow.of_type("saved"))
        await slow.until(lambda t: t.closed is not None, timeout=60)
        await other.socket.send_to(text_data=json.dumps({"type": "end"}))
        await other.until(lambda t: t.closed is not None, timeout=60)
        return took, saved_yet, slow

    took, saved_yet, slow = async_to_sync(scenario)()
    assert not saved_yet  # the first End was still running while the other socket started
    assert took < 3.0, took
    assert slow.closed == 1000 and slow.of_type("saved")


def test_a_resume_before_the_old_socket_is_seen_gone_takes_the_conversation_over(
    agent, member, owner, llm_url
):
    """A half-open connection: the browser reconnects while the server still holds the old
    socket. The resume takes the conversation over (the old socket is told and closed, the
    conversation goes on); another member cannot."""
    mine, owners = _headers(member), _headers(owner)

    async def scenario():
        old = Talk(agent, mine)
        assert (await old.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await old.until(lambda t: t.of_type("agent_response") and len(t.audio) > 16000)
        conversation_id = old.events[0]["conversation_initiation_metadata_event"]["conversation_id"]
        stranger = Talk(agent, owners, f"?resume={conversation_id}")
        assert (await stranger.socket.connect(timeout=30))[0]
        await stranger.until(lambda t: t.closed is not None, timeout=30)
        await stranger.socket.disconnect(timeout=60)
        new = Talk(agent, mine, f"?resume={conversation_id}")
        assert (await new.socket.connect(timeout=30))[0]
        await new.until(lambda t: t.of_type("resumed"), timeout=30)
        await old.until(lambda t: t.closed is not None, timeout=30)
        await new.socket.send_to(bytes_data=silence(0.5))
        await new.socket.send_to(text_data=json.dumps({"type": "end"}))
        await new.until(lambda t: t.closed is not None, timeout=60)
        await old.socket.disconnect(timeout=60)
        return old, stranger, new, conversation_id

    old, stranger, new, conversation_id = async_to_sync(scenario)()
    assert stranger.closed == 4409
    assert old.closed == 4409
    assert old.of_type("error")[-1]["error_event"]["message"] == talk_module.CONTINUED_ELSEWHERE
    assert new.closed == 1000 and new.of_type("saved")[0]["conversation_id"] == conversation_id
    conversation = Conversation.objects.get()
    assert conversation.end_reason == "the user ended it"


def test_audio_faster_than_real_time_is_dropped_with_a_message(agent, member, llm_url):
    """800 s of audio sent in a burst: only about the first 5 s (the slack) is taken."""
    headers = _headers(member)

    async def scenario():
        talk = Talk(agent, headers)
        assert (await talk.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await talk.until(lambda t: t.of_type("conversation_initiation_metadata"))
        for _ in range(8000):  # 100 ms frames: 800 s
            await talk.socket.send_to(bytes_data=bytes(FRAME))
        await talk.until(lambda t: t.of_type("error"), timeout=30)
        await talk.socket.send_to(text_data=json.dumps({"type": "end"}))
        await talk.until(lambda t: t.closed is not None, timeout=60)
        return talk

    talk = async_to_sync(scenario)()
    errors = [e["error_event"]["message"] for e in talk.of_type("error")]
    assert errors.count(TOO_FAST) == 1, errors  # said once, not 8,000 times
    conversation = Conversation.objects.get()
    conversation.user_audio.open("rb")
    try:
        kept = len(conversation.user_audio.read()) - 44
    finally:
        conversation.user_audio.close()
    assert 5 * 32000 <= kept <= 30 * 32000, kept  # the slack plus the seconds it took
    assert conversation.stt_seconds <= 30


def test_end_does_not_wait_for_an_llm_that_is_still_thinking(
    agent,
    member,
    question_pcm,  # noqa: F811
    llm_url,
):
    """The question is asked, the LLM takes 20 s to say anything; End saves at once with
    the question (the answer never came), not after the LLM."""
    import asyncio

    llm_url.delay = 20.0
    headers = _headers(member)

    async def scenario():
        talk = Talk(agent, headers)
        assert (await talk.socket.connect(timeout=OPEN_TIMEOUT))[0]
        await talk.until(lambda t: t.of_type("agent_response") and len(t.audio) > 16000)
        pcm = silence(1.0) + question_pcm + silence(1.5)
        for offset in range(0, len(pcm), FRAME):
            await talk.socket.send_to(bytes_data=pcm[offset : offset + FRAME])
            await talk.drain()
        await talk.until(lambda t: t.of_type("user_transcript"))
        await asyncio.sleep(0.5)  # the LLM was asked
        loop = asyncio.get_running_loop()
        began = loop.time()
        await talk.socket.send_to(text_data=json.dumps({"type": "end"}))
        await talk.until(lambda t: t.closed is not None, timeout=60)
        return talk, loop.time() - began

    talk, took = async_to_sync(scenario)()
    assert llm_url.requests  # it was thinking
    assert talk.closed == 1000 and talk.of_type("saved")
    assert took < 5.0, took
    conversation = Conversation.objects.get()
    roles = list(conversation.turns.order_by("position").values_list("role", flat=True))
    assert roles == ["agent", "user"]
