"""Music, dubbing and the history as ``/v1`` calls them: the jobs a caller waits for
(``apps.projects.services_jobs``), with the key in place of a ``Caller``, and the key's
member's own history items in the API's errors."""

from decimal import Decimal

from apps.history import services as history
from apps.history.models import Generation
from apps.projects import services_jobs as jobs
from apps.projects.services_jobs import (  # noqa: F401  (what the API's views build and read)
    MAX_DUB_UPLOAD_BYTES,
    DubbingInput,
    JobStillRunning,
    MusicInput,
    dubbing_request_id,
    raise_job_failure,
)

from .models import ApiKey
from .services import ApiRefused, keyed

api_music = keyed(jobs.music_compose)
api_dubbing_create = keyed(jobs.dubbing_start)
api_dubbing = keyed(jobs.dubbing_of)
api_dubbing_page = keyed(jobs.dubbing_page)
api_dubbing_delete = keyed(jobs.dubbing_remove)
api_dubbing_audio = keyed(jobs.dubbing_audio)
api_dubbing_transcript = keyed(jobs.dubbing_transcript)


# --- History -------------------------------------------------------------------------------


def api_history_page(*, api_key: ApiKey, **filters) -> history.HistoryPage:
    """The key's member's own clips (see ``api_history.history``)."""
    try:
        return history.history_page(workspace=api_key.workspace, user=api_key.user, **filters)
    except history.HistoryCursorUnknown as exc:
        raise ApiRefused(
            400, "invalid_parameters", str(exc), param="start_after_history_item_id"
        ) from exc


def api_history_item(*, api_key: ApiKey, history_item_id: str) -> Generation:
    found = (
        Generation.objects.filter(
            workspace=api_key.workspace, user=api_key.user, history_item_id=history_item_id
        )
        .select_related("usage_event")
        .first()
    )
    if found is None:
        raise ApiRefused(
            404,
            "history_item_not_found",
            f"There is no history item {history_item_id!r}.",
            kind="not_found",
        )
    return found


def api_history_delete(*, api_key: ApiKey, history_item_id: str) -> None:
    history.generation_delete(
        generation=api_history_item(api_key=api_key, history_item_id=history_item_id)
    )


def credits_of(generation: Generation) -> Decimal:
    event = generation.usage_event
    return event.charged if event is not None else Decimal(0)
