"""``/v1/studio/projects…`` through Django's test client: every route's body against the
official spec's response schema, content JSON in and out, documents, refusals in the API's
shapes, workspace isolation, roles and scopes, converting (a final render through the core,
metered to the key) and the snapshots' audio."""

import io
import json
import zipfile
from decimal import Decimal

import av
import pytest
from django.core.files.base import ContentFile
from django.test import Client

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.gateway import services
from apps.projects.models import Block, Chapter, Export, Project, Render, Take
from apps.voices import services as voice_services
from apps.workspaces.models import Membership, Role

from .openapi_check import assert_matches

SHAPE_A = {"type", "code", "message", "status", "request_id"}
P = "/v1/studio/projects"
VOICE, OTHER = "local-joe", "local-espeak-en-us-f3"
CONTENT = [
    {
        "name": "The harbour",
        "blocks": [
            {
                "sub_type": "p",
                "nodes": [{"type": "tts_node", "voice_id": VOICE, "text": "The boats came in."}],
            },
            {
                "sub_type": "p",
                "nodes": [
                    {"type": "tts_node", "voice_id": OTHER, "text": "Nobody said a word."},
                    {"type": "tts_node", "voice_id": VOICE, "text": "Then the bell rang."},
                ],
            },
        ],
    },
    {
        "name": "The hill",
        "blocks": [
            {
                "sub_type": "h1",
                "nodes": [{"type": "tts_node", "voice_id": VOICE, "text": "We climbed."}],
            }
        ],
    },
]


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def voices(workspace):
    voice_services.library_sync(workspace=workspace)  # the local engine's voices
    return workspace


@pytest.fixture
def issued(voices, member):
    return services.api_key_create(workspace=voices, user=member, name="Studio")


@pytest.fixture
def api(issued):
    return Client(HTTP_XI_API_KEY=issued.raw)


def create(api, **fields):
    data = {"name": "Harbour tales", "default_paragraph_voice_id": VOICE, **fields}
    if "from_content_json" in data and not isinstance(data["from_content_json"], str):
        data["from_content_json"] = json.dumps(data["from_content_json"])
    return api.post(P, {k: v for k, v in data.items() if v is not None})


def post_json(api, path, body):
    return api.post(path, json.dumps(body), content_type="application/json")


def detail_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    detail = response.json()["detail"]
    assert isinstance(detail, dict) and set(detail) >= SHAPE_A, detail
    assert detail["status"] == detail["code"]
    return detail


def locs(response) -> list:
    assert response.status_code == 422, response.content
    return [error["loc"] for error in response.json()["detail"]]


def decoded_seconds(audio: bytes) -> float:
    """Decode ``audio`` with PyAV (FFmpeg): how long it plays (it must be MP3)."""
    with av.open(io.BytesIO(audio)) as container:
        assert "mp3" in container.format.name.split(",")
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def run_job(job):
    from apps.jobs.tasks import job_run

    job.refresh_from_db()
    job_run(job.pk, job.attempt)
    job.refresh_from_db()
    return job


def texts(project_body) -> list[list[tuple[str, str]]]:
    return [
        [(b["nodes"][0]["text"], b["nodes"][0]["voice_id"]) for b in chapter["content"]["blocks"]]
        for chapter in project_body
    ]


# --- Creating and reading ---------------------------------------------------------------------


def test_a_project_from_content_json_reads_back_in_the_official_shapes(api, member):
    made = create(api, from_content_json=CONTENT, default_model_id="eleven_multilingual_v2")
    assert made.status_code == 200, made.content
    assert_matches(made.json(), P, "post")
    project = made.json()["project"]
    assert (project["name"], project["default_paragraph_voice_id"]) == ("Harbour tales", VOICE)
    assert (project["state"], project["can_be_downloaded"]) == ("default", False)
    pid = project["project_id"]
    row = Project.objects.get(public_id=pid)
    assert (row.source, row.created_by_id) == ("api", member.pk)

    got = api.get(f"{P}/{pid}")
    assert got.status_code == 200
    assert_matches(got.json(), f"{P}/{{project_id}}")
    chapters = got.json()["chapters"]
    assert [c["name"] for c in chapters] == ["The harbour", "The hill"]
    assert chapters[0]["statistics"]["paragraphs_unconverted"] == 3
    assert {v["voice_id"] for v in got.json()["voices"]} == {VOICE, OTHER}

    listed = api.get(P)
    assert_matches(listed.json(), P)
    assert [p["project_id"] for p in listed.json()["projects"]] == [pid]

    in_list = api.get(f"{P}/{pid}/chapters")
    assert_matches(in_list.json(), f"{P}/{{project_id}}/chapters")
    bodies = []
    for chapter in in_list.json()["chapters"]:
        one = api.get(f"{P}/{pid}/chapters/{chapter['chapter_id']}")
        assert_matches(one.json(), f"{P}/{{project_id}}/chapters/{{chapter_id}}")
        bodies.append(one.json())
    # Each node is a block of its own; its voice comes back as sent.
    assert texts(bodies) == [
        [
            ("The boats came in.", VOICE),
            ("Nobody said a word.", OTHER),
            ("Then the bell rang.", VOICE),
        ],
        [("We climbed.", VOICE)],
    ]
    # The default voice is inherited (blank), another voice is the block's own.
    assert sorted(Block.objects.values_list("voice_id", flat=True)) == ["", "", "", OTHER]


def test_a_project_from_a_document_and_a_blank_one_with_unknown_fields(api):
    document = io.BytesIO(
        b"# Chapter One\n\nIt was a quiet morning.\n\nThe sea was flat.\n\n"
        b"# Chapter Two\n\nBy noon the wind rose.\n"
    )
    document.name = "tales.md"
    made = api.post(
        P, {"name": "From a file", "default_paragraph_voice_id": VOICE, "from_document": document}
    )
    assert made.status_code == 200, made.content
    pid = made.json()["project"]["project_id"]
    chapters = api.get(f"{P}/{pid}").json()["chapters"]
    assert [c["name"] for c in chapters] == ["Chapter One", "Chapter Two"]
    assert [c["statistics"]["paragraphs_unconverted"] for c in chapters] == [2, 1]
    assert Project.objects.get(public_id=pid).source_filename == "tales.md"

    blank = create(
        api,
        name="Blank",
        quality_preset="high",
        genres="fiction",
        mature_content="false",
        volume_normalization="true",
        some_future_field="ignored",
    )
    assert blank.status_code == 200, blank.content
    assert api.get(f"{P}/{blank.json()['project']['project_id']}").json()["chapters"] == []


def test_bad_input_is_refused_in_the_apis_shapes_and_nothing_is_made(api):
    unknown = detail_of(create(api, default_paragraph_voice_id="no-such-voice"), 400)
    assert (unknown["code"], unknown["param"]) == ("voice_not_found", "default_paragraph_voice_id")
    node = json.loads(json.dumps(CONTENT))
    node[1]["blocks"][0]["nodes"][0]["voice_id"] = "ghost"
    in_content = detail_of(create(api, from_content_json=node), 400)
    assert in_content["param"] == "from_content_json" and "ghost" in in_content["message"]

    assert locs(create(api, from_content_json="{not json")) == [["body", "from_content_json"]]
    assert locs(create(api, from_content_json={"name": "x"})) == [["body", "from_content_json"]]
    wrong = [
        {"name": "A", "blocks": [{"nodes": [{"type": "image", "text": "x", "voice_id": VOICE}]}]}
    ]
    assert locs(create(api, from_content_json=wrong)) == [
        ["body", "from_content_json", 0, "blocks", 0, "nodes", 0, "type"]
    ]
    empty_text = [
        {"name": "A", "blocks": [{"nodes": [{"type": "tts_node", "text": " ", "voice_id": VOICE}]}]}
    ]
    assert locs(create(api, from_content_json=empty_text))[0][-1] == "text"
    assert locs(api.post(P, {"default_paragraph_voice_id": VOICE})) == [["body", "name"]]
    as_json = post_json(api, P, {"name": "x"})
    assert as_json.status_code == 422  # the official create is a form
    bad_doc = io.BytesIO(b"\x00\x01\x02\x03" * 100)
    bad_doc.name = "thing.bin"
    refused = detail_of(
        api.post(P, {"name": "x", "default_paragraph_voice_id": VOICE, "from_document": bad_doc}),
        400,
    )
    assert refused["param"] == "from_document"
    url = detail_of(create(api, from_url="https://example.test/book"), 400)
    assert (url["code"], url["param"]) == ("not_supported", "from_url")
    no_voice = detail_of(api.post(P, {"name": "x"}), 400)
    assert no_voice["param"] == "default_paragraph_voice_id"
    assert Project.objects.count() == 0


# --- Editing ------------------------------------------------------------------------------------


def test_edit_a_project_its_content_and_its_chapters(api):
    pid = create(api, from_content_json=CONTENT).json()["project"]["project_id"]
    edited = post_json(
        api,
        f"{P}/{pid}",
        {
            "name": "Harbour tales, revised",
            "default_title_voice_id": OTHER,
            "default_paragraph_voice_id": OTHER,
            "author": "A. Writer",
            "isbn_number": "123",
            "unknown": 1,
        },
    )
    assert edited.status_code == 200, edited.content
    assert_matches(edited.json(), f"{P}/{{project_id}}", "post")
    assert edited.json()["project"]["name"] == "Harbour tales, revised"
    assert edited.json()["project"]["author"] == "A. Writer"
    assert Project.objects.get(public_id=pid).default_voice_id == OTHER
    assert locs(post_json(api, f"{P}/{pid}", {"name": "x"})) == [
        ["body", "default_title_voice_id"],
        ["body", "default_paragraph_voice_id"],
    ]
    broken = api.post(f"{P}/{pid}", "{oops", content_type="application/json")
    assert locs(broken)[0][:1] == ["body"]
    ghost = {"name": "x", "default_title_voice_id": VOICE, "default_paragraph_voice_id": "ghost"}
    assert detail_of(post_json(api, f"{P}/{pid}", ghost), 400)["code"] == "voice_not_found"

    # A chapter: add, rename and rewrite (a block named by id keeps its id), delete.
    added = post_json(api, f"{P}/{pid}/chapters", {"name": "The shore", "extra": True})
    assert added.status_code == 200, added.content
    assert_matches(added.json(), f"{P}/{{project_id}}/chapters", "post")
    cid = added.json()["chapter"]["chapter_id"]
    first = post_json(
        api,
        f"{P}/{pid}/chapters/{cid}",
        {
            "content": {
                "blocks": [{"nodes": [{"type": "tts_node", "voice_id": VOICE, "text": "One."}]}]
            }
        },
    )
    assert first.status_code == 200, first.content
    assert_matches(first.json(), f"{P}/{{project_id}}/chapters/{{chapter_id}}", "post")
    block_id = first.json()["chapter"]["content"]["blocks"][0]["block_id"]
    second = post_json(
        api,
        f"{P}/{pid}/chapters/{cid}",
        {
            "name": "The long shore",
            "content": {
                "blocks": [
                    {"nodes": [{"type": "tts_node", "voice_id": VOICE, "text": "Zero."}]},
                    {
                        "block_id": block_id,
                        "nodes": [{"type": "tts_node", "voice_id": VOICE, "text": "One."}],
                    },
                ]
            },
        },
    )
    chapter = second.json()["chapter"]
    assert chapter["name"] == "The long shore"
    assert [b["nodes"][0]["text"] for b in chapter["content"]["blocks"]] == ["Zero.", "One."]
    assert chapter["content"]["blocks"][1]["block_id"] == block_id
    bad = post_json(api, f"{P}/{pid}/chapters/{cid}", {"content": {"blocks": "x"}})
    assert locs(bad) == [["body", "content", "blocks"]]
    gone = api.delete(f"{P}/{pid}/chapters/{cid}")
    assert gone.status_code == 200 and gone.json() == {"status": "ok"}
    assert_matches(gone.json(), f"{P}/{{project_id}}/chapters/{{chapter_id}}", "delete")
    assert detail_of(api.get(f"{P}/{pid}/chapters/{cid}"), 404)["code"] == "chapter_not_found"

    # The whole content replaced from a form.
    replaced = api.post(
        f"{P}/{pid}/content",
        {"from_content_json": json.dumps(CONTENT[1:])},
    )
    assert replaced.status_code == 200, replaced.content
    assert_matches(replaced.json(), f"{P}/{{project_id}}/content", "post")
    assert [c.name for c in Chapter.objects.filter(project__public_id=pid)] == ["The hill"]

    deleted = api.delete(f"{P}/{pid}")
    assert deleted.json() == {"status": "ok"}
    assert_matches(deleted.json(), f"{P}/{{project_id}}", "delete")
    assert detail_of(api.get(f"{P}/{pid}"), 404)["code"] == "project_not_found"


# --- Isolation, roles, scopes ------------------------------------------------------------------


def test_another_workspaces_project_is_a_404_on_every_route(api, outsider):
    pid = create(api, from_content_json=CONTENT).json()["project"]["project_id"]
    project = Project.objects.get(public_id=pid)
    chapter = project.chapters.first()
    snapshot = Export.objects.create(
        workspace=project.workspace, project=project, format="mp3", file="x.mp3"
    )
    theirs = Membership.objects.get(user=outsider).workspace
    voice_services.library_sync(workspace=theirs)
    their_key = services.api_key_create(workspace=theirs, user=outsider, name="Theirs")
    other = Client(HTTP_XI_API_KEY=their_key.raw)
    c, s = chapter.public_id, snapshot.public_id
    calls = [
        ("get", f"{P}/{pid}"),
        ("post", f"{P}/{pid}"),
        ("delete", f"{P}/{pid}"),
        ("post", f"{P}/{pid}/content"),
        ("post", f"{P}/{pid}/convert"),
        ("get", f"{P}/{pid}/snapshots"),
        ("get", f"{P}/{pid}/snapshots/{s}"),
        ("post", f"{P}/{pid}/snapshots/{s}/stream"),
        ("post", f"{P}/{pid}/snapshots/{s}/archive"),
        ("get", f"{P}/{pid}/chapters"),
        ("post", f"{P}/{pid}/chapters"),
        ("get", f"{P}/{pid}/chapters/{c}"),
        ("post", f"{P}/{pid}/chapters/{c}"),
        ("delete", f"{P}/{pid}/chapters/{c}"),
        ("post", f"{P}/{pid}/chapters/{c}/convert"),
        ("get", f"{P}/{pid}/chapters/{c}/snapshots"),
        ("get", f"{P}/{pid}/chapters/{c}/snapshots/{s}"),
        ("post", f"{P}/{pid}/chapters/{c}/snapshots/{s}/stream"),
    ]
    for method, path in calls:
        response = other.generic(method.upper(), path, "{}", content_type="application/json")
        assert detail_of(response, 404)["code"] == "project_not_found", (method, path)
    assert other.get(P).json() == {"projects": []}
    # Their own project exists; our chapter id under it is still unknown.
    mine = create(other, name="Theirs").json()["project"]["project_id"]
    assert detail_of(other.get(f"{P}/{mine}/chapters/{c}"), 404)["code"] == "chapter_not_found"
    assert Project.objects.filter(public_id=pid).exists()
    assert Chapter.objects.filter(pk=chapter.pk).exists()


def test_a_viewers_key_and_a_key_without_the_scope_are_refused(api, issued, voices, member):
    pid = create(api, from_content_json=CONTENT).json()["project"]["project_id"]
    scoped = services.api_key_create(workspace=voices, user=member, name="STT", scopes=["stt"])
    refused = detail_of(Client(HTTP_XI_API_KEY=scoped.raw).get(P), 403)
    assert refused["code"] == "missing_permissions"
    services.known_keys_forget()
    Membership.objects.filter(workspace=voices, user=member).update(role=Role.VIEWER)
    services.known_keys_forget()
    for response in (api.get(P), create(api, name="x"), api.post(f"{P}/{pid}/convert")):
        assert detail_of(response, 401)["code"] == "invalid_api_key"
    assert Project.objects.count() == 1 and Render.objects.count() == 0


def test_only_the_creator_or_a_manager_deletes_a_project(api, voices, owner, manager):
    from tests.factories import make_user

    pid = create(api, name="Mine").json()["project"]["project_id"]
    colleague = make_user("colleague@example.com", name="Col League")
    Membership.objects.create(workspace=voices, user=colleague, role=Role.MEMBER)
    theirs = services.api_key_create(workspace=voices, user=colleague, name="Col")
    refused = detail_of(Client(HTTP_XI_API_KEY=theirs.raw).delete(f"{P}/{pid}"), 403)
    assert refused["code"] == "permission_denied"
    boss = services.api_key_create(workspace=voices, user=manager, name="Boss")
    assert Client(HTTP_XI_API_KEY=boss.raw).delete(f"{P}/{pid}").status_code == 200
    assert not Project.objects.filter(public_id=pid).exists()


# --- Converting and snapshots ------------------------------------------------------------------


def test_convert_renders_final_takes_metered_to_the_key(api, issued, member):
    pid = create(api, from_content_json=CONTENT).json()["project"]["project_id"]
    project = Project.objects.get(public_id=pid)
    started = api.post(f"{P}/{pid}/convert")
    assert started.status_code == 200, started.content
    assert_matches(started.json(), f"{P}/{{project_id}}/convert", "post")
    render = Render.objects.get(project=project)
    assert (render.draft, render.snapshot, render.source, render.api_key_id) == (
        False,
        True,
        "api",
        issued.api_key.pk,
    )
    assert api.get(f"{P}/{pid}").json()["state"] == "converting"
    assert run_job(render.job).status == "succeeded", render.job.error

    takes = list(Take.objects.filter(render=render).select_related("generation"))
    assert len(takes) == 4 and not any(t.draft for t in takes)
    events = UsageEvent.objects.filter(pk__in=[t.generation.usage_event_id for t in takes])
    assert {(e.source, e.api_key_id, e.user_id, e.status, e.capability) for e in events} == {
        (UsageSource.API, issued.api_key.pk, member.pk, UsageStatus.SETTLED, "tts")
    }
    for take in takes:
        with take.generation.file.open("rb") as handle:
            assert decoded_seconds(handle.read()) > 0.3
    body = api.get(f"{P}/{pid}").json()
    assert body["state"] == "default" and body["last_conversion_date_unix"] is not None
    stats = [c["statistics"] for c in body["chapters"]]
    assert [(s["paragraphs_converted"], s["paragraphs_unconverted"]) for s in stats] == [
        (3, 0),
        (1, 0),
    ]
    again = detail_of(api.post(f"{P}/{pid}/convert"), 400)
    assert again["code"] == "nothing_to_convert"

    # One block changed: converting the chapter renders that block only.
    chapter = project.chapters.first()
    block = chapter.blocks.order_by("position").first()
    post_json(
        api,
        f"{P}/{pid}/chapters/{chapter.public_id}",
        {
            "content": {
                "blocks": [
                    {
                        "block_id": b.public_id,
                        "nodes": [
                            {
                                "type": "tts_node",
                                "voice_id": b.voice_id or VOICE,
                                "text": "The ships came in." if b.pk == block.pk else b.text,
                            }
                        ],
                    }
                    for b in chapter.blocks.order_by("position")
                ]
            }
        },
    )
    assert api.post(f"{P}/{pid}/chapters/{chapter.public_id}/convert").status_code == 200
    second = Render.objects.exclude(pk=render.pk).get()
    assert (second.scope, second.block_ids, second.snapshot) == ("chapter", [block.pk], True)


def test_convert_is_refused_past_the_keys_cap(voices, on_elevenlabs, member):
    capped = services.api_key_create(
        workspace=voices, user=member, name="Capped", monthly_cap=Decimal("1")
    )
    api = Client(HTTP_XI_API_KEY=capped.raw)
    pid = create(api, from_content_json=CONTENT).json()["project"]["project_id"]
    refused = detail_of(api.post(f"{P}/{pid}/convert"), 429)
    assert refused["code"] == "quota_exceeded" and "cap" in refused["message"]
    assert Render.objects.count() == 0 and UsageEvent.objects.count() == 0


def snapshot_from_takes(project, chapter=None) -> Export:
    """An MP3 snapshot as the export job leaves one: here the first take's audio."""
    take = Take.objects.filter(block__chapter__project=project).order_by("id").first()
    with take.generation.file.open("rb") as handle:
        audio = handle.read()
    export = Export.objects.create(
        workspace=project.workspace,
        project=project,
        chapter=chapter,
        format="mp3",
        name="Snapshot",
        duration_seconds=decoded_seconds(audio),
    )
    export.file.save("snapshot.mp3", ContentFile(audio))
    return export


def test_snapshots_list_get_stream_and_archive(api):
    pid = create(api, from_content_json=CONTENT).json()["project"]["project_id"]
    project = Project.objects.get(public_id=pid)
    api.post(f"{P}/{pid}/convert")
    run_job(Render.objects.get().job)
    Export.objects.all().delete()  # whatever the render left: this test makes its own
    chapter = project.chapters.first()
    whole, one = snapshot_from_takes(project), snapshot_from_takes(project, chapter)
    Export.objects.create(workspace=project.workspace, project=project, format="mp3")  # unfinished

    listed = api.get(f"{P}/{pid}/snapshots")
    assert_matches(listed.json(), f"{P}/{{project_id}}/snapshots")
    assert [s["project_snapshot_id"] for s in listed.json()["snapshots"]] == [whole.public_id]
    got = api.get(f"{P}/{pid}/snapshots/{whole.public_id}")
    assert_matches(got.json(), f"{P}/{{project_id}}/snapshots/{{project_snapshot_id}}")
    assert got.json()["audio_duration_secs"] == pytest.approx(whole.duration_seconds)

    streamed = post_json(
        api, f"{P}/{pid}/snapshots/{whole.public_id}/stream", {"convert_to_mpeg": True}
    )
    assert streamed.status_code == 200 and streamed["content-type"] == "audio/mpeg"
    audio = b"".join(streamed.streaming_content)
    assert decoded_seconds(audio) == pytest.approx(whole.duration_seconds, abs=0.05)
    bad_flag = post_json(
        api, f"{P}/{pid}/snapshots/{whole.public_id}/stream", {"convert_to_mpeg": "x"}
    )
    assert locs(bad_flag) == [["body", "convert_to_mpeg"]]

    archive = api.post(f"{P}/{pid}/snapshots/{whole.public_id}/archive")
    assert archive.status_code == 200 and archive["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        names = zipped.namelist()
        assert len(names) == 4 and names[0] == "01 The harbour/001.mp3"
        assert all(decoded_seconds(zipped.read(n)) > 0.3 for n in names)

    base = f"{P}/{pid}/chapters/{chapter.public_id}/snapshots"
    chapter_list = api.get(base)
    assert_matches(chapter_list.json(), f"{P}/{{project_id}}/chapters/{{chapter_id}}/snapshots")
    assert [s["chapter_snapshot_id"] for s in chapter_list.json()["snapshots"]] == [one.public_id]
    one_body = api.get(f"{base}/{one.public_id}")
    assert_matches(
        one_body.json(),
        f"{P}/{{project_id}}/chapters/{{chapter_id}}/snapshots/{{chapter_snapshot_id}}",
    )
    chapter_stream = api.post(f"{base}/{one.public_id}/stream")
    assert chapter_stream.status_code == 200, chapter_stream.content
    chapter_audio = b"".join(chapter_stream.streaming_content)
    assert decoded_seconds(chapter_audio) > 0.3
    # A project snapshot is not a chapter's, and the other way round.
    assert detail_of(api.get(f"{base}/{whole.public_id}"), 404)["code"] == "snapshot_not_found"
    assert detail_of(api.get(f"{P}/{pid}/snapshots/{one.public_id}"), 404)["code"] == (
        "snapshot_not_found"
    )
    assert api.get(f"{P}/{pid}").json()["can_be_downloaded"] is True
