"""Periodic billing work: plan sync from the provider and the reservation sweeper."""

import logging

from celery import shared_task

from apps.workspaces.models import EngineKind, EngineSettings

from . import services

log = logging.getLogger(__name__)


@shared_task(name="billing.plans_sync", ignore_result=True)
def plans_sync() -> int:
    """Sync the plan of every workspace on a provider engine (default every 10 minutes)."""
    count = 0
    for row in EngineSettings.objects.filter(kind=EngineKind.ELEVENLABS).select_related(
        "workspace"
    ):
        services.plan_sync(workspace=row.workspace)
        count += 1
    return count


@shared_task(name="billing.reservations_sweep", ignore_result=True)
def reservations_sweep() -> int:
    """Close reservations whose process died (flagged in the ledger): settled on the
    progress they recorded, failed at 0 without any."""
    swept = services.reservations_sweep()
    if swept:
        log.warning("swept %s stale usage reservations", swept)
    return swept
