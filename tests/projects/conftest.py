"""Fixtures the project tests share: a media folder of their own, the local engine's voices in
the library, and a small project (two chapters of blocks) made through the services."""

import pytest

from apps.voices import services as voice_services
from apps.voices.models import LibraryVoice
from tests.gateway.test_api_faults import on_elevenlabs, upstream  # noqa: F401 (fixtures)

SCRIPT_CHAPTERS = (
    (
        "The harbour",
        (
            "The boats came in before dawn.",
            "Nobody on the quay said a word.",
            "Then the bell rang twice.",
        ),
    ),
    ("The hill", ("We climbed until the town was small.", "The wind did the talking.")),
)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def voice(workspace):
    voice_services.library_sync(workspace=workspace)  # the local engine's voices
    return LibraryVoice.objects.get(workspace=workspace, voice_id="local-joe")


@pytest.fixture
def other_voice(voice, workspace):
    return (
        LibraryVoice.objects.filter(workspace=workspace, engine="local")
        .exclude(voice_id=voice.voice_id)
        .order_by("voice_id")
        .first()
    )


def make_script(chapters=SCRIPT_CHAPTERS, title="Harbour tales"):
    from apps.projects.importers import ImportedChapter, ImportedScript

    return ImportedScript(
        title=title,
        author="A. Writer",
        language="en",
        chapters=tuple(ImportedChapter(title=t, blocks=tuple(b)) for t, b in chapters),
    )


@pytest.fixture
def project(workspace, member, voice):
    from apps.projects.narration import project_create

    return project_create(
        workspace=workspace, user=member, script=make_script(), default_voice_id=voice.voice_id
    )


def run_job(job):
    """The job, run in this process exactly as a worker runs it; the job row afterwards."""
    from apps.jobs.tasks import job_run

    job.refresh_from_db()
    job_run(job.pk, job.attempt)
    job.refresh_from_db()
    return job
