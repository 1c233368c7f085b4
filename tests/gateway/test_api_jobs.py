"""/v1/music and /v1/dubbing: jobs behind the ElevenLabs API, and what they leave in the ledger.

The first half runs in-process (no worker: a job is run by calling its task here, or not at
all to see a wait run out); the second half is the official SDK against a real Daphne and a
real Celery worker on the local engine, including a worker killed in the middle of a dub.
"""

import functools
import io
import json
import signal
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import av
import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone

from apps.billing import services as billing
from apps.billing.models import Budget, UsageEvent, UsageSource, UsageStatus
from apps.engines.base import TTSRequest
from apps.gateway import services
from apps.history.models import Generation
from apps.jobs import services as jobs
from apps.jobs.models import Job, JobStatus
from apps.jobs.tasks import job_run
from apps.projects.models import Dubbing
from apps.workspaces.services import engine_settings_update
from tests.conftest import wait_until
from tests.factories import make_user, make_workspace

from .openapi_check import assert_matches

# Spoken by the local engine and transcribed back: the checks look for words the round trip
# keeps on a busy machine too ("pipeline of Chorus" came back once as "pi-pline, of course").
SPEECH = (
    "Good morning everyone. Today we are testing the dubbing pipeline of Chorus. "
    "It listens to the speech, writes down every word, and then speaks it again."
)
SHAPE_A = {"type", "code", "message", "status", "request_id"}


@functools.cache
def speech_mp3() -> bytes:
    """Real speech to dub, made once per run by the local engine (about 9 s)."""
    from apps.engines.local.engine import local_engine

    return local_engine().tts(TTSRequest(text=SPEECH, voice_id="local-joe")).audio


def seconds_of(audio: bytes) -> float:
    """Decode ``audio`` with PyAV (FFmpeg): how long it plays."""
    with av.open(io.BytesIO(audio)) as container:
        assert container.format.name == "mp3"
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


@pytest.fixture
def issued(workspace, member):
    return services.api_key_create(workspace=workspace, user=member, name="Jobs")


@pytest.fixture
def api(issued):
    return Client(HTTP_XI_API_KEY=issued.raw)


def compose(api, body, **query):
    url = "/v1/music" + (f"?{'&'.join(f'{k}={v}' for k, v in query.items())}" if query else "")
    return api.post(url, json.dumps(body), content_type="application/json")


def dub(api, audio=None, **fields):
    data = {"target_lang": "en", "source_lang": "en", **fields}
    if audio is not None:
        data["file"] = io.BytesIO(audio)
        data["file"].name = "speech.mp3"
    return api.post("/v1/dubbing", data)


def detail_of(response) -> dict:
    detail = response.json()["detail"]
    assert isinstance(detail, dict) and set(detail) >= SHAPE_A, detail
    assert detail["status"] == detail["code"]
    return detail


def run_queued(job) -> Job:
    """Run a queued job here, as a worker would (the task itself, not a copy of it)."""
    job.refresh_from_db()
    job_run.run(job.pk, job.attempt)
    job.refresh_from_db()
    return job


def on_elevenlabs(workspace, owner):
    """The workspace's engine becomes ElevenLabs at a dead address: calls cost credits and
    nothing can reach an upstream, so a refusal can only come from the budget."""
    engine_settings_update(
        workspace=workspace,
        actor=owner,
        kind="elevenlabs",
        api_key="sk-test",
        base_url="http://127.0.0.1:9",
    )


def spend(workspace, user, credits):
    with billing.metered(
        workspace=workspace, user=user, capability="tts", engine="elevenlabs", units=credits
    ) as meter:
        meter.settle(units=credits)


def ledger():
    return list(UsageEvent.objects.order_by("id").values_list("pk", "status", "credits"))


# --- Music: refusals -----------------------------------------------------------------------


def test_music_refuses_bad_input_before_any_job_or_charge(api):
    missing = compose(api, {"music_length_ms": 5000})
    assert missing.status_code == 422
    assert missing.json()["detail"] == [
        {"type": "missing", "loc": ["body", "prompt"], "msg": "Field required"}
    ]
    too_short = compose(api, {"prompt": "piano", "music_length_ms": 500})
    assert too_short.status_code == 422
    assert too_short.json()["detail"][0]["loc"] == ["body", "music_length_ms"]
    assert_matches(too_short.json(), "/v1/music", "post", "422")
    model = compose(api, {"prompt": "piano", "model_id": "music_v9"})
    assert model.status_code == 422 and model.json()["detail"][0]["type"] == "enum"

    fmt = compose(api, {"prompt": "piano"}, output_format="mp3_48000_192")
    assert fmt.status_code == 400
    detail = detail_of(fmt)
    assert (detail["code"], detail["param"]) == ("invalid_output_format", "output_format")
    assert "mp3_44100_192" in detail["message"]

    plan = compose(api, {"composition_plan": {"sections": []}})
    assert plan.status_code == 400 and detail_of(plan)["param"] == "composition_plan"
    assert Job.objects.count() == 0 and UsageEvent.objects.count() == 0


def test_a_spent_budget_is_a_429_with_no_job_and_no_new_ledger_row(api, workspace, owner, member):
    on_elevenlabs(workspace, owner)
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(100))
    spend(workspace, member, 95)
    before = ledger()

    response = compose(api, {"prompt": "a long calm piano piece", "music_length_ms": 60_000})

    assert response.status_code == 429
    detail = detail_of(response)
    assert (detail["code"], detail["type"]) == ("quota_exceeded", "rate_limit_error")
    assert "Mia Member's budget of 100 credits" in detail["message"]
    assert "1,000 credits" in detail["message"]  # a minute of music at the default rate
    assert ledger() == before
    assert Job.objects.count() == 0


def test_a_music_wait_that_runs_out_is_a_504_naming_the_job_and_its_history_id(
    api, issued, member, settings
):
    settings.CHORUS_API_JOB_WAIT_SECONDS = 0.3  # and no worker: the job stays queued
    body = {"prompt": "gentle harp arpeggios", "music_length_ms": 3000, "seed": 7}

    response = compose(api, body)

    assert response.status_code == 504
    detail = detail_of(response)
    job = Job.objects.get()
    assert (detail["code"], detail["job_id"]) == ("generation_timeout", job.pk)
    assert detail["history_item_id"] == job.params["history_item_id"]
    assert f"job {job.pk}" in detail["message"] and detail["history_item_id"] in detail["message"]
    assert response["retry-after"] == "5"
    [event] = UsageEvent.objects.all()
    assert (event.status, event.source, event.api_key_id) == (
        UsageStatus.RESERVED,
        UsageSource.API,
        issued.api_key.pk,
    )
    assert detail["request_id"] == event.request_id == response["request-id"]

    # The SDK resends a 5xx as is: the repeat rejoins the job instead of paying again.
    again = compose(api, body)
    assert again.status_code == 504 and detail_of(again)["job_id"] == job.pk
    assert Job.objects.count() == 1 and UsageEvent.objects.count() == 1

    job = run_queued(job)  # a worker gets to it
    assert job.status == JobStatus.SUCCEEDED, job.error
    collected = compose(api, body)
    assert collected.status_code == 200
    assert collected["history-item-id"] == detail["history_item_id"]
    assert seconds_of(collected.content) == pytest.approx(3.0, abs=0.06)
    event.refresh_from_db()
    assert (event.status, event.units) == (UsageStatus.SETTLED, Decimal("0.050"))
    assert Job.objects.count() == 1 and UsageEvent.objects.count() == 1

    # Collected once: the same request made again is a new piece of music.
    fresh = compose(api, body)
    assert fresh.status_code == 504 and detail_of(fresh)["job_id"] != job.pk
    assert Job.objects.count() == 2


def test_an_engine_refusal_in_the_job_reaches_the_caller_in_the_apis_shape(
    api, workspace, member, settings
):
    settings.CHORUS_API_JOB_WAIT_SECONDS = 0.2
    compose(api, {"prompt": "drums", "music_length_ms": 3000})
    job = Job.objects.get()
    # The job meets input the engine refuses (as a changed engine or model might).
    job.params = {**job.params, "model_id": "music_v2", "output_format": "wav_99"}
    job.save(update_fields=["params"])
    job = run_queued(job)
    assert job.status == JobStatus.FAILED
    assert job.result["error"]["type"] == "InvalidRequest"
    event = UsageEvent.objects.get()
    assert event.status == UsageStatus.REFUNDED  # nothing billable happened

    from apps.gateway.services import ApiRefused
    from apps.gateway.services_jobs import raise_job_failure

    with pytest.raises(ApiRefused) as caught:
        raise_job_failure(job, request_id=event.request_id)
    assert (caught.value.status, caught.value.code) == (400, "invalid_output_format")


# --- Music: the job itself ---------------------------------------------------------------


def test_a_retried_music_job_settles_the_first_reservation_once(workspace, member):
    from apps.projects import services as projects

    job = projects.music_start(
        workspace=workspace, user=member, prompt="slow strings", music_length_ms=4000
    )
    [reserved] = UsageEvent.objects.all()
    # The first run died after reserving (its row stays open); a retry takes over.
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    job = jobs.job_retry(job=job)
    job = run_queued(job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    [event] = UsageEvent.objects.all()
    assert event.pk == reserved.pk and event.status == UsageStatus.SETTLED
    generation = Generation.objects.get()
    assert (generation.kind, generation.usage_event_id, generation.source) == (
        "music",
        event.pk,
        UsageSource.UI,
    )
    assert (
        generation.history_item_id == job.params["history_item_id"] == job.result["history_item_id"]
    )
    # Run again (a redelivered message after the row said done): nothing new, nothing charged.
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    job = run_queued(jobs.job_retry(job=job))
    assert job.status == JobStatus.SUCCEEDED
    assert Generation.objects.count() == 1 and UsageEvent.objects.count() == 1


def _age_and_sweep() -> int:
    """What the reservation sweeper does to rows older than its time to live."""
    UsageEvent.objects.update(created_at=timezone.now() - timedelta(hours=2))
    return billing.reservations_sweep()


def test_a_job_queued_past_its_reservations_life_reserves_afresh(workspace, member):
    from apps.projects import services as projects

    job = projects.music_start(workspace=workspace, user=member, prompt="a slow queue")
    assert _age_and_sweep() == 1  # released before any worker took the job
    job = run_queued(job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    released, charged = UsageEvent.objects.order_by("id")
    assert (released.status, released.flagged, released.credits) == (
        UsageStatus.FAILED,
        True,
        Decimal(0),
    )
    assert (charged.status, charged.idempotency_key) == (
        UsageStatus.SETTLED,
        f"music:job:{job.pk}:2",
    )
    assert Generation.objects.get().usage_event_id == charged.pk


def test_a_job_that_outlived_its_reservation_is_charged_on_a_late_row(
    workspace, member, monkeypatch
):
    from apps.engines.local.engine import LocalEngine
    from apps.projects import services as projects

    compose_for_real = LocalEngine.music

    def slow_compose(engine, request):
        assert _age_and_sweep() == 1  # the call outlives the reservation
        return compose_for_real(engine, request)

    monkeypatch.setattr(LocalEngine, "music", slow_compose)
    job = projects.music_start(
        workspace=workspace, user=member, prompt="a very long render", music_length_ms=3000
    )
    job = run_queued(job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    released, late = UsageEvent.objects.order_by("id")
    assert (released.status, released.flagged) == (UsageStatus.FAILED, True)
    assert (late.status, late.units, late.idempotency_key) == (
        UsageStatus.SETTLED,
        Decimal("0.050"),
        f"music:job:{job.pk}:late",
    )
    generation = Generation.objects.get()
    assert (generation.usage_event_id, generation.request_id) == (late.pk, late.request_id)


# --- Dubbing: refusals -------------------------------------------------------------------


def test_a_dub_without_a_file_or_language_is_a_422_naming_both(api):
    response = api.post("/v1/dubbing", {"name": "Nothing"})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [
        ["body", "file"],
        ["body", "target_lang"],
    ]
    assert_matches(response.json(), "/v1/dubbing", "post", "422")
    url = api.post("/v1/dubbing", {"source_url": "http://example.com/a.mp4", "target_lang": "en"})
    assert url.status_code == 400 and detail_of(url)["param"] == "source_url"
    assert Dubbing.objects.count() == 0


def test_corrupt_audio_is_refused_before_anything_is_kept_or_charged(api):
    uploads = kept_uploads()
    response = dub(api, b"ID3\x03\x00\x00\x00\x00\x00\x00this is no audio at all" * 20)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "file"]
    assert "could not be decoded" in error["msg"]
    assert Dubbing.objects.count() == 0 and Job.objects.count() == 0
    assert UsageEvent.objects.count() == 0
    assert kept_uploads() == uploads


def kept_uploads() -> list[str]:
    root = Path(settings.MEDIA_ROOT) / "dubbing"
    return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_dub_on_a_spent_budget_is_a_429_and_nothing_is_kept(api, workspace, owner, member):
    on_elevenlabs(workspace, owner)
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(100))
    spend(workspace, member, 50)
    before = ledger()

    response = dub(api, speech_mp3())

    assert response.status_code == 429
    detail = detail_of(response)
    assert detail["code"] == "quota_exceeded" and "budget of 100 credits" in detail["message"]
    assert ledger() == before
    assert Dubbing.objects.count() == 0 and Job.objects.count() == 0


def test_unknown_and_foreign_dubs_are_404_in_the_error_shape(api, workspace):
    stranger = make_user("stranger@example.com")
    elsewhere = make_workspace("Elsewhere", owner=stranger)
    theirs = services.api_key_create(workspace=elsewhere, user=stranger, name="Theirs")
    response = dub(Client(HTTP_XI_API_KEY=theirs.raw), speech_mp3())
    assert response.status_code == 200
    foreign = response.json()["dubbing_id"]

    for dubbing_id in (foreign, "no-such-dub"):
        for path in (
            f"/v1/dubbing/{dubbing_id}",
            f"/v1/dubbing/{dubbing_id}/audio/en",
            f"/v1/dubbing/{dubbing_id}/transcript/en",
        ):
            got = api.get(path)
            assert got.status_code == 404, path
            assert detail_of(got)["code"] == "dubbing_not_found"
        gone = api.delete(f"/v1/dubbing/{dubbing_id}")
        assert gone.status_code == 404
    assert Dubbing.objects.filter(dubbing_id=foreign).exists()  # untouched


# --- Dubbing: the job, run here -------------------------------------------------------------


def test_a_dub_runs_as_a_job_and_keeps_audio_and_transcripts(api, issued, member):
    started = dub(api, speech_mp3(), name="Morning news", num_speakers="1")
    assert started.status_code == 200
    body = started.json()
    assert_matches(body, "/v1/dubbing", "post")
    dubbing = Dubbing.objects.get(dubbing_id=body["dubbing_id"])
    seconds = seconds_of(speech_mp3())
    assert dubbing.source_duration_seconds == pytest.approx(seconds, abs=0.1)
    assert body["expected_duration_sec"] > 0

    meta = api.get(f"/v1/dubbing/{dubbing.dubbing_id}").json()
    assert_matches(meta, "/v1/dubbing/{dubbing_id}")
    assert (meta["status"], meta["name"], meta["target_languages"]) == (
        "dubbing",
        "Morning news",
        ["en"],
    )
    early = api.get(f"/v1/dubbing/{dubbing.dubbing_id}/audio/en")
    assert early.status_code == 425 and detail_of(early)["code"] == "dubbing_not_dubbed"
    [reserved] = UsageEvent.objects.all()
    assert (reserved.status, reserved.capability, reserved.purpose_id) == (
        UsageStatus.RESERVED,
        "dubbing",
        dubbing.dubbing_id,
    )
    assert started["request-id"] == reserved.request_id

    job = run_queued(dubbing.job)
    assert job.status == JobStatus.SUCCEEDED, job.error

    meta = api.get(f"/v1/dubbing/{dubbing.dubbing_id}").json()
    assert (meta["status"], meta["source_language"], meta["error"]) == ("dubbed", "en", None)
    audio = api.get(f"/v1/dubbing/{dubbing.dubbing_id}/audio/en")
    assert audio.status_code == 200 and audio["content-type"] == "audio/mpeg"
    assert seconds_of(audio.content) == pytest.approx(seconds, abs=0.3)
    srt = api.get(f"/v1/dubbing/{dubbing.dubbing_id}/transcript/en").json()
    assert srt.startswith("1\n00:00:00,") and "testing the dubbing" in srt
    vtt = api.get(f"/v1/dubbing/{dubbing.dubbing_id}/transcript/en?format_type=webvtt").json()
    assert vtt.startswith("WEBVTT") and "testing the dubbing" in vtt
    plain = api.get(f"/v1/dubbing/{dubbing.dubbing_id}/transcript/en", HTTP_ACCEPT="text/plain")
    assert plain["content-type"].startswith("text/plain") and plain.content.decode() == srt
    as_json = api.get(f"/v1/dubbing/{dubbing.dubbing_id}/transcript/en?format_type=json")
    transcript_path = "/v1/dubbing/{dubbing_id}/transcript/{language_code}"
    assert_matches(srt, transcript_path)
    assert_matches(as_json.json(), transcript_path)
    utterances = as_json.json()["utterances"]
    assert utterances[0]["speaker_id"] == "speaker_0" and utterances[0]["start_s"] == 0
    assert utterances[-1]["end_s"] == pytest.approx(seconds, abs=0.6)
    transcripts = api.get(f"/v1/dubbing/{dubbing.dubbing_id}/transcripts/en/format/webvtt")
    assert_matches(
        transcripts.json(),
        "/v1/dubbing/{dubbing_id}/transcripts/{language_code}/format/{format_type}",
    )
    assert transcripts.json()["webvtt"] == vtt and transcripts.json()["srt"] is None
    no_track = api.get(f"/v1/dubbing/{dubbing.dubbing_id}/audio/fr")
    assert no_track.status_code == 404 and "language fr" in detail_of(no_track)["message"]

    [event] = UsageEvent.objects.all()
    assert event.pk == reserved.pk and event.status == UsageStatus.SETTLED
    assert event.units == Decimal(str(round(dubbing.source_duration_seconds / 60, 3)))
    generation = Generation.objects.get()
    assert (generation.kind, generation.usage_event_id, generation.user_id) == (
        "dub",
        event.pk,
        member.pk,
    )
    assert generation.history_item_id == dubbing.history_item_id
    assert generation.api_key_id == issued.api_key.pk and "testing the dubbing" in generation.text
    with generation.file.open("rb") as handle:
        assert handle.read() == audio.content


def test_a_dub_the_local_engine_cannot_make_fails_with_its_reason_and_is_refunded(api):
    started = dub(api, speech_mp3(), target_lang="es")
    dubbing = Dubbing.objects.get(dubbing_id=started.json()["dubbing_id"])
    job = run_queued(dubbing.job)
    assert job.status == JobStatus.FAILED
    meta = api.get(f"/v1/dubbing/{dubbing.dubbing_id}").json()
    assert meta["status"] == "failed" and "cannot translate" in meta["error"]
    failed = api.get(f"/v1/dubbing/{dubbing.dubbing_id}/audio/es")
    assert failed.status_code == 404 and detail_of(failed)["code"] == "dubbing_failed"
    assert [e.status for e in UsageEvent.objects.all()] == [UsageStatus.REFUNDED]
    assert Generation.objects.count() == 0


def test_dubs_are_listed_in_pages_filtered_and_deleted_by_who_may(api, workspace, owner, member):
    from apps.projects import services as projects

    mine = [
        projects.dubbing_create(
            workspace=workspace, user=member, media=speech_mp3(), filename=f"{n}.mp3",
            target_lang="en", name=f"Take {n}",
        )
        for n in (1, 2, 3)
    ]  # fmt: skip
    boss = projects.dubbing_create(
        workspace=workspace, user=owner, media=speech_mp3(), filename="b.mp3", target_lang="en"
    )

    first = api.get("/v1/dubbing?page_size=2").json()
    assert_matches(first, "/v1/dubbing")
    assert [d["dubbing_id"] for d in first["dubs"]] == [boss.dubbing_id, mine[2].dubbing_id]
    assert first["has_more"] is True
    rest = api.get(f"/v1/dubbing?page_size=2&cursor={first['next_cursor']}").json()
    assert [d["dubbing_id"] for d in rest["dubs"]] == [mine[1].dubbing_id, mine[0].dubbing_id]
    assert (rest["has_more"], rest["next_cursor"]) == (False, None)

    personal = api.get(
        "/v1/dubbing?filter_by_creator=personal&order_by=name&order_direction=ASCENDING"
    )
    assert [d["name"] for d in personal.json()["dubs"]] == ["Take 1", "Take 2", "Take 3"]
    assert api.get("/v1/dubbing?dubbing_status=dubbed").json()["dubs"] == []
    assert len(api.get("/v1/dubbing?dubbing_status=dubbing").json()["dubs"]) == 4
    bad = api.get("/v1/dubbing?order_direction=sideways&page_size=500")
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [
        ["query", "page_size"],
        ["query", "order_direction"],
    ]

    refused = api.delete(f"/v1/dubbing/{boss.dubbing_id}")  # a member, not the author
    assert refused.status_code == 403 and detail_of(refused)["code"] == "permission_denied"
    upload = mine[0].source_file.name
    deleted = api.delete(f"/v1/dubbing/{mine[0].dubbing_id}")
    assert deleted.status_code == 200 and deleted.json() == {"status": "ok"}
    assert_matches(deleted.json(), "/v1/dubbing/{dubbing_id}", "delete")
    assert not default_storage.exists(upload)
    mine[0].job.refresh_from_db()
    assert mine[0].job.status == JobStatus.CANCELLED
    released = UsageEvent.objects.get(purpose_id=mine[0].dubbing_id)
    assert released.status == UsageStatus.REFUNDED  # it never ran: nothing is held for it
    assert api.get(f"/v1/dubbing/{mine[0].dubbing_id}").status_code == 404
    boss_key = services.api_key_create(workspace=workspace, user=owner, name="Boss")
    by_owner = Client(HTTP_XI_API_KEY=boss_key.raw).delete(f"/v1/dubbing/{mine[1].dubbing_id}")
    assert by_owner.status_code == 200
    assert Dubbing.objects.count() == 2


# --- The official SDK against a real Daphne and a real worker ----------------------------------


@pytest.fixture
def sdk(daphne_server, issued):
    from elevenlabs.client import ElevenLabs

    return ElevenLabs(base_url=daphne_server.url, api_key=issued.raw)


def api_events(issued) -> list[UsageEvent]:
    return list(UsageEvent.objects.filter(api_key_id=issued.api_key.pk).order_by("id"))


@pytest.mark.slow
def test_sdk_music_compose_and_stream_return_music_of_the_asked_length(
    celery_worker, sdk, issued, member
):
    audio = b"".join(sdk.music.compose(prompt="a calm lofi beat with piano", music_length_ms=6000))
    assert seconds_of(audio) == pytest.approx(6.0, abs=0.06)
    chunks = [c for c in sdk.music.stream(prompt="upbeat jazz trio", music_length_ms=12_000) if c]
    assert len(chunks) > 1
    streamed = b"".join(chunks)
    assert seconds_of(streamed) == pytest.approx(12.0, abs=0.06)

    events = api_events(issued)
    assert [(e.capability, e.status, e.source, e.user_id) for e in events] == [
        ("music", UsageStatus.SETTLED, UsageSource.API, member.pk)
    ] * 2
    assert [e.units for e in events] == [Decimal("0.100"), Decimal("0.200")]
    stored = list(Generation.objects.order_by("id"))
    assert [(g.kind, g.usage_event_id, g.text) for g in stored] == [
        ("music", events[0].pk, "a calm lofi beat with piano"),
        ("music", events[1].pk, "upbeat jazz trio"),
    ]
    for generation, sent in zip(stored, (audio, streamed), strict=True):
        with generation.file.open("rb") as handle:
            assert handle.read() == sent  # what was sent is what was kept


@pytest.mark.slow
def test_sdk_dubbing_start_poll_audio_and_transcript(celery_worker, sdk, issued, member):
    started = sdk.dubbing.create(
        file=("speech.mp3", speech_mp3(), "audio/mpeg"),
        target_lang="en",
        source_lang="en",
        name="SDK dub",
    )
    assert started.dubbing_id and started.expected_duration_sec > 0

    def dubbed():
        meta = sdk.dubbing.get(started.dubbing_id)
        assert meta.status != "failed", meta.error
        return meta if meta.status == "dubbed" else None

    meta = wait_until(dubbed, timeout=120, interval=0.5, what="the dub to finish")
    assert (meta.name, meta.target_languages) == ("SDK dub", ["en"])
    audio = b"".join(sdk.dubbing.audio.get(started.dubbing_id, "en"))
    assert seconds_of(audio) == pytest.approx(seconds_of(speech_mp3()), abs=0.3)
    srt = sdk.dubbing.transcript.get_transcript_for_dub(started.dubbing_id, "en", format_type="srt")
    assert isinstance(srt, str) and " --> " in srt and "testing the dubbing" in srt
    vtt = sdk.dubbing.transcripts.get(started.dubbing_id, "en", "webvtt")
    assert vtt.webvtt.startswith("WEBVTT") and "testing the dubbing" in vtt.webvtt
    listed = sdk.dubbing.list(dubbing_status="dubbed")
    assert [d.dubbing_id for d in listed.dubs] == [started.dubbing_id]

    [event] = api_events(issued)
    assert (event.capability, event.status, event.purpose_id) == (
        "dubbing",
        UsageStatus.SETTLED,
        started.dubbing_id,
    )
    generation = Generation.objects.get(kind="dub")
    assert (generation.usage_event_id, generation.user_id) == (event.pk, member.pk)

    assert sdk.dubbing.delete(started.dubbing_id).status == "ok"
    from elevenlabs.core.api_error import ApiError

    with pytest.raises(ApiError) as caught:
        sdk.dubbing.get(started.dubbing_id)
    assert caught.value.status_code == 404
    assert Generation.objects.filter(kind="dub").count() == 1  # the paid audio stays in History


@pytest.mark.slow
def test_a_worker_killed_during_a_dub_is_retried_and_the_ledger_has_one_row(
    start_worker, api, issued, member, settings
):
    first = start_worker("doomed")
    started = dub(api, speech_mp3(), name="Crash test")
    assert started.status_code == 200
    dubbing = Dubbing.objects.get(dubbing_id=started.json()["dubbing_id"])
    job = dubbing.job

    def dubbing_now():
        job.refresh_from_db()
        return job.status == JobStatus.RUNNING and job.progress >= 10

    wait_until(dubbing_now, timeout=60, interval=0.05, what="the engine to start dubbing")
    first.stop(signal.SIGKILL)  # mid-dub, as in an OOM kill
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING
    [open_row] = UsageEvent.objects.filter(purpose_id=dubbing.dubbing_id)
    assert open_row.status == UsageStatus.RESERVED

    settings.CHORUS_JOB_STALE_SECONDS = 2
    time.sleep(2.5)
    start_worker("rescuer")
    assert jobs.job_sweep_stale() == 1  # fails the attempt and, for a dub, queues the next
    job.refresh_from_db()
    assert (job.attempt, job.status) in {(2, JobStatus.QUEUED), (2, JobStatus.RUNNING)}
    assert api.get(f"/v1/dubbing/{dubbing.dubbing_id}").json()["status"] == "dubbing"

    def finished():
        job.refresh_from_db()
        return job.is_finished

    wait_until(finished, timeout=120, interval=0.2, what="the retried dub to finish")
    assert (job.status, job.attempt) == (JobStatus.SUCCEEDED, 2), job.error
    assert api.get(f"/v1/dubbing/{dubbing.dubbing_id}").json()["status"] == "dubbed"
    [row] = UsageEvent.objects.filter(purpose_id=dubbing.dubbing_id)
    assert (row.pk, row.status, row.api_key_id) == (
        open_row.pk,
        UsageStatus.SETTLED,
        issued.api_key.pk,
    )
    assert row.units == Decimal(str(round(dubbing.source_duration_seconds / 60, 3)))
    assert UsageEvent.objects.count() == 1
    [generation] = Generation.objects.filter(kind="dub")
    assert generation.usage_event_id == row.pk
    audio = api.get(f"/v1/dubbing/{dubbing.dubbing_id}/audio/en")
    assert seconds_of(audio.content) == pytest.approx(seconds_of(speech_mp3()), abs=0.3)


@pytest.mark.slow
def test_a_workspace_on_the_elevenlabs_engine_composes_through_a_chorus_on_the_local_engine(
    start_worker, daphne_server, workspace, member
):
    # Two workers: the front job waits on the HTTP call that the back job answers.
    start_worker("front")
    start_worker("back")
    upstream = services.api_key_create(workspace=workspace, user=member, name="Upstream")
    boss = make_user("boss@example.com", name="Bea Boss")
    front = make_workspace("Front office", owner=boss)
    engine_settings_update(
        workspace=front,
        actor=boss,
        kind="elevenlabs",
        api_key=upstream.raw,
        base_url=daphne_server.url,
    )
    front_key = services.api_key_create(workspace=front, user=boss, name="Script")
    from elevenlabs.client import ElevenLabs

    sdk = ElevenLabs(base_url=daphne_server.url, api_key=front_key.raw)
    audio = b"".join(sdk.music.compose(prompt="two hops of harp", music_length_ms=3000))
    assert seconds_of(audio) == pytest.approx(3.0, abs=0.06)

    [front_event] = UsageEvent.objects.filter(workspace=front)
    [back_event] = UsageEvent.objects.filter(workspace=workspace)
    assert (front_event.engine, front_event.status, front_event.units) == (
        "elevenlabs",
        UsageStatus.SETTLED,
        Decimal("0.050"),
    )
    assert (back_event.engine, back_event.status) == ("local", UsageStatus.SETTLED)
    assert front_event.upstream_request_id == back_event.request_id
    front_clip = Generation.objects.get(workspace=front)
    back_clip = Generation.objects.get(workspace=workspace)
    assert front_clip.recipe["engine"]["song_id"] == back_clip.history_item_id
    with front_clip.file.open("rb") as handle:
        assert handle.read() == audio


@pytest.mark.slow
def test_a_workspace_on_the_elevenlabs_engine_dubs_through_a_chorus_on_the_local_engine(
    start_worker, daphne_server, workspace, member
):
    start_worker("front")
    start_worker("back")
    upstream = services.api_key_create(workspace=workspace, user=member, name="Upstream")
    boss = make_user("boss@example.com", name="Bea Boss")
    front = make_workspace("Front office", owner=boss)
    engine_settings_update(
        workspace=front,
        actor=boss,
        kind="elevenlabs",
        api_key=upstream.raw,
        base_url=daphne_server.url,
    )
    front_key = services.api_key_create(workspace=front, user=boss, name="Script")
    started = dub(Client(HTTP_XI_API_KEY=front_key.raw), speech_mp3(), name="Relayed")
    assert started.status_code == 200, started.content
    front_dub = Dubbing.objects.get(dubbing_id=started.json()["dubbing_id"])

    def finished():
        front_dub.job.refresh_from_db()
        return front_dub.job.is_finished

    wait_until(finished, timeout=180, interval=0.5, what="the relayed dub to finish")
    assert front_dub.job.status == JobStatus.SUCCEEDED, front_dub.job.error
    front_dub.refresh_from_db()
    back_dub = Dubbing.objects.get(workspace=workspace)
    assert front_dub.engine_dubbing_id == back_dub.dubbing_id
    assert front_dub.transcript_srt == back_dub.transcript_srt
    assert front_dub.transcript_srt.startswith("1\n00:00:00,")
    assert front_dub.transcript_webvtt == back_dub.transcript_webvtt
    with (
        front_dub.generation.file.open("rb") as mine,
        back_dub.generation.file.open("rb") as theirs,
    ):
        assert mine.read() == theirs.read()
    [front_event] = UsageEvent.objects.filter(workspace=front)
    [back_event] = UsageEvent.objects.filter(workspace=workspace)
    assert (front_event.engine, front_event.status) == ("elevenlabs", UsageStatus.SETTLED)
    assert (back_event.engine, back_event.status) == ("local", UsageStatus.SETTLED)
    assert front_event.units == back_event.units
    assert front_event.upstream_request_id == back_event.request_id
