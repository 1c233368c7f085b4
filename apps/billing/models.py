"""The plan, rate card, budgets, notifications and the usage ledger of a workspace."""

from decimal import Decimal

from django.conf import settings
from django.db import models

from .rates import CAPABILITIES, UNITS


class BudgetPeriod(models.TextChoices):
    MONTH = "month", "Calendar month"
    PLAN = "plan", "Aligned to the plan's reset"


class Plan(models.Model):
    """The workspace's credits: synced from the provider, or a virtual plan for local."""

    workspace = models.OneToOneField(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="plan"
    )
    tier = models.CharField(max_length=40, default="local")
    credit_limit = models.PositiveBigIntegerField(default=0)  # 0: no limit (local drafts)
    credits_used = models.PositiveBigIntegerField(default=0)  # as the provider last said
    next_reset_at = models.DateTimeField(null=True, blank=True)
    price_per_credit = models.DecimalField(max_digits=14, decimal_places=7, default=Decimal(0))
    currency = models.CharField(max_length=8, default="usd")
    source = models.CharField(max_length=16, default="virtual")  # virtual | elevenlabs
    budget_period = models.CharField(
        max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH
    )
    workspace_cap = models.DecimalField(
        max_digits=16, decimal_places=3, null=True, blank=True
    )  # optional cap of the whole workspace per period, in credits
    synced_at = models.DateTimeField(null=True, blank=True)
    sync_error = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"{self.workspace}: {self.tier}"


class RateCard(models.Model):
    """An owner's override of a default rate (``rates.DEFAULT_RATES``)."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="rates"
    )
    capability = models.CharField(max_length=32, choices=list(CAPABILITIES.items()))
    model_id = models.CharField(max_length=80, blank=True)
    unit = models.CharField(max_length=16, choices=[(u, u) for u in UNITS])
    credits_per_unit = models.DecimalField(max_digits=14, decimal_places=6)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "capability", "model_id"], name="one_rate_per_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.capability}/{self.model_id or '*'}: {self.credits_per_unit}/{self.unit}"


class Budget(models.Model):
    """A member's credit budget per period (hard limit; notices at 50/80/100 %)."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="budgets"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budgets"
    )
    limit_credits = models.DecimalField(max_digits=16, decimal_places=3)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "user"], name="one_budget_per_member")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace}: {self.limit_credits}"


class UsageStatus(models.TextChoices):
    RESERVED = "reserved", "Reserved"
    SETTLED = "settled", "Settled"
    REFUNDED = "refunded", "Refunded"
    FAILED = "failed", "Failed"


class UsageSource(models.TextChoices):
    UI = "ui", "Studio"
    API = "api", "API"
    JOB = "job", "Job"


class UsageEvent(models.Model):
    """One billable engine call. Append-only: a row changes only from reserved to its end."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="usage_events"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    source = models.CharField(max_length=8, choices=UsageSource.choices)
    capability = models.CharField(max_length=32)
    engine = models.CharField(max_length=16)
    model_id = models.CharField(max_length=80, blank=True)
    voice_id = models.CharField(max_length=120, blank=True)
    unit = models.CharField(max_length=16)
    estimated_units = models.DecimalField(max_digits=16, decimal_places=3)
    units = models.DecimalField(max_digits=16, decimal_places=3, null=True, blank=True)
    estimated_credits = models.DecimalField(max_digits=16, decimal_places=3)
    credits = models.DecimalField(max_digits=16, decimal_places=3, null=True, blank=True)
    upstream_credits = models.DecimalField(
        max_digits=16, decimal_places=3, null=True, blank=True
    )  # the provider's character-cost, when it said
    money = models.DecimalField(max_digits=16, decimal_places=6, default=Decimal(0))
    upstream_request_id = models.CharField(max_length=120, blank=True)
    request_id = models.CharField(max_length=64, db_index=True)
    idempotency_key = models.CharField(max_length=200, unique=True)
    status = models.CharField(
        max_length=12, choices=UsageStatus.choices, default=UsageStatus.RESERVED, db_index=True
    )
    flagged = models.BooleanField(default=False)  # closed by the sweeper (failed or settled)
    # A long call (a realtime session) records what it has delivered as it goes, so a sweep
    # after its process died settles on that instead of failing it at 0.
    units_so_far = models.DecimalField(max_digits=16, decimal_places=3, null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)  # when it was last recorded
    note = models.CharField(max_length=300, blank=True)
    purpose_type = models.CharField(max_length=40, blank=True)
    purpose_id = models.CharField(max_length=64, blank=True)
    # The project the call was for (its public id; blank for none): the spend explorer's
    # "project" dimension. Billing stores it as a string; apps.projects passes it.
    project = models.CharField(max_length=64, blank=True)
    # Local-engine rows: what the same call would have cost on ElevenLabs at the rate card
    # (the explorer's "what it would have cost"); None on ElevenLabs rows. Never charged.
    shadow_credits = models.DecimalField(max_digits=16, decimal_places=3, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["workspace", "user", "created_at"]),
            models.Index(fields=["workspace", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.capability} {self.status} {self.charged} credits"

    @property
    def charged(self) -> Decimal:
        """What counts against budgets: the reservation while open, the actual once settled."""
        if self.status == UsageStatus.SETTLED:
            return self.credits or Decimal(0)
        if self.status == UsageStatus.RESERVED:
            return self.estimated_credits
        return Decimal(0)


class ThresholdNotice(models.Model):
    """A soft threshold crossed once in a period (so people are told once, not every call)."""

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )  # None: the workspace cap
    threshold = models.PositiveSmallIntegerField()
    period_start = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "user", "threshold", "period_start"],
                name="one_notice_per_threshold_and_period",
            )
        ]

    def __str__(self) -> str:
        return f"{self.threshold}% notice for {self.user or 'the workspace'}"


class Notification(models.Model):
    """An in-app notice for one person (budget thresholds; later: approvals, jobs…)."""

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    text = models.CharField(max_length=300)
    url = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.text


# --- The spend review (issue 16) -------------------------------------------------------------


class SpendRollup(models.Model):
    """The settled ledger summed per UTC hour × member × personal key × capability × model ×
    voice × project × source × engine: what the spend explorer reads. Written in the same
    transaction as each settle (``services.meter_settle``, the sweeper), so it never
    disagrees with the rows; ``manage.py spend_rollup_rebuild`` rebuilds it from the ledger.

    ``user_id`` and ``api_key_id`` are plain numbers, 0 for none (a unique key over nullable
    columns would let two "none" rows apart on PostgreSQL)."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="spend_rollups"
    )
    hour = models.DateTimeField()  # the start of the UTC hour the calls were made in
    user_id = models.BigIntegerField(default=0)
    api_key_id = models.BigIntegerField(default=0)
    capability = models.CharField(max_length=32)
    model_id = models.CharField(max_length=80, blank=True)
    voice_id = models.CharField(max_length=120, blank=True)
    project = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=8)
    engine = models.CharField(max_length=16)
    events = models.PositiveIntegerField(default=0)  # settled ledger rows
    units = models.DecimalField(max_digits=20, decimal_places=3, default=Decimal(0))
    credits = models.DecimalField(max_digits=20, decimal_places=3, default=Decimal(0))
    money = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))
    shadow_credits = models.DecimalField(max_digits=20, decimal_places=3, default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "workspace", "hour", "user_id", "api_key_id", "capability", "model_id",
                    "voice_id", "project", "source", "engine",
                ],
                name="one_rollup_row_per_hour_and_dimensions",
            )
        ]  # fmt: skip
        indexes = [
            models.Index(fields=["workspace", "hour"]),
            models.Index(fields=["workspace", "user_id", "hour"]),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.capability}: {self.credits}"


class SpendDimension(models.TextChoices):
    """What a ``SpendDay`` row sums over: one of the explorer's dimensions, or everything."""

    MEMBER = "member"
    PROJECT = "project"
    CAPABILITY = "capability"
    MODEL = "model"
    VOICE = "voice"
    KEY = "key"
    SOURCE = "source"
    ENGINE = "engine"
    TOTAL = "total"


class SpendDay(models.Model):
    """The settled ledger summed per UTC day and ONE dimension's value (a narrow rollup: a
    day has a row per member, a row per project… and one ``total`` row), so a view grouped
    by one dimension (or none) reads a few rows per day instead of the hourly rollup's
    every combination. Kept in step in the same statement (PostgreSQL) or transaction as
    ``SpendRollup`` (``billing.rollup``) and rebuilt with it.

    ``value`` is the dimension's value as text: member and key ids as digits, "" for none
    (no member, no key, no project…); the ``total`` row's value is ""."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="spend_days"
    )
    day = models.DateField()  # the UTC date the calls were made on
    dimension = models.CharField(max_length=16, choices=SpendDimension.choices)
    value = models.CharField(max_length=120, blank=True)
    events = models.PositiveIntegerField(default=0)
    units = models.DecimalField(max_digits=20, decimal_places=3, default=Decimal(0))
    credits = models.DecimalField(max_digits=20, decimal_places=3, default=Decimal(0))
    money = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))
    shadow_credits = models.DecimalField(max_digits=20, decimal_places=3, default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "day", "dimension", "value"],
                name="one_spend_day_row_per_dimension_value",
            )
        ]
        indexes = [models.Index(fields=["workspace", "dimension", "day"])]

    def __str__(self) -> str:
        return f"{self.day} {self.dimension}={self.value}: {self.credits}"


class SpendSettings(models.Model):
    """What managers set for the spend review of a workspace."""

    workspace = models.OneToOneField(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="spend_settings"
    )
    # A member's day above this many times their trailing 14-day median is flagged.
    anomaly_factor = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal(3))
    # Working hours (in ``time_zone``): spend outside them above ``off_hours_credits`` in
    # an hour is flagged as bulk spend.
    time_zone = models.CharField(max_length=64, default="UTC")
    work_start_hour = models.PositiveSmallIntegerField(default=8)
    work_end_hour = models.PositiveSmallIntegerField(default=19)
    work_days = models.CharField(max_length=16, default="01234")  # Monday is 0
    off_hours_credits = models.DecimalField(max_digits=16, decimal_places=3, default=Decimal(1000))
    # Jobs above these credits wait for a manager: {capability: credits}.
    job_thresholds = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"spend settings of {self.workspace}"


class AnomalyKind(models.TextChoices):
    SPIKE = "spike", "Daily spend far above the usual"
    OFF_HOURS = "off_hours", "Bulk spend outside working hours"
    NEW_ADDRESS = "new_address", "Personal key used from a new address"


class AnomalyState(models.TextChoices):
    OPEN = "open", "Open"
    DISMISSED = "dismissed", "Dismissed"
    ACTED = "acted", "Acted on"


class AnomalyFlag(models.Model):
    """One unusual pattern in the ledger, raised once (the unique key), for managers."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="anomaly_flags"
    )
    kind = models.CharField(max_length=16, choices=AnomalyKind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key_id = models.BigIntegerField(null=True, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    # The span of ledger rows it is about (the drill-down's filter).
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    credits = models.DecimalField(max_digits=20, decimal_places=3, default=Decimal(0))
    baseline = models.DecimalField(max_digits=20, decimal_places=3, null=True, blank=True)
    detail = models.CharField(max_length=300)
    key = models.CharField(max_length=200)  # what makes it one flag (kind, member, day…)
    state = models.CharField(max_length=12, choices=AnomalyState.choices, default=AnomalyState.OPEN)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "key"], name="one_flag_per_anomaly")
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class KeyAddress(models.Model):
    """An address a personal key was used from (the "new address" anomaly)."""

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE)
    api_key_id = models.BigIntegerField()
    address = models.GenericIPAddressField()
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api_key_id", "address"], name="one_row_per_key_address"
            )
        ]

    def __str__(self) -> str:
        return f"key {self.api_key_id} from {self.address}"


class ForecastNotice(models.Model):
    """Managers were told the projection crosses the plan or a cap (once per period)."""

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE)
    kind = models.CharField(max_length=16)  # "plan" | "cap"
    period_start = models.DateTimeField()
    projected = models.DecimalField(max_digits=20, decimal_places=3)
    limit = models.DecimalField(max_digits=20, decimal_places=3)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "kind", "period_start"], name="one_forecast_notice_per_period"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} forecast notice of {self.workspace}"


class ReconcileDay(models.Model):
    """One day of the ledger held against the provider's history and usage (ElevenLabs)."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="reconcile_days"
    )
    day = models.DateField()  # UTC
    ledger_requests = models.PositiveIntegerField(default=0)
    ledger_characters = models.BigIntegerField(default=0)
    ledger_credits = models.DecimalField(max_digits=20, decimal_places=3, default=Decimal(0))
    provider_requests = models.PositiveIntegerField(default=0)
    provider_characters = models.BigIntegerField(default=0)
    provider_credits = models.DecimalField(max_digits=20, decimal_places=3, default=Decimal(0))
    # What explains the drift: {"only_ledger": [request ids], "only_provider": [history ids]}
    detail = models.JSONField(default=dict, blank=True)
    checked_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "day"], name="one_reconcile_row_per_day")
        ]

    def __str__(self) -> str:
        return f"{self.day} reconciliation of {self.workspace}"
