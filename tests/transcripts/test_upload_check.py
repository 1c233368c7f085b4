"""One check for every upload to transcribe: the studio's form and ``/v1/speech-to-text`` refuse
the same files and the same key terms, with the same words, before anything is reserved; and a
large upload goes from Django's spool file to storage without a copy."""

import html
import io
import struct

import numpy as np
import pytest
from django.core.files.base import File
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from apps.billing.models import UsageEvent, UsageStatus
from apps.engines import audio
from apps.engines.base import KEYTERM_FORBIDDEN, keyterms_checked
from apps.gateway.services import api_key_create
from apps.jobs.models import Job
from apps.transcripts import services
from apps.transcripts.models import Transcript, TranscriptStatus
from tests.engines.test_local_stt import silence, wav_bytes
from tests.gateway.test_api_media import spoken
from tests.transcripts.test_batch import run_job

RATE = 16000


def claims_277_hours() -> bytes:
    """A valid 2-second WAV (4 kHz, 16-bit) whose header claims 277 hours: its ``fact`` chunk
    counts 277 h of samples and its ``data`` chunk claims more bytes than the file holds, so
    FFmpeg takes the count as the length."""
    rate, seconds = 4000, 2
    pcm = (np.sin(2 * np.pi * 440 * np.arange(rate * seconds) / rate) * 8000).astype("<i2")
    claimed = 277 * 3600 * rate
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = (
        b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"fact" + struct.pack("<II", 4, claimed)
        + b"data" + struct.pack("<I", (claimed * 2) & 0xFFFFFFFF) + pcm.tobytes()
    )  # fmt: skip
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + body


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    (tmp_path / "spool").mkdir()
    return tmp_path


@pytest.fixture
def api(workspace, member):
    return Client(HTTP_XI_API_KEY=api_key_create(workspace=workspace, user=member, name="T").raw)


def studio_upload(client, data: bytes, name: str = "talk.wav", **fields):
    return client.post(
        reverse("transcripts:new"),
        {"media": SimpleUploadedFile(name, data, "audio/wav"), "tag_audio_events": "on", **fields},
    )


def api_upload(api, data: bytes, name: str = "talk.wav", **fields):
    return api.post(
        "/v1/speech-to-text",
        {"model_id": "scribe_v1", "file": SimpleUploadedFile(name, data, "audio/wav"), **fields},
    )


def nothing_kept() -> bool:
    return not (Transcript.objects.exists() or Job.objects.exists() or UsageEvent.objects.exists())


def studio_error(response) -> str:
    assert response.status_code == 400, response.content[:300]
    page = response.content.decode()
    start = page.index('role="alert">') + len('role="alert">')
    return html.unescape(page[start : page.index("</div>", start)])


# --- A header that claims 277 hours ---------------------------------------------------------


def test_the_277_hour_header_is_what_ffmpeg_reads():
    assert audio.probe_duration(claims_277_hours(), "long.wav") == pytest.approx(277 * 3600)


def test_the_studio_form_refuses_a_wav_claiming_277_hours_before_reserving_anything(
    client_as, member
):
    message = studio_error(studio_upload(client_as(member), claims_277_hours(), "long.wav"))
    assert message == (
        "long.wav is 277 h long; Chorus transcribes recordings of up to 4 h. "
        "Split it into parts and upload each."
    )
    assert nothing_kept()


def test_v1_refuses_a_wav_claiming_277_hours_with_a_400_before_reserving_anything(api):
    response = api_upload(api, claims_277_hours(), "long.wav")
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert (detail["code"], detail["param"]) == ("invalid_parameters", "file")
    assert detail["message"] == (
        "long.wav is 277 h long; Chorus transcribes recordings of up to 4 h. "
        "Split it into parts and upload each."
    )
    assert nothing_kept()


# --- Key terms --------------------------------------------------------------------------------


@pytest.mark.parametrize("char", list(KEYTERM_FORBIDDEN))
def test_key_terms_with_a_character_elevenlabs_refuses_are_refused_by_both_alike(
    client_as, member, api, char
):
    term = f"Acme{char}corp"
    expected = f"Key terms cannot contain < > {{ }} [ ] or \\: “{term}”."
    studio = studio_upload(client_as(member), spoken(), keyterms=f"fine\n{term}")
    assert studio_error(studio) == expected
    response = api_upload(api, spoken(), keyterms=["fine", term])
    assert response.status_code == 422, response.content
    assert response.json()["detail"] == [
        {"type": "value_error", "loc": ["body", "keyterms"], "msg": expected}
    ]
    assert nothing_kept()


@pytest.mark.parametrize(
    ("terms", "says"),
    [
        (["x" * 50], "A key term has fewer than 50 characters"),
        (["one two three four five six"], "A key term has at most 5 words"),
        ([f"t{i}" for i in range(1001)], "Use at most 1000 key terms (1001 given)."),
    ],
)
def test_the_other_key_term_rules_are_elevenlabs_and_the_same_both_ways(
    client_as, member, api, terms, says
):
    assert studio_error(
        studio_upload(client_as(member), spoken(), keyterms="\n".join(terms))
    ).startswith(says)
    [error] = api_upload(api, spoken(), keyterms=terms).json()["detail"]
    assert error["loc"] == ["body", "keyterms"] and error["msg"].startswith(says)
    assert nothing_kept()


def test_the_job_applies_the_very_same_rule():
    from apps.engines.local import stt

    assert stt.keyterms_checked is keyterms_checked
    assert keyterms_checked(["  Acme   corp ", "x" * 49, "Acme corp"]) == ["Acme corp", "x" * 49]


# --- Other refusals, the same both ways ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "is empty"),
        (b"just some notes, not audio\n" * 20, "could not be decoded as audio or video"),
        (wav_bytes(silence(0.05)), "is too short: it plays 0.05 s"),
    ],
    ids=["empty", "not-audio", "too-short"],
)
def test_files_that_cannot_be_transcribed_are_refused_by_both_with_one_message(
    client_as, member, api, data, says
):
    assert says in studio_error(studio_upload(client_as(member), data, "take.wav"))
    response = api_upload(api, data, "take.wav")
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "file"] and says in error["msg"]
    assert nothing_kept()


def test_a_language_with_a_region_is_its_language_both_ways():
    assert services.language_checked("en-US") == "en"
    assert services.language_checked("PT_br") == "pt"
    with pytest.raises(services.UploadRefused) as refused:
        services.language_checked("english")
    assert refused.value.field == "language_code"


def test_the_check_reads_a_file_as_it_lies_without_reading_it_whole():
    class Counted(io.BytesIO):
        reads: list[int] = []

        def read(self, size=-1):
            self.reads.append(size)
            return super().read(size)

    upload = File(Counted(wav_bytes(silence(30.0))), name="quiet.wav")  # 960 kB
    with pytest.raises(services.UploadRefused, match="it is silent"):
        services.upload_check(upload=upload, options=services.Options(), silence=True)
    assert Counted.reads and all(0 < n <= 64 * 1024 for n in Counted.reads)  # never whole


# --- Valid uploads ---------------------------------------------------------------------------


def test_a_valid_upload_on_disk_is_moved_into_storage_and_transcribed(
    client_as, member, settings, media, monkeypatch
):
    from django.core.files.storage import filesystem

    sentence = audio.decode_to_pcm16k(spoken())
    data = wav_bytes(np.concatenate([sentence, silence(40.0)]))
    assert len(data) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE  # Django spools it to disk
    moved = []
    real_move = filesystem.file_move_safe

    def move(old, new, **options):
        moved.append(old)
        return real_move(old, new, **options)

    monkeypatch.setattr(filesystem, "file_move_safe", move)

    response = studio_upload(client_as(member), data, "sentence.wav", keyterms="lazy  dog")
    assert response.status_code == 303, response.content[:500]
    transcript = Transcript.objects.get()
    assert transcript.media.read() == data
    [spooled] = moved  # Django's spool file became the stored file: no copy
    assert spooled.startswith(str(media / "spool"))
    assert transcript.options["keyterms"] == ["lazy dog"]
    [reserved] = UsageEvent.objects.all()
    assert reserved.status == UsageStatus.RESERVED

    transcript = run_job(transcript)
    assert transcript.status == TranscriptStatus.READY, transcript.error
    assert "lazy dog" in transcript.text.lower()
    assert transcript.duration_seconds == pytest.approx((len(data) - 44) / 2 / RATE, abs=0.05)


def test_a_valid_upload_is_transcribed_by_v1(api):
    response = api_upload(
        api, spoken(), "sentence.wav", keyterms=["lazy dog"], language_code="en-GB"
    )
    assert response.status_code == 200, response.content
    assert "lazy dog" in response.json()["text"].lower()
    [event] = UsageEvent.objects.all()
    assert event.status == UsageStatus.SETTLED
