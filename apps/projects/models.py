"""Projects: narration projects (chapters, blocks, takes, renders, cues, exports), pronunciation
dictionaries, and dubbing jobs with their outputs."""

import secrets

from django.conf import settings
from django.db import models

from apps.jobs.models import JobStatus


def _dubbing_id() -> str:
    # ElevenLabs dubbing ids are 20 URL-safe characters; ours look the same.
    return secrets.token_urlsafe(15)[:20]


def _source_upload_to(dubbing, filename: str) -> str:
    return f"dubbing/{dubbing.workspace_id}/{dubbing.dubbing_id}/source-{filename}"


class DubbingStatus(models.TextChoices):
    """What ``/v1/dubbing`` reports (the job row holds the finer detail)."""

    DUBBING = "dubbing", "Dubbing"
    DUBBED = "dubbed", "Dubbed"
    FAILED = "failed", "Failed"


class Dubbing(models.Model):
    """One dub: the uploaded media, what it was dubbed into, and the outputs kept for good.

    The work runs as a ``jobs.Job`` (``job``); its state is the job's, read through
    ``status``. Once dubbed, the audio is a ``history.Generation`` of kind ``dub``
    (``generation``) and the transcripts live here, so they outlive the engine's memory
    (the local engine keeps dubs only in its process). ``engine_dubbing_id`` is the
    engine's own id, so a retried job resumes a dub the engine still has instead of paying
    for a second one. ``history_item_id`` is chosen up front: the audio is stored under it.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="dubbings"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=8, default="api")  # ui | api, like the ledger's
    api_key_id = models.BigIntegerField(null=True, blank=True)
    dubbing_id = models.CharField(max_length=32, unique=True, default=_dubbing_id)
    name = models.CharField(max_length=200)
    source_lang = models.CharField(max_length=16, default="auto")  # as asked
    source_language = models.CharField(max_length=16, blank=True)  # as found, once dubbed
    target_lang = models.CharField(max_length=16)
    num_speakers = models.PositiveSmallIntegerField(default=0)  # 0: detect
    source_file = models.FileField(upload_to=_source_upload_to, max_length=300)
    source_filename = models.CharField(max_length=255, blank=True)
    source_content_type = models.CharField(max_length=100, blank=True)
    source_duration_seconds = models.FloatField(default=0)
    engine = models.CharField(max_length=20)
    engine_dubbing_id = models.CharField(max_length=120, blank=True)
    history_item_id = models.CharField(max_length=32)
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    generation = models.ForeignKey(
        "history.Generation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    transcript_srt = models.TextField(blank=True)
    transcript_webvtt = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    dubbed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-created_at", "-id"])]

    def __str__(self) -> str:
        return f"Dub {self.dubbing_id} ({self.name})"

    @property
    def status(self) -> str:
        if self.dubbed_at is not None:
            return DubbingStatus.DUBBED
        if self.job is None or self.job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            return DubbingStatus.FAILED
        return DubbingStatus.DUBBING

    @property
    def error(self) -> str | None:
        if self.status != DubbingStatus.FAILED:
            return None
        if self.job is None:
            return "The job of this dub is gone; start the dub again."
        return self.job.error or f"The dub was {self.job.get_status_display().lower()}."


# --- Narration projects ----------------------------------------------------------------------


def _public_id() -> str:
    # ElevenLabs project, chapter and snapshot ids are 20 URL-safe characters; ours look alike.
    return secrets.token_urlsafe(15)[:20]


class Project(models.Model):
    """A script becoming narration: chapters of blocks, each block rendered as takes.

    The voice of a block is its own, else its speaker's, else its chapter's, else the
    project's default. ``public_id`` is the id ``/v1/studio/projects`` shows.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="projects"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    public_id = models.CharField(max_length=32, unique=True, default=_public_id)
    name = models.CharField(max_length=200)
    author = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    language = models.CharField(max_length=16, blank=True)
    default_voice_id = models.CharField(max_length=80)
    default_model_id = models.CharField(max_length=80, default="eleven_multilingual_v2")
    source = models.CharField(max_length=8, default="ui")  # ui | api: where it was created
    source_filename = models.CharField(max_length=255, blank=True)
    dictionaries = models.ManyToManyField(
        "PronunciationDictionary", blank=True, related_name="projects"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-updated_at", "-id"])]

    def __str__(self) -> str:
        return self.name


class Speaker(models.Model):
    """A named role of a project ("Narrator", "Alice") that blocks point to: one change of
    its voice re-voices the role everywhere."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="+"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="speakers")
    name = models.CharField(max_length=100)
    voice_id = models.CharField(max_length=80)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="speaker_name_unique")
        ]

    def __str__(self) -> str:
        return self.name


class Chapter(models.Model):
    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="+"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="chapters")
    public_id = models.CharField(max_length=32, unique=True, default=_public_id)
    name = models.CharField(max_length=200)
    position = models.PositiveIntegerField(default=0)
    voice_id = models.CharField(max_length=80, blank=True)  # blank: the project's default
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name


class Block(models.Model):
    """A paragraph of a chapter, rendered as takes; ``chosen`` is the take that is heard.

    The block is *stale* when what a render would send (text, voice, model, settings, seed,
    pronunciation) differs from what its chosen take was made from (``Take.signature``).
    A ``locked`` block is never rendered again.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="+"
    )
    chapter = models.ForeignKey(Chapter, on_delete=models.CASCADE, related_name="blocks")
    public_id = models.CharField(max_length=32, unique=True, default=_public_id)
    position = models.PositiveIntegerField(default=0)
    text = models.TextField()
    voice_id = models.CharField(max_length=80, blank=True)  # blank: speaker, chapter, project
    speaker = models.ForeignKey(
        Speaker, null=True, blank=True, on_delete=models.SET_NULL, related_name="blocks"
    )
    model_id = models.CharField(max_length=80, blank=True)  # blank: the project's
    voice_settings = models.JSONField(null=True, blank=True)  # only the fields set
    seed = models.PositiveIntegerField(null=True, blank=True)
    locked = models.BooleanField(default=False)
    chosen = models.ForeignKey(
        "Take", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]
        indexes = [models.Index(fields=["chapter", "position"])]

    def __str__(self) -> str:
        return self.text[:40]


class Take(models.Model):
    """One render of a block: a ``history.Generation`` (file, recipe, ledger row), draft
    (local engine, free) or final (the workspace's engine)."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="+"
    )
    block = models.ForeignKey(Block, on_delete=models.CASCADE, related_name="takes")
    # A clip deleted from History takes its take with it (the block then has no take).
    generation = models.ForeignKey(
        "history.Generation", on_delete=models.CASCADE, related_name="project_takes"
    )
    draft = models.BooleanField()
    signature = models.CharField(max_length=64)  # what it was made from (Block staleness)
    render = models.ForeignKey(
        "Render", null=True, blank=True, on_delete=models.SET_NULL, related_name="takes"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    credits = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["block", "-created_at"])]

    def __str__(self) -> str:
        return f"Take {self.pk} of block {self.block_id}"


class RenderScope(models.TextChoices):
    PROJECT = "project", "Project"
    CHAPTER = "chapter", "Chapter"
    BLOCK = "block", "Block"


class RenderState(models.TextChoices):
    WAITING = "waiting", "Waiting for approval"
    REFUSED = "refused", "Refused"
    QUEUED = "queued", "Queued"  # a job runs it (the job's state says more)


class Render(models.Model):
    """A request to render blocks (a block, a chapter or the project), draft or final.

    Its estimate is fixed when asked; above the workspace's approval threshold it waits for
    a manager (``WAITING``), who approves (a job starts) or refuses with a reason.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="+"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="renders")
    scope = models.CharField(max_length=8, choices=RenderScope.choices)
    scope_id = models.CharField(max_length=32)  # the chapter's or block's public id
    draft = models.BooleanField()
    block_ids = models.JSONField(default=list)  # Block pks, in order
    characters = models.PositiveIntegerField(default=0)
    credits_estimate = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=8, default="ui")
    api_key_id = models.BigIntegerField(null=True, blank=True)
    # The key's monthly cap when the render was asked for on /v1: its calls count against it.
    api_key_cap = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    state = models.CharField(max_length=8, choices=RenderState.choices)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    seen_at = models.DateTimeField(null=True, blank=True)  # the requester saw the decision
    # /v1 convert: once rendered, the project (or the chapter) is exported as a snapshot.
    snapshot = models.BooleanField(default=False)
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace", "state", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.get_scope_display()} render {self.pk}"


class ProjectSettings(models.Model):
    """A workspace's project rules: renders whose estimate is above ``approval_threshold``
    credits wait for a manager's approval (none: never)."""

    workspace = models.OneToOneField(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="project_settings"
    )
    approval_threshold = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)

    def __str__(self) -> str:
        return f"Project settings of workspace {self.workspace_id}"


class PronunciationDictionary(models.Model):
    """A team's pronunciation rules (alias and phoneme), versioned: every change of its rules
    makes a new ``version_id`` (``/v1`` locators name one)."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="pronunciation_dictionaries"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    public_id = models.CharField(max_length=32, unique=True, default=_public_id)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    language = models.CharField(max_length=16, blank=True)
    rules = models.JSONField(default=list)  # the official API's rule objects
    version_id = models.CharField(max_length=32, default=_public_id)
    version_rules_num = models.PositiveIntegerField(default=0)
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["workspace", "name"])]

    def __str__(self) -> str:
        return self.name


class PronunciationVersion(models.Model):
    """The rules of one version of a dictionary, kept so a locator of an older version (and
    its PLS download) still says what it said."""

    dictionary = models.ForeignKey(
        PronunciationDictionary, on_delete=models.CASCADE, related_name="versions"
    )
    version_id = models.CharField(max_length=32, unique=True)
    rules = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.version_id


class CueKind(models.TextChoices):
    SOUND = "sound", "Sound effect"
    MUSIC = "music", "Music"


class CuePlacementMode(models.TextChoices):
    AFTER = "after", "After the block"
    UNDER = "under", "Under the block"


class Cue(models.Model):
    """A sound effect or music made for a project (a job), placed after or under a block."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="+"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="cues")
    kind = models.CharField(max_length=8, choices=CueKind.choices)
    prompt = models.CharField(max_length=1000)
    duration_seconds = models.FloatField(null=True, blank=True)
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    generation = models.ForeignKey(
        "history.Generation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    block = models.ForeignKey(
        Block, null=True, blank=True, on_delete=models.SET_NULL, related_name="cues"
    )
    placement = models.CharField(
        max_length=8, choices=CuePlacementMode.choices, default=CuePlacementMode.AFTER
    )
    volume_db = models.FloatField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.prompt[:40]


def _export_upload_to(export, filename: str) -> str:
    return f"projects/{export.project.workspace_id}/{export.project.public_id}/{filename}"


class ExportFormat(models.TextChoices):
    MP3 = "mp3", "MP3"
    WAV = "wav", "WAV"
    M4B = "m4b", "M4B audiobook"
    ZIP = "zip", "ZIP of chapters (MP3)"


class Export(models.Model):
    """A chapter or the whole project as one file (a job): the chosen takes, the cues, the
    loudness profile, the compliance report per chapter and the recipe of every take used.

    ``public_id`` doubles as the snapshot id of ``/v1/studio/projects``: a converted project
    or chapter leaves an MP3 export, which the API lists as a snapshot.
    """

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="+"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="exports")
    chapter = models.ForeignKey(
        Chapter, null=True, blank=True, on_delete=models.CASCADE, related_name="exports"
    )
    public_id = models.CharField(max_length=32, unique=True, default=_public_id)
    name = models.CharField(max_length=200, blank=True)
    format = models.CharField(max_length=4, choices=ExportFormat.choices)
    profile = models.CharField(max_length=16, default="lufs16")
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    file = models.FileField(upload_to=_export_upload_to, max_length=300, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    duration_seconds = models.FloatField(null=True, blank=True)
    report = models.JSONField(default=dict, blank=True)  # chapters, marks, compliance, takes
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name or self.public_id
