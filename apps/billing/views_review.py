"""The spend review's manager pages: the forecast against the plan, the anomaly flags (dismiss
or act), and the spend settings (the anomaly factor, working hours, job thresholds).

Managers and owners only: members and viewers get 403 (a member's own spend is the
explorer's), another workspace's flag is a 404.
"""

from decimal import Decimal

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.workspaces.access import get_scoped, scoped, workspace_view
from apps.workspaces.forms import StudioForm
from apps.workspaces.models import Role
from studio_site.timezones import zone_of

from . import anomalies, forecast
from .models import AnomalyFlag, AnomalyState, SpendSettings
from .rates import CAPABILITIES

MAX_CREDITS = Decimal("1000000000")
DAYS = [
    ("0", "Monday"),
    ("1", "Tuesday"),
    ("2", "Wednesday"),
    ("3", "Thursday"),
    ("4", "Friday"),
    ("5", "Saturday"),
    ("6", "Sunday"),
]
STATES = {"open": [AnomalyState.OPEN], "decided": [AnomalyState.DISMISSED, AnomalyState.ACTED]}


class SpendSettingsForm(StudioForm):
    anomaly_factor = forms.DecimalField(
        label="Spike factor (k)",
        min_value=Decimal("1.1"),
        max_value=Decimal(100),
        decimal_places=2,
        help_text="A member's day above k times their usual day (the median of the 14 days "
        "before) is flagged.",
    )
    time_zone = forms.CharField(
        label="Time zone of the working hours", max_length=64, help_text="For example Europe/Paris."
    )
    work_start_hour = forms.IntegerField(label="Working hours start at", min_value=0, max_value=23)
    work_end_hour = forms.IntegerField(
        label="Working hours end at", min_value=1, max_value=24, help_text="24 for midnight."
    )
    work_days = forms.MultipleChoiceField(
        label="Working days",
        choices=DAYS,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None: every hour is outside working hours.",
    )
    off_hours_credits = forms.DecimalField(
        label="Bulk spend outside working hours (credits in an hour)",
        min_value=Decimal(0),
        max_value=MAX_CREDITS,
        decimal_places=3,
        help_text="A member spending more than this in one hour outside working hours is flagged.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for capability, name in CAPABILITIES.items():
            self.fields[f"threshold_{capability}"] = forms.DecimalField(
                label=f"{name}: jobs above (credits)",
                min_value=Decimal(0),
                max_value=MAX_CREDITS,
                decimal_places=3,
                required=False,
                help_text="Empty: jobs never wait.",
            )

    def threshold_fields(self):
        return [self[f"threshold_{capability}"] for capability in CAPABILITIES]

    def main_fields(self):
        return [self[name] for name in self.fields if not name.startswith("threshold_")]

    def clean_time_zone(self):
        value = self.cleaned_data["time_zone"].strip()
        if zone_of(value) is None:  # only a place's zoneinfo name, never a path or "localtime"
            raise forms.ValidationError(
                f"“{value[:60]}” is not a time zone: use a name such as Europe/Paris or UTC."
            )
        return value

    def clean(self):
        data = super().clean()
        start, end = data.get("work_start_hour"), data.get("work_end_hour")
        if start is not None and end is not None and end <= start:
            self.add_error("work_end_hour", "Working hours end after they start.")
        data["work_days"] = "".join(sorted(data.get("work_days") or []))
        data["job_thresholds"] = {
            capability: str(data.pop(f"threshold_{capability}"))
            for capability in CAPABILITIES
            if data.get(f"threshold_{capability}") is not None
        }
        return data

    @classmethod
    def initial_of(cls, row: SpendSettings) -> dict:
        initial = {
            "anomaly_factor": row.anomaly_factor,
            "time_zone": row.time_zone,
            "work_start_hour": row.work_start_hour,
            "work_end_hour": row.work_end_hour,
            "work_days": list(row.work_days),
            "off_hours_credits": row.off_hours_credits,
        }
        for capability, value in (row.job_thresholds or {}).items():
            initial[f"threshold_{capability}"] = value
        return initial


def spend_settings_save(*, row: SpendSettings, data: dict) -> SpendSettings:
    """Store the validated settings of ``SpendSettingsForm``."""
    fields = [
        "anomaly_factor",
        "time_zone",
        "work_start_hour",
        "work_end_hour",
        "work_days",
        "off_hours_credits",
        "job_thresholds",
    ]
    for name in fields:
        setattr(row, name, data[name])
    row.save(update_fields=[*fields, "updated_at"])
    return row


def _flags(request):
    state = request.GET.get("status", "open")
    flags = scoped(request, AnomalyFlag).select_related("user", "decided_by")
    if state in STATES:
        flags = flags.filter(state__in=STATES[state])
    else:
        state = "all"
    page = Paginator(flags, 50).get_page(request.GET.get("page"))
    for flag in page.object_list:
        flag.rows_url = anomalies.flag_rows_url(flag)
    return state, page


def _index(request, *, status=200, error=None, error_flag=None):
    state, page = _flags(request)
    context = {
        "forecast": forecast.forecast_for(request.workspace),
        "state": state,
        "status": state,  # the pager carries it
        "page": page,
        "states": [("open", "Open"), ("decided", "Decided"), ("all", "All")],
        "error": error,
        "error_flag": error_flag,
    }
    template = "billing/review.html#flags" if request.htmx else "billing/review.html"
    return render(request, template, context, status=status)


@workspace_view(Role.MANAGER)
@require_GET
def review_index(request):
    return _index(request)


@workspace_view(Role.MANAGER)
@require_POST
def review_decide(request, pk: int):
    flag = get_scoped(request, AnomalyFlag, pk=pk)
    try:
        anomalies.anomaly_decide(
            flag=flag,
            user=request.user,
            action=request.POST.get("action", ""),
            note=request.POST.get("note", ""),
        )
    except anomalies.DecisionRefused as exc:
        return _index(request, status=400, error=str(exc), error_flag=flag.pk)
    if request.htmx:
        return _index(request)
    messages.success(request, "Flag decided.")
    return HttpResponseRedirect(reverse("billing:review_index"), status=303)


@workspace_view(Role.MANAGER)
@require_http_methods(["GET", "POST"])
def review_settings(request):
    row = anomalies.spend_settings_for(request.workspace)
    form = SpendSettingsForm(
        request.POST if request.method == "POST" else None,
        initial=SpendSettingsForm.initial_of(row),
    )
    if request.method == "POST" and form.is_valid():
        spend_settings_save(row=row, data=form.cleaned_data)
        messages.success(request, "Spend settings saved.")
        return HttpResponseRedirect(reverse("billing:review_settings"), status=303)
    return render(
        request,
        "billing/review_settings.html",
        {"form": form},
        status=400 if form.is_bound and form.errors else 200,
    )
