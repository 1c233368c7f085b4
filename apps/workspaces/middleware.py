"""Sets ``request.workspace`` and ``request.membership`` for every signed-in request."""

from .models import Membership

SESSION_KEY = "chorus_workspace_id"


class WorkspaceMiddleware:
    """The current workspace is kept in the session; the first membership is the fallback.

    Anonymous users, and users who belong to no workspace yet, get ``None`` for both.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.workspace = None
        request.membership = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            memberships = Membership.objects.select_related("workspace").filter(user=user)
            wanted = request.session.get(SESSION_KEY)
            membership = None
            if wanted is not None:
                membership = memberships.filter(workspace_id=wanted).first()
            if membership is None:
                membership = memberships.order_by("created_at", "id").first()
                if membership is not None:
                    request.session[SESSION_KEY] = membership.workspace_id
            if membership is not None:
                request.membership = membership
                request.workspace = membership.workspace
        return self.get_response(request)
