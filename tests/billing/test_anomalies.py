"""The anomaly rules: a member's day far above their usual, bulk spend outside working hours, a
personal key from a new address; each raised once, linked to its rows, decided by a manager."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone

from apps.billing import anomalies
from apps.billing.anomalies import (
    DecisionRefused,
    anomalies_check,
    anomaly_decide,
    flag_rows_url,
    key_address_seen,
    spike_baseline,
)
from apps.billing.models import (
    AnomalyFlag,
    AnomalyKind,
    AnomalyState,
    KeyAddress,
    Notification,
    SpendRollup,
    SpendSettings,
)
from apps.billing.tasks import anomalies_check as anomalies_check_task
from tests.factories import make_workspace

NOW = datetime(2025, 6, 11, 12, tzinfo=UTC)  # a Wednesday
# A known key address costs one statement on PostgreSQL (two on SQLite, the embedded setup).
STATEMENTS = 1 if connection.vendor == "postgresql" else 2


def day(n, hour=10):
    """``n`` days before NOW's day, at ``hour`` UTC."""
    return datetime(2025, 6, 11, hour, tzinfo=UTC) - timedelta(days=n)


def rolled(workspace, hour, credits, *, user=None, api_key_id=0):
    SpendRollup.objects.create(
        workspace=workspace,
        hour=hour,
        user_id=user.pk if user else 0,
        api_key_id=api_key_id,
        capability="tts",
        source="ui",
        engine="elevenlabs",
        events=1,
        credits=Decimal(credits),
    )


def usual(workspace, user, credits=100, days=14):
    """``credits`` on each of the ``days`` days before yesterday (yesterday and today are
    the days checked)."""
    for n in range(2, 2 + days):
        rolled(workspace, day(n), credits, user=user)


# --- Spikes ---------------------------------------------------------------------------------


def test_a_day_above_k_times_the_median_is_flagged_once_with_its_rows(
    workspace, member, manager, owner
):
    usual(workspace, member)
    rolled(workspace, day(1), 100, user=member)
    rolled(workspace, day(0), 200, user=member)
    rolled(workspace, day(0, 11), 101, user=member)  # 301 today: above 3 × 100
    flags = anomalies_check(workspace, now=NOW)
    assert [(f.kind, f.user, f.credits, f.baseline) for f in flags] == [
        (AnomalyKind.SPIKE, member, Decimal(301), Decimal(100))
    ]
    flag = flags[0]
    assert (flag.starts_at, flag.ends_at) == (day(0, 0), day(-1, 0))
    assert "Mia Member spent 301 credits on Wed 11 Jun, more than 3× their usual day of 100" in (
        flag.detail
    )
    query = parse_qs(urlsplit(flag_rows_url(flag)).query)
    assert urlsplit(flag_rows_url(flag)).path == "/billing/spend/rows/"
    assert query == {"member": [str(member.pk)], "from": ["2025-06-11"], "to": ["2025-06-11"]}
    told = Notification.objects.filter(workspace=workspace)
    assert sorted(n.user_id for n in told) == sorted([owner.pk, manager.pk])
    assert anomalies_check(workspace, now=NOW) == []  # once only
    assert anomalies_check(workspace, now=NOW + timedelta(hours=3)) == []
    assert AnomalyFlag.objects.count() == 1 and told.count() == 2


def test_a_day_at_k_times_the_median_or_under_a_higher_k_is_not(workspace, member):
    usual(workspace, member)
    rolled(workspace, day(0), 300, user=member)  # exactly 3 × 100: not above
    assert anomalies_check(workspace, now=NOW) == []
    rolled(workspace, day(1), 450, user=member)
    SpendSettings.objects.filter(workspace=workspace).update(anomaly_factor=Decimal("4.5"))
    assert anomalies_check(workspace, now=NOW) == []
    rolled(workspace, day(1, 11), 1, user=member)
    assert [f.credits for f in anomalies_check(workspace, now=NOW)] == [Decimal(451)]


def test_a_member_with_no_history_is_not_flagged(workspace, member):
    rolled(workspace, day(0), 10_000, user=member)  # the first day they spend anything
    rolled(workspace, day(20), 10, user=member)  # outside the 14 days: not history
    assert anomalies_check(workspace, now=NOW) == []
    assert spike_baseline([Decimal(0)] * 14) is None


def test_a_zero_median_falls_back_to_the_days_with_spend(workspace, member):
    for n, credits in zip((3, 6, 9, 12), (50, 100, 150, 200), strict=True):
        rolled(workspace, day(n), credits, user=member)  # 4 days of 14: the median is 0
    assert spike_baseline([Decimal(c) for c in (50, 100, 150, 200)] + [Decimal(0)] * 10) == 125
    rolled(workspace, day(0), 375, user=member)  # 3 × 125: not above
    assert anomalies_check(workspace, now=NOW) == []
    rolled(workspace, day(0, 11), 1, user=member)
    flags = anomalies_check(workspace, now=NOW)
    assert [(f.credits, f.baseline) for f in flags] == [(Decimal(376), Decimal(125))]


def test_days_are_the_workspaces_local_days(workspace, member):
    SpendSettings.objects.create(workspace=workspace, time_zone="America/New_York")
    usual(workspace, member)
    # 02:00 UTC on the 11th is 22:00 on the 10th in New York: with 11:00 there, the 10th
    # holds 350 (above 3 × 100); in UTC days neither day would be above.
    rolled(workspace, day(0, 2), 250, user=member)
    rolled(workspace, day(1, 15), 100, user=member)
    flags = anomalies_check(workspace, now=NOW)
    assert [(f.key, f.credits) for f in flags] == [(f"spike:{member.pk}:2025-06-10", 350)]
    assert flags[0].starts_at == datetime(2025, 6, 10, 4, tzinfo=UTC)  # midnight EDT


def test_other_workspaces_and_members_are_apart(workspace, member, manager):
    other = make_workspace("Elsewhere")
    usual(workspace, member)
    rolled(other, day(0), 10_000, user=member)
    rolled(workspace, day(0), 10_000, user=manager)  # no history of their own
    rolled(workspace, day(0), 10_000)  # no member
    assert anomalies_check(workspace, now=NOW) == []


# --- Off hours --------------------------------------------------------------------------------


@pytest.fixture
def paris(workspace):
    return SpendSettings.objects.create(
        workspace=workspace,
        time_zone="Europe/Paris",
        work_start_hour=8,
        work_end_hour=19,
        work_days="01234",
        off_hours_credits=Decimal(1000),
    )


def test_bulk_spend_at_night_is_flagged_once_per_member_and_day(workspace, member, paris):
    rolled(workspace, day(1, 22), 1500, user=member)  # midnight in Paris
    rolled(workspace, day(1, 23), 900, user=member)  # 01:00 in Paris, under the threshold
    flags = anomalies_check(workspace, now=NOW)
    assert [(f.kind, f.credits, f.baseline) for f in flags] == [
        (AnomalyKind.OFF_HOURS, Decimal(1500), Decimal(1000))
    ]
    flag = flags[0]
    assert flag.key == f"off_hours:{member.pk}:2025-06-11"  # the Paris day
    assert (flag.starts_at, flag.ends_at) == (day(1, 22), day(1, 23))
    assert "outside working hours (Wed 11 Jun 00:00–01:00, Europe/Paris)" in flag.detail
    # Later that night: the open flag widens, no second flag.
    rolled(workspace, day(0, 2), 2000, user=member)
    assert anomalies_check(workspace, now=NOW) == []
    flag.refresh_from_db()
    assert (flag.starts_at, flag.ends_at, flag.credits) == (day(1, 22), day(0, 3), 3500)


def test_spend_in_working_hours_or_under_the_threshold_is_not(workspace, member, paris):
    rolled(workspace, day(0, 10), 5000, user=member)  # noon in Paris on a Wednesday
    rolled(workspace, day(1, 16), 5000, user=member)  # 18:00 in Paris, the last hour
    rolled(workspace, day(1, 19), 1000, user=member)  # 21:00: at the threshold, not above
    assert anomalies_check(workspace, now=NOW) == []


def test_a_day_off_is_off_hours_all_day(workspace, member, paris):
    saturday = datetime(2025, 6, 14, 10, tzinfo=UTC)  # noon in Paris
    rolled(workspace, saturday, 1200, user=member)
    flags = anomalies_check(workspace, now=saturday + timedelta(hours=2))
    assert [f.key for f in flags] == [f"off_hours:{member.pk}:2025-06-14"]
    SpendSettings.objects.filter(pk=paris.pk).update(work_days="0123456")
    AnomalyFlag.objects.all().delete()
    assert anomalies_check(workspace, now=saturday + timedelta(hours=2)) == []


def test_the_periodic_task_checks_workspaces_with_recent_spend(workspace, member, paris):

    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    stale = make_workspace("Quiet")
    rolled(stale, hour - timedelta(days=10), 10**6)
    SpendSettings.objects.filter(pk=paris.pk).update(work_days="", off_hours_credits=10)
    rolled(workspace, hour, 50, user=member)  # every hour is off hours now
    assert anomalies_check_task() == 1
    assert anomalies_check_task() == 0
    assert not AnomalyFlag.objects.filter(workspace=stale).exists()


# --- A personal key from a new address --------------------------------------------------------


def test_a_keys_first_address_is_recorded_and_a_new_one_is_flagged_once(
    workspace, member, django_assert_num_queries
):
    assert key_address_seen(workspace, 7, "203.0.113.5", user_id=member.pk) is True
    assert not AnomalyFlag.objects.exists()  # a key's first address is not news
    with django_assert_num_queries(STATEMENTS):
        assert key_address_seen(workspace, 7, "203.0.113.5") is False
    assert key_address_seen(workspace, 7, "2001:db8::1", user_id=member.pk) is True
    flag = AnomalyFlag.objects.get()
    assert (flag.kind, flag.api_key_id, flag.address, flag.user) == (
        AnomalyKind.NEW_ADDRESS,
        7,
        "2001:db8::1",
        member,
    )
    assert parse_qs(urlsplit(flag_rows_url(flag)).query)["key"] == ["7"]
    with django_assert_num_queries(STATEMENTS):
        assert key_address_seen(workspace, 7, "2001:db8::1") is False
    assert key_address_seen(workspace, 8, "2001:db8::1") is True  # another key's first
    assert AnomalyFlag.objects.count() == 1
    assert key_address_seen(workspace, 7, None) is False


def test_a_known_address_is_touched_at_most_hourly(workspace):
    key_address_seen(workspace, 7, "203.0.113.5")
    row = KeyAddress.objects.get()
    KeyAddress.objects.filter(pk=row.pk).update(
        first_seen=row.first_seen - timedelta(hours=2), last_seen=row.last_seen - timedelta(hours=2)
    )
    assert key_address_seen(workspace, 7, "203.0.113.5") is False
    touched = KeyAddress.objects.get()
    assert touched.last_seen > row.last_seen - timedelta(minutes=1)
    assert touched.first_seen == row.first_seen - timedelta(hours=2)


# --- Decisions --------------------------------------------------------------------------------


def _flag(workspace, **values):
    now = datetime(2025, 6, 11, tzinfo=UTC)
    return AnomalyFlag.objects.create(
        workspace=workspace,
        kind=AnomalyKind.SPIKE,
        starts_at=now,
        ends_at=now + timedelta(days=1),
        detail="A spike",
        key=values.pop("key", "spike:1:2025-06-11"),
        **values,
    )


def test_a_manager_dismisses_or_acts_once_with_a_note(workspace, manager, owner):
    flag = anomaly_decide(
        flag=_flag(workspace), user=manager, action="dismiss", note=" a planned batch "
    )
    assert (flag.state, flag.decided_by, flag.note) == (
        AnomalyState.DISMISSED,
        manager,
        "a planned batch",
    )
    assert flag.decided_at is not None
    with pytest.raises(DecisionRefused, match="already dismissed by Max Manager"):
        anomaly_decide(flag=flag, user=owner, action="act", note="x")
    other = _flag(workspace, key="spike:2")
    with pytest.raises(DecisionRefused, match="Say what was done"):
        anomaly_decide(flag=other, user=owner, action="act", note="  ")
    with pytest.raises(DecisionRefused, match="Choose Dismiss or Acted on"):
        anomaly_decide(flag=other, user=owner, action="delete")
    acted = anomaly_decide(flag=other, user=owner, action="act", note="Key revoked")
    assert (acted.state, acted.decided_by, acted.note) == (AnomalyState.ACTED, owner, "Key revoked")


def test_rows_url_names_the_days_of_the_span_in_the_viewers_zone():
    start = datetime(2025, 6, 11, 22, tzinfo=UTC)
    url = anomalies.rows_url(start=start, end=start + timedelta(hours=2), user_id=3, api_key_id=9)
    assert url == "/billing/spend/rows/?member=3&key=9&from=2025-06-11&to=2025-06-11"  # [22, 24)
    url = anomalies.rows_url(start=start, end=start + timedelta(hours=3))
    assert url == "/billing/spend/rows/?from=2025-06-11&to=2025-06-12"
    with timezone.override(ZoneInfo("Europe/Berlin")):  # 00:00-02:00 on the 12th there
        url = anomalies.rows_url(start=start, end=start + timedelta(hours=2))
    assert url == "/billing/spend/rows/?from=2025-06-12&to=2025-06-12"
