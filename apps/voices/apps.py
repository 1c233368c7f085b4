from django.apps import AppConfig


class VoicesConfig(AppConfig):
    name = "apps.voices"
    label = "voices"
    verbose_name = "Voice library"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from apps.generation.voice_rules import voice_rules_install
        from apps.history.models import Generation
        from apps.workspaces.models import EngineSettings, Workspace

        from .models import (
            ApiVoice,
            LibraryFacets,
            LibraryVoice,
            VoiceConsent,
            VoiceSettingsRecord,
        )
        from .services import api_voice_deleted, api_voice_kept, facets_drop
        from .services_made import speech_voice_apply, voice_facts_forget
        from .services_sync import engine_settings_saved, workspace_set_up
        from .services_usage import generation_counted, library_has_forget

        # The core applies the workspace's voice rows and rules to every speech call.
        voice_rules_install(speech_voice_apply)

        post_save.connect(facets_drop, sender=LibraryVoice, dispatch_uid="voices-facets-save")
        post_delete.connect(facets_drop, sender=LibraryVoice, dispatch_uid="voices-facets-del")
        # Voices made through /v1 join the library as they are made; deleted, withdrawn.
        post_save.connect(api_voice_kept, sender=ApiVoice, dispatch_uid="voices-api-kept")
        post_delete.connect(api_voice_deleted, sender=ApiVoice, dispatch_uid="voices-api-gone")
        # A new workspace, and a change of engine, fill the library from the engine (on
        # commit; over the network in a job), so nobody has to find the Sync button first.
        post_save.connect(workspace_set_up, sender=Workspace, dispatch_uid="voices-setup")
        post_save.connect(
            engine_settings_saved, sender=EngineSettings, dispatch_uid="voices-engine-changed"
        )
        # Each clip made with a voice is a use of it (the library's most/recently used).
        post_save.connect(generation_counted, sender=Generation, dispatch_uid="voices-used")

        # What speech remembers of a voice (services_made.voice_facts) and whether the library
        # has a row for it (services_usage.generation_counted) are forgotten on any change in
        # this process to the rows they come from. (A library sync adds voices in bulk, which
        # sends no signal; it then saves the library's facets, which does.)
        for model in (ApiVoice, VoiceSettingsRecord, LibraryVoice, VoiceConsent, Workspace):
            name = model.__name__
            post_save.connect(voice_facts_forget, sender=model, dispatch_uid=f"voice-facts-{name}")
            post_delete.connect(
                voice_facts_forget, sender=model, dispatch_uid=f"voice-facts-del-{name}"
            )
        for model in (LibraryVoice, LibraryFacets, Workspace):
            name = model.__name__
            post_save.connect(library_has_forget, sender=model, dispatch_uid=f"library-has-{name}")
            post_delete.connect(
                library_has_forget, sender=model, dispatch_uid=f"library-has-del-{name}"
            )

        # The spend explorer names a voice id by its library name.
        from apps.billing import labels

        labels.register_namer("voice", _voice_names)


def _voice_names(workspace, voice_ids):
    """The library names of ``voice_ids`` (a withdrawn voice too: the ledger is history)."""
    from .models import LibraryVoice

    rows = (
        LibraryVoice.objects.filter(workspace=workspace, voice_id__in=voice_ids)
        .order_by("voice_id", "withdrawn_at")  # a voice still in the library first
        .values_list("voice_id", "name")
    )
    names: dict[str, str] = {}
    for voice_id, name in rows:
        names.setdefault(voice_id, name)
    return names
