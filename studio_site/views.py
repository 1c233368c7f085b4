"""Pages drawn from several apps, so they live here, where the apps are put together,
rather than in any one of them: the studio's home (members, jobs, the engine's state) and
the workspace's settings (its name, its exports, which are jobs, and its engine)."""

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.billing.services import member_usage, plan_for, workspace_usage
from apps.generation.engine import engine_status
from apps.history.models import Generation, GenerationKind
from apps.history.services import clip_links_install
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import job_start
from apps.workspaces.access import scoped, workspace_view
from apps.workspaces.forms import WorkspaceForm
from apps.workspaces.models import Membership, Role
from apps.workspaces.services import client_ip, engine_settings_for, workspace_rename


def history_clip_links(*, workspace, generations) -> dict[int, dict]:
    """Where History links a clip: its voice's page when the voice is in this workspace's
    library, a design preview's design (its page and description). History sits below the
    voice library, so the library's rows are read here, where the apps are put together."""
    from apps.voices.models import LibraryVoice, VoiceDesign

    spoken = [g for g in generations if g.voice_id and g.kind != GenerationKind.DESIGN_PREVIEW]
    previews = [g for g in generations if g.kind == GenerationKind.DESIGN_PREVIEW]
    links: dict[int, dict] = {}
    if spoken:
        voices = LibraryVoice.objects.filter(
            workspace=workspace, voice_id__in={g.voice_id for g in spoken}
        ).values_list("engine", "voice_id", "pk")
        pages = {(engine, voice_id): pk for engine, voice_id, pk in voices}
        for generation in spoken:
            pk = pages.get((generation.engine, generation.voice_id))
            if pk is not None:
                links[generation.pk] = {"voice_url": reverse("voices:detail", args=[pk])}
    request_ids = {g.request_id for g in previews if g.request_id}
    if request_ids:
        designs = VoiceDesign.objects.filter(workspace=workspace, request_id__in=request_ids)
        found = {d.request_id: d for d in designs.only("pk", "request_id", "description")}
        for generation in previews:
            design = found.get(generation.request_id)
            if design is not None:
                links[generation.pk] = {
                    "design_url": reverse("voices:design", args=[design.pk]),
                    "design_name": design.description,
                }
    return links


# Installed when the URLs are loaded, so before any History page is drawn (see the docstring).
clip_links_install(history_clip_links)


def _redirect(request, url: str):
    """After a successful POST: a client redirect for htmx, a 303 otherwise."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return HttpResponseRedirect(url, status=303)


def _credits(request) -> dict:
    """Credits left this period: the member's own (their budget), and for managers the
    workspace's (its cap, and the plan the engine reports)."""
    usage = member_usage(workspace=request.workspace, user=request.user)
    credits = {"usage": usage}
    if request.membership.can_manage:
        plan = plan_for(request.workspace)
        used = workspace_usage(workspace=request.workspace)
        credits.update(
            plan=plan,
            workspace_used=used,
            workspace_left=plan.workspace_cap - used if plan.workspace_cap is not None else None,
            plan_left=plan.credit_limit - plan.credits_used if plan.credit_limit else None,
        )
    return credits


@workspace_view()
@require_GET
def home(request):
    """The next steps: a quick speech box, recent clips, credits left, shortcuts, and the
    jobs by their subject (running ones live; with htmx, only the jobs card)."""
    memberships = scoped(request, Membership).select_related("user").order_by("user__email")
    running = scoped(request, Job).filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])[:10]
    recent = scoped(request, Job).exclude(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])[:5]
    ctx = {"memberships": memberships, "running_jobs": running, "recent_jobs": recent}
    if request.htmx:
        return render(request, "workspaces/home.html#jobs", ctx)
    ctx["engine"] = engine_settings_for(request.workspace)
    ctx["engine_check"] = engine_status(workspace=request.workspace)
    ctx["recent_clips"] = list(scoped(request, Generation).select_related("user")[:5])
    ctx.update(_credits(request))
    return render(request, "workspaces/home.html", ctx)


@workspace_view(Role.OWNER)
@require_http_methods(["GET", "POST"])
def workspace_settings(request):
    form = WorkspaceForm(
        request.POST if request.method == "POST" else None, initial={"name": request.workspace.name}
    )
    if request.method == "POST" and form.is_valid():
        workspace_rename(
            workspace=request.workspace,
            name=form.cleaned_data["name"],
            actor=request.user,
            ip=client_ip(request),
        )
        messages.success(request, "Workspace renamed.")
        return _redirect(request, reverse("workspaces:settings"))
    exports = scoped(request, Job).filter(kind="workspace_export")[:10]
    return render(
        request,
        "workspaces/settings.html",
        {
            "form": form,
            "exports": exports,
            "engine": engine_settings_for(request.workspace),
        },
        status=400 if form.is_bound else 200,
    )


@workspace_view(Role.OWNER)
@require_POST
def workspace_export(request):
    """Start a ZIP export of the workspace as a background job."""
    job = job_start(
        workspace=request.workspace,
        kind="workspace_export",
        created_by=request.user,
        subject=f"Export of {request.workspace.name}",
    )
    messages.info(request, "Export started. It keeps running if you leave this page.")
    return _redirect(request, reverse("jobs:detail", args=[job.pk]))
