"""The chapter editor: a chapter's blocks (text, voice, speaker, model, settings, seed, lock),
their takes, and the chapter player (the chosen takes back to back).

Every action is a POST that works without JavaScript (then a redirect back to the block);
with htmx it answers the block's row, or the list of blocks when the order changed. A
refusal (``ProjectRefused``) is a 400 with its message shown by the block.

The page has to stay fast for a 300-block chapter: a constant number of queries
(``narration.chapter_states`` over one prefetched query) and block rows drawn from plain
values (URLs are built from one reversed prefix, not reversed per block).
"""

from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_GET, require_POST

from apps.engines.pronunciation import rules_fingerprint
from apps.voices.picker import speech_models, speech_voices
from apps.workspaces.access import get_scoped, workspace_view
from apps.workspaces.models import ROLE_RANK, Role

from . import narration
from .models import Block, Chapter, Project, Speaker, Take
from .narration import ProjectRefused

RENDER_PANEL = "projects/_render_panel.html"
SETTING_FIELDS = (  # (name, label, low, high, step): the block's voice settings sliders
    ("stability", "Stability", 0.0, 1.0, 0.05),
    ("similarity_boost", "Similarity", 0.0, 1.0, 0.05),
    ("style", "Style", 0.0, 1.0, 0.05),
    ("speed", "Speed", 0.7, 1.2, 0.05),
)
SETTING_DEFAULTS = {"stability": 0.5, "similarity_boost": 0.75, "style": 0.0, "speed": 1.0}
VOICE_MODES = ("inherit", "speaker", "own")


def _can_edit(request) -> bool:
    membership = request.membership
    return membership is not None and ROLE_RANK[Role(membership.role)] >= ROLE_RANK[Role.MEMBER]


# --- Finding rows: this workspace, this project, this chapter --------------------------------


def _chapter(request, project_id: str, chapter_id: str) -> Chapter:
    project = get_scoped(request, Project, public_id=project_id)
    chapter = get_scoped(request, Chapter.objects.filter(project=project), public_id=chapter_id)
    chapter.project = project
    return chapter


def _block(request, project_id: str, chapter_id: str, block_id: str) -> Block:
    chapter = _chapter(request, project_id, chapter_id)
    block = get_scoped(
        request, Block.objects.filter(chapter=chapter).select_related("speaker"), public_id=block_id
    )
    block.chapter = chapter
    return block


# --- The page ------------------------------------------------------------------------------


class _Urls:
    """Reversed once per page: the block actions' URLs are ``prefix + block id + action``."""

    def __init__(self, chapter: Chapter):
        project = chapter.project
        self.chapter = reverse("projects:chapter", args=[project.public_id, chapter.public_id])
        sentinel = "BLOCKID"
        save = reverse("projects:block_save", args=[project.public_id, chapter.public_id, sentinel])
        self.block_prefix = save[: save.index(sentinel)]
        self.chapter_base = self.chapter[: self.chapter.rindex(chapter.public_id)]
        try:
            self.project = reverse("projects:detail", args=[project.public_id])
        except NoReverseMatch:  # (the project pages, once they are there)
            self.project = ""
        try:
            self.render = reverse("projects:render", args=[project.public_id])
        except NoReverseMatch:  # (the project pages' render view, once it is there)
            self.render = ""
        audio = reverse("history:audio", args=[987654321])
        self.audio_head, self.audio_tail = audio.split("987654321")

    def audio(self, generation_id: int) -> str:
        return f"{self.audio_head}{generation_id}{self.audio_tail}"


def _rows(chapter: Chapter, *, states, voice_names: dict, urls: _Urls) -> list[dict]:
    rows = []
    for index, state in enumerate(states):
        block = state.block
        take = state.chosen
        generation = take.generation if take is not None else None
        audio = urls.audio(generation.pk) if generation is not None else ""
        if block.voice_id:
            mode = "own"
        elif block.speaker_id is not None:
            mode = "speaker"
        else:
            mode = "inherit"
        settings = dict(SETTING_DEFAULTS)
        settings.update(block.voice_settings or {})
        rows.append(
            {
                "block": block,
                "index": index,
                "number": index + 1,
                "take": take,
                "stale": state.stale and take is not None,
                "audio": audio,
                "duration": generation.duration_seconds if generation is not None else None,
                "voice_id": state.voice_id,
                "voice_name": voice_names.get(state.voice_id, state.voice_id),
                "voice_mode": mode,
                "settings": [
                    (name, label, low, high, step, settings.get(name, SETTING_DEFAULTS[name]))
                    for name, label, low, high, step in SETTING_FIELDS
                ],
                "own_settings": bool(block.voice_settings),
                "url": f"{urls.block_prefix}{block.public_id}/",
                "take_label": f"The chosen take of block {index + 1}",
            }
        )
    for row in rows:
        row["last"] = row["index"] == len(rows) - 1
    return rows


def _render_panel(request, chapter: Chapter) -> dict | None:
    """The project pages' render panel for this chapter (``views.render_panel``: another
    part of the studio, imported here so the editor works before and without it)."""
    try:
        get_template(RENDER_PANEL)
        from .views import render_panel
    except (TemplateDoesNotExist, ImportError):
        return None
    return render_panel(request, project=chapter.project, scope="chapter", target=chapter)


def _context(
    request, chapter: Chapter, *, errors: dict | None = None, posted=None, with_panel=False
) -> dict:
    project = chapter.project
    blocks = list(
        Block.objects.filter(chapter=chapter)
        .select_related("speaker", "chosen", "chosen__generation")
        .order_by("position", "id")
    )
    rules_print = rules_fingerprint(narration.project_rules(project))
    states = narration.chapter_states(
        chapter, project=project, blocks=blocks, rules_print=rules_print
    )
    library = narration.library_voices(workspace=request.workspace)
    voice_names = {voice_id: voice.name for voice_id, voice in library.items()}
    urls = _Urls(chapter)
    rows = _rows(chapter, states=states, voice_names=voice_names, urls=urls)
    errors = errors or {}
    shown = request.GET.get("settings", "")
    for row in rows:
        row["error"] = errors.get(row["block"].pk, "")
        row["show_settings"] = row["block"].public_id == shown or (
            row["error"] and "settings_shown" in request.POST
        )
        if posted is not None and posted[0] == row["block"].pk:
            row["text"] = posted[1]
    voices = speech_voices(workspace=request.workspace, user=request.user)
    speakers = list(Speaker.objects.filter(project=project).order_by("name", "id"))
    chapters = list(
        Chapter.objects.filter(project=project)
        .order_by("position", "id")
        .values_list("public_id", "name")
    )
    queue = [
        {"block": row["block"].public_id, "url": row["audio"], "duration": row["duration"]}
        for row in rows
        if row["audio"]
    ]
    return {
        "project": project,
        "chapter": chapter,
        "chapters": chapters,
        "rows": rows,
        "voices": voices,
        "voice_names": voice_names,
        "models": speech_models(workspace=request.workspace, user=request.user),
        "speakers": speakers,
        "can_edit": _can_edit(request),
        "urls": urls,
        "player_queue": queue,
        "skipped": [row for row in rows if not row["audio"]],
        "project_voice_name": voice_names.get(project.default_voice_id, project.default_voice_id),
        "chapter_voice_name": voice_names.get(
            chapter.voice_id or project.default_voice_id,
            chapter.voice_id or project.default_voice_id,
        ),
        "panel": _render_panel(request, chapter) if with_panel else None,
        "chapter_error": errors.get("chapter", ""),
    }


@workspace_view()
@require_GET
def chapter_page(request, project_id: str, chapter_id: str):
    chapter = _chapter(request, project_id, chapter_id)
    context = _context(request, chapter, with_panel=True)
    return render(request, "projects/chapter.html", context)


# --- Answers of the actions ---------------------------------------------------------------


def _back(chapter: Chapter, block: Block | None = None) -> HttpResponseRedirect:
    url = reverse("projects:chapter", args=[chapter.project.public_id, chapter.public_id])
    return HttpResponseRedirect(url + (f"#block-{block.public_id}" if block else ""), status=303)


def _row_response(request, chapter: Chapter, block: Block, *, error="", posted_text=None):
    """The block's row alone (htmx), drawn like the page draws it."""
    context = _context(
        request,
        chapter,
        errors={block.pk: error} if error else None,
        posted=(block.pk, posted_text) if posted_text is not None else None,
    )
    row = next((r for r in context["rows"] if r["block"].pk == block.pk), None)
    if row is None:  # (gone meanwhile: the list then)
        return render(request, "projects/chapter.html#blocks", context)
    context["row"] = row
    response = render(request, "projects/_block.html", context, status=400 if error else 200)
    if error:
        response["HX-Retarget"] = f"#block-{block.public_id}"
        response["HX-Reswap"] = "outerHTML"
    return response


def _answer(request, chapter: Chapter, block: Block | None, *, whole_list: bool = False):
    if not request.htmx:
        return _back(chapter, block)
    if whole_list or block is None:
        response = render(request, "projects/chapter.html#blocks", _context(request, chapter))
        response["HX-Retarget"] = "#blocks"
        response["HX-Reswap"] = "outerHTML"
        return response
    return _row_response(request, chapter, block)


def _refused(request, chapter: Chapter, block: Block | None, exc, *, posted_text=None):
    """A refusal, shown by the block (or the chapter's form): 400, nothing changed."""
    message = str(exc)
    if request.htmx and block is not None:
        block.refresh_from_db()
        return _row_response(request, chapter, block, error=message, posted_text=posted_text)
    errors = {block.pk if block is not None else "chapter": message}
    posted = (block.pk, posted_text) if block is not None and posted_text is not None else None
    context = _context(request, chapter, errors=errors, posted=posted, with_panel=not request.htmx)
    if request.htmx:  # the chapter's own form
        response = render(request, "projects/chapter.html#chapter_form", context, status=400)
        return response
    return render(request, "projects/chapter.html", context, status=400)


# --- The chapter's own settings -------------------------------------------------------------


@workspace_view(Role.MEMBER)
@require_POST
def chapter_save(request, project_id: str, chapter_id: str):
    chapter = _chapter(request, project_id, chapter_id)
    try:
        narration.chapter_update(
            chapter,
            name=request.POST.get("name", ""),
            voice_id=request.POST.get("voice_id", "").strip(),
        )
    except ProjectRefused as exc:
        chapter.refresh_from_db()
        chapter.project = get_scoped(request, Project, public_id=project_id)
        return _refused(request, chapter, None, exc)
    if request.htmx:
        response = render(request, "projects/chapter.html#chapter_form", _context(request, chapter))
        response["HX-Refresh"] = "true"  # every block's voice may follow the chapter's
        return response
    return _back(chapter)


# --- Block actions ---------------------------------------------------------------------------


def _speaker(block: Block, value: str):
    value = (value or "").strip()
    if not value:
        return None
    try:
        return Speaker.objects.get(project_id=block.chapter.project_id, pk=int(value))
    except (ValueError, Speaker.DoesNotExist) as exc:
        raise ProjectRefused("Speaker: choose one of this project's speakers.") from exc


def _voice_settings(post) -> dict | None:
    if not post.get("own_settings"):
        return None
    return {name: post.get(name, "") for name, *_ in SETTING_FIELDS}


@workspace_view(Role.MEMBER)
@require_POST
def block_save(request, project_id: str, chapter_id: str, block_id: str):
    """Save a block: text, voice (inherit / a speaker's / its own), model, voice settings and
    seed; or, with ``lock`` (1 or 0), only lock or unlock it."""
    block = _block(request, project_id, chapter_id, block_id)
    chapter = block.chapter
    post = request.POST
    text = post.get("text")
    try:
        if "lock" in post:
            narration.block_update(block, locked=post.get("lock") == "1")
            return _answer(request, chapter, block)
        if "settings_shown" not in post:  # (the settings were not opened: the text alone)
            narration.block_update(block, text=text if text is not None else block.text)
            return _answer(request, chapter, block)
        mode = post.get("voice_mode", "inherit")
        if mode not in VOICE_MODES:
            raise ProjectRefused("Voice: choose the inherited voice, a speaker or a voice.")
        speaker = _speaker(block, post.get("speaker", ""))
        if mode == "speaker" and speaker is None:
            raise ProjectRefused("Speaker: choose which speaker says this block.")
        voice_id = post.get("voice_id", "").strip() if mode == "own" else ""
        if mode == "own" and not voice_id:
            raise ProjectRefused("Voice: choose a voice for this block.")
        with transaction.atomic():
            narration.block_update(
                block,
                text=text if text is not None else block.text,
                voice_id=voice_id,
                speaker=speaker if mode != "inherit" else None,
                model_id=post.get("model_id", "").strip(),
                voice_settings=_voice_settings(post),
                seed=post.get("seed", "").strip(),
            )
    except ProjectRefused as exc:
        return _refused(request, chapter, block, exc, posted_text=text)
    return _answer(request, chapter, block)


def _position(value: str, what: str) -> int:
    try:
        return int((value or "").strip())
    except ValueError as exc:
        raise ProjectRefused(f"{what}: a whole number.") from exc


@workspace_view(Role.MEMBER)
@require_POST
def block_split(request, project_id: str, chapter_id: str, block_id: str):
    """Split at character ``at`` (the cursor); with ``text``, that text is saved first, so the
    split is at the cursor in the text the member sees."""
    block = _block(request, project_id, chapter_id, block_id)
    chapter = block.chapter
    text = request.POST.get("text")
    try:
        at = _position(request.POST.get("at", ""), "Split")
        with transaction.atomic():
            if text is not None and text != block.text:
                narration.block_update(block, text=text)
            narration.block_split(block, at=at)
    except ProjectRefused as exc:
        return _refused(request, chapter, block, exc, posted_text=text)
    return _answer(request, chapter, block, whole_list=True)


@workspace_view(Role.MEMBER)
@require_POST
def block_merge(request, project_id: str, chapter_id: str, block_id: str):
    block = _block(request, project_id, chapter_id, block_id)
    try:
        narration.block_merge(block)
    except ProjectRefused as exc:
        return _refused(request, block.chapter, block, exc)
    return _answer(request, block.chapter, block, whole_list=True)


@workspace_view(Role.MEMBER)
@require_POST
def block_move(request, project_id: str, chapter_id: str, block_id: str):
    block = _block(request, project_id, chapter_id, block_id)
    try:
        to = _position(request.POST.get("to", ""), "Move")
        narration.block_move(block, to=to)
    except ProjectRefused as exc:
        return _refused(request, block.chapter, block, exc)
    return _answer(request, block.chapter, block, whole_list=True)


@workspace_view(Role.MEMBER)
@require_POST
def block_insert(request, project_id: str, chapter_id: str, block_id: str | None = None):
    """A new block after this one (or at the chapter's end), with the text given."""
    if block_id is None:
        chapter, after = _chapter(request, project_id, chapter_id), None
    else:
        after = _block(request, project_id, chapter_id, block_id)
        chapter = after.chapter
    try:
        block = narration.block_insert(
            chapter=chapter, text=request.POST.get("new_text", ""), after=after
        )
    except ProjectRefused as exc:
        return _refused(request, chapter, after, exc)
    return _answer(request, chapter, block, whole_list=True)


@workspace_view(Role.MEMBER)
@require_POST
def block_delete(request, project_id: str, chapter_id: str, block_id: str):
    block = _block(request, project_id, chapter_id, block_id)
    chapter = block.chapter
    try:
        narration.block_delete(block)
    except ProjectRefused as exc:
        return _refused(request, chapter, block, exc)
    return _answer(request, chapter, None, whole_list=True)


@workspace_view(Role.MEMBER)
@require_GET
def block_settings(request, project_id: str, chapter_id: str, block_id: str):
    """The block's voice, speaker, model, settings and seed fields (loaded when opened: a
    300-block page stays light); without htmx, the chapter with them open at the block."""
    block = _block(request, project_id, chapter_id, block_id)
    chapter = block.chapter
    if not request.htmx:
        url = reverse("projects:chapter", args=[project_id, chapter_id])
        return HttpResponseRedirect(f"{url}?settings={block_id}#block-{block_id}")
    context = _context(request, chapter)
    row = next((r for r in context["rows"] if r["block"].pk == block.pk), None)
    if row is None:  # (deleted meanwhile)
        raise Http404("Not found in this workspace.")
    context["row"] = row
    return render(request, "projects/_block.html#settings", context)


# --- Takes ----------------------------------------------------------------------------------


@workspace_view()
@require_GET
def block_takes(request, project_id: str, chapter_id: str, block_id: str):
    """Every take of the block, newest first, each playable, the chosen one marked."""
    block = _block(request, project_id, chapter_id, block_id)
    chapter = block.chapter
    takes = list(
        Take.objects.filter(block=block)
        .select_related("generation", "user")
        .order_by("-created_at", "-id")
    )
    for number, take in enumerate(reversed(takes), start=1):
        take.label = f"{'Draft' if take.draft else 'Final'} take {number}"
    context = {
        "project": chapter.project,
        "chapter": chapter,
        "blk": block,  # (not "block": inside {% block %}, that name is the template's block)
        "takes": takes,
        "can_edit": _can_edit(request),
        "chapter_url": _Urls(chapter).chapter,
    }
    template = "projects/_takes.html#takes" if request.htmx else "projects/_takes.html"
    return render(request, template, context)


@workspace_view(Role.MEMBER)
@require_POST
def take_choose(request, project_id: str, chapter_id: str, block_id: str, take_id: int):
    block = _block(request, project_id, chapter_id, block_id)
    try:
        take = Take.objects.get(workspace=request.workspace, block=block, pk=take_id)
    except Take.DoesNotExist as exc:
        raise Http404("Not found in this workspace.") from exc
    take.block = block
    try:
        narration.take_choose(take)
    except ProjectRefused as exc:
        return _refused(request, block.chapter, block, exc)
    return _answer(request, block.chapter, block)
