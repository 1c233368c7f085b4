"""The /v1 API's bodies in ElevenLabs' wire shapes: errors, voices, models, account, timings.

Each function takes Chorus objects (engine dataclasses, keys, plans) and returns plain JSON
data with every field the official OpenAPI spec marks required, so clients that validate
responses (and the official SDK, which does not) read them as they read ElevenLabs'.
"""

import base64
import json
import math
from decimal import Decimal

from django.http import JsonResponse

from apps.workspaces.models import Role

from .services import ApiInvalid, ApiRefused, KeyAccount

# --- Errors -----------------------------------------------------------------------------


def error_body(exc: ApiRefused, *, request_id: str) -> dict:
    """Shape A: ``{"detail": {type, code, message, status, request_id[, param]}}``.

    ``status`` repeats ``code``: older clients read the legacy field, newer ones ``code``.
    """
    detail = {
        "type": exc.kind,
        "code": exc.code,
        "message": exc.message,
        "status": exc.code,
        "request_id": exc.request_id or request_id,
    }
    if exc.param:
        detail["param"] = exc.param
    return {"detail": detail}


def error_response(exc: ApiRefused, *, request_id: str) -> JsonResponse:
    response = JsonResponse(error_body(exc, request_id=request_id), status=exc.status)
    if exc.retry_after:
        response["retry-after"] = str(max(1, round(exc.retry_after)))
    response["request-id"] = exc.request_id or request_id
    return response


def invalid_response(exc: ApiInvalid, *, request_id: str) -> JsonResponse:
    """FastAPI's 422 body: ``{"detail": [{"type", "loc", "msg"}, …]}``.

    The offending ``input`` is echoed only when it is a short scalar that strict JSON can
    carry (not NaN or Infinity, which Python's parser accepts).
    """
    errors = [
        error if _echoable(error.get("input")) else {k: v for k, v in error.items() if k != "input"}
        for error in exc.errors
    ]
    response = JsonResponse({"detail": errors}, status=422)
    response["request-id"] = exc.request_id or request_id
    return response


def _echoable(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return len(value) <= 200
    return value is None or isinstance(value, bool | int)


# --- Speech -----------------------------------------------------------------------------


def alignment_json(alignment) -> dict | None:
    if alignment is None:
        return None
    return {
        "characters": list(alignment.characters),
        "character_start_times_seconds": list(alignment.character_start_times_seconds),
        "character_end_times_seconds": list(alignment.character_end_times_seconds),
    }


def timestamps_json(audio: bytes, alignment, normalized_alignment) -> dict:
    """``AudioWithTimestampsResponseModel`` (and each streamed chunk's shape)."""
    return {
        "audio_base64": base64.b64encode(audio).decode("ascii"),
        "alignment": alignment_json(alignment),
        "normalized_alignment": alignment_json(normalized_alignment),
    }


def timestamps_line(chunk) -> bytes:
    """One line of ``/stream/with-timestamps``: a JSON object and a newline."""
    body = timestamps_json(chunk.audio, chunk.alignment, chunk.normalized_alignment)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def audio_bytes(chunk) -> bytes:
    return chunk.audio


# --- Voices -----------------------------------------------------------------------------

VOICE_CATEGORIES = ("generated", "cloned", "premade", "professional", "famous", "high_quality")


def settings_json(settings) -> dict | None:
    if settings is None:
        return None
    return {
        "stability": settings.stability,
        "similarity_boost": settings.similarity_boost,
        "style": settings.style,
        "use_speaker_boost": settings.use_speaker_boost,
        "speed": settings.speed,
    }


def voice_json(voice) -> dict:
    """``VoiceResponseModel``: the engine's voice, with ElevenLabs' account-level fields."""
    category = voice.category if voice.category in VOICE_CATEGORIES else "generated"
    return {
        "voice_id": voice.voice_id,
        "name": voice.name,
        "samples": None,
        "category": category,
        "fine_tuning": None,
        "labels": {str(k): str(v) for k, v in (voice.labels or {}).items()},
        "description": voice.description,
        "preview_url": voice.preview_url,
        "available_for_tiers": [],
        "settings": settings_json(voice.settings),
        "sharing": None,
        "high_quality_base_model_ids": [],
        "verified_languages": [],
        "collection_ids": [],
        "safety_control": None,
        "voice_verification": {
            "requires_verification": False,
            "is_verified": False,
            "verification_failures": [],
            "verification_attempts_count": 0,
            "language": None,
            "verification_attempts": None,
        },
        "permission_on_resource": None,
        "is_owner": category != "premade",
        "is_legacy": False,
        "is_mixed": False,
        "favorited_at_unix": None,
        "created_at_unix": voice.created_at_unix,
        "is_bookmarked": False,
        "recording_quality": None,
        "labelling_status": None,
        "recording_quality_reason": None,
    }


def voices_json(voices) -> dict:
    """``GetVoicesResponseModel`` (``GET /v1/voices``)."""
    return {"voices": [voice_json(v) for v in voices]}


def voices_page_json(page) -> dict:
    """``GetVoicesV2ResponseModel`` (``GET /v2/voices``)."""
    return {
        "voices": [voice_json(v) for v in page.voices],
        "has_more": page.has_more,
        "total_count": page.total_count,
        "next_page_token": page.next_page_token,
    }


# --- Models -----------------------------------------------------------------------------


def model_json(model, credits_per_character: Decimal) -> dict:
    """``ModelResponseModel``; ``model_rates`` carries what Chorus charges per character."""
    return {
        "model_id": model.model_id,
        "name": model.name,
        "can_be_finetuned": False,
        "can_do_text_to_speech": model.can_do_text_to_speech,
        "can_do_voice_conversion": model.can_do_voice_conversion,
        "can_use_style": model.can_use_style,
        "can_use_speaker_boost": model.can_use_speaker_boost,
        "serves_pro_voices": False,
        "token_cost_factor": float(model.token_cost_factor),
        "description": model.description,
        "requires_alpha_access": False,
        "max_characters_request_free_user": model.maximum_text_length_per_request,
        "max_characters_request_subscribed_user": model.maximum_text_length_per_request,
        "maximum_text_length_per_request": model.maximum_text_length_per_request,
        "languages": [
            {"language_id": lang.get("language_id", ""), "name": lang.get("name", "")}
            for lang in model.languages
        ],
        "model_rates": {
            "character_cost_multiplier": float(credits_per_character),
            "cost_discount_multiplier": 1.0,
        },
        "concurrency_group": f"standard_{model.model_id}",
    }


# --- The account --------------------------------------------------------------------------

CURRENCIES = ("usd", "eur", "inr", "pln")
VOICE_LIMIT = 10_000  # Chorus limits no voices; clients that check the slots keep going


def subscription_json(account: KeyAccount, *, extended: bool = False) -> dict:
    """``SubscriptionResponseModel`` (``ExtendedSubscriptionResponseModel`` when extended).

    The counts are the key's member's credits (see ``services.api_account``); the voice
    and invoice fields have no Chorus meaning and carry neutral values (no invoices, no
    professional voice slots, instant cloning available, no limit on voices).
    """
    currency = account.currency if account.currency in CURRENCIES else "usd"
    body = {
        "tier": account.tier,
        "character_count": account.credits_used,
        "character_limit": account.credit_limit,
        "max_character_limit_extension": 0,
        "max_credit_limit_extension": 0,
        "can_extend_character_limit": False,
        "allowed_to_extend_character_limit": False,
        "next_character_count_reset_unix": account.next_reset_unix,
        "voice_slots_used": 0,
        "professional_voice_slots_used": 0,
        "professional_voice_slots_used_in_workspace": 0,
        "voice_limit": VOICE_LIMIT,
        "max_voice_add_edits": None,
        "voice_add_edit_counter": 0,
        "professional_voice_limit": 0,
        "can_extend_voice_limit": False,
        "can_use_instant_voice_cloning": True,
        "can_use_professional_voice_cloning": False,
        "currency": currency,
        "current_overage": {"amount": "0", "currency": currency},
        "status": "active",
        "billing_period": "monthly_period",
        "character_refresh_period": "monthly_period",
    }
    if extended:
        body.update(
            next_invoice=None,
            open_invoices=[],
            has_open_invoices=False,
            pending_change=None,
            has_used_starter_coupon_on_account=False,
            has_used_creator_coupon_on_account=False,
        )
    return body


def user_json(account: KeyAccount) -> dict:
    """``UserResponseModel`` for the key's member."""
    key = account.api_key
    user = key.user
    role = key.membership.role
    admin = role in (Role.OWNER, Role.MANAGER)
    return {
        "user_id": str(user.pk),
        "subscription": subscription_json(account),
        "is_new_user": False,
        "can_use_delayed_payment_methods": False,
        "is_onboarding_completed": True,
        "is_onboarding_checklist_completed": True,
        "show_compliance_terms": False,
        "first_name": (user.name.split() or [user.display_name])[0],
        "is_api_key_hashed": True,
        "xi_api_key_preview": f"{key.prefix}…",
        "referral_link_code": None,
        "partnerstack_partner_default_link": None,
        "created_at": int(user.date_joined.timestamp()),
        "seat_type": "workspace_admin" if admin else "workspace_member",
    }
