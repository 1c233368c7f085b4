"""A dropped socket in a real Chromium: the page reaches Daphne through a TCP proxy that the
test cuts (a real drop: both ends lose the connection without a close handshake, the browser
sees 1006) and keeps refusing connections for a while. Mid-turn — the agent has begun its
answer, the LLM still writing — the page shows "Reconnecting…", tries again with back-off and
reopens the socket with ?resume=<conversation_id>; the server answers "resumed" with what the
agent said meanwhile, and the conversation goes on: the next question is answered with the
first answer in its history, and no turn is lost. A second drop lands on another Daphne process
(the proxy now points there), which cannot resume it: the page shows the server's message and
the panel ends; the first process saves the conversation when its wait runs out."""

import asyncio
import sys
import threading
import time

import numpy as np
import pytest

from apps.agents.models import Conversation, ConversationStatus
from tests.conftest import LiveServer, free_port, spawn, wait_until
from tests.e2e.agent_talk_setup import make_desk_agent, open_talk, spoken
from tests.e2e.agent_talk_setup import start_llm_server as start_answer_server
from tests.engines.test_local_stt import silence, wav_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ANSWER = "The office opens at 9 am. It closes at 6 pm on weekdays."
LLM_PAUSE = 4.0  # seconds between the answer's two sentences: the drop falls in between
DOWN_SECONDS = 2.5  # how long the proxy refuses connections after a drop


class DroppingProxy:
    """A TCP proxy to ``upstream`` (a port on 127.0.0.1) that can cut every connection."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.down_until = 0.0
        self.refused = 0
        self.connections: set = set()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader, writer):
        if time.monotonic() < self.down_until:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self.connections.add(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            self.connections.discard(pair)
            for w in pair:
                w.transport.abort()

    async def _pipe(self, reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    def drop(self, *, down_for: float) -> None:
        """Cut every connection now and refuse new ones for ``down_for`` seconds."""

        def cut():
            self.down_until = time.monotonic() + down_for
            for pair in list(self.connections):
                for w in pair:
                    w.transport.abort()

        self.loop.call_soon_threadsafe(cut)

    def close(self) -> None:
        def stop():
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)


@pytest.fixture
def microphone_wav():
    """A question; a long quiet while the agent answers; a second question; quiet."""
    return wav_bytes(
        np.concatenate(
            [
                silence(1.5),
                spoken("When does the office open?"),
                silence(12.0),
                spoken("And on Saturdays?"),
                silence(30.0),
            ]
        )
    )


@pytest.fixture
def llm(live_env, settings, tmp_path):
    httpd = start_answer_server(ANSWER, pause=LLM_PAUSE)
    live_env["CHORUS_AGENT_LLM_URL"] = f"http://127.0.0.1:{httpd.server_port}/v1"
    live_env["MEDIA_ROOT"] = str(tmp_path / "media")
    settings.MEDIA_ROOT = tmp_path / "media"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def proxy(daphne_server):
    proxy = DroppingProxy(daphne_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def other_daphne(live_env, tmp_path):
    """A second Daphne process on the same database (it knows nothing of the first's
    conversations waiting for their sockets)."""
    import urllib.request

    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "studio_site.server", "-b", "127.0.0.1", "-p", str(port),
         "studio_site.asgi:application"],
        env=live_env,
        log=tmp_path / "daphne-2.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers():
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False

    wait_until(answers, timeout=60, interval=0.2, what="the second Daphne to answer /healthz")
    yield LiveServer(url=url, port=port, proc=proc)
    proc.stop()


def test_a_dropped_socket_resumes_the_same_conversation_mid_turn_and_loses_no_turn(
    llm, speaking_browser, daphne_server, proxy, other_daphne
):
    from playwright.sync_api import expect

    _, member, agent = make_desk_agent()
    page = open_talk(speaking_browser, proxy.url, member, agent)
    status = page.locator("[data-talk-status]")
    transcript = page.locator("[data-talk-transcript]")
    answers = transcript.locator("li.talk-agent.final", has_text=ANSWER)
    expect(transcript.locator("li.talk-user.final").first).to_contain_text(
        "office", ignore_case=True, timeout=60_000
    )
    # Mid-turn: the LLM has written the first sentence and waits before the second.
    wait_until(lambda: len(llm.requests) == 1, timeout=30, what="the first question's answer")
    expect(answers).to_have_count(0)
    conversation_id = page.evaluate("() => window.chorusTalk.conversationId")
    proxy.drop(down_for=DOWN_SECONDS)
    expect(status).to_have_text("Reconnecting…", timeout=5_000)
    expect(page.get_by_role("button", name="Mute")).to_be_disabled()
    expect(status).to_have_text("Reconnected: the conversation goes on.", timeout=25_000)
    drop = page.evaluate("() => window.chorusTalk.drops[0]")
    print(
        f"\nreconnect: dropped (code {drop['code']}), resumed after"
        f" {(drop['resumed'] - drop['at']) / 1000:.2f} s, {proxy.refused} tries refused meanwhile"
    )
    assert drop["code"] == 1006
    assert proxy.refused >= 2  # it tried again, backing off, while the proxy was down
    assert page.evaluate("() => window.chorusTalk.conversationId") == conversation_id
    # What the agent said while the socket was down arrives: the whole answer, once.
    expect(answers).to_have_count(1, timeout=30_000)
    page.wait_for_function("() => window.chorusTalk.played > 16000 * 3", timeout=30_000)
    # The conversation goes on: the next question is heard and answered with the first
    # answer in the history.
    expect(transcript.locator("li.talk-user.final").nth(1)).to_contain_text(
        "saturday", ignore_case=True, timeout=60_000
    )
    wait_until(lambda: len(llm.requests) == 2, timeout=30, what="the second question's answer")
    history = llm.requests[1]["messages"]
    assert {"role": "assistant", "content": ANSWER} in history
    expect(answers).to_have_count(2, timeout=30_000)
    expect(page.get_by_role("button", name="End")).to_be_enabled()

    # A second drop, and the connection comes back to a process that cannot resume it.
    proxy.upstream = other_daphne.port
    proxy.drop(down_for=0.5)
    error = page.locator("[data-talk-error]")
    expect(error).to_contain_text("can no longer be resumed", timeout=25_000)
    expect(page.get_by_role("button", name="End")).to_be_disabled()
    expect(page.get_by_role("button", name="Talk")).to_be_enabled()
    saved = page.get_by_role("link", name="see it with the agent's conversations")
    expect(saved).to_be_focused()

    # The first process saves it when its wait for the socket runs out: one conversation,
    # every turn kept.
    def saved_row():
        row = Conversation.objects.filter(agent=agent).first()
        return row is not None and row.status == ConversationStatus.DONE and row

    row = wait_until(saved_row, timeout=40, interval=0.5, what="the dropped conversation saved")
    assert Conversation.objects.filter(agent=agent).count() == 1
    assert row.conversation_id == conversation_id
    assert "dropped" in row.end_reason
    turns = list(row.turns.order_by("position").values_list("role", "text"))
    assert [role for role, _ in turns] == ["agent", "user", "agent", "user", "agent"]
    assert turns[2][1] == ANSWER and turns[4][1] == ANSWER
    saved.click()
    expect(page.locator("#conversations tbody tr")).to_have_count(1)
