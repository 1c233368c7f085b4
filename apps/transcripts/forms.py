"""Forms of the transcripts pages: a recording to transcribe, the live page's language."""

import re

from django import forms

from apps.workspaces.forms import StudioForm
from studio_site.forms import LanguageField

from . import services


class UploadForm(StudioForm):
    title = forms.CharField(required=False, max_length=200)
    language_code = LanguageField(help_text="Detect automatically, or choose the language spoken.")
    diarize = forms.BooleanField(required=False, label="Tell speakers apart")
    num_speakers = forms.IntegerField(
        required=False, min_value=1, max_value=32, label="Number of speakers",
        help_text="Empty: find out.",
    )  # fmt: skip
    keyterms = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Key terms",
        help_text="Names and jargon to listen for: one per line or comma separated (up to 1,000).",
    )
    tag_audio_events = forms.BooleanField(required=False, initial=True, label="Tag audio events")
    no_verbatim = forms.BooleanField(required=False, label="Remove filler words")
    detect_entities = forms.BooleanField(required=False, label="Detect entities")
    redact_pii = forms.BooleanField(required=False, label="Redact personal data (PII)")

    def options(self) -> services.Options:
        data = self.cleaned_data
        return services.Options(
            language_code=data.get("language_code") or None,
            diarize=bool(data.get("diarize")),
            num_speakers=data.get("num_speakers"),
            keyterms=[t for t in re.split(r"[,\n]", data.get("keyterms") or "") if t.strip()],
            tag_audio_events=bool(data.get("tag_audio_events")),
            no_verbatim=bool(data.get("no_verbatim")),
            detect_entities=bool(data.get("detect_entities")),
            redact_pii=bool(data.get("redact_pii")),
        )


class LiveForm(StudioForm):
    """The live page's language box (``static/js/live.js`` reads ``#live-language``)."""

    language_code = LanguageField(
        empty_label="Detect automatically",
        widget=forms.Select(attrs={"id": "live-language", "class": "language-select"}),
    )
