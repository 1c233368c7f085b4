"""Two Chorus processes, each with its own database: instance A, a Daphne on the local engine,
serves instance B (this test process), whose workspace is on the ElevenLabs engine with A's
URL as base URL and A's personal key as its key. Each check calls B's /v1 service for one
capability and compares B's ledger row with A's: B records A's ledger request id as its
upstream request id and A's ``character-cost`` as its upstream credits.

A is started once per module (its database is a SQLite file, or a database of its own on the
PostgreSQL server when the tests run on PostgreSQL). Adding a capability (speech to text,
voice design, music) is one test: call B's service, then ``chained_events``.
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
from apps.gateway import responses, services
from apps.gateway.services import SpeechInput
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
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
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
        CHORUS_ADMIN_EMAIL=A_ADMIN,
        CHORUS_ADMIN_PASSWORD=f"pw-{run}",
        PYTHONUNBUFFERED="1",
    )
    proc = None
    try:
        setup = Instance(url="", key="", env=env, proc=None)
        setup.manage("migrate", "--noinput", "-v", "0")
        setup.manage("chorus_setup")
        key = setup.manage(
            "create_api_key", "--email", A_ADMIN, "--workspace", "demo-studio",
            "--name", "Instance B",
        ).strip()  # fmt: skip
        assert key.startswith(services.KEY_PREFIX)
        url, proc = _daphne(env, folder / "daphne.log")
        yield Instance(url=url, key=key, env=env, proc=proc)
    finally:
        if proc is not None:
            proc.stop()
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
    """B's one ledger row for the call just made and A's row for the same call.

    Asserts what every chained call shares: B billed it as an API call on the ElevenLabs
    engine with A's ledger request id, and A billed it on the local engine, for free, with
    a ``character-cost`` of 0 that B took as the provider's cost.
    """
    [b_event] = UsageEvent.objects.filter(workspace=b_key.workspace)
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
