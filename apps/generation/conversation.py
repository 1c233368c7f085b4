"""Voice-agent conversations for a ``Caller``: one ledger row for a whole conversation.

A conversation uses three things as it goes: speech recognised (STT seconds), speech spoken
(TTS characters) and an LLM's tokens. It is charged as one ledger row of capability
``agent``, model ``conversation``, whose units are credits: each part priced by the
workspace's rate in force for it (``agent``/``stt``, ``agent``/``tts``, ``agent``/``llm``: the
rate card, else ``billing.rates``' defaults) and summed. On the ElevenLabs engine the row is
charged those credits (at the ``agent``/``conversation`` rate, 1 per credit unless an owner
changed it); on the local engine it is charged 0 and its ``shadow_credits`` are the same sum
(what the conversation would have cost on ElevenLabs), as every local row records.

Like a live transcription (``live.LiveMeter``) it cannot know its length ahead:
``ConversationMeter.reserve`` reserves a first slice (a minute of conversation) when it
starts (``BudgetExceeded`` refuses it); ``add`` counts the parts as they are used and
``progress`` records them on the reservation (so the sweeper never takes a live conversation
for a dead one, and one whose process died is settled on what it had recorded); before each
further step (an agent turn) ``blocked_by`` names the budget that the conversation so far
would exceed with another slice — the conversation then ends, keeping what was said;
``settle`` charges once at the end (nothing used: refunded), and a row the sweeper closed
meanwhile is charged the rest on its ``:late`` row.

Not thread-safe on its own: the agent session calls it from one thread at a time. Every
method except ``add`` and ``usage`` reads or writes the database.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal

from apps.billing.rates import units_for
from apps.billing.services import (
    credits_for,
    meter_charge_late,
    meter_progress,
    meter_refund,
    meter_reserve,
    meter_settle,
    rate_for,
    usage_estimate,
)

from .caller import Caller

CAPABILITY = "agent"
MODEL_ID = "conversation"  # the row's model: its units are the parts' credits
PARTS = ("stt", "tts", "llm")
# A slice of conversation, reserved first and checked before each next step: a minute of
# the user's audio recognised, about half a minute of agent speech (15 characters a second)
# and the LLM tokens of a few turns with their prompts.
SLICE_SECONDS = 60.0
SLICE_CHARACTERS = 450
SLICE_TOKENS = 3000


@dataclass(frozen=True)
class ConversationUsage:
    stt_seconds: float = 0.0
    tts_characters: int = 0
    llm_tokens: int = 0

    @property
    def empty(self) -> bool:
        return self.stt_seconds <= 0 and self.tts_characters <= 0 and self.llm_tokens <= 0


SLICE = ConversationUsage(SLICE_SECONDS, SLICE_CHARACTERS, SLICE_TOKENS)


class ConversationMeter:
    """The charge of one conversation of ``caller`` on the engine named ``engine_name``."""

    def __init__(self, *, caller: Caller, engine_name: str, voice_id: str = ""):
        self.caller, self.engine_name, self.voice_id = caller, engine_name, voice_id
        workspace = caller.workspace
        # The parts' prices: what ElevenLabs costs at this workspace's rate card (on the
        # local engine too: that is its shadow cost).
        self.rates = {part: rate_for(workspace, CAPABILITY, part, "elevenlabs") for part in PARTS}
        self.row_rate = rate_for(workspace, CAPABILITY, MODEL_ID, engine_name)
        self.reservation = None
        self.event = None  # the settled row, once settled
        self._lock = threading.Lock()
        self._usage = ConversationUsage()

    # --- What the conversation used -------------------------------------------------------

    @property
    def usage(self) -> ConversationUsage:
        return self._usage

    def add(self, *, stt_seconds: float = 0.0, tts_characters: int = 0, llm_tokens: int = 0):
        """Count what the conversation just used (no database: safe from any thread)."""
        with self._lock:
            u = self._usage
            self._usage = ConversationUsage(
                u.stt_seconds + max(float(stt_seconds), 0.0),
                u.tts_characters + max(int(tts_characters), 0),
                u.llm_tokens + max(int(llm_tokens), 0),
            )

    def parts(self, usage: ConversationUsage | None = None) -> dict[str, Decimal]:
        """Each part's credits at its rate (the ElevenLabs price of ``usage``)."""
        usage = self._usage if usage is None else usage
        measures = {
            "stt": {"seconds": usage.stt_seconds},
            "tts": {"characters": usage.tts_characters},
            "llm": {"tokens": usage.llm_tokens},
        }
        return {
            part: credits_for(rate, units_for(rate.unit, **measures[part]))
            for part, rate in self.rates.items()
        }

    def units(self, usage: ConversationUsage | None = None) -> Decimal:
        """The row's units: the parts' credits summed."""
        return sum(self.parts(usage).values(), Decimal(0))

    @property
    def free(self) -> bool:
        return self.row_rate.credits_per_unit == 0

    # --- The ledger row ---------------------------------------------------------------------

    def reserve(self, *, idempotency_key: str | None = None):
        """Reserve the first slice (``BudgetExceeded`` refuses the conversation)."""
        caller = self.caller
        self.reservation = meter_reserve(
            workspace=caller.workspace,
            user=caller.user,
            capability=CAPABILITY,
            engine=self.engine_name,
            model_id=MODEL_ID,
            units=self.units(SLICE),
            source=caller.source,
            idempotency_key=idempotency_key,
            voice_id=self.voice_id,
            api_key_id=caller.key_id,
            api_key_cap=caller.key_cap,
            purpose=caller.purpose,
            project=caller.project,
        )
        return self.reservation

    def progress(self) -> None:
        """Record what the conversation has used so far on the reservation."""
        if self.reservation is not None:
            meter_progress(event=self.reservation.event, units=self.units())

    def blocked_by(self) -> str | None:
        """The budget or key cap that another slice after what was used so far would exceed
        (named for the member, as ``BudgetExceeded`` says it), or None. A free conversation
        (the local engine) is never blocked."""
        if self.free:
            return None
        estimate = usage_estimate(
            workspace=self.caller.workspace,
            user=self.caller.user,
            capability=CAPABILITY,
            engine=self.engine_name,
            model_id=MODEL_ID,
            # The open reservation already counts one slice: this adds what was used.
            units=self.units(),
        )
        if not estimate.blocked_by:
            return None
        return f"{estimate.blocked_by} is spent: the conversation cannot go on."

    def settle(self):
        """Charge what was used, once (nothing: refunded); the settled row, or None."""
        reservation, self.reservation = self.reservation, None
        if reservation is None:
            return self.event
        usage = self._usage
        if usage.empty:
            self.event = meter_refund(event=reservation.event, note="nothing was said")
            return self.event
        units = self.units(usage)
        event = meter_settle(event=reservation.event, units=units, plan=reservation.plan)
        meter_charge_late(event=event, units=units, api_key_cap=self.caller.key_cap)
        self.event = event
        return event

    def release(self, *, note: str) -> None:
        """Refund the reservation (the conversation never started), once."""
        reservation, self.reservation = self.reservation, None
        if reservation is not None:
            self.event = meter_refund(event=reservation.event, note=note[:300])
