"""Template context shared by every page: the current workspace and the switcher's list."""

from .models import Membership


def workspace(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "current_workspace": getattr(request, "workspace", None),
        "current_membership": getattr(request, "membership", None),
        "my_memberships": Membership.objects.filter(user=user)
        .select_related("workspace")
        .order_by("workspace__name"),
    }
