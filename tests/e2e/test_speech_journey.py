"""In a real Chromium a member opens the Speech page, hears a voice's preview, moves a slider
and resets it to the voice's settings, types a text longer than one part (the estimate and
the number of parts follow), generates: the take plays while its parts are made one after
the other, then the waveform player offers the whole take's download; "use these settings
again" from any part brings the whole text back. No console error, no sideways scroll at
1366×860 or 390×844. (The server's parts hold 120 characters, ``CHORUS_SPEECH_PART_MAX``,
so a take in parts is quick to make.)"""

import pytest

from apps.generation.text_parts import split_text
from apps.history.models import Generation
from apps.voices import services as voice_services
from apps.voices.models import LibraryVoice
from apps.workspaces.models import Role
from tests.e2e.conftest import sign_in
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TEXT = (
    "Hello from the Speech page. This take plays while it is made, part after part. "
    "Zoë says hi! A long text is split at its sentences into parts the model takes at once. "
    "Each part is its own call, and the parts play back to back. That is all for now."
)
PART_MAX = 120


@pytest.fixture
def short_parts(live_env):
    """The server's takes are split into parts of ``PART_MAX`` characters."""
    live_env["CHORUS_SPEECH_PART_MAX"] = str(PART_MAX)


NO_SIDEWAYS = "document.documentElement.scrollWidth <= window.innerWidth"


def test_a_member_previews_a_voice_generates_hears_the_take_and_downloads_it(
    browser, short_parts, daphne_server, settings, tmp_path
):
    from playwright.sync_api import expect

    owner = make_user("sara@example.com", name="Sara Owner")
    workspace = make_workspace("Speech shop", owner=owner)
    member = make_user("mo@example.com", name="Mo Member")
    add_member(workspace, member, Role.MEMBER)
    voice_services.library_sync(workspace=workspace)
    assert LibraryVoice.objects.filter(workspace=workspace, voice_id="local-joe").exists()
    # Joe's preview is the library's own (made on first play by the local engine, then kept).

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

    # Joe's preview plays from the picker; every voice of the local engine has one.
    play = page.get_by_role("button", name="Play the preview of Joe")
    play.click()
    page.wait_for_function(
        "() => document.querySelector('[data-voice-preview]').currentTime > 0", timeout=15_000
    )
    expect(page.get_by_role("button", name="Stop the preview of Joe")).to_have_attribute(
        "aria-pressed", "true"
    )
    assert page.get_by_role("button", name="Play the preview of Wisp").count() == 1

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
    parts = split_text(TEXT, PART_MAX)
    assert len(parts) == 3
    expect(page.locator("[data-parts]")).to_be_visible()
    expect(page.locator("[data-parts-n]")).to_have_text(str(-(-len(TEXT) // PART_MAX)))
    page.get_by_label("Seed").fill("42")

    # Generate: the take plays while its parts are made, then the player offers its download.
    page.get_by_role("button", name="Generate speech").click()
    expect(page.locator("[data-take-status]")).to_contain_text("in 3 parts")
    page.wait_for_function(
        "() => { const a = document.querySelector('#take audio'); return a && a.currentTime > 0; }",
        timeout=60_000,
    )
    download_link = page.locator("#take [data-take-done] a[download]")
    expect(download_link).to_be_visible(timeout=120_000)
    expect(page.locator("#take [data-take-done]")).to_contain_text("3 of 3 parts")
    clips = sorted(
        Generation.objects.filter(workspace=workspace, user=member),
        key=lambda clip: clip.recipe["take"]["part"],
    )
    assert [clip.text for clip in clips] == parts  # one History clip per part ...
    assert len({clip.recipe["take"]["id"] for clip in clips}) == 1  # ... of the one take
    assert all(clip.voice_id == "local-joe" and clip.complete for clip in clips)
    assert all(clip.recipe["seed"] == 42 for clip in clips)
    assert clips[0].recipe["voice_settings"]["speed"] == 1.0
    with page.expect_download() as info:
        download_link.click()
    saved = tmp_path / "take.mp3"
    info.value.save_as(saved)
    # The whole take: the parts' MP3 back to back.
    assert saved.read_bytes() == b"".join(clip.file.open("rb").read() for clip in clips)
    assert saved.stat().st_size > 20_000
    expect(page.locator("#take [data-player]")).to_be_visible()
    # The player plays the whole take: as long as its parts together.
    page.wait_for_function(
        "() => { const a = document.querySelector('#take [data-player] audio');"
        " return a && isFinite(a.duration) && a.duration > 0; }",
        timeout=30_000,
    )
    duration = page.evaluate("document.querySelector('#take [data-player] audio').duration")
    assert abs(duration - sum(clip.duration_seconds for clip in clips)) < 1.0
    assert page.evaluate(NO_SIDEWAYS)

    # "Use these settings again" on a phone: the recipe comes back.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/speech/?from={clips[1].pk}")  # any part: the whole take
    expect(page.get_by_label("Text to speak")).to_have_value(TEXT)
    expect(page.get_by_label("Seed")).to_have_value("42")
    expect(page.locator("input[name=voice_id][value=local-joe]")).to_be_checked()
    assert page.evaluate(NO_SIDEWAYS)
    page.goto("/speech/")
    assert page.evaluate(NO_SIDEWAYS)
    assert errors == []
