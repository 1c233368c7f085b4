"""Reservations made outside a transaction, as the API makes them (issue 13).

There, on PostgreSQL, ``meter_reserve`` takes its lock, sums every limit and inserts in one
message (``_reserve_in_two_trips``); inside a transaction (most tests) it takes the portable
path. These tests run with ``transaction=True`` so both databases check the path the
gateway uses: the same charges, the same refusals, never an overspend under concurrency.
"""

import threading
from decimal import Decimal

import pytest
from django.db import connection

from apps.billing import services
from apps.billing.models import Budget, Plan, RateCard, UsageEvent, UsageStatus

pytestmark = pytest.mark.django_db(transaction=True)

TTS = {"capability": "tts", "engine": "elevenlabs", "model_id": "eleven_multilingual_v2"}


def _reserve(workspace, user, units=100, **extra):
    return services.meter_reserve(workspace=workspace, user=user, units=units, **{**TTS, **extra})


def test_a_reservation_is_the_row_the_orm_would_have_made(workspace, member):
    assert not connection.in_atomic_block
    reservation = _reserve(workspace, member, units=120, voice_id="v1", api_key_id=7)
    event = reservation.event
    stored = UsageEvent.objects.get(pk=event.pk)
    for field in UsageEvent._meta.concrete_fields:
        assert getattr(stored, field.attname) == getattr(event, field.attname), field.name
    assert (stored.status, stored.estimated_credits, stored.unit) == (
        UsageStatus.RESERVED,
        Decimal(120),
        "character",
    )
    assert stored.workspace_id == workspace.pk and stored.user_id == member.pk
    assert reservation.plan is not None and reservation.plan.workspace_id == workspace.pk
    settled = services.Meter(reservation).settle(units=100)
    assert (settled.status, settled.credits) == (UsageStatus.SETTLED, Decimal(100))


def test_the_budget_key_cap_workspace_cap_and_plan_refuse_by_name(workspace, member):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(300))
    first = _reserve(workspace, member, units=200)
    assert first.member_used == Decimal(200) and first.member_limit == Decimal(300)
    with pytest.raises(services.BudgetExceeded, match="Mia Member's budget") as refused:
        _reserve(workspace, member, units=200)
    assert refused.value.left == Decimal(100)
    with pytest.raises(services.BudgetExceeded, match="API key's monthly cap"):
        _reserve(workspace, member, units=60, api_key_id=5, api_key_cap=Decimal(50))
    Plan.objects.filter(workspace=workspace).update(workspace_cap=Decimal(250))
    with pytest.raises(services.BudgetExceeded, match="workspace's cap"):
        _reserve(workspace, member, units=60)
    Plan.objects.filter(workspace=workspace).update(
        workspace_cap=None, credit_limit=1000, credits_used=950, tier="creator"
    )
    Budget.objects.all().delete()
    with pytest.raises(services.BudgetExceeded, match="creator plan's 1,000 credits"):
        _reserve(workspace, member, units=60)
    assert UsageEvent.objects.count() == 1  # refusals reserve nothing


def test_a_rate_card_and_the_local_engine_are_priced_as_before(workspace, member, owner):
    RateCard.objects.create(
        workspace=workspace, capability="tts", model_id="", unit="character",
        credits_per_unit=Decimal("0.5"), updated_by=owner,
    )  # fmt: skip
    assert _reserve(workspace, member, units=100).event.estimated_credits == Decimal(50)
    local = _reserve(workspace, member, units=100, engine="local")
    assert local.event.estimated_credits == Decimal(0)
    assert UsageEvent.objects.get(pk=local.event.pk).engine == "local"


def test_a_repeated_idempotency_key_returns_the_first_reservation(workspace, member):
    first = _reserve(workspace, member, idempotency_key="job-1")
    again = _reserve(workspace, member, idempotency_key="job-1")
    assert again.replayed and again.event.pk == first.event.pk


def test_concurrent_reservations_never_overspend_a_budget(workspace, member):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(1000))
    outcomes, lock = [], threading.Lock()

    def one():
        try:
            _reserve(workspace, member, units=100)
            outcome = "reserved"
        except services.BudgetExceeded:
            outcome = "refused"
        finally:
            connection.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("reserved") == 10 and outcomes.count("refused") == 14
    assert UsageEvent.objects.filter(status=UsageStatus.RESERVED).count() == 10
