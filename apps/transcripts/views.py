"""Transcripts pages: the list, the upload form, a transcript to read, play, edit and export."""

import re

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.history.views import stored_audio_response
from apps.jobs import services as job_services
from apps.workspaces.access import get_scoped, has_role, scoped, workspace_view
from apps.workspaces.models import Role
from apps.workspaces.services import ActionRefused

from . import document, services
from .forms import LiveForm, UploadForm
from .models import Transcript, TranscriptStatus

PAGE_SIZE = 25


@workspace_view()
@require_GET
def transcript_list(request):
    transcripts = scoped(request, Transcript).select_related("created_by", "job")
    query = request.GET.get("q", "").strip()
    if query:
        transcripts = transcripts.filter(title__icontains=query)
    page = Paginator(transcripts, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "transcripts/list.html", {"page": page, "q": query})


def _upload_page(request, form, *, error: str = "", status: int = 200):
    context = {
        "form": form,
        "error": error,
        "max_mb": settings.CHORUS_TRANSCRIBE_MAX_MB,
        "max_length": services.MAX_LENGTH_SHOWN,
        "accept": ",".join(services.MEDIA_TYPES),
        "rate": services.transcribe_estimate(
            workspace=request.workspace, user=request.user, seconds=60
        ),
    }
    return render(request, "transcripts/new.html", context, status=status)


@workspace_view(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def transcript_new(request):
    """The upload form; POST keeps the file and starts the job (then its page)."""
    if request.method == "GET":
        return _upload_page(request, UploadForm())
    form = UploadForm(request.POST)
    upload = request.FILES.get("media")
    if not form.is_valid():
        return _upload_page(request, form, status=400)
    if upload is None:
        return _upload_page(request, form, error="Choose a recording to transcribe.", status=400)
    try:
        transcript = services.transcript_start(
            workspace=request.workspace,
            user=request.user,
            upload=upload,
            title=form.cleaned_data.get("title", ""),
            options=form.options(),
        )
    except ActionRefused as exc:
        return _upload_page(request, form, error=str(exc), status=400)
    messages.success(request, "Uploaded. Transcribing now; you can leave this page.")
    target = reverse("transcripts:detail", args=[transcript.pk])
    if request.htmx:
        return HttpResponseClientRedirect(target)
    return HttpResponseRedirect(target, status=303)


def _transcript(request, pk: int) -> Transcript:
    return get_scoped(request, Transcript.objects.select_related("job", "created_by"), pk=pk)


def _reading(request, transcript: Transcript, *, error: str = "", status: int = 200):
    """The transcript page; with htmx (an edit), only its body."""
    query = request.GET.get("q", "").strip()
    found = services.search(transcript, query)
    keyterms = {t.lower() for t in transcript.keyterms}
    rows = []
    for paragraph in document.paragraphs(transcript.words):
        rows.append(
            {
                "paragraph": paragraph,
                "speaker": document.speaker_name(transcript.speakers, paragraph.speaker_id),
                "clock": document.clock(paragraph.start),
                "edit_text": document.join_words(
                    [w for _, w in paragraph.words if w.get("type") != "audio_event"]
                ),
                "words": [
                    {
                        "position": position,
                        "word": word,
                        "found": position in found,
                        "keyterm": word["text"].lower().strip(".,;:!?\"'()") in keyterms,
                        "redacted": bool(
                            re.fullmatch(r"\[[A-Z_]+(_\d+)?\][.,;:!?]?", word["text"])
                        ),
                        "category": re.sub(r"[^a-z]+", " ", word["text"].lower()).strip(),
                        "event": word.get("type") == "audio_event",
                    }
                    for position, word in paragraph.words
                ],
            }
        )
    context = {
        "transcript": transcript,
        "job": transcript.job,
        "rows": rows,
        "q": query,
        "found": len(found),
        "speakers": [
            (sid, document.speaker_name(transcript.speakers, sid))
            for sid in services.speaker_ids(transcript)
        ],
        "can_edit": has_role(request, Role.MEMBER) and transcript.status == TranscriptStatus.READY,
        "can_delete": transcript.created_by_id == request.user.pk
        or has_role(request, Role.MANAGER),
        "new_speaker": _new_speaker_id(transcript),
        "error": error,
        "exports": EXPORTS,
    }
    template = "transcripts/detail.html#body" if request.htmx else "transcripts/detail.html"
    return render(request, template, context, status=status)


def _new_speaker_id(transcript: Transcript) -> str:
    taken = set(services.speaker_ids(transcript))
    number = 0
    while f"speaker_{number}" in taken:
        number += 1
    return f"speaker_{number}"


@workspace_view()
@require_GET
def transcript_detail(request, pk: int):
    return _reading(request, _transcript(request, pk))


@workspace_view()
@require_GET
def transcript_progress(request, pk: int):
    """The job's progress (polled by htmx); once the job is over the page reloads itself."""
    transcript = _transcript(request, pk)
    response = render(
        request,
        "transcripts/detail.html#progress",
        {"transcript": transcript, "job": transcript.job},
    )
    if transcript.status in (TranscriptStatus.READY, TranscriptStatus.FAILED):
        response["HX-Refresh"] = "true"
    return response


@workspace_view()
@require_GET
def transcript_media(request, pk: int):
    transcript = _transcript(request, pk)
    return stored_audio_response(
        request,
        storage=transcript.media.storage,
        name=transcript.media.name,
        # Chosen from the extension, never the type the uploader's browser claimed.
        content_type=services.media_content_type(transcript.filename)
        if transcript.source != "live"
        else "audio/wav",
        filename=transcript.filename or "recording",
    )


@workspace_view(Role.MEMBER)
@require_POST
def transcript_retry(request, pk: int):
    transcript = _transcript(request, pk)
    if transcript.status != TranscriptStatus.FAILED or transcript.job is None:
        return _reading(request, transcript, error="Only a failed transcript can be retried.",
                        status=400)  # fmt: skip
    try:
        job_services.job_retry(job=transcript.job)
    except ValueError as exc:
        return _reading(request, transcript, error=str(exc), status=400)
    transcript.status, transcript.error = TranscriptStatus.QUEUED, ""
    transcript.save(update_fields=["status", "error", "updated_at"])
    messages.info(request, "Transcribing again.")
    return HttpResponseRedirect(reverse("transcripts:detail", args=[transcript.pk]), status=303)


@workspace_view(Role.MEMBER)
@require_POST
def transcript_delete(request, pk: int):
    transcript = _transcript(request, pk)
    if transcript.created_by_id != request.user.pk and not has_role(request, Role.MANAGER):
        raise PermissionDenied("Only whoever uploaded it, or a manager, can delete it.")
    services.transcript_delete(transcript=transcript)
    messages.info(request, f"Deleted “{transcript.title}”.")
    return HttpResponseRedirect(reverse("transcripts:list"), status=303)


# --- Editing --------------------------------------------------------------------------------


def _number(value, name: str) -> int:
    if not re.fullmatch(r"[0-9]{1,7}", str(value or "")):
        raise ActionRefused(f"{name} must be a whole number.")
    return int(value)


def _edited(request, pk: int, change, done: str):
    """Apply ``change(transcript)``; with htmx the transcript body is redrawn."""
    transcript = _transcript(request, pk)
    try:
        transcript = change(transcript)
    except ActionRefused as exc:
        return _reading(request, transcript, error=str(exc), status=400)
    if request.htmx:
        response = _reading(request, transcript)
        response["HX-Trigger"] = "transcript-saved"
        return response
    messages.success(request, done)
    return HttpResponseRedirect(reverse("transcripts:detail", args=[transcript.pk]), status=303)


@workspace_view(Role.MEMBER)
@require_POST
def paragraph_edit(request, pk: int, number: int):
    return _edited(
        request,
        pk,
        lambda t: services.paragraph_edit(
            transcript=t, number=number, text=request.POST.get("text", "")
        ),
        "Paragraph saved.",
    )


@workspace_view(Role.MEMBER)
@require_POST
def paragraph_speaker(request, pk: int, number: int):
    return _edited(
        request,
        pk,
        lambda t: services.paragraph_reassign(
            transcript=t, number=number, speaker_id=request.POST.get("speaker_id", "")
        ),
        "Speaker changed for this paragraph.",
    )


@workspace_view(Role.MEMBER)
@require_POST
def paragraph_split(request, pk: int, number: int):
    return _edited(
        request,
        pk,
        lambda t: services.paragraph_split(
            transcript=t, number=number, at=_number(request.POST.get("at"), "The word")
        ),
        "Paragraph split.",
    )


@workspace_view(Role.MEMBER)
@require_POST
def paragraph_merge(request, pk: int, number: int):
    return _edited(
        request,
        pk,
        lambda t: services.paragraph_merge(transcript=t, number=number),
        "Paragraphs merged.",
    )


@workspace_view(Role.MEMBER)
@require_POST
def speaker_rename(request, pk: int):
    return _edited(
        request,
        pk,
        lambda t: services.speaker_rename(
            transcript=t,
            speaker_id=request.POST.get("speaker_id", ""),
            name=request.POST.get("name", ""),
        ),
        "Speaker renamed everywhere.",
    )


# --- Exports --------------------------------------------------------------------------------

EXPORTS = [
    ("txt", "Text (.txt)"),
    ("json", "JSON (ElevenLabs shape)"),
    ("srt", "SubRip captions (.srt)"),
    ("vtt", "WebVTT captions (.vtt)"),
    ("docx", "Word (.docx)"),
    ("segments", "Segmented JSON"),
]


@workspace_view()
@require_GET
def transcript_export(request, pk: int, fmt: str):
    """The transcript as a file; captions take ``max_chars``, ``max_lines``, ``max_seconds``."""
    transcript = _transcript(request, pk)
    if transcript.status != TranscriptStatus.READY:
        return HttpResponse("The transcript is not ready yet.", status=409,
                            content_type="text/plain")  # fmt: skip
    try:
        rules = document.CueRules.from_query(request.GET)
    except document.EditRefused as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    name = slugify(transcript.title) or f"transcript-{transcript.pk}"
    if fmt == "txt":
        body, kind, ext = (
            document.to_txt(transcript.words, transcript.speakers, transcript.title),
            "text/plain; charset=utf-8",
            "txt",
        )
    elif fmt == "json":
        body, kind, ext = document.to_json(transcript), "application/json", "json"
    elif fmt == "segments":
        body, kind, ext = document.to_segments(transcript), "application/json", "segments.json"
    elif fmt == "srt":
        body, kind, ext = (
            document.to_srt(transcript.words, rules),
            "application/x-subrip; charset=utf-8",
            "srt",
        )
    elif fmt == "vtt":
        body, kind, ext = (
            document.to_vtt(transcript.words, transcript.speakers, rules),
            "text/vtt; charset=utf-8",
            "vtt",
        )
    elif fmt == "docx":
        body = document.to_docx(transcript)
        kind = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        ext = "docx"
    else:
        raise Http404("No such export.")
    response = HttpResponse(body, content_type=kind)
    response["Content-Disposition"] = f'attachment; filename="{name}.{ext}"'
    return response


# --- Live captions ----------------------------------------------------------------------------


@workspace_view(Role.MEMBER)
@require_GET
def live_page(request):
    """Start/Stop, the level meter and the captions; the microphone streams over a socket."""
    return render(request, "transcripts/live.html", {"form": LiveForm()})


@workspace_view(Role.MEMBER)
@require_POST
def live_start(request):
    """A new live session; its socket path and its watch page, as JSON."""
    from . import live

    try:
        transcript = live.live_start(
            workspace=request.workspace,
            user=request.user,
            language_code=request.POST.get("language_code", ""),
        )
    except ActionRefused as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(
        {
            "id": transcript.pk,
            "socket": f"/ws/transcripts/live/{transcript.pk}/",
            "watch": reverse("transcripts:watch", args=[transcript.pk]),
        }
    )


@workspace_view()
@require_GET
def live_watch(request, pk: int):
    """Someone else's live captions, as they are spoken (viewers too)."""
    transcript = get_scoped(request, Transcript, pk=pk, source="live")
    if transcript.status != TranscriptStatus.RUNNING:
        return HttpResponseRedirect(reverse("transcripts:detail", args=[transcript.pk]))
    return render(request, "transcripts/watch.html", {"transcript": transcript})
