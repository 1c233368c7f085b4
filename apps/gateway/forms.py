"""Forms of the gateway app: a new personal API key."""

from datetime import datetime, time
from decimal import Decimal

from django import forms
from django.utils import timezone

from apps.workspaces.forms import StudioForm

from .models import SCOPES

MAX_CAP = Decimal("1000000000")


class ApiKeyForm(StudioForm):
    name = forms.CharField(
        label="Name",
        max_length=100,
        error_messages={"required": "Give the key a name, e.g. the script that will use it."},
        widget=forms.TextInput(attrs={"placeholder": "e.g. Podcast render script"}),
        help_text="Only for you and your team to tell keys apart.",
    )
    expires_on = forms.DateField(
        label="Expires on",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional. The key stops working when that day begins. Empty: never.",
    )
    scopes = forms.MultipleChoiceField(
        label="Capabilities",
        required=False,
        choices=list(SCOPES.items()),
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "invalid_choice": "Unknown capability “%(value)s”: choose from the list.",
        },
        help_text="Tick none to allow every capability.",
    )
    monthly_cap = forms.DecimalField(
        label="Monthly credit cap",
        required=False,
        min_value=Decimal(0),
        max_value=MAX_CAP,
        max_digits=16,
        decimal_places=3,
        error_messages={"min_value": "A cap cannot be negative: use 0 or more, or leave it empty."},
        help_text="Optional: the most credits this key may use per calendar month. "
        "Your own budget still applies.",
    )

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the key a name, e.g. the script that will use it.")
        return name

    def clean_expires_on(self):
        day = self.cleaned_data["expires_on"]
        if day is not None and day <= timezone.localdate():
            raise forms.ValidationError("Pick a day in the future, or leave it empty.")
        return day

    @property
    def expires_at(self) -> datetime | None:
        """The moment the key stops working: the start of the chosen day."""
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        return timezone.make_aware(datetime.combine(day, time.min))
