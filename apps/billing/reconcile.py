"""Reconciliation: the ledger held against the provider's history and usage, day by day.

On the ElevenLabs engine every call Chorus bills should be in the provider's history (by its
``request-id``, which the ledger keeps as ``upstream_request_id``) and in its usage; a night
job (``reconcile_nightly``) compares the last days and keeps one ``ReconcileDay`` per UTC day
with the totals of both sides and the rows that explain the drift: calls Chorus billed that
the provider has no history item for, and history items with no ledger row.

The provider's history holds text to speech (and dubbing, Studio…) but not music, sound
effects or speech to text, so requests and characters are compared over text to speech
only; credits are compared over everything (the provider's usage counts every product).

Billing sits below the core that builds engines (``apps.generation.engine.engine_for``), so
that app registers its builder here (``engine_source_register``) and the task asks it.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from celery import shared_task
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from apps.workspaces.models import EngineKind, EngineSettings, Workspace

from .models import ReconcileDay, UsageEvent, UsageStatus

log = logging.getLogger(__name__)

ENGINE = "elevenlabs"
# Capabilities whose calls the provider keeps in its history (requests and characters).
HISTORY_CAPABILITIES = ("tts",)
PAGE_SIZE = 1000  # the most /v1/history gives in one page
MAX_PAGES = 500  # 500,000 items in a window: beyond that something is wrong; stop
# Calls made just before midnight can land in the provider's history just after it (and the
# reverse): items this close outside the window still match a row inside it.
MARGIN = timedelta(hours=1)
MAX_EXPLAINED = 200  # rows kept per side and day in ``detail``
DEFAULT_DAYS = 7
CREDIT = Decimal("0.001")


# --- What the provider said -------------------------------------------------------------


@dataclass
class ProviderDay:
    requests: int = 0
    characters: int = 0
    credits: Decimal = Decimal(0)


@dataclass
class ProviderWindow:
    """The provider's side of a window: its history items and its credits per UTC day."""

    items: list = field(default_factory=list)  # engines.base.HistoryItem
    credits: dict[date, Decimal] = field(default_factory=dict)


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def provider_history(engine, *, start: datetime, end: datetime) -> list:
    """Every history item from ``start`` (inclusive) to ``end`` (exclusive), following the
    cursor page after page."""
    items: list = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = engine.history(
            page_size=PAGE_SIZE,
            start_after=cursor,
            date_after_unix=_unix(start),
            date_before_unix=_unix(end),
            sort_direction="asc",
        )
        items.extend(page.items)
        cursor = page.last_history_item_id or (
            page.items[-1].history_item_id if page.items else None
        )
        if not page.has_more or not page.items or cursor is None:
            return items
    log.warning("reconciliation stopped after %s history pages", MAX_PAGES)
    return items


def provider_window(engine, *, start: datetime, end: datetime) -> ProviderWindow:
    """The provider's history (with ``MARGIN`` around the window) and its credits per day."""
    items = provider_history(engine, start=start - MARGIN, end=end + MARGIN)
    stats = engine.usage_characters(
        start_unix_ms=_unix(start) * 1000,
        end_unix_ms=_unix(end) * 1000 - 1,
        metric="credits",
        aggregation_interval="day",
        breakdown_type="none",
    )
    credits: dict[date, Decimal] = defaultdict(Decimal)
    for index, stamp in enumerate(stats.time):
        day = datetime.fromtimestamp(stamp / 1000, tz=UTC).date()
        for series in stats.usage.values():
            if index < len(series):
                credits[day] += Decimal(str(series[index]))
    return ProviderWindow(items=items, credits=dict(credits))


def _characters(item) -> int:
    return abs(int(item.character_count_change_to) - int(item.character_count_change_from))


# --- The comparison -----------------------------------------------------------------------


def _day_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    start = datetime.combine(first, time.min, tzinfo=UTC)
    return start, datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)


def _ledger(workspace, start: datetime, end: datetime):
    return UsageEvent.objects.filter(
        workspace=workspace,
        engine=ENGINE,
        status=UsageStatus.SETTLED,
        created_at__gte=start,
        created_at__lt=end,
    )


def _ledger_days(workspace, start, end) -> dict[date, dict]:
    """Per UTC day: text-to-speech requests and characters, and every settled credit."""
    in_history = Q(capability__in=HISTORY_CAPABILITIES)
    rows = (
        _ledger(workspace, start, end)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(
            requests=Count("id", filter=in_history),
            characters=Sum("units", filter=in_history & Q(unit="character")),
            credits=Sum("credits"),
        )
    )
    return {r["day"]: r for r in rows}


def _row_json(row: dict) -> dict:
    return {
        "id": row["id"],
        "request_id": row["request_id"],
        "upstream_request_id": row["upstream_request_id"],
        "capability": row["capability"],
        "model_id": row["model_id"],
        "voice_id": row["voice_id"],
        "user_id": row["user_id"],
        "units": str(row["units"] or 0),
        "credits": str(row["credits"] or 0),
        "at": row["created_at"].astimezone(UTC).isoformat(),
    }


def _item_json(item) -> dict:
    return {
        "history_item_id": item.history_item_id,
        "request_id": item.request_id,
        "model_id": item.model_id,
        "voice_id": item.voice_id,
        "source": item.source,
        "characters": _characters(item),
        "at": datetime.fromtimestamp(item.date_unix, tz=UTC).isoformat(),
    }


@transaction.atomic
def reconcile_window(
    *, workspace: Workspace, provider: ProviderWindow, first: date, last: date
) -> list[ReconcileDay]:
    """Compare the ledger of ``first``..``last`` (UTC days) with what the provider said and
    store one ``ReconcileDay`` per day (replacing an earlier check of that day)."""
    start, end = _day_bounds(first, last)
    totals = _ledger_days(workspace, start, end)
    ledger_rows = list(
        _ledger(workspace, start, end)
        .filter(capability__in=HISTORY_CAPABILITIES)
        .order_by("created_at", "id")
        .values(
            "id", "request_id", "upstream_request_id", "capability", "model_id", "voice_id",
            "user_id", "units", "credits", "created_at",
        )
    )  # fmt: skip
    # A history item answers for a ledger row by its request id or by its own id (an older
    # header, ``history-item-id``, which some paths keep as the upstream id).
    provider_ids = set()
    for item in provider.items:
        provider_ids.add(item.history_item_id)
        if item.request_id:
            provider_ids.add(item.request_id)
    ledger_ids = {r["upstream_request_id"] for r in ledger_rows if r["upstream_request_id"]}
    # Ledger rows just outside the window answer for items inside it (see MARGIN).
    ledger_ids |= set(
        _ledger(workspace, start - MARGIN, end + MARGIN)
        .exclude(created_at__gte=start, created_at__lt=end)
        .exclude(upstream_request_id="")
        .values_list("upstream_request_id", flat=True)
    )

    only_ledger: dict[date, list] = defaultdict(list)
    for row in ledger_rows:
        if row["upstream_request_id"] not in provider_ids:
            only_ledger[row["created_at"].astimezone(UTC).date()].append(row)
    provider_days: dict[date, ProviderDay] = defaultdict(ProviderDay)
    only_provider: dict[date, list] = defaultdict(list)
    for item in provider.items:
        moment = datetime.fromtimestamp(item.date_unix, tz=UTC)
        if not start <= moment < end:
            continue
        day = provider_days[moment.date()]
        day.requests += 1
        day.characters += _characters(item)
        if item.request_id not in ledger_ids and item.history_item_id not in ledger_ids:
            only_provider[moment.date()].append(item)

    saved = []
    day = first
    while day <= last:
        mine = totals.get(day, {})
        theirs = provider_days.get(day, ProviderDay())
        extra, missing = only_ledger.get(day, []), only_provider.get(day, [])
        row, _ = ReconcileDay.objects.update_or_create(
            workspace=workspace,
            day=day,
            defaults={
                "ledger_requests": mine.get("requests") or 0,
                "ledger_characters": int(mine.get("characters") or 0),
                "ledger_credits": (mine.get("credits") or Decimal(0)).quantize(CREDIT),
                "provider_requests": theirs.requests,
                "provider_characters": theirs.characters,
                "provider_credits": provider.credits.get(day, Decimal(0)).quantize(CREDIT),
                "detail": {
                    "only_ledger": [_row_json(r) for r in extra[:MAX_EXPLAINED]],
                    "only_provider": [_item_json(i) for i in missing[:MAX_EXPLAINED]],
                    "only_ledger_count": len(extra),
                    "only_provider_count": len(missing),
                },
            },
        )
        saved.append(row)
        day += timedelta(days=1)
    return saved


def reconcile_run(
    *, workspace: Workspace, engine, days: int = DEFAULT_DAYS, until: date | None = None
) -> list[ReconcileDay]:
    """Reconcile the ``days`` UTC days up to ``until`` (default: yesterday, the last whole
    day) against ``engine``'s history and usage (the provider is asked before the database
    transaction opens)."""
    last = until or (timezone.now().astimezone(UTC).date() - timedelta(days=1))
    first = last - timedelta(days=max(1, days) - 1)
    start, end = _day_bounds(first, last)
    provider = provider_window(engine, start=start, end=end)
    return reconcile_window(workspace=workspace, provider=provider, first=first, last=last)


# --- Reading it back ------------------------------------------------------------------------


@dataclass(frozen=True)
class DayDrift:
    """One reconciled day as the page shows it: the ledger less the provider."""

    row: ReconcileDay

    @property
    def requests(self) -> int:
        return self.row.ledger_requests - self.row.provider_requests

    @property
    def characters(self) -> int:
        return self.row.ledger_characters - self.row.provider_characters

    @property
    def credits(self) -> Decimal:
        return self.row.ledger_credits - self.row.provider_credits

    @property
    def only_ledger(self) -> int:
        return int(self.row.detail.get("only_ledger_count", 0))

    @property
    def only_provider(self) -> int:
        return int(self.row.detail.get("only_provider_count", 0))

    @property
    def agrees(self) -> bool:
        drift = (self.requests, self.characters, self.credits, self.only_ledger, self.only_provider)
        return not any(drift)


def reconcile_days(*, workspace: Workspace, limit: int = 60) -> list[DayDrift]:
    """The latest reconciled days of a workspace, newest first."""
    rows = ReconcileDay.objects.filter(workspace=workspace).order_by("-day")[:limit]
    return [DayDrift(row) for row in rows]


# --- The night job ------------------------------------------------------------------------

_engine_source: list[Callable] = []


def engine_source_register(engine_for: Callable) -> None:
    """Called by the app that builds engines (``apps.generation``, in ``ready()``):
    ``engine_for(workspace, row=EngineSettings)`` gives the workspace's engine."""
    _engine_source[:] = [engine_for]


def _workspaces_on_elevenlabs() -> Iterable[EngineSettings]:
    return EngineSettings.objects.filter(kind=EngineKind.ELEVENLABS).select_related("workspace")


@shared_task(
    name="billing.reconcile_nightly", ignore_result=True, soft_time_limit=1500, time_limit=1800
)
def reconcile_nightly(days: int = DEFAULT_DAYS, workspace_id: int | None = None) -> int:
    """Reconcile the last ``days`` days of every workspace on ElevenLabs (or one): nightly,
    after midnight UTC. A workspace whose provider fails is logged and the others go on."""
    if not _engine_source:
        log.error("reconciliation has no engine source: apps.generation did not register one")
        return 0
    engine_for = _engine_source[0]
    done = 0
    rows = _workspaces_on_elevenlabs()
    if workspace_id is not None:
        rows = rows.filter(workspace_id=workspace_id)
    for settings_row in rows:
        try:
            engine = engine_for(settings_row.workspace, row=settings_row)
            reconcile_run(workspace=settings_row.workspace, engine=engine, days=days)
            done += 1
        except Exception:  # one workspace's provider must not stop the others
            log.exception("reconciliation of workspace %s failed", settings_row.workspace_id)
    return done
