"""In a real Chromium a member filters the voice library (the URL follows, the filter survives a
reload), stars a voice, opens its page, tries an empty note (a clear message, nothing saved),
writes one, and proposes the voice; a manager then rejects it with a reason the member sees."""

import pytest

from apps.voices.models import Approval, LibraryVoice, VoiceNote
from apps.workspaces.models import Role
from tests.e2e.conftest import sign_in
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_member_filters_stars_notes_and_proposes_and_a_manager_rejects(browser, daphne_server):
    from playwright.sync_api import expect

    owner = make_user("lena@example.com", name="Lena Lead")
    workspace = make_workspace("Voice shop", owner=owner)
    member = make_user("milo@example.com", name="Milo Member")
    add_member(workspace, member, Role.MEMBER)
    # The workspace's set-up filled the library from the local engine; this walk filters a
    # library of its own three voices.
    assert LibraryVoice.objects.filter(workspace=workspace).count() > 3
    LibraryVoice.objects.filter(workspace=workspace).delete()
    for voice_id, name, gender, accent in [
        ("v-ada", "Ada", "female", "british"),
        ("v-bob", "Bob", "male", "american"),
        ("v-cy", "Cy", "male", "british"),
    ]:
        LibraryVoice.objects.create(
            workspace=workspace, engine="local", voice_id=voice_id, name=name, gender=gender,
            accent=accent, labels={"gender": gender, "accent": accent},
        )  # fmt: skip
    url = daphne_server.url

    context = browser.new_context(base_url=url)
    page = context.new_page()
    sign_in(page, member.email)
    page.goto("/voices/")
    cards = page.locator(".voice-card")
    expect(cards).to_have_count(3)

    # Filters apply as they change (htmx), and the URL follows them.
    page.get_by_label("Any accent").select_option("british")
    expect(cards).to_have_count(2)
    expect(page).to_have_url(f"{url}/voices/?accent=british")
    page.get_by_label("Search voices").fill("cy")
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text("Cy")
    expect(page).to_have_url(f"{url}/voices/?q=cy&accent=british")
    page.reload()  # a shared link: the same filtered view
    expect(cards).to_have_count(1)
    expect(page.get_by_label("Any accent")).to_have_value("british")
    page.get_by_label("Search voices").fill("nobody-at-all")
    expect(page.get_by_text("No voice matches these filters")).to_be_visible()
    page.get_by_role("link", name="Clear the filters").click()
    expect(cards).to_have_count(3)

    # Star a voice; favourites only shows it.
    star = page.get_by_role("button", name="Add Bob to favourites")
    star.click()
    expect(page.get_by_role("button", name="Remove Bob from favourites")).to_have_attribute(
        "aria-pressed", "true"
    )
    page.get_by_label("Favourites only").check()
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text("Bob")

    # The voice page: a blank note is refused with a message, a real one is kept.
    page.get_by_role("link", name="Bob").click()
    expect(page.get_by_role("heading", name="Bob", level=1)).to_be_visible()
    page.get_by_label("Add a note").fill("   ")
    page.get_by_role("button", name="Add note").click()
    expect(page.get_by_role("alert")).to_contain_text("A note needs some text.")
    assert not VoiceNote.objects.exists()
    page.get_by_label("Add a note").fill("Good for product explainers ✨")
    page.get_by_role("button", name="Add note").click()
    expect(page.get_by_text("Good for product explainers ✨", exact=True)).to_be_visible()
    page.get_by_role("button", name="Propose for production").click()
    expect(page.get_by_text("Proposed for production: a manager will review it.")).to_be_visible()
    voice_url = page.url

    # The owner rejects it with a reason; the member reads the reason.
    manager_page = browser.new_context(base_url=url).new_page()
    sign_in(manager_page, owner.email)
    manager_page.goto(voice_url)
    manager_page.get_by_role("button", name="Reject").click()  # no reason: refused
    expect(manager_page.get_by_role("alert")).to_contain_text("Say why")
    manager_page.get_by_label("Reason (needed to reject)").fill("Too bright for our brand")
    manager_page.get_by_role("button", name="Reject").click()
    expect(manager_page.get_by_text("Reason: Too bright for our brand")).to_be_visible()
    page.reload()
    expect(page.get_by_text("Reason: Too bright for our brand")).to_be_visible()
    assert LibraryVoice.objects.get(voice_id="v-bob").approval == Approval.REJECTED
    context.close()
