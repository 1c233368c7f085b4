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
LABEL_NAMES = [(label, label.replace("_", " ").capitalize()) for label in LABELS]  # for forms


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
    # A voice saved from Voice Design keeps its recipe: the design and which preview it was.
    design = models.ForeignKey(
        "VoiceDesign", null=True, blank=True, on_delete=models.SET_NULL, related_name="voices"
    )
    design_preview = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "engine", "voice_id"], name="library_voice_unique_id"
            )
        ]
        # What the library page asks for (services.library_voices). The default view, voices in
        # use by name: its count and its pages (deep ones too: a page's ids are found first)
        # read this index alone. The other sorts in full, pk tie-break included. The labels
        # without case (UPPER(label) = UPPER(value)). The search's exact voice id. The
        # "recently used" sort (NULLS LAST) and the search's trigram indexes are PostgreSQL's
        # only: see migration 0003.
        indexes = [
            models.Index(
                fields=["workspace", "name", "id"],
                condition=models.Q(withdrawn_at__isnull=True),
                name="library_voice_live_by_name",
            ),
            models.Index(fields=["workspace", "-created_at", "-id"], name="library_voice_newest"),
            models.Index(
                fields=["workspace", "-use_count", "name", "id"], name="library_voice_most_used"
            ),
            *(
                models.Index(
                    "workspace", models.functions.Upper(label), name=f"library_voice_{label}_ci"
                )
                for label in LABELS
            ),
            models.Index(fields=["voice_id"], name="library_voice_voice_id"),
        ]

    def __str__(self):
        return f"{self.name} ({self.engine})"

    @property
    def withdrawn(self) -> bool:
        return self.withdrawn_at is not None

    @property
    def design_letter(self) -> str:
        """The preview (A, B, C…) of its design it was saved from."""
        if self.design_preview is None:
            return ""
        return (
            "ABCDEFGH"[self.design_preview]
            if self.design_preview < 8
            else str(self.design_preview + 1)
        )


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


class LibrarySync(models.Model):
    """When the library was last brought in step with the workspace's engine, and with which.

    ``config`` is a fingerprint of the engine settings the last sync read (engine, base URL,
    stored key: hashed, never the key): when the settings change, the library is stale until
    the next sync. ``requested_config`` is the configuration a sync was last started for on
    its own (workspace set-up, engine change), so one change starts one sync.
    """

    workspace = models.OneToOneField(
        "workspaces.Workspace", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    engine = models.CharField(max_length=20, blank=True)
    config = models.CharField(max_length=64, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    requested_config = models.CharField(max_length=64, blank=True)
    requested_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"library sync of workspace {self.workspace_id}"


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


class VoiceDesign(models.Model):
    """One Voice Design generation, kept as a team asset: the recipe and its previews.

    ``request`` is exactly what was sent to the engine (``DesignRequest`` as a dict), with
    the seed it used; the recipe columns repeat it for search and display. ``previews`` lists
    each preview (A, B, C) with its ``generated_voice_id``, the history item that holds its
    audio, and the audio's SHA-256, which is how Reproduce tells identical audio apart.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="voice_designs"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Chosen before the engine is called: the ledger row names it as what the call was for.
    uid = models.CharField(max_length=32, unique=True)
    engine = models.CharField(max_length=20)
    description = models.TextField()
    text = models.TextField()  # the preview text spoken (typed, or generated by the engine)
    auto_generate_text = models.BooleanField(default=False)
    model_id = models.CharField(max_length=80)
    guidance_scale = models.FloatField()
    loudness = models.FloatField()
    seed = models.BigIntegerField()
    seed_was_random = models.BooleanField(default=False)
    request = models.JSONField()
    previews = models.JSONField(default=list)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="remixes"
    )
    reproduces = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reproductions"
    )
    identical = models.BooleanField(null=True, blank=True)  # a reproduction: same audio?
    request_id = models.CharField(max_length=64, blank=True)
    credits = models.DecimalField(max_digits=16, decimal_places=3, default=0)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["workspace", "-created_at"])]

    def __str__(self):
        return f"design {self.pk}: {self.description[:40]}"


class DesignVote(models.Model):
    """A blind vote on a design's previews: shuffled per voter, names hidden until closed."""

    design = models.ForeignKey(VoiceDesign, on_delete=models.CASCADE, related_name="votes")
    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="+"
    )
    question = models.CharField(max_length=200)
    secret = models.CharField(max_length=32)  # seeds each voter's order; never rendered
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    opened_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at", "-pk"]

    def __str__(self):
        return self.question

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class DesignBallot(models.Model):
    vote = models.ForeignKey(DesignVote, on_delete=models.CASCADE, related_name="ballots")
    voter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    preview = models.PositiveSmallIntegerField()  # the preview's index in the design
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["vote", "voter"], name="design_ballot_once")]

    def __str__(self):
        return f"{self.voter_id} → {self.preview}"


class ConsentUse(models.TextChoices):
    INTERNAL = "internal", "Internal drafts and review"
    NARRATION = "narration", "Narration and audiobooks"
    ADVERTISING = "advertising", "Advertising"
    AGENTS = "agents", "Voice agents"
    DUBBING = "dubbing", "Dubbing and translation"


class VoiceConsent(models.Model):
    """The consent record of a cloned voice: whose voice it is, what they agreed to, until when.

    A clone whose consent has expired cannot be used for generation (``consent_check``).
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="voice_consents"
    )
    uid = models.CharField(max_length=32, unique=True)  # the clone's ledger purpose
    engine = models.CharField(max_length=20)
    voice_id = models.CharField(max_length=120)
    library_voice = models.ForeignKey(
        LibraryVoice, null=True, blank=True, on_delete=models.SET_NULL, related_name="consents"
    )
    speaker_name = models.CharField(max_length=200)
    statement = models.TextField()
    allowed_uses = models.JSONField(default=list)
    expires_at = models.DateTimeField()
    recording = models.FileField(upload_to="consent/%Y/%m/", blank=True)
    samples = models.JSONField(default=list)  # [{"filename", "bytes", "seconds"}]
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "engine", "voice_id"], name="voice_consent_once"
            )
        ]

    def __str__(self):
        return f"consent of {self.speaker_name} for {self.voice_id}"

    @property
    def allowed_use_labels(self) -> list[str]:
        labels = dict(ConsentUse.choices)
        return [labels.get(use, use) for use in self.allowed_uses or []]

    @property
    def expired(self) -> bool:
        from django.utils import timezone

        return self.expires_at <= timezone.now()


# --- Voices made through the core, and the settings stored per voice -------------------


class ApiVoice(models.Model):
    """A voice made through the core (an instant clone, a saved design) in one workspace.

    The local engine keeps no voices of its own: ``recipe`` is what it needs to speak this
    one and travels with every request for it. On the ElevenLabs engine the voice lives
    upstream (``recipe`` stays empty) and this row records who made it.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="api_voices"
    )
    voice_id = models.CharField(max_length=120)
    engine = models.CharField(max_length=20)
    name = models.CharField(max_length=200)
    category = models.CharField(max_length=20)  # cloned | generated
    description = models.TextField(blank=True)
    labels = models.JSONField(default=dict, blank=True)
    recipe = models.JSONField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "voice_id"], name="api_voice_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.voice_id})"


class VoiceSettingsRecord(models.Model):
    """A workspace's stored settings for one voice: what TTS uses when a call sends none."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="voice_settings"
    )
    voice_id = models.CharField(max_length=120)
    stability = models.FloatField(default=0.5)
    similarity_boost = models.FloatField(default=0.75)
    style = models.FloatField(default=0.0)
    use_speaker_boost = models.BooleanField(default=True)
    speed = models.FloatField(default=1.0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "voice_id"], name="voice_settings_record_unique"
            )
        ]

    def __str__(self) -> str:
        return f"settings of {self.voice_id}"
