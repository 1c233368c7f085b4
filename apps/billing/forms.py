"""Forms of the billing app: budgets, plan settings and rate overrides."""

from decimal import Decimal

from django import forms

from apps.workspaces.forms import StudioForm

from .models import BudgetPeriod
from .rates import CAPABILITIES, UNITS

MAX_CREDITS = Decimal("1000000000")


class BudgetForm(StudioForm):
    limit_credits = forms.DecimalField(
        label="Budget (credits per period)",
        min_value=Decimal(0),
        max_value=MAX_CREDITS,
        decimal_places=0,
        required=False,
        help_text="Leave empty for no budget.",
    )


class PlanSettingsForm(StudioForm):
    budget_period = forms.ChoiceField(label="Budget period", choices=BudgetPeriod.choices)
    workspace_cap = forms.DecimalField(
        label="Workspace cap (credits per period)",
        min_value=Decimal(0),
        max_value=MAX_CREDITS,
        decimal_places=0,
        required=False,
        help_text="Optional: a hard limit for the whole workspace.",
    )
    credit_limit = forms.IntegerField(
        label="Virtual plan credits (local engine)",
        min_value=0,
        max_value=int(MAX_CREDITS),
        required=False,
        help_text="Only for the local engine's virtual plan; 0 means no limit. "
        "An ElevenLabs plan is synced from the provider.",
    )


class RateForm(StudioForm):
    capability = forms.ChoiceField(label="Capability", choices=list(CAPABILITIES.items()))
    model_id = forms.CharField(
        label="Model id", max_length=80, required=False, help_text="Empty: every model."
    )
    unit = forms.ChoiceField(label="Unit", choices=[(u, f"per {u}") for u in UNITS])
    credits_per_unit = forms.DecimalField(
        label="Credits per unit", min_value=Decimal(0), max_value=Decimal(100000), decimal_places=6
    )

    def clean_model_id(self):
        value = self.cleaned_data["model_id"].strip()
        if value and not all(c.isalnum() or c in "_-." for c in value):
            raise forms.ValidationError("A model id has letters, digits, _ - and . only.")
        return value
