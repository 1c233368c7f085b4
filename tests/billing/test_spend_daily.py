"""The explorer's daily path equals its hourly path, exactly.

An unfiltered view sums the daily rollup (``SpendDay``, UTC days) and corrects the hours
whose bucket in the viewer's zone is not their UTC day's noon's from the hourly rollup
(``spend._sums_daily``); a filtered view sums the hourly rollup alone. Both must give the
same table to the last Decimal place, in every zone (UTC, Berlin across its DST changes,
New York, Tokyo, Auckland across its own), period and grouping, over ranges that start and
end anywhere. Checked on random ledgers (Hypothesis) and on a dense one: a call every hour
around the DST changes. ``SpendDay`` itself equals the settled ledger per dimension, the
rebuild equals the live settle path, and the data migration 0005 fills both rollups.
"""

import importlib
import itertools
import os
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.db.models import Count, Sum
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.billing import services
from apps.billing.models import SpendDay, SpendRollup, UsageEvent, UsageStatus
from apps.billing.rollup import DAY_DIMENSIONS, rollup_rebuild
from apps.billing.spend import DIMENSIONS, SpendQuery, daily_plan, spend_table

ZONES = [
    ZoneInfo(name)
    for name in ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Pacific/Auckland")
]
GROUPS = ["", *DIMENSIONS]
START = datetime(2025, 3, 1, tzinfo=UTC)  # Berlin changes on 30 March, New York on 9 March,
SPAN_DAYS = 45  # Auckland on 6 April (all inside START + SPAN_DAYS)
VALUES = {
    "capability": ["tts", "stt", "music"],
    "model_id": ["eleven_multilingual_v2", "eleven_v3", ""],
    "voice_id": ["voice-a", "voice-b", ""],
    "project": ["", "p-one", "p-two"],
    "source": ["ui", "api", "job"],
    "engine": ["elevenlabs", "local"],
    "api_key_id": [None, 7, 9],
}


def _event(workspace, users, at: datetime, pick: dict, status=UsageStatus.SETTLED):
    """One ledger row at ``at`` (written directly: this file checks the explorer's sums, the
    settle path is ``test_rollup_property``'s), amounts with every decimal place used."""
    n = pick["n"]
    credits = Decimal(n) / Decimal(8) + Decimal("0.001") * (n % 7)
    local = pick["engine"] == "local"
    event = UsageEvent.objects.create(
        workspace=workspace,
        user=users[pick["user"]] if pick["user"] is not None else None,
        api_key_id=pick["api_key_id"],
        source=pick["source"],
        capability=pick["capability"],
        engine=pick["engine"],
        model_id=pick["model_id"],
        voice_id=pick["voice_id"],
        project=pick["project"],
        unit="character",
        estimated_units=credits,
        units=credits,
        estimated_credits=credits,
        credits=Decimal(0) if local or status != UsageStatus.SETTLED else credits,
        money=Decimal(0) if local else (credits * Decimal("0.000221")).quantize(Decimal("1e-6")),
        shadow_credits=credits if local else None,
        request_id=uuid.uuid4().hex,
        idempotency_key=uuid.uuid4().hex,
        status=status,
    )
    UsageEvent.objects.filter(pk=event.pk).update(created_at=at)
    return event


def _table(query, workspace, *, hourly: bool):
    table = spend_table(query, workspace=workspace, hourly=hourly)
    return {
        "rows": {r.value: (r.cells, r.credits, r.money, r.shadow, r.events) for r in table.rows},
        "order": [r.value for r in table.rows],
        "columns": table.column_totals,
        "shadow": table.shadow_by_bucket,
        "totals": (table.credits, table.money, table.shadow, table.events),
    }


def _in_range_credits(workspace, query) -> Decimal:
    """What a view covers, from the ledger: settled rows whose UTC hour starts in the range."""
    total = Decimal(0)
    for row in UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED):
        hour = row.created_at.replace(minute=0, second=0, microsecond=0)
        if query.start <= hour < query.end:
            total += row.credits
    return total


def _assert_same(query, workspace) -> None:
    daily = _table(query, workspace, hourly=False)
    hourly = _table(query, workspace, hourly=True)
    where = (query.zone.key, query.period, query.group, query.start_date, query.end_date)
    assert daily == hourly, where
    assert daily["totals"][0] == _in_range_credits(workspace, query), where


@pytest.fixture
def users(workspace, owner, manager, member):
    return [owner, manager, member]


views = st.fixed_dictionaries(
    {
        "zone": st.sampled_from(ZONES),
        "period": st.sampled_from(["day", "week", "month"]),
        "group": st.sampled_from(GROUPS),
        "measure": st.sampled_from(["credits", "money"]),
        "first": st.integers(min_value=-3, max_value=SPAN_DAYS),
        "days": st.integers(min_value=1, max_value=SPAN_DAYS + 6),
    }
)
calls = st.lists(
    st.fixed_dictionaries(
        {
            "minute": st.integers(min_value=0, max_value=SPAN_DAYS * 24 * 60 - 1),
            "second": st.integers(min_value=0, max_value=59),
            "user": st.sampled_from([0, 1, 2, None]),
            "status": st.sampled_from([UsageStatus.SETTLED] * 4 + [UsageStatus.REFUNDED]),
            "n": st.integers(min_value=1, max_value=10_000),
            **{name: st.sampled_from(values) for name, values in VALUES.items()},
        }
    ),
    max_size=30,
)


@settings(
    max_examples=int(os.environ.get("SPEND_DAILY_EXAMPLES", 40)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ledger=calls, chosen=st.lists(views, min_size=1, max_size=6))
def test_the_daily_path_equals_the_hourly_path_on_random_ledgers(workspace, users, ledger, chosen):
    UsageEvent.objects.filter(workspace=workspace).delete()
    for call in ledger:
        at = START + timedelta(minutes=call["minute"], seconds=call["second"])
        _event(workspace, users, at, call, status=call["status"])
    rollup_rebuild(workspace)
    for view in chosen:
        start_date = START.date() + timedelta(days=view["first"])
        query = SpendQuery(
            zone=view["zone"],
            period=view["period"],
            group=view["group"],
            measure=view["measure"],
            start_date=start_date,
            end_date=start_date + timedelta(days=view["days"] - 1),
        )
        _assert_same(query, workspace)


def test_the_daily_path_equals_the_hourly_path_around_every_dst_change(workspace, users):
    """A call every hour (at a quarter past, values cycling) from 6 to 11 March and from 27
    March to 8 April 2025: New York's, Berlin's and Auckland's changes and a month's edge;
    every zone, period and grouping over ranges that begin and end on those days."""
    hours = [datetime(2025, 3, 6, tzinfo=UTC) + timedelta(hours=h) for h in range(5 * 24)]
    hours += [datetime(2025, 3, 27, tzinfo=UTC) + timedelta(hours=h) for h in range(12 * 24)]
    for n, hour in enumerate(hours):
        pick = {name: values[n % len(values)] for name, values in VALUES.items()}
        _event(workspace, users, hour + timedelta(minutes=15), {**pick, "user": n % 3, "n": n + 1})
    rollup_rebuild(workspace)
    ranges = [
        (date(2025, 3, 7), date(2025, 3, 10)),
        (date(2025, 3, 8), date(2025, 3, 9)),
        (date(2025, 3, 28), date(2025, 4, 7)),
        (date(2025, 3, 30), date(2025, 3, 30)),
        (date(2025, 4, 6), date(2025, 4, 6)),
        (date(2025, 3, 1), date(2025, 4, 30)),
    ]
    for zone, period, group, (first, last) in itertools.product(
        ZONES, ["day", "week", "month"], ["", "member", "voice", "key"], ranges
    ):
        query = SpendQuery(zone=zone, period=period, group=group, start_date=first, end_date=last)
        _assert_same(query, workspace)


def test_the_plan_corrects_only_the_hours_a_zone_needs():
    """UTC needs no hourly correction; Berlin by day the hour(s) after local midnight of each
    UTC day (one in winter, two in summer) and the range's edge hours; by month only those."""
    utc = SpendQuery(
        zone=ZoneInfo("UTC"), period="day", start_date=date(2025, 3, 1), end_date=date(2025, 3, 31)
    )
    plan = daily_plan(utc, _buckets(utc))
    assert (len(plan.days), len(plan.hours)) == (31, 0)
    berlin = SpendQuery(
        zone=ZoneInfo("Europe/Berlin"),
        period="day",
        start_date=date(2025, 3, 28),
        end_date=date(2025, 3, 31),
    )
    plan = daily_plan(berlin, _buckets(berlin))
    # [27 Mar 23:00 UTC, 31 Mar 22:00 UTC): whole UTC days 28-30 March; the edge hours
    # 27 Mar 23:00 and 31 Mar 00:00-21:00; inside, 23:00 on the 28th and 29th (winter) and
    # 22:00-23:00 on the 30th (summer from 01:00 UTC that day)
    assert sorted(plan.days) == [date(2025, 3, 28), date(2025, 3, 29), date(2025, 3, 30)]
    inside = sorted(h for h in plan.hours if plan.hours[h][1] is not None)
    assert inside == [
        datetime(2025, 3, 28, 23, tzinfo=UTC),
        datetime(2025, 3, 29, 23, tzinfo=UTC),
        datetime(2025, 3, 30, 22, tzinfo=UTC),
        datetime(2025, 3, 30, 23, tzinfo=UTC),
    ]
    assert len(plan.hours) == 4 + 1 + 22
    month = SpendQuery(
        zone=ZoneInfo("Europe/Berlin"),
        period="month",
        start_date=date(2025, 1, 1),
        end_date=date(2025, 12, 31),
    )
    plan = daily_plan(month, _buckets(month))
    # the edges (31 Dec 2024 23:00 UTC; 31 Dec 2025 00:00-22:00 UTC, the end being 23:00)
    # and one hour (winter) or two (summer) at each of the 11 month changes inside the year
    edges = [h for h, (_, noon) in plan.hours.items() if noon is None]
    assert len(edges) == 1 + 23
    assert len(plan.hours) - len(edges) == 4 * 1 + 7 * 2  # Feb, Mar, Nov, Dec start in winter


def _buckets(query):
    from apps.billing.spend import buckets_of

    return buckets_of(query)


def test_an_unfiltered_view_costs_two_queries_for_its_sums(workspace, users):
    for n in range(30):
        pick = {name: values[n % len(values)] for name, values in VALUES.items()}
        at = START + timedelta(hours=n * 7)
        _event(workspace, users, at, {**pick, "user": n % 3, "n": n + 1})
    rollup_rebuild(workspace)
    query = SpendQuery(
        zone=ZoneInfo("America/New_York"),
        period="week",
        group="capability",
        start_date=date(2025, 3, 1),
        end_date=date(2025, 3, 31),
    )
    with CaptureQueriesContext(connection) as captured:
        spend_table(query, workspace=workspace, hourly=False)
    assert len(captured) == 2  # the days, the hours (capabilities need no naming query)
    _assert_same(query, workspace)


# --- SpendDay itself ---------------------------------------------------------------------


def _day_rows(workspace) -> set[tuple]:
    return set(
        SpendDay.objects.filter(workspace=workspace).values_list(
            "day", "dimension", "value", "events", "units", "credits", "money", "shadow_credits"
        )
    )


def _ledger_days(workspace) -> set[tuple]:
    """The settled ledger summed per UTC day and each dimension's value, here in Decimal."""
    sums = defaultdict(lambda: [0, Decimal(0), Decimal(0), Decimal(0), Decimal(0)])
    for row in UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED):
        day = row.created_at.astimezone(UTC).date()
        for dimension, attname in DAY_DIMENSIONS.items():
            raw = getattr(row, attname) if attname else ""
            value = "" if raw is None else str(raw)
            total = sums[(day, dimension.value, value)]
            total[0] += 1
            total[1] += row.units or 0
            total[2] += row.credits or 0
            total[3] += row.money
            total[4] += row.shadow_credits or 0
    return {(*key, *amounts) for key, amounts in sums.items()}


def test_spend_day_equals_the_settled_ledger_per_dimension_live_and_rebuilt(workspace, users):
    """Through the real settle path (meter_reserve + meter_settle, a refund, a settle at the
    provider's cost) at times across UTC midnight: the live SpendDay rows equal the ledger's
    sums per dimension, and equal what ``rollup_rebuild`` writes."""
    services.plan_for(workspace)
    now = datetime.now(UTC)
    for n in range(12):
        pick = {name: values[n % len(values)] for name, values in VALUES.items()}
        reservation = services.meter_reserve(
            workspace=workspace,
            user=users[n % 3],
            capability="tts",
            engine=pick["engine"],
            model_id=pick["model_id"],
            units=Decimal(100 + n),
            source=pick["source"],
            voice_id=pick["voice_id"],
            api_key_id=pick["api_key_id"],
            project=pick["project"],
        )
        if n % 5 == 4:
            services.meter_refund(event=reservation.event, note="test")
        else:
            services.meter_settle(
                event=reservation.event,
                units=Decimal(90 + n),
                upstream_credits=Decimal(80 + n) if n % 3 == 0 else None,
            )
    live = _day_rows(workspace)
    assert live == _ledger_days(workspace)
    assert {row[1] for row in live} == {d.value for d in DAY_DIMENSIONS}
    totals = SpendDay.objects.filter(workspace=workspace, dimension="total").aggregate(
        n=Sum("events"), credits=Sum("credits")
    )
    ledger = UsageEvent.objects.filter(workspace=workspace, status=UsageStatus.SETTLED).aggregate(
        n=Count("id"), credits=Sum("credits")
    )
    assert totals == ledger
    assert now.date() in {row[0] for row in live}
    rollup_rebuild(workspace)
    assert _day_rows(workspace) == live


def test_the_data_migration_fills_both_rollups_from_the_ledger(workspace, users):
    """Migration 0005's function (what a deployment runs once): a ledger settled before the
    rollups existed gets both, equal to the ledger."""
    for n in range(20):
        pick = {name: values[n % len(values)] for name, values in VALUES.items()}
        _event(workspace, users, START + timedelta(hours=n * 5), {**pick, "user": n % 3, "n": n})
    SpendRollup.objects.all().delete()
    SpendDay.objects.all().delete()
    migration = importlib.import_module("apps.billing.migrations.0005_spend_day_fill")
    migration.fill(django_apps, SimpleNamespace(connection=connection))
    assert _day_rows(workspace) == _ledger_days(workspace)
    hourly = SpendRollup.objects.filter(workspace=workspace).aggregate(n=Sum("events"))
    assert hourly["n"] == 20
    rebuilt_hours = set(SpendRollup.objects.values_list("hour", "user_id", "credits"))
    rollup_rebuild()
    assert set(SpendRollup.objects.values_list("hour", "user_id", "credits")) == rebuilt_hours
