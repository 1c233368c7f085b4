"""How the core applies a workspace's voice to a call, provided by the app that owns voices.

Every speech call of the core applies the voice before anything is reserved: the recipe the
local engine needs for a voice the workspace made, the settings the workspace stored for it,
an expired clone consent (refused), and the "approved voices only" rule for final renders.
Those rows and rules belong to ``voices``, which builds on this core; so the core names what
it needs here and ``voices`` installs it when the apps are ready (``VoicesConfig.ready``).
A core without it refuses to speak rather than skip the rules.
"""

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured

_apply: Callable | None = None


def voice_rules_install(apply: Callable) -> None:
    """``apply(*, workspace, engine, request, given, final) -> str``: fill the TTS ``request``
    from what the workspace keeps for its voice and return the voice's name ("" when it has
    none), or raise ``ApiRefused`` (403) why not."""
    global _apply
    _apply = apply


def voice_apply(*, workspace, engine, request, given: dict | None, final: bool) -> str:
    """Apply the voice rules to ``request``; the voice's name, kept with the clip."""
    if _apply is None:
        raise ImproperlyConfigured(
            "No voice rules are installed: add apps.voices to INSTALLED_APPS."
        )
    name = _apply(workspace=workspace, engine=engine, request=request, given=given, final=final)
    return name or ""
