"""Billing pages: my usage, the plan, budgets, the rate card and notifications."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.workspaces.access import get_scoped, require_role, scoped, workspace_view
from apps.workspaces.models import Membership, Role
from apps.workspaces.services import client_ip

from . import rates, services
from .forms import BudgetForm, PlanSettingsForm, RateForm
from .models import Notification, RateCard, UsageEvent


def _back(request, name: str):
    return HttpResponseRedirect(reverse(name), status=303)


@workspace_view()
@require_GET
def my_usage(request):
    usage = services.member_usage(workspace=request.workspace, user=request.user)
    events = scoped(request, UsageEvent).filter(user=request.user)
    page = Paginator(events, 25).get_page(request.GET.get("page"))
    template = "billing/usage.html#events" if request.htmx else "billing/usage.html"
    return render(request, template, {"usage": usage, "page": page})


@workspace_view(Role.MANAGER)
@require_http_methods(["GET", "POST"])
def plan(request):
    plan = services.plan_for(request.workspace)
    form = PlanSettingsForm(
        request.POST if request.method == "POST" else None,
        initial={
            "budget_period": plan.budget_period,
            "workspace_cap": plan.workspace_cap,
            "credit_limit": plan.credit_limit,
        },
    )
    if request.method == "POST":
        require_role(request, Role.OWNER)
        if form.is_valid():
            services.plan_settings_update(
                workspace=request.workspace,
                actor=request.user,
                ip=client_ip(request),
                **form.cleaned_data,
            )
            messages.success(request, "Plan settings saved.")
            return _back(request, "billing:plan")
    used = services.workspace_usage(workspace=request.workspace)
    left = plan.credit_limit - plan.credits_used if plan.credit_limit else None
    return render(
        request,
        "billing/plan.html",
        {"plan": plan, "form": form, "period_used": used, "plan_left": left},
        status=400 if form.is_bound and form.errors else 200,
    )


def _budget_rows(request):
    memberships = scoped(request, Membership).select_related("user").order_by("user__email")
    if not request.membership.can_manage:
        memberships = memberships.filter(user=request.user)  # members see their own
    return [
        (m, services.member_usage(workspace=request.workspace, user=m.user)) for m in memberships
    ]


@workspace_view()
@require_GET
def budgets(request):
    return render(request, "billing/budgets.html", {"rows": _budget_rows(request)})


@workspace_view(Role.MANAGER)
@require_POST
def budget_set(request, pk: int):
    membership = get_scoped(request, Membership.objects.select_related("user"), pk=pk)
    form = BudgetForm(request.POST)
    if form.is_valid():
        services.budget_set(
            workspace=request.workspace,
            user=membership.user,
            limit=form.cleaned_data["limit_credits"],
            actor=request.user,
            ip=client_ip(request),
        )
        messages.success(request, f"Budget of {membership.user.email} saved.")
    else:
        messages.error(request, " ".join(e for errs in form.errors.values() for e in errs))
    if request.htmx:
        return render(
            request,
            "billing/budgets.html#table",
            {"rows": _budget_rows(request)},
            status=400 if form.errors else 200,
        )
    return _back(request, "billing:budgets")


@workspace_view()
@require_http_methods(["GET", "POST"])
def rate_card(request):
    form = RateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        require_role(request, Role.OWNER)
        if form.is_valid():
            services.rate_set(
                workspace=request.workspace,
                actor=request.user,
                ip=client_ip(request),
                **form.cleaned_data,
            )
            messages.success(request, "Rate saved.")
            return _back(request, "billing:rates")
    overrides = scoped(request, RateCard).order_by("capability", "model_id")
    return render(
        request,
        "billing/rates.html",
        {
            "form": form,
            "defaults": rates.DEFAULT_RATES,
            "capabilities": rates.CAPABILITIES,
            "overrides": overrides,
        },
        status=400 if form.is_bound and form.errors else 200,
    )


@workspace_view(Role.OWNER)
@require_POST
def rate_reset(request, pk: int):
    row = get_scoped(request, RateCard, pk=pk)
    services.rate_delete(row=row, actor=request.user, ip=client_ip(request))
    messages.info(request, "Back to the default rate.")
    return _back(request, "billing:rates")


@workspace_view()
@require_http_methods(["GET", "POST"])
def notifications(request):
    mine = scoped(request, Notification).filter(user=request.user)
    if request.method == "POST":
        mine.filter(read_at__isnull=True).update(read_at=timezone.now())
        return _back(request, "billing:notifications")
    return render(request, "billing/notifications.html", {"notifications": mine[:100]})
