"""A voice in use: the try-it box (estimate first, metered with the voice as its purpose),
usage by member on the voice page, use counts, the approved-voices-only rule for final
renders, the voices' part of the workspace export, and every new view's role matrix."""

import io
import json
import zipfile
from datetime import timedelta

import av
import pytest
from django.urls import reverse
from django.utils import timezone

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.history.models import Generation
from apps.jobs.models import Job
from apps.voices import services, services_design, services_usage
from apps.voices.models import Approval, LibraryVoice, VoiceConsent, VoiceNote
from apps.workspaces.services import ActionRefused, workspace_export_run
from tests.conftest import HTMX
from tests.gateway.test_api_media import SENTENCE, spoken
from tests.voices.test_design import recipe


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def voice(workspace):
    services.library_sync(workspace=workspace)  # the local engine's voices
    return LibraryVoice.objects.filter(workspace=workspace).order_by("pk").first()


def seconds_of(audio: bytes) -> float:
    with av.open(io.BytesIO(audio)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_try_it_speaks_is_metered_for_the_voice_and_counts_as_a_use(client_as, member, voice, htmx):
    client = client_as(member, **(HTMX if htmx else {}))
    response = client.post(reverse("voices:try", args=[voice.pk]), {"text": "Hello there, Zoë!"})
    clip = Generation.objects.get()
    if htmx:
        assert response.status_code == 200
        assert reverse("history:audio", args=[clip.pk]) in response.text
        assert "<html" not in response.text
    else:
        assert response.status_code == 303
        assert response["Location"].endswith(f"?clip={clip.pk}")
        page = client_as(member).get(response["Location"]).text
        assert reverse("history:audio", args=[clip.pk]) in page
    assert seconds_of(clip.file.read()) > 0.5
    assert (clip.voice_id, clip.text, clip.source) == (voice.voice_id, "Hello there, Zoë!", "ui")
    [event] = UsageEvent.objects.all()
    assert (event.capability, event.status, event.source, event.user) == (
        "tts", UsageStatus.SETTLED, UsageSource.UI, member,
    )  # fmt: skip
    assert (event.purpose_type, event.purpose_id, event.voice_id) == (
        "voice", str(voice.pk), voice.voice_id,
    )  # fmt: skip
    voice.refresh_from_db()
    assert voice.use_count == 1 and voice.last_used_at is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [("   ", "Type something"), ("x" * 501, "at most 500 characters")],
)
def test_try_it_refuses_empty_or_long_text(client_as, member, voice, text, message):
    response = client_as(member).post(reverse("voices:try", args=[voice.pk]), {"text": text})
    assert response.status_code == 400 and message in response.text
    assert not Generation.objects.exists() and not UsageEvent.objects.exists()


def test_the_estimate_follows_the_text(client_as, member, voice):
    response = client_as(member).get(
        reverse("voices:try_estimate", args=[voice.pk]), {"text": "Twelve chars"}, **HTMX
    )
    assert response.status_code == 200 and "12/500 characters" in response.text
    page = client_as(member).get(reverse("voices:detail", args=[voice.pk])).text
    assert "0/500 characters" in page and "estimate" in page


def test_usage_shows_credits_by_member_and_where_the_voice_is_used(
    client_as, member, manager, viewer, voice
):
    services_usage.voice_try(voice=voice, user=member, text="One.")
    services_usage.voice_try(voice=voice, user=member, text="Two.")
    services_usage.voice_try(voice=voice, user=manager, text="Three.")
    usage = services_usage.voice_usage(voice)
    assert usage.calls == 3
    assert {(m["name"], m["calls"]) for m in usage.by_member} == {
        ("Mia Member", 2),
        ("Max Manager", 1),
    }
    assert [(k["kind"], k["clips"]) for k in usage.by_kind] == [("tts", 3)]
    page = client_as(viewer).get(reverse("voices:detail", args=[voice.pk])).text
    # One count, said the same way wherever it shows (the voice's facts and its usage).
    assert "<dt>Used</dt><dd>3 times" in page and "Used 3 times" in page
    assert "Speech (3 clips)" in page
    assert "0 times" not in page and " calls" not in page
    assert "Viewers can listen and read" in page  # no try-it form for viewers
    voice.refresh_from_db()
    assert voice.use_count == 3


def test_approved_voices_only_is_enforced_by_the_service(
    client_as, manager, member, voice, workspace
):
    check = {"workspace": workspace, "engine": voice.engine, "voice_id": voice.voice_id}
    services_usage.voice_render_check(**check)  # the rule is off: any voice
    response = client_as(manager).post(reverse("voices:policy"), {"require_approved_voices": "on"})
    assert response.status_code == 303
    workspace.refresh_from_db()
    assert workspace.require_approved_voices
    with pytest.raises(ActionRefused, match="only approved voices"):
        services_usage.voice_render_check(**check)
    services.voice_propose(voice=voice, actor=member)
    with pytest.raises(ActionRefused, match="proposed, not yet approved"):
        services_usage.voice_render_check(**check)
    services.voice_review(voice=voice, actor=manager, approve=True, reason="")
    services_usage.voice_render_check(**check)
    with pytest.raises(ActionRefused, match="not in the library"):
        services_usage.voice_render_check(workspace=workspace, engine="local", voice_id="nope")
    assert workspace.audit_entries.filter(action="voices.require_approved").exists()
    client_as(manager).post(reverse("voices:policy"), {})
    workspace.refresh_from_db()
    assert not workspace.require_approved_voices
    voice.approval = Approval.REJECTED
    voice.save()
    services_usage.voice_render_check(**check)  # the rule is off again


def test_the_workspace_export_holds_voices_designs_with_audio_notes_tags_votes_and_consent(
    client_as, owner, member, manager, voice, workspace
):
    services.tag_add(voice=voice, name="warm", actor=manager)
    services.note_add(voice=voice, author=member, text="Great for bedtime stories ✨")
    design = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    vote = services_design.vote_open(design=design, user=member)
    services_design.vote_cast(vote=vote, user=member, slot=1)
    from django.core.files.uploadedfile import SimpleUploadedFile

    client_as(member).post(
        reverse("voices:clone"),
        {
            "name": "Nadia", "speaker_name": "Nadia Haddad",
            "statement": "I agree to have my voice cloned for narration.", "attested": "on",
            "allowed_uses": ["narration"],
            "expires_on": (timezone.localdate() + timedelta(days=5)).isoformat(),
            "samples": [SimpleUploadedFile("take.wav", spoken(SENTENCE), "audio/wav")],
        },
    )  # fmt: skip
    job = Job.objects.create(workspace=workspace, kind="workspace_export", created_by=owner)
    result = workspace_export_run(job=job, progress=lambda *a: None)
    from django.core.files.storage import default_storage

    with default_storage.open(result["file"]) as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    names = set(archive.namelist())
    read = lambda name: json.loads(archive.read(name))  # noqa: E731
    voices = {v["voice_id"]: v for v in read("voices/voices.json")}
    assert voices[voice.voice_id]["tags"] == ["warm"]
    assert read("voices/notes.json")[0]["text"] == "Great for bedtime stories ✨"
    [exported] = read("voices/designs.json")
    assert exported["seed"] == design.seed and exported["request"] == design.request
    for preview in design.previews:
        [audio_name] = [n for n in names if preview["history_item_id"] in n]
        assert seconds_of(archive.read(audio_name)) > 1
    [exported_vote] = read("voices/votes.json")
    assert exported_vote["ballots"][0]["voter"] == "member@example.com"
    [consent] = read("voices/consents.json")
    assert consent["speaker_name"] == "Nadia Haddad" and consent["allowed_uses"] == ["narration"]
    assert VoiceNote.objects.count() == 1 and VoiceConsent.objects.count() == 1


# --- Role matrix of the new views ----------------------------------------------------------


@pytest.fixture
def objects(workspace, member, voice):
    design = services_design.design_generate(workspace=workspace, user=member, recipe=recipe())
    vote = services_design.vote_open(design=design, user=member)
    consent = VoiceConsent.objects.create(
        workspace=workspace, uid="u1", engine="local", voice_id="v-x", speaker_name="Samuel Outis",
        statement="I agree to everything here.", allowed_uses=["internal"],
        expires_at=timezone.now() + timedelta(days=3),
    )  # fmt: skip
    return {"design": design, "vote": vote, "consent": consent, "voice": voice}


ROLE_RANK = {"owner": 3, "manager": 2, "member": 1, "viewer": 0}
FUTURE = (timezone.localdate() + timedelta(days=40)).isoformat()
# (url name, object key, extra args, method, data, minimum role)
VIEWS = [
    ("voices:designs", None, (), "get", None, "viewer"),
    ("voices:design_new", None, (), "get", None, "member"),
    ("voices:design", "design", (), "get", None, "viewer"),
    ("voices:design_reproduce", "design", (), "post", {}, "member"),
    ("voices:design_save", "design", (), "post", {"preview": "0", "name": "Saved"}, "member"),
    ("voices:vote_open", "design", (), "post", {}, "member"),
    ("voices:vote", "vote", (), "get", None, "viewer"),
    ("voices:vote_listen", "vote", (1,), "get", None, "viewer"),
    ("voices:vote_cast", "vote", (), "post", {"option": "1"}, "member"),
    ("voices:clone", None, (), "get", None, "member"),
    ("voices:consents", None, (), "get", None, "manager"),
    ("voices:consent_renew", "consent", (), "post", {"expires_on": FUTURE}, "manager"),
    ("voices:policy", None, (), "post", {"require_approved_voices": "on"}, "manager"),
    ("voices:try", "voice", (), "post", {"text": "Hi."}, "member"),
    ("voices:try_estimate", "voice", (), "get", None, "member"),
]


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize("role", ["owner", "manager", "member", "viewer", "outsider"])
@pytest.mark.parametrize(
    "name,key,extra,method,data,minimum", VIEWS, ids=[f"{v[0]}-{v[3]}" for v in VIEWS]
)
def test_each_role_gets_the_right_answer(
    client_as, request, objects, workspace, name, key, extra, method, data, minimum, role, htmx
):
    client = client_as(request.getfixturevalue(role), **(HTMX if htmx else {}))
    url = reverse(name, args=[objects[key].pk, *extra] if key else None)
    response = client.post(url, data) if method == "post" else client.get(url)
    if role == "outsider":
        if key:
            assert response.status_code == 404
        else:
            assert response.status_code < 500 and "Outis" not in response.text
            workspace.refresh_from_db()
            assert not workspace.require_approved_voices
        return
    if ROLE_RANK[role] >= ROLE_RANK[minimum]:
        assert response.status_code in {200, 303}, (
            role,
            response.status_code,
            response.content[:400],
        )
    else:
        assert response.status_code == 403


@pytest.mark.parametrize(
    "name,key,extra,method,data,minimum", VIEWS, ids=[f"{v[0]}-{v[3]}" for v in VIEWS]
)
def test_the_wrong_method_is_a_405_and_anonymous_signs_in(
    client_as, objects, owner, name, key, extra, method, data, minimum
):
    url = reverse(name, args=[objects[key].pk, *extra] if key else None)
    if name not in {"voices:design_new", "voices:clone"}:
        wrong = client_as(owner).get(url) if method == "post" else client_as(owner).post(url, {})
        assert wrong.status_code == 405
    anonymous = client_as(None).get(url)
    assert anonymous.status_code in {302, 405}
    if anonymous.status_code == 302:
        assert anonymous["Location"].startswith(reverse("login"))


def test_a_failed_try_with_htmx_redraws_only_the_result_area(client_as, member, voice):
    response = client_as(member).post(reverse("voices:try", args=[voice.pk]), {"text": " "}, **HTMX)
    assert response.status_code == 400
    assert "Type something" in response.text and "<html" not in response.text


def test_a_clip_id_of_non_ascii_digits_is_ignored(client_as, viewer, voice):
    response = client_as(viewer).get(reverse("voices:detail", args=[voice.pk]), {"clip": "²"})
    assert response.status_code == 200


def test_with_approved_voices_only_v1_speech_needs_an_approved_voice_and_try_it_does_not(
    client_as, manager, member, voice, workspace
):
    from django.test import Client

    from apps.gateway import services as gateway

    api = Client(HTTP_XI_API_KEY=gateway.api_key_create(workspace=workspace, user=member,
                                                        name="t").raw)  # fmt: skip

    def speak():
        return api.post(
            f"/v1/text-to-speech/{voice.voice_id}", data={"text": "Final take."},
            content_type="application/json",
        )  # fmt: skip

    assert speak().status_code == 200  # the rule is off
    client_as(manager).post(reverse("voices:policy"), {"require_approved_voices": "on"})
    refused = speak()
    assert refused.status_code == 403
    assert refused.json()["detail"]["code"] == "voice_not_approved"
    assert "only approved voices" in refused.json()["detail"]["message"]
    # The voice page's try-it box is a try-out, not a final render.
    tried = client_as(member).post(reverse("voices:try", args=[voice.pk]), {"text": "Test."})
    assert tried.status_code == 303
    services.voice_propose(voice=voice, actor=member)
    services.voice_review(voice=voice, actor=manager, approve=True, reason="")
    assert speak().status_code == 200
    assert UsageEvent.objects.filter(capability="tts", status=UsageStatus.SETTLED).count() == 3
