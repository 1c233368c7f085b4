"""Metering a core call: ``billing.metered`` as the caller's, with its key, cap and purpose."""

from apps.billing.services import metered
from apps.history.services import generation_save

from .caller import Caller


def metered_for(caller: Caller, engine, *, capability: str, model_id: str, units, voice_id=""):
    """``metered`` for a call of ``caller``: its member, its source, its key and the key's
    cap (``/v1``), and what the call was for (``purpose``).

    No idempotency key is passed: each such call is new, and a caller-given key would cost
    the reservation a lookup of its own (jobs meter across their retries themselves).
    """
    return metered(
        workspace=caller.workspace,
        user=caller.user,
        capability=capability,
        engine=engine.name,
        model_id=model_id or "",
        units=units,
        source=caller.source,
        voice_id=voice_id or "",
        api_key_id=caller.key_id,
        api_key_cap=caller.key_cap,
        purpose=caller.purpose,
        project=caller.project,
    )


def unit_of(caller: Caller, engine, capability: str, model_id: str) -> str:
    """The unit the rate card bills ``capability`` in for this workspace and engine."""
    from apps.billing.services import rate_for

    return rate_for(caller.workspace, capability, model_id, engine.name).unit


def clip_keep(caller: Caller, *, usage_event, **clip):
    """Keep a clip the caller paid for as a ``Generation``: its member, source and key, and
    the ledger row of the call (``clip``: ``history.services.generation_save``'s fields)."""
    return generation_save(
        workspace=caller.workspace,
        user=caller.user,
        source=caller.source,
        api_key_id=caller.key_id,
        usage_event=usage_event,
        **clip,
    )
