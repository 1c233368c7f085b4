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
