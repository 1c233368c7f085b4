"""The voice library page: every voice the team can use, filtered in the URL, and curated."""

import re

from django.contrib import messages
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import push_url

from apps.jobs.services import job_start
from apps.workspaces.access import get_scoped, scoped, workspace_view
from apps.workspaces.models import Role
from apps.workspaces.services import ActionRefused
from studio_site.format import label_of, language_of

from . import services
from .models import Approval, Collection, LibraryVoice, Tag
from .services_preview import preview_available, preview_made_here


def _facet_text(name: str, value: str) -> str:
    """What a filter menu shows for a label value: "middle_aged" → "Middle-aged", "en" →
    "English" (the value sent stays the code)."""
    return language_of(value) if name == "language" else label_of(value)


@workspace_view()
@require_GET
def library(request):
    """The library; with htmx, only the results (the filters stay as the member set them)."""
    filters = services.LibraryFilters.from_query(request.GET)
    found = services.library_page(
        workspace=request.workspace,
        user=request.user,
        filters=filters,
        page_number=request.GET.get("page"),
    )
    facet_menus = [
        (
            name,
            f"Any {label_of(name).lower()}",
            [
                (value, _facet_text(name, value), value.lower() == getattr(filters, name).lower())
                for value in values
            ],
        )
        for name, values in found.facets.items()
        if values
    ]
    staleness = None
    if request.membership.can_manage and not request.htmx:
        from .services_sync import library_staleness

        staleness = library_staleness(request.workspace)
    context = {
        "staleness": staleness,
        "found": found,
        "facet_menus": facet_menus,
        "page": found.page,
        "filters": filters,
        "query": urlencode(filters.as_query()),
        "approvals": Approval.choices,
        "sorts": [
            ("name", "Name"),
            ("newest", "Newest"),
            ("most_used", "Most used"),
            ("recent", "Recently used"),
        ],
        "is_filtered": bool({k for k in filters.as_query() if k != "sort"}),
    }
    if not request.htmx:
        return render(request, "voices/library.html", context)
    response = render(request, "voices/library.html#results", context)
    # The address bar gets the filters in force only, not every empty menu of the form:
    # a link someone can read and share.
    query = filters.as_query()
    if request.GET.get("page"):
        query["page"] = request.GET["page"]
    return push_url(response, reverse("voices:library") + (f"?{urlencode(query)}" if query else ""))


@workspace_view(Role.MANAGER)
@require_POST
def library_sync(request):
    """Start a sync from the engine as a job, and go to its page (live progress)."""
    job = job_start(
        workspace=request.workspace,
        kind="voices_sync",
        created_by=request.user,
        message="Waiting for a worker to read the engine's voices",
    )
    messages.info(request, "Syncing the library from the engine. Withdrawn voices are kept.")
    return HttpResponseRedirect(reverse("jobs:detail", args=[job.pk]), status=303)


@workspace_view(Role.MEMBER)
@require_POST
def favourite(request, pk: int):
    """Star or unstar a voice for yourself; with htmx, only its star is redrawn."""
    voice = get_scoped(request, LibraryVoice, pk=pk)
    voice.is_favourite = services.favourite_toggle(voice=voice, user=request.user)
    if request.htmx:
        return render(request, "voices/library.html#star", {"voice": voice})
    back = request.POST.get("next", "")
    target = reverse("voices:library") + (f"?{back}" if back and "//" not in back else "")
    return HttpResponseRedirect(target, status=303)


# --- One voice ----------------------------------------------------------------------------


def _voice(request, pk: int) -> LibraryVoice:
    return get_scoped(request, LibraryVoice, pk=pk)


def _detail(
    request, voice: LibraryVoice, *, error: str = "", status: int = 200, try_text: str = ""
):
    from apps.history.models import Generation

    from . import services_usage
    from .models import VoiceConsent

    clip = None
    if re.fullmatch(r"[0-9]{1,18}", request.GET.get("clip", "")):
        clip = (
            scoped(request, Generation)
            .filter(pk=int(request.GET["clip"]), voice_id=voice.voice_id)
            .first()
        )
    text = try_text or ""
    context = {
        "voice": voice,
        "usage": services_usage.voice_usage(voice),
        "has_preview": preview_available(voice),
        # An upstream voice's recording is played from its own site (no waveform there).
        "preview_elsewhere": not preview_made_here(voice)
        and voice.preview_url.startswith("https://"),
        "consent": scoped(request, VoiceConsent)
        .filter(engine=voice.engine, voice_id=voice.voice_id)
        .first(),
        "design": voice.design,
        "try_text": text,
        "try_max": services_usage.TRY_MAX,
        "estimate": services_usage.try_estimate(
            voice=voice, user=request.user, characters=len(text.strip())
        ),
        "characters": len(text.strip()),
        "clip": clip,
        "is_favourite": voice.favourites.filter(user=request.user).exists(),
        "tags": list(voice.tags.all()),
        "collections": list(voice.collections.all()),
        "notes": list(voice.notes.select_related("author")[:50]),
        "changes": list(voice.changes.select_related("actor")[:50]),
        "error": error,
        "note_max": services.NOTE_MAX,
    }
    return render(request, "voices/detail.html", context, status=status)


@workspace_view()
@require_GET
def voice_preview(request, pk: int):
    """The voice's preview: made once for the local engine's voices, the studio's own for a
    designed or cloned voice, the upstream recording for an ElevenLabs one (see
    ``services_preview``). Anyone in the workspace may listen; another workspace gets 404."""
    from django.core.files.storage import default_storage

    from apps.history.views import stored_audio_response

    from . import services_preview

    voice = _voice(request, pk)
    try:
        preview = services_preview.voice_preview(voice)
    except ActionRefused as exc:
        raise Http404(str(exc)) from exc
    if preview.url:
        return HttpResponseRedirect(preview.url)
    return stored_audio_response(
        request,
        storage=default_storage,
        name=preview.name,
        content_type=preview.content_type,
        filename=f"{voice.name} preview.mp3",
    )


@workspace_view()
@require_GET
def voice_detail(request, pk: int):
    """Everything about one voice: labels, preview, tags, collections, notes, approval, history."""
    return _detail(request, _voice(request, pk))


def _act(request, pk: int, action, done: str):
    """Run ``action(voice)``; a refusal is shown on the page (400), success redirects back."""
    voice = _voice(request, pk)
    try:
        action(voice)
    except ActionRefused as exc:
        return _detail(request, voice, error=str(exc), status=400)
    messages.success(request, done)
    return HttpResponseRedirect(reverse("voices:detail", args=[voice.pk]), status=303)


@workspace_view(Role.MEMBER)
@require_POST
def voice_propose(request, pk: int):
    return _act(
        request,
        pk,
        lambda voice: services.voice_propose(voice=voice, actor=request.user),
        "Proposed for production: a manager will review it.",
    )


@workspace_view(Role.MANAGER)
@require_POST
def voice_review(request, pk: int):
    approve = request.POST.get("decision") == "approve"
    return _act(
        request,
        pk,
        lambda voice: services.voice_review(
            voice=voice, actor=request.user, approve=approve, reason=request.POST.get("reason", "")
        ),
        "Approved for production." if approve else "Rejected; the reason is on the voice.",
    )


@workspace_view(Role.MEMBER)
@require_POST
def note_add(request, pk: int):
    return _act(
        request,
        pk,
        lambda voice: services.note_add(
            voice=voice, author=request.user, text=request.POST.get("text", "")
        ),
        "Note added.",
    )


@workspace_view(Role.MANAGER)
@require_POST
def tag_add(request, pk: int):
    return _act(
        request,
        pk,
        lambda voice: services.tag_add(
            voice=voice, name=request.POST.get("name", ""), actor=request.user
        ),
        "Tag added.",
    )


@workspace_view(Role.MANAGER)
@require_POST
def tag_remove(request, pk: int, tag_pk: int):
    tag = get_scoped(request, Tag, pk=tag_pk)
    return _act(
        request,
        pk,
        lambda voice: services.tag_remove(voice=voice, tag=tag, actor=request.user),
        f"Tag {tag.name} removed.",
    )


@workspace_view(Role.MANAGER)
@require_POST
def collection_add(request, pk: int):
    return _act(
        request,
        pk,
        lambda voice: services.collection_add(
            voice=voice, name=request.POST.get("name", ""), actor=request.user
        ),
        "Added to the collection.",
    )


@workspace_view(Role.MANAGER)
@require_POST
def collection_remove(request, pk: int, collection_pk: int):
    collection = get_scoped(request, Collection, pk=collection_pk)
    return _act(
        request,
        pk,
        lambda voice: services.collection_remove(
            voice=voice, collection=collection, actor=request.user
        ),
        f"Removed from {collection.name}.",
    )
