"""Home in a real Chromium (issue 14): a member types a sentence in the quick speech box and
lands on the Speech page with it; a finished job is named by its subject and links its result;
at a laptop and a phone width nothing scrolls sideways and no console error is logged."""

from urllib.parse import parse_qs, urlsplit

import pytest

from apps.jobs.models import Job, JobStatus
from tests.e2e.conftest import sign_in
from tests.factories import make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_home_sends_a_sentence_to_speech_and_names_jobs_by_subject(browser, daphne_server):
    from playwright.sync_api import expect

    owner = make_user("hana@example.com", name="Hana Host")
    workspace = make_workspace("Home studio", owner=owner)
    Job.objects.create(
        workspace=workspace, kind="transcribe", status=JobStatus.SUCCEEDED,
        subject="Interview with Ana", result_url="/transcripts/",
    )  # fmt: skip
    errors = []
    context = browser.new_context(base_url=daphne_server.url)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, owner.email)
    for width, height in [(390, 844), (1366, 860)]:
        page.set_viewport_size({"width": width, "height": height})
        for url in ("/", "/jobs/"):
            page.goto(url)
            scroll = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
            assert scroll[0] <= scroll[1], (url, width, scroll)

    page.goto("/")
    expect(page.get_by_role("link", name="Interview with Ana")).to_be_visible()
    expect(page.get_by_role("link", name="Open the transcript")).to_have_attribute(
        "href", "/transcripts/"
    )
    page.get_by_label("Text to turn into speech").fill("Hello from the home page.")
    page.get_by_role("button", name="Continue on the Speech page").click()
    page.wait_for_url("**/speech/**")
    assert parse_qs(urlsplit(page.url).query)["text"] == ["Hello from the home page."]
    assert errors == []
    context.close()
