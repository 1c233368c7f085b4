"""A transcript as a list of words, and what is done with it: paragraphs, edits, captions and
exports. Pure functions over plain dicts (what ``Transcript.words`` stores), so every rule is
tested without a database.

A word is ``{"text", "start", "end", "type", "speaker_id", "logprob", "p"}``: ``type`` is
``word`` or ``audio_event``; ``p`` numbers the paragraph (0, 1, 2… in order of time).
"""

import difflib
import io
import json
import re
from dataclasses import dataclass, field

PARAGRAPH_GAP_SECONDS = 2.0  # a silence this long starts a new paragraph
PARAGRAPH_MAX_WORDS = 120


@dataclass
class Paragraph:
    index: int
    speaker_id: str | None
    words: list[tuple[int, dict]] = field(default_factory=list)  # (position in words, word)

    @property
    def start(self) -> float:
        times = [w["start"] for _, w in self.words if w.get("start") is not None]
        return min(times) if times else 0.0

    @property
    def end(self) -> float:
        times = [w["end"] for _, w in self.words if w.get("end") is not None]
        return max(times) if times else 0.0

    @property
    def text(self) -> str:
        return join_words([w for _, w in self.words])


def clean_words(items: list) -> list[dict]:
    """The engine's items as stored words: no ``spacing`` items, numbers rounded."""
    words = []
    for item in items:
        data = item if isinstance(item, dict) else vars(item)
        get = data.get
        kind = get("type")
        if kind == "spacing":
            continue
        start, end = get("start"), get("end")
        words.append(
            {
                "text": str(get("text") or ""),
                "start": round(float(start), 3) if start is not None else None,
                "end": round(float(end), 3) if end is not None else None,
                "type": kind or "word",
                "speaker_id": get("speaker_id"),
                "logprob": round(float(get("logprob") or 0.0), 4),
            }
        )
    return words


def paragraphed(words: list[dict]) -> list[dict]:
    """Number the paragraphs: a new one at each change of speaker, after a long silence, or
    past ``PARAGRAPH_MAX_WORDS`` words."""
    number, count, previous = 0, 0, None
    out = []
    for word in words:
        if previous is not None:
            gap = (word.get("start") or 0) - (previous.get("end") or 0)
            if (
                word.get("speaker_id") != previous.get("speaker_id")
                or gap >= PARAGRAPH_GAP_SECONDS
                or count >= PARAGRAPH_MAX_WORDS
            ):
                number, count = number + 1, 0
        out.append({**word, "p": number})
        count += 1
        previous = word
    return out


def join_words(words: list[dict]) -> str:
    """The words as text: audio events in parentheses, as ElevenLabs writes them."""
    parts = []
    for word in words:
        text = word["text"]
        if word.get("type") == "audio_event" and not text.startswith("("):
            text = f"({text})"
        parts.append(text)
    return " ".join(p for p in parts if p)


def paragraphs(words: list[dict]) -> list[Paragraph]:
    found: dict[int, Paragraph] = {}
    for position, word in enumerate(words):
        number = word.get("p", 0)
        if number not in found:
            found[number] = Paragraph(index=number, speaker_id=word.get("speaker_id"))
        found[number].words.append((position, word))
    return [found[k] for k in sorted(found)]


def full_text(words: list[dict]) -> str:
    return join_words(words)


# --- Edits ---------------------------------------------------------------------------------


class EditRefused(ValueError):
    """An edit that cannot be made; the message says why."""


def _paragraph(words: list[dict], number: int) -> list[int]:
    positions = [i for i, w in enumerate(words) if w.get("p") == number]
    if not positions:
        raise EditRefused(f"There is no paragraph {number + 1}.")
    return positions


def _spread(start: float, end: float, count: int) -> list[tuple[float, float]]:
    """``count`` consecutive slots sharing ``start``..``end`` evenly."""
    if count <= 0:
        return []
    step = max(end - start, 0.0) / count
    return [(round(start + k * step, 3), round(start + (k + 1) * step, 3)) for k in range(count)]


def edit_paragraph(words: list[dict], number: int, text: str) -> list[dict]:
    """Replace a paragraph's words with ``text``, keeping sensible timings.

    Unchanged words keep their own times; a changed run of words shares the time span of
    the words it replaces (or, when only inserted, the gap between its neighbours). Audio
    events in the paragraph stay where they were. Speaker and paragraph do not change.
    """
    text = " ".join((text or "").split())
    if not text:
        raise EditRefused("A paragraph needs some text; merge it into another instead.")
    if len(text) > 20_000:
        raise EditRefused("A paragraph has at most 20,000 characters.")
    positions = _paragraph(words, number)
    old = [words[i] for i in positions if words[i].get("type") != "audio_event"]
    events = [words[i] for i in positions if words[i].get("type") == "audio_event"]
    speaker = (old or events)[0].get("speaker_id")
    new_tokens = text.split(" ")
    matcher = difflib.SequenceMatcher(
        a=[w["text"].lower() for w in old], b=[t.lower() for t in new_tokens], autojunk=False
    )
    rebuilt: list[dict] = []
    para_start = min((w["start"] for w in old + events if w.get("start") is not None), default=0)
    para_end = max((w["end"] for w in old + events if w.get("end") is not None), default=0)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        tokens = new_tokens[b0:b1]
        if tag == "equal":
            for w, token in zip(old[a0:a1], tokens, strict=True):
                rebuilt.append({**w, "text": token})
            continue
        if not tokens:
            continue  # deleted words
        if a1 > a0:  # replaced: the replaced words' span
            start, end = old[a0].get("start"), old[a1 - 1].get("end")
        else:  # inserted: between the neighbours
            start = rebuilt[-1]["end"] if rebuilt else para_start
            end = old[a0]["start"] if a0 < len(old) else para_end
        start = para_start if start is None else start
        end = start if end is None or end < start else end
        for token, (s, e) in zip(tokens, _spread(start, end, len(tokens)), strict=True):
            rebuilt.append(
                {"text": token, "start": s, "end": e, "type": "word", "speaker_id": speaker,
                 "logprob": 0.0, "p": number, "edited": True}
            )  # fmt: skip
    merged = sorted(rebuilt + events, key=lambda w: (w.get("start") or 0, w.get("end") or 0))
    first, last = positions[0], positions[-1]
    return words[:first] + merged + words[last + 1 :]


def rename_speaker(speakers: dict, speaker_id: str, name: str) -> dict:
    name = " ".join((name or "").split())
    if not name:
        raise EditRefused("A speaker needs a name.")
    if len(name) > 80:
        raise EditRefused("A speaker's name has at most 80 characters.")
    return {**speakers, speaker_id: name}


def reassign_paragraph(words: list[dict], number: int, speaker_id: str) -> list[dict]:
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,40}", speaker_id or ""):
        raise EditRefused("Choose a speaker.")
    positions = set(_paragraph(words, number))
    return [{**w, "speaker_id": speaker_id} if i in positions else w for i, w in enumerate(words)]


def split_paragraph(words: list[dict], number: int, at: int) -> list[dict]:
    """Split before the ``at``-th word of the paragraph (1 … len-1)."""
    positions = _paragraph(words, number)
    if not 1 <= at < len(positions):
        raise EditRefused(f"Split between two words of the paragraph (1 to {len(positions) - 1}).")
    cut = positions[at]
    out = []
    for i, w in enumerate(words):
        p = w.get("p", 0)
        if p > number or (p == number and i >= cut):
            w = {**w, "p": p + 1}
        out.append(w)
    return out


def merge_paragraph(words: list[dict], number: int) -> list[dict]:
    """Merge paragraph ``number`` with the next; the merged one keeps the first's speaker."""
    positions = _paragraph(words, number)
    speaker = words[positions[0]].get("speaker_id")
    if not any(w.get("p") == number + 1 for w in words):
        raise EditRefused("This is the last paragraph: there is nothing to merge it with.")
    out = []
    for w in words:
        p = w.get("p", 0)
        if p == number + 1:
            w = {**w, "p": number, "speaker_id": speaker}
        elif p > number + 1:
            w = {**w, "p": p - 1}
        out.append(w)
    return out


# --- Captions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CueRules:
    max_chars: int = 42  # per line
    max_lines: int = 2
    max_seconds: float = 7.0

    @classmethod
    def from_query(cls, query) -> "CueRules":
        def number(name, default, low, high, kind=int):
            try:
                value = kind(query.get(name, default))
            except (TypeError, ValueError):
                raise EditRefused(f"{name} must be a number.") from None
            if not low <= value <= high:
                raise EditRefused(f"{name} must be between {low} and {high}.")
            return value

        return cls(
            max_chars=number("max_chars", 42, 10, 200),
            max_lines=number("max_lines", 2, 1, 4),
            max_seconds=number("max_seconds", 7.0, 1.0, 30.0, float),
        )


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]
    speaker_id: str | None


def _wrap(tokens: list[str], width: int) -> list[str]:
    lines: list[str] = []
    for token in tokens:
        if lines and len(lines[-1]) + 1 + len(token) <= width:
            lines[-1] += " " + token
        else:
            lines.append(token)  # a word longer than a line stands alone, whole
    return lines


def cues(words: list[dict], rules: CueRules = CueRules()) -> list[Cue]:
    """Caption cues: never more than ``max_lines`` lines of ``max_chars``, nor longer than
    ``max_seconds``; a new cue at each paragraph (so each speaker's words stay apart)."""
    out: list[Cue] = []
    current: list[dict] = []

    def flush():
        if current:
            tokens = [join_words([w]) for w in current]
            out.append(
                Cue(
                    start=current[0]["start"] or 0.0,
                    end=max(current[-1]["end"] or 0.0, (current[0]["start"] or 0.0) + 0.3),
                    lines=_wrap(tokens, rules.max_chars),
                    speaker_id=current[0].get("speaker_id"),
                )
            )
            current.clear()

    for word in words:
        if word.get("start") is None:
            continue
        if current:
            tokens = [join_words([w]) for w in [*current, word]]
            too_long = len(_wrap(tokens, rules.max_chars)) > rules.max_lines
            too_slow = (word.get("end") or word["start"]) - current[0]["start"] > rules.max_seconds
            if word.get("p") != current[0].get("p") or too_long or too_slow:
                flush()
        current.append(word)
    flush()
    for before, after in zip(out, out[1:], strict=False):  # no overlapping cues
        if before.end > after.start:
            before.end = max(after.start, before.start + 0.01)
    return out


def _clock(seconds: float, separator: str) -> str:
    millis = int(round(max(seconds, 0.0) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(words: list[dict], rules: CueRules = CueRules()) -> str:
    blocks = []
    for number, cue in enumerate(cues(words, rules), start=1):
        times = f"{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}"
        blocks.append(f"{number}\n{times}\n" + "\n".join(cue.lines) + "\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    """Cue text is markup in WebVTT: a literal & or < must be escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(words: list[dict], speakers: dict, rules: CueRules = CueRules()) -> str:
    blocks = ["WEBVTT\n"]
    for cue in cues(words, rules):
        times = f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}"
        lines = [_vtt_escape(text) for text in cue.lines]
        name = speakers.get(cue.speaker_id or "", "") if cue.speaker_id else ""
        if name:  # a voice span names the speaker (<v Name>)
            clean = _vtt_escape(name).replace(">", "")
            lines[0] = f"<v {clean}>{lines[0]}"
        blocks.append(f"{times}\n" + "\n".join(lines) + "\n")
    return "\n".join(blocks)


def speaker_name(speakers: dict, speaker_id: str | None) -> str:
    if not speaker_id:
        return "Speaker"
    if speaker_id in speakers:
        return speakers[speaker_id]
    match = re.fullmatch(r"speaker_(\d+)", speaker_id)
    return f"Speaker {int(match.group(1)) + 1}" if match else speaker_id


def clock(seconds: float) -> str:
    seconds = int(max(seconds or 0, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def to_txt(words: list[dict], speakers: dict, title: str) -> str:
    lines = [title, ""]
    for paragraph in paragraphs(words):
        who = speaker_name(speakers, paragraph.speaker_id)
        lines.append(f"{who} ({clock(paragraph.start)})")
        lines.append(paragraph.text)
        lines.append("")
    return "\n".join(lines)


def with_spacing(words: list[dict]) -> list[dict]:
    """ElevenLabs' ``words``: a ``spacing`` item between two words."""
    items = []
    for word in words:
        entry = {
            "text": word["text"],
            "start": word.get("start"),
            "end": word.get("end"),
            "type": word.get("type", "word"),
            "speaker_id": word.get("speaker_id"),
            "logprob": word.get("logprob", 0.0),
        }
        if items:
            previous = items[-1]
            items.append(
                {"text": " ", "start": previous["end"], "end": entry["start"], "type": "spacing",
                 "speaker_id": previous["speaker_id"], "logprob": 0.0}
            )  # fmt: skip
        items.append(entry)
    return items


def to_json(transcript) -> str:
    """The ElevenLabs speech-to-text response shape."""
    body = {
        "language_code": transcript.language_code,
        "language_probability": transcript.language_probability,
        "text": full_text(transcript.words),
        "words": with_spacing(transcript.words),
    }
    if transcript.entities:
        body["entities"] = transcript.entities
    return json.dumps(body, ensure_ascii=False, indent=2)


def to_segments(transcript) -> str:
    """Paragraphs as segments: speaker (id and name), start, end, text and words."""
    body = {
        "language_code": transcript.language_code,
        "segments": [
            {
                "speaker_id": p.speaker_id,
                "speaker": speaker_name(transcript.speakers, p.speaker_id),
                "start": p.start,
                "end": p.end,
                "text": p.text,
                "words": [
                    {k: w.get(k) for k in ("text", "start", "end", "type")} for _, w in p.words
                ],
            }
            for p in paragraphs(transcript.words)
        ],
    }
    return json.dumps(body, ensure_ascii=False, indent=2)


def to_docx(transcript) -> bytes:
    """A Word document: the title, then each paragraph under its speaker and time."""
    from docx import Document

    document = Document()
    document.add_heading(transcript.title, level=1)
    if transcript.language_code:
        document.add_paragraph(f"Language: {transcript.language_code}")
    for paragraph in paragraphs(transcript.words):
        head = document.add_paragraph()
        run = head.add_run(speaker_name(transcript.speakers, paragraph.speaker_id))
        run.bold = True
        head.add_run(f"  {clock(paragraph.start)}")
        document.add_paragraph(paragraph.text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()
