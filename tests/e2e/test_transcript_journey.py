"""In a real Chromium a member uploads a recording of human speech (the upload shows its
progress and the estimate for this file), watches the job transcribe it with a real Celery
worker, reads along (clicking a word seeks the recording there, and the spoken word is
highlighted as it plays), corrects a paragraph in place and downloads captions that parse."""

import pytest
import srt

from apps.transcripts.models import Transcript, TranscriptStatus
from apps.workspaces.models import Role
from tests.e2e.conftest import sign_in
from tests.engines.test_local_stt import human_recordings, silence, wav_bytes
from tests.factories import add_member, make_user, make_workspace
from tests.transcripts.test_batch import samples_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_upload_transcribe_read_along_edit_and_export(
    browser, daphne_server, celery_worker, tmp_path
):
    import numpy as np
    from playwright.sync_api import expect

    owner = make_user("tess@example.com", name="Tess Owner")
    workspace = make_workspace("Podcast", owner=owner)
    member = make_user("mo@example.com", name="Mo Member")
    add_member(workspace, member, Role.MEMBER)
    pieces = []
    for wav, _text in human_recordings()[:3]:
        pieces += [samples_of(wav), silence(0.5)]
    recording = tmp_path / "episode.wav"
    recording.write_bytes(wav_bytes(np.concatenate(pieces)))

    page = browser.new_context(base_url=daphne_server.url).new_page()
    sign_in(page, member.email)
    page.goto("/transcripts/")
    page.get_by_role("link", name="Transcribe the first recording").click()
    page.get_by_label("Recording (audio or video)").set_input_files(str(recording))
    expect(page.locator("[data-file-info]")).to_contain_text("episode.wav")
    expect(page.locator("[data-estimate-file]")).to_contain_text("this recording:")
    page.get_by_label("Title").fill("Episode 1 ✨")
    page.get_by_role("button", name="Upload and transcribe").click()
    expect(page.get_by_role("heading", name="Episode 1 ✨")).to_be_visible()
    transcript = Transcript.objects.get()

    # The job runs on the worker; the page turns into the transcript when it is done.
    paragraphs = page.locator("section.paragraph")
    expect(paragraphs.first).to_be_visible(timeout=120_000)
    transcript.refresh_from_db()
    assert transcript.status == TranscriptStatus.READY

    # Click a word: the recording seeks there and plays; the word being spoken is marked.
    audio = page.locator("[data-transcript-player] audio")
    audio.evaluate("a => { a.preload = 'auto'; a.load(); }")
    page.wait_for_function("a => isFinite(a.duration)", arg=audio.element_handle())
    word = page.locator(".w[data-start]").nth(12)
    start = float(word.get_attribute("data-start"))
    word.click()
    page.wait_for_function(
        "([a, s]) => !a.paused && a.currentTime >= s && a.currentTime < s + 3",
        arg=[audio.element_handle(), start],
    )
    expect(page.locator(".w.speaking")).to_have_count(1)
    audio.evaluate("a => a.pause()")

    # Correct the first paragraph in place (htmx).
    first = paragraphs.first
    first.locator("summary").click()
    first.get_by_label("Text").fill("Corrected opening line of the episode.")
    first.get_by_role("button", name="Save text").click()
    expect(page.locator("section.paragraph").first).to_contain_text("Corrected opening line")
    transcript.refresh_from_db()
    assert transcript.text.startswith("Corrected opening line of the episode.")

    # Captions download and parse.
    response = page.request.get(f"/transcripts/{transcript.pk}/export/srt/")
    assert response.status == 200
    cues = list(srt.parse(response.text()))
    assert cues[0].content.startswith("Corrected opening")


def test_the_export_menu_floats_closes_on_escape_and_after_a_download_in_the_member_s_zone(
    browser, daphne_server
):
    """The Export menu is a real menu (keyboard, Escape, closes after a download, moves
    nothing); the transcript's date follows the browser's time zone (the ``tz`` cookie)."""
    from datetime import UTC, datetime

    from playwright.sync_api import expect

    from tests.transcripts.test_editor import make_transcript

    owner = make_user("edda@example.com", name="Edda Owner")
    workspace = make_workspace("Exports", owner=owner)
    transcript = make_transcript(workspace, owner)
    Transcript.objects.filter(pk=transcript.pk).update(
        created_at=datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    )
    context = browser.new_context(
        base_url=daphne_server.url, timezone_id="Europe/Berlin", accept_downloads=True
    )
    page = context.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, owner.email)
    page.goto(f"/transcripts/{transcript.pk}/")
    assert "tz=Europe/Berlin" in page.evaluate("document.cookie")
    page.reload()  # the cookie is sent from now on: 12:00 UTC is 13:00 in Berlin
    expect(page.locator(".page-head time").first).to_have_text("15 Jan 2026, 13:00")
    # Breadcrumbs link back: Create › Transcripts › the transcript.
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    expect(crumbs.get_by_role("link", name="Transcripts")).to_have_attribute(
        "href", "/transcripts/"
    )
    expect(crumbs).to_contain_text(transcript.title)

    menu = page.locator("details[data-export-menu]")
    summary = menu.locator("summary")
    list_ = menu.locator(".dropdown-list")
    below = page.locator("#transcript-body")
    top_before = below.evaluate("el => el.getBoundingClientRect().top")
    # Keyboard: focus the button, Enter opens, the first format is one Tab away.
    summary.focus()
    page.keyboard.press("Enter")
    expect(list_).to_be_visible()
    assert below.evaluate("el => el.getBoundingClientRect().top") == top_before  # nothing moved
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Text (.txt)"
    page.keyboard.press("Escape")
    expect(list_).to_be_hidden()
    assert page.evaluate("document.activeElement.tagName") == "SUMMARY"
    # Open it again and choose captions: the file downloads and the menu closes.
    summary.click()
    with page.expect_download() as download:
        menu.get_by_role("link", name="SubRip captions (.srt)").click()
    assert download.value.suggested_filename.endswith(".srt")
    expect(list_).to_be_hidden()
    # A click outside closes it too.
    summary.click()
    expect(list_).to_be_visible()
    page.locator("h1").click()
    expect(list_).to_be_hidden()
    assert not errors, errors
    context.close()
