"""A conversation that the server ends by itself, in a real Chromium: the agent's maximum
length (10 s) runs out after a question and its answer. The page shows the server's fatal
message as it is (no reconnecting: 4409 is a refusal), the panel's controls end, Talk can
start again, and focus moves to the link to the saved conversation, which the agent page lists
after the reload with its turns. (A spent budget ends it the same way — its fatal ``error``,
then 4409 — but the local engine is free, so no budget can run out on it.)"""

import numpy as np
import pytest

from apps.agents.models import Conversation, ConversationStatus
from tests.e2e.agent_talk_setup import make_desk_agent, open_talk, spoken
from tests.e2e.agent_talk_setup import start_llm_server as start_answer_server
from tests.engines.test_local_stt import silence, wav_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ANSWER = "The office opens at 9 am."
MAXIMUM = "The conversation reached its maximum length of 10 s."


@pytest.fixture
def microphone_wav():
    return wav_bytes(
        np.concatenate([silence(1.5), spoken("When does the office open?"), silence(30.0)])
    )


@pytest.fixture
def llm(live_env, settings, tmp_path):
    httpd = start_answer_server(ANSWER)
    live_env["CHORUS_AGENT_LLM_URL"] = f"http://127.0.0.1:{httpd.server_port}/v1"
    live_env["MEDIA_ROOT"] = str(tmp_path / "media")
    settings.MEDIA_ROOT = tmp_path / "media"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_the_conversation_ending_itself_shows_why_ends_the_panel_and_is_saved(
    llm, speaking_browser, daphne_server
):
    from playwright.sync_api import expect

    _, member, agent = make_desk_agent(max_duration_seconds=10)
    page = open_talk(speaking_browser, daphne_server.url, member, agent)
    transcript = page.locator("[data-talk-transcript]")
    expect(transcript.locator("li.talk-agent.final", has_text=ANSWER)).to_have_count(
        1, timeout=60_000
    )
    error = page.locator("[data-talk-error]")
    expect(error).to_have_text(MAXIMUM, timeout=30_000)
    expect(page.locator("[data-talk-status]")).to_have_text("Not connected.")
    expect(page.get_by_role("button", name="End")).to_be_disabled()
    expect(page.get_by_role("button", name="Mute")).to_be_disabled()
    expect(page.get_by_role("button", name="Talk")).to_be_enabled()
    assert page.evaluate("() => window.chorusTalk.drops.length") == 0  # no reconnecting
    assert page.evaluate("() => window.chorusTalk.socket().readyState") == 3  # closed
    saved = page.get_by_role("link", name="see it with the agent's conversations")
    expect(saved).to_be_focused()
    # The microphone is released (its level falls to 0).
    assert page.evaluate("() => document.querySelector('[data-talk-level]').value") == 0

    page.keyboard.press("Enter")
    expect(page.locator("#conversations tbody tr")).to_have_count(1, timeout=10_000)
    conversation = Conversation.objects.get(agent=agent)
    assert conversation.status == ConversationStatus.DONE
    assert conversation.end_reason == MAXIMUM
    roles = list(conversation.turns.order_by("position").values_list("role", flat=True))
    assert roles == ["agent", "user", "agent"]
    assert conversation.user_audio and conversation.agent_audio
