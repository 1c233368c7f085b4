from django.apps import AppConfig


class GenerationConfig(AppConfig):
    """The generation core: one metered function per capability, for every caller."""

    name = "apps.generation"
    label = "generation"
    verbose_name = "Generation core"
