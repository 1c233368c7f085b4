"""Every voice can be heard: where the preview a library card and a voice page play comes from.

- The local engine's own voices (premade) have no recording: their preview is made once, a
  short sentence in the voice's language, by the local engine, and kept in the media storage
  under a name derived from the voice, the sentence and the model. Every later request (any
  workspace: the same voice says the same sentence the same way) reads that file.

  It is a free engine call, not a metered one through the core: a preview is the catalogue's
  sample, made once for every workspace, not a member's generation. Metering it (at 0
  credits, the local engine's price) would put a ledger row, a History clip and a "use" of
  the voice on whichever member first opened the library, and nobody on the second.
- A voice designed or cloned in the studio keeps the preview it was saved with (its design
  preview, its first consent sample), each served by its own access-checked view.
- ElevenLabs voices keep the upstream ``preview_url`` the sync read with the workspace key on
  the server: a public recording that carries no key, which the browser is sent to.
"""

import hashlib
import logging
import re
import threading
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from apps.engines.base import EngineError, TTSRequest
from apps.workspaces.services import ActionRefused

from .models import LibraryVoice, VoiceSource

log = logging.getLogger(__name__)

PREVIEW_DIR = "voice_previews"
PREVIEW_MODEL = "local_tts_v1"
PREVIEW_FORMAT = "mp3_44100_128"
# What a premade voice says, in its language (English where it has none of these).
PREVIEW_TEXTS = {
    "en": "Hello! This is how I sound when I read your script aloud.",
    "de": "Hallo! So klinge ich, wenn ich Ihr Skript vorlese.",
    "fr": "Bonjour ! Voici ma voix quand je lis votre texte à voix haute.",
    "es": "¡Hola! Así sueno cuando leo tu guion en voz alta.",
    "it": "Ciao! Ecco come suono quando leggo il tuo testo ad alta voce.",
    "pt": "Olá! É assim que eu soo quando leio o seu roteiro em voz alta.",
}

_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


@dataclass(frozen=True)
class Preview:
    """Where a voice's preview is: a stored file (``name``) or an address (``url``)."""

    name: str = ""
    content_type: str = "audio/mpeg"
    url: str = ""


def preview_made_here(voice: LibraryVoice) -> bool:
    """A voice whose preview the studio makes (the local engine's own voices)."""
    return voice.engine == "local" and voice.source == VoiceSource.ENGINE


def preview_available(voice: LibraryVoice) -> bool:
    """Whether the voice has a preview to play (the cards show a play button for these)."""
    return preview_made_here(voice) or _usable_url(voice.preview_url) != ""


def _usable_url(url: str) -> str:
    """A preview address the browser may be sent to: one of the studio's own paths, or an
    https recording upstream. Anything else (another scheme, a protocol-relative //host) is
    not followed."""
    url = (url or "").strip()
    if url.startswith("/") and not url.startswith("//"):
        return url
    if url.startswith("https://"):
        return url
    return ""


def preview_text(voice: LibraryVoice) -> str:
    language = (voice.language or voice.labels.get("language", "") or "en").lower()
    return PREVIEW_TEXTS.get(language.split("-")[0], PREVIEW_TEXTS["en"])


def preview_file_name(voice: LibraryVoice) -> str:
    """The stored file of a made preview: the voice, and a digest of what it says and how."""
    text = preview_text(voice)
    digest = hashlib.sha256(f"{PREVIEW_MODEL}|{PREVIEW_FORMAT}|{text}".encode()).hexdigest()
    safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", voice.voice_id)[:80]
    return f"{PREVIEW_DIR}/{voice.engine}/{safe_id}-{digest[:16]}.mp3"


def _lock_for(name: str) -> threading.Lock:
    with _locks_lock:
        return _locks.setdefault(name, threading.Lock())


def _preview_engine():
    from apps.engines.local.engine import local_engine

    return local_engine()


def preview_make(voice: LibraryVoice) -> str:
    """The stored preview of a local engine voice, made now if it was never made."""
    name = preview_file_name(voice)
    if default_storage.exists(name):
        return name
    with _lock_for(name):  # two cards asked at once: one synthesis
        if default_storage.exists(name):
            return name
        request = TTSRequest(
            text=preview_text(voice),
            voice_id=voice.voice_id,
            model_id=PREVIEW_MODEL,
            output_format=PREVIEW_FORMAT,
            seed=1,
        )
        try:
            result = _preview_engine().tts(request)
        except EngineError as exc:
            raise ActionRefused(f"The preview of {voice.name} could not be made: {exc}") from exc
        saved = default_storage.save(name, ContentFile(result.audio))
        if saved != name:  # another process saved it meanwhile: keep theirs
            default_storage.delete(saved)
    return name


def voice_preview(voice: LibraryVoice) -> Preview:
    """Where ``voice``'s preview is; ``ActionRefused`` when it has none."""
    if preview_made_here(voice):
        return Preview(name=preview_make(voice))
    url = _usable_url(voice.preview_url)
    if url:
        return Preview(url=url)
    raise ActionRefused(f"{voice.name} has no preview.")
