"""Knowledge an agent answers from: documents typed in or uploaded (TXT, Markdown, PDF, DOCX),
their text extracted once and split into chunks, and the retrieval that ranks the chunks for a
question (BM25 over their words).

- Extraction refuses, with a message the page shows as it is and nothing written: a file over
  ``MAX_FILE_BYTES``, text over ``MAX_TEXT_CHARS``, a type other than the four, a file that is
  not what its name says, binary junk, an encrypted or damaged PDF, a PDF or DOCX without text,
  and a DOCX whose members unpack (as their headers declare, which bounds what ``zipfile``
  reads) to more than ``MAX_UNPACKED_BYTES`` (a zip bomb).
- Chunks keep paragraphs together when they fit in ``CHUNK_CHARS``; a longer paragraph is cut
  between sentences (a sentence longer than a chunk at its clauses), and the next chunk starts
  again with the last sentence of the one before (``OVERLAP_CHARS`` at most) so that a fact
  cut in two is still whole in one of them.
- Retrieval (``knowledge_search``) is Okapi BM25 over case-folded words without a small list
  of English stop words, a plural's final "s" dropped; a document's words are counted once
  per process (documents never change once written).
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
import zipfile
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.db import transaction

from apps.generation.text_files import NotText, text_decoded
from apps.generation.text_parts import split_text

from .models import Agent, KnowledgeChunk, KnowledgeDocument, KnowledgeKind

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_TEXT_CHARS = 500_000
MAX_UNPACKED_BYTES = 50 * 1024 * 1024
MAX_PDF_PAGES = 2_000
NAME_MAX = 200
CHUNK_CHARS = 700
OVERLAP_CHARS = 200
ACCEPTED = "TXT, Markdown (.md), PDF or DOCX"
EXTENSIONS = {
    "txt": "txt",
    "text": "txt",
    "md": "md",
    "markdown": "md",
    "pdf": "pdf",
    "docx": "docx",
}
CONTENT_TYPES = {
    "txt": "text/plain",
    "md": "text/markdown",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


class KnowledgeRefused(ValueError):
    """A document that cannot be added or deleted; ``field`` is the form field it is about."""

    def __init__(self, message: str, *, field: str = "file"):
        self.field = field
        super().__init__(message)


# --- Extraction -----------------------------------------------------------------------------


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def format_of(filename: str, data: bytes) -> str:
    """``txt``, ``md``, ``pdf`` or ``docx``: by the extension, else by the first bytes."""
    base = re.split(r"[\\/]", filename or "")[-1]
    extension = base.rsplit(".", 1)[-1].lower() if "." in base else ""
    if extension in EXTENSIONS:
        return EXTENSIONS[extension]
    if not extension:
        if data.startswith(b"%PDF-"):
            return "pdf"
        if data.startswith(b"PK\x03\x04"):
            return "docx"
        return "txt"
    raise KnowledgeRefused(
        f"Chorus cannot read “{base}” (.{extension} files): upload {ACCEPTED}, "
        "or paste the text instead."
    )


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x84\x86-\x9f\ufeff\ud800-\udfff]")
_BREAKS = re.compile(r"\r\n?|[\x0c\x1c\x1d\x1e\x85\u2028]")


def _binary() -> KnowledgeRefused:
    return KnowledgeRefused(
        f"This file is not text (it holds NUL or control bytes, as binary files do): "
        f"upload {ACCEPTED}."
    )


def decode(data: bytes) -> str:
    """The file's text (``generation.text_files``: stricter than a script's, 1 control
    character in 50); binary is refused."""
    try:
        return text_decoded(data, binary_share=1 / 50)
    except NotText:
        raise _binary() from None


def normalised(text: str) -> str:
    """Line breaks as ``\\n``, control characters dropped, runs of spaces one space, at most
    one blank line between paragraphs, no space at either end of a line."""
    text = _BREAKS.sub("\n", text).replace("\u2029", "\n\n").replace("\t", " ")
    text = _CONTROL.sub("", text)
    lines = [re.sub(r" {2,}", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _markdown_text(text: str) -> str:
    """Markdown's markup taken off what is read aloud or matched: heading marks, emphasis,
    code fences, link and image syntax (their words kept), HTML tags."""
    text = re.sub(r"^```.*$", "", text, flags=re.M)
    text = re.sub(r"^[ \t]{0,3}#{1,6}[ \t]+", "", text, flags=re.M)
    text = re.sub(r"^[ \t]{0,3}>[ \t]?", "", text, flags=re.M)
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"</?[A-Za-z][^>]{0,200}>", "", text)
    text = re.sub(r"(\*\*|__|`)", "", text)
    return re.sub(r"(?<!\w)[*_](\S[^*_\n]*?)[*_](?!\w)", r"\1", text)


def _pdf_text(data: bytes) -> str:
    import pypdf
    from pypdf.errors import PyPdfError

    if not data.startswith(b"%PDF-"):
        raise KnowledgeRefused("This file is not a PDF (it does not start as one does).")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise KnowledgeRefused(
                "This PDF is encrypted (password-protected): save a copy without a password, "
                "or paste its text."
            )
        if len(reader.pages) > MAX_PDF_PAGES:
            raise KnowledgeRefused(f"This PDF has more than {MAX_PDF_PAGES:,} pages: split it.")
        pages, total = [], 0
        for page in reader.pages:
            text = page.extract_text() or ""
            total += len(text)
            if total > MAX_TEXT_CHARS * 2:  # before normalising, spaces and all
                raise _too_long(total)
            pages.append(text)
    except KnowledgeRefused:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError, OSError, zlib.error, AssertionError) as exc:  # fmt: skip
        raise KnowledgeRefused(
            f"This PDF could not be read: it is damaged or not a PDF ({type(exc).__name__})."
        ) from exc
    return "\n\n".join(pages)


def _docx_text(data: bytes) -> str:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, NotImplementedError) as exc:
        raise KnowledgeRefused(
            "This DOCX could not be read: it is not a complete zip archive, as DOCX files are."
        ) from exc
    with archive:
        unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_UNPACKED_BYTES:
            raise KnowledgeRefused(
                f"This DOCX unpacks to {_mb(unpacked)}, more than "
                f"{MAX_UNPACKED_BYTES // (1024 * 1024)} MB; Chorus does not open it."
            )
        if "word/document.xml" not in archive.namelist():
            raise KnowledgeRefused("This DOCX could not be read: it has no word/document.xml.")
    import docx  # python-docx: its XML parser resolves no entities
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        paragraphs: list[str] = []
        for part in document.iter_inner_content():
            if isinstance(part, Table):
                seen = set()
                for row in part.rows:
                    cells = []
                    for cell in row.cells:
                        if id(cell._tc) not in seen:
                            seen.add(id(cell._tc))
                            cells.append(cell.text.strip())
                    paragraphs.append(" · ".join(c for c in cells if c))
            else:
                paragraphs.append(part.text)
    except Exception as exc:  # python-docx on a damaged file raises many kinds of errors
        raise KnowledgeRefused(
            f"This DOCX could not be read: it is damaged ({type(exc).__name__})."
        ) from exc
    return "\n\n".join(paragraphs)


def _too_long(chars: int) -> KnowledgeRefused:
    return KnowledgeRefused(
        f"This document has {chars:,} characters of text; a knowledge document holds at most "
        f"{MAX_TEXT_CHARS:,}. Split it into several.",
    )


def _has_words(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def text_checked(text: str, *, field: str = "file", empty: str = "") -> str:
    """``text`` normalised, or a refusal when it is empty or too long."""
    text = normalised(text)
    if not _has_words(text):
        raise KnowledgeRefused(empty or "This document has no text.", field=field)
    if len(text) > MAX_TEXT_CHARS:
        raise KnowledgeRefused(str(_too_long(len(text))), field=field)
    return text


def text_of_file(filename: str, data: bytes) -> tuple[str, str]:
    """``(format, text)`` of an uploaded file, or ``KnowledgeRefused``."""
    if len(data) > MAX_FILE_BYTES:
        raise KnowledgeRefused(
            f"This file is {_mb(len(data))}; a knowledge file is at most "
            f"{MAX_FILE_BYTES // (1024 * 1024)} MB."
        )
    if not data:
        raise KnowledgeRefused("This file is empty.")
    fmt = format_of(filename, data)
    if fmt == "pdf":
        text = _pdf_text(data)
        empty = (
            "This PDF has no text to read (a scan is pictures of pages): paste its text "
            "instead, or upload a PDF with a text layer."
        )
    elif fmt == "docx":
        if not data.startswith(b"PK\x03\x04"):
            raise KnowledgeRefused("This file is not a DOCX (a DOCX is a zip archive).")
        text = _docx_text(data)
        empty = "This DOCX has no text."
    else:
        if data.startswith((b"%PDF-", b"PK\x03\x04")):
            raise KnowledgeRefused(
                f"This file is named as text but is a {'PDF' if data[:1] == b'%' else 'zip'} "
                "file: upload it with its own extension."
            )
        text = decode(data)
        if fmt == "md":
            text = _markdown_text(text)
        empty = "This file has no text."
    return fmt, text_checked(text, empty=empty)


# --- Chunks ---------------------------------------------------------------------------------

# A sentence ends with its punctuation (and the quotes or brackets after it) before a space.
_SENTENCE_END = re.compile(r"""(?<=[.!?…])["'”’»)\]]*\s+""")


def _sentences(paragraph: str, size: int = CHUNK_CHARS) -> list[str]:
    """The paragraph's sentences; one longer than a chunk is cut at clauses or spaces."""
    out: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph.replace("\n", " ")):
        sentence = sentence.strip()
        if not sentence:
            continue
        if len(sentence) > size:
            out.extend(split_text(sentence, size))
        else:
            out.append(sentence)
    return out


def chunked(text: str, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """``text`` in passages of at most ``size`` characters (see the module's docstring)."""
    chunks: list[str] = []
    current: list[list[str]] = []  # the chunk being filled: its paragraphs, each its sentences

    def length(parts: list[list[str]]) -> int:
        return sum(len(" ".join(p)) for p in parts) + 2 * max(len(parts) - 1, 0)

    def flush(*, carry: bool) -> None:
        nonlocal current
        parts = [p for p in current if p]
        if parts:
            chunks.append("\n\n".join(" ".join(p) for p in parts))
        last = current[-1] if current else []  # the paragraph being filled (may be new)
        # Cut inside a paragraph: its last sentence starts the next chunk too, when short
        # and not all the chunk held.
        keep = carry and last and len(last[-1]) <= overlap and (len(parts) > 1 or len(last) > 1)
        current = [[last[-1]]] if keep else []

    for paragraph in re.split(r"\n\s*\n", text):
        sentences = _sentences(paragraph, size)
        if not sentences:
            continue
        whole = len(" ".join(sentences))
        if current and length(current) + 2 + whole > size and whole <= size:
            flush(carry=False)  # the paragraph fits in a chunk of its own: it starts one
        current.append([])
        for sentence in sentences:
            if any(current) and length(current) + 1 + len(sentence) > size:
                flush(carry=True)
                if current and length(current) + 1 + len(sentence) > size:
                    current = []
                if not current:
                    current = [[]]
            current[-1].append(sentence)
    flush(carry=False)
    return chunks


# --- Documents ------------------------------------------------------------------------------


def _name_checked(name: str, fallback: str = "") -> str:
    name = " ".join((name or "").split()) or " ".join((fallback or "").split())
    if not name:
        raise KnowledgeRefused("Give the document a name.", field="name")
    if len(name) > NAME_MAX:
        raise KnowledgeRefused(f"A name is at most {NAME_MAX} characters.", field="name")
    return name


def _chunks_write(document: KnowledgeDocument) -> None:
    KnowledgeChunk.objects.bulk_create(
        KnowledgeChunk(document=document, position=i, text=passage)
        for i, passage in enumerate(chunked(document.text))
    )


@transaction.atomic
def document_add_text(*, workspace, user, name: str, text: str) -> KnowledgeDocument:
    """A knowledge document of typed text, with its chunks."""
    name = _name_checked(name)
    if not isinstance(text, str) or "\x00" in text:
        raise KnowledgeRefused("The text must not hold NUL characters.", field="text")
    text = text_checked(text, field="text", empty="Type or paste the document's text.")
    document = KnowledgeDocument.objects.create(
        workspace=workspace,
        name=name,
        kind=KnowledgeKind.TEXT,
        text=text,
        size_bytes=len(text.encode()),
        created_by=user,
    )
    _chunks_write(document)
    return document


def document_add_file(
    *, workspace, user, filename: str, data: bytes, name: str = ""
) -> KnowledgeDocument:
    """A knowledge document from an uploaded file: its text extracted once (every check
    before anything is written), the file kept, the chunks written."""
    fmt, text = text_of_file(filename, data)
    base = re.split(r"[\\/]", filename or "")[-1][:255]
    name = _name_checked(name, fallback=base.rsplit(".", 1)[0] if "." in base else base)
    stored = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-")[:100] or f"document.{fmt}"
    written = ""
    try:
        with transaction.atomic():
            document = KnowledgeDocument.objects.create(
                workspace=workspace,
                name=name,
                kind=KnowledgeKind.FILE,
                filename=base,
                content_type=CONTENT_TYPES[fmt],
                size_bytes=len(data),
                text=text,
                created_by=user,
            )
            _chunks_write(document)
            document.file.save(stored, ContentFile(data), save=False)
            written = document.file.name
            document.save(update_fields=["file"])
    except Exception:
        if written:  # the row was not kept: neither is its file
            document.file.storage.delete(written)
        raise
    return document


def agents_using(document: KnowledgeDocument) -> list[Agent]:
    """The agents of the document's workspace whose current version uses it."""
    agents = Agent.objects.filter(workspace_id=document.workspace_id).select_related("version")
    return [
        agent
        for agent in agents
        if agent.version and document.document_id in (agent.version.config.get("knowledge") or [])
    ]


def documents_in_use(workspace) -> dict[str, list[str]]:
    """document_id → the names of the agents whose current version uses it."""
    used: dict[str, list[str]] = {}
    for agent in Agent.objects.filter(workspace=workspace).select_related("version"):
        for document_id in (agent.version.config.get("knowledge") or []) if agent.version else []:
            used.setdefault(document_id, []).append(agent.name)
    return used


@transaction.atomic
def document_delete(*, document: KnowledgeDocument) -> None:
    """Delete the document, its chunks and its file; refused while an agent uses it."""
    document = KnowledgeDocument.objects.select_for_update().get(pk=document.pk)
    users = agents_using(document)
    if users:
        names = ", ".join(f"“{agent.name}”" for agent in users[:10])
        more = f" and {len(users) - 10} more" if len(users) > 10 else ""
        raise KnowledgeRefused(
            f"“{document.name}” is in the knowledge of {names}{more}: take it out of "
            f"{'that agent' if len(users) == 1 else 'those agents'} first.",
            field="document",
        )
    name = document.file.name
    storage = document.file.storage
    document.delete()
    if name:
        transaction.on_commit(lambda: storage.delete(name))
    _INDEX.pop(document.document_id, None)


# --- Retrieval ------------------------------------------------------------------------------

_STOP = """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves"""
STOP_WORDS = frozenset(_STOP.split())
K1 = 1.5
B = 0.75
INDEX_DOCUMENTS = 64  # documents whose counted words are kept in memory


def words(text: str) -> list[str]:
    """The words BM25 counts: case-folded, stop words out, a plural's final "s" dropped."""
    out = []
    for word in re.findall(r"\w+", text.casefold()):
        word = word.replace("_", "")
        if word in STOP_WORDS or (len(word) < 2 and not word.isdigit()):
            continue  # "keeper's" → keeper (its "s" dropped), "don't" → don
        if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
        out.append(word)
    return out


@dataclass(frozen=True)
class _Counted:
    chunk_id: int
    counts: Counter
    length: int


_INDEX: OrderedDict[str, list[_Counted]] = OrderedDict()


def _counted(document: KnowledgeDocument) -> list[_Counted]:
    found = _INDEX.get(document.document_id)
    if found is not None:
        _INDEX.move_to_end(document.document_id)
        return found
    rows = KnowledgeChunk.objects.filter(document=document).values_list("id", "text")
    counted = []
    for chunk_id, text in rows:
        tokens = words(text)
        counted.append(_Counted(chunk_id, Counter(tokens), len(tokens)))
    _INDEX[document.document_id] = counted
    while len(_INDEX) > INDEX_DOCUMENTS:
        _INDEX.popitem(last=False)
    return counted


def knowledge_search(workspace, document_ids, query: str, k: int = 3) -> list[KnowledgeChunk]:
    """The ``k`` chunks of the workspace's documents ``document_ids`` that best answer
    ``query`` (BM25), best first, each with its ``score``; none when no word matches."""
    terms = words(query or "")
    if not terms or not document_ids or k < 1:
        return []
    documents = KnowledgeDocument.objects.filter(
        workspace=workspace, document_id__in=list(document_ids)
    )
    corpus = [c for document in documents for c in _counted(document)]
    if not corpus:
        return []
    n = len(corpus)
    average = sum(c.length for c in corpus) / n or 1.0
    query_terms = list(dict.fromkeys(terms))
    df = {t: sum(1 for c in corpus if t in c.counts) for t in query_terms}
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in query_terms}
    scored = []
    for c in corpus:
        score = 0.0
        for t in query_terms:
            tf = c.counts.get(t, 0)
            if tf:
                score += idf[t] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * c.length / average))
        if score > 0:
            scored.append((score, c.chunk_id))
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    best = scored[:k]
    chunks = KnowledgeChunk.objects.select_related("document").in_bulk([i for _, i in best])
    result = []
    for score, chunk_id in best:
        chunk = chunks.get(chunk_id)
        if chunk is not None:
            chunk.score = score
            result.append(chunk)
    return result


def knowledge_whole_if_few(workspace, document_ids, k: int = 3) -> list[KnowledgeChunk] | None:
    """Every chunk of the workspace's documents ``document_ids`` when there are ``k`` or
    fewer, in document order (the documents as listed, each from its start); None when there
    are more (retrieval picks then). The same whole every turn keeps an agent's system prompt
    the same, so the offline LLM's KV cache holds from one turn to the next."""
    ids = list(dict.fromkeys(document_ids or []))
    if not ids or k < 1:
        return []
    chunks = list(
        KnowledgeChunk.objects.filter(document__workspace=workspace, document__document_id__in=ids)
        .select_related("document")
        .order_by("document_id", "position")[: k + 1]
    )
    if len(chunks) > k:
        return None
    rank = {document_id: i for i, document_id in enumerate(ids)}
    chunks.sort(key=lambda c: (rank[c.document.document_id], c.position))
    return chunks
