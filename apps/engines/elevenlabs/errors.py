"""Turns ElevenLabs error responses, in every body shape they come in, into typed engine errors.

ElevenLabs answers errors in four JSON shapes (API notes §13) and, from proxies, plain text
or HTML:

A. ``{"detail": {"type", "code", "message", "status", "request_id", "param"}}`` (current)
B. ``{"detail": {"status": "<code>", "message": "<text>"}}`` (legacy, still common)
C. ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`` (422 validation)
D. ``{"error": "<code>", "message": "<text>"}`` (dubbing, history)

The upstream message is kept in the raised error, because it is what tells people what to fix.

Status mapping:

- ``quota_exceeded`` in any code field, whatever the status (401, 429 or 400) → QuotaExceeded
- 401 → AuthenticationFailed; 402 → QuotaExceeded (the plan has to be paid or upgraded)
- 401 with ``missing_permissions`` → NotSupported: the key is valid but was created without a
  permission this call needs (ElevenLabs answers 401, not 403, for scoped keys); the message
  says so, with the upstream text naming the permission.
- 403 → NotSupported: ElevenLabs sends 403 when the *plan* or the API key's *permissions* do not
  allow a feature (``only_for_creator+``, ``missing_permissions``, dubbing
  ``permission_denied``). The key itself is valid, so this is not an authentication failure;
  the message says what the account cannot do.
- 429 → RateLimited; 408, 409 and 5xx → UpstreamUnavailable (after retries, see retry.py)
- any other 4xx (400, 404, 422, 425, ...) → InvalidRequest, with per-field messages where the
  body names fields (shape C's ``loc``, shape A's ``param``)
- 3xx → UpstreamUnavailable saying so: redirects are never followed (the engine may only
  reach the hosts its administrator allows), and a redirect's body is not shown
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from apps.engines.base import (
    AuthenticationFailed,
    EngineError,
    InvalidRequest,
    NotSupported,
    QuotaExceeded,
    RateLimited,
    UpstreamUnavailable,
)

QUOTA_CODES = frozenset({"quota_exceeded"})
# Codes that name a field although the body has no ``param``.
FIELD_FOR_CODE = {
    "voice_not_found": "voice_id",
    "max_character_limit_exceeded": "text",
    "invalid_output_format": "output_format",
}
MAX_TEXT_MESSAGE = 300


@dataclass
class UpstreamError:
    """What an error response said, whatever its body shape."""

    status: int
    message: str
    code: str | None = None  # the most specific code: legacy ``status``, else ``code``/``error``
    codes: frozenset[str] = frozenset()  # every code-like value in the body (type, code, status)
    fields: dict[str, list[str]] = field(default_factory=dict)
    request_id: str | None = None


def _generic_message(status: int, reason: str) -> str:
    return f"ElevenLabs answered HTTP {status}{' ' + reason if reason else ''}."


def parse_error(
    status: int, body: bytes | str, headers: Mapping[str, str] | None = None, reason: str = ""
) -> UpstreamError:
    """Read an error response body in shapes A, B, C, D or plain text."""
    headers = headers or {}
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    request_id = headers.get("request-id")
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None

    if isinstance(data, dict) and "detail" in data:
        detail = data["detail"]
        if isinstance(detail, dict):  # shapes A and B
            return _from_detail_object(status, detail, request_id, reason)
        if isinstance(detail, list):  # shape C
            return _from_validation_list(status, detail, request_id, reason)
        if isinstance(detail, str) and detail.strip():
            return UpstreamError(status, detail.strip(), request_id=request_id)
    if isinstance(data, dict) and "error" in data:  # shape D
        error = data["error"]
        if isinstance(error, dict):  # be lenient: {"error": {"code", "message"}}
            code = error.get("code") or error.get("type")
            message = error.get("message") or data.get("message")
        else:
            code, message = error, data.get("message")
        code = str(code) if code else None
        message = str(message or code or _generic_message(status, reason))
        return UpstreamError(
            status,
            message,
            code=code,
            codes=frozenset({code} if code else ()),
            fields=_fields_for_code(code, message),
            request_id=request_id,
        )
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return UpstreamError(status, data["message"], request_id=request_id)

    # Plain text from a proxy or load balancer; HTML pages are not worth showing to anyone.
    stripped = text.strip()
    if not stripped or stripped.startswith("<") or data is not None:
        return UpstreamError(status, _generic_message(status, reason), request_id=request_id)
    if len(stripped) > MAX_TEXT_MESSAGE:
        stripped = stripped[:MAX_TEXT_MESSAGE] + "…"
    return UpstreamError(status, stripped, request_id=request_id)


def _from_detail_object(status, detail, request_id, reason) -> UpstreamError:
    legacy = detail.get("status")
    code = detail.get("code")
    codes = frozenset(
        str(v) for v in (legacy, code, detail.get("type")) if isinstance(v, str) and v
    )
    primary = legacy if isinstance(legacy, str) and legacy else code
    primary = str(primary) if primary else None
    message = detail.get("message") or detail.get("msg") or primary
    message = str(message) if message else _generic_message(status, reason)
    param = detail.get("param")
    fields = {str(param): [message]} if param else _fields_for_code(primary, message)
    return UpstreamError(
        status,
        message,
        code=primary,
        codes=codes,
        fields=fields,
        request_id=detail.get("request_id") or request_id,
    )


def _from_validation_list(status, detail, request_id, reason) -> UpstreamError:
    fields: dict[str, list[str]] = {}
    for item in detail:
        if not isinstance(item, dict):
            continue
        loc = item.get("loc") or []
        name = str(loc[-1]) if isinstance(loc, list | tuple) and loc else "__all__"
        msg = str(item.get("msg") or item.get("message") or "is invalid")
        fields.setdefault(name, []).append(msg)
    if fields:
        message = "; ".join(f"{name}: {', '.join(msgs)}" for name, msgs in fields.items())
    else:
        message = _generic_message(status, reason)
    return UpstreamError(
        status,
        message,
        code="validation_error",
        codes=frozenset({"validation_error"}),
        fields=fields,
        request_id=request_id,
    )


def _fields_for_code(code: str | None, message: str) -> dict[str, list[str]]:
    name = FIELD_FOR_CODE.get(code or "")
    return {name: [message]} if name else {}


def is_quota(error: UpstreamError) -> bool:
    return bool(error.codes & QUOTA_CODES)


def to_engine_error(error: UpstreamError, *, retry_after: float | None = None) -> EngineError:
    """The typed engine error for an error response (see the module docstring)."""
    status, message = error.status, error.message
    common = {"request_id": error.request_id, "upstream_status": status}
    if 300 <= status < 400:
        return UpstreamUnavailable(
            f"The engine answered with a redirect (HTTP {status}), which Chorus does not "
            "follow. Check the engine's base URL under Settings → Engine.",
            **common,
        )
    if is_quota(error) or status == 402:
        return QuotaExceeded(message, **common)
    if status == 401 and "missing_permissions" in error.codes:
        return NotSupported(
            f"Your ElevenLabs API key lacks a permission this needs: {message}", **common
        )
    if status == 401:
        return AuthenticationFailed(message, **common)
    if status == 403:
        return NotSupported(
            f"Your ElevenLabs plan or API key does not allow this: {message}", **common
        )
    if status == 429:
        return RateLimited(message, retry_after=retry_after, **common)
    if status in (408, 409) or status >= 500:
        return UpstreamUnavailable(message, **common)
    if 400 <= status < 500:
        return InvalidRequest(message, fields=error.fields or {"__all__": [message]}, **common)
    return UpstreamUnavailable(message, **common)
