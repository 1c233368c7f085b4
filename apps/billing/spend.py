"""The spend explorer's queries: the hourly rollup summed per bucket (day, week or month in the
viewer's time zone) and per value of one dimension, the ledger rows behind a cell, and the
query string that says all of it (a shareable URL).

Everything is summed in SQL over ``SpendRollup`` (one query for the whole table and chart,
whatever the number of rows); the table's totals are Python sums of those same ``Decimal``
results, so the chart, the table and the CSV agree to the last credit.

Buckets are cut with ``Trunc(..., tzinfo=zone)`` on the rollup's UTC hour. The rollup keeps
whole UTC hours, so a bucket is exact in every zone whose offset is a whole number of hours
(all of Europe and the Americas, most of Asia). In a half- or quarter-hour zone (India
+5:30, Nepal +5:45, Newfoundland −3:30…) the calls of the 30 or 45 minutes around local
midnight fall in the bucket their UTC hour starts in: totals over the whole range are still
exact, a day's edge may be off by those minutes. The drill-down reads the ledger rows at
their exact time, so there a cell may differ by those edge minutes in such a zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.db.models import Case, DateTimeField, F, IntegerField, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Trunc, TruncDate

from apps.workspaces.models import Membership, User

from . import labels
from .models import SpendDay, SpendDimension, SpendRollup, UsageEvent, UsageSource, UsageStatus
from .rates import CAPABILITIES

PERIODS = {"day": "Day", "week": "Week", "month": "Month"}
MEASURES = {"credits": "Credits", "money": "Money"}
NONE = "-"  # a filter value meaning "none" (no project, no personal key…)
MAX_DAYS = 731  # the longest range one view sums (two years)
# Per day, a view shows at most a quarter: a year by day is a table of 365 columns per row
# (18,000 cells for 50 members, a 3 MB page no one reads); weeks and months cover longer.
MAX_DAYS_BY_DAY = 92
DEFAULT_DAYS = {"day": 30, "week": 12 * 7, "month": 365}
ENGINES = {"local": "Local draft", "elevenlabs": "Final (ElevenLabs)"}
# A filter value: what callers chose through /v1 (a voice id with a space, a model id that
# starts with "="), so any text of at most 120 characters without control characters.
_TOKEN = re.compile(r"^[^\x00-\x1f\x7f]{1,120}$")
_ID = re.compile(r"^[0-9]{1,18}$")  # a row id (bigint): ASCII digits, never "²"


@dataclass(frozen=True)
class Dimension:
    key: str  # in the URL
    label: str
    rollup: str  # the SpendRollup column
    event: str  # the UsageEvent column
    numeric: bool = False  # member and key: ids (0 in the rollup, NULL in the ledger: none)


DIMENSIONS: dict[str, Dimension] = {
    d.key: d
    for d in (
        Dimension("member", "Member", "user_id", "user_id", numeric=True),
        Dimension("project", "Project", "project", "project"),
        Dimension("capability", "Capability", "capability", "capability"),
        Dimension("model", "Model", "model_id", "model_id"),
        Dimension("voice", "Voice", "voice_id", "voice_id"),
        Dimension("key", "Personal key", "api_key_id", "api_key_id", numeric=True),
        Dimension("source", "Source", "source", "source"),
        Dimension("engine", "Engine", "engine", "engine"),
    )
}


class SpendQueryError(ValueError):
    """A query string that does not parse: ``errors`` maps each field to what is wrong."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


@dataclass
class SpendQuery:
    """One view of the explorer: what the query string says, checked."""

    zone: ZoneInfo
    period: str = "day"
    group: str = "member"  # a DIMENSIONS key, or "" for one total row
    measure: str = "credits"
    start_date: date | None = None  # inclusive, in ``zone``
    end_date: date | None = None  # inclusive, in ``zone``
    filters: dict[str, list[str]] = field(default_factory=dict)
    forced_member: int | None = None  # a member without the manager role sees only their own

    @property
    def start(self) -> datetime:
        return datetime.combine(self.start_date, time(), tzinfo=self.zone)

    @property
    def end(self) -> datetime:  # exclusive
        return datetime.combine(self.end_date + timedelta(days=1), time(), tzinfo=self.zone)

    def params(self, **override) -> list[tuple[str, str]]:
        """The query string's pairs (``override``: key → value, None to leave a key out)."""
        values: dict[str, object] = {
            "period": self.period,
            "by": self.group or "none",
            "measure": self.measure,
            "from": self.start_date.isoformat(),
            "to": self.end_date.isoformat(),
        }
        for key in DIMENSIONS:
            values[key] = list(self.filters.get(key, []))
        values.update(override)
        pairs = []
        for key, value in values.items():
            if value is None:
                continue
            for item in value if isinstance(value, list) else [value]:
                pairs.append((key, str(item)))
        return pairs

    def query_string(self, **override) -> str:
        return urlencode(self.params(**override))


def _parse_date(raw: str, name: str, errors: dict) -> date | None:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors[name] = f"“{raw[:40]}” is not a date: use YYYY-MM-DD."
        return None


def spend_query_parse(
    params, *, workspace, zone: ZoneInfo, membership, today: date, table: bool = False
):
    """The ``SpendQuery`` of a query string (a ``QueryDict``), or ``SpendQueryError``.

    A member without the manager role is held to their own rows: whatever member filter the
    URL asks for is replaced by themselves (a shared link shows them their part, never
    another member's). For managers a member id outside the workspace is an error. ``table``:
    the view is drawn per bucket (the page, the table's CSV): per day, at most
    ``MAX_DAYS_BY_DAY`` days (the ledger rows of a longer range are still listed)."""
    errors: dict[str, str] = {}
    period = params.get("period") or "day"
    if period not in PERIODS:
        errors["period"] = f"Choose one of: {', '.join(PERIODS)}."
    group = params.get("by") or ("member" if membership.can_manage else "capability")
    if group == "none":
        group = ""
    elif group not in DIMENSIONS:
        errors["by"] = f"“{group[:40]}” is no dimension: choose one of {', '.join(DIMENSIONS)}."
    measure = params.get("measure") or "credits"
    if measure not in MEASURES:
        errors["measure"] = "Choose credits or money."
    end_date = _parse_date(params["to"], "to", errors) if params.get("to") else today
    if end_date is not None and not 2000 <= end_date.year <= 2999:
        errors["to"] = "Choose dates between the years 2000 and 2999."
        end_date = None
    start_date = None
    if params.get("from"):
        start_date = _parse_date(params["from"], "from", errors)
    elif end_date is not None and period in DEFAULT_DAYS:
        start_date = end_date - timedelta(days=DEFAULT_DAYS[period] - 1)
    if start_date and end_date:
        if start_date > end_date:
            errors["from"] = "The start is after the end."
        elif (end_date - start_date).days >= MAX_DAYS:
            errors["from"] = f"A view covers at most {MAX_DAYS} days."
        elif table and period == "day" and (end_date - start_date).days >= MAX_DAYS_BY_DAY:
            errors["from"] = (
                f"Per day, a view covers at most {MAX_DAYS_BY_DAY} days: choose per week or "
                "per month for a longer range, or shorter dates."
            )
        elif start_date.year < 2000 or end_date.year > 2999:
            errors["from"] = "Choose dates between the years 2000 and 2999."
    filters: dict[str, list[str]] = {}
    for key, dim in DIMENSIONS.items():
        raw = [v.strip() for v in params.getlist(key) if v.strip()]
        if not raw:
            continue
        problem = None
        for value in raw:
            if value == NONE:
                continue
            if dim.numeric and not _ID.match(value):
                problem = f"“{value[:40]}” is not an id."
            elif key == "capability" and value not in CAPABILITIES:
                problem = f"“{value[:40]}” is no capability."
            elif key == "source" and value not in UsageSource.values:
                problem = f"Choose one of: {', '.join(UsageSource.values)}."
            elif not _TOKEN.match(value):
                problem = f"“{value[:40]}” is not a valid {dim.label.lower()}."
        if problem:
            errors[key] = problem
        else:
            filters[key] = sorted(set(raw))
    forced = None
    if not membership.can_manage:
        forced = membership.user_id
        filters["member"] = [str(forced)]
    elif "member" in filters and "member" not in errors:
        ids = {int(v) for v in filters["member"] if v != NONE}
        known = set(
            Membership.objects.filter(workspace=workspace, user_id__in=ids).values_list(
                "user_id", flat=True
            )
        )
        missing = ids - known
        if missing:  # someone who left the workspace: their spend is still the workspace's
            missing -= set(
                UsageEvent.objects.filter(workspace=workspace, user_id__in=missing)
                .values_list("user_id", flat=True)
                .distinct()
            )
        if missing:
            errors["member"] = "No such member in this workspace."
    if errors:
        raise SpendQueryError(errors)
    return SpendQuery(
        zone=zone,
        period=period,
        group=group,
        measure=measure,
        start_date=start_date,
        end_date=end_date,
        filters=filters,
        forced_member=forced,
    )


# --- Buckets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    key: date  # its first day, in the viewer's zone
    label: str
    start: date
    end: date  # exclusive


def _bucket_start(day: date, period: str) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def _next(day: date, period: str) -> date:
    if period == "week":
        return day + timedelta(days=7)
    if period == "month":
        return (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return day + timedelta(days=1)


def _bucket_label(day: date, period: str) -> str:
    if period == "week":
        return f"Week of {day:%d %b %Y}"
    if period == "month":
        return f"{day:%B %Y}"
    return f"{day:%a %d %b %Y}"


def buckets_of(query: SpendQuery) -> list[Bucket]:
    """Every bucket of the range, those without spend too (a chart without gaps)."""
    out, day = [], _bucket_start(query.start_date, query.period)
    while day <= query.end_date:
        after = _next(day, query.period)
        out.append(Bucket(day, _bucket_label(day, query.period), day, after))
        day = after
    return out


def bucket_of(query: SpendQuery, raw: str) -> Bucket:
    """The bucket a drill-down's ``bucket=YYYY-MM-DD`` names, or ``SpendQueryError``."""
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise SpendQueryError({"bucket": f"“{raw[:40]}” is not a date: use YYYY-MM-DD."}) from None
    if _bucket_start(day, query.period) != day:
        raise SpendQueryError({"bucket": f"No {query.period} starts on {day.isoformat()}."})
    if not _bucket_start(query.start_date, query.period) <= day <= query.end_date:
        raise SpendQueryError(
            {"bucket": f"{day.isoformat()} is outside the view's dates: pick a cell of the table."}
        )
    after = _next(day, query.period)
    return Bucket(day, _bucket_label(day, query.period), day, after)


# --- The rollup, summed -----------------------------------------------------------------


def _value_filter(dim: Dimension, values: list[str], column: str, *, ledger: bool) -> Q:
    condition = Q()
    for value in values:
        if value == NONE:
            if dim.numeric:
                condition |= Q(**{f"{column}__isnull": True}) if ledger else Q(**{column: 0})
            else:
                condition |= Q(**{column: ""})
        else:
            condition |= Q(**{column: int(value) if dim.numeric else value})
    return condition


def rollup_rows(query: SpendQuery, *, workspace) -> QuerySet:
    """The rollup of ``workspace`` in the range and filters of ``query``."""
    qs = SpendRollup.objects.filter(workspace=workspace, hour__gte=query.start, hour__lt=query.end)
    for key, values in query.filters.items():
        dim = DIMENSIONS[key]
        qs = qs.filter(_value_filter(dim, values, dim.rollup, ledger=False))
    return qs


def ledger_rows(query: SpendQuery, *, workspace, bucket: Bucket | None = None) -> QuerySet:
    """The settled ledger rows behind ``query`` (behind one bucket of it, when given): what
    the rollup sums, row by row (refunded and failed calls count 0 and are left out)."""
    start, end = query.start, query.end
    if bucket is not None:
        start = max(start, datetime.combine(bucket.start, time(), tzinfo=query.zone))
        end = min(end, datetime.combine(bucket.end, time(), tzinfo=query.zone))
    qs = UsageEvent.objects.filter(
        workspace=workspace,
        status=UsageStatus.SETTLED,
        created_at__gte=start,
        created_at__lt=end,
    )
    for key, values in query.filters.items():
        dim = DIMENSIONS[key]
        qs = qs.filter(_value_filter(dim, values, dim.event, ledger=True))
    return qs.order_by("created_at", "id")


@dataclass
class Row:
    value: str  # the dimension's value as the URL says it (NONE for none)
    label: str
    cells: list[Decimal]  # per bucket, in the measure
    credits: Decimal = Decimal(0)
    money: Decimal = Decimal(0)
    shadow: Decimal = Decimal(0)
    events: int = 0


@dataclass
class SpendTable:
    """The table and the chart of one view: the same numbers, summed once."""

    query: SpendQuery
    buckets: list[Bucket]
    rows: list[Row]
    column_totals: list[Decimal]  # per bucket, in the measure
    shadow_by_bucket: list[Decimal]
    credits: Decimal = Decimal(0)
    money: Decimal = Decimal(0)
    shadow: Decimal = Decimal(0)
    events: int = 0

    @property
    def total(self) -> Decimal:
        return self.money if self.query.measure == "money" else self.credits


def _zero(measure: str) -> Decimal:
    return Decimal("0.000000") if measure == "money" else Decimal("0.000")


def _key(value) -> str:
    if value is None or value == "" or value == 0:
        return NONE
    return str(value)


_MILLI, _MICRO = Decimal("0.001"), Decimal("0.000001")
_SUMS = {
    "s_credits": Sum("credits"),
    "s_money": Sum("money"),
    "s_shadow": Sum("shadow_credits"),
    "s_events": Sum("events"),
}


def _sums_hourly(query: SpendQuery, workspace, buckets, dim, add) -> None:
    """Every hourly rollup row of the range, summed per bucket (``Trunc`` in the viewer's
    zone) and value in one query."""
    index = {b.key: i for i, b in enumerate(buckets)}
    columns = ["bucket"] + ([dim.rollup] if dim else [])
    sums = (
        rollup_rows(query, workspace=workspace)
        .annotate(
            bucket=Trunc("hour", query.period, tzinfo=query.zone, output_field=DateTimeField())
        )
        .values(*columns)
        .annotate(**_SUMS)
        .order_by(*columns)
        .values_list(*columns, *_SUMS)
    )
    for item in sums:
        i = index.get(item[0].astimezone(query.zone).date())
        if i is None:  # cannot happen: the range starts and ends on bucket edges it covers
            continue
        value = _key(item[1]) if dim else ""
        add(i, value, *item[-4:])


@dataclass
class DailyPlan:
    """How an unfiltered view is summed from the daily rollup (UTC days) and the hourly one.

    ``days``: the UTC days wholly inside the range, each with the bucket of its noon in the
    viewer's zone (where the day's ``SpendDay`` sums go). ``hours``: the UTC hours of the
    range whose sums must be read from ``SpendRollup`` — every hour of a day only partly in
    the range (at its edges), with its bucket and no day to take it from, and every hour of a
    whole day whose own bucket is not its noon's, with both (added to its own, taken from
    the noon's). In UTC nothing needs correcting; in Berlin a day by day view corrects the
    one or two hours after local midnight, New York four or five a day, a view by month only
    the hours around each month's edge."""

    days: dict[date, int]  # UTC day → bucket index
    hours: dict[datetime, tuple[int, int | None]]  # UTC hour → (its bucket, its noon's)


def daily_plan(query: SpendQuery, buckets: list[Bucket]) -> DailyPlan:
    index = {b.key: i for i, b in enumerate(buckets)}
    zone, period = query.zone, query.period

    def bucket(moment: datetime) -> int:
        return index[_bucket_start(moment.astimezone(zone).date(), period)]

    start, end = query.start.astimezone(UTC), query.end.astimezone(UTC)
    first_day = start.date() if start.time() == time() else start.date() + timedelta(days=1)
    days, hours, hour = {}, {}, timedelta(hours=1)
    day = first_day
    while day < end.date():  # a day ends (next midnight) at or before the range's end
        midnight = datetime.combine(day, time(), tzinfo=UTC)
        noon = days[day] = bucket(midnight + 12 * hour)
        # Local time only moves forward through a day, so its hours' buckets do too: when
        # its first and last hours are in the noon's bucket, all of them are.
        if bucket(midnight) != noon or bucket(midnight + 23 * hour) != noon:
            for h in range(24):
                own = bucket(midnight + h * hour)
                if own != noon:
                    hours[midnight + h * hour] = (own, noon)
        day += timedelta(days=1)
    # The edges: the hours of the range (those that start in it, as the hourly path reads
    # them) on a UTC day only partly inside.
    moment = start.replace(minute=0, second=0, microsecond=0)
    if moment < start:
        moment += hour
    while moment < end:
        if moment.date() in days:
            moment = datetime.combine(moment.date() + timedelta(days=1), time(), tzinfo=UTC)
            continue
        hours[moment] = (bucket(moment), None)
        moment += hour
    return DailyPlan(days=days, hours=hours)


def _sums_daily(query: SpendQuery, workspace, buckets, dim, add) -> None:
    """An unfiltered view: the daily rollup of the range's whole UTC days, each day summed
    into its noon's bucket (grouped in SQL per bucket when buckets are longer than a day),
    and the hours of ``DailyPlan.hours`` from the hourly rollup (one query, summed per pair
    of buckets they move between) moved to their own buckets. Exactly the sums of
    ``_sums_hourly``: every hour of the range is counted once, in its own bucket."""
    plan = daily_plan(query, buckets)
    if plan.days:
        days = SpendDay.objects.filter(
            workspace=workspace,
            dimension=query.group or SpendDimension.TOTAL,
            day__gte=min(plan.days),
            day__lte=max(plan.days),
        )
        if query.period == "day":
            by = F("day")
        else:  # the bucket's index: a step function of the day, one step per bucket edge
            steps, ordered = [], sorted(plan.days.items())
            for (_, before), (day, after) in zip(ordered, ordered[1:], strict=False):
                if after != before:
                    steps.append(When(day__lt=day, then=Value(before)))
            by = Case(*steps, default=Value(ordered[-1][1]), output_field=IntegerField())
        sums = (
            days.annotate(by=by)
            .values("by", "value")
            .annotate(**_SUMS)
            .order_by()
            .values_list("by", "value", *_SUMS)
        )
        for item in sums:
            i = plan.days[item[0]] if query.period == "day" else item[0]
            add(i, _key(item[1]) if dim else "", *item[2:])
    if plan.hours:
        # Summed in SQL per UTC day and own bucket (``Trunc`` in the viewer's zone): a day by
        # day view in New York moves five hours a day, all between the same two days. An
        # hour on a day of ``plan.days`` is taken from its noon's bucket; an edge hour is not.
        columns = ["own", "utc_day"] + ([dim.rollup] if dim else [])
        sums = (
            SpendRollup.objects.filter(workspace=workspace, hour__in=list(plan.hours))
            .annotate(
                own=Trunc("hour", query.period, tzinfo=query.zone, output_field=DateTimeField()),
                utc_day=TruncDate("hour", tzinfo=UTC),
            )
            .values(*columns)
            .annotate(**_SUMS)
            .order_by()
            .values_list(*columns, *_SUMS)
        )
        index = {b.key: i for i, b in enumerate(buckets)}
        for item in sums:
            own = index[item[0].astimezone(query.zone).date()]
            noon = plan.days.get(item[1])
            value = _key(item[2]) if dim else ""
            add(own, value, *item[-4:])
            if noon is not None:
                add(noon, value, *item[-4:], sign=-1)


def spend_table(query: SpendQuery, *, workspace, hourly: bool | None = None) -> SpendTable:
    """Sum the spend per bucket × value of the grouping dimension, then lay it out (rows
    sorted by what they spent, largest first) and name the values (at most one query per
    named dimension).

    A view without filters reads the daily rollup and a few hours of the hourly one
    (``_sums_daily``: two queries); a filtered view sums the hourly rollup (``_sums_hourly``:
    one query — a member's filter, a member's own view included, reads through the
    (workspace, user_id, hour) index only that member's rows, a few thousand a year; other
    filters read every hourly row of the range). Both give exactly the same sums (``hourly``
    forces one or the other: tests and the bench compare them)."""
    buckets = buckets_of(query)
    dim = DIMENSIONS.get(query.group)
    zero = _zero(query.measure)
    rows: dict[str, Row] = {}
    shadow_by_bucket = [Decimal("0.000") for _ in buckets]

    def add(i: int, value: str, credits, money, shadow, events: int, sign: int = 1) -> None:
        row = rows.get(value)
        if row is None:
            row = rows[value] = Row(value=value, label=value, cells=[zero] * len(buckets))
        # Quantized to the columns' places: SQLite sums decimals as floats (…9999 → exact
        # again); on PostgreSQL the sums are exact and this changes nothing.
        credits = (credits or Decimal(0)).quantize(_MILLI)
        money = (money or Decimal(0)).quantize(_MICRO)
        shadow, events = (shadow or Decimal(0)).quantize(_MILLI), events or 0
        if sign < 0:
            credits, money, shadow, events = -credits, -money, -shadow, -events
        row.cells[i] += money if query.measure == "money" else credits
        row.credits += credits
        row.money += money
        row.shadow += shadow
        row.events += events
        shadow_by_bucket[i] += shadow

    if hourly or (hourly is None and query.filters):
        _sums_hourly(query, workspace, buckets, dim, add)
    else:
        _sums_daily(query, workspace, buckets, dim, add)
    _name_rows(query, workspace, list(rows.values()))
    measure = "money" if query.measure == "money" else "credits"
    ordered = sorted(rows.values(), key=lambda r: (-getattr(r, measure), r.label.lower()))
    table = SpendTable(
        query=query,
        buckets=buckets,
        rows=ordered,
        column_totals=[sum((r.cells[i] for r in ordered), zero) for i in range(len(buckets))],
        shadow_by_bucket=shadow_by_bucket,
    )
    for row in ordered:
        table.credits += row.credits
        table.money += row.money
        table.shadow += row.shadow
        table.events += row.events
    return table


def _name_rows(query: SpendQuery, workspace, rows: list[Row]) -> None:
    """People-readable labels of the grouping's values."""
    key = query.group
    values = [r.value for r in rows if r.value != NONE]
    if key == "member":
        people = {
            str(u.pk): u.display_name
            for u in User.objects.filter(pk__in=[int(v) for v in values]).only("name", "email")
        }
        names = people
    elif key in ("capability", "source", "engine"):
        names = {
            "capability": CAPABILITIES,
            "source": dict(UsageSource.choices),
            "engine": ENGINES,
        }[key]
    elif key == "key":
        # A deleted key keeps its number. A member names only keys of their own ledger
        # rows: another's key (asked for by id in the URL) stays a number.
        named = values
        if query.forced_member is not None and values:
            named = [
                str(k)
                for k in UsageEvent.objects.filter(
                    workspace=workspace,
                    user_id=query.forced_member,
                    api_key_id__in=[int(v) for v in values],
                )
                .values_list("api_key_id", flat=True)
                .distinct()
            ]
        names = {v: f"Key #{v}" for v in values} | labels.names(workspace, "key", named)
    else:
        names = labels.names(workspace, key, values) if key else {}
    none_label = {
        "": "All spend",
        "member": "No member (deleted or system)",
        "project": "No project",
        "key": "No personal key (the studio)",
        "voice": "No voice",
        "model": "No model",
    }.get(key, "None")
    for row in rows:
        if not key:
            row.label = "All spend"
        elif row.value == NONE:
            row.label = none_label
        else:
            row.label = names.get(row.value, row.value)


def value_label(query: SpendQuery, workspace, key: str, value: str) -> str:
    """The label of one filter value (the drill-down's heading)."""
    row = Row(value=value, label=value, cells=[])
    _name_rows(
        SpendQuery(zone=query.zone, group=key, forced_member=query.forced_member),
        workspace,
        [row],
    )
    return row.label


# --- The drill-down's pages -------------------------------------------------------------


@dataclass
class LedgerPage:
    """One page of ledger rows in (created_at, id) order and the cursors of its
    neighbours (None where there is none): no COUNT, so a deep page costs what the first does."""

    events: list
    earlier: str | None
    later: str | None


def _cursor(event) -> str:
    """A row's place in the order: microseconds since the epoch and the id, URL-safe."""
    moment = event.created_at.astimezone(UTC)
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return f"{micros}-{event.pk}"


_CURSOR = re.compile(r"^([0-9]{1,18})-([0-9]{1,18})$")
_CURSOR_MAX = 32503680000 * 1_000_000  # the year 3000, in microseconds since 1970


def _cursor_parse(raw: str, name: str) -> tuple[datetime, int]:
    found = _CURSOR.match(raw)
    if not found or int(found.group(1)) >= _CURSOR_MAX:
        raise SpendQueryError({name: "This page link is not valid: go back to the first page."})
    micros, pk = int(found.group(1)), int(found.group(2))
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros), pk


def ledger_page(rows: QuerySet, *, after: str = "", before: str = "", size: int = 50):
    """The ``size`` rows of ``rows`` (ordered by created_at, id) after the cursor ``after``,
    or before ``before``, or the first ones: keyset paging that reads one row more than a
    page to know whether another follows (a range condition on the (workspace, created_at)
    or (workspace, user, created_at) index, never an OFFSET or a COUNT of the month)."""
    if after and before:
        raise SpendQueryError({"after": "Give either after or before, not both."})
    if before:
        moment, pk = _cursor_parse(before, "before")
        found = list(
            rows.filter(created_at__lte=moment)
            .filter(Q(created_at__lt=moment) | Q(id__lt=pk))
            .order_by("-created_at", "-id")[: size + 1]
        )
        more, events = len(found) > size, found[:size][::-1]
        return LedgerPage(
            events=events,
            earlier=_cursor(events[0]) if more else None,
            later=_cursor(events[-1]) if events else None,
        )
    if after:
        moment, pk = _cursor_parse(after, "after")
        rows = rows.filter(created_at__gte=moment).filter(Q(created_at__gt=moment) | Q(id__gt=pk))
    found = list(rows[: size + 1])
    events = found[:size]
    return LedgerPage(
        events=events,
        earlier=_cursor(events[0]) if after and events else None,
        later=_cursor(events[-1]) if len(found) > size else None,
    )
