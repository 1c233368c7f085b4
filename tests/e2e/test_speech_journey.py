"""In a real Chromium a member opens the Speech page, hears a voice's preview, moves a slider
and resets it to the voice's settings, types text (the estimate follows), generates: the take
plays while it is made, then the waveform player offers its download; "use these settings
again" brings the recipe back. No console error, no sideways scroll at 1366×860 or 390×844."""

import pytest

from apps.generation.caller import Caller
from apps.generation.speech import SpeechInput, speak
from apps.history.models import Generation
from apps.voices import services as voice_services
from apps.voices.models import LibraryVoice
from apps.workspaces.models import Role
from tests.e2e.conftest import sign_in
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TEXT = "Hello from the Speech page. This take plays while it is made. Zoë says hi!"
NO_SIDEWAYS = "document.documentElement.scrollWidth <= window.innerWidth"


def test_a_member_previews_a_voice_generates_hears_the_take_and_downloads_it(
    browser, daphne_server, settings, tmp_path
):
    from playwright.sync_api import expect

    owner = make_user("sara@example.com", name="Sara Owner")
    workspace = make_workspace("Speech shop", owner=owner)
    member = make_user("mo@example.com", name="Mo Member")
    add_member(workspace, member, Role.MEMBER)
    voice_services.library_sync(workspace=workspace)
    joe = LibraryVoice.objects.get(workspace=workspace, voice_id="local-joe")
    # Joe's preview: a clip of his (the voices app gives every voice one; made here).
    sample = speak(
        caller=Caller(workspace=workspace, user=owner, draft=True),
        speech=SpeechInput(voice_id="local-joe", text="Hi, I am Joe."),
    )
    preview = Generation.objects.get(request_id=sample.request_id)
    joe.preview_url = f"/history/{preview.pk}/audio/"
    joe.save(update_fields=["preview_url"])

    errors: list[str] = []
    context = browser.new_context(
        base_url=daphne_server.url, viewport={"width": 1366, "height": 860}, accept_downloads=True
    )
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, member.email)
    page.wait_for_url(f"{daphne_server.url}/")
    page.goto("/speech/")
    expect(page.get_by_role("heading", name="Speech", level=1)).to_be_visible()
    assert page.evaluate(NO_SIDEWAYS)

    # Joe's preview plays from the picker; a voice without one has no button.
    play = page.get_by_role("button", name="Play the preview of Joe")
    play.click()
    page.wait_for_function(
        "() => document.querySelector('[data-voice-preview]').currentTime > 0", timeout=15_000
    )
    expect(page.get_by_role("button", name="Stop the preview of Joe")).to_have_attribute(
        "aria-pressed", "true"
    )
    assert page.get_by_role("button", name="Play the preview of Wisp").count() == 0

    # The voice, a slider moved and reset to the voice's settings, the text and its estimate.
    page.locator("input[name=voice_id][value=local-joe]").check()
    speed = page.get_by_label("Speed")
    speed.fill("1.15")
    expect(page.locator('[data-value-of="id_speed"]')).to_have_text("1.15")
    page.get_by_role("button", name="Reset to the voice's settings").click()
    expect(speed).to_have_value("1")
    expect(page.locator('[data-value-of="id_speed"]')).to_have_text("1")
    page.get_by_label("Text to speak").fill(TEXT)
    expect(page.locator("[data-chars]")).to_have_text(f"{len(TEXT)} characters")
    page.get_by_label("Seed").fill("42")

    # Generate: the take plays while it is made, then the player offers its download.
    page.get_by_role("button", name="Generate speech").click()
    page.wait_for_function(
        "() => { const a = document.querySelector('#take audio'); return a && a.currentTime > 0; }",
        timeout=60_000,
    )
    download_link = page.locator("#take [data-take-done] a[download]")
    expect(download_link).to_be_visible(timeout=90_000)
    take = Generation.objects.get(workspace=workspace, user=member)
    assert take.text == TEXT and take.voice_id == "local-joe" and take.complete
    assert take.recipe["seed"] == 42 and take.recipe["voice_settings"]["speed"] == 1.0
    with page.expect_download() as info:
        download_link.click()
    saved = tmp_path / "take.mp3"
    info.value.save_as(saved)
    assert saved.read_bytes() == take.file.open("rb").read()
    assert saved.stat().st_size > 10_000
    expect(page.locator("#take [data-player]")).to_be_visible()
    assert page.evaluate(NO_SIDEWAYS)

    # "Use these settings again" on a phone: the recipe comes back.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/speech/?from={take.pk}")
    expect(page.get_by_label("Text to speak")).to_have_value(TEXT)
    expect(page.get_by_label("Seed")).to_have_value("42")
    expect(page.locator("input[name=voice_id][value=local-joe]")).to_be_checked()
    assert page.evaluate(NO_SIDEWAYS)
    page.goto("/speech/")
    assert page.evaluate(NO_SIDEWAYS)
    assert errors == []
