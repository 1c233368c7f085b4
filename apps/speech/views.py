"""The Speech page: text to speech in the studio, metered as the member's own call.

- ``page``: the form (``?from=<clip>`` fills it from a History clip's recipe, ``?text=``
  with a text, as Home's quick speech box sends it).
- ``generate`` (POST): checks the form and the budget. An MP3 take is handed to the player
  as a pending take (its recipe in the session) whose ``take_stream`` URL speaks it sentence
  by sentence; other formats, and a page without JavaScript, are made whole at once.
- ``take_stream``: the pending take's audio, streamed as it is made (opened once).
- ``take``: the take once kept in History (the waveform player and its download), 204 until
  its stream has ended.
- ``take_audio``: the whole take a History clip is a part of, as one file (viewers too, as
  they may listen to History's clips).

A text longer than the model takes in one request is split at sentences into parts, each
its own core call (``services.take_parts``), made one after the other: streamed, they play
back to back in the one ``<audio>``.
"""

import json
import math
from dataclasses import replace

from django.http import Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from apps.history.models import Generation, GenerationKind
from apps.history.views import byte_range
from apps.workspaces.access import get_scoped, workspace_view
from apps.workspaces.models import Role
from apps.workspaces.services import ActionRefused

from . import services
from .forms import SpeechForm
from .take_audio import take_audio as take_audio_of


def _choices(request, *, include: str = ""):
    voices = services.speech_voices(workspace=request.workspace, user=request.user, include=include)
    models = services.speech_models(workspace=request.workspace, user=request.user)
    return voices, models


def _initial(voices, recipe: services.TakeRecipe | None, *, last_voice: str = "") -> dict:
    if recipe is not None:
        return {
            "text": recipe.text,
            "voice_id": recipe.voice_id,
            "model_id": recipe.model_id,
            "output_format": recipe.output_format,
            "seed": recipe.seed,
            **recipe.voice_settings,
        }
    voice = services.voice_default(voices, last=last_voice)
    settings = voice.settings if voice else services.TakeRecipe("", "").voice_settings
    return {
        "voice_id": voice.voice_id if voice else "",
        "model_id": services.DEFAULT_MODEL,
        "output_format": services.DEFAULT_OUTPUT_FORMAT,
        **settings,
    }


def _render(request, form, voices, models, *, status=200, part: str = "", **extra):
    membership = request.membership
    can_create = bool(membership and membership.can_create)
    text = form["text"].value() or ""
    model_id = form["model_id"].value() or services.DEFAULT_MODEL
    estimate = services.speech_estimate(
        workspace=request.workspace,
        user=request.user,
        model_id=model_id,
        characters=len(str(text).strip()),
    )
    left = estimate.member_left if estimate.member_left is not None else estimate.workspace_left
    chosen = form["voice_id"].value()
    part_max = services.part_limit(workspace=request.workspace, model_id=model_id)
    context = {
        "form": form,
        "voices": voices,
        "chosen_voice": chosen,
        "models": models,
        "sliders": [form[name] for name in services.SLIDERS],
        "estimate": estimate,
        "credits_left": left,
        "characters": len(str(text).strip()),
        "parts_estimate": math.ceil(len(str(text).strip()) / part_max),
        "take_max": services.TAKE_MAX,
        "part_max": part_max,
        "can_create": can_create,
        "estimate_data": json.dumps(
            {
                "rates": {m.model_id: str(m.credits_per_character) for m in models},
                "max": {m.model_id: m.max_characters for m in models},
                "left": None if left is None else str(left),
            }
        ),
        "voice_settings": json.dumps({v.voice_id: v.settings for v in voices}),
        **extra,
    }
    if part:  # htmx: only the form, in place of the one on the page
        response = render(request, f"speech/page.html#{part}", context, status=status)
        return reswap(retarget(response, "#speech-form"), "outerHTML")
    return render(request, "speech/page.html", context, status=status)


@workspace_view()
@require_GET
def page(request):
    """The form; ``?from=<History clip>`` fills it with that clip's recipe."""
    recipe = None
    clip = None
    from_error = ""
    if "from" in request.GET:
        clip = get_scoped(
            request, Generation.objects.select_related("usage_event"), pk=request.GET["from"]
        )
        try:
            recipe = services.take_recipe_from(clip)
        except ActionRefused as exc:
            from_error, clip = str(exc), None
    take = services.take_of_clip(clip) if clip is not None else None
    if take is not None and len(take.clips) > 1:  # the whole take's text, all its parts
        recipe = replace(recipe, text=take.text)
    voices, models = _choices(request, include=recipe.voice_id if recipe else "")
    last_voice = (
        "" if recipe else services.last_voice(workspace=request.workspace, user=request.user)
    )
    initial = _initial(voices, recipe, last_voice=last_voice)
    if recipe is None and request.GET.get("text"):  # from Home's quick speech box
        initial["text"] = request.GET["text"][: services.TAKE_MAX]
    form = SpeechForm(initial=initial, voices=voices, models=models)
    return _render(
        request,
        form,
        voices,
        models,
        status=400 if from_error else 200,
        from_error=from_error,
        from_clip=clip,
        take=take,
    )


def _refused(request, form, voices, models, message: str, *, status: int):
    """The form again with ``message`` above it (with htmx, only the form)."""
    form.add_error(None, message)
    return _render(
        request, form, voices, models, status=status, part="form" if request.htmx else ""
    )


@workspace_view(Role.MEMBER)
@require_POST
def generate(request):
    """Check the take; stream it (MP3, with htmx) or make it whole."""
    voices, models = _choices(request, include=request.POST.get("voice_id", ""))
    form = SpeechForm(request.POST, voices=voices, models=models)
    if not form.is_valid():
        part = "form" if request.htmx else ""
        return _render(request, form, voices, models, status=400, part=part)
    recipe = form.recipe()
    try:
        estimate = services.take_check(
            workspace=request.workspace, user=request.user, recipe=recipe
        )
    except ActionRefused as exc:  # a budget (429), or the workspace's voice rules (400)
        status = 429 if isinstance(exc, services.TakeTooDear) else 400
        return _refused(request, form, voices, models, str(exc), status=status)
    if request.htmx and recipe.streamed:
        token = services.take_remember(
            request.session, workspace_id=request.workspace.pk, recipe=recipe
        )
        return render(
            request,
            "speech/page.html#take",
            {
                "pending": token,
                "estimate": estimate,
                "characters": len(recipe.text),
                "parts": len(services.take_parts(workspace=request.workspace, recipe=recipe)),
                "stream_url": reverse("speech:take_stream", args=[token]),
                "take_url": reverse("speech:take", args=[token]),
            },
        )
    try:
        take = services.take_make(
            workspace=request.workspace,
            user=request.user,
            recipe=recipe,
            membership=request.membership,
        )
    except ActionRefused as exc:
        return _refused(request, form, voices, models, str(exc), status=400)
    if request.htmx:
        return render(request, "speech/page.html#take", {"take": take})
    return HttpResponseRedirect(f"{reverse('speech:page')}?from={take.first.pk}", status=303)


@workspace_view(Role.MEMBER)
@require_GET
def take_stream(request, token: str):
    """A pending take's audio, as the engine makes it (once: the token is used up)."""
    recipe = services.take_recall(request.session, workspace_id=request.workspace.pk, token=token)
    if recipe is None:
        raise Http404("This take was played already or has expired: generate it again.")
    try:
        stream = services.take_stream(
            workspace=request.workspace,
            user=request.user,
            recipe=recipe,
            token=token,
            membership=request.membership,
        )
    except ActionRefused as exc:
        services.take_failed_note(request.session, token=token, message=str(exc))
        return HttpResponse(str(exc), status=429, content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(stream, content_type=stream.content_type)
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # a proxy passes each sentence on as it comes
    return response


@workspace_view(Role.MEMBER)
@require_GET
def take(request, token: str):
    """The take once kept: the waveform player with its download; 204 while it is made."""
    take = services.take_found(workspace=request.workspace, user=request.user, token=token)
    if take is None:
        failed = services.take_failed(request.session, token=token)
        if failed:
            return render(request, "speech/page.html#take", {"take_error": failed}, status=409)
        return HttpResponse(status=204)
    return render(request, "speech/page.html#take", {"take": take})


@workspace_view()
@require_GET
def take_audio(request, pk: int):
    """The whole take the History clip ``pk`` is a part of, as one file (seekable where its
    parts are MP3 or WAV); ``?download=1`` saves it."""
    clip = get_scoped(request, Generation.objects.filter(kind=GenerationKind.TTS), pk=pk)
    take = services.take_of_clip(clip)
    audio = take_audio_of(take.clips)
    filename = f"speech-{clip.history_item_id}.{audio.extension}"
    size = audio.size
    start, end, status = 0, None, 200
    wanted = byte_range(request, size)
    if isinstance(wanted, HttpResponse):
        return wanted
    if wanted is not None:
        (start, end), status = wanted, 206
    response = StreamingHttpResponse(
        audio.read(start, end), status=status, content_type=audio.content_type
    )
    if size is not None:
        stop = size - 1 if end is None else end
        response["Content-Length"] = str(stop - start + 1)
        response["Accept-Ranges"] = "bytes"
        if status == 206:
            response["Content-Range"] = f"bytes {start}-{stop}/{size}"
    disposition = "attachment" if request.GET.get("download") == "1" else "inline"
    response["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    response["Cache-Control"] = "private, max-age=3600"
    return response
