"""The one check every upload to transcribe passes, from the studio's form or ``/v1``.

Before anything is kept or reserved: its options (key terms by ElevenLabs' rule, the
language code), its size, that it decodes as sound, and its length from its header within
``MAX_SECONDS``. The file is read where Django spooled it, never whole into memory.
"""

import contextlib
import os
import re
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings

from apps.engines import audio
from apps.engines.base import InvalidRequest, keyterms_checked
from apps.workspaces.services import ActionRefused

MEDIA_TYPES = (".mp3", ".wav", ".m4a", ".ogg", ".webm", ".flac", ".mp4", ".mov", ".mkv")
# The type the recording is served with, chosen here from its extension: never the type the
# uploader's browser claimed (a "text/html" upload would otherwise be served as a page).
MEDIA_CONTENT_TYPES = {
    ".mp3": "audio/mpeg", ".wav": "audio/wav", ".m4a": "audio/mp4", ".ogg": "audio/ogg",
    ".webm": "audio/webm", ".flac": "audio/flac", ".mp4": "video/mp4",
    ".mov": "video/quicktime", ".mkv": "video/x-matroska",
}  # fmt: skip


def media_content_type(filename: str) -> str:
    return MEDIA_CONTENT_TYPES.get(
        os.path.splitext(filename or "")[1].lower(), "application/octet-stream"
    )


MODEL_ID = "scribe_v1"
# The longest recording Chorus transcribes, from the studio or /v1; the engine's decoder stops
# at the same length, for files whose header understates it.
MAX_SECONDS = audio.MAX_DECODE_SECONDS
MAX_LENGTH_SHOWN = audio.format_duration(MAX_SECONDS)  # "4 h", on the upload page
MIN_SECONDS = 0.1  # ElevenLabs' minimum: 100 ms of audio
# Studio uploads up to this long are refused when they are digital silence (decoded a window at
# a time, stopping at the first sound); longer ones are only probed, and the job then finds no
# words in silence.
SILENCE_CHECK_SECONDS = 600.0
PCM_BYTES_PER_SECOND = 2 * audio.PCM16K_RATE  # file_format=pcm_s16le_16


class UploadRefused(ActionRefused):
    """An upload that cannot be transcribed as sent; ``field`` names the part at fault (file,
    keyterms, language_code, num_speakers) for the API's error."""

    def __init__(self, message: str, *, field: str = "file"):
        super().__init__(message)
        self.field = field


class UploadTooLong(UploadRefused):
    """A recording longer than ``MAX_SECONDS`` (a limit, where other refusals are mistakes)."""


def language_checked(code: str | None) -> str | None:
    """An ISO 639-1 or -3 language code in lower case (a region, as in ``en-US``, is
    dropped), None for "detect it"; else ``UploadRefused`` on ``language_code``."""
    language = (code or "").strip().lower() or None
    if language is None:
        return None
    if not re.fullmatch(r"[a-z]{2,3}([-_][a-z0-9]{2,8})?", language):
        raise UploadRefused(
            "The language is a 2- or 3-letter code such as en, fr or deu.", field="language_code"
        )
    return re.split(r"[-_]", language)[0]


@dataclass
class Options:
    language_code: str | None = None  # None: detect
    diarize: bool = False
    num_speakers: int | None = None
    keyterms: list[str] = field(default_factory=list)
    tag_audio_events: bool = True
    no_verbatim: bool = False  # remove filler words
    detect_entities: bool = False
    redact_pii: bool = False

    def checked(self) -> "Options":
        """The options normalised, or ``UploadRefused`` naming the one at fault. Key terms
        follow ElevenLabs' rule (``keyterms_checked``), the one the engines apply."""
        language = language_checked(self.language_code)
        if self.num_speakers is not None and not 1 <= self.num_speakers <= 32:
            raise UploadRefused("The number of speakers goes from 1 to 32.", field="num_speakers")
        try:
            keyterms = keyterms_checked(self.keyterms)
        except InvalidRequest as exc:
            raise UploadRefused(exc.message, field="keyterms") from exc
        return Options(
            language_code=language,
            diarize=self.diarize,
            num_speakers=self.num_speakers if self.diarize else None,
            keyterms=keyterms,
            tag_audio_events=self.tag_audio_events,
            no_verbatim=self.no_verbatim,
            detect_entities=self.detect_entities or self.redact_pii,
            redact_pii=self.redact_pii,
        )

    def as_dict(self) -> dict:
        return {
            "language_code": self.language_code,
            "diarize": self.diarize,
            "num_speakers": self.num_speakers,
            "keyterms": self.keyterms,
            "tag_audio_events": self.tag_audio_events,
            "no_verbatim": self.no_verbatim,
            "detect_entities": self.detect_entities,
            "redact_pii": self.redact_pii,
        }


def max_upload_bytes() -> int:
    return settings.CHORUS_TRANSCRIBE_MAX_MB * 1024 * 1024


# --- The upload check -----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedUpload:
    """An upload that passed ``upload_check``: how long it plays, and its options normalised."""

    filename: str
    size: int
    seconds: float
    options: Options


def _file_message(exc: InvalidRequest) -> str:
    return (exc.fields.get("file") or [exc.message])[0]


def upload_check(
    *,
    upload,
    options: Options,
    max_bytes: int | None = None,
    file_format: str = "other",
    silence: bool = False,
) -> CheckedUpload:
    """Whether ``upload`` (a Django file: uploaded, stored or opened) can be transcribed with
    ``options``, checked the same way for the studio's form and ``/v1/speech-to-text`` before
    anything is kept or reserved; ``UploadRefused`` says why not.

    In order: the options (``Options.checked``: key terms by ElevenLabs' rule, the language
    code, the number of speakers); the size (at most ``max_bytes``, the studio's setting by
    default); that it decodes as audio or video with a sound track (by its content, whatever
    its name says); and its length, from its header where it states one (a header claiming
    277 hours is refused here, before any reservation; one that understates is stopped by
    the engine's decoder at the same ``MAX_SECONDS``), else by decoding it a frame at a time.
    ``file_format="pcm_s16le_16"`` is raw 16 kHz 16-bit PCM, timed by its size. With
    ``silence`` (the studio) a recording of up to ``SILENCE_CHECK_SECONDS`` that is digital
    silence is refused too. Nothing is read whole into memory.
    """
    options = options.checked()
    name = os.path.basename(getattr(upload, "name", "") or "") or "the file"
    size = upload.size or 0
    limit = max_upload_bytes() if max_bytes is None else max_bytes
    if not size:
        raise UploadRefused(f"{name} is empty.")
    if size > limit:
        raise UploadRefused(
            f"{name} is {size / 1048576:.0f} MB; the most is {limit // 1048576} MB."
        )
    if file_format == "pcm_s16le_16":
        if size % 2:
            raise UploadRefused(
                f"{name} is not 16-bit PCM: it must have an even number of bytes (2 a sample)."
            )
        seconds = size / PCM_BYTES_PER_SECOND
    else:
        try:
            seconds = audio.probe_duration(upload, name)
        except InvalidRequest as exc:
            raise UploadRefused(_file_message(exc)) from exc
    if seconds > MAX_SECONDS + audio.DURATION_TOLERANCE_SECONDS:
        raise UploadTooLong(
            f"{name} is {audio.format_duration(seconds, round_up=True)} long; Chorus "
            f"transcribes recordings of up to {audio.format_duration(MAX_SECONDS)}. Split it "
            "into parts and upload each."
        )
    if seconds < MIN_SECONDS:
        raise UploadRefused(
            f"{name} is too short: it plays {seconds:.2f} s; send at least 100 ms of audio."
        )
    if (
        silence
        and file_format != "pcm_s16le_16"
        and seconds <= SILENCE_CHECK_SECONDS
        and _silent(upload, name)
    ):
        raise UploadRefused(f"{name} has no sound to transcribe: it is silent.")
    return CheckedUpload(filename=name, size=size, seconds=seconds, options=options)


def _silent(upload, name: str) -> bool:
    """Whether the recording never rises above -60 dBFS (digital silence or close to it) in
    its first ``SILENCE_CHECK_SECONDS``; decoding stops at the first sound."""
    heard = 0
    try:
        with (
            audio.Pcm16kReader(upload, filename=name, max_seconds=MAX_SECONDS) as reader,
            contextlib.closing(reader.windows()) as windows,
        ):
            for window in windows:
                if float(np.abs(window).max(initial=0.0)) >= 0.001:
                    return False
                heard += len(window)
                if heard >= SILENCE_CHECK_SECONDS * audio.PCM16K_RATE:
                    break
    except InvalidRequest as exc:
        raise UploadRefused(_file_message(exc)) from exc
    return True
