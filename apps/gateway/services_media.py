"""The core's media services as ``/v1`` calls them: transcription, sound effects, voice
design, and the voices made through them (``apps.generation.media``, kept by
``apps.voices.services_made``), each with the key in place of a ``Caller``."""

from apps.generation import media
from apps.generation.media import (  # noqa: F401  (what the API's views build and read)
    DESIGN_FORMAT_DEFAULT,
    DesignInput,
    Sample,
)
from apps.voices import services_made as made

from .services import keyed

api_transcribe = keyed(media.transcribe)
api_sound = keyed(media.sound)
api_voice_design = keyed(media.design)
api_voice_design_stream = keyed(media.design_stream)
api_voice_design_save = keyed(made.voice_design_save)
api_voice_clone = keyed(made.voice_clone)
api_voice_get = keyed(made.voice_get)
api_voice_edit = keyed(made.voice_edit)
api_voice_delete = keyed(made.voice_delete)
api_voice_settings = keyed(made.voice_settings)
api_voice_settings_update = keyed(made.voice_settings_update)
