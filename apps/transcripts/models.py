"""Transcripts: an uploaded recording, the job that transcribes it, and the editable result.

``words`` is the transcript as ElevenLabs shapes it (text, start, end, type, speaker_id,
logprob; no ``spacing`` items) plus ``p``, the paragraph each word belongs to. Paragraphs are
runs of one speaker; the editor changes words, speakers and paragraph numbers, and ``text`` is
always what the words say. ``speakers`` maps speaker ids to the names the team gave them.
"""

from django.conf import settings
from django.db import models


def _media_upload_to(transcript, filename: str) -> str:
    return f"transcripts/{transcript.workspace_id}/{transcript.uid}/{filename}"


class TranscriptStatus(models.TextChoices):
    QUEUED = "queued", "Waiting"
    RUNNING = "running", "Transcribing"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class Transcript(models.Model):
    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="transcripts"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    uid = models.CharField(max_length=32, unique=True)
    title = models.CharField(max_length=200)
    source = models.CharField(max_length=8, default="upload")  # upload | live
    media = models.FileField(upload_to=_media_upload_to, max_length=300)
    filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    duration_seconds = models.FloatField(default=0)
    options = models.JSONField(default=dict, blank=True)
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=10, choices=TranscriptStatus.choices, default=TranscriptStatus.QUEUED
    )
    error = models.TextField(blank=True)
    engine = models.CharField(max_length=20, blank=True)
    language_code = models.CharField(max_length=16, blank=True)
    language_probability = models.FloatField(null=True, blank=True)
    text = models.TextField(blank=True)
    words = models.JSONField(default=list, blank=True)
    speakers = models.JSONField(default=dict, blank=True)
    entities = models.JSONField(default=list, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    edited_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["workspace", "-created_at"])]

    def __str__(self):
        return self.title

    @property
    def keyterms(self) -> list[str]:
        return list((self.options or {}).get("keyterms") or [])
