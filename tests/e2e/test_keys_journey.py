"""Creating an API key in a real Chromium, on a laptop and a phone: the one-time key appears
where the eye is (in the viewport, focused), the Revoke button stays on screen, the page never
scrolls sideways, and a reload never shows the key again."""

import pytest

from apps.gateway import services
from apps.workspaces.models import Role
from tests.e2e.conftest import sign_in
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIZES = {"laptop": (1366, 860), "phone": (390, 844)}


def _watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


@pytest.mark.parametrize("size", SIZES, ids=list(SIZES))
def test_a_new_key_is_shown_in_view_and_focused_and_never_again(browser, daphne_server, size):
    from playwright.sync_api import expect

    owner = make_user("lead@example.com", name="Lena Lead")
    workspace = make_workspace("Acme audio", owner=owner)
    teammate = make_user("nia@example.com", name="Nia")
    add_member(workspace, teammate, Role.MEMBER)
    # Enough keys (the owner sees everyone's, with an owner column) to push the form far down.
    for n in range(8):
        services.api_key_create(
            workspace=workspace,
            user=teammate if n % 2 else owner,
            name=f"Render script number {n}",
            scopes=["tts", "voices", "voice_design", "history"],
        )
    width, height = SIZES[size]
    context = browser.new_context(
        base_url=daphne_server.url, viewport={"width": width, "height": height}
    )
    page = context.new_page()
    errors = _watch_errors(page)
    sign_in(page, "lead@example.com")
    page.goto("/settings/api-keys/")

    # Every listed key's Revoke button is within the viewport's width, with no sideways scroll.
    revoke = page.locator("[data-revoke]").first
    revoke.scroll_into_view_if_needed()
    box = revoke.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # Create a key from the form at the bottom of the page.
    page.get_by_label("Name", exact=True).fill("Podcast render")
    page.get_by_role("button", name="Create key").click()
    key_box = page.locator("#new-key")
    expect(key_box).to_be_visible()
    raw = key_box.input_value()
    assert raw.startswith("chorus_")
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    page.wait_for_function(
        "() => document.activeElement && document.activeElement.closest('#new-key-panel')"
    )
    inside = page.evaluate(
        """() => {
            const r = document.getElementById('new-key').getBoundingClientRect();
            return r.top >= 0 && r.bottom <= window.innerHeight
                && r.left >= 0 && r.right <= window.innerWidth;
        }"""
    )
    assert inside, "the new key is inside the viewport"
    panel = page.locator("#new-key-panel")
    expect(panel).to_have_attribute("role", "status")
    expect(panel.get_by_role("button", name="Copy key")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # A reload (a GET) never shows the key again.
    page.reload()
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()
    expect(page.locator("#new-key")).to_have_count(0)
    assert raw not in page.content()
    expect(page.locator("#api-keys")).to_contain_text("Podcast render")
    assert errors == []
    context.close()
