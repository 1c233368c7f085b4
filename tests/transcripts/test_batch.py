"""Batch transcription on the local engine: upload → job → a transcript to read and export.

Real speech (Debian's pocketsphinx-testdata LibriVox recordings with their reference text),
a synthetic two-voice dialogue for diarization, the job run as the worker runs it, and every
kind of bad upload refused with a message and nothing kept."""

import io
import json
import wave

import numpy as np
import pytest
import srt
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.engines.local import stt as local_stt
from apps.jobs.models import Job, JobStatus
from apps.jobs.tasks import job_run
from apps.transcripts.models import Transcript, TranscriptStatus
from tests.conftest import HTMX
from tests.engines.test_local_stt import DIALOGUE, human_recordings, silence, speak, wav_bytes, wer

RATE = 16000


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def samples_of(wav: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav)) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


@pytest.fixture(scope="module")
def lecture():
    """The LibriVox utterances one after another (about 28 s) and their reference text."""
    pieces, reference = [], []
    for wav, text in human_recordings():
        pieces += [samples_of(wav), silence(0.6)]
        reference.append(text)
    return wav_bytes(np.concatenate(pieces)), " ".join(reference)


@pytest.fixture(scope="module")
def dialogue():
    voices = {"A": ("en-us+m3", 35, 150), "B": ("en-us+f4", 80, 165)}
    pieces, truth = [], []
    for who, sentence in DIALOGUE:
        pieces += [speak(sentence, *voices[who]), silence(0.7)]
        truth += [who] * len(sentence.split())
    return wav_bytes(np.concatenate(pieces)), truth


def upload(client, data: bytes, name="talk.wav", **fields):
    return client.post(
        reverse("transcripts:new"),
        {"media": SimpleUploadedFile(name, data, "audio/wav"), "tag_audio_events": "on", **fields},
    )


def run_job(transcript: Transcript) -> Transcript:
    """The job, run in this process exactly as a worker runs it."""
    job = Job.objects.get(pk=transcript.job_id)
    job_run(job.pk, job.attempt)
    transcript.refresh_from_db()
    return transcript


def test_human_speech_is_transcribed_by_a_job_with_wer_under_15_percent(
    client_as, member, viewer, lecture
):
    audio, reference = lecture
    response = upload(client_as(member), audio, "lecture.wav", title="Austen, chapter 1")
    transcript = Transcript.objects.get()
    assert response.status_code == 303
    assert response["Location"] == reverse("transcripts:detail", args=[transcript.pk])
    assert transcript.status == TranscriptStatus.QUEUED and transcript.title == "Austen, chapter 1"
    assert 20 < transcript.duration_seconds < 60
    [reserved] = UsageEvent.objects.all()
    assert (reserved.status, reserved.capability, reserved.source) == (
        UsageStatus.RESERVED, "stt", UsageSource.UI,
    )  # fmt: skip
    page = client_as(viewer).get(reverse("transcripts:detail", args=[transcript.pk])).text
    assert "data-job-socket" in page and "kept even if you leave" in page

    transcript = run_job(transcript)
    assert transcript.status == TranscriptStatus.READY
    error = wer(reference, transcript.text)
    print(f"WER {error:.3f} over {len(reference.split())} words")
    assert error <= 0.15, (error, transcript.text)
    assert transcript.language_code == "en" and transcript.language_probability > 0.5
    assert all(w["start"] is not None and w["end"] >= w["start"] for w in transcript.words)
    job = Job.objects.get(pk=transcript.job_id)
    assert job.status == JobStatus.SUCCEEDED and job.progress == 100
    [event] = UsageEvent.objects.all()
    assert event.status == UsageStatus.SETTLED and event.purpose_id == transcript.uid
    assert event.unit == "minute"
    assert float(event.units) == pytest.approx(transcript.duration_seconds / 60, abs=0.01)
    page = client_as(viewer).get(reverse("transcripts:detail", args=[transcript.pk])).text
    assert reverse("transcripts:media", args=[transcript.pk]) in page
    assert 'class="w' in page and "data-start=" in page
    assert "Edit paragraph" not in page  # viewers read only


def test_long_recordings_are_transcribed_in_chunks_with_real_progress(
    client_as, member, lecture, monkeypatch
):
    monkeypatch.setattr(local_stt, "CHUNK_SECONDS", 8.0)
    shares = []
    from apps.jobs import services as job_services

    real = job_services.job_progress

    def recorded(*, job, percent, message=""):
        shares.append(percent)
        return real(job=job, percent=percent, message=message)

    monkeypatch.setattr(job_services, "job_progress", recorded)
    audio, reference = lecture
    upload(client_as(member), audio, "lecture.wav")
    transcript = run_job(Transcript.objects.get())
    steps = [p for p in shares if 10 < p < 92]
    assert len(set(steps)) >= 3 and steps == sorted(steps)  # one step per chunk, rising
    assert wer(reference, transcript.text) <= 0.15
    starts = [w["start"] for w in transcript.words]
    assert starts == sorted(starts) and starts[-1] > 20  # later chunks offset in time


def test_diarization_of_a_two_voice_dialogue(client_as, member, dialogue):
    audio, truth = dialogue
    upload(client_as(member), audio, "dialogue.wav", diarize="on", num_speakers="2")
    transcript = run_job(Transcript.objects.get())
    words = [w for w in transcript.words if w["type"] == "word"]
    labels = [w["speaker_id"] for w in words]
    assert len(set(labels)) == 2
    # Align by position (the words are the same count when recognition is right; otherwise
    # compare the shorter run) and map each found speaker to the truth it most agrees with.
    n = min(len(labels), len(truth))
    best = 0
    for mapping in ({}, {"swap": True}):
        right = sum(
            1 for found, real in zip(labels[:n], truth[:n], strict=True)
            if (found == "speaker_0") == ((real == "A") != bool(mapping))
        )  # fmt: skip
        best = max(best, right)
    share = best / len(truth)
    print(f"diarization: {share:.3f} of {len(truth)} words right")
    assert share >= 0.9
    paragraphs = {w["p"] for w in transcript.words}
    assert len(paragraphs) >= 5  # a paragraph per turn, or close


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("broken.wav", b"RIFF\x00\x00garbage" * 100, "broken.wav"),
        ("empty.mp3", b"", "empty"),
        ("notes.txt", b"hello there", "is not a file Chorus transcribes"),
        ("silent.wav", None, "no sound"),
    ],
    ids=["corrupt", "empty", "unsupported", "silent"],
)
def test_bad_uploads_are_refused_with_a_message_and_nothing_kept(
    client_as, member, name, data, message, tmp_path
):
    if data is None:
        data = wav_bytes(silence(4.0))
    response = upload(client_as(member), data, name)
    assert response.status_code == 400
    assert message in response.text.lower() or message in response.text
    assert not Transcript.objects.exists() and not UsageEvent.objects.exists()
    assert not Job.objects.exists()
    media = tmp_path / "media" / "transcripts"
    assert not media.exists() or not any(media.rglob("*.*"))


def test_an_oversized_upload_is_refused(client_as, member, settings, lecture):
    settings.CHORUS_TRANSCRIBE_MAX_MB = 1
    big = lecture[0] + b"\0" * 400_000  # over 1 MB
    response = upload(client_as(member), big, "big.wav")
    assert response.status_code == 400 and "the most is 1 MB" in response.text
    assert not Transcript.objects.exists()


def test_missing_file_and_bad_options(client_as, member, lecture):
    client = client_as(member)
    response = client.post(reverse("transcripts:new"), {"title": "x"})
    assert response.status_code == 400 and "Choose a recording" in response.text
    response = upload(client, lecture[0], language_code="english")
    assert response.status_code == 400
    response = upload(client, lecture[0], diarize="on", num_speakers="99")
    assert response.status_code == 400 and "less than or equal to 32" in response.text
    response = upload(client, lecture[0], keyterms="\n".join(f"t{i}" for i in range(1001)))
    assert response.status_code == 400 and "at most 1000 key terms" in response.text
    assert not Transcript.objects.exists()


def test_a_failed_job_says_why_and_can_be_retried(client_as, member, lecture, monkeypatch):
    from apps.engines.base import UpstreamUnavailable
    from apps.engines.local.engine import LocalEngine

    upload(client_as(member), lecture[0], "lecture.wav")
    transcript = Transcript.objects.get()

    def broken(self, request):
        raise ValueError("the decoder crashed")

    monkeypatch.setattr(LocalEngine, "stt", broken)
    transcript = run_job(transcript)
    assert transcript.status == TranscriptStatus.FAILED and "decoder crashed" in transcript.error
    [event] = UsageEvent.objects.all()
    assert event.status == UsageStatus.REFUNDED
    page = client_as(member).get(reverse("transcripts:detail", args=[transcript.pk])).text
    assert "The transcription failed" in page and "decoder crashed" in page
    monkeypatch.undo()
    response = client_as(member).post(reverse("transcripts:retry", args=[transcript.pk]))
    assert response.status_code == 303
    transcript = run_job(Transcript.objects.get())
    assert transcript.status == TranscriptStatus.READY and transcript.text
    assert UsageEvent.objects.filter(status=UsageStatus.SETTLED).count() == 1
    del UpstreamUnavailable


def test_exports_of_a_real_transcript_parse(client_as, member, viewer, lecture):
    upload(client_as(member), lecture[0], "lecture.wav", title="Austen")
    transcript = run_job(Transcript.objects.get())
    client = client_as(viewer)
    url = lambda fmt, **q: reverse("transcripts:export", args=[transcript.pk, fmt])  # noqa: E731
    body = client.get(url("srt")).content.decode()
    cues = list(srt.parse(body))
    assert cues and all(len(line) <= 42 for c in cues for line in c.content.split("\n"))
    shaped = json.loads(client.get(url("json")).content)
    assert shaped["text"] == transcript.text and shaped["language_code"] == "en"
    response = client.get(url("srt"), {"max_chars": "20", "max_lines": "1"})
    assert all(len(c.content) <= 20 for c in srt.parse(response.content.decode()))
    assert client.get(url("srt"), {"max_lines": "x"}).status_code == 400
    assert client.get(url("pdf")).status_code == 404
    assert client.get(url("docx"))["Content-Disposition"] == 'attachment; filename="austen.docx"'


def test_an_htmx_upload_redirects_the_page(client_as, member, lecture):
    client = client_as(member, **HTMX)
    response = client.post(
        reverse("transcripts:new"),
        {"media": SimpleUploadedFile("a.wav", lecture[0], "audio/wav")},
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse(
        "transcripts:detail", args=[Transcript.objects.get().pk]
    )


def test_a_video_file_is_transcribed_from_its_audio_track(client_as, member, lecture):
    import av

    samples = samples_of(lecture[0])
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            (samples * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    response = client_as(member).post(
        reverse("transcripts:new"),
        {"media": SimpleUploadedFile("episode.mp4", out.getvalue(), "video/mp4")},
    )
    assert response.status_code == 303, response.content[:300]
    transcript = run_job(Transcript.objects.get())
    assert transcript.status == TranscriptStatus.READY
    assert wer(lecture[1], transcript.text) <= 0.15


@pytest.mark.slow
def test_a_disconnect_mid_upload_keeps_nothing(daphne_server, member, lecture, settings):
    """The browser goes away halfway through the body: no transcript, no job, no file."""
    import socket
    from urllib.parse import urlsplit

    from tests.conftest import session_cookie_for

    cookie = session_cookie_for(member)
    host = urlsplit(daphne_server.url)
    boundary = "----chorus-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="media"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    body = head + lecture[0]  # the closing boundary never comes
    request = (
        f"POST /transcripts/new/ HTTP/1.1\r\nHost: {host.hostname}:{host.port}\r\n"
        f"Cookie: {settings.SESSION_COOKIE_NAME}={cookie}; csrftoken={'a' * 32}\r\n"
        f"X-CSRFToken: {'a' * 32}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body) + 2000}\r\n\r\n"
    ).encode()
    with socket.create_connection((host.hostname, host.port), timeout=10) as conn:
        conn.sendall(request + body[: len(body) // 2])
    import time

    time.sleep(1.5)
    assert not Transcript.objects.exists() and not Job.objects.exists()
    assert not UsageEvent.objects.exists()
    import urllib.request

    with urllib.request.urlopen(daphne_server.url + "/healthz", timeout=5) as answer:  # noqa: S310
        assert answer.status == 200


def test_the_recording_is_served_with_the_type_chorus_chose_not_the_browser_s(
    client_as, member, viewer, lecture
):
    """An upload claiming text/html (a WAV with a script in it) is served as audio/wav."""
    client_as(member).post(
        reverse("transcripts:new"),
        {"media": SimpleUploadedFile("a.wav", lecture[0] + b"<script>alert(1)</script>",
                                     "text/html")},
    )  # fmt: skip
    transcript = Transcript.objects.get()
    response = client_as(viewer).get(reverse("transcripts:media", args=[transcript.pk]))
    assert response["Content-Type"] == "audio/wav"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_deleting_a_transcript_still_waiting_cancels_its_job_and_releases_its_credit(
    client_as, member, lecture
):
    upload(client_as(member), lecture[0])
    transcript = Transcript.objects.get()
    response = client_as(member).post(reverse("transcripts:delete", args=[transcript.pk]))
    assert response.status_code == 303
    job = Job.objects.get()
    assert job.status == JobStatus.CANCELLED
    [event] = UsageEvent.objects.all()
    assert event.status == UsageStatus.REFUNDED
    job_run(job.pk, job.attempt)  # a message that was already queued finds nothing to do
    assert not Transcript.objects.exists()
