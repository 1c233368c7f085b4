"""A manager, in a real Chromium (in Berlin), finds which member spent the most last week and
on which voice, with the filters in the address bar, and downloads the table as CSV: the
file holds the same numbers as the page. The chart draws (Chart.js from static/vendor) and
the console stays clean."""

import csv
import io
import re
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from apps.billing import services
from apps.billing.models import UsageEvent
from apps.billing.rollup import rollup_rebuild
from apps.workspaces.models import Role
from tests.e2e.conftest import sign_in
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BERLIN = ZoneInfo("Europe/Berlin")


def _spend(workspace, user, voice, credits, at):
    reservation = services.meter_reserve(
        workspace=workspace,
        user=user,
        capability="tts",
        engine="elevenlabs",
        model_id="eleven_multilingual_v2",
        units=credits,
        voice_id=voice,
    )
    event = services.meter_settle(event=reservation.event, units=credits, upstream_credits=credits)
    UsageEvent.objects.filter(pk=event.pk).update(created_at=at)


def test_a_manager_finds_the_top_spender_and_their_voice_last_week_and_downloads_it(
    browser, daphne_server
):
    from playwright.sync_api import expect

    owner = make_user("olga@example.com", name="Olga Owner")
    workspace = make_workspace("Berlin audio", owner=owner)
    manager = make_user("max@example.com", name="Max Manager")
    add_member(workspace, manager, Role.MANAGER)
    nia = make_user("nia@example.com", name="Nia Narrator")
    add_member(workspace, nia, Role.MEMBER)
    tom = make_user("tom@example.com", name="Tom Tester")
    add_member(workspace, tom, Role.MEMBER)

    today = datetime.now(UTC).astimezone(BERLIN).date()
    monday = today - timedelta(days=today.weekday() + 7)  # last week's Monday
    sunday = monday + timedelta(days=6)
    wednesday = datetime.combine(monday + timedelta(days=2), time(12), tzinfo=BERLIN)
    # Last week: Nia spends the most (1,700), most of it on voice-adam; Tom less (900).
    _spend(workspace, nia, "voice-adam", 1200, wednesday)
    _spend(workspace, nia, "voice-rachel", 500, wednesday + timedelta(hours=3))
    _spend(workspace, tom, "voice-rachel", 900, wednesday + timedelta(days=1))
    # This week Tom spends a lot — not last week's question.
    _spend(workspace, tom, "voice-adam", 5000, datetime.now(UTC))
    rollup_rebuild(workspace)

    context = browser.new_context(
        base_url=daphne_server.url, accept_downloads=True, timezone_id="Europe/Berlin"
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, manager.email)

    page.get_by_role("link", name="Spend", exact=True).click()
    expect(page.get_by_role("heading", name="Spend", level=1)).to_be_visible()
    # The browser's zone came through its cookie.
    expect(page.locator("[data-zone]")).to_have_text("Europe/Berlin")

    # Last week, per week, by member: Nia is on top.
    page.get_by_label("Per", exact=True).select_option("week")
    page.get_by_label("Group by", exact=True).select_option("member")
    page.get_by_label("From", exact=True).fill(monday.isoformat())
    page.get_by_label("To", exact=True).fill(sunday.isoformat())
    page.get_by_label("To", exact=True).press("Enter")  # the form submits from the keyboard
    expect(page).to_have_url(re.compile(r"/billing/spend/\?period=week&by=member&"))
    for part in (f"from={monday.isoformat()}", f"to={sunday.isoformat()}"):
        assert part in page.url
    rows = page.locator("#spend-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first.locator("th")).to_have_text("Nia Narrator")
    expect(rows.first.locator("[data-credits]")).to_have_text("1700.000")
    expect(page.locator("[data-spend-chart]")).to_be_visible()  # the chart drew
    # Under it, loaded after the page: the forecast against the plan, drawn as a line.
    expect(page.locator("#forecast-summary")).to_be_visible()
    expect(page.locator("[data-forecast-card]")).to_be_visible()

    # Then Nia only, by voice: voice-adam.
    page.get_by_label("Member", exact=True).select_option(label="Nia Narrator")
    page.get_by_label("Group by", exact=True).select_option("voice")
    page.get_by_role("button", name="Show").click()
    expect(rows.first.locator("th")).to_have_text("voice-adam")
    expect(rows.first.locator("[data-credits]")).to_have_text("1200.000")
    shared = page.url
    assert f"member={nia.pk}" in shared and "by=voice" in shared

    # The cell opens the ledger rows behind it.
    rows.first.locator("td[data-cell] a").first.click()
    expect(page.get_by_role("heading", name="Ledger rows")).to_be_visible()
    expect(page.locator("tr[data-event]")).to_have_count(1)
    expect(page.locator("tr[data-event]")).to_contain_text("Nia Narrator")
    page.go_back()

    # Download the table: the same rows and numbers.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download this table (CSV)").click()
    assert download.value.suggested_filename == (
        f"spend-{workspace.slug}-by-voice-per-week-{monday.isoformat()}-to-{sunday.isoformat()}.csv"
    )
    with open(download.value.path(), encoding="utf-8") as saved:
        table = list(csv.reader(io.StringIO(saved.read())))
    assert table[0][0] == "Voice"
    assert [row[0] for row in table[1:]] == ["voice-adam", "voice-rachel", "Total"]
    total_column = table[0].index("Total credits")
    assert [Decimal(row[total_column]) for row in table[1:]] == [1200, 500, 1700]

    # The shared URL shows the same to the owner.
    owner_page = browser.new_context(base_url=daphne_server.url, timezone_id="Europe/Berlin")
    other = owner_page.new_page()
    sign_in(other, owner.email)
    other.goto(shared)
    expect(other.locator("#spend-table tbody tr").first.locator("th")).to_have_text("voice-adam")
    owner_page.close()
    context.close()
    assert errors == []
