"""In a real Chromium: a library card's play button plays the voice's preview; the try-it box
speaks with its button disabled while working and offers the clip for download; and every
voice page fits the screen at 1366×860 and 390×844 (no sideways scroll, the library's sort,
collection and favourites controls on screen), with no console error anywhere."""

import pytest

from apps.voices.models import Collection, LibraryVoice, VoiceDesign
from apps.workspaces.models import Role
from tests.e2e.conftest import htmx_ready, sign_in
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIZES = [(1366, 860), (390, 844)]


def watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


@pytest.fixture
def studio(daphne_server):
    """A workspace whose set-up filled the library with the local engine's voices, an owner
    and a member, a collection, and two designs (for the design and compare pages)."""
    owner = make_user("olga@example.com", name="Olga Owner")
    workspace = make_workspace("Voice shop", owner=owner)
    member = make_user("max@example.com", name="Max Member")
    add_member(workspace, member, Role.MEMBER)
    premade = LibraryVoice.objects.get(workspace=workspace, voice_id="local-espeak-en-us")
    books = Collection.objects.create(workspace=workspace, name="Audiobook narrators")
    books.voices.add(premade)
    designs = [
        VoiceDesign.objects.create(
            workspace=workspace,
            created_by=member,
            uid=f"d{n}",
            engine="local",
            description="A calm, warm narrator with a slight British accent, for audiobooks.",
            text="x" * 120,
            model_id="eleven_multilingual_ttv_v2",
            guidance_scale=5,
            loudness=0.5 - n,
            seed=7,
            request={},
            previews=[],
        )  # fmt: skip
        for n in range(2)
    ]
    return {"url": daphne_server.url, "owner": owner, "member": member, "voice": premade,
            "designs": designs}  # fmt: skip


def test_a_card_s_play_button_plays_the_premade_voice_s_preview(browser, studio):
    page = browser.new_context(base_url=studio["url"]).new_page()
    errors = watch_errors(page)
    sign_in(page, studio["member"].email)
    page.goto("/voices/")
    cards = page.locator(".voice-card")
    assert cards.count() >= 10  # the engine's voices, without anyone pressing Sync
    assert page.locator(".voice-card [data-voice-preview]").count() == cards.count()
    button = page.get_by_role("button", name="Play the preview of Eddie")
    button.click()
    audio = page.locator("#voice-preview-audio")
    page.wait_for_function(
        "a => !a.paused && a.currentTime > 0", arg=audio.element_handle(), timeout=30_000
    )
    page.wait_for_timeout(300)
    assert audio.evaluate("a => !a.paused && a.currentTime > 0")
    assert button.get_attribute("aria-pressed") == "true"
    button.click()  # the same button stops it
    page.wait_for_function("a => a.paused", arg=audio.element_handle())
    assert button.get_attribute("aria-pressed") == "false"
    assert errors == []


def test_speak_disables_its_button_and_the_clip_comes_with_a_download_link(browser, studio):
    from playwright.sync_api import expect

    page = browser.new_context(base_url=studio["url"]).new_page()
    errors = watch_errors(page)
    sign_in(page, studio["member"].email)
    page.goto(f"/voices/{studio['voice'].pk}/")
    page.evaluate(
        """() => document.body.addEventListener("htmx:beforeSend", (e) => {
             if (e.detail.elt.matches("form")) window.speakDisabled =
               document.getElementById("try-speak").disabled;
           })"""
    )
    htmx_ready(page.get_by_label("Text to say"))
    page.get_by_label("Text to say").fill("Mind the gap between the boat and the pier.")
    expect(page.locator("#try-estimate")).to_contain_text("43/500 characters")
    page.get_by_role("button", name="Speak").click()
    clip = page.locator("#tried audio")
    expect(clip).to_have_count(1, timeout=30_000)
    download = page.locator("#tried a[download]")
    expect(download).to_be_visible()
    assert download.get_attribute("href") == clip.get_attribute("src")
    assert page.evaluate("window.speakDisabled") is True  # disabled while it worked
    expect(page.get_by_role("button", name="Speak")).to_be_enabled()
    assert errors == []


def test_voice_pages_fit_the_screen_with_no_console_error(browser, studio):
    a, b = studio["designs"]
    paths = [
        "/voices/",
        f"/voices/{studio['voice'].pk}/",
        "/voices/design/",
        "/voices/designs/",
        f"/voices/designs/{a.pk}/",
        f"/voices/designs/compare/?a={a.pk}&b={b.pk}",
        "/voices/clone/",
        "/voices/consents/",
    ]
    for width, height in SIZES:
        context = browser.new_context(
            base_url=studio["url"], viewport={"width": width, "height": height}
        )
        page = context.new_page()
        errors = watch_errors(page)
        sign_in(page, studio["owner"].email)
        for path in paths:
            page.goto(path)
            page.wait_for_load_state("networkidle")
            scroll, inner = page.evaluate(
                "[document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert scroll <= inner, f"{path} at {width}px is {scroll}px wide"
        page.goto("/voices/")
        for control in ("#voice-sort", "#filter-collection", "#filter-favourites"):
            box = page.locator(control).bounding_box()
            assert box is not None, control
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, (control, width, box)
        bullets = page.evaluate(
            "getComputedStyle(document.querySelector('.voice-grid')).listStyleType"
        )
        assert bullets == "none"
        assert errors == [], (width, errors)
        context.close()
