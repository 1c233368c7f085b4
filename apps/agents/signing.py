"""Conversation signatures: the expiring token of a signed URL for ``/v1/convai/conversation``.

``GET /v1/convai/conversation/get-signed-url`` is called with a personal key; the WebSocket it
hands back is opened without one (the official SDK sends no ``xi-api-key`` there), so the URL
carries a token that says who may talk to which agent: Django's ``TimestampSigner`` (salt
``chorus.convai``, the site's ``SECRET_KEY``) over the agent id, the workspace, the key's
member and the key, and the conversation when one was made with the URL. A token is good for
``SIGNATURE_MAX_AGE`` seconds; one that was altered, made with another salt or key, or is
older reads as None.
"""

from __future__ import annotations

import secrets
import zlib

from django.core import signing

SALT = "chorus.convai"
SIGNATURE_MAX_AGE = 15 * 60  # seconds, as the provider's signed URLs last
# Parts joined by "." instead of ":": the token goes into a URL as it is, unescaped.
SEP = "."

# Short keys keep the URL short; ``convai_signature_read`` gives the long names back.
_FIELDS = {
    "a": "agent_id",
    "w": "workspace_id",
    "u": "user_id",
    "k": "api_key_id",
    "c": "conversation_id",
}


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT, sep=SEP)


def convai_signature_make(
    *,
    agent_id: str,
    workspace_id: int,
    user_id: int,
    api_key_id: int | None,
    conversation_id: str | None = None,
) -> str:
    """A URL-safe token for a conversation with ``agent_id``, for ``SIGNATURE_MAX_AGE`` s."""
    # A nonce: two URLs asked for in the same second are two tokens (each good once).
    payload = {"a": agent_id, "w": workspace_id, "u": user_id, "k": api_key_id,
               "n": secrets.token_urlsafe(8)}  # fmt: skip
    if conversation_id:
        payload["c"] = conversation_id
    return _signer().sign_object(payload, compress=False)


def convai_signature_read(token: str | None, *, max_age: float = SIGNATURE_MAX_AGE) -> dict | None:
    """What ``token`` carries (``agent_id``, ``workspace_id``, ``user_id``, ``api_key_id``,
    ``conversation_id`` (None when none was made)), or None when it is not a token this
    site signed, was altered, or is older than ``max_age`` seconds.

    The caller still checks that the agent exists in that workspace and that the member is
    still a member (and the key still active): a token outlives neither.
    """
    if not token or not isinstance(token, str):
        return None
    try:
        payload = _signer().unsign_object(token, max_age=max_age)
    except (signing.BadSignature, ValueError, TypeError, zlib.error):
        # BadSignature covers SignatureExpired; the others: a signed value that is not
        # compressed JSON (only a holder of SECRET_KEY could sign one).
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("a"), str):
        return None
    return {name: payload.get(short) for short, name in _FIELDS.items()}
