"""The site-wide walk (issue 14's "Done when"): in a real Chromium an owner and a viewer open
every page their sidebar links to — read from the rendered sidebar, so a new page is walked as
soon as it is in the navigation — plus the pages of one voice, transcript and job, at a laptop
(1366×860) and a phone (390×844) size. Every page answers 200, nothing scrolls sideways, and
the browser logs no console error and no page error."""

import contextlib

import httpx
import pytest
from django.utils import timezone

from apps.gateway.services import api_key_create
from apps.jobs.models import Job, JobStatus
from apps.transcripts.models import Transcript, TranscriptStatus
from apps.voices.services import library_sync
from apps.workspaces.models import Role
from tests.e2e.conftest import sign_in
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIZES = {"laptop": (1366, 860), "phone": (390, 844)}

# The widest elements of a page that scrolls sideways: what to fix.
WIDEST = """() => {
  const limit = document.documentElement.clientWidth;
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + (typeof el.className === "string" && el.className.trim()
       ? "." + el.className.trim().split(/\\s+/).join(".") : "");
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const box = el.getBoundingClientRect();
    if (box.width && box.right > limit + 1) {
      const parent = el.parentElement && el.parentElement.getBoundingClientRect();
      if (!parent || parent.right <= limit + 1) {
        out.push(name(el) + " right=" + Math.round(box.right));
      }
    }
  }
  return out.slice(0, 5);
}"""


def _data(server_url: str):
    """A workspace with something on every page: voices, a clip, a transcript and its job."""
    from tests.transcripts.test_editor import make_transcript

    owner = make_user("olga@example.com", name="Olga Owner")
    workspace = make_workspace("Walk studio", owner=owner)
    viewer = make_user("vic@example.com", name="Vic Viewer")
    add_member(workspace, viewer, Role.VIEWER)
    library_sync(workspace=workspace)
    key = api_key_create(workspace=workspace, user=owner, name="walk").raw
    spoken = httpx.post(
        f"{server_url}/v1/text-to-speech/local-joe",
        headers={"xi-api-key": key},
        json={"text": "Every page of the sidebar, walked."},
        timeout=60,
    )
    assert spoken.status_code == 200, spoken.text
    job = Job.objects.create(
        workspace=workspace, created_by=owner, kind="transcribe", status=JobStatus.SUCCEEDED,
        progress=100, subject="Interview with Ana", finished_at=timezone.now(),
    )  # fmt: skip
    transcript = make_transcript(workspace, owner, job=job)
    Transcript.objects.filter(pk=transcript.pk).update(
        status=TranscriptStatus.READY, title="Interview with Ana"
    )
    return owner, viewer, workspace, transcript, job


def _listen(page) -> list[str]:
    """The console errors and uncaught page errors of ``page``, as they come."""
    errors: list[str] = []

    def console(message):
        if message.type == "error":
            errors.append(f"console: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    return errors


def _walk(browser, server_url, user, extra: list[str], visited: list[str]) -> list[str]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    problems = []
    for size, (width, height) in SIZES.items():
        context = browser.new_context(
            base_url=server_url, viewport={"width": width, "height": height}
        )
        page = context.new_page()
        errors = _listen(page)
        sign_in(page, user.email)
        page.wait_for_url(f"{server_url}/")
        hrefs = page.eval_on_selector_all(
            "#sidebar nav a[href]", "links => links.map(a => a.getAttribute('href'))"
        )
        assert len(hrefs) >= 10, hrefs
        # The checks can fail: a too-wide element and a console error are both caught.
        errors.clear()
        page.evaluate(
            "() => { const d = document.createElement('div'); d.id = 'probe';"
            " d.style.width = '3000px'; d.style.height = '1px'; document.body.append(d);"
            " console.error('probe'); }"
        )
        assert page.evaluate("document.documentElement.scrollWidth") > width
        assert any(w.startswith("div#probe") for w in page.evaluate(WIDEST))
        assert errors == ["console: probe"], errors
        visited.extend(hrefs)
        if width < 800:  # the phone's sidebar opens with its button and closes with Escape
            page.goto("/")
            sidebar, toggle = page.locator("#sidebar"), page.locator("[data-toggle-sidebar]")
            assert sidebar.bounding_box()["x"] < 0
            toggle.click()
            page.wait_for_function(
                "document.getElementById('sidebar').getBoundingClientRect().x >= 0"
            )
            assert toggle.get_attribute("aria-expanded") == "true"
            page.keyboard.press("Escape")
            page.wait_for_function(
                "document.getElementById('sidebar').getBoundingClientRect().right <= 0"
            )
            assert toggle.get_attribute("aria-expanded") == "false"
        for href in dict.fromkeys([*hrefs, *extra]):
            errors.clear()
            response = page.goto(href, wait_until="load")
            with contextlib.suppress(PlaywrightTimeout):  # a page that polls is idle enough
                page.wait_for_load_state("networkidle", timeout=5_000)
            where = f"{user.email} {href} at {size} {width}×{height}"
            if response is None or response.status != 200:
                problems.append(f"{where}: HTTP {response and response.status}")
            scroll = page.evaluate("document.documentElement.scrollWidth")
            inner = page.evaluate("window.innerWidth")
            if scroll > inner:
                widest = page.evaluate(WIDEST)
                problems.append(f"{where}: scrolls sideways ({scroll} > {inner}): {widest}")
            problems += [f"{where}: {e}" for e in errors]
        context.close()
    return problems


def test_every_sidebar_page_at_both_sizes_answers_fits_and_logs_no_error(browser, daphne_server):
    owner, viewer, _workspace, transcript, job = _data(daphne_server.url)
    from apps.voices.models import LibraryVoice

    voice = LibraryVoice.objects.filter(workspace=transcript.workspace).first()
    extra = [f"/voices/{voice.pk}/", f"/transcripts/{transcript.pk}/", f"/jobs/{job.pk}/"]
    owner_pages, viewer_pages = [], []
    problems = _walk(browser, daphne_server.url, owner, extra, owner_pages)
    problems += _walk(browser, daphne_server.url, viewer, extra, viewer_pages)
    # The sidebar was read, by role: the owner's includes the settings, the viewer's does not.
    assert {"/settings/", "/billing/plan/", "/audit/", "/transcripts/"} <= set(owner_pages)
    assert "/transcripts/" in viewer_pages and "/settings/" not in viewer_pages
    assert not problems, "\n".join(problems)


FORM = """
<form id="probe-form">
  <fieldset><legend>All the inputs</legend>
  <input type="text" id="t"><input type="email" id="e"><input type="password" id="p">
  <input type="number" id="n"><input type="url" id="u"><input type="date" id="d">
  <input type="datetime-local" id="dl"><input type="search" id="s"><select id="sel"></select>
  <textarea id="ta"></textarea><input type="file" id="f">
  <input type="checkbox" id="c"><input type="radio" id="r">
  <input type="range" id="rg" min="0" max="1" step="0.05" value="0.5">
  </fieldset>
</form>"""


def test_every_input_type_is_styled_and_a_slider_shows_its_value(browser, daphne_server):
    owner = make_user("ines@example.com", name="Ines Owner")
    make_workspace("Inputs", owner=owner)
    context = browser.new_context(base_url=daphne_server.url)
    page = context.new_page()
    errors = _listen(page)
    sign_in(page, owner.email)
    page.wait_for_url(f"{daphne_server.url}/")
    page.evaluate(
        """html => { const box = document.createElement('div'); box.innerHTML = html;
        document.querySelector('main').append(box);
        document.dispatchEvent(new CustomEvent('htmx:load', {detail: {elt: box}})); }""",
        FORM,
    )
    for field in ("t", "e", "p", "n", "u", "d", "dl", "s", "sel", "ta"):
        style = page.evaluate(
            "id => { const s = getComputedStyle(document.getElementById(id));"
            " return [s.borderTopLeftRadius, s.borderTopWidth, s.width]; }",
            field,
        )
        assert style[0] == "8px" and style[1] == "1px", (field, style)
        assert float(style[2][:-2]) > 200, (field, style)  # full width, not the browser's
    file_button = page.evaluate(
        "getComputedStyle(document.getElementById('f'), '::file-selector-button').borderRadius"
    )
    assert file_button == "8px"
    accent = page.evaluate("getComputedStyle(document.getElementById('c')).accentColor")
    assert accent == "rgb(79, 70, 229)"
    legend = page.evaluate("getComputedStyle(document.querySelector('legend')).fontWeight")
    assert legend == "600"
    # The slider's value is shown beside it and follows it.
    output = page.locator("#rg + output.range-value")
    assert output.text_content() == "0.5"
    page.locator("#rg").evaluate(
        "r => { r.value = '0.8'; r.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    assert output.text_content() == "0.8"
    assert not errors, errors
    context.close()
