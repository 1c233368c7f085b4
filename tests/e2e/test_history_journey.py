"""A member's script speaks through /v1 with a personal key; in a real Chromium the member
finds the clip on the History page, plays it (the audio decodes and its time advances), seeks
it, filters by kind, tries a bad page number, and deletes it (its cost stays in the ledger).
Then (issue 14): searches by voice with the filters in the address bar, downloads two clips
as a ZIP, deletes them in bulk after a confirmation, at a laptop and a phone width with no
sideways scroll and no console error."""

import io
import zipfile

import httpx
import pytest

from apps.billing.models import UsageEvent, UsageStatus
from apps.gateway.services import api_key_create
from apps.history.models import Generation
from tests.e2e.conftest import sign_in
from tests.factories import make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TEXT = "History keeps every clip the team made, so nothing paid for is lost."


def test_a_clip_made_through_the_api_plays_seeks_filters_and_deletes_in_history(
    browser, daphne_server
):
    from playwright.sync_api import expect

    owner = make_user("hana@example.com", name="Hana Host")
    workspace = make_workspace("Clip studio", owner=owner)
    key = api_key_create(workspace=workspace, user=owner, name="script").raw
    spoken = httpx.post(
        f"{daphne_server.url}/v1/text-to-speech/local-joe",
        headers={"xi-api-key": key},
        json={"text": TEXT},
        timeout=60,
    )
    assert spoken.status_code == 200, spoken.text
    [generation] = Generation.objects.filter(workspace=workspace)
    assert generation.request_id == spoken.headers["request-id"]

    context = browser.new_context(base_url=daphne_server.url)
    page = context.new_page()
    sign_in(page, owner.email)
    page.goto("/history/")
    row = page.locator(f'tr[data-history-item="{generation.history_item_id}"]')
    expect(row).to_contain_text("Speech")
    expect(row).to_contain_text("History keeps every clip")
    expect(row).to_contain_text("API")

    # Play: the browser decodes the stored MP3 (duration known) and its clock advances.
    player = row.locator("audio")
    player.evaluate("a => { a.preload = 'auto'; a.load(); return a.play(); }")
    page.wait_for_function(
        "a => a.currentTime > 0.3 && isFinite(a.duration)", arg=player.element_handle()
    )
    duration = player.evaluate("a => a.duration")
    assert duration == pytest.approx(generation.duration_seconds, abs=0.3)
    # Seek near the end (served with HTTP ranges): playback continues from there.
    player.evaluate("a => { a.currentTime = a.duration - 1; }")
    page.wait_for_function(
        "a => a.currentTime >= a.duration - 1 && !a.seeking", arg=player.element_handle()
    )
    player.evaluate("a => a.pause()")

    # Filter by another kind: the empty state; back to all: the clip again (URL kept).
    page.get_by_label("Kind").select_option("music")
    expect(page.get_by_text("No clips match these filters")).to_be_visible()
    expect(page).to_have_url(f"{daphne_server.url}/history/?kind=music")
    page.get_by_label("Kind").select_option("")
    expect(row).to_be_visible()

    # A page number that is not a number is the first page, not an error; a kind that is no
    # kind is said beside its menu (400), never a server error.
    response = page.goto("/history/?page=abc")
    assert response.status == 200
    expect(page.get_by_role("heading", name="History", level=1)).to_be_visible()
    response = page.goto("/history/?kind=nonsense")
    assert response.status == 400
    expect(page.get_by_text("Select a valid choice")).to_be_visible()

    page.goto("/history/")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No clips yet")).to_be_visible()
    assert not Generation.objects.filter(pk=generation.pk).exists()
    [event] = UsageEvent.objects.filter(workspace=workspace)
    assert (event.status, event.request_id) == (UsageStatus.SETTLED, generation.request_id)
    context.close()


def test_search_bulk_download_and_bulk_delete_in_history(browser, daphne_server):
    from playwright.sync_api import expect

    owner = make_user("hana@example.com", name="Hana Host")
    workspace = make_workspace("Clip studio", owner=owner)
    key = api_key_create(workspace=workspace, user=owner, name="script").raw
    for voice, text in [("local-joe", "First take by Joe."), ("local-joe", "Second take by Joe."),
                        ("local-joe", "A take by Amy.")]:  # fmt: skip
        spoken = httpx.post(
            f"{daphne_server.url}/v1/text-to-speech/{voice}",
            headers={"xi-api-key": key},
            json={"text": text},
            timeout=60,
        )
        assert spoken.status_code == 200, spoken.text
    joes = list(Generation.objects.filter(workspace=workspace, text__contains="by Joe"))
    assert len(joes) == 2
    joe_name = "by Joe"
    errors = []

    context = browser.new_context(base_url=daphne_server.url, accept_downloads=True)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, owner.email)
    for width, height in [(1366, 860), (390, 844)]:
        page.set_viewport_size({"width": width, "height": height})
        page.goto("/history/")
        expect(page.locator("tr[data-history-item]")).to_have_count(3)
        scroll = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
        assert scroll[0] <= scroll[1], (width, scroll)
    page.set_viewport_size({"width": 1366, "height": 860})

    # Search (htmx as one types): the address bar keeps it.
    page.get_by_label("Search").fill(joe_name)
    expect(page.locator("tr[data-history-item]")).to_have_count(2)
    expect(page).to_have_url(f"{daphne_server.url}/history/?q=by+Joe")
    page.reload()  # the URL alone brings the same view back
    expect(page.locator("tr[data-history-item]")).to_have_count(2)

    # Tick both and download them as one ZIP.
    for generation in joes:
        page.locator(
            f'tr[data-history-item="{generation.history_item_id}"] input[name="ids"]'
        ).check()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download selected (ZIP)").click()
    with open(download.value.path(), "rb") as saved:
        archive = zipfile.ZipFile(io.BytesIO(saved.read()))
    assert sorted(g.history_item_id in n for n in archive.namelist() for g in joes).count(True) == 2
    assert len(archive.namelist()) == 2

    # Delete them in bulk: a confirmation first, then back to the same search.
    for generation in joes:
        page.locator(
            f'tr[data-history-item="{generation.history_item_id}"] input[name="ids"]'
        ).check()
    page.get_by_role("button", name="Delete selected…").click()
    expect(page.get_by_role("heading", name="Delete 2 clips?")).to_be_visible()
    assert Generation.objects.filter(workspace=workspace).count() == 3
    page.get_by_role("button", name="Delete 2 clips").click()
    expect(page.get_by_text("2 clips deleted.")).to_be_visible()
    expect(page).to_have_url(f"{daphne_server.url}/history/?q=by+Joe")
    kept = Generation.objects.filter(workspace=workspace).values_list("text", flat=True)
    assert list(kept) == ["A take by Amy."]
    assert UsageEvent.objects.filter(workspace=workspace).count() == 3  # the ledger keeps all
    assert errors == []
    context.close()
