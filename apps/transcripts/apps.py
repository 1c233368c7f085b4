from django.apps import AppConfig


class TranscriptsConfig(AppConfig):
    name = "apps.transcripts"
    label = "transcripts"
    verbose_name = "Transcripts"

    def ready(self):
        from apps.billing import labels

        labels.register_purpose("transcript", _transcript_links)

        from apps.jobs.services import job_refused

        job_refused.connect(_job_refused, dispatch_uid="transcripts-job-refused")


def _job_refused(sender, job, **kwargs):
    """A transcription a manager refused (or a budget did) is failed with the reason, not
    left waiting; it cannot be retried (``job_retry`` says why)."""
    if job.subject_type != "transcript" or not (
        job.subject_id.isascii() and job.subject_id.isdigit()
    ):
        return
    from django.utils import timezone

    from .models import Transcript, TranscriptStatus

    Transcript.objects.filter(pk=int(job.subject_id), workspace=job.workspace_id).update(
        status=TranscriptStatus.FAILED, error=job.message, updated_at=timezone.now()
    )


def _transcript_links(workspace, uids):
    """The spend explorer's link of a ledger row paid for a transcript (by its uid)."""
    from django.urls import reverse

    from .models import Transcript

    rows = Transcript.objects.filter(workspace=workspace, uid__in=uids).values_list("uid", "pk")
    return {uid: reverse("transcripts:detail", args=[pk]) for uid, pk in rows}
