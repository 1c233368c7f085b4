"""The reconciliation pages (managers): the ledger against the provider, day by day."""

from datetime import date

from django.contrib import messages
from django.core.cache import cache
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.workspaces.access import get_scoped, workspace_view
from apps.workspaces.models import EngineKind, Role
from apps.workspaces.services import engine_settings_for

from .models import ReconcileDay
from .reconcile import DEFAULT_DAYS, DayDrift, reconcile_days, reconcile_nightly


def _on_provider(request) -> bool:
    return engine_settings_for(request.workspace).kind == EngineKind.ELEVENLABS


RUN_AGAIN_SECONDS = 300


@workspace_view(Role.MANAGER)
@require_GET
def reconcile(request):
    """The reconciled days, newest first, with their drift; on the local engine, a page that
    says there is nothing to reconcile (Chorus is the only bookkeeper)."""
    on_provider = _on_provider(request)
    days = reconcile_days(workspace=request.workspace) if on_provider else []
    return render(
        request,
        "billing/reconcile.html",
        {"on_provider": on_provider, "days": days, "window": DEFAULT_DAYS},
    )


@workspace_view(Role.MANAGER)
@require_GET
def reconcile_day(request, day: str):
    """One reconciled day: the totals and the rows that explain the drift."""
    try:
        when = date.fromisoformat(day)
    except ValueError as exc:
        raise Http404("Not a day (YYYY-MM-DD).") from exc
    row = get_scoped(request, ReconcileDay, day=when)
    return render(request, "billing/reconcile_day.html", {"drift": DayDrift(row)})


@workspace_view(Role.MANAGER)
@require_POST
def reconcile_run(request):
    """Check the last days again now (in the background: the provider is never asked while
    a page waits)."""
    if not _on_provider(request):
        messages.info(request, "The local engine has nothing to reconcile.")
    else:
        workspace_id = request.workspace.pk
        # At most one check a workspace per RUN_AGAIN_SECONDS: each walks up to hundreds of
        # the provider's history pages, and a button pressed ten times must not queue ten.
        key = f"chorus:reconcile-run:{workspace_id}:{request.workspace.created_at.timestamp()}"
        if cache.add(key, 1, timeout=RUN_AGAIN_SECONDS):
            transaction.on_commit(lambda: reconcile_nightly.delay(workspace_id=workspace_id))
            messages.success(
                request, "Reconciliation started: the days below update when it is done."
            )
        else:
            messages.info(
                request,
                "A check started less than five minutes ago: the days below update when it is "
                "done.",
            )
    return HttpResponseRedirect(reverse("billing:reconcile"), status=303)
