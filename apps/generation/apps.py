from django.apps import AppConfig


class GenerationConfig(AppConfig):
    """The generation core: one metered function per capability, for every caller."""

    name = "apps.generation"
    label = "generation"
    verbose_name = "Generation core"

    def ready(self):
        # Billing reconciles the ledger with the provider through the workspace's engine;
        # it may not import the core, so the core hands it the engine builder.
        from apps.billing.reconcile import engine_source_register

        from .engine import engine_for

        engine_source_register(engine_for)
