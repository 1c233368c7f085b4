"""In a real Chromium whose microphone plays a spoken question, a member opens an agent whose
knowledge says when the office opens, presses Talk: the question's transcript appears, then
the agent's answer as text, its audio plays (the player's count of played samples rises) and,
transcribed from the frames the browser received, says the fact; End saves a conversation that
the agent page lists. The LLM is a tiny OpenAI-compatible SSE server started by the test (the
network edge), reached by the Daphne subprocess."""

import numpy as np
import pytest

from apps.agents import knowledge, services
from apps.agents.config import AgentConfig
from apps.agents.models import Conversation, ConversationStatus
from apps.engines.base import STTRequest, TTSRequest
from apps.engines.local.engine import local_engine
from apps.workspaces.models import Role
from tests.agents.test_talk_consumer import ANSWER, start_llm_server
from tests.e2e.conftest import sign_in
from tests.engines.test_local_stt import silence, wav_bytes
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def microphone_wav():
    """The question spoken by the local engine (16 kHz), with a long pause after it."""
    from apps.engines.local import tts
    from apps.engines.local.engine import local_engine

    voice = tts.list_voices()[0].voice_id
    spoken = (
        local_engine()
        .tts(
            TTSRequest(text="When does the office open?", voice_id=voice, output_format="pcm_16000")
        )
        .audio
    )
    samples = np.frombuffer(spoken, dtype="<i2").astype(np.float32) / 32768
    return wav_bytes(np.concatenate([silence(1.5), samples, silence(20.0)]))


@pytest.fixture
def llm(live_env, settings, tmp_path):
    httpd = start_llm_server()
    live_env["CHORUS_AGENT_LLM_URL"] = f"http://127.0.0.1:{httpd.server_port}/v1"
    live_env["MEDIA_ROOT"] = str(tmp_path / "media")
    settings.MEDIA_ROOT = tmp_path / "media"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_member_asks_the_agent_hears_the_answer_and_end_saves_it(
    llm, speaking_browser, daphne_server
):
    from playwright.sync_api import expect

    from apps.voices import services as voice_services
    from apps.voices.models import LibraryVoice

    owner = make_user("lia@example.com", name="Lia Owner")
    workspace = make_workspace("Front office", owner=owner)
    member = make_user("ned@example.com", name="Ned Member")
    add_member(workspace, member, Role.MEMBER)
    voice_services.library_sync(workspace=workspace)
    voice = LibraryVoice.objects.filter(workspace=workspace, engine="local").order_by("voice_id")
    office = knowledge.document_add_text(
        workspace=workspace, user=member, name="Office", text="The Chorus office opens at 9 am."
    )
    agent = services.agent_create(
        workspace=workspace,
        user=member,
        name="Desk",
        config=AgentConfig(
            prompt="You are the front desk of Chorus.",
            first_message="Hello.",
            voice_id=voice.first().voice_id,
            knowledge=[office.document_id],
            silence_ms=500,
        ),
    )

    page = speaking_browser.new_context(base_url=daphne_server.url).new_page()
    # What the browser receives on the talk socket: JSON events and binary agent PCM frames,
    # in order (so the answer's audio is the PCM after the user's transcript).
    received: list = []

    def on_socket(ws):
        if "/talk/" in ws.url:
            ws.on("framereceived", lambda payload: received.append(payload))

    page.on("websocket", on_socket)
    sign_in(page, member.email)
    page.goto(f"/agents/{agent.agent_id}/")
    page.get_by_role("button", name="Talk").click()
    panel = page.locator("[data-talk-panel]")
    expect(panel).to_be_visible()
    expect(page.locator("[data-talk-status]")).to_have_text(
        "Connected: speak when you are ready.", timeout=60_000
    )
    page.wait_for_function("() => document.querySelector('[data-talk-level]').value > 0.01")
    transcript = page.locator("[data-talk-transcript]")
    user_line = transcript.locator("li.talk-user.final").first
    expect(user_line).to_contain_text("office", ignore_case=True, timeout=60_000)
    expect(transcript.locator("li.talk-agent.final", has_text=ANSWER)).to_have_count(
        1, timeout=60_000
    )
    # The answer's audio played (about a second and a half of speech at 16 kHz).
    page.wait_for_function(
        "() => document.querySelector('[data-talk-panel]').talkPlayed > 16000", timeout=30_000
    )
    assert llm.requests and "opens at 9 am" in llm.requests[0]["messages"][0]["content"]
    # The answer the browser heard, transcribed, says the fact.
    after_question = [i for i, f in enumerate(received)
                      if isinstance(f, str) and '"user_transcript"' in f]  # fmt: skip
    answer_pcm = b"".join(f for f in received[after_question[0] :] if isinstance(f, bytes))
    heard = local_engine().stt(STTRequest(audio=answer_pcm, filename="answer.pcm",
                                          file_format="pcm_s16le_16")).text.lower()  # fmt: skip
    assert "office" in heard and ("9" in heard or "nine" in heard), heard

    page.get_by_role("button", name="End").click()
    expect(page.locator("#conversations tbody tr")).to_have_count(1, timeout=60_000)
    conversation = Conversation.objects.get(agent=agent)
    assert conversation.status == ConversationStatus.DONE
    assert conversation.user == member
    texts = list(conversation.turns.order_by("position").values_list("role", "text"))
    assert ("agent", ANSWER) in texts
    assert any(role == "user" and "office" in text.lower() for role, text in texts)
