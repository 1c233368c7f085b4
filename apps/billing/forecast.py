"""The forecast of a workspace's credits at the next reset, against the plan and the cap.

What is projected, for the current budget period ``[start, end)`` (``services.period_start``;
the end is the plan's next reset, or the next calendar month):

    projected = spent + burn_per_day × days_left + planned_credits × ratio

- ``spent``: the settled credits of the period so far (the ledger through ``SpendRollup``;
  reserved calls in flight and refunds count nothing, as in the explorer).
- ``burn_per_day``: the *base* spend of the period so far ÷ the days elapsed (at least one
  day, so the first hours of a period do not project a spike). The base is everything except
  the speech of projects (capability ``tts`` with a project): project narration is finite
  work whose remainder is known, so it is projected from that rather than extrapolated.
- ``planned_credits``: what rendering once, at final quality, every project block without a
  final take (and not locked) costs at the rate card on the workspace's engine (0 on the
  local engine): the remaining planned work.
- ``ratio``: the regeneration ratio (final takes rendered ÷ blocks with a final take) the
  team measured in its projects, which turns "rendered once" into what finishing really
  takes; the seed's budget rule, 1.75×, only where no block has a final take yet. The
  forecast says which (``ratio_source``).

The projection assumes the planned work is done by the reset, spread evenly over the days
left; the line (``points``) is the measured cumulative spend up to now, then the projection.

Billing knows nothing of projects (the layers): ``apps.projects`` registers the provider of
its work (``project_work_register``) in its ``AppConfig.ready``.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import IntegrityError, transaction
from django.db.models import DecimalField, Q, Sum
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from apps.workspaces.models import EngineKind, EngineSettings, Membership, Role, Workspace

from . import services
from .models import ForecastNotice, Notification, SpendRollup, UsageEvent, UsageStatus

SEED_RATIO = Decimal("1.75")
RATIO_PLACES = Decimal("0.01")
DAY = timedelta(days=1)


@dataclass(frozen=True)
class ProjectWork:
    """What a workspace's projects say about spend to come (filled in by ``apps.projects``).

    ``final_takes`` / ``final_blocks``: the regeneration ratio's parts over every project of
    the workspace; ``characters``: the characters of the blocks still without a final take
    (and not locked), by model id."""

    final_takes: int = 0
    final_blocks: int = 0
    characters: dict[str, int] = field(default_factory=dict)


_project_work: Callable[[object], ProjectWork] | None = None


def project_work_register(provider: Callable[[object], ProjectWork]) -> None:
    """``provider(workspace) -> ProjectWork``: set once by ``apps.projects`` when it loads."""
    global _project_work
    _project_work = provider


def project_work(workspace) -> ProjectWork:
    return _project_work(workspace) if _project_work is not None else ProjectWork()


@dataclass(frozen=True)
class ForecastPoint:
    at: datetime  # UTC
    credits: Decimal  # cumulative settled credits of the period at ``at``
    measured: bool  # False: projected


@dataclass(frozen=True)
class Forecast:
    period_start: datetime
    period_end: datetime  # the next reset
    now: datetime
    spent: Decimal  # settled this period so far
    base_spent: Decimal  # the part the burn rate is measured on (not project speech)
    burn_per_day: Decimal
    planned_characters: int
    planned_credits: Decimal  # the remaining project work, rendered once
    ratio: Decimal
    ratio_source: str  # "projects" | "seed"
    ratio_takes: int
    ratio_blocks: int
    projected: Decimal  # at the next reset
    plan_limit: Decimal | None  # the plan's credits; None: no limit
    cap: Decimal | None  # the workspace cap; None: none
    points: list[ForecastPoint]
    # Credits the provider counts this period that Chorus did not bill (the shared account
    # used outside Chorus): its last synced ``credits_used`` less the ledger's spend. Counted
    # against the plan's credits (the provider's count), never against the cap (Chorus's).
    outside: Decimal = Decimal(0)

    @property
    def projected_on_plan(self) -> Decimal:
        return self.projected + self.outside

    @property
    def crosses(self) -> tuple[str, ...]:
        """The limits the projection goes over: ``plan``, ``cap``."""
        over = []
        if self.plan_limit is not None and self.projected_on_plan > self.plan_limit:
            over.append("plan")
        if self.cap is not None and self.projected > self.cap:
            over.append("cap")
        return tuple(over)

    @property
    def days_left(self) -> Decimal:
        return _days(self.period_end - self.now)

    @property
    def ratio_text(self) -> str:
        if self.ratio_source == "projects":
            return (
                f"{self.ratio}× measured in this team's projects ({self.ratio_takes:,} final "
                f"takes for {self.ratio_blocks:,} blocks)"
            )
        return f"{self.ratio}× (the budget rule: no project has a final take yet)"

    def limit_of(self, kind: str) -> Decimal | None:
        return {"plan": self.plan_limit, "cap": self.cap}[kind]


def _days(delta: timedelta) -> Decimal:
    return Decimal(int(delta.total_seconds())) / Decimal(86400)


def _credits(value) -> Decimal:
    return Decimal(value or 0).quantize(services.CREDIT, ROUND_HALF_UP)


def month_after(moment: datetime) -> datetime:
    """The same day and time a month later (the day clamped to the month's last)."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(
        year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1])
    )


def period_of(plan, *, now: datetime) -> tuple[datetime, datetime]:
    """The budget period ``now`` is in: from ``services.period_start`` to the next reset."""
    start = services.period_start(plan, now=now)
    end = month_after(start)
    if plan.budget_period == "plan" and plan.next_reset_at and plan.next_reset_at > now:
        end = plan.next_reset_at
    return start, end


def _hourly(workspace, start: datetime, now: datetime) -> list[tuple[datetime, Decimal, Decimal]]:
    """(hour, credits, credits of project speech) settled in ``[start, now]``, by UTC hour.

    Whole hours come from the rollup; the part of an hour before a period start that is not
    on the hour (a plan's reset at 10:30) is read from the ledger itself, so the sums are
    exact either way."""
    project_tts = Q(capability="tts") & ~Q(project="")
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    if first_hour < start:
        first_hour += timedelta(hours=1)
    rows = [
        (row["hour"], row["total"], row["project_tts"])
        for row in SpendRollup.objects.filter(workspace=workspace, hour__gte=first_hour)
        .filter(hour__lte=now)
        .values("hour")
        .annotate(
            total=Sum("credits"),
            project_tts=Sum(
                "credits",
                filter=project_tts,
                output_field=DecimalField(max_digits=20, decimal_places=3),
            ),
        )
        .order_by("hour")
    ]
    if first_hour > start:
        head = UsageEvent.objects.filter(
            workspace=workspace,
            status=UsageStatus.SETTLED,
            created_at__gte=start,
            created_at__lt=min(first_hour, now),
        ).aggregate(total=Sum("credits"), project_tts=Sum("credits", filter=project_tts))
        if head["total"]:
            rows.insert(0, (start, head["total"], head["project_tts"]))
    return [(hour, _credits(total), _credits(project)) for hour, total, project in rows]


def _planned_credits(workspace, characters: dict[str, int]) -> Decimal:
    """The remaining project work rendered once at final quality, at the rate card."""
    if not characters:
        return Decimal(0)
    engine = (
        EngineSettings.objects.filter(workspace=workspace).values_list("kind", flat=True).first()
        or EngineKind.LOCAL
    )
    total = Decimal(0)
    for model_id, count in sorted(characters.items()):
        rate = services.rate_for(workspace, "tts", model_id, engine)
        total += services.credits_for(rate, count)
    return total


def forecast_for(workspace, *, now: datetime | None = None) -> Forecast:
    """The workspace's projected credits at the next reset (see the module's docstring)."""
    now = now or timezone.now()
    plan = services.plan_for(workspace)
    start, end = period_of(plan, now=now)
    hourly = _hourly(workspace, start, now)
    spent = sum((total for _, total, _ in hourly), Decimal(0))
    base_spent = spent - sum((project for _, _, project in hourly), Decimal(0))
    elapsed = max(_days(now - start), Decimal(1))
    burn = base_spent / elapsed

    work = project_work(workspace)
    if work.final_blocks:
        ratio = (Decimal(work.final_takes) / Decimal(work.final_blocks)).quantize(
            RATIO_PLACES, ROUND_HALF_UP
        )
        source = "projects"
    else:
        ratio, source = SEED_RATIO, "seed"
    planned = _planned_credits(workspace, work.characters)
    days_left = max(_days(end - now), Decimal(0))
    to_come = burn * days_left + planned * ratio
    projected = _credits(spent + to_come)

    points = _points(hourly, start=start, end=end, now=now, spent=spent, to_come=to_come)
    outside = Decimal(0)
    synced_this_period = plan.synced_at is not None and plan.synced_at >= start
    if plan.source == "elevenlabs" and plan.budget_period == "plan" and synced_this_period:
        # The provider's count is a snapshot at ``synced_at``: less what Chorus had billed
        # by then (whole hours from the rollup, the sync's own hour from the ledger).
        cut = min(plan.synced_at, now)
        hour = cut.replace(minute=0, second=0, microsecond=0)
        before = sum((total for at, total, _ in hourly if at < hour), Decimal(0))
        before += UsageEvent.objects.filter(
            workspace=workspace,
            status=UsageStatus.SETTLED,
            created_at__gte=max(hour, start),
            created_at__lt=cut,
        ).aggregate(total=Sum("credits"))["total"] or Decimal(0)
        outside = max(Decimal(plan.credits_used) - before, Decimal(0))
    return Forecast(
        period_start=start,
        period_end=end,
        now=now,
        spent=spent,
        base_spent=base_spent,
        burn_per_day=_credits(burn),
        planned_characters=sum(work.characters.values()),
        planned_credits=planned,
        ratio=ratio,
        ratio_source=source,
        ratio_takes=work.final_takes,
        ratio_blocks=work.final_blocks,
        projected=projected,
        plan_limit=Decimal(plan.credit_limit) if plan.credit_limit else None,
        cap=plan.workspace_cap,
        points=points,
        outside=_credits(outside),
    )


def _points(hourly, *, start, end, now, spent, to_come) -> list[ForecastPoint]:
    """The line: the measured cumulative spend at the start, every UTC midnight and now;
    then the projection at every midnight to the reset (a straight line to it)."""
    points = [ForecastPoint(start, Decimal(0), True)]
    midnight = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + DAY
    cumulative, rows = Decimal(0), iter(hourly)
    row = next(rows, None)
    while midnight < now:
        while row is not None and row[0] < midnight:
            cumulative += row[1]
            row = next(rows, None)
        points.append(ForecastPoint(midnight, cumulative, True))
        midnight += DAY
    if now > start:
        points.append(ForecastPoint(now, spent, True))
    if midnight == now:  # measured already
        midnight += DAY
    total = _days(end - now)
    while midnight < end:
        share = _days(midnight - now) / total if total else Decimal(1)
        points.append(ForecastPoint(midnight, _credits(spent + to_come * share), False))
        midnight += DAY
    if end > now:
        points.append(ForecastPoint(end, _credits(spent + to_come), False))
    return points


def forecast_chart(forecast: Forecast, zone) -> dict:
    """What ``static/js/spend-forecast.js`` draws (the spend page's ``forecast-data``): the
    points' times in the viewer's ``zone``, the measured line up to now and the projected
    one from now (both hold the point at now, so the lines meet), and the plan's credits and
    the cap as flat lines (None: no such limit). Numbers as strings: exact, as the table."""
    labels, measured, projected = [], [], []
    for point in forecast.points:
        labels.append(point.at.astimezone(zone).strftime("%d %b %H:%M"))
        at_now = point.at == forecast.now
        measured.append(str(point.credits) if point.measured else None)
        projected.append(str(point.credits) if (not point.measured or at_now) else None)
    return {
        "labels": labels,
        "measured": measured,
        "projected": projected,
        # What the plan leaves for Chorus: its credits less those used outside Chorus.
        "plan": None
        if forecast.plan_limit is None
        else str(
            forecast.plan_limit - forecast.outside if forecast.outside else forecast.plan_limit
        ),
        "planLabel": "Plan's credits"
        if not forecast.outside
        else f"Plan's credits less {forecast.outside:,.0f} used outside Chorus",
        "cap": None if forecast.cap is None else str(forecast.cap),
        "ratio": forecast.ratio_text,
    }


# --- Telling the managers --------------------------------------------------------------------

LIMIT_NAMES = {"plan": "the plan's credits", "cap": "the workspace cap"}


def forecast_notices_send(workspace, *, now: datetime | None = None) -> list[ForecastNotice]:
    """Tell the managers when the projection goes over the plan or the cap: once per period
    and limit (``ForecastNotice``'s unique key), in-app at once and by e-mail from a Celery
    task after the commit (never inside a request). The new notices."""
    from .tasks import forecast_notice_mail

    forecast = forecast_for(workspace, now=now)
    sent = []
    for kind in forecast.crosses:
        limit = forecast.limit_of(kind)
        try:
            with transaction.atomic():
                notice = ForecastNotice.objects.create(
                    workspace=workspace,
                    kind=kind,
                    period_start=forecast.period_start,
                    projected=forecast.projected,
                    limit=limit,
                )
        except IntegrityError:
            continue  # told already this period
        text = notice_text(notice, forecast.period_end)
        managers = Membership.objects.filter(
            workspace=workspace, role__in=[Role.OWNER, Role.MANAGER]
        ).values_list("user_id", flat=True)
        url = _review_url()
        Notification.objects.bulk_create(
            [Notification(workspace=workspace, user_id=u, text=text, url=url) for u in managers]
        )
        transaction.on_commit(lambda pk=notice.pk: forecast_notice_mail.delay(pk))
        sent.append(notice)
    return sent


def notice_text(notice: ForecastNotice, period_end: datetime | None = None) -> str:
    when = f" by the reset on {period_end:%-d %b %Y}" if period_end else " this period"
    return (
        f"Spend forecast: {notice.projected:,.0f} credits projected{when}, over "
        f"{LIMIT_NAMES.get(notice.kind, notice.kind)} of {notice.limit:,.0f}."
    )


def _review_url() -> str:
    try:
        return reverse("billing:review_index")
    except NoReverseMatch:
        return ""


def workspaces_to_forecast():
    """The workspaces with a limit to forecast against: plan credits or a cap."""
    return Workspace.objects.filter(
        Q(plan__credit_limit__gt=0) | Q(plan__workspace_cap__isnull=False)
    ).order_by("pk")
