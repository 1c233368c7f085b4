"""Names and links that billing shows but does not own: a registry the higher apps fill in
their ``AppConfig.ready()``.

Billing sits below projects, transcripts, jobs and history (``lint-imports``), yet the spend
explorer names projects by their public id and links a ledger row to what it paid for. Each
of those apps registers a function here; billing calls them in bulk (one query per kind per
page, never one per row) and shows the raw id where nothing is registered.

- ``register_namer(dimension, fn)``: ``fn(workspace, values) -> {value: name}`` for a
  dimension of the explorer (``"project"``: public ids → project names).
- ``register_purpose(purpose_type, fn)``: ``fn(workspace, purpose_ids) -> {purpose_id: url}``
  for the ``purpose_type`` of ledger rows (``"project_block"``, ``"transcript"``, ``"job"``…).
- ``register_event_links(fn)``: ``fn(workspace, event_ids) -> {event_id: (label, url)}`` for
  what a row produced regardless of its purpose (history: the clip it paid for).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

Namer = Callable[[object, list[str]], dict[str, str]]
PurposeLinker = Callable[[object, list[str]], dict[str, str]]
EventLinker = Callable[[object, list[int]], dict[int, tuple[str, str]]]

_namers: dict[str, Namer] = {}
_purposes: dict[str, PurposeLinker] = {}
_event_linkers: list[EventLinker] = []

# How a purpose type reads to people (the link text of a drill-down row).
PURPOSE_LABELS = {
    "project_block": "Project block",
    "project_cue": "Project cue",
    "transcript": "Transcript",
    "job": "Job",
    "dubbing": "Dubbing",
    "speech": "Speech take",
    "voice": "Voice",
    "voice_design": "Voice design",
    "voice_clone": "Voice clone",
    "pronunciation_dictionary": "Pronunciation dictionary",
}


def register_namer(dimension: str, fn: Namer) -> None:
    _namers[dimension] = fn


def register_purpose(purpose_type: str, fn: PurposeLinker) -> None:
    _purposes[purpose_type] = fn


def register_event_links(fn: EventLinker) -> None:
    if fn not in _event_linkers:
        _event_linkers.append(fn)


def names(workspace, dimension: str, values: Iterable[str]) -> dict[str, str]:
    """The names of ``values`` of ``dimension`` (those a registered namer knows)."""
    fn = _namers.get(dimension)
    wanted = sorted({v for v in values if v})
    if fn is None or not wanted:
        return {}
    return fn(workspace, wanted)


@dataclass(frozen=True)
class PurposeLink:
    label: str
    url: str  # "" when nothing links to it (a deleted object, an unregistered type)


def purpose_links(workspace, events) -> dict[int, PurposeLink]:
    """What each ledger row of ``events`` paid for, linked where an app knows the page: one
    call per purpose type present and per event linker, whatever the number of rows."""
    by_type: dict[str, set[str]] = {}
    for event in events:
        if event.purpose_type:
            by_type.setdefault(event.purpose_type, set()).add(event.purpose_id)
    urls: dict[tuple[str, str], str] = {}
    for purpose_type, ids in by_type.items():
        fn = _purposes.get(purpose_type)
        if fn is not None:
            for purpose_id, url in fn(workspace, sorted(ids)).items():
                urls[(purpose_type, purpose_id)] = url
    produced: dict[int, tuple[str, str]] = {}
    event_ids = [event.pk for event in events]
    for fn in _event_linkers:
        if event_ids:
            produced.update(fn(workspace, event_ids))
    links = {}
    for event in events:
        if event.purpose_type:
            label = PURPOSE_LABELS.get(event.purpose_type, event.purpose_type.replace("_", " "))
            url = urls.get((event.purpose_type, event.purpose_id), "")
            if not url and event.pk in produced:
                url = produced[event.pk][1]
            links[event.pk] = PurposeLink(label, url)
        elif event.pk in produced:
            links[event.pk] = PurposeLink(*produced[event.pk])
    return links
