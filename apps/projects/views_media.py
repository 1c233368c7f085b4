"""Pages of a project's sound and music cues, under ``/projects/<project_id>/cues/``.

Viewers see the cues and listen; members make, place and delete them. Another workspace's
project or cue is a 404. The business rules are in ``cues.py``; the cue list is the partial
``projects/_cues.html``, which the chapter editor includes with ``cue_panel_context``.
"""

from django import forms
from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from apps.workspaces.access import get_scoped, scoped, workspace_view
from apps.workspaces.forms import StudioForm
from apps.workspaces.models import Role

from . import cues as services
from .models import Block, Chapter, Cue, CueKind, CuePlacementMode, Project

LOW, HIGH = services.VOLUME_RANGE


class CueForm(StudioForm):
    """A new cue: what to make and for how long (the rules are ``cues.cue_start``'s)."""

    kind = forms.ChoiceField(
        label="Kind",
        choices=CueKind.choices,
        initial=CueKind.SOUND,
        widget=forms.RadioSelect,
    )
    prompt = forms.CharField(
        label="Prompt",
        max_length=services.PROMPT_MAX,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "A heavy door creaks open"}),
        help_text="Describe the sound or the music: what it is, its mood, its instruments.",
    )
    duration_seconds = forms.FloatField(
        label="Length (seconds)",
        required=False,
        initial=services.DEFAULT_LENGTH[CueKind.SOUND],
        widget=forms.NumberInput(attrs={"step": "0.5", "min": "0.5", "max": "300"}),
        help_text="Sound effects 0.5 to 30 seconds, music 3 to 300 seconds.",
    )
    seed = forms.IntegerField(
        label="Seed",
        required=False,
        min_value=0,
        max_value=services.SEED_MAX,
        help_text="Optional: the same prompt and seed make the same clip again.",
    )


class PlaceForm(StudioForm):
    """Where a cue plays: after or under a block, and how loud."""

    block = forms.ChoiceField(
        label="Block",
        required=False,
        error_messages={"invalid_choice": "Block: that block is not in this project."},
    )
    placement = forms.ChoiceField(
        label="Plays", choices=CuePlacementMode.choices, widget=forms.RadioSelect
    )
    volume_db = forms.FloatField(
        label="Volume (dB)",
        min_value=LOW,
        max_value=HIGH,
        widget=forms.NumberInput(
            attrs={"type": "range", "min": f"{LOW:g}", "max": f"{HIGH:g}", "step": "0.5"}
        ),
    )

    def __init__(self, *args, choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["block"].choices = [("", "Not placed")] + [
            (chapter, [(choice.value, choice.label) for choice in blocks])
            for chapter, blocks in choices
        ]


def _place_form(cue: Cue, choices, data=None) -> PlaceForm:
    return PlaceForm(
        data,
        prefix=f"cue-{cue.pk}",
        choices=choices,
        initial={
            "block": cue.block.public_id if cue.block_id else "",
            "placement": cue.placement,
            "volume_db": cue.volume_db,
        },
    )


def cue_panel_context(request, project: Project, *, chapter: Chapter | None = None) -> dict:
    """The context ``projects/_cues.html`` draws (``panel``): the cues of ``project`` (or
    those placed in ``chapter``), each with its placement form for members."""
    can_edit = bool(request.membership is not None and request.membership.can_create)
    choices = services.block_choices(project) if can_edit else []
    cues = services.project_cues(project, chapter=chapter)
    return {
        "project": project,
        "chapter": chapter,
        "can_edit": can_edit,
        "choices": choices,
        "rows": [
            {"cue": cue, "form": _place_form(cue, choices) if can_edit else None} for cue in cues
        ],
        "next": request.get_full_path() if request.method == "GET" else "",
    }


def _project(request, project_id: str) -> Project:
    return get_scoped(request, Project, public_id=project_id)


def _cue(request, project: Project, cue_id: int) -> Cue:
    return get_scoped(
        request,
        Cue.objects.select_related("job", "generation", "block", "block__chapter", "project"),
        pk=cue_id,
        project=project,
    )


def _block(request, project: Project, public_id: str) -> Block | None:
    """The block a form names, or None for none; one of another project is refused."""
    if not public_id:
        return None
    block = scoped(request, Block).filter(public_id=public_id, chapter__project=project).first()
    if block is None:
        raise services.CueRefused("Block: that block is not in this project.", field="block")
    return block


def _project_url(project: Project) -> str:
    try:
        return reverse("projects:detail", args=[project.public_id])
    except NoReverseMatch:  # the project page is another part of the studio
        return ""


def _back(request, project: Project) -> HttpResponseRedirect:
    """Back where the form was (the chapter editor includes the cue list), else the cues."""
    next_url = request.POST.get("next", "")
    if next_url and url_has_allowed_host_and_scheme(
        next_url, {request.get_host()}, request.is_secure()
    ):
        return HttpResponseRedirect(next_url)
    return HttpResponseRedirect(reverse("projects:cues", args=[project.public_id]))


def _estimate_context(request, data) -> dict:
    try:
        estimate = services.cue_estimate(
            request.workspace,
            request.user,
            data.get("kind") or CueKind.SOUND,
            data.get("prompt", ""),
            data.get("duration_seconds"),
        )
    except services.CueRefused as exc:
        return {"estimate": None, "estimate_error": str(exc)}
    return {"estimate": estimate, "estimate_error": ""}


def _page(request, project: Project, form: CueForm, *, status: int = 200):
    context = {
        "project": project,
        "project_url": _project_url(project),
        "form": form,
        "panel": cue_panel_context(request, project),
        "lengths": services.LENGTHS,
    }
    if request.membership.can_create:
        context.update(_estimate_context(request, form.data if form.is_bound else {}))
    return render(request, "projects/cues.html", context, status=status)


@workspace_view()
@require_GET
def cue_list(request, project_id: str):
    """The project's cues with their players, and (members) the form that makes one."""
    return _page(request, _project(request, project_id), CueForm())


@workspace_view(Role.MEMBER)
@require_GET
def cue_estimate(request, project_id: str):
    """The estimate line under the form, redrawn as the member changes it (htmx)."""
    _project(request, project_id)
    return render(request, "projects/cues.html#estimate", _estimate_context(request, request.GET))


@workspace_view(Role.MEMBER)
@require_POST
def cue_create(request, project_id: str):
    """Start making a cue; the list shows its progress."""
    project = _project(request, project_id)
    form = CueForm(request.POST)
    if not form.is_valid():
        return _page(request, project, form, status=400)
    data = form.cleaned_data
    try:
        cue = services.cue_start(
            workspace=request.workspace,
            user=request.user,
            project=project,
            kind=data["kind"],
            prompt=data["prompt"],
            duration_seconds=data.get("duration_seconds"),
            seed=data.get("seed"),
        )
    except services.CueRefused as exc:
        form.add_error(exc.field if exc.field in form.fields else None, str(exc))
        return _page(request, project, form, status=400)
    messages.success(
        request,
        f"Making the {cue.get_kind_display().lower()}; it appears in the list when it is "
        "ready. You can leave this page.",
    )
    return HttpResponseRedirect(reverse("projects:cues", args=[project.public_id]))


def _row(request, cue: Cue, form=None, *, status: int = 200):
    project = cue.project
    can_edit = request.membership.can_create
    choices = services.block_choices(project) if can_edit else []
    if can_edit and form is None:
        form = _place_form(cue, choices)
    panel = {"project": project, "can_edit": can_edit, "choices": choices, "next": ""}
    return render(
        request,
        "projects/_cues.html#cue_row",
        {"panel": panel, "row": {"cue": cue, "form": form}},
        status=status,
    )


@workspace_view()
@require_GET
def cue_progress(request, project_id: str, cue_id: int):
    """One cue's row, polled while its job runs (it shows the player once made)."""
    project = _project(request, project_id)
    return _row(request, _cue(request, project, cue_id))


@workspace_view(Role.MEMBER)
@require_POST
def cue_place(request, project_id: str, cue_id: int):
    """Place a cue after or under a block, at a volume."""
    project = _project(request, project_id)
    cue = _cue(request, project, cue_id)
    choices = services.block_choices(project)
    form = _place_form(cue, choices, data=request.POST)
    error = ""
    if form.is_valid():
        data = form.cleaned_data
        try:
            services.cue_place(
                cue,
                block=_block(request, project, data["block"]),
                placement=data["placement"],
                volume_db=data["volume_db"],
            )
        except services.CueRefused as exc:
            form.add_error(exc.field if exc.field in form.fields else None, str(exc))
    if form.errors:
        error = " ".join(str(e) for errors in form.errors.values() for e in errors)
        if request.htmx:
            return _row(request, cue, form, status=400)
        messages.error(request, error)
        return HttpResponseRedirect(reverse("projects:cues", args=[project.public_id]))
    if request.htmx:
        cue.refresh_from_db()
        return _row(request, _cue(request, project, cue_id))
    messages.success(request, "Cue placed.")
    return _back(request, project)


@workspace_view(Role.MEMBER)
@require_POST
def cue_delete(request, project_id: str, cue_id: int):
    """Remove a cue (a cue still being made is cancelled; a made clip stays in History)."""
    project = _project(request, project_id)
    services.cue_delete(_cue(request, project, cue_id))
    if request.htmx:
        return HttpResponse("")  # the row swaps itself out
    messages.success(request, "Cue removed. Its audio, if it was made, stays in History.")
    return _back(request, project)
