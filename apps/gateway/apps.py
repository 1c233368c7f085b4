from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "apps.gateway"
    label = "gateway"
    verbose_name = "API gateway"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from apps.workspaces.models import EngineSettings, Membership, User, Workspace

        from .models import ApiKey
        from .services import known_keys_forget

        for model in (ApiKey, Membership, User, Workspace, EngineSettings):
            post_save.connect(
                known_keys_forget, sender=model, dispatch_uid=f"keys-{model.__name__}"
            )
            post_delete.connect(
                known_keys_forget, sender=model, dispatch_uid=f"keys-del-{model.__name__}"
            )
