"""Cloning with consent, the consent register, the try-it box and the voice policy."""

from datetime import datetime, time

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.workspaces.access import get_scoped, workspace_view
from apps.workspaces.models import Role
from apps.workspaces.services import ActionRefused

from . import services_clone as clone_services
from . import services_usage as usage_services
from .models import LABEL_NAMES, LABELS, ConsentUse, LibraryVoice, VoiceConsent
from .services_clone import SAMPLE_TYPES, ConsentInput, SamplesRefused, Upload


class CloneForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(
        required=False, max_length=1000, widget=forms.Textarea(attrs={"rows": 2})
    )
    remove_background_noise = forms.BooleanField(required=False)
    speaker_name = forms.CharField(max_length=200, label="Whose voice is it?")
    statement = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Consent statement",
        help_text="What the speaker agreed to, in their words or the release they signed.",
    )
    attested = forms.BooleanField(
        required=False, label="I confirm the speaker consented to this clone for these uses."
    )
    allowed_uses = forms.MultipleChoiceField(
        choices=ConsentUse.choices, widget=forms.CheckboxSelectMultiple, required=False
    )
    expires_on = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        label="Consent expires on",
    )


def _end_of(day) -> datetime | None:
    if day is None:
        return None
    return timezone.make_aware(datetime.combine(day, time(23, 59, 59)))


def _uploads(files) -> list[Upload]:
    """The uploads, unread: the services read them from where Django spooled them. One past
    the per-file limit, or all when together they are over the total, are passed empty (the
    checks then refuse them by their sizes)."""
    per_file = settings.CHORUS_CLONE_SAMPLE_MAX_MB * 1024 * 1024
    total = settings.CHORUS_CLONE_TOTAL_MAX_MB * 1024 * 1024
    too_much = sum(f.size for f in files) > total
    return [
        Upload(
            filename=f.name or "",
            data=b"" if too_much or f.size > per_file else f,
            size=f.size,
        )
        for f in files
    ]


def _clone_page(request, form, *, error="", problems=None, status=200):
    context = {
        "form": form,
        # Each label input with what was typed in it (kept when the form comes back with errors).
        "labels": [(label, name, request.POST.get(label, "")) for label, name in LABEL_NAMES],
        "error": error,
        "problems": problems or [],
        "accept": ",".join(SAMPLE_TYPES),
        "sample_max_mb": settings.CHORUS_CLONE_SAMPLE_MAX_MB,
        "total_max_mb": settings.CHORUS_CLONE_TOTAL_MAX_MB,
        "max_samples": clone_services.MAX_SAMPLES,
        "estimate": clone_services.clone_estimate(workspace=request.workspace, user=request.user),
    }
    return render(request, "voices/clone.html", context, status=status)


@workspace_view(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def clone_new(request):
    """Upload or record samples, state the consent, and clone."""
    if request.method == "GET":
        return _clone_page(request, CloneForm())
    form = CloneForm(request.POST)
    if not form.is_valid():
        return _clone_page(request, form, status=400)
    data = form.cleaned_data
    recording = request.FILES.get("consent_recording")
    consent = ConsentInput(
        speaker_name=data["speaker_name"],
        statement=data["statement"],
        attested=data["attested"],
        allowed_uses=list(data["allowed_uses"]),
        expires_at=_end_of(data.get("expires_on")),
        recording=_uploads([recording])[0] if recording else None,
    )
    try:
        voice = clone_services.clone_create(
            workspace=request.workspace,
            user=request.user,
            name=data["name"],
            uploads=_uploads(request.FILES.getlist("samples")),
            consent=consent,
            description=data.get("description", ""),
            labels={name: request.POST.get(name, "") for name in LABELS},
            remove_background_noise=data["remove_background_noise"],
        )
    except SamplesRefused as exc:
        return _clone_page(
            request, form, error="Some samples cannot be used.", problems=exc.problems, status=400
        )
    except ActionRefused as exc:
        return _clone_page(request, form, error=str(exc), status=400)
    messages.success(request, f"Cloned “{voice.name}”; its consent is in the register.")
    return HttpResponseRedirect(reverse("voices:detail", args=[voice.pk]), status=303)


def _register_page(request, *, status: int = 200):
    consents = list(clone_services.consent_register(workspace=request.workspace))
    return render(
        request,
        "voices/consents.html",
        {
            "consents": consents,
            "expired": sum(1 for c in consents if c.expired),
            "require_approved": request.workspace.require_approved_voices,
            "unrecorded": clone_services.clones_without_consent(workspace=request.workspace),
        },
        status=status,
    )


@workspace_view(Role.MANAGER)
@require_GET
def consent_register(request):
    """Every clone and its consent, expired ones flagged; and the voice policy."""
    return _register_page(request)


@workspace_view(Role.MANAGER)
@require_POST
def consent_renew(request, pk: int):
    consent = get_scoped(request, VoiceConsent, pk=pk)
    try:
        day = forms.DateField().clean(request.POST.get("expires_on", ""))
    except forms.ValidationError:
        day = None
    try:
        clone_services.consent_renew(
            consent=consent,
            user=request.user,
            expires_at=_end_of(day),
            statement=request.POST.get("statement", ""),
        )
    except ActionRefused as exc:
        messages.error(request, str(exc))
        return _register_page(request, status=400)
    messages.success(request, f"Consent of {consent.speaker_name} renewed.")
    return HttpResponseRedirect(reverse("voices:consents"), status=303)


@workspace_view(Role.MANAGER)
@require_POST
def policy(request):
    enabled = request.POST.get("require_approved_voices") == "on"
    usage_services.require_approved_set(
        workspace=request.workspace, actor=request.user, enabled=enabled
    )
    messages.success(
        request,
        "Final renders now use approved voices only."
        if enabled
        else "Final renders may use any voice of the library.",
    )
    return HttpResponseRedirect(reverse("voices:consents"), status=303)


# --- Try it ---------------------------------------------------------------------------------


@workspace_view(Role.MEMBER)
@require_GET
def try_estimate(request, pk: int):
    """The estimate line under the try-it box, redrawn as the member types (htmx)."""
    voice = get_scoped(request, LibraryVoice, pk=pk)
    text = (request.GET.get("text") or "").strip()
    estimate = usage_services.try_estimate(voice=voice, user=request.user, characters=len(text))
    return render(
        request,
        "voices/detail.html#estimate",
        {"estimate": estimate, "characters": len(text), "try_max": usage_services.TRY_MAX},
    )


@workspace_view(Role.MEMBER)
@require_POST
def try_voice(request, pk: int):
    """Speak the try-it text; the clip plays on the voice page (and is kept in History)."""
    from .views import _detail

    voice = get_scoped(request, LibraryVoice, pk=pk)
    text = request.POST.get("text", "")
    try:
        clip = usage_services.voice_try(voice=voice, user=request.user, text=text)
    except ActionRefused as exc:
        if request.htmx:  # only the try-it result area is redrawn
            return render(request, "voices/detail.html#tried", {"try_error": str(exc)}, status=400)
        return _detail(request, voice, error=str(exc), status=400, try_text=text)
    if request.htmx:
        return render(request, "voices/detail.html#tried", {"clip": clip, "voice": voice})
    messages.success(
        request, f"Spoken: {clip.usage_event.credits if clip.usage_event else 0} credits."
    )
    return HttpResponseRedirect(
        reverse("voices:detail", args=[voice.pk]) + f"?clip={clip.pk}", status=303
    )


@workspace_view()
@require_GET
def clone_sample(request, pk: int, number: int):
    """A cloned voice's sample ``number``, seekable (the voice page plays them)."""
    from django.core.files.storage import default_storage
    from django.http import Http404

    from apps.history.views import stored_audio_response

    consent = get_scoped(request, VoiceConsent, pk=pk)
    try:
        name, content_type, filename = clone_services.sample_file(consent, number)
    except ActionRefused as exc:
        raise Http404(str(exc)) from exc
    return stored_audio_response(
        request, storage=default_storage, name=name, content_type=content_type, filename=filename
    )
