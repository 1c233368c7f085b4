"""Metering: reserve → call → settle or refund; budgets, caps, idempotency, sweeper, notices."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from apps.billing import services
from apps.billing.models import (
    Budget,
    Notification,
    Plan,
    RateCard,
    UsageEvent,
    UsageStatus,
)
from apps.workspaces.models import Membership

TTS = {"capability": "tts", "engine": "elevenlabs", "model_id": "eleven_multilingual_v2"}


def _call(workspace, user, units=100, key=None, **extra):
    with services.metered(
        workspace=workspace, user=user, units=units, idempotency_key=key, **{**TTS, **extra}
    ) as meter:
        meter.settle(units=units)
    return meter.event


def test_a_settled_call_charges_its_characters_at_the_plans_price(workspace, member):
    Plan.objects.create(workspace=workspace, tier="creator", price_per_credit=Decimal("0.00022"))
    event = _call(workspace, member, units=500)
    assert event.status == UsageStatus.SETTLED
    assert (event.credits, event.unit, event.money) == (Decimal(500), "character", Decimal("0.11"))
    assert event.request_id and event.idempotency_key


def test_the_providers_cost_wins_over_the_estimate(workspace, member):
    class Info:
        character_cost = 250
        request_id = "req-upstream-1"

    with services.metered(workspace=workspace, user=member, units=500, **TTS) as meter:
        meter.settle(units=500, info=Info())
    event = UsageEvent.objects.get()
    assert (event.credits, event.upstream_credits) == (Decimal(250), Decimal(250))
    assert event.upstream_request_id == "req-upstream-1"
    assert event.estimated_credits == Decimal(500)


def test_eleven_v3_costs_more_and_an_owner_override_wins(workspace, member, owner):
    assert _call(workspace, member, units=100, model_id="eleven_v3").credits == Decimal(200)
    RateCard.objects.create(
        workspace=workspace, capability="tts", model_id="", unit="character",
        credits_per_unit=Decimal("0.5"), updated_by=owner,
    )  # fmt: skip
    assert _call(workspace, member, units=100).credits == Decimal(50)
    assert _call(workspace, member, units=100, model_id="eleven_v3").credits == Decimal(200)


def test_the_local_engine_is_free_but_recorded(workspace, member):
    event = _call(workspace, member, units=1000, engine="local")
    assert event.status == UsageStatus.SETTLED and event.credits == Decimal(0)
    assert UsageEvent.objects.filter(engine="local").count() == 1


def test_a_failed_call_is_refunded_and_raises(workspace, member):
    with (
        pytest.raises(RuntimeError),
        services.metered(workspace=workspace, user=member, units=100, **TTS),
    ):
        raise RuntimeError("upstream quota")
    event = UsageEvent.objects.get()
    assert event.status == UsageStatus.REFUNDED and event.charged == 0
    assert "upstream quota" in event.note


def test_a_repeated_idempotency_key_never_charges_twice(workspace, member):
    first = _call(workspace, member, key="same-key")
    again = _call(workspace, member, key="same-key")
    assert first.pk == again.pk
    assert UsageEvent.objects.count() == 1


def test_a_member_budget_blocks_with_its_name_and_leaves_the_ledger_alone(workspace, member):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(250))
    _call(workspace, member, units=200)
    with pytest.raises(services.BudgetExceeded) as exc:
        _call(workspace, member, units=100)
    assert "Mia Member's budget of 250 credits" in str(exc.value)
    assert UsageEvent.objects.count() == 1


def test_a_workspace_cap_and_the_plan_limit_block_too(workspace, member, manager):
    Plan.objects.create(workspace=workspace, workspace_cap=Decimal(150))
    _call(workspace, member, units=100)
    with pytest.raises(services.BudgetExceeded, match="workspace's cap of 150"):
        _call(workspace, manager, units=100)
    Plan.objects.filter(workspace=workspace).update(
        workspace_cap=None, tier="creator", credit_limit=1000, credits_used=950
    )
    with pytest.raises(services.BudgetExceeded, match="creator plan's 1,000 credits"):
        _call(workspace, manager, units=100)


def test_an_api_key_cap_is_checked_per_key(workspace, member):
    _call(workspace, member, units=80, api_key_id=7, api_key_cap=Decimal(100))
    with pytest.raises(services.BudgetExceeded, match="API key's monthly cap"):
        _call(workspace, member, units=80, api_key_id=7, api_key_cap=Decimal(100))
    _call(workspace, member, units=80, api_key_id=8, api_key_cap=Decimal(100))


def test_the_estimate_tells_cost_and_what_is_left(workspace, member):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(1000))
    _call(workspace, member, units=300)
    estimate = services.usage_estimate(workspace=workspace, user=member, units=800, **TTS)
    assert (estimate.credits, estimate.member_left) == (Decimal(800), Decimal(700))
    assert "budget of 1,000 credits" in estimate.blocked_by


def test_the_sweeper_releases_and_flags_dead_reservations(workspace, member):
    reservation = services.meter_reserve(workspace=workspace, user=member, units=100, **TTS)
    UsageEvent.objects.filter(pk=reservation.event.pk).update(
        created_at=timezone.now() - timedelta(hours=2)
    )
    assert services.reservations_sweep() == 1
    event = UsageEvent.objects.get()
    assert (event.status, event.flagged, event.charged) == (UsageStatus.FAILED, True, 0)
    services.meter_settle(event=event, units=100)  # a late settle changes nothing
    assert UsageEvent.objects.get().status == UsageStatus.FAILED


def test_the_sweeper_settles_a_dead_realtime_session_on_the_seconds_it_recorded(workspace, member):
    """A realtime session records its seconds as it goes; its server died: the sweeper
    charges what was recorded instead of failing it at 0."""
    Plan.objects.create(workspace=workspace, price_per_credit=Decimal("0.0002"))
    stt = {"capability": "stt_realtime", "engine": "elevenlabs", "model_id": "scribe_v2_realtime"}
    reservation = services.meter_reserve(
        workspace=workspace, user=member, units=Decimal("0.017"), **stt
    )  # a minute, in hours
    services.meter_progress(event=reservation.event, units=Decimal("0.033"))  # 120 s
    two_hours_ago = timezone.now() - timedelta(hours=2)
    UsageEvent.objects.update(created_at=two_hours_ago, progress_at=two_hours_ago)
    assert services.reservations_sweep() == 1
    event = UsageEvent.objects.get()
    assert (event.status, event.flagged, event.units) == (
        UsageStatus.SETTLED,
        True,
        Decimal("0.033"),
    )
    assert (event.credits, event.money) == (Decimal("42.009"), Decimal("0.008402"))
    assert "recorded" in event.note
    services.meter_settle(event=event, units=Decimal("0.050"))  # a late settle changes nothing
    assert UsageEvent.objects.get().credits == Decimal("42.009")


def test_the_sweeper_leaves_a_session_that_recorded_progress_lately(workspace, member):
    stt = {"capability": "stt_realtime", "engine": "elevenlabs", "model_id": "scribe_v2_realtime"}
    reservation = services.meter_reserve(
        workspace=workspace, user=member, units=Decimal("0.017"), **stt
    )
    UsageEvent.objects.update(created_at=timezone.now() - timedelta(hours=2))
    services.meter_progress(event=reservation.event, units=Decimal("0.5"))  # still going
    assert services.reservations_sweep() == 0
    assert UsageEvent.objects.get().status == UsageStatus.RESERVED


def test_thresholds_notify_the_member_and_managers_once_per_period(
    workspace, member, manager, owner, django_capture_on_commit_callbacks
):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(1000))
    with django_capture_on_commit_callbacks(execute=True):
        _call(workspace, member, units=550)  # 55 %
        _call(workspace, member, units=10)
        _call(workspace, member, units=300)  # 86 %
    texts = list(Notification.objects.filter(user=member).values_list("text", flat=True))
    assert len(texts) == 2
    assert any("50%" in t for t in texts) and any("80%" in t for t in texts)
    assert Notification.objects.filter(user=manager).count() == 2
    assert Notification.objects.filter(user=owner).count() == 2
    assert len(mail.outbox) == 2


def test_a_plan_aligned_period_starts_at_the_last_reset(workspace):
    now = timezone.now()
    plan = Plan(workspace=workspace, budget_period="plan", next_reset_at=now + timedelta(days=10))
    start = services.period_start(plan, now=now)
    assert start < now and (now - start) < timedelta(days=31)
    assert start.day == plan.next_reset_at.day or start.day >= 28


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_calls_never_overspend_a_budget_of_ten(workspace, member):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(1000))
    outcomes = []
    lock = threading.Lock()

    def one(i):
        try:
            _call(workspace, member, units=100, key=f"concurrent-{i}")
            result = "ok"
        except services.BudgetExceeded:
            result = "quota"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 10 and outcomes.count("quota") == 40
    settled = UsageEvent.objects.filter(status=UsageStatus.SETTLED)
    assert settled.count() == 10
    assert sum(e.credits for e in settled) == Decimal(1000)
    assert not UsageEvent.objects.filter(status=UsageStatus.RESERVED).exists()
    assert Membership.objects.filter(user=member).exists()
