"""The spend rollup kept in step with the ledger: settle, sweep, shadow cost, project, rebuild.

Each settle adds its row to ``SpendRollup`` in the transaction that settles it (one statement
on PostgreSQL); ``rollup_rebuild`` sums the settled ledger again and must give the same rows.
The property-based comparison over random ledgers is ``test_rollup_property.py``.
"""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from apps.billing import services
from apps.billing.models import (
    Budget,
    Plan,
    RateCard,
    SpendRollup,
    UsageEvent,
    UsageStatus,
)
from apps.billing.rollup import rollup_rebuild
from apps.workspaces.services import workspace_create

TTS = {"capability": "tts", "engine": "elevenlabs", "model_id": "eleven_multilingual_v2"}
LOCAL = {"capability": "tts", "engine": "local", "model_id": "eleven_v3"}
AMOUNTS = ("events", "units", "credits", "money", "shadow_credits")
DIMENSIONS = (
    "workspace_id", "hour", "user_id", "api_key_id", "capability", "model_id", "voice_id",
    "project", "source", "engine",
)  # fmt: skip


def rollup_rows(**filters) -> set[tuple]:
    """Every rollup row as a tuple of its dimensions and amounts."""
    return set(SpendRollup.objects.filter(**filters).values_list(*DIMENSIONS, *AMOUNTS))


def _call(workspace, user, units=100, settle_units=None, **extra):
    with services.metered(workspace=workspace, user=user, units=units, **{**TTS, **extra}) as m:
        m.settle(units=units if settle_units is None else settle_units)
    return m.event


def test_a_settle_adds_its_row_to_the_hour_it_was_made_in(workspace, member):
    Plan.objects.create(workspace=workspace, tier="creator", price_per_credit=Decimal("0.00022"))
    first = _call(workspace, member, units=500, voice_id="v1", project="prj_a", api_key_id=9)
    _call(workspace, member, units=120, voice_id="v1", project="prj_a", api_key_id=9)
    _call(workspace, member, units=7, voice_id="v2")
    hour = first.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    [row] = SpendRollup.objects.filter(voice_id="v1")
    assert (row.hour, row.user_id, row.api_key_id, row.project, row.source) == (
        hour,
        member.pk,
        9,
        "prj_a",
        "ui",
    )
    assert (row.events, row.units, row.credits, row.money, row.shadow_credits) == (
        2,
        Decimal(620),
        Decimal(620),
        Decimal("0.1364"),
        Decimal(0),
    )
    other = SpendRollup.objects.get(voice_id="v2")
    assert (other.events, other.credits, other.api_key_id, other.project) == (
        1,
        Decimal(7),
        0,
        "",
    )


def test_refunded_failed_and_reserved_rows_are_not_in_it(workspace, member):
    with (
        pytest.raises(RuntimeError),
        services.metered(workspace=workspace, user=member, units=50, **TTS),
    ):
        raise RuntimeError("the engine failed")
    services.meter_reserve(workspace=workspace, user=member, units=60, **TTS)  # still open
    stale = services.meter_reserve(workspace=workspace, user=member, units=70, **TTS)
    UsageEvent.objects.filter(pk=stale.event.pk).update(
        created_at=timezone.now() - timedelta(hours=2)
    )
    assert services.reservations_sweep() == 1  # failed at 0
    assert set(UsageEvent.objects.values_list("status", flat=True)) == {
        UsageStatus.REFUNDED,
        UsageStatus.RESERVED,
        UsageStatus.FAILED,
    }
    assert not SpendRollup.objects.exists()


def test_a_second_settle_of_the_same_reservation_adds_nothing(workspace, member):
    reservation = services.meter_reserve(workspace=workspace, user=member, units=100, **TTS)
    services.meter_settle(event=reservation.event, units=90)
    services.meter_settle(event=reservation.event, units=300)  # never twice
    row = SpendRollup.objects.get()
    assert (row.events, row.units, row.credits) == (1, Decimal(90), Decimal(90))


def test_the_sweeper_adds_the_row_it_settles_on_recorded_units(workspace, member):
    Plan.objects.create(workspace=workspace, price_per_credit=Decimal("0.0002"))
    stt = {"capability": "stt_realtime", "engine": "elevenlabs", "model_id": "scribe_v2_realtime"}
    reservation = services.meter_reserve(
        workspace=workspace, user=member, units=Decimal("0.017"), project="prj_live", **stt
    )
    services.meter_progress(event=reservation.event, units=Decimal("0.033"))
    two_hours_ago = timezone.now() - timedelta(hours=2)
    UsageEvent.objects.update(created_at=two_hours_ago, progress_at=two_hours_ago)
    assert services.reservations_sweep() == 1
    row = SpendRollup.objects.get()
    assert (row.events, row.units, row.credits, row.money, row.project) == (
        1,
        Decimal("0.033"),
        Decimal("42.009"),
        Decimal("0.008402"),
        "prj_live",
    )
    assert row.hour == two_hours_ago.replace(minute=0, second=0, microsecond=0)
    services.meter_settle(event=reservation.event, units=Decimal("0.050"))  # changes nothing
    assert rollup_rows() == {
        (*(getattr(row, name) for name in DIMENSIONS), *(getattr(row, n) for n in AMOUNTS))
    }


def test_a_late_charge_keeps_the_project(workspace, member):
    reservation = services.meter_reserve(
        workspace=workspace, user=member, units=100, project="prj_late", **TTS
    )
    UsageEvent.objects.filter(pk=reservation.event.pk).update(
        created_at=timezone.now() - timedelta(hours=2)
    )
    services.reservations_sweep()
    swept = UsageEvent.objects.get(pk=reservation.event.pk)
    late = services.meter_charge_late(event=swept, units=100)
    assert (late.status, late.project, late.credits) == (UsageStatus.SETTLED, "prj_late", 100)
    assert SpendRollup.objects.get().project == "prj_late"


# --- Shadow cost ------------------------------------------------------------------------------


def test_a_local_row_records_what_elevenlabs_would_charge_at_its_rate(workspace, member, owner):
    event = _call(workspace, member, units=100, settle_units=80, **LOCAL)
    # eleven_v3 is 2 credits a character on ElevenLabs; the local engine charges nothing.
    assert (event.credits, event.estimated_credits) == (0, 0)
    stored = UsageEvent.objects.get(pk=event.pk)
    assert stored.shadow_credits == Decimal(160)  # the settled units, not the estimate
    RateCard.objects.create(
        workspace=workspace, capability="tts", model_id="eleven_v3", unit="character",
        credits_per_unit=Decimal("1.333333"), updated_by=owner,
    )  # fmt: skip
    reservation = services.meter_reserve(workspace=workspace, user=member, units=3, **LOCAL)
    assert reservation.event.shadow_credits == Decimal("4.000")  # the estimate, at reserve
    assert UsageEvent.objects.get(pk=reservation.event.pk).shadow_credits == Decimal("4.000")
    services.meter_settle(event=UsageEvent.objects.get(pk=reservation.event.pk), units=7)
    assert UsageEvent.objects.get(pk=reservation.event.pk).shadow_credits == Decimal("9.333")
    row = SpendRollup.objects.get()
    assert (row.events, row.credits, row.shadow_credits) == (2, 0, Decimal("169.333"))


def test_elevenlabs_rows_have_no_shadow_cost(workspace, member):
    event = _call(workspace, member, units=100)
    assert UsageEvent.objects.get(pk=event.pk).shadow_credits is None
    assert SpendRollup.objects.get().shadow_credits == 0


def test_budgets_count_only_what_is_charged_never_the_shadow(workspace, member):
    Budget.objects.create(workspace=workspace, user=member, limit_credits=Decimal(100))
    Plan.objects.filter(workspace=workspace).update(workspace_cap=Decimal(100))
    for _ in range(3):
        _call(workspace, member, units=1000, **LOCAL)  # 6,000 shadow credits
    assert UsageEvent.objects.filter(shadow_credits=Decimal(2000)).count() == 3
    assert services.member_usage(workspace=workspace, user=member).used == 0
    assert services.workspace_usage(workspace=workspace) == 0
    _call(workspace, member, units=100)  # the whole budget, on ElevenLabs
    with pytest.raises(services.BudgetExceeded):
        _call(workspace, member, units=1)


# --- Rebuild --------------------------------------------------------------------------------


def test_rebuild_gives_the_rows_the_settles_wrote(workspace, member, owner):
    other = workspace_create(name="Other studio", owner=owner)
    for units in (100, 250):
        _call(workspace, member, units=units, voice_id="v1", project="prj_a")
        _call(workspace, owner, units=units, voice_id="v2", **LOCAL)
        _call(other, owner, units=units, source="api", api_key_id=3)
    # Calls made on each side of an hour's border, to the microsecond: reserved, moved to
    # that moment while still open, then settled by the live path.
    border = datetime(2025, 3, 9, 10, 0, tzinfo=UTC)
    moments = (border - timedelta(microseconds=1), border, border + timedelta(minutes=59))
    for moment in moments:
        reservation = services.meter_reserve(workspace=workspace, user=member, units=5, **TTS)
        UsageEvent.objects.filter(pk=reservation.event.pk).update(created_at=moment)
        services.meter_settle(event=reservation.event, units=5)
    before, after = (
        SpendRollup.objects.get(hour=border - timedelta(hours=1)),
        SpendRollup.objects.get(hour=border),
    )
    assert (before.events, after.events) == (1, 2)
    live = rollup_rows()
    assert rollup_rebuild() == len(live) == 5  # v1, v2, the other's, the border's two
    assert rollup_rows() == live
    assert rollup_rebuild(workspace=other) == 1
    assert rollup_rows() == live


def test_rebuild_of_a_workspace_leaves_the_others_rows(workspace, member, owner):
    other = workspace_create(name="Other studio", owner=owner)
    _call(workspace, member, units=10)
    _call(other, owner, units=20)
    SpendRollup.objects.filter(workspace=other).update(credits=Decimal(999))  # a wrong row
    before_ours = rollup_rows(workspace=workspace)
    assert rollup_rebuild(workspace=other) == 1
    assert SpendRollup.objects.get(workspace=other).credits == 20
    assert rollup_rows(workspace=workspace) == before_ours


def test_the_command_rebuilds_and_says_how_many_rows(workspace, member, owner):
    _call(workspace, member, units=10, voice_id="a")
    _call(workspace, member, units=10, voice_id="b")
    live = rollup_rows()
    SpendRollup.objects.all().delete()
    out = StringIO()
    call_command("spend_rollup_rebuild", stdout=out)
    assert "2 rollup rows" in out.getvalue()
    assert rollup_rows() == live
    out = StringIO()
    call_command("spend_rollup_rebuild", "--workspace", str(workspace.pk), stdout=out)
    assert "2 rollup rows" in out.getvalue() and str(workspace.pk) in out.getvalue()
    assert rollup_rows() == live


def test_the_command_refuses_an_unknown_workspace(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No workspace .424242."):
        call_command("spend_rollup_rebuild", "--workspace", "424242", stdout=StringIO())


# --- Concurrency (PostgreSQL) ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_settles_of_one_reservation_at_once_count_once(workspace, member):
    """Two processes settle the same reservation at the same moment (a job and its retry):
    the conditional UPDATE lets one through, and only that one adds to the rollup."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite has one writer)")
    rounds = 10
    reservations = [
        services.meter_reserve(workspace=workspace, user=member, units=100, **TTS)
        for _ in range(rounds)
    ]
    barrier = threading.Barrier(2)
    errors = []

    def settle(event, units):
        try:
            barrier.wait(timeout=10)
            services.meter_settle(event=UsageEvent.objects.get(pk=event.pk), units=units)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connection.close()

    for reservation in reservations:
        threads = [
            threading.Thread(target=settle, args=(reservation.event, units)) for units in (90, 95)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        barrier.reset()
    assert not errors
    row = SpendRollup.objects.get()
    settled = UsageEvent.objects.filter(status=UsageStatus.SETTLED)
    assert row.events == settled.count() == rounds
    assert row.credits == sum(event.credits for event in settled)
    assert {event.credits for event in settled} <= {Decimal(90), Decimal(95)}


@pytest.mark.django_db(transaction=True)
def test_concurrent_settles_into_one_rollup_row_add_up(workspace, member):
    """Many members' calls in the same hour and dimensions land on one rollup row at once:
    the upsert adds each exactly once."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (SQLite has one writer)")
    threads_count, calls = 8, 5
    errors = []

    def work(offset):
        try:
            for index in range(calls):
                _call(workspace, member, units=offset * 10 + index + 1, voice_id="same")
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    expected = sum(n * 10 + i + 1 for n in range(threads_count) for i in range(calls))
    rows = SpendRollup.objects.all()
    assert sum(row.events for row in rows) == threads_count * calls
    assert sum(row.credits for row in rows) == Decimal(expected)
    live = rollup_rows()
    rollup_rebuild()
    assert rollup_rows() == live
