"""Barge-in in a real Chromium: the fake microphone asks when the office opens, waits while the
agent starts its long answer, then speaks over it. The server sends ``interruption``; the page
clears the player worklet's queue at once (the worklet reports the first silent render) and
tags the agent's turn "interrupted", cut to what was played; the rest of what the user said is
heard and answered. Timings are taken in the page with performance.now(): the interruption
frame's arrival → the worklet silent (asserted ≤ 300 ms), and the microphone's speech onset →
the worklet silent (printed: the figure the issue's p50 ≤ 300 ms goal is about)."""

import re

import numpy as np
import pytest

from apps.agents.models import Conversation, ConversationStatus
from tests.conftest import wait_until
from tests.e2e.agent_talk_setup import LONG_ANSWER, make_desk_agent, open_talk, spoken
from tests.e2e.agent_talk_setup import start_llm_server as start_answer_server
from tests.engines.test_local_stt import silence, wav_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAUSE_SECONDS = 5.0  # after the question: the agent hears its end and starts answering


@pytest.fixture
def microphone_wav():
    """A question, a pause while the agent answers, then the user speaking over it."""
    return wav_bytes(
        np.concatenate(
            [
                silence(1.5),
                spoken("When does the office open?"),
                silence(PAUSE_SECONDS),
                spoken("Sorry to cut in, where can I park my car?"),
                silence(25.0),
            ]
        )
    )


@pytest.fixture
def llm(live_env, settings, tmp_path):
    httpd = start_answer_server(LONG_ANSWER)
    live_env["CHORUS_AGENT_LLM_URL"] = f"http://127.0.0.1:{httpd.server_port}/v1"
    live_env["MEDIA_ROOT"] = str(tmp_path / "media")
    settings.MEDIA_ROOT = tmp_path / "media"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def words(text: str) -> str:
    return " ".join(text.split())


def test_speaking_over_the_agent_stops_its_playback_at_once_and_marks_the_turn(
    llm, speaking_browser, daphne_server
):
    from playwright.sync_api import expect

    _, member, agent = make_desk_agent()
    page = open_talk(speaking_browser, daphne_server.url, member, agent)
    transcript = page.locator("[data-talk-transcript]")
    expect(transcript.locator("li.talk-user.final").first).to_contain_text(
        "office", ignore_case=True, timeout=60_000
    )
    # The answer plays (more than the greeting), then the user speaks over it.
    page.wait_for_function("() => window.chorusTalk.played > 24000", timeout=30_000)
    page.wait_for_function("() => window.chorusTalk.outputLevel() > 0.01", timeout=10_000)
    page.wait_for_function(
        "() => window.chorusTalk.interruptions.some((i) => i.silent !== null)", timeout=30_000
    )
    # Nothing plays after it (an analyser on the player's output: the last 32 ms are silent).
    page.wait_for_timeout(100)
    assert page.evaluate("() => window.chorusTalk.outputLevel()") == 0
    cut = transcript.locator("li.talk-agent.interrupted")
    expect(cut).to_have_count(1)
    expect(cut.locator(".tag")).to_have_text("interrupted")
    timings = page.evaluate(
        """() => {
            const talk = window.chorusTalk;
            const cut = talk.interruptions.find((i) => i.silent !== null);
            const onset = talk.onsets.filter((t) => t <= cut.received).pop();
            return {received: cut.received, silent: cut.silent, dropped: cut.dropped,
                    outputLatency: cut.outputLatency, onset: onset === undefined ? null : onset,
                    played: talk.played, received_samples: talk.received};
        }"""
    )
    assert timings["onset"] is not None and timings["onset"] < timings["received"]
    to_silent = timings["silent"] - timings["received"]
    print(
        f"\nbarge-in: interruption frame → player silent {to_silent:.1f} ms"
        f" (+ output latency {timings['outputLatency'] * 1000:.0f} ms);"
        f" speech onset → player silent {timings['silent'] - timings['onset']:.0f} ms;"
        f" dropped {timings['dropped'] / 16000:.2f} s of queued agent audio"
    )
    assert to_silent <= 300
    assert timings["silent"] - timings["onset"] <= 1000
    assert timings["dropped"] > 1600  # it cut audio that was queued (over 100 ms of it)
    # The agent's line keeps what was played: a beginning of the answer, not all of it.
    said = words(re.sub(r"\s*interrupted$", "", cut.inner_text().removeprefix("Agent:").strip()))
    assert said and said != words(LONG_ANSWER) and words(LONG_ANSWER).startswith(said)
    # The agent heard the rest: the user's words over it, then another answer.
    expect(transcript.locator("li.talk-user.final").nth(1)).to_contain_text(
        "park", ignore_case=True, timeout=60_000
    )
    wait_until(lambda: len(llm.requests) == 2, timeout=30, what="the second question's answer")
    assert "park" in llm.requests[1]["messages"][-1]["content"].lower()

    page.get_by_role("button", name="End").click()
    expect(page.locator("#conversations tbody tr")).to_have_count(1, timeout=60_000)
    conversation = Conversation.objects.get(agent=agent)
    assert conversation.status == ConversationStatus.DONE
    turns = list(conversation.turns.order_by("position"))
    interrupted = [t for t in turns if t.interrupted]
    assert len(interrupted) == 1 and interrupted[0].role == "agent"
    assert words(interrupted[0].text) == said
