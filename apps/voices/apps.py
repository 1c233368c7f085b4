from django.apps import AppConfig


class VoicesConfig(AppConfig):
    name = "apps.voices"
    label = "voices"
    verbose_name = "Voice library"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from apps.generation.voice_rules import voice_rules_install
        from apps.history.models import Generation

        from .models import ApiVoice, LibraryVoice
        from .services import api_voice_deleted, api_voice_kept, facets_drop
        from .services_made import speech_voice_apply
        from .services_usage import generation_counted

        # The core applies the workspace's voice rows and rules to every speech call.
        voice_rules_install(speech_voice_apply)

        post_save.connect(facets_drop, sender=LibraryVoice, dispatch_uid="voices-facets-save")
        post_delete.connect(facets_drop, sender=LibraryVoice, dispatch_uid="voices-facets-del")
        # Voices made through /v1 join the library as they are made; deleted, withdrawn.
        post_save.connect(api_voice_kept, sender=ApiVoice, dispatch_uid="voices-api-kept")
        post_delete.connect(api_voice_deleted, sender=ApiVoice, dispatch_uid="voices-api-gone")
        # Each clip made with a voice is a use of it (the library's most/recently used).
        post_save.connect(generation_counted, sender=Generation, dispatch_uid="voices-used")
