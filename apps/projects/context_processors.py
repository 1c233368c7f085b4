"""Template context shared by every page: how many things wait for a manager's approval."""

from apps.jobs.models import Job, JobStatus
from apps.workspaces.models import ROLE_RANK, Role

from .models import Render, RenderState


def approvals(request):
    """``approvals_waiting``: the workspace's renders and jobs waiting for approval, for
    managers and owners only (0 for everyone else, and no query)."""
    workspace = getattr(request, "workspace", None)
    membership = getattr(request, "membership", None)
    if workspace is None or membership is None:
        return {"approvals_waiting": 0}
    if ROLE_RANK[Role(membership.role)] < ROLE_RANK[Role.MANAGER]:
        return {"approvals_waiting": 0}
    renders = Render.objects.filter(workspace=workspace, state=RenderState.WAITING).count()
    jobs = Job.objects.filter(workspace=workspace, status=JobStatus.WAITING).count()
    return {"approvals_waiting": renders + jobs}
