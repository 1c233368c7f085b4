"""Conversations left in progress (a server stopped during them, a signed URL never used) are
closed as failed once past any possible end; running ones and ended ones are left alone."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.agents import services
from apps.agents.models import Conversation, ConversationStatus
from apps.agents.tasks import ABANDONED, LONGEST_SECONDS, conversations_sweep

pytestmark = pytest.mark.django_db


def test_only_conversations_in_progress_past_any_possible_end_are_closed(workspace, member, voices):
    agent = services.agent_create(workspace=workspace, user=member, name="Desk")

    def conversation(status, hours_ago):
        row = Conversation.objects.create(
            workspace=workspace, agent=agent, agent_name="Desk", user=member, engine="local",
            status=status,
        )  # fmt: skip
        Conversation.objects.filter(pk=row.pk).update(
            started_at=timezone.now() - timedelta(hours=hours_ago)
        )
        return row.pk

    left = conversation(ConversationStatus.IN_PROGRESS, 3)
    running = conversation(ConversationStatus.IN_PROGRESS, LONGEST_SECONDS / 3600)  # may run
    done = conversation(ConversationStatus.DONE, 5)
    assert conversations_sweep() == 1
    closed = Conversation.objects.get(pk=left)
    assert closed.status == ConversationStatus.FAILED and closed.end_reason == ABANDONED
    assert closed.ended_at is not None
    assert Conversation.objects.get(pk=running).status == ConversationStatus.IN_PROGRESS
    assert Conversation.objects.get(pk=done).status == ConversationStatus.DONE
    assert conversations_sweep() == 0  # once


def test_the_sweep_is_scheduled(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "agents.conversations_sweep" in tasks
