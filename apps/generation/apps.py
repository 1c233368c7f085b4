from django.apps import AppConfig


class GenerationConfig(AppConfig):
    """The generation core: one metered function per capability, for every caller."""

    name = "apps.generation"
    label = "generation"
    verbose_name = "Generation core"

    def ready(self):
        # Billing reconciles the ledger with the provider through the workspace's engine;
        # it may not import the core, so the core hands it the engine builder.
        from apps.billing.reconcile import engine_source_register

        from .engine import engine_for

        engine_source_register(engine_for)

        # Jobs and history sit on billing's own layer and may not import it (lint-imports),
        # so the core (above the three) registers their links: the spend explorer's
        # drill-down links a row paid for a job to the job, and a row that made a clip to
        # the clip.
        from apps.billing import labels

        labels.register_purpose("job", _job_links)
        labels.register_event_links(_clip_links)


def _job_links(workspace, ids):
    """A ledger row paid for a job → the job's page."""
    from django.urls import reverse

    from apps.jobs.models import Job

    pks = [int(i) for i in ids if i.isascii() and i.isdigit() and len(i) <= 18]
    found = Job.objects.filter(workspace=workspace, pk__in=pks).values_list("pk", flat=True)
    return {str(pk): reverse("jobs:detail", args=[pk]) for pk in found}


def _clip_links(workspace, event_ids):
    """The clip each ledger row made → that clip on the History page."""
    from django.urls import reverse

    from apps.history.models import Generation

    rows = Generation.objects.filter(workspace=workspace, usage_event_id__in=event_ids)
    url = reverse("history:list")
    return {
        event_id: ("Clip", f"{url}?item={item}")
        for event_id, item in rows.values_list("usage_event_id", "history_item_id")
    }
