"""The spend explorer: credits and money over time by member, project, capability, model,
voice, key, source or engine; the ledger rows behind each cell; CSV of both; the viewer's
time zone.

Every view reads its filters from the query string (``spend.spend_query_parse``), so any view
is a URL to share. Managers and owners see the workspace; a member (or a viewer) sees the
same pages held to their own rows.
"""

from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape as _e
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from apps.workspaces.access import scoped, workspace_view
from apps.workspaces.models import Membership, Role
from studio_site.timezones import COOKIE, zone_of

from . import forecast, labels, ledger_csv, spend
from .models import UsageSource
from .rates import CAPABILITIES

ROWS_PER_PAGE = 50
CHART_SERIES = 7  # the largest rows get a colour each; the rest are summed as "Everyone else"


@lru_cache(maxsize=1)
def _zone_names() -> list[str]:
    return sorted(z for z in available_timezones() if "/" in z and not z.startswith("Etc/"))


def viewer_zone(request) -> tuple[ZoneInfo, str]:
    """The zone dates are shown and bucketed in, and where it comes from: the member's own
    setting, else the browser's (the ``tz`` cookie), else the site's."""
    zone = zone_of(getattr(request.user, "time_zone", ""))
    if zone is not None:
        return zone, "your setting"
    zone = zone_of(request.COOKIES.get(COOKIE))
    if zone is not None:
        return zone, "your browser"
    return ZoneInfo(settings.TIME_ZONE), "the site's default"


def _query(request, *, table: bool = False):
    """The view's query; ``table``: a view drawn per bucket (the page, the table's CSV), which
    per day covers at most ``spend.MAX_DAYS_BY_DAY``."""
    zone, _ = viewer_zone(request)
    return spend.spend_query_parse(
        request.GET,
        workspace=request.workspace,
        zone=zone,
        membership=request.membership,
        today=timezone.now().astimezone(zone).date(),
        table=table,
    )


def _bad_request_text(error: spend.SpendQueryError) -> HttpResponse:
    lines = "\n".join(f"{k}: {v}" for k, v in error.errors.items())
    return HttpResponse(
        f"This view's filters are not valid:\n{lines}\n",
        status=400,
        content_type="text/plain; charset=utf-8",
    )


def _filter_choices(request) -> dict:
    """What the filter form's menus offer."""
    members = []
    if request.membership.can_manage:
        members = [
            (m.user_id, m.user.display_name)
            for m in scoped(request, Membership).select_related("user").order_by("user__email")
        ]
    return {
        "members": members,
        "capabilities": list(CAPABILITIES.items()),
        "sources": list(UsageSource.choices),
        "engines": list(spend.ENGINES.items()),
        "periods": list(spend.PERIODS.items()),
        "measures": list(spend.MEASURES.items()),
        "dimensions": [(d.key, d.label) for d in spend.DIMENSIONS.values()],
    }


def _chart_data(table: spend.SpendTable, rows_url: str) -> dict:
    """What ``static/js/spend.js`` draws: the table's own numbers (as strings: exact)."""
    query = table.query
    shown = table.rows[:CHART_SERIES]
    rest = table.rows[CHART_SERIES:]
    datasets = [
        {
            "label": row.label,
            "param": query.group,
            "value": row.value,
            "data": [str(c) for c in row.cells],
        }
        for row in shown
    ]
    if rest:
        datasets.append(
            {
                "label": f"Everyone else ({len(rest)})"
                if query.group == "member"
                else f"The {len(rest)} others",
                "param": "",
                "value": "",
                "others": True,
                "data": [
                    str(sum((r.cells[i] for r in rest), 0)) for i in range(len(table.buckets))
                ],
            }
        )
    return {
        "labels": [b.label for b in table.buckets],
        "keys": [b.key.isoformat() for b in table.buckets],
        "datasets": datasets,
        "shadow": [str(s) for s in table.shadow_by_bucket]
        if query.measure == "credits" and table.shadow
        else [],
        "measure": spend.MEASURES[query.measure],
        "rowsUrl": rows_url,
    }


def _cell(value, url: str) -> str:
    # Decimal's "f" format is what the template's {{ value }} printed (no exponent).
    if not value:
        return '<td data-cell><span class="muted">0</span></td>'
    return f'<td data-cell><a href="{url}">{value:f}</a></td>'


def _table_body_html(table: spend.SpendTable, rows_base: str) -> str:
    """The table's rows, one string (safe: the labels, values and URLs in it are escaped).

    Built here rather than in the template: 92 days by 50 members is 4,600 linked cells,
    which Django's template engine took 80-100 ms to render (3 ms this way)."""
    query = table.query
    suffixes = [_e(f"&bucket={b.key.isoformat()}") for b in table.buckets]
    parts = []
    for row in table.rows:
        cell_query = query.query_string(**({query.group: [row.value]} if query.group else {}))
        url = _e(f"{rows_base}?{cell_query}")
        shadow = f'<td class="muted" data-shadow>{row.shadow:f}</td>' if table.shadow else ""
        parts.append(
            f'<tr data-row="{_e(row.value)}"><th scope="row"><a href="{url}">{_e(row.label)}</a>'
            f"</th>{''.join(_cell(v, url + s) for v, s in zip(row.cells, suffixes, strict=True))}"
            f"<td data-credits><strong>{row.credits:f}</strong></td>"
            f"<td data-money>{row.money:f}</td><td>{row.events}</td>{shadow}</tr>"
        )
    return mark_safe("\n".join(parts))  # noqa: S308 - every value in it went through escape()


@workspace_view()
@require_GET
def spend_page(request):
    zone, zone_source = viewer_zone(request)
    timezone.activate(zone)  # the page's dates too (the middleware deactivates it after)
    context = {
        "choices": _filter_choices(request),
        "zone": zone.key,
        "zone_source": zone_source,
        "zone_names": _zone_names(),
        "params": request.GET,
        "can_manage": request.membership.can_manage,
    }
    try:
        query = _query(request, table=True)
    except spend.SpendQueryError as error:
        context["errors"] = error.errors
        return render(request, "billing/spend.html", context, status=400)
    table = spend.spend_table(query, workspace=request.workspace)
    rows_base = reverse("billing:spend_rows")
    context.update(
        query=query,
        table=table,
        table_body=_table_body_html(table, rows_base),
        totals_view=[
            (total, f"{rows_base}?{query.query_string()}&bucket={b.key.isoformat()}")
            for total, b in zip(table.column_totals, table.buckets, strict=True)
        ],
        group_label=spend.DIMENSIONS[query.group].label if query.group else "All spend",
        qs=query.query_string(),
        chart=_chart_data(table, f"{rows_base}?{query.query_string()}"),
    )
    return render(request, "billing/spend.html", context)


@workspace_view(Role.MANAGER)
@require_GET
def spend_forecast(request):
    """The workspace's forecast against the plan (the summary and its line), which the spend
    page loads after it (htmx) for managers: the projection reads the whole period, so the
    explorer's own views do not wait for it."""
    zone, _ = viewer_zone(request)
    timezone.activate(zone)
    projected = forecast.forecast_for(request.workspace)
    context = {"forecast": projected, "forecast_chart": forecast.forecast_chart(projected, zone)}
    return render(request, "billing/_forecast_chart.html", context)


@workspace_view()
@require_GET
def spend_rows(request):
    """The ledger rows behind a view or one of its cells (``bucket``), paged by cursor
    (``after``/``before``: earlier and later links, no page count, so a deep page of a month
    is as fast as the first), each linked to what it paid for."""
    zone, _ = viewer_zone(request)
    timezone.activate(zone)
    try:
        query = _query(request)
        bucket = (
            spend.bucket_of(query, request.GET["bucket"]) if request.GET.get("bucket") else None
        )
        rows = spend.ledger_rows(query, workspace=request.workspace, bucket=bucket)
        page = spend.ledger_page(
            rows.select_related("user"),
            after=request.GET.get("after", ""),
            before=request.GET.get("before", ""),
            size=ROWS_PER_PAGE,
        )
    except spend.SpendQueryError as error:
        return render(
            request,
            "billing/spend_rows.html",
            {"errors": error.errors, "zone": zone.key},
            status=400,
        )
    events = page.events
    links = labels.purpose_links(request.workspace, events)
    projects = labels.names(request.workspace, "project", [e.project for e in events])
    for event in events:
        event.paid_for = links.get(event.pk)
        event.project_name = projects.get(event.project, event.project)
    qs = query.query_string()
    if bucket is not None:
        qs += f"&bucket={bucket.key.isoformat()}"
    return render(
        request,
        "billing/spend_rows.html",
        {
            "query": query,
            "bucket": bucket,
            "page": page,
            "events": events,
            "qs": qs,
            "zone": zone.key,
            "filtered": {
                spend.DIMENSIONS[key].label: [
                    spend.value_label(query, request.workspace, key, v) for v in values
                ]
                for key, values in query.filters.items()
            },
            "back_qs": query.query_string(),
        },
    )


def _filename(request, kind: str, query: spend.SpendQuery, bucket=None) -> str:
    span = (
        f"{bucket.start.isoformat()}"
        if bucket
        else f"{query.start_date.isoformat()}-to-{query.end_date.isoformat()}"
    )
    group = f"-by-{query.group or 'total'}-per-{query.period}" if kind == "spend" else ""
    return f"{kind}-{request.workspace.slug}{group}-{span}.csv"


def _csv_response(blocks, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        ledger_csv.CsvStream(blocks), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def table_csv_rows(table: spend.SpendTable, group_label: str):
    """The table as the page shows it: a row per value, a column per bucket, the totals."""
    measure = spend.MEASURES[table.query.measure].lower()
    yield [
        group_label,
        *[f"{b.key.isoformat()} ({measure})" for b in table.buckets],
        "Total credits",
        "Total money",
        "Calls",
        "Local drafts on ElevenLabs (credits, not charged)",
    ]
    for row in table.rows:
        yield [
            ledger_csv.cell_text(row.label),
            *[str(c) for c in row.cells],
            str(row.credits),
            str(row.money),
            row.events,
            str(row.shadow),
        ]
    yield [
        "Total",
        *[str(c) for c in table.column_totals],
        str(table.credits),
        str(table.money),
        table.events,
        str(table.shadow),
    ]


@workspace_view()
@require_GET
def spend_table_csv(request):
    try:
        query = _query(request, table=True)
    except spend.SpendQueryError as error:
        return _bad_request_text(error)
    table = spend.spend_table(query, workspace=request.workspace)
    label = spend.DIMENSIONS[query.group].label if query.group else "All spend"
    return _csv_response(
        ledger_csv.csv_blocks(table_csv_rows(table, label)), _filename(request, "spend", query)
    )


@workspace_view()
@require_GET
def spend_rows_csv(request):
    """The settled ledger rows of a view (or of one cell), streamed: a year of rows never
    sits in memory."""
    try:
        query = _query(request)
        bucket = (
            spend.bucket_of(query, request.GET["bucket"]) if request.GET.get("bucket") else None
        )
    except spend.SpendQueryError as error:
        return _bad_request_text(error)
    rows = spend.ledger_rows(query, workspace=request.workspace, bucket=bucket)
    return _csv_response(
        ledger_csv.ledger_blocks(rows), _filename(request, "ledger", query, bucket)
    )


@workspace_view()
@require_POST
def time_zone_set(request):
    """The member's own time zone (blank: the browser's)."""
    name = request.POST.get("time_zone", "").strip()
    if name and zone_of(name) is None:
        return HttpResponse(
            f"“{name[:64]}” is not a time zone: choose one from the list (or leave it blank "
            "to follow your browser).\n",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    request.user.time_zone = name
    request.user.save(update_fields=["time_zone"])
    messages.success(
        request, f"Times now show in {name}." if name else "Times now follow your browser."
    )
    back = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = reverse("billing:spend")
    return HttpResponseRedirect(back, status=303)
