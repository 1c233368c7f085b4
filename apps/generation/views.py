"""The pages of the core: the workspace's engine (Settings → Engine, its connection check)
and the plan sync from the provider. Their URLs keep the names of the settings they sit
among (``workspaces:engine``, ``billing:plan_sync``; see ``urls.py``)."""

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.workspaces.access import workspace_view
from apps.workspaces.forms import EngineSettingsForm
from apps.workspaces.models import Role
from apps.workspaces.services import (
    ActionRefused,
    client_ip,
    engine_settings_for,
    engine_settings_update,
)

from .engine import engine_test_connection, plan_sync


def _redirect(request, url: str):
    """After a successful POST: a client redirect for htmx, a 303 otherwise."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return HttpResponseRedirect(url, status=303)


# --- Engine settings --------------------------------------------------------------------


@sensitive_post_parameters("api_key")
@workspace_view(Role.OWNER)
@require_http_methods(["GET", "POST"])
def engine_settings(request):
    row = engine_settings_for(request.workspace)
    form = EngineSettingsForm(
        request.POST if request.method == "POST" else None,
        initial={"kind": row.kind, "base_url": row.base_url},
        has_key=row.has_api_key,
    )
    if request.method == "POST" and form.is_valid():
        try:
            engine_settings_update(
                workspace=request.workspace,
                actor=request.user,
                kind=form.cleaned_data["kind"],
                api_key=form.cleaned_data["api_key"],
                remove_key=form.cleaned_data["remove_key"],
                base_url=form.cleaned_data["base_url"],
                ip=client_ip(request),
            )
        except ActionRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Engine settings saved.")
            return _redirect(request, reverse("workspaces:engine"))
    return render(
        request,
        "workspaces/engine.html",
        {"form": form, "engine": row},
        status=400 if form.is_bound else 200,
    )


@workspace_view(Role.OWNER)
@require_POST
def engine_test(request):
    """Call the engine's user and subscription endpoints and show what came back."""
    check = engine_test_connection(workspace=request.workspace)
    template = "workspaces/engine.html#check" if request.htmx else "workspaces/engine.html"
    row = engine_settings_for(request.workspace)
    form = EngineSettingsForm(
        initial={"kind": row.kind, "base_url": row.base_url}, has_key=row.has_api_key
    )
    return render(request, template, {"form": form, "engine": row, "check": check})


@workspace_view(Role.MANAGER)
@require_POST
def plan_sync_now(request):
    plan = plan_sync(workspace=request.workspace)
    if plan.sync_error:
        messages.error(request, f"The provider did not answer: {plan.sync_error}")
    else:
        messages.success(request, "Plan synced.")
    return HttpResponseRedirect(reverse("billing:plan"), status=303)
