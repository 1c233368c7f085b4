"""What the browser tests of talking to an agent share: speech for the fake microphone (the
local engine's TTS at 16 kHz), a tiny OpenAI-compatible SSE server standing in for the LLM
(the network edge, reached by the Daphne subprocess), an agent with knowledge, and opening the
Talk panel as a member."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from apps.agents import knowledge, services
from apps.agents.config import AgentConfig
from apps.engines.base import TTSRequest
from apps.workspaces.models import Role
from tests.e2e.conftest import sign_in
from tests.factories import add_member, make_user, make_workspace

# A long answer: about 20 s of speech, so the user can speak over it.
LONG_ANSWER = (
    "The office opens at 9 am. It closes at 6 pm on weekdays. On Saturdays it opens at ten "
    "and closes at noon. It is closed on Sundays and on public holidays. Visitors sign in at "
    "the front desk on the ground floor. The parking garage is behind the building, and the "
    "first hour there is free."
)


def spoken(text: str) -> np.ndarray:
    """``text`` said by the local engine's first voice, as float samples at 16 kHz."""
    from apps.engines.local import tts
    from apps.engines.local.engine import local_engine

    voice = tts.list_voices()[0].voice_id
    request = TTSRequest(text=text, voice_id=voice, output_format="pcm_16000")
    audio = local_engine().tts(request).audio
    return np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768


class AnswerLLM(BaseHTTPRequestHandler):
    """``POST …/chat/completions``: the server's ``answer`` streamed word by word as SSE (with
    the server's ``pause`` in seconds after its first sentence)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        words = self.server.answer.split(" ")
        pieces = [word + " " for word in words[:-1]] + words[-1:]
        events = [{"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in pieces]
        events.append({"choices": [], "usage": {"prompt_tokens": 60, "completion_tokens": 70}})
        frames = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
        # With a pause: the first sentence, then nothing for ``pause`` seconds, then the rest.
        first = next((i + 1 for i, p in enumerate(pieces) if p.rstrip().endswith(".")), 0)
        parts = (
            [b"".join(frames[:first]), b"".join(frames[first:])]
            if self.server.pause
            else [b"".join(frames)]
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(sum(len(p) for p in parts)))
        self.end_headers()
        for i, part in enumerate(parts):
            if i:
                time.sleep(self.server.pause)
            self.wfile.write(part)
            self.wfile.flush()


def start_llm_server(answer: str, *, pause: float = 0.0):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), AnswerLLM)
    httpd.daemon_threads = True
    httpd.requests = []
    httpd.answer = answer
    httpd.pause = pause
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def make_desk_agent(**config):
    """A member of a workspace and their agent "Desk", which knows when the office opens."""
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
    settings = {
        "prompt": "You are the front desk of Chorus.",
        "first_message": "Hello.",
        "voice_id": voice.first().voice_id,
        "knowledge": [office.document_id],
        "silence_ms": 500,
        **config,
    }
    agent = services.agent_create(
        workspace=workspace, user=member, name="Desk", config=AgentConfig(**settings)
    )
    return workspace, member, agent


def open_talk(browser, base_url: str, member, agent):
    """A page signed in as ``member`` with the Talk panel open and its socket connected."""
    from playwright.sync_api import expect

    page = browser.new_context(base_url=base_url).new_page()
    sign_in(page, member.email)
    page.goto(f"/agents/{agent.agent_id}/")
    page.get_by_role("button", name="Talk").click()
    expect(page.locator("[data-talk-panel]")).to_be_visible()
    expect(page.locator("[data-talk-status]")).to_have_text(
        "Connected: speak when you are ready.", timeout=60_000
    )
    return page
