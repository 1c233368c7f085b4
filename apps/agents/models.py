"""Voice agents: an agent is a team asset whose configuration is versioned (every edit keeps
the previous one, and each conversation records the version it ran); its knowledge is
documents split into chunks for retrieval; a conversation keeps both sides' audio and the
transcript with times and interruptions.

Ids look like ElevenLabs' (``agent_…``, ``conv_…``, knowledge documents 20 characters), so the
``/v1/convai`` paths and the official SDK take them as they are.
"""

import secrets

from django.conf import settings
from django.db import models

ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # lower-case Crockford base32, as theirs


def _id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(26))


def agent_id_new() -> str:
    return _id("agent_")


def conversation_id_new() -> str:
    return _id("conv_")


def document_id_new() -> str:
    return secrets.token_urlsafe(15)[:20]


def _document_upload_to(document, filename: str) -> str:
    return f"agents/{document.workspace_id}/knowledge/{document.document_id}/{filename}"


def _audio_upload_to(conversation, filename: str) -> str:
    folder = f"agents/{conversation.workspace_id}/conversations/{conversation.conversation_id}"
    return f"{folder}/{filename}"


class Agent(models.Model):
    """An agent of a workspace. What it says and how is in its current ``AgentVersion``
    (``version``); the row itself holds what does not change with an edit."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="agents"
    )
    agent_id = models.CharField(max_length=40, unique=True, default=agent_id_new)
    name = models.CharField(max_length=200)
    tags = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    version = models.ForeignKey(
        "agents.AgentVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # On the ElevenLabs engine: the provider's agent made from this one, and the version of
    # ours it was last brought up to date with (0: never).
    upstream_agent_id = models.CharField(max_length=64, blank=True)
    upstream_version = models.PositiveIntegerField(default=0)
    last_conversation_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["workspace", "name"])]

    def __str__(self) -> str:
        return self.name


class AgentVersion(models.Model):
    """One configuration of an agent, never changed once written (an edit writes the next).

    ``config`` (``agents.config.AgentConfig`` reads and checks it): system prompt, first
    message, voice, TTS model, language, LLM (and its temperature and token limit), the
    knowledge documents' ids, dynamic variables with their defaults, turn-taking (silence
    before the agent answers, whether the user may interrupt) and the maximum length."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    config = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=200, blank=True)  # what changed, as the editor said

    class Meta:
        ordering = ["agent", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "number"], name="agents_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.agent} v{self.number}"


class KnowledgeKind(models.TextChoices):
    TEXT = "text", "Text"
    FILE = "file", "File"


class KnowledgeDocument(models.Model):
    """A document an agent answers from: typed text or an uploaded TXT, Markdown, PDF or
    DOCX, its text extracted once and split into ``KnowledgeChunk`` rows for retrieval.
    Workspace-wide (several agents may use it), as the provider's knowledge base is."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="knowledge_documents"
    )
    document_id = models.CharField(max_length=40, unique=True, default=document_id_new)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=8, choices=KnowledgeKind.choices)
    file = models.FileField(upload_to=_document_upload_to, max_length=300, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    text = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # On the ElevenLabs engine: the provider's copy of this document (its text, uploaded when
    # an agent using it is made or updated there), and the base URL of the API that holds it.
    upstream_document_id = models.CharField(max_length=64, blank=True)
    upstream_base_url = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["workspace", "name"])]

    def __str__(self) -> str:
        return self.name


class KnowledgeChunk(models.Model):
    """A passage of a document (a few sentences), what retrieval ranks and the LLM reads."""

    document = models.ForeignKey(KnowledgeDocument, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    text = models.TextField()

    class Meta:
        ordering = ["document", "position"]
        constraints = [
            models.UniqueConstraint(fields=["document", "position"], name="agents_chunk_unique")
        ]

    def __str__(self) -> str:
        return f"{self.document} #{self.position}"


class ConversationStatus(models.TextChoices):
    """As ``/v1/convai/conversations`` reports them."""

    IN_PROGRESS = "in-progress", "In progress"
    PROCESSING = "processing", "Saving"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Conversation(models.Model):
    """One conversation with an agent: who talked, on which version, both sides' audio, the
    transcript (``ConversationTurn``), how long, why it ended, and what it cost (the ledger
    row ``usage_event_id``: STT seconds, TTS characters and LLM tokens as one call)."""

    workspace = models.ForeignKey(
        "workspaces.Workspace", on_delete=models.CASCADE, related_name="conversations"
    )
    conversation_id = models.CharField(max_length=40, unique=True, default=conversation_id_new)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )
    agent_name = models.CharField(max_length=200)  # kept when the agent is deleted
    version = models.ForeignKey(
        AgentVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    version_number = models.PositiveIntegerField(default=0)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=8, default="ui")  # ui | api, like the ledger's
    api_key_id = models.BigIntegerField(null=True, blank=True)
    engine = models.CharField(max_length=20)
    upstream_conversation_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=12, choices=ConversationStatus.choices, default=ConversationStatus.IN_PROGRESS
    )
    dynamic_variables = models.JSONField(default=dict, blank=True)
    overrides = models.JSONField(default=dict, blank=True)  # conversation_config_override
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)  # a reconnect's deadline
    duration_seconds = models.FloatField(default=0)
    end_reason = models.CharField(max_length=300, blank=True)
    user_audio = models.FileField(upload_to=_audio_upload_to, max_length=300, blank=True)
    agent_audio = models.FileField(upload_to=_audio_upload_to, max_length=300, blank=True)
    stt_seconds = models.FloatField(default=0)
    tts_characters = models.PositiveIntegerField(default=0)
    llm_tokens = models.PositiveIntegerField(default=0)
    usage_event_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["workspace", "-started_at"]),
            models.Index(fields=["agent", "-started_at"]),
        ]

    def __str__(self) -> str:
        return self.conversation_id


class TurnRole(models.TextChoices):
    USER = "user", "User"
    AGENT = "agent", "Agent"


class ConversationTurn(models.Model):
    """One message of the transcript: who, what, when (seconds from the conversation's
    start), and whether the user spoke over it (an agent turn cut short)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    position = models.PositiveIntegerField()
    role = models.CharField(max_length=8, choices=TurnRole.choices)
    text = models.TextField(blank=True)
    started_seconds = models.FloatField(default=0)
    ended_seconds = models.FloatField(default=0)
    interrupted = models.BooleanField(default=False)
    # Timings of an agent turn (ms): end of the user's speech → first audio, and its parts.
    latency_ms = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["conversation", "position"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "position"], name="agents_turn_unique")
        ]

    def __str__(self) -> str:
        return f"{self.conversation} #{self.position} {self.role}"
