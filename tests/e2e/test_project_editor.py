"""The chapter editor's script in a real Chromium (static/js/projects-editor.js): the chapter
player plays the chosen takes back to back with the spoken block highlighted and moving on to
the next block, ▶ on a block plays from it, "Split at the cursor" splits where the cursor is,
and Alt+↓ moves a block (the focus follows it). Takes are real WAV clips the browser decodes."""

import io
import re
import wave

import numpy as np
import pytest

from apps.history.services import generation_save
from apps.projects import narration
from apps.projects.importers import ImportedChapter, ImportedScript
from apps.projects.models import Block, Cue, Take
from apps.voices import services as voice_services
from apps.workspaces.models import Role
from tests.e2e.conftest import htmx_ready, sign_in
from tests.factories import add_member, make_user, make_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPEAKING = re.compile(r"\bis-speaking\b")

TEXTS = (
    "The boats came in before dawn.",
    "Nobody on the quay said a word.",
    "Then the bell rang twice.",
)


def tone(seconds: float, hz: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        t = np.arange(int(16000 * seconds)) / 16000
        out.writeframes((0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def clip(block, user, seconds: float, hz: float, kind: str = "tts"):
    return generation_save(
        workspace=block.workspace, user=user, kind=kind, engine="local", audio=tone(seconds, hz),
        content_type="audio/wav", recipe={"block": block.public_id}, voice_id="local-joe",
        text=block.text, duration_seconds=seconds,
    )  # fmt: skip


def placed_cue(block, user, placement: str, volume_db: float) -> Cue:
    return Cue.objects.create(
        workspace=block.workspace, project=block.chapter.project, kind="sound", prompt="a bell",
        duration_seconds=0.8, generation=clip(block, user, 0.8, 880, kind="sound"), block=block,
        placement=placement, volume_db=volume_db, created_by=user,
    )  # fmt: skip


def chosen_take(block, user, seconds: float, hz: float) -> Take:
    generation = clip(block, user, seconds, hz)
    take = Take.objects.create(
        workspace=block.workspace, block=block, generation=generation, draft=True,
        signature="made-in-the-test", user=user,
    )  # fmt: skip
    Block.objects.filter(pk=block.pk).update(chosen=take)
    return take


def order(chapter) -> list[str]:
    return list(
        Block.objects.filter(chapter=chapter).order_by("position").values_list("text", flat=True)
    )


def test_the_editor_plays_the_chapter_splits_at_the_cursor_and_moves_by_keyboard(
    browser, daphne_server
):
    from playwright.sync_api import expect

    owner = make_user("olga@example.com", name="Olga Owner")
    workspace = make_workspace("Harbour audio", owner=owner)
    member = make_user("mia@example.com", name="Mia Member")
    add_member(workspace, member, Role.MEMBER)
    voice_services.library_sync(workspace=workspace)
    project = narration.project_create(
        workspace=workspace, user=member, default_voice_id="local-joe",
        script=ImportedScript(title="Harbour tales", author="", language="en",
                              chapters=(ImportedChapter(title="The harbour", blocks=TEXTS),)),
    )  # fmt: skip
    chapter = project.chapters.get()
    one, two, three = Block.objects.filter(chapter=chapter).order_by("position")
    takes = [chosen_take(b, member, 1.2, hz) for b, hz in ((one, 330), (two, 440), (three, 550))]
    bell = placed_cue(one, member, "after", -3)  # plays between block 1 and block 2
    hum = placed_cue(two, member, "under", -12)  # plays under block 2, quieter

    context = browser.new_context(base_url=daphne_server.url)
    page = context.new_page()
    # Every <audio> the script makes with new Audio() (the cues under a block), to look at.
    page.add_init_script(
        "const A = window.Audio; window.madeAudio = [];"
        "window.Audio = function (src) {"
        " const a = new A(src); window.madeAudio.push(a); return a; };"
    )
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, member.email)
    page.goto(f"/projects/{project.public_id}/chapters/{chapter.public_id}/")
    rows = page.locator("#blocks .block-row")
    expect(rows).to_have_count(3)

    # Play the chapter: block 1 is spoken (highlighted), then block 2 follows by itself.
    player = page.locator("[data-chapter-player] audio")
    page.get_by_role("button", name="Play the chapter", exact=True).click()
    row = page.locator(f"#block-{one.public_id}")
    expect(row).to_have_class(SPEAKING)
    expect(row).to_have_attribute("aria-current", "true")
    page.wait_for_function("a => a.currentTime > 0.2 && !a.paused", arg=player.element_handle())
    assert player.evaluate("a => a.src").endswith(f"/history/{takes[0].generation_id}/audio/")
    # The cue placed after block 1 plays next (block 1 still marked), then block 2.
    now = page.locator("[data-cp-now]")
    expect(now).to_have_text("Cue after block 1 of 3", timeout=10_000)
    assert player.evaluate("a => a.src").endswith(f"/history/{bell.generation_id}/audio/")
    expect(page.locator(f"#block-{two.public_id}")).to_have_class(SPEAKING, timeout=10_000)
    expect(row).not_to_have_class(SPEAKING)
    assert player.evaluate("a => a.src").endswith(f"/history/{takes[1].generation_id}/audio/")
    expect(now).to_have_text("Block 2 of 3")
    # Under block 2: its cue plays along, at -12 dB (a quarter of the amplitude).
    under = f"/history/{hum.generation_id}/audio/"
    page.wait_for_function(
        f"() => window.madeAudio.some(a => a.src.endsWith('{under}') && a.currentTime > 0.1)"
    )
    volume = page.evaluate(f"window.madeAudio.find(a => a.src.endsWith('{under}')).volume")
    assert volume == pytest.approx(10 ** (-12 / 20), abs=0.01)
    page.get_by_role("button", name="Pause", exact=True).click()

    # ▶ on block 3 plays the chapter from there.
    page.get_by_role("button", name="Play the chapter from block 3").click()
    expect(page.locator(f"#block-{three.public_id}")).to_have_class(SPEAKING)
    third = f"/history/{takes[2].generation_id}/audio/"
    page.wait_for_function(
        f"a => a.currentTime > 0.2 && !a.paused && a.src.endsWith('{third}')",
        arg=player.element_handle(),
    )
    page.get_by_role("button", name="Pause", exact=True).click()

    # Split at the cursor: after "The boats" (character 9) of block 1.
    text = page.locator(f"#text-{one.public_id}")
    htmx_ready(text.locator("xpath=ancestor::form"))
    text.click()
    text.evaluate("t => t.setSelectionRange(9, 9)")
    page.locator(f"#block-{one.public_id}").get_by_role(
        "button", name="Split at the cursor"
    ).click()
    expect(rows).to_have_count(4)
    assert order(chapter) == ["The boats", "came in before dawn.", TEXTS[1], TEXTS[2]]
    expect(page.locator(f"#text-{one.public_id}")).to_have_value("The boats")

    # Alt+↓ in block 2's text moves it down; the focus stays with the block.
    moved = Block.objects.get(chapter=chapter, position=1)
    box = page.locator(f"#text-{moved.public_id}")
    htmx_ready(box.locator("xpath=ancestor::form"))
    box.focus()
    box.press("Alt+ArrowDown")
    expect(rows.nth(2)).to_have_attribute("data-block", moved.public_id)
    assert order(chapter) == ["The boats", TEXTS[1], "came in before dawn.", TEXTS[2]]
    focused = page.evaluate("document.activeElement.closest('.block-row')?.dataset.block")
    assert focused == moved.public_id
    assert errors == []
