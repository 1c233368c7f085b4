"""An agent's configuration: what one ``AgentVersion.config`` holds, checked, with its
defaults, and its two outside shapes.

- ``AgentConfig.from_dict`` / ``as_dict``: the stored form (flat, Chorus's names).
- ``AgentConfig.from_conversation_config`` / ``conversation_config``: the ``conversation_config``
  object of ``/v1/convai/agents`` (``agent.prompt.prompt``, ``tts.voice_id``, …), as the
  official OpenAPI spec names it; fields Chorus does not use are ignored on the way in.
- ``config_checked``: every field checked at once, ``AgentConfigError`` with a message per field
  (forms and the API show them all).

Turn-taking: ``silence_ms`` is how long the user must be quiet before the agent answers (the
local engine's end of turn; on ElevenLabs it sets ``turn.turn_eagerness``); ``interruptible``
whether the user may speak over the agent (``interruption`` in
``conversation.client_events``, as the provider's dashboard sets it).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace

PROMPT_MAX = 20_000
FIRST_MESSAGE_MAX = 2_000
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
VARIABLE_USE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
DEFAULT_TTS_MODEL = "eleven_flash_v2_5"
LOCAL_LLM = "chorus-local"  # the offline model (or the configured endpoint's default)
# The offline model's answer length when an agent keeps the default ``max_tokens``: SmolLM2-135M
# answers a question from knowledge in 12-32 tokens, then rambles ("No, no, no, ...") to the
# limit, which lengthens the history every later turn reads (measured on bench/agents.py's
# twenty questions: the same answers at 60 as at 160, the ramblings cut 2.7 times shorter).
OFFLINE_MAX_TOKENS = 60
CLIENT_EVENTS = [
    "audio",
    "user_transcript",
    "agent_response",
    "agent_response_correction",
    "interruption",
]


class AgentConfigError(ValueError):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


@dataclass(frozen=True)
class AgentConfig:
    prompt: str = "You are a helpful assistant. Answer in one or two short sentences."
    first_message: str = "Hello! How can I help you?"
    language: str = "en"
    voice_id: str = ""
    tts_model_id: str = DEFAULT_TTS_MODEL
    stability: float | None = None
    similarity_boost: float | None = None
    speed: float | None = None
    llm: str = LOCAL_LLM
    temperature: float = 0.3
    max_tokens: int = 160  # -1: the model's own limit
    knowledge: list[str] = field(default_factory=list)  # KnowledgeDocument.document_id
    dynamic_variables: dict[str, str] = field(default_factory=dict)  # name → default
    silence_ms: int = 700
    interruptible: bool = True
    max_duration_seconds: int = 600

    # --- The stored form --------------------------------------------------------------

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> AgentConfig:
        """A stored configuration (unknown keys ignored: an older Chorus wrote them)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def with_changes(self, **changes) -> AgentConfig:
        return replace(self, **changes)

    # --- Dynamic variables ------------------------------------------------------------

    def variables_used(self) -> list[str]:
        """The ``{{name}}`` placeholders of the prompt and the first message, in order."""
        seen: list[str] = []
        for text in (self.prompt, self.first_message):
            for name in VARIABLE_USE.findall(text):
                if name not in seen:
                    seen.append(name)
        return seen

    def filled(self, values: dict | None = None) -> tuple[str, str]:
        """The prompt and the first message with each ``{{name}}`` replaced by ``values``
        (a conversation's), else its default; unknown names are left as written."""
        merged = {**self.dynamic_variables, **{k: str(v) for k, v in (values or {}).items()}}

        def fill(text: str) -> str:
            return VARIABLE_USE.sub(lambda m: merged.get(m.group(1), m.group(0)), text)

        return fill(self.prompt), fill(self.first_message)

    # --- The API's shape (``conversation_config``) ------------------------------------

    def conversation_config(self) -> dict:
        tts = {
            "model_id": self.tts_model_id,
            "voice_id": self.voice_id,
            "agent_output_audio_format": "pcm_16000",
        }
        for name in ("stability", "similarity_boost", "speed"):
            if getattr(self, name) is not None:
                tts[name] = getattr(self, name)
        events = [e for e in CLIENT_EVENTS if self.interruptible or e != "interruption"]
        return {
            "asr": {"user_input_audio_format": "pcm_16000"},
            "turn": {
                "turn_eagerness": eagerness_of(self.silence_ms),
                "silence_before_answer_ms": self.silence_ms,
            },
            "tts": tts,
            "conversation": {
                "max_duration_seconds": self.max_duration_seconds,
                "client_events": events,
            },
            "agent": {
                "first_message": self.first_message,
                "language": self.language,
                "dynamic_variables": {"dynamic_variable_placeholders": self.dynamic_variables},
                "prompt": {
                    "prompt": self.prompt,
                    "llm": self.llm,
                    "temperature": self.temperature,
                    "max_tokens": self.max_tokens,
                    "knowledge_base": [
                        {"type": "file", "id": doc, "usage_mode": "auto"} for doc in self.knowledge
                    ],
                },
            },
        }

    @classmethod
    def from_conversation_config(cls, data: dict, base: AgentConfig | None = None) -> AgentConfig:
        """``base`` (the defaults) with what ``data`` sets; a PATCH passes the current one.
        Shapes that are wrong (a list for an object) are errors, not silently ignored."""
        base = base or cls()
        errors: dict[str, str] = {}

        def part(obj, key: str, where: str) -> dict:
            value = obj.get(key) if isinstance(obj, dict) else None
            if value is None:
                return {}
            if not isinstance(value, dict):
                errors[f"{where}.{key}" if where else key] = "must be an object"
                return {}
            return value

        if not isinstance(data, dict):
            raise AgentConfigError({"conversation_config": "must be an object"})
        agent = part(data, "agent", "")
        prompt = part(agent, "prompt", "agent")
        tts = part(data, "tts", "")
        turn = part(data, "turn", "")
        conversation = part(data, "conversation", "")
        variables = part(part(agent, "dynamic_variables", "agent"), "dynamic_variable_placeholders",
                         "agent.dynamic_variables")  # fmt: skip
        changes: dict = {}
        simple = (
            (prompt, "prompt", "prompt"),
            (prompt, "llm", "llm"),
            (prompt, "temperature", "temperature"),
            (prompt, "max_tokens", "max_tokens"),
            (agent, "first_message", "first_message"),
            (agent, "language", "language"),
            (tts, "voice_id", "voice_id"),
            (tts, "model_id", "tts_model_id"),
            (tts, "stability", "stability"),
            (tts, "similarity_boost", "similarity_boost"),
            (tts, "speed", "speed"),
            (turn, "silence_before_answer_ms", "silence_ms"),
            (conversation, "max_duration_seconds", "max_duration_seconds"),
        )
        for source, key, name in simple:
            if key in source and source[key] is not None:
                changes[name] = source[key]
        if "silence_ms" not in changes and turn.get("turn_eagerness") in EAGERNESS:
            changes["silence_ms"] = EAGERNESS[turn["turn_eagerness"]]
        if "client_events" in conversation:
            events = conversation["client_events"]
            if not isinstance(events, list):
                errors["conversation.client_events"] = "must be a list"
            else:
                changes["interruptible"] = "interruption" in events
        if "knowledge_base" in prompt:
            kb = prompt["knowledge_base"]
            if not isinstance(kb, list) or not all(isinstance(i, dict) and i.get("id") for i in kb):
                errors["agent.prompt.knowledge_base"] = "must be a list of {id, …} objects"
            else:
                changes["knowledge"] = [str(item["id"]) for item in kb]
        if variables:
            changes["dynamic_variables"] = variables
        if errors:
            raise AgentConfigError(errors)
        return replace(base, **changes)


EAGERNESS = {"eager": 400, "normal": 700, "patient": 1200}


def eagerness_of(silence_ms: int) -> str:
    if silence_ms <= 500:
        return "eager"
    return "patient" if silence_ms >= 1000 else "normal"


def _number(value, name: str, low: float, high: float, errors: dict, *, integer=False):
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors[name] = "must be a number"
        return None
    if integer and value != int(value):
        errors[name] = "must be a whole number"
        return None
    if not low <= value <= high:
        errors[name] = f"must be between {low:g} and {high:g}"
        return None
    return int(value) if integer else float(value)


def config_checked(
    config: AgentConfig, *, llms: list[str] | None = None, documents: set[str] | None = None
) -> AgentConfig:
    """``config`` with every field checked (``AgentConfigError`` names each bad one). ``llms``:
    the LLMs this Chorus offers (None: any name); ``documents``: the workspace's knowledge
    document ids (None: not checked). Voices are checked by the caller, who knows the
    workspace's library."""
    errors: dict[str, str] = {}
    text_fields = (
        ("prompt", PROMPT_MAX, True),
        ("first_message", FIRST_MESSAGE_MAX, False),
        ("voice_id", 120, False),
        ("tts_model_id", 80, True),
        ("llm", 120, True),
    )
    for name, most, required in text_fields:
        value = getattr(config, name)
        if not isinstance(value, str):
            errors[name] = "must be text"
        elif required and not value.strip():
            errors[name] = "must not be empty"
        elif len(value) > most:
            errors[name] = f"at most {most:,} characters ({len(value):,} given)"
        elif "\x00" in value:
            errors[name] = "must not contain NUL characters"
    if not isinstance(config.language, str) or not LANGUAGE.match(config.language):
        errors["language"] = "an ISO 639-1 code such as en, de or pt-BR"
    changes: dict = {}
    for name, low, high, integer in (
        ("temperature", 0, 2, False),
        ("max_tokens", -1, 4096, True),
        ("silence_ms", 200, 5000, True),
        ("max_duration_seconds", 10, 7200, True),
    ):
        checked = _number(getattr(config, name), name, low, high, errors, integer=integer)
        if checked is not None:
            changes[name] = checked
    if changes.get("max_tokens") == 0:
        errors["max_tokens"] = "-1 (the model's limit) or 1 to 4096"
    for name, low, high in (("stability", 0, 1), ("similarity_boost", 0, 1), ("speed", 0.7, 1.2)):
        value = getattr(config, name)
        if value is not None:
            checked = _number(value, name, low, high, errors)
            if checked is not None:
                changes[name] = checked
    if not isinstance(config.interruptible, bool):
        errors["interruptible"] = "must be true or false"
    if llms is not None and isinstance(config.llm, str) and config.llm not in llms:
        errors["llm"] = f"{config.llm!r} is not offered here; choose one of: {', '.join(llms)}"
    if not isinstance(config.knowledge, list) or not all(
        isinstance(d, str) for d in config.knowledge
    ):
        errors["knowledge"] = "must be a list of document ids"
    elif documents is not None:
        unknown = [d for d in config.knowledge if d not in documents]
        if unknown:
            errors["knowledge"] = f"no such document in this workspace: {', '.join(unknown[:5])}"
    variables = config.dynamic_variables
    if not isinstance(variables, dict):
        errors["dynamic_variables"] = "must be an object of name → default value"
    else:
        bad = [k for k in variables if not isinstance(k, str) or not VARIABLE_NAME.match(k)]
        if bad:
            errors["dynamic_variables"] = (
                f"names are letters, digits and _ (not starting with a digit): {bad[0]!r}"
            )
        elif len(variables) > 50:
            errors["dynamic_variables"] = "at most 50 variables"
        else:
            changes["dynamic_variables"] = {
                k: v if isinstance(v, str) else str(v) for k, v in variables.items()
            }
            if any(len(v) > 1000 for v in changes["dynamic_variables"].values()):
                errors["dynamic_variables"] = "a default value is at most 1,000 characters"
    if errors:
        raise AgentConfigError(errors)
    return replace(config, **changes)
