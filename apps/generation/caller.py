"""Who is asking for a generation, and why: the one identity every core service takes.

Studio pages, Celery jobs, consumers and the ``/v1`` gateway all build a ``Caller`` and pass
it with a typed request; the core meters the call as ``user``'s in ``workspace``, with the
caller's ``source`` (ui, api or job), key (id and monthly cap, for ``/v1``) and ``purpose``.
"""

from dataclasses import dataclass, field

from apps.billing.models import UsageSource

_UNSET = object()


@dataclass(frozen=True)
class Caller:
    """A member of ``workspace`` asking for metered work.

    - ``source``: ``ui`` (a studio page), ``api`` (a personal key on ``/v1``) or ``job``.
    - ``key_id`` / ``key_cap``: the personal key and its monthly cap, when there is one.
    - ``purpose``: what the call is for, as ``(type, id)`` (a voice, a design, a clone…).
    - ``project``: the public id of the project the call is for ("" for none): the ledger
      records it for the spend explorer.
    - ``draft``: a try-out rather than a final render (the approved-voices rule spares it).
    - ``engine_kind``: ``"local"`` to run on the local engine whatever the workspace uses
      (a project's free draft); empty for the workspace's engine.
    - ``membership``: the member's role in the workspace when the caller already has it.
    - ``engine_row``: the workspace's ``EngineSettings`` when the caller already has it
      (``None``: none, the local engine), so resolving the engine needs no query.
    """

    workspace: object
    user: object
    source: str = UsageSource.UI
    key_id: int | None = None
    key_cap: object = None
    purpose: tuple[str, str] | None = None
    project: str = ""
    draft: bool = False
    engine_kind: str = ""
    membership: object = None
    engine_row: object = field(default=_UNSET, compare=False, repr=False)

    @property
    def knows_engine_row(self) -> bool:
        return self.engine_row is not _UNSET
