"""A Job: one piece of background work, its status and progress, kept in the database."""

from django.conf import settings
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode


class JobStatus(models.TextChoices):
    # A job whose estimate is above its capability's approval threshold, asked for by a
    # member: nothing is reserved or queued until a manager approves it (``job_release``).
    WAITING = "waiting", "Waiting for approval"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}

KIND_LABELS = {
    "workspace_export": "Workspace export",
    "transcribe": "Transcription",
    "music": "Music",
    "dubbing": "Dub",
    "voices_sync": "Voice library sync",
    "project_render": "Project render",
    "project_export": "Project export",
    "project_cue": "Project cue",
}

# What the link to a finished job's result says, by kind (default: "Open the result").
RESULT_LABELS = {
    "transcribe": "Open the transcript",
    "music": "Listen to the music",
    "dubbing": "Listen to the dub",
    "voices_sync": "Open the voice library",
    "project_render": "Open the project",
    "project_export": "Download the export",
    "project_cue": "Open the project",
}

# Where a kind's result is when whoever started the job named no page (URL names only: the
# jobs app sits below the apps whose pages these are, and imports none of them).
RESULT_PAGES = {"voices_sync": "voices:library"}


class Job(models.Model):
    """The truth about a background job; websocket pushes only make it arrive sooner.

    ``attempt`` grows with every (re)start; a task message carries the attempt it was sent
    for, so a message redelivered after a worker died cannot run a job twice.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="jobs"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=64, db_index=True)
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True
    )
    progress = models.PositiveSmallIntegerField(default=0)
    message = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    # What the job is about, e.g. ("transcript", "42"); empty for workspace-wide jobs.
    subject_type = models.CharField(max_length=64, blank=True)
    subject_id = models.CharField(max_length=64, blank=True)
    # What the job is about in people's words ("Interview with Ana"), what it was given
    # (``{"file": name, "seconds": 12.5, "language": "en", "target_language": "fr"}``) and
    # the page of what it makes, all said by whoever starts it.
    subject = models.CharField(max_length=200, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    result_url = models.CharField(max_length=300, blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    attempt = models.PositiveIntegerField(default=1)
    retries = models.PositiveIntegerField(default=0)  # automatic retries of this attempt
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind_label} #{self.pk} ({self.status})"

    @property
    def kind_label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind.replace("_", " ").capitalize())

    @property
    def title(self) -> str:
        """The job as people name it: its subject, else what kind of work it is."""
        return self.subject or self.kind_label

    @property
    def result_link(self) -> tuple[str, str] | None:
        """``(url, words)`` of what a succeeded job made; None before that or if nothing."""
        if self.status != JobStatus.SUCCEEDED:
            return None
        result = self.result or {}
        if result.get("file"):
            name = result.get("filename") or "the file"
            return reverse("jobs:download", args=[self.pk]), f"Download {name}"
        words = RESULT_LABELS.get(self.kind, "Open the result")
        if self.result_url:
            return self.result_url, words
        if result.get("history_item_id"):  # a clip it kept: shown in History
            query = urlencode({"item": result["history_item_id"]})
            return f"{reverse('history:list')}?{query}", words
        if self.kind in RESULT_PAGES:
            try:
                return reverse(RESULT_PAGES[self.kind]), words
            except NoReverseMatch:
                return None
        return None

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def can_cancel(self) -> bool:
        return self.status in {JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING}

    @property
    def approval(self) -> dict:
        """What a job that had to wait for a manager records (see ``generation.jobs``):
        ``credits`` (the estimate), ``threshold``, and once decided ``decision``
        ("approved" / "refused"), ``reason``, ``decided_by`` (a user id), ``decided_at``."""
        return (self.params or {}).get("approval") or {}

    @property
    def is_waiting(self) -> bool:
        return self.status == JobStatus.WAITING

    @property
    def can_retry(self) -> bool:
        """Failed or cancelled; never a job no manager approved (refused, or withdrawn while
        it waited): running it again would skip the approval."""
        if self.approval and self.approval.get("decision") != "approved":
            return False
        return self.status in {JobStatus.FAILED, JobStatus.CANCELLED}

    @property
    def group_name(self) -> str:
        return f"job.{self.pk}"

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    def as_event(self) -> dict:
        """The state pushed to browsers (also what a poll shows)."""
        return {
            "id": self.pk,
            "status": self.status,
            "progress": self.progress,
            "message": self.message,
            "error": self.error,
            "finished": self.is_finished,
        }
