"""Projects: for now, dubbing jobs and their outputs (scripts, takes and clips come later)."""

import secrets

from django.conf import settings
from django.db import models

from apps.jobs.models import JobStatus


def _dubbing_id() -> str:
    # ElevenLabs dubbing ids are 20 URL-safe characters; ours look the same.
    return secrets.token_urlsafe(15)[:20]


def _source_upload_to(dubbing, filename: str) -> str:
    return f"dubbing/{dubbing.workspace_id}/{dubbing.dubbing_id}/source-{filename}"


class DubbingStatus(models.TextChoices):
    """What ``/v1/dubbing`` reports (the job row holds the finer detail)."""

    DUBBING = "dubbing", "Dubbing"
    DUBBED = "dubbed", "Dubbed"
    FAILED = "failed", "Failed"


class Dubbing(models.Model):
    """One dub: the uploaded media, what it was dubbed into, and the outputs kept for good.

    The work runs as a ``jobs.Job`` (``job``); its state is the job's, read through
    ``status``. Once dubbed, the audio is a ``history.Generation`` of kind ``dub``
    (``generation``) and the transcripts live here, so they outlive the engine's memory
    (the local engine keeps dubs only in its process). ``engine_dubbing_id`` is the
    engine's own id, so a retried job resumes a dub the engine still has instead of paying
    for a second one. ``history_item_id`` is chosen up front: the audio is stored under it.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="dubbings"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=8, default="api")  # ui | api, like the ledger's
    api_key_id = models.BigIntegerField(null=True, blank=True)
    dubbing_id = models.CharField(max_length=32, unique=True, default=_dubbing_id)
    name = models.CharField(max_length=200)
    source_lang = models.CharField(max_length=16, default="auto")  # as asked
    source_language = models.CharField(max_length=16, blank=True)  # as found, once dubbed
    target_lang = models.CharField(max_length=16)
    num_speakers = models.PositiveSmallIntegerField(default=0)  # 0: detect
    source_file = models.FileField(upload_to=_source_upload_to, max_length=300)
    source_filename = models.CharField(max_length=255, blank=True)
    source_content_type = models.CharField(max_length=100, blank=True)
    source_duration_seconds = models.FloatField(default=0)
    engine = models.CharField(max_length=20)
    engine_dubbing_id = models.CharField(max_length=120, blank=True)
    history_item_id = models.CharField(max_length=32)
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    generation = models.ForeignKey(
        "history.Generation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    transcript_srt = models.TextField(blank=True)
    transcript_webvtt = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    dubbed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-created_at", "-id"])]

    def __str__(self) -> str:
        return f"Dub {self.dubbing_id} ({self.name})"

    @property
    def status(self) -> str:
        if self.dubbed_at is not None:
            return DubbingStatus.DUBBED
        if self.job is None or self.job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            return DubbingStatus.FAILED
        return DubbingStatus.DUBBING

    @property
    def error(self) -> str | None:
        if self.status != DubbingStatus.FAILED:
            return None
        if self.job is None:
            return "The job of this dub is gone; start the dub again."
        return self.job.error or f"The dub was {self.job.get_status_display().lower()}."
