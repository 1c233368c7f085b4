"""Forms of the project pages: a new project (pasted text or a file), its header, chapters,
speakers, renders and the approval threshold."""

from django import forms

from apps.workspaces.forms import StudioForm
from studio_site.forms import LanguageField

from . import importers

PASTE_FORMATS = (("txt", "Plain text"), ("md", "Markdown"), ("html", "HTML"))
VOICE_HELP = (
    "The workspace's engine voices, which read the finals. Drafts use a local stand-in voice "
    "of the same gender when the voice is not a local one."
)


def _voice_choices(voices, current: str = "") -> list[tuple[str, str]]:
    choices = [(voice.voice_id, voice.name) for voice in voices]
    if current and all(voice_id != current for voice_id, _ in choices):
        choices.append((current, current))  # a voice kept from before, shown as it is
    return choices


class ProjectNewForm(StudioForm):
    """A script pasted or uploaded, and how it is spoken. ``clean`` imports it: the script
    is ``self.script`` (an ``importers.ImportedScript``) once the form is valid."""

    text = forms.CharField(
        label="Paste the script",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 10}),
        help_text="Headings (“Chapter 1”, “# Part one”) start chapters; paragraphs become blocks.",
    )
    fmt = forms.ChoiceField(
        label="The pasted text is",
        choices=PASTE_FORMATS,
        initial="txt",
        error_messages={"invalid_choice": "Choose plain text, Markdown or HTML."},
    )
    document = forms.FileField(
        label="Or upload a file",
        required=False,
        help_text=(
            "TXT, Markdown, DOCX, EPUB or HTML, up to "
            f"{importers.MAX_UPLOAD_BYTES // (1024 * 1024)} MB. EPUB chapters follow its spine."
        ),
        widget=forms.ClearableFileInput(
            attrs={"accept": ".txt,.md,.markdown,.docx,.epub,.html,.htm,.xhtml"}
        ),
    )
    name = forms.CharField(
        label="Name",
        required=False,
        max_length=200,
        help_text="Left empty: the document's title.",
    )
    author = forms.CharField(label="Author", required=False, max_length=200)
    language = LanguageField(empty_label="As the script says (or not set)")
    default_voice_id = forms.ChoiceField(
        label="Default voice",
        help_text=VOICE_HELP,
        error_messages={
            "required": "Choose the voice that reads the script.",
            "invalid_choice": "That voice is not in this workspace's library: pick one from the "
            "list.",
        },
    )
    model_id = forms.ChoiceField(
        label="Model",
        error_messages={"invalid_choice": "Choose a model from the list."},
    )

    def __init__(self, *args, voices=(), models=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.voices = list(voices)
        self.fields["default_voice_id"].choices = _voice_choices(self.voices)
        self.fields["model_id"].choices = [(m.model_id, m.name) for m in models]
        self.script = None
        self.filename = ""

    def clean(self):
        data = super().clean()
        text = data.get("text") or ""
        upload = data.get("document")
        if upload and text.strip():
            self.add_error(
                "document", "Paste the script or upload a file, not both: clear one of them."
            )
            return data
        if upload:
            self.filename = upload.name or ""
            if upload.size > importers.MAX_UPLOAD_BYTES:
                self.add_error(
                    "document",
                    f"This file is {upload.size / (1024 * 1024):.1f} MB; uploads are limited to "
                    f"{importers.MAX_UPLOAD_BYTES // (1024 * 1024)} MB. Split it, or paste "
                    "the text of its chapters.",
                )
                return data
            try:
                upload.seek(0)
                self.script = importers.import_file(
                    name=upload.name or "",
                    data=upload.read(),
                    content_type=getattr(upload, "content_type", "") or "",
                )
            except importers.ImportRefused as exc:
                self.add_error("document", str(exc))
            return data
        if not text.strip():
            self.add_error("text", "Paste the script's text, or upload a file with it.")
            return data
        if "fmt" not in data:
            return data  # its own error says why
        try:
            self.script = importers.import_text(text, fmt=data["fmt"])
        except importers.ImportRefused as exc:
            self.add_error("text", str(exc))
        return data


class ProjectEditForm(StudioForm):
    name = forms.CharField(label="Name", max_length=200)
    author = forms.CharField(label="Author", required=False, max_length=200)
    language = LanguageField(empty_label="Not set")
    default_voice_id = forms.ChoiceField(
        label="Default voice",
        help_text=VOICE_HELP,
        error_messages={
            "invalid_choice": "That voice is not in this workspace's library: pick one from the "
            "list."
        },
    )
    default_model_id = forms.ChoiceField(
        label="Model", error_messages={"invalid_choice": "Choose a model from the list."}
    )

    def __init__(self, *args, voices=(), models=(), current_voice="", current_model="", **kw):
        super().__init__(*args, **kw)
        self.fields["default_voice_id"].choices = _voice_choices(voices, current_voice)
        model_choices = [(m.model_id, m.name) for m in models]
        if current_model and all(mid != current_model for mid, _ in model_choices):
            model_choices.append((current_model, current_model))
        self.fields["default_model_id"].choices = model_choices


class ChapterAddForm(StudioForm):
    name = forms.CharField(label="Chapter name", max_length=200)
    text = forms.CharField(
        label="Text (optional)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Paragraphs become blocks; add or edit them later in the chapter.",
    )


class SpeakerForm(StudioForm):
    name = forms.CharField(label="Speaker name", max_length=100)
    voice_id = forms.ChoiceField(
        label="Voice",
        error_messages={
            "invalid_choice": "That voice is not in this workspace's library: pick one from the "
            "list."
        },
    )

    def __init__(self, *args, voices=(), current_voice="", **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["voice_id"].choices = _voice_choices(voices, current_voice)


class ThresholdForm(StudioForm):
    threshold = forms.DecimalField(
        label="Approval threshold (credits)",
        required=False,
        min_value=0,
        max_digits=14,
        decimal_places=2,
        help_text="A final render estimated above this waits for a manager. Empty: never.",
        error_messages={
            "invalid": "A number of credits, such as 5000, or empty for never.",
            "min_value": "A number of credits, 0 or more.",
        },
    )


class DecideForm(StudioForm):
    approve = forms.TypedChoiceField(
        choices=(("1", "Approve"), ("0", "Refuse")),
        coerce=lambda value: value == "1",
        error_messages={"required": "Approve or refuse.", "invalid_choice": "Approve or refuse."},
    )
    reason = forms.CharField(label="Reason", required=False, max_length=500)

    def clean(self):
        data = super().clean()
        if data.get("approve") is False and not (data.get("reason") or "").strip():
            self.add_error("reason", "Say why the render is refused; the member reads it.")
        return data
