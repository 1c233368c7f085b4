"""The studio's home: one page drawn from several apps (members, jobs, the engine's state),
so it lives here, where the apps are put together, rather than in any one of them."""

from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.generation.engine import engine_status
from apps.jobs.models import Job, JobStatus
from apps.workspaces.access import scoped, workspace_view
from apps.workspaces.models import Membership
from apps.workspaces.services import engine_settings_for


@workspace_view()
@require_GET
def home(request):
    memberships = scoped(request, Membership).select_related("user").order_by("user__email")
    running = scoped(request, Job).filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])[:10]
    recent = scoped(request, Job).exclude(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])[:5]
    ctx = {"memberships": memberships, "running_jobs": running, "recent_jobs": recent}
    if request.htmx:
        return render(request, "workspaces/home.html#jobs", ctx)
    ctx["engine"] = engine_settings_for(request.workspace)
    ctx["engine_check"] = engine_status(workspace=request.workspace)
    return render(request, "workspaces/home.html", ctx)
