"""Keep generated audio: one ``Generation`` per clip, written before the client gets it."""

import logging

from django.core.files.base import ContentFile
from django.db import transaction

from .models import Generation

log = logging.getLogger(__name__)

EXTENSIONS = {
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/pcm": "pcm",
    "audio/basic": "ulaw",
    "audio/alaw": "alaw",
    "audio/ogg": "ogg",
    "audio/opus": "opus",
    "audio/webm": "webm",
    "audio/flac": "flac",
    "video/mp4": "mp4",
}


def generation_save(
    *,
    workspace,
    user,
    kind: str,
    engine: str,
    audio: bytes,
    content_type: str,
    recipe: dict,
    source: str = "ui",
    api_key_id: int | None = None,
    model_id: str = "",
    voice_id: str = "",
    voice_name: str = "",
    text: str = "",
    duration_seconds: float | None = None,
    usage_event=None,
    complete: bool = True,
) -> Generation:
    """Store ``audio`` and its recipe; the file is removed again if the row cannot be saved."""
    generation = Generation(
        workspace=workspace,
        user=user,
        kind=kind,
        source=source,
        api_key_id=api_key_id,
        engine=engine,
        model_id=model_id or "",
        voice_id=voice_id or "",
        voice_name=(voice_name or "")[:200],
        text=text or "",
        recipe=recipe,
        content_type=content_type,
        size_bytes=len(audio),
        duration_seconds=duration_seconds,
        usage_event=usage_event,
        request_id=getattr(usage_event, "request_id", "") or "",
        complete=complete,
    )
    extension = EXTENSIONS.get(content_type.split(";")[0].strip(), "bin")
    generation.file.save(f"{kind}.{extension}", ContentFile(audio), save=False)
    try:
        with transaction.atomic():
            generation.save()
    except Exception:
        generation.file.delete(save=False)
        raise
    return generation
