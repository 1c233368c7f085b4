"""Personal API keys: how members' own scripts and SDKs reach Chorus's ``/v1`` API."""

import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone

# Capability scopes a key can be limited to (empty list: every scope).
SCOPES = {
    "tts": "Text to speech",
    "stt": "Speech to text",
    "voices": "Voices (list, read, create, delete)",
    "voice_design": "Voice design",
    "sound": "Sound effects",
    "music": "Music",
    "dubbing": "Dubbing",
    "history": "History",
    "account": "Models, user and subscription",
}


class ApiKey(models.Model):
    """A member's key for one workspace. Only its SHA-256 is stored; the key is shown once."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="api_keys"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)  # shown in lists to tell keys apart
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list, blank=True)
    monthly_cap = models.DecimalField(max_digits=16, decimal_places=3, null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (
            self.expires_at is None or self.expires_at > timezone.now()
        )

    def allows(self, scope: str) -> bool:
        return not self.scopes or scope in self.scopes
