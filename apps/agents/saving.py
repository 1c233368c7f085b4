"""Saving a conversation once it ends, the same for both sessions (the local ``AgentSession``
and the provider's ``RelaySession``): both tracks as WAV, the turns, the status and reason,
and the usage settled on the conversation's one ledger row, in one transaction."""

from __future__ import annotations

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from apps.engines import audio

from .models import Conversation, ConversationStatus, ConversationTurn

RATE = 16000
BYTES_PER_SECOND = RATE * 2


def wav(pcm: bytes) -> bytes:
    """16 kHz mono s16le ``pcm`` as a WAV file."""
    return audio.wav_header(RATE, len(pcm)) + pcm


def error_event(message: str, *, fatal: bool = False) -> dict:
    return {"type": "error", "error_event": {"message": message, "fatal": fatal}}


def conversation_save(
    conversation: Conversation, *, user: bytes, agent: bytes, turns, meter, reason: str,
    failed: bool,
) -> Conversation:  # fmt: skip
    """Save ``conversation`` as ended: ``user`` and ``agent`` tracks (PCM, the agent's padded
    to the user's length), ``turns`` (objects with role, text, started, ended, interrupted and
    maybe latency_ms), ``meter`` settled (a ``ConversationMeter`` or None)."""
    length = max(len(user), len(agent))
    agent += bytes(length - len(agent))
    usage = meter.usage if meter else None
    with transaction.atomic():
        event = meter.settle() if meter else None
        if user:
            conversation.user_audio.save("user.wav", ContentFile(wav(user)), save=False)
        if agent:
            conversation.agent_audio.save("agent.wav", ContentFile(wav(agent)), save=False)
        ConversationTurn.objects.filter(conversation=conversation).delete()
        ConversationTurn.objects.bulk_create(
            ConversationTurn(
                conversation=conversation,
                position=position,
                role=turn.role,
                text=turn.text,
                started_seconds=round(turn.started, 3),
                ended_seconds=round(max(turn.ended, turn.started), 3),
                interrupted=turn.interrupted,
                latency_ms=getattr(turn, "latency_ms", None) or {},
            )
            for position, turn in enumerate(sorted(turns, key=lambda t: t.started))
        )
        conversation.status = ConversationStatus.FAILED if failed else ConversationStatus.DONE
        conversation.end_reason = reason[:300]
        conversation.ended_at = timezone.now()
        conversation.duration_seconds = round(length / BYTES_PER_SECOND, 3)
        if usage is not None:
            conversation.stt_seconds = round(usage.stt_seconds, 3)
            conversation.tts_characters = usage.tts_characters
            conversation.llm_tokens = usage.llm_tokens
        if event is not None:
            conversation.usage_event_id = event.pk
        conversation.save()
    return conversation
