"""Periodic work on transcripts: saving the live captions sessions that were left open."""

import logging

from celery import shared_task

from . import live

log = logging.getLogger(__name__)


@shared_task(name="transcripts.live_sweep", ignore_result=True)
def live_sweep() -> int:
    """Save and charge the live sessions that no socket has been connected to for
    ``CHORUS_LIVE_ABANDON_SECONDS`` (every 30 s, from Celery beat), as Stop would."""
    ended = live.live_sweep()
    if ended:
        log.info("saved %s live captions sessions that were left", ended)
    return ended
