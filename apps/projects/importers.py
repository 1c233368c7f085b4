"""A project's script from pasted text or an uploaded TXT, Markdown, DOCX, EPUB or HTML file.

Pure functions (no models, no database): bytes or text in, an ``ImportedScript`` out, or an
``ImportRefused`` whose message the page shows as it is.

- Chapters start at headings: TXT lines that look like one ("Chapter 1", "CHAPTER ONE",
  "Part II", "Prologue", "# Title"); Markdown ``#``/``##``, HTML ``h1``/``h2`` and DOCX
  "Title"/"Heading 1"/"Heading 2" by the level rule (the top level that occurs more than once;
  a single top heading is the script's title and chapters start one level below it); each
  item of an EPUB's spine (titled by its nav/NCX entry, else its first heading).
- Blocks are paragraphs, whitespace-normalised; one longer than ``BLOCK_MAX_CHARS`` is cut at
  sentence ends (``split_text``). A paragraph without a letter or digit ("* * *") is dropped;
  so is a chapter without blocks. Text before the first heading is a chapter of its own,
  titled by the script's title (else "Opening").
- Nothing is fetched: XML is read with entity resolution and the network off, HTML with the
  network off, and an EPUB's references are looked up inside the archive only. DOCX and EPUB
  members are size-checked (their declared unpacked size, which bounds what zipfile reads)
  before anything is read.
"""

import codecs
import io
import posixpath
import re
import unicodedata
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from lxml import etree
from lxml import html as lxml_html

from apps.generation.text_files import NotText, text_decoded
from apps.generation.text_parts import split_text

FORMATS = ("txt", "md", "docx", "epub", "html")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UNPACKED_BYTES = 100 * 1024 * 1024
MAX_SCRIPT_CHARS = 2_000_000
BLOCK_MAX_CHARS = 2_500
TITLE_MAX_CHARS = 200

_ACCEPTED = "TXT, Markdown (.md), DOCX, EPUB or HTML"
_FORMAT_NAMES = {"txt": "text", "md": "Markdown", "docx": "DOCX", "epub": "EPUB", "html": "HTML"}
_EXTENSIONS = {
    "txt": "txt",
    "text": "txt",
    "md": "md",
    "markdown": "md",
    "mdown": "md",
    "docx": "docx",
    "epub": "epub",
    "html": "html",
    "htm": "html",
    "xhtml": "html",
}
_CONTENT_TYPES = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/epub+zip": "epub",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}


@dataclass(frozen=True)
class ImportedChapter:
    title: str
    blocks: tuple[str, ...]


@dataclass(frozen=True)
class ImportedScript:
    title: str
    author: str
    language: str
    chapters: tuple[ImportedChapter, ...]


class ImportRefused(ValueError):
    """A file or text that cannot become a script; ``str(exc)`` is the sentence to show."""


# ---------------------------------------------------------------------------------------
# Entry points


def import_text(text: str, *, fmt: str = "txt", title: str = "") -> ImportedScript:
    """Pasted ``text`` read as ``fmt`` (txt, md or html); ``title`` is the fallback title."""
    if fmt not in ("txt", "md", "html"):
        raise ImportRefused(f"Pasted text can be plain text, Markdown or HTML, not “{fmt}”.")
    if len(text) > MAX_UPLOAD_BYTES:
        raise ImportRefused(
            f"The text is too long: {len(text):,} characters, where a script holds at most "
            f"{MAX_SCRIPT_CHARS:,}."
        )
    if "\x00" in text:
        raise ImportRefused("The text holds NUL characters, as binary files do: paste text only.")
    if fmt == "md":
        return _markdown(text, title)
    if fmt == "html":
        return _html(text, title)
    return _txt(text, title)


def import_file(*, name: str, data: bytes, content_type: str = "") -> ImportedScript:
    """An uploaded file: its format from its extension, else from its bytes (``format_of``)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImportRefused(
            f"This file is {len(data) / (1024 * 1024):.1f} MB; uploads are limited to "
            f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
        )
    fmt = format_of(name, data, content_type=content_type)
    if fmt == "docx":
        return _docx(data)
    if fmt == "epub":
        return _epub(data)
    text = _decode(data)
    if fmt == "md":
        return _markdown(text, "")
    if fmt == "html":
        return _html(text, "")
    return _txt(text, "")


def format_of(name: str, data: bytes, content_type: str = "") -> str:
    """One of ``FORMATS``: by the name's extension, else sniffed, else by ``content_type``."""
    base = re.split(r"[\\/]", name or "")[-1]
    extension = base.rsplit(".", 1)[-1].lower() if "." in base else ""
    if extension in _EXTENSIONS:
        return _EXTENSIONS[extension]
    sniffed = _sniff(data)
    if sniffed:
        return sniffed
    declared = _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
    if declared:
        return declared
    raise ImportRefused(
        f"Chorus cannot import “{base or 'this file'}”: the accepted types are {_ACCEPTED}."
    )


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = set(archive.namelist())
                if (
                    "mimetype" in names
                    and archive.getinfo("mimetype").file_size <= 100
                    and archive.read("mimetype").strip() == b"application/epub+zip"
                ):
                    return "epub"
                if "word/document.xml" in names:
                    return "docx"
                if "META-INF/container.xml" in names:
                    return "epub"
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            RuntimeError,
            NotImplementedError,
            OSError,
            ValueError,
        ):
            return None
        return None
    head = data[:2048]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        head_text = head.decode("utf-16", errors="ignore")
    else:
        head_text = head.decode("utf-8", errors="ignore")
    head_text = head_text.lstrip("\ufeff \t\r\n").lower()
    if "<html" in head_text or head_text.startswith("<!doctype html"):
        return "html"
    return None


# ---------------------------------------------------------------------------------------
# Text: decoding and normalising

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\xad\ufeff\ud800-\udfff]")
_SPACE = re.compile(r"\s+")
_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c\x1d\x1e\x85\u2028]")


def _decode(data: bytes) -> str:
    """The script's text (``generation.text_files``); binary is refused."""
    try:
        return text_decoded(data)
    except NotText:
        raise _binary() from None


def _binary() -> ImportRefused:
    return ImportRefused(
        f"This file is not text (it holds NUL or control bytes, as binary files do); "
        f"upload {_ACCEPTED}."
    )


def _clean(text: str) -> str:
    """One line: control characters dropped, every run of whitespace one space."""
    return _SPACE.sub(" ", _CONTROL.sub("", text)).strip()


def _has_words(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def _lines(text: str) -> list[str]:
    return _BREAKS.sub("\n", text).replace("\u2029", "\n\n").split("\n")


# ---------------------------------------------------------------------------------------
# Assembly: headings and paragraphs → chapters


@dataclass
class _Doc:
    # (heading level, text) for a heading, (None, text) for a paragraph, in document order.
    items: list[tuple[int | None, str]]
    title: str = ""
    author: str = ""
    language: str = ""


def _level_rule(items: list[tuple[int | None, str]], levels: set[int]) -> tuple[int | None, int]:
    """The chapter level and the index of the title heading (-1 if none)."""
    found = [(i, level) for i, (level, _text) in enumerate(items) if level in levels]
    if not found:
        return None, -1
    counts = Counter(level for _i, level in found)
    top = min(counts)
    if counts[top] > 1:
        return top, -1
    title_index = next(i for i, level in found if level == top)
    below = sorted(level for level in counts if level > top)
    return (below[0] if below else top), title_index


def _script(doc: _Doc, *, fallback_title: str, fmt: str, levels: set[int] | None) -> ImportedScript:
    """Chapters from ``doc.items``: ``levels`` the heading levels that may start chapters
    (by the level rule), or None when every heading starts one (TXT)."""
    items = [(level, _clean(text)) for level, text in doc.items]
    items = [(level, text) for level, text in items if text]
    if levels is None:
        chapter_level, title_index = 1, -1
        items = [(1 if level is not None else None, text) for level, text in items]
    else:
        chapter_level, title_index = _level_rule(items, levels)
    title = _clean(doc.title)
    if not title and title_index >= 0:
        title = items[title_index][1]
    title = title or _clean(fallback_title)

    chapters: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for index, (level, text) in enumerate(items):
        starts_chapter = level is not None and level == chapter_level
        if index == title_index and not starts_chapter:
            continue  # the title heading, above the chapters' level
        if starts_chapter:
            current = (text, [])
            chapters.append(current)
        else:
            if current is None:
                current = (title or "", [])
                chapters.append(current)
            current[1].append(text)
    return _finish(
        title=title,
        author=doc.author,
        language=doc.language,
        chapters=chapters,
        fmt=fmt,
        preamble_title="Opening",
    )


def _finish(
    *,
    title: str,
    author: str,
    language: str,
    chapters: list[tuple[str, list[str]]],
    fmt: str,
    preamble_title: str = "",
) -> ImportedScript:
    kept: list[ImportedChapter] = []
    total = 0
    for chapter_title, paragraphs in chapters:
        blocks: list[str] = []
        for paragraph in paragraphs:
            paragraph = _clean(paragraph)
            if not _has_words(paragraph):
                continue
            if len(paragraph) > BLOCK_MAX_CHARS:
                blocks.extend(_clean(part) for part in split_text(paragraph, BLOCK_MAX_CHARS))
            else:
                blocks.append(paragraph)
        blocks = [block for block in blocks if block]
        if not blocks:
            continue
        total += sum(len(block) for block in blocks)
        name = _short(_clean(chapter_title))
        if not name:
            name = preamble_title if kept or len(chapters) > 1 else "Chapter 1"
        kept.append(ImportedChapter(title=name, blocks=tuple(blocks)))
    if not kept:
        raise ImportRefused(
            f"The script is empty: no words were found in this {_FORMAT_NAMES.get(fmt, fmt)}."
        )
    if total > MAX_SCRIPT_CHARS:
        raise ImportRefused(
            f"The script is too long: {total:,} characters, where a project holds at most "
            f"{MAX_SCRIPT_CHARS:,}."
        )
    return ImportedScript(
        title=_short(_clean(title)),
        author=_short(_clean(author)),
        language=_language(language),
        chapters=tuple(kept),
    )


def _short(text: str) -> str:
    return text if len(text) <= TITLE_MAX_CHARS else text[: TITLE_MAX_CHARS - 1].rstrip() + "…"


def _language(value: str) -> str:
    code = _clean(value or "").replace("_", "-")
    return code if re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*", code) else ""


# ---------------------------------------------------------------------------------------
# TXT

_NUMBER = (
    r"(?:\d+|[ivxlcdm]+"
    r"|(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen"
    r"|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy"
    r"|eighty|ninety|hundred)(?:[-\s](?:one|two|three|four|five|six|seven|eight|nine))?"
    r"|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last)"
)
_TXT_NUMBERED = re.compile(
    rf"(?:chapter|part|book|section|act|volume)\s+{_NUMBER}(?P<rest>\b.*)", re.IGNORECASE
)
_TXT_NAMED = re.compile(
    r"(?:prologue|epilogue|preface|foreword|afterword|introduction|interlude"
    r"|acknowledge?ments|appendix(?:\s+[A-Z0-9]+)?)(?P<rest>\b.*)",
    re.IGNORECASE,
)
_TXT_HASH = re.compile(r"#{1,6}\s+(?P<title>\S.*?)\s*#*")
_RULE = re.compile(r"\s*([#*=_~-]\s*){3,}")


def _txt_heading(line: str, alone: bool) -> str | None:
    """The chapter title a TXT line stands for, else None. A heading followed by more text
    in its paragraph must be bare ("Chapter 1", "Part II: The Sea")."""
    line = line.strip()
    if not line or len(line) > 100:
        return None
    hashed = _TXT_HASH.fullmatch(line)
    if hashed:
        return hashed.group("title")
    match = _TXT_NUMBERED.fullmatch(line) or _TXT_NAMED.fullmatch(line)
    if not match:
        return None
    rest = match.group("rest").strip()
    if not rest or re.match(r"[:.\-—–)]", rest) or alone:
        return line
    return None


def _paragraphs(lines: list[str]) -> list[list[str]]:
    """Lines grouped at blank lines; a text with no blank line at all has one per line."""
    if not any(not line.strip() for line in lines) and len(lines) > 1:
        return [[line] for line in lines if line.strip()]
    groups: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            groups[-1].append(line)
        elif groups[-1]:
            groups.append([])
    return [group for group in groups if group]


def _txt(text: str, title: str) -> ImportedScript:
    items: list[tuple[int | None, str]] = []
    for group in _paragraphs(_lines(text)):
        if len(group) == 1 and _RULE.fullmatch(group[0]):
            continue
        heading = _txt_heading(group[0], alone=len(group) == 1)
        if heading is not None:
            items.append((1, heading))
            group = group[1:]
        if group:
            items.append((None, " ".join(group)))
    return _script(_Doc(items=items), fallback_title=title, fmt="txt", levels=None)


# ---------------------------------------------------------------------------------------
# Markdown

_MD_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_MD_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_MD_FENCE = re.compile(r" {0,3}(`{3,}|~{3,}).*")
_MD_BREAK = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*")
_MD_LIST = re.compile(r" {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]+(.*)|$)")
_MD_REFERENCE = re.compile(r" {0,3}\[[^\]]+\]:\s*\S+.*")
_MD_INLINE = [
    (re.compile(r"<!--.*?-->", re.DOTALL), ""),
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # image: its alt text
    (re.compile(r"!\[([^\]]*)\]\[[^\]]*\]"), r"\1"),
    (re.compile(r"\[([^\]]*)\]\([^)]*\)"), r"\1"),  # link: its words
    (re.compile(r"\[([^\]]*)\]\[[^\]]*\]"), r"\1"),
    (re.compile(r"<((?:https?|mailto):[^>\s]+)>"), r"\1"),
    (re.compile(r"</?[A-Za-z][^>]*>"), ""),  # inline HTML tags
    (re.compile(r"(`+)(.+?)\1"), r"\2"),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"), r"\1"),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), r"\1"),
    (re.compile(r"\\([\\`*_{}\[\]()#+\-.!>|~])"), r"\1"),
]


def _md_inline(text: str) -> str:
    for pattern, replacement in _MD_INLINE:
        text = pattern.sub(replacement, text)
    return text


def _front_matter(lines: list[str]) -> tuple[dict[str, str], list[str]]:
    if not lines or lines[0].strip() != "---":
        return {}, lines
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            fields = {}
            for line in lines[1:end]:
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "\t", "-")):
                    fields[key.strip().lower()] = value.strip().strip("'\"")
            return fields, lines[end + 1 :]
    return {}, lines


def _markdown(text: str, title: str) -> ImportedScript:
    fields, lines = _front_matter(_lines(text.lstrip("\ufeff")))
    items: list[tuple[int | None, str]] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            items.append((None, _md_inline(" ".join(paragraph))))
            paragraph.clear()

    fence = ""
    for line in lines:
        fence_match = _MD_FENCE.fullmatch(line)
        if fence:
            if (
                fence_match
                and fence_match.group(1)[0] == fence[0]
                and len(fence_match.group(1)) >= len(fence)
            ):
                flush()
                fence = ""
            elif line.strip():
                paragraph.append(line)
            else:
                flush()
            continue
        if fence_match:
            flush()
            fence = fence_match.group(1)
            continue
        stripped = line.strip()
        while stripped.startswith(">"):  # a quote: its words
            stripped = stripped[1:].strip()
        if not stripped:
            flush()
            continue
        atx = _MD_ATX.fullmatch(stripped)
        if atx:
            flush()
            items.append((len(atx.group(1)), _md_inline(atx.group(2) or "")))
            continue
        setext = _MD_SETEXT.fullmatch(line)
        if setext and paragraph:
            heading = _md_inline(" ".join(paragraph))
            paragraph.clear()
            items.append((1 if setext.group(1)[0] == "=" else 2, heading))
            continue
        if _MD_BREAK.fullmatch(stripped) or _MD_REFERENCE.fullmatch(stripped):
            flush()
            continue
        if re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", stripped):
            continue  # a table's rule
        item = _MD_LIST.fullmatch(stripped)
        if item:
            flush()
            stripped = item.group(1) or ""
        paragraph.append(stripped)
    flush()
    doc = _Doc(
        items=items,
        title=fields.get("title", ""),
        author=fields.get("author", ""),
        language=fields.get("lang") or fields.get("language", ""),
    )
    return _script(doc, fallback_title=title, fmt="md", levels={1, 2})


# ---------------------------------------------------------------------------------------
# HTML (also an EPUB's chapters)

_DROPPED = {
    "script",
    "style",
    "nav",
    "noscript",
    "template",
    "head",
    "iframe",
    "object",
    "embed",
    "svg",
    "math",
    "canvas",
    "select",
    "button",
    "textarea",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = {
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "caption",
    "dd",
    "details",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "header",
    "hr",
    "html",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "td",
    "th",
    "tr",
    "ul",
}


def _html_parser() -> lxml_html.HTMLParser:
    # The HTML parser knows no DTD (no entity declarations) and never reads the network.
    return lxml_html.HTMLParser(
        no_network=True, remove_comments=True, remove_pis=True, encoding="utf-8"
    )


def _xml_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _tag(element) -> str:
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1].lower()


def _html_tree(text: str):
    if not text.strip():
        return None
    try:
        return lxml_html.document_fromstring(text.encode("utf-8"), parser=_html_parser())
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return None


def _html_items(root) -> list[tuple[int | None, str]]:
    """Headings and paragraphs of an HTML tree, dropped elements left out."""
    items: list[tuple[int | None, str]] = []
    buffer: list[str] = []

    def flush() -> None:
        text = "".join(buffer)
        buffer.clear()
        if text.strip():
            items.append((None, text))

    heading: list[str] | None = None
    heading_level = 0
    depth_in_heading = 0
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, element in walker:
        tag = _tag(element)
        target = heading if heading is not None else buffer
        if event == "start":
            if tag in _DROPPED:
                walker.skip_subtree()
                continue
            if heading is None and tag in _HEADINGS:
                flush()
                heading, heading_level, depth_in_heading = [], _HEADINGS[tag], 0
                heading.append(element.text or "")
                continue
            if heading is not None:
                depth_in_heading += 1
            elif tag in _BLOCKS:
                flush()
            if tag == "br":
                target.append(" ")
            target.append(element.text or "")
            continue
        # end
        if tag in _DROPPED:
            target.append(element.tail or "")
            continue
        if heading is not None and depth_in_heading == 0 and tag in _HEADINGS:
            items.append((heading_level, "".join(heading)))
            heading = None
            buffer.append(element.tail or "")
            continue
        if heading is not None:
            depth_in_heading -= 1
            if tag in _BLOCKS:
                heading.append(" ")
        elif tag in _BLOCKS:
            flush()
        target.append(element.tail or "")
    flush()
    return items


def _meta(root, name: str) -> str:
    for element in root.iter("meta"):
        if (element.get("name") or "").strip().lower() == name:
            return element.get("content") or ""
    return ""


def _html(text: str, title: str) -> ImportedScript:
    root = _html_tree(text)
    if root is None:
        raise ImportRefused("The script is empty: no words were found in this HTML.")
    head_title = root.find(".//title")
    language = root.get("lang") or root.get("{http://www.w3.org/XML/1998/namespace}lang") or ""
    if not language:
        for element in root.iter("meta"):
            if (element.get("http-equiv") or "").lower() == "content-language":
                language = element.get("content") or ""
    body = root.find("body")
    doc = _Doc(
        items=_html_items(body if body is not None else root),
        title=head_title.text_content() if head_title is not None else "",
        author=_meta(root, "author"),
        language=language,
    )
    return _script(doc, fallback_title=title, fmt="html", levels={1, 2})


# ---------------------------------------------------------------------------------------
# Archives (DOCX, EPUB)


def _archive(data: bytes, kind: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, NotImplementedError) as exc:
        raise ImportRefused(
            f"This {kind} could not be read: it is not a complete zip archive ({exc})."
        ) from exc


def _too_big(kind: str, size: int) -> ImportRefused:
    return ImportRefused(
        f"This {kind} unpacks to more than {MAX_UNPACKED_BYTES // (1024 * 1024)} MB "
        f"({size / (1024 * 1024):.0f} MB); Chorus does not open it."
    )


class _Reader:
    """Reads an EPUB's members, counting their declared unpacked sizes before each read."""

    def __init__(self, archive: zipfile.ZipFile):
        self.archive = archive
        self.names = {info.filename: info for info in archive.infolist()}
        self.read_bytes = 0

    def read(self, name: str) -> bytes:
        info = self.names[name]
        if self.read_bytes + info.file_size > MAX_UNPACKED_BYTES:
            raise _too_big("EPUB", self.read_bytes + info.file_size)
        self.read_bytes += info.file_size
        try:
            with self.archive.open(info) as member:
                return member.read(info.file_size + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise ImportRefused(f"This EPUB is damaged: {name} cannot be unpacked.") from exc
        except (RuntimeError, NotImplementedError) as exc:
            raise ImportRefused(
                f"This EPUB could not be read: {name} is encrypted or compressed in a way "
                "Chorus does not read."
            ) from exc

    def xml(self, name: str, what: str):
        try:
            return etree.fromstring(self.read(name), parser=_xml_parser())
        except etree.XMLSyntaxError as exc:
            raise ImportRefused(f"This EPUB is damaged: its {what} is not valid XML.") from exc


# ---------------------------------------------------------------------------------------
# DOCX

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _docx_level(paragraph) -> int | None:
    style = paragraph.style
    for _ in range(5):  # a custom style based on a heading style is that heading
        if style is None:
            return None
        name = (style.name or "").strip().lower()
        style_id = (style.style_id or "").strip().lower()
        if name == "title" or style_id == "title":
            return 0
        match = re.fullmatch(r"heading ?(\d)", name) or re.fullmatch(r"heading(\d)", style_id)
        if match:
            return int(match.group(1))
        style = style.base_style
    return None


def _docx(data: bytes) -> ImportedScript:
    archive = _archive(data, "DOCX")
    with archive:
        unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_UNPACKED_BYTES:
            raise _too_big("DOCX", unpacked)
        if "word/document.xml" not in archive.namelist():
            raise ImportRefused("This DOCX could not be read: it has no word/document.xml.")
    import docx  # python-docx: its XML parser resolves no entities
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        items: list[tuple[int | None, str]] = []
        for part in document.iter_inner_content():
            if isinstance(part, Table):
                seen = set()
                for row in part.rows:
                    for cell in row.cells:
                        if id(cell._tc) in seen:
                            continue
                        seen.add(id(cell._tc))
                        items.extend((None, p.text) for p in cell.paragraphs)
                continue
            level = _docx_level(part)
            items.append((level if level is not None and level <= 2 else None, part.text))
        properties = document.core_properties
        language = properties.language or ""
        if not language:
            default = document.styles.element.find(
                f"{_W}docDefaults/{_W}rPrDefault/{_W}rPr/{_W}lang"
            )
            language = default.get(f"{_W}val") or "" if default is not None else ""
        doc = _Doc(
            items=items,
            title=properties.title or "",
            author=properties.author or "",
            language=language,
        )
    except ImportRefused:
        raise
    except Exception as exc:  # python-docx on a damaged file raises many kinds of errors
        raise ImportRefused(
            f"This DOCX could not be read: {type(exc).__name__}: {exc}".rstrip(": ")
        ) from exc
    return _script(doc, fallback_title="", fmt="docx", levels={0, 1, 2})


# ---------------------------------------------------------------------------------------
# EPUB

_OPF = "{http://www.idpf.org/2007/opf}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_NCX = "{http://www.daisy.org/z3986/2005/ncx/}"
_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_CONTENT_MEDIA = {"application/xhtml+xml", "text/html", "application/xml", "text/xml"}


def _inside(base: str, href: str) -> str | None:
    """The archive path ``href`` names from ``base``'s folder; None for external ones."""
    parts = urlsplit(href.strip())
    if parts.scheme or parts.netloc or not parts.path:
        return None
    path = unquote(parts.path)
    if path.startswith("/"):
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(base), path))
    return None if joined.startswith("../") or joined == ".." else joined


def _epub_text(element) -> str:
    return "".join(element.itertext()) if element is not None else ""


def _epub(data: bytes) -> ImportedScript:
    archive = _archive(data, "EPUB")
    with archive:
        reader = _Reader(archive)
        if "META-INF/container.xml" not in reader.names:
            raise ImportRefused("This EPUB is damaged: its container.xml is missing.")
        container = reader.xml("META-INF/container.xml", "container.xml")
        rootfile = container.find(f".//{_CONTAINER}rootfile")
        if rootfile is None:
            rootfile = next((e for e in container.iter() if _tag(e) == "rootfile"), None)
        opf_path = _inside("", rootfile.get("full-path") or "") if rootfile is not None else None
        if not opf_path:
            raise ImportRefused("This EPUB is damaged: its container.xml names no package file.")
        if opf_path not in reader.names:
            raise ImportRefused(f"This EPUB is damaged: its package file {opf_path} is missing.")
        opf = reader.xml(opf_path, "package file")

        metadata = opf.find(f"{_OPF}metadata")
        if metadata is None:
            metadata = opf

        def dc(name: str) -> list[str]:
            return [_clean(_epub_text(e)) for e in metadata.iter(f"{_DC}{name}")]

        manifest: dict[str, tuple[str | None, str, str]] = {}
        for item in opf.iter(f"{_OPF}item"):
            manifest[item.get("id") or ""] = (
                _inside(opf_path, item.get("href") or ""),
                (item.get("media-type") or "").strip().lower(),
                item.get("properties") or "",
            )
        spine = opf.find(f"{_OPF}spine")
        if spine is None or not len(spine.findall(f"{_OPF}itemref")):
            raise ImportRefused("This EPUB is damaged: its package file has no spine.")

        titles, nav_path = _epub_toc(reader, opf_path, manifest, spine)

        chapters: list[tuple[str, list[str]]] = []
        for itemref in spine.iter(f"{_OPF}itemref"):
            if (itemref.get("linear") or "").strip().lower() == "no":
                continue
            idref = itemref.get("idref") or ""
            if idref not in manifest:
                raise ImportRefused(
                    f"This EPUB is damaged: its spine names “{idref}”, which its manifest lacks."
                )
            path, media, _props = manifest[idref]
            if path is None or path == nav_path:
                continue  # an external reference (never fetched), or the table of contents
            if media and media not in _CONTENT_MEDIA:
                continue
            if path not in reader.names:
                raise ImportRefused(
                    f"This EPUB is damaged: its spine names {path}, which is not in the file."
                )
            root = _html_tree(_decode_member(reader.read(path), path))
            if root is None:
                continue
            body = root.find("body")
            items = _html_items(body if body is not None else root)
            title = titles.get(path, "")
            if items and items[0][0] is not None:  # the page's own heading
                title = title or items[0][1]
                items = items[1:]
            if not any(_has_words(_clean(text)) for _level, text in items):
                continue
            number = len(chapters) + 1
            chapters.append((_clean(title) or f"Chapter {number}", [t for _l, t in items]))

    creators = [c for c in dc("creator") if c]
    languages = [c for c in dc("language") if c]
    titles_dc = [c for c in dc("title") if c]
    return _finish(
        title=titles_dc[0] if titles_dc else "",
        author=", ".join(creators),
        language=languages[0] if languages else "",
        chapters=chapters,
        fmt="epub",
    )


def _decode_member(data: bytes, path: str) -> str:
    try:
        return _decode(data)
    except ImportRefused as exc:
        raise ImportRefused(f"This EPUB is damaged: {path} is not text.") from exc


def _epub_toc(reader: _Reader, opf_path: str, manifest, spine) -> tuple[dict[str, str], str]:
    """Titles by chapter path from the EPUB 3 nav, else the EPUB 2 NCX; and the nav's path.
    A damaged table of contents only loses the titles."""
    titles: dict[str, str] = {}
    nav_path = next(
        (path for path, _media, props in manifest.values() if "nav" in props.split() and path),
        "",
    )
    if nav_path and nav_path in reader.names:
        try:
            root = _html_tree(_decode(reader.read(nav_path)))
        except ImportRefused as exc:
            if "unpacks to more" in str(exc):
                raise
            root = None
        if root is not None:
            navs = [n for n in root.iter("nav") if "toc" in (n.get("epub:type") or "").split()]
            for nav in navs or list(root.iter("nav"))[:1]:
                for link in nav.iter("a"):
                    target = _inside(nav_path, link.get("href") or "")
                    text = _clean(link.text_content())
                    if target and text and target not in titles:
                        titles[target] = text
    if titles:
        return titles, nav_path
    ncx_id = spine.get("toc") or ""
    ncx_path = manifest.get(ncx_id, (None, "", ""))[0]
    if not ncx_path:
        ncx_path = next(
            (p for p, media, _ in manifest.values() if media == "application/x-dtbncx+xml"), None
        )
    if ncx_path and ncx_path in reader.names:
        try:
            ncx = reader.xml(ncx_path, "NCX table of contents")
        except ImportRefused as exc:
            if "unpacks to more" in str(exc):
                raise
            return titles, nav_path
        for point in ncx.iter(f"{_NCX}navPoint"):
            label = point.find(f"{_NCX}navLabel/{_NCX}text")
            content = point.find(f"{_NCX}content")
            if label is None or content is None:
                continue
            target = _inside(ncx_path, content.get("src") or "")
            text = _clean(_epub_text(label))
            if target and text and target not in titles:
                titles[target] = text
    return titles, nav_path
