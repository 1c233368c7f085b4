"""Metering — the only path from a service to a billable engine call — and what feeds it.

    with metered(workspace=…, user=…, capability="tts", engine="elevenlabs", model_id=…,
                 units=len(text), source="ui", idempotency_key=…) as meter:
        result = engine.tts(request)
        meter.settle(units=len(text), info=result.info)

``metered`` reserves the estimate (checking the member's budget, the key's cap, the workspace
cap and the plan's credits atomically, under a lock of the workspace's plan row), lets the call
run, and settles with the real units and credits — or refunds when the call raised (nothing
billable happened). A repeated idempotency key returns the first outcome and never charges
twice. Reservations whose process died are released by ``reservations_sweep``; a long call
records its progress (``meter_progress``) so that the sweep settles it on what it delivered.
"""

from __future__ import annotations

import calendar
import functools
import logging
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Case, DecimalField, F, Q, Sum, Value, When
from django.utils import timezone

from apps.workspaces.models import Membership, Role

from . import rates, rollup
from .models import (
    Budget,
    Notification,
    Plan,
    RateCard,
    ThresholdNotice,
    UsageEvent,
    UsageSource,
    UsageStatus,
)

log = logging.getLogger(__name__)

THRESHOLDS = (50, 80, 100)
THRESHOLD_MARGIN = Decimal("0.9")  # below 90 % of the first threshold: no exact check
CREDIT = Decimal("0.001")


class BudgetExceeded(Exception):
    """A hard limit refused the call; ``budget`` names it (shown to people as is)."""

    def __init__(self, budget: str, *, needed: Decimal, left: Decimal):
        self.budget, self.needed, self.left = budget, needed, left
        super().__init__(
            f"{budget} is spent: this needs {needed:,.0f} credits and {max(left, 0):,.0f} are "
            "left this period."
        )


# --- Rates and estimates ----------------------------------------------------------------


def rate_for(workspace, capability: str, model_id: str, engine: str) -> rates.Rate:
    """The rate in force: 0 on the local engine; otherwise the most specific of the owner's
    override for the model, the default for the model, the owner's catch-all, the default."""
    default = rates.default_rate(capability, model_id)
    if engine == "local":
        return rates.Rate(capability, model_id, default.unit, Decimal(0), "local engine: free")
    overrides = {
        row.model_id: (row.unit, row.credits_per_unit)
        for row in RateCard.objects.filter(workspace=workspace, capability=capability).filter(
            Q(model_id=model_id) | Q(model_id="")
        )
    }
    return _rate_chosen(default, capability, model_id, overrides)


def _rate_chosen(default: rates.Rate, capability: str, model_id: str, overrides) -> rates.Rate:
    """The most specific rate: ``overrides`` maps a rate card's model id ("" for the
    catch-all) to its (unit, credits per unit)."""
    row = overrides.get(model_id) if model_id else None
    if row is None and default.model_id != model_id:
        row = overrides.get("")
        if row is not None:
            model_id = ""
    if row is not None:
        return rates.Rate(capability, model_id, row[0], row[1], "rate card")
    return default


def credits_for(rate: rates.Rate, units: Decimal | float | int) -> Decimal:
    return (Decimal(str(units)) * rate.credits_per_unit).quantize(CREDIT, ROUND_HALF_UP)


def plan_for(workspace) -> Plan:
    plan, _ = Plan.objects.get_or_create(workspace=workspace)
    return plan


def period_start(plan: Plan, *, now: datetime | None = None) -> datetime:
    """Start of the current budget period: the calendar month, or the plan's cycle."""
    now = now or timezone.now()
    if plan.budget_period == "plan" and plan.next_reset_at:
        start = plan.next_reset_at
        while start > now:  # step back whole months to the cycle's start
            month = start.month - 1 or 12
            year = start.year - (start.month == 1)
            day = min(start.day, calendar.monthrange(year, month)[1])
            start = start.replace(year=year, month=month, day=day)
        return start
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


_CREDITS = DecimalField(max_digits=16, decimal_places=3)
# What an event counts against a budget: its credits once settled, its estimate while reserved.
_CHARGE = Case(
    When(status=UsageStatus.SETTLED, then=F("credits")),
    When(status=UsageStatus.RESERVED, then=F("estimated_credits")),
    default=Value(Decimal(0)),
    output_field=_CREDITS,
)
_CHARGED = Sum(_CHARGE)
_LOOK_UP = object()


def _charged(**filters) -> Decimal:
    return UsageEvent.objects.filter(**filters).aggregate(total=_CHARGED)["total"] or Decimal(0)


@dataclass(frozen=True)
class Estimate:
    credits: Decimal
    money: Decimal
    unit: str
    rate_source: str
    member_left: Decimal | None  # None: no budget
    workspace_left: Decimal | None  # None: no cap or plan limit
    blocked_by: str | None  # the budget that would refuse it, if any


def usage_estimate(
    *, workspace, user, capability: str, engine: str, model_id: str, units
) -> Estimate:
    """What a call will cost and what is left — what every generate button shows."""
    plan = plan_for(workspace)
    rate = rate_for(workspace, capability, model_id, engine)
    credits = credits_for(rate, units)
    start = period_start(plan)
    limits = _limits(plan, workspace, user, start)
    left = {limit.kind: limit.left for limit in limits}
    blocked = next((limit.name for limit in limits if credits > limit.left), None)
    return Estimate(
        credits=credits,
        money=(credits * plan.price_per_credit).quantize(Decimal("0.000001")),
        unit=rate.unit,
        rate_source=rate.source,
        member_left=left.get("member"),
        workspace_left=left.get("workspace"),
        blocked_by=blocked,
    )


# --- Metering ---------------------------------------------------------------------------


@dataclass
class Reservation:
    event: UsageEvent
    replayed: bool  # the idempotency key was seen before: nothing new was reserved
    plan: Plan | None = None  # as locked by the reservation (its price settles the call)
    member_used: Decimal | None = None  # the member's credits used, this one included
    member_limit: Decimal | None = None  # the member's budget, when they have one


def meter_reserve(
    *,
    workspace,
    user,
    capability: str,
    engine: str,
    model_id: str = "",
    units,
    source: str = UsageSource.UI,
    idempotency_key: str | None = None,
    voice_id: str = "",
    api_key_id: int | None = None,
    api_key_cap: Decimal | None = None,
    purpose: tuple[str, str] | None = None,
    project: str = "",
) -> Reservation:
    """Reserve the estimate, or raise ``BudgetExceeded`` naming the budget that refused it.

    This is on the path of every API call, so it is kept short and out of the ORM's query
    building (see "The ledger in SQL" below): one statement reads the rate cards and the
    member's budget, then one transaction locks the plan row, sums what every limit has
    used in one aggregate and inserts the reservation. A caller's idempotency key is looked
    up first (a repeat returns the first outcome); without one a fresh key is made.

    ``project``: the public id of the project the call is for (the explorer's dimension).
    A local-engine row also records its shadow cost: what the same units would cost on
    ElevenLabs at the workspace's rate card (never charged; see ``_shadow_rate``).
    """
    if idempotency_key is not None:
        existing = UsageEvent.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return Reservation(event=existing, replayed=True)
    default = rates.default_rate(capability, model_id)
    event_values = {
        "api_key_id": api_key_id,
        "source": source,
        "capability": capability,
        "engine": engine,
        "model_id": model_id,
        "voice_id": voice_id,
        "estimated_units": Decimal(str(units)),
        "request_id": uuid.uuid4().hex,
        "idempotency_key": idempotency_key or uuid.uuid4().hex,
        "purpose_type": purpose[0] if purpose else "",
        "purpose_id": str(purpose[1]) if purpose else "",
        "project": project or "",
    }
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        try:
            return _reserve_in_two_trips(
                workspace=workspace,
                user=user,
                default=default,
                units=units,
                api_key_cap=api_key_cap,
                values=event_values,
            )
        except IntegrityError:
            if idempotency_key is None:
                raise
            return Reservation(
                event=UsageEvent.objects.get(idempotency_key=idempotency_key), replayed=True
            )
    # Read before the lock, which they are not under anyway (a budget changes without it).
    # The local engine reads the rate cards too, for its shadow cost.
    overrides, budget_limit = _rate_cards_and_budget(
        workspace.pk, getattr(user, "pk", None), capability, model_id
    )
    rate, shadow = _rates_of(default, capability, model_id, engine, overrides)
    credits = credits_for(rate, units)
    if shadow is not None:
        event_values["shadow_credits"] = credits_for(shadow, units)
    try:
        with transaction.atomic():
            # One lock per workspace: reservations of a workspace are checked one after
            # another, so concurrent calls cannot overspend between the check and the insert.
            plan = _plan_locked(workspace)
            start = period_start(plan)
            limits = []
            if credits > 0:
                limits = _limits(
                    plan, workspace, user, start, api_key_id, api_key_cap, budget=budget_limit
                )
                for limit in limits:
                    if credits > limit.left:
                        raise BudgetExceeded(limit.name, needed=credits, left=limit.left)
            event = _event_insert(
                workspace=workspace,
                user=user,
                unit=rate.unit,
                estimated_credits=credits,
                **event_values,
            )
            event._shadow_rate = shadow  # the settle's shadow rate, without a lookup
    except IntegrityError:
        if idempotency_key is None:
            raise
        # The same key, reserved a moment ago by another request.
        return Reservation(
            event=UsageEvent.objects.get(idempotency_key=idempotency_key), replayed=True
        )
    member = next((limit for limit in limits if limit.kind == "member"), None)
    return Reservation(
        event=event,
        replayed=False,
        plan=plan,
        member_used=(member.used + credits) if member else None,
        member_limit=member.limit if member else None,
    )


def _rates_of(default, capability, model_id, engine, overrides):
    """(the rate charged, the shadow rate or None): on the local engine the call is free and
    its shadow rate is the one it would have on ElevenLabs (``overrides``: the workspace's
    rate cards, as ``_rate_chosen`` takes them); on ElevenLabs there is no shadow."""
    chosen = _rate_chosen(default, capability, model_id, overrides)
    if engine == "local":
        free = rates.Rate(capability, model_id, default.unit, Decimal(0), "local engine: free")
        return free, chosen
    return chosen, None


def _shadow_rate(event: UsageEvent) -> rates.Rate | None:
    """The ElevenLabs rate of a local-engine row (None on other engines): the one its
    reservation used when this process made it, else the rate card in force."""
    if event.engine != "local":
        return None
    rate = getattr(event, "_shadow_rate", None)
    if rate is None:
        rate = rate_for(event.workspace_id, event.capability, event.model_id, "elevenlabs")
    return rate


def _plan_locked(workspace) -> Plan:
    """The workspace's plan row, locked until the transaction ends (created when missing)."""
    plan = _plan_row_locked(workspace.pk)
    if plan is None:
        Plan.objects.get_or_create(workspace=workspace)
        plan = Plan.objects.select_for_update().get(workspace=workspace)
    return plan


@dataclass(frozen=True)
class Limit:
    kind: str  # member | key | workspace | plan
    name: str  # shown to people when it refuses a call
    left: Decimal
    used: Decimal = Decimal(0)
    limit: Decimal = Decimal(0)


def _sum(condition: Q) -> Sum:
    return Sum(_CHARGE, filter=condition, output_field=_CREDITS)


def _limits(
    plan, workspace, user, start, api_key_id=None, api_key_cap=None, *, budget=_LOOK_UP
) -> list[Limit]:
    """Every limit that applies to a call, with what is left of it, in the order checked.

    What each limit has used comes from one aggregate over the workspace's ledger since the
    earliest window (the budget period, or the plan's last sync for the provider's credits).
    ``budget``: the member's budget in credits when the caller read it already (None: none).
    """
    if budget is _LOOK_UP:
        budget = None
        if user is not None:
            budget = (
                Budget.objects.filter(workspace=workspace, user=user)
                .values_list("limit_credits", flat=True)
                .first()
            )
    kinds = _limit_kinds(plan, budget, api_key_id, api_key_cap)
    if not kinds:
        return []
    used = _usage_sums(
        kinds,
        workspace_id=workspace.pk,
        user_id=getattr(user, "pk", None),
        api_key_id=api_key_id,
        start=start,
        since=plan.synced_at or start,
    )
    return _limits_from(used, plan, user, budget, api_key_cap)


def _limit_kinds(plan, budget, api_key_id, api_key_cap) -> tuple[str, ...]:
    """Which limits apply: member (a budget), key (a capped key), workspace (a cap), plan."""
    kinds = []
    if budget is not None:
        kinds.append("member")
    if api_key_id is not None and api_key_cap is not None:
        kinds.append("key")
    if plan.workspace_cap is not None:
        kinds.append("workspace")
    if plan.credit_limit:
        kinds.append("plan")
    return tuple(kinds)


def _limits_from(used: dict, plan, user, budget, api_key_cap) -> list[Limit]:
    """The limits of ``used`` (what each one has used), as ``_limits`` returns them."""
    limits = []
    if "member" in used:
        name = f"{user.display_name}'s budget of {budget:,.0f} credits"
        limits.append(Limit("member", name, budget - used["member"], used["member"], budget))
    if "key" in used:
        name = f"This API key's monthly cap of {api_key_cap:,.0f} credits"
        limits.append(Limit("key", name, api_key_cap - used["key"], used["key"], api_key_cap))
    if "workspace" in used:
        name = f"The workspace's cap of {plan.workspace_cap:,.0f} credits"
        cap = plan.workspace_cap
        limits.append(Limit("workspace", name, cap - used["workspace"], used["workspace"], cap))
    if "plan" in used:
        spent = Decimal(plan.credits_used) + used["plan"]
        name = f"The {plan.tier} plan's {plan.credit_limit:,} credits"
        total = Decimal(plan.credit_limit)
        limits.append(Limit("plan", name, total - spent, spent, total))
    return limits


def meter_settle(
    *,
    event: UsageEvent,
    units=None,
    upstream_credits=None,
    upstream_request_id: str | None = None,
    plan: Plan | None = None,
    check_thresholds: bool = True,
) -> UsageEvent:
    """Settle a reservation with what really happened (the provider's cost wins).

    One conditional UPDATE (only a row still ``reserved`` changes), so a settle never
    counts twice and a late settle of a swept or refunded row changes nothing; the row it
    settles is added to the spend rollup in the same transaction (``_event_settle``).
    ``plan`` (the reservation's) saves looking up the price per credit again. A local-engine
    row's shadow cost is set again on the actual units.
    """
    units = event.estimated_units if units is None else Decimal(str(units))
    credits = _credits_of(event, units)
    upstream = None
    if upstream_credits is not None and event.engine != "local":
        credits = upstream = Decimal(str(upstream_credits)).quantize(CREDIT)
    price = (plan or plan_for(event.workspace)).price_per_credit
    changes = {
        "units": units,
        "credits": credits,
        "money": (credits * price).quantize(Decimal("0.000001")),
        "upstream_request_id": (upstream_request_id or "")[:120],
        "status": UsageStatus.SETTLED,
        "finished_at": timezone.now(),
    }
    if upstream is not None:
        changes["upstream_credits"] = upstream
    shadow = _shadow_rate(event)
    if shadow is not None:
        changes["shadow_credits"] = credits_for(shadow, units)
    updated = _event_settle(event.pk, changes)
    if not updated:  # already settled, refunded or swept: never twice
        return UsageEvent.objects.get(pk=event.pk)
    for name, value in changes.items():
        setattr(event, name, value)
    if check_thresholds:
        transaction.on_commit(lambda: thresholds_check(event=event))
    return event


def _credits_of(event: UsageEvent, units: Decimal) -> Decimal:
    if event.estimated_units:  # the reservation's rate: no second rate lookup
        per_unit = event.estimated_credits / event.estimated_units
        return (units * per_unit).quantize(CREDIT, ROUND_HALF_UP)
    rate = rate_for(event.workspace, event.capability, event.model_id, event.engine)
    return credits_for(rate, units)


def meter_progress(*, event: UsageEvent, units) -> None:
    """Record what a long call has delivered so far (a realtime session's seconds).

    Should its process die before it settles, the sweeper settles on these units; and a row
    that keeps recording is alive, so the sweeper leaves it alone. Call it now and then (a
    few seconds of audio apart), not for every chunk.
    """
    UsageEvent.objects.filter(pk=event.pk, status=UsageStatus.RESERVED).update(
        units_so_far=Decimal(str(units)), progress_at=timezone.now()
    )


def meter_refund(*, event: UsageEvent, note: str = "") -> UsageEvent:
    """Nothing billable happened: release the reservation."""
    updated = UsageEvent.objects.filter(pk=event.pk, status=UsageStatus.RESERVED).update(
        status=UsageStatus.REFUNDED, credits=Decimal(0), note=note[:300], finished_at=timezone.now()
    )
    event.refresh_from_db()
    if not updated:
        log.info("refund of usage %s skipped: already %s", event.pk, event.status)
    return event


def meter_charge_late(
    *,
    event: UsageEvent,
    units,
    api_key_cap: Decimal | None = None,
    upstream_credits=None,
    upstream_request_id: str | None = None,
) -> UsageEvent | None:
    """Charge what a reservation closed before its caller settled it did not: the settled
    ``…:late`` row, or None when nothing is owed or the budget refuses it.

    ``event`` is the row as the caller's settle left it, ``units`` what the call delivered.
    A row the caller settled itself owes nothing; one the sweeper settled on the units
    recorded so far (``meter_progress``) owes the rest; one failed or refunded owes all.
    The call happened all the same, so the rest is reserved and settled on a row of its
    own, with the same key plus ``:late`` (a repeat finds that row and settles nothing
    twice). A budget spent meanwhile refuses it: logged, and left unpaid.
    """
    rest = Decimal(str(units))
    if event.status == UsageStatus.SETTLED:
        if not event.flagged:
            return None  # settled by its caller
        rest -= event.units or Decimal(0)  # the sweeper charged what was recorded
        if rest <= 0:
            return None
    try:
        late = meter_reserve(
            workspace=event.workspace,
            user=event.user,
            capability=event.capability,
            engine=event.engine,
            model_id=event.model_id,
            units=rest,
            source=event.source,
            idempotency_key=f"{event.idempotency_key}:late",
            voice_id=event.voice_id,
            api_key_id=event.api_key_id,
            api_key_cap=api_key_cap,
            purpose=(event.purpose_type, event.purpose_id) if event.purpose_type else None,
            project=event.project,
        )
    except BudgetExceeded:
        log.error(
            "%s usage %s was closed before it settled: %s units left unpaid",
            event.capability,
            event.pk,
            rest,
        )
        return None
    return meter_settle(
        event=late.event,
        units=rest,
        upstream_credits=upstream_credits,
        upstream_request_id=upstream_request_id,
        plan=late.plan,
    )


class Meter:
    """Handed to the body of ``metered``: settle once the call has produced something."""

    def __init__(self, reservation: Reservation):
        self.reservation = reservation
        self.event = reservation.event
        self.settled = False

    @property
    def replayed(self) -> bool:
        return self.reservation.replayed

    def settle(self, *, units=None, info=None) -> UsageEvent:
        reservation = self.reservation
        self.event = meter_settle(
            event=self.event,
            units=units,
            upstream_credits=getattr(info, "character_cost", None),
            upstream_request_id=getattr(info, "request_id", None),
            plan=reservation.plan,
            check_thresholds=False,
        )
        self.settled = True
        if _may_cross_threshold(reservation, self.event):
            event = self.event
            transaction.on_commit(lambda: thresholds_check(event=event))
        return self.event


def _may_cross_threshold(reservation: Reservation, event: UsageEvent) -> bool:
    """Whether the member's soft thresholds need checking after this settle.

    Reservations are taken one after another under the plan lock, and each knows what its
    member had used including every reservation before it; a member below
    ``THRESHOLD_MARGIN`` of the first threshold then cannot have crossed one (the settle
    can only move their total by this call's difference from its estimate, added here).
    Without a budget there is nothing to check. A replay or unknown state checks exactly.
    """
    if event.status != UsageStatus.SETTLED or event.user_id is None:
        return False
    if reservation.replayed or reservation.plan is None:
        return True
    if reservation.member_limit is None:
        return False  # the member had no budget when the call was reserved
    if reservation.member_limit <= 0:
        return False
    used = reservation.member_used + max(Decimal(0), event.credits - event.estimated_credits)
    return used * 100 >= reservation.member_limit * THRESHOLDS[0] * THRESHOLD_MARGIN


@contextmanager
def metered(**reserve_kwargs):
    """Reserve → run the body → settle (the body calls ``meter.settle``) or refund."""
    reservation = meter_reserve(**reserve_kwargs)
    meter = Meter(reservation)
    try:
        yield meter
    except BaseException as exc:
        if not reservation.replayed and not meter.settled:
            meter_refund(event=reservation.event, note=f"{exc.__class__.__name__}: {exc}")
        raise
    if not reservation.replayed and not meter.settled:
        meter_refund(event=reservation.event, note="the call produced nothing billable")


def reservations_sweep(*, older_than: timedelta | None = None) -> int:
    """Close reservations whose process died, flagging them in the ledger; how many.

    A reservation is stale once nothing has been heard of it for the TTL: since it was made,
    or since it last recorded its progress (``meter_progress``). One that recorded units is
    settled on them (a realtime session whose socket died is charged the seconds it had
    received); any other is failed at 0, since nothing is known to have been delivered.
    """
    age = older_than or timedelta(seconds=settings.CHORUS_RESERVATION_TTL_SECONDS)
    cutoff = timezone.now() - age
    stale = UsageEvent.objects.filter(status=UsageStatus.RESERVED).filter(
        Q(progress_at__isnull=True, created_at__lt=cutoff) | Q(progress_at__lt=cutoff)
    )
    swept = 0
    for event in stale.filter(units_so_far__gt=0).select_related("workspace"):
        credits = _credits_of(event, event.units_so_far)
        price = plan_for(event.workspace).price_per_credit
        changes = {
            "units": event.units_so_far,
            "credits": credits,
            "money": (credits * price).quantize(Decimal("0.000001")),
            "status": UsageStatus.SETTLED,
            "flagged": True,
            "note": (
                "Settled by the sweeper on the units its process had recorded: it stopped "
                "before settling."
            ),
            "finished_at": timezone.now(),
        }
        shadow = _shadow_rate(event)
        if shadow is not None:
            changes["shadow_credits"] = credits_for(shadow, event.units_so_far)
        settled = _event_settle(event.pk, changes)  # with its rollup row
        if settled:  # the member may have crossed a threshold with it
            thresholds_check(event=event)
        swept += settled
    return swept + stale.update(
        status=UsageStatus.FAILED,
        credits=Decimal(0),
        flagged=True,
        note="Released by the sweeper: the process that reserved it never settled.",
        finished_at=timezone.now(),
    )


# --- The ledger in SQL ------------------------------------------------------------------
# ``meter_reserve`` and ``meter_settle`` run on every API call. Built by the ORM, their six
# statements cost more CPU to compile than the database took to run them (and a reservation
# compiled them while holding its workspace's plan lock). These are the same statements,
# written once per process from the models' own table and column names; values go in and
# come out through the fields, as the ORM passes them (``get_db_prep_save``, the backend's
# converters), so SQLite and PostgreSQL read and write the same values.


class _Table:
    """A model's concrete fields, to read and write its rows in hand-written SQL."""

    def __init__(self, model):
        ops = connection.ops
        meta = model._meta
        self.model = model
        self.name = ops.quote_name(meta.db_table)
        self.fields = list(meta.concrete_fields)
        self.attnames = [f.attname for f in self.fields]
        self.by_name = {f.name: f for f in self.fields}
        self.columns = {f.attname: ops.quote_name(f.column) for f in self.fields}
        self.pk = ops.quote_name(meta.pk.column)
        self.select = ", ".join(self.columns[name] for name in self.attnames)
        self.converters = []
        for index, field in enumerate(self.fields):
            col = field.get_col(meta.db_table)
            found = ops.get_db_converters(col) + col.get_db_converters(connection)
            if found:
                self.converters.append((index, found, col))
        self.insert_fields = [f for f in self.fields if not f.primary_key]
        # By attname, the one type of value a field hands to the database unchanged (its
        # ``get_db_prep_save`` returns it as it is): ``prep`` skips the field for those.
        self.plain = {f.attname: _PLAIN.get(type(_target(f))) for f in self.fields}

    def load(self, row):
        """A model instance from a row of ``self.select``."""
        values = list(row)
        for index, converters, col in self.converters:
            for converter in converters:
                values[index] = converter(values[index], col, connection)
        return self.model.from_db(connection.alias, self.attnames, values)

    def prep(self, field, value):
        if value is None or type(value) is self.plain[field.attname]:
            return value  # what get_db_prep_save would give (a str, int or bool as it is)
        return field.get_db_prep_save(value, connection)


# Django's own field classes (exactly these: a subclass may convert) whose database value is
# the value itself when it already has this type (None stays None for every field).
_PLAIN = {
    models.CharField: str,
    models.TextField: str,
    models.BooleanField: bool,
    models.IntegerField: int,
    models.BigIntegerField: int,
    models.PositiveIntegerField: int,
    models.PositiveBigIntegerField: int,
    models.AutoField: int,
    models.BigAutoField: int,
}


def _target(field):
    """The field whose values a foreign key holds (itself for other fields)."""
    return field.target_field if field.is_relation and field.many_to_one else field


@functools.cache
def _table(model, vendor: str) -> _Table:
    return _Table(model)


def _t(model) -> _Table:
    return _table(model, connection.vendor)


def _decimal(value, places: int = 3) -> Decimal:
    """A number the database summed: exact on PostgreSQL, a float on SQLite (rounded as the
    ORM rounds it there)."""
    if value is None:
        return Decimal(0)
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    return value.quantize(Decimal(1).scaleb(-places))


def _rate_cards_and_budget_query(workspace_id, user_id, capability: str, model_id: str):
    cards, budgets = _t(RateCard), _t(Budget)
    c, b = cards.columns, budgets.columns
    sql = (
        f"SELECT 0, {c['model_id']}, {c['unit']}, {c['credits_per_unit']} FROM {cards.name}"  # noqa: S608 (names from _meta; values are parameters)
        f" WHERE {c['workspace_id']} = %s AND {c['capability']} = %s"
        f" AND {c['model_id']} IN (%s, %s)"
        f" UNION ALL SELECT 1, '', '', {b['limit_credits']} FROM {budgets.name}"
        f" WHERE {b['workspace_id']} = %s AND {b['user_id']} = %s"
    )
    return sql, [workspace_id, capability, model_id, "", workspace_id, user_id]


def _rate_cards_and_budget_rows(rows):
    overrides, budget = {}, None
    for kind, row_model_id, unit, amount in rows:
        if kind == 0:
            overrides[row_model_id] = (unit, _decimal(amount, 6))
        else:
            budget = _decimal(amount, 3)
    return overrides, budget


def _rate_cards_and_budget(workspace_id, user_id, capability: str, model_id: str):
    """({model id: (unit, credits per unit)} of the workspace's rate cards for this model and
    the catch-all, the member's budget in credits or None), in one statement."""
    sql, args = _rate_cards_and_budget_query(workspace_id, user_id, capability, model_id)
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return _rate_cards_and_budget_rows(cursor.fetchall())


def _plan_row_locked(workspace_id) -> Plan | None:
    """The plan row of the workspace, locked until the transaction ends; None when missing."""
    plans = _t(Plan)
    where = plans.columns["workspace_id"]
    sql = f"SELECT {plans.select} FROM {plans.name} WHERE {where} = %s"  # noqa: S608 (names from _meta; values are parameters)
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [workspace_id])
        row = cursor.fetchone()
    return None if row is None else plans.load(row)


@functools.cache
def _usage_sums_sql(kinds: tuple[str, ...], vendor: str) -> str:
    events = _t(UsageEvent)
    c = events.columns
    charge = (
        f"CASE WHEN {c['status']} = '{UsageStatus.SETTLED.value}' THEN {c['credits']}"
        f" WHEN {c['status']} = '{UsageStatus.RESERVED.value}' THEN {c['estimated_credits']}"
        " ELSE 0 END"
    )
    where = {
        "member": f"{c['created_at']} >= %s AND {c['user_id']} = %s",
        "key": f"{c['created_at']} >= %s AND {c['api_key_id']} = %s",
        "workspace": f"{c['created_at']} >= %s",
        "plan": f"{c['created_at']} >= %s AND {c['engine']} = 'elevenlabs'",
    }
    sums = ", ".join(
        f"SUM(CASE WHEN {where[kind]} THEN {charge} END) AS u{index}"
        for index, kind in enumerate(kinds)
    )
    return (
        f"SELECT {sums} FROM {events.name}"  # noqa: S608 (names from _meta; values are parameters)
        f" WHERE {c['workspace_id']} = %s AND {c['created_at']} >= %s"
    )


def _usage_sums_query(kinds, *, workspace_id, user_id, api_key_id, start, since):
    adapt = connection.ops.adapt_datetimefield_value
    start_db, since_db = adapt(start), adapt(since)
    params = {
        "member": [start_db, user_id],
        "key": [start_db, api_key_id],
        "workspace": [start_db],
        "plan": [since_db],
    }
    args = [value for kind in kinds for value in params[kind]]
    args += [workspace_id, adapt(min(start, since))]
    return _usage_sums_sql(kinds, connection.vendor), args


def _usage_sums(kinds, **query) -> dict:
    """What each limit in ``kinds`` has used (member, key, workspace, plan), in one aggregate."""
    sql, args = _usage_sums_query(kinds, **query)
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        row = cursor.fetchone()
    return {kind: _decimal(value) for kind, value in zip(kinds, row, strict=True)}


def _event_insert(*, workspace, user, **values) -> UsageEvent:
    """``UsageEvent.objects.create(...)`` in one INSERT, without the ORM's query building.

    UsageEvent has no save signals; every field not given takes its default, as ``create``
    gives it.
    """
    events = _t(UsageEvent)
    row = _event_row(workspace, user, values)
    columns = ", ".join(events.columns[name] for name in row)
    marks = ", ".join(["%s"] * len(row))
    sql = f"INSERT INTO {events.name} ({columns}) VALUES ({marks})"  # noqa: S608 (names from _meta; values are parameters)
    returning = connection.features.can_return_columns_from_insert
    if returning:
        sql += f" RETURNING {events.pk}"
    args = [events.prep(field, row[field.attname]) for field in events.insert_fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        pk = cursor.fetchone()[0] if returning else cursor.lastrowid
    return _event_loaded(workspace, user, row, pk)


def _event_settle(pk, changes: dict) -> int:
    """``UsageEvent.objects.filter(pk=pk, status=RESERVED).update(**changes)`` (``changes``
    settling it) and the settled row added to the spend rollup, in one transaction: 1 when
    the row was still reserved, else 0 (and nothing added).

    PostgreSQL: one statement (the UPDATE in a CTE feeding the rollup's upsert), so a settle
    still costs one round trip. Elsewhere: the UPDATE, then when it changed the row a second
    statement adds it, both inside ``atomic()``.
    """
    events = _t(UsageEvent)
    fields = events.by_name
    sql = _event_update_reserved_sql(tuple(changes), connection.vendor)
    args = [events.prep(fields[name], value) for name, value in changes.items()]
    args += [pk, UsageStatus.RESERVED.value]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(rollup.settle_sql(sql, connection.vendor), args)
            return cursor.rowcount
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            updated = cursor.rowcount
        if updated:
            rollup.row_add(pk)
    return updated


@functools.cache
def _event_update_reserved_sql(names: tuple[str, ...], vendor: str) -> str:
    """``UPDATE`` of the fields ``names`` of one ledger row (``pk = %s``) still reserved."""
    events = _t(UsageEvent)
    fields = events.by_name
    sets = ", ".join(f"{events.columns[fields[name].attname]} = %s" for name in names)
    return (
        f"UPDATE {events.name} SET {sets}"  # noqa: S608 (names from _meta; values are parameters)
        f" WHERE {events.pk} = %s AND {events.columns['status']} = %s"
    )


def _event_row(workspace, user, values: dict) -> dict:
    """Every column of a new UsageEvent (by attname): ``values``, else the field's default."""
    values = {
        **values,
        "workspace_id": workspace.pk,
        "user_id": getattr(user, "pk", None),
        "created_at": timezone.now(),  # auto_now_add
    }
    return {
        field.attname: values[field.attname] if field.attname in values else field.get_default()
        for field in _t(UsageEvent).insert_fields
    }


def _event_loaded(workspace, user, row: dict, pk) -> UsageEvent:
    events = _t(UsageEvent)
    row = {**row, UsageEvent._meta.pk.attname: pk}
    event = UsageEvent.from_db(connection.alias, events.attnames, [row[n] for n in events.attnames])
    event.workspace = workspace  # the caller's instances, as ``create`` keeps them
    event.user = user
    return event


def _reserve_in_two_trips(*, workspace, user, default, units, api_key_cap, values) -> Reservation:
    """``meter_reserve`` on PostgreSQL outside a transaction, in two round trips.

    1. The plan, the rate cards and the member's budget (two statements, one message).
    2. One message, one implicit transaction: lock the plan row; then one statement that sums
       what every limit has used and inserts the reservation only if none is exceeded
       (returning the sums either way). Each statement of a message reads what was committed
       when it began (READ COMMITTED), so the sums see every reservation made before the lock
       was granted, and the lock is held for the server's work only — not for a round trip
       per statement, each waiting for this process's GIL between them, which had made the
       lock (not the database) the pace of a busy workspace.
    The plan's settings (period, caps) are those read in the first trip: a change made in
    between applies from the next call, as if made after this one.
    """
    user_id = getattr(user, "pk", None)
    capability, model_id = values["capability"], values["model_id"]
    plan, overrides, budget = _plan_rates_budget(workspace.pk, user_id, capability, model_id)
    if plan is None:
        plan_for(workspace)  # the first call of a workspace: its plan row is made
        plan, overrides, budget = _plan_rates_budget(workspace.pk, user_id, capability, model_id)
    rate, shadow = _rates_of(default, capability, model_id, values["engine"], overrides)
    credits = credits_for(rate, units)
    if shadow is not None:
        values = {**values, "shadow_credits": credits_for(shadow, units)}
    kinds = _limit_kinds(plan, budget, values["api_key_id"], api_key_cap) if credits > 0 else ()
    row = _event_row(workspace, user, {**values, "unit": rate.unit, "estimated_credits": credits})
    events = _t(UsageEvent)
    columns = ", ".join(events.columns[name] for name in row)
    args = [events.prep(field, row[field.attname]) for field in events.insert_fields]
    if not kinds:  # nothing to check: no lock
        marks = ", ".join(["%s"] * len(row))
        sql = f"INSERT INTO {events.name} ({columns}) VALUES ({marks}) RETURNING {events.pk}"  # noqa: S608 (names from _meta; values are parameters)
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            pk = cursor.fetchone()[0]
        event = _event_loaded(workspace, user, row, pk)
        event._shadow_rate = shadow  # the settle's shadow rate, without a lookup
        return Reservation(event=event, replayed=False, plan=plan)
    start = period_start(plan)
    since = plan.synced_at or start
    sums_sql, sums_args = _usage_sums_query(
        kinds,
        workspace_id=workspace.pk,
        user_id=user_id,
        api_key_id=values["api_key_id"],
        start=start,
        since=since,
    )
    # Within every limit: credits <= limit - used (the plan's: credit_limit - credits_used - used).
    allowed = {
        "member": (budget, Decimal(0)),
        "key": (api_key_cap, Decimal(0)),
        "workspace": (plan.workspace_cap, Decimal(0)),
        "plan": (Decimal(plan.credit_limit), Decimal(plan.credits_used)),
    }
    check_args = [value for kind in kinds for value in (credits, *allowed[kind])]
    sql = _reserve_sql(kinds, sums_sql, connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, [workspace.pk, *sums_args, *args, *check_args])
        cursor.nextset()
        *sums, pk = cursor.fetchone()
    used = {kind: _decimal(value) for kind, value in zip(kinds, sums, strict=True)}
    limits = _limits_from(used, plan, user, budget, api_key_cap)
    if pk is None:
        refusal = next(limit for limit in limits if credits > limit.left)
        raise BudgetExceeded(refusal.name, needed=credits, left=refusal.left)
    member = next((limit for limit in limits if limit.kind == "member"), None)
    event = _event_loaded(workspace, user, row, pk)
    event._shadow_rate = shadow  # the settle's shadow rate, without a lookup
    return Reservation(
        event=event,
        replayed=False,
        plan=plan,
        member_used=(member.used + credits) if member else None,
        member_limit=member.limit if member else None,
    )


@functools.cache
def _reserve_sql(kinds: tuple[str, ...], sums_sql: str, vendor: str) -> str:
    """The second trip of ``_reserve_in_two_trips`` (PostgreSQL)."""
    events, plans = _t(UsageEvent), _t(Plan)
    columns = ", ".join(events.columns[field.attname] for field in events.insert_fields)
    casts = ", ".join(f"CAST(%s AS {f.db_type(connection)})" for f in events.insert_fields)
    checks = " AND ".join(
        f"%s <= %s - %s - COALESCE(used.u{index}, 0)" for index in range(len(kinds))
    )
    return (
        f"SELECT 1 FROM {plans.name} WHERE {plans.columns['workspace_id']} = %s FOR UPDATE; "  # noqa: S608 (names from _meta; values are parameters)
        f"WITH used AS ({sums_sql}),"
        f" made AS (INSERT INTO {events.name} ({columns}) SELECT {casts} FROM used"
        f" WHERE {checks} RETURNING {events.pk})"
        f" SELECT used.*, (SELECT {events.pk} FROM made) FROM used"
    )


def _plan_rates_budget(workspace_id, user_id, capability, model_id):
    """(the plan or None, the rate cards, the member's budget) in one message (PostgreSQL).
    The local engine reads the rate cards too: its rows record their shadow cost."""
    plans = _t(Plan)
    where = plans.columns["workspace_id"]
    sql = f"SELECT {plans.select} FROM {plans.name} WHERE {where} = %s"  # noqa: S608 (names from _meta; values are parameters)
    cards_sql, cards_args = _rate_cards_and_budget_query(
        workspace_id, user_id, capability, model_id
    )
    sql += "; " + cards_sql
    args = [workspace_id, *cards_args]
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        row = cursor.fetchone()
        rows = cursor.fetchall() if cursor.nextset() else []
    plan = None if row is None else plans.load(row)
    overrides, budget = _rate_cards_and_budget_rows(rows)
    return plan, overrides, budget


# --- Soft thresholds --------------------------------------------------------------------


def thresholds_check(*, event: UsageEvent) -> list[int]:
    """Tell the member and the managers once per threshold per period (in-app and e-mail)."""
    if event.user_id is None:
        return []
    budget = Budget.objects.filter(workspace=event.workspace, user_id=event.user_id).first()
    if budget is None or budget.limit_credits <= 0:
        return []
    plan = plan_for(event.workspace)
    start = period_start(plan)
    used = _charged(workspace=event.workspace, user_id=event.user_id, created_at__gte=start)
    share = used / budget.limit_credits * 100
    crossed = []
    for threshold in THRESHOLDS:
        if share < threshold:
            continue
        try:
            with transaction.atomic():
                ThresholdNotice.objects.create(
                    workspace=event.workspace,
                    user_id=event.user_id,
                    threshold=threshold,
                    period_start=start,
                )
        except IntegrityError:
            continue  # already told this period
        crossed.append(threshold)
        _notify(event, budget, threshold, used)
    return crossed


def _notify(event: UsageEvent, budget: Budget, threshold: int, used: Decimal) -> None:
    member = budget.user
    text = (
        f"{member.display_name} has used {threshold}% of their budget "
        f"({used:,.0f} of {budget.limit_credits:,.0f} credits this period)."
    )
    managers = Membership.objects.filter(
        workspace=event.workspace, role__in=[Role.OWNER, Role.MANAGER]
    ).select_related("user")
    recipients = {member.pk: member, **{m.user_id: m.user for m in managers}}
    for user in recipients.values():
        Notification.objects.create(workspace=event.workspace, user=user, text=text)
    send_mail(
        subject=f"Chorus: {threshold}% of a budget used in {event.workspace.name}",
        message=text,
        from_email=None,
        recipient_list=[u.email for u in recipients.values()],
        fail_silently=True,
    )


# --- Settings: budgets, plan, rates -------------------------------------------------------


@dataclass(frozen=True)
class MemberUsage:
    used: Decimal
    budget: Budget | None
    left: Decimal | None
    period_start: datetime

    @property
    def percent(self) -> int | None:
        if self.budget is None or self.budget.limit_credits <= 0:
            return None
        return min(100, int(self.used / self.budget.limit_credits * 100))


def member_usage(*, workspace, user) -> MemberUsage:
    plan = plan_for(workspace)
    start = period_start(plan)
    used = _charged(workspace=workspace, user=user, created_at__gte=start)
    budget = Budget.objects.filter(workspace=workspace, user=user).first()
    left = budget.limit_credits - used if budget else None
    return MemberUsage(used=used, budget=budget, left=left, period_start=start)


def workspace_usage(*, workspace) -> Decimal:
    return _charged(workspace=workspace, created_at__gte=period_start(plan_for(workspace)))


@transaction.atomic
def budget_set(*, workspace, user, limit, actor, ip=None) -> Budget | None:
    """Set (or with ``None`` remove) a member's budget; audited."""
    from apps.workspaces.services import audit_record

    old = Budget.objects.filter(workspace=workspace, user=user).first()
    if limit is None:
        if old is not None:
            old.delete()
        budget = None
    else:
        budget, _ = Budget.objects.update_or_create(
            workspace=workspace, user=user, defaults={"limit_credits": limit}
        )
    audit_record(
        workspace=workspace,
        actor=actor,
        action="budget.changed",
        target=user.email,
        data={
            "from": str(old.limit_credits) if old else None,
            "to": str(limit) if limit is not None else None,
        },
        ip=ip,
    )
    return budget


@transaction.atomic
def plan_settings_update(
    *, workspace, budget_period, workspace_cap, credit_limit, actor, ip=None
) -> Plan:
    from apps.workspaces.services import audit_record

    plan = plan_for(workspace)
    plan.budget_period = budget_period
    plan.workspace_cap = workspace_cap
    if plan.source == "virtual" and credit_limit is not None:
        plan.credit_limit = credit_limit
    plan.save()
    audit_record(
        workspace=workspace,
        actor=actor,
        action="plan.settings_changed",
        target=plan.tier,
        data={
            "budget_period": budget_period,
            "workspace_cap": str(workspace_cap) if workspace_cap is not None else None,
            "credit_limit": plan.credit_limit,
        },
        ip=ip,
    )
    return plan


@transaction.atomic
def rate_set(*, workspace, capability, model_id, unit, credits_per_unit, actor, ip=None):
    from apps.workspaces.services import audit_record

    row, _ = RateCard.objects.update_or_create(
        workspace=workspace,
        capability=capability,
        model_id=model_id,
        defaults={"unit": unit, "credits_per_unit": credits_per_unit, "updated_by": actor},
    )
    audit_record(
        workspace=workspace,
        actor=actor,
        action="rate.changed",
        target=f"{capability}/{model_id or '*'}",
        data={"unit": unit, "credits_per_unit": str(credits_per_unit)},
        ip=ip,
    )
    return row


@transaction.atomic
def rate_delete(*, row: RateCard, actor, ip=None) -> None:
    from apps.workspaces.services import audit_record

    target = f"{row.capability}/{row.model_id or '*'}"
    row.delete()
    audit_record(workspace=row.workspace, actor=actor, action="rate.reset", target=target, ip=ip)


# --- Job approval thresholds (issue 16) -----------------------------------------------------


def job_threshold(workspace, capability: str) -> Decimal | None:
    """Credits above which a member's job of ``capability`` waits for a manager (the spend
    settings' ``job_thresholds``); None: such jobs never wait."""
    from .models import SpendSettings

    row = SpendSettings.objects.filter(workspace=workspace).values("job_thresholds").first()
    raw = ((row or {}).get("job_thresholds") or {}).get(capability)
    return None if raw in (None, "") else Decimal(str(raw))


def notify(*, workspace, users, text: str, url: str = "") -> None:
    """An in-app notice (``Notification``) for each of ``users``."""
    Notification.objects.bulk_create(
        Notification(workspace=workspace, user=user, text=text[:300], url=url[:200])
        for user in {user.pk: user for user in users if user is not None}.values()
    )
