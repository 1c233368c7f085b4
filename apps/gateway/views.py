"""Settings → API keys: every member's own keys; managers and owners see and revoke all."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apps.workspaces.access import get_scoped, scoped, workspace_view
from apps.workspaces.models import Role
from apps.workspaces.services import ActionRefused, client_ip
from studio_site.format import label_of

from . import services
from .forms import ApiKeyForm
from .models import SCOPES, ApiKey

PAGE = "gateway/keys.html"
PARTIAL = "gateway/keys.html#keys"


def _state(api_key: ApiKey, now) -> str:
    if api_key.revoked_at is not None:
        return "revoked"
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return "expired"
    return "active"


def _visible_keys(request):
    """Managers and owners see the whole workspace's keys; everyone else only their own."""
    keys = scoped(request, ApiKey).select_related("user")
    if not request.membership.can_manage:
        keys = keys.filter(user=request.user)
    return keys


def _keys_context(request, *, form=None, issued=None):
    now = timezone.now()
    rows = list(_visible_keys(request))
    for api_key in rows:
        api_key.state = _state(api_key, now)
        api_key.scope_labels = [SCOPES.get(s) or label_of(s) for s in api_key.scopes]
    return {
        "form": form or ApiKeyForm(),
        "keys": rows,
        "issued": issued,
        "show_owner": request.membership.can_manage,
        "base_url": request.build_absolute_uri("/").rstrip("/"),
    }


@never_cache  # the create response carries the new key: no cache may keep it
@workspace_view(Role.VIEWER)
@require_http_methods(["GET", "POST"])
def keys(request):
    if not request.membership.can_create:
        # The 403 page shows this sentence: what a viewer may do instead.
        raise PermissionDenied(
            "Viewers cannot use API keys. Ask a manager or owner of "
            f"{request.workspace.name} to make you a member, then create your key here."
        )
    form = ApiKeyForm(request.POST if request.method == "POST" else None)
    issued = None
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                issued = services.api_key_create(
                    workspace=request.workspace,
                    user=request.user,
                    name=form.cleaned_data["name"],
                    scopes=form.cleaned_data["scopes"],
                    expires_at=form.expires_at,
                    monthly_cap=form.cleaned_data["monthly_cap"],
                    ip=client_ip(request),
                )
            except ActionRefused as exc:
                form.add_error(None, str(exc))
            else:
                # The key is shown once, in this response: never in a redirect or a message.
                status, form = 200, None
    ctx = _keys_context(request, form=form, issued=issued)
    return render(request, PARTIAL if request.htmx else PAGE, ctx, status=status)


@workspace_view(Role.MEMBER)
@require_POST
def revoke(request, pk: int):
    api_key = get_scoped(request, ApiKey.objects.select_related("user"), pk=pk)
    if api_key.user_id != request.user.pk and not request.membership.can_manage:
        raise PermissionDenied("Only managers and owners can revoke a teammate's key.")
    already = api_key.revoked_at is not None
    services.api_key_revoke(api_key=api_key, actor=request.user, ip=client_ip(request))
    if already:
        messages.info(request, f"The key “{api_key.name}” was already revoked.")
    else:
        messages.success(
            request, f"Key “{api_key.name}” revoked. Calls made with it are now refused."
        )
    if request.htmx:
        return render(request, PARTIAL, _keys_context(request))
    return HttpResponseRedirect(reverse("gateway:keys"), status=303)
