"""The project pages: the list, a new project (pasted text and uploaded files), the project
page (chapters, speakers, the render panel, the regeneration ratio), renders with approval
and the approvals page — on a real database, with real jobs run in this process."""

import io
import zipfile
from decimal import Decimal

import av
import docx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps.jobs.models import Job, JobStatus
from apps.jobs.tasks import job_run
from apps.projects import importers
from apps.projects.models import Block, Chapter, Project, Render, RenderState, Speaker, Take
from tests.conftest import HTMX

pytestmark = pytest.mark.django_db


# --- Helpers --------------------------------------------------------------------------------


def docx_file(paragraphs) -> bytes:
    document = docx.Document()
    for style, text in paragraphs:
        document.add_paragraph(text, style=style)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


XHTML = (
    '<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
    "<head><title>{title}</title></head><body>{body}</body></html>"
)


def epub_file(chapters, *, title="Night trains") -> bytes:
    """A minimal EPUB 3: ``chapters`` are (title, [paragraphs]) in spine order."""
    manifest = "".join(
        f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>'
        for i in range(len(chapters))
    )
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    opf = (
        '<?xml version="1.0" encoding="UTF-8"?><package xmlns="http://www.idpf.org/2007/opf" '
        'version="3.0" unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:title>{title}</dc:title><dc:creator>R. Rail</dc:creator><dc:language>en</dc:language>"
        f"</metadata><manifest>{manifest}</manifest><spine>{spine}</spine></package>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        archive.writestr("OEBPS/content.opf", opf)
        for i, (name, paragraphs) in enumerate(chapters):
            body = f"<h1>{name}</h1>" + "".join(f"<p>{p}</p>" for p in paragraphs)
            archive.writestr(f"OEBPS/c{i}.xhtml", XHTML.format(title=name, body=body))
    return out.getvalue()


def new_project(client, voice, **fields):
    data = {"fmt": "txt", "default_voice_id": voice.voice_id, "model_id": "eleven_multilingual_v2"}
    data.update(fields)
    return client.post(reverse("projects:new"), data)


def structure(project: Project) -> list[tuple[str, list[str]]]:
    return [
        (c.name, list(c.blocks.order_by("position").values_list("text", flat=True)))
        for c in project.chapters.order_by("position")
    ]


def run_render(made: Render) -> Job:
    """The render's job, run in this process exactly as a worker runs it."""
    made.refresh_from_db()
    job = Job.objects.get(pk=made.job_id)
    job_run(job.pk, job.attempt)
    job.refresh_from_db()
    return job


def decoded_seconds(audio: bytes) -> float:
    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.rate


def page(client, project) -> str:
    response = client.get(reverse("projects:detail", args=[project.public_id]))
    assert response.status_code == 200
    return response.content.decode()


# --- The list -------------------------------------------------------------------------------


def test_the_list_shows_each_project_with_its_counts_and_searches_by_name(
    client_as, member, project, voice
):
    other = new_project(
        client_as(member), voice, name="Podcast intro", text="Hello there.\n\nWelcome back."
    )
    assert other.status_code == 303
    Block.objects.filter(chapter__project=project).update()
    html = client_as(member).get(reverse("projects:list")).content.decode()
    assert "Harbour tales" in html and "Podcast intro" in html
    row = html.split(f'data-project="{project.public_id}"')[1].split("</tr>")[0]
    assert "<td>2</td>" in row and "<td>5</td>" in row  # 2 chapters, 5 blocks
    assert "A. Writer" in row and "Mia Member" in row and "no finals yet" in row
    found = client_as(member).get(reverse("projects:list"), {"q": "podcast"}).content.decode()
    assert "Podcast intro" in found and "Harbour tales" not in found
    none = client_as(member).get(reverse("projects:list"), {"q": "zebra"}).content.decode()
    assert "No project is named like" in none


def test_an_empty_list_offers_a_member_the_new_project_button_and_tells_a_viewer_who_can(
    client_as, member, viewer
):
    html = client_as(member).get(reverse("projects:list")).content.decode()
    assert "No projects yet" in html and reverse("projects:new") in html
    html = client_as(viewer).get(reverse("projects:list")).content.decode()
    assert "No projects yet" in html and reverse("projects:new") not in html
    assert "ask a member" in html


# --- A new project --------------------------------------------------------------------------


def test_the_new_page_lists_the_library_voices_with_previews(client_as, member, voice):
    html = client_as(member).get(reverse("projects:new")).content.decode()
    assert f'value="{voice.voice_id}"' in html
    assert reverse("voices:preview", args=[voice.pk]) in html  # a playable preview
    assert 'name="fmt"' in html and 'name="document"' in html


def test_pasted_markdown_becomes_chapters_of_blocks(client_as, member, voice):
    text = (
        "# Chapter one\n\nIt was late. The station was empty.\n\nA train came.\n\n"
        "# Chapter two\n\nMorning at last.\n"
    )
    response = new_project(client_as(member), voice, text=text, fmt="md", author="R. Rail")
    project = Project.objects.get()
    assert response.status_code == 303
    assert response["Location"] == reverse("projects:detail", args=[project.public_id])
    assert structure(project) == [
        ("Chapter one", ["It was late. The station was empty.", "A train came."]),
        ("Chapter two", ["Morning at last."]),
    ]
    assert project.author == "R. Rail" and project.default_voice_id == voice.voice_id
    assert project.created_by == member and project.workspace == voice.workspace


def test_an_uploaded_docx_lands_in_its_chapters_named_after_its_title(client_as, member, voice):
    data = docx_file(
        [
            ("Title", "The long walk"),
            ("Heading 1", "Leaving"),
            ("Normal", "We packed at night."),
            ("Normal", "Nobody saw us go."),
            ("Heading 1", "Arriving"),
            ("Normal", "The sea was grey."),
        ]
    )
    upload = SimpleUploadedFile("walk.docx", data, "application/octet-stream")
    response = new_project(client_as(member), voice, document=upload)
    assert response.status_code == 303
    project = Project.objects.get()
    assert project.name == "The long walk" and project.source_filename == "walk.docx"
    assert structure(project) == [
        ("Leaving", ["We packed at night.", "Nobody saw us go."]),
        ("Arriving", ["The sea was grey."]),
    ]


def test_an_uploaded_epub_follows_its_spine(client_as, member, voice):
    data = epub_file(
        [("Departure", ["The whistle blew.", "We were off."]), ("Border", ["Passports, please."])]
    )
    upload = SimpleUploadedFile("trains.epub", data, "application/epub+zip")
    response = new_project(client_as(member), voice, document=upload, name="")
    assert response.status_code == 303
    project = Project.objects.get()
    assert project.name == "Night trains" and project.author == "R. Rail"
    assert structure(project) == [
        ("Departure", ["The whistle blew.", "We were off."]),
        ("Border", ["Passports, please."]),
    ]


def test_an_uploaded_markdown_file_and_a_given_name(client_as, member, voice):
    upload = SimpleUploadedFile("notes.md", b"## Intro\n\nHi.\n\n## Outro\n\nBye now.\n")
    response = new_project(client_as(member), voice, document=upload, name="My course")
    assert response.status_code == 303
    project = Project.objects.get()
    assert project.name == "My course"
    assert structure(project) == [("Intro", ["Hi."]), ("Outro", ["Bye now."])]


@pytest.mark.parametrize(
    ("fields", "field_id", "message"),
    [
        ({"text": "   \n  "}, "id_text", "Paste the script"),
        ({"text": "Hello.", "fmt": "pdf"}, "id_fmt", "Choose plain text, Markdown or HTML"),
        ({"text": "Hello.", "default_voice_id": "nobody"}, "id_default_voice_id", "not in"),
        ({"text": "Hello.", "model_id": "no_such_model"}, "id_model_id", "Choose a model"),
        ({"file": ("book.epub", b"PK\x03\x04 not really a zip")}, "id_document", "EPUB"),
        ({"file": ("book.docx", b"PK\x03\x04 broken")}, "id_document", "DOCX"),
        ({"file": ("slides.pdf", b"%PDF-1.4\n%\xe2\xe3\n\x00\x01\x02")}, "id_document", "not text"),
        (
            {"file": ("cover.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")},
            "id_document",
            "not text",
        ),
        (
            {"text": "Hi.", "file": ("a.txt", b"Also hi.")},
            "id_document",
            "not both",
        ),
    ],
)
def test_bad_input_is_a_400_with_the_message_by_its_field_and_nothing_made(
    client_as, member, voice, fields, field_id, message
):
    fields = dict(fields)
    if "file" in fields:
        name, data = fields.pop("file")
        fields["document"] = SimpleUploadedFile(name, data)
    response = new_project(client_as(member), voice, **fields)
    html = response.content.decode()
    assert response.status_code == 400
    error = html.split(f'id="{field_id}_error"')[1].split("</div>")[0]
    assert message in error, error
    assert not Project.objects.exists() and not Chapter.objects.exists()


def test_a_file_over_the_upload_limit_is_refused_by_its_size(client_as, member, voice, monkeypatch):
    monkeypatch.setattr(importers, "MAX_UPLOAD_BYTES", 1024 * 1024)
    upload = SimpleUploadedFile("big.txt", b"Words and words. " * 70_000)  # 1.2 MB
    response = new_project(client_as(member), voice, document=upload)
    assert response.status_code == 400
    assert "uploads are limited to 1 MB" in response.content.decode()
    assert not Project.objects.exists()


def test_a_failure_after_import_leaves_nothing_half_made(client_as, member, voice, monkeypatch):
    from apps.projects import narration

    def broken(**kwargs):
        raise narration.ProjectRefused("Chapters: something went wrong.")

    monkeypatch.setattr(narration, "chapters_add", broken)
    response = new_project(client_as(member), voice, text="One.\n\nTwo.")
    assert response.status_code == 400 and "something went wrong" in response.content.decode()
    assert not Project.objects.exists()


# --- The project page -----------------------------------------------------------------------


def test_the_project_page_shows_its_chapters_speakers_estimates_and_editor_links(
    client_as, viewer, project
):
    html = page(client_as(viewer), project)
    for chapter in project.chapters.all():
        assert reverse("projects:chapter", args=[project.public_id, chapter.public_id]) in html
    harbour = html.split('data-chapter="')[1].split("</tr>")[0]
    assert "3 blocks" in harbour  # all three stale: none rendered yet
    assert 'data-estimate="draft"' in html and "5 blocks" in html
    assert "Render drafts" not in html  # a viewer listens and reads
    assert "No finals yet" in html


def test_edit_chapters_and_speakers_from_the_project_page(client_as, member, project, other_voice):
    client = client_as(member)
    url = reverse("projects:edit", args=[project.public_id])
    response = client.post(
        url,
        {
            "name": "Harbour tales, revised",
            "author": "B",
            "language": "de",
            "default_voice_id": other_voice.voice_id,
            "default_model_id": "eleven_multilingual_v2",
        },
    )
    assert response.status_code == 303
    project.refresh_from_db()
    assert (project.name, project.language, project.default_voice_id) == (
        "Harbour tales, revised",
        "de",
        other_voice.voice_id,
    )
    bad = client.post(url, {"name": "", "default_voice_id": "nobody"})
    assert bad.status_code == 400 and "That voice is not in" in bad.content.decode()

    add = reverse("projects:chapter_add", args=[project.public_id])
    assert client.post(add, {"name": "Epilogue", "text": "It ended.\n\nWell."}).status_code == 303
    assert structure(project)[-1] == ("Epilogue", ["It ended.", "Well."])
    assert client.post(add, {"name": ""}).status_code == 400

    epilogue = project.chapters.get(name="Epilogue")
    move = reverse("projects:chapter_move", args=[project.public_id, epilogue.public_id])
    assert client.post(move, {"direction": "up"}).status_code == 303
    assert [c for c, _ in structure(project)] == ["The harbour", "Epilogue", "The hill"]
    assert client.post(move, {"to": "1"}).status_code == 303
    assert [c for c, _ in structure(project)] == ["Epilogue", "The harbour", "The hill"]
    assert client.post(move, {"to": "zero"}).status_code == 400

    delete = reverse("projects:chapter_delete", args=[project.public_id, epilogue.public_id])
    assert client.post(delete).status_code == 400  # not confirmed
    assert client.post(delete, {"confirm": "1"}).status_code == 303
    assert [c for c, _ in structure(project)] == ["The harbour", "The hill"]

    speakers = reverse("projects:speaker_save", args=[project.public_id])
    made = client.post(speakers, {"new-name": "Narrator", "new-voice_id": other_voice.voice_id})
    assert made.status_code == 303
    narrator = Speaker.objects.get(project=project)
    block = Block.objects.filter(chapter__project=project).first()
    block.speaker = narrator
    block.save()
    again = client.post(speakers, {"new-name": "narrator", "new-voice_id": other_voice.voice_id})
    assert again.status_code == 400 and "already a speaker" in again.content.decode()
    revoice = client.post(
        speakers,
        {
            "speaker": narrator.pk,
            f"s{narrator.pk}-name": "The narrator",
            f"s{narrator.pk}-voice_id": project.default_voice_id,
        },
    )
    assert revoice.status_code == 303
    narrator.refresh_from_db()
    assert narrator.name == "The narrator"
    from apps.projects.narration import block_voice

    block = Block.objects.select_related("speaker", "chapter").get(pk=block.pk)
    assert block_voice(block, project=project, chapter=block.chapter) == project.default_voice_id
    assert "The narrator" in page(client, project)


def test_a_project_is_deleted_by_its_creator_or_a_manager_only(
    client_as, member, manager, workspace, project
):
    from tests.factories import add_member, make_user

    someone = make_user("someone@example.com", name="Sam")
    add_member(workspace, someone, "member")
    url = reverse("projects:delete", args=[project.public_id])
    assert client_as(someone).post(url).status_code == 403
    assert client_as(member).post(url).status_code == 303
    assert not Project.objects.exists() and not Block.objects.exists()


# --- Renders --------------------------------------------------------------------------------


def test_render_drafts_from_the_project_page_makes_free_takes_by_a_job(client_as, member, project):
    client = client_as(member)
    response = client.post(
        reverse("projects:render", args=[project.public_id]),
        {"scope": "project", "mode": "draft", "next": "/projects/"},
    )
    assert response.status_code == 303 and response["Location"] == "/projects/"
    made = Render.objects.get()
    assert made.state == RenderState.QUEUED and made.draft and made.requested_by == member
    assert made.job.kind == "project_render"
    html = page(client, project)
    assert "job-progress" in html and f"/ws/jobs/{made.job_id}/" in html
    job = run_render(made)
    assert job.status == JobStatus.SUCCEEDED, job.error
    takes = Take.objects.filter(render=made).select_related("generation")
    assert takes.count() == 5
    for take in takes:
        assert take.draft and take.credits == 0
        assert decoded_seconds(take.generation.file.read()) > 0.5
    assert not Block.objects.filter(chapter__project=project, chosen__isnull=True).exists()
    html = page(client, project)
    assert "up to date" in html and "5 drafts (free)" in html
    listed = client.get(reverse("projects:list")).content.decode()
    assert "<span data-chosen>100%</span>" in listed


def test_render_with_htmx_swaps_the_panel_and_a_bad_render_is_a_400(client_as, member, project):
    client = client_as(member, **HTMX)
    url = reverse("projects:render", args=[project.public_id])
    chapter = project.chapters.first()
    response = client.post(url, {"scope": "chapter", "target": chapter.public_id, "mode": "draft"})
    assert response.status_code == 200
    html = response.content.decode()
    assert (
        html.lstrip().startswith("<section") and f"render-panel-chapter-{chapter.public_id}" in html
    )
    assert "Rendering 3 blocks" in html
    assert client.post(url, {"scope": "galaxy", "mode": "draft"}).status_code == 400
    assert client.post(url, {"scope": "project", "mode": "loud"}).status_code == 400
    assert (
        client.post(url, {"scope": "chapter", "target": "nope", "mode": "draft"}).status_code == 404
    )


ELEVEN_VOICE = "21m00Tcm4TlvDq8ikWAM"


def mp3_tone(seconds: float = 1.0) -> bytes:
    """A real MP3 (a 220 Hz tone) for the stand-in of the ElevenLabs API to answer with."""
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="mp3") as container:
        stream = container.add_stream("mp3", rate=44100)
        stream.layout = "mono"
        t = np.arange(int(44100 * seconds)) / 44100
        samples = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.rate = 44100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


@pytest.fixture
def charged(on_elevenlabs, upstream, member):
    """The project on a workspace whose engine (ElevenLabs, answered at the network edge
    by a stand-in that speaks a tone) charges the rate card for finals."""
    import httpx

    from apps.projects.narration import project_create
    from apps.voices.models import LibraryVoice

    from .conftest import make_script

    tone = mp3_tone()

    def answer(request):
        if "/text-to-speech/" in request.url.path:
            return httpx.Response(200, headers={"content-type": "audio/mpeg"}, content=tone)
        return httpx.Response(404, json={"detail": {"status": "not_found", "message": "No."}})

    upstream(answer)
    LibraryVoice.objects.create(
        workspace=on_elevenlabs, engine="elevenlabs", voice_id=ELEVEN_VOICE, name="Rachel"
    )
    return project_create(
        workspace=on_elevenlabs, user=member, script=make_script(), default_voice_id=ELEVEN_VOICE
    )


def test_a_final_above_the_threshold_waits_for_a_manager_who_refuses_then_approves(
    client_as, member, manager, charged
):
    project = charged
    boss = client_as(manager)
    bad = boss.post(reverse("projects:threshold"), {"threshold": "-4"})
    assert bad.status_code == 400 and "0 or more" in bad.content.decode()
    assert boss.post(reverse("projects:threshold"), {"threshold": "50"}).status_code == 303

    client = client_as(member)
    url = reverse("projects:render", args=[project.public_id])
    assert "a manager approves it first" in page(client, project)
    assert client.post(url, {"scope": "project", "mode": "final"}).status_code == 303
    waiting = Render.objects.get()
    characters = sum(len(b.text) for b in Block.objects.filter(chapter__project=project))
    assert waiting.state == RenderState.WAITING and waiting.job is None
    assert waiting.credits_estimate == Decimal(characters) > 50
    assert "Waiting for a manager's approval" in page(client, project)

    listed = boss.get(reverse("projects:approvals"))
    approvals = listed.content.decode()
    row = approvals.split(f'data-render="{waiting.pk}"')[1].split("</li>")[0]
    assert "Mia Member" in row and "Harbour tales" in row and "5 blocks" in row
    assert f"{characters} credits" in row
    from apps.projects.context_processors import approvals as waiting_count

    assert waiting_count(listed.wsgi_request) == {"approvals_waiting": 1}
    as_member = client.get(reverse("projects:list")).wsgi_request
    assert waiting_count(as_member) == {"approvals_waiting": 0}  # members are not asked

    decide = reverse("projects:render_decide", args=[waiting.pk])
    no_reason = boss.post(decide, {"approve": "0", "reason": "  "})
    assert no_reason.status_code == 400 and "Say why" in no_reason.content.decode()
    assert boss.post(decide, {"approve": "0", "reason": "Wait for the edit."}).status_code == 303
    waiting.refresh_from_db()
    assert waiting.state == RenderState.REFUSED and waiting.decided_by == manager
    assert "Refused by Max Manager: Wait for the edit." in page(client, project)
    again = boss.post(decide, {"approve": "1"})
    assert again.status_code == 400 and "already decided" in again.content.decode()

    assert client.post(url, {"scope": "project", "mode": "final"}).status_code == 303
    second = Render.objects.exclude(pk=waiting.pk).get()
    assert second.state == RenderState.WAITING
    approve = boss.post(reverse("projects:render_decide", args=[second.pk]), {"approve": "1"})
    assert approve.status_code == 303
    second.refresh_from_db()
    assert second.state == RenderState.QUEUED and second.job is not None
    job = run_render(second)
    assert job.status == JobStatus.SUCCEEDED, job.error
    finals = Take.objects.filter(render=second).select_related("block", "generation")
    assert finals.count() == 5
    for take in finals:
        assert not take.draft and take.credits == len(take.block.text)
        assert 0.9 < decoded_seconds(take.generation.file.read()) < 1.2
    html = page(client, project)
    assert "Approved by Max Manager" in html
    assert '<p class="stat" data-ratio>1×</p>' in html


def test_a_manager_s_own_final_never_waits(client_as, manager, charged, workspace):
    from apps.projects.narration import threshold_set

    threshold_set(workspace=workspace, threshold=Decimal("1"))
    client_as(manager).post(
        reverse("projects:render", args=[charged.public_id]), {"scope": "project", "mode": "final"}
    )
    assert Render.objects.get().state == RenderState.QUEUED


def test_a_member_cancels_only_their_own_render_and_a_manager_any(
    client_as, member, manager, workspace, charged
):
    from apps.projects.narration import threshold_set
    from tests.factories import add_member, make_user

    threshold_set(workspace=workspace, threshold=Decimal("1"))
    url = reverse("projects:render", args=[charged.public_id])
    client_as(member).post(url, {"scope": "project", "mode": "final"})
    waiting = Render.objects.get()
    assert waiting.state == RenderState.WAITING
    someone = make_user("someone@example.com", name="Sam")
    add_member(workspace, someone, "member")
    cancel = reverse("projects:render_cancel", args=[waiting.pk])
    assert client_as(someone).post(cancel).status_code == 403
    assert client_as(member).post(cancel).status_code == 303
    waiting.refresh_from_db()
    assert waiting.state == RenderState.REFUSED and "Withdrawn" in waiting.reason
    assert client_as(manager).post(cancel).status_code == 400  # over: nothing to cancel

    client_as(member).post(url, {"scope": "project", "mode": "draft"})
    running = Render.objects.get(draft=True)
    cancel = reverse("projects:render_cancel", args=[running.pk])
    assert client_as(manager).post(cancel).status_code == 303
    running.job.refresh_from_db()
    assert running.job.status == JobStatus.CANCELLED


# --- The studio's parts on the project page ------------------------------------------------


def test_the_pronunciation_panel_ticks_the_attached_dictionaries_and_saving_changes_them(
    client_as, member, viewer, project, workspace, outsider
):
    from apps.projects.dictionaries import dictionary_create, project_dictionaries_set

    rule = {"string_to_replace": "quay", "type": "alias", "alias": "key"}
    names = dictionary_create(workspace=workspace, user=member, name="Harbour words", rules=[rule])
    places = dictionary_create(workspace=workspace, user=member, name="Place names")
    gone = dictionary_create(workspace=workspace, user=member, name="Old list")
    gone.archived = True
    gone.save(update_fields=["archived"])
    project_dictionaries_set(project, [names])

    def boxes(html):
        panel = html.split("data-pronunciation")[1].split("</section>")[0]
        ticked = {
            d.public_id for d in (names, places, gone) if f'value="{d.public_id}" checked' in panel
        }
        listed = {d.public_id for d in (names, places, gone) if f'value="{d.public_id}"' in panel}
        return panel, listed, ticked

    client = client_as(member)
    html = page(client, project)
    panel, listed, ticked = boxes(html)
    assert listed == {names.public_id, places.public_id}  # an archived one only while attached
    assert ticked == {names.public_id}
    assert reverse("projects:project_dictionaries", args=[project.public_id]) in panel
    assert reverse("projects:dictionary", args=[places.public_id]) in panel
    assert reverse("projects:dictionaries") in panel
    assert "stale" in panel and "1 rule" in panel

    url = reverse("projects:project_dictionaries", args=[project.public_id])
    detail = reverse("projects:detail", args=[project.public_id])
    response = client.post(url, {"dictionaries": [places.public_id], "next": detail})
    assert response.status_code == 303 and response["Location"] == detail
    assert set(project.dictionaries.values_list("pk", flat=True)) == {places.pk}
    _, _, ticked = boxes(page(client, project))
    assert ticked == {places.public_id}
    client.post(url, {"next": detail})  # nothing ticked: none attached
    assert not project.dictionaries.exists()
    _, listed, ticked = boxes(page(client, project))
    assert ticked == set() and listed == {names.public_id, places.public_id}

    project_dictionaries_set(project, [names])
    seen = page(client_as(viewer), project).split("data-pronunciation")[1].split("</section>")[0]
    assert 'type="checkbox"' not in seen and "Harbour words" in seen and "Place names" not in seen
    assert client_as(viewer).post(url, {"next": detail}).status_code == 403
    assert project.dictionaries.count() == 1


def test_the_project_page_counts_its_cues_made_and_placed(client_as, member, viewer, project):
    from apps.jobs.models import JobStatus
    from apps.projects import cues

    from .conftest import run_job

    html = page(client_as(member), project)
    summary = html.split("data-cue-summary")[1].split("</section>")[0]
    assert "No cues yet" in summary
    assert reverse("projects:cues", args=[project.public_id]) + "#new-cue" in summary

    made = cues.cue_start(
        workspace=project.workspace, user=member, project=project, kind="sound",
        prompt="a bell rings", duration_seconds=1.0,
    )  # fmt: skip
    assert run_job(made.job).status == JobStatus.SUCCEEDED
    made.refresh_from_db()
    cues.cue_place(made, block=project.chapters.first().blocks.first(), placement="after",
                   volume_db=0)  # fmt: skip
    cues.cue_start(
        workspace=project.workspace,
        user=member,
        project=project,
        kind="sound",
        prompt="gulls",
        duration_seconds=1.0,
    )  # fmt: skip  (its job not run yet: not made)
    html = page(client_as(viewer), project)
    counts = html.split("data-cue-counts>")[1].split("</p>")[0]
    assert counts == "2 cues · 1 made · 1 placed"
    summary = html.split("data-cue-summary")[1].split("</section>")[0]
    assert reverse("projects:cues", args=[project.public_id]) in summary


def test_the_project_page_includes_the_export_panel(client_as, member, viewer, project):
    html = page(client_as(member), project)
    panel = html.split(f'id="export-panel-{project.public_id}"')[1].split("</section>")[0]
    assert reverse("projects:export_create", args=[project.public_id]) in panel
    assert "No exports yet" in panel
    seen = page(client_as(viewer), project)
    panel = seen.split(f'id="export-panel-{project.public_id}"')[1].split("</section>")[0]
    assert reverse("projects:export_create", args=[project.public_id]) not in panel
    assert "Members make exports" in panel


def test_a_decision_on_a_member_s_render_is_shown_once_and_badged_on_the_list(
    client_as, member, manager, charged, workspace
):
    from apps.projects.narration import threshold_set

    project = charged
    threshold_set(workspace=workspace, threshold=Decimal("1"))
    client = client_as(member)
    client.post(reverse("projects:render", args=[project.public_id]),
                {"scope": "project", "mode": "final"})  # fmt: skip
    waiting = Render.objects.get()
    assert waiting.state == RenderState.WAITING
    listed = client.get(reverse("projects:list")).content.decode()
    assert "data-unseen-decision" not in listed  # nothing decided yet
    assert "data-decision=" not in page(client, project)

    decide = reverse("projects:render_decide", args=[waiting.pk])
    assert (
        client_as(manager)
        .post(decide, {"approve": "0", "reason": "Wait for the edit."})
        .status_code
        == 303
    )
    listed = client.get(reverse("projects:list")).content.decode()
    row = listed.split(f'data-project="{project.public_id}"')[1].split("</tr>")[0]
    assert "data-unseen-decision" in row and "Your render was refused" in row
    assert (
        "data-unseen-decision"
        not in client_as(manager).get(reverse("projects:list")).content.decode()
    )
    # Someone else opening the project does not mark it seen.
    assert "data-decision=" not in page(client_as(manager), project)
    waiting.refresh_from_db()
    assert waiting.seen_at is None

    html = page(client, project)
    shown = html.split(f'data-decision="{waiting.pk}"')[1].split("</p>")[0]
    assert "Your final render was refused by Max Manager</strong>: Wait for the edit." in shown
    waiting.refresh_from_db()
    assert waiting.seen_at is not None
    assert "data-decision=" not in page(client, project)  # once
    listed = client.get(reverse("projects:list")).content.decode()
    assert "data-unseen-decision" not in listed
    assert "Refused by Max Manager: Wait for the edit." in page(
        client, project
    )  # the panel keeps it

    client.post(reverse("projects:render", args=[project.public_id]),
                {"scope": "project", "mode": "final"})  # fmt: skip
    second = Render.objects.exclude(pk=waiting.pk).get()
    cancel = reverse("projects:render_cancel", args=[second.pk])
    assert client.post(cancel).status_code == 303  # withdrawn: nobody decided it
    assert "data-unseen-decision" not in client.get(reverse("projects:list")).content.decode()
    client.post(reverse("projects:render", args=[project.public_id]),
                {"scope": "project", "mode": "final"})  # fmt: skip
    third = Render.objects.exclude(pk__in=[waiting.pk, second.pk]).get()
    client_as(manager).post(reverse("projects:render_decide", args=[third.pk]), {"approve": "1"})
    listed = client.get(reverse("projects:list")).content.decode()
    assert "Your render was approved" in listed
    html = page(client, project)
    assert f'data-decision="{third.pk}" data-state="queued"' in html
    assert "Your final render was approved by Max Manager" in html
    assert "data-decision=" not in page(client, project)


def test_the_voice_picker_plays_each_preview_with_its_own_button(client_as, member, voice):
    from apps.voices.models import LibraryVoice

    html = client_as(member).get(reverse("projects:new")).content.decode()
    voices = LibraryVoice.objects.filter(workspace=voice.workspace, engine="local")
    assert voices.count() > 1
    for row in voices:
        preview = reverse("voices:preview", args=[row.pk])
        button = f'<button type="button" class="icon-button voice-play" data-preview="{preview}"'
        assert html.count(button) == 1, row.name
        assert f'aria-label="Play the preview of {row.name}"' in html
    assert html.count("data-preview=") == voices.count()
    assert '<audio data-voice-preview preload="none" hidden>' in html and "js/projects.js" in html
    assert "data-player" not in html.split("data-voice-picker")[1].split("</fieldset>")[0]
    assert "Drafts use a local stand-in voice of the same gender" in html
