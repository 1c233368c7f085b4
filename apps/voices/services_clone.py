"""Cloning in the studio, with a consent register.

Every sample is checked (type, size, decodes as sound) before anything is reserved, and each
rejected file is named with its reason. The clone runs the same service as
``POST /v1/voices/add`` with the member as the caller, so it is metered as theirs with the
clone as its purpose. Its ``VoiceConsent`` records whose voice it is, the statement they
agreed to, the allowed uses and an expiry; once that passes, the voice is refused for
generation everywhere (``consent_refusal`` is checked by every TTS call).
"""

import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from apps.engines import audio
from apps.engines.base import InvalidRequest
from apps.generation.caller import Caller
from apps.generation.errors import ApiInvalid, ApiRefused
from apps.workspaces.services import ActionRefused

from .models import ConsentUse, LibraryVoice, VoiceChange, VoiceConsent

SAMPLE_TYPES = (".mp3", ".wav", ".m4a", ".ogg", ".webm", ".flac")
MAX_SAMPLES = 25
STATEMENT_MIN = 20
MIN_SAMPLE_SECONDS = 1.0


class SamplesRefused(ActionRefused):
    """Some samples cannot be used: ``problems`` names each file and why."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__(
            "These samples cannot be used: " + "; ".join(f"{name}: {why}" for name, why in problems)
        )


@dataclass(frozen=True)
class Upload:
    """An uploaded file: its bytes, or the uploaded file itself, which is read where Django
    spooled it and never whole into memory; ``size`` is what the client sent (``data`` is
    left empty for a file over the limits, which is refused by its size unread)."""

    filename: str
    data: bytes | File
    size: int | None = None

    @property
    def length(self) -> int:
        if self.size is not None:
            return self.size
        return len(self.data) if isinstance(self.data, bytes) else self.data.size

    def as_file(self) -> File:
        """What storage keeps: a spooled upload is moved into place, not copied."""
        return ContentFile(self.data) if isinstance(self.data, bytes) else self.data


@dataclass
class ConsentInput:
    speaker_name: str
    statement: str
    attested: bool
    allowed_uses: list[str] = field(default_factory=list)
    expires_at: datetime | None = None
    recording: Upload | None = None


def _mb(setting: str) -> int:
    return getattr(settings, setting) * 1024 * 1024


def _ext(filename: str) -> str:
    return os.path.splitext(filename or "")[1].lower()


def _checked_audio(upload: Upload, *, what: str) -> tuple[float, str | None]:
    """Its length in seconds, or (0, why it cannot be used)."""
    if _ext(upload.filename) not in SAMPLE_TYPES:
        kinds = ", ".join(t.lstrip(".") for t in SAMPLE_TYPES)
        return 0.0, f"{what} must be one of {kinds}."
    if not upload.length:
        return 0.0, "the file is empty."
    if upload.length > _mb("CHORUS_CLONE_SAMPLE_MAX_MB"):
        return 0.0, (
            f"the file is {upload.length / 1048576:.1f} MB; the most is "
            f"{settings.CHORUS_CLONE_SAMPLE_MAX_MB} MB per file."
        )
    try:
        seconds = audio.probe_duration(upload.data, upload.filename)
    except InvalidRequest as exc:
        message = (exc.fields.get("file") or [exc.message])[0]
        return 0.0, f"it does not decode as audio ({message})"
    if seconds < MIN_SAMPLE_SECONDS:
        return 0.0, f"it plays {seconds:.2f} s; a sample needs at least {MIN_SAMPLE_SECONDS:g} s."
    return seconds, None


def samples_check(uploads: list[Upload]) -> list[dict]:
    """What each sample is (name, size, seconds), or ``SamplesRefused`` naming every bad one."""
    if not uploads:
        raise ActionRefused("Add at least one sample (upload a file or record one).")
    if len(uploads) > MAX_SAMPLES:
        raise ActionRefused(f"Use at most {MAX_SAMPLES} samples (you added {len(uploads)}).")
    total = sum(u.length for u in uploads)
    if total > _mb("CHORUS_CLONE_TOTAL_MAX_MB"):
        raise ActionRefused(
            f"The samples add up to {total / 1048576:.1f} MB; the most is "
            f"{settings.CHORUS_CLONE_TOTAL_MAX_MB} MB together."
        )
    problems, described = [], []
    for upload in uploads:
        seconds, why = _checked_audio(upload, what="A sample")
        name = os.path.basename(upload.filename or "") or "(unnamed file)"
        if why:
            problems.append((name, why))
        else:
            described.append({"filename": name, "bytes": upload.length, "seconds": seconds})
    if problems:
        raise SamplesRefused(problems)
    return described


def clone_estimate(*, workspace, user):
    """What a clone is reserved at (the rate is per clone or per second of samples; the
    estimate assumes a minute of samples when it is per second)."""
    from apps.billing.rates import units_for
    from apps.billing.services import rate_for, usage_estimate
    from apps.generation.engine import engine_for

    engine = engine_for(workspace)
    unit = rate_for(workspace, "voice_clone", "", engine.name).unit
    return usage_estimate(
        workspace=workspace,
        user=user,
        capability="voice_clone",
        engine=engine.name,
        model_id="",
        units=units_for(unit, seconds=60),
    )


def consent_check(consent: ConsentInput) -> ConsentInput:
    """The consent statement is complete, or ``ActionRefused`` says what is missing."""
    speaker = (consent.speaker_name or "").strip()
    statement = (consent.statement or "").strip()
    if not speaker:
        raise ActionRefused("Say whose voice this is (the speaker's name).")
    if len(speaker) > 200:
        raise ActionRefused("The speaker's name has at most 200 characters.")
    if len(statement) < STATEMENT_MIN:
        raise ActionRefused(
            f"Write the consent statement the speaker agreed to (at least {STATEMENT_MIN} "
            "characters)."
        )
    if not consent.attested:
        raise ActionRefused("Confirm that the speaker consented to this clone.")
    uses = [u for u in consent.allowed_uses if u in ConsentUse.values]
    if not uses or len(uses) != len(consent.allowed_uses):
        raise ActionRefused("Choose the uses the speaker allowed (at least one).")
    if consent.expires_at is None:
        raise ActionRefused("Give the date the consent expires.")
    if consent.expires_at <= timezone.now():
        raise ActionRefused("The consent's expiry must be in the future.")
    if consent.recording is not None:
        _seconds, why = _checked_audio(consent.recording, what="The consent recording")
        if why:
            raise ActionRefused(f"The consent recording cannot be used: {why}")
    return ConsentInput(
        speaker_name=speaker,
        statement=statement,
        attested=True,
        allowed_uses=uses,
        expires_at=consent.expires_at,
        recording=consent.recording,
    )


def clone_create(
    *,
    workspace,
    user,
    name: str,
    uploads: list[Upload],
    consent: ConsentInput,
    description: str = "",
    labels: dict[str, str] | None = None,
    remove_background_noise: bool = False,
) -> LibraryVoice:
    """Clone a voice from ``uploads`` and register its consent; nothing is kept on refusal."""
    from apps.generation.media import Sample

    from .services_made import voice_clone

    name = (name or "").strip()
    if not name:
        raise ActionRefused("Give the voice a name.")
    if len(name) > 100:
        raise ActionRefused("A voice name has at most 100 characters.")
    consent = consent_check(consent)
    described = samples_check(uploads)
    labels = {k: v.strip()[:60] for k, v in (labels or {}).items() if v and v.strip()}
    uid = uuid.uuid4().hex
    caller = Caller(workspace=workspace, user=user, purpose=("voice_clone", uid))
    try:
        voice = voice_clone(
            caller=caller,
            name=name,
            samples=[Sample(filename=u.filename, data=u.data) for u in uploads],
            description=(description or "").strip() or None,
            labels=labels,
            remove_background_noise=remove_background_noise,
        )
    except (ApiRefused, ApiInvalid) as exc:
        raise ActionRefused(str(exc)) from exc
    library_voice = LibraryVoice.objects.get(
        workspace=workspace, engine=voice.engine, voice_id=voice.voice_id
    )
    with transaction.atomic():
        record = VoiceConsent(
            workspace=workspace,
            uid=uid,
            engine=voice.engine,
            voice_id=voice.voice_id,
            library_voice=library_voice,
            speaker_name=consent.speaker_name,
            statement=consent.statement,
            allowed_uses=consent.allowed_uses,
            expires_at=consent.expires_at,
            samples=described,
            created_by=user,
        )
        if consent.recording is not None:
            base = os.path.basename(consent.recording.filename) or "consent.webm"
            record.recording.save(base, consent.recording.as_file(), save=False)
        # The samples are kept with the consent: the voice page plays them.
        for index, (sample, upload) in enumerate(zip(described, uploads, strict=True)):
            sample["path"] = default_storage.save(
                f"consent/samples/{uid}/{index + 1}{_ext(upload.filename)}", upload.as_file()
            )
        record.save()
        if not library_voice.preview_url:  # the library card plays the first sample
            library_voice.preview_url = reverse("voices:clone_sample", args=[record.pk, 1])
            library_voice.save(update_fields=["preview_url"])
        VoiceChange.objects.create(
            voice=library_voice,
            actor=user,
            action="cloned",
            detail=(
                f"Cloned from {len(described)} sample(s); consent of {consent.speaker_name} "
                f"until {consent.expires_at:%Y-%m-%d}"
            ),
        )
    return library_voice


def consent_refusal(*, workspace_id: int, engine: str, voice_id: str) -> str | None:
    """Why this voice may not be used for generation (its clone consent expired), or None."""
    consent = (
        VoiceConsent.objects.filter(workspace_id=workspace_id, engine=engine, voice_id=voice_id)
        .only("speaker_name", "expires_at")
        .first()
    )
    if consent is None or not consent.expired:
        return None
    return (
        f"The consent of {consent.speaker_name} for this cloned voice expired on "
        f"{consent.expires_at:%Y-%m-%d}: it cannot be used for generation until a manager "
        "records a renewed consent."
    )


def consent_renew(*, consent: VoiceConsent, user, expires_at: datetime, statement: str = ""):
    """A manager records renewed consent: a new expiry (and, if given, the new statement)."""
    if expires_at is None or expires_at <= timezone.now():
        raise ActionRefused("The new expiry must be in the future.")
    statement = (statement or "").strip()
    if statement and len(statement) < STATEMENT_MIN:
        raise ActionRefused(f"A consent statement has at least {STATEMENT_MIN} characters.")
    consent.expires_at = expires_at
    if statement:
        consent.statement = statement
    consent.save(update_fields=["expires_at", "statement"])
    if consent.library_voice_id:
        VoiceChange.objects.create(
            voice_id=consent.library_voice_id,
            actor=user,
            action="consent renewed",
            detail=f"Consent of {consent.speaker_name} renewed until {expires_at:%Y-%m-%d}",
        )
    return consent


def clones_without_consent(*, workspace):
    """Cloned voices with no consent record (made through ``/v1``, or upstream)."""
    return LibraryVoice.objects.filter(
        workspace=workspace, category="cloned", consents__isnull=True
    ).order_by("name", "pk")


def consent_register(*, workspace):
    """Every clone's consent in the workspace, expired first, then by expiry."""
    return (
        VoiceConsent.objects.filter(workspace=workspace)
        .select_related("created_by", "library_voice")
        .order_by("expires_at", "pk")
    )


SAMPLE_TYPES_MIME = {
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".m4a": "audio/mp4",
    ".ogg": "audio/ogg",
    ".webm": "audio/webm",
    ".flac": "audio/flac",
}


def sample_file(consent: VoiceConsent, number: int) -> tuple[str, str, str]:
    """Sample ``number`` (1-based) of a clone: its storage name, content type and filename."""
    samples = consent.samples or []
    if not 1 <= number <= len(samples) or not samples[number - 1].get("path"):
        raise ActionRefused("This clone has no such sample.")
    sample = samples[number - 1]
    content_type = SAMPLE_TYPES_MIME.get(_ext(sample["path"]), "application/octet-stream")
    return sample["path"], content_type, sample.get("filename") or os.path.basename(sample["path"])
