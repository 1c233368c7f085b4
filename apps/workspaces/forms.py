"""Forms of the workspaces app: sign-in, workspace, invitations and roles."""

from django import forms
from django.contrib.auth import password_validation

from . import services
from .models import EngineKind, Role, User


class StudioForm(forms.Form):
    """Labels without Django's trailing colon, as everywhere else in the studio."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class SignInForm(StudioForm):
    email = forms.EmailField(
        label="E-mail",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    password = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def clean_email(self):
        return self.cleaned_data["email"].strip().lower()


class WorkspaceForm(StudioForm):
    name = forms.CharField(
        label="Workspace name",
        max_length=100,
        widget=forms.TextInput(attrs={"autofocus": True, "placeholder": "e.g. Podcast team"}),
        help_text="Everyone in the workspace sees it, and so do the people you invite.",
    )

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("A workspace needs a name.")
        return name


def _role_choices(*, for_owner: bool):
    return [(r.value, r.label) for r in Role if for_owner or r != Role.OWNER]


class InvitationForm(StudioForm):
    email = forms.EmailField(
        label="E-mail address",
        max_length=254,
        widget=forms.EmailInput(attrs={"placeholder": "teammate@example.com"}),
    )
    role = forms.ChoiceField(label="Role", initial=Role.MEMBER)

    def __init__(self, *args, for_owner: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _role_choices(for_owner=for_owner)


class ConfirmForm(StudioForm):
    """The second step of an action that asks first: ``confirm=1`` says the person agreed."""

    confirm = forms.BooleanField(required=False)


class RoleForm(ConfirmForm):
    role = forms.ChoiceField(label="Role", choices=Role.choices)


class RoleUndoForm(StudioForm):
    change = forms.IntegerField(min_value=1, max_value=2**62)


class InvitationSignupForm(StudioForm):
    """Create the account of an invited person; the e-mail comes from the invitation."""

    name = forms.CharField(label="Your name", max_length=150, required=False)
    password1 = forms.CharField(
        label="Choose a password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Repeat the password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args, email: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self):
        cleaned = super().clean()
        p1, p2 = cleaned.get("password1"), cleaned.get("password2")
        if p1 and p2 and p1 != p2:
            self.add_error("password2", "The two passwords differ.")
        if p1:
            try:
                password_validation.validate_password(
                    p1, User(email=self.email, name=cleaned.get("name") or "")
                )
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


class EngineSettingsForm(StudioForm):
    kind = forms.ChoiceField(
        label="Engine",
        choices=EngineKind.choices,
        widget=forms.RadioSelect,
        help_text="The local engine works offline and costs no credits. ElevenLabs is the real "
        "service, billed to your ElevenLabs plan.",
    )
    api_key = forms.CharField(
        label="ElevenLabs API key",
        required=False,
        strip=True,
        max_length=200,
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
        help_text="Stored encrypted. Leave empty to keep the current key.",
    )
    remove_key = forms.BooleanField(
        label="Remove the stored key",
        required=False,
        help_text="Then only the local engine can be used until a new key is entered.",
    )
    base_url = forms.URLField(
        label="API base URL",
        required=False,
        assume_scheme="https",
        help_text="Leave empty for the default. Regional hosts go here.",
    )

    def __init__(self, *args, has_key: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.has_key = has_key
        self.egress = services.engine_egress()
        self.fields["base_url"].help_text = (
            "Leave empty for the default. This server allows: "
            f"{self.egress.allowed_list()}"
            + (", and this machine" if self.egress.allow_loopback else "")
            + "."
        )

    def clean_api_key(self):
        key = self.cleaned_data["api_key"]
        if key and (len(key) < 8 or any(c.isspace() for c in key)):
            raise forms.ValidationError("This does not look like an API key.")
        return key or None

    def clean_base_url(self):
        """Only a host the administrator allows (``CHORUS_ENGINE_ALLOWED_HOSTS``); the engine
        checks the addresses it resolves to again on every connection."""
        url = self.cleaned_data["base_url"]
        if not url:
            return url
        problem = self.egress.url_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        return url

    def clean(self):
        cleaned = super().clean()
        keeps_key = self.has_key and not cleaned.get("remove_key")
        if cleaned.get("kind") == EngineKind.ELEVENLABS and not (
            cleaned.get("api_key") or keeps_key
        ):
            self.add_error("api_key", "The ElevenLabs engine needs an API key.")
        return cleaned
