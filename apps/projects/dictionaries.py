"""Pronunciation dictionaries: a team's alias and phoneme rules, versioned, in and out as PLS.

Every change of a dictionary's rules makes a new version (a ``PronunciationVersion`` row and a
new ``version_id`` on the dictionary), so a ``/v1`` locator naming an older version, and the
PLS download of it, still say what they said. Rules are kept in the official API's shape
(``apps.engines.pronunciation.rules_to_json``); every input is checked by that module, and a
refusal (``DictionaryRefused``) carries the message for the person, an HTTP status and a code
for the API.
"""

import base64
import secrets
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils.text import slugify

from apps.engines.pronunciation import (
    PronunciationInvalid,
    PronunciationRule,
    pls_parse,
    pls_write,
    rules_checked,
    rules_from_json,
    rules_to_json,
)
from apps.generation.caller import Caller
from apps.generation.errors import ApiRefused
from apps.generation.speech import SpeechInput, speak
from apps.history.models import Generation
from apps.workspaces.models import EngineKind

from .models import Project, PronunciationDictionary, PronunciationVersion
from .narration import ProjectRefused

MAX_PLS_BYTES = 1024 * 1024  # a lexicon file; the official API takes a few hundred kB at most
MAX_LOCATORS = 3  # dictionaries per text-to-speech call (the official limit)
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_TRY_TEXT = 300
PAGE_SIZE_MAX = 100
SORTS = ("creation_time_unix", "name")


class DictionaryRefused(ProjectRefused):
    """A dictionary action that cannot be done. ``str`` is the message for the person;
    ``status`` and ``code`` are what ``/v1`` answers (400, or 404 for one not found)."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.code = status, code


def _version_id() -> str:
    return secrets.token_urlsafe(15)[:20]


def _rules_of_json(items) -> tuple[PronunciationRule, ...]:
    try:
        return rules_from_json(items)
    except PronunciationInvalid as exc:
        raise DictionaryRefused(str(exc), code="invalid_pronunciation_rules") from None


def _checked(rules) -> tuple[PronunciationRule, ...]:
    """Rules given as ``PronunciationRule``s or as the API's JSON objects, checked."""
    rules = list(rules)
    if rules and all(isinstance(rule, dict) for rule in rules):
        return _rules_of_json(rules)
    try:
        return rules_checked(rules)
    except PronunciationInvalid as exc:
        raise DictionaryRefused(str(exc), code="invalid_pronunciation_rules") from None


def _name(name) -> str:
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name:
        raise DictionaryRefused("A dictionary needs a name.", code="invalid_name")
    if len(name) > MAX_NAME:
        raise DictionaryRefused(
            f"The name is {len(name)} characters long; at most {MAX_NAME}.", code="invalid_name"
        )
    return name


def _description(description) -> str:
    description = (description or "").strip()
    if len(description) > MAX_DESCRIPTION:
        raise DictionaryRefused(
            f"The description is {len(description):,} characters long; at most "
            f"{MAX_DESCRIPTION:,}.",
            code="invalid_description",
        )
    return description


def dictionary_rules(dictionary: PronunciationDictionary) -> tuple[PronunciationRule, ...]:
    """The rules of the dictionary's latest version."""
    return rules_from_json(dictionary.rules)


def _new_version(dictionary: PronunciationDictionary, rules) -> PronunciationDictionary:
    """Store ``rules`` as the dictionary's new latest version (caller holds a transaction)."""
    items = rules_to_json(rules)
    dictionary.rules = items
    dictionary.version_id = _version_id()
    dictionary.version_rules_num = len(items)
    dictionary.save()
    PronunciationVersion.objects.create(
        dictionary=dictionary, version_id=dictionary.version_id, rules=items
    )
    return dictionary


@transaction.atomic
def dictionary_create(
    *, workspace, user, name: str, rules=(), description: str = "", language: str = ""
) -> PronunciationDictionary:
    """A new dictionary of ``rules`` (``PronunciationRule``s or the API's rule objects)."""
    checked = _checked(rules)
    dictionary = PronunciationDictionary(
        workspace=workspace,
        created_by=user,
        name=_name(name),
        description=_description(description),
        language=(language or "")[:16],
    )
    return _new_version(dictionary, checked)


def dictionary_create_from_pls(
    *, workspace, user, name: str, data: bytes, description: str = "", language: str = ""
) -> PronunciationDictionary:
    """A new dictionary from a PLS lexicon (at most ``MAX_PLS_BYTES``); its language is the
    lexicon's ``xml:lang`` unless ``language`` is given."""
    if data is None or not len(data):
        raise DictionaryRefused("Choose a PLS lexicon file (.pls).", code="invalid_file")
    if len(data) > MAX_PLS_BYTES:
        raise DictionaryRefused(
            f"The lexicon is {len(data):,} bytes; a dictionary file may be at most "
            f"{MAX_PLS_BYTES // 1024:,} kB.",
            code="file_too_large",
        )
    try:
        lang, rules = pls_parse(bytes(data))
    except PronunciationInvalid as exc:
        raise DictionaryRefused(
            f"This is not a PLS lexicon Chorus can read: {exc}", code="invalid_pls_file"
        ) from None
    return dictionary_create(
        workspace=workspace,
        user=user,
        name=name,
        rules=rules,
        description=description,
        language=language or lang,
    )


def dictionary_get(*, workspace, dictionary_id: str) -> PronunciationDictionary:
    """The workspace's dictionary of that public id; another workspace's is not found."""
    dictionary = (
        PronunciationDictionary.objects.filter(workspace=workspace, public_id=dictionary_id)
        .select_related("created_by")
        .first()
    )
    if dictionary is None:
        raise DictionaryRefused(
            f"There is no pronunciation dictionary {dictionary_id!r} in this workspace.",
            status=404,
            code="pronunciation_dictionary_not_found",
        )
    return dictionary


@dataclass(frozen=True)
class DictionaryPage:
    items: list
    next_cursor: str | None
    has_more: bool


def _cursor_offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)).decode()
        kind, number = text.split(":", 1)
        offset = int(number)
    except (ValueError, UnicodeError):
        offset = -1
        kind = ""
    if kind != "o" or offset < 0:
        raise DictionaryRefused(
            "This cursor is not one a list of dictionaries returned: start again without it.",
            code="invalid_cursor",
        )
    return offset


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def dictionaries_page(
    *,
    workspace,
    search: str = "",
    cursor: str | None = None,
    page_size: int = 30,
    sort: str = "creation_time_unix",
    descending: bool = True,
    include_archived: bool = True,
) -> DictionaryPage:
    """One page of the workspace's dictionaries (``cursor`` from the page before)."""
    if sort not in SORTS:
        raise DictionaryRefused(f"Sort by one of {', '.join(SORTS)}.", code="invalid_sort")
    page_size = max(1, min(int(page_size), PAGE_SIZE_MAX))
    offset = _cursor_offset(cursor)
    rows = PronunciationDictionary.objects.filter(workspace=workspace).select_related("created_by")
    if not include_archived:
        rows = rows.filter(archived=False)
    search = (search or "").strip()
    if search:
        rows = rows.filter(Q(name__icontains=search) | Q(description__icontains=search))
    field = "created_at" if sort == "creation_time_unix" else "name"
    sign = "-" if descending else ""
    rows = rows.order_by(f"{sign}{field}", f"{sign}id")
    items = list(rows[offset : offset + page_size + 1])
    has_more = len(items) > page_size
    items = items[:page_size]
    return DictionaryPage(
        items=items,
        next_cursor=_cursor(offset + page_size) if has_more else None,
        has_more=has_more,
    )


@transaction.atomic
def dictionary_update(
    *,
    dictionary: PronunciationDictionary,
    name=None,
    description=None,
    language=None,
    archived=None,
) -> PronunciationDictionary:
    """Rename, describe, set the language of, archive or restore a dictionary (its rules and
    version stay as they are). ``None`` leaves a field alone."""
    if name is not None:
        dictionary.name = _name(name)
    if description is not None:
        dictionary.description = _description(description)
    if language is not None:
        dictionary.language = (language or "")[:16]
    if archived is not None:
        dictionary.archived = bool(archived)
    dictionary.save()
    return dictionary


def _locked(dictionary: PronunciationDictionary) -> PronunciationDictionary:
    return PronunciationDictionary.objects.select_for_update().get(pk=dictionary.pk)


@transaction.atomic
def dictionary_rules_add(*, dictionary: PronunciationDictionary, rules) -> PronunciationDictionary:
    """Add ``rules``; a rule whose ``string_to_replace`` the dictionary has already replaces
    the old one (in its place). A new version when anything changed."""
    added = _checked(rules)
    if not added:
        raise DictionaryRefused("Add at least one rule.", code="invalid_pronunciation_rules")
    current = _locked(dictionary)
    by_string = {rule.string_to_replace: rule for rule in added}
    merged = [by_string.pop(rule.string_to_replace, rule) for rule in dictionary_rules(current)]
    seen = set()
    for rule in added:  # new strings, in the order given (the last of a repeated one wins)
        if rule.string_to_replace in by_string and rule.string_to_replace not in seen:
            seen.add(rule.string_to_replace)
            merged.append(by_string[rule.string_to_replace])
    return _changed(current, merged)


@transaction.atomic
def dictionary_rules_remove(
    *, dictionary: PronunciationDictionary, strings
) -> PronunciationDictionary:
    """Remove the rules whose ``string_to_replace`` is one of ``strings`` (strings the
    dictionary does not have are ignored). A new version when anything changed."""
    if isinstance(strings, str) or not all(isinstance(s, str) for s in strings):
        raise DictionaryRefused("rule_strings must be a list of strings.", code="invalid_rules")
    drop = set(strings)
    current = _locked(dictionary)
    kept = [rule for rule in dictionary_rules(current) if rule.string_to_replace not in drop]
    return _changed(current, kept)


@transaction.atomic
def dictionary_rules_set(*, dictionary: PronunciationDictionary, rules) -> PronunciationDictionary:
    """Replace every rule with ``rules``. A new version when anything changed."""
    return _changed(_locked(dictionary), list(_checked(rules)))


def _changed(current: PronunciationDictionary, rules) -> PronunciationDictionary:
    rules = _checked(rules)
    if rules_to_json(rules) == current.rules:
        return current
    return _new_version(current, rules)


def version_rules(
    dictionary: PronunciationDictionary, version_id: str | None
) -> tuple[PronunciationRule, ...]:
    """The rules of one version of the dictionary (its latest when ``version_id`` is empty
    or the latest); a version of another dictionary is not found."""
    if not version_id or version_id == dictionary.version_id:
        return dictionary_rules(dictionary)
    version = PronunciationVersion.objects.filter(
        dictionary=dictionary, version_id=version_id
    ).first()
    if version is None:
        raise DictionaryRefused(
            f"The pronunciation dictionary {dictionary.public_id!r} has no version {version_id!r}.",
            status=404,
            code="pronunciation_dictionary_version_not_found",
        )
    return rules_from_json(version.rules)


def dictionary_pls(
    *, dictionary: PronunciationDictionary, version_id: str | None = None
) -> tuple[str, bytes]:
    """(file name, PLS 1.0 document) of a version of the dictionary (the latest by default)."""
    rules = version_rules(dictionary, version_id)
    language = dictionary.language or "en-US"
    data = pls_write(rules, lang=language)
    stem = slugify(dictionary.name) or "dictionary"
    return f"{stem}-{version_id or dictionary.version_id}.pls", data


# --- Text to speech: locators and projects ------------------------------------------------


def _locator_refused(status: int, code: str, message: str) -> ApiRefused:
    kind = "not_found" if status == 404 else "invalid_request"
    return ApiRefused(status, code, message, kind=kind, param="pronunciation_dictionary_locators")


def rules_for_locators(workspace, locators) -> tuple[PronunciationRule, ...]:
    """The rules a text-to-speech call's ``pronunciation_dictionary_locators`` name, in the
    order of the locators (``[{"pronunciation_dictionary_id", "version_id"?}]``; no
    ``version_id``: the latest). At most ``MAX_LOCATORS``; an unknown dictionary or version,
    or another workspace's, is a 404 ``ApiRefused``; a malformed locator a 400. Two queries
    at most, whatever the number of locators."""
    locators = list(locators or ())
    if not locators:
        return ()
    if len(locators) > MAX_LOCATORS:
        raise _locator_refused(
            400,
            "too_many_pronunciation_dictionaries",
            f"{len(locators)} pronunciation dictionaries were given; a call may use at most "
            f"{MAX_LOCATORS}.",
        )
    wanted: list[tuple[str, str | None]] = []
    for index, locator in enumerate(locators):
        locator = locator if isinstance(locator, dict) else {}
        dictionary_id = locator.get("pronunciation_dictionary_id")
        version_id = locator.get("version_id")
        if not isinstance(dictionary_id, str) or not dictionary_id.strip():
            raise _locator_refused(
                400,
                "invalid_pronunciation_dictionary_locator",
                f"Locator {index + 1} needs a pronunciation_dictionary_id.",
            )
        if version_id is not None and not isinstance(version_id, str):
            raise _locator_refused(
                400,
                "invalid_pronunciation_dictionary_locator",
                f"Locator {index + 1}: version_id must be a string.",
            )
        wanted.append((dictionary_id, version_id or None))
    found = {
        d.public_id: d
        for d in PronunciationDictionary.objects.filter(
            workspace=workspace, public_id__in={d for d, _ in wanted}
        )
    }
    older = {v for d, v in wanted if v and d in found and v != found[d].version_id}
    versions = {
        v.version_id: v
        for v in PronunciationVersion.objects.filter(
            dictionary__workspace=workspace, version_id__in=older
        )
    }
    rules: list[PronunciationRule] = []
    for dictionary_id, version_id in wanted:
        dictionary = found.get(dictionary_id)
        if dictionary is None:
            raise _locator_refused(
                404,
                "pronunciation_dictionary_not_found",
                f"There is no pronunciation dictionary {dictionary_id!r} in this workspace.",
            )
        if not version_id or version_id == dictionary.version_id:
            rules.extend(rules_from_json(dictionary.rules))
            continue
        version = versions.get(version_id)
        if version is None or version.dictionary_id != dictionary.pk:
            raise _locator_refused(
                404,
                "pronunciation_dictionary_version_not_found",
                f"The pronunciation dictionary {dictionary_id!r} has no version {version_id!r}.",
            )
        rules.extend(rules_from_json(version.rules))
    return tuple(rules)


@transaction.atomic
def project_dictionaries_set(project: Project, dictionaries) -> Project:
    """Attach exactly ``dictionaries`` (rows or public ids) to the project; every render of
    the project applies their rules. Another workspace's dictionary is not found."""
    ids = []
    rows = []
    for item in dictionaries:
        if isinstance(item, PronunciationDictionary):
            rows.append(item)
        else:
            ids.append(item)
    found = {
        d.public_id: d
        for d in PronunciationDictionary.objects.filter(
            workspace_id=project.workspace_id, public_id__in=ids
        )
    }
    missing = [i for i in ids if i not in found]
    if missing or any(row.workspace_id != project.workspace_id for row in rows):
        name = missing[0] if missing else "(another workspace's)"
        raise DictionaryRefused(
            f"There is no pronunciation dictionary {name!r} in this workspace.",
            status=404,
            code="pronunciation_dictionary_not_found",
        )
    project.dictionaries.set([*rows, *found.values()])
    return project


# --- Try it -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TryOut:
    """A sentence spoken without and with a dictionary (on the local engine, free)."""

    text: str
    spoken_text: str  # with the alias rules applied, as the engine says it
    plain: Generation
    ruled: Generation


def dictionary_try(
    *, workspace, user, dictionary: PronunciationDictionary, text: str, voice_id: str
) -> TryOut:
    """Speak ``text`` twice with the core's ``speak`` on the local engine as a free draft:
    without the dictionary and with it. Both clips are kept (History) so a page can play
    them; a refusal of the core (an unknown voice) is raised as it is."""
    from apps.engines.pronunciation import aliases_applied

    text = (text or "").strip()
    if not text:
        raise DictionaryRefused("Write a sentence to try the dictionary on.", code="invalid_text")
    if len(text) > MAX_TRY_TEXT:
        raise DictionaryRefused(
            f"The sentence is {len(text)} characters long; try at most {MAX_TRY_TEXT}.",
            code="invalid_text",
        )
    rules = dictionary_rules(dictionary)
    caller = Caller(
        workspace=workspace,
        user=user,
        purpose=("pronunciation_dictionary", dictionary.public_id),
        draft=True,
        engine_kind=EngineKind.LOCAL,
    )
    clips = []
    for with_rules in (False, True):
        speech = speak(
            caller=caller,
            speech=SpeechInput(
                voice_id=voice_id,
                text=text,
                pronunciation_rules=rules if with_rules else (),
                recipe_extra={
                    "pronunciation_dictionary": dictionary.public_id if with_rules else None,
                    "pronunciation_version": dictionary.version_id if with_rules else None,
                },
            ),
        )
        clips.append(
            Generation.objects.filter(workspace=workspace, request_id=speech.request_id)
            .order_by("-id")
            .first()
        )
    return TryOut(
        text=text, spoken_text=aliases_applied(text, rules), plain=clips[0], ruled=clips[1]
    )
