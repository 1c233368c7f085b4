"""The chapter editor: a chapter's blocks (text, voice, speaker, model, settings, seed, lock),
their takes, and the chapter player (the chosen takes back to back).

Every action is a POST that works without JavaScript (then a redirect back to the block);
with htmx it answers the block's row, or the list of blocks when the order changed. A
refusal (``ProjectRefused``) is a 400 with its message shown by the block.

The page has to stay fast for a 300-block chapter (issue 15: p95 <= 80 ms, bench/projects.py):
a constant number of queries (``narration.chapter_states`` over one prefetched query) and
block rows drawn in Python (``_row_html``: one f-string per row, every value escaped; a
Django ``{% include %}`` per row cost ~1 ms a block). URLs are built from one reversed
prefix, not reversed per block. The chapter player's queue holds the chosen takes and the
cues placed in the chapter (``cues.cue_queue_items``).
"""

import functools
from html import escape as _html_escape
from types import SimpleNamespace

from django.db import transaction
from django.db.models.expressions import RawSQL
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from apps.engines.pronunciation import rules_fingerprint
from apps.voices.picker import speech_models, speech_voices
from apps.workspaces.access import get_scoped, workspace_view
from apps.workspaces.models import ROLE_RANK, Role

from . import cues as cue_services
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
# Of a block's chosen take the page reads its signature, kind and clip (its id, and the clip's
# length annotated on the block: no clip objects are made for a 300-block page).
# What the editor reads of a block and of its chosen take, as plain rows: a 300-block page
# would otherwise build 600 model objects (and parse their dates) on every request.
EDITOR_FIELDS = (
    "id", "public_id", "position", "text", "voice_id", "speaker_id", "model_id",
    "voice_settings", "seed", "locked", "chosen_id", "chosen__generation_id",
    "chosen__draft", "chosen__signature", "chosen__generation__duration_seconds",
)  # fmt: skip


class _Take(SimpleNamespace):
    """The chosen take as the editor reads it (pk, generation_id, draft, signature)."""


class _Block(SimpleNamespace):
    """A block as the editor reads it: the fields of ``EDITOR_FIELDS``, its ``speaker``
    (from the project's speakers), its ``chosen`` take and the take's ``clip_seconds``."""


def _editor_blocks(chapter: Chapter, speakers: dict) -> list[_Block]:
    rows = (
        Block.objects.filter(chapter=chapter).order_by("position", "id").values_list(*EDITOR_FIELDS)
    )
    blocks = []
    for (
        pk, public_id, position, text, voice_id, speaker_id, model_id, voice_settings, seed,
        locked, chosen_id, generation_id, draft, signature, seconds,
    ) in rows:  # fmt: skip
        take = (
            _Take(pk=chosen_id, id=chosen_id, generation_id=generation_id, draft=draft,
                  signature=signature)
            if chosen_id is not None
            else None
        )  # fmt: skip
        blocks.append(
            _Block(
                pk=pk, id=pk, public_id=public_id, position=position, text=text,
                voice_id=voice_id, speaker_id=speaker_id, model_id=model_id,
                voice_settings=voice_settings, seed=seed, locked=locked, chosen_id=chosen_id,
                chosen=take, clip_seconds=seconds, chapter=chapter, chapter_id=chapter.pk,
                speaker=speakers.get(speaker_id) if speaker_id is not None else None,
            )
        )  # fmt: skip
    return blocks


def _can_edit(request) -> bool:
    membership = request.membership
    return membership is not None and ROLE_RANK[Role(membership.role)] >= ROLE_RANK[Role.MEMBER]


# --- Finding rows: this workspace, this project, this chapter --------------------------------


def _chapter(request, project_id: str, chapter_id: str) -> Chapter:
    """The chapter and its project in one query (both of this workspace, else 404), with
    whether any cue is placed in it and any dictionary attached to the project: the page
    skips those two reads when there is none. (Two EXISTS in SQL: the ORM's ``Exists``
    costs more to compile here than both reads it saves.)"""
    chapters = (
        Chapter.objects.filter(project__workspace=request.workspace, project__public_id=project_id)
        .select_related("project")
        .annotate(
            has_cues=RawSQL(_HAS_CUES, ()),  # noqa: S611 - constant SQL, no input in it
            has_dictionaries=RawSQL(_HAS_DICTIONARIES, ()),  # noqa: S611 - constant SQL
        )
    )
    return get_scoped(request, chapters, public_id=chapter_id)


# (Constant SQL over the models' tables: projects_cue, projects_block, projects_chapter and the
# project/dictionary link table.)
_HAS_CUES = (
    "EXISTS (SELECT 1 FROM projects_cue c JOIN projects_block b ON b.id = c.block_id"
    " WHERE b.chapter_id = projects_chapter.id AND c.generation_id IS NOT NULL)"
)
_HAS_DICTIONARIES = (
    "EXISTS (SELECT 1 FROM projects_project_dictionaries d"
    " WHERE d.project_id = projects_chapter.project_id)"
)


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
        try:
            self.cues = reverse("projects:cues", args=[project.public_id])
        except NoReverseMatch:  # (the cue pages, once they are there)
            self.cues = ""
        audio = reverse("history:audio", args=[987654321])
        self.audio_head, self.audio_tail = audio.split("987654321")

    def audio(self, generation_id: int) -> str:
        return f"{self.audio_head}{generation_id}{self.audio_tail}"


def _rows(chapter: Chapter, *, states, voice_names: dict, urls: _Urls) -> list[dict]:
    rows = []
    for index, state in enumerate(states):
        block = state.block
        take = state.chosen
        audio = urls.audio(take.generation_id) if take is not None else ""
        if block.voice_id:
            mode = "own"
        elif block.speaker_id is not None:
            mode = "speaker"
        else:
            mode = "inherit"
        rows.append(
            {
                "block": block,
                "index": index,
                "number": index + 1,
                "take": take,
                "stale": state.stale and take is not None,
                "audio": audio,
                "duration": getattr(block, "clip_seconds", None) if take is not None else None,
                "voice_id": state.voice_id,
                "voice_name": voice_names.get(state.voice_id, state.voice_id),
                "voice_mode": mode,
                "own_settings": bool(block.voice_settings),
                "url": f"{urls.block_prefix}{block.public_id}/",
                "take_label": f"The chosen take of block {index + 1}",
            }
        )
    for row in rows:
        row["last"] = row["index"] == len(rows) - 1
    return rows


# --- One block's row, drawn in Python -------------------------------------------------------
# (The markup once lived in a template included per block; a 300-block chapter spent nearly
# all of its time there. Every value from the database goes through ``escape``.)

PLAYER = (  # templates/_player.html, preload="none" (static/js/player.js enhances it)
    '<div class="player" data-player>'
    '<button type="button" class="player-toggle" data-player-toggle aria-label="Play {label}"'
    ' hidden><span aria-hidden="true">▶</span></button>'
    '<div class="player-wave" data-player-wave hidden></div>'
    '<span class="player-time" data-player-time hidden></span>'
    '<audio controls preload="none" src="{src}" aria-label="{label}"></audio></div>'
)


def _e(value) -> str:
    """``value`` escaped for HTML text and attributes (what Django's ``escape`` does, without
    its lazy-string wrapper: this runs ~30 times a block)."""
    return _html_escape(str(value), quote=True)


def _linebreaksbr(text: str) -> str:
    return _e(text.replace("\r\n", "\n").replace("\r", "\n")).replace("\n", "<br>")


def _badges(row: dict) -> tuple[str, str]:
    """(data-state, the badges' markup) of a block."""
    take, locked = row["take"], row["block"].locked
    if take is None:
        state, badges = "none", '<span class="badge state-none">No take</span>'
    else:
        kind = "Draft" if take.draft else "Final"
        badges = f'<span class="badge state-{kind.lower()}">{kind}</span>'
        if row["stale"]:
            state = "stale"
            badges += (
                ' <span class="badge state-stale" title="The text, voice or settings changed'
                ' since this take was made">Stale</span>'
            )
        else:
            state = kind.lower()
    if locked:
        state += " locked"
        badges += ' <span class="badge state-locked">Locked</span>'
    return state, badges


def _row_html(row: dict, *, can_edit: bool, urls: _Urls, csrf: str, settings_html: str = "") -> str:
    """The ``<li>`` of one block (the page's list and an htmx answer draw it alike)."""
    b = row["block"]
    bid = _e(b.public_id)
    number = row["number"]
    url = _e(row["url"])
    audio = _e(row["audio"])
    error = row.get("error", "")
    classes = "block-row"
    if row["take"] is None:
        classes += " no-take"
    elif row["stale"]:
        classes += " is-stale"
    if b.locked:
        classes += " is-locked"
    duration = "" if row["duration"] is None else repr(float(row["duration"]))
    state, badges = _badges(row)
    voice = _e(row["voice_name"])
    if b.speaker_id is not None and b.speaker is not None:
        voice += " · " + _e(b.speaker.name)
    if audio:
        play = (
            f'<button type="button" class="icon-button block-play" data-play-from="{bid}"'
            f' aria-label="Play the chapter from block {number}" hidden>'
            '<span aria-hidden="true">▶</span></button>'
        )
        player = '<div class="block-take">' + PLAYER.format(src=audio, label=_e(row["take_label"]))
        player += "</div>"
    else:
        play = (
            '<span class="muted small block-skipped">No take yet: the chapter player skips it.'
            "</span>"
        )
        player = ""
    parts = [
        f'<li id="block-{bid}" class="{classes}" data-block="{bid}" data-take-url="{audio}"'
        f' data-duration="{duration}" tabindex="-1" aria-labelledby="block-{bid}-h">'
        f'<div class="block-head"><h3 class="block-number" id="block-{bid}-h">'
        f'<span class="visually-hidden">Block </span>{number}</h3>'
        f'<span class="block-badges" data-state="{state}">{badges}</span>'
        f'<span class="muted small block-voice-name">{voice}</span>{play}</div>'
    ]
    if error:
        parts.append(
            f'<p class="error block-error" role="alert" id="block-{bid}-error">{_e(error)}</p>'
        )
    parts.append(player)
    if can_edit:
        text = row.get("text")
        text = b.text if text is None else text
        invalid = f' aria-invalid="true" aria-describedby="block-{bid}-error"' if error else ""
        summary = "<summary>Voice, model and settings</summary>"
        if settings_html:
            settings = f'<details class="block-settings" open>{summary}'
            body = settings_html
        else:
            settings = (
                f'<details class="block-settings" hx-get="{url}settings/" hx-trigger="toggle once"'
                f' hx-target="find .settings-body" hx-swap="innerHTML">{summary}'
            )
            body = (
                f'<a href="{_e(urls.chapter)}?settings={bid}#block-{bid}">Change the voice,'
                f" model and settings of block {number}</a>"
            )
        settings += f'<div class="settings-body">{body}</div></details>'
        # The buttons post to their action (formaction): htmx 2 sends a form to its clicked
        # button's formaction, so one hx-post on the form serves them all.
        buttons = [
            '<button class="button small primary" type="submit">Save</button>'
            f'<span class="split-at" data-split-field><label for="at-{bid}">Split at character'
            f'</label> <input type="number" id="at-{bid}" name="at" min="1" max="{len(b.text)}"'
            ' inputmode="numeric"></span>'
            f'<button class="button small" type="submit" formaction="{url}split/" data-split>'
            "Split at the cursor</button>"
        ]
        if not row["last"]:
            buttons.append(
                f'<button class="button small" type="submit" formaction="{url}merge/">'
                "Merge with next</button>"
            )
        if row["index"]:
            buttons.append(
                f'<button class="button small ghost" type="submit" name="to"'
                f' value="{row["index"] - 1}" formaction="{url}move/" data-move="up"'
                f' aria-label="Move block {number} up" title="Move up (Alt+↑)">↑</button>'
            )
        if not row["last"]:
            buttons.append(
                f'<button class="button small ghost" type="submit" name="to"'
                f' value="{row["index"] + 1}" formaction="{url}move/" data-move="down"'
                f' aria-label="Move block {number} down" title="Move down (Alt+↓)">↓</button>'
            )
        lock = ("0", "Unlock") if b.locked else ("1", "Lock")
        buttons.append(
            f'<button class="button small ghost" type="submit" name="lock" value="{lock[0]}"'
            f' formaction="{url}save/">{lock[1]}</button>'
            f'<button class="button small ghost" type="submit" formaction="{url}delete/"'
            f' hx-post="{url}delete/" hx-confirm="Delete block {number}? Its takes go with it.">'
            "Delete</button>"
        )
        parts.append(
            f'<form class="block-form" method="post" action="{url}save/" hx-post="{url}save/"'
            f' hx-target="#block-{bid}" hx-swap="outerHTML">'
            f'<input type="hidden" name="csrfmiddlewaretoken" value="{csrf}">'
            f'<label class="visually-hidden" for="text-{bid}">Text of block {number}</label>'
            f'<textarea id="text-{bid}" name="text" rows="3" maxlength="2500" required'
            f" data-block-text{invalid}>{_e(text)}</textarea>"
            f"{settings}"
            f'<div class="actions block-actions">{"".join(buttons)}</div>'
            '<details class="block-insert"><summary>Insert a block after</summary>'
            f'<label for="new-{bid}">Text of the new block</label>'
            f'<textarea id="new-{bid}" name="new_text" rows="2" maxlength="2500"></textarea>'
            f'<button class="button small" type="submit" formaction="{url}insert/">Insert'
            "</button></details></form>"
        )
        if urls.render:
            disabled = " disabled" if b.locked else ""
            chapter = _e(urls.chapter)
            parts.append(
                f'<form class="inline-form block-render" method="post" action="{_e(urls.render)}">'
                f'<input type="hidden" name="csrfmiddlewaretoken" value="{csrf}">'
                '<input type="hidden" name="scope" value="block">'
                f'<input type="hidden" name="target" value="{bid}">'
                f'<input type="hidden" name="next" value="{chapter}#block-{bid}">'
                '<span class="small muted">Render this block</span> '
                f'<button class="button small" type="submit" name="mode" value="draft"{disabled}>'
                "Draft (free)</button> "
                f'<button class="button small" type="submit" name="mode" value="final"{disabled}>'
                "Final</button></form>"
            )
    else:
        parts.append(f'<p class="block-text">{_linebreaksbr(b.text)}</p>')
    parts.append(
        f'<details class="block-takes" hx-get="{url}takes/" hx-trigger="toggle once"'
        ' hx-target="find .takes-body" hx-swap="innerHTML"><summary>Takes</summary>'
        f'<div class="takes-body"><a href="{url}takes/">Every take of block {number}</a></div>'
        "</details></li>"
    )
    return "".join(parts)


def _with_settings(row: dict) -> dict:
    """``row`` with its voice settings' sliders: (name, label, low, high, step, value)."""
    values = {**SETTING_DEFAULTS, **(row["block"].voice_settings or {})}
    row["settings"] = [
        (name, label, low, high, step, values.get(name, SETTING_DEFAULTS[name]))
        for name, label, low, high, step in SETTING_FIELDS
    ]
    return row


def _settings_html(request, row: dict, context: dict) -> str:
    """A block's voice, speaker, model, settings and seed fields (``_block.html#settings``)."""
    _with_settings(row)
    return get_template("projects/_block.html#settings").render(
        {
            "row": row,
            "speakers": context["speakers"],
            "models": context["models"](),
            "voices": context["voices"],
        },
        request,
    )


def _blocks_html(request, context: dict) -> str:
    """Every row of the chapter, one string (safe: each value in it is escaped)."""
    csrf = _e(get_token(request))
    can_edit, urls = context["can_edit"], context["urls"]
    return mark_safe(  # noqa: S308 - every value in it went through escape()
        "".join(
            _row_html(
                row,
                can_edit=can_edit,
                urls=urls,
                csrf=csrf,
                settings_html=_settings_html(request, row, context)
                if can_edit and row["show_settings"]
                else "",
            )
            for row in context["rows"]
        )
    )


def _queue(chapter: Chapter, rows: list[dict]) -> tuple[list, list]:
    """The chapter player's queue: each chosen take (``kind`` "take") followed by the cues
    placed at its block (``cues.cue_queue_items``: "after" cues play after the take, "under"
    cues under it at their volume); and those cues as the page lists them (each queue item
    with the block's ``number``). One query, however many blocks and cues."""
    placed: dict[str, list[dict]] = {}
    items = cue_services.cue_queue_items(chapter) if getattr(chapter, "has_cues", True) else ()
    for item in items:
        placed.setdefault(item["block"], []).append(item)
    queue, cue_rows = [], []
    for row in rows:
        public_id = row["block"].public_id
        if row["audio"]:
            queue.append(
                {
                    "kind": "take",
                    "block": public_id,
                    "url": row["audio"],
                    "duration": row["duration"],
                }
            )
        for item in placed.get(public_id, ()):
            queue.append(item)
            cue_rows.append({**item, "number": row["number"]})
    return queue, cue_rows


def _render_panel(request, chapter: Chapter) -> dict | None:
    """The project pages' render panel for this chapter (``views.render_panel``: another
    part of the studio, imported here so the editor works before and without it)."""
    try:
        get_template(RENDER_PANEL)
        from .views import render_panel
    except (TemplateDoesNotExist, ImportError):
        return None
    return render_panel(request, project=chapter.project, scope="chapter", target=chapter)


def _render_panel_url(chapter: Chapter, urls: _Urls) -> str:
    """Where htmx loads the chapter's render panel from once the page is there
    (``projects:renders``): its estimates read every block of the chapter twice over, so the
    page does not wait for them; without JavaScript the page has plain render buttons."""
    try:
        get_template(RENDER_PANEL)
        url = reverse("projects:renders", args=[chapter.project.public_id])
    except (TemplateDoesNotExist, NoReverseMatch):
        return ""
    query = {"scope": "chapter", "target": chapter.public_id, "next": urls.chapter}
    return f"{url}?{urlencode(query)}"


def _context(
    request, chapter: Chapter, *, errors: dict | None = None, posted=None, with_panel=False
) -> dict:
    project = chapter.project
    speakers = list(Speaker.objects.filter(project=project).order_by("name", "id"))
    by_id = {speaker.pk: speaker for speaker in speakers}
    blocks = _editor_blocks(chapter, by_id)  # (speakers from the list: no join, no copies)
    rules = narration.project_rules(project) if getattr(chapter, "has_dictionaries", True) else ()
    rules_print = rules_fingerprint(rules)
    states = narration.chapter_states(
        chapter, project=project, blocks=blocks, rules_print=rules_print
    )
    voice_names = narration.library_voice_names(workspace=request.workspace)
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
    # The voice picker's list: read only where a template lists it (the chapter's picker and a
    # block's settings load when opened), so the page itself does not pay for it.
    voices = functools.cache(lambda: speech_voices(workspace=request.workspace, user=request.user))
    chapters = list(
        Chapter.objects.filter(project=project)
        .order_by("position", "id")
        .values_list("public_id", "name")
    )
    queue, cue_rows = _queue(chapter, rows)
    skipped = [row for row in rows if not row["audio"]]
    return {
        "project": project,
        "chapter": chapter,
        "chapters": chapters,
        "rows": rows,
        "voices": voices,
        "voice_names": voice_names,
        # Read only where a block's settings are drawn (they load when opened).
        "models": functools.cache(
            lambda: speech_models(workspace=request.workspace, user=request.user)
        ),
        "speakers": speakers,
        "can_edit": _can_edit(request),
        "urls": urls,
        "player_queue": queue,
        "first_take_url": next((row["audio"] for row in rows if row["audio"]), ""),
        "cue_rows": cue_rows,
        "skipped": skipped,
        "skipped_links": mark_safe(  # noqa: S308 - escaped
            ", ".join(
                f'<a href="#block-{_e(row["block"].public_id)}">{row["number"]}</a>'
                for row in skipped
            )
        ),
        "project_voice_name": voice_names.get(project.default_voice_id, project.default_voice_id),
        "chapter_voice_name": voice_names.get(
            chapter.voice_id or project.default_voice_id,
            chapter.voice_id or project.default_voice_id,
        ),
        "panel": _render_panel(request, chapter) if with_panel else None,
        "panel_url": _render_panel_url(chapter, urls),
        "chapter_error": errors.get("chapter", ""),
        "show_voices": "voices" in request.GET or "chapter" in errors,
        "voices_url": urls.chapter + "voices/",
    }


@workspace_view()
@require_GET
def chapter_page(request, project_id: str, chapter_id: str):
    chapter = _chapter(request, project_id, chapter_id)
    context = _context(request, chapter)
    context["blocks_html"] = _blocks_html(request, context)
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
        context["blocks_html"] = _blocks_html(request, context)
        return render(request, "projects/chapter.html#blocks", context)
    html = _row_html(
        row,
        can_edit=context["can_edit"],
        urls=context["urls"],
        csrf=_e(get_token(request)),
        settings_html=_settings_html(request, row, context) if row["show_settings"] else "",
    )
    response = HttpResponse(html, status=400 if error else 200)
    if error:
        response["HX-Retarget"] = f"#block-{block.public_id}"
        response["HX-Reswap"] = "outerHTML"
    return response


def _answer(request, chapter: Chapter, block: Block | None, *, whole_list: bool = False):
    if not request.htmx:
        return _back(chapter, block)
    if whole_list or block is None:
        context = _context(request, chapter)
        context["blocks_html"] = _blocks_html(request, context)
        response = render(request, "projects/chapter.html#blocks", context)
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
    context["blocks_html"] = _blocks_html(request, context)
    return render(request, "projects/chapter.html", context, status=400)


# --- The chapter's own settings -------------------------------------------------------------


@workspace_view(Role.MEMBER)
@require_POST
def chapter_save(request, project_id: str, chapter_id: str):
    chapter = _chapter(request, project_id, chapter_id)
    try:
        changes = {"name": request.POST.get("name", "")}
        if "voice_id" in request.POST:  # (the picker loads when opened: else the voice stays)
            changes["voice_id"] = request.POST["voice_id"].strip()
        narration.chapter_update(chapter, **changes)
    except ProjectRefused as exc:
        chapter.refresh_from_db()
        chapter.project = get_scoped(request, Project, public_id=project_id)
        return _refused(request, chapter, None, exc)
    if request.htmx:
        response = render(request, "projects/chapter.html#chapter_form", _context(request, chapter))
        response["HX-Refresh"] = "true"  # every block's voice may follow the chapter's
        return response
    return _back(chapter)


@workspace_view(Role.MEMBER)
@require_GET
def chapter_voices(request, project_id: str, chapter_id: str):
    """The chapter's voice picker (loaded when opened); without htmx, the chapter with it
    open."""
    chapter = _chapter(request, project_id, chapter_id)
    if not request.htmx:
        url = reverse("projects:chapter", args=[project_id, chapter_id])
        return HttpResponseRedirect(f"{url}?voices=1#chapter-form")
    return render(request, "projects/chapter.html#chapter_voices", _context(request, chapter))


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
    context["row"] = _with_settings(row)
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
