"""The History page: every clip the workspace made, playable, filterable by kind, deletable."""

import re

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from apps.workspaces.access import get_scoped, scoped, workspace_view
from apps.workspaces.models import Role

from . import services
from .models import Generation, GenerationKind

PAGE_SIZE = 25
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _get_generation(request, pk: int) -> Generation:
    return get_scoped(request, Generation.objects.select_related("user", "usage_event"), pk=pk)


def _list_context(request, *, kind: str, page_number) -> dict:
    generations = scoped(request, Generation).select_related("user", "usage_event")
    if kind in GenerationKind.values:
        generations = generations.filter(kind=kind)
    else:
        kind = ""
    page = Paginator(generations, PAGE_SIZE).get_page(page_number)
    for generation in page.object_list:
        generation.deletable = services.generation_can_delete(
            generation=generation, user=request.user, membership=request.membership
        )
    return {"page": page, "kind": kind, "kinds": GenerationKind.choices}


@workspace_view()
@require_GET
def history_list(request):
    """Every clip of the workspace, newest first; with htmx, only the table."""
    context = _list_context(
        request, kind=request.GET.get("kind", ""), page_number=request.GET.get("page")
    )
    template = "history/list.html#table" if request.htmx else "history/list.html"
    return render(request, template, context)


@workspace_view()
@require_GET
def history_audio(request, pk: int):
    """The clip's audio, seekable (HTTP Range); ``?download=1`` saves it instead."""
    generation = _get_generation(request, pk)
    return audio_response(request, generation, download=request.GET.get("download") == "1")


@workspace_view(Role.MEMBER)
@require_POST
def history_delete(request, pk: int):
    """Delete a clip: its author, or an owner or manager. Its ledger row stays."""
    generation = _get_generation(request, pk)
    if not services.generation_can_delete(
        generation=generation, user=request.user, membership=request.membership
    ):
        raise PermissionDenied("Only whoever made this clip, or a manager, can delete it.")
    services.generation_delete(generation=generation)
    messages.info(request, "Clip deleted. What it cost stays in the usage ledger.")
    kind = request.POST.get("kind", "")
    if request.htmx:
        context = _list_context(request, kind=kind, page_number=request.POST.get("page"))
        return render(request, "history/list.html#table", context)
    query = f"?{urlencode({'kind': kind})}" if kind in GenerationKind.values else ""
    return HttpResponseRedirect(reverse("history:list") + query, status=303)


def audio_response(request, generation: Generation, *, download: bool):
    """The clip's file whole (200) or the one byte range asked for (206), as players seek."""
    extension = services.EXTENSIONS.get(generation.content_type.split(";")[0], "bin")
    return stored_audio_response(
        request,
        storage=generation.file.storage,
        name=generation.file.name,
        content_type=generation.content_type,
        filename=f"{generation.kind}-{generation.history_item_id}.{extension}",
        download=download,
    )


def stored_audio_response(request, *, storage, name, content_type, filename, download=False):
    """A stored audio file whole (200) or the one byte range asked for (206)."""
    if not name or not storage.exists(name):
        raise Http404("This audio file is missing.")
    size = storage.size(name)
    match = _RANGE.match(request.headers.get("Range", "").strip())
    if match and (match.group(1) or match.group(2)) and size:
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
        else:  # "bytes=-N": the last N bytes
            start, end = max(0, size - int(last)), size - 1
        if start >= size or start > end:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        with storage.open(name, "rb") as handle:
            handle.seek(start)
            chunk = handle.read(end - start + 1)
        response = HttpResponse(chunk, status=206, content_type=content_type)
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    else:
        response = FileResponse(
            storage.open(name, "rb"),
            content_type=content_type,
            as_attachment=download,
            filename=filename,
        )
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, max-age=3600"
    return response
