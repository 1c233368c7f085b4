"""Personal API keys: create (shown once), authenticate, revoke — every change audited."""

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.workspaces.models import Membership, Role
from apps.workspaces.services import ActionRefused, audit_record

from .models import SCOPES, ApiKey

KEY_PREFIX = "chorus_"
LAST_USED_EVERY = timedelta(minutes=1)  # how often last_used_at is written (not per request)


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    raw: str  # shown once, never stored


@transaction.atomic
def api_key_create(
    *,
    workspace,
    user,
    name: str,
    scopes: list[str] | None = None,
    expires_at=None,
    monthly_cap=None,
    ip: str | None = None,
) -> IssuedKey:
    """A new key for ``user`` in ``workspace``; members and above only (viewers cannot call)."""
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None or not membership.has_role(Role.MEMBER):
        raise ActionRefused("Only members (not viewers) can have API keys.")
    name = name.strip()
    if not name:
        raise ActionRefused("A key needs a name.")
    unknown = set(scopes or []) - set(SCOPES)
    if unknown:
        raise ActionRefused(f"Unknown scopes: {', '.join(sorted(unknown))}.")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        workspace=workspace,
        user=user,
        name=name[:100],
        prefix=raw[: len(KEY_PREFIX) + 6],
        key_hash=ApiKey.hash(raw),
        scopes=sorted(set(scopes or [])),
        expires_at=expires_at,
        monthly_cap=monthly_cap,
    )
    audit_record(
        workspace=workspace,
        actor=user,
        action="api_key.created",
        target=f"{api_key.name} ({api_key.prefix}…)",
        data={"scopes": api_key.scopes, "cap": str(monthly_cap) if monthly_cap else None},
        ip=ip,
    )
    return IssuedKey(api_key=api_key, raw=raw)


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor, ip: str | None = None) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(
            workspace=api_key.workspace,
            actor=actor,
            action="api_key.revoked",
            target=f"{api_key.name} ({api_key.prefix}…)",
            data={"owner": api_key.user.email},
            ip=ip,
        )
    return api_key


class KeyRejected(Exception):
    """Why a request's key cannot be used: (HTTP status, ElevenLabs status code, message)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def api_key_authenticate(raw: str | None) -> ApiKey:
    """The active key behind ``xi-api-key``, with its workspace, user and membership role."""
    if not raw:
        raise KeyRejected(401, "needs_authorization", "Missing API key: send it in xi-api-key.")
    api_key = (
        ApiKey.objects.select_related("workspace", "user")
        .filter(key_hash=ApiKey.hash(raw.strip()))
        .first()
    )
    if api_key is None:
        raise KeyRejected(401, "invalid_api_key", "Invalid API key.")
    if api_key.revoked_at is not None:
        raise KeyRejected(401, "invalid_api_key", "This API key was revoked.")
    if api_key.expires_at is not None and api_key.expires_at <= timezone.now():
        raise KeyRejected(401, "invalid_api_key", "This API key has expired.")
    membership = Membership.objects.filter(
        workspace_id=api_key.workspace_id, user_id=api_key.user_id
    ).first()
    if membership is None or not membership.has_role(Role.MEMBER):
        raise KeyRejected(
            401, "invalid_api_key", "The key's owner is no longer a member of its workspace."
        )
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_EVERY:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.membership = membership
    return api_key
