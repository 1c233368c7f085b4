"""Live transcription for a ``Caller``: the engine's streaming session and its charge.

A live session cannot know its length in advance, so it is charged as it goes: a minute is
reserved when it opens (``LiveMeter.reserve``), the seconds received are recorded on that
reservation as they come (``progress``, so the sweeper never takes a session that still
sends audio for one left behind), each further minute is checked against the budgets before
it is transcribed (``next_minute_blocked_by``), and the seconds received are settled once when
the session ends (``settle``; a row the sweeper closed meanwhile is charged the rest on a
``:late`` row of its own) or refunded when no audio came (``release``).
"""

from apps.billing.rates import units_for
from apps.billing.services import (
    meter_charge_late,
    meter_progress,
    meter_refund,
    meter_reserve,
    meter_settle,
    rate_for,
    usage_estimate,
)

from .caller import Caller

RESERVED_SECONDS = 60.0  # what a session reserves ahead: its first minute, then each next one


class LiveMeter:
    """The charge of one live session of ``caller`` on the engine named ``engine_name``
    (``stt_realtime``)."""

    def __init__(self, *, caller: Caller, engine_name: str, model_id: str):
        self.caller, self.engine_name, self.model_id = caller, engine_name, model_id
        self.unit = rate_for(caller.workspace, "stt_realtime", model_id, engine_name).unit
        self.reservation = None

    def units(self, seconds: float):
        return units_for(self.unit, seconds=seconds)

    def reserve(self, *, idempotency_key: str | None = None, seconds: float = RESERVED_SECONDS):
        """Reserve the first minute (``BudgetExceeded`` refuses the session)."""
        caller = self.caller
        self.reservation = meter_reserve(
            workspace=caller.workspace,
            user=caller.user,
            capability="stt_realtime",
            engine=self.engine_name,
            model_id=self.model_id,
            units=self.units(seconds),
            source=caller.source,
            idempotency_key=idempotency_key,
            api_key_id=caller.key_id,
            api_key_cap=caller.key_cap,
            purpose=caller.purpose,
            project=caller.project,
        )
        return self.reservation

    def progress(self, seconds: float) -> None:
        """Record the seconds received so far on the reservation."""
        meter_progress(event=self.reservation.event, units=self.units(seconds))

    def next_minute_blocked_by(self, seconds: float) -> str | None:
        """The budget or key cap that another minute after ``seconds`` received would exceed
        (named for the member), or None: a session cannot run past a budget by more than a
        minute."""
        estimate = usage_estimate(
            workspace=self.caller.workspace,
            user=self.caller.user,
            capability="stt_realtime",
            engine=self.engine_name,
            model_id=self.model_id,
            # The open reservation already counts the first minute: this adds the rest.
            units=self.units(seconds),
        )
        return estimate.blocked_by or None

    def settle(self, seconds: float) -> None:
        """Charge the seconds received, once (no audio: refunded)."""
        reservation, self.reservation = self.reservation, None
        if reservation is None:
            return
        if seconds <= 0:
            meter_refund(event=reservation.event, note="no audio was sent")
            return
        units = self.units(seconds)
        event = meter_settle(event=reservation.event, units=units, plan=reservation.plan)
        meter_charge_late(event=event, units=units, api_key_cap=self.caller.key_cap)

    def release(self, *, note: str) -> None:
        """Refund the reservation (the session never started), once."""
        reservation, self.reservation = self.reservation, None
        if reservation is not None:
            meter_refund(event=reservation.event, note=note[:300])


def live_open(*, engine, meter: LiveMeter, **options):
    """Open ``engine``'s streaming session for ``meter``'s caller (after ``reserve``)."""
    return engine.stt_realtime(model_id=meter.model_id, **options)
