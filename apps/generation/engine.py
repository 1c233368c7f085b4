"""Which engine a workspace uses, and what it answers when asked who we are.

``engine_for`` is the one place an engine is built from a workspace's ``EngineSettings``
(kept by ``workspaces``): the local engine, or an ElevenLabs client built once per process
and configuration. The settings pages' connection check and the plan sync ask it here.
"""

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from apps.billing import rates
from apps.billing.models import Plan
from apps.billing.services import plan_for, rate_for
from apps.engines.base import EngineError, ModelInfo
from apps.workspaces import crypto
from apps.workspaces.models import EngineKind, EngineSettings, Workspace
from apps.workspaces.services import engine_egress, engine_settings_for

from .caller import Caller

# One ElevenLabs engine (and HTTP connection pool) per workspace and configuration: by
# workspace id, (its configuration as stored, the engine).
_engine_cache: dict[int, tuple[tuple, object]] = {}
_engine_lock = threading.Lock()
# The egress policy, built once per process and the settings it is built from.
_egress: tuple[tuple, object] | None = None


_LOOK_UP = object()


def _egress_policy():
    """``workspaces.services.engine_egress()``, built again only when a setting it reads
    changed (tests change them; a server's never do)."""
    global _egress
    key = (
        settings.CHORUS_ELEVENLABS_BASE_URL,
        tuple(settings.CHORUS_ENGINE_ALLOWED_HOSTS),
        settings.CHORUS_ENGINE_ALLOW_LOOPBACK,
        settings.CHORUS_ENGINE_ALLOW_PRIVATE,
    )
    known = _egress
    if known is not None and known[0] == key:
        return known[1]
    policy = engine_egress()
    _egress = (key, policy)
    return policy


@sensitive_variables("key")
def engine_for(workspace: Workspace, *, row=_LOOK_UP):
    """The engine this workspace uses, built once per process and configuration.

    ``row``: the workspace's ``EngineSettings`` when the caller already has it (``None`` for
    none: the local engine), saving the lookup.

    The ElevenLabs engine kept for the workspace is used while its configuration is the one
    stored: the encrypted key, the base URL, the egress settings and the secrets the key is
    decrypted with are compared (nothing is decrypted or hashed for that), so a changed key
    or base URL takes effect at the next call.
    """
    if row is _LOOK_UP:
        row = engine_settings_for(workspace)
    elif row is None:
        row = EngineSettings(workspace=workspace, kind=EngineKind.LOCAL)
    if row.kind == EngineKind.ELEVENLABS:
        base_url = row.base_url or settings.CHORUS_ELEVENLABS_BASE_URL
        egress = _egress_policy()
        fingerprint = (
            row.api_key_encrypted,
            base_url,
            egress,
            settings.SECRET_KEY,
            settings.CHORUS_ENCRYPTION_KEY,
        )
        cached = _engine_cache.get(workspace.pk)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        from apps.engines.base import AuthenticationFailed

        try:
            key = crypto.decrypt(row.api_key_encrypted)
        except crypto.SecretUnreadable as exc:
            raise AuthenticationFailed(str(exc)) from exc
        with _engine_lock:
            cached = _engine_cache.get(workspace.pk)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            from apps.engines.elevenlabs.client import ElevenLabsEngine

            engine = ElevenLabsEngine(
                api_key=key, base_url=base_url, workspace=workspace.slug, egress=egress
            )
            _engine_cache[workspace.pk] = (fingerprint, engine)
        if cached is not None:  # the configuration changed: let the old client go
            close = getattr(cached[1], "close", None)
            if close is not None:
                close()
        return engine
    from apps.engines.local.engine import local_engine

    return local_engine()


@dataclass(frozen=True)
class EngineCheck:
    ok: bool
    engine: str
    tier: str = ""
    character_count: int | None = None
    character_limit: int | None = None
    next_reset: object = None
    error: str = ""


# What Settings → Engine says about a failed check, by error code: never the upstream's own
# words, which could be any page the base URL answered with.
_CHECK_SUMMARIES = {
    "authentication_failed": "The engine refused the API key.",
    "quota_exceeded": "The account's quota is used up.",
    "rate_limited": "The engine is busy or limiting requests; try again in a moment.",
    "not_supported": "The engine's plan or key does not allow this.",
    "invalid_request": "The engine refused the request.",
    "upstream_unavailable": "The engine did not give a usable answer.",
}
MAX_CHECK_ERROR = 200


def engine_check_summary(exc: Exception) -> str:
    """A short, Chorus-worded summary of why an engine check failed, with the HTTP status.

    An error that came with an upstream status is summarised by its kind (the body, or a
    message taken from it, is never shown); one without (no connection, a refused address,
    an unreadable key) carries Chorus's own sentence, kept short.
    """
    status = getattr(exc, "upstream_status", None)
    if status is None:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return message if len(message) <= MAX_CHECK_ERROR else message[:MAX_CHECK_ERROR] + "…"
    code = getattr(exc, "code", "")
    if 300 <= status < 400:
        summary = "The engine answered with a redirect, which Chorus does not follow."
    elif 200 <= status < 300:
        summary = "The engine answered, but not in the shape the ElevenLabs API has."
    else:
        summary = _CHECK_SUMMARIES.get(code, "The engine answered with an error.")
    return f"{summary} (HTTP {int(status)})"


def engine_test_connection(*, workspace: Workspace) -> EngineCheck:
    """Ask the engine who we are (user and subscription): what Settings → Engine shows.

    A failure is shown as ``engine_check_summary`` says: its status and a short summary in
    Chorus's words, never what the upstream answered.
    """
    from apps.engines.base import EngineError

    row = engine_settings_for(workspace)
    try:
        engine = engine_for(workspace)
        engine.user()
        sub = engine.subscription()
    except (EngineError, crypto.SecretUnreadable) as exc:
        check = EngineCheck(ok=False, engine=row.kind, error=engine_check_summary(exc))
    else:
        reset = (
            datetime.fromtimestamp(sub.next_character_count_reset_unix, tz=UTC)
            if sub.next_character_count_reset_unix
            else None
        )
        check = EngineCheck(
            ok=True,
            engine=row.kind,
            tier=str(sub.tier or "")[:40],
            character_count=sub.character_count,
            character_limit=sub.character_limit,
            next_reset=reset,
        )
    cache.set(f"engine-status:{workspace.pk}", check, timeout=120)
    return check


def engine_status(*, workspace: Workspace) -> EngineCheck:
    """The last known answer of the workspace's engine (checked at most every two minutes)."""
    check = cache.get(f"engine-status:{workspace.pk}")
    return check if check is not None else engine_test_connection(workspace=workspace)


def engine_of(caller: Caller):
    """The engine of the caller's workspace (with the settings row the caller brought), or
    the local engine for a caller that asks for it (``engine_kind="local"``: free drafts)."""
    if caller.engine_kind == EngineKind.LOCAL:
        from apps.engines.local.engine import local_engine

        return local_engine()
    if caller.knows_engine_row:
        return engine_for(caller.workspace, row=caller.engine_row)
    return engine_for(caller.workspace)


# --- Plan sync --------------------------------------------------------------------------


def plan_sync(*, workspace) -> Plan:
    """Copy the provider's subscription into the plan (a virtual plan on the local engine)."""
    plan = plan_for(workspace)
    engine = engine_for(workspace)
    if engine.name == "local":
        plan.source, plan.sync_error = "virtual", ""
        plan.synced_at = timezone.now()
        plan.save(update_fields=["source", "sync_error", "synced_at"])
        return plan
    try:
        sub = engine.subscription()
    except EngineError as exc:
        plan.sync_error = exc.message[:300]
        plan.save(update_fields=["sync_error"])
        return plan
    plan.tier = sub.tier
    plan.credit_limit = max(0, int(sub.character_limit))
    plan.credits_used = max(0, int(sub.character_count))
    plan.next_reset_at = (
        datetime.fromtimestamp(sub.next_character_count_reset_unix, tz=UTC)
        if sub.next_character_count_reset_unix
        else None
    )
    plan.price_per_credit = rates.price_per_credit(sub.tier)
    plan.currency = sub.currency or "usd"
    plan.source = "elevenlabs"
    plan.synced_at = timezone.now()
    plan.sync_error = ""
    plan.save()
    return plan


def engine_models(*, caller: Caller) -> list[tuple[ModelInfo, Decimal]]:
    """The engine's models, each with the credits per character Chorus charges for it."""
    from .errors import engine_errors_as_api

    with engine_errors_as_api():
        engine = engine_of(caller)
        models = engine.models()
    return [
        (
            model,
            rate_for(caller.workspace, "tts", model.model_id, engine.name).credits_per_unit,
        )
        for model in models
    ]
