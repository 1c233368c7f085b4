"""Periodic work on agents: conversations left "in progress" are closed.

A conversation is saved by its session when it ends, however its socket ends; one is left in
progress only when the process holding it stopped (a restart, a crash) or when a signed URL
made with ``include_conversation_id`` was never used. No conversation runs longer than the
longest maximum length an agent may have, so one still in progress well past that is over.
"""

import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from .models import Conversation, ConversationStatus

log = logging.getLogger(__name__)

LONGEST_SECONDS = 7200  # the longest max_duration_seconds an agent may have (config.py)
MARGIN_SECONDS = 30 * 60  # a signed URL's 15 minutes, a reconnect window, a slow save
ABANDONED = (
    "It never ended in Chorus: the server stopped during it, or its signed URL was never used."
)


def conversations_sweep(*, now=None) -> int:
    """Mark the conversations in progress past any possible end as failed; how many."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=LONGEST_SECONDS + MARGIN_SECONDS)
    return Conversation.objects.filter(
        status=ConversationStatus.IN_PROGRESS, ended_at__isnull=True, started_at__lt=cutoff
    ).update(status=ConversationStatus.FAILED, end_reason=ABANDONED, ended_at=now)


@shared_task(name="agents.conversations_sweep", ignore_result=True)
def conversations_sweep_task() -> int:
    """Every 10 minutes, from Celery beat (their reservations are the billing sweep's)."""
    closed = conversations_sweep()
    if closed:
        log.info("closed %s agent conversations left in progress", closed)
    return closed
