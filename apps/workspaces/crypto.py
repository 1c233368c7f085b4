"""Encryption at rest for upstream secrets (the workspace's ElevenLabs key): Fernet.

The key comes from ``CHORUS_ENCRYPTION_KEY`` (a Fernet key) or, when that is unset, is derived
from ``SECRET_KEY`` — so rotating SECRET_KEY without setting CHORUS_ENCRYPTION_KEY makes stored
keys unreadable (owners then enter them again).
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with the current key."""


def _fernet() -> Fernet:
    key = settings.CHORUS_ENCRYPTION_KEY
    if not key:
        digest = hashlib.sha256(("chorus-secrets:" + settings.SECRET_KEY).encode()).digest()
        key = base64.urlsafe_b64encode(digest).decode()
    return Fernet(key)


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise SecretUnreadable(
            "The stored key cannot be decrypted (the encryption key changed). Enter it again."
        ) from exc
