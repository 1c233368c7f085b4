"""Property: over any ledger, the spend rollup's sums equal the settled ledger rows' sums.

Hypothesis draws a sequence of calls — members, personal keys, capabilities and models,
voices, projects, sources, engines, hours (across hour borders, to the microsecond) — and
ends each one as it can end in production: settled (on the estimate, on other units, on the
provider's cost), settled twice, refunded, failed by an exception, left open, released or
settled by the sweeper, charged late after a sweep. Then for every grouping of the explorer
(each dimension alone, several pairs, all of them, the total) the rollup's sums equal the
settled rows' sums exactly — summed by the database and summed here as Decimals — and
``rollup_rebuild`` gives back exactly the rows the live path wrote. Local rows carry the
ElevenLabs cost of their units at the rate card in force; what budgets count never
includes it.
"""

import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Count, Sum
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.billing import services
from apps.billing.models import (
    Budget,
    Plan,
    RateCard,
    SpendDay,
    SpendRollup,
    UsageEvent,
    UsageStatus,
)
from apps.billing.rollup import DAY_DIMENSIONS, rollup_rebuild
from tests.factories import add_member, make_user

CALLS = (  # (capability, model id) on the default rate card, and one override below
    ("tts", "eleven_multilingual_v2"),
    ("tts", "eleven_v3"),
    ("stt", "scribe_v1"),
    ("stt_realtime", "scribe_v2_realtime"),
    ("sound_effect", ""),
    ("music", "music_v1"),
)
ENDINGS = (
    "settle",
    "settle_other_units",
    "settle_upstream",
    "settle_twice",
    "refund",
    "raise",
    "open",
    "progress",  # a long call that recorded its units, then its process died
    "late",  # released by the sweeper, then charged late by its caller
)
BASE = datetime(2025, 3, 30, 22, 0, tzinfo=UTC)
DIMENSIONS = (
    "hour", "user_id", "api_key_id", "capability", "model_id", "voice_id", "project",
    "source", "engine",
)  # fmt: skip
GROUPINGS = (
    *((name,) for name in DIMENSIONS),
    ("user_id", "capability"),
    ("project", "engine"),
    ("hour", "user_id"),
    ("voice_id", "model_id"),
    ("api_key_id", "source"),
    ("user_id", "voice_id", "project"),
    DIMENSIONS,
    (),  # the total
)
AMOUNTS = ("units", "credits", "money", "shadow_credits")
UNITS = st.decimals(min_value=0, max_value=5000, places=3, allow_nan=False, allow_infinity=False)

call = st.fixed_dictionaries(
    {
        "who": st.integers(0, 2),
        "key": st.sampled_from([None, 11, 12]),
        "call": st.sampled_from(CALLS),
        "voice": st.sampled_from(["", "v_rachel", "v_adam"]),
        "project": st.sampled_from(["", "prj_one", "prj_two"]),
        "source": st.sampled_from(["ui", "api", "job"]),
        "engine": st.sampled_from(["local", "elevenlabs"]),
        # None: now (inside the budget period); else hours after BASE, to the microsecond
        "at": st.one_of(st.none(), st.integers(0, 6 * 3600 * 10**6 - 1)),
        "units": UNITS,
        "actual": UNITS,
        "upstream": st.decimals(min_value=0, max_value=9000, places=3),
        "ending": st.sampled_from(ENDINGS),
        "sweep_after": st.booleans(),
    }
)
ledgers = st.fixed_dictionaries(
    {
        "calls": st.lists(call, min_size=1, max_size=25),
        # an owner's override of every TTS model without a rate of its own (odd on purpose:
        # the shadow cost rounds)
        "override": st.one_of(st.none(), st.sampled_from(["0.333333", "1.7", "0.05"])),
    }
)


class Info:
    def __init__(self, cost):
        self.character_cost, self.request_id = cost, "req-upstream"


def _run(call: dict, workspace, people) -> None:
    capability, model_id = call["call"]
    who = people[call["who"]]
    reserve = {
        "workspace": workspace,
        "user": who,
        "capability": capability,
        "engine": call["engine"],
        "model_id": model_id,
        "units": call["units"],
        "source": call["source"],
        "voice_id": call["voice"],
        "api_key_id": call["key"],
        "project": call["project"],
    }
    ending = call["ending"]
    if ending == "raise":
        with pytest.raises(RuntimeError), services.metered(**reserve):
            raise RuntimeError("the engine failed")
        return
    reservation = services.meter_reserve(**reserve)
    event = reservation.event
    # Made at that moment (moved while still open); a call the sweeper will close is made
    # three hours ago at the latest, and a long call last recorded its units then.
    moment = None if call["at"] is None else BASE + timedelta(microseconds=call["at"])
    if ending in ("progress", "late") and moment is None:
        moment = timezone.now() - timedelta(hours=3)
    if moment is not None:
        UsageEvent.objects.filter(pk=event.pk).update(created_at=moment)
    if ending == "settle":
        services.Meter(reservation).settle()
    elif ending == "settle_other_units":
        services.Meter(reservation).settle(units=call["actual"])
    elif ending == "settle_upstream":
        services.Meter(reservation).settle(units=call["actual"], info=Info(call["upstream"]))
    elif ending == "settle_twice":
        services.meter_settle(event=event, units=call["actual"])
        services.meter_settle(event=event, units=call["units"])
    elif ending == "refund":
        services.meter_refund(event=event, note="nothing billable")
    elif ending == "progress":
        services.meter_progress(event=event, units=call["actual"])
        UsageEvent.objects.filter(pk=event.pk).update(progress_at=moment)
    elif ending == "late":
        services.reservations_sweep()
        swept = UsageEvent.objects.get(pk=event.pk)
        services.meter_charge_late(event=swept, units=call["actual"])
    if call["sweep_after"]:
        services.reservations_sweep()


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ledger_groups(rows, grouping) -> dict:
    """The settled rows summed here, exactly, per ``grouping``."""
    sums = defaultdict(lambda: [0, *(Decimal(0) for _ in AMOUNTS)])
    for row in rows:
        values = {
            "hour": _hour(row.created_at),
            "user_id": row.user_id or 0,
            "api_key_id": row.api_key_id or 0,
            **{name: getattr(row, name) for name in DIMENSIONS[3:]},
        }
        group = sums[tuple(values[name] for name in grouping)]
        group[0] += 1
        for index, name in enumerate(AMOUNTS, start=1):
            group[index] += getattr(row, name) or Decimal(0)
    return {key: tuple(value) for key, value in sums.items()}


def _rollup_groups(workspace, grouping) -> dict:
    """The rollup summed by the database per ``grouping``."""
    rollups = SpendRollup.objects.filter(workspace=workspace)
    sums = {"n": Sum("events"), **{f"s_{name}": Sum(name) for name in AMOUNTS}}
    if not grouping:
        total = rollups.aggregate(**sums)
        return {} if total["n"] is None else {(): (total["n"], *_amounts(total))}
    rows = rollups.values(*grouping).annotate(**sums).order_by()
    return {
        tuple(row[name] for name in grouping): (row["n"], *(row[f"s_{n}"] for n in AMOUNTS))
        for row in rows
    }


def _ledger_sql_groups(workspace, grouping) -> dict:
    """The settled ledger summed by the database per ``grouping`` (not by hour: the ledger
    has no hour column; the hour groupings are checked against the rows summed here)."""
    settled = UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED)
    sums = {"n": Count("id"), **{f"s_{name}": Sum(name) for name in AMOUNTS}}
    if not grouping:
        total = settled.aggregate(**sums)
        return {} if not total["n"] else {(): (total["n"], *_amounts(total))}
    rows = settled.values(*grouping).annotate(**sums).order_by()
    nullable = ("user_id", "api_key_id")  # none is 0 in the rollup
    return {
        tuple(row[name] or 0 if name in nullable else row[name] for name in grouping): (
            row["n"],
            *_amounts(row),
        )
        for row in rows
    }


def _amounts(row) -> tuple:
    return tuple(row[f"s_{name}"] or Decimal(0) for name in AMOUNTS)


def _rows(workspace) -> set[tuple]:
    return set(
        SpendRollup.objects.filter(workspace=workspace).values_list(*DIMENSIONS, "events", *AMOUNTS)
    )


def _day_rows(workspace) -> set[tuple]:
    return set(
        SpendDay.objects.filter(workspace=workspace).values_list(
            "day", "dimension", "value", "events", *AMOUNTS
        )
    )


def _ledger_days(settled) -> set[tuple]:
    """The settled rows summed here per UTC day and each of SpendDay's dimensions."""
    sums = defaultdict(lambda: [0] + [Decimal(0)] * len(AMOUNTS))
    for row in settled:
        day = row.created_at.astimezone(UTC).date()
        for dimension, attname in DAY_DIMENSIONS.items():
            raw = getattr(row, attname) if attname else ""
            total = sums[(day, dimension.value, "" if raw is None else str(raw))]
            total[0] += 1
            for i, name in enumerate(AMOUNTS, start=1):
                total[i] += getattr(row, name) or 0
    return {(*key, *amounts) for key, amounts in sums.items()}


def _check(workspace) -> None:
    settled = list(UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED))
    for grouping in GROUPINGS:
        expected = _ledger_groups(settled, grouping)
        assert _rollup_groups(workspace, grouping) == expected, grouping
        if "hour" not in grouping:
            assert _ledger_sql_groups(workspace, grouping) == expected, grouping
    live = _rows(workspace)
    live_days = _day_rows(workspace)
    assert live_days == _ledger_days(settled)  # the daily rollup, per dimension
    assert rollup_rebuild(workspace=workspace) == len(live)
    assert _rows(workspace) == live
    assert _day_rows(workspace) == live_days
    # Shadow cost: a local row's is its units at the ElevenLabs rate card; never charged.
    for row in UsageEvent.objects.filter(workspace=workspace):
        if row.engine != "local":
            assert row.shadow_credits is None
            continue
        rate = services.rate_for(workspace, row.capability, row.model_id, "elevenlabs")
        units = row.units if row.status == UsageStatus.SETTLED else row.estimated_units
        if row.status in (UsageStatus.SETTLED, UsageStatus.RESERVED):
            assert row.shadow_credits == services.credits_for(rate, units), row.pk
        assert (row.credits or 0, row.estimated_credits) == (0, 0)
    start = services.period_start(services.plan_for(workspace))
    in_period = UsageEvent.objects.filter(workspace=workspace, created_at__gte=start)
    charged = sum((row.charged for row in in_period), Decimal(0))
    assert services.workspace_usage(workspace=workspace) == charged


def _clean(workspace) -> None:
    UsageEvent.objects.all().delete()
    SpendRollup.objects.all().delete()
    SpendDay.objects.all().delete()
    RateCard.objects.filter(workspace=workspace).delete()


def _override(workspace, owner, rate) -> None:
    if rate is not None:
        RateCard.objects.create(
            workspace=workspace, capability="tts", model_id="", unit="character",
            credits_per_unit=Decimal(rate), updated_by=owner,
        )  # fmt: skip


@pytest.fixture
def people(workspace, owner, member):
    third = make_user("third@example.com", name="Tess Third")
    add_member(workspace, third, "member")
    Budget.objects.create(workspace=workspace, user=third, limit_credits=Decimal(10**9))
    Plan.objects.update_or_create(
        workspace=workspace, defaults={"tier": "creator", "price_per_credit": Decimal("0.00022")}
    )
    return [owner, member, third]


@settings(
    max_examples=int(os.environ.get("ROLLUP_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ledger=ledgers)
def test_the_rollup_sums_the_settled_ledger_for_every_grouping(workspace, owner, people, ledger):
    _clean(workspace)
    _override(workspace, owner, ledger["override"])
    for one in ledger["calls"]:
        _run(one, workspace, people)
    _check(workspace)


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=int(os.environ.get("ROLLUP_EXAMPLES_TX", 15)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ledger=ledgers)
def test_outside_a_transaction_as_the_api_meters_too(workspace, owner, people, ledger):
    """The gateway reserves and settles outside a transaction (on PostgreSQL the two-trip
    reservation and the one-statement settle): the same property holds."""
    _clean(workspace)
    _override(workspace, owner, ledger["override"])
    for one in ledger["calls"]:
        _run(one, workspace, people)
    _check(workspace)
