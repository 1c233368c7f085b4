"""Keeping the library in step with the engine on its own: at a workspace's set-up, after a
change of engine, and telling managers when it is stale.

A workspace's set-up (a new ``Workspace``) and a saved ``EngineSettings`` row with another
engine, base URL or key start a sync once the change is committed: at once for the local
engine (its voices are a list in the process, no network), as a ``voices_sync`` job on a
Celery worker for ElevenLabs (it reads the account's voices over the network). ``apps.py``
connects the receivers; ``workspaces`` knows nothing of them.

The library is *stale* when the engine settings changed since the last sync, when it was
never synced, or when the last sync is older than ``STALE_AFTER`` (a week by default,
``CHORUS_VOICES_STALE_DAYS``): ElevenLabs adds and retires voices, and a team's account gains
voices made outside Chorus, so a library a week old may miss some.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.jobs.services import job_start
from apps.workspaces.models import EngineKind, Workspace
from apps.workspaces.services import engine_settings_for

from .models import LibrarySync

log = logging.getLogger(__name__)

SYNC_JOB = "voices_sync"


def stale_after() -> timedelta:
    return timedelta(days=settings.CHORUS_VOICES_STALE_DAYS)


def auto_sync_enabled() -> bool:
    return settings.CHORUS_VOICES_AUTO_SYNC


def engine_config(row) -> str:
    """A fingerprint of engine settings (engine, base URL, the stored key's ciphertext):
    equal while nothing a sync depends on changed. The key itself is never read."""
    material = "|".join((row.kind or "", row.base_url or "", row.api_key_encrypted or ""))
    return hashlib.sha256(material.encode()).hexdigest()


def library_synced(*, workspace, engine: str, config: str) -> None:
    """Record a finished sync (``services.library_sync`` calls it)."""
    LibrarySync.objects.update_or_create(
        workspace=workspace,
        defaults={"engine": engine, "config": config, "synced_at": timezone.now()},
    )


@dataclass(frozen=True)
class Staleness:
    stale: bool
    reason: str = ""  # what a manager reads: why the library may be out of step
    synced_at: object = None


def library_staleness(workspace) -> Staleness:
    """Whether the library may be out of step with the engine, and why (for the banner)."""
    state = LibrarySync.objects.filter(workspace=workspace).first()
    if state is None or state.synced_at is None:
        return Staleness(True, "The library has never been synced with the engine.")
    current = engine_config(engine_settings_for(workspace))
    if current != state.config:
        return Staleness(
            True,
            "The engine settings changed since the last sync: the library may list voices "
            "the engine no longer has, and miss some it has.",
            state.synced_at,
        )
    if timezone.now() - state.synced_at > stale_after():
        days = stale_after().days
        return Staleness(
            True,
            f"The library was last synced more than {days} day{'s' if days != 1 else ''} ago.",
            state.synced_at,
        )
    return Staleness(False, "", state.synced_at)


def library_sync_auto(workspace_id: int) -> str:
    """Sync the library if the engine settings changed since it was last synced (or a sync
    was last asked for): ``"current"``, ``"synced"`` (local engine, at once) or ``"queued"``
    (a job). Runs after the change is committed; a failure is logged, never raised into the
    request that changed the settings (the banner then tells managers to sync)."""
    from .services import library_sync

    workspace = Workspace.objects.filter(pk=workspace_id).first()
    if workspace is None:
        return "current"
    row = engine_settings_for(workspace)
    config = engine_config(row)
    with transaction.atomic():
        state, _ = LibrarySync.objects.select_for_update().get_or_create(workspace=workspace)
        if config in (state.config, state.requested_config):
            return "current"
        state.requested_config, state.requested_at = config, timezone.now()
        state.save(update_fields=["requested_config", "requested_at"])
    if row.kind == EngineKind.LOCAL:
        library_sync(workspace=workspace)
        return "synced"
    job_start(
        workspace=workspace,
        kind=SYNC_JOB,
        message="Waiting for a worker to read the new engine's voices",
    )
    return "queued"


def _after_commit(workspace_id: int) -> None:
    try:
        library_sync_auto(workspace_id)
    except Exception:
        log.exception("the library of workspace %s could not be synced", workspace_id)


def _on_commit(workspace_id: int) -> None:
    if auto_sync_enabled():
        transaction.on_commit(partial(_after_commit, workspace_id))


def workspace_set_up(*, sender=None, instance=None, created=False, raw=False, **_signal) -> None:
    """``post_save`` of ``Workspace``: a new workspace's library is filled from its engine."""
    if created and not raw:
        _on_commit(instance.pk)


def engine_settings_saved(*, sender=None, instance=None, raw=False, **_signal) -> None:
    """``post_save`` of ``EngineSettings``: another engine or key means another library."""
    if not raw:
        _on_commit(instance.workspace_id)
