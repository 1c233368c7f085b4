"""Pages of the jobs app: the list, one job (whole page or its live progress widget), actions."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.workspaces.access import get_scoped, require_role, scoped, workspace_view
from apps.workspaces.models import Role

from . import services
from .models import Job, JobStatus

# Who may download a job's result file, by kind (default: anyone in the workspace).
DOWNLOAD_ROLE = {"workspace_export": Role.OWNER}


def _get_job(request, pk: int) -> Job:
    return get_scoped(request, Job.objects.select_related("created_by"), pk=pk)


def _check_can_act(request, job: Job) -> None:
    """Cancel and retry: the job's creator (member or above) or a manager."""
    if request.membership.can_manage:
        return
    require_role(request, Role.MEMBER)
    if job.created_by_id != request.user.pk:
        raise PermissionDenied("Only whoever started this job, or a manager, can do that.")


@workspace_view()
@require_GET
def job_list(request):
    jobs = scoped(request, Job).select_related("created_by")
    status = request.GET.get("status", "")
    if status in JobStatus.values:
        jobs = jobs.filter(status=status)
    page = Paginator(jobs, 25).get_page(request.GET.get("page"))
    template = "jobs/list.html#table" if request.htmx else "jobs/list.html"
    return render(
        request,
        template,
        {
            "page": page,
            "status": status,
            "statuses": JobStatus.choices,
            "has_unfinished": any(not job.is_finished for job in page.object_list),
        },
    )


@workspace_view()
@require_GET
def job_detail(request, pk: int):
    """The job page; with htmx, only its progress widget (what polling fetches)."""
    job = _get_job(request, pk)
    template = "jobs/detail.html#progress" if request.htmx else "jobs/detail.html"
    return render(request, template, {"job": job})


def _after_action(request, job: Job):
    if request.htmx:
        return render(request, "jobs/detail.html#progress", {"job": job})
    return HttpResponseRedirect(reverse("jobs:detail", args=[job.pk]), status=303)


@workspace_view(Role.MEMBER)
@require_POST
def job_cancel(request, pk: int):
    job = _get_job(request, pk)
    _check_can_act(request, job)
    if not job.can_cancel:
        messages.error(request, f"This job is already {job.get_status_display().lower()}.")
    else:
        job = services.job_cancel(job=job)
        messages.info(request, "Job cancelled.")
    return _after_action(request, job)


@workspace_view(Role.MEMBER)
@require_POST
def job_retry(request, pk: int):
    job = _get_job(request, pk)
    _check_can_act(request, job)
    try:
        job = services.job_retry(job=job)
        messages.info(request, "Job queued again.")
    except ValueError as exc:
        messages.error(request, str(exc))
    if request.htmx:
        return HttpResponseClientRedirect(reverse("jobs:detail", args=[job.pk]))
    return _after_action(request, job)


@workspace_view()
@require_GET
def job_download(request, pk: int):
    """The job's result file, for the roles allowed to have it."""
    job = _get_job(request, pk)
    require_role(request, DOWNLOAD_ROLE.get(job.kind, Role.VIEWER))
    path = (job.result or {}).get("file")
    if job.status != JobStatus.SUCCEEDED or not path or not default_storage.exists(path):
        raise Http404("This job has no file to download.")
    return FileResponse(
        default_storage.open(path, "rb"),
        as_attachment=True,
        filename=job.result.get("filename") or path.rsplit("/", 1)[-1],
    )
