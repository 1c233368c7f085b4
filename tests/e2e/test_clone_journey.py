"""In a real Chromium whose microphone plays a recording of speech, a member records a sample
in the browser, states the speaker's consent and clones the voice; the voice page shows the
consent and plays the recorded sample (it decodes, and its clock advances)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.voices.models import LibraryVoice, VoiceConsent
from apps.workspaces.models import Role
from tests.e2e.conftest import sign_in
from tests.e2e.test_design_journey import plays
from tests.factories import add_member, make_user, make_workspace
from tests.gateway.test_api_media import spoken

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPEECH = (
    "The quick brown fox jumps over the lazy dog. Every good boy deserves fudge, and the rain "
    "in Spain stays mainly in the plain."
)


@pytest.fixture
def microphone_wav():
    """What the fake microphone of ``speaking_browser`` plays."""
    return spoken(SPEECH, output_format="wav_16000")


def test_record_a_sample_state_consent_clone_and_play_it(speaking_browser, daphne_server):
    from playwright.sync_api import expect

    owner = make_user("rita@example.com", name="Rita Owner")
    workspace = make_workspace("Radio drama", owner=owner)
    member = make_user("sam@example.com", name="Sam Member")
    add_member(workspace, member, Role.MEMBER)

    page = speaking_browser.new_context(base_url=daphne_server.url).new_page()
    sign_in(page, member.email)
    page.goto("/voices/clone/")
    record = page.get_by_role("button", name="● Record a sample")
    expect(record).to_be_visible()  # shown only where the browser can record
    record.click()
    expect(page.locator("[data-record-status]")).to_contain_text("Recording…")
    page.wait_for_timeout(3500)
    page.get_by_role("button", name="■ Stop").click()
    expect(page.locator("[data-record-status]")).to_contain_text("Recording 1 added")
    expect(page.locator("[data-sample-list] li")).to_have_count(1)
    assert page.locator("#clone-samples").evaluate("i => i.files.length") == 1

    page.get_by_label("Name", exact=True).fill("Sam's voice")
    page.get_by_label("Whose voice is it?").fill("Sam Member")
    page.get_by_label("Consent statement").fill("I, Sam, agree to this clone for internal drafts.")
    page.get_by_label("Internal drafts and review").check()
    expiry = timezone.localdate() + timedelta(days=60)
    page.get_by_label("Consent expires on").fill(expiry.isoformat())
    page.get_by_label("I confirm the speaker consented").check()
    page.get_by_role("button", name="Clone the voice").click()

    expect(page.get_by_role("heading", name="Sam's voice", level=1)).to_be_visible(timeout=30_000)
    voice = LibraryVoice.objects.get(name="Sam's voice")
    consent = VoiceConsent.objects.get(library_voice=voice)
    [sample] = consent.samples
    assert sample["filename"] == "recording-1.webm" and 2.0 < sample["seconds"] < 10
    assert consent.expires_at.date() == expiry
    expect(page.get_by_text("Sam Member", exact=True)).to_be_visible()
    assert plays(page, page.locator(".samples audio").first) > 2
