"""The official ElevenLabs SDK's ``studio.projects`` calls (only ``base_url`` and ``api_key``
set) against a real Daphne and a real Celery worker on the local engine: create a project
from content JSON, list, read with chapters, edit, convert, poll until converted, list the
snapshots, stream one (real MP3 audio) and its archive, delete."""

import io
import json
import zipfile

import av
import pytest
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError

from apps.billing.models import UsageEvent, UsageSource, UsageStatus
from apps.gateway import services
from apps.projects.models import Take
from apps.voices import services as voice_services
from tests.conftest import wait_until

pytestmark = pytest.mark.slow

VOICE = "local-joe"
TEXT = ["The boats came in before dawn.", "Nobody on the quay said a word."]
CONTENT = [
    {
        "name": "The harbour",
        "blocks": [
            {"sub_type": "p", "nodes": [{"type": "tts_node", "voice_id": VOICE, "text": t}]}
            for t in TEXT
        ],
    }
]


@pytest.fixture
def live_env(live_env, tmp_path, settings):
    """The server, the worker and the tests keep files in the same, temporary place."""
    media = tmp_path / "media"
    live_env["MEDIA_ROOT"] = str(media)
    settings.MEDIA_ROOT = media
    return live_env


@pytest.fixture
def issued(workspace, member):
    voice_services.library_sync(workspace=workspace)
    return services.api_key_create(workspace=workspace, user=member, name="SDK studio")


@pytest.fixture
def sdk(daphne_server, issued):
    return ElevenLabs(base_url=daphne_server.url, api_key=issued.raw)


def decoded_seconds(audio: bytes) -> float:
    with av.open(io.BytesIO(audio)) as container:
        assert "mp3" in container.format.name.split(",")
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def test_sdk_creates_converts_and_streams_a_project(celery_worker, sdk, issued, member):
    projects = sdk.studio.projects
    made = projects.create(
        name="Harbour tales",
        default_title_voice_id=VOICE,
        default_paragraph_voice_id=VOICE,
        default_model_id="eleven_multilingual_v2",
        from_content_json=json.dumps(CONTENT),
    )
    pid = made.project.project_id
    assert made.project.name == "Harbour tales"
    assert [p.project_id for p in projects.list().projects] == [pid]

    project = projects.get(pid)
    assert [c.name for c in project.chapters] == ["The harbour"]
    chapter_id = project.chapters[0].chapter_id
    chapter = projects.chapters.get(pid, chapter_id)
    assert [b.nodes[0].text for b in chapter.content.blocks] == TEXT

    edited = projects.update(
        pid,
        name="Harbour tales, read",
        default_title_voice_id=VOICE,
        default_paragraph_voice_id=VOICE,
        author="A. Writer",
    )
    assert (edited.project.name, edited.project.author) == ("Harbour tales, read", "A. Writer")

    assert projects.convert(pid).status == "ok"

    def converted():
        state = projects.get(pid)
        errors = [c.last_conversion_error for c in state.chapters if c.last_conversion_error]
        assert not errors, errors
        snapshots = projects.snapshots.list(pid).snapshots
        return snapshots if state.state == "default" and snapshots else None

    snapshots = wait_until(converted, timeout=180, interval=0.5, what="the conversion")
    assert projects.get(pid).chapters[0].statistics.paragraphs_converted == 2
    snapshot_id = snapshots[0].project_snapshot_id
    audio = b"".join(projects.snapshots.stream(pid, snapshot_id, convert_to_mpeg=True))
    seconds = decoded_seconds(audio)
    assert seconds > 2.0  # two sentences of speech
    archive = b"".join(projects.snapshots.stream_archive(pid, snapshot_id))
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        assert len(zipped.namelist()) == 2
        assert all(decoded_seconds(zipped.read(n)) > 0.5 for n in zipped.namelist())

    takes = list(Take.objects.filter(block__chapter__project__public_id=pid))
    assert len(takes) == 2 and not any(t.draft for t in takes)
    events = UsageEvent.objects.filter(pk__in=[t.generation.usage_event_id for t in takes])
    assert {(e.source, e.api_key_id, e.user_id, e.status) for e in events} == {
        (UsageSource.API, issued.api_key.pk, member.pk, UsageStatus.SETTLED)
    }

    assert projects.delete(pid).status == "ok"
    with pytest.raises(ApiError) as gone:
        projects.get(pid)
    assert gone.value.status_code == 404
    assert gone.value.body["detail"]["code"] == "project_not_found"
