"""In a real Chromium a member designs a voice (live counters, a refused short description),
generates three previews, plays one, saves it with a tag, finds it in the library by search
and plays its preview there, then tries it: the estimate follows the text, and the spoken
clip plays on the page. Every audio element's source decodes and its clock advances."""

import pytest

from apps.billing.models import UsageEvent
from apps.voices.models import LibraryVoice, Tag, VoiceDesign
from apps.workspaces.models import Role
from tests.e2e.conftest import htmx_ready, sign_in
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DESCRIPTION = "A friendly harbour guide, middle-aged man, warm and unhurried, light Irish lilt."
TEXT = (
    "Welcome to the old harbour. On your left, the lighthouse has watched over these waters "
    "for two hundred years, and it still does."
)


def plays(page, audio) -> float:
    """Start ``audio``; wait until the browser decoded it and its time advanced. Its length."""
    audio.evaluate("a => { a.preload = 'auto'; a.load(); return a.play(); }")
    page.wait_for_function(
        "a => a.currentTime > 0.3 && isFinite(a.duration)", arg=audio.element_handle()
    )
    audio.evaluate("a => a.pause()")
    return audio.evaluate("a => a.duration")


def test_design_generate_play_save_find_and_try(browser, daphne_server):
    from playwright.sync_api import expect

    owner = make_user("olga@example.com", name="Olga Owner")
    workspace = make_workspace("Harbour tours", owner=owner)
    member = make_user("max@example.com", name="Max Member")
    add_member(workspace, member, Role.MEMBER)
    Tag.objects.create(workspace=workspace, name="tours")  # a manager made it; members attach

    page = browser.new_context(base_url=daphne_server.url).new_page()
    sign_in(page, member.email)
    page.goto("/voices/designs/")
    expect(page.get_by_text("No designs yet.")).to_be_visible()
    page.get_by_role("link", name="Design the team's first voice").click()

    # A description that is too short is refused with a message; the counter follows typing.
    description = page.get_by_label("Description", exact=True)
    description.fill("Too short")
    expect(page.locator('[data-counter-for="id_description"]')).to_contain_text("9/1000")
    page.get_by_label("Preview text", exact=True).fill(TEXT)
    page.get_by_label("Seed").fill("4242")
    page.get_by_role("button", name="Generate previews").click()
    # The browser holds the form back itself (minlength), saying why, before any request.
    assert description.evaluate("el => !el.validity.valid && el.validationMessage.length > 0")
    expect(page).to_have_url(f"{daphne_server.url}/voices/design/")
    assert not VoiceDesign.objects.exists()

    page.get_by_label("Description", exact=True).fill(DESCRIPTION)
    page.get_by_role("button", name="Generate previews").click()
    expect(page.get_by_role("heading", name="Previews")).to_be_visible(timeout=30_000)
    expect(page.locator("#design-seed")).to_have_text("4242")
    previews = page.locator("[data-preview]")
    expect(previews).to_have_count(3)
    for letter in "ABC":
        expect(page.locator(f'[data-preview="{letter}"] audio')).to_have_count(1)
    assert plays(page, page.locator('[data-preview="B"] audio')) > 3

    # Save preview B as a voice with a tag.
    page.locator('[data-preview="B"] summary').click()
    page.locator('[data-preview="B"]').get_by_label("Name").fill("Harbour Guide")
    page.locator('[data-preview="B"]').get_by_label("Tags (comma separated)").fill("tours")
    page.locator('[data-preview="B"]').get_by_role("button", name="Save voice").click()
    expect(page.get_by_role("heading", name="Harbour Guide", level=1)).to_be_visible()
    voice = LibraryVoice.objects.get(name="Harbour Guide")
    assert voice.design == VoiceDesign.objects.get() and voice.design_preview == 1

    # Find it in the library by search, and play its preview there.
    page.goto("/voices/")
    page.get_by_label("Search voices").fill("harbour")
    expect(page).to_have_url(f"{daphne_server.url}/voices/?q=harbour")  # the results swapped
    cards = page.locator(".voice-card")
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text("Harbour Guide")
    expect(cards.first).to_contain_text("#tours")
    # The card's play button plays the preview it was saved from in the page's one player.
    cards.first.get_by_role("button", name="Play the preview of Harbour Guide").click()
    page.wait_for_function(
        "a => !a.paused && a.currentTime > 0.3",
        arg=page.locator("#voice-preview-audio").element_handle(),
    )

    # Try it: the estimate follows the text, and the clip plays on the page.
    cards.first.get_by_role("link", name="Harbour Guide").click()
    htmx_ready(page.get_by_label("Text to say"))
    page.get_by_label("Text to say").fill("Mind the gap between the boat and the pier.")
    expect(page.locator("#try-estimate")).to_contain_text("43/500 characters")
    page.get_by_role("button", name="Speak").click()
    clip = page.locator("#tried audio")
    expect(clip).to_have_count(1, timeout=30_000)
    assert plays(page, clip) > 1
    assert UsageEvent.objects.filter(capability="tts", purpose_id=str(voice.pk)).count() == 1
