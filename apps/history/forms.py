"""The History page's filters, as they travel in the URL (a GET form anyone can share)."""

from datetime import datetime, time, timedelta

from django import forms
from django.utils import timezone

from apps.workspaces.models import Membership

from .models import GenerationKind

MAX_SELECTED = 500  # clips one bulk download or delete may name


class HistoryFilterForm(forms.Form):
    """Search (text of the recipe or voice name), kind, voice, member and a date range."""

    q = forms.CharField(
        label="Search", required=False, max_length=200, strip=True,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Text or voice"}),
    )  # fmt: skip
    kind = forms.ChoiceField(
        label="Kind", required=False, choices=[("", "All kinds"), *GenerationKind.choices]
    )
    voice = forms.ChoiceField(label="Voice", required=False)
    member = forms.TypedChoiceField(label="Member", required=False, coerce=int, empty_value=None)
    date_from = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    item = forms.CharField(required=False, max_length=32, widget=forms.HiddenInput)
    take = forms.CharField(required=False, widget=forms.HiddenInput)  # a speech take's id

    def __init__(self, data=None, *, workspace, voices):
        super().__init__(data)
        members = Membership.objects.filter(workspace=workspace).select_related("user")
        self.fields["member"].choices = [("", "Anyone")] + [
            (m.user_id, m.user.display_name) for m in members.order_by("user__email")
        ]
        self.fields["voice"].choices = [("", "All voices"), *voices]

    def clean_take(self):
        # A take's id is 22 characters: anything longer names no take (and finds no clip).
        return (self.cleaned_data.get("take") or "")[:64]

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    def as_query(self) -> dict:
        """The filters in force, for links (pages) and the address bar: no empty values."""
        data = self.cleaned_data if self.is_bound and hasattr(self, "cleaned_data") else {}
        return {
            name: value.isoformat() if hasattr(value, "isoformat") else value
            for name, value in data.items()
            if value not in (None, "") and name not in (self.errors or {})
        }


def day_start(day) -> datetime:
    """Midnight at the start of ``day`` in the member's (active) time zone."""
    return timezone.make_aware(datetime.combine(day, time.min))


def day_after(day) -> datetime:
    return day_start(day + timedelta(days=1))
