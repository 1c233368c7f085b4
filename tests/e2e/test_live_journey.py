"""In a real Chromium whose microphone plays recorded speech, a member starts live captions:
words appear on screen as they are spoken (partials, then committed lines), a viewer watches
the same captions from another browser session, and Stop saves a transcript holding the
spoken words and the recording."""

import numpy as np
import pytest

from apps.transcripts.models import Transcript, TranscriptStatus
from apps.workspaces.models import Role
from tests.e2e.conftest import sign_in
from tests.engines.test_local_stt import human_recordings, silence, wav_bytes, words_of
from tests.factories import add_member, make_user, make_workspace
from tests.transcripts.test_batch import samples_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


REFERENCE = human_recordings()[0][1]


@pytest.fixture
def microphone_wav():
    """A LibriVox recording of human speech, with pauses around it."""
    wav = human_recordings()[0][0]
    return wav_bytes(np.concatenate([silence(0.5), samples_of(wav), silence(2.0)]))


def test_live_captions_appear_a_viewer_watches_and_stop_saves(speaking_browser, daphne_server):
    from playwright.sync_api import expect

    owner = make_user("lia@example.com", name="Lia Owner")
    workspace = make_workspace("Newsroom", owner=owner)
    member = make_user("ned@example.com", name="Ned Member")
    viewer = make_user("vic@example.com", name="Vic Viewer")
    add_member(workspace, member, Role.MEMBER)
    add_member(workspace, viewer, Role.VIEWER)
    reference = set(words_of(REFERENCE))

    page = speaking_browser.new_context(base_url=daphne_server.url).new_page()
    sign_in(page, member.email)
    page.goto("/transcripts/live/")
    page.get_by_role("button", name="● Start").click()
    expect(page.locator("[data-live-status]")).to_have_text("Listening…", timeout=20_000)
    page.wait_for_function("() => document.querySelector('[data-live-level]').value > 0.01")
    committed = page.locator("[data-live-committed]")
    expect(committed.locator(".line").first).to_be_visible(timeout=60_000)
    first_line = set(words_of(committed.inner_text()))
    assert len(first_line & reference) >= 3, (first_line, reference)

    # The network drops: the page reconnects to the same session and keeps its lines.
    lines = committed.locator(".line").count()
    page.evaluate("() => document.querySelector('[data-live]').liveSocket().close()")
    expect(page.locator("[data-live-status]")).to_have_text("Connection lost: reconnecting…")
    expect(page.locator("[data-live-status]")).to_have_text("Listening…", timeout=20_000)
    assert committed.locator(".line").count() >= lines
    expect(committed.locator(".line")).to_have_count(lines + 1, timeout=60_000)

    # A viewer watches the same session from their own browser session.
    session = Transcript.objects.get(source="live")
    watcher = speaking_browser.new_context(base_url=daphne_server.url).new_page()
    sign_in(watcher, viewer.email)
    watcher.goto(f"/transcripts/{session.pk}/watch/")
    expect(watcher.locator("[data-live-status]")).to_have_text("Live.")
    expect(watcher.locator("[data-live-committed] .line").first).to_be_visible(timeout=30_000)

    page.get_by_role("button", name="■ Stop and save").click()
    expect(page.get_by_role("heading", name=session.title)).to_be_visible(timeout=30_000)
    session.refresh_from_db()
    assert session.status == TranscriptStatus.READY and session.duration_seconds > 2
    assert len(set(words_of(session.text)) & reference) >= 3
    expect(page.locator("[data-transcript-player] audio")).to_have_count(1)
