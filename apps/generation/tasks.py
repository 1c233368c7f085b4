"""Periodic work of the core: the plan sync from each provider engine."""

from celery import shared_task

from apps.workspaces.models import EngineKind, EngineSettings

from .engine import plan_sync


@shared_task(name="generation.plans_sync", ignore_result=True)
def plans_sync() -> int:
    """Sync the plan of every workspace on a provider engine (default every 10 minutes)."""
    count = 0
    for row in EngineSettings.objects.filter(kind=EngineKind.ELEVENLABS).select_related(
        "workspace"
    ):
        plan_sync(workspace=row.workspace)
        count += 1
    return count
