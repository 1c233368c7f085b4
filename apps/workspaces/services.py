"""Business logic of workspaces: creation, roles, invitations, audit, sign-in throttling, export."""

import ipaddress
import json
import logging
import secrets
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.text import slugify
from django.views.decorators.debug import sensitive_variables

from . import crypto
from .models import (
    ROLE_RANK,
    AuditEntry,
    EngineKind,
    EngineSettings,
    Invitation,
    Membership,
    Role,
    User,
    Workspace,
)

log = logging.getLogger(__name__)

INVITATION_SALT = "chorus.invitation"


def client_ip(request) -> str | None:
    """The client's address as Daphne reports it (proxy headers only when configured)."""
    raw = (request.META.get("REMOTE_ADDR") or "").strip()
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        return None


class ActionRefused(Exception):
    """A request that breaks a rule of the workspace; the message is shown to the person."""


# --- Audit ------------------------------------------------------------------------------


def audit_record(
    *,
    workspace: Workspace,
    actor: User | None,
    action: str,
    target: str = "",
    data: dict | None = None,
    ip: str | None = None,
) -> AuditEntry:
    """Append one entry to the workspace's audit log."""
    return AuditEntry.objects.create(
        workspace=workspace,
        actor=actor,
        actor_email=actor.email if actor else "",
        action=action,
        target=target[:200],
        data=data or {},
        ip_address=ip or None,
    )


# --- Workspaces -------------------------------------------------------------------------


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "workspace"
    slug = base
    while Workspace.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(2)}"
    return slug


def workspace_creation_allowed(user: User) -> bool:
    """Whether ``user`` may create workspaces (``CHORUS_WORKSPACE_CREATION``): staff only by
    default, everyone else joins by invitation; ``anyone`` lets every signed-in person."""
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_staff or settings.CHORUS_WORKSPACE_CREATION == "anyone"


@transaction.atomic
def workspace_create(*, name: str, owner: User, ip: str | None = None) -> Workspace:
    """A new workspace with ``owner`` as its first owner."""
    name = name.strip()
    if not name:
        raise ActionRefused("A workspace needs a name.")
    workspace = Workspace.objects.create(name=name, slug=_unique_slug(name))
    Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
    audit_record(workspace=workspace, actor=owner, action="workspace.created", target=name, ip=ip)
    return workspace


@transaction.atomic
def workspace_rename(*, workspace: Workspace, name: str, actor: User, ip: str | None = None):
    old = workspace.name
    workspace.name = name.strip()
    workspace.save(update_fields=["name"])
    audit_record(
        workspace=workspace,
        actor=actor,
        action="workspace.renamed",
        target=workspace.name,
        data={"from": old, "to": workspace.name},
        ip=ip,
    )
    return workspace


# --- Members ----------------------------------------------------------------------------


def _owner_count(workspace: Workspace) -> int:
    return Membership.objects.filter(workspace=workspace, role=Role.OWNER).count()


def _lock_workspace(membership: Membership, actor_membership: Membership):
    """Serialize member changes of one workspace, then re-read both memberships.

    Two owners demoting each other at once must not leave the workspace without an owner.
    """
    Workspace.objects.select_for_update().get(pk=membership.workspace_id)
    target = Membership.objects.select_related("user", "workspace").get(pk=membership.pk)
    actor = Membership.objects.filter(pk=actor_membership.pk).first()
    if actor is None:
        raise ActionRefused("You are no longer a member of this workspace.")
    return target, actor


def _check_can_touch(actor_membership: Membership, membership: Membership, new_role: str | None):
    if not actor_membership.can_manage:
        raise ActionRefused("Only owners and managers can change members.")
    touches_owner = membership.role == Role.OWNER or new_role == Role.OWNER
    if touches_owner and not actor_membership.is_owner:
        raise ActionRefused("Only an owner can grant or take away the owner role.")


# A promotion to these roles asks the person making it to confirm first.
CONFIRMED_ROLES = frozenset({Role.MANAGER, Role.OWNER})
# How long after a role change its author may undo it from the Members page.
ROLE_UNDO_WINDOW = timedelta(minutes=15)


def role_change_needs_confirmation(*, membership: Membership, role: str) -> bool:
    """True for a promotion to manager or owner (the members page asks before saving it)."""
    role = Role(role)
    return role in CONFIRMED_ROLES and ROLE_RANK[role] > ROLE_RANK[Role(membership.role)]


def membership_role_change_check(
    *, membership: Membership, role: str, actor_membership: Membership
) -> None:
    """Raise ``ActionRefused`` when ``actor_membership`` may not give ``membership`` ``role``
    (checked again, under the workspace lock, when the change is made)."""
    role = Role(role)
    _check_can_touch(actor_membership, membership, role)
    if (
        membership.role == Role.OWNER
        and role != Role.OWNER
        and _owner_count(membership.workspace) <= 1
    ):
        raise ActionRefused("This is the workspace's last owner. Make someone else an owner first.")


def _role_set(membership, role, actor_membership, *, action, data, ip) -> AuditEntry | None:
    membership, actor_membership = _lock_workspace(membership, actor_membership)
    _check_can_touch(actor_membership, membership, role)
    if membership.role == role:
        return None
    if membership.role == Role.OWNER and _owner_count(membership.workspace) <= 1:
        raise ActionRefused("This is the workspace's last owner. Make someone else an owner first.")
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    return audit_record(
        workspace=membership.workspace,
        actor=actor_membership.user,
        action=action,
        target=membership.user.email,
        data={"from": old, "to": role.value, **data},
        ip=ip,
    )


@transaction.atomic
def membership_role_change(
    *, membership: Membership, role: str, actor_membership: Membership, ip: str | None = None
) -> AuditEntry | None:
    """Give a member another role; the last owner can never be demoted.

    Returns the audit entry of the change (what an undo refers to), None when the member
    already had that role.
    """
    return _role_set(
        membership, Role(role), actor_membership, action="member.role_changed", data={}, ip=ip
    )


def role_change_undoable(*, entry: AuditEntry | None, actor: User) -> bool:
    """Whether ``actor`` may still undo the role change recorded in ``entry``."""
    return (
        entry is not None
        and entry.action == "member.role_changed"
        and entry.actor_id == actor.pk
        and timezone.now() - entry.created_at <= ROLE_UNDO_WINDOW
        and not AuditEntry.objects.filter(
            workspace_id=entry.workspace_id, action="member.role_restored", data__undoes=entry.pk
        ).exists()
    )


@transaction.atomic
def membership_role_undo(
    *,
    membership: Membership,
    entry: AuditEntry,
    actor_membership: Membership,
    ip: str | None = None,
) -> AuditEntry:
    """Give ``membership`` back the role it had before the change in ``entry``.

    Only the change's author, within ``ROLE_UNDO_WINDOW``, once, and only while nobody has
    changed the role since; the usual role rules apply (audited as ``member.role_restored``).
    """
    if (
        entry.workspace_id != membership.workspace_id
        or entry.target != membership.user.email
        or not role_change_undoable(entry=entry, actor=actor_membership.user)
    ):
        raise ActionRefused("This change can no longer be undone: choose the role again instead.")
    membership.refresh_from_db(fields=["role"])
    if membership.role != entry.data.get("to"):
        raise ActionRefused(
            "The role was changed again since: choose the role again instead of undoing."
        )
    restored = _role_set(
        membership,
        Role(entry.data["from"]),
        actor_membership,
        action="member.role_restored",
        data={"undoes": entry.pk},
        ip=ip,
    )
    if restored is None:  # pragma: no cover - the role was checked just above
        raise ActionRefused("Nothing to undo.")
    return restored


@transaction.atomic
def membership_remove(
    *, membership: Membership, actor_membership: Membership, ip: str | None = None
) -> None:
    """Remove someone from the workspace (or leave it yourself); never the last owner."""
    membership, actor_membership = _lock_workspace(membership, actor_membership)
    leaving = membership.pk == actor_membership.pk
    if not leaving:
        _check_can_touch(actor_membership, membership, None)
    if membership.role == Role.OWNER and _owner_count(membership.workspace) <= 1:
        raise ActionRefused(
            "This is the workspace's last owner and cannot be removed. "
            "Make someone else an owner first."
        )
    email = membership.user.email
    workspace = membership.workspace
    membership.delete()
    audit_record(
        workspace=workspace,
        actor=actor_membership.user,
        action="member.left" if leaving else "member.removed",
        target=email,
        ip=ip,
    )


# --- Invitations ------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str  # the secret part of the link; never stored


def invitation_link(token: str, *, base_url: str) -> str:
    from django.urls import reverse

    return base_url.rstrip("/") + reverse("invitation_accept", args=[token])


@transaction.atomic
def invitation_create(
    *,
    workspace: Workspace,
    email: str,
    role: str,
    inviter_membership: Membership,
    base_url: str,
    ip: str | None = None,
) -> IssuedInvitation:
    """Invite ``email`` with ``role``; e-mails the link and returns it for the inviter to copy.

    A pending invitation for the same address is replaced (the old link stops working).
    """
    email = User.objects.normalize_email(email.strip()).lower()
    role = Role(role)
    if not inviter_membership.can_manage:
        raise ActionRefused("Only owners and managers can invite people.")
    if role == Role.OWNER and not inviter_membership.is_owner:
        raise ActionRefused("Only an owner can invite another owner.")
    if Membership.objects.filter(workspace=workspace, user__email__iexact=email).exists():
        raise ActionRefused(f"{email} is already a member of this workspace.")
    now = timezone.now()
    replaced = Invitation.objects.filter(
        workspace=workspace,
        email__iexact=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=now,
    ).update(revoked_at=now)
    nonce = secrets.token_urlsafe(24)
    invitation = Invitation.objects.create(
        workspace=workspace,
        email=email,
        role=role,
        token_hash=Invitation.hash_token(nonce),
        invited_by=inviter_membership.user,
    )
    token = signing.dumps([invitation.pk, nonce], salt=INVITATION_SALT, compress=True)
    audit_record(
        workspace=workspace,
        actor=inviter_membership.user,
        action="invitation.created",
        target=email,
        data={"role": role.value, "replaced": replaced},
        ip=ip,
    )
    link = invitation_link(token, base_url=base_url)
    inviter = inviter_membership.user.display_name
    transaction.on_commit(
        lambda: send_mail(
            subject=f"{inviter} invited you to {workspace.name} on Chorus",
            message=(
                f"{inviter} invited you to join the workspace “{workspace.name}” on Chorus "
                f"as {role.label.lower()}.\n\nAccept the invitation:\n{link}\n\n"
                f"The link works once and expires on {invitation.expires_at:%Y-%m-%d %H:%M} UTC."
            ),
            from_email=None,
            recipient_list=[email],
            fail_silently=True,
        )
    )
    return IssuedInvitation(invitation=invitation, token=token)


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor_membership: Membership, ip=None) -> None:
    if not actor_membership.can_manage:
        raise ActionRefused("Only owners and managers can revoke invitations.")
    if not invitation.is_pending:
        raise ActionRefused(f"This invitation is already {invitation.state}.")
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(
        workspace=invitation.workspace,
        actor=actor_membership.user,
        action="invitation.revoked",
        target=invitation.email,
        ip=ip,
    )


class InvitationInvalid(Exception):
    """Why a link cannot be used: ``reason`` is one of invalid, expired, used, revoked."""

    def __init__(self, reason: str, invitation: Invitation | None = None):
        super().__init__(reason)
        self.reason = reason
        self.invitation = invitation


def invitation_from_token(token: str) -> Invitation:
    """The pending invitation behind a link, or ``InvitationInvalid`` saying why not."""
    try:
        pk, nonce = signing.loads(token, salt=INVITATION_SALT)
        pk = int(pk)
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise InvitationInvalid("invalid") from exc
    invitation = Invitation.objects.select_related("workspace", "invited_by").filter(pk=pk).first()
    if invitation is None or not secrets.compare_digest(
        invitation.token_hash, Invitation.hash_token(str(nonce))
    ):
        raise InvitationInvalid("invalid")
    state = invitation.state
    if state != "pending":
        raise InvitationInvalid({"accepted": "used"}.get(state, state), invitation)
    return invitation


@transaction.atomic
def invitation_accept(*, token: str, user: User, ip: str | None = None) -> Membership:
    """Join the invitation's workspace as ``user`` (whose e-mail must match); single use."""
    invitation = invitation_from_token(token)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.state != "pending":  # lost a race with another accept
        raise InvitationInvalid("used", invitation)
    if user.email.lower() != invitation.email.lower():
        raise InvitationInvalid("mismatch", invitation)
    membership, created = Membership.objects.get_or_create(
        workspace=invitation.workspace, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit_record(
        workspace=invitation.workspace,
        actor=user,
        action="invitation.accepted",
        target=user.email,
        data={"role": membership.role, "already_member": not created},
        ip=ip,
    )
    return membership


@transaction.atomic
def invitation_signup(
    *, token: str, name: str, password: str, ip: str | None = None
) -> tuple[User, Membership]:
    """Create the invited person's account and accept the invitation in one step."""
    invitation = invitation_from_token(token)
    if User.objects.filter(email__iexact=invitation.email).exists():
        raise ActionRefused("An account with this e-mail already exists: sign in to accept.")
    try:
        with transaction.atomic():
            user = User.objects.create_user(
                email=invitation.email, password=password, name=name.strip()
            )
    except IntegrityError as exc:
        raise ActionRefused(
            "An account with this e-mail already exists: sign in to accept."
        ) from exc
    membership = invitation_accept(token=token, user=user, ip=ip)
    return user, membership


# --- Sign-in throttling -----------------------------------------------------------------


def _throttle_keys(email: str, ip: str | None) -> list[tuple[str, int]]:
    keys = [
        (f"login-fail:acct:{email.strip().lower()}", settings.CHORUS_LOGIN_MAX_FAILURES_PER_ACCOUNT)
    ]
    if ip:
        keys.append((f"login-fail:ip:{ip}", settings.CHORUS_LOGIN_MAX_FAILURES_PER_IP))
    return keys


def login_throttle_check(*, email: str, ip: str | None) -> str | None:
    """A message when sign-in from this account or address is blocked for now, else None."""
    for key, limit in _throttle_keys(email, ip):
        if (cache.get(key) or 0) >= limit:
            minutes = max(1, round(settings.CHORUS_LOGIN_WINDOW_SECONDS / 60))
            what = "this account" if ":acct:" in key else "your network address"
            return (
                f"Too many failed sign-in attempts for {what}. "
                f"Wait {minutes} minute{'s' if minutes != 1 else ''} and try again, "
                "or reset your password."
            )
    return None


def login_failure_record(*, email: str, ip: str | None) -> None:
    window = settings.CHORUS_LOGIN_WINDOW_SECONDS
    for key, _limit in _throttle_keys(email, ip):
        if cache.add(key, 1, timeout=window):
            continue
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)
    log.warning("sign-in failed for an account from %s", ip or "unknown address")


def login_success_reset(*, email: str) -> None:
    cache.delete(f"login-fail:acct:{email.strip().lower()}")


# --- Demo bootstrap ---------------------------------------------------------------------


@dataclass(frozen=True)
class DemoLogin:
    workspace: Workspace
    user: User
    password: str | None  # set only when this call chose or set the password


@transaction.atomic
def demo_bootstrap(*, email: str, password: str | None) -> DemoLogin:
    """Make sure the demo workspace and its owner exist (idempotent, keeps existing data).

    With an explicit ``password`` the owner's password is set to it; otherwise a new owner
    gets a generated one (returned so it can be printed) and an existing owner keeps theirs.
    """
    email = email.strip().lower()
    user = User.objects.filter(email__iexact=email).first()
    chosen = None
    if user is None:
        chosen = password or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(email=email, password=chosen, name="Studio admin")
    elif password and not user.check_password(password):
        user.set_password(password)
        user.save(update_fields=["password"])
        chosen = password
    membership = (
        Membership.objects.filter(user=user, role=Role.OWNER).select_related("workspace").first()
    )
    if membership is None:
        workspace = workspace_create(name="Demo studio", owner=user)
    else:
        workspace = membership.workspace
    return DemoLogin(workspace=workspace, user=user, password=chosen)


# --- Export -----------------------------------------------------------------------------


def _iso(dt):
    return dt.isoformat() if dt else None


def workspace_export_sections(workspace: Workspace) -> list[tuple[str, object]]:
    """The files of a workspace export as (name, JSON-able data); later apps add theirs."""
    memberships = Membership.objects.filter(workspace=workspace).select_related("user")
    return [
        (
            "workspace.json",
            {
                "name": workspace.name,
                "slug": workspace.slug,
                "created_at": _iso(workspace.created_at),
                "exported_at": _iso(timezone.now()),
                "format": "chorus-workspace-export/1",
            },
        ),
        (
            "members.json",
            [
                {
                    "email": m.user.email,
                    "name": m.user.name,
                    "role": m.role,
                    "joined_at": _iso(m.created_at),
                }
                for m in memberships
            ],
        ),
        (
            "invitations.json",
            [
                {
                    "email": i.email,
                    "role": i.role,
                    "state": i.state,
                    "invited_by": i.invited_by.email if i.invited_by else None,
                    "created_at": _iso(i.created_at),
                    "expires_at": _iso(i.expires_at),
                    "accepted_at": _iso(i.accepted_at),
                }
                for i in workspace.invitations.select_related("invited_by")
            ],
        ),
        (
            "audit_log.json",
            [
                {
                    "at": _iso(a.created_at),
                    "actor": a.actor_email,
                    "action": a.action,
                    "target": a.target,
                    "data": a.data,
                    "ip": a.ip_address,
                }
                for a in workspace.audit_entries.all().iterator()
            ],
        ),
    ]


def workspace_export_run(*, job, progress) -> dict:
    """Job runner: write the workspace's data as a ZIP into storage and return where it is."""
    workspace = job.workspace
    progress(5, "Collecting workspace data")
    sections = workspace_export_sections(workspace)
    for provider in settings.CHORUS_EXPORT_SECTIONS:
        sections.extend(import_string(provider)(workspace))
    # The archive is written to a temporary file, and a section that comes in blocks (the
    # ledger: an iterator of bytes) is written as it comes: a big workspace's export never
    # sits whole in the worker's memory.
    buffer = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, after it is saved)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index, (name, data) in enumerate(sections, start=1):
            if isinstance(data, bytes):  # a file (audio), as it is
                archive.writestr(name, data)
            elif isinstance(data, Iterator):  # blocks of a file
                with archive.open(name, "w", force_zip64=True) as member:
                    for block in data:
                        member.write(block)
            else:
                archive.writestr(name, json.dumps(data, indent=2, ensure_ascii=False))
            progress(10 + int(80 * index / len(sections)), f"Wrote {name}")
        archive.writestr(
            "README.txt",
            f"Chorus export of the workspace “{workspace.name}”.\n"
            "Each .json file holds one kind of data; times are ISO 8601 in UTC.\n",
        )
    progress(95, "Saving the archive")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    filename = f"chorus-{workspace.slug}-{stamp}.zip"
    size = buffer.tell()
    buffer.seek(0)
    with buffer:
        path = default_storage.save(f"exports/{workspace.pk}/{job.pk}/{filename}", File(buffer))
    audit_record(
        workspace=workspace,
        actor=job.created_by,
        action="workspace.exported",
        target=filename,
        data={"job": job.pk, "bytes": size},
    )
    return {"file": path, "filename": filename, "size": size}


# --- Engine settings --------------------------------------------------------------------


def engine_settings_for(workspace: Workspace) -> EngineSettings:
    """The workspace's engine settings (the local engine until an owner changes them)."""
    row = EngineSettings.objects.filter(workspace=workspace).first()
    return row or EngineSettings(workspace=workspace, kind=EngineKind.LOCAL)


@sensitive_variables("api_key")
@transaction.atomic
def engine_settings_update(
    *,
    workspace: Workspace,
    actor: User,
    kind: str,
    api_key: str | None,
    remove_key: bool = False,
    base_url: str = "",
    ip: str | None = None,
) -> EngineSettings:
    """Change the engine; a new ``api_key`` is encrypted, ``None`` keeps the stored one."""
    row, _ = EngineSettings.objects.select_for_update().get_or_create(workspace=workspace)
    before = {"kind": row.kind, "base_url": row.base_url, "key": row.api_key_last4}
    key_changed = False
    new_base = base_url.strip().rstrip("/")
    if row.api_key_encrypted and not api_key and not remove_key and new_base != row.base_url:
        # The stored key is only ever sent where it was entered for.
        raise ActionRefused("Enter the API key again to use it with another base URL.")
    if remove_key:
        row.api_key_encrypted, row.api_key_last4 = "", ""
        key_changed = True
    elif api_key:
        row.api_key_encrypted = crypto.encrypt(api_key)
        row.api_key_last4 = api_key[-4:]
        key_changed = True
    if kind == EngineKind.ELEVENLABS and not row.api_key_encrypted:
        raise ActionRefused("The ElevenLabs engine needs an API key.")
    row.kind = EngineKind(kind)
    row.base_url = new_base
    row.save()
    audit_record(
        workspace=workspace,
        actor=actor,
        action="engine.changed",
        target=row.kind,
        data={
            "from": before["kind"],
            "to": row.kind,
            "base_url": row.base_url,
            "key_changed": key_changed,
            "key_removed": remove_key,
        },
        ip=ip,
    )
    cache.delete(f"engine-status:{workspace.pk}")
    return row


def engine_egress():
    """Where ElevenLabs engines may connect, as the administrator set it (settings.py,
    "Engine egress"): an ``EgressPolicy`` for the form (save time) and the engine (every
    connection)."""
    from urllib.parse import urlsplit

    from apps.engines.elevenlabs.egress import EgressPolicy

    default_host = urlsplit(settings.CHORUS_ELEVENLABS_BASE_URL).hostname
    return EgressPolicy.build(
        [*settings.CHORUS_ENGINE_ALLOWED_HOSTS, default_host or ""],
        allow_loopback=settings.CHORUS_ENGINE_ALLOW_LOOPBACK,
        allow_private=settings.CHORUS_ENGINE_ALLOW_PRIVATE,
    )
