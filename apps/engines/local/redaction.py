"""Entity detection and redaction on transcripts: pure functions on text and word lists.

What the local engine finds, by category (the names follow ElevenLabs' ``entity_detection``):

- ``pii``: ``email_address`` (written, or spoken as "john at example dot com"),
  ``phone_number`` (international ``+44 20 7946 0958``, US ``(555) 123-4567``, spoken digit
  runs "five five five one two three four"), ``address`` (a house number, a capitalised street
  name and a suffix such as Street, Avenue or Road), ``date_of_birth`` (a date right after
  "born on", "date of birth" or "DOB").
- ``pci``: ``credit_card`` (13 to 19 digits that pass the Luhn check) and ``iban`` (country
  code, check digits and account, mod-97 checked).

Other ElevenLabs categories (``phi``, ``other``, ``offensive_language``) have no local detector;
asking for them raises ``NotSupported`` rather than silently finding nothing.

Detection works on the final transcript text. With redaction, each redacted entity's words
become one word carrying the placeholder (``[REDACTED]``, ``[EMAIL_ADDRESS]`` or
``[EMAIL_ADDRESS_1]``, numbered per distinct value), the text is rebuilt from the words, and
the returned entities point into that final text; a redacted entity's ``text`` is its
placeholder, so the value is not kept anywhere in the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from apps.engines.base import Entity, InvalidRequest, NotSupported, Word

CATEGORIES: dict[str, tuple[str, ...]] = {
    "pii": ("email_address", "phone_number", "address", "date_of_birth"),
    "pci": ("credit_card", "iban"),
}
ENTITY_TYPES: tuple[str, ...] = tuple(t for types in CATEGORIES.values() for t in types)
UNSUPPORTED_CATEGORIES = ("phi", "other", "offensive_language")
REDACTION_MODES = ("redacted", "entity_type", "enumerated_entity_type")


# --- Selection --------------------------------------------------------------------------


def resolve_types(values: list[str] | str | None, *, field: str) -> set[str]:
    """Turn ``["all"]``, categories and entity types into the set of entity types to find.

    Unknown names raise ``InvalidRequest`` on ``field``; categories with no local detector
    raise ``NotSupported``.
    """
    if values is None:
        return set()
    if isinstance(values, str):
        values = [values]
    found: set[str] = set()
    for raw in values:
        value = str(raw).strip().lower()
        if value == "all":
            found.update(ENTITY_TYPES)
        elif value in CATEGORIES:
            found.update(CATEGORIES[value])
        elif value in ENTITY_TYPES:
            found.add(value)
        elif value in UNSUPPORTED_CATEGORIES:
            raise NotSupported(
                f"The local engine cannot detect {value!r} entities; it detects "
                f"pii ({', '.join(CATEGORIES['pii'])}) and pci ({', '.join(CATEGORIES['pci'])})."
            )
        else:
            known = ", ".join(("all", *CATEGORIES, *ENTITY_TYPES))
            raise InvalidRequest.for_field(field, f"Unknown entity {value!r}. Use one of: {known}.")
    return found


# --- Checksums --------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """True when a string of digits passes the Luhn check used by payment cards."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


# Lengths from the IBAN registry for the common countries; others accept 15..34.
IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
    "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18,
    "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
}  # fmt: skip


def iban_valid(value: str) -> bool:
    """True for an IBAN (spaces allowed) with the right length and mod-97 check digits."""
    iban = re.sub(r"\s+", "", value).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", iban):
        return False
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


# --- Detection --------------------------------------------------------------------------

_TLDS = (
    "com|org|net|edu|gov|io|co|uk|us|de|fr|es|it|nl|eu|info|biz|me|ai|app|dev|ca|au|ch|se|"
    "no|dk|fi|be|at|pl|ie|in|jp"
)
_EMAIL_WRITTEN = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
# "john at example dot com", "john dot smith at mail dot example dot co dot uk",
# "jane at example.com": spoken words for @ and the dots.
_DOT = r"(?:\s+dot\s+|\.)"
_EMAIL_SPOKEN = re.compile(
    rf"(?<![\w.@-])[A-Za-z0-9][A-Za-z0-9_-]*(?:{_DOT}[A-Za-z0-9_-]+)*"
    rf"\s+at\s+[A-Za-z0-9][A-Za-z0-9-]*(?:{_DOT}[A-Za-z0-9-]+)*?{_DOT}(?:{_TLDS})\b",
    re.IGNORECASE,
)

# A run of digits with single separators (space, dot, dash, parentheses), maybe led by "+".
_NUMBER_RUN = re.compile(r"(?<![\w+])\+?\(?\d(?:\d|[ .-]?\(?(?=\d)|\)[ .-]?(?=\d))*")

_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_DIGIT_ALT = r"(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine|\d+)"
_SPOKEN_DIGITS = re.compile(
    rf"(?<![\w+])(?:plus\s+)?{_DIGIT_ALT}(?:[\s,.-]+{_DIGIT_ALT})+\b", re.IGNORECASE
)

_STREET_SUFFIX = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|"
    r"Terrace|Circle|Parkway|Pkwy|Highway|Hwy|Square|Sq|Close|Crescent|Row|Alley|Trail"
)
_ADDRESS = re.compile(
    rf"\b\d{{1,6}}[A-Za-z]?\s+(?:(?:[A-Z][a-z]+|\d+(?:st|nd|rd|th))\s+){{1,4}}"
    rf"(?i:{_STREET_SUFFIX})\b\.?"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Unit)\.?\s+\w+)?"
)

_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)
_DATE = (
    rf"(?:(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\.?,?\s+\d{{4}}"
    r"|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{2}-\d{2})"
)
_DATE_OF_BIRTH = re.compile(
    rf"\b(?:born\s+on|born|date\s+of\s+birth(?:\s+is)?|birth\s*date(?:\s+is)?|birthday\s+is|"
    rf"D\.?O\.?B\.?)[:,]?\s+(?:the\s+)?(?P<date>{_DATE})",
    re.IGNORECASE,
)

_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,4})?\b")


def _iban_end(candidate: str) -> int:
    """Length of the longest valid IBAN at the start of ``candidate`` (0 when none).

    The pattern may run on into a following word in capitals, so shorter cuts at group
    boundaries are tried too.
    """
    cuts = [m.end() for m in re.finditer(r"[A-Z0-9]+", candidate)]
    for cut in reversed(cuts):
        if iban_valid(candidate[:cut]):
            return cut
    return 0


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    entity_type: str


def _classify_digits(run: str) -> str | None:
    """``credit_card``, ``phone_number`` or None for one run of digits and separators."""
    digits = re.sub(r"\D", "", run)
    groups = [len(g) for g in re.findall(r"\d+", run)]
    plus = run.lstrip().startswith("+")
    card_groups = len(groups) == 1 or set(groups[:-1]) == {4} or groups in ([4, 6, 5], [4, 6, 4])
    if not plus and 13 <= len(digits) <= 19 and card_groups and luhn_valid(digits):
        return "credit_card"
    if plus:
        return "phone_number" if 8 <= len(digits) <= 15 else None
    if "(" in run and 10 <= len(digits) <= 11:
        return "phone_number"
    if groups in ([3, 3, 4], [1, 3, 3, 4], [3, 4]) or (len(groups) == 1 and len(digits) == 10):
        if groups[0] == 1 and digits[0] != "1":
            return None
        return "phone_number"
    if digits.startswith("0") and 10 <= len(digits) <= 11 and len(groups) >= 2:
        return "phone_number"  # national formats such as 020 7946 0958
    return None


def _counting(digits: str) -> bool:
    """ "1, 2, 3, 4, 5, 6, 7" is someone counting, not a number."""
    steps = {int(b) - int(a) for a, b in zip(digits, digits[1:], strict=False)}
    return steps == {1} or steps == {-1}


def _classify_spoken(run: str) -> str | None:
    """Digits said one by one: "five five five, one two three four" or, as Whisper often
    writes them, "5, 5, 5, 1, 2, 3, 4". A phone or card number, or None."""
    tokens = re.findall(r"[A-Za-z]+|\d+", run)
    if tokens and tokens[0].lower() == "plus":
        tokens = tokens[1:]
    spoken = any(t.lower() in _DIGIT_WORDS for t in tokens)
    one_by_one = all(len(t) == 1 for t in tokens)
    if not (spoken or one_by_one):
        return None
    digits = "".join(_DIGIT_WORDS.get(t.lower(), t) for t in tokens)
    if not digits.isdigit() or _counting(digits):
        return None
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return "credit_card"
    if 7 <= len(digits) <= 15:
        return "phone_number"
    return None


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop separators and trailing sentence punctuation from a matched span's ends."""
    while end > start and text[end - 1] in " .,-(":
        end -= 1
    while start < end and text[start] in " ,.-":
        start += 1
    return start, end


def _candidates(text: str, types: set[str]) -> list[_Span]:
    spans: list[_Span] = []

    def add(start: int, end: int, entity_type: str) -> None:
        start, end = _trim(text, start, end)
        if end > start and entity_type in types:
            spans.append(_Span(start, end, entity_type))

    # Order is priority: earlier kinds win an overlap.
    for m in _EMAIL_WRITTEN.finditer(text):
        add(m.start(), m.end(), "email_address")
    for m in _EMAIL_SPOKEN.finditer(text):
        add(m.start(), m.end(), "email_address")
    for m in _IBAN.finditer(text):
        end = _iban_end(m.group())
        if end:
            add(m.start(), m.start() + end, "iban")
    for m in _DATE_OF_BIRTH.finditer(text):
        add(m.start("date"), m.end("date"), "date_of_birth")
    for m in _NUMBER_RUN.finditer(text):
        kind = _classify_digits(m.group())
        if kind:
            add(m.start(), m.end(), kind)
    for m in _SPOKEN_DIGITS.finditer(text):
        kind = _classify_spoken(m.group())
        if kind:
            add(m.start(), m.end(), kind)
    for m in _ADDRESS.finditer(text):
        add(m.start(), m.end(), "address")
    return spans


def detect(text: str, types: set[str]) -> list[Entity]:
    """Entities of the given types in ``text``, in order, without overlaps."""
    if not types or not text:
        return []
    taken: list[_Span] = []
    for span in _candidates(text, types):
        if any(span.start < t.end and t.start < span.end for t in taken):
            continue
        taken.append(span)
    taken.sort(key=lambda s: s.start)
    return [Entity(text[s.start : s.end], s.entity_type, s.start, s.end) for s in taken]


# --- Redaction --------------------------------------------------------------------------


def _normalise(value: str) -> str:
    return re.sub(r"[^a-z0-9@]", "", value.lower())


def placeholders(entities: list[Entity], mode: str) -> list[str]:
    """The replacement for each entity; ``enumerated_entity_type`` numbers distinct values."""
    if mode not in REDACTION_MODES:
        raise InvalidRequest.for_field(
            "entity_redaction_mode",
            f"Unknown entity_redaction_mode {mode!r}. Use one of: {', '.join(REDACTION_MODES)}.",
        )
    numbers: dict[tuple[str, str], int] = {}
    counts: dict[str, int] = {}
    out = []
    for entity in entities:
        label = entity.entity_type.upper()
        if mode == "redacted":
            out.append("[REDACTED]")
        elif mode == "entity_type":
            out.append(f"[{label}]")
        else:
            key = (entity.entity_type, _normalise(entity.text))
            if key not in numbers:
                counts[entity.entity_type] = counts.get(entity.entity_type, 0) + 1
                numbers[key] = counts[entity.entity_type]
            out.append(f"[{label}_{numbers[key]}]")
    return out


def redact_text(text: str, entities: list[Entity], mode: str) -> tuple[str, list[Entity]]:
    """Replace each entity in ``text``; returns the new text and entities pointing into it."""
    pieces, out, pos = [], [], 0
    length = 0
    for entity, mark in zip(entities, placeholders(entities, mode), strict=True):
        before = text[pos : entity.start_char]
        pieces.append(before)
        length += len(before)
        pieces.append(mark)
        out.append(Entity(mark, entity.entity_type, length, length + len(mark)))
        length += len(mark)
        pos = entity.end_char
    pieces.append(text[pos:])
    return "".join(pieces), out


def redact_words(words: list[Word], entities: list[Entity], mode: str) -> list[Word]:
    """Replace the words that make up each entity with one word holding its placeholder.

    ``entities`` must point into ``"".join(w.text for w in words)``. Characters of a word
    outside the entity (a trailing full stop, say) stay with the placeholder.
    """
    if not entities:
        return list(words)
    offsets, pos = [], 0
    for w in words:
        offsets.append((pos, pos + len(w.text)))
        pos += len(w.text)
    marks = placeholders(entities, mode)
    # The words each entity touches; entities sharing a word are replaced together, so two
    # addresses in one "word" ("a@b.com,c@d.com") are both redacted.
    groups: list[list] = []
    for entity, mark in sorted(zip(entities, marks, strict=True), key=lambda m: m[0].start_char):
        touched = [
            k for k, (a, b) in enumerate(offsets) if a < entity.end_char and b > entity.start_char
        ]
        if not touched:
            continue
        first, last = touched[0], touched[-1]
        if groups and first <= groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], last)
            groups[-1][2].append((entity, mark))
        else:
            groups.append([first, last, [(entity, mark)]])
    out: list[Word] = []
    i = 0
    for first, last, members in groups:
        out.extend(words[i:first])
        covered = words[first : last + 1]
        lo = offsets[first][0]
        joined = "".join(w.text for w in covered)
        for entity, mark in sorted(members, key=lambda m: m[0].start_char, reverse=True):
            joined = joined[: entity.start_char - lo] + mark + joined[entity.end_char - lo :]
        real = [w for w in covered if w.type != "spacing"] or covered
        out.append(
            replace(
                real[0],
                text=joined,
                type="word",
                start=covered[0].start,
                end=covered[-1].end,
                logprob=min(w.logprob for w in real),
                characters=None,
            )
        )
        i = last + 1
    out.extend(words[i:])
    return out


def apply(
    words: list[Word],
    *,
    detect_types: set[str],
    redact_types: set[str],
    mode: str,
) -> tuple[str, list[Word], list[Entity]]:
    """Detect entities in the text the words make, redact the chosen types in text and words.

    Returns ``(text, words, entities)``; the entities point into the returned text.
    """
    text = "".join(w.text for w in words)
    found = detect(text, detect_types | redact_types)
    found = [e for e in found if e.entity_type in detect_types]
    to_redact = [e for e in found if e.entity_type in redact_types]
    if not to_redact:
        return text, list(words), found
    new_words = redact_words(words, to_redact, mode)
    new_text = "".join(w.text for w in new_words)
    # Re-point every entity at the new text: redacted ones at their placeholder.
    marks = iter(placeholders(to_redact, mode))
    out: list[Entity] = []
    shift = 0
    for entity in found:
        if entity.entity_type in redact_types:
            mark = next(marks)
            start = entity.start_char + shift
            out.append(Entity(mark, entity.entity_type, start, start + len(mark)))
            shift += len(mark) - (entity.end_char - entity.start_char)
        else:
            start = entity.start_char + shift
            out.append(Entity(entity.text, entity.entity_type, start, start + len(entity.text)))
    return new_text, new_words, out
