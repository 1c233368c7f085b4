"""Voice Design pages: the form, a design's previews, history with search, reproduce, remix,
compare, save as a voice, and blind votes."""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.history.models import Generation
from apps.history.views import stored_audio_response
from apps.workspaces.access import get_scoped, scoped, workspace_view
from apps.workspaces.models import ROLE_RANK, Role
from apps.workspaces.services import ActionRefused

from . import services_design as design_services
from .models import LABEL_NAMES, LABELS, DesignVote, VoiceDesign

HISTORY_PAGE = 20


class RangeInput(forms.NumberInput):
    """A slider (its value is shown beside it: static/js/chorus.js)."""

    input_type = "range"


class DesignForm(forms.Form):
    description = forms.CharField(
        min_length=design_services.DESCRIPTION_LENGTH[0],
        max_length=design_services.DESCRIPTION_LENGTH[1],
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Who speaks, and how: age, accent, tone, pace, setting.",
    )
    auto_generate_text = forms.BooleanField(required=False, label="Write the preview text for me")
    text = forms.CharField(
        required=False,
        max_length=design_services.TEXT_LENGTH[1],
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Preview text",
        help_text="100–1000 characters the previews will say.",
    )
    model_id = forms.ChoiceField(choices=design_services.DESIGN_MODELS, label="Model")
    guidance_scale = forms.FloatField(
        min_value=0,
        max_value=100,
        initial=5.0,
        label="Guidance",
        widget=RangeInput(attrs={"min": 0, "max": 100, "step": "any"}),
        help_text="How closely the voice follows the description: higher is closer, lower "
        "leaves the engine more freedom (0 to 100).",
    )
    loudness = forms.FloatField(
        min_value=-1,
        max_value=1,
        initial=0.5,
        widget=RangeInput(attrs={"min": -1, "max": 1, "step": "any"}),
        help_text="From −1 (quiet) to 1 (loud).",
    )
    seed = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=design_services.MAX_SEED,
        help_text="Leave empty for a random seed; it is shown with the previews.",
    )
    parent = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        text = (data.get("text") or "").strip()
        low = design_services.TEXT_LENGTH[0]
        if not data.get("auto_generate_text") and len(text) < low:
            self.add_error(
                "text",
                f"Write at least {low} characters (you wrote {len(text)}), or tick "
                "“Write the preview text for me”.",
            )
        return data

    def recipe(self) -> design_services.Recipe:
        data = self.cleaned_data
        return design_services.Recipe(
            description=data["description"],
            text=data.get("text") or "",
            auto_generate_text=bool(data.get("auto_generate_text")),
            model_id=data["model_id"],
            guidance_scale=data["guidance_scale"],
            loudness=data["loudness"],
            seed=data.get("seed"),
        )


def _form_context(request, form, *, parent=None):
    return {
        "form": form,
        "parent": parent,
        "estimate": design_services.design_estimate(workspace=request.workspace, user=request.user),
        "description_limits": design_services.DESCRIPTION_LENGTH,
        "text_limits": design_services.TEXT_LENGTH,
    }


@workspace_view(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def design_new(request):
    """The design form (prefilled from a recipe with ``?remix=<id>``); POST generates."""
    parent = None
    remix = request.POST.get("parent") or request.GET.get("remix")
    if remix:
        parent = get_scoped(request, VoiceDesign, pk=remix)
    if request.method == "GET":
        initial = {}
        if parent is not None:
            initial = {
                "description": parent.description,
                "text": "" if parent.auto_generate_text else parent.text,
                "auto_generate_text": parent.auto_generate_text,
                "model_id": parent.model_id,
                "guidance_scale": parent.guidance_scale,
                "loudness": parent.loudness,
                "seed": parent.seed,
                "parent": parent.pk,
            }
        return render(
            request,
            "voices/design_new.html",
            _form_context(request, DesignForm(initial=initial), parent=parent),
        )
    form = DesignForm(request.POST)
    if form.is_valid():
        try:
            design = design_services.design_generate(
                workspace=request.workspace, user=request.user, recipe=form.recipe(), parent=parent
            )
        except ActionRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request, f"Three previews made with seed {design.seed}. Listen, then save one."
            )
            target = reverse("voices:design", args=[design.pk])
            if request.htmx:
                return HttpResponseClientRedirect(target)
            return HttpResponseRedirect(target, status=303)
    context = _form_context(request, form, parent=parent)
    template = "voices/design_new.html#form" if request.htmx else "voices/design_new.html"
    return render(request, template, context, status=400)


def _design_context(request, design: VoiceDesign, **extra):
    ancestors, remixes = design_services.design_lineage(design)
    return {
        "design": design,
        "open_vote": design_services.open_vote(design),
        "previews": design_services.design_previews(design),
        "ancestors": ancestors,
        "remixes": remixes,
        "reproductions": list(design.reproductions.all()[:10]),
        "votes": list(design.votes.all()[:10]),
        "saved_voices": list(design.voices.all()),
        "labels": LABEL_NAMES,
        "others": scoped(request, VoiceDesign).exclude(pk=design.pk)[:20],
        "estimate": design_services.design_estimate(
            workspace=request.workspace, user=request.user, model_id=design.model_id
        ),
        **extra,
    }


def _design_refused(request, design: VoiceDesign, exc: ActionRefused, **extra):
    """The design page again, with why the action was refused (400)."""
    context = _design_context(request, design, error=str(exc), **extra)
    return render(request, "voices/design.html", context, status=400)


@workspace_view()
@require_GET
def design_detail(request, pk: int):
    design = get_scoped(request, VoiceDesign.objects.select_related("created_by"), pk=pk)
    return render(request, "voices/design.html", _design_context(request, design))


@workspace_view()
@require_GET
def design_history(request):
    """Every design of the team, newest first, with search."""
    query = request.GET.get("q", "")
    designs = design_services.designs_search(workspace=request.workspace, query=query)
    page = Paginator(designs, HISTORY_PAGE).get_page(request.GET.get("page"))
    context = {"page": page, "q": query}
    template = "voices/designs.html#results" if request.htmx else "voices/designs.html"
    return render(request, template, context)


@workspace_view(Role.MEMBER)
@require_POST
def design_reproduce(request, pk: int):
    design = get_scoped(request, VoiceDesign, pk=pk)
    try:
        again = design_services.design_reproduce(design=design, user=request.user)
    except ActionRefused as exc:
        return _design_refused(request, design, exc)
    if again.identical:
        messages.success(request, "Reproduced: the audio came out identical, byte for byte.")
    else:
        messages.warning(request, "Reproduced, but the audio differs from the original's.")
    return HttpResponseRedirect(reverse("voices:design", args=[again.pk]), status=303)


@workspace_view(Role.MEMBER)
@require_POST
def design_save(request, pk: int):
    design = get_scoped(request, VoiceDesign, pk=pk)
    try:
        preview = int(request.POST.get("preview", ""))
    except ValueError:
        preview = -1
    labels = {name: request.POST.get(name, "") for name in LABELS}
    tags = [t for t in request.POST.get("tags", "").split(",") if t.strip()]
    try:
        voice = design_services.design_save(
            design=design,
            preview=preview,
            user=request.user,
            name=request.POST.get("name", ""),
            description=request.POST.get("description", ""),
            labels=labels,
            tags=tags,
            can_manage_tags=ROLE_RANK[Role(request.membership.role)] >= ROLE_RANK[Role.MANAGER],
        )
    except ActionRefused as exc:
        return _design_refused(request, design, exc, save_preview=preview)
    messages.success(request, f"Saved “{voice.name}”: it is in the library and in /v1/voices.")
    return HttpResponseRedirect(reverse("voices:detail", args=[voice.pk]), status=303)


@workspace_view()
@require_GET
def design_compare(request):
    """Two designs side by side: their recipes (differences marked) and previews."""
    a = get_scoped(request, VoiceDesign, pk=request.GET.get("a"))
    b = get_scoped(request, VoiceDesign, pk=request.GET.get("b"))
    context = {
        "a": a,
        "b": b,
        "a_previews": design_services.design_previews(a),
        "b_previews": design_services.design_previews(b),
        "rows": design_services.recipe_rows(a, b),
    }
    return render(request, "voices/design_compare.html", context)


# --- Blind votes ----------------------------------------------------------------------------


@workspace_view(Role.MEMBER)
@require_POST
def vote_open(request, pk: int):
    design = get_scoped(request, VoiceDesign, pk=pk)
    try:
        vote = design_services.vote_open(
            design=design, user=request.user, question=request.POST.get("question", "")
        )
    except ActionRefused as exc:
        return _design_refused(request, design, exc)
    messages.success(request, "Vote opened: share this page with your team.")
    return HttpResponseRedirect(reverse("voices:vote", args=[vote.pk]), status=303)


def _vote(request, pk: int) -> DesignVote:
    return get_scoped(request, DesignVote.objects.select_related("design", "opened_by"), pk=pk)


def _vote_page(request, vote: DesignVote, *, error: str = "", status: int = 200):
    """While open: the voter's own shuffled options, numbered, nothing naming a preview.
    Closed: the results by preview letter, with each preview playable."""
    ballot = vote.ballots.filter(voter=request.user).first()
    context = {
        "vote": vote,
        "error": error,
        "can_close": vote.opened_by_id == request.user.pk
        or ROLE_RANK[Role(request.membership.role)] >= ROLE_RANK[Role.MANAGER],
        "ballots": vote.ballots.count(),
    }
    if vote.is_open:
        order = design_services.vote_order(vote, request.user)
        context["options"] = [(n, f"Option {n}") for n in range(1, len(order) + 1)]
        context["my_option"] = order.index(ballot.preview) + 1 if ballot is not None else None
    else:
        context["results"] = design_services.vote_results(vote)
        context["previews"] = design_services.design_previews(vote.design)
        context["my_letter"] = (
            design_services.letter_of(ballot.preview) if ballot is not None else None
        )
    return render(request, "voices/vote.html", context, status=status)


@workspace_view()
@require_GET
def vote_detail(request, pk: int):
    return _vote_page(request, _vote(request, pk))


@workspace_view()
@require_GET
def vote_listen(request, pk: int, option: int):
    """Option ``option`` of this voter's shuffled order, as audio (the URL names no preview)."""
    vote = _vote(request, pk)
    try:
        index = design_services.vote_preview_at(vote, request.user, option)
    except ActionRefused as exc:
        raise Http404(str(exc)) from exc
    history_item_id = vote.design.previews[index].get("history_item_id")
    clip = Generation.objects.filter(
        workspace=request.workspace, history_item_id=history_item_id
    ).first()
    if clip is None:
        raise Http404("This preview's audio was deleted.")
    extension = clip.file.name.rsplit(".", 1)[-1] if "." in clip.file.name else "bin"
    response = stored_audio_response(  # a neutral file name: nothing names the preview
        request,
        storage=clip.file.storage,
        name=clip.file.name,
        content_type=clip.content_type,
        filename=f"option-{option}.{extension}",
    )
    response["Cache-Control"] = "private, no-store"
    return response


@workspace_view(Role.MEMBER)
@require_POST
def vote_cast(request, pk: int):
    vote = _vote(request, pk)
    try:
        option = int(request.POST.get("option", ""))
    except ValueError:
        option = 0
    try:
        design_services.vote_cast(vote=vote, user=request.user, slot=option)
    except ActionRefused as exc:
        return _vote_page(request, vote, error=str(exc), status=400)
    messages.success(
        request, f"Your vote for option {option} is in. You can change it until the vote closes."
    )
    return HttpResponseRedirect(reverse("voices:vote", args=[vote.pk]), status=303)


@workspace_view(Role.MEMBER)
@require_POST
def vote_close(request, pk: int):
    vote = _vote(request, pk)
    can_manage = ROLE_RANK[Role(request.membership.role)] >= ROLE_RANK[Role.MANAGER]
    if vote.opened_by_id != request.user.pk and not can_manage:
        raise PermissionDenied("Only whoever opened the vote, or a manager, can close it.")
    try:
        design_services.vote_close(vote=vote, user=request.user, can_manage=can_manage)
    except ActionRefused as exc:
        return _vote_page(request, vote, error=str(exc), status=400)
    messages.success(request, "Vote closed: the results are below.")
    return HttpResponseRedirect(reverse("voices:vote", args=[vote.pk]), status=303)
