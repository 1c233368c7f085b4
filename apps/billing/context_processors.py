"""Template context shared by every page: the member's unread notices in this workspace and
the credits left this period (the top bar)."""

from decimal import Decimal
from functools import cached_property

from django.db.models import OuterRef, Q, Subquery, Sum

from . import services
from .models import Budget, Notification, Plan, UsageEvent


class CreditsLeft:
    """What the top bar says is left this period: the member's budget and, for managers, the
    workspace (its cap and the plan's credits, whichever is tighter). Lazy: nothing is read
    until a template shows it (an htmx partial never does), then two queries — the plan row
    with the member's budget, and one aggregate of the ledger for every figure."""

    def __init__(self, workspace, user, manager: bool):
        self._workspace, self._user, self._manager = workspace, user, manager

    @cached_property
    def _figures(self) -> dict:
        plan = (
            Plan.objects.filter(workspace=self._workspace)
            .annotate(
                budget=Subquery(
                    Budget.objects.filter(workspace=OuterRef("workspace"), user=self._user).values(
                        "limit_credits"
                    )[:1]
                )
            )
            .first()
        )
        if plan is None:
            return {}
        budget = plan.budget
        start = services.period_start(plan)
        sums = {}
        if budget is not None:
            sums["member"] = Q(user=self._user, created_at__gte=start)
        if self._manager and plan.workspace_cap is not None:
            sums["cap"] = Q(created_at__gte=start)
        if self._manager and plan.credit_limit:
            sums["plan"] = Q(created_at__gte=plan.synced_at or start)
        if not sums:
            return {}
        earliest = min(start, plan.synced_at or start)
        used = UsageEvent.objects.filter(workspace=self._workspace, created_at__gte=earliest)
        used = used.aggregate(
            **{
                name: Sum(services._CHARGE, filter=cond, output_field=services._CREDITS)
                for name, cond in sums.items()
            }
        )
        used = {name: value or Decimal(0) for name, value in used.items()}
        figures = {}
        if "member" in used:
            figures["member"] = budget - used["member"]
        left = []
        if "cap" in used:
            left.append(plan.workspace_cap - used["cap"])
        if "plan" in used:
            left.append(Decimal(plan.credit_limit) - Decimal(plan.credits_used) - used["plan"])
        if left:
            figures["workspace"] = min(left)
        return figures

    @property
    def member(self) -> Decimal | None:
        """Credits left of the member's budget (None: no budget)."""
        return self._figures.get("member")

    @property
    def workspace(self) -> Decimal | None:
        """Credits left to the workspace (managers only; None: no limit)."""
        return self._figures.get("workspace")


def notifications(request):
    user = getattr(request, "user", None)
    workspace = getattr(request, "workspace", None)
    if user is None or not user.is_authenticated or workspace is None:
        return {}
    unread = Notification.objects.filter(
        workspace=workspace, user=user, read_at__isnull=True
    ).count()
    membership = getattr(request, "membership", None)
    manager = bool(membership is not None and membership.can_manage)
    return {
        "unread_notifications": unread,
        "credits_left": CreditsLeft(workspace, user, manager),
    }
