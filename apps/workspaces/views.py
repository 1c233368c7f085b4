"""Pages of the workspaces app: home, sign-in, members, invitations, audit log, settings."""

import re

from django.contrib import messages
from django.contrib.auth import authenticate, login
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from . import services
from .access import get_scoped, scoped, workspace_view
from .audit import audit_line
from .forms import (
    ConfirmForm,
    InvitationForm,
    InvitationSignupForm,
    RoleForm,
    RoleUndoForm,
    SignInForm,
    WorkspaceForm,
)
from .middleware import SESSION_KEY
from .models import ROLE_DESCRIPTIONS, AuditEntry, Invitation, Membership, Role

client_ip = services.client_ip


def _redirect(request, url: str):
    """After a successful POST: a client redirect for htmx, a 303 otherwise."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return HttpResponseRedirect(url, status=303)


# --- Sign-in ----------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def sign_in(request):
    """E-mail + password sign-in, throttled per account and per address."""
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        next_url = ""
    if request.user.is_authenticated and request.method == "GET":
        return HttpResponseRedirect(next_url or reverse("workspaces:home"))
    form = SignInForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST" and form.is_valid():
        email, ip = form.cleaned_data["email"], client_ip(request)
        blocked = services.login_throttle_check(email=email, ip=ip)
        if blocked:
            form.add_error(None, blocked)
            status = 429
        else:
            # The backend counts failures (for the admin's sign-in too).
            user = authenticate(request, username=email, password=form.cleaned_data["password"])
            if user is None:
                form.add_error(
                    None,
                    services.login_throttle_check(email=email, ip=ip)
                    or "That e-mail and password do not match an account. "
                    "Check both, or reset your password.",
                )
                status = 400
            else:
                login(request, user)
                return HttpResponseRedirect(next_url or reverse("workspaces:home"))
    elif request.method == "POST":
        status = 400
    return render(
        request, "registration/login.html", {"form": form, "next": next_url}, status=status
    )


# --- Workspaces -------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def workspace_create(request):
    if not services.workspace_creation_allowed(request.user):
        # A page that says how to get in (an invitation), not a bare 403.
        return render(request, "workspaces/create.html", {"refused": True}, status=403)
    form = WorkspaceForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        workspace = services.workspace_create(
            name=form.cleaned_data["name"], owner=request.user, ip=client_ip(request)
        )
        request.session[SESSION_KEY] = workspace.pk
        messages.success(request, f"Workspace “{workspace.name}” created. You are its owner.")
        return _redirect(request, reverse("workspaces:home"))
    return render(
        request,
        "workspaces/create.html",
        {"form": form},
        status=400 if form.is_bound else 200,
    )


@login_required
@require_POST
def workspace_switch(request):
    wanted = request.POST.get("workspace", "")
    membership = (
        Membership.objects.filter(user=request.user, workspace_id=int(wanted))
        .select_related("workspace")
        .first()
        if re.fullmatch(r"[0-9]{1,18}", wanted)
        else None
    )
    if membership is None:
        messages.error(request, "You are not a member of that workspace.")
        return _redirect(request, reverse("workspaces:home"))
    request.session[SESSION_KEY] = membership.workspace_id
    messages.info(request, f"Switched to {membership.workspace.name}.")
    return _redirect(request, reverse("workspaces:home"))


# --- Members ----------------------------------------------------------------------------

UNDO_SESSION_KEY = "chorus.role_undo"


def _members_context(
    request,
    *,
    invite_form=None,
    issued=None,
    issued_invitation=None,
    confirm_role=None,
    confirm_revoke=None,
    undo=None,
):
    membership = request.membership
    ctx = {
        "memberships": scoped(request, Membership).select_related("user").order_by("user__email"),
        "roles": [(r.value, r.label, ROLE_DESCRIPTIONS[r]) for r in Role],
        "owner_count": scoped(request, Membership).filter(role=Role.OWNER).count(),
        "confirm_role": confirm_role,
        "undo": undo,
    }
    if membership.can_manage:
        ctx["invite_form"] = invite_form or InvitationForm(for_owner=membership.is_owner)
        ctx["invitations"] = scoped(request, Invitation).select_related("invited_by")[:50]
        ctx["issued_link"] = issued
        ctx["issued_invitation"] = issued_invitation
        ctx["confirm_revoke"] = confirm_revoke
    return ctx


def _undo_offer(request, entry_id):
    """The role change the person may still undo (an audit entry of theirs), or None."""
    if not entry_id or not request.membership.can_manage:
        return None
    entry = scoped(request, AuditEntry).filter(pk=entry_id).first()
    if not services.role_change_undoable(entry=entry, actor=request.user):
        return None
    target = scoped(request, Membership).filter(user__email=entry.target).first()
    if target is None or target.role != entry.data.get("to"):
        return None
    return {
        "entry": entry,
        "membership": target,
        "to": Role(entry.data["to"]).label.lower(),
        "from": Role(entry.data["from"]).label.lower(),
    }


@workspace_view()
@require_GET
def members(request):
    undo = _undo_offer(request, request.session.pop(UNDO_SESSION_KEY, None))
    template = "workspaces/members.html#member-table" if request.htmx else "workspaces/members.html"
    return render(request, template, _members_context(request, undo=undo))


@workspace_view(Role.MANAGER)
@require_POST
def invitation_create(request):
    form = InvitationForm(request.POST, for_owner=request.membership.is_owner)
    issued_link = issued_invitation = None
    status = 400
    if form.is_valid():
        try:
            issued = services.invitation_create(
                workspace=request.workspace,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                inviter_membership=request.membership,
                base_url=request.build_absolute_uri("/"),
                ip=client_ip(request),
            )
        except services.ActionRefused as exc:
            form.add_error("email", str(exc))
        else:
            issued_link = services.invitation_link(
                issued.token, base_url=request.build_absolute_uri("/")
            )
            issued_invitation = issued.invitation
            status = 200
            form = None
            if not request.htmx:
                # The link is shown once; a plain POST renders it instead of redirecting.
                messages.success(request, f"Invitation sent to {issued.invitation.email}.")
    ctx = _members_context(
        request, invite_form=form, issued=issued_link, issued_invitation=issued_invitation
    )
    template = "workspaces/members.html#invite" if request.htmx else "workspaces/members.html"
    return render(request, template, ctx, status=status)


@workspace_view(Role.MANAGER)
@require_POST
def invitation_revoke(request, pk: int):
    """Withdraw a pending invitation: the first POST asks, the one with ``confirm`` does it."""
    invitation = get_scoped(request, Invitation, pk=pk)
    template = "workspaces/members.html#invite" if request.htmx else "workspaces/members.html"
    confirmed = ConfirmForm(request.POST)
    confirmed = confirmed.is_valid() and confirmed.cleaned_data["confirm"]
    if not invitation.is_pending:
        messages.error(request, f"This invitation is already {invitation.state}.")
    elif not confirmed:
        ctx = _members_context(request, confirm_revoke=invitation)
        return render(request, template, ctx)
    else:
        try:
            services.invitation_revoke(
                invitation=invitation, actor_membership=request.membership, ip=client_ip(request)
            )
            messages.success(request, f"Invitation for {invitation.email} revoked.")
        except services.ActionRefused as exc:
            messages.error(request, str(exc))
    if request.htmx:
        return render(request, template, _members_context(request))
    return HttpResponseRedirect(reverse("workspaces:members"), status=303)


def _member_action_done(request, error: str | None, *, undo_entry=None):
    if error:
        messages.error(request, error)
    if request.htmx:
        response = render(
            request,
            "workspaces/members.html#member-table",
            _members_context(request, undo=_undo_offer(request, undo_entry and undo_entry.pk)),
        )
        if error:
            response.status_code = 400
        return response
    if undo_entry is not None:
        request.session[UNDO_SESSION_KEY] = undo_entry.pk
    return HttpResponseRedirect(reverse("workspaces:members"), status=303)


@workspace_view(Role.MANAGER)
@require_POST
def member_role(request, pk: int):
    """Save a member's new role (an explicit Save). A promotion to manager or owner is asked
    first: without ``confirm`` the page shows what it grants and a button that confirms."""
    membership = get_scoped(request, Membership.objects.select_related("user"), pk=pk)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _member_action_done(
            request, "Choose one of the roles: owner, manager, member or viewer."
        )
    role = Role(form.cleaned_data["role"])
    try:
        services.membership_role_change_check(
            membership=membership, role=role, actor_membership=request.membership
        )
    except services.ActionRefused as exc:
        return _member_action_done(request, str(exc))
    if not form.cleaned_data["confirm"] and services.role_change_needs_confirmation(
        membership=membership, role=role
    ):
        ctx = _members_context(
            request,
            confirm_role={
                "membership": membership,
                "role": role.value,
                "label": role.label.lower(),
                "description": ROLE_DESCRIPTIONS[role],
            },
        )
        template = (
            "workspaces/members.html#member-table" if request.htmx else "workspaces/members.html"
        )
        return render(request, template, ctx)
    try:
        entry = services.membership_role_change(
            membership=membership,
            role=role,
            actor_membership=request.membership,
            ip=client_ip(request),
        )
    except services.ActionRefused as exc:
        return _member_action_done(request, str(exc))
    if entry is None:
        messages.info(request, f"{membership.user.email} is already {role.label.lower()}.")
    return _member_action_done(request, None, undo_entry=entry)


@workspace_view(Role.MANAGER)
@require_POST
def member_role_undo(request, pk: int):
    """Undo one's own recent role change (the Undo button after a change)."""
    membership = get_scoped(request, Membership.objects.select_related("user"), pk=pk)
    form = RoleUndoForm(request.POST)
    if not form.is_valid():
        return _member_action_done(request, "That change can no longer be undone.")
    entry = get_scoped(request, AuditEntry, pk=form.cleaned_data["change"])
    try:
        services.membership_role_undo(
            membership=membership,
            entry=entry,
            actor_membership=request.membership,
            ip=client_ip(request),
        )
    except services.ActionRefused as exc:
        return _member_action_done(request, str(exc))
    messages.success(
        request,
        f"Undone: {membership.user.email} is {Role(entry.data['from']).label.lower()} again.",
    )
    return _member_action_done(request, None)


@workspace_view(Role.MANAGER)
@require_POST
def member_remove(request, pk: int):
    membership = get_scoped(request, Membership.objects.select_related("user"), pk=pk)
    error = None
    try:
        services.membership_remove(
            membership=membership, actor_membership=request.membership, ip=client_ip(request)
        )
        messages.success(request, f"{membership.user.email} was removed from the workspace.")
    except services.ActionRefused as exc:
        error = str(exc)
    return _member_action_done(request, error)


@workspace_view()
@require_POST
def workspace_leave(request):
    name = request.workspace.name
    try:
        services.membership_remove(
            membership=request.membership,
            actor_membership=request.membership,
            ip=client_ip(request),
        )
    except services.ActionRefused as exc:
        messages.error(request, str(exc))
        return _redirect(request, reverse("workspaces:members"))
    request.session.pop(SESSION_KEY, None)
    messages.info(request, f"You left {name}.")
    return _redirect(request, reverse("workspaces:home"))


# --- Invitation links -------------------------------------------------------------------

_INVALID_TEXT = {
    "invalid": (
        "This invitation link is not valid",
        "The link is incomplete or was changed. Copy the whole link from the e-mail, "
        "or ask whoever invited you to send a new one.",
    ),
    "expired": (
        "This invitation has expired",
        "Invitations work for a limited time. Ask whoever invited you to send a new one.",
    ),
    "used": (
        "This invitation was already used",
        "Each invitation link works once. If it was you, sign in; otherwise ask for a new one.",
    ),
    "revoked": (
        "This invitation was withdrawn",
        "Whoever invited you withdrew it. Ask them if you should still join.",
    ),
    "mismatch": (
        "This invitation is for someone else",
        "You are signed in with a different e-mail address than the one invited. "
        "Sign out and open the link again, or ask for an invitation to your address.",
    ),
}


def _invitation_problem(request, reason: str, invitation=None):
    title, text = _INVALID_TEXT[reason]
    return render(
        request,
        "workspaces/invitation_invalid.html",
        {"title": title, "text": text, "reason": reason, "invitation": invitation},
        status=410 if reason in {"expired", "used", "revoked"} else 400,
    )


@require_http_methods(["GET", "POST"])
def invitation_accept(request, token: str):
    """Public page behind an invitation link: join, sign in first, or create the account."""
    try:
        invitation = services.invitation_from_token(token)
    except services.InvitationInvalid as exc:
        return _invitation_problem(request, exc.reason, exc.invitation)
    from .models import User

    ctx = {"invitation": invitation, "token": token}
    if request.user.is_authenticated:
        if request.user.email.lower() != invitation.email.lower():
            return _invitation_problem(request, "mismatch", invitation)
        if request.method == "POST":
            try:
                membership = services.invitation_accept(
                    token=token, user=request.user, ip=client_ip(request)
                )
            except services.InvitationInvalid as exc:
                return _invitation_problem(request, exc.reason, exc.invitation)
            request.session[SESSION_KEY] = membership.workspace_id
            messages.success(request, f"Welcome to {membership.workspace.name}.")
            return HttpResponseRedirect(reverse("workspaces:home"), status=303)
        return render(request, "workspaces/invitation_accept.html", ctx)

    if User.objects.filter(email__iexact=invitation.email).exists():
        ctx["sign_in_url"] = f"{reverse('login')}?next={request.path}"
        return render(request, "workspaces/invitation_accept.html", ctx)

    form = InvitationSignupForm(
        request.POST if request.method == "POST" else None, email=invitation.email
    )
    if request.method == "POST" and form.is_valid():
        try:
            user, membership = services.invitation_signup(
                token=token,
                name=form.cleaned_data["name"],
                password=form.cleaned_data["password1"],
                ip=client_ip(request),
            )
        except services.InvitationInvalid as exc:
            return _invitation_problem(request, exc.reason, exc.invitation)
        except services.ActionRefused as exc:
            form.add_error(None, str(exc))
        else:
            login(request, user, backend="apps.workspaces.backends.ThrottledBackend")
            request.session[SESSION_KEY] = membership.workspace_id
            messages.success(request, f"Welcome to {membership.workspace.name}.")
            return HttpResponseRedirect(reverse("workspaces:home"), status=303)
    ctx["form"] = form
    return render(
        request,
        "workspaces/invitation_accept.html",
        ctx,
        status=400 if form.is_bound and form.errors else 200,
    )


# --- Audit log --------------------------------------------------------------------------


@workspace_view(Role.MANAGER)
@require_GET
def audit_log(request):
    entries = scoped(request, AuditEntry)
    query = request.GET.get("q", "").replace("\x00", "").strip()[:200]
    if query:
        entries = entries.filter(
            Q(action__icontains=query)
            | Q(target__icontains=query)
            | Q(actor_email__icontains=query)
        )
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    for entry in page.object_list:
        entry.line = audit_line(entry)
    template = "workspaces/audit.html#entries" if request.htmx else "workspaces/audit.html"
    return render(request, template, {"page": page, "query": query})
