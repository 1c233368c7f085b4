"""In a real Chromium, with a real Celery worker: a member imports a script into a project,
renders it as drafts, plays a chapter (the spoken block is highlighted), re-voices a speaker
(its blocks turn stale), renders one block as a final take, exports the project as an MP3
and downloads it; the download decodes and holds the chapters as ID3 chapter frames."""

import io
import re

import av
import pytest

from apps.jobs.models import Job, JobStatus
from apps.projects.models import Block, Export, Project, Speaker
from apps.voices import services as voice_services
from apps.workspaces.models import Role
from tests.conftest import wait_until
from tests.e2e.conftest import htmx_ready, sign_in
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPEAKING = re.compile(r"\bis-speaking\b")

SCRIPT = """Chapter 1

The boats came in before dawn.

Nobody on the quay said a word.

Chapter 2

We climbed until the town was small.
"""


def jobs_done(kind: str, count: int) -> bool:
    jobs = Job.objects.filter(kind=kind)
    failed = jobs.filter(status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).first()
    assert failed is None, failed.error
    return jobs.filter(status=JobStatus.SUCCEEDED).count() >= count


def test_import_draft_play_revoice_final_export_and_download(browser, daphne_server, celery_worker):
    from mutagen.id3 import ID3
    from playwright.sync_api import expect

    owner = make_user("olga@example.com", name="Olga Owner")
    workspace = make_workspace("Audiobooks", owner=owner)
    member = make_user("mira@example.com", name="Mira Member")
    add_member(workspace, member, Role.MEMBER)
    voice_services.library_sync(workspace=workspace)

    page = browser.new_context(base_url=daphne_server.url).new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, member.email)

    # Import: the pasted script becomes two chapters of blocks.
    page.goto("/projects/new/")
    page.get_by_label("Paste the script").fill(SCRIPT)
    page.get_by_label("Name").fill("Harbour tales")
    page.get_by_label("Joe", exact=False).first.check()
    page.get_by_role("button", name="Create the project").click()
    expect(page.get_by_role("heading", name="Harbour tales")).to_be_visible()
    project = Project.objects.get(name="Harbour tales")
    assert [c.name for c in project.chapters.order_by("position")] == ["Chapter 1", "Chapter 2"]
    assert Block.objects.filter(chapter__project=project).count() == 3

    # Drafts of the whole project, on the worker; the page follows the job.
    page.get_by_role("button", name="Render drafts").first.click()
    wait_until(lambda: jobs_done("project_render", 1), timeout=180, what="the draft render")
    blocks = list(Block.objects.filter(chapter__project=project).select_related("chosen"))
    assert all(b.chosen is not None and b.chosen.draft for b in blocks)

    # Play chapter 1: the first block is highlighted, then the second.
    page.goto(f"/projects/{project.public_id}/")
    page.get_by_role("link", name="Chapter 1").first.click()
    expect(page.get_by_role("button", name="Play the chapter", exact=True)).to_be_visible()
    page.get_by_role("button", name="Play the chapter", exact=True).click()
    rows = page.locator("li.block-row")
    expect(rows.nth(0)).to_have_class(SPEAKING)
    expect(rows.nth(1)).to_have_class(SPEAKING, timeout=30_000)
    page.locator("[data-cp-toggle]").click()  # pause

    # A speaker for block 1, then re-voiced: the block turns stale.
    page.goto(f"/projects/{project.public_id}/")
    page.locator("summary", has_text="Add a speaker").click()
    page.get_by_label("Speaker name").fill("Narrator")
    page.get_by_role("button", name="Add the speaker").click()
    speaker = Speaker.objects.get(project=project, name="Narrator")
    first = Block.objects.filter(chapter__position=0, chapter__project=project).order_by(
        "position"
    )[0]
    page.get_by_role("link", name="Chapter 1").first.click()
    row = page.locator(f"#block-{first.public_id}")
    row.locator("summary", has_text="Voice, model and settings").click()
    speaker_select = row.get_by_label("Speaker", exact=True)
    expect(speaker_select).to_be_visible()
    speaker_select.select_option(str(speaker.pk))
    row.get_by_label("The speaker's voice").check()
    row.get_by_role("button", name="Save").first.click()
    wait_until(
        lambda: Block.objects.get(pk=first.pk).speaker_id == speaker.pk,
        timeout=15,
        what="the block to take the speaker",
    )
    page.goto(f"/projects/{project.public_id}/")
    page.locator(f'li[data-speaker="{speaker.pk}"] summary').click()
    page.locator(f"#s{speaker.pk}-voice").select_option("local-espeak-en-us-f3")
    page.get_by_role("button", name="Save: re-voices every block of Narrator").click()
    wait_until(
        lambda: Speaker.objects.get(pk=speaker.pk).voice_id == "local-espeak-en-us-f3",
        timeout=15,
        what="the speaker's new voice",
    )
    page.goto(f"/projects/{project.public_id}/chapters/{first.chapter.public_id}/")
    row = page.locator(f"#block-{first.public_id}")
    expect(row).to_have_class(re.compile(r"\bis-stale\b"))

    # One block rendered final (the workspace's engine: local here, so still free).
    row.locator("form.block-render").get_by_role("button", name="Final").click()
    wait_until(lambda: jobs_done("project_render", 2), timeout=180, what="the final render")
    first.refresh_from_db()
    assert not first.chosen.draft
    assert first.chosen.generation.voice_id == "local-espeak-en-us-f3"

    # Export the project as an MP3 and download it.
    page.goto(f"/projects/{project.public_id}/")
    panel = page.locator("[data-export-panel]").first
    htmx_ready(panel.locator("form.export-form"))
    panel.get_by_label("MP3", exact=True).check()
    panel.get_by_role("button", name="Export").click()
    wait_until(lambda: jobs_done("project_export", 1), timeout=180, what="the export")
    export = Export.objects.get(project=project)
    page.goto(f"/projects/{project.public_id}/")
    link = page.locator("[data-export-download]").first
    expect(link).to_be_visible()
    response = page.request.get(link.get_attribute("href"))
    assert response.status == 200
    body = response.body()
    assert body == export.file.open("rb").read()
    with av.open(io.BytesIO(body)) as container:
        stream = container.streams.audio[0]
        seconds = sum(f.samples for f in container.decode(stream)) / stream.sample_rate
    assert seconds > 4
    chapters = ID3(io.BytesIO(body)).getall("CHAP")
    assert [c.sub_frames["TIT2"].text[0] for c in chapters] == ["Chapter 1", "Chapter 2"]
    assert errors == []
