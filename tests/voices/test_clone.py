"""Cloning in the studio with a consent register: samples checked one by one (nothing kept on
refusal), consent required, an expired consent blocks generation everywhere, and the
register shows it to managers."""

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.gateway import services as gateway
from apps.voices import services_clone, services_usage
from apps.voices.models import ApiVoice, LibraryVoice, VoiceConsent, VoiceSource
from apps.workspaces.services import ActionRefused
from tests.gateway.test_api_media import SENTENCE, spoken


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def wav(name="take-1.wav", data=None):
    return SimpleUploadedFile(name, data if data is not None else spoken(SENTENCE), "audio/wav")


def mp3(name="take-2.mp3"):
    return SimpleUploadedFile(name, spoken(SENTENCE, output_format="mp3_44100_128"), "audio/mpeg")


def in_days(days: int) -> str:
    return (timezone.localdate() + timedelta(days=days)).isoformat()


def clone_form(**changes):
    data = {
        "name": "Nadia",
        "description": "Our host, recorded in the studio.",
        "accent": "french",
        "speaker_name": "Nadia Haddad",
        "statement": "I, Nadia Haddad, agree that Acme may clone my voice for narration.",
        "attested": "on",
        "allowed_uses": ["narration", "internal"],
        "expires_on": in_days(30),
        "samples": [wav(), mp3()],
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_a_member_clones_with_consent_and_the_voice_is_in_the_library_and_v1(
    client_as, member, manager, workspace
):
    response = client_as(member).post(
        reverse("voices:clone"),
        clone_form(consent_recording=wav("consent.wav"), remove_background_noise="on"),
    )
    voice = LibraryVoice.objects.get(name="Nadia")
    assert response.status_code == 303
    assert response["Location"] == reverse("voices:detail", args=[voice.pk])
    assert (voice.source, voice.category, voice.accent) == (VoiceSource.CLONED, "cloned", "french")
    consent = VoiceConsent.objects.get()
    assert (consent.library_voice, consent.voice_id, consent.speaker_name) == (
        voice, voice.voice_id, "Nadia Haddad",
    )  # fmt: skip
    assert consent.allowed_uses == ["narration", "internal"]
    assert [s["filename"] for s in consent.samples] == ["take-1.wav", "take-2.mp3"]
    assert all(s["seconds"] > 1 for s in consent.samples)
    assert consent.recording.name.startswith("consent/")
    assert consent.expires_at.date() == timezone.localdate() + timedelta(days=30)
    [event] = UsageEvent.objects.all()
    assert (event.capability, event.source, event.status, event.user) == (
        "voice_clone", UsageSource.UI, UsageStatus.SETTLED, member,
    )  # fmt: skip
    assert (event.purpose_type, event.purpose_id) == ("voice_clone", consent.uid)
    # Listed through /v1 and usable there by its id.
    api = Client(HTTP_XI_API_KEY=gateway.api_key_create(workspace=workspace, user=member,
                                                        name="t").raw)  # fmt: skip
    listed = api.get("/v2/voices", {"search": "Nadia"}).json()["voices"]
    assert [v["voice_id"] for v in listed] == [voice.voice_id]
    speech = api.post(
        f"/v1/text-to-speech/{voice.voice_id}",
        data={"text": "Hello from the clone."},
        content_type="application/json",
    )
    assert speech.status_code == 200 and len(speech.content) > 1000
    # The register (managers) and the voice page show the consent.
    register = client_as(manager).get(reverse("voices:consents")).text
    assert "Nadia Haddad" in register and "narration" in register
    page = client_as(manager).get(reverse("voices:detail", args=[voice.pk])).text
    assert "Consent" in page and "Nadia Haddad" in page and "take-2.mp3" in page


@pytest.mark.parametrize(
    ("samples", "problem"),
    [
        (
            [SimpleUploadedFile("broken.wav", b"RIFF\x00\x00garbage" * 50, "audio/wav")],
            "broken.wav: it does not decode as audio",
        ),
        ([SimpleUploadedFile("empty.mp3", b"", "audio/mpeg")], "empty.mp3: the file is empty"),
        ([SimpleUploadedFile("notes.txt", b"hello", "text/plain")], "notes.txt: A sample must be"),
        ([SimpleUploadedFile("photo.png", b"\x89PNG\r\n" * 40, "image/png")], "photo.png"),
    ],
    ids=["corrupt", "empty", "text", "image"],
)
def test_bad_samples_are_named_with_their_reason_and_nothing_is_kept(
    client_as, member, samples, problem
):
    response = client_as(member).post(
        reverse("voices:clone"), clone_form(samples=[wav(), *samples])
    )
    assert response.status_code == 400
    assert "Some samples cannot be used" in response.text
    name, why = problem.split(": ", 1) if ": " in problem else (problem, "")
    assert f"<strong>{name}</strong>" in response.text and why in response.text
    assert "take-1.wav</strong>" not in response.text  # the good one is not blamed
    assert not LibraryVoice.objects.exists() and not VoiceConsent.objects.exists()
    assert not ApiVoice.objects.exists() and not UsageEvent.objects.exists()


def test_oversized_samples_are_refused(client_as, member, settings):
    settings.CHORUS_CLONE_SAMPLE_MAX_MB = 1
    big = SimpleUploadedFile("long.wav", b"RIFF" + b"\0" * 1_200_000)
    response = client_as(member).post(reverse("voices:clone"), clone_form(samples=[big]))
    assert response.status_code == 400 and "the most is 1 MB per file" in response.text
    settings.CHORUS_CLONE_SAMPLE_MAX_MB = 20
    settings.CHORUS_CLONE_TOTAL_MAX_MB = 1
    many = [wav(f"t{i}.wav") for i in range(12)]  # each well under 1 MB, together over it
    assert 1_048_576 < sum(m.size for m in many) < 12 * 1_048_576
    response = client_as(member).post(reverse("voices:clone"), clone_form(samples=many))
    assert response.status_code == 400 and "the most is 1 MB together" in response.text
    assert not LibraryVoice.objects.exists() and not UsageEvent.objects.exists()


def test_too_few_or_too_many_samples(client_as, member):
    response = client_as(member).post(reverse("voices:clone"), clone_form(samples=None))
    assert response.status_code == 400 and "Add at least one sample" in response.text
    samples = [wav(f"t{i}.wav") for i in range(26)]
    response = client_as(member).post(reverse("voices:clone"), clone_form(samples=samples))
    assert response.status_code == 400 and "at most 25 samples" in response.text
    assert not LibraryVoice.objects.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"speaker_name": ""}, "This field is required"),
        ({"statement": "ok"}, "at least 20"),
        ({"attested": None}, "Confirm that the speaker consented"),
        ({"allowed_uses": []}, "Choose the uses"),
        ({"allowed_uses": ["weapons"]}, "Select a valid choice"),
        ({"expires_on": ""}, "Give the date the consent expires"),
        ({"expires_on": in_days(-1)}, "must be in the future"),
        ({"expires_on": "31/31/2026"}, "Enter a valid date"),
        ({"name": ""}, "This field is required"),
        (
            {"consent_recording": SimpleUploadedFile("c.wav", b"junk", "audio/wav")},
            "The consent recording cannot be used",
        ),
    ],
)
def test_consent_is_required_and_checked(client_as, member, changes, message):
    response = client_as(member).post(reverse("voices:clone"), clone_form(**changes))
    assert response.status_code == 400
    assert message in response.text
    assert not LibraryVoice.objects.exists() and not UsageEvent.objects.exists()


def test_an_expired_consent_blocks_generation_everywhere_and_the_register_shows_it(
    client_as, member, manager, workspace
):
    client_as(member).post(reverse("voices:clone"), clone_form())
    voice = LibraryVoice.objects.get(name="Nadia")
    consent = VoiceConsent.objects.get()
    consent.expires_at = timezone.now() - timedelta(minutes=1)
    consent.save()
    # The studio's try-it box…
    response = client_as(member).post(reverse("voices:try", args=[voice.pk]), {"text": "Hello."})
    assert response.status_code == 400 and "consent of Nadia Haddad" in response.text
    # …the /v1 API…
    api = Client(HTTP_XI_API_KEY=gateway.api_key_create(workspace=workspace, user=member,
                                                        name="t").raw)  # fmt: skip
    refused = api.post(
        f"/v1/text-to-speech/{voice.voice_id}", data={"text": "Hi"},
        content_type="application/json",
    )  # fmt: skip
    assert refused.status_code == 403
    assert refused.json()["detail"]["code"] == "voice_consent_expired"
    # …and final renders.
    with pytest.raises(ActionRefused, match="consent"):
        services_usage.voice_render_check(
            workspace=workspace, engine=voice.engine, voice_id=voice.voice_id
        )
    assert UsageEvent.objects.filter(capability="tts").count() == 0
    register = client_as(manager).get(reverse("voices:consents")).text
    assert "1 consent expired" in register and "Expired" in register
    page = client_as(member).get(reverse("voices:detail", args=[voice.pk])).text
    assert "cannot be used for generation" in page
    # A manager renews it: usable again.
    response = client_as(manager).post(
        reverse("voices:consent_renew", args=[consent.pk]), {"expires_on": in_days(90)}
    )
    assert response.status_code == 303
    ok = client_as(member).post(reverse("voices:try", args=[voice.pk]), {"text": "Hello."})
    assert ok.status_code == 303
    assert voice.changes.filter(action="consent renewed").exists()


def test_renewing_needs_a_future_date(client_as, manager, member):
    client_as(member).post(reverse("voices:clone"), clone_form())
    consent = VoiceConsent.objects.get()
    before = consent.expires_at
    for value in ("", in_days(-3), "nonsense"):
        response = client_as(manager).post(
            reverse("voices:consent_renew", args=[consent.pk]), {"expires_on": value}
        )
        assert response.status_code == 400 and "must be in the future" in response.text
    consent.refresh_from_db()
    assert consent.expires_at == before


def test_the_register_is_for_managers_and_lists_only_this_workspace(
    client_as, member, manager, viewer, outsider
):
    client_as(member).post(reverse("voices:clone"), clone_form())
    client_as(outsider).post(reverse("voices:clone"), clone_form(speaker_name="Far Away"))
    page = client_as(manager).get(reverse("voices:consents")).text
    assert "Nadia Haddad" in page and "Far Away" not in page
    assert client_as(member).get(reverse("voices:consents")).status_code == 403
    assert client_as(viewer).get(reverse("voices:consents")).status_code == 403
    theirs = VoiceConsent.objects.get(speaker_name="Far Away")
    response = client_as(manager).post(
        reverse("voices:consent_renew", args=[theirs.pk]), {"expires_on": in_days(9)}
    )
    assert response.status_code == 404


def test_the_samples_check_reports_every_bad_file_at_once():
    good = services_clone.Upload("a.wav", spoken(SENTENCE))
    with pytest.raises(services_clone.SamplesRefused) as caught:
        services_clone.samples_check(
            [good, services_clone.Upload("b.ogg", b""), services_clone.Upload("c.exe", b"MZ")]
        )
    assert [name for name, _ in caught.value.problems] == ["b.ogg", "c.exe"]


def test_the_samples_play_on_the_voice_page_and_in_the_library(client_as, member, viewer, outsider):
    first = spoken(SENTENCE)
    client_as(member).post(reverse("voices:clone"), clone_form(samples=[wav(data=first), mp3()]))
    consent = VoiceConsent.objects.get()
    voice = consent.library_voice
    one = reverse("voices:clone_sample", args=[consent.pk, 1])
    two = reverse("voices:clone_sample", args=[consent.pk, 2])
    assert voice.preview_url == one  # the library card's preview
    page = client_as(viewer).get(reverse("voices:detail", args=[voice.pk])).text
    assert one in page and two in page
    response = client_as(viewer).get(one)
    assert response.status_code == 200 and response["Content-Type"] == "audio/wav"
    assert b"".join(response.streaming_content) == first
    ranged = client_as(viewer).get(two, HTTP_RANGE="bytes=0-99")
    assert ranged.status_code == 206 and len(ranged.content) == 100
    assert ranged["Content-Type"] == "audio/mpeg"
    assert (
        client_as(viewer).get(reverse("voices:clone_sample", args=[consent.pk, 3])).status_code
        == 404
    )
    assert client_as(outsider).get(one).status_code == 404
    library = client_as(viewer).get(reverse("voices:library")).text
    preview = reverse("voices:preview", args=[voice.pk])
    assert preview in library  # the card's play button: the first sample
    assert client_as(viewer).get(preview)["Location"] == one


def test_the_register_lists_clones_made_without_a_consent_record(client_as, manager, workspace):
    LibraryVoice.objects.create(
        workspace=workspace, engine="local", voice_id="v-api", name="From the API",
        category="cloned", source=VoiceSource.CLONED,
    )  # fmt: skip
    page = client_as(manager).get(reverse("voices:consents")).text
    assert "Clones without a consent record" in page and "From the API" in page
