"""The History page: every clip the workspace made, playable; searched and filtered in the URL,
design previews grouped per design, the parts of a speech take grouped per take, downloaded
or deleted one by one or in bulk."""

import re
import tempfile

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    QueryDict,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import push_url

from apps.workspaces.access import get_scoped, scoped, workspace_view
from apps.workspaces.models import Role

from . import services
from .forms import MAX_SELECTED, HistoryFilterForm, day_after, day_start
from .models import Generation

PAGE_SIZE = 25
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# The filters a bulk action carries back to the page it came from.
FILTER_NAMES = ("q", "kind", "voice", "member", "date_from", "date_to", "item", "take", "page")


def _get_generation(request, pk: int) -> Generation:
    return get_scoped(request, Generation.objects.select_related("user", "usage_event"), pk=pk)


def _list_context(request, params) -> dict:
    """The page for ``params`` (the URL's query): the filter form and one page of entries.

    A filter that does not parse is left out (the rest still apply) and said next to it."""
    form = HistoryFilterForm(
        params,
        workspace=request.workspace,
        voices=services.history_voices(workspace=request.workspace),
    )
    form.is_valid()
    data = {k: v for k, v in form.cleaned_data.items() if k not in form.errors}
    generations = services.history_search(
        scoped(request, Generation).select_related("user", "usage_event"),
        q=data.get("q") or "",
        kind=data.get("kind") or "",
        voice=data.get("voice") or "",
        member=data.get("member"),
        since=day_start(data["date_from"]) if data.get("date_from") else None,
        until=day_after(data["date_to"]) if data.get("date_to") else None,
        item=data.get("item") or "",
        take=data.get("take") or "",
    )
    page = Paginator(generations, PAGE_SIZE).get_page(params.get("page"))
    clips = list(page.object_list)
    for generation in clips:
        generation.deletable = services.generation_can_delete(
            generation=generation, user=request.user, membership=request.membership
        )
    links = services.clip_links(workspace=request.workspace, generations=clips)
    takes = services.history_takes(workspace=request.workspace, generations=clips)
    query = form.as_query()
    return {
        "form": form,
        "page": page,
        "entries": services.history_entries(clips, links, takes),
        "filtered": bool(query),
        "query": urlencode(query),
        "page_query": urlencode({**query, "page": page.number}),
    }


@workspace_view()
@require_GET
def history_list(request):
    """Every clip of the workspace, newest first, as the URL's filters ask; with htmx, only
    the table (and the address bar shows the filters in force)."""
    context = _list_context(request, request.GET)
    status = 400 if context["form"].errors else 200
    if request.htmx:
        response = render(request, "history/list.html#table", context, status=status)
        query = context["query"]
        page = request.GET.get("page")
        if page and page != "1":
            query = f"{query}&page={page}" if query else f"page={page}"
        return push_url(response, reverse("history:list") + (f"?{query}" if query else ""))
    return render(request, "history/list.html", context, status=status)


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
    if request.htmx:
        return render(request, "history/list.html#table", _list_context(request, request.POST))
    return HttpResponseRedirect(_back_url(request.POST), status=303)


def _back_url(params) -> str:
    """The History page with the filters (and page) the action was taken on."""
    kept = QueryDict(mutable=True)
    for name in FILTER_NAMES:
        value = params.get(name, "")
        if value and not (name == "page" and value == "1"):
            kept[name] = value[:200]
    query = kept.urlencode()
    return reverse("history:list") + (f"?{query}" if query else "")


class _BadSelection(Exception):
    pass


def _selected(request) -> tuple[list[Generation], int]:
    """The clips ticked on the page, of this workspace only, and how many ids named none."""
    raw = request.POST.getlist("ids")
    if len(raw) > MAX_SELECTED:
        raise _BadSelection(f"Select at most {MAX_SELECTED} clips at a time.")
    try:
        ids = {int(value) for value in raw}
    except ValueError as exc:
        raise _BadSelection("The selection names a clip that does not exist.") from exc
    found = list(
        scoped(request, Generation).filter(pk__in=ids).select_related("user", "usage_event")
    )
    return found, len(ids) - len(found)


@workspace_view()
@require_POST
def history_bulk_download(request):
    """The ticked clips as one ZIP, built in a temporary file and streamed from it.

    Only this workspace's clips: an id of any other (or of a deleted clip) is a 404, so a
    download never quietly lacks a clip someone expects in it."""
    try:
        clips, unknown = _selected(request)
    except _BadSelection as exc:
        return HttpResponseBadRequest(str(exc))
    if unknown:
        raise Http404("Some of the selected clips are not in this workspace (or were deleted).")
    if not clips:
        messages.error(request, "Tick the clips to download first.")
        return HttpResponseRedirect(_back_url(request.POST), status=303)
    out = tempfile.TemporaryFile()  # noqa: SIM115 (the response closes it, so removes it)
    try:
        services.generations_zip(generations=clips, out=out)
        out.seek(0)
    except BaseException:
        out.close()
        raise
    stamp = timezone.localtime().strftime("%Y-%m-%d_%H%M")
    return FileResponse(
        out,
        as_attachment=True,
        filename=f"chorus-history-{stamp}.zip",
        content_type="application/zip",
    )


@workspace_view(Role.MEMBER)
@require_POST
def history_bulk_delete(request):
    """Delete the ticked clips, after a confirmation page (``confirm=1`` does it).

    A member deletes their own clips, a manager any; the rest are left and said so. The
    ledger keeps every row: what the clips cost stays billed and listed in usage."""
    try:
        clips, unknown = _selected(request)
    except _BadSelection as exc:
        return HttpResponseBadRequest(str(exc))
    back = _back_url(request.POST)
    deletable, kept = [], []
    for generation in clips:
        allowed = services.generation_can_delete(
            generation=generation, user=request.user, membership=request.membership
        )
        (deletable if allowed else kept).append(generation)
    if unknown:
        messages.warning(
            request,
            f"{unknown} of the selected clips are not in this workspace (or were already "
            "deleted): nothing was done to them.",
        )
    if not deletable:
        messages.error(request, "None of the selected clips can be deleted by you.")
        return HttpResponseRedirect(back, status=303)
    if request.POST.get("confirm") != "1":
        return render(
            request,
            "history/bulk_delete.html",
            {"deletable": deletable, "kept": kept, "back": back, "filters": _filters(request)},
        )
    for generation in deletable:
        services.generation_delete(generation=generation)
    count = len(deletable)
    messages.info(
        request,
        f"{count} clip{'' if count == 1 else 's'} deleted. What they cost stays in the "
        "usage ledger.",
    )
    if kept:
        messages.warning(
            request,
            f"{len(kept)} clip{'' if len(kept) == 1 else 's'} made by teammates "
            f"{'was' if len(kept) == 1 else 'were'} kept: only their author or a manager can "
            "delete them.",
        )
    return HttpResponseRedirect(back, status=303)


def _filters(request) -> list[tuple[str, str]]:
    return [(n, request.POST[n][:200]) for n in FILTER_NAMES if request.POST.get(n)]


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


def byte_range(request, size: int | None) -> tuple[int, int] | HttpResponse | None:
    """The one byte range a ``Range: bytes=…`` header asks of ``size`` bytes, as ``(start,
    end)`` (inclusive); ``None`` for the whole file (no header, no size); a 416 response for a
    range outside it."""
    match = _RANGE.match(request.headers.get("Range", "").strip())
    if not (size and match and (match.group(1) or match.group(2))):
        return None
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last) if last else size - 1, size - 1)
    else:  # "bytes=-N": the last N bytes
        start, end = max(0, size - int(last)), size - 1
    if start >= size or start > end:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    return start, end


def stored_audio_response(request, *, storage, name, content_type, filename, download=False):
    """A stored audio file whole (200) or the one byte range asked for (206)."""
    if not name or not storage.exists(name):
        raise Http404("This audio file is missing.")
    size = storage.size(name)
    wanted = byte_range(request, size)
    if isinstance(wanted, HttpResponse):
        return wanted
    if wanted is not None:
        start, end = wanted
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
