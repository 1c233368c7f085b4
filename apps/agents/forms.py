"""Forms of the agent pages: an agent's name and configuration (new and edit), and a knowledge
document (typed text or an uploaded file)."""

from django import forms

from apps.workspaces.forms import StudioForm
from studio_site.forms import language_choices

from . import knowledge
from .config import FIRST_MESSAGE_MAX, PROMPT_MAX, VARIABLE_NAME, AgentConfig
from .services import NAME_MAX

LLM_HELP = (
    "chorus-local is the offline model that runs on this Chorus server (or the model of the "
    "OpenAI-compatible endpoint the administrator configured). The others are the provider's "
    "names: on the ElevenLabs engine they run at ElevenLabs; on the local engine they run on "
    "the configured endpoint when it serves them, else the offline model answers."
)
VARIABLES_HELP = (
    "One per line, “name = default value”: {{name}} in the prompt or the first message is "
    "filled per conversation, with the default when the conversation gives none."
)


def _choices_with(choices: list[tuple[str, str]], current: str) -> list[tuple[str, str]]:
    """``choices`` with ``current`` too (a value kept from before, shown as it is)."""
    if current and all(value != current for value, _ in choices):
        return [*choices, (current, current)]
    return choices


def variables_text(variables: dict[str, str]) -> str:
    return "\n".join(f"{name} = {value}" for name, value in variables.items())


class AgentForm(StudioForm):
    """An agent's name and configuration; ``config(base)`` is the configuration it sets."""

    name = forms.CharField(label="Name", max_length=NAME_MAX)
    prompt = forms.CharField(
        label="System prompt",
        max_length=PROMPT_MAX,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text="Who the agent is and how it answers. Use {{name}} for a dynamic variable.",
    )
    first_message = forms.CharField(
        label="First message",
        required=False,
        max_length=FIRST_MESSAGE_MAX,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What the agent says when a conversation starts. Empty: it waits for the user.",
    )
    voice_id = forms.ChoiceField(
        label="Voice",
        error_messages={
            "required": "Choose the voice the agent speaks with.",
            "invalid_choice": "That voice is not in this workspace's library: pick one from the "
            "list.",
        },
    )
    tts_model_id = forms.ChoiceField(
        label="Speech model",
        error_messages={"invalid_choice": "Choose a model from the list."},
    )
    language = forms.ChoiceField(
        label="Language",
        error_messages={"invalid_choice": "Choose a language from the list."},
    )
    llm = forms.ChoiceField(
        label="LLM",
        help_text=LLM_HELP,
        error_messages={"invalid_choice": "Choose an LLM from the list."},
    )
    temperature = forms.FloatField(
        label="Temperature",
        min_value=0,
        max_value=2,
        widget=forms.NumberInput(attrs={"step": "0.1"}),
        help_text="0 answers the same way each time; higher varies more (0 to 2).",
    )
    max_tokens = forms.IntegerField(
        label="Maximum tokens per answer",
        min_value=-1,
        max_value=4096,
        help_text="-1: the model's own limit. Short answers keep a conversation quick.",
    )
    knowledge = forms.MultipleChoiceField(
        label="Knowledge",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The documents the agent answers from (the passages that match a question "
        "are given to the LLM).",
        error_messages={"invalid_choice": "%(value)s is not a document of this workspace."},
    )
    dynamic_variables = forms.CharField(
        label="Dynamic variables",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text=VARIABLES_HELP,
    )
    silence_ms = forms.IntegerField(
        label="Silence before the agent answers (ms)",
        min_value=200,
        max_value=5000,
        help_text="How long the user must be quiet before the agent takes its turn "
        "(200 to 5,000 ms; 700 is a natural pace).",
    )
    interruptible = forms.BooleanField(
        label="The user may interrupt the agent",
        required=False,
        help_text="When the user speaks over the agent, it stops and listens.",
    )
    max_duration_seconds = forms.IntegerField(
        label="Maximum conversation length (seconds)",
        min_value=10,
        max_value=7200,
        help_text="A conversation ends by itself after this long (10 to 7,200 seconds).",
    )
    note = forms.CharField(
        label="What changed",
        required=False,
        max_length=200,
        help_text="Optional; shown in the agent's version history.",
    )

    def __init__(self, *args, voices=(), models=(), llms=(), documents=(), current=None, **kw):
        super().__init__(*args, **kw)
        current = current or AgentConfig()
        self.voices = list(voices)
        self.fields["voice_id"].choices = _choices_with(
            [(v.voice_id, v.name) for v in self.voices], current.voice_id
        )
        self.fields["tts_model_id"].choices = _choices_with(
            [(m.model_id, m.name) for m in models], current.tts_model_id
        )
        self.fields["language"].choices = _choices_with(language_choices(), current.language)
        self.fields["llm"].choices = _choices_with([(m, m) for m in llms], current.llm)
        self.fields["knowledge"].choices = [(d.document_id, d.name) for d in documents]

    @classmethod
    def initial_of(cls, name: str, config: AgentConfig) -> dict:
        return {
            "name": name,
            **{
                field: getattr(config, field)
                for field in (
                    "prompt",
                    "first_message",
                    "voice_id",
                    "tts_model_id",
                    "language",
                    "llm",
                    "temperature",
                    "max_tokens",
                    "knowledge",
                    "silence_ms",
                    "interruptible",
                    "max_duration_seconds",
                )
            },  # fmt: skip
            "dynamic_variables": variables_text(config.dynamic_variables),
        }

    def clean_dynamic_variables(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for number, line in enumerate(self.cleaned_data["dynamic_variables"].splitlines(), 1):
            if not line.strip():
                continue
            name, _, default = line.partition("=")
            name = name.strip().strip("{} ")
            if not VARIABLE_NAME.match(name):
                raise forms.ValidationError(
                    f"Line {number}: “{name or line.strip()}” is not a variable name (letters, "
                    "digits and _, not starting with a digit), written as “name = default”."
                )
            if name in values:
                raise forms.ValidationError(f"Line {number}: {name} is given twice.")
            values[name] = default.strip()
        if len(values) > 50:
            raise forms.ValidationError("At most 50 variables.")
        return values

    def config(self, base: AgentConfig) -> AgentConfig:
        """``base`` (the agent's current configuration) with what the form sets."""
        data = self.cleaned_data
        return base.with_changes(
            prompt=data["prompt"],
            first_message=data["first_message"],
            voice_id=data["voice_id"],
            tts_model_id=data["tts_model_id"],
            language=data["language"],
            llm=data["llm"],
            temperature=data["temperature"],
            max_tokens=data["max_tokens"],
            knowledge=list(data["knowledge"]),
            dynamic_variables=data["dynamic_variables"],
            silence_ms=data["silence_ms"],
            interruptible=data["interruptible"],
            max_duration_seconds=data["max_duration_seconds"],
        )

    def refused(self, errors: dict[str, str]) -> None:
        """A service's refusal, each message next to its field (the rest above the form)."""
        for key, message in errors.items():
            text = message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
            if key in self.fields:
                self.add_error(key, text)
            else:  # a setting the form does not show (set through the API)
                self.add_error(None, f"{key.replace('_', ' ').capitalize()}: {message}")


class DocumentTextForm(StudioForm):
    name = forms.CharField(label="Name", max_length=knowledge.NAME_MAX)
    text = forms.CharField(
        label="Text",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text=f"Up to {knowledge.MAX_TEXT_CHARS:,} characters: facts, answers, policies.",
    )


class DocumentFileForm(StudioForm):
    name = forms.CharField(
        label="Name", required=False, max_length=knowledge.NAME_MAX,
        help_text="Left empty: the file's name.",
    )  # fmt: skip
    file = forms.FileField(
        label="File",
        help_text=f"{knowledge.ACCEPTED}, up to {knowledge.MAX_FILE_BYTES // (1024 * 1024)} MB.",
        widget=forms.ClearableFileInput(attrs={"accept": ".txt,.md,.markdown,.pdf,.docx"}),
        error_messages={"required": "Choose a file to upload."},
    )
