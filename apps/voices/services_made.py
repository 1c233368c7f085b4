"""Voices made through the core (instant clones, saved designs) and the settings the
workspace stores per voice: the rows, who may change them, and how speech applies them.

The local engine keeps no voices of its own: a voice made on it lives here as an
``ApiVoice`` whose ``recipe`` travels with every request for it. On the ElevenLabs engine
the voice lives upstream and the row records who made it. ``speech_voice_apply`` is what
the core applies to every speech call (installed in ``VoicesConfig.ready``).
"""

import time
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.engines.base import (
    CloneRequest,
    InvalidRequest,
    TTSRequest,
    Voice,
    VoicePage,
    VoiceQuery,
    VoiceSettings,
)
from apps.generation.caller import Caller
from apps.generation.errors import ApiRefused, engine_errors_as_api
from apps.generation.media import Sample, clone, engine_of, samples_checked
from apps.generation.media import design_save as engine_design_save

from .models import ApiVoice, LibraryVoice, VoiceSettingsRecord

ALL_VOICES_PAGES = 50  # GET /v1/voices gathers at most this many pages of 100
SETTINGS_FIELDS = ("stability", "similarity_boost", "style", "use_speaker_boost", "speed")


# --- Voices -----------------------------------------------------------------------------------


def _stored(caller: Caller, engine, voice_id: str) -> ApiVoice | None:
    return ApiVoice.objects.filter(
        workspace=caller.workspace, voice_id=voice_id, engine=engine.name
    ).first()


def _voice_keep(caller: Caller, engine, voice: Voice, *, category, name, description, labels):
    """Keep a voice made through the API, its maker the caller. A voice kept already
    (the local engine gives a design saved again the same id) changes only for whoever may
    change it (403 otherwise) and keeps its maker."""
    existing = ApiVoice.objects.filter(workspace=caller.workspace, voice_id=voice.voice_id)
    kept_name = existing.values_list("name", flat=True).first()
    if kept_name is not None:
        _change_check(caller, replace(voice, name=kept_name))
    values = {
        "engine": engine.name,
        "name": name,
        "category": category,
        "description": description or "",
        "labels": dict(labels or {}),
        "recipe": voice.recipe,
    }
    row, _ = ApiVoice.objects.update_or_create(
        workspace=caller.workspace,
        voice_id=voice.voice_id,
        defaults=values,
        create_defaults={**values, "created_by": caller.user, "api_key_id": caller.key_id},
    )
    return row


def _settings_of(record: VoiceSettingsRecord | None, fallback: VoiceSettings | None):
    if record is None:
        return fallback or VoiceSettings()
    return VoiceSettings(**{name: getattr(record, name) for name in SETTINGS_FIELDS})


def _voice_of(row: ApiVoice, *, base: Voice | None = None) -> Voice:
    record = VoiceSettingsRecord.objects.filter(
        workspace_id=row.workspace_id, voice_id=row.voice_id
    ).first()
    return voice_of_row(row, record=record, base=base)


def voice_of_row(
    row: ApiVoice, *, record: VoiceSettingsRecord | None, base: Voice | None = None
) -> Voice:
    """A voice made through the API, as the engine would describe it, with ``record``'s
    settings (the workspace's stored settings for it, if any)."""
    voice = base or Voice(voice_id=row.voice_id, name=row.name)
    return replace(
        voice,
        name=row.name,
        category=row.category,
        labels=dict(row.labels or {}),
        description=row.description or None,
        settings=_settings_of(record, voice.settings),
        engine=row.engine,
        recipe=row.recipe,
        created_at_unix=int(row.created_at.timestamp()),
    )


def _voice_find(caller: Caller, engine, voice_id: str) -> tuple[Voice, ApiVoice | None]:
    """A voice of the workspace (made through the API or the engine's own); else 404."""
    row = _stored(caller, engine, voice_id)
    if row is not None and row.recipe is not None:
        return _voice_of(row), row
    with engine_errors_as_api(voice_status=404):
        voice = engine.voice(voice_id)
    return voice, row


def voice_get(*, caller: Caller, voice_id: str) -> Voice:
    """One voice, with the workspace's stored settings for it (``GET /v1/voices/{id}``)."""
    engine = engine_of(caller)
    row = _stored(caller, engine, voice_id)
    if row is not None and row.recipe is not None:
        return _voice_of(row)
    voice = voice_of_id(caller=caller, voice_id=voice_id)
    record = VoiceSettingsRecord.objects.filter(
        workspace=caller.workspace, voice_id=voice_id
    ).first()
    return replace(voice, settings=_settings_of(record, voice.settings))


def voice_design_save(
    *,
    caller: Caller,
    generated_voice_id: str,
    voice_name: str,
    voice_description: str,
    labels: dict[str, str],
) -> Voice:
    """Make a preview of this workspace a voice (``POST /v1/text-to-voice``), kept as the
    workspace's; not metered (the preview was paid for when it was designed)."""
    voice = engine_design_save(
        caller=caller,
        generated_voice_id=generated_voice_id,
        voice_name=voice_name,
        voice_description=voice_description,
        labels=labels,
    )
    row = _voice_keep(
        caller,
        engine_of(caller),
        voice,
        category="generated",
        name=voice_name,
        description=voice_description,
        labels=labels,
    )
    return _voice_of(row, base=voice)


def voice_clone(
    *,
    caller: Caller,
    name: str,
    samples: list[Sample],
    description: str | None = None,
    labels: dict[str, str] | None = None,
    remove_background_noise: bool = False,
) -> Voice:
    """Instant voice clone from uploaded samples (``POST /v1/voices/add``)."""
    pairs, seconds = samples_checked(samples)
    engine = engine_of(caller)
    request = CloneRequest(
        name=name,
        samples=pairs,
        description=description,
        labels=dict(labels or {}),
        remove_background_noise=remove_background_noise,
    )
    voice = clone(caller=caller, engine=engine, request=request, seconds=seconds)
    row = _voice_keep(
        caller,
        engine,
        voice,
        category="cloned",
        name=name,
        description=voice.description if voice.description is not None else description,
        labels=voice.labels or labels,
    )
    return _voice_of(row, base=voice)


def _refuse_builtin(voice: Voice, action: str) -> None:
    if voice.category == "premade":
        raise ApiRefused(
            400,
            "voice_not_editable" if action == "edit" else "cannot_delete_premade_voice",
            f"'{voice.name}' ({voice.voice_id}) is a premade voice of the engine: it cannot be "
            f"{'edited' if action == 'edit' else 'deleted'}. Only voices made in this "
            "workspace (clones, saved designs) can.",
            param="voice_id",
        )


def _change_check(caller: Caller, voice: Voice) -> None:
    """The key's member may change this voice (``voices.services.voice_can_change``: its
    maker or a manager), or 403 in ElevenLabs' shape."""
    from .services import voice_can_change

    if not voice_can_change(
        workspace=caller.workspace,
        voice_id=voice.voice_id,
        user=caller.user,
        membership=caller.membership,
    ):
        raise ApiRefused(
            403,
            "permission_denied",
            f"Only whoever made '{voice.name}' ({voice.voice_id}), or a manager, can edit it, "
            "change its settings or delete it. Ask a manager of the workspace.",
            kind="authorization_error",
            param="voice_id",
        )


def voice_edit(
    *,
    caller: Caller,
    voice_id: str,
    name: str,
    description: str | None = None,
    labels: dict[str, str] | None = None,
    samples: list[Sample] | None = None,
    remove_background_noise: bool = False,
) -> Voice:
    """Rename, describe and label a voice made in this workspace (``…/{voice_id}/edit``).

    New samples on the local engine measure the clone's pitch and pace again from them
    (metered as a clone). Voices on the ElevenLabs engine live upstream, where Chorus
    cannot edit them yet: that is refused rather than changed only here.
    """
    engine = engine_of(caller)
    voice, row = _voice_find(caller, engine, voice_id)
    _refuse_builtin(voice, "edit")
    _change_check(caller, voice)
    if row is None or row.recipe is None:
        raise ApiRefused(
            400,
            "not_supported",
            f"Voice '{voice_id}' lives in the {engine.name} engine's account; Chorus cannot "
            "edit it through the API yet. Edit it there.",
            param="voice_id",
        )
    recipe = row.recipe
    if samples:
        pairs, seconds = samples_checked(samples)
        measured = clone(
            caller=caller,
            engine=engine,
            request=CloneRequest(
                name=name,
                samples=pairs,
                labels=dict(labels or row.labels or {}),
                remove_background_noise=remove_background_noise,
            ),
            seconds=seconds,
            voice_id=voice_id,
        )
        recipe = measured.recipe or recipe
    row.name = name
    if description is not None:
        row.description = description
    if labels is not None:
        row.labels = dict(labels)
    row.recipe = recipe
    row.save()
    return _voice_of(row)


def voice_delete(*, caller: Caller, voice_id: str) -> None:
    """Delete a voice of the workspace (``DELETE /v1/voices/{voice_id}``); premade ones and
    the local engine's built-in voices cannot be deleted (400), and only whoever made the
    voice or a manager may delete it (403). The library keeps it, flagged withdrawn."""
    from .services import library_voice_withdraw

    engine = engine_of(caller)
    voice, row = _voice_find(caller, engine, voice_id)
    _refuse_builtin(voice, "delete")
    _change_check(caller, voice)
    if row is None or row.recipe is None:  # the voice lives upstream
        with engine_errors_as_api(voice_status=404):
            engine.voice_delete(voice_id)
    with transaction.atomic():
        library_voice_withdraw(
            workspace=caller.workspace, engine=engine.name, voice_id=voice_id, actor=caller.user
        )
        ApiVoice.objects.filter(workspace=caller.workspace, voice_id=voice_id).delete()
        VoiceSettingsRecord.objects.filter(workspace=caller.workspace, voice_id=voice_id).delete()


def voice_settings(*, caller: Caller, voice_id: str) -> VoiceSettings:
    """The settings TTS uses for this voice in the workspace (stored, else the voice's)."""
    engine = engine_of(caller)
    voice, _row = _voice_find(caller, engine, voice_id)
    record = VoiceSettingsRecord.objects.filter(
        workspace=caller.workspace, voice_id=voice_id
    ).first()
    return _settings_of(record, voice.settings)


def voice_settings_update(*, caller: Caller, voice_id: str, values: dict) -> VoiceSettings:
    """Store settings for a voice; fields not sent keep their current values. They are the
    whole team's, so only whoever made the voice or a manager may change them (403)."""
    engine = engine_of(caller)
    voice, _row = _voice_find(caller, engine, voice_id)
    _change_check(caller, voice)
    record = VoiceSettingsRecord.objects.filter(
        workspace=caller.workspace, voice_id=voice_id
    ).first()
    current = _settings_of(record, voice.settings)
    merged = {name: getattr(current, name) for name in SETTINGS_FIELDS}
    merged.update({k: v for k, v in values.items() if k in SETTINGS_FIELDS and v is not None})
    VoiceSettingsRecord.objects.update_or_create(
        workspace=caller.workspace,
        voice_id=voice_id,
        defaults=merged,
    )
    return VoiceSettings(**merged)


# What speech needs to know of a voice, per process: (workspace id, engine, voice id) ->
# (valid until, on time.monotonic(); its facts). See ``speech_voice_apply``.
_voice_facts: dict[tuple[int, str, str], tuple[float, "VoiceFacts"]] = {}
_VOICE_FACTS_MAX = 10_000


@dataclass(frozen=True)
class VoiceFacts:
    """The rows speech reads for a voice: whether the workspace made it (``made``) and, if
    so, its recipe and category; for a clone, its consent's speaker and expiry (the expiry is
    compared with the time on every call); the stored settings' fields, if any."""

    made: bool = False
    recipe: dict | None = None
    category: str = ""
    consent: tuple[str, object] | None = None  # (speaker_name, expires_at)
    settings: dict | None = None
    name: str = ""  # as the library (or the voice made through the API) names it


def voice_facts_forget(**_signal) -> None:
    """Forget every remembered voice (a voice, its settings, consent, library row or the
    workspace changed; signals, see ``apps.py``)."""
    _voice_facts.clear()


def _voice_facts_look_up(workspace_id: int, engine_name: str, voice_id: str) -> VoiceFacts:
    from .models import VoiceConsent

    made = (
        ApiVoice.objects.filter(workspace_id=workspace_id, voice_id=voice_id, engine=engine_name)
        .values_list("recipe", "category", "name")
        .first()
    )
    recipe, category, consent, name = None, "", None, ""
    if made is not None:
        recipe, category, name = made
        if category == "cloned":
            consent = (
                VoiceConsent.objects.filter(
                    workspace_id=workspace_id, engine=engine_name, voice_id=voice_id
                )
                .values_list("speaker_name", "expires_at")
                .first()
            )
    stored = (
        VoiceSettingsRecord.objects.filter(workspace_id=workspace_id, voice_id=voice_id)
        .values_list(*SETTINGS_FIELDS)
        .first()
    )
    listed = (
        LibraryVoice.objects.filter(
            workspace_id=workspace_id, engine=engine_name, voice_id=voice_id
        )
        .values_list("name", flat=True)
        .first()
    )
    return VoiceFacts(
        made=made is not None,
        recipe=recipe,
        category=category or "",
        consent=consent,
        settings=dict(zip(SETTINGS_FIELDS, stored, strict=True)) if stored else None,
        name=listed or name or "",
    )


def voice_facts(workspace_id: int, engine_name: str, voice_id: str) -> VoiceFacts:
    """The voice's facts, remembered for ``CHORUS_API_KEY_CACHE_SECONDS`` in this process."""
    key = (workspace_id, engine_name, voice_id)
    known = _voice_facts.get(key)
    if known is not None and known[0] > time.monotonic():
        return known[1]
    facts = _voice_facts_look_up(workspace_id, engine_name, voice_id)
    seconds = settings.CHORUS_API_KEY_CACHE_SECONDS
    if seconds > 0:
        if len(_voice_facts) >= _VOICE_FACTS_MAX:
            _voice_facts.clear()
        _voice_facts[key] = (time.monotonic() + seconds, facts)
    return facts


def _consent_expired_why(speaker_name: str, expires_at) -> str | None:
    """``services_clone.consent_refusal``'s answer from the consent's remembered fields."""
    if expires_at > timezone.now():
        return None
    return (
        f"The consent of {speaker_name} for this cloned voice expired on "
        f"{expires_at:%Y-%m-%d}: it cannot be used for generation until a manager "
        "records a renewed consent."
    )


def speech_voice_apply(
    *, workspace, engine, request: TTSRequest, given: dict | None, final: bool = True
) -> str:
    """Fill a TTS request from what the workspace stored for its voice; return the voice's
    name (as the library names it; "" for a voice the workspace has no row for).

    - A voice made through the API on the local engine: its recipe (the engine keeps none).
    - A clone whose consent expired (``voices.services_clone``): refused with 403.
    - A final render (everything but the studio's try-outs) in a workspace that uses approved
      voices only: refused with 403 unless a manager approved the voice.
    - Stored settings: the base that the call's own ``voice_settings`` fields override.

    The rows it reads (the voice made through the API, its consent, its stored settings) are
    remembered per process for ``CHORUS_API_KEY_CACHE_SECONDS`` (default 5; 0: read every
    call), as the API keys are (``gateway.services.api_key_authenticate``), so a busy script's
    calls cost no query here. Any change in this process to a voice made through the API,
    stored settings, a consent, a library voice or a workspace forgets them all at once
    (signals, see ``apps.py``); a change made in another process takes effect here within
    that time. A consent's expiry is compared with the time on every call, and the
    approved-voices rule reads the library on every call.
    """
    facts = voice_facts(workspace.pk, engine.name, request.voice_id)
    if facts.made:
        if facts.category == "cloned" and facts.consent is not None:
            why = _consent_expired_why(*facts.consent)
            if why:
                raise ApiRefused(403, "voice_consent_expired", why, param="voice_id")
        if engine.name == "local" and request.voice_recipe is None and facts.recipe:
            request.voice_recipe = facts.recipe
    if final and workspace.require_approved_voices:
        from apps.workspaces.services import ActionRefused

        from .services_usage import voice_render_check

        try:
            voice_render_check(workspace=workspace, engine=engine.name, voice_id=request.voice_id)
        except ActionRefused as exc:
            raise ApiRefused(403, "voice_not_approved", str(exc), param="voice_id") from exc
    if facts.settings is not None:
        merged = dict(facts.settings)
        merged.update({k: v for k, v in (given or {}).items() if v is not None})
        request.voice_settings = VoiceSettings(**merged)
    return facts.name


# --- Listing -----------------------------------------------------------------------------


# The engines that keep no voices of their own: the voices a workspace made through the API
# (clones, saved designs) live in ``ApiVoice`` and are listed with the engine's. An upstream
# engine (ElevenLabs) lists the voices made there itself.
ENGINES_LISTING_API_VOICES = frozenset({"local"})


def _voices_made(caller: Caller, engine, **only) -> list[Voice]:
    """The workspace's voices made through the API on ``engine`` (oldest first; ``only``
    filters the rows), with the workspace's stored settings; empty for engines that list
    such voices themselves."""
    if engine.name not in ENGINES_LISTING_API_VOICES:
        return []
    rows = ApiVoice.objects.filter(workspace=caller.workspace, engine=engine.name, **only)
    rows = [row for row in rows.order_by("created_at", "id") if row.recipe is not None]
    records = {
        record.voice_id: record
        for record in VoiceSettingsRecord.objects.filter(
            workspace=caller.workspace, voice_id__in=[row.voice_id for row in rows]
        )
    }
    return [voice_of_row(row, record=records.get(row.voice_id)) for row in rows]


def _voice_matches(voice: Voice, search: str | None, category: str | None) -> bool:
    """The local engine's filter: ``search`` in the name, description or a label's value."""
    if category and voice.category != category:
        return False
    if not search:
        return True
    needle = search.lower()
    return (
        needle in voice.name.lower()
        or needle in (voice.description or "").lower()
        or any(needle in str(value).lower() for value in (voice.labels or {}).values())
    )


def _engine_voices(engine, **filters) -> list[Voice]:
    """Every voice of the engine that matches ``filters`` (pages of 100, at most
    ``ALL_VOICES_PAGES`` of them)."""
    voices: list[Voice] = []
    token = None
    for _ in range(ALL_VOICES_PAGES):
        page = engine.voices(VoiceQuery(page_size=100, next_page_token=token, **filters))
        voices.extend(page.voices)
        token = page.next_page_token
        if not page.has_more or not token:
            break
    return voices


def _offset(token: str | None) -> int:
    """The position a page token stands for (the local engine's tokens: an offset)."""
    try:
        start = int(token or 0)
    except ValueError:
        start = -1
    if start < 0:
        raise InvalidRequest.for_field("next_page_token", "Invalid page token.")
    return start


def voices_page(
    *,
    caller: Caller,
    search: str | None = None,
    page_size: int = 10,
    next_page_token: str | None = None,
    category: str | None = None,
    sort: str | None = None,
    sort_direction: str | None = None,
) -> VoicePage:
    """One page of the workspace's voices (``GET /v2/voices``).

    On an engine that keeps no voices (local), the engine's voices and the workspace's
    voices made through the API are filtered, sorted and paged here as one list (the
    engine's list is small), with the engine's token format (an offset): without ``sort``,
    the engine's voices in its order, then the workspace's, oldest first.
    """
    query = VoiceQuery(
        search=search,
        page_size=page_size,
        next_page_token=next_page_token,
        category=category,
        sort=sort,
        sort_direction=sort_direction,
    )
    with engine_errors_as_api(where="query"):
        engine = engine_of(caller)
        if engine.name not in ENGINES_LISTING_API_VOICES:
            return engine.voices(query)
        start = _offset(next_page_token)
        voices = _engine_voices(engine, search=search, category=category)
    made = _voices_made(caller, engine)
    voices += [v for v in made if _voice_matches(v, search, category)]
    descending = sort_direction == "desc"
    if sort == "name":
        voices.sort(key=lambda v: v.name.lower(), reverse=descending)
    elif sort == "created_at_unix":
        voices.sort(key=lambda v: v.created_at_unix or 0, reverse=descending)
    size = max(1, min(100, page_size or 10))
    more = start + size < len(voices)
    return VoicePage(
        voices=voices[start : start + size],
        has_more=more,
        total_count=len(voices),
        next_page_token=str(start + size) if more else None,
    )


def voices_all(*, caller: Caller) -> list[Voice]:
    """Every voice of the workspace (``GET /v1/voices`` is not paginated): the engine's,
    then, on an engine that keeps no voices (local), those made through the API."""
    with engine_errors_as_api():
        engine = engine_of(caller)
        voices = _engine_voices(engine)
    return voices + _voices_made(caller, engine)


def voice_of_id(*, caller: Caller, voice_id: str) -> Voice:
    """One voice (the engine's, or one the workspace made through the API on an engine that
    keeps no voices); an unknown id is a 404 ``voice_not_found``."""
    with engine_errors_as_api(voice_status=404):
        engine = engine_of(caller)
        for voice in _voices_made(caller, engine, voice_id=voice_id):
            return voice
        return engine.voice(voice_id)
