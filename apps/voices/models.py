"""The team's voice library: every voice the workspace can use, and how the team curates it.

``LibraryVoice`` is one voice of one engine in one workspace: the engine's own voices (kept in
step by the sync job), voices designed and voices cloned. Its labels are columns so that the
library filters on them with indexes; ``labels`` keeps every label the engine gave, as given.
Tags and collections are team-wide; favourites are per member; notes have an author.
"""

from django.conf import settings
from django.db import models


class VoiceSource(models.TextChoices):
    ENGINE = "engine", "Engine"
    DESIGNED = "designed", "Designed"
    CLONED = "cloned", "Cloned"


class VoiceCategory(models.TextChoices):
    PREMADE = "premade", "Premade"
    CLONED = "cloned", "Cloned"
    GENERATED = "generated", "Generated"
    PROFESSIONAL = "professional", "Professional"


class Approval(models.TextChoices):
    NONE = "none", "Not proposed"
    PROPOSED = "proposed", "Proposed"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


# The labels the library filters on, as ElevenLabs names them.
LABELS = ("gender", "age", "accent", "language", "use_case", "descriptive")


class Tag(models.Model):
    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="voice_tags"
    )
    name = models.CharField(max_length=50)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="voice_tag_unique_name")
        ]

    def __str__(self):
        return self.name


class Collection(models.Model):
    """A named set of voices, such as "Audiobook narrators"."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="voice_collections"
    )
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "name"], name="voice_collection_unique_name"
            )
        ]

    def __str__(self):
        return self.name


class LibraryVoice(models.Model):
    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="library_voices"
    )
    engine = models.CharField(max_length=20)
    voice_id = models.CharField(max_length=100)
    name = models.CharField(max_length=200)
    category = models.CharField(
        max_length=20, choices=VoiceCategory.choices, default=VoiceCategory.PREMADE
    )
    source = models.CharField(max_length=10, choices=VoiceSource.choices, default="engine")
    gender = models.CharField(max_length=40, blank=True)
    age = models.CharField(max_length=40, blank=True)
    accent = models.CharField(max_length=60, blank=True)
    language = models.CharField(max_length=40, blank=True)
    use_case = models.CharField(max_length=60, blank=True)
    descriptive = models.CharField(max_length=60, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)
    preview_url = models.CharField(max_length=500, blank=True)
    approval = models.CharField(max_length=10, choices=Approval.choices, default=Approval.NONE)
    approval_reason = models.CharField(max_length=500, blank=True)
    approval_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approval_at = models.DateTimeField(null=True, blank=True)
    # Set when a sync no longer finds the voice upstream: kept, flagged, never deleted.
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    use_count = models.PositiveIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="voices")
    collections = models.ManyToManyField(Collection, blank=True, related_name="voices")

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "engine", "voice_id"], name="library_voice_unique_id"
            )
        ]
        indexes = [
            models.Index(fields=["workspace", "name"]),
            models.Index(fields=["workspace", "-created_at"]),
            models.Index(fields=["workspace", "-use_count"]),
            models.Index(fields=["workspace", "-last_used_at"]),
        ]

    def __str__(self):
        return f"{self.name} ({self.engine})"

    @property
    def withdrawn(self) -> bool:
        return self.withdrawn_at is not None


class LibraryFacets(models.Model):
    """The values the library's filter menus offer (each label, category, engine), stored.

    Working them out reads every voice (tens of milliseconds at 10,000); the library page reads
    this row instead. A sync rewrites it; saving or deleting a voice drops it, and the next page
    view rebuilds it (see ``services.library_facets``).
    """

    workspace = models.OneToOneField(
        "workspaces.Workspace", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    values = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"facets of workspace {self.workspace_id}"


class Favourite(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="favourite_voices"
    )
    voice = models.ForeignKey(LibraryVoice, on_delete=models.CASCADE, related_name="favourites")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "voice"], name="voice_favourite_once")
        ]

    def __str__(self):
        return f"{self.user_id} ★ {self.voice_id}"


class VoiceNote(models.Model):
    voice = models.ForeignKey(LibraryVoice, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return self.text[:60]


class VoiceChange(models.Model):
    """One line of a voice's change history: proposals, reviews, tags, collections, notes."""

    voice = models.ForeignKey(LibraryVoice, on_delete=models.CASCADE, related_name="changes")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=40)
    detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"{self.action}: {self.detail}"[:80]
