"""Anomaly flags on a workspace's spend: spikes, bulk spend off hours, a key from a new address.

The rules (``anomalies_check`` runs the first two from a periodic task; the third runs where
a personal key authenticates, ``key_address_seen``):

- **spike**: a member's settled credits on a day (in the workspace's time zone) above
  ``k ×`` their baseline, ``k`` = ``SpendSettings.anomaly_factor``. The baseline is the
  median of their daily credits over the 14 days before, days without spend counted as 0.
  When that median is 0 (they spent on 7 days of 14 or fewer) the baseline is the median of
  the days they did spend, so an occasional user is held against their usual working day,
  not against nothing. With no spend at all in the 14 days there is no history: no spike
  is flagged (a member's first day is not an anomaly).
- **off hours**: a member's settled credits in one hour outside the working hours (the
  hour's start in ``time_zone``, a day not in ``work_days`` or an hour outside
  ``[work_start_hour, work_end_hour)``) above ``off_hours_credits``. One flag per member and
  local day; later off-hours spend of that day widens the open flag instead of raising more.
- **new address**: a personal key used from an address it has not been used from before,
  when it has been used from another one (a key's first address is not news).

Each flag is raised once (``AnomalyFlag.key``), tells the managers in-app, links to its
ledger rows (``rows_url``) and is dismissed or acted on by a manager (``anomaly_decide``).
Days are read from the hourly rollup, so a zone whose offset is not whole hours counts an
hour in the day its start falls in.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from apps.workspaces.models import Membership, Role

from .models import (
    AnomalyFlag,
    AnomalyKind,
    AnomalyState,
    KeyAddress,
    Notification,
    SpendRollup,
    SpendSettings,
)

WINDOW_DAYS = 14
CHECK_DAYS = 2  # today and yesterday (local): a run that was missed catches up
HOUR = timedelta(hours=1)
CREDIT = Decimal("0.001")
# A key's address is written again (``last_seen``) at most this often: one statement that
# changes nothing for a busy script's calls.
ADDRESS_TOUCH_EVERY = timedelta(hours=1)
ROWS_PATH = "/billing/spend/rows/"  # the explorer's rows view, until its URL name exists


def spend_settings_for(workspace) -> SpendSettings:
    row, _ = SpendSettings.objects.get_or_create(workspace=workspace)
    return row


def zone_of(spend_settings: SpendSettings):
    try:
        return ZoneInfo(spend_settings.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def rows_url(*, start: datetime, end: datetime, user_id=None, api_key_id=None) -> str:
    """The explorer's ledger rows behind a flag (``billing:spend_rows``): the member
    (``member``), the personal key (``key``) and the days ``from``..``to`` the span
    ``[start, end)`` covers in the active time zone (the viewer's, which the explorer reads
    its days in). Days are the explorer's finest filter: the rows of a flag's hours are
    among those of its days."""
    try:
        path = reverse("billing:spend_rows")
    except NoReverseMatch:
        path = ROWS_PATH
    query = {}
    if user_id:
        query["member"] = user_id
    if api_key_id:
        query["key"] = api_key_id
    last = max(end - timedelta(microseconds=1), start)
    query["from"] = timezone.localdate(start).isoformat()
    query["to"] = timezone.localdate(last).isoformat()
    return f"{path}?{urlencode(query)}"


def flag_rows_url(flag: AnomalyFlag) -> str:
    return rows_url(
        start=flag.starts_at, end=flag.ends_at, user_id=flag.user_id, api_key_id=flag.api_key_id
    )


def _review_url() -> str:
    try:
        return reverse("billing:review_index")
    except NoReverseMatch:
        return ""


def _managers_told(workspace, text: str) -> None:
    managers = Membership.objects.filter(
        workspace=workspace, role__in=[Role.OWNER, Role.MANAGER]
    ).values_list("user_id", flat=True)
    url = _review_url()
    Notification.objects.bulk_create(
        [
            Notification(workspace=workspace, user_id=user_id, text=text[:300], url=url)
            for user_id in managers
        ]
    )


def _raise(workspace, *, key: str, **values) -> AnomalyFlag | None:
    """The flag of ``key``, created and told to the managers; None when it was raised before."""
    try:
        with transaction.atomic():
            flag = AnomalyFlag.objects.create(workspace=workspace, key=key, **values)
    except IntegrityError:
        return None
    _managers_told(workspace, f"Spend anomaly: {flag.detail}")
    return flag


def _local_midnight(day: date, zone) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _names(workspace, user_ids) -> dict[int, str]:
    return {
        m.user_id: m.user.display_name
        for m in Membership.objects.filter(
            workspace=workspace, user_id__in=user_ids
        ).select_related("user")
    }


def anomalies_check(workspace, *, now: datetime | None = None) -> list[AnomalyFlag]:
    """Run the spike and off-hours rules on the last ``CHECK_DAYS`` local days; the new
    flags (one query of the rollup, one insert per new flag)."""
    now = now or timezone.now()
    spend_settings = spend_settings_for(workspace)
    zone = zone_of(spend_settings)
    today = now.astimezone(zone).date()
    checked = [today - timedelta(days=n) for n in range(CHECK_DAYS - 1, -1, -1)]
    since = _local_midnight(checked[0] - timedelta(days=WINDOW_DAYS), zone)
    hourly = (
        SpendRollup.objects.filter(workspace=workspace, hour__gte=since, hour__lte=now)
        .values("user_id", "hour")
        .annotate(total=Sum("credits"))
        .order_by("user_id", "hour")
    )
    daily: dict[int, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    off_hours: dict[tuple[int, date], list[tuple[datetime, Decimal]]] = defaultdict(list)
    work_days = {int(d) for d in spend_settings.work_days if d.isdigit()}
    for row in hourly:
        local = row["hour"].astimezone(zone)
        credits = row["total"] or Decimal(0)
        daily[row["user_id"]][local.date()] += credits
        off = local.weekday() not in work_days or not (
            spend_settings.work_start_hour <= local.hour < spend_settings.work_end_hour
        )
        if off and local.date() in checked and credits > spend_settings.off_hours_credits:
            off_hours[(row["user_id"], local.date())].append((row["hour"], credits))
    names = _names(workspace, list(daily))
    flags = []
    for user_id, days in daily.items():
        if not user_id:
            continue  # no member (a system call): nothing to compare with
        for day in checked:
            flag = _spike(workspace, spend_settings, zone, user_id, names, days, day)
            if flag is not None:
                flags.append(flag)
    for (user_id, day), hours in sorted(off_hours.items()):
        flag = _off_hours(workspace, spend_settings, zone, user_id, names, day, hours)
        if flag is not None:
            flags.append(flag)
    return flags


def spike_baseline(previous: list[Decimal]) -> Decimal | None:
    """The baseline of a day from the member's ``previous`` daily credits (0 for a day
    without spend): their median, or the median of the days with spend when that is 0;
    None with no spend at all (no history)."""
    active = [credits for credits in previous if credits > 0]
    if not active:
        return None
    median = statistics.median(previous)
    return Decimal(median if median > 0 else statistics.median(active))


def _spike(workspace, spend_settings, zone, user_id, names, days, day) -> AnomalyFlag | None:
    spent = days.get(day, Decimal(0))
    if spent <= 0:
        return None
    previous = [days.get(day - timedelta(days=n), Decimal(0)) for n in range(1, WINDOW_DAYS + 1)]
    baseline = spike_baseline(previous)
    if baseline is None or spent <= spend_settings.anomaly_factor * baseline:
        return None
    baseline = baseline.quantize(CREDIT, ROUND_HALF_UP)
    name = names.get(user_id, f"Member {user_id}")
    return _raise(
        workspace,
        key=f"spike:{user_id}:{day.isoformat()}",
        kind=AnomalyKind.SPIKE,
        user_id=user_id,
        starts_at=_local_midnight(day, zone),
        ends_at=_local_midnight(day + timedelta(days=1), zone),
        credits=spent,
        baseline=baseline,
        detail=(
            f"{name} spent {spent:,.0f} credits on {day:%a %-d %b}, more than "
            f"{spend_settings.anomaly_factor.normalize():f}× their usual day of "
            f"{baseline:,.0f}."
        ),
    )


def _off_hours(workspace, spend_settings, zone, user_id, names, day, hours) -> AnomalyFlag | None:
    starts_at, ends_at = hours[0][0], hours[-1][0] + HOUR
    credits = sum((credits for _, credits in hours), Decimal(0))
    name = names.get(user_id, f"Member {user_id}") if user_id else "Calls without a member"
    local = f"{starts_at.astimezone(zone):%a %-d %b %H:%M}–{ends_at.astimezone(zone):%H:%M}"
    detail = (
        f"{name} spent {credits:,.0f} credits outside working hours ({local}, "
        f"{spend_settings.time_zone}): more than {spend_settings.off_hours_credits:,.0f} "
        "in an hour."
    )
    key = f"off_hours:{user_id}:{day.isoformat()}"
    flag = _raise(
        workspace,
        key=key,
        kind=AnomalyKind.OFF_HOURS,
        user_id=user_id or None,
        starts_at=starts_at,
        ends_at=ends_at,
        credits=credits,
        baseline=spend_settings.off_hours_credits,
        detail=detail,
    )
    if flag is None:  # raised before: an open flag widens to the day's later hours
        AnomalyFlag.objects.filter(
            workspace=workspace, key=key, state=AnomalyState.OPEN, credits__lt=credits
        ).update(starts_at=starts_at, ends_at=ends_at, credits=credits, detail=detail)
    return flag


# --- A personal key from a new address --------------------------------------------------------


def key_address_seen(workspace, api_key_id: int, address: str | None, *, user_id=None) -> bool:
    """Record that personal key ``api_key_id`` was used from ``address``; True when the address
    is new for the key (then, if the key was used from another address before, a flag).

    On the path of every ``/v1`` call, so the known path is one read-only statement on
    PostgreSQL: ``last_seen`` is written at most hourly (an UPDATE whose condition is false
    neither writes nor locks the row), and the INSERT happens only for an address not seen
    (``ON CONFLICT DO NOTHING`` for two first calls at once). An upsert (``ON CONFLICT DO
    UPDATE``) locks, so writes, the row on every call and each commit waits for the disk:
    4.6 ms a call measured, against 1.0-1.6 ms for this (0.5 ms for a plain SELECT of the
    row). SQLite (the embedded setup) runs the same as two statements."""
    if not address or api_key_id is None:
        return False
    now = timezone.now()
    ops = connection.ops
    at = ops.adapt_datetimefield_value(now)
    values = {
        "workspace": getattr(workspace, "pk", workspace),
        "key": api_key_id,
        "address": ops.adapt_ipaddressfield_value(address),
        "now": at,
        "cutoff": ops.adapt_datetimefield_value(now - ADDRESS_TOUCH_EVERY),
    }
    table = KeyAddress._meta.db_table
    touch = (
        f"UPDATE {table} SET last_seen = %(now)s WHERE api_key_id = %(key)s "  # noqa: S608
        "AND address = %(address)s AND last_seen < %(cutoff)s"
    )
    insert = (
        f"INSERT INTO {table} (workspace_id, api_key_id, address, first_seen, last_seen) "  # noqa: S608
        "SELECT %(workspace)s, %(key)s, %(address)s, %(now)s, %(now)s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE api_key_id = %(key)s "
        "AND address = %(address)s) "
        "ON CONFLICT (api_key_id, address) DO NOTHING RETURNING id"
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"WITH touched AS ({touch} RETURNING id) {insert}", values)
        else:
            cursor.execute(touch, values)
            cursor.execute(insert, values)
        row = cursor.fetchone()
    new = row is not None
    if new and KeyAddress.objects.filter(api_key_id=api_key_id).exclude(address=address).exists():
        _raise(
            workspace,
            key=f"new_address:{api_key_id}:{address}",
            kind=AnomalyKind.NEW_ADDRESS,
            user_id=user_id,
            api_key_id=api_key_id,
            address=address,
            starts_at=now,
            ends_at=now + timedelta(days=1),
            detail=f"Personal key {api_key_id} was used from a new address, {address}.",
        )
    return new


# --- Decisions ---------------------------------------------------------------------------------


class DecisionRefused(Exception):
    """The decision cannot be taken (shown to the manager as is)."""


def anomaly_decide(*, flag: AnomalyFlag, user, action: str, note: str = "") -> AnomalyFlag:
    """A manager dismisses a flag (nothing wrong) or marks it acted on, with a note."""
    states = {"dismiss": AnomalyState.DISMISSED, "act": AnomalyState.ACTED}
    if action not in states:
        raise DecisionRefused("Choose Dismiss or Acted on.")
    note = (note or "").strip()
    if len(note) > 300:
        raise DecisionRefused("The note is at most 300 characters.")
    if action == "act" and not note:
        raise DecisionRefused("Say what was done in the note (it stays with the flag).")
    changed = AnomalyFlag.objects.filter(pk=flag.pk, state=AnomalyState.OPEN).update(
        state=states[action], decided_by=user, decided_at=timezone.now(), note=note
    )
    flag.refresh_from_db()
    if not changed:
        by = flag.decided_by.display_name if flag.decided_by else "someone"
        raise DecisionRefused(f"This flag was already {flag.get_state_display().lower()} by {by}.")
    return flag
