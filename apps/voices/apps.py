from django.apps import AppConfig


class VoicesConfig(AppConfig):
    name = "apps.voices"
    label = "voices"
    verbose_name = "Voice library"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from .models import LibraryVoice
        from .services import facets_drop

        post_save.connect(facets_drop, sender=LibraryVoice, dispatch_uid="voices-facets-save")
        post_delete.connect(facets_drop, sender=LibraryVoice, dispatch_uid="voices-facets-del")
