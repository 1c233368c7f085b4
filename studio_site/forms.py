"""Form fields every app shares: the language picker.

``LanguageField`` is a select of language names ("English", "German", …) whose values are
ISO 639-1 codes; an empty choice means "detect it" (or whatever ``empty_label`` says). Rendered
like any field with ``templates/_field.html`` (``docs/conventions.md``).
"""

from django import forms
from django.conf.locale import LANG_INFO

from .format import LANGUAGE_NAMES, language_of


def language_choices() -> list[tuple[str, str]]:
    """Every two-letter language known by name, sorted by that name."""
    codes = {code for code, info in LANG_INFO.items() if len(code) == 2 and "name" in info}
    codes |= {code for code in LANGUAGE_NAMES if len(code) == 2}
    return sorted(((code, language_of(code)) for code in codes), key=lambda c: c[1])


class LanguageSelect(forms.Select):
    def __init__(self, attrs=None, choices=()):
        super().__init__({"class": "language-select", **(attrs or {})}, choices)


class LanguageField(forms.ChoiceField):
    """A language code chosen by its name; a region (``en-GB``) is taken as its language."""

    widget = LanguageSelect

    def __init__(self, *, empty_label: str = "Detect automatically", **kwargs):
        kwargs.setdefault("label", "Language")
        kwargs.setdefault("required", False)
        super().__init__(choices=[("", empty_label), *language_choices()], **kwargs)

    def to_python(self, value):
        text = super().to_python(value).strip().lower().replace("_", "-")
        return text.split("-")[0] if text else ""

    def validate(self, value):
        forms.Field.validate(self, value)  # required; the choice is checked here, worded
        if value and not self.valid_value(value):
            raise forms.ValidationError("Choose a language from the list.", code="invalid_choice")
