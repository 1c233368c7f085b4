"""Reading and editing a transcript through its pages (plain and htmx), searching it, and the
role matrix of every transcripts view."""

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from apps.jobs.models import Job, JobStatus
from apps.transcripts.models import Transcript, TranscriptStatus
from tests.conftest import HTMX
from tests.engines.test_local_stt import silence, wav_bytes
from tests.transcripts.test_document import words_of


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def make_transcript(workspace, user, **more) -> Transcript:
    transcript = Transcript(
        workspace=workspace, created_by=user, uid=f"u{Transcript.objects.count()}{workspace.pk}",
        title="Budget call", filename="call.wav", content_type="audio/wav", duration_seconds=14,
        status=TranscriptStatus.READY, language_code="en", language_probability=0.97,
        words=words_of(), options={"keyterms": ["budget"]}, **more,
    )  # fmt: skip
    transcript.media.save("call.wav", ContentFile(wav_bytes(silence(1.0))), save=False)
    transcript.text = " ".join(w["text"] for w in transcript.words)
    transcript.save()
    return transcript


@pytest.fixture
def transcript(workspace, member):
    return make_transcript(workspace, member)


def body(response) -> str:
    return response.content.decode()


def test_the_page_shows_speakers_times_keyterms_and_words_to_click(client_as, viewer, transcript):
    page = body(client_as(viewer).get(reverse("transcripts:detail", args=[transcript.pk])))
    assert page.count('class="paragraph"') == 3
    assert "Speaker 1" in page and "Speaker 2" in page
    assert 'data-seek="4.2"' in page and "0:04" in page
    assert 'class="w keyterm"' in page  # "budget" is a key term
    assert 'data-start="0.0"' in page


def test_search_marks_every_match(client_as, viewer, transcript):
    page = body(client_as(viewer).get(reverse("transcripts:detail", args=[transcript.pk]),
                                      {"q": "the budget"}))  # fmt: skip
    assert "2 words found" in page and page.count("<mark>") == 2


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_edit_text_rename_reassign_split_and_merge(client_as, member, transcript, htmx):
    client = client_as(member, **(HTMX if htmx else {}))
    pk = transcript.pk

    def post(name, data, *args):
        response = client.post(reverse(f"transcripts:{name}", args=[pk, *args]), data)
        assert response.status_code == (200 if htmx else 303), body(response)[:300]
        if htmx:
            assert 'id="transcript-body"' in body(response) and "<html" not in body(response)
        transcript.refresh_from_db()

    post("paragraph_edit", {"text": "Happy to be here. Shall we begin with the budget?"}, 1)
    assert "Shall we begin with the budget?" in transcript.text
    assert transcript.edited_at is not None
    post("speaker_rename", {"speaker_id": "speaker_1", "name": "Bea Boss"})
    assert transcript.speakers == {"speaker_1": "Bea Boss"}
    post("paragraph_speaker", {"speaker_id": "speaker_1"}, 2)
    assert {w["speaker_id"] for w in transcript.words if w["p"] == 2} == {"speaker_1"}
    post("paragraph_split", {"at": "3"}, 0)
    assert len({w["p"] for w in transcript.words}) == 4
    post("paragraph_merge", {}, 0)
    assert len({w["p"] for w in transcript.words}) == 3
    page = body(client_as(member).get(reverse("transcripts:detail", args=[pk])))
    assert "Bea Boss" in page


@pytest.mark.parametrize(
    ("name", "args", "data", "message"),
    [
        ("paragraph_edit", (0,), {"text": "  "}, "needs some text"),
        ("paragraph_edit", (9,), {"text": "x"}, "no paragraph 10"),
        ("paragraph_split", (0,), {"at": "0"}, "between two words"),
        ("paragraph_split", (0,), {"at": "x"}, "whole number"),
        ("paragraph_split", (0,), {"at": "²"}, "whole number"),
        ("paragraph_merge", (2,), {}, "last paragraph"),
        ("paragraph_speaker", (0,), {"speaker_id": "<script>"}, "Choose a speaker"),
        ("speaker_rename", (), {"speaker_id": "speaker_0", "name": " "}, "needs a name"),
        ("speaker_rename", (), {"speaker_id": "nobody", "name": "X"}, "Choose one of the"),
    ],
)
def test_bad_edits_are_a_400_with_a_message_and_change_nothing(
    client_as, member, transcript, name, args, data, message
):
    before = list(transcript.words)
    response = client_as(member).post(
        reverse(f"transcripts:{name}", args=[transcript.pk, *args]), data
    )
    assert response.status_code == 400 and message in body(response)
    transcript.refresh_from_db()
    assert transcript.words == before and transcript.speakers == {}


def test_a_transcript_still_transcribing_cannot_be_edited_or_exported(client_as, member, workspace):
    job = Job.objects.create(workspace=workspace, kind="transcribe", status=JobStatus.RUNNING)
    pending = make_transcript(workspace, member, job=job)
    Transcript.objects.filter(pk=pending.pk).update(status=TranscriptStatus.RUNNING)
    client = client_as(member)
    response = client.post(
        reverse("transcripts:paragraph_edit", args=[pending.pk, 0]), {"text": "x"}
    )
    assert response.status_code == 400 and "once it is ready" in body(response)
    assert client.get(reverse("transcripts:export", args=[pending.pk, "txt"])).status_code == 409
    progress = client.get(reverse("transcripts:progress", args=[pending.pk]), **HTMX)
    assert progress.status_code == 200 and "HX-Refresh" not in progress
    Transcript.objects.filter(pk=pending.pk).update(status=TranscriptStatus.READY)
    done = client.get(reverse("transcripts:progress", args=[pending.pk]), **HTMX)
    assert done["HX-Refresh"] == "true"


def test_the_recording_is_served_with_ranges(client_as, viewer, transcript):
    url = reverse("transcripts:media", args=[transcript.pk])
    whole = client_as(viewer).get(url)
    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes"
    part = client_as(viewer).get(url, HTTP_RANGE="bytes=0-9")
    assert part.status_code == 206 and len(part.content) == 10


def test_only_the_uploader_or_a_manager_deletes(client_as, member, manager, workspace, owner):
    theirs = make_transcript(workspace, owner)
    assert (
        client_as(member).post(reverse("transcripts:delete", args=[theirs.pk])).status_code == 403
    )
    mine = make_transcript(workspace, member)
    assert client_as(member).post(reverse("transcripts:delete", args=[mine.pk])).status_code == 303
    assert (
        client_as(manager).post(reverse("transcripts:delete", args=[theirs.pk])).status_code == 303
    )
    assert not Transcript.objects.exists()


# --- Role matrix -------------------------------------------------------------------------------

RANK = {"owner": 3, "manager": 2, "member": 1, "viewer": 0}
VIEWS = [
    ("transcripts:list", False, (), "get", None, "viewer"),
    ("transcripts:new", False, (), "get", None, "member"),
    ("transcripts:detail", True, (), "get", None, "viewer"),
    ("transcripts:progress", True, (), "get", None, "viewer"),
    ("transcripts:media", True, (), "get", None, "viewer"),
    ("transcripts:export", True, ("srt",), "get", None, "viewer"),
    (
        "transcripts:speaker_rename",
        True,
        (),
        "post",
        {"speaker_id": "speaker_0", "name": "A"},
        "member",
    ),
    ("transcripts:paragraph_edit", True, (0,), "post", {"text": "Hello there"}, "member"),
    ("transcripts:paragraph_speaker", True, (0,), "post", {"speaker_id": "speaker_1"}, "member"),
    ("transcripts:paragraph_split", True, (0,), "post", {"at": "1"}, "member"),
    ("transcripts:paragraph_merge", True, (0,), "post", {}, "member"),
]


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize("role", ["owner", "manager", "member", "viewer", "outsider"])
@pytest.mark.parametrize(
    "name,obj,extra,method,data,minimum", VIEWS, ids=[f"{v[0]}-{v[3]}" for v in VIEWS]
)
def test_each_role_gets_the_right_answer(
    client_as, request, transcript, name, obj, extra, method, data, minimum, role, htmx
):
    client = client_as(request.getfixturevalue(role), **(HTMX if htmx else {}))
    url = reverse(name, args=[transcript.pk, *extra] if obj else None)
    response = client.post(url, data) if method == "post" else client.get(url)
    if role == "outsider":
        if obj:
            assert response.status_code == 404
        else:
            assert response.status_code < 500 and "Budget call" not in body(response)
        return
    if RANK[role] >= RANK[minimum]:
        assert response.status_code in {200, 206, 303}, (role, response.status_code)
    else:
        assert response.status_code == 403


@pytest.mark.parametrize(
    "name,obj,extra,method,data,minimum", VIEWS, ids=[f"{v[0]}-{v[3]}" for v in VIEWS]
)
def test_wrong_methods_and_anonymous(
    client_as, owner, transcript, name, obj, extra, method, data, minimum
):
    url = reverse(name, args=[transcript.pk, *extra] if obj else None)
    if name != "transcripts:new":
        wrong = client_as(owner).post(url, {}) if method == "get" else client_as(owner).get(url)
        assert wrong.status_code == 405
    anonymous = client_as(None).get(url)
    assert anonymous.status_code in {302, 405}


def test_redacted_words_show_their_category(client_as, viewer, workspace, member):
    words = words_of([("speaker_0", "write to [EMAIL_ADDRESS] today", 0.0)])
    redacted = make_transcript(workspace, member)
    Transcript.objects.filter(pk=redacted.pk).update(words=words)
    page = body(client_as(viewer).get(reverse("transcripts:detail", args=[redacted.pk])))
    assert 'class="w redacted"' in page and "email address" in page
    Transcript.objects.filter(pk=redacted.pk).update(
        entities=[{"text": "ada@example.com", "entity_type": "email_address",
                   "start_char": 9, "end_char": 24}]
    )  # fmt: skip
    page = body(client_as(viewer).get(reverse("transcripts:detail", args=[redacted.pk])))
    assert "1 entity detected" in page and "Email address" in page and "email_address" not in page


# --- Live pages ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "manager", "member", "viewer", "outsider"])
def test_live_pages_by_role(client_as, request, workspace, member, role):
    from apps.transcripts import live

    session = live.live_start(workspace=workspace, user=member)
    client = client_as(request.getfixturevalue(role))
    creates = role in ("owner", "manager", "member")
    page = client.get(reverse("transcripts:live"))
    started = client.post(reverse("transcripts:live_start"), {"language_code": "en"})
    watch = client.get(reverse("transcripts:watch", args=[session.pk]))
    if role == "outsider":
        assert watch.status_code == 404
        assert page.status_code == 200 and started.status_code == 200  # in their own workspace
        assert started.json()["id"] != session.pk
        return
    assert watch.status_code == 200 and f"/ws/transcripts/live/{session.pk}/watch/" in body(watch)
    if creates:
        assert page.status_code == 200 and "● Start" in body(page)
        data = started.json()
        assert data["socket"] == f"/ws/transcripts/live/{data['id']}/"
        assert Transcript.objects.get(pk=data["id"]).created_by.email == f"{role}@example.com"
    else:
        assert page.status_code == 403 and started.status_code == 403


def test_a_bad_language_refuses_the_live_start(client_as, member):
    response = client_as(member).post(reverse("transcripts:live_start"), {"language_code": "x1"})
    assert response.status_code == 400 and "2- or 3-letter" in response.json()["error"]
    assert not Transcript.objects.exists()


def test_an_ended_live_session_s_watch_page_shows_the_transcript(
    client_as, viewer, workspace, member
):
    from apps.transcripts import live

    session = live.live_start(workspace=workspace, user=member)
    live.live_finish(transcript=session)
    response = client_as(viewer).get(reverse("transcripts:watch", args=[session.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("transcripts:detail", args=[session.pk])


def test_the_new_speaker_is_a_free_id_and_events_stay_out_of_the_edit_box(
    client_as, member, workspace, owner
):
    words = words_of([("speaker_0", "hello world", 0.0), ("speaker_2", "later on", 5.0)])
    words.insert(1, {"text": "laughter", "start": 0.3, "end": 0.5, "type": "audio_event",
                     "speaker_id": "speaker_0", "logprob": 0.0, "p": 0})  # fmt: skip
    transcript = make_transcript(workspace, owner)
    Transcript.objects.filter(pk=transcript.pk).update(words=words)
    page = body(client_as(member).get(reverse("transcripts:detail", args=[transcript.pk])))
    assert '<option value="speaker_1">New speaker</option>' in page
    assert ">hello world</textarea>" in page  # the (laughter) event is not in the text box
    assert "Delete" not in page.split("</h1>")[1].split("transcript-body")[0]  # not theirs
    response = client_as(member).post(
        reverse("transcripts:paragraph_edit", args=[transcript.pk, 0]), {"text": "hello world"}
    )
    assert response.status_code == 303
    transcript.refresh_from_db()
    assert [w["text"] for w in transcript.words if w["p"] == 0] == ["hello", "laughter", "world"]
