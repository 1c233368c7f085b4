"""Template context shared by every page: the member's unread notices in this workspace."""

from .models import Notification


def notifications(request):
    user = getattr(request, "user", None)
    workspace = getattr(request, "workspace", None)
    if user is None or not user.is_authenticated or workspace is None:
        return {}
    unread = Notification.objects.filter(
        workspace=workspace, user=user, read_at__isnull=True
    ).count()
    return {"unread_notifications": unread}
