"""A team lead's first day, in a real Chromium against a real Daphne server and Celery worker:
sign in, invite a teammate who joins from another browser, export the workspace and download it.
"""

import io
import json
import re
import zipfile

import pytest

from tests.e2e.conftest import sign_in
from tests.factories import make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_invite_a_teammate_then_export_and_download(browser, daphne_server, celery_worker):
    from playwright.sync_api import expect

    owner = make_user("lead@example.com", name="Lena Lead")
    make_workspace("Acme audio", owner=owner)

    lead = browser.new_context(base_url=daphne_server.url, accept_downloads=True)
    page = lead.new_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    sign_in(page, "lead@example.com")
    expect(page.get_by_role("heading", name="Acme audio", level=1)).to_be_visible()

    # Invite a teammate; the link is shown to copy.
    page.get_by_role("link", name="Members").click()
    page.get_by_label("E-mail address").fill("nia@example.com")
    page.get_by_label("Role", exact=True).select_option("member")
    page.get_by_role("button", name="Send invitation").click()
    link_box = page.locator("[data-invite-link]")
    expect(link_box).to_be_visible()
    link = link_box.input_value()
    assert "/invite/" in link
    expect(page.locator("#invite .invitations")).to_contain_text("nia@example.com as member")
    # A refused invitation shows its reason next to the field (a 400 partial htmx swaps in).
    page.get_by_label("E-mail address").fill("lead@example.com")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_text("lead@example.com is already a member")).to_be_visible()

    # The teammate opens the link in their own browser and creates an account.
    teammate = browser.new_context(base_url=daphne_server.url)
    other = teammate.new_page()
    other.goto(link)
    expect(other.get_by_role("heading", name="Join Acme audio")).to_be_visible()
    other.get_by_label("Your name").fill("Nia New")
    other.get_by_label("Choose a password").fill("a long fresh passphrase")
    other.get_by_label("Repeat the password").fill("a long fresh passphrase")
    other.get_by_role("button", name="Create account and join").click()
    expect(other.get_by_role("heading", name="Acme audio", level=1)).to_be_visible()
    expect(other.get_by_text("You are member here")).to_be_visible()

    # Both appear on the lead's Members page.
    page.reload()
    table = page.locator("#member-table")
    expect(table).to_contain_text("lead@example.com")
    expect(table).to_contain_text("nia@example.com")

    # Export the workspace and watch the job finish live.
    page.get_by_role("link", name="Settings").click()
    page.get_by_role("button", name="Export workspace").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+/$"))
    status = page.locator("[data-job-status]")
    expect(status).to_have_text("Succeeded", timeout=60_000)
    expect(page.locator("[data-job-bar]")).to_have_attribute("value", "100")
    download_link = page.locator("[data-job-download]")
    expect(download_link).to_be_visible()
    with page.expect_download() as info:
        download_link.click()
    download = info.value
    assert download.suggested_filename.endswith(".zip")
    with open(download.path(), "rb") as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    members = {(m["email"], m["role"]) for m in json.loads(archive.read("members.json"))}
    assert members == {("lead@example.com", "owner"), ("nia@example.com", "member")}
    actions = [a["action"] for a in json.loads(archive.read("audit_log.json"))]
    assert "invitation.created" in actions and "invitation.accepted" in actions

    teammate.close()
    lead.close()


def test_progress_bar_moves_live_on_the_jobs_page(browser, daphne_server, celery_worker):
    """A slower job: the bar is seen between 0 and 100 before it completes, without reloads."""
    from playwright.sync_api import expect

    from apps.jobs import services

    owner = make_user("lead@example.com")
    workspace = make_workspace("Acme audio", owner=owner)
    context = browser.new_context(base_url=daphne_server.url)
    page = context.new_page()
    sign_in(page, "lead@example.com")
    job = services.job_start(
        workspace=workspace,
        kind="test_sleep",
        created_by=owner,
        params={"steps": 10, "step_seconds": 0.4},
    )
    page.goto(f"/jobs/{job.pk}/")
    bar = page.locator("[data-job-bar]")
    seen = set()
    page.wait_for_function(
        "() => { const v = +document.querySelector('[data-job-bar]').value;"
        " return v > 0 && v < 100; }",
        timeout=30_000,
    )
    seen.add(int(bar.get_attribute("value") or 0))
    # The update came over the websocket: the card is marked live (htmx polling is off).
    expect(page.locator(f"#job-card-{job.pk}[data-live]")).to_have_count(1)
    expect(page.locator("[data-job-status]")).to_have_text("Succeeded", timeout=60_000)
    assert any(0 < v < 100 for v in seen)
    context.close()


def test_without_websockets_the_page_falls_back_to_polling(browser, daphne_server, celery_worker):
    """A proxy that drops websockets: the bar still reaches done, fetched by htmx polling."""
    from playwright.sync_api import expect

    from apps.jobs import services

    owner = make_user("lead@example.com")
    workspace = make_workspace("Acme audio", owner=owner)
    context = browser.new_context(base_url=daphne_server.url)
    context.add_init_script("delete window.WebSocket;")
    page = context.new_page()
    sign_in(page, "lead@example.com")
    job = services.job_start(
        workspace=workspace,
        kind="test_sleep",
        created_by=owner,
        params={"steps": 6, "step_seconds": 0.5},
    )
    polls = []
    page.on("request", lambda r: polls.append(r.url) if r.headers.get("hx-request") else None)
    page.goto(f"/jobs/{job.pk}/")
    expect(page.locator(f"#job-card-{job.pk}[data-live]")).to_have_count(0)
    expect(page.locator("[data-job-status]")).to_have_text("Succeeded", timeout=60_000)
    expect(page.locator("[data-job-bar]")).to_have_attribute("value", "100")
    assert len(polls) >= 2 and all(url.endswith(f"/jobs/{job.pk}/") for url in polls)
    context.close()


@pytest.mark.parametrize("size", [(1366, 860), (390, 844)], ids=["laptop", "phone"])
def test_roles_change_only_on_save_with_a_confirmation_and_undo(browser, daphne_server, size):
    """Arrowing through a member's role menu sends nothing; Save asks before a promotion; the
    change can be undone; an invitation revoke asks too. No sideways scroll, no console error."""
    from playwright.sync_api import expect

    from apps.workspaces.models import Invitation, Membership, Role
    from tests.factories import add_member

    owner = make_user("lead@example.com", name="Lena Lead")
    workspace = make_workspace("Acme audio", owner=owner)
    mia = add_member(workspace, make_user("mia@example.com", name="Mia"), Role.MEMBER)
    Invitation.objects.create(
        workspace=workspace, email="new@example.com", role=Role.MEMBER, token_hash="x" * 64
    )
    width, height = size
    context = browser.new_context(
        base_url=daphne_server.url, viewport={"width": width, "height": height}
    )
    page = context.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, "lead@example.com")
    page.goto("/members/")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    select = page.get_by_label("Role of mia@example.com")
    select.focus()
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    page.wait_for_timeout(700)
    assert posts == []
    mia.refresh_from_db()
    assert mia.role == Role.MEMBER

    # Save a promotion: it asks first, in a focused panel; nothing changes yet.
    select.select_option("manager")
    page.get_by_role("button", name="Save the role of mia@example.com").click()
    confirm = page.locator("[data-confirm-role]")
    expect(confirm).to_be_visible()
    expect(confirm).to_be_focused()
    mia.refresh_from_db()
    assert mia.role == Role.MEMBER
    page.get_by_role("button", name="Yes, make Mia manager").click()
    undo = page.locator("[data-undo]")
    expect(undo).to_contain_text("mia@example.com is now manager.")
    expect(undo).to_be_focused()
    mia.refresh_from_db()
    assert mia.role == Role.MANAGER
    undo.get_by_role("button", name="Undo").click()
    expect(page.locator("#member-table")).to_contain_text("is member again")
    mia.refresh_from_db()
    assert mia.role == Role.MEMBER
    assert Membership.objects.filter(workspace=workspace).count() == 2

    # Revoking an invitation asks first too.
    page.get_by_role("button", name="Revoke the invitation for new@example.com").click()
    expect(page.locator("[data-confirm-revoke]")).to_be_visible()
    assert Invitation.objects.get().state == "pending"
    page.get_by_role("button", name="Yes, withdraw it").click()
    expect(page.locator("#invite")).to_contain_text("Invitation for new@example.com revoked.")
    assert Invitation.objects.get().state == "revoked"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert errors == []
    context.close()


TEAM_PAGES = [
    "/members/",
    "/audit/",
    "/settings/",
    "/settings/engine/",
    "/settings/api-keys/",
    "/accounts/password_change/",
]


@pytest.mark.parametrize("size", [(1366, 860), (390, 844)], ids=["laptop", "phone"])
def test_team_pages_fit_the_screen_without_console_errors(browser, daphne_server, size):
    """Every team and settings page, with rows in its tables, at a laptop's and a phone's size."""
    from apps.gateway import services as keys
    from apps.workspaces.models import Invitation, Role
    from apps.workspaces.services import audit_record, engine_settings_update
    from tests.factories import add_member

    owner = make_user("lead@example.com", name="Lena Lead")
    workspace = make_workspace("Acme audio", owner=owner)
    for n in range(3):
        add_member(workspace, make_user(f"teammate{n}@example.com", name=f"Mate {n}"), Role.MEMBER)
    Invitation.objects.create(
        workspace=workspace, email="a.rather.long.address@example.com", token_hash="y" * 64
    )
    keys.api_key_create(
        workspace=workspace, user=owner, name="Nightly render", scopes=["tts", "voices", "music"]
    )
    engine_settings_update(workspace=workspace, actor=owner, kind="local", api_key=None)
    audit_record(
        workspace=workspace,
        actor=owner,
        action="member.role_changed",
        target="teammate0@example.com",
        data={"from": "member", "to": "viewer"},
        ip="127.0.0.1",
    )
    width, height = size
    context = browser.new_context(
        base_url=daphne_server.url, viewport={"width": width, "height": height}
    )
    page = context.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, "lead@example.com")
    page.wait_for_url(re.compile(r"/$"))
    for path in TEAM_PAGES:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{path} scrolls sideways by {wide}px at {width}"
        text = page.locator("main").inner_text()
        for raw in ("None", "[]", "{'"):
            assert raw not in text, (path, raw)
    assert errors == []
    context.close()
