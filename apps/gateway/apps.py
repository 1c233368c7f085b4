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

        # The spend explorer names a personal key by its name and the prefix lists show.
        from apps.billing import labels

        labels.register_namer("key", _key_names)


def _key_names(workspace, ids):
    from .models import ApiKey

    pks = [int(i) for i in ids if i.isascii() and i.isdigit() and len(i) <= 18]
    rows = ApiKey.objects.filter(workspace=workspace, pk__in=pks).values_list(
        "pk", "name", "prefix"
    )
    return {str(pk): f"{name} ({prefix}…)" for pk, name, prefix in rows}
