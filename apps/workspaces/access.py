"""The one way views reach team rows: scoped to ``request.workspace``, checked by role.

Another workspace's object is a 404 (its existence is not revealed); a role without the right
is a 403; no workspace at all sends the person to create or join one.
"""

from functools import wraps

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect
from django_htmx.http import HttpResponseClientRedirect

from .models import ROLE_RANK, Role


def scoped(request, model_or_queryset: type[Model] | QuerySet) -> QuerySet:
    """The rows of ``request.workspace`` only; an empty queryset when there is none."""
    qs = (
        model_or_queryset
        if isinstance(model_or_queryset, QuerySet)
        else model_or_queryset._default_manager.all()
    )
    if request.workspace is None:
        return qs.none()
    return qs.filter(workspace=request.workspace)


def get_scoped(request, model_or_queryset, **lookup):
    """One row of the current workspace, or 404."""
    qs = scoped(request, model_or_queryset)
    try:
        return qs.get(**lookup)
    except qs.model.DoesNotExist as exc:
        raise Http404("Not found in this workspace.") from exc
    except (ValueError, TypeError) as exc:  # a malformed id in the URL
        raise Http404("Not found in this workspace.") from exc


def require_role(request, role: str) -> None:
    """Raise 403 unless the current membership has ``role`` or stronger."""
    membership = request.membership
    if membership is None or ROLE_RANK[Role(membership.role)] < ROLE_RANK[Role(role)]:
        raise PermissionDenied(f"This needs the {Role(role).label.lower()} role or higher.")


def workspace_view(role: str = Role.VIEWER):
    """Decorator: signed in, in a workspace, with at least ``role``."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                from django.contrib.auth.views import redirect_to_login

                return redirect_to_login(request.get_full_path())
            if request.workspace is None:
                return redirect("workspaces:create")
            require_role(request, role)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def has_role(request, role: str) -> bool:
    """Whether the request's membership has ``role`` or stronger (what a page shows)."""
    membership = request.membership
    return membership is not None and membership.has_role(role)


def changed(request, target: str, message: str = ""):
    """After a change: ``target`` again (htmx: a client redirect), with a notice."""
    if message:
        messages.success(request, message)
    if getattr(request, "htmx", False):
        return HttpResponseClientRedirect(target)
    return HttpResponseRedirect(target, status=303)
