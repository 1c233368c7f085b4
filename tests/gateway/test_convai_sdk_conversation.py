"""The official SDK's ``Conversation`` (``elevenlabs.conversational_ai.conversation``) holds a
spoken conversation with a Chorus agent over a real Daphne on the local engine: with
``requires_auth=True`` it fetches a signed URL with a personal key and opens it; a microphone
stand-in (the SDK's ``AudioInterface``) streams 16 kHz PCM in 250 ms chunks at the pace of a
real one — silence while the greeting plays, then a question spoken by the local engine's
TTS, then silence — and keeps what the agent says. The agent answers from its knowledge
through a tiny OpenAI-compatible SSE server (the network edge), so the answer is known: its
audio, transcribed by the local engine, says it; the transcript and latency callbacks fire;
``end_session`` then ``wait_for_session_end`` give the conversation's id, and the SDK reads
the saved conversation (both turns) and its recording back."""

import threading
import time

import pytest
from elevenlabs.client import ElevenLabs
from elevenlabs.conversational_ai.conversation import AudioInterface, Conversation

from apps.engines.base import STTRequest
from apps.engines.local.engine import local_engine
from apps.gateway import services
from tests.agents.test_session import make_agent, office, question_pcm  # noqa: F401
from tests.agents.test_talk_consumer import ANSWER, start_llm_server

pytestmark = pytest.mark.slow

RATE = 16000
CHUNK = 4000 * 2  # 250 ms of 16 kHz 16-bit mono, the chunk the SDK recommends
OPENS = 120  # the server loads its speech models and speaks the greeting first


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def llm_server():
    httpd = start_llm_server()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def live_env(live_env, llm_server, media):
    """Daphne answers with the stand-in LLM and keeps its files where this test looks."""
    live_env["CHORUS_AGENT_LLM_URL"] = f"http://127.0.0.1:{llm_server.server_port}/v1"
    live_env["MEDIA_ROOT"] = str(media)
    return live_env


@pytest.fixture
def voices(workspace):
    from apps.voices import services as voice_services
    from apps.voices.models import LibraryVoice

    voice_services.library_sync(workspace=workspace)
    return list(
        LibraryVoice.objects.filter(workspace=workspace, engine="local")
        .order_by("voice_id")
        .values_list("voice_id", flat=True)
    )


@pytest.fixture
def agent(workspace, member, voices, office):  # noqa: F811
    return make_agent(workspace, member, voices, office)


class Microphone(AudioInterface):
    """A person at a microphone, in a thread: silence until the greeting has played (the
    agent's audio heard plus a second), the question, then silence until ``stop``. What the
    agent says is kept in ``heard``."""

    def __init__(self, question: bytes):
        self.question = question
        self.heard = bytearray()
        self.greeted = threading.Event()  # set by the test on the first agent_response
        self.sent = 0  # bytes of user audio sent
        self.asked_at = None  # bytes sent when the question began
        self.interrupted = 0
        self.stopped = threading.Event()
        self.thread = None
        self.failure: BaseException | None = None

    def start(self, input_callback):
        self.thread = threading.Thread(target=self._speak, args=(input_callback,), daemon=True)
        self.thread.start()

    def _speak(self, send):
        try:
            pending = b""
            began = time.monotonic()
            while not self.stopped.is_set():
                if not pending and self.asked_at is None and self._greeting_played():
                    self.asked_at = self.sent
                    pending = self.question
                chunk, pending = pending[:CHUNK], pending[CHUNK:]
                chunk += bytes(CHUNK - len(chunk))
                send(chunk)
                self.sent += len(chunk)
                # At a microphone's pace: the next chunk when its time has come.
                time.sleep(max(0.0, began + self.sent / (2 * RATE) - time.monotonic()))
        except BaseException as exc:  # seen by the test, not lost in the thread
            self.failure = exc

    def _greeting_played(self) -> bool:
        return self.greeted.is_set() and self.sent >= len(self.heard) + 2 * RATE

    def stop(self):
        self.stopped.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=10)

    def output(self, audio: bytes):
        self.heard += audio

    def interrupt(self):
        self.interrupted += 1


def wait_for(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def transcribed(audio: bytes, **request) -> str:
    return local_engine().stt(STTRequest(audio=audio, **request)).text.lower()


def test_the_sdk_conversation_hears_the_agent_answer_from_its_knowledge(
    daphne_server, agent, workspace, member, llm_server,
    question_pcm,  # noqa: F811
):  # fmt: skip
    raw_key = services.api_key_create(workspace=workspace, user=member, name="SDK talk").raw
    sdk = ElevenLabs(base_url=daphne_server.url, api_key=raw_key)
    mic = Microphone(question_pcm)
    answers: list[tuple[str, int]] = []  # (text, bytes of agent audio heard by then)
    said: list[tuple[str, int]] = []
    latencies: list[int] = []
    endings = []

    def agent_response(text):
        answers.append((text, len(mic.heard)))
        mic.greeted.set()

    conversation = Conversation(
        sdk,
        agent.agent_id,
        requires_auth=True,
        audio_interface=mic,
        callback_agent_response=agent_response,
        callback_user_transcript=lambda text: said.append((text, len(mic.heard))),
        callback_latency_measurement=latencies.append,
        callback_disconnect=endings.append,
    )
    conversation.start_session()
    try:
        wait_for(lambda: any(text == ANSWER for text, _ in answers) or endings,
                 timeout=OPENS + 60, what="the agent's answer")  # fmt: skip
        assert not endings, endings  # the SDK did not end the session on its own
        # A ping after the first pong carries the round trip the SDK reports.
        wait_for(lambda: latencies or endings, timeout=15, what="a latency measurement")
    finally:
        conversation.end_session()
        conversation_id = conversation.wait_for_session_end()
    assert mic.failure is None, mic.failure
    assert [e.reason for e in endings] == ["user"]

    # The callbacks: the greeting, the question as heard, the answer from the knowledge.
    assert [text for text, _ in answers] == ["Hello, how can I help?", ANSWER]
    assert len(said) == 1 and "office" in said[0][0].lower(), said
    assert latencies and all(0 < ms < 5000 for ms in latencies), latencies
    assert mic.interrupted == 0  # the question came after the greeting had played
    # The LLM was asked the question with the knowledge that answers it.
    asked = llm_server.requests[-1]["messages"]
    assert "opens at 9 am" in asked[0]["content"] and "office" in asked[-1]["content"].lower()

    # The answer as the SDK played it: spoken, and it says the fact.
    answer_audio = bytes(mic.heard[said[0][1] : answers[1][1]])
    assert len(answer_audio) > RATE  # over half a second of speech
    heard = transcribed(answer_audio, filename="answer.pcm", file_format="pcm_s16le_16")
    assert "office" in heard and ("9" in heard or "nine" in heard), heard

    # The saved conversation, read back with the SDK.
    assert conversation_id and conversation_id.startswith("conv_")
    conversations = sdk.conversational_ai.conversations

    def saved():
        got = conversations.get(conversation_id)
        return got if got.status != "in-progress" else None

    wait_for(saved, timeout=60, what="the conversation to be saved")
    got = saved()
    assert (got.agent_id, got.status, got.has_audio) == (agent.agent_id, "done", True)
    assert got.user_id == str(member.pk)  # the key's member, through the signed URL
    assert [(t.role, t.message) for t in got.transcript][::2] == [
        ("agent", "Hello, how can I help?"),
        ("agent", ANSWER),
    ]
    assert got.transcript[1].role == "user" and "office" in got.transcript[1].message.lower()
    assert len(got.transcript) == 3
    recording = b"".join(conversations.audio.get(conversation_id))
    assert recording[:3] == b"ID3" or recording[0] == 0xFF  # MP3
    # Both sides, mixed as the call sounded: the greeting, the question, then the answer
    # (whose fact was checked above: the mix around it makes Whisper hear "9 am" less well).
    told = " ".join(transcribed(recording, filename="conversation.mp3").split())
    asked_at = told.find("when does the office open")
    assert -1 < told.find("how can i help") < asked_at < told.rfind("office open"), told
