"""What keeps an agent's answer quick on the local engine (``AgentSession``): a prompt whose
start stays the same from turn to turn (the offline LLM reuses its KV cache up to the first
token that differs), barge-in decided at the VAD onset, and an answer's first clause spoken
before the rest of its first sentence is written. Helpers and the stand-in LLM are
test_session's."""

import threading
import time

import pytest

from apps.agents import knowledge, services
from apps.agents.config import OFFLINE_MAX_TOKENS, AgentConfig
from apps.agents.models import TurnRole
from apps.agents.session import HISTORY_TURNS, _first_clause_cut, _spoken_text, _Turn
from apps.engines.base import TTSRequest
from apps.engines.local.engine import local_engine
from tests.agents.test_session import (
    ANSWER,
    CHUNK,
    Chunk,
    StandInLLM,
    audio_of,
    feed,
    of_type,
    question_pcm,  # noqa: F401 (a fixture)
    session_of,
    sessions_ended,  # noqa: F401 (a fixture: every session ends with its test)
    settled,
    silence,
    until,
)

pytestmark = pytest.mark.django_db(transaction=True)
OFFICE = "The Chorus office opens at 9 am and closes at 5 pm."
PARKING = "Parking is behind the building, free for visitors."


def document(workspace, member, name, text):
    return knowledge.document_add_text(workspace=workspace, user=member, name=name, text=text)


@pytest.fixture
def office(workspace, member, media):
    return document(workspace, member, "Office", OFFICE)


@pytest.fixture
def parking(workspace, member, media):
    return document(workspace, member, "Parking", PARKING)


def agent_knowing(workspace, member, voices, documents, **changes):
    config = AgentConfig(
        prompt="You are the front desk of Chorus.",
        first_message="Hello, how can I help?",
        voice_id=voices[0],
        knowledge=[d.document_id for d in documents],
        **{"silence_ms": 500, **changes},
    )
    return services.agent_create(workspace=workspace, user=member, name="Desk", config=config)


def started(agent, member, llm=None):
    session = session_of(agent, member, llm or StandInLLM())
    session.start()
    return session


def test_small_knowledge_is_the_whole_system_prompt_every_turn_in_document_order(
    workspace, member, voices, office, parking
):
    agent = agent_knowing(workspace, member, voices, [parking, office])
    session = started(agent, member)
    opening = session._messages("When does the office open?")
    parking_question = session._messages("Where can I leave my car?")  # matches no word
    assert opening[0] == parking_question[0]  # the same system prompt, whatever was asked
    system = opening[0]["content"]
    assert system.startswith("You are the front desk of Chorus.")
    assert system.index(PARKING) < system.index(OFFICE)  # as the agent lists them
    assert opening[-1] == {"role": "user", "content": "When does the office open?"}


def test_larger_knowledge_goes_with_the_question_and_the_system_prompt_stays_the_same(
    workspace, member, voices, office
):
    others = [
        document(workspace, member, f"Note {i}", text)
        for i, text in enumerate(
            [PARKING, "Lunch is served at noon.", "The lift is on the left.", "Dogs are welcome."]
        )
    ]
    agent = agent_knowing(workspace, member, voices, [office, *others])
    session = started(agent, member)
    opening = session._messages("When does the office open?")
    lunch = session._messages("When is lunch served?")
    assert opening[0] == lunch[0] == {"role": "system", "content": "You are the front desk of "
                                      "Chorus."}  # fmt: skip
    assert opening[:-1] == lunch[:-1]  # system and history: the cached prefix
    assert OFFICE in opening[-1]["content"] and "noon" not in opening[-1]["content"]
    assert "Lunch is served at noon." in lunch[-1]["content"]
    assert lunch[-1]["role"] == "user"
    assert lunch[-1]["content"].endswith("Question: When is lunch served?")


def test_the_history_moves_on_in_blocks_so_the_prompt_start_holds_most_turns(
    workspace, member, voices, office
):
    agent = agent_knowing(workspace, member, voices, [office])
    session = started(agent, member)
    prompts = []
    for n in range(1, 16):
        question = f"Question number {n}?"
        session._turns.append(_Turn(TurnRole.USER, question))
        prompts.append(session._messages(question))
        session._turns.append(_Turn(TurnRole.AGENT, f"Answer number {n}."))
    breaks = 0
    for before, after in zip(prompts, prompts[1:], strict=False):
        history = len(after) - 2
        assert HISTORY_TURNS // 2 <= history <= HISTORY_TURNS or len(after) == len(before) + 2
        if after[: len(before) - 1] != before[:-1]:
            breaks += 1
    # 15 questions, 31 turns: one turn dropped each time would break the prefix 9 times.
    assert 1 <= breaks <= 3


def test_the_onset_hook_interrupts_the_agent_before_send_audio_returns(
    workspace,
    member,
    voices,
    office,
    question_pcm,  # noqa: F811
):
    agent = agent_knowing(workspace, member, voices, [office])
    long = " ".join([ANSWER] * 4)
    llm = StandInLLM(long, "Nine am.", delay=0.02)
    session = started(agent, member, llm)
    hook, interrupt = session.stt.on_speech_start, session._interrupt
    inside, seen = threading.Event(), []

    def watched_hook(at):
        inside.set()
        try:
            hook(at)
        finally:
            inside.clear()

    def watched_interrupt():
        seen.append((inside.is_set(), session.stt.speaking))
        interrupt()

    session.stt.on_speech_start, session._interrupt = watched_hook, watched_interrupt
    events = feed(session, silence(2.5) + question_pcm + silence(1.0))
    until(session, events, lambda ev: len(llm.calls) == 1 and of_type(ev, "audio"))
    events += feed(session, silence(1.5) + question_pcm + silence(1.5))
    events = settled(session, events)
    assert seen == [(True, True)]  # once, from the VAD's onset, the utterance open
    assert len(of_type(events, "interruption")) == 1
    assert len(llm.calls) == 2
    conversation = session.end()
    turns = list(conversation.turns.order_by("position"))
    assert turns[2].interrupted and long.startswith(turns[2].text)


def test_the_first_clause_of_an_answer_is_cut_off_to_be_spoken_first():
    sentences, rest = _first_clause_cut([], "The office opens at nine, and it clo")
    assert (sentences, rest) == (["The office opens at nine,"], "and it clo")
    # A short opening clause waits for a longer one, or for the sentence's end.
    assert _first_clause_cut([], "Yes, the office") == ([], "Yes, the office")
    assert _first_clause_cut([], "Yes, the office opens at nine; come by") == (
        ["Yes, the office opens at nine;"],
        "come by",
    )
    # A whole sentence that came at once is cut too; the sentences after it are not.
    whole = ["It opens at 9:00 sharp, Monday to Friday.", "Parking: behind, free."]
    assert _first_clause_cut(whole, "Lunch") == (
        ["It opens at 9:00 sharp,", "Monday to Friday.", "Parking: behind, free."],
        "Lunch",
    )
    assert _first_clause_cut(["Nine am."], "") == (["Nine am."], "")
    # What an interruption says was heard counts the clause as a sentence of its own.
    parts = [("The office opens at nine,", 16000), ("and it closes at five.", 16000)]
    assert _spoken_text(parts, 16000 + 8000) == "The office opens at nine, and it"


def test_an_answer_starts_with_its_first_clause_and_is_whole_in_the_transcript(
    workspace,
    member,
    voices,
    office,
    question_pcm,  # noqa: F811
):
    agent = agent_knowing(workspace, member, voices, [office])
    answer = "The Chorus office opens at 9 am, Monday to Friday. Parking is behind it."
    llm = StandInLLM(answer)
    session = started(agent, member, llm)
    events = feed(session, silence(2.5) + question_pcm + silence(1.5))
    events = until(session, events, lambda ev: len(of_type(ev, "agent_response")) == 1)
    events = settled(session, events)
    assert of_type(events, "agent_response")[0]["agent_response_event"]["agent_response"] == (
        answer
    )
    assert len(audio_of(events)) > 32000
    conversation = session.end()
    turns = list(conversation.turns.order_by("position"))
    assert turns[2].text == answer and not turns[2].interrupted
    # Three TTS requests (clause, the rest of the sentence, the next sentence): the spaces
    # between them are not spoken.
    greeting = "Hello, how can I help?"
    assert conversation.tts_characters == len(greeting) + len(answer) - 2


def test_the_offline_model_answers_shorter_when_the_agent_keeps_the_default_length(
    workspace, member, voices, office, settings
):
    settings.CHORUS_AGENT_LLM_URL = ""
    kept = started(agent_knowing(workspace, member, voices, [office]), member)
    assert AgentConfig().max_tokens == 160 and kept._max_tokens() == OFFLINE_MAX_TOKENS == 60
    chosen = agent_knowing(workspace, member, voices, [office], max_tokens=120)
    assert started(chosen, member)._max_tokens() == 120
    settings.CHORUS_AGENT_LLM_URL = "http://127.0.0.1:9/v1"  # an endpoint: its own default
    assert kept._max_tokens() == 160


class TimedLLM:
    """A stand-in LLM that answers each question with the question itself (word by word,
    ``delay`` apart) and records every call: (its question, when it began, when it stopped)."""

    def __init__(self, delay: float = 0.05):
        self.delay = delay
        self.calls: list[dict] = []

    def answer_to(self, question: str) -> str:
        return f"You asked me this: {question} The office opens at nine."

    def __call__(self, messages, *, model, temperature, max_tokens, stop=None):
        call = {"messages": messages, "began": time.perf_counter(), "stopped": None, "said": 0}
        self.calls.append(call)
        words = self.answer_to(messages[-1]["content"]).split(" ")
        try:
            for index, word in enumerate(words):
                time.sleep(self.delay)
                call["said"] += 1
                yield Chunk(word + (" " if index < len(words) - 1 else ""))
            yield Chunk(prompt_tokens=150, completion_tokens=len(words))
        finally:
            call["stopped"] = time.perf_counter()


def fed_live(session, pcm: bytes) -> list[dict]:
    """Feed 50 ms chunks at the pace of a microphone, never ahead of the listener (so the
    silence takes its real time on a busy machine too)."""
    events, began = [], time.perf_counter()
    for offset in range(0, len(pcm), CHUNK):
        while session._inbox.unfinished_tasks:
            time.sleep(0.005)
        began = max(began, time.perf_counter() - offset / 32000)  # a late listener: no rush
        wait = began + offset / 32000 - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        events += session.feed(pcm[offset : offset + CHUNK])
    return events


def commits_timed(session) -> list[tuple[float, str, list]]:
    """When the listener committed each utterance (wall clock), its text and the LLM prompt
    it gives."""
    commits, utterance = [], session._utterance

    def timed(event, **kwargs):
        text = " ".join(event.text.split())
        commits.append((time.perf_counter(), text, session._messages(text)))
        utterance(event, **kwargs)

    session._utterance = timed
    return commits


def spoken(text: str) -> bytes:
    from apps.engines.local import tts

    voice = tts.list_voices()[0].voice_id
    request = TTSRequest(text=text, voice_id=voice, output_format="pcm_16000")
    return local_engine().tts(request).audio


def answered(session, pcm: bytes) -> tuple[list[dict], object]:
    events = fed_live(session, pcm)
    events = until(session, events, lambda ev: len(of_type(ev, "agent_response")) == 1)
    events = settled(session, events)
    return events, session.end()


def test_the_llm_starts_during_the_silence_on_the_guess_and_is_called_once(
    workspace,
    member,
    voices,
    office,
    question_pcm,  # noqa: F811
):
    agent = agent_knowing(workspace, member, voices, [office], silence_ms=2000)
    llm = TimedLLM()
    session = started(agent, member, llm)
    commits = commits_timed(session)
    events, conversation = answered(session, silence(2.5) + question_pcm + silence(2.5))
    [(committed_at, text, messages)] = commits
    [call] = llm.calls  # once: the turn read the speculation's stream
    assert call["began"] < committed_at  # during the end-of-turn silence
    assert call["messages"] == messages and messages[-1]["content"] == text
    question = call["messages"][-1]["content"]
    [response] = of_type(events, "agent_response")
    assert response["agent_response_event"]["agent_response"] == llm.answer_to(question)
    turns = list(conversation.turns.order_by("position"))
    assert turns[2].text == llm.answer_to(question) and not turns[2].interrupted
    assert turns[2].latency_ms["speculative"] is True and turns[2].latency_ms["total"] > 0
    assert conversation.llm_tokens == 150 + len(llm.answer_to(question).split(" "))


def test_speech_that_resumes_cancels_the_speculation_and_the_full_question_is_answered(
    workspace, member, voices, office
):
    agent = agent_knowing(workspace, member, voices, [office], silence_ms=3000)
    llm = TimedLLM(delay=0.3)
    session = started(agent, member, llm)
    commits = commits_timed(session)
    # A pause long enough for Whisper's guess and the LLM to start (on a busy machine too),
    # short of a turn's end.
    pcm = silence(2.5) + spoken("When does the office") + silence(2.0)
    pcm += spoken("open on Saturdays?") + silence(3.5)
    events, conversation = answered(session, pcm)
    [(committed_at, full, messages)] = commits
    assert "saturday" in full.lower()
    guess, answer = llm.calls  # the speculation on the first half, then the full question
    assert guess["began"] < committed_at and "saturday" not in str(guess["messages"]).lower()
    assert guess["stopped"] is not None and guess["stopped"] < committed_at  # cancelled
    assert guess["said"] < len(llm.answer_to("When does the office").split(" "))
    assert guess["stopped"] <= answer["began"]  # one LLM call at a time
    assert answer["messages"] == messages and messages[-1]["content"] == full
    [response] = of_type(events, "agent_response")
    assert response["agent_response_event"]["agent_response"] == llm.answer_to(full)
    turns = list(conversation.turns.order_by("position"))
    assert [t.role for t in turns] == [TurnRole.AGENT, TurnRole.USER, TurnRole.AGENT]
    assert turns[1].text == full and turns[2].text == llm.answer_to(full)
    # (The full question was guessed in its own silence too: that call is the answer's.)
    assert turns[2].latency_ms.get("speculative") is True
    # The cancelled call's tokens were spent: metered on top of the answer's own.
    assert conversation.llm_tokens > 150 + len(llm.answer_to(full).split(" "))


def test_the_saved_turns_and_events_are_the_same_with_and_without_speculation(
    workspace,
    member,
    voices,
    office,
    question_pcm,  # noqa: F811
):
    agent = agent_knowing(workspace, member, voices, [office], silence_ms=2000)
    outcomes = []
    for speculate in (True, False):
        llm = TimedLLM(delay=0.01)
        session = started(agent, member, llm)
        session.speculate = speculate
        commits = commits_timed(session)
        events, conversation = answered(session, silence(2.5) + question_pcm + silence(2.5))
        [(committed_at, _, _)] = commits
        assert len(llm.calls) == 1 and (llm.calls[0]["began"] < committed_at) == speculate
        turns = list(conversation.turns.order_by("position"))
        outcomes.append(
            {
                "events": [
                    (e["type"], e.get("user_transcription_event"), e.get("agent_response_event"))
                    for e in events
                    if e["type"] != "conversation_initiation_metadata"
                ],
                "audio": audio_of(events),
                "turns": [(t.role, t.text, t.interrupted) for t in turns],
                "speculative": [t.latency_ms.get("speculative") for t in turns],
                "usage": (conversation.llm_tokens, conversation.tts_characters),
            }
        )
    with_it, without = outcomes
    assert with_it["speculative"] == [None, None, True]
    assert without["speculative"] == [None, None, None]
    for name in ("events", "audio", "turns", "usage"):
        assert with_it[name] == without[name], name
