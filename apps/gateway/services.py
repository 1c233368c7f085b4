"""The gateway's services: personal API keys (create, shown once; authenticate; revoke —
every change audited), the ``Caller`` a key stands for, and the core's services as ``/v1``
calls them (``api_*``: the same functions, with the key in place of a ``Caller``).

Nothing here generates, meters or keeps anything itself: that is the core's
(``apps.generation``) and the voices' (``apps.voices.services_made``).
"""

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.workspaces.models import EngineSettings, Membership, Role
from apps.workspaces.services import ActionRefused, audit_record

from .models import SCOPES, ApiKey

log = logging.getLogger(__name__)

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


# Keys recently checked, by hash: (valid until, on time.monotonic(); the key as looked up).
# A proxied call then needs no query to know its key; see ``api_key_authenticate``.
_known_keys: dict[str, tuple[float, ApiKey]] = {}
_KNOWN_KEYS_MAX = 10_000


def known_keys_forget(**_signal) -> None:
    """Forget every remembered key (a key, membership, user or engine setting changed)."""
    _known_keys.clear()


def api_key_authenticate(raw: str | None) -> ApiKey:
    """The active key behind ``xi-api-key``, with its workspace, user and membership role.

    Two queries: the key with its workspace, user and the workspace's engine settings (kept
    as ``api_key.engine_row`` for ``engine_for``), then the owner's role in the workspace.
    A key that passed is remembered for ``CHORUS_API_KEY_CACHE_SECONDS`` (default 5) in this
    process, so the calls of a busy script cost no query here. Any change in this process to
    a key, membership, user, workspace or engine setting forgets them all at once (signals,
    see ``apps.py``); a change made in another process takes effect here within that time.
    The key's expiry is checked on every call.
    """
    if not raw:
        raise KeyRejected(401, "needs_authorization", "Missing API key: send it in xi-api-key.")
    key_hash = ApiKey.hash(raw.strip())
    now = timezone.now()
    known = _known_keys.get(key_hash)
    if known is not None and known[0] > time.monotonic():
        api_key = known[1]
    else:
        api_key = _api_key_look_up(key_hash)
        seconds = settings.CHORUS_API_KEY_CACHE_SECONDS
        if seconds > 0:
            if len(_known_keys) >= _KNOWN_KEYS_MAX:
                _known_keys.clear()
            _known_keys[key_hash] = (time.monotonic() + seconds, api_key)
    if api_key.expires_at is not None and api_key.expires_at <= now:
        _known_keys.pop(key_hash, None)
        raise KeyRejected(401, "invalid_api_key", "This API key has expired.")
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_EVERY:
        api_key.last_used_at = now
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key


def _api_key_look_up(key_hash: str) -> ApiKey:
    api_key = (
        ApiKey.objects.select_related("workspace", "user", "workspace__engine_settings")
        .filter(key_hash=key_hash)
        .first()
    )
    if api_key is None:
        raise KeyRejected(401, "invalid_api_key", "Invalid API key.")
    if api_key.revoked_at is not None:
        raise KeyRejected(401, "invalid_api_key", "This API key was revoked.")
    # (A subquery would save this round trip but costs more CPU to compile than it saves.)
    role = (
        Membership.objects.filter(workspace_id=api_key.workspace_id, user_id=api_key.user_id)
        .values_list("role", flat=True)
        .first()
    )
    membership = None
    if role is not None:
        membership = Membership(workspace=api_key.workspace, user=api_key.user, role=role)
    if membership is None or not membership.has_role(Role.MEMBER):
        raise KeyRejected(
            401, "invalid_api_key", "The key's owner is no longer a member of its workspace."
        )
    try:
        api_key.engine_row = api_key.workspace.engine_settings
    except EngineSettings.DoesNotExist:
        api_key.engine_row = None
    api_key.membership = membership
    return api_key


# --- A key as the core's Caller -----------------------------------------------------------
# (Imports of this section sit here so the key services above stay as they were.)

import calendar  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from decimal import Decimal  # noqa: E402

from apps.billing import anomalies  # noqa: E402
from apps.billing.models import UsageSource  # noqa: E402
from apps.billing.services import member_usage, period_start, plan_for  # noqa: E402
from apps.generation import speech  # noqa: E402
from apps.generation.caller import Caller  # noqa: E402
from apps.generation.engine import engine_models  # noqa: E402
from apps.generation.errors import ApiInvalid, ApiRefused, engine_errors_as_api  # noqa: E402, F401
from apps.generation.speech import (  # noqa: E402, F401  (what the API's views take and give)
    SPEECH_CHARACTERS_PER_SECOND,
    PendingStream,
    SpeechInput,
)
from apps.voices import services_made as made  # noqa: E402


def caller_of(api_key: ApiKey) -> Caller:
    """The ``Caller`` a personal key stands for: its member, source api, the key and its cap,
    and the role and engine settings that came with the key (``api_key_authenticate``)."""
    caller = getattr(api_key, "_caller", None)
    if caller is None:
        engine_row = {}
        if hasattr(api_key, "engine_row"):
            engine_row["engine_row"] = api_key.engine_row
        caller = Caller(
            workspace=api_key.workspace,
            user=api_key.user,
            source=UsageSource.API,
            key_id=api_key.pk,
            key_cap=api_key.monthly_cap,
            membership=getattr(api_key, "membership", None),
            **engine_row,
        )
        api_key._caller = caller
    return caller


def keyed(service):
    """The core's ``service`` as ``/v1`` calls it: ``api_key=`` becomes the key's ``Caller``."""

    @functools.wraps(service)
    def call(*, api_key, **kwargs):
        return service(caller=caller_of(api_key), **kwargs)

    return call


# (key hash, address) -> when this process last told the ledger: a known address costs no
# statement for an hour (``anomalies.key_address_seen`` itself writes at most hourly too).
_ADDRESSES_TOLD: dict[tuple[str, str], float] = {}
ADDRESS_TELL_EVERY = 3600.0


def key_address_seen(api_key: ApiKey, address: str | None) -> None:
    """Record the address a personal key is used from: a new one is an anomaly flag for the
    workspace's managers (``apps.billing.anomalies``). Never fails the call."""
    if not address:
        return
    told = (api_key.key_hash, address)
    now = time.monotonic()
    if now - _ADDRESSES_TOLD.get(told, -ADDRESS_TELL_EVERY) < ADDRESS_TELL_EVERY:
        return
    try:
        anomalies.key_address_seen(api_key.workspace, api_key.pk, address, user_id=api_key.user_id)
    except Exception:  # a flag is not worth a failed call
        log.exception("recording the address of key %s failed", api_key.pk)
        return
    if len(_ADDRESSES_TOLD) > 50_000:
        _ADDRESSES_TOLD.clear()
    _ADDRESSES_TOLD[told] = now


def api_key_check(*, raw: str | None, scope: str) -> ApiKey:
    """The active key of ``xi-api-key`` if it may use ``scope``; else 401 or 403."""
    try:
        api_key = api_key_authenticate(raw)
    except KeyRejected as exc:
        raise ApiRefused(exc.status, exc.code, exc.message, kind="authentication_error") from exc
    if not api_key.allows(scope):
        raise ApiRefused(
            403,
            "missing_permissions",
            f"The API key you used is missing the permission {scope} ({SCOPES[scope]}) to "
            "execute this operation. A key's scopes are chosen when it is created.",
            kind="authorization_error",
        )
    return api_key


api_speech = keyed(speech.speak)
api_speech_stream_prepare = keyed(speech.speak_stream_prepare)
api_speech_stream = keyed(speech.speak_stream)
api_voices_page = keyed(made.voices_page)
api_voices_all = keyed(made.voices_all)
api_voice = keyed(made.voice_of_id)
api_models = keyed(engine_models)


# --- The account --------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyAccount:
    """The subscription a personal key sees: its member's credits, not the whole team's."""

    api_key: ApiKey
    tier: str
    credits_used: int
    credit_limit: int
    next_reset_unix: int | None
    currency: str


def _month_after(start: datetime) -> datetime:
    month = start.month % 12 + 1
    year = start.year + (start.month == 12)
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


def api_account(*, api_key: ApiKey) -> KeyAccount:
    """What ``/v1/user/subscription`` tells a key: its member's budget for this period.

    - ``character_limit``: the member's budget in credits; without a budget, the
      workspace's own cap per period if one is set, else the plan's credit limit
      (0 there means no limit: the virtual plan of the local engine, which is free).
    - ``character_count``: the credits the member has used this period (every source:
      studio, API and jobs), rounded up to whole credits.
    - ``tier``: the workspace plan's tier; ``next_character_count_reset_unix``: when the
      next budget period starts (calendar month, or the plan's cycle).
    """
    workspace = api_key.workspace
    plan = plan_for(workspace)
    usage = member_usage(workspace=workspace, user=api_key.user)
    if usage.budget is not None:
        limit = usage.budget.limit_credits
    elif plan.workspace_cap is not None:
        limit = plan.workspace_cap
    else:
        limit = Decimal(plan.credit_limit)
    next_reset = _month_after(period_start(plan))
    return KeyAccount(
        api_key=api_key,
        tier=plan.tier,
        credits_used=math.ceil(usage.used),
        credit_limit=int(limit),
        next_reset_unix=int(next_reset.astimezone(UTC).timestamp()),
        currency=plan.currency or "usd",
    )


def key_engine(api_key: ApiKey):
    """The engine of the key's workspace (its settings row came with the key)."""
    from apps.generation.engine import engine_of

    return engine_of(caller_of(api_key))
