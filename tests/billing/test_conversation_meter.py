"""A voice-agent conversation as one ledger row (``apps.generation.conversation``): its STT
seconds, TTS characters and LLM tokens each priced by the rate in force and summed; charged on
ElevenLabs, free with shadow credits on the local engine; a first slice reserved, budgets
checked before each further step, settled once, refunded when nothing was said, and the rest
charged on a late row after the sweeper closed it."""

from datetime import timedelta
from decimal import Decimal

import pytest

from apps.billing import services
from apps.billing.models import Budget, RateCard, UsageEvent, UsageStatus
from apps.generation.caller import Caller
from apps.generation.conversation import SLICE, ConversationMeter, ConversationUsage


@pytest.fixture
def caller(workspace, member):
    return Caller(workspace=workspace, user=member, purpose=("conversation", "conv_test"))


def test_the_parts_are_priced_by_their_default_rates_and_summed(caller):
    meter = ConversationMeter(caller=caller, engine_name="elevenlabs")
    usage = ConversationUsage(stt_seconds=36.0, tts_characters=120, llm_tokens=1000)
    parts = meter.parts(usage)
    # 36 s at 1273 credits an hour, 120 characters at 1, 1000 tokens at 0.003.
    assert parts == {"stt": Decimal("12.730"), "tts": Decimal("120.000"), "llm": Decimal("3.000")}
    assert meter.units(usage) == Decimal("135.730")


def test_a_conversation_on_elevenlabs_is_one_settled_row_of_its_parts(caller, workspace):
    meter = ConversationMeter(caller=caller, engine_name="elevenlabs", voice_id="v1")
    reservation = meter.reserve()
    assert reservation.event.estimated_credits == meter.units(SLICE) > 0
    meter.add(stt_seconds=18.0)
    meter.add(tts_characters=60, llm_tokens=400)
    meter.add(stt_seconds=18.0, tts_characters=60, llm_tokens=600)
    meter.progress()
    row = UsageEvent.objects.get(pk=reservation.event.pk)
    assert row.units_so_far == Decimal("135.730")
    event = meter.settle()
    assert meter.settle() == event  # once
    rows = UsageEvent.objects.filter(workspace=workspace)
    assert rows.count() == 1
    row = rows.get()
    assert (row.capability, row.model_id, row.engine, row.unit) == (
        "agent", "conversation", "elevenlabs", "credit",
    )  # fmt: skip
    assert row.status == UsageStatus.SETTLED
    assert row.units == row.credits == Decimal("135.730")
    assert row.shadow_credits is None
    assert (row.purpose_type, row.purpose_id, row.voice_id) == ("conversation", "conv_test", "v1")


def test_the_rate_card_prices_each_part(caller, workspace):
    RateCard.objects.create(
        workspace=workspace, capability="agent", model_id="tts", unit="character",
        credits_per_unit=Decimal("0.5"),
    )  # fmt: skip
    RateCard.objects.create(
        workspace=workspace, capability="agent", model_id="llm", unit="token",
        credits_per_unit=Decimal("0.01"),
    )  # fmt: skip
    meter = ConversationMeter(caller=caller, engine_name="elevenlabs")
    meter.reserve()
    meter.add(stt_seconds=36.0, tts_characters=120, llm_tokens=1000)
    event = meter.settle()
    assert event.credits == Decimal("12.730") + Decimal("60") + Decimal("10")


def test_on_the_local_engine_it_costs_nothing_and_records_its_shadow_cost(caller, workspace):
    meter = ConversationMeter(caller=caller, engine_name="local")
    meter.reserve()
    meter.add(stt_seconds=36.0, tts_characters=120, llm_tokens=1000)
    event = meter.settle()
    row = UsageEvent.objects.get(pk=event.pk)
    assert row.engine == "local" and row.status == UsageStatus.SETTLED
    assert row.credits == 0
    assert row.shadow_credits == row.units == Decimal("135.730")


def test_nothing_said_is_refunded(caller):
    meter = ConversationMeter(caller=caller, engine_name="elevenlabs")
    reservation = meter.reserve()
    meter.settle()
    row = UsageEvent.objects.get(pk=reservation.event.pk)
    assert row.status == UsageStatus.REFUNDED and row.credits == 0


def test_a_spent_budget_refuses_the_first_slice(caller, workspace, member):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(100))
    meter = ConversationMeter(caller=caller, engine_name="elevenlabs")
    with pytest.raises(services.BudgetExceeded) as refused:
        meter.reserve()
    assert "Mia Member's budget of 100 credits" in str(refused.value)
    assert not UsageEvent.objects.filter(workspace=workspace).exists()


def test_blocked_by_names_the_budget_once_what_was_said_no_longer_fits(caller, workspace, member):
    slice_credits = ConversationMeter(caller=caller, engine_name="elevenlabs").units(SLICE)
    Budget.objects.create(
        workspace=workspace, user=member, limit_credits=slice_credits + Decimal(50)
    )
    meter = ConversationMeter(caller=caller, engine_name="elevenlabs")
    meter.reserve()
    meter.add(tts_characters=40)
    assert meter.blocked_by() is None
    meter.add(tts_characters=20)  # 60 credits used; 50 left beyond the slice reserved
    message = meter.blocked_by()
    assert message == (
        f"Mia Member's budget of {slice_credits + 50:,.0f} credits is spent: "
        "the conversation cannot go on."
    )
    event = meter.settle()  # what was said is charged all the same
    assert event.credits == Decimal(60)


def test_a_local_conversation_is_never_blocked(caller, workspace, member):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(0))
    meter = ConversationMeter(caller=caller, engine_name="local")
    meter.reserve()
    meter.add(tts_characters=10_000)
    assert meter.blocked_by() is None


def test_after_a_sweep_the_rest_is_charged_on_a_late_row(caller, workspace):
    meter = ConversationMeter(caller=caller, engine_name="elevenlabs")
    reservation = meter.reserve()
    meter.add(tts_characters=100)
    meter.progress()
    UsageEvent.objects.filter(pk=reservation.event.pk).update(
        progress_at=reservation.event.created_at - timedelta(days=1)
    )
    assert services.reservations_sweep(older_than=timedelta(seconds=1)) == 1
    meter.add(tts_characters=50)
    meter.settle()
    rows = {row.idempotency_key: row for row in UsageEvent.objects.filter(workspace=workspace)}
    first = rows[reservation.event.idempotency_key]
    late = rows[f"{reservation.event.idempotency_key}:late"]
    assert first.flagged and first.credits == Decimal(100)
    assert late.status == UsageStatus.SETTLED and late.credits == Decimal(50)
