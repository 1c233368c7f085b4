"""Long text in parts an engine takes in one request: cut at sentence ends, never mid-word.

A part holds as many whole sentences as fit in ``limit`` characters. A sentence longer than
the limit is cut at its last clause boundary (a comma, semicolon, colon, dash…) before the
limit, else at its last space; only a single "word" longer than the limit (no space in it,
as in a long URL) is cut where the limit falls. Parts are stripped of the whitespace around
them and never empty; ``gap`` gives back what stood between two parts, so the parts joined
with their gaps are the text again (whitespace inside a gap reduced to one break or space).
"""

import re

# The end of a sentence: closing punctuation (and the quotes or brackets after it) before a
# space; CJK full stops need none; a line break ends a line of verse or a list item.
_SENTENCE_END = re.compile(
    r"""[.!?…‽]+["'”’»)\]]*(?=\s)"""  # "Done." / "Why?" / "(Yes!)"
    r"""|[。！？]+["'”’」』)）]*"""  # 你好。 (no space follows in CJK text)
    r"""|\n"""
)
# Where a long sentence may be cut: after a clause's punctuation and the space after it.
_CLAUSE_END = re.compile(r"""[,;:，；：、)\]）]["'”’»]*\s+|\s[—–-]+\s+|[—–]+""")
_SPACE = re.compile(r"\s+")


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    return [span for span in (_stripped(text, *s) for s in spans) if span[0] < span[1]]


def _last_cut(pattern: re.Pattern, text: str, start: int, stop: int) -> int | None:
    """The end of the last match of ``pattern`` in ``text[start:stop]`` (past ``start``)."""
    cut = None
    for match in pattern.finditer(text, start, stop):
        if match.end() > start and _stripped(text, start, match.end())[1] > start:
            cut = match.end()
    return cut


def _long_sentence(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """Cut one sentence longer than ``limit`` at clause ends, else spaces."""
    spans = []
    while end - start > limit:
        stop = start + limit
        # A cut may fall where the next character is a space (the window then holds the
        # whole word before it).
        window_stop = stop + 1 if stop < end and text[stop].isspace() else stop
        cut = _last_cut(_CLAUSE_END, text, start, window_stop) or _last_cut(
            _SPACE, text, start, window_stop
        )
        if cut is None:  # one "word" longer than the limit: cut where the limit falls
            cut = stop
        piece = _stripped(text, start, min(cut, stop))
        if piece[0] < piece[1]:
            spans.append(piece)
        start, end = _stripped(text, cut, end)
    if start < end:
        spans.append((start, end))
    return spans


def split_spans(text: str, limit: int) -> list[tuple[int, int]]:
    """The parts of ``text`` as ``(start, end)`` offsets, each at most ``limit`` long."""
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}.")
    parts: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for start, end in _sentences(text):
        if end - start > limit:
            if current is not None:
                parts.append(current)
            pieces = _long_sentence(text, start, end, limit)
            parts.extend(pieces[:-1])
            current = pieces[-1]
        elif current is not None and end - current[0] <= limit:
            current = (current[0], end)
        else:
            if current is not None:
                parts.append(current)
            current = (start, end)
    if current is not None:
        parts.append(current)
    return parts


def split_text(text: str, limit: int) -> list[str]:
    """``text`` in parts of at most ``limit`` characters (see the module's docstring)."""
    return [text[start:end] for start, end in split_spans(text, limit)]


def gap(text: str) -> str:
    """What stands between two parts: a paragraph break, a line break, or a space."""
    if text.count("\n") >= 2:
        return "\n\n"
    if "\n" in text:
        return "\n"
    return "" if text == "" else " "


def split_with_gaps(text: str, limit: int) -> list[tuple[str, str]]:
    """The parts with what preceded each (``""`` for the first)."""
    spans = split_spans(text, limit)
    result = []
    previous_end = None
    for start, end in spans:
        before = "" if previous_end is None else gap(text[previous_end:start])
        result.append((before, text[start:end]))
        previous_end = end
    return result


def joined(parts: list[tuple[str, str]]) -> str:
    """The parts (with the gaps before them) as one text again."""
    return "".join(before + part for before, part in parts)
