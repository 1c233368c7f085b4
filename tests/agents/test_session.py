"""An agent conversation on the local engine, driven without sockets (``AgentSession``): a
spoken question (the local engine's own TTS, 16 kHz) fed in 50 ms chunks reaches the LLM with
the knowledge that answers it, the answer is spoken sentence by sentence, both sides' audio
and the turns are saved and the conversation is one ledger row; barge-in, interruptions off,
the maximum length, a spent budget and garbage input. The LLM is a stand-in that streams a
fixed answer (the real client is ``apps.agents.llm``)."""

import base64
import io
import time
import wave
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pytest

from apps.agents import knowledge, services
from apps.agents.config import AgentConfig
from apps.agents.models import Conversation, ConversationStatus
from apps.agents.session import AgentSession
from apps.billing.models import Budget, UsageEvent, UsageStatus
from apps.engines.base import TTSRequest
from apps.engines.local.engine import local_engine
from apps.generation.caller import Caller
from apps.generation.conversation import SLICE, ConversationMeter

pytestmark = pytest.mark.django_db(transaction=True)
CHUNK = 1600  # 50 ms of 16 kHz 16-bit mono
QUESTION = "When does the office open?"
ANSWER = "The Chorus office opens at 9 am. Come by any weekday morning. We are glad to help."


@dataclass
class Chunk:
    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class StandInLLM:
    """``chat_stream``'s interface: text deltas word by word, then the token counts."""

    def __init__(self, *answers: str, delay: float = 0.0):
        self.answers = answers or (ANSWER,)
        self.delay = delay
        self.calls: list[list[dict]] = []

    def __call__(self, messages, *, model, temperature, max_tokens, stop=None):
        self.calls.append(messages)
        answer = self.answers[min(len(self.calls) - 1, len(self.answers) - 1)]
        words = answer.split(" ")
        for index, word in enumerate(words):
            if self.delay:
                time.sleep(self.delay)
            yield Chunk(word + (" " if index < len(words) - 1 else ""))
        yield Chunk(prompt_tokens=150, completion_tokens=len(words))


@pytest.fixture(scope="module")
def question_pcm():
    """The question spoken by the local engine, as 16 kHz s16le PCM."""
    from apps.engines.local import tts

    voice = tts.list_voices()[0].voice_id
    result = local_engine().tts(
        TTSRequest(text=QUESTION, voice_id=voice, output_format="pcm_16000")
    )
    return result.audio


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


@pytest.fixture
def office(workspace, member, media):
    return knowledge.document_add_text(
        workspace=workspace,
        user=member,
        name="Office",
        text="The Chorus office opens at 9 am and closes at 5 pm. Parking is behind the building.",
    )


def make_agent(workspace, member, voices, office, **changes):
    config = AgentConfig(
        prompt="You are the front desk of Chorus.",
        first_message="Hello, how can I help?",
        voice_id=voices[0],
        knowledge=[office.document_id],
        silence_ms=500,
        **changes,
    )
    return services.agent_create(workspace=workspace, user=member, name="Desk", config=config)


@pytest.fixture
def agent(workspace, member, voices, office):
    return make_agent(workspace, member, voices, office)


_OPEN: list[AgentSession] = []


@pytest.fixture(autouse=True)
def sessions_ended():
    """A failed test still ends its sessions (their threads use the test database)."""
    yield
    while _OPEN:
        _OPEN.pop().end("the test ended")


def session_of(agent, member, llm, **kwargs):
    caller = Caller(workspace=agent.workspace, user=member)
    session = AgentSession(caller=caller, agent=agent, llm=llm, **kwargs)
    _OPEN.append(session)
    return session


def feed(session, pcm: bytes, *, size: int = CHUNK) -> list[dict]:
    events = []
    for offset in range(0, len(pcm), size):
        events += session.feed(pcm[offset : offset + size])
    return events


def until(session, events: list, test, timeout: float = 90) -> list[dict]:
    """Collect events until ``test(events)`` holds."""
    deadline = time.monotonic() + timeout
    while not test(events):
        assert time.monotonic() < deadline, sorted({e["type"] for e in events})
        events += session.wait(0.1)
    return events


def settled(session, events: list, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while not session.idle():
        assert time.monotonic() < deadline
        events += session.wait(0.1)
    return events + session.poll()


def audio_of(events) -> bytes:
    return b"".join(base64.b64decode(e["audio_event"]["audio_base_64"]) for e in events
                    if e["type"] == "audio")  # fmt: skip


def of_type(events, kind) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def wav_of(field) -> tuple[int, int, bytes]:
    field.open("rb")
    try:
        with wave.open(io.BytesIO(field.read())) as w:
            return w.getframerate(), w.getsampwidth(), w.readframes(w.getnframes())
    finally:
        field.close()


def test_a_spoken_question_is_answered_from_knowledge_and_everything_is_saved(
    agent, member, question_pcm
):
    llm = StandInLLM()
    session = session_of(agent, member, llm)
    events = session.start()
    assert events[0]["type"] == "conversation_initiation_metadata"
    assert of_type(events, "agent_response")[0]["agent_response_event"] == {
        "agent_response": "Hello, how can I help?"
    }
    greeting = audio_of(events)
    assert rms(greeting) > 300
    ids = [e["audio_event"]["event_id"] for e in of_type(events, "audio")]
    assert ids == list(range(1, len(ids) + 1))

    events = feed(session, silence(2.5) + question_pcm + silence(1.5))
    events = until(session, events, lambda ev: of_type(ev, "agent_response"))
    events = settled(session, events)
    said = " ".join(e["user_transcription_event"]["user_transcript"]
                    for e in of_type(events, "user_transcript")).lower()  # fmt: skip
    assert "office" in said and "open" in said
    assert of_type(events, "tentative_user_transcript")  # partials while speaking
    # The retrieved passage reached the LLM's system prompt; the question is the last message.
    messages = llm.calls[0]
    assert "opens at 9 am" in messages[0]["content"]
    assert messages[-1]["role"] == "user" and "office" in messages[-1]["content"].lower()
    assert [m["role"] for m in messages[1:-1]] == ["assistant"]  # the greeting
    answer = audio_of(events)
    assert rms(answer) > 300 and len(answer) > 2 * 16000  # seconds of speech
    assert of_type(events, "agent_response")[-1]["agent_response_event"]["agent_response"] == (
        ANSWER
    )
    conversation = session.end("the user hung up")
    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.DONE
    assert conversation.end_reason == "the user hung up"
    assert conversation.version == agent.version and conversation.user == member
    turns = list(conversation.turns.order_by("position"))
    assert [t.role for t in turns] == ["agent", "user", "agent"]
    assert "office" in turns[1].text.lower()
    assert turns[2].text == ANSWER and not turns[2].interrupted
    fed = (len(question_pcm) + len(silence(4.0))) / 32000
    assert 2.0 < turns[1].started_seconds < turns[1].ended_seconds <= fed
    assert turns[1].ended_seconds <= turns[2].started_seconds < turns[2].ended_seconds
    latency = turns[2].latency_ms
    assert set(latency) >= {"total", "stt", "llm", "tts", "retrieval", "wait"}
    assert 0 < latency["stt"] <= latency["total"] < 15_000
    rate, width, user = wav_of(conversation.user_audio)
    assert (rate, width) == (16000, 2)
    assert user == silence(2.5) + question_pcm + silence(1.5)
    rate, width, agent_track = wav_of(conversation.agent_audio)
    assert (rate, width) == (16000, 2) and len(agent_track) >= len(user)
    assert agent_track[: len(greeting)] == greeting  # from the start
    assert rms(agent_track) > 100
    assert conversation.duration_seconds == pytest.approx(len(agent_track) / 32000, abs=0.01)
    # One ledger row: free on the local engine, its shadow cost the parts summed.
    assert conversation.stt_seconds == pytest.approx(fed, abs=0.01)
    # Each sentence is one request: the spaces between sentences are not spoken.
    spoken = len("Hello, how can I help?") + len(ANSWER) - ANSWER.count(". ")
    assert conversation.tts_characters == spoken
    assert conversation.llm_tokens == 150 + len(ANSWER.split(" "))
    row = UsageEvent.objects.get(pk=conversation.usage_event_id)
    assert (row.capability, row.engine, row.status) == ("agent", "local", UsageStatus.SETTLED)
    assert row.credits == 0 and row.shadow_credits == row.units > 0
    assert UsageEvent.objects.filter(workspace=agent.workspace).count() == 1
    assert session.feed(silence(0.1))[-1]["type"] == "error"  # ended


def barge_in(session, question_pcm, llm) -> list[dict]:
    session.start()
    events = feed(session, silence(2.5) + question_pcm + silence(1.0))
    # The answer starts to play; the user listens a second and a half, then speaks over it.
    until(session, events, lambda ev: len(llm.calls) == 1 and of_type(ev, "audio"))
    events += feed(session, silence(1.5) + question_pcm + silence(1.5))
    return settled(session, events)


def test_barge_in_stops_the_agent_and_marks_the_turn_interrupted(agent, member, question_pcm):
    long = " ".join([ANSWER] * 4)
    llm = StandInLLM(long, "Nine am.", delay=0.02)
    session = session_of(agent, member, llm)
    events = barge_in(session, question_pcm, llm)
    cut = of_type(events, "interruption")
    assert len(cut) == 1
    stopped = cut[0]["interruption_event"]["event_id"]
    position = events.index(cut[0])
    before = [e["audio_event"]["event_id"] for e in of_type(events[:position], "audio")]
    after = [e["audio_event"]["event_id"] for e in of_type(events[position:], "audio")]
    assert before and max(before) <= stopped
    assert all(i > stopped for i in after)  # only the next answer's audio
    correction = of_type(events, "agent_response_correction")[0]
    corrected = correction["agent_response_correction_event"]["corrected_agent_response"]
    assert long.startswith(corrected) and len(corrected) < len(long)
    assert len(llm.calls) == 2  # the user's second question was heard and answered
    conversation = session.end()
    turns = list(conversation.turns.order_by("position"))
    assert [t.role for t in turns] == ["agent", "user", "agent", "user", "agent"]
    assert turns[2].interrupted and turns[2].text == corrected
    assert turns[2].ended_seconds <= turns[3].started_seconds + 0.5
    assert turns[4].text == "Nine am." and not turns[4].interrupted
    # The agent track stops where the user cut in.
    _, _, track = wav_of(conversation.agent_audio)
    cut_at = int(turns[2].ended_seconds * 16000) * 2
    assert rms(track[cut_at + 3200 : int(turns[4].started_seconds * 16000) * 2 - 3200]) < 50
    for turn in (turns[0], turns[2], turns[4]):  # each agent turn's audio where it says
        start, end = (int(turn.started_seconds * 16000) * 2, int(turn.ended_seconds * 16000) * 2)
        assert rms(track[start:end]) > 500
        assert rms(track[start - 6400 : start]) < 50 or turn is turns[0]


def test_with_interruptions_off_speech_over_the_agent_is_ignored(
    workspace, member, voices, office, question_pcm
):
    agent = make_agent(workspace, member, voices, office, interruptible=False)
    long = " ".join([ANSWER] * 4)
    llm = StandInLLM(long, delay=0.02)
    session = session_of(agent, member, llm)
    events = barge_in(session, question_pcm, llm)
    assert not of_type(events, "interruption")
    assert len(of_type(events, "user_transcript")) == 1
    assert len(llm.calls) == 1
    conversation = session.end()
    turns = list(conversation.turns.order_by("position"))
    assert [t.role for t in turns] == ["agent", "user", "agent"]
    assert turns[2].text == long and not turns[2].interrupted


def test_the_maximum_length_ends_the_conversation(agent, member, question_pcm):
    session = session_of(agent, member, StandInLLM())
    session.start(overrides={"conversation": {"max_duration_seconds": 2}})
    events = feed(session, silence(3.0))
    events = until(session, events, lambda ev: session.ended)
    events += session.poll()
    fatal = [e for e in of_type(events, "error") if e["error_event"]["fatal"]]
    assert "maximum length of 2 s" in fatal[0]["error_event"]["message"]
    conversation = Conversation.objects.get(pk=session.conversation.pk)
    assert conversation.status == ConversationStatus.DONE
    assert "maximum length" in conversation.end_reason
    assert conversation.user_audio and conversation.duration_seconds >= 2.0
    assert session.end() == session.conversation  # once


def test_a_spent_budget_ends_the_conversation_with_a_message_and_saves_it(
    agent, member, workspace, question_pcm
):
    """Metered as on ElevenLabs (the local engine is free, so never blocked): the budget
    covers the first slice and a few credits, and the greeting spends them."""
    caller = Caller(workspace=workspace, user=member)
    meter = ConversationMeter(caller=caller, engine_name="elevenlabs")
    Budget.objects.create(
        workspace=workspace, user=member, limit_credits=meter.units(SLICE) + Decimal(5)
    )
    llm = StandInLLM()
    session = session_of(agent, member, llm, meter=meter)
    session.start()
    events = feed(session, silence(2.5) + question_pcm + silence(1.5))
    events = until(session, events, lambda ev: session.ended)
    events += session.poll()
    fatal = [e for e in of_type(events, "error") if e["error_event"]["fatal"]]
    assert fatal[0]["error_event"]["message"].startswith("Mia Member's budget of")
    assert "is spent" in fatal[0]["error_event"]["message"]
    assert llm.calls == []  # no answer once the budget was spent
    conversation = Conversation.objects.get(pk=session.conversation.pk)
    assert conversation.status == ConversationStatus.DONE
    assert "is spent" in conversation.end_reason
    roles = list(conversation.turns.order_by("position").values_list("role", flat=True))
    assert roles == ["agent", "user"]  # what was said is kept
    assert conversation.user_audio and conversation.agent_audio
    row = UsageEvent.objects.get(pk=conversation.usage_event_id)
    assert row.status == UsageStatus.SETTLED and row.credits > 0


def test_garbage_input_is_an_error_event_and_the_conversation_goes_on(agent, member):
    session = session_of(agent, member, StandInLLM())
    session.start()
    for garbage in (b"\x01\x02\x03", bytes(200_000), "text", None):
        events = session.feed(garbage)
        assert events[-1]["type"] == "error", garbage
        assert not events[-1]["error_event"]["fatal"]
    assert all(e["type"] != "error" for e in session.feed(silence(0.1)))
    conversation = session.end()
    assert conversation.status == ConversationStatus.DONE


@pytest.mark.slow
def test_with_the_real_offline_llm_the_agent_answers_aloud(agent, member, question_pcm):
    """``apps.agents.llm`` (no endpoint configured: the offline SmolLM2 model)."""
    session = session_of(agent, member, None)
    session.start()
    events = feed(session, silence(2.5) + question_pcm + silence(1.5))
    events = until(
        session,
        events,
        lambda ev: of_type(ev, "agent_response") or of_type(ev, "error") or session.ended,
        timeout=300,
    )
    assert not of_type(events, "error"), of_type(events, "error")
    events = settled(session, events, timeout=300)
    answer = of_type(events, "agent_response")[-1]["agent_response_event"]["agent_response"]
    assert answer.strip()
    assert rms(audio_of(events)) > 300
    conversation = session.end()
    turns = list(conversation.turns.order_by("position"))
    assert [t.role for t in turns] == ["agent", "user", "agent"]
    assert turns[2].latency_ms["total"] > 0
    assert conversation.llm_tokens > 0
