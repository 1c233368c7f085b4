"""Every generated audio, kept with its file, its recipe and its ledger row."""

import secrets

from django.conf import settings
from django.db import models


def new_history_id() -> str:
    # ElevenLabs history item ids are 20 URL-safe characters; ours look the same.
    return secrets.token_urlsafe(15)[:20]


def _upload_to(generation, filename: str) -> str:
    return f"generations/{generation.workspace_id}/{generation.history_item_id}/{filename}"


class GenerationKind(models.TextChoices):
    TTS = "tts", "Speech"
    SOUND = "sound", "Sound effect"
    MUSIC = "music", "Music"
    DESIGN_PREVIEW = "design_preview", "Voice design preview"
    DUB = "dub", "Dub"


class Generation(models.Model):
    """One generated audio file: what was asked (``recipe``), what came out, what it cost.

    ``recipe`` holds every request parameter (text, model, voice settings, seed, format…)
    so the clip can be reproduced; ``usage_event`` is its ledger row (none for a replay).
    ``source`` is where the request came from (ui, api, job), like the ledger's.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="generations"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    history_item_id = models.CharField(max_length=32, unique=True, default=new_history_id)
    kind = models.CharField(max_length=20, choices=GenerationKind.choices, db_index=True)
    source = models.CharField(max_length=8, default="ui")
    api_key_id = models.BigIntegerField(null=True, blank=True)
    engine = models.CharField(max_length=20)
    model_id = models.CharField(max_length=80, blank=True)
    voice_id = models.CharField(max_length=80, blank=True)
    voice_name = models.CharField(max_length=200, blank=True)
    text = models.TextField(blank=True)  # the text spoken, or the prompt
    recipe = models.JSONField(default=dict, blank=True)
    file = models.FileField(upload_to=_upload_to, max_length=300)
    content_type = models.CharField(max_length=60)
    size_bytes = models.PositiveBigIntegerField(default=0)
    duration_seconds = models.FloatField(null=True, blank=True)
    complete = models.BooleanField(default=True)  # False: a stream cut off before its end
    usage_event = models.ForeignKey(
        "billing.UsageEvent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="generations",
    )
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["workspace", "-created_at", "-id"]),
            models.Index(fields=["workspace", "user", "-created_at"]),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.history_item_id}"
