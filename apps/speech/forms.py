"""The Speech page's form: the text, the voice, the model, the format, the voice's settings
and the seed, checked and turned into a take's recipe."""

from django import forms

from .services import FORMAT_GROUPS, SLIDERS, TAKE_MAX, TakeRecipe, format_label

SEED_MAX = 4_294_967_295  # ElevenLabs' seeds are unsigned 32-bit


class SpeechForm(forms.Form):
    text = forms.CharField(
        label="Text to speak",
        max_length=TAKE_MAX,
        help_text=f"Up to {TAKE_MAX:,} characters. A text longer than the model takes at "
        "once is split at sentences and made part after part: the first part plays while "
        "the rest is made.",
        widget=forms.Textarea(attrs={"rows": 8, "data-speech-text": ""}),
        error_messages={
            "required": "Type the text to speak.",
            "max_length": f"A take speaks at most {TAKE_MAX:,} characters: split the text "
            "into several takes (a chapter each, say).",
        },
    )
    voice_id = forms.ChoiceField(
        label="Voice",
        error_messages={
            "required": "Choose a voice.",
            "invalid_choice": "Choose a voice from the list: that one is not in this "
            "workspace's library.",
        },
    )
    model_id = forms.ChoiceField(
        label="Model",
        error_messages={"invalid_choice": "Choose one of the engine's models."},
    )
    output_format = forms.ChoiceField(
        label="Output format",
        choices=[
            (group, [(name, format_label(name)) for name in names])
            for group, names in FORMAT_GROUPS
        ],
        error_messages={"invalid_choice": "Choose one of the output formats listed."},
    )
    use_speaker_boost = forms.BooleanField(
        label="Speaker boost",
        required=False,
        help_text="Closer to the original speaker, a little slower to make.",
    )
    seed = forms.IntegerField(
        label="Seed",
        required=False,
        min_value=0,
        max_value=SEED_MAX,
        help_text="The same seed, text and settings give the same take. Empty: a new one.",
        error_messages={"invalid": "The seed is a whole number (or empty for a new one)."},
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "placeholder": "Random"}),
    )

    def __init__(self, *args, voices, models, **kwargs):
        super().__init__(*args, **kwargs)
        self.models = {model.model_id: model for model in models}
        self.fields["voice_id"].choices = [(voice.voice_id, voice.name) for voice in voices]
        self.fields["model_id"].choices = [(model.model_id, model.name) for model in models]
        for name, (label, low, high, step, help_text) in SLIDERS.items():
            self.fields[name] = forms.FloatField(
                label=label,
                min_value=low,
                max_value=high,
                help_text=help_text,
                widget=forms.NumberInput(
                    attrs={"type": "range", "min": low, "max": high, "step": step}
                ),
                error_messages={
                    "required": f"Set the {label.lower()}.",
                    "invalid": f"The {label.lower()} is a number from {low:g} to {high:g}.",
                    "min_value": f"The {label.lower()} is a number from {low:g} to {high:g}.",
                    "max_value": f"The {label.lower()} is a number from {low:g} to {high:g}.",
                },
            )

    def recipe(self) -> TakeRecipe:
        data = self.cleaned_data
        return TakeRecipe(
            text=data["text"],
            voice_id=data["voice_id"],
            model_id=data["model_id"],
            output_format=data["output_format"],
            voice_settings={
                "stability": data["stability"],
                "similarity_boost": data["similarity_boost"],
                "style": data["style"],
                "use_speaker_boost": bool(data["use_speaker_boost"]),
                "speed": data["speed"],
            },
            seed=data["seed"],
        )
