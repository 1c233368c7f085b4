"""Periodic billing work: the reservation sweeper (the plan sync is the core's:
``generation.tasks``)."""

import logging

from celery import shared_task

from . import services

log = logging.getLogger(__name__)


@shared_task(name="billing.reservations_sweep", ignore_result=True)
def reservations_sweep() -> int:
    """Close reservations whose process died (flagged in the ledger): settled on the
    progress they recorded, failed at 0 without any."""
    swept = services.reservations_sweep()
    if swept:
        log.warning("swept %s stale usage reservations", swept)
    return swept
