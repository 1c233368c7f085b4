from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """Voice agents: versioned configurations, their knowledge, and the conversations held
    with them (in the browser over Channels and through ``/v1/convai``)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.agents"
    label = "agents"
    verbose_name = "Voice agents"

    def ready(self):
        from django.db.models.signals import post_delete

        from .models import KnowledgeDocument
        from .upstream import document_deleted

        post_delete.connect(
            document_deleted, sender=KnowledgeDocument, dispatch_uid="agents-knowledge-upstream"
        )
