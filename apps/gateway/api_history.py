"""The ElevenLabs-compatible history endpoints (``/v1/history…``), served from Generations."""

import math

from django.http import HttpResponse, JsonResponse

from apps.history.services import KIND_SOURCES

from . import services_jobs
from .api import _query_choice, _query_int, api_view
from .services import ApiInvalid

SORT_DIRECTIONS = ("asc", "desc")
SOURCES = ("TTS", "STS", "Flows")
MAX_UNIX = 253_402_300_799  # 9999-12-31: later dates cannot be represented


def _item_json(generation) -> dict:
    """``SpeechHistoryItemResponseModel``.

    ``character_count_change_from``/``_to`` span what the clip cost: from 0 to the credits
    charged, rounded up (a personal key has no account-wide counter to start from).
    """
    recipe = generation.recipe or {}
    credits = services_jobs.credits_of(generation)
    settings = recipe.get("voice_settings")
    return {
        "history_item_id": generation.history_item_id,
        "request_id": generation.request_id or None,
        "voice_id": generation.voice_id or None,
        "model_id": generation.model_id or None,
        "voice_name": generation.voice_name or None,
        "voice_category": None,
        "text": generation.text,
        "date_unix": int(generation.created_at.timestamp()),
        "character_count_change_from": 0,
        "character_count_change_to": math.ceil(credits),
        "content_type": generation.content_type,
        "state": "created",
        "settings": settings if isinstance(settings, dict) else None,
        "share_link_id": None,
        "source": KIND_SOURCES.get(generation.kind),
        "alignments": None,
        "dialogue": None,
        "output_format": recipe.get("output_format"),
    }


@api_view(scope="history")
def history(request, api_key):
    """``GET /v1/history``: the clips of the key's member, newest first, keyset-paged.

    ElevenLabs keeps one history per account; in Chorus the account behind a personal key is
    its member, so the key sees that member's own clips (made in the studio, through any of
    their keys, or by their jobs) — not their teammates'. The whole team's clips are on the
    History page, where roles decide who may delete what.
    """
    errors: list[dict] = []
    page_size = _query_int(request, "page_size", errors, low=1, high=1000)
    before = _query_int(request, "date_before_unix", errors, low=0, high=MAX_UNIX)
    after = _query_int(request, "date_after_unix", errors, low=0, high=MAX_UNIX)
    direction = _query_choice(request, "sort_direction", SORT_DIRECTIONS, errors) or "desc"
    source = _query_choice(request, "source", SOURCES, errors)
    if errors:
        raise ApiInvalid(errors)
    page = services_jobs.api_history_page(
        api_key=api_key,
        page_size=page_size or 100,
        start_after=request.GET.get("start_after_history_item_id") or None,
        voice_id=request.GET.get("voice_id") or None,
        model_id=request.GET.get("model_id") or None,
        date_before_unix=before,
        date_after_unix=after,
        sort_direction=direction,
        search=request.GET.get("search") or None,
        source=source,
    )
    return JsonResponse(
        {
            "history": [_item_json(g) for g in page.items],
            "last_history_item_id": page.last_history_item_id,
            "has_more": page.has_more,
            "scanned_until": page.scanned_until,
        }
    )


@api_view(scope="history", methods=("GET", "DELETE"))
def history_item(request, api_key, history_item_id):
    """``GET /v1/history/{id}``: one of the member's clips; ``DELETE`` removes it (its ledger
    row stays)."""
    if request.method == "DELETE":
        services_jobs.api_history_delete(api_key=api_key, history_item_id=history_item_id)
        return JsonResponse({"status": "ok"})
    generation = services_jobs.api_history_item(api_key=api_key, history_item_id=history_item_id)
    return JsonResponse(_item_json(generation))


@api_view(scope="history")
def history_audio(request, api_key, history_item_id):
    """``GET /v1/history/{id}/audio``: the clip's audio as it was made."""
    generation = services_jobs.api_history_item(api_key=api_key, history_item_id=history_item_id)
    with generation.file.open("rb") as handle:
        audio = handle.read()
    response = HttpResponse(audio, content_type=generation.content_type)
    response["history-item-id"] = generation.history_item_id
    return response
