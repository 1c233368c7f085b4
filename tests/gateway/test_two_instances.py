"""Two Chorus processes, each with its own database: instance A, a Daphne on the local engine,
serves instance B (this test process), whose workspace is on the ElevenLabs engine with A's
URL as base URL and A's personal key as its key. Each check calls B's /v1 service for one
capability and compares B's ledger row with A's: B records A's ledger request id as its
upstream request id and A's ``character-cost`` as its upstream credits.

A is started once per module (its database is a SQLite file, or a database of its own on the
PostgreSQL server when the tests run on PostgreSQL), with a Celery worker of its own on its
own database and broker: A serves /v1/music as a job. Each capability is one test: call B's
service, then ``chained_events``. B's music job runs on a real Celery worker of B (the
``celery_worker`` fixture, on the test database).
"""

import io
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import av
import psycopg
import pytest
from asgiref.sync import async_to_sync

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.engines.base import DesignRequest, STTRequest
from apps.gateway import responses, services, services_jobs, services_media
from apps.gateway.services import SpeechInput
from apps.history.models import Generation
from apps.workspaces.services import engine_settings_update
from tests.conftest import ROOT, Proc, free_port, spawn, wait_until

pytestmark = pytest.mark.slow

VOICE = "local-joe"
TEXT = "Instance B asks instance A to read this sentence aloud."
A_ADMIN = "admin@instance-a.example.com"


# --- Instance A ---------------------------------------------------------------------------


@dataclass
class Instance:
    """A Chorus server in a process of its own, on a database of its own."""

    url: str
    key: str  # a personal API key of A's demo workspace, for B's engine settings
    env: dict
    proc: Proc
    worker: Proc | None = None  # A's Celery worker (A runs /v1/music as a job)

    def post(self, path: str, body: dict) -> tuple[bytes, dict]:
        """POST JSON to A with A's key: the response's body and headers."""
        request = urllib.request.Request(  # noqa: S310
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"xi-api-key": self.key, "content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.read(), dict(response.headers)

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def ledger(self) -> dict[str, dict]:
        """A's usage events by request id (what A billed for each call it served)."""
        code = (
            "import json; from apps.billing.models import UsageEvent; "
            "print(json.dumps(list(UsageEvent.objects.order_by('id').values("
            "'request_id', 'status', 'engine', 'capability', 'source', 'voice_id', 'units', "
            "'credits')), default=str))"
        )
        rows = json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])
        return {row["request_id"]: row for row in rows}


def _postgres_database(url: str, name: str) -> str:
    """``url`` pointing at the database ``name`` of the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}", query=""))


def _admin_sql(url: str, sql: str) -> None:
    with psycopg.connect(_postgres_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def _daphne(env: dict, log: Path) -> tuple[str, Proc]:
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "studio_site.server", "-b", "127.0.0.1", "-p", str(port),
         "studio_site.asgi:application"],
        env=env,
        log=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers():
        if proc.popen.poll() is not None:
            raise AssertionError(f"instance A's Daphne exited:\n{proc.output()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False

    wait_until(answers, timeout=60, interval=0.2, what="instance A to answer /healthz")
    return url, proc


def _celery(env: dict, log: Path) -> Proc:
    """A's Celery worker, started as ``tests.conftest.start_worker`` starts B's."""
    return spawn(
        [sys.executable, "-m", "celery", "-A", "studio_site", "worker", "--pool", "solo",
         "--loglevel", "INFO", "--without-mingle", "--without-gossip",
         "--hostname", "instance-a@%h"],
        env=env,
        log=log,
    )  # fmt: skip


def _wait_ready(worker: Proc) -> None:
    wait_until(
        lambda: "ready." in worker.output() or worker.popen.poll() is not None,
        timeout=60,
        what="instance A's Celery worker to start",
    )
    assert worker.popen.poll() is None, f"instance A's worker exited:\n{worker.output()}"


@pytest.fixture(scope="module")
def instance_a(tmp_path_factory):
    """Instance A: migrated, with its demo workspace and a key, served by Daphne."""
    folder = tmp_path_factory.mktemp("instance-a")
    run = uuid.uuid4().hex[:10]
    server_url = os.environ.get("DATABASE_URL", "")
    on_postgres = urlsplit(server_url).scheme in {"postgres", "postgresql", "pgsql"}
    if on_postgres:
        database = f"chorus_a_{run}"
        _admin_sql(server_url, f'CREATE DATABASE "{database}"')
        database_url = _postgres_database(server_url, database)
    else:
        database_url = f"sqlite:///{folder / 'a.sqlite3'}"
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="studio_site.settings_test",
        DATABASE_URL=database_url,
        CHORUS_VAR_DIR=str(folder / "var"),  # its own secret key and media
        CHORUS_CACHE_PREFIX=f"chorus-a-{run}",
        CHORUS_CHANNEL_PREFIX=f"chorus-a-{run}",
        # A queue and broker of its own: B's worker must never take A's jobs, nor A's B's.
        CHORUS_TEST_RUN=f"a-{run}",
        CHORUS_QUEUE=f"chorus-a-{run}",
        CHORUS_BROKER_DIR=str(folder / "broker"),
        CHORUS_ADMIN_EMAIL=A_ADMIN,
        CHORUS_ADMIN_PASSWORD=f"pw-{run}",
        PYTHONUNBUFFERED="1",
    )
    proc = worker = None
    try:
        setup = Instance(url="", key="", env=env, proc=None)
        setup.manage("migrate", "--noinput", "-v", "0")
        setup.manage("chorus_setup")
        key = setup.manage(
            "create_api_key", "--email", A_ADMIN, "--workspace", "demo-studio",
            "--name", "Instance B",
        ).strip()  # fmt: skip
        assert key.startswith(services.KEY_PREFIX)
        worker = _celery(env, folder / "worker.log")  # starts while Daphne does
        url, proc = _daphne(env, folder / "daphne.log")
        _wait_ready(worker)
        yield Instance(url=url, key=key, env=env, proc=proc, worker=worker)
    finally:
        for started in (proc, worker):
            if started is not None:
                started.stop()
        if on_postgres:
            _admin_sql(server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# --- Instance B ---------------------------------------------------------------------------


@pytest.fixture
def b_key(instance_a, workspace, owner, member):
    """A key of B's workspace, whose engine is ElevenLabs at A's URL with A's key."""
    engine_settings_update(
        workspace=workspace,
        actor=owner,
        kind="elevenlabs",
        api_key=instance_a.key,
        base_url=instance_a.url,
    )
    issued = services.api_key_create(workspace=workspace, user=member, name="Through A")
    return services.api_key_check(raw=issued.raw, scope="tts")


def chained_events(instance_a, b_key, *, capability: str) -> tuple[UsageEvent, dict]:
    """B's one ledger row of ``capability`` for the call just made and A's row for it.

    Asserts what every chained call shares: B billed it as an API call on the ElevenLabs
    engine with A's ledger request id, and A billed it on the local engine, for free, with
    a ``character-cost`` of 0 that B took as the provider's cost.
    """
    [b_event] = UsageEvent.objects.filter(workspace=b_key.workspace, capability=capability)
    a_events = instance_a.ledger()
    assert b_event.upstream_request_id in a_events, (b_event.upstream_request_id, a_events)
    a_event = a_events[b_event.upstream_request_id]
    assert (b_event.status, b_event.engine, b_event.capability, b_event.source) == (
        UsageStatus.SETTLED,
        "elevenlabs",
        capability,
        UsageSource.API,
    )
    assert (a_event["status"], a_event["engine"], a_event["capability"], a_event["source"]) == (
        "settled",
        "local",
        capability,
        "api",
    )
    assert Decimal(a_event["credits"]) == Decimal(0)
    assert (b_event.upstream_credits, b_event.credits) == (Decimal(0), Decimal(0))
    return b_event, a_event


def decoded_seconds(audio: bytes) -> float:
    with av.open(io.BytesIO(audio)) as container:
        assert container.format.name == "mp3"
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


# --- Text to speech ---------------------------------------------------------------------------


def test_speech_through_b_is_spoken_by_a_and_billed_with_a_s_request_id_and_cost(instance_a, b_key):
    speech = services.api_speech(api_key=b_key, speech=SpeechInput(voice_id=VOICE, text=TEXT))

    assert decoded_seconds(speech.audio) > 2
    b_event, a_event = chained_events(instance_a, b_key, capability="tts")
    assert speech.request_id == b_event.request_id
    assert (b_event.units, b_event.estimated_credits, b_event.voice_id) == (
        Decimal(len(TEXT)),
        Decimal(len(TEXT)),  # B's estimate at the ElevenLabs rate; A's cost of 0 won
        VOICE,
    )
    assert (Decimal(a_event["units"]), a_event["voice_id"]) == (Decimal(len(TEXT)), VOICE)


def test_streamed_speech_through_b_is_spoken_by_a_and_billed_with_a_s_request_id_and_cost(
    instance_a, b_key
):
    stream = services.api_speech_stream(
        api_key=b_key,
        speech=SpeechInput(voice_id=VOICE, text=TEXT),
        encode=responses.audio_bytes,
    )

    async def drain():
        return [chunk async for chunk in stream]

    chunks = async_to_sync(drain)()

    assert len(chunks) > 1
    assert decoded_seconds(b"".join(chunks)) > 2
    b_event, a_event = chained_events(instance_a, b_key, capability="tts")
    assert stream.request_id == b_event.request_id
    assert (b_event.units, Decimal(a_event["units"])) == (Decimal(len(TEXT)), Decimal(len(TEXT)))


# --- Speech to text ---------------------------------------------------------------------------

SENTENCE = "The quick brown fox jumps over the lazy dog."


def test_transcription_through_b_is_heard_by_a_and_billed_with_a_s_request_id_and_cost(
    instance_a, b_key
):
    spoken, _ = instance_a.post(
        f"/v1/text-to-speech/{VOICE}?output_format=mp3_44100_128", {"text": SENTENCE, "seed": 7}
    )
    seconds = decoded_seconds(spoken)

    heard = services_media.api_transcribe(
        api_key=b_key, request=STTRequest(audio=spoken, filename="speech.mp3")
    )

    words = [w.text.strip(".,").lower() for w in heard.transcript.words if w.type == "word"]
    assert words == ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
    assert heard.transcript.audio_duration_secs == pytest.approx(seconds, abs=0.1)
    b_event, a_event = chained_events(instance_a, b_key, capability="stt")
    assert heard.usage.request_id == b_event.request_id
    assert (b_event.unit, a_event["voice_id"]) == ("minute", "")
    assert float(b_event.units) == pytest.approx(seconds / 60, abs=0.003)
    assert float(a_event["units"]) == pytest.approx(seconds / 60, abs=0.003)


# --- Voice design -----------------------------------------------------------------------------

DESCRIPTION = "A calm, warm and slightly deep voice of an old sailor telling stories."
PREVIEW_TEXT = (
    "Gather round, and I will tell you about the night the lighthouse went dark and the "
    "whole harbour waited for the morning tide to bring the boats home."
)


def test_a_voice_designed_through_b_is_made_by_a_saved_there_and_speaks_through_b(
    instance_a, b_key
):
    design = services_media.api_voice_design(
        api_key=b_key,
        design=services_media.DesignInput(
            request=DesignRequest(voice_description=DESCRIPTION, text=PREVIEW_TEXT, seed=11)
        ),
    )

    assert design.previews and all(p.duration_secs > 2 for p in design.previews)
    assert decoded_seconds(design.previews[0].audio) > 2
    b_design, a_design = chained_events(instance_a, b_key, capability="voice_design")
    assert design.usage.request_id == b_design.request_id

    generated_voice_id = design.previews[0].generated_voice_id
    a_before = instance_a.ledger()
    voice = services_media.api_voice_design_save(
        api_key=b_key,
        generated_voice_id=generated_voice_id,
        voice_name="Old sailor",
        voice_description=DESCRIPTION,
        labels={"accent": "british"},
    )
    assert (voice.name, voice.category) == ("Old sailor", "generated")
    assert voice.voice_id not in {"", VOICE, generated_voice_id}
    # A keeps the voice (its ledger is unchanged: saving a design is free on both sides).
    request = urllib.request.Request(  # noqa: S310
        f"{instance_a.url}/v1/voices/{voice.voice_id}", headers={"xi-api-key": instance_a.key}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        kept = json.loads(response.read())
    assert (kept["name"], kept["category"]) == ("Old sailor", "generated")
    assert instance_a.ledger() == a_before

    speech = services.api_speech(
        api_key=b_key, speech=SpeechInput(voice_id=voice.voice_id, text=TEXT)
    )
    assert decoded_seconds(speech.audio) > 2
    b_speech, a_speech = chained_events(instance_a, b_key, capability="tts")
    assert speech.request_id == b_speech.request_id
    assert b_speech.upstream_request_id != b_design.upstream_request_id
    assert (b_speech.voice_id, a_speech["voice_id"]) == (voice.voice_id, voice.voice_id)
    assert Decimal(a_speech["units"]) == Decimal(len(TEXT))


# --- Music ------------------------------------------------------------------------------------


def test_music_through_b_is_a_job_of_b_composed_by_a_job_of_a_and_billed_with_a_s_ids(
    instance_a, b_key, celery_worker
):
    generation = services_jobs.api_music(
        api_key=b_key,
        music=services_jobs.MusicInput(prompt="a calm lofi beat with piano", music_length_ms=3000),
    )

    with generation.file.open("rb") as handle:
        assert decoded_seconds(handle.read()) == pytest.approx(3.0, abs=0.06)
    b_event, a_event = chained_events(instance_a, b_key, capability="music")
    assert (generation.usage_event_id, generation.request_id) == (b_event.pk, b_event.request_id)
    assert (b_event.purpose_type, generation.kind) == ("job", "music")
    assert Decimal(a_event["units"]) == b_event.units  # the same three seconds on both sides
    assert Generation.objects.filter(workspace=b_key.workspace).count() == 1
