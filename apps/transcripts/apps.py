from django.apps import AppConfig


class TranscriptsConfig(AppConfig):
    name = "apps.transcripts"
    label = "transcripts"
    verbose_name = "Transcripts"

    def ready(self):
        from apps.billing import labels

        labels.register_purpose("transcript", _transcript_links)


def _transcript_links(workspace, uids):
    """The spend explorer's link of a ledger row paid for a transcript (by its uid)."""
    from django.urls import reverse

    from .models import Transcript

    rows = Transcript.objects.filter(workspace=workspace, uid__in=uids).values_list("uid", "pk")
    return {uid: reverse("transcripts:detail", args=[pk]) for uid, pk in rows}
