"""Using a library voice: the try-it box, what a voice has been used for and by whom, the
"approved voices only" rule for final renders, and the voices' part of a workspace export."""

import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, F, Max, Sum
from django.utils import timezone

from apps.billing.models import UsageEvent, UsageStatus
from apps.billing.services import Estimate, usage_estimate
from apps.generation.caller import Caller
from apps.generation.engine import engine_for
from apps.generation.errors import ApiInvalid, ApiRefused
from apps.generation.speech import SpeechInput, speak
from apps.history.models import Generation, GenerationKind
from apps.workspaces.services import ActionRefused

from .models import (
    Approval,
    Collection,
    DesignVote,
    LibraryVoice,
    Tag,
    VoiceConsent,
    VoiceDesign,
    VoiceNote,
)

TRY_MAX = 500  # characters the try-it box speaks
TRY_MODEL = "eleven_multilingual_v2"


def try_estimate(*, voice: LibraryVoice, user, characters: int) -> Estimate:
    engine = engine_for(voice.workspace)
    return usage_estimate(
        workspace=voice.workspace,
        user=user,
        capability="tts",
        engine=engine.name,
        model_id=TRY_MODEL,
        units=max(characters, 0),
    )


def voice_try(*, voice: LibraryVoice, user, text: str) -> Generation:
    """Speak ``text`` with the voice, metered as the member's (purpose: this voice)."""
    text = (text or "").strip()
    if not text:
        raise ActionRefused("Type something for the voice to say.")
    if len(text) > TRY_MAX:
        raise ActionRefused(f"The try-it box speaks at most {TRY_MAX} characters ({len(text)}).")
    engine = engine_for(voice.workspace)
    if voice.engine != engine.name:
        raise ActionRefused(
            f"This voice belongs to the {voice.engine} engine; the workspace now uses the "
            f"{engine.name} engine."
        )
    caller = Caller(
        workspace=voice.workspace, user=user, purpose=("voice", str(voice.pk)), draft=True
    )
    try:
        speech = speak(
            caller=caller,
            speech=SpeechInput(voice_id=voice.voice_id, text=text, model_id=TRY_MODEL),
        )
    except (ApiRefused, ApiInvalid) as exc:
        raise ActionRefused(str(exc)) from exc
    return Generation.objects.get(
        workspace=voice.workspace, usage_event__request_id=speech.request_id
    )


# Whether the library has a row for a voice, per process: (workspace id, engine, voice id) ->
# (valid until, on time.monotonic(); has a row). See ``generation_counted``.
_library_has: dict[tuple[int, str, str], tuple[float, bool]] = {}
_LIBRARY_HAS_MAX = 10_000


def library_has_forget(**_signal) -> None:
    """Forget what is remembered of the library (a library voice, the library's facets, which
    a sync rewrites after adding voices in bulk, or a workspace changed; see ``apps.py``)."""
    _library_has.clear()


def generation_counted(*, sender=None, instance=None, created=False, **_signal) -> None:
    """Each clip made with a voice counts as a use of it in the library (most/recently used).

    Whether the library has a row for the voice is remembered per process for
    ``CHORUS_API_KEY_CACHE_SECONDS`` (as the API keys are): a clip of a voice it has none for
    (an engine's voice never synced) costs no query then. A library voice saved, deleted or
    synced in this process forgets it at once; one added in another process counts the uses
    made here from at most that long after.
    """
    if not created or not instance.voice_id or instance.kind != GenerationKind.TTS:
        return
    key = (instance.workspace_id, instance.engine, instance.voice_id)
    known = _library_has.get(key)
    if known is not None and known[0] > time.monotonic() and not known[1]:
        return
    counted = LibraryVoice.objects.filter(
        workspace_id=instance.workspace_id, engine=instance.engine, voice_id=instance.voice_id
    ).update(use_count=F("use_count") + 1, last_used_at=timezone.now())
    seconds = settings.CHORUS_API_KEY_CACHE_SECONDS
    if seconds > 0:
        if len(_library_has) >= _LIBRARY_HAS_MAX:
            _library_has.clear()
        _library_has[key] = (time.monotonic() + seconds, bool(counted))


@dataclass(frozen=True)
class VoiceUsage:
    """A voice's uses, all counted the same way: settled calls of the ledger made with it
    (each one a use, whatever it cost; the local engine's cost 0 credits)."""

    credits: Decimal
    calls: int
    last: object  # when the last of those calls was made (None: never)
    by_member: list[dict]  # {"name", "credits", "calls"}
    by_kind: list[dict]  # {"kind", "label", "clips", "last"}
    recent: list[Generation]


def voice_usage(voice: LibraryVoice) -> VoiceUsage:
    """Credits spent with this voice and by whom; the clips it made, by kind."""
    events = UsageEvent.objects.filter(
        workspace_id=voice.workspace_id,
        engine=voice.engine,
        voice_id=voice.voice_id,
        status=UsageStatus.SETTLED,
    )
    rows = list(
        events.values("user__email", "user__name")
        .annotate(credits=Sum("credits"), calls=Count("pk"), last=Max("created_at"))
        .order_by("-credits")
    )
    by_member = [
        {
            "name": r["user__name"] or (r["user__email"] or "a removed member").split("@")[0],
            "credits": r["credits"] or Decimal(0),
            "calls": r["calls"],
        }
        for r in rows
    ]
    clips = Generation.objects.filter(
        workspace_id=voice.workspace_id, engine=voice.engine, voice_id=voice.voice_id
    )
    labels = dict(GenerationKind.choices)
    by_kind = [
        {"kind": r["kind"], "label": labels.get(r["kind"], r["kind"]), **r}
        for r in clips.values("kind").annotate(clips=Count("pk"), last=Max("created_at"))
    ]
    return VoiceUsage(
        credits=sum((m["credits"] for m in by_member), Decimal(0)),
        calls=sum(m["calls"] for m in by_member),
        last=max((r["last"] for r in rows if r["last"]), default=None),
        by_member=by_member,
        by_kind=by_kind,
        recent=list(clips.select_related("user").order_by("-created_at", "-pk")[:5]),
    )


def voice_render_check(*, workspace, engine: str, voice_id: str) -> None:
    """A final render may use this voice, or ``ActionRefused`` says why not.

    With the workspace's "approved voices only" setting, only voices a manager approved may be
    used for final renders; an expired clone consent blocks every use. Every TTS call counts
    as a final render (the ``/v1`` API's output is the member's deliverable) except the
    studio's try-outs (the voice page's try-it box); ``services_made.speech_voice_apply``
    calls this.
    """
    from .services_clone import consent_refusal

    why = consent_refusal(workspace_id=workspace.pk, engine=engine, voice_id=voice_id)
    if why:
        raise ActionRefused(why)
    if not workspace.require_approved_voices:
        return
    voice = LibraryVoice.objects.filter(
        workspace=workspace, engine=engine, voice_id=voice_id
    ).first()
    if voice is not None and voice.approval == Approval.APPROVED:
        return
    if voice is None:
        state, step = "is not in the library", "sync or add it, then have a manager approve it"
    elif voice.approval == Approval.PROPOSED:
        state, step = "is proposed, not yet approved", "a manager needs to approve it"
    elif voice.approval == Approval.REJECTED:
        state, step = "was rejected", f"the reason given: {voice.approval_reason}"
    else:
        state, step = "is not approved", "propose it and have a manager approve it"
    raise ActionRefused(
        f"This workspace uses only approved voices for final renders, and voice {voice_id} "
        f"{state}: {step}."
    )


def require_approved_set(*, workspace, actor, enabled: bool) -> None:
    from apps.workspaces.services import audit_record

    workspace.require_approved_voices = bool(enabled)
    workspace.save(update_fields=["require_approved_voices"])
    audit_record(
        workspace=workspace,
        actor=actor,
        action="voices.require_approved",
        target="on" if enabled else "off",
    )


# --- Export -----------------------------------------------------------------------------------


def _iso(dt):
    return dt.isoformat() if dt else None


def _email(user):
    return user.email if user else None


def export_sections(workspace) -> list[tuple[str, object]]:
    """The voices' part of a workspace export: voices with tags, collections, notes and
    approval; designs with their recipes and preview audio; votes; consent records."""
    voices = (
        LibraryVoice.objects.filter(workspace=workspace)
        .prefetch_related("tags", "collections")
        .select_related("approval_by")
    )
    notes = VoiceNote.objects.filter(voice__workspace=workspace).select_related("author", "voice")
    designs = VoiceDesign.objects.filter(workspace=workspace).select_related("created_by")
    votes = DesignVote.objects.filter(workspace=workspace).prefetch_related("ballots__voter")
    consents = VoiceConsent.objects.filter(workspace=workspace).select_related("created_by")
    sections: list[tuple[str, object]] = [
        (
            "voices/voices.json",
            [
                {
                    "voice_id": v.voice_id,
                    "engine": v.engine,
                    "name": v.name,
                    "category": v.category,
                    "source": v.source,
                    "labels": v.labels,
                    "description": v.description,
                    "approval": v.approval,
                    "approval_reason": v.approval_reason,
                    "approval_by": _email(v.approval_by),
                    "withdrawn_at": _iso(v.withdrawn_at),
                    "tags": [t.name for t in v.tags.all()],
                    "collections": [c.name for c in v.collections.all()],
                    "design": v.design_id,
                    "design_preview": v.design_preview,
                    "use_count": v.use_count,
                }
                for v in voices
            ],
        ),
        (
            "voices/tags.json",
            list(Tag.objects.filter(workspace=workspace).values_list("name", flat=True)),
        ),
        (
            "voices/collections.json",
            [
                {
                    "name": c.name,
                    "description": c.description,
                    "voices": [v.voice_id for v in c.voices.all()],
                }
                for c in Collection.objects.filter(workspace=workspace).prefetch_related("voices")
            ],
        ),
        (
            "voices/notes.json",
            [
                {
                    "voice_id": n.voice.voice_id,
                    "author": _email(n.author),
                    "text": n.text,
                    "at": _iso(n.created_at),
                }
                for n in notes
            ],
        ),
        (
            "voices/designs.json",
            [
                {
                    "id": d.pk,
                    "created_by": _email(d.created_by),
                    "created_at": _iso(d.created_at),
                    "engine": d.engine,
                    "description": d.description,
                    "text": d.text,
                    "model_id": d.model_id,
                    "guidance_scale": d.guidance_scale,
                    "loudness": d.loudness,
                    "seed": d.seed,
                    "request": d.request,
                    "previews": d.previews,
                    "parent": d.parent_id,
                    "reproduces": d.reproduces_id,
                    "identical": d.identical,
                }
                for d in designs
            ],
        ),
        (
            "voices/votes.json",
            [
                {
                    "design": vote.design_id,
                    "question": vote.question,
                    "opened_at": _iso(vote.opened_at),
                    "closed_at": _iso(vote.closed_at),
                    "ballots": [
                        {"voter": _email(b.voter), "preview": b.preview, "at": _iso(b.created_at)}
                        for b in vote.ballots.all()
                    ],
                }
                for vote in votes
            ],
        ),
        (
            "voices/consents.json",
            [
                {
                    "voice_id": c.voice_id,
                    "engine": c.engine,
                    "speaker_name": c.speaker_name,
                    "statement": c.statement,
                    "allowed_uses": c.allowed_uses,
                    "expires_at": _iso(c.expires_at),
                    "samples": c.samples,
                    "recording": c.recording.name or None,
                    "created_by": _email(c.created_by),
                    "created_at": _iso(c.created_at),
                }
                for c in consents
            ],
        ),
    ]
    # The preview audio of every design, as files beside the recipes.
    ids = [p.get("history_item_id") for d in designs for p in d.previews]
    for clip in Generation.objects.filter(workspace=workspace, history_item_id__in=ids):
        try:
            with clip.file.open("rb") as handle:
                data = handle.read()
        except OSError:
            continue  # the clip's file is gone: its recipe is still exported
        extension = clip.file.name.rsplit(".", 1)[-1] if "." in clip.file.name else "bin"
        sections.append((f"voices/design_audio/{clip.history_item_id}.{extension}", data))
    for consent in consents:
        if consent.recording:
            try:
                with consent.recording.open("rb") as handle:
                    sections.append((f"voices/{consent.recording.name}", handle.read()))
            except OSError:
                continue
    return sections
