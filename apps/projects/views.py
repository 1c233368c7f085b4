"""The project pages of the narration studio: the list, a new project, a project (its header,
chapters, speakers, renders and regeneration ratio, and the parts of the studio it ties
together: its pronunciation dictionaries, its cues and its exports) and the approvals (renders
and jobs waiting for a manager).

Views are thin: ``narration`` does the work; a refusal (``ProjectRefused``) is a 400 with the
page and the message. Every form posts without JavaScript (then a redirect); with htmx the
render panel is swapped in place.
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.paginator import Paginator
from django.db.models import Count
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.generation import jobs as generation_jobs
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import JobNotWaiting
from apps.voices.picker import speech_models, speech_voices
from apps.workspaces.access import changed, get_scoped, has_role, scoped, workspace_view
from apps.workspaces.models import Role

from . import cues, narration
from .forms import (
    ChapterAddForm,
    DecideForm,
    ProjectEditForm,
    ProjectNewForm,
    SpeakerForm,
    ThresholdForm,
)
from .models import (
    Block,
    Chapter,
    Project,
    PronunciationDictionary,
    Render,
    RenderScope,
    RenderState,
)
from .views_exports import export_panel_context

PAGE_SIZE = 25


def _project(request, public_id: str) -> Project:
    return get_scoped(request, Project.objects.select_related("created_by"), public_id=public_id)


def _detail_url(project: Project) -> str:
    return reverse("projects:detail", args=[project.public_id])


# --- The list -------------------------------------------------------------------------------


@workspace_view()
@require_GET
def project_list(request):
    projects = scoped(request, Project).select_related("created_by")
    query = request.GET.get("q", "").strip()
    if query:
        projects = projects.filter(name__icontains=query)
    page = Paginator(projects.order_by("-updated_at", "-id"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    ids = [project.pk for project in page.object_list]
    summary = {
        p.pk: p for p in narration.projects_summarised(scoped(request, Project).filter(pk__in=ids))
    }
    unseen = _unseen_by_project(request.user, request.workspace, ids)
    rows = []
    for project in page.object_list:
        s = summary[project.pk]
        rows.append(
            {
                "project": project,
                "chapters": s.chapters_n,
                "blocks": s.blocks_n,
                "chosen": (s.chosen_n / s.blocks_n) if s.blocks_n else None,
                "drafts": s.drafts_n,
                "finals": s.finals_n,
                "ratio": round(s.final_takes_n / s.final_blocks_n, 2) if s.final_blocks_n else None,
                "unseen": unseen.get(project.pk),
            }
        )
    return render(request, "projects/list.html", {"page": page, "rows": rows, "q": query})


def _unseen(user, workspace):
    """The renders ``user`` asked for that a manager decided since: the decision not seen yet
    (``seen_at`` is set when the member opens the project page). A withdrawn render was not
    decided by anyone: it is not among them."""
    return Render.objects.filter(
        workspace=workspace, requested_by=user, decided_at__isnull=False, seen_at__isnull=True
    )


def _unseen_by_project(user, workspace, project_ids) -> dict[int, dict]:
    """For the list's badges: per project, how many decisions ``user`` has not seen and
    whether one of them is a refusal (one query)."""
    rows = (
        _unseen(user, workspace)
        .filter(project_id__in=project_ids)
        .values("project_id", "state")
        .annotate(n=Count("id"))
    )
    unseen: dict[int, dict] = {}
    for row in rows:
        entry = unseen.setdefault(row["project_id"], {"n": 0, "refused": False})
        entry["n"] += row["n"]
        entry["refused"] |= row["state"] == RenderState.REFUSED
    return unseen


# --- A new project --------------------------------------------------------------------------


def _pickers(request, *, include: str = ""):
    voices = speech_voices(workspace=request.workspace, user=request.user, include=include)
    models = speech_models(workspace=request.workspace, user=request.user)
    return voices, models


def _new_page(request, form, *, error: str = "", status: int = 200):
    return render(
        request,
        "projects/new.html",
        {"form": form, "voices": form.voices, "error": error},
        status=status,
    )


@workspace_view(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def project_new(request):
    """The form; POST imports the script and makes the project (all or nothing)."""
    voices, models = _pickers(request)
    if request.method == "GET":
        initial = {"default_voice_id": voices[0].voice_id if voices else ""}
        if models:
            initial["model_id"] = models[0].model_id
        return _new_page(request, ProjectNewForm(voices=voices, models=models, initial=initial))
    try:
        data, files = request.POST, request.FILES
    except RequestDataTooBig:
        form = ProjectNewForm(voices=voices, models=models)
        return _new_page(
            request,
            form,
            error="The pasted text is too long to send in a form: upload it as a file instead.",
            status=400,
        )
    form = ProjectNewForm(data, files, voices=voices, models=models)
    if not form.is_valid():
        return _new_page(request, form, status=400)
    values = form.cleaned_data
    try:
        project = narration.project_create(
            workspace=request.workspace,
            user=request.user,
            script=form.script,
            name=values["name"],
            default_voice_id=values["default_voice_id"],
            model_id=values["model_id"],
            author=values["author"],
            language=values["language"],
            filename=form.filename,
        )
    except narration.ProjectRefused as exc:
        return _new_page(request, form, error=str(exc), status=400)
    chapters = project.chapters.count()
    return changed(
        request,
        _detail_url(project),
        f"“{project.name}” is ready: {chapters} chapter{'s' if chapters != 1 else ''}. "
        "Render drafts to hear it (free).",
    )


# --- A project ------------------------------------------------------------------------------


def render_panel(request, *, project: Project, scope: str = RenderScope.PROJECT, target=None):
    """The context of ``projects/_render_panel.html`` for ``scope`` (project, chapter or
    block) and ``target`` (the Chapter or Block; None for the project): the estimates of a
    draft and a final render of what is not up to date, what the member has left, and the
    renders of that scope (running, waiting, refused)."""
    estimates = {}
    targets = narration.render_targets_by_mode(project=project, scope=scope, target=target)
    for mode, draft in (("draft", True), ("final", False)):
        blocks = targets[draft]
        estimates[mode] = (
            narration.render_estimate(
                workspace=request.workspace,
                user=request.user,
                project=project,
                blocks=blocks,
                draft=draft,
            )
            if blocks
            else None
        )
    renders = Render.objects.filter(workspace=request.workspace, project=project).select_related(
        "job", "requested_by", "decided_by"
    )
    if scope != RenderScope.PROJECT:
        renders = renders.filter(scope=scope, scope_id=target.public_id)
    renders = list(renders.order_by("-created_at", "-id")[:8])
    threshold = narration.project_threshold(request.workspace)
    final = estimates["final"]
    if request.method == "GET" and not request.htmx:
        back = request.get_full_path()
    else:
        back = _back(request, project)
    return {
        "back": back,
        "scope": scope,
        "target_id": "" if target is None else target.public_id,
        "draft": estimates["draft"],
        "final": final,
        "threshold": threshold,
        "final_waits": bool(
            final is not None
            and threshold is not None
            and final.credits > threshold
            and not has_role(request, Role.MANAGER)
        ),
        "renders": [
            {
                "render": r,
                "active": narration.render_active(r),
                "can_cancel": narration.render_active(r)
                and (r.requested_by_id == request.user.pk or has_role(request, Role.MANAGER)),
            }
            for r in renders
        ],
        "watching": any(narration.render_active(r) for r in renders),
        "can_render": has_role(request, Role.MEMBER),
    }


def decisions_seen(request, project: Project) -> list[Render]:
    """The decisions on the member's own renders of ``project`` they have not seen yet, newest
    first; they are marked seen (``Render.seen_at``), so the page says each one once."""
    if not request.user.is_authenticated:
        return []
    rows = list(
        _unseen(request.user, request.workspace)
        .filter(project=project)
        .select_related("decided_by")
        .order_by("-decided_at", "-id")
    )
    if rows:
        Render.objects.filter(pk__in=[row.pk for row in rows]).update(seen_at=timezone.now())
    return rows


def dictionaries_panel(request, project: Project) -> dict:
    """The project's pronunciation panel: the workspace's dictionaries (archived ones only
    while attached), each with whether the project uses it."""
    attached = set(project.dictionaries.values_list("pk", flat=True))
    rows = scoped(request, PronunciationDictionary).order_by("name", "id")
    return {
        "rows": [
            {"dictionary": row, "attached": row.pk in attached}
            for row in rows
            if not row.archived or row.pk in attached
        ],
        "attached": len(attached),
        "can_edit": has_role(request, Role.MEMBER),
        "next": _detail_url(project),
    }


def cue_summary(project: Project) -> dict:
    """How many cues the project has, how many are made (have their audio) and placed."""
    return cues.project_cues(project).aggregate(
        total=Count("id"), made=Count("generation"), placed=Count("block")
    )


def _voice_names(request, voices) -> dict[str, str]:
    names = {voice.voice_id: voice.name for voice in voices}
    for voice_id, row in narration.library_voices(workspace=request.workspace).items():
        names.setdefault(voice_id, row.name)
    return names


def _detail(request, project: Project, *, status: int = 200, **extra):
    voices, models = _pickers(request, include=project.default_voice_id)
    names = _voice_names(request, voices)
    takes = narration.project_takes(project)
    chapters = narration.project_chapters(project)
    by_chapter = {
        row["block__chapter"]: row for row in narration.regeneration_by(takes, "block__chapter")
    }
    by_member = narration.regeneration_by(takes, "user")
    people = {
        m.user_id: m.user
        for m in request.workspace.memberships.select_related("user").filter(
            user_id__in=[row["user"] for row in by_member if row["user"]]
        )
    }
    for row in by_member:
        row["person"] = people.get(row["user"])
    speakers = list(project.speakers.all())
    model_names = {model.model_id: model.name for model in models}
    context = {
        "project": project,
        "chapters": [
            {"summary": summary, "ratio": by_chapter.get(summary.chapter.pk)}
            for summary in chapters
        ],
        "ratio": narration.regeneration(takes),
        "by_member": by_member,
        "speakers": [
            {"speaker": speaker, "voice_name": names.get(speaker.voice_id, speaker.voice_id)}
            for speaker in speakers
        ],
        "voices": voices,
        "voice_name": names.get(project.default_voice_id, project.default_voice_id),
        "model_name": model_names.get(project.default_model_id, project.default_model_id),
        "edit_form": extra.pop("edit_form", None)
        or ProjectEditForm(
            voices=voices,
            models=models,
            current_voice=project.default_voice_id,
            current_model=project.default_model_id,
            initial={
                "name": project.name,
                "author": project.author,
                "language": project.language,
                "default_voice_id": project.default_voice_id,
                "default_model_id": project.default_model_id,
            },
        ),
        "chapter_form": extra.pop("chapter_form", None) or ChapterAddForm(),
        "speaker_form": extra.pop("speaker_form", None)
        or SpeakerForm(voices=voices, initial={"voice_id": project.default_voice_id}, prefix="new"),
        "panel": render_panel(request, project=project),
        "can_edit": has_role(request, Role.MEMBER),
        "can_delete": has_role(request, Role.MANAGER)
        or (has_role(request, Role.MEMBER) and project.created_by_id == request.user.pk),
        "error": extra.pop("error", ""),
        "total_seconds": sum(summary.seconds for summary in chapters),
        "pronunciation": dictionaries_panel(request, project),
        "cue_summary": cue_summary(project),
        "export_panel": export_panel_context(request, project),
        **extra,
    }
    return render(request, "projects/detail.html", context, status=status)


@workspace_view()
@require_GET
def project_detail(request, public_id: str):
    project = _project(request, public_id)
    return _detail(request, project, decisions=decisions_seen(request, project))


@workspace_view()
@require_GET
def project_renders(request, public_id: str):
    """The render panel alone (htmx polls it while a render waits or runs)."""
    project = _project(request, public_id)
    scope = request.GET.get("scope", RenderScope.PROJECT)
    target = _target(request, project, scope, request.GET.get("target", ""))
    return render(
        request,
        "projects/_render_panel.html",
        {"project": project, "panel": render_panel(request, project=project, scope=scope,
                                                   target=target)},
    )  # fmt: skip


@workspace_view(Role.MEMBER)
@require_POST
def project_edit(request, public_id: str):
    project = _project(request, public_id)
    voices, models = _pickers(request, include=project.default_voice_id)
    form = ProjectEditForm(
        request.POST,
        voices=voices,
        models=models,
        current_voice=project.default_voice_id,
        current_model=project.default_model_id,
    )
    if not form.is_valid():
        return _detail(request, project, edit_form=form, edit_open=True, status=400)
    try:
        narration.project_update(project, **form.cleaned_data)
    except narration.ProjectRefused as exc:
        return _detail(request, project, edit_form=form, edit_open=True, error=str(exc),
                       status=400)  # fmt: skip
    return changed(request, _detail_url(project), "Project saved.")


@workspace_view(Role.MEMBER)
@require_POST
def project_delete(request, public_id: str):
    project = _project(request, public_id)
    if not (has_role(request, Role.MANAGER) or project.created_by_id == request.user.pk):
        raise PermissionDenied("Only whoever created the project, or a manager, can delete it.")
    name = project.name
    project.delete()
    return changed(request, reverse("projects:list"), f"Deleted “{name}” and its takes.")


# --- Chapters and speakers ------------------------------------------------------------------


def _chapter(request, project: Project, chapter_id: str) -> Chapter:
    return get_scoped(request, Chapter.objects.filter(project=project), public_id=chapter_id)


@workspace_view(Role.MEMBER)
@require_POST
def chapter_add(request, public_id: str):
    project = _project(request, public_id)
    form = ChapterAddForm(request.POST)
    if not form.is_valid():
        return _detail(request, project, chapter_form=form, status=400)
    try:
        chapter = narration.chapter_add(
            project=project, name=form.cleaned_data["name"], text=form.cleaned_data["text"]
        )
    except narration.ProjectRefused as exc:
        form.add_error(None, str(exc))
        return _detail(request, project, chapter_form=form, status=400)
    return changed(request, _detail_url(project), f"Added the chapter “{chapter.name}”.")


@workspace_view(Role.MEMBER)
@require_POST
def chapter_move(request, public_id: str, chapter_id: str):
    """Move a chapter ``up``/``down`` (``direction``) or to ``to`` (1 = first)."""
    project = _project(request, public_id)
    chapter = _chapter(request, project, chapter_id)
    direction = request.POST.get("direction", "")
    if direction in ("up", "down"):
        to = chapter.position + (-1 if direction == "up" else 1)
    else:
        raw = request.POST.get("to", "")
        if not raw.isdigit() or int(raw) < 1:
            return _detail(
                request, project, error="Move: give a place from 1 (the first).", status=400
            )
        to = int(raw) - 1
    narration.chapter_move(chapter, to=to)
    return changed(request, _detail_url(project))


@workspace_view(Role.MEMBER)
@require_POST
def chapter_delete(request, public_id: str, chapter_id: str):
    project = _project(request, public_id)
    chapter = _chapter(request, project, chapter_id)
    if request.POST.get("confirm") != "1":
        return _detail(
            request, project, error="Delete: confirm that the chapter goes for good.", status=400
        )
    try:
        narration.chapter_delete(chapter)
    except narration.ProjectRefused as exc:
        return _detail(request, project, error=str(exc), status=400)
    return changed(request, _detail_url(project), f"Deleted the chapter “{chapter.name}”.")


@workspace_view(Role.MEMBER)
@require_POST
def speaker_save(request, public_id: str):
    """A new speaker (no ``speaker``), or one renamed or re-voiced: its blocks follow."""
    project = _project(request, public_id)
    speaker = None
    speaker_pk = request.POST.get("speaker", "")
    prefix = "new"
    if speaker_pk:
        speaker = get_scoped(request, project.speakers.all(), pk=speaker_pk)
        prefix = f"s{speaker.pk}"
    voices, _ = _pickers(request, include=project.default_voice_id)
    form = SpeakerForm(
        request.POST,
        voices=voices,
        current_voice=speaker.voice_id if speaker else "",
        prefix=prefix,
    )
    if not form.is_valid():
        return _detail(request, project, speaker_form=form if speaker is None else None,
                       error=_first_error(form), status=400)  # fmt: skip
    try:
        saved = narration.speaker_save(
            project=project,
            name=form.cleaned_data["name"],
            voice_id=form.cleaned_data["voice_id"],
            speaker=speaker,
        )
    except narration.ProjectRefused as exc:
        return _detail(request, project, error=str(exc), status=400)
    done = "Speaker saved: every block of it follows." if speaker else f"Added “{saved.name}”."
    return changed(request, _detail_url(project), done)


def _first_error(form) -> str:
    for field, errors in form.errors.items():
        label = form.fields[field].label if field in form.fields else ""
        return f"{label}: {errors[0]}" if label else errors[0]
    return ""


# --- Renders --------------------------------------------------------------------------------


def _target(request, project: Project, scope: str, target_id: str):
    """The Chapter or Block a render of ``scope`` is about (None for the project)."""
    if scope == RenderScope.PROJECT:
        return None
    if scope == RenderScope.CHAPTER:
        return get_scoped(request, Chapter.objects.filter(project=project), public_id=target_id)
    if scope == RenderScope.BLOCK:
        return get_scoped(
            request, Block.objects.filter(chapter__project=project), public_id=target_id
        )
    return None


def _back(request, project: Project) -> str:
    """Where a render form came from (the project or the chapter editor), else the project."""
    back = request.POST.get("next", "") or request.GET.get("next", "")
    if back.startswith("/projects/") and "//" not in back and "\\" not in back:
        return back
    return _detail_url(project)


@workspace_view(Role.MEMBER)
@require_POST
def render_start(request, public_id: str):
    """Render ``scope`` (project|chapter|block) ``target`` as ``mode`` (draft|final)."""
    project = _project(request, public_id)
    scope = request.POST.get("scope", RenderScope.PROJECT)
    mode = request.POST.get("mode", "")
    if scope not in RenderScope.values or mode not in ("draft", "final"):
        return _detail(
            request,
            project,
            error="Render: choose drafts or finals of the project, a chapter or a block.",
            status=400,
        )
    target = _target(request, project, scope, request.POST.get("target", ""))
    try:
        made = narration.render_request(
            workspace=request.workspace,
            user=request.user,
            membership=request.membership,
            project=project,
            scope=scope,
            target=target,
            draft=mode == "draft",
        )
    except narration.ProjectRefused as exc:
        if request.htmx:
            context = {
                "project": project,
                "panel": render_panel(request, project=project, scope=scope, target=target),
                "panel_error": str(exc),
            }
            return render(request, "projects/_render_panel.html", context, status=400)
        return _detail(request, project, error=str(exc), status=400)
    if made.state == RenderState.WAITING:
        message = (
            f"This render needs about {made.credits_estimate:,.0f} credits, above the "
            "workspace's approval threshold: it waits for a manager's approval."
        )
    else:
        message = f"Rendering {len(made.block_ids)} block{'s' if len(made.block_ids) != 1 else ''}."
    if request.htmx:
        context = {
            "project": project,
            "panel": render_panel(request, project=project, scope=scope, target=target),
            "panel_notice": message,
        }
        return render(request, "projects/_render_panel.html", context)
    return changed(request, _back(request, project), message)


def _render_row(request, pk: int) -> Render:
    return get_scoped(request, Render.objects.select_related("project", "job"), pk=pk)


@workspace_view(Role.MEMBER)
@require_POST
def render_cancel(request, pk: int):
    made = _render_row(request, pk)
    if made.requested_by_id != request.user.pk and not has_role(request, Role.MANAGER):
        raise PermissionDenied("Only whoever asked for the render, or a manager, can cancel it.")
    if not narration.render_active(made):
        return _detail(
            request, made.project, error="This render is over: nothing to cancel.", status=400
        )
    narration.render_cancel(made)
    return changed(
        request,
        _back(request, made.project),
        "Render cancelled: the takes already made are kept.",
    )


# --- Approvals ------------------------------------------------------------------------------


def _approvals(request, *, status: int = 200, **extra):
    """Everything waiting for a manager: final renders above the project threshold and jobs
    above their capability's threshold, with what was decided lately."""
    waiting = (
        narration.approvals_waiting(request.workspace)
        .select_related("project", "requested_by")
        .order_by("created_at", "id")
    )
    waiting = list(waiting)
    error_render = extra.pop("error_render", None)
    if error_render not in {made.pk for made in waiting}:
        error_render = None  # said at the top of the page, not by a waiting render
    decided = (
        scoped(request, Render)
        .exclude(decided_by=None)
        .select_related("project", "requested_by", "decided_by", "job")
        .order_by("-decided_at", "-id")[:20]
    )
    waiting_jobs = list(generation_jobs.jobs_waiting(request.workspace))
    error_job = extra.pop("error_job", None)
    if error_job not in {job.pk for job in waiting_jobs}:
        error_job = None
    decided_jobs = (
        scoped(request, Job)
        .filter(params__approval__decision__in=["approved", "refused"])
        .select_related("created_by")
        .order_by("-updated_at", "-id")[:20]
    )
    threshold = narration.project_threshold(request.workspace)
    context = {
        "waiting": waiting,
        "waiting_jobs": waiting_jobs,
        "waiting_count": len(waiting) + len(waiting_jobs),
        "decided": decided,
        "decided_jobs": decided_jobs,
        "error_job": error_job,
        "threshold": threshold,
        "threshold_form": extra.pop("threshold_form", None)
        or ThresholdForm(initial={"threshold": threshold}),
        "error": extra.pop("error", ""),
        "error_render": error_render,
        **extra,
    }
    return render(request, "projects/approvals.html", context, status=status)


@workspace_view(Role.MANAGER)
@require_GET
def approvals(request):
    return _approvals(request)


@workspace_view(Role.MANAGER)
@require_POST
def render_decide(request, pk: int):
    made = _render_row(request, pk)
    form = DecideForm(request.POST)
    if not form.is_valid():
        return _approvals(request, error=_first_error(form), error_render=made.pk, status=400)
    try:
        narration.render_decide(
            render=made,
            user=request.user,
            membership=request.membership,
            approve=form.cleaned_data["approve"],
            reason=form.cleaned_data["reason"],
        )
    except narration.ProjectRefused as exc:
        return _approvals(request, error=str(exc), error_render=made.pk, status=400)
    who = made.requested_by.display_name if made.requested_by else "The member"
    done = (
        f"Approved: {made.project.name} renders now."
        if form.cleaned_data["approve"]
        else f"Refused. {who} sees your reason on the project."
    )
    return changed(request, reverse("projects:approvals"), done)


@workspace_view(Role.MANAGER)
@require_POST
def job_decide(request, pk: int):
    """A manager approves a job waiting for approval (its credits are reserved and it runs)
    or refuses it with a reason; whoever asked is told. Another workspace's job is a 404."""
    job = get_scoped(request, Job.objects.select_related("created_by"), pk=pk)
    approve = request.POST.get("approve", "")
    reason = " ".join(request.POST.get("reason", "").split())
    if approve not in ("0", "1"):
        return _approvals(request, error="Approve or refuse.", error_job=job.pk, status=400)
    if len(reason) > 500:
        return _approvals(
            request, error="Reason: 500 characters at most.", error_job=job.pk, status=400
        )
    if job.status != JobStatus.WAITING:
        return _approvals(
            request,
            error=f"{job.title}: this job no longer waits for approval "
            f"(it is {job.get_status_display().lower()}).",
            status=400,
        )
    try:
        if approve == "1":
            job = generation_jobs.job_approve(job=job, by=request.user)
        else:
            job = generation_jobs.job_decline(job=job, by=request.user, reason=reason)
    except JobNotWaiting as exc:
        return _approvals(request, error=f"{job.title}: {exc}", status=400)
    except ValueError as exc:  # refused without a reason
        return _approvals(request, error=str(exc), error_job=job.pk, status=400)
    who = job.created_by.display_name if job.created_by else "The member"
    if job.status == JobStatus.QUEUED:
        done = f"Approved: {job.title} runs now."
    elif approve == "1":  # a budget spent meanwhile refused it
        messages.error(request, f"{job.title} could not start: {job.message}")
        done = ""
    else:
        done = f"Refused. {who} is told why."
    return changed(request, reverse("projects:approvals"), done)


@workspace_view(Role.MANAGER)
@require_POST
def threshold(request):
    form = ThresholdForm(request.POST)
    if not form.is_valid():
        return _approvals(request, threshold_form=form, status=400)
    try:
        narration.threshold_set(
            workspace=request.workspace, threshold=form.cleaned_data["threshold"]
        )
    except narration.ProjectRefused as exc:
        form.add_error("threshold", str(exc))
        return _approvals(request, threshold_form=form, status=400)
    value = form.cleaned_data["threshold"]
    return changed(
        request,
        reverse("projects:approvals"),
        "Final renders never wait for approval now."
        if value is None
        else f"Final renders above {value:,} credits now wait for a manager's approval.",
    )
