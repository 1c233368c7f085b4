"""Pages of a project's exports, under ``/projects/<project_id>/exports/``.

Viewers see the exports, listen to them and download them; members ask for exports and
delete them. Another workspace's project or export is a 404. The business rules are in
``exports.py``; the form and the list are the partial ``projects/_export_panel.html``, which
the project page and the chapter editor include with ``export_panel_context``.
"""

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from apps.history.views import stored_audio_response
from apps.workspaces.access import get_scoped, workspace_view
from apps.workspaces.forms import StudioForm
from apps.workspaces.models import Role
from studio_site.format import count_of, duration_of

from . import exports as services
from .models import Chapter, Export, ExportFormat, Project
from .narration import ProjectRefused

PANEL_ROWS = 10  # exports shown in the panel of the project page and the chapter editor
PAGE_ROWS = 100
PLAYABLE = (ExportFormat.MP3, ExportFormat.WAV, ExportFormat.M4B)


class ExportForm(StudioForm):
    """What to export: the project or a chapter, the format and the loudness profile."""

    scope = forms.ChoiceField(
        label="What",
        required=False,
        error_messages={"invalid_choice": "What: that chapter is not in this project."},
    )
    format = forms.ChoiceField(
        label="Format",
        choices=ExportFormat.choices,
        initial=ExportFormat.MP3,
        widget=forms.RadioSelect,
        help_text="MP3 and M4B carry the chapters as markers; a ZIP holds one MP3 per chapter.",
    )
    profile = forms.ChoiceField(
        label="Loudness",
        choices=list(services.PROFILE_HELP.items()),
        initial="lufs16",
        widget=forms.RadioSelect,
    )

    def __init__(self, *args, plans=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scope"].choices = [("", _scope_label("The whole project", plans))] + [
            (plan.chapter.public_id, _scope_label(f"{plan.number}. {plan.chapter.name}", [plan]))
            for plan in plans
        ]


def _scope_label(title: str, plans) -> str:
    blocks = sum(len(plan.blocks) for plan in plans)
    missing = sum(len(plan.missing) for plan in plans)
    seconds = sum(plan.seconds for plan in plans)
    label = f"{title} · {count_of(blocks, 'block')}"
    if missing:
        return label + f" · {count_of(missing, 'block')} without a take"
    return label + (f" · about {duration_of(seconds)}" if seconds else "")


def _compliance(export: Export) -> dict | None:
    """The report as a table: the rules (columns) and, per chapter, each rule's cell."""
    chapters = (export.report or {}).get("chapters") or []
    if not chapters:
        return None
    rules = [rule["rule"] for rule in chapters[0].get("compliance", [])]
    rows = []
    for chapter in chapters:
        by_rule = {rule["rule"]: rule for rule in chapter.get("compliance", [])}
        rows.append(
            {
                "title": chapter.get("title", ""),
                "start_s": chapter.get("start_s"),
                "file": chapter.get("file", ""),
                "cells": [by_rule.get(name) for name in rules],
                "passes": all(rule["passes"] for rule in by_rule.values()),
            }
        )
    return {"rules": rules, "rows": rows, "passes": all(row["passes"] for row in rows)}


def _row(export: Export) -> dict:
    takes = (export.report or {}).get("takes") or []
    drafts = sum(
        1
        for chapter in (export.report or {}).get("chapters") or []
        for block in chapter.get("blocks", [])
        if block.get("draft")
    )
    profile = services.PROFILES.get(export.profile)
    return {
        "export": export,
        "active": services.export_active(export),
        "playable": bool(export.file) and export.format in PLAYABLE,
        "compliance": _compliance(export),
        "profile": profile.name if profile else export.profile,
        "takes": len(takes),
        "drafts": drafts,
    }


def export_panel_context(
    request,
    project: Project,
    *,
    chapter: Chapter | None = None,
    form: ExportForm | None = None,
    error: str = "",
    limit: int | None = PANEL_ROWS,
) -> dict:
    """What ``projects/_export_panel.html`` draws (``panel``): for members the export form
    (the project or its chapters, or fixed to ``chapter``), with each scope's length; and
    the exports (of ``chapter`` when given), newest first."""
    can_edit = bool(request.membership is not None and request.membership.can_create)
    plans = services.export_plans(project=project)
    scoped = [plan for plan in plans if chapter is None or plan.chapter.pk == chapter.pk]
    if can_edit and form is None:
        form = ExportForm(
            plans=plans, initial={"scope": chapter.public_id if chapter is not None else ""}
        )
    exports = services.project_exports(project, chapter=chapter)
    rows = list(exports[: (limit or PAGE_ROWS) + 1])
    more = len(rows) > (limit or PAGE_ROWS)
    return {
        "project": project,
        "chapter": chapter,
        "can_edit": can_edit,
        "form": form if can_edit else None,
        "error": error,
        "estimate": {
            "blocks": sum(len(plan.blocks) for plan in scoped),
            "missing": [plan for plan in scoped if plan.missing],
            "seconds": sum(plan.seconds for plan in scoped),
        },
        "rows": [_row(export) for export in rows[: limit or PAGE_ROWS]],
        "more": more,
        "full": limit is None,
        "next": request.get_full_path() if request.method == "GET" else "",
    }


def _project(request, project_id: str) -> Project:
    return get_scoped(request, Project, public_id=project_id)


def _export(request, project: Project, export_id: str) -> Export:
    return get_scoped(
        request,
        Export.objects.select_related("job", "chapter", "project"),
        public_id=export_id,
        project=project,
    )


def _chapter(request, project: Project, public_id: str) -> Chapter | None:
    if not public_id:
        return None
    chapter = Chapter.objects.filter(
        workspace=request.workspace, project=project, public_id=public_id
    ).first()
    if chapter is None:
        raise ProjectRefused("What: that chapter is not in this project.")
    return chapter


def _page(request, project: Project, *, form=None, error: str = "", status: int = 200):
    panel = export_panel_context(request, project, form=form, error=error, limit=None)
    context = {
        "project": project,
        "panel": panel,
        "profiles": services.PROFILE_HELP,
    }
    return render(request, "projects/exports.html", context, status=status)


def _back(request, project: Project, anchor: str = "") -> HttpResponseRedirect:
    """Back where the form was (the project page or the chapter editor), else the exports."""
    next_url = request.POST.get("next", "")
    if next_url and url_has_allowed_host_and_scheme(
        next_url, {request.get_host()}, request.is_secure()
    ):
        return HttpResponseRedirect(next_url.split("#")[0] + anchor)
    return HttpResponseRedirect(reverse("projects:exports", args=[project.public_id]) + anchor)


@workspace_view()
@require_GET
def export_list(request, project_id: str):
    """The export form (members), and every export with its progress, player, compliance
    report and download."""
    return _page(request, _project(request, project_id))


@workspace_view(Role.MEMBER)
@require_POST
def export_create(request, project_id: str):
    """Ask for an export; it is made as a job, and the list shows its progress."""
    project = _project(request, project_id)
    plans = services.export_plans(project=project)
    form = ExportForm(request.POST, plans=plans)
    error = ""
    export = None
    if form.is_valid():
        data = form.cleaned_data
        try:
            export = services.export_start(
                workspace=request.workspace,
                user=request.user,
                project=project,
                chapter=_chapter(request, project, data["scope"]),
                fmt=data["format"],
                profile=data["profile"],
            )
        except ProjectRefused as exc:
            error = str(exc)
    if export is None:
        if request.htmx:
            chapter = _fixed_chapter(request, project)
            panel = export_panel_context(
                request, project, chapter=chapter, form=form, error=error, limit=_limit(request)
            )
            panel["next"] = request.POST.get("next", "")
            return render(request, "projects/_export_panel.html", {"panel": panel}, status=400)
        return _page(request, project, form=form, error=error, status=400)
    if request.htmx:
        chapter = _fixed_chapter(request, project)
        panel = export_panel_context(request, project, chapter=chapter, limit=_limit(request))
        panel["notice"] = "Exporting now: the file appears below when it is ready."
        panel["next"] = request.POST.get("next", "")
        return render(request, "projects/_export_panel.html", {"panel": panel})
    messages.success(request, "Exporting now; the file appears in the list when it is ready.")
    return _back(request, project, f"#export-{export.public_id}")


def _fixed_chapter(request, project: Project) -> Chapter | None:
    """The chapter a panel is fixed to (the chapter editor's), as its form says."""
    try:
        return _chapter(request, project, request.POST.get("panel_chapter", ""))
    except ProjectRefused:
        return None


def _limit(request) -> int | None:
    return None if request.POST.get("panel_full") else PANEL_ROWS


@workspace_view()
@require_GET
def export_detail(request, project_id: str, export_id: str):
    """One export's row (htmx polls it while its job runs); a plain visit goes to the list."""
    project = _project(request, project_id)
    export = _export(request, project, export_id)
    if not request.htmx:
        url = reverse("projects:exports", args=[project.public_id])
        return HttpResponseRedirect(f"{url}#export-{export.public_id}")
    panel = {"project": project, "can_edit": request.membership.can_create, "next": ""}
    return render(
        request, "projects/_export_panel.html#export_row", {"panel": panel, "row": _row(export)}
    )


def export_audio_response(request, export: Export, *, download: bool = False):
    """The export's file, whole (200) or the one byte range a player asks for (206), named
    ``<project>-<chapter>.<format>``; a ZIP is always a download."""
    if not export.file:
        raise Http404("This export has no file yet.")
    return stored_audio_response(
        request,
        storage=export.file.storage,
        name=export.file.name,
        content_type=services.CONTENT_TYPES[export.format],
        filename=services.export_filename(export),
        download=download or export.format == ExportFormat.ZIP,
    )


@workspace_view()
@require_GET
def export_download(request, project_id: str, export_id: str):
    """The file, to play (seekable) or, with ``?download=1``, to save."""
    project = _project(request, project_id)
    export = _export(request, project, export_id)
    return export_audio_response(request, export, download=request.GET.get("download") == "1")


@workspace_view(Role.MEMBER)
@require_POST
def export_delete(request, project_id: str, export_id: str):
    """Remove an export (one still being made is cancelled); its takes stay."""
    project = _project(request, project_id)
    services.export_delete(_export(request, project, export_id))
    if request.htmx:
        return HttpResponse("")  # the row swaps itself out
    messages.success(request, "Export deleted.")
    return _back(request, project)
