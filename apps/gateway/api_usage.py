"""``GET /v1/usage/character-stats``: usage over time in ElevenLabs' shape, from the ledger.

It reads the hourly rollup of the settled ledger (``billing.SpendRollup``, kept in step with
every settle), so it agrees with the spend explorer and the budgets to the credit. A personal
key sees its member's own usage (the "current user" of the official API); a manager's key
with ``include_workspace_metrics`` sees the whole workspace, and may break it down by member.
"""

import calendar
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Q, Sum
from django.db.models.functions import Trunc
from django.http import JsonResponse

from apps.billing.models import SpendRollup
from apps.workspaces.models import Role

from .api import _query_bool, _query_choice, _query_int, api_view
from .models import ApiKey
from .services import ApiInvalid, ApiRefused

INTERVALS = ("hour", "day", "week", "month", "cumulative")
# The official enums (a value outside them is a 422, as upstream)…
BREAKDOWNS = (
    "none", "voice", "voice_multiplier", "user", "groups", "api_keys", "all_api_keys",
    "product_type", "model", "resource", "request_queue", "region", "subresource_id",
    "reporting_workspace_id", "has_api_key", "request_source",
)  # fmt: skip
METRICS = (
    "credits", "tts_characters", "minutes_used", "request_count", "ttfb_avg", "ttfb_p95",
    "fiat_units_spent", "concurrency", "concurrency_average",
)  # fmt: skip
# …and the ones the ledger can answer (another is a 400 naming these).
BREAKDOWN_FIELDS = {
    "none": None,
    "voice": "voice_id",
    "model": "model_id",
    "user": "user_id",
    "api_keys": "api_key_id",
    "all_api_keys": "api_key_id",
    "product_type": "capability",
    "request_source": "source",
}
METRIC_SUMS = {
    "credits": Sum("credits"),
    "fiat_units_spent": Sum("money"),
    "request_count": Sum("events"),
    "tts_characters": Sum("units", filter=Q(capability="tts")),
}
HOUR = 3600
MAX_BUCKETS = 10_000  # a year by the hour is 8,784
# Times up to the year 3000 and buckets of at most ten years: the axis is then never near
# the end of Python's calendar (9999), where a step would overflow.
MAX_MS = 32_503_680_000_000  # 3000-01-01
MAX_BUCKET_SECONDS = 10 * 366 * 86400
SOURCE_NAMES = {"ui": "studio", "api": "api", "job": "job"}


def _floor(moment: datetime, interval: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    if interval == "hour":
        return moment
    moment = moment.replace(hour=0)
    if interval == "week":
        return moment - timedelta(days=moment.weekday())
    if interval == "month":
        return moment.replace(day=1)
    return moment


def _next(moment: datetime, interval: str) -> datetime:
    if interval == "month":
        days = calendar.monthrange(moment.year, moment.month)[1]
        return moment + timedelta(days=days)
    return moment + {"hour": timedelta(hours=1), "day": timedelta(days=1)}.get(
        interval, timedelta(days=7)
    )


def _axis(start: datetime, end: datetime, interval: str, size: int | None) -> list[datetime]:
    """The start of each bucket from ``start`` to ``end``: whole hours, days, weeks (from
    Monday) or months in UTC, or steps of ``size`` seconds from ``start``."""
    if interval == "cumulative" and size is None:
        return [start]
    axis: list[datetime] = []
    if size is not None:
        moment = start
        while moment <= end and len(axis) <= MAX_BUCKETS:
            axis.append(moment)
            moment += timedelta(seconds=size)
        return axis
    moment = _floor(start, interval)
    while moment <= end and len(axis) <= MAX_BUCKETS:
        axis.append(moment)
        moment = _next(moment, interval)
    return axis


def _params(request, api_key: ApiKey) -> dict:
    """The query as plain values: 422 for what does not validate (FastAPI's list), 400/403
    for what Chorus cannot or may not answer."""
    errors: list[dict] = []
    start_ms = _query_int(request, "start_unix", errors, low=0, high=MAX_MS)
    end_ms = _query_int(request, "end_unix", errors, low=0, high=MAX_MS)
    for name, value in (("start_unix", start_ms), ("end_unix", end_ms)):
        if value is None and not any(e["loc"] == ["query", name] for e in errors):
            errors.append({"type": "missing", "loc": ["query", name], "msg": "Field required"})
    workspace_metrics = bool(_query_bool(request, "include_workspace_metrics", errors))
    breakdown = _query_choice(request, "breakdown_type", BREAKDOWNS, errors) or "none"
    interval = _query_choice(request, "aggregation_interval", INTERVALS, errors) or "day"
    size = _query_int(request, "aggregation_bucket_size", errors, low=1, high=MAX_BUCKET_SECONDS)
    metric = _query_choice(request, "metric", METRICS, errors) or "credits"
    if start_ms is not None and end_ms is not None and end_ms < start_ms:
        errors.append(
            {
                "type": "value_error",
                "loc": ["query", "end_unix"],
                "msg": "end_unix is before start_unix",
                "input": request.GET.get("end_unix"),
            }
        )
    if size is not None and size % HOUR:
        errors.append(
            {
                "type": "value_error",
                "loc": ["query", "aggregation_bucket_size"],
                "msg": "Chorus keeps usage by the hour: the bucket size must be a multiple of "
                "3600 seconds",
                "input": request.GET.get("aggregation_bucket_size"),
            }
        )
    if breakdown == "user" and not workspace_metrics:
        errors.append(
            {
                "type": "value_error",
                "loc": ["query", "breakdown_type"],
                "msg": 'breakdown_type cannot be "user" unless include_workspace_metrics is true',
                "input": breakdown,
            }
        )
    if errors:
        raise ApiInvalid(errors)
    if breakdown not in BREAKDOWN_FIELDS:
        raise ApiRefused(
            400,
            "breakdown_not_supported",
            f'Chorus cannot break usage down by "{breakdown}"; use one of '
            f"{', '.join(BREAKDOWN_FIELDS)}.",
            param="breakdown_type",
        )
    if metric not in METRIC_SUMS:
        raise ApiRefused(
            400,
            "metric_not_supported",
            f'Chorus does not keep the metric "{metric}"; use one of {", ".join(METRIC_SUMS)}.',
            param="metric",
        )
    if workspace_metrics and not api_key.membership.has_role(Role.MANAGER):
        raise ApiRefused(
            403,
            "workspace_metrics_not_allowed",
            "The whole workspace's usage needs the key of a manager or an owner; this key sees "
            "its member's own usage (leave out include_workspace_metrics).",
            kind="authorization_error",
            param="include_workspace_metrics",
        )
    start = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    end = datetime.fromtimestamp(end_ms / 1000, tz=UTC)
    axis = _axis(start, end, interval, size)
    if len(axis) > MAX_BUCKETS:
        raise ApiRefused(
            400,
            "too_many_buckets",
            f"The window holds more than {MAX_BUCKETS:,} buckets: choose a larger "
            "aggregation_interval or aggregation_bucket_size, or a shorter window.",
            param="aggregation_interval",
        )
    return {
        "start": start,
        "end": end,
        "axis": axis,
        "interval": interval,
        "size": size,
        "metric": metric,
        "breakdown": breakdown,
        "workspace": workspace_metrics,
    }


def _names(api_key: ApiKey, breakdown: str, values: set) -> dict:
    """What each breakdown value is called in the answer (members by e-mail, keys by name)."""
    if breakdown == "none":
        return {None: "All"}
    if breakdown == "user":
        from django.contrib.auth import get_user_model

        users = get_user_model().objects.filter(pk__in=values).values_list("pk", "email")
        return {0: "unknown", **dict(users)}
    if breakdown in ("api_keys", "all_api_keys"):
        keys = ApiKey.objects.filter(workspace=api_key.workspace, pk__in=values)
        return {0: "no API key", **{k.pk: f"{k.name} ({k.prefix}…)" for k in keys}}
    if breakdown == "request_source":
        return dict(SOURCE_NAMES)
    return {"": "none"}


def usage_series(api_key: ApiKey, query: dict) -> dict:
    """``UsageCharactersResponseModel`` for ``query`` (see ``_params``): the time axis in Unix
    milliseconds and one series per breakdown value, summed in SQL from the hourly rollup."""
    axis, start, end = query["axis"], query["start"], query["end"]
    rows = SpendRollup.objects.filter(
        workspace_id=api_key.workspace_id,
        hour__gte=start.replace(minute=0, second=0, microsecond=0),
        hour__lte=end,
    )
    if not query["workspace"]:
        rows = rows.filter(user_id=api_key.user_id)
    field = BREAKDOWN_FIELDS[query["breakdown"]]
    interval, size = query["interval"], query["size"]
    group: list[str] = [field] if field else []
    if size is not None or interval == "hour":
        rows = rows.annotate(bucket=Trunc("hour", "hour", tzinfo=UTC))
        group.append("bucket")
    elif interval in ("day", "week", "month"):
        rows = rows.annotate(bucket=Trunc("hour", interval, tzinfo=UTC))
        group.append("bucket")
    sums = (
        rows.values(*group).annotate(value=METRIC_SUMS[query["metric"]]).order_by()
        if group
        else [rows.aggregate(value=METRIC_SUMS[query["metric"]])]
    )
    index = {moment: n for n, moment in enumerate(axis)}
    series: dict = defaultdict(lambda: [Decimal(0)] * len(axis))
    for row in sums:
        if row["value"] is None:
            continue
        if "bucket" not in row:
            slot = 0
        elif size is not None:
            slot = max(0, int((row["bucket"] - start).total_seconds()) // size)
        else:
            slot = index.get(row["bucket"], 0)  # the first bucket starts at ``start``
        if slot < len(axis):
            series[row.get(field) if field else None][slot] += row["value"]
    names = _names(api_key, query["breakdown"], set(series))
    usage: dict[str, list[float]] = {}
    for key in sorted(series, key=lambda k: str(names.get(k, k))):
        usage[str(names.get(key, key))] = [float(v) for v in series[key]]
    if not usage and query["breakdown"] == "none":
        usage["All"] = [0.0] * len(axis)
    times = [int(moment.timestamp() * 1000) for moment in axis]
    times[0] = max(times[0], int(start.timestamp() * 1000))  # as upstream: the window's start
    return {"time": times, "usage": usage}


@api_view(scope="account")
def character_stats(request, api_key):
    """``GET /v1/usage/character-stats`` (deprecated upstream, still in the SDK as
    ``client.usage.get``)."""
    return JsonResponse(usage_series(api_key, _params(request, api_key)))
