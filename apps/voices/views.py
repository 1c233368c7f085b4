"""The voice library page: every voice the team can use, filtered in the URL, and curated."""

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from apps.jobs.services import job_start
from apps.workspaces.access import get_scoped, workspace_view
from apps.workspaces.models import Role

from . import services
from .models import Approval, LibraryVoice


@workspace_view()
@require_GET
def library(request):
    """The library; with htmx, only the results (the filters stay as the member set them)."""
    filters = services.LibraryFilters.from_query(request.GET)
    found = services.library_page(
        workspace=request.workspace,
        user=request.user,
        filters=filters,
        page_number=request.GET.get("page"),
    )
    facet_menus = [
        (
            name,
            "Any use case" if name == "use_case" else f"Any {name}",
            [(value, value.lower() == getattr(filters, name).lower()) for value in values],
        )
        for name, values in found.facets.items()
        if values
    ]
    context = {
        "found": found,
        "facet_menus": facet_menus,
        "page": found.page,
        "filters": filters,
        "query": urlencode(filters.as_query()),
        "approvals": Approval.choices,
        "sorts": [
            ("name", "Name"),
            ("newest", "Newest"),
            ("most_used", "Most used"),
            ("recent", "Recently used"),
        ],
        "is_filtered": bool({k for k in filters.as_query() if k != "sort"}),
    }
    template = "voices/library.html#results" if request.htmx else "voices/library.html"
    return render(request, template, context)


@workspace_view(Role.MANAGER)
@require_POST
def library_sync(request):
    """Start a sync from the engine as a job, and go to its page (live progress)."""
    job = job_start(
        workspace=request.workspace,
        kind="voices_sync",
        created_by=request.user,
        message="Waiting for a worker to read the engine's voices",
    )
    messages.info(request, "Syncing the library from the engine. Withdrawn voices are kept.")
    return HttpResponseRedirect(reverse("jobs:detail", args=[job.pk]), status=303)


@workspace_view(Role.MEMBER)
@require_POST
def favourite(request, pk: int):
    """Star or unstar a voice for yourself; with htmx, only its star is redrawn."""
    voice = get_scoped(request, LibraryVoice, pk=pk)
    voice.is_favourite = services.favourite_toggle(voice=voice, user=request.user)
    if request.htmx:
        return render(request, "voices/library.html#star", {"voice": voice})
    back = request.POST.get("next", "")
    target = reverse("voices:library") + (f"?{back}" if back and "//" not in back else "")
    return HttpResponseRedirect(target, status=303)
