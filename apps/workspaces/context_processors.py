"""Template context shared by every page: the current workspace and the switcher's list."""

from .models import Membership
from .services import workspace_creation_allowed


def workspace(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    workspace = getattr(request, "workspace", None)
    return {
        "current_workspace": workspace,
        "current_membership": getattr(request, "membership", None),
        "can_create_workspace": workspace_creation_allowed(user),
        "my_memberships": Membership.objects.filter(user=user)
        .select_related("workspace")
        .order_by("workspace__name"),
    }
